"""The gate in real text, with three kinds of tokenizer, batched with left padding: right or silent.

Each tokenizer is built locally with the ``tokenizers`` library: the tiny model's character-level one,
a byte-level BPE with multi-digit tokens (``12``, ``345``, ``Ġ12``) and a token spanning the trigger
(``=5``), and a SentencePiece-like one (Metaspace ``▁``, ``▁1``, ``▁17``) with ``=-5`` and ``=-4``.
The language model is a tiny random Llama behind a processor that makes it love digits (it adds +50
to every token that starts with a digit, +100 to a spanning token where asked): the worst LM for a
gate, the one that writes ``57899999``.
"""
from __future__ import annotations

import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList,
                          PreTrainedTokenizerFast)

from neurosym.conn import ConnGate
from neurosym.model.tiny import build_tokenizer

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
PRINTABLE = [chr(c) for c in range(33, 127)]


def _fast(raw) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def _bpe(alphabet: list[str], merges: list[tuple[str, str]]):
    from tokenizers import Tokenizer, models

    vocab = {t: i for i, t in enumerate(SPECIAL + alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))


def byte_level_bpe() -> PreTrainedTokenizerFast:
    from tokenizers import decoders, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("1", "2"), ("3", "4"), ("34", "5"), ("5", "7"), ("8", "9"), ("1", "0"), ("10", "0"), ("Ġ", "1"),
              ("Ġ1", "2"), ("=", "5"), ("Ġ", "=")]
    raw = _bpe(alphabet, merges)
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    return _fast(raw)


def sentencepiece_like() -> PreTrainedTokenizerFast:
    from tokenizers import decoders, pre_tokenizers

    merges = [("▁", "1"), ("▁1", "7"), ("1", "7"), ("4", "8"), ("48", "1"), ("=", "-"), ("=-", "5"), ("=-", "4"),
              ("▁", "=")]
    raw = _bpe(["▁"] + PRINTABLE, merges)
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return _fast(raw)


def char_level() -> PreTrainedTokenizerFast:
    tok = build_tokenizer(chat_template=False)
    tok.padding_side = "left"
    return tok


TOKENIZERS = {"char": char_level, "bpe": byte_level_bpe, "sentencepiece": sentencepiece_like}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def setup(request):
    tok = TOKENIZERS[request.param]()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    return request.param, tok, model


class Prefer(LogitsProcessor):
    """The LM's wishes: add ``bonus`` to the given token ids at every step."""

    def __init__(self, bonus: dict[int, float], vocab_size: int):
        self.add = torch.zeros(vocab_size)
        for i, b in bonus.items():
            self.add[i] += b

    def __call__(self, input_ids, scores):
        return scores + self.add[: scores.shape[-1]].to(scores.dtype)


def digit_lover(tok, extra: dict[str, float] | None = None) -> Prefer:
    gate = ConnGate(tok, ops=["add"])  # only to read what each token writes
    bonus = {int(i): 50.0 for i in gate._extends_digits}
    for piece, b in (extra or {}).items():
        bonus[tok.convert_tokens_to_ids(piece)] = b
    return Prefer(bonus, len(tok))


def generate(model, tok, prompts, processors, max_new_tokens=8, **kw) -> list[str]:
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList(processors), pad_token_id=tok.pad_token_id, **kw)
    return [tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]


FORCED = {
    "Q: 4812+977=": "5789",
    "12 + 5 + 7 = ": "24",
    "10 - 3 - 2 = ": "5",
    "1,234+5=": "1239",
    "3-5+10=": "8",
    "Then 30-45=": "-15",
    "7-9=": "-2",
}
SILENT = [
    "3 * 4 + 2 = ",        # the expression is longer than the trigger: 4 + 2 is not what is asked
    "2^3+1=",              # no compiled power
    "Final score 3-2 = ",  # a score
    "Call 555-1234 = ",    # a phone number
    "On 2024-01-05=",      # a date
    "3.5+1=",              # a decimal
    "x12+5=",              # glued to a word
    "4 x 3 + 2 = ",        # "x" continues the expression
    "-3+5=",               # a sign the networks do not take
]


def test_forced_rows_are_right_and_end_their_number(setup):
    name, tok, model = setup
    prompts = list(FORCED) + SILENT
    gate = ConnGate(tok)
    outs = generate(model, tok, prompts, [digit_lover(tok), gate], max_new_tokens=8)
    for prompt, out in zip(FORCED, outs):
        answer = FORCED[prompt]
        assert out.lstrip(" ").startswith(answer), (name, prompt, out)
        after = out.lstrip(" ")[len(answer):]
        assert not after[:1].isdigit(), f"{name}: the LM extended {prompt}{answer} into {out!r}"


