"""Command line: ``neurosym generate MODEL``, ``neurosym conn info``, ``neurosym conn run OP OPERAND...``.

``generate`` is how one talks to a model or a fine-tune: a run (its newest checkpoint), a checkpoint, a
merged model, a composition, an adapter folder or a plain model, answering prompts (``--prompt``,
``--prompts FILE``, stdin, or typed in a terminal) in the chat format training rendered them in, under
the system prompt the model learned (:mod:`neurosym.compose.prompt`), batched
(:func:`neurosym.model.generation.generate_batched`); ``--raw`` continues a text as it is. The CoNN gate
(``--conn``) writes exact answers at arithmetic triggers.

``register(subparsers)`` adds the parsers to the main ``neurosym`` CLI; ``python -m neurosym.conn.cli``
runs them on their own. Every command returns an exit code: 0, or 2 for a user error: a network refusing
its operands (too long, wrong characters), or a usage error caught before any heavy work (an empty
prompt, --max-new-tokens <= 0, a device this build lacks, --max-len above the cap, an --ops-module that
does not load, a bad row in --prompts). Errors go to stderr as one line, never a traceback.

``--ops-module`` imports a Python module (a dotted name or a ``.py`` path) that calls
``neurosym.conn.register(...)``: its operations and triggers are then available to ``conn run``,
``conn info`` and ``generate --conn``. Importing runs that module's code: name only modules you trust. A dotted
name is found on ``sys.path``, which holds ``$PYTHONPATH`` and, under ``python -m neurosym``, the current folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RAW = argparse.RawDescriptionHelpFormatter

CONN_EPILOG = """examples:
  neurosym conn info
  neurosym conn run add 123 456          # prints 579
  neurosym conn run subtract 123 456     # prints -333
  neurosym conn run parity 0110101       # prints 0
  neurosym conn run reverse 31415        # prints 51413
"""

RUN_EPILOG = """examples:
  neurosym conn run parity 0110101
  neurosym conn run reverse 31415
  neurosym conn run add 123 456
  neurosym conn run subtract 456 123
  neurosym conn run add --max-len 100 <100-digit a> <100-digit b>

The answer is the last line of output. Invalid operands, or operands longer than the compiled
maximum (see `neurosym conn info`), exit with status 1 and a message on stderr.
"""

INFO_EPILOG = """examples:
  neurosym conn info
  neurosym conn info add --max-len 64
"""

GENERATE_EPILOG = """examples:
  neurosym generate runs/testbed-hybrid --prompt "Where does Quillon live?"   # the newest checkpoint
  neurosym generate runs/testbed-hybrid/checkpoints/step-20 --prompt "..."    # one checkpoint
  neurosym generate merged/ --prompt "..."                    # a merged model (neurosym merge)
  neurosym generate comp/ --prompt "..."                      # a composition (neurosym compose)
  neurosym generate runs/x --prompts data/eval.jsonl --jsonl > answers.jsonl  # batched, a JSON line each
  neurosym generate runs/x                                    # interactive: a prompt per line, Ctrl-D ends
  cat questions.txt | neurosym generate runs/x                # a prompt per line of stdin
  neurosym generate runs/x --prompt "..." --system "Answer in French." --temperature 0.7 --top-p 0.9
  neurosym generate ./base --raw --prompt "Once upon a time"  # a plain continuation: no template
  neurosym generate tiny://llama --raw --prompt "Q: 4812+977=" --max-new-tokens 8   # the gate writes 5789
  neurosym generate ./base --adapter ./runs/lora/checkpoints/step-50 --prompt "12-30="
  neurosym generate ./my-model --raw --prompt "mirror(abc)=" --conn mirror --ops-module my_ops.py

What the model receives. By default each prompt is rendered as training rendered its examples (the same
neurosym.data.Renderer): the tokenizer's chat template (the plain System:/User:/Assistant: layout when it has
none) with the system prompt MODEL was trained under: a run's or a checkpoint's learned prompt (the one
current in that checkpoint), a merged model's system_prompt.txt (its template defaults to it too), a
composition's modules' prompt. The first stderr line says which. --system TEXT replaces it (--system ''
sends none); a --prompts row with its own system message keeps it. --show-prompt prints the rendered text on
stderr. --raw tokenizes the prompt as it is and continues it. Greedy unless --temperature > 0 (then
--top-p, --top-k and --seed apply).

