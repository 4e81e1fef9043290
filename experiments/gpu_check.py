"""The CUDA path in one run, one table: bf16 LoRA and NF4 QLoRA throughput (tokens/s, peak memory,
MFU, neurosym's loop over a hand-written PEFT loop), packing with sdpa / flex / flash-attention, a
SIGKILL and resume, ``merge`` with and without ``--dequantize``, the testbed hybrid job against its
CPU run, and the compiled networks in fp32 and bf16.

    python experiments/gpu_check.py --out OUT           # on a CUDA machine (~8 minutes, --budget-s)
    python experiments/gpu_check.py --dry-run --out OUT # every part on CPU with tiny shapes (the CI test)
    python experiments/gpu_check.py --only resume-nf4,merge-nf4 --out OUT   # a rerun of some parts

On a lent device of this workplace, after ``bash experiments/gpu_run.sh prepare`` here, the one
command is ``bash experiments/gpu_run.sh`` with ``carry: [".whl"]`` (see that file).

Models. Llama-shaped, random weights, built locally by :func:`neurosym.model.tiny.build_tiny_model`
(presets ``llama-0.5b``: 0.50B parameters, ``llama-1.5b``: 1.44B; hidden 1536/2048, 20/32 layers,
head dim 128, 4 KV heads) with neurosym's character-level tokenizer (~100 tokens, so nearly all the
parameters are in the blocks), sequence 1024, batch 8, LoRA r=16 on every linear layer of the blocks.
Throughput rows are exactly 1024 tokens (no padding); the packing rows vary from 32 to 1024 tokens.

MFU. Model FLOPs per trained token with a frozen base:

    F = 4 N + 6 N_lora + 12 L d c

N = parameters of the matrices a token goes through (every block's q, k, v, o, gate, up, down and
the LM head; the embedding lookup is free), N_lora = the adapter's parameters, L = layers,
d = heads x head dim, c = the average causal context per token ((n+1)/2 for a row of n tokens).
Forward costs 2N; backward costs 2N more for the activation gradients (they flow through every
frozen layer down to the first adapter) and nothing for the frozen weights' gradients, which are
never formed, hence 4N and not the 6N of full fine-tuning; the adapter costs 6 N_lora (forward,
activation and weight gradients); attention's QK^T and AV cost 4 d per (query, key) pair forward and
twice that backward (PaLM's 12 L d T term, with the causal context instead of T). Recomputation and
QLoRA's dequantization are not model FLOPs. MFU = F x tokens/s / peak, peak = 989.4 TFLOP/s, the
dense bf16 rate of the H100 and H200 SXM datasheets (A100: 312). ``mfu_6n`` in the JSON is the same
with 6N (the full-fine-tuning convention, for comparison with numbers quoted that way); the env
row also gives the bf16 matrix-product rate measured on the card.

Time boxes. Every part runs in its own process group with a deadline (its box, or what is left of
``--budget-s``); a part that fails or times out prints its error in the table and the next part
runs. Parts that need a CUDA-only library (bitsandbytes NF4, flash-attn) report ``skipped: needs
CUDA`` in the dry run, after running every step of their path that CPU allows (the same code with
the quantization off, the refusal and ``--dequantize`` of merge, the attention config).

Outputs: ``OUT/gpu_check.md`` (the table) and ``OUT/gpu_check.json`` (every figure, every error's
traceback); the table is printed last.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import signal
import string
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # neurosym and experiments.* (the testbed teacher, conn_eval)

PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense, no sparsity (datasheets)
WATCHED = ("bitsandbytes", "textgrad", "openai", "wandb", "datasets", "litellm")
RESUME_TOL = {"cpu": 1e-6, "cuda": 5e-3}  # max |loss difference| after a resume (bf16 kernels: not bitwise)
MERGE_TOL = 5e-2  # max |logit difference| / max |logit| of merged vs adapter model (bf16 weights rounded)


@dataclass
class Shapes:
    models: dict                     # row label -> neurosym.model.tiny preset
    seq: int = 1024
    batch: int = 8
    warm: int = 3                    # steps before the timing window
    steps: int = 20                  # timed steps
    pack_model: str = "0.5B"
    pack_batch: int = 16
    pack_steps: int = 12
    small_seq: int = 256             # resume and merge jobs
    small_batch: int = 4
    resume_steps: int = 40
    resume_save: int = 10
    resume_kill_at: int = 15
    merge_steps: int = 10
    hybrid_steps: int | None = None  # None: the job's own (40)
    conn_ops: str = "parity,reverse,add,subtract"
    conn_samples: int = 100
    conn_prompts: int = 20
    conn_digits: str = "1,2,4,8"
    matmul: int = 8192
    boxes: dict = field(default_factory=dict)


REAL = Shapes(models={"0.5B": "llama-0.5b", "1.5B": "llama-1.5b"})
DRY = Shapes(models={"0.5B": "llama-micro", "1.5B": "llama"}, seq=96, batch=2, warm=1, steps=3, pack_batch=4,
             pack_steps=3, small_seq=96, small_batch=2, resume_steps=8, resume_save=3, resume_kill_at=5,
             merge_steps=2, hybrid_steps=3, conn_ops="parity", conn_samples=4, conn_prompts=2, conn_digits="1",
             matmul=256)


# ------------------------------------------------------------------------------------------------
# processes: every part, and every measurement inside one, runs in a forked child with a deadline

def fork_start(fn, kwargs: dict, group: bool = False) -> tuple[int, int]:
    """Start ``fn(**kwargs)`` in a forked child; (pid, the pipe its result comes through). ``group``: the
    child leads a process group (a part and the measurements it forks die together). The parent must not
    have initialised CUDA (the children do)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        if group:
            os.setpgid(0, 0)
        try:
            out = {"ok": True, "value": fn(**kwargs)}
        except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing escapes the child
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1500], "trace": traceback.format_exc()[-6000:]}
        try:
            data = json.dumps(out, default=str).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps({"ok": False, "error": f"result is not JSON: {exc}"}).encode()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    if group:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here: no race with a kill before the child ran setpgid
    return pid, r


