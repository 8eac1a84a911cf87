r"""Devices as a mesh with two named axes: ``batch`` (samples) and ``expert`` (the constraint's experts).

A :class:`jax.sharding.Mesh` of ``B x E`` devices, axes ``("batch",
"expert")``.  Along ``batch`` the training step is data parallel: each
row of the mesh holds ``1/B`` of a step's samples and the parameters'
gradients are summed across rows (XLA's partitioner inserts the
all-reduce).  Along ``expert`` the constraint layer's ``K`` solves run
under :func:`jax.shard_map`, ``K/E`` experts per device, each device's
Levenberg-Marquardt loop running to its own experts' convergence
(:class:`~pihc.constraint.HardConstraint`'s ``mesh``).  Everything
else on a row (the backbone, the basis, the loss) is replicated across
its ``E`` devices, so only the experts' weights and the adjoint's
per-expert factors cross devices inside a row.

One device is the ``1 x 1`` mesh.  Processes of a multi-host run see the
same global mesh (:func:`jax.devices` lists every process's devices after
:func:`jax.distributed.initialize`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["BATCH", "EXPERT", "MeshError", "auto_split", "check_mesh", "device_mesh", "replicated",
           "sharded_batch"]

BATCH = "batch"
EXPERT = "expert"


class MeshError(ValueError):
    """A mesh that the devices, the experts or the batch cannot take."""


def device_mesh(batch: int = 1, expert: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ``batch x expert`` mesh on the first ``batch * expert`` of ``devices`` (default: all of them).

    Raises:
        MeshError: a size is not a positive integer, or more devices are asked for than exist.
    """
    for name, v in ((BATCH, batch), (EXPERT, expert)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MeshError(f"mesh.{name} must be an integer >= 1, got {v!r}")
    devices = list(jax.devices() if devices is None else devices)
    if batch * expert > len(devices):
        raise MeshError(f"mesh {{batch: {batch}, expert: {expert}}} needs {batch * expert} devices; there are"
                        f" {len(devices)} ({devices[0].platform}); lower mesh.batch or mesh.expert, or use"
                        " --devices auto")
    return Mesh(np.asarray(devices[:batch * expert], dtype=object).reshape(batch, expert), (BATCH, EXPERT))


def check_mesh(batch: int, expert: int, n_experts: int, batch_size: int) -> None:
    """Raise :class:`MeshError` unless ``expert`` divides the experts and ``batch`` the samples of a step."""
    if n_experts % expert:
        raise MeshError(f"mesh.expert = {expert} does not divide the {n_experts} expert(s) of the model;"
                        f" choose a divisor of {n_experts}")
    if batch_size % batch:
        raise MeshError(f"mesh.batch = {batch} does not divide optim.batch = {batch_size}; choose a divisor"
                        f" of {batch_size}")


def auto_split(n_devices: int, n_experts: int, batch_size: int) -> tuple[int, int]:
    """``(B, E)`` for ``n_devices``: the most devices along ``expert`` (a common divisor of the
    devices and the experts: solves are the step's largest part and need no gradient
    reduction), the rest along ``batch`` (the largest divisor of the remaining devices that
    divides the batch).  ``B * E`` may be less than ``n_devices`` when nothing divides."""
    expert = math.gcd(n_devices, n_experts)
    rest = n_devices // expert
    batch = max(b for b in range(1, rest + 1) if rest % b == 0 and batch_size % b == 0)
    return batch, expert


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def sharded_batch(mesh: Mesh) -> NamedSharding:
    """The leading (sample) axis split along ``batch``, replicated along ``expert``."""
    return NamedSharding(mesh, PartitionSpec(BATCH))
