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


MARKER = "neurosym_tiny.json"


def _safetensors_complete(path: Path) -> bool:
    """The file's header parses and the file is as long as the header says (a cut file is not)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return False
            n = int.from_bytes(head, "little")
            if not 0 < n < 1 << 26:
                return False
            header = json.loads(f.read(n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def tiny_model_complete(folder: str | os.PathLike, spec: dict | None = None) -> bool:
    """Whether ``folder`` holds a whole tiny model (of ``spec``, when given): its marker, a config.json
    that names a model type, complete weights and the tokenizer. Not the marker alone: a folder whose
    build was cut short (or raced, before builds were locked) may have it without the rest."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if spec is not None and marker != spec:
        return False
    if not isinstance(config, dict) or not config.get("model_type"):
        return False
    try:
        tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    if not (folder / "tokenizer.json").is_file():
        return False
    if (spec or marker).get("chat_template") and not (
            (folder / "chat_template.jinja").is_file() or "chat_template" in tok_config):
        return False
    return _safetensors_complete(folder / "model.safetensors")


def build_tiny_model(out_dir: str | os.PathLike, preset: str = "llama", seed: int = 0,
                     chat_template: bool = True) -> Path:
    """Write a tiny random LlamaForCausalLM and its tokenizer to ``out_dir`` (idempotent).

    Safe when several processes (``--nproc 2``, two commands sharing a cache) ask at once: one builds,
    under a lock, into a temporary folder renamed into place when whole; the others wait and load it
    (:func:`neurosym.persist.atomic.build_folder_once`). A folder found incomplete is rebuilt."""
    from neurosym.persist.atomic import build_folder_once

    if preset not in PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; choose one of {sorted(PRESETS)}")
    spec = {"preset": preset, "seed": seed, "chat_template": chat_template}
    return build_folder_once(Path(out_dir), lambda tmp: _write_tiny_model(tmp, spec),
                             lambda folder: tiny_model_complete(folder, spec))


def _write_tiny_model(out: Path, spec: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(chat_template=spec["chat_template"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **PRESETS[spec["preset"]],
    )
    gen = torch.random.fork_rng()  # building the model must not move the caller's RNG
    with gen:
        torch.manual_seed(spec["seed"])
        model = LlamaForCausalLM(config)
    _save_model(model, out)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(json.dumps(spec))  # last: the folder is whole once it is there


def _save_model(model, out: Path) -> None:
    """What ``model.save_pretrained(out)`` writes (config.json, generation_config.json, model.safetensors),
    on every process: under torch.distributed, ``save_pretrained`` writes only on rank 0, so a build by
    the process of rank 1 (``--nproc 2``: whichever takes the lock builds) would write no model."""
    from safetensors.torch import save_file

    model.config.architectures = [type(model).__name__]
    model.config.dtype = str(next(model.parameters()).dtype).split(".")[1]
    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


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