def fork_wait(pid: int, r: int, timeout_s: float, group: bool = False) -> dict:
    """The child's ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": ...}``; killed at the deadline."""
    deadline = time.monotonic() + max(timeout_s, 1.0)
    chunks, timed_out = [], False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(r)
    if timed_out:
        _kill(pid, group)
    _, status = os.waitpid(pid, 0)
    if group:
        _kill(pid, True)  # whatever the part left running (a measurement it forked)
    if timed_out:
        return {"ok": False, "error": f"timeout after {timeout_s:.0f} s"}
    if not chunks:
        return {"ok": False, "error": f"the process died (wait status {status}) before reporting"}
    return json.loads(b"".join(chunks))


def fork_call(fn, kwargs: dict, timeout_s: float, group: bool = False) -> dict:
    pid, r = fork_start(fn, kwargs, group)
    return fork_wait(pid, r, timeout_s, group)


def _kill(pid: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)


def leaf(fn, deadline: float, **kwargs):
    """A measurement in its own process (clean peak memory, a crash or a hang stays there); its value,
    or RuntimeError with its error."""
    res = fork_call(fn, kwargs, deadline - time.monotonic())
    if not res["ok"]:
        raise RuntimeError(res["error"] + ("\n" + res["trace"] if res.get("trace") else ""))
    return res["value"]


def leaves(calls: list, deadline: float) -> list:
    """Several measurements at once (a CPU-bound one beside a GPU-bound one), each in its own process."""
    started = [fork_start(fn, kw) for fn, kw in calls]
    results = [fork_wait(pid, r, deadline - time.monotonic()) for pid, r in started]
    bad = [res for res in results if not res["ok"]]
    if bad:
        raise RuntimeError("; ".join(b["error"] + ("\n" + b["trace"] if b.get("trace") else "") for b in bad))
    return [res["value"] for res in results]


def quiet_hf() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def peak_gib() -> float | None:
    import torch
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


# ------------------------------------------------------------------------------------------------
# data, configs, FLOPs

def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + "    ") for _ in range(n))


def render_overhead(model_dir: Path, seq: int) -> int:
    """Tokens the template adds around a prompt and a response (char tokenizer: 1 token per char)."""
    from neurosym.data import Example, Renderer
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    return len(Renderer(tok, seq, None).encode(Example((("user", "a"),), "b")).input_ids) - 2


