"""The caller's bad input, as every command reports it: one line, ``error: ...``, and exit status 2.

A config that does not parse or does not fit its data, a grid the model
cannot run on, a missing or damaged file, a path that is not what it should
be: the caller can fix each, so it is shown as one line that says what to
do, never as a traceback. ``pihc`` (:mod:`pihc.cli`) and the benchmark
scripts report it alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["bad_input_errors", "one_line", "refuse_bad_input"]

T = TypeVar("T")


def bad_input_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean bad input (configs, grids, data, paths, checkpoints, metrics)."""
    from ..data.hdf5 import DataError
    from ..files import PathError
    from ..grid import GridError
    from .config import ConfigError
    from .io import CheckpointError, MetricsError

    return (ConfigError, GridError, DataError, PathError, CheckpointError, MetricsError, FileNotFoundError,
            FileExistsError, NotADirectoryError, IsADirectoryError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a multi-line message's lines joined by spaces)."""
    return " ".join(str(err).split())


def refuse_bad_input(main: Callable[[], T]) -> T:
    """``main()``; bad input (:func:`bad_input_errors`) ends the process with one line and status 2.

    For command-line entry points: ``if __name__ == "__main__": refuse_bad_input(main)``.
    Any other exception propagates with its traceback (a failure of the program, not the input).
    """
    try:
        return main()
    except bad_input_errors() as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