--prompts FILE: JSONL (or any file `neurosym train` reads) with a prompt per row: prompt (+ system),
instruction (+ input), or messages/conversations ending with the user's turn; a training row's response is
ignored, so an eval file works as it is.

Output: for one prompt, the answer. For several, ">>> prompt" and the answer for each; --jsonl prints one
JSON object per prompt (prompt, system, response, ended, empty) instead. An empty answer is said so on
stderr with its cause (e.g. the first token was the end-of-sequence token), never printed as a blank line.

The CoNN gate (--conn, on by default for every registered operation; --conn none for the model alone).
Triggers: an arithmetic expression before "=" (12 + 5 + 7 =, 1,234+5=, 10-3-2=) for add and subtract,
parity(bits)= (parity), reverse(text)= (reverse), and whatever --ops-module registers. The whole
expression must be one the networks compute: 3 * 4 + 2 =, dates, scores and phone numbers are left to
the model. When the text reaches a trigger the compiled networks write the answer (beta = 1) and the
number is ended (no digit may extend it); then the model continues (beta = 0). In the chat format the
gate reads the user's message and then the answer (not the template between): a trigger ending the
message (What is 4812+977=) is answered from the answer's first token. What the networks computed, or
why they stayed silent, is listed on stderr.

An encoder-decoder model (T5, BART: config.is_encoder_decoder) is loaded with AutoModelForSeq2SeqLM; the
prompt is its encoder input as it is (no chat template), and a trigger at the prompt's end is answered
from the decoder's first token.
"""


OPS_MODULE_HELP = ("import MODULE, which registers operations with neurosym.conn.register (repeatable). This runs "
                   "its code: a .py path runs that file; a dotted name is imported from sys.path ($PYTHONPATH, "
                   "and the current folder under `python -m neurosym`), so a file of that name lying there runs. "
                   "Name only modules you trust")


def _fail(message: str, code: int = 2) -> int:  # every failure here is the user's to fix: exit 2, as every verb
    print(f"error: {message}", file=sys.stderr)
    return code


def _usage(message: str) -> int:
    return _fail(message, 2)


def load_ops_modules(specs: list[str] | None) -> str | None:
    """Import each ``--ops-module`` (a dotted module name or a path to a ``.py`` file); an error message or None."""
    import importlib
    import importlib.util

    for spec in specs or []:
        try:
            if spec.endswith(".py") or "/" in spec or "\\" in spec:
                path = Path(spec)
                if not path.is_file():
                    return f"--ops-module {spec}: no such file"
                module_spec = importlib.util.spec_from_file_location(f"neurosym_user_ops_{path.stem}", path)
                module = importlib.util.module_from_spec(module_spec)
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except Exception as err:  # the user's module: report what failed, not a traceback
            return f"--ops-module {spec} failed to load: {type(err).__name__}: {err}"
    return None


def _check_max_len(max_len: int | None) -> str | None:
    from neurosym.conn.ops import MAX_COMPILE_LEN

    if max_len is not None and not 1 <= max_len <= MAX_COMPILE_LEN:
        return (f"--max-len {max_len} is outside 1..{MAX_COMPILE_LEN}: compiling grows with the square of the "
                f"length (at 2,000 it takes minutes and gigabytes); split longer inputs and compose calls")
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import get_op

    problem = load_ops_modules(args.ops_module) or _check_max_len(args.max_len)
    if problem:
        return _usage(problem)
    try:
        print(get_op(args.op, args.max_len)(*args.operands))
    except ConnInputError as err:
        return _fail(str(err))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import OPS, get_op

    problem = load_ops_modules(args.ops_module) or _check_max_len(args.max_len)
    if problem:
        return _usage(problem)
    names = args.ops or list(OPS)
    from neurosym.conn.precision import DTYPES, SCALED_MARGIN, compile_for, verify

    header = f"{'op':<9} {'max len':>7} {'layers':>6} {'attn':>4} {'mlp':>4} {'width':>6} {'mlp hidden':>10} " \
             f"{'heads':>5} {'params':>8}"
    print(header)
    ops = []
    for name in names:
        try:
            op = get_op(name, args.max_len)
        except ConnInputError as err:
            return _fail(str(err))
        ops.append(op)
        s = op.stats()
        print(f"{name:<9} {s['max_len']:>7} {s['layers']:>6} {s['attention_layers']:>4} {s['mlp_layers']:>4} "
              f"{s['d_model']:>6} {s['max_mlp_hidden']:>10} {s['max_heads']:>5} {s['parameters']:>8}")
    print("max len: longest operand (bits, characters, or digits per operand); width: residual stream "
          "(d_model); mlp hidden: widest MLP layer")
    if args.no_precision:
        return 0
    scaled = {d: f"{d}x{m:g}" for d, m in SCALED_MARGIN.items()}
    print("\nprecision: margin (how far every MLP unit stays outside its clamp band; 1.0 by construction in "
          "fp32) and longest exact operand length, measured on sampled inputs; "
          + ", ".join(f"{label}: compiled with margins scaled x{SCALED_MARGIN[d]:g} for {d} "
                      f"(neurosym.conn.precision.compile_for)" for d, label in scaled.items()))
    print(f"{'op':<9} " + " ".join(f"{'margin ' + d:>11} {'exact ' + d:>10}" for d in [*DTYPES, *scaled.values()]))
    for op in ops:
        cells, reasons = [], []
        for d in DTYPES:
            e = verify(op, d)
            cells.append(f"{e.margin:>11.4g} {e.longest:>10}")
            if e.reason:
                reasons.append(f"{d}: {e.reason}")
        for d, label in scaled.items():
            _, e = compile_for(op.name, d, op.max_len)
            cells.append(f"{e.margin:>11.4g} {e.longest:>10}")
            if e.reason:
                reasons.append(f"{label}: {e.reason}")
        print(f"{op.name:<9} " + " ".join(cells) + (f"   ({'; '.join(reasons)})" if reasons else ""))
    return 0


def _parse_conn_list(value: str) -> list[str] | str:
    """The ops named by --conn, or "all" (both resolved against the registry after --ops-module is loaded)."""
    if value.strip().lower() in ("", "none", "off"):
        return []
    if value.strip().lower() == "all":
        return "all"
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_device(device: str) -> str | None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a torch device; use cpu, cuda, cuda:0 or mps"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return (f"--device {device} was asked but this torch build has no CUDA device "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device} was asked but MPS is not available here; use --device cpu"
    return None


def load_model(name_or_path: str, adapter: str | None = None, device: str = "cpu",
               trust_remote_code: bool = False):
    """Model and tokenizer through the one model loader (``neurosym.compose.load``): a local folder, a
    hub id, ``tiny://<preset>``, a run directory, a checkpoint, a PEFT adapter folder or a composition
    (``neurosym compose``); ``adapter`` puts one more PEFT adapter on top."""
    from neurosym.compose import load

    seq2seq = _encoder_decoder_config(name_or_path)
    if seq2seq is not None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path).to(device)
    else:
        model, tokenizer = load(name_or_path, device=device, trust_remote_code=trust_remote_code)
    if adapter:
        from neurosym.model.load import peft_from_pretrained
        model = peft_from_pretrained(model, adapter).to(device)
    model.eval()
    return model, tokenizer


def _encoder_decoder_config(name_or_path: str):
    """The config of an encoder-decoder model (T5, BART: loaded with ``AutoModelForSeq2SeqLM``), or None for
    everything the common loader takes (decoder-only models, runs, adapters, compositions, tiny://)."""
    if name_or_path.startswith("tiny://") or Path(name_or_path).is_file():
        return None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError):
        return None  # not a plain model: the common loader says what it is or why it does not load
    return config if getattr(config, "is_encoder_decoder", False) else None


