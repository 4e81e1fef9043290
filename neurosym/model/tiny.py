"""A tiny random Llama and a character-level tokenizer, built locally.

Used by `experiments/tiny.yaml` (``model.name_or_path: tiny://llama``) and by the tests, so that the
whole job runs with no network. The model is saved with ``save_pretrained`` and loaded back through
the same ``from_pretrained`` path a hub model takes; nothing here is a shortcut around that path.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

TINY_SCHEME = "tiny://"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# One token per printable ASCII character: digits are single tokens, which the CoNN gate relies on.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYS]{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}[USER]{{ m['content'] }}\n"
    "{% else %}[BOT]{{ m['content'] }}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}[BOT]{% endif %}"
)

# Presets: "llama" is the default tiny model (a few hundred thousand parameters with the LoRA on top).
PRESETS = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512),
    "llama-micro": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=256),
    # Llama-shaped random models for GPU throughput (experiments/gpu_check.py): head dim 128, GQA 4:1;
    # with the char tokenizer nearly all parameters are in the blocks (~0.50B and ~1.44B)
    "llama-0.5b": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=20, num_attention_heads=12,
                       num_key_value_heads=4, max_position_embeddings=2048),
    "llama-1.5b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=32, num_attention_heads=16,
                       num_key_value_heads=4, max_position_embeddings=2048),
}


def build_tokenizer(chat_template: bool = True):
    """Character-level fast tokenizer with bos/eos/pad and (optionally) a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    # Special tokens are added to the trie so "</s>" in text is one token.
    fast.add_special_tokens({"additional_special_tokens": []})
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | os.PathLike, preset: str = "llama", seed: int = 0,
                     chat_template: bool = True) -> Path:
    """Write a tiny random LlamaForCausalLM and its tokenizer to ``out_dir`` (idempotent)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    marker = out / "neurosym_tiny.json"
    spec = {"preset": preset, "seed": seed, "chat_template": chat_template}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return out
    if preset not in PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; choose one of {sorted(PRESETS)}")
    tokenizer = build_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **PRESETS[preset],
    )
    gen = torch.random.fork_rng()  # building the model must not move the caller's RNG
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(spec))
    return out


def resolve_tiny(name_or_path: str, cache_dir: str | os.PathLike) -> str:
    """Map ``tiny://<preset>`` to a locally built model directory (``testbed://student`` to the testbed's
    pretrained student, :mod:`neurosym.model.testbed`); other names pass through."""
    if name_or_path.startswith("testbed://"):
        from neurosym.model.testbed import resolve_testbed
        return resolve_testbed(name_or_path)
    if not name_or_path.startswith(TINY_SCHEME):
        return name_or_path
    preset = name_or_path[len(TINY_SCHEME):] or "llama"
    return str(build_tiny_model(Path(cache_dir) / f"tiny-{preset}", preset=preset))
