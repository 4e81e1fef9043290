"""`neurosym eval`: a saved checkpoint on any data file, scored as the job scores it.

Loss and perplexity of the reference answers (the loop's own eval loss: same rendering, same
batches), the greedy generation of every row under the system prompt the checkpoint was trained
with (:func:`neurosym.observe.prompt_history.learned_prompt`), and the reward (the job's ``reward.kind``,
or ``--reward``) of each generation. Each row's prompt, reference, generation, loss and score go to
a JSONL file, so a user sees which rows fail: by default ``RUN/eval/<checkpoint>-<data name>.jsonl``
(rewritten by the next eval of the same checkpoint and data), or ``--out`` (the rules of
:mod:`neurosym.persist.safe_output`).

The data file may be in any layout the training data accepts (every reader of :mod:`neurosym.data`);
it is read with its own format (``--format``, default ``auto``: detected per record), never with the
training file's ``data.format``/``data.fields``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

from neurosym.config.schema import Config, ConfigError, DataSource, RewardConfig, looks_like_dataset_id
from neurosym.persist.checkpoint import find_checkpoint
from neurosym.persist.rundir import RunDir

MATCH_REWARDS = ("exact_match", "numeric_match", "regex")  # 1 right, 0 wrong: "failed" counts the zeros


def data_sources(cfg: Config, data: Optional[str], fmt: Optional[str] = None) -> list[DataSource]:
    """The sources an eval reads: ``data`` (a path from the cwd, or a hub id) with its own format, else
    the config's eval split (else its train split, every source of it)."""
    if data is None:
        split = cfg.data.sources("eval") or cfg.data.sources("train")
        return split if fmt is None else [s.model_copy(update={"format": fmt}) for s in split]
    path = Path(data).expanduser()
    if not path.exists() and not looks_like_dataset_id(data):
        raise ConfigError(f"--data {data}: no such file or folder (looked for {path.resolve()})")
    return [DataSource(path=str(path.resolve()) if path.exists() else data, format=fmt or "auto")]


def reward_config(cfg: Config, kind: Optional[str], pattern: Optional[str] = None) -> RewardConfig:
    """The job's reward, or the one named by ``--reward`` (``regex``/``function`` take the job's
    ``reward.pattern``/``reward.function`` unless ``--pattern`` is given)."""
    if kind is None and pattern is None:
        return cfg.reward
    kind = kind or cfg.reward.kind
    try:
        return RewardConfig(kind=kind, pattern=pattern or cfg.reward.pattern, function=cfg.reward.function)
    except ValueError as exc:
        msg = str(exc).split("Value error, ")[-1].splitlines()[0]
        raise ConfigError(f"--reward {kind}: {msg} (pass --pattern REGEX for regex; a function reward takes "
                          f"reward.function from the run's config)") from None


def _data_name(src: DataSource) -> str:
    name = Path(src.path).name if Path(src.path).exists() else src.path
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".jsonl", ".json", ".parquet", ".csv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "data"


def default_out(run_dir: Path, ckpt: Path, src: DataSource) -> Path:
    return RunDir(run_dir).evals / f"{ckpt.name}-{_data_name(src)}.jsonl"


def evaluate_checkpoint(cfg: Config, run_dir: Path, checkpoint: Optional[str] = None, data: Optional[str] = None,
                        reward: Optional[str] = None, out: Optional[str] = None, overwrite: bool = False,
                        fmt: Optional[str] = None, pattern: Optional[str] = None,
                        max_new_tokens: Optional[int] = None) -> dict:
    """Evaluate ``checkpoint`` (default the newest complete one) of ``run_dir`` on ``data`` (default the
    config's eval split); returns the figures and writes the per-row JSONL (see the module doc)."""
    from neurosym.data import Renderer, load_examples
    from neurosym.data.batching import example_losses
    from neurosym.model.generation import answer_examples, measuring
    from neurosym.persist.atomic import atomic_write_text
    from neurosym.model.losses import encode_batches, token_losses
    from neurosym.model.merge import protected_paths
    from neurosym.model.load import load_with_adapter
    from neurosym.observe.prompt_history import learned_prompt
    from neurosym.reward import make_reward
    from neurosym.runtime import make_runtime
    from neurosym.persist.safe_output import OutputTarget

    run_dir = Path(run_dir)
    ckpt = find_checkpoint(run_dir, checkpoint)
    sources = data_sources(cfg, data, fmt)
    scorer = make_reward(reward_config(cfg, reward, pattern), cfg.run.python_path)
    target = None
    if out is not None:  # checked before the model loads: a refused --out costs nothing
        protect = protected_paths(cfg, run_dir) + [s.path for s in sources if Path(s.path).exists()]
        target = OutputTarget(out, kind="file", overwrite=overwrite, protect=protect)
    examples, report = load_examples(sources, cfg.data)
    model, tokenizer, device, dtype = load_with_adapter(cfg, run_dir.parent / ".models", ckpt)
    prompt = learned_prompt(run_dir, ckpt)
    renderer = Renderer(tokenizer, cfg.data.max_length, prompt, cfg.data.train_on)
    examples, skipped = renderer.check(examples, cfg.data.on_error)
    runtime = make_runtime(device, dtype)

    # the loop's eval loss: the same batches, summed the same way (Run.evaluate -> losses.eval_loss)
    batches = encode_batches(examples, renderer, cfg.train.batch_size, tokenizer.pad_token_id, runtime,
                             cfg.data.packing, cfg.data.max_length)
    loss_sum, n_tokens, row_loss = 0.0, 0, {}
    with measuring(model):
        for batch in batches:
            with runtime.autocast():
                losses, mask = token_losses(model, batch)
            loss_sum += float(losses.sum())
            n_tokens += int(mask.sum())
            row_loss.update(example_losses(losses, mask, batch))
    loss = loss_sum / max(n_tokens, 1)

    new_tokens = max_new_tokens or cfg.symbolic.max_new_tokens
    answers = answer_examples(model, tokenizer, renderer, examples, new_tokens, cfg.train.batch_size * 4)
    if scorer.needs_generation:
        scores = scorer.batch(answers, [ex.response for ex in examples])
    else:  # neg_loss: each row's score is minus its own loss
        scores = [scorer.from_loss(row_loss[i]) for i in range(len(examples))]
    rows = []
    for i, (ex, answer, score) in enumerate(zip(examples, answers, scores)):
        system = ex.system if ex.system is not None else prompt
        rows.append({"row": i, "source": ex.source, "system": system,
                     "context": [list(m) for m in ex.messages[:-1] if m[0] != "system"] or None,
                     "prompt": ex.prompt, "reference": ex.response, "generation": answer,
                     "score": score, "loss": row_loss.get(i)})
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if target is not None:
        from neurosym.persist.safe_output import atomic_write_text as write_target
        rows_path = write_target(target, text)
    else:
        rows_path = default_out(run_dir, ckpt, sources[0])
        atomic_write_text(rows_path, text)
    mean = sum(scores) / len(scores) if scores else float("nan")
    return {"checkpoint": str(ckpt), "split": report.path, "examples": len(examples), "skipped": len(skipped),
            "tokens": n_tokens, "loss": loss, "ppl": math.exp(min(loss, 50)),
            "reward": scorer.name, "reward_mean": mean,
            "failed": sum(1 for s in scores if s < 1.0) if scorer.name in MATCH_REWARDS else None,
            "system_prompt": prompt, "rows": str(rows_path)}