def _given_prompts(args: argparse.Namespace) -> tuple[list, str | None]:
    """The examples to answer from --prompt and --prompts (none: the caller reads stdin); or an error."""
    from neurosym.data.examples import Example

    examples = []
    for i, text in enumerate(args.prompt or [], 1):
        if not text.strip():
            return [], ("--prompt is empty (or only whitespace); give the text to answer, e.g. --prompt "
                        "\"What is 12+30?\"")
        examples.append(Example((("user", text),), "", f"--prompt {i}"))
    if args.prompts:
        try:
            examples += read_prompts(args.prompts)
        except ValueError as err:
            return [], str(err)
    return examples, None


def _prompt_row(row: dict, fields) -> dict:
    """``row`` with a placeholder answer where it has none (a prompt-only row), so that the training
    parser (``parse_record``) reads it: the same formats, field names and checks as training data."""
    from neurosym.data.examples import detect_format

    row = dict(row)
    fmt = detect_format(row, fields)
    if fmt is None and fields.prompt in row:
        row[fields.response] = "-"
    elif fmt is None and fields.instruction in row:
        row[fields.output] = "-"
    elif fmt in ("chat", "sharegpt"):
        key = fields.messages if fmt == "chat" else fields.conversations
        msgs = row[key]
        last = msgs[-1] if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) else None
        role = next((k for k in ("role", "from") if last is not None and k in last), None)
        content = next((k for k in ("content", "value") if last is not None and k in last), None)
        if role and content and last[role] not in ("assistant", "gpt", "model"):
            row[key] = [*msgs, {role: "assistant", content: "-"}]
    return row