def write_data(path: Path, lengths: list[int], overhead: int, seed: int) -> Path:
    """JSONL of prompt/response pairs that render to exactly ``lengths`` tokens each."""
    rng = random.Random(seed)
    rows = []
    for n in lengths:
        body = n - overhead
        p = body // 2
        rows.append({"prompt": _text(rng, p), "response": _text(rng, body - p)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def encodings(model_dir: Path, data: Path, seq: int) -> list:
    """Examples of ``data`` as neurosym renders them (the hand loop trains on the same tokens)."""
    from transformers import AutoTokenizer

    from neurosym.config.schema import DataConfig
    from neurosym.data import Renderer, load_examples
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples, _ = load_examples(str(data), DataConfig(train=str(data), max_length=seq))
    r = Renderer(tok, seq, None)
    return [r.encode(ex) for ex in examples]


def job_config(tmp: Path, name: str, model_dir, data, seq: int, batch: int, steps: int, quant: str = "none",
               packing: bool = False, save_every: int = 0, lr: float = 1e-4) -> Path:
    import yaml
    cfg = {
        "run": {"name": name, "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": str(model_dir), "quantization": quant},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train": str(data), "max_length": seq, "packing": packing},
        "train": {"batch_size": batch, "lr": lr, "max_steps": steps, "warmup": 0, "eval_every": 0,
                  "save_every": save_every, "keep_last_n": 10},
        "tracking": {"mode": "disabled"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def model_shape(model_dir: Path) -> dict:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, heads, kv, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // heads
    i, vocab = cfg["intermediate_size"], cfg["vocab_size"]
    blocks = L * (h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * i)
    lora = L * 16 * ((h + heads * hd) + 2 * (h + kv * hd) + (heads * hd + h) + 2 * (h + i) + (i + h))  # r=16
    return {"layers": L, "attn_width": heads * hd, "n_matmul": blocks + h * vocab, "n_params": blocks + h * vocab
            + L * 2 * h + h, "n_lora": lora, "hidden": h, "vocab": vocab}


def flops_per_token(shape: dict, context: float, dense_factor: int = 4) -> float:
    """F = dense_factor*N + 6*N_lora + 12*L*d*c (module docstring)."""
    return (dense_factor * shape["n_matmul"] + 6 * shape["n_lora"]
            + 12 * shape["layers"] * shape["attn_width"] * context)


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


# ------------------------------------------------------------------------------------------------
# measurements (each runs in its own process)

def m_env(n: int) -> dict:
    import torch
    import transformers
    import peft
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "python": sys.version.split()[0]}
    from importlib import metadata
    for name in ("accelerate", "bitsandbytes", "flash-attn", "textgrad", "litellm", "openai", "pydantic", "wandb",
                 "datasets"):
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = "missing"
    if torch.cuda.is_available():
        for name in ("bitsandbytes", "flash_attn"):  # installed is not enough: its CUDA library must load
            if out[name] != "missing":
                try:
                    __import__(name)
                except Exception as exc:  # noqa: BLE001
                    out[name] += f" (import fails: {type(exc).__name__}: {str(exc)[:200]})"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(device=torch.cuda.get_device_name(), capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
        a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(10):
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        times.sort()
        out["matmul_tflops"] = 2 * n**3 / times[len(times) // 2] / 1e12
        out["matmul"] = f"{n}^3 bf16, median of 10 on random data"
    else:
        import platform
        out.update(device=f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        out["matmul_tflops"] = 5 * 2 * n**3 / (time.perf_counter() - t) / 1e12
        out["matmul"] = f"{n}^3 fp32"
    out["peak_flops"] = peak_flops(out["device"])
    return out


def m_build(work: str, models: dict, seq: int) -> dict:
    from neurosym.model.tiny import build_tiny_model
    out = {}
    for label, preset in models.items():
        t = time.perf_counter()
        d = build_tiny_model(Path(work) / f"model-{preset}", preset=preset)
        out[label] = {"dir": str(d), "preset": preset, "seconds": time.perf_counter() - t, **model_shape(d)}
    return out


def m_neurosym(cfg_path: str, warm: int) -> dict:
    """neurosym's own training loop (``train``) on a config; tokens/s over the timed window."""
    import torch
    quiet_hf()
    from neurosym.config.schema import load_config
    from neurosym.observe.events import read_events
    from neurosym.train import train
    out = train(load_config(cfg_path), quiet=True)
    ev = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    window = ev[warm - 1:]  # from the end of step `warm` to the end of the last step
    tokens = sum(e["tokens"] for e in window[1:])
    return {"tokens_per_s": tokens / (window[-1]["time"] - window[0]["time"]), "tokens_per_step": ev[-1]["tokens"],
            "losses": [e["loss"] for e in ev], "peak_gib": peak_gib(), "steps": len(ev),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "run_dir": str(out.run_dir)}


def m_hand(model_dir: str, data: str, seq: int, batch: int, steps: int, warm: int, quant: bool) -> dict:
    """What a careful engineer writes by hand: the same tokens pre-tensorised on the device, PEFT, AdamW,
    cosine, clipping, bf16 autocast on CUDA (the same precision neurosym picks), the loss read each step."""
    import torch
    quiet_hf()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, get_scheduler
    on_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if on_cuda else "cpu")
    dtype = torch.bfloat16 if on_cuda else torch.float32
    torch.manual_seed(0)
    encs = encodings(Path(model_dir), Path(data), seq)
    kwargs = {"dtype": dtype}
    if quant:
        from transformers import BitsAndBytesConfig
        kwargs.update(device_map={"": 0}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16))
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quant:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = get_scheduler("cosine", opt, num_warmup_steps=0, num_training_steps=warm + steps)
    width = max(len(e.input_ids) for e in encs)
    ids = torch.zeros((len(encs), width), dtype=torch.long)
    labels = torch.full((len(encs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for j, e in enumerate(encs):
        n = len(e.input_ids)
        ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
    auto = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    model.train()
    ends, losses, tokens = [], [], []
    for step in range(warm + steps):
        rows = [(step * batch + k) % len(encs) for k in range(batch)]
        with auto:
            loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))  # a real loop logs the loss (and this synchronises)
        ends.append(time.perf_counter())
        tokens.append(int(mask[rows].sum()))
    return {"tokens_per_s": sum(tokens[warm:]) / (ends[-1] - ends[warm - 1]), "tokens_per_step": tokens[-1],
            "peak_gib": peak_gib(), "trainable": sum(p.numel() for p in params), "losses": losses}


def m_cli(argv: list, hide_cuda: bool = False) -> dict:
    """``neurosym <argv>`` in this process (the CLI's own parsing and error handling); rc and stderr."""
    if hide_cuda:  # neurosym picks CUDA when torch sees it: hide it from this child only
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch
        if hasattr(torch.cuda, "_cached_device_count"):
            torch.cuda._cached_device_count = None  # a count taken in the parent (NVML) must not carry over
        if torch.cuda.is_available():
            raise RuntimeError("could not hide CUDA from the CPU run (CUDA_VISIBLE_DEVICES='' came too late)")
    quiet_hf()
    from neurosym.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    return {"rc": rc, "stderr": err.getvalue()[-3000:]}


def m_logits(merged: str, run_dir: str, seq: int, data: str, quant_adapter: bool) -> dict:
    """Logits of the merged model against the base + adapter it came from, on the same batch."""
    import torch
    quiet_hf()
    from transformers import AutoModelForCausalLM

    from neurosym.cli import _run_config
    from neurosym.persist.checkpoint import find_checkpoint
    from neurosym.model.load import load_with_adapter
    cfg = _run_config(run_dir)
    if not quant_adapter:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"quantization": "none"})})
    model, _, device, dtype = load_with_adapter(cfg, Path(run_dir).parent / ".models", find_checkpoint(Path(run_dir), None))
    encs = encodings(Path(merged), Path(data), seq)[:4]
    width = min(len(e.input_ids) for e in encs)
    ids = torch.tensor([e.input_ids[:width] for e in encs], device=device)
    auto = torch.autocast("cuda", dtype=dtype) if device.type == "cuda" and dtype != torch.float32 \
        else contextlib.nullcontext()
    with torch.no_grad(), auto:
        ref = model(input_ids=ids).logits.float()
    del model
    m = AutoModelForCausalLM.from_pretrained(merged, dtype=dtype).to(device).eval()
    with torch.no_grad(), auto:
        got = m(input_ids=ids).logits.float()
    return {"rel_max_diff": float((got - ref).abs().max() / ref.abs().max()),
            "argmax_agree": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
            "adapter_base": "4-bit" if quant_adapter else str(dtype).replace("torch.", "")}


def m_conn(dtype: str, ops: str, samples: int, prompts: int, digits: str, tiny_dir: str) -> dict:
    """The compiled networks alone (exact up to their length, refusing past it) and as a gate beside a
    model, on this process's device, in ``dtype``."""
    import torch
    quiet_hf()
    from experiments.conn_eval import conn_alone, lm_vs_gate
    from neurosym.conn import get_op
    from neurosym.conn.precision import DTYPES, compile_for, verify
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = random.Random(0)
    out = {"device": device, "dtype": dtype, "ops": {}}
    names = ops.split(",")
    if dtype == "fp32":
        rows = conn_alone(names, samples, rng, device)
        for name in names:
            mine = [r for r in rows if r["op"] == name]
            top = max(r["length"] for r in mine)
            out["ops"][name] = {"exact_up_to": max([r["length"] for r in mine if r["length"] < top
                                                    and r["accuracy"] == 1.0] or [0]),
                                "max_len": top - 1, "refused_past_max": mine[-1]["refused"],
                                "exact": all(r["accuracy"] == 1.0 for r in mine if r["length"] < top)
                                and mine[-1]["refused"] == 1.0}
    else:
        from neurosym.conn import ConnInputError
        for name in names:
            op, ex_cpu = compile_for(name, dtype)  # compiled for bf16 (scaled margins), verified on CPU
            op.program.model.to(device)
            lengths = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < ex_cpu.longest] + [ex_cpu.longest]
            from experiments.conn_eval import TRUTH, operands
            acc = {}
            for n in lengths if ex_cpu.longest else []:
                cases = [operands(name, n, rng, op.spec.alphabet) for _ in range(samples)]
                answers = op.batch(cases)
                acc[n] = sum(a == TRUTH[name](*c) for a, c in zip(answers, cases)) / samples
            try:
                op.batch([operands(name, ex_cpu.longest + 1, rng, op.spec.alphabet)])
                refused = False
            except ConnInputError:
                refused = True
            # the same verification run on this device: the longest exact length it measures here
            fresh = get_op(name, margin=8.0)
            fresh.program.model.to(device)
            ex_dev = verify(fresh, dtype)
            fresh.program.model.to("cpu")
            out["ops"][name] = {"verified_cpu": ex_cpu.longest, "verified_here": ex_dev.longest,
                                "max_len": op.max_len, "accuracy_by_len": acc,
                                "refused_past_verified": refused,
                                "exact": all(v == 1.0 for v in acc.values()) and refused
                                and ex_dev.longest == ex_cpu.longest}
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=DTYPES[dtype]).to(device).eval()
    lm = lm_vs_gate(model, tok, [n for n in ("add", "subtract") if n in names] or ["add"],
                    [int(d) for d in digits.split(",")], prompts, rng, device)
    out["lm_gate"] = [{k: r[k] for k in ("op", "digits", "lm", "lm_gate")} for r in lm]
    out["gate_exact"] = all(r["lm_gate"] == 1.0 for r in lm)
    return out