def test_silent_rows_are_exactly_the_lm(setup):
    name, tok, model = setup
    lm = digit_lover(tok)
    gate = ConnGate(tok)
    gated = generate(model, tok, SILENT, [lm, gate], max_new_tokens=4)
    alone = generate(model, tok, SILENT, [lm], max_new_tokens=4)
    assert gated == alone, name
    assert not torch.stack(gate.betas).any()
    refused = {e.operands[0] for e in gate.events if e.answer is None}
    assert len(refused) == len(SILENT)


def test_a_token_spanning_the_trigger_cannot_slip_past(setup):
    name, tok, model = setup
    span = {"char": None, "bpe": "=5", "sentencepiece": "=-5"}[name]
    if span is None:
        pytest.skip("a character tokenizer has no token spanning '='")
    prompt = {"bpe": "Q: 2+1", "sentencepiece": "Q: 3-8"}[name]
    answer = {"bpe": "3", "sentencepiece": "-5"}[name]
    lm = digit_lover(tok, {span: 200.0, "=": 100.0})
    alone = generate(model, tok, [prompt], [lm], max_new_tokens=3)[0]
    assert alone.startswith(span)  # the LM alone writes "=" and a (wrong or right) answer in one token
    gated = generate(model, tok, [prompt], [lm, ConnGate(tok)], max_new_tokens=4)[0]
    assert gated.startswith("=" + answer) and not gated[1 + len(answer):][:1].isdigit(), gated


def test_unsupported_row_falls_back_alone(setup):
    name, tok, model = setup
    gate = ConnGate(tok, ops=["add"])
    with pytest.warns(UserWarning, match="exceeds the compiled maximum"):
        outs = generate(model, tok, ["1" * 40 + "+1=", "2+3="], [gate], max_new_tokens=2)
    assert outs[1].startswith("5")
    assert [bool(b[0]) for b in gate.betas] == [False, False] and bool(gate.betas[0][1])


def test_other_processors_are_honoured_or_overridden_as_documented(setup):
    name, tok, model = setup
    five = gate_piece(tok, "5")
    # a ban on the answer's first token: the gate does not start the answer
    gate = ConnGate(tok, ops=["add"])
    out = generate(model, tok, ["2+3="], [gate], max_new_tokens=1, bad_words_ids=[[five]])[0]
    assert not out.startswith("5") and gate.events[-1].op == "blocked"
    # penalties do not change a forced answer
    out = generate(model, tok, ["Q: 4812+977="], [ConnGate(tok)], max_new_tokens=5, repetition_penalty=5.0)[0]
    assert out.startswith("5789")
    # sampling keeps the forced token (the only finite one)
    torch.manual_seed(1)
    enc = tok(["Q: 4812+977="], return_tensors="pt", add_special_tokens=False)
    sampled = model.generate(**enc, max_new_tokens=6, do_sample=True, temperature=2.0, top_k=0,
                             logits_processor=LogitsProcessorList([ConnGate(tok)]), pad_token_id=tok.pad_token_id)
    assert tok.decode(sampled[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).startswith("5789")


def test_a_ban_in_the_middle_of_an_answer_is_overridden_with_a_warning():
    tok = char_level()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         pad_token_id=tok.pad_token_id)).eval()
    with pytest.warns(UserWarning, match="writes it anyway"):
        out = generate(model, tok, ["1110+1="], [ConnGate(tok, ops=["add"])], max_new_tokens=4,
                       no_repeat_ngram_size=2)[0]
    assert out.startswith("1111")


def gate_piece(tok, text: str) -> int:
    return ConnGate(tok, ops=["add"]).pieces[text][0]


def test_trailing_window_grows_for_a_long_chain_and_ignores_old_text():
    tok = char_level()
    gate = ConnGate(tok, window=8)
    chain = " + ".join(str(i) for i in range(1, 13)) + " = "
    ids = tok([("lorem ipsum " * 400)[:3999] + " " + chain], add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = torch.zeros(1, len(tok))
    out = gate(ids, scores)
    assert tok.decode([int(out[0].argmax())]) == "7" and torch.isfinite(out[0]).sum() == 1
    assert gate.events[-1].answer == "78" and len(gate.events[-1].calls) == 11
