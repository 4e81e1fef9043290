"""The gate: β = 1 while a compiled network writes its answer, β = 0 (LM logits untouched) otherwise."""
from __future__ import annotations

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, LogitsProcessorList,
                          PreTrainedTokenizerFast)

from neurosym.conn import ConnGate, ConnInputError
from neurosym.model.tiny import build_tokenizer


@pytest.fixture(scope="module")
def char_gate():
    return ConnGate(build_tokenizer())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def generate(model, tokenizer, prompts, gate=None, max_new_tokens=8):
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    processors = LogitsProcessorList([gate] if gate else [])
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                             pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]


@pytest.mark.parametrize("text,rest", [
    ("123+456=", "579"),
    ("123+456=57", "9"),
    ("Q: what is 12 + 5 = ", "17"),
    ("1+1=2, now 30-45=", "-15"),
    ("30-45=-1", "5"),
    ("parity(0110111)=", "1"),
    ("then reverse(abc9)=", "9cba"),
    ("10-3-2=", "5"),                # a chain: composed calls, left to right
    ("12 + 5 + 7 = ", "24"),
    ("1,234+5=", "1239"),            # thousands separators
    ("1\u2009234 + 5 = ", "1239"),   # a thin space groups digits too
    ("12 + 5 =", " 17"),             # spaced style: the answer is written after a space
])
def test_trigger_gives_the_rest_of_the_answer(char_gate, text, rest):
    assert char_gate.remaining(text) == rest


@pytest.mark.parametrize("text", [
    "123+456=579",        # answer complete: hand back
    "123+456=58",         # the text went elsewhere: the LM keeps it
    "3 * 4 + 2 = ",       # longer than the last operation, and no compiled multiply
    "2^3+1=",             # no compiled power
    "Final score 3-2 = ", # a score (mixed spacing, and a label word)
    "Call 555-1234 = ",   # a phone number
    "555-1234=",          # the shape of a phone number
    "2024-01-05=",        # a date (leading zeros)
    "12+5 =",             # mixed spacing: not clearly a sum
    "10:30-5=",           # a time
    "$5+3=",              # a currency glued to it
    "1,2345+5=",          # not a grouped number
    "3.5+1=",             # decimals are not integers
    "x12+5=",             # operand glued to a word
    "123+456",            # no trigger yet
    "parity(012)=",       # not a bit string
])
def test_no_trigger_means_beta_zero(char_gate, text):
    assert char_gate.remaining(text) is None


def test_processor_leaves_scores_untouched_without_trigger(char_gate):
    tok = char_gate.tokenizer
    scores = torch.randn(2, len(tok))
    ids = torch.tensor([tok.encode("the cat sat"), tok.encode("3 * 4 + 2 =")])
    assert char_gate(ids, scores) is scores
    assert not char_gate.betas[-1].any()


@pytest.mark.parametrize("text", ["123+456=579", "123+456=579.", "30-45=-15"])
def test_a_complete_answer_cannot_be_extended(char_gate, text):
    tok = char_gate.tokenizer
    scores = torch.zeros(1, len(tok))
    out = char_gate(torch.tensor([tok.encode(text)]), scores)
    allowed = {tok.decode([i]) for i in torch.isfinite(out[0]).nonzero().flatten().tolist()}
    assert not allowed & set("0123456789") and {"\n", " ", "."} <= allowed | {"."}
    assert not char_gate.betas[-1].any()


def test_processor_forces_exactly_one_token(char_gate):
    tok = char_gate.tokenizer
    scores = torch.randn(2, len(tok))
    ids = torch.tensor([tok.encode("12+30="), tok.encode("abcdef")])
    out = char_gate(ids, scores)
    assert torch.isfinite(out[0]).sum() == 1 and tok.decode([int(out[0].argmax())]) == "4"
    assert torch.equal(out[1], scores[1])
    assert char_gate.betas[-1].tolist() == [True, False]


def test_gate_hands_off_to_the_conn_and_back_with_tiny_model(tiny):
    model, tok = tiny
    gate = ConnGate(tok, ops=["add", "subtract"])
    gated = generate(model, tok, ["123+456="], gate)[0]
    assert gated.startswith("579")
    betas = torch.stack(gate.betas)[:, 0].tolist()
    assert betas == [True, True, True] + [False] * (len(betas) - 3)  # β = 1 for the answer, then 0
    lm_alone = generate(model, tok, ["123+456="])[0]
    assert not lm_alone.startswith("579")
    # after the answer the LM decides (only digits that would extend the number are forbidden)
    assert not gated[3:4].isdigit()


def test_batched_generate_with_left_padding(tiny):
    model, tok = tiny
    gate = ConnGate(tok)
    prompts = ["1+2=", "Q: 99999999+1=", "50-75=", "parity(1101)=", "reverse(stressed)="]
    outs = generate(model, tok, prompts, gate, max_new_tokens=10)
    for out, answer in zip(outs, ["3", "100000000", "-25", "1", "desserts"]):
        assert out.startswith(answer), (out, answer)
    assert {(e.op, e.answer) for e in gate.events} >= {("add", "3"), ("subtract", "-25"), ("reverse", "desserts")}


def test_too_long_operands_go_to_the_lm_with_a_warning_or_raise(char_gate):
    text = "1" * 40 + "+1="
    with pytest.warns(UserWarning, match="exceeds the compiled maximum"):
        assert char_gate.remaining(text) is None
    assert char_gate.events[-1].answer is None and "exceeds" in char_gate.events[-1].reason
    strict = ConnGate(char_gate.tokenizer, ops=["add"], on_unsupported="raise")
    with pytest.raises(ConnInputError, match="exceeds the compiled maximum"):
        strict.remaining(text)


def multi_digit_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE vocabulary with multi-digit tokens ("12", "345", "100") beside single characters."""
    from tokenizers import Tokenizer, decoders, models

    chars = list("0123456789+-=()abcdefghijklmnopqrstuvwxyz :")
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + chars)}
    merges = [("1", "2"), ("3", "4"), ("34", "5"), ("1", "0"), ("10", "0")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_multi_digit_tokens():
    tok = multi_digit_tokenizer()
    assert tok.tokenize("12+345=") == ["12", "+", "345", "="]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                         eos_token_id=2)).eval()
    gate = ConnGate(tok, ops=["add", "subtract"])
    assert {"12", "345", "100"} <= set(gate.pieces)
    # operands made of multi-digit tokens; the answer 357 has no token of its own: written digit by digit
    # the answer 345 is one token: written in one step
    outs = generate(model, tok, ["12+345=", "100+245="], gate, max_new_tokens=4)
    assert outs[0].startswith("357") and outs[1].startswith("345")
    betas = torch.stack(gate.betas).T.tolist()
    assert betas[0][:4] == [True, True, True, False]
    assert betas[1][:2] == [True, False]


def test_tokenizer_without_digit_tokens_is_refused():
    from tokenizers import Tokenizer, models

    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>"] + list("012345689+-="))}  # no "7"
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")
    with pytest.raises(ValueError, match="no single token for '7'"):
        ConnGate(tok, ops=["add"])