def m_imports(work: str, model_dir: str) -> dict:
    """A LoRA-only job with tracking disabled: which of the packages the device lacks it imports."""
    before = sorted(m for m in WATCHED if m in sys.modules)
    quiet_hf()
    from neurosym.config.schema import load_config
    from neurosym.train import train
    tmp = Path(tempfile.mkdtemp(dir=work))
    data = write_data(tmp / "d.jsonl", [48] * 8, render_overhead(Path(model_dir), 64), 0)
    train(load_config(job_config(tmp, "imports", model_dir, data, 64, 2, 2)), quiet=True)
    return {"before": before, "imported": sorted(m for m in WATCHED if m in sys.modules)}


# ------------------------------------------------------------------------------------------------
# parts: each returns {"status", "summary", ...}; it runs in a process group of its own

class Ctx:
    def __init__(self, args, shapes: Shapes, work: Path, state: dict):
        self.args, self.s, self.work, self.state = args, shapes, work, state
        self.dry = args.dry_run

    def model(self, label: str) -> dict:
        built = self.state.get("build")
        if not built:
            raise RuntimeError("no models: the build part did not finish")
        return built[label]

    def tmp(self, name: str) -> Path:
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=d))

    def fixed_data(self, label: str, seq: int, n: int) -> Path:
        m = self.model(label)
        path = self.work / f"fixed-{label}-{seq}-{n}.jsonl"
        if not path.exists():
            write_data(path, [seq] * n, render_overhead(Path(m["dir"]), seq), seed=1)
        return path

    def on_cuda(self) -> bool:
        return bool(self.state.get("env", {}).get("device", "cpu").split()[0] != "cpu")


def part_env(ctx: Ctx, deadline: float) -> dict:
    env = leaf(m_env, deadline, n=ctx.s.matmul)
    if not ctx.dry and "device" in env and env["device"].startswith("cpu"):
        return {"status": "fail: no CUDA device (use --dry-run on CPU)", "summary": env["device"], "value": env}
    summary = (f"{env['device']}; torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
               f"bitsandbytes {env['bitsandbytes']}, flash_attn {env['flash_attn']}; matmul "
               f"{env['matmul_tflops']:.1f} TFLOP/s ({env['matmul']}); peak used "
               + (f"{env['peak_flops'] / 1e12:.1f} TFLOP/s" if env["peak_flops"] else "none (MFU n/a)"))
    return {"status": "ok", "summary": summary, "value": env}


def part_build(ctx: Ctx, deadline: float) -> dict:
    built = leaf(m_build, deadline, work=str(ctx.work), models=ctx.s.models, seq=ctx.s.seq)
    summary = "; ".join(f"{k}: {v['preset']} {_count(v['n_params'])} params (LoRA {_count(v['n_lora'])}), "
                        f"{v['seconds']:.0f} s" for k, v in built.items())
    return {"status": "ok", "summary": summary, "value": built}


