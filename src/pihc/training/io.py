"""Atomic files, checkpoints and the metrics log of a run directory.

Nothing is ever half-written: every file is written to a temporary file in
the same directory, flushed, fsynced and renamed over the destination
(``os.replace`` is atomic on POSIX; :mod:`pihc.files`).

A checkpoint (format version 2) is one file::

    [8 bytes: n, little endian] [n bytes: JSON header] [array leaves] [32 bytes: SHA-256]

The header is ``{"format": "pihc-checkpoint", "version": 2, "meta": {...}}``
and the SHA-256 covers every byte before it, so a flipped bit, a truncation
or an edit anywhere is refused by name (:class:`CheckpointError`) before any
array is read.  Files of the first format (no version, no checksum) are
refused too: they cannot be verified (:func:`upgrade_checkpoint` adds a
checksum to one the user trusts).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ..files import atomic_write_bytes, atomic_write_text

__all__ = ["CHECKPOINT", "CHECKPOINT_VERSION", "CheckpointError", "MetricsError", "MetricsLog",
           "atomic_write_bytes", "atomic_write_text", "finite_json", "load_checkpoint",
           "read_checkpoint_meta", "save_checkpoint", "upgrade_checkpoint"]

CHECKPOINT = "checkpoint.eqx"  # a run directory's model and optimiser state (:func:`save_checkpoint`)
CHECKPOINT_VERSION = 2
_FORMAT = "pihc-checkpoint"
_DIGEST = 32  # bytes of SHA-256


class CheckpointError(ValueError):
    """A checkpoint is damaged, of another format, or does not fit the model it is read into."""


class MetricsError(ValueError):
    """``metrics.jsonl`` holds a line that is not JSON (other than a last line torn by a kill)."""


def _encode(meta: dict, leaves: bytes) -> bytes:
    header = json.dumps({"format": _FORMAT, "version": CHECKPOINT_VERSION, "meta": meta},
                        allow_nan=False).encode()
    body = len(header).to_bytes(8, "little") + header + leaves
    return body + hashlib.sha256(body).digest()


def save_checkpoint(path: str | Path, tree: Any, meta: dict) -> None:
    """Write ``meta`` (JSON header) and the array leaves of ``tree`` to one file, atomically,
    with a SHA-256 of the whole (module docstring)."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    atomic_write_bytes(path, _encode(meta, buf.getvalue()))


def _header(raw: bytes) -> tuple[dict, int] | None:
    """The JSON header and its end offset, or None if the bytes do not start with one."""
    if len(raw) < 8:
        return None
    n = int.from_bytes(raw[:8], "little")
    if not 2 <= n <= len(raw) - 8:
        return None
    try:
        header = json.loads(raw[8:8 + n].decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return (header, 8 + n) if isinstance(header, dict) else None


def _verified(path: Path, raw: bytes) -> tuple[dict, bytes]:
    """``(meta, array bytes)`` of a checkpoint whose checksum matches; CheckpointError otherwise."""
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    parsed = _header(body) if len(raw) > _DIGEST else None
    if len(raw) > _DIGEST and hashlib.sha256(body).digest() == digest and parsed is not None:
        header, end = parsed
        version = header.get("version")
        if header.get("format") != _FORMAT or not isinstance(header.get("meta"), dict):
            raise CheckpointError(f"{path} is not a pihc checkpoint")
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path} has checkpoint format version {version}; this pihc reads version"
                                  f" {CHECKPOINT_VERSION}: use the pihc that wrote it")
        return header["meta"], body[end:]
    old = _header(raw)
    if old is not None and "version" not in old[0] and "format" not in old[0] and "step" in old[0]:
        raise CheckpointError(
            f"{path} was written by an older pihc, without a checksum, so it cannot be verified; train the"
            " run again, or, if you trust the file, add a checksum with"
            f" `python -c \"from pihc.training.io import upgrade_checkpoint; upgrade_checkpoint('{path}')\"`")
    raise CheckpointError(f"{path} is damaged (its SHA-256 does not match its {len(raw)} bytes: it was"
                          " truncated or changed after pihc wrote it); restore it from a copy or train the run"
                          " again")


def _read(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + ("; a directory is in its place: remove it and"
                                                              " restore the checkpoint, or train the run again"
                                                              if path.is_dir() else ""))
    return path, path.read_bytes()


def read_checkpoint_meta(path: str | Path) -> dict:
    """The JSON metadata (e.g. ``step``) of a checkpoint, after verifying its checksum."""
    path, raw = _read(path)
    return _verified(path, raw)[0]


def load_checkpoint(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Inverse of :func:`save_checkpoint`: ``(tree shaped like `like`, meta)``.

    Raises CheckpointError if the file is damaged, of another format, or holds
    arrays of other shapes than ``like``'s."""
    path, raw = _read(path)
    meta, leaves = _verified(path, raw)
    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(leaves), like)
    except Exception as err:  # noqa: BLE001 -- equinox raises RuntimeError, TreePathError, ValueError
        raise CheckpointError(f"{path} does not hold the arrays of this model ({err}); was it written by a"
                              " run of another config?") from None
    return tree, meta


def upgrade_checkpoint(path: str | Path) -> dict:
    """Rewrite a checkpoint of the first format (no version, no checksum) in the current one.

    Only for a file you trust: the old format cannot be verified, so this
    checks only that the file is laid out as one.  Returns its metadata.
    """
    path, raw = _read(path)
    parsed = _header(raw)
    if parsed is None or "version" in parsed[0] or "step" not in parsed[0]:
        raise CheckpointError(f"{path} is not a checkpoint of the first format")
    meta, end = parsed
    atomic_write_bytes(path, _encode(meta, raw[end:]))
    return meta


def finite_json(value):
    """``value`` with every non-finite float (NaN, Inf), also inside arrays, lists and dicts,
    replaced by None, so that ``json.dumps(..., allow_nan=False)`` writes valid JSON (null)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return finite_json(np.asarray(value).tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


class MetricsLog:
    """Append-only ``metrics.jsonl``, one JSON object per line.

    A run killed while appending leaves its last line torn (no newline, not
    JSON); reading skips that line and a resume removes it.  Any other line
    that is not JSON is refused (:class:`MetricsError`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _records(self) -> tuple[list[dict], bool]:
        """The records and whether a torn last line was skipped."""
        if not self.path.exists():
            return [], False
        text = self.path.read_text(errors="replace")
        lines = text.split("\n")
        records, torn = [], False
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                if i == len(lines) - 1:  # no newline after it: a write cut short
                    torn = True
                    continue
                raise MetricsError(f"{self.path}: line {i + 1} is not a JSON object (the file was edited"
                                   " or damaged); delete or repair that line") from None
            records.append(rec)
        return records, torn

    def truncate_after(self, step: int) -> bool:
        """Drop lines with ``step`` beyond ``step`` (used when resuming), and a torn last line;
        returns whether there was one."""
        records, torn = self._records()
        keep = [r for r in records if r.get("step", -1) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return torn

    def append(self, record: dict) -> None:
        """Append ``record``; non-finite numbers are written as null (JSON has no NaN)."""
        line = json.dumps(finite_json(record), allow_nan=False) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()

    def read(self) -> list[dict]:
        return self._records()[0]
