"""neurosym.model.collective: forward passes outside the step, split over the processes of a model's
group. Here in one process: the shares cover the rows in order and have one length; a model bound to
a group of 3 simulated processes (each running its padded share, as AccelerateRuntime._serve does)
gives the generations and losses of the model alone. The real multi-process path (gloo, FSDP2) is
tests/test_fsdp.py's."""
import pytest
import torch

from neurosym.data import Renderer
from neurosym.data.examples import Example
from neurosym.model import collective
from neurosym.model.generation import generate_batched
from neurosym.model.losses import encode_batches, eval_loss, token_losses
from neurosym.runtime import make_runtime


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_cover_the_rows_in_order_padded_to_one_length(world):
    for n in range(1, 10):
        rows = list(range(n))
        shares = [collective.padded_part(rows, world, r) for r in range(world)]
        assert len({len(padded) for padded, _ in shares}) == 1  # the same number of forward calls everywhere
        assert [x for padded, real in shares for x in padded[:real]] == rows
        assert all(pad == rows[0] for padded, real in shares for pad in padded[real:])


class Simulated:
    """A group of ``world`` processes played in turn: each runs its padded share; results in rank order."""

    def __init__(self, model, world: int):
        self.model, self.world, self.calls = model, world, []

    def spread(self, name, rows, params):
        out = []
        for rank in range(self.world):
            padded, real = collective.padded_part(rows, self.world, rank)
            self.calls.append((rank, len(padded)))
            out.extend(collective.run_task(self.model, name, padded, params)[:real])
        return out


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_a_bound_model_generates_what_the_model_alone_generates(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [tok(f"What is {i} plus {i}?")["input_ids"] for i in range(7)]  # 7 rows: shares of 3, 2, 2
    alone = generate_batched(model, tok, prompts, max_new_tokens=6, batch_size=2)
    group = Simulated(model, 3)
    collective.bind(model, group)
    spread = generate_batched(model, tok, prompts, max_new_tokens=6, batch_size=2)
    assert spread == alone
    assert group.calls == [(0, 3), (1, 3), (2, 3)]


def test_eval_loss_through_the_group_is_the_mean_response_token_loss(model_and_tokenizer):
    model, tok = model_and_tokenizer
    renderer = Renderer(tok, 64, "Add the numbers.")
    examples = [Example((("user", f"{i} plus {i}?"),), f"{2 * i}", "t") for i in range(5)]
    runtime = make_runtime(torch.device("cpu"), torch.float32)
    batches = encode_batches(examples, renderer, 2, tok.pad_token_id, runtime)
    with torch.no_grad():
        parts = [token_losses(model, b) for b in batches]
    expected = sum(float(l.sum()) for l, _ in parts) / sum(int(m.sum()) for _, m in parts)
    collective.bind(model, Simulated(model, 2))  # 3 micro-batches over 2 processes: one padded share
    loss, n = eval_loss(model, batches, runtime)
    assert n == sum(int(m.sum()) for _, m in parts)
    assert loss == pytest.approx(expected, rel=1e-6)


def test_an_unknown_task_is_named():
    with pytest.raises(KeyError, match="no collective task 'nope'"):
        collective.run_task(object(), "nope", [1], {})