def throughput(ctx: Ctx, deadline: float, label: str, quant: bool) -> dict:
    s, m = ctx.s, ctx.model(label)
    real_quant = quant and ctx.on_cuda()
    data = ctx.fixed_data(label, s.seq, s.batch * 4)
    tmp = ctx.tmp(f"tp-{label}-{'nf4' if quant else 'bf16'}")
    cfg = job_config(tmp, "ours", m["dir"], data, s.seq, s.batch, s.warm + s.steps, "4bit" if real_quant else "none")
    ours = leaf(m_neurosym, deadline, cfg_path=str(cfg), warm=s.warm)
    hand = leaf(m_hand, deadline, model_dir=m["dir"], data=str(data), seq=s.seq, batch=s.batch, steps=s.steps,
                warm=s.warm, quant=real_quant)
    if ours["tokens_per_step"] != s.batch * s.seq or hand["tokens_per_step"] != s.batch * s.seq:
        raise RuntimeError(f"rows are not {s.seq} tokens: neurosym {ours['tokens_per_step']}, hand "
                           f"{hand['tokens_per_step']} tokens per step (batch {s.batch})")
    shape = dict(m, n_lora=hand["trainable"])
    context = (s.seq + 1) / 2
    f4, f6 = flops_per_token(shape, context), flops_per_token(shape, context, 6)
    peak = ctx.state.get("env", {}).get("peak_flops")
    val = {"neurosym": ours, "hand": hand, "ratio": ours["tokens_per_s"] / hand["tokens_per_s"],
           "flops_per_token": f4, "model_tflops": f4 * ours["tokens_per_s"] / 1e12,
           "mfu": f4 * ours["tokens_per_s"] / peak if peak else None,
           "mfu_6n": f6 * ours["tokens_per_s"] / peak if peak else None,
           "mfu_hand": f4 * hand["tokens_per_s"] / peak if peak else None, "seq": s.seq, "batch": s.batch}
    mem = f"{ours['peak_gib']:.1f}" if ours["peak_gib"] is not None else "n/a"
    mfu = f"{val['mfu']:.1%} (hand {val['mfu_hand']:.1%}; 6N {val['mfu_6n']:.1%})" if peak else "n/a (no peak)"
    summary = (f"{ours['tokens_per_s']:,.0f} tok/s (hand {hand['tokens_per_s']:,.0f}), ratio {val['ratio']:.3f} "
               f"(target >= 0.97); peak {mem} GiB; MFU {mfu}; {f4 / 1e9:.2f} GFLOP/token; "
               f"{_count(m['n_params'])} params, seq {s.seq}x{s.batch}")
    status = "ok"
    if quant and not real_quant:
        status = "skipped: needs CUDA (bitsandbytes NF4); the same path ran with quantization none"
    return {"status": status, "summary": summary, "value": val}


def packing(ctx: Ctx, deadline: float, impl: str) -> dict:
    import importlib.util
    s, m = ctx.s, ctx.model(ctx.s.pack_model)
    if impl == "flash_attention_2" and ctx.on_cuda() and importlib.util.find_spec("flash_attn") is None:
        return {"status": "skipped: flash_attn is not installed (no wheel for this torch/CUDA on the device)",
                "summary": "sdpa and flex_attention rows measure packing instead"}
    # a model folder whose config selects the attention (from_pretrained reads `attn_implementation`)
    variant = ctx.work / f"model-{m['preset']}-{impl}"
    if not variant.exists():
        variant.mkdir()
        for f in Path(m["dir"]).iterdir():
            if f.name != "config.json":
                (variant / f.name).symlink_to(f)
        conf = json.loads((Path(m["dir"]) / "config.json").read_text())
        conf["attn_implementation"] = impl
        (variant / "config.json").write_text(json.dumps(conf, indent=1))
    from transformers import AutoConfig
    got = AutoConfig.from_pretrained(variant)._attn_implementation
    if got != impl:
        raise RuntimeError(f"config.json asks for {impl}, transformers reads {got}")
    if not ctx.on_cuda() and impl != "sdpa":
        return {"status": f"skipped: needs CUDA ({impl} on the packed path)",
                "summary": f"model folder with attn_implementation={got} built; the sdpa row ran the packing path"}
    rng = random.Random(2)
    overhead = render_overhead(Path(m["dir"]), s.seq)
    lengths = [rng.randint(max(32, overhead + 2), s.seq) for _ in range(s.pack_batch * 4)]
    data = write_data(ctx.work / f"varlen-{s.seq}.jsonl", lengths, overhead, seed=3)
    tmp = ctx.tmp(f"pack-{impl}")
    res = {}
    for packed in (False, True):
        cfg = job_config(tmp, f"{'packed' if packed else 'padded'}", variant, data, s.seq, s.pack_batch,
                         s.warm + s.pack_steps, packing=packed)
        res[packed] = leaf(m_neurosym, deadline, cfg_path=str(cfg), warm=s.warm)
    diff = max(abs(a - b) for a, b in zip(res[False]["losses"], res[True]["losses"]))
    ratio = res[True]["tokens_per_s"] / res[False]["tokens_per_s"]
    pad = 1 - sum(lengths) / (len(lengths) * s.seq)
    summary = (f"packed {res[True]['tokens_per_s']:,.0f} / padded {res[False]['tokens_per_s']:,.0f} tok/s = "
               f"{ratio:.3f}; max |loss diff| {diff:.2e}; examples {min(lengths)}-{max(lengths)} tokens "
               f"(padding to max_length would be {pad:.0%}); peak {res[True]['peak_gib'] or 0:.1f}/"
               f"{res[False]['peak_gib'] or 0:.1f} GiB")
    return {"status": "ok", "summary": summary,
            "value": {"packed": res[True], "padded": res[False], "ratio": ratio, "max_loss_diff": diff,
                      "attn_implementation": impl}}


def _wait_for_step(events: Path, pid: int, step: int, deadline: float) -> int:
    """The last step written to ``events`` once it reaches ``step`` (or the process ended)."""
    last = 0
    while time.monotonic() < deadline:
        if events.exists():
            for line in events.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    e = json.loads(line)
                    if e.get("kind") == "train":
                        last = max(last, e["step"])
        if last >= step:
            return last
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return last
        time.sleep(0.002)
    raise TimeoutError(f"no step {step} in {events} before the deadline")


