"""Transparent huge pages for XLA's large CPU buffers: the glibc tunable the ``pihc`` command sets.

XLA's CPU runtime takes each large buffer (a step's temporaries, the
constraint layer's ``Phi``) from ``malloc``, which maps it fresh from the
kernel and unmaps it when it is freed; every execution then faults the
buffer in again, one 4 KiB page at a time.  With glibc's
``glibc.malloc.hugetlb=1`` tunable, ``malloc`` asks the kernel for
transparent huge pages (2 MiB) on those mappings, so the same buffer costs
about 500 times fewer faults.  The results are bitwise the same; only the
time changes (docs/benchmarks.md).

glibc reads its tunables once, when a process starts, so the ``pihc``
command re-executes itself once with the tunable added to
``GLIBC_TUNABLES`` (:func:`reexec_with_huge_pages`; the process keeps its
id, its arguments and its open files).  It does so only on Linux with glibc
2.35 or later and transparent huge pages in ``madvise`` mode (in ``always``
mode every mapping gets them already, in ``never`` mode none can), and never
when ``GLIBC_TUNABLES`` already names the tunable: set
``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` to keep 4 KiB pages.  A program
that uses pihc as a library sets the variable itself before Python starts.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def wanted(environ: Mapping[str, str] | None = None, thp_mode_file: Path = _THP_MODE) -> bool:
    """Whether the tunable would change anything here and the environment leaves the choice to pihc."""
    env = os.environ if environ is None else environ
    if TUNABLE in env.get("GLIBC_TUNABLES", ""):
        return False  # the user's choice, either way, stands
    if sys.platform != "linux":
        return False
    libc, version = platform.libc_ver()
    try:
        if libc != "glibc" or tuple(int(x) for x in version.split(".")[:2]) < (2, 35):
            return False
        return "[madvise]" in thp_mode_file.read_text()
    except (OSError, ValueError):
        return False


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES`` (``:``-separated)."""
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(x for x in (env.get("GLIBC_TUNABLES", ""), f"{TUNABLE}=1") if x)
    return env


def reexec_with_huge_pages(argv: list[str]) -> None:
    """Replace this process by ``python -m pihc.cli ARGV`` with the tunable set, when :func:`wanted`.

    Returns (doing nothing) when it is not wanted or the re-execution fails.
    Call it before JAX or any large allocation: nothing before it survives.
    """
    if not wanted() or not sys.executable:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "pihc.cli", *argv], with_tunable(os.environ))
    except OSError:
        return  # e.g. an interpreter path that cannot be executed again: run with 4 KiB pages
