"""Reads what an offline W&B run wrote (the .wandb LevelDB-style log of protobuf Records).

wandb no longer ships a Python reader for its own transaction log; this one follows the format:
a 7-byte header (":W&B", 0xBEE1, version), then 32 KiB blocks of records, each
crc32(4) length(2, LE) type(1) payload, type 1=FULL 2=FIRST 3=MIDDLE 4=LAST.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _payloads(data: bytes):
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        block_left = BLOCK - (pos % BLOCK)
        if block_left < 7:
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += block_left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out = []
    for payload in _payloads(data):
        rec = pb.Record()
        rec.ParseFromString(payload)
        out.append(rec)
    return out


def summarize(run_dir: Path) -> dict:
    """history rows (key -> value), run ids, config and artifact names of every offline run under run_dir."""
    files = sorted(Path(run_dir).rglob("*.wandb"))
    assert files, f"no .wandb file under {run_dir}"
    history, run_ids, artifacts, config = [], set(), [], {}
    for f in files:
        for rec in read_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "run":
                run_ids.add(rec.run.run_id)
                for item in rec.run.config.update:
                    config[item.key] = json.loads(item.value_json)
            elif kind == "artifact":
                artifacts.append((rec.artifact.name, rec.artifact.type))
            elif kind == "config":
                for item in rec.config.update:
                    config[item.key] = json.loads(item.value_json)
    return {"history": history, "run_ids": run_ids, "artifacts": artifacts, "config": config, "files": files}