def resume(ctx: Ctx, deadline: float, quant: bool) -> dict:
    from neurosym.observe.events import read_events
    s = ctx.s
    label = "0.5B"
    m = ctx.model(label)
    real_quant = quant and ctx.on_cuda()
    data = ctx.fixed_data(label, s.small_seq, s.small_batch * 6)
    tmp = ctx.tmp(f"resume-{'nf4' if quant else 'bf16'}")
    kw = dict(seq=s.small_seq, batch=s.small_batch, steps=s.resume_steps, quant="4bit" if real_quant else "none",
              save_every=s.resume_save, lr=1e-3)
    ref_cfg = job_config(tmp, "ref", m["dir"], data, **kw)
    cfg = job_config(tmp, "killed", m["dir"], data, **kw)
    ref = leaf(m_cli, deadline, argv=["train", str(ref_cfg), "--quiet"])
    if ref["rc"] != 0:
        raise RuntimeError(f"reference run failed: {ref['stderr']}")
    # the run to kill: forked, SIGKILLed once it has passed a checkpoint (at an arbitrary step after it)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            code = m_cli(["train", str(cfg), "--quiet"])["rc"] or 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        os._exit(code)
    run = tmp / "runs" / "killed"
    try:
        at = _wait_for_step(run / "events.jsonl", pid, s.resume_kill_at, deadline)
        os.kill(pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if not killed or at >= s.resume_steps:
        raise RuntimeError(f"the run was not killed mid-way (reached step {at}, wait status {status})")
    res = leaf(m_cli, deadline, argv=["resume", str(run), "--quiet"])
    if res["rc"] != 0:
        raise RuntimeError(f"resume failed: {res['stderr']}")
    ref_l = [(e["step"], e["loss"]) for e in read_events(tmp / "runs" / "ref" / "events.jsonl") if e["kind"] == "train"]
    got_l = [(e["step"], e["loss"]) for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    steps_ok = [st for st, _ in got_l] == list(range(1, s.resume_steps + 1))
    diffs = [abs(a - b) for (_, a), (_, b) in zip(ref_l, got_l)]
    ckpt = max((int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*")), default=0)
    import re
    found = re.search(r"resumed from \S*step-(\d+)", res["stderr"])
    if not found:
        raise RuntimeError(f"the resume did not say where it resumed from: {res['stderr'][-500:]}")
    resumed_from = int(found.group(1))
    after = diffs[resumed_from:]
    tol = RESUME_TOL["cuda" if ctx.on_cuda() else "cpu"]
    worst = max(after) if after else 0.0
    ok = steps_ok and worst <= tol and ckpt == s.resume_steps
    summary = (f"killed at step {at}, resumed from step {resumed_from}; every step once: {steps_ok}; max |loss "
               f"diff| after resume {worst:.2e} (tolerance {tol:g}), before {max(diffs[:resumed_from] or [0]):.2e}; "
               f"{'4-bit' if real_quant else 'bf16' if ctx.on_cuda() else 'fp32'} base, {s.resume_steps} steps")
    status = "ok" if ok else "fail: " + ("steps missing or repeated" if not steps_ok else f"loss differs by {worst:.2e}")
    if ok and quant and not real_quant:
        status = "skipped: needs CUDA (bitsandbytes NF4); the same kill/resume ran with quantization none"
    return {"status": status, "summary": summary,
            "value": {"killed_at": at, "resumed_from": resumed_from, "diffs": diffs, "tolerance": tol}}


def merge(ctx: Ctx, deadline: float, quant: bool) -> dict:
    import yaml
    s = ctx.s
    label = "0.5B"
    m = ctx.model(label)
    real_quant = quant and ctx.on_cuda()
    data = ctx.fixed_data(label, s.small_seq, s.small_batch * 4)
    tmp = ctx.tmp(f"merge-{'nf4' if quant else 'bf16'}")
    cfg = job_config(tmp, "job", m["dir"], data, s.small_seq, s.small_batch, s.merge_steps,
                     "4bit" if real_quant else "none", lr=1e-3)
    trained = leaf(m_cli, deadline, argv=["train", str(cfg), "--quiet"])
    if trained["rc"] != 0:
        raise RuntimeError(f"training failed: {trained['stderr']}")
    run = tmp / "runs" / "job"
    if quant and not real_quant:  # CPU: the saved config says 4-bit, so merge takes its QLoRA branch
        saved = yaml.safe_load((run / "config.yaml").read_text())
        saved["model"]["quantization"] = "4bit"
        (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    plain = leaf(m_cli, deadline, argv=["merge", str(run), "--out", str(tmp / "merged")])
    deq = leaf(m_cli, deadline, argv=["merge", str(run), "--out", str(tmp / "merged-deq"), "--dequantize"])
    out = {"plain": plain, "dequantize": deq}
    if deq["rc"] != 0:
        raise RuntimeError(f"merge --dequantize failed: {deq['stderr']}")
    if quant:
        refused = plain["rc"] != 0 and "--dequantize" in plain["stderr"]
        if not refused:
            raise RuntimeError(f"merge of a 4-bit run without --dequantize did not refuse (rc {plain['rc']})")
        vs4 = leaf(m_logits, deadline, merged=str(tmp / "merged-deq"), run_dir=str(run), seq=s.small_seq,
                   data=str(data), quant_adapter=real_quant)
        vs16 = leaf(m_logits, deadline, merged=str(tmp / "merged-deq"), run_dir=str(run), seq=s.small_seq,
                    data=str(data), quant_adapter=False)
        out.update(vs_4bit=vs4, vs_bf16=vs16)
        ok = vs16["rel_max_diff"] <= MERGE_TOL
        summary = (f"without --dequantize: refused (rc {plain['rc']}); --dequantize: merged; merged vs "
                   f"{vs4['adapter_base']} base+adapter: max |dlogit|/max|logit| {vs4['rel_max_diff']:.3f}, argmax "
                   f"{vs4['argmax_agree']:.1%}; vs {vs16['adapter_base']} base+adapter {vs16['rel_max_diff']:.2e} (tol {MERGE_TOL})")
    else:
        if plain["rc"] != 0:
            raise RuntimeError(f"merge failed: {plain['stderr']}")
        cmp = leaf(m_logits, deadline, merged=str(tmp / "merged"), run_dir=str(run), seq=s.small_seq, data=str(data),
                   quant_adapter=False)
        out.update(vs_adapter=cmp)
        ok = cmp["rel_max_diff"] <= MERGE_TOL
        summary = (f"merge: merged; merged vs base+adapter: max |dlogit|/max|logit| {cmp['rel_max_diff']:.2e} (tol "
                   f"{MERGE_TOL}), argmax {cmp['argmax_agree']:.1%}; --dequantize on a bf16 run: rc {deq['rc']}")
    status = "ok" if ok else "fail: merged logits differ beyond the tolerance"
    if ok and quant and not real_quant:
        status = "skipped: needs CUDA (bitsandbytes NF4); refusal and --dequantize ran on an unquantized run"
    return {"status": status, "summary": summary, "value": out}


def hybrid(ctx: Ctx, deadline: float) -> dict:
    from neurosym.observe.events import read_events
    tmp = ctx.tmp("hybrid")
    base = ["train", str(HERE / "testbed" / "hybrid.yaml"), "--quiet", "--set", f"run.output_dir={tmp}",
            "--set", "tracking.mode=disabled"]
    if ctx.s.hybrid_steps:
        base += ["--set", f"train.max_steps={ctx.s.hybrid_steps}"]
    def leg(name, extra=(), hide=False):
        return m_cli, {"argv": base + ["--set", f"run.name={name}", *extra], "hide_cuda": hide}

    def read(name, r, seconds):
        if r["rc"] != 0:
            raise RuntimeError(f"{name} run failed (rc {r['rc']}): {r['stderr']}")
        ev = list(read_events(tmp / name / "events.jsonl"))
        evals = [e for e in ev if e["kind"] == "eval"]
        return {"routes": [e["route"] for e in ev if e["kind"] == "train"], "seconds": seconds,
                "final_eval": {k: evals[-1].get(k) for k in ("eval_loss", "eval_reward")} if evals else {}}

    # the CPU run (CUDA hidden from its process) beside the device's own (dtype auto: bf16 on a GPU)
    t = time.monotonic()
    cpu_run, dev_run = leaves([leg("cpu", hide=True), leg("device")], deadline)
    out = {"cpu": read("cpu", cpu_run, time.monotonic() - t), "device": read("device", dev_run, time.monotonic() - t)}
    if ctx.on_cuda():  # then fp32 on the device, if the box has room for it
        if deadline - time.monotonic() > 1.3 * (time.monotonic() - t):
            t = time.monotonic()
            fn, kw = leg("device-fp32", ["--set", "model.dtype=float32"])
            out["device-fp32"] = read("device-fp32", leaf(fn, deadline, **kw), time.monotonic() - t)
        else:
            out["device-fp32"] = None
    cpu = out["cpu"]["routes"]
    parts = []
    for name in out:
        if name == "cpu":
            continue
        if out[name] is None:
            parts.append(f"{name}: not run (no time left in the box)")
            continue
        r = out[name]["routes"]
        same = sum(a == b for a, b in zip(cpu, r))
        first = next((i + 1 for i, (a, b) in enumerate(zip(cpu, r)) if a != b), None)
        out[name]["agree"] = same / max(len(cpu), 1)
        out[name]["first_divergence"] = first
        parts.append(f"{name}: routes equal to CPU's at {same}/{len(cpu)} steps"
                     + (f" (first differs at {first})" if first else "")
                     + f", reward {out[name]['final_eval'].get('eval_reward')}, {out[name]['seconds']:.0f} s")
    summary = (f"cpu: {sum(x == 'symbolic' for x in cpu)} symbolic / {len(cpu)} steps, reward "
               f"{out['cpu']['final_eval'].get('eval_reward')}, {out['cpu']['seconds']:.0f} s; " + "; ".join(parts))
    return {"status": "ok", "summary": summary, "value": out}


def conn(ctx: Ctx, deadline: float) -> dict:
    s = ctx.s
    tiny = ctx.work / "model-llama-conn"
    from neurosym.model.tiny import build_tiny_model
    leaf(build_tiny_model, deadline, out_dir=str(tiny), preset="llama")
    kw = dict(ops=s.conn_ops, samples=s.conn_samples, prompts=s.conn_prompts, digits=s.conn_digits, tiny_dir=str(tiny))
    # bf16 compiles and verifies on the CPU while fp32 runs on the device: side by side
    runs = leaves([(m_conn, dict(kw, dtype=d)) for d in ("fp32", "bf16")], deadline)
    out, bits, ok = {}, [], True
    for dtype, r in zip(("fp32", "bf16"), runs):
        out[dtype] = r
        exact = [n for n, v in r["ops"].items() if v["exact"]]
        ok &= len(exact) == len(r["ops"]) and r["gate_exact"]
        if dtype == "fp32":
            desc = ", ".join(f"{n} {v['exact_up_to']}/{v['max_len']}" for n, v in r["ops"].items())
        else:
            desc = ", ".join(f"{n} {v['verified_here']} (cpu {v['verified_cpu']})/{v['max_len']}"
                             for n, v in r["ops"].items())
        bits.append(f"{dtype} on {r['device']}: exact {len(exact)}/{len(r['ops'])} ({desc}); gate "
                    f"{'exact' if r['gate_exact'] else 'NOT exact'}")
    return {"status": "ok" if ok else "fail: exactness lost", "summary": "; ".join(bits), "value": out}


def part_imports(ctx: Ctx, deadline: float) -> dict:
    r = leaf(m_imports, deadline, work=str(ctx.work), model_dir=str(_micro(ctx)))
    bad = [m for m in r["imported"] if m not in r["before"]]
    status = "ok" if not bad and not r["before"] else f"fail: imports {', '.join(r['before'] + bad)}"
    return {"status": status, "summary": f"LoRA-only job, tracking disabled: imported {r['imported'] or 'none'} of "
                                         f"{', '.join(WATCHED)}", "value": r}


def _micro(ctx: Ctx) -> Path:
    from neurosym.model.tiny import build_tiny_model
    return build_tiny_model(ctx.work / "model-llama-micro", preset="llama-micro")


# name, function, time box in seconds on CUDA (the dry run gets DRY_BOX each); in order of value
PARTS = [
    ("env", part_env, 40),
    ("build", part_build, 120),
    ("lora-bf16 0.5B", lambda c, d: throughput(c, d, "0.5B", False), 60),
    ("qlora-nf4 0.5B", lambda c, d: throughput(c, d, "0.5B", True), 75),
    ("lora-bf16 1.5B", lambda c, d: throughput(c, d, "1.5B", False), 70),
    ("qlora-nf4 1.5B", lambda c, d: throughput(c, d, "1.5B", True), 90),
    ("packing sdpa", lambda c, d: packing(c, d, "sdpa"), 60),
    ("resume bf16", lambda c, d: resume(c, d, False), 60),
    ("resume nf4", lambda c, d: resume(c, d, True), 75),
    ("merge bf16", lambda c, d: merge(c, d, False), 60),
    ("merge nf4", lambda c, d: merge(c, d, True), 75),
    ("hybrid testbed", hybrid, 180),
    ("conn_eval fp32/bf16", conn, 90),
    ("packing flex_attention", lambda c, d: packing(c, d, "flex_attention"), 90),
    ("packing flash_attention_2", lambda c, d: packing(c, d, "flash_attention_2"), 60),
    ("imports", part_imports, 30),
]
DRY_BOX = 150


def part_box(name: str, box: float, dry: bool) -> float:
    """A part's time box: its own on CUDA; DRY_BOX each in the dry run (tiny shapes, a slow CI machine)."""
    return DRY_BOX if dry else box
KEEP = {"env", "build"}  # parts whose value the later parts read


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| part | status | s | result |", "| --- | --- | ---: | --- |"]
    for r in rows:
        cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines.append(f"| {cell(r['part'])} | {cell(r['status'])} | {r['seconds']:.0f} | {cell(r.get('summary', ''))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.md and gpu_check.json")
    p.add_argument("--dry-run", action="store_true", help="every part on CPU with tiny shapes")
    p.add_argument("--budget-s", type=float, default=None, help="the whole run's time (default 480; dry run 900)")
    p.add_argument("--only", default=None, help="comma-separated part names (env and build always run)")
    p.add_argument("--work", default=None, help="scratch folder for models and runs (default: a temporary one)")
    args = p.parse_args(argv)
    shapes = DRY if args.dry_run else REAL
    budget = args.budget_s or (900 if args.dry_run else 480)
    names = [n for n, _, _ in PARTS]
    only = None
    if args.only:
        only = {x.strip() for x in args.only.split(",")}
        unknown = only - set(names)
        if unknown:
            p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(names)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # imported once here (no CUDA touched): every forked part starts with them loaded. A library that
    # asks torch.cuda.is_available() at import asks NVML then, which leaves CUDA uninitialised for the forks
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch
    import transformers  # noqa: F401
    import peft  # noqa: F401
    import neurosym.cli  # noqa: F401
    import neurosym.train  # noqa: F401
    from transformers import AutoModelForCausalLM, LlamaForCausalLM  # noqa: F401
    if torch.cuda.is_initialized():
        print("[gpu_check] warning: CUDA was initialised before the parts fork; their CUDA calls may fail",
              file=sys.stderr)
    work_ctx = tempfile.TemporaryDirectory(prefix="gpu_check-") if args.work is None else contextlib.nullcontext(args.work)
    start = time.monotonic()
    rows, state = [], {}
    with work_ctx as work:
        ctx = Ctx(args, shapes, Path(work), state)
        for name, fn, box in PARTS:
            if only is not None and name not in only and name not in KEEP:
                continue
            left = budget - (time.monotonic() - start)
            box = part_box(name, box, args.dry_run)
            row = {"part": name, "seconds": 0.0}
            if left < 5:
                row.update(status=f"skipped: out of time (--budget-s {budget:.0f})")
                rows.append(row)
                continue
            limit = min(box, left)
            print(f"[gpu_check] {name} (box {limit:.0f} s)", file=sys.stderr, flush=True)
            t = time.monotonic()

            def run_part(fn=fn, limit=limit):
                return fn(ctx, time.monotonic() + limit - 1)

            res = fork_call(run_part, {}, limit, group=True)
            row["seconds"] = time.monotonic() - t
            if res["ok"]:
                row.update({k: v for k, v in res["value"].items()})
                if name in KEEP and "value" in row:
                    state[name] = row["value"]
            else:
                err = res["error"].splitlines()[0] if res["error"] else "?"
                row.update(status=("timeout" if err.startswith("timeout") else "error") + f": {err[:400]}",
                           trace=res.get("trace") or res["error"])
            rows.append(row)
            print(f"[gpu_check] {name}: {row['status']} ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    env = state.get("env", {})
    header = (f"# gpu_check on {env.get('device', '?')} ({'dry run, tiny shapes' if args.dry_run else 'full shapes'}; "
              f"{time.monotonic() - start:.0f} s of a {budget:.0f} s budget)")
    md = table(rows, header)
    (out / "gpu_check.md").write_text(md)
    (out / "gpu_check.json").write_text(json.dumps({"header": header, "dry_run": args.dry_run, "budget_s": budget,
                                                    "shapes": asdict(shapes), "rows": rows}, indent=1, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
