"""The run directory: starting a run in it, resuming the run it holds, reading a trained one.

A run directory holds ``config.yaml`` (resolved), ``checkpoint.eqx`` (model
and optimiser state, written atomically every ``run.checkpoint_every`` steps
and at the end by :func:`~pihc.training.loop.run_steps`), ``metrics.jsonl``
(one line per step) and ``run.json`` (package version, seeds, data file).

* :func:`start_run` writes a new run's ``config.yaml``, ``run.json`` and an
  empty ``metrics.jsonl``, and refuses a directory that already holds a run.
* :func:`resume_run` reads the checkpoint back and cuts ``metrics.jsonl`` to
  its step, so the steps after it are logged once, by the resumed run.
* :func:`load_run` reads a trained run: its config, data and model.

Every checkpoint carries the config it was trained with; a run whose
``config.yaml`` was changed since is refused, naming the keys
(:func:`~pihc.training.config.check_unchanged`).  :class:`RunLock` keeps a second process from
training in a run directory while one does.  Temporary files left by a
killed process are removed when a run starts or resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax

from .. import __version__
from ..files import atomic_write_text, remove_stale_temps
from .config import Config, check_unchanged, load_config, save_config, to_dict
from .data import PreparedData, prepare_data
from .io import CHECKPOINT, MetricsLog, load_checkpoint, read_checkpoint_meta
from .model import read_model

METRICS = "metrics.jsonl"
LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another process is training in the run directory."""


class RunLock:
    """An exclusive advisory lock (``flock``) on ``RUN/.lock``, held while a process trains in ``RUN``.

    The kernel releases it when the process ends, however it ends (``kill -9``
    included), so a lock is never stale.  The file holds the holder's pid,
    which the refusal names.  Use as a context manager.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.run_dir} is in use by another pihc process (pid {holder}); wait for it"
                                 f" to finish or stop it (kill {holder}), or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_resumable(run_dir: Path, resume: bool) -> None:
    """Before any compute: ``run_dir`` holds a checkpoint to resume, or none to overwrite."""
    ckpt = run_dir / CHECKPOINT
    if resume and not ckpt.is_file():
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); give the --out"
                                    " directory of a `pihc train` run")
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume: the run stopped before its first"
                                f" checkpoint; start it again with `pihc train --config {run_dir}/config.yaml"
                                f" --out {run_dir}`")
    if not resume and ckpt.exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or"
                              " choose another --out")


def start_run(cfg: Config, run_dir: Path, data: PreparedData, log: Callable[[str], None] = print) -> None:
    """Create ``run_dir`` for a new run of ``cfg`` on ``data``: ``config.yaml``, ``run.json`` and an
    empty ``metrics.jsonl``.  Raises FileExistsError if ``run_dir`` already holds a checkpoint."""
    check_resumable(run_dir, resume=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_temps(run_dir, log)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_text(run_dir / "run.json", json.dumps({
        "pihc_version": __version__, "jax_version": jax.__version__, "seed": cfg.run.seed,
        "data": data.path, "data_file": str(Path(data.path).resolve()), "train_samples": len(data.train_idx),
        "test_samples": len(data.test_idx), "grid": data.grid.to_dict(),
        "config": to_dict(cfg)}, indent=2))
    MetricsLog(run_dir / METRICS).truncate_after(-1)


def _remove_temps(run_dir: Path, log: Callable[[str], None]) -> None:
    removed = remove_stale_temps(run_dir)
    if removed:
        log(f"removed {len(removed)} temporary file(s) left in {run_dir} by a killed process")


def resume_run(cfg: Config, run_dir: Path, model: eqx.Module, opt_state, log: Callable[[str], None] = print,
               *, primary: bool = True) -> tuple[eqx.Module, object, int]:
    """``(model, opt_state, step)`` of ``run_dir``'s checkpoint (``model`` and ``opt_state``: the
    templates it is read into), after checking that ``cfg`` is the config it was trained with,
    removing temporary files of killed writers and dropping the metrics lines of steps beyond
    ``step`` (and a last line torn by a kill).  ``primary`` False (processes other than 0 of a
    multi-host run): only read the checkpoint; the directory is process 0's."""
    ckpt = run_dir / CHECKPOINT
    check_unchanged(cfg, read_checkpoint_meta(ckpt), run_dir)  # names the keys, before a shape mismatch could
    (model, opt_state), meta = load_checkpoint(ckpt, (model, opt_state))
    start = meta["step"]
    if not primary:
        return model, opt_state, start
    _remove_temps(run_dir, log)
    if MetricsLog(run_dir / METRICS).truncate_after(start):
        log(f"dropped the last line of {run_dir / METRICS}, torn when the run was killed")
    log(f"resuming {run_dir} from step {start}")
    return model, opt_state, start


def run_data_path(cfg: Config, run_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The data file of the run in ``run_dir`` (its config ``cfg``).

    ``data.path`` as configured, relative to the working directory; where that
    does not exist, the absolute path ``pihc train`` recorded in ``run.json``,
    if that exists (a run read from another directory than it was trained in).
    """
    path = Path(cfg.data.path)
    if path.exists() or path.is_absolute():
        return path
    try:
        recorded = json.loads((run_dir / "run.json").read_text()).get("data_file")
    except (OSError, ValueError, AttributeError):
        return path
    if not recorded or not Path(recorded).exists():
        return path
    log(f"data.path {path} is relative to the directory {run_dir} was trained in: reading {recorded}")
    return Path(recorded)


def load_run(run_dir: str | Path, log: Callable[[str], None] = print, *, generate: bool = True):
    """``(cfg, data, model, meta)`` of a trained run directory.

    ``generate=False``: a missing data file is made only when first read
    (:func:`~pihc.training.data.prepare_data`), so that a run scored on
    another file, or refused, never makes its own.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    data = prepare_data(cfg, log, path=run_data_path(cfg, run_dir, log), generate=generate)
    model, meta = read_model(cfg, data.pde, data.grid, run_dir)
    return cfg, data, model, meta