def read_prompts(path: str) -> list:
    """The prompts of a data file (JSONL, JSON, parquet: what training reads), as examples without their
    answers. A row names the prompt as training rows do (prompt [+ system], instruction [+ input],
    messages or conversations ending with the user's turn, or a whole training row whose response is
    ignored). :raises ValueError: the file or a row (``file:line``) cannot be read, with the fix."""
    from neurosym.config.schema import DataFields, DataSource
    from neurosym.data.errors import DataError
    from neurosym.data.examples import parse_record
    from neurosym.data.readers import iter_rows

    fields, out = DataFields(), []
    try:
        for loc, raw in iter_rows(DataSource(path=path)):
            if raw is None:
                continue
            if isinstance(raw, DataError):
                raise ValueError(f"--prompts {loc}: {raw}")
            try:
                row = _prompt_row(raw, fields) if isinstance(raw, dict) else raw
                out.append(parse_record(row, "auto", fields, loc))
            except DataError as err:
                raise ValueError(f"--prompts {loc}: {err} (a row holds a prompt: {{\"prompt\": ...}}, "
                                 f"{{\"messages\": [...]}} ending with the user's turn, or a training row)") from None
    except DataError as err:
        raise ValueError(f"--prompts {path}: {err}") from None
    if not out:
        raise ValueError(f"--prompts {path}: no prompt in the file")
    return out


def _check_generate_args(args: argparse.Namespace) -> str | None:
    if args.max_new_tokens <= 0:
        return f"--max-new-tokens must be at least 1, got {args.max_new_tokens}"
    if args.temperature < 0:
        return f"--temperature must be 0 (greedy) or more, got {args.temperature}"
    if not 0 < args.top_p <= 1:
        return f"--top-p must be in (0, 1] (1: off), got {args.top_p}"
    if args.top_k < 0:
        return f"--top-k must be 0 (off) or more, got {args.top_k}"
    if args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    return None


class Chat:
    """How prompts reach the model: the chat format training used (``neurosym.data.Renderer`` under the
    system prompt the model was trained under, or ``--system``) or, ``raw``, the prompt's text as it is."""

    def __init__(self, tokenizer, raw: bool, system: str | None, note: str, max_length: int):
        from neurosym.data import Renderer

        self.tokenizer, self.raw, self.system, self.note = tokenizer, raw, system, note
        self.renderer = None if raw else Renderer(tokenizer, max_length, system)

    @classmethod
    def for_model(cls, args: argparse.Namespace, tokenizer, model, encoder_decoder: bool) -> "Chat":
        ctx = getattr(model.config, "max_position_embeddings", None)
        max_length = (ctx - args.max_new_tokens + 1) if ctx else 1 << 30
        if args.raw or encoder_decoder:
            why = "--raw" if args.raw else "an encoder-decoder model: the prompt is its encoder input"
            return cls(tokenizer, True, None, f"the prompt as it is, no chat template ({why})", max_length)
        layout = ("the tokenizer's chat template" if getattr(tokenizer, "chat_template", None)
                  else "the plain System:/User:/Assistant: layout (the tokenizer has no chat template)")
        if args.system is not None:
            system, source = (args.system or None), "--system"
        else:
            from neurosym.compose.prompt import trained_prompt

            found = trained_prompt(args.model, args.adapter)
            system, source = found.text, found.source
        told = (f"system prompt {terminal_safe_short(system)} ({source})" if system
                else f"no system prompt ({source})")
        return cls(tokenizer, False, system, f"{layout}; {told}", max_length)

    def ids(self, ex) -> list[int]:
        """The token ids the model receives for ``ex``: exactly what training renders as its prompt."""
        if self.raw:
            return self.tokenizer(ex.prompt)["input_ids"]
        return self.renderer.generation_ids(ex)

    def text(self, ex) -> str:
        return self.tokenizer.decode(self.ids(ex), skip_special_tokens=False)


