"""The gate with encoder-decoder models (T5, BART): a trigger at the end of the encoder input is answered
from the decoder's first token, the answer is ended, and a row without a trigger is exactly the LM's.

The models are tiny, random and built here (nothing downloaded), over the character-level tokenizer of
``neurosym.model.tiny``, a byte-level BPE with multi-digit tokens and a SentencePiece-like one (``▁17``, whose
first decoder token writes no space). A processor makes the LM love digits
(+50 on every token that starts with one): the worst decoder for a gate, the one that extends answers.
"""
from __future__ import annotations

import pytest
import torch
from transformers import (BartConfig, BartForConditionalGeneration, LogitsProcessor, LogitsProcessorList,
                          T5Config, T5ForConditionalGeneration)

from neurosym.conn import ConnGate
from neurosym.model.tiny import build_tokenizer
from tests.test_conn_gate_text import byte_level_bpe, sentencepiece_like


def t5(tok):
    return T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))


def bart(tok):
    return BartForConditionalGeneration(BartConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None))


def char_level():
    return build_tokenizer(chat_template=False)


MODELS = {"t5": t5, "bart": bart}
TOKENIZERS = {"char": char_level, "bpe": byte_level_bpe, "sentencepiece": sentencepiece_like}


@pytest.fixture(scope="module", params=[(m, t) for m in MODELS for t in TOKENIZERS], ids=lambda p: "-".join(p))
def setup(request):
    model_name, tok_name = request.param
    tok = TOKENIZERS[tok_name]()
    tok.padding_side = "right"  # an encoder's usual padding
    torch.manual_seed(0)
    return f"{model_name}-{tok_name}", tok, MODELS[model_name](tok).eval()


class DigitLover(LogitsProcessor):
    def __init__(self, tok):
        self.add = torch.zeros(len(tok))
        self.add[ConnGate(tok, ops=["add"])._extends_digits] = 50.0

    def __call__(self, input_ids, scores):
        return scores + self.add[: scores.shape[-1]]


def generate(model, tok, prompts, processors, gate=None, max_new_tokens=8, **kw) -> list[str]:
    enc = tok(prompts, return_tensors="pt", padding=True)
    if gate is not None:
        gate.set_encoder_input(enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList(processors), **kw)
    return [tok.decode(row, skip_special_tokens=True) for row in out]


FORCED = {"Q: 12+5=": "17", "Q: 4812+977=": "5789", "12 + 5 + 7 = ": "24", "7-9=": "-2", "Then 30-45=": "-15"}
SILENT = ["Final score 3-2 = ", "3 * 4 + 2 = ", "hello there", "Call 555-1234 = "]


def test_a_trigger_in_the_encoder_input_is_answered_and_ended(setup):
    name, tok, model = setup
    gate = ConnGate(tok)
    outs = generate(model, tok, list(FORCED) + SILENT, [DigitLover(tok), gate], gate=gate)
    for prompt, out in zip(FORCED, outs):
        answer = FORCED[prompt]
        assert out.startswith(answer), (name, prompt, out)
        assert not out[len(answer):][:1].isdigit(), f"{name}: the decoder extended {prompt}{answer} into {out!r}"
    assert {e.answer for e in gate.events if e.answer is not None} == set(FORCED.values())
    assert all(bool(b[len(FORCED):].any()) is False for b in gate.betas)  # the silent rows were never forced


def test_a_row_without_a_trigger_is_exactly_the_lm(setup):
    name, tok, model = setup
    lm = DigitLover(tok)
    gate = ConnGate(tok)
    gated = generate(model, tok, SILENT, [lm, gate], gate=gate, max_new_tokens=5)
    alone = generate(model, tok, SILENT, [lm], max_new_tokens=5)
    assert gated == alone, name
    assert not torch.stack(gate.betas).any()


def test_without_the_encoder_input_the_gate_cannot_see_the_trigger(setup):
    """What set_encoder_input is for: the decoder's own tokens hold no trigger."""
    name, tok, model = setup
    lm = DigitLover(tok)
    gate = ConnGate(tok)
    gated = generate(model, tok, ["Q: 12+5="], [lm, gate], max_new_tokens=3)
    assert gated == generate(model, tok, ["Q: 12+5="], [lm], max_new_tokens=3) and not gate.events


def test_beams_and_returned_sequences_map_to_their_encoder_row(setup):
    name, tok, model = setup
    gate = ConnGate(tok)
    outs = generate(model, tok, ["Q: 12+5=", "Q: 30-45="], [DigitLover(tok), gate], gate=gate, max_new_tokens=4,
                    num_beams=2, num_return_sequences=2)
    assert [o[:2] for o in outs[:2]] == ["17", "17"] and [o[:3] for o in outs[2:]] == ["-15", "-15"], outs
    assert all(not o[2:3].isdigit() for o in outs[:2]) and all(not o[3:4].isdigit() for o in outs[2:]), outs


def test_the_decoders_own_expression_decides_alone():
    """Once the decoder writes '=', the expression is its own: 'x = 5' + '3+4=' is 3+4, never 53+4."""
    tok = char_level()
    gate = ConnGate(tok).set_encoder_input(tok(["x = 5"], return_tensors="pt")["input_ids"])
    decoder = torch.tensor([[tok.pad_token_id, *tok("3+4=", add_special_tokens=False)["input_ids"]]])
    out = gate(decoder, torch.zeros(1, len(tok)))
    assert torch.isfinite(out[0]).sum() == 1 and tok.decode([int(out[0].argmax())]) == "7"
    # and the other way: the encoder's operand is not glued onto a number the decoder starts with
    gate = ConnGate(tok).set_encoder_input(tok(["x = 5"], return_tensors="pt")["input_ids"])
    decoder = torch.tensor([[tok.pad_token_id, *tok("3+4", add_special_tokens=False)["input_ids"]]])
    out = gate(decoder, torch.zeros(1, len(tok)))
    assert not gate.events


def test_set_encoder_input_checks_the_batch():
    tok = char_level()
    enc = tok(["1+1=", "2+2=", "3+3="], return_tensors="pt", padding=True)
    gate = ConnGate(tok).set_encoder_input(enc["input_ids"], enc["attention_mask"])
    with pytest.raises(ValueError, match="not a multiple of the 3 encoder rows"):
        gate(torch.full((2, 1), tok.pad_token_id), torch.zeros(2, len(tok)))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        gate.set_encoder_input(torch.tensor([1, 2, 3]))
    assert gate.set_encoder_input(None)._encoder_texts is None


@pytest.mark.parametrize("kind", list(MODELS))
def test_generate_loads_an_encoder_decoder_and_answers_its_prompt(capsys, tmp_path, kind):
    from tests.test_conn_cli import run_cli

    tok = char_level()
    torch.manual_seed(0)
    MODELS[kind](tok).save_pretrained(tmp_path / kind)
    tok.save_pretrained(tmp_path / kind)
    assert run_cli(["generate", str(tmp_path / kind), "--prompt", "Q: 4812+977=", "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()[-1]
    assert out.startswith("5789") and not out[4:5].isdigit(), out
    assert "[conn] add(4812, 977) -> 5789" in captured.err
    for prompt in ("Final score 3-2 = ", "hello"):
        assert run_cli(["generate", str(tmp_path / kind), "--prompt", prompt, "--max-new-tokens", "4"]) == 0
        gated = capsys.readouterr().out
        assert run_cli(["generate", str(tmp_path / kind), "--prompt", prompt, "--max-new-tokens", "4",
                        "--conn", "none"]) == 0
        assert capsys.readouterr().out == gated
