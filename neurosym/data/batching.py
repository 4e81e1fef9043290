"""Micro-batches from encodings: padded rows, or packed rows with no attention across examples.

Padded (default): right padding, labels -100 on padding, a 2D attention mask.

Packed (``data.packing: true``): a step's examples are packed into the fewest rows of at most
``max_length`` tokens that first-fit-decreasing finds, balanced across those rows, and ``batch_size``
rows make a micro-batch (the same memory bound as
``batch_size`` padded rows of ``max_length``). Each row carries ``position_ids`` that restart at 0 for
every example, and no 2D attention mask: given position ids, no mask and no KV cache, transformers
(>= 4.54) builds a block-diagonal causal mask for sdpa/eager/flex and takes the varlen path for
flash-attention (what its ``DataCollatorWithFlattening`` relies on), so a token
attends only to earlier tokens of its own example. The first token of each example gets label -100,
so no loss crosses a boundary either; the loss over a packed step equals the padded one.

Every micro-batch carries ``example_ids`` (the index of each row's, or each token's, example in the
step) so per-example losses (:func:`example_losses`) mean the same thing in both layouts.
"""
from __future__ import annotations

import torch

from neurosym.data.render import IGNORE, Encoded


def collate(items: list[Encoded], pad_id: int) -> dict:
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack(lengths: list[int], max_length: int) -> list[list[int]]:
    """Indices grouped into as few rows of at most ``max_length`` tokens as first-fit-decreasing finds,
    then balanced across those rows (longest first into the shortest row that has room), so a
    micro-batch's rows have similar lengths and little padding (a row is padded to the longest row of
    its micro-batch, not to ``max_length``)."""
    for n in lengths:
        if n > max_length:
            raise ValueError(f"an encoding of {n} tokens is longer than max_length {max_length}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:  # first fit decreasing: how many rows are needed
        j = next((r for r, left in enumerate(room) if left >= lengths[i]), None)
        if j is None:
            rows.append([i])
            room.append(max_length - lengths[i])
        else:
            rows[j].append(i)
            room[j] -= lengths[i]
    balanced: list[list[int]] = [[] for _ in rows]
    used = [0] * len(rows)
    for i in order:  # the same number of rows, filled evenly
        j = min((r for r in range(len(rows)) if used[r] + lengths[i] <= max_length),
                key=lambda r: (used[r], r), default=None)
        if j is None:
            return rows  # balancing does not fit: keep the first-fit rows
        balanced[j].append(i)
        used[j] += lengths[i]
    return balanced


def collate_packed(rows: list[list[Encoded]], pad_id: int) -> dict:
    """One micro-batch of packed rows; ``attention_mask`` marks real tokens (for counting) and is not
    passed to the model (see :func:`forward_inputs`)."""
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1:at + n] = torch.tensor(e.labels[1:])
            pos[r, at:at + n] = torch.arange(n)
            mask[r, at:at + n] = 1
            at += n
        pos[r, at:] = torch.arange(width - at)  # the padding tail is a block of its own
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos}


def make_micro_batches(encodings: list[Encoded], batch_size: int, pad_id: int, packing: bool = False,
                       max_length: int | None = None) -> list[dict]:
    """A step's encodings as micro-batches of ``batch_size`` rows (padded, or packed)."""
    out = []
    if not packing:
        for i in range(0, len(encodings), batch_size):
            batch = collate(encodings[i:i + batch_size], pad_id)
            batch["example_ids"] = torch.arange(i, i + batch["input_ids"].shape[0])
            out.append(batch)
        return out
    if max_length is None:
        raise ValueError("packing needs max_length")
    rows = pack([len(e.input_ids) for e in encodings], max_length)
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        batch = collate_packed([[encodings[j] for j in row] for row in chunk], pad_id)
        ids = torch.full_like(batch["input_ids"], -1)
        for r, row in enumerate(chunk):
            at = 0
            for j in row:
                n = len(encodings[j].input_ids)
                ids[r, at:at + n] = j
                at += n
        batch["example_ids"] = ids
        out.append(batch)
    return out


def example_losses(losses: torch.Tensor, mask: torch.Tensor, batch: dict) -> list[tuple[int, float]]:
    """(index in the step, mean token loss) of each example of a micro-batch, padded or packed.
    ``losses``/``mask`` are ``token_losses``' outputs (shifted by one: position t scores token t+1)."""
    ids = batch["example_ids"]
    if ids.dim() == 1:  # padded: one example per row
        per_row = losses.sum(1) / mask.sum(1).clamp(min=1)
        return list(zip(ids.tolist(), per_row.tolist()))
    owner = ids[:, 1:]  # the example the scored token belongs to
    out = []
    for j in owner[owner >= 0].unique().tolist():
        sel = (owner == j) & mask
        out.append((j, float(losses[sel].sum() / sel.sum().clamp(min=1))))
    return out


def forward_inputs(batch: dict) -> dict:
    """The model's keyword arguments for a micro-batch: packed rows pass position ids and no 2D mask
    (so transformers builds the block-diagonal mask / varlen path); padded rows pass the mask."""
    if "position_ids" in batch:
        # use_cache=False matters: transformers only detects packed rows when no KV cache is built, and
        # it builds one by default in eval mode (the no-leak test fails without this).
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