def terminal_safe_short(text: str, limit: int = 80) -> str:
    from neurosym.observe.prompt_history import terminal_safe

    shown = terminal_safe(text)
    return repr(shown if len(shown) <= limit else shown[:limit - 1] + "…")


class _AnswerGate:
    """The gate on a chat prompt (a ``LogitsProcessor``): it reads the user's message, then the answer,
    not the template between (``ConnGate.set_encoder_input`` holds the message; ``width``: the padded
    prompt's length, after which each row holds the answer alone)."""

    def __init__(self, gate, width: int):
        self.gate, self.width = gate, width

    def __call__(self, input_ids, scores):
        return self.gate(input_ids[:, self.width:], scores)


def _gate_processors(gate, examples: list, chat: Chat, encoder_decoder: bool, starts: list):
    """Per chunk of prompts, the processors of its ``generate`` call (the gate set for that chunk)."""
    def make(start: int, ids, mask) -> list:
        starts.append((start, len(gate.events)))
        if encoder_decoder:
            gate.set_encoder_input(ids, mask)
            return [gate]
        if chat.raw:
            return [gate]
        users = [ex.prompt for ex in examples[start:start + ids.shape[0]]]
        enc = chat.tokenizer(users, add_special_tokens=False, padding=True, return_tensors="pt")
        gate.set_encoder_input(enc["input_ids"], enc["attention_mask"])
        return [_AnswerGate(gate, ids.shape[1])]
    return make


def _make_gate(args: argparse.Namespace, tokenizer):
    from neurosym.conn.gate import ConnGate

    return ConnGate(tokenizer, ops=args.conn) if args.conn else None


def _report_gate(gate, starts: list, several: bool) -> None:
    for i, event in enumerate(gate.events if gate is not None else []):
        start = max((s for s, first in starts if first <= i), default=0)
        where = f"[{start + event.row + 1}] " if several else ""
        if event.answer is None:
            print(f"[conn] {where}{' '.join(event.operands)}: left to the model ({event.reason})", file=sys.stderr)
        elif event.op == "chain":
            print(f"[conn] {where}{event.operands[0]} -> {event.answer} ({'; '.join(event.calls)})", file=sys.stderr)
        else:
            print(f"[conn] {where}{event.op}({', '.join(event.operands)}) -> {event.answer}", file=sys.stderr)


def why_empty(generated, tokenizer, raw: bool) -> str:
    """In words, why a continuation holds no text, and what to try."""
    ids = list(generated.token_ids)
    special = set(tokenizer.all_special_ids)
    if not ids:
        cause = "no token was generated"
    elif generated.ended and len(ids) == 1:
        cause = (f"its first token was the end-of-sequence token {tokenizer.convert_ids_to_tokens(ids[0])!r}: "
                 f"the model ended its answer at once")
    elif all(t in special for t in ids):
        cause = f"it wrote only special tokens ({len(ids)}), which are not shown"
    else:
        cause = f"it wrote only whitespace ({len(ids)} token{'s' if len(ids) != 1 else ''})"
    hint = ("a fine-tune answers in its chat format: try without --raw" if raw
            else "try --show-prompt to see what the model received, another --system, or --raw")
    return f"{cause}; {hint}"


def _print_answers(examples: list, results: list, chat: Chat, args: argparse.Namespace) -> None:
    import json

    several = len(examples) > 1
    for i, (ex, got) in enumerate(zip(examples, results), 1):
        text = got.text if chat.raw else got.text.strip()
        if got.empty:
            print(f"generate: [{i}] empty answer: " if several else "generate: empty answer: ",
                  why_empty(got, chat.tokenizer, chat.raw), sep="", file=sys.stderr)
        if args.jsonl:
            system = ex.system or (None if chat.raw else chat.system)
            print(json.dumps({"prompt": ex.prompt, "system": system, "response": text, "ended": got.ended,
                              "empty": got.empty}, ensure_ascii=False))
        elif several:
            print(f">>> {ex.prompt}")
            print(text if not got.empty else "(empty answer: see stderr)")
            print()
        elif not got.empty:
            print(text)
    sys.stdout.flush()


