"""The `tiny://` model caches (`<output_dir>/.models`, and the temporary one of `compose`/`generate`)
under several processes: one builds, under a lock, into a temporary folder renamed into place; the
others wait and load it. A folder left half-built (a marker without weights) is rebuilt, not trusted."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from neurosym.model.tiny import build_tiny_model, resolve_tiny

MARKER = "neurosym_tiny.json"  # the build's marker, written last


def tiny_model_complete(folder) -> bool:
    from neurosym.model.tiny import tiny_model_complete as complete
    return complete(folder)

N_PROCS = 2  # as `--nproc 2`; the thread test below pins the lock down deterministically


def _build_and_load(target: str, start) -> str:
    """One process: import everything, wait for the others, then build both caches at once (as a run
    resolves `<output_dir>/.models`, and as `compose`/`generate` use their temporary cache) and load them."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosym.compose import load

    tempfile.tempdir = str(Path(target) / "tmp")
    start.wait()
    try:
        folder = resolve_tiny("tiny://llama-micro", Path(target) / ".models")
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        model2, tok2 = load("tiny://llama-micro", device="cpu")  # the shared temporary cache
        return f"ok {model.config.model_type} {len(tok)} {model2.config.model_type} {len(tok2)}"
    except Exception as exc:  # reported to the parent, which fails with it
        return f"{type(exc).__name__}: {exc}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "neurosym-tmp" in p.name)


@pytest.mark.slow
def test_several_processes_build_one_cache_at_once_and_all_load_it(tmp_path):
    """Was: `--nproc 2` built `.models/tiny-llama` in both processes at once, with no lock: 2 of 3 fresh
    launches left the marker without config.json or weights, and every later run failed. The same for
    the temporary cache `compose` and `generate` share."""
    (tmp_path / "tmp").mkdir()
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(N_PROCS)
        with ctx.Pool(N_PROCS) as pool:
            results = pool.starmap(_build_and_load, [(str(tmp_path), start)] * N_PROCS)
    assert all(r.startswith("ok llama") for r in results), results
    shared = next((tmp_path / "tmp").glob("neurosym-tiny-*"))
    for cache in (tmp_path / ".models", shared):
        assert tiny_model_complete(cache / "tiny-llama-micro") and _leftovers(cache) == []
    assert _build_and_load(str(tmp_path), _NoWait()) == results[0]  # and a later command loads them too


class _NoWait:
    def wait(self):
        return None


def test_a_second_caller_waits_for_the_build_and_never_sees_a_partial_folder(tmp_path, monkeypatch):
    """Paused half-way through a build (weights written, tokenizer not yet), the target is not there at
    all, and a second caller does not build again: it waits, then gets the whole folder. Was: the
    half-written folder sat at the target and a second caller built over it at the same time."""
    import threading

    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    paused, resume, saves = threading.Event(), threading.Event(), []
    real = PreTrainedTokenizerFast.save_pretrained

    def save_pretrained(self, *args, **kwargs):
        saves.append(1)
        if len(saves) == 1:
            paused.set()
            assert resume.wait(120)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", save_pretrained)
    target = tmp_path / "tiny-llama-micro"
    results = []
    builder = lambda: results.append(build_tiny_model(target, preset="llama-micro"))  # noqa: E731
    first = threading.Thread(target=builder)
    first.start()
    try:
        assert paused.wait(120)
        assert not target.exists()                       # nothing half-built where readers look
        second = threading.Thread(target=builder)
        second.start()
    finally:
        resume.set()
    first.join(120)
    second.join(120)
    assert results == [target, target] and len(saves) == 1  # built once
    assert tiny_model_complete(target) and _leftovers(tmp_path) == []
    AutoModelForCausalLM.from_pretrained(target)


def test_the_process_of_rank_1_builds_a_whole_model(tmp_path, monkeypatch):
    """Under torch.distributed, `save_pretrained` writes the model only on rank 0; whichever process
    takes the lock builds, so a build on rank 1 must write it too. Was: rank 1 wrote the tokenizer and
    the marker but no config.json or weights (the "marker without a model" of `--nproc 2`)."""
    from transformers import AutoModelForCausalLM

    mixin = pytest.importorskip("transformers.distributed.mixin")
    if not hasattr(mixin, "_get_torch_distributed_rank"):
        pytest.skip("this transformers does not gate save_pretrained by rank here")
    with monkeypatch.context() as m:
        m.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
        m.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
        folder = Path(resolve_tiny("tiny://llama-micro", tmp_path))
    assert tiny_model_complete(folder)
    AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("damage", ["weights", "config", "truncated", "tokenizer", "chat_template"])
def test_a_cache_with_its_marker_but_not_its_files_is_rebuilt(tmp_path, damage):
    """Was: the marker alone counted as built; a folder without config.json or weights was returned and
    every run failed with `Unrecognized model ... model_type` until `.models` was deleted by hand."""
    from transformers import AutoModelForCausalLM

    folder = Path(resolve_tiny("tiny://llama-micro", tmp_path))
    good = (folder / "model.safetensors").read_bytes()
    if damage == "weights":
        (folder / "model.safetensors").unlink()
    elif damage == "config":
        (folder / "config.json").unlink()
    elif damage == "truncated":
        (folder / "model.safetensors").write_bytes(good[: len(good) // 2])
    elif damage == "tokenizer":
        (folder / "tokenizer.json").unlink()
    else:
        (folder / "chat_template.jinja").unlink()
    assert (folder / MARKER).exists()
    assert resolve_tiny("tiny://llama-micro", tmp_path) == str(folder)
    AutoModelForCausalLM.from_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() == good  # deterministic: the same model again
    assert tiny_model_complete(folder)


def test_a_killed_builders_leftovers_are_cleaned_and_the_model_built(tmp_path):
    """A builder killed mid-way leaves its temporary folder (and, before builds were atomic, a partial
    target): the next build removes both and writes the whole model."""
    target = tmp_path / "tiny-llama-micro"
    dead = tmp_path / ".tiny-llama-micro.neurosym-tmp-deadbeef"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"\0" * 10)
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"preset": "llama-micro", "seed": 0, "chat_template": True}))
    build_tiny_model(target, preset="llama-micro")
    assert (target / "model.safetensors").exists() and _leftovers(tmp_path) == []
    assert tiny_model_complete(target)


def test_another_seed_at_the_same_path_replaces_the_model(tmp_path):
    a = build_tiny_model(tmp_path / "m", preset="llama-micro", seed=0)
    first = (a / "model.safetensors").read_bytes()
    build_tiny_model(tmp_path / "m", preset="llama-micro", seed=1)
    assert (a / "model.safetensors").read_bytes() != first
    assert json.loads((a / MARKER).read_text())["seed"] == 1 and _leftovers(tmp_path) == []


def test_a_failed_build_leaves_no_partial_folder(tmp_path):
    from neurosym.persist.atomic import build_folder_once

    def build(tmp: Path):
        (tmp / "half").write_text("x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        build_folder_once(tmp_path / "cache", build, lambda f: (f / "done").exists())
    assert not (tmp_path / "cache").exists() and _leftovers(tmp_path) == []
    out = build_folder_once(tmp_path / "cache", lambda tmp: (tmp / "done").write_text("1"),
                            lambda f: (f / "done").exists())
    assert (out / "done").read_text() == "1"
