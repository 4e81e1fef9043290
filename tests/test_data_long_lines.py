"""One very long line: rendering cuts it to max_length without tokenizing all of it (a 50 MB line
took train past 17 GB before step 1), keeps exactly the tokens that tokenizing everything would
keep, and `validate` and `train` agree on it."""
from __future__ import annotations

import json
import random

import pytest

import neurosym.data.render as render
from neurosym.cli import main
from neurosym.data import Example, Renderer
from tests.support.jobs import write_config

MB = 1_000_000


@pytest.fixture(scope="module")
def char_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _words(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    vocab = ["the", "answer", "is", "forty", "two", "a", "b", "élan", "naïve", "12", "345", "—", "!!", "\n", "  ",
             "tokenization", "x" * 30]
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(vocab)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE tokenizer trained here (the hub is not reachable): merges across characters,
    so a cut inside a word changes the tokens next to it, unlike the character-level tiny tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_words(2000, s) for s in range(20)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    return fast


class Counting:
    """A tokenizer that records how many characters each call was given."""

    def __init__(self, tok):
        self._tok, self.seen = tok, []

    def __call__(self, text, **kw):
        self.seen.append(len(text))
        return self._tok(text, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def _whole(renderer: Renderer, ex: Example, monkeypatch):
    """What rendering gives when every text is tokenized whole (the old way)."""
    with monkeypatch.context() as m:
        m.setattr(render, "CHARS_PER_TOKEN", 10 ** 12)
        renderer._cache.clear()
        enc, gen = renderer.encode(ex), renderer.generation_ids(ex)
    renderer._cache.clear()
    return enc, gen


@pytest.mark.parametrize("which", ["char", "bpe"])
@pytest.mark.parametrize("template", [True, False])
@pytest.mark.parametrize("train_on", ["last_turn", "assistant", "all"])
def test_cut_texts_keep_exactly_the_tokens_of_the_whole_text(which, template, train_on, char_tokenizer,
                                                            bpe_tokenizer, monkeypatch):
    tok = char_tokenizer if which == "char" else bpe_tokenizer
    tok.chat_template = char_tokenizer.chat_template if template else None
    try:
        r = Renderer(tok, 64, "Be brief.", train_on)
        for seed in range(3):
            long, other = _words(30_000, seed), _words(30_000, seed + 10)
            for ex in (Example((("user", long),), other), Example((("user", "short?"),), long),
                       Example((("user", other), ("assistant", long), ("user", "and?")), "fine")):
                enc, gen = r.encode(ex), r.generation_ids(ex)
                assert (enc, gen) == _whole(r, ex, monkeypatch)
                assert len(enc.input_ids) == 64 and enc.truncated
    finally:
        tok.chat_template = char_tokenizer.chat_template


def test_a_multi_megabyte_line_is_not_tokenized_whole(char_tokenizer):
    tok = Counting(char_tokenizer)
    r = Renderer(tok, 64, "Be brief.")
    ex = Example((("user", "q" * 3 * MB),), "a" * 3 * MB)
    enc = r.encode(ex)
    r.generation_ids(ex)
    assert len(enc.input_ids) == 64 and enc.truncated
    assert max(tok.seen) < 2_000 and sum(tok.seen) < 10_000, tok.seen  # not the 6 MB of text


def test_validate_and_train_agree_on_a_multi_megabyte_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from transformers import PreTrainedTokenizerBase
    seen = []
    real = PreTrainedTokenizerBase.__call__

    def counting(self, text=None, *a, **kw):
        seen.append(len(text) if isinstance(text, str) else 0)
        return real(self, text, *a, **kw)
    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", counting)

    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 0, "eval_every": 0})
    data = tmp_path / "data" / "train.jsonl"
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "What is this? " + "x" * (4 * MB), "response": "A long line."}) + "\n")
        f.write(json.dumps({"prompt": "Say it long.", "response": "y" * (4 * MB)}) + "\n")
    assert main(["validate", str(cfg)]) == 0
    assert "data.train 26 examples" in capsys.readouterr().out
    assert main(["train", str(cfg), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "done: 2 steps" in captured.out and "skipped" not in captured.err
    assert max(seen) < 10_000, "a text was tokenized whole"