def _answer(model, chat: Chat, gate, examples: list, args: argparse.Namespace, encoder_decoder: bool) -> list:
    from neurosym.model.generation import generate_batched

    if args.show_prompt:
        for i, ex in enumerate(examples, 1):
            print(f"generate: [{i}] the model receives: {chat.text(ex)!r}", file=sys.stderr)
    starts: list = []
    processors = _gate_processors(gate, examples, chat, encoder_decoder, starts) if gate is not None else None
    eos = _eos_ids(chat.tokenizer, model)
    results = generate_batched(model, chat.tokenizer, [chat.ids(ex) for ex in examples], args.max_new_tokens,
                               args.batch_size, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                               seed=args.seed, eos_token_id=eos, processors=processors)
    _report_gate(gate, starts, len(examples) > 1)
    if gate is not None:
        gate.events.clear()
    return results


def _eos_ids(tokenizer, model) -> list[int]:
    """Where an answer ends: the tokenizer's end-of-sequence token (what training appended to every
    response) and the model's generation config's (a chat model's end-of-turn token)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def _interactive(model, chat: Chat, gate, args: argparse.Namespace, encoder_decoder: bool) -> int:
    from neurosym.data.examples import Example

    print("generate: a prompt per line; an empty line is skipped; Ctrl-D (end of input) ends", file=sys.stderr)
    n = 0
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=sys.stderr)
            return 0
        if not line.strip():
            continue
        n += 1
        ex = Example((("user", line.rstrip("\r\n")),), "", f"stdin line {n}")
        _print_answers([ex], _answer(model, chat, gate, [ex], args, encoder_decoder), chat, args)


def _stdin_prompts() -> list:
    from neurosym.data.examples import Example

    return [Example((("user", line.rstrip("\r\n")),), "", f"stdin line {i}")
            for i, line in enumerate(sys.stdin, 1) if line.strip()]


def cmd_generate(args: argparse.Namespace) -> int:
    from neurosym.conn.ops import OPS

    # every check that needs no model first: loading one can take minutes
    examples, problem = _given_prompts(args)
    problem = problem or _check_generate_args(args) or load_ops_modules(args.ops_module) or _check_device(args.device)
    if problem:
        return _usage(problem)
    if args.conn == "all":  # the default, resolved after --ops-module registered its ops
        args.conn = list(OPS)
    unknown = [n for n in args.conn if n not in OPS]
    if unknown:
        return _usage(f"--conn: unknown operation(s) {', '.join(unknown)}; choose from {', '.join(OPS)}, "
                      "'all' or 'none' (register your own with --ops-module)")
    interactive = not examples and (sys.stdin is None or sys.stdin.isatty())
    if not examples and not interactive:
        examples = _stdin_prompts()
        if not examples:
            return _usage("no prompt: give --prompt TEXT (repeatable), --prompts FILE.jsonl, prompts on stdin "
                          "(one per line), or run it in a terminal to type them")

    from neurosym.model.load import ModelError
    try:
        model, tokenizer = load_model(args.model, args.adapter, args.device, args.trust_remote_code)
    except (OSError, ValueError, ImportError, ModelError) as err:
        return _fail(f"could not load model {args.model!r}"
                     f"{f' with adapter {args.adapter!r}' if args.adapter else ''}: {err}")
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx and args.max_new_tokens >= ctx:
        return _usage(f"--max-new-tokens {args.max_new_tokens} leaves no room for the prompt: this model "
                      f"reads at most {ctx} tokens (max_position_embeddings)")
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    chat = Chat.for_model(args, tokenizer, model, encoder_decoder)
    print(f"generate: {chat.note}", file=sys.stderr)
    try:
        gate = _make_gate(args, tokenizer)
    except ValueError as err:
        return _fail(str(err))
    from neurosym.data.errors import DataError
    try:
        if interactive:
            return _interactive(model, chat, gate, args, encoder_decoder)
        _print_answers(examples, _answer(model, chat, gate, examples, args, encoder_decoder), chat, args)
    except DataError as err:  # the chat template refuses a conversation (a role it does not know)
        return _fail(str(err))
    return 0


def _add_generate(subparsers) -> None:
    gen = subparsers.add_parser(
        "generate", help="talk to a model or a fine-tune (a run, checkpoint, merged model, composition) in "
                         "its chat format",
        description="Answer prompts with a model: a run directory (its newest checkpoint), a checkpoint, a "
                    "merged model, a composition, an adapter folder, a local model, a hub id or tiny://llama. "
                    "Prompts are rendered in the chat format training used, with the system prompt the model "
                    "learned; --raw continues the text as it is. The CoNN gate writes exact answers at "
                    "arithmetic triggers (--conn).",
        epilog=GENERATE_EPILOG, formatter_class=RAW)
    gen.add_argument("model", help="a run directory, a checkpoint, a merged model or composition folder, an "
                                   "adapter folder, a local model directory, a hub id, or tiny://llama")
    gen.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                     help="a prompt to answer (repeatable: answered as one batch)")
    gen.add_argument("--prompts", default=None, metavar="FILE",
                     help="a JSONL (or any data file training reads) of prompts: rows with a prompt (+ system), "
                          "instruction (+ input), or messages ending with the user's turn")
    gen.add_argument("--raw", action="store_true",
                     help="continue the prompt's text as it is: no chat template, no system prompt")
    gen.add_argument("--system", default=None, metavar="TEXT",
                     help="the system prompt to use instead of the learned one ('' for none)")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    gen.add_argument("--temperature", type=float, default=0.0,
                     help="sampling temperature; 0 (default) is greedy decoding")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when sampling (default 1: off)")
    gen.add_argument("--top-k", type=int, default=0, help="top-k sampling when sampling (default 0: off)")
    gen.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    gen.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    gen.add_argument("--jsonl", action="store_true",
                     help="print one JSON object per prompt (prompt, system, response, ended, empty)")
    gen.add_argument("--show-prompt", action="store_true",
                     help="print on stderr the exact text the model receives for each prompt")
    gen.add_argument("--conn", type=_parse_conn_list, default="all",
                     help="comma-separated compiled operations to gate in (add,subtract,parity,reverse), 'all' "
                          "(default) or 'none' (the model alone)")
    gen.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of the model")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                     help=OPS_MODULE_HELP)
    gen.add_argument("--trust-remote-code", action="store_true",
                     help="allow the base model's own Python code to run: a composition.yaml (base:) or a run's "
                          "config that sets trust_remote_code: true is refused without this flag (a file you "
                          "received must not decide to run code); MODEL itself is loaded with it")
    gen.set_defaults(func=cmd_generate)


def register(subparsers) -> None:
    """Add ``conn`` (``info``, ``run``) and ``generate`` to an argparse subparsers object."""
    conn = subparsers.add_parser(
        "conn", help="compiled neural networks: exact parity, reverse, add, subtract",
        description="Compiled neural networks (CoNNs): transformers whose weights are set from a program, "
                    "exact up to their compiled maximum length.",
        epilog=CONN_EPILOG, formatter_class=RAW)
    conn.set_defaults(func=lambda _args: (conn.print_help(sys.stderr), 2)[1])
    conn_sub = conn.add_subparsers(metavar="{info,run}")

    info = conn_sub.add_parser("info", help="layers, width and maximum length of each compiled network",
                               description="Print the size of each compiled network.", epilog=INFO_EPILOG,
                               formatter_class=RAW)
    info.add_argument("ops", nargs="*", metavar="OP", help="operations to describe (default: all)")
    info.add_argument("--max-len", type=int, default=None,
                      help="compile for this maximum operand length (at most 256)")
    info.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                      help=OPS_MODULE_HELP)
    info.add_argument("--no-precision", action="store_true",
                      help="skip measuring the margins and exact lengths in fp32/bf16/fp16 (a few seconds per op)")
    info.set_defaults(func=cmd_info)

    run = conn_sub.add_parser("run", help="run one compiled network on its operands",
                              description="Run a compiled network; the answer is the last line of output.",
                              epilog=RUN_EPILOG, formatter_class=RAW)
    run.add_argument("op", help="the operation: parity, reverse, add, subtract, or one --ops-module registers")
    run.add_argument("operands", nargs="+", metavar="OPERAND",
                     help="one operand (parity, reverse) or two (add, subtract)")
    run.add_argument("--max-len", type=int, default=None,
                     help="compile for operands up to this length, at most 256 (default: the op's default, "
                          "see `conn info`)")
    run.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                     help=OPS_MODULE_HELP)
    run.set_defaults(func=cmd_run)

    _add_generate(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neurosym", formatter_class=RAW,
                                     description="neurosym compiled neural networks")
    register(parser.add_subparsers(metavar="{conn,generate}"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
