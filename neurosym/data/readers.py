"""Reading raw rows from every place a dataset lives, with a location for each row.

One reader serves `validate`, `preview`, `train` and `eval`, so what `validate` accepts is exactly what
training reads. Every row comes back as ``(location, record)`` where a row that cannot be read at all
(invalid UTF-8, bad JSON, binary data) comes back as a :class:`DataError` instead of a record, so the
caller decides between refusing (``file:line``) and skipping-and-counting.

- Text files (``.jsonl``/``.json``, any name): one JSON object per line, or one JSON array for the whole
  file. UTF-8 (with or without BOM); UTF-16/UTF-32 with a BOM are decoded; gzip, bz2 and xz are read
  through (by their magic bytes, whatever the suffix); zstd and UTF-16 without a BOM are refused with
  the fix.
- ``.parquet``: read with pyarrow (a damaged file is refused as a whole: parquet has no lines to skip).
- A folder written by ``datasets.save_to_disk``: ``datasets.load_from_disk`` (``split`` picks a split of
  a ``DatasetDict``).
- Any other folder or a hub id: ``datasets.load_dataset(path, name=subset, split=split, revision=...)``,
  the call a hub id takes (a local folder of data files, a loading script: datasets >= 4 refuses
  scripts with its own message).
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import tempfile
from pathlib import Path
from typing import Iterator

from neurosym.config.schema import looks_like_dataset_id
from neurosym.data.errors import DataError

_GZIP, _BZ2, _XZ, _ZSTD = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"
_PARQUET = b"PAR1"
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def iter_rows(source) -> Iterator[tuple[str, object]]:
    """``(location, record-or-DataError)`` for every row of one ``DataSource``."""
    path = Path(source.path)
    if path.is_file() and path.suffix == ".py":  # a loading script: datasets decides (>= 4 refuses scripts)
        yield from _dataset_rows(_load_dataset(source), source_name(source))
    elif path.is_file():
        with open(path, "rb") as f:
            head = f.read(8)
        if path.suffix.lower() == ".parquet" or head.startswith(_PARQUET):
            yield from _parquet_rows(path)
        else:
            yield from _text_rows(path, head)
    elif path.is_dir() and _is_saved_dataset(path):
        yield from _dataset_rows(_load_from_disk(path, source), str(path))
    elif path.is_dir() or (not path.is_absolute() and looks_like_dataset_id(source.path)):
        yield from _dataset_rows(_load_dataset(source), source_name(source))
    else:
        raise DataError(f"data file not found: {path}")


def source_name(source) -> str:
    """`path[subset=..,split=..,revision=..]`: how rows and reports name a source."""
    extra = "".join(f"{k}={getattr(source, k)}," for k in ("subset", "split", "revision") if getattr(source, k))
    return f"{source.path}[{extra.rstrip(',')}]" if extra else source.path


# ------------------------------------------------------------------------------------------- text

def _opener(path: Path, head: bytes):
    if head.startswith(_GZIP):
        return gzip.open(path, "rb")
    if head.startswith(_BZ2):
        return bz2.open(path, "rb")
    if head.startswith(_XZ):
        return lzma.open(path, "rb")
    if head.startswith(_ZSTD):
        raise DataError(f"{path}: zstd-compressed data is not read; decompress it first "
                        f"(`zstd -d {path.name}`) or use gzip")
    return open(path, "rb")


def _text_rows(path: Path, head: bytes) -> Iterator[tuple[str, object]]:
    try:
        f = _opener(path, head)
        with f:
            start = f.read(4)
            encoding = next((enc for bom, enc in _BOMS if start.startswith(bom)), None)
            if encoding in ("utf-16", "utf-32"):
                yield from _wide_rows(path, start + f.read(), encoding)
                return
            if encoding is None and len(start) >= 2 and (start[0] == 0) != (start[1] == 0):
                raise DataError(f"{path}: looks like UTF-16 without a byte-order mark; re-save it as UTF-8 "
                                f"(e.g. `iconv -f UTF-16LE -t UTF-8`)")
            first = start.lstrip(codecs.BOM_UTF8).lstrip()
            if first.startswith(b"["):  # one JSON array for the whole file (alpaca_data.json style)
                yield from _array_rows(path, start + f.read())
                return
            f.seek(0)
            for lineno, line in enumerate(f, 1):
                loc = f"{path}:{lineno}"
                if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                yield loc, _decode_line(line)
    except (OSError, EOFError, lzma.LZMAError) as exc:  # truncated gzip/xz, unreadable file
        raise DataError(f"{path}: cannot read: {exc}") from None


def _decode_line(line: bytes):
    if not line.strip():
        return None
    if b"\x00" in line:
        return DataError("binary data (NUL byte) on this line: is this really a JSONL text file?")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DataError(f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1}); "
                         f"re-save the file as UTF-8")
    return _json(text)


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return DataError(f"bad JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return DataError("bad JSON: nested too deeply")


def _wide_rows(path: Path, data: bytes, encoding: str) -> Iterator[tuple[str, object]]:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding.upper()} at byte {exc.start}; re-save it as UTF-8") from None
    if text.lstrip().startswith("["):
        yield from _array_rows(path, text.encode("utf-8", "surrogatepass"))
        return
    for lineno, line in enumerate(io.StringIO(text), 1):
        if line.strip():
            yield f"{path}:{lineno}", _json(line)


def _array_rows(path: Path, data: bytes) -> Iterator[tuple[str, object]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-save as UTF-8") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: bad JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected one JSON object per line or a JSON array of objects")
    for i, row in enumerate(rows):
        yield f"{path}[{i}]", row


# ------------------------------------------------------------------------------ parquet / datasets

def _parquet_rows(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(str(path))
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield f"{path}[{i}]", row
                i += 1
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc}); a damaged parquet file cannot be "
                        f"skipped line by line: re-export it") from None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").exists() or (path / "dataset_dict.json").exists()  # what load_from_disk reads


def _load_from_disk(path: Path, source):
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a damaged folder
        raise DataError(f"{path}: cannot load this save_to_disk folder: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if source.split is None:
            raise DataError(f"{path}: a DatasetDict with splits {sorted(ds)}; set `split:` on this data "
                            f"source (e.g. {{path: {path}, split: {sorted(ds)[0]}}})")
        if source.split not in ds:
            raise DataError(f"{path}: no split {source.split!r} (have {sorted(ds)})")
        ds = ds[source.split]
    return ds


def _load_dataset(source):
    """A hub id uses the Hugging Face datasets cache (like hub models do); a local folder or script is
    prepared in a temporary folder that is removed afterwards, so reading local data leaves nothing
    behind in the user's home."""
    import datasets
    split = source.split or "train"
    local = Path(source.path).exists()
    try:
        if not local:
            return datasets.load_dataset(source.path, name=source.subset, split=split, revision=source.revision)
        with tempfile.TemporaryDirectory(prefix="neurosym-datasets-") as tmp:
            ds = datasets.load_dataset(source.path, name=source.subset, split=split, revision=source.revision,
                                       cache_dir=tmp, keep_in_memory=True)
            return list(ds)
    except Exception as exc:  # noqa: BLE001 - hub/network/config errors all mean "cannot load this"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if local else (
            " (not a local path, so it was looked up as a hub dataset id; check the name, your network, "
            "or HF_HUB_OFFLINE)")
        raise DataError(f"cannot load dataset {source_name(source)}: {detail}{hint}") from None


def _dataset_rows(ds, name: str) -> Iterator[tuple[str, object]]:
    for i, row in enumerate(ds):
        yield f"{name}[{i}]", row
