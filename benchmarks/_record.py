"""How every benchmark writes its JSON: dated, with the checkout's commit, whole or not at all.

A result that a reader of docs/benchmarks.md trusts names when and from what
code it was measured, so :func:`save` puts ``date`` and ``commit`` first
(a result that carries its own keeps them). Non-finite numbers become
``null`` (JSON has no NaN, and a NaN must not read as a number), and the
file is written to a temporary sibling and renamed, so an interrupted
benchmark leaves the previous file, never half of a new one.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

__all__ = ["commit", "save"]


def commit() -> str | None:
    """The short commit of the checkout these benchmarks are in (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def save(path: str | Path, result: dict, *, indent: int = 2, echo: bool = False) -> dict:
    """Write ``result`` to ``path`` (parents made) as JSON stamped with today's date and the commit.

    Returns the stamped result. ``echo`` also prints it.
    """
    # Imported here: a benchmark imports this module before it sets XLA_FLAGS and starts JAX.
    from pihc.files import atomic_write_text
    from pihc.training.io import finite_json

    stamped = {"date": time.strftime("%Y-%m-%d"), "commit": commit(), **result}
    text = json.dumps(finite_json(stamped), indent=indent, allow_nan=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text + "\n")
    if echo:
        print(text)
    return stamped
