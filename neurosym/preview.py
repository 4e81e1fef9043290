"""`neurosym preview`: what the loss sees. Masked prompt tokens are dim, trained tokens are bold."""
from __future__ import annotations

from neurosym.data.render import IGNORE, Encoded


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
