"""`neurosym preview`: what the loss sees. Masked prompt tokens are dim, trained tokens are bold.

With ``data.packing: true`` it shows the packed rows as training builds them: each example of a row on
its own line with its position range (positions restart at 0 per example, attention stays inside it).
"""
from __future__ import annotations

from neurosym.data.batching import pack
from neurosym.data.render import IGNORE, Encoded, Renderer


def show(tokenizer, enc: Encoded, color: bool) -> str:
    """Render one encoded example; without colour the trained part is wrapped in [[...]]."""
    parts, current, masked = [], [], None
    for tid, label in zip(enc.input_ids, enc.labels):
        is_masked = label == IGNORE
        if masked is not None and is_masked != masked:
            parts.append((masked, tokenizer.decode(current)))
            current = []
        masked = is_masked
        current.append(tid)
    if current:
        parts.append((masked, tokenizer.decode(current)))
    out = []
    for is_masked, text in parts:
        if color:
            out.append(f"\x1b[2m{text}\x1b[0m" if is_masked else f"\x1b[1;32m{text}\x1b[0m")
        else:
            out.append(text if is_masked else f"[[{text}]]")
    return "".join(out)


def legend(color: bool) -> str:
    return "dim = masked prompt (no loss), green = trained" if color else "[[...]] = trained, rest masked (no loss)"


def preview_lines(tokenizer, examples: list, data_cfg, n: int, color: bool, system_prompt=None) -> list[str]:
    """The lines `neurosym preview` prints for the first ``n`` examples (or the rows they pack into)."""
    renderer = Renderer(tokenizer, data_cfg.max_length,
                        data_cfg.system_prompt if system_prompt is None else system_prompt, data_cfg.train_on)
    lines = [f"legend: {legend(color)}; loss on: {data_cfg.train_on}"
             + ("; packed rows" if data_cfg.packing else "")]
    shown = examples[:n]
    encs = [renderer.encode(ex) for ex in shown]
    if not data_cfg.packing:
        for ex, enc in zip(shown, encs):
            lines.append(f"--- {ex.source}: {len(enc.input_ids)} tokens, {enc.n_target} trained"
                         f"{' (TRUNCATED)' if enc.truncated else ''}")
            lines.append(show(tokenizer, enc, color))
        return lines
    rows = pack([len(e.input_ids) for e in encs], data_cfg.max_length)
    for r, row in enumerate(rows):
        used = sum(len(encs[i].input_ids) for i in row)
        lines.append(f"=== row {r}: {len(row)} examples, {used}/{data_cfg.max_length} tokens "
                     f"({100 * used / data_cfg.max_length:.0f}% full)")
        at = 0
        for i in row:
            enc = encs[i]
            # in a packed row the first token of each example is never a target (no loss across boundaries)
            shown_enc = Encoded(enc.input_ids, [IGNORE] + list(enc.labels[1:]), enc.truncated)
            lines.append(f"  --- [{at}:{at + len(enc.input_ids)}] positions 0..{len(enc.input_ids) - 1}, "
                         f"{shown_enc.n_target} trained: {shown[i].source}"
                         f"{' (TRUNCATED)' if enc.truncated else ''}")
            lines.append("  " + show(tokenizer, shown_enc, color))
            at += len(enc.input_ids)
    return lines
