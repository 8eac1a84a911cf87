"""Training harness: configs, run directories, the trainer (imports the core, never the reverse).

The public names are re-exported here; the modules own one concept each:
``config`` (the configuration), ``problems`` (registered datasets), ``data``
(a run's dataset and split), ``model`` (building and carrying models),
``optim`` (the optimiser), ``step`` (one training step), ``run`` (the run
directory), ``loop`` (:func:`train`), ``io`` (atomic files and checkpoints),
``evaluation``, ``floor``, ``report``, ``plots``, ``demo`` and ``errors`` (bad input as one line).
"""

from .config import load_config
from .data import load_fields, load_initial, prepare_data
from .errors import refuse_bad_input
from .evaluation import evaluate, map_chunks, weights_spread
from .floor import discretisation_floor
from .io import CHECKPOINT, read_checkpoint_meta
from .loop import train
from .model import build_model
from .optim import make_optimizer
from .report import write_report
from .run import load_run
from .step import loss_grid, make_step

__all__ = [
    "CHECKPOINT", "build_model", "discretisation_floor", "evaluate", "load_config", "load_fields",
    "load_initial", "load_run", "loss_grid", "make_optimizer", "make_step", "map_chunks", "prepare_data",
    "read_checkpoint_meta", "refuse_bad_input", "train", "weights_spread", "write_report",
]
