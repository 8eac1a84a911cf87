"""Training harness: configs, run directories, the trainer (imports the core, never the reverse).

The names below are the harness's public API, the ones the scripts in the
repository's ``benchmarks/`` use; import them from here rather than from the
modules that define them.
"""

from .config import load_config
from .evaluation import evaluate, map_chunks, weights_spread
from .floor import discretisation_floor
from .io import read_checkpoint_meta
from .report import write_report
from .trainer import (CHECKPOINT, build_model, load_fields, load_initial, load_run, loss_grid, make_optimizer,
                      make_step, prepare_data, train)

__all__ = [
    "CHECKPOINT", "build_model", "discretisation_floor", "evaluate", "load_config", "load_fields",
    "load_initial", "load_run", "loss_grid", "make_optimizer", "make_step", "map_chunks", "prepare_data",
    "read_checkpoint_meta", "train", "weights_spread", "write_report",
]
