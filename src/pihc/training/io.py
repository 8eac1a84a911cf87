"""Atomic files, checkpoints and the metrics log of a run directory.

Nothing is ever half-written: every file is written to a temporary file in
the same directory, flushed, fsynced and renamed over the destination
(``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx

CHECKPOINT = "checkpoint.eqx"  # a run directory's model and optimiser state (:func:`save_checkpoint`)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: str | Path, tree: Any, meta: dict) -> None:
    """Write ``meta`` (JSON header) and the array leaves of ``tree`` to one file, atomically."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    header = json.dumps(meta).encode()
    buf.write(len(header).to_bytes(8, "little"))
    buf.write(header)
    eqx.tree_serialise_leaves(buf, tree)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint_meta(path: str | Path) -> dict:
    """The JSON metadata (e.g. ``step``) of a checkpoint, without loading its arrays."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n).decode())


def load_checkpoint(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Inverse of :func:`save_checkpoint`: ``(tree shaped like `like`, meta)``."""
    import io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n].decode())
    tree = eqx.tree_deserialise_leaves(io.BytesIO(raw[8 + n:]), like)
    return tree, meta


class MetricsLog:
    """Append-only ``metrics.jsonl``, one JSON object per line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines with ``step`` beyond ``step`` (used when resuming)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", -1) <= step]
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
