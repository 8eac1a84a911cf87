"""Files that are never half-written: temporary siblings, atomic renames, checks before compute.

Every file pihc writes (datasets, checkpoints, configs, metrics, reports,
plots) goes to a temporary file beside its destination and is renamed over
it (``os.replace``, atomic on POSIX), so a reader sees the old file or the
new one, never a mix.  The temporary file's name carries the writer's pid,
``.NAME.pid<PID>.<random>.tmp``: a writer killed by SIGKILL cannot remove
its own, and :func:`remove_stale_temps` removes those whose writer is gone.
Files get the permissions of any new file (``0666`` less the umask), not
the ``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from collections.abc import Iterator


class PathError(ValueError):
    """An output path cannot be written (checked before any compute)."""


def _umask() -> int:
    # os.umask sets and returns; /proc says it without touching it, where there is one.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_name(path: Path) -> str:
    return f".{path.name}.pid{os.getpid()}."


_TEMP = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]+\.tmp$")


@contextlib.contextmanager
def temp_sibling(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (normal permissions), fsynced and renamed over ``path`` when
    the block ends without an exception, removed when it raises (an interrupt included).  The block
    writes the file by name (e.g. with h5py) or through :func:`atomic_write_bytes`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)  # on disk before the rename, so a crash leaves old or new, whole
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary sibling, fsynced, then renamed."""
    with temp_sibling(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files in ``directory`` (of destination ``name``, or of any) whose
    writing process no longer exists, e.g. after a SIGKILL; returns the paths removed.

    A file whose writer is alive (or whose pid now belongs to another process) is left alone."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        m = _TEMP.match(p.name)
        if m is None or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def check_writable(path: str | Path, what: str, *, directory: bool = False) -> None:
    """Raise :class:`PathError` unless ``path`` can be written: a file (or, with ``directory``, a
    directory) there, or its nearest existing ancestor a directory that accepts new files.

    Called before any compute, so an unwritable output fails in a second, not after the run.
    Creates nothing (the probe file it makes is removed at once)."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise PathError(f"{what} {path} is a file, not a directory; choose a directory")
        if not directory and path.is_dir():
            raise PathError(f"{what} {path} is a directory; give a file name")
    parent = path if directory and path.is_dir() else path.parent
    while not parent.exists():
        if parent.is_symlink():  # exists() follows links: this one points nowhere
            raise PathError(f"{what} {path} cannot be created: {parent} is a symbolic link to"
                            f" {os.readlink(parent)}, which does not exist; fix or remove the link")
        parent = parent.parent
    if not parent.is_dir():
        raise PathError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pihc-write-test.", dir=parent)
    except OSError as err:
        raise PathError(f"{what} {path} cannot be written ({parent}: {err.strerror});"
                        " choose a writable location") from None
    os.close(fd)
    os.unlink(probe)
