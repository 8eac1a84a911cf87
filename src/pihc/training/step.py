"""One training step: the batch of a step, its loss and the jitted parameter update.

Every step's batch and solver key are functions of ``(run.seed, step)``
only (:func:`step_inputs`), so a resumed run continues exactly where it
stopped.

Solves that fail (``Solution.status != 0``) are counted in the step's
metrics (``failed_solves``) and their samples are left out of that step's
loss and gradient; they are never used as if converged.  A step in which
every sample's solve failed changes nothing (``skipped_update`` = 1).  The
step also says whether the state it returns is finite (``finite_state``),
so that a non-finite state is never saved.

On a device mesh (:mod:`pihc.sharding`) the same step is data parallel
along ``batch`` (the samples split across the mesh's rows, the gradient
summed across them by XLA's partitioner) and shards the constraint's
experts along ``expert``; the parameters, the optimiser state and the
metrics are replicated on every device.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..constraint import HardConstraint
from ..grid import Grid, GridError
from ..losses import LossWeights, physics_loss
from ..pdes.base import PDE
from ..sharding import BATCH, EXPERT, replicated
from .config import Config, ConfigError


def loss_grid(cfg: Config, grid: Grid) -> tuple[Grid, dict[str, int]]:
    """The grid the training loss is evaluated on (``loss.coarsen``) and the factors to it."""
    if cfg.loss.coarsen is None:
        return grid, {}
    factors = dict(zip(grid.names, cfg.loss.coarsen))
    try:
        return grid.coarsen(factors), factors
    except GridError as err:
        raise ConfigError(f"loss.coarsen {list(cfg.loss.coarsen)} does not divide the grid {grid.shape}: {err}"
                          ) from None


def _batch_loss(model, u0, keys, pde, grid, weights, coarse=None, spmd_axis_name=None):
    """The mean physics loss over the samples whose solves converged, and the step's metrics.

    ``spmd_axis_name``: the mesh axis the samples are split along (the
    constraint's ``shard_map`` then maps its blocks of them)."""
    pred = jax.vmap(lambda a, k: model(a, k), spmd_axis_name=spmd_axis_name)(u0, keys)
    if pred.constrained is not None:
        status = pred.constrained.solution.status  # (B, K)
        ok = jnp.all(status == 0, axis=-1)
        steps = pred.constrained.solution.num_steps
    else:
        ok = jnp.ones(u0.shape[0], bool)
        steps = jnp.zeros((u0.shape[0], 1), jnp.int32)
    # Failed solves: replace u by zeros before the loss, so no NaN/Inf from
    # them reaches the gradient (a where after the loss would still
    # propagate 0 * NaN), and weight them out.
    u = jnp.where(ok.reshape((-1,) + (1,) * (pred.u.ndim - 1)), pred.u, 0.0)
    with jax.named_scope("pihc.loss"):
        if coarse is not None:  # (grid, factors): restrict the prediction and the initial condition
            fine, (grid, factors) = grid, coarse
            u = jax.vmap(lambda v: fine.restrict(v, factors))(u)
            u0 = jax.vmap(lambda a: fine.restrict(a[None], factors)[0])(u0)
        losses, parts = jax.vmap(lambda v, a: physics_loss(pde, v, a, grid, weights))(u, u0)
    n_ok = jnp.sum(ok)
    w = ok.astype(losses.dtype) / jnp.maximum(n_ok, 1).astype(losses.dtype)
    loss = jnp.sum(w * losses)
    aux = {"loss": loss, "pde": jnp.sum(w * parts["pde"]), "initial": jnp.sum(w * parts["initial"]),
           "boundary": jnp.sum(w * parts["boundary"]), "failed_solves": jnp.sum(~ok),
           "solver_steps_mean": jnp.mean(steps), "solver_steps_max": jnp.max(steps)}
    return loss, aux


def make_step(cfg: Config, optimizer, pde: PDE, grid: Grid, constraint: HardConstraint | None = None,
              mesh: jax.sharding.Mesh | None = None):
    """The jitted training step ``(model, opt_state, u0, keys) -> (model, opt_state, aux)``.

    ``constraint``: solve with this constraint in place of the model's own
    (``constraint.global_steps``: the experts tied into one problem).  Only
    the forward pass changes; the parameters, their gradients and the
    optimiser state keep the model's structure.

    ``mesh``: a ``batch x expert`` mesh (:func:`~pihc.sharding.device_mesh`);
    ``u0`` and ``keys`` then come split along ``batch``
    (:func:`~pihc.sharding.sharded_batch`), the model and optimiser state
    replicated (:func:`~pihc.sharding.replicated`), and so they leave.
    None: today's one-device step.
    """
    weights = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary, cfg.loss.causal)
    coarse = loss_grid(cfg, grid) if cfg.loss.coarsen is not None else None
    spmd = None if mesh is None else BATCH

    def loss_fn(model, u0, keys):
        if constraint is not None:
            model = eqx.tree_at(lambda m: m.constraint, model, constraint)
        if mesh is not None and isinstance(getattr(model, "constraint", None), HardConstraint):
            layer = model.constraint  # one expert (tied) on several expert devices: not sharded
            model = eqx.tree_at(lambda m: m.constraint, model,
                                layer.on_mesh(mesh if layer.n_experts % mesh.shape[EXPERT] == 0 else None))
        return _batch_loss(model, u0, keys, pde, grid, weights, coarse, spmd)

    @eqx.filter_jit
    def step(model, opt_state, u0, keys):
        (_, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, u0, keys)
        # The gradients are written out once: otherwise XLA's CPU backend fuses the backward
        # pass's last products (e.g. a Fourier layer's weight gradient, an outer product
        # transposed to the weight's layout) into every consumer below (the moments, the
        # update, the finite checks), recomputing them in each with strided access.
        grads = jax.lax.optimization_barrier(grads)
        params = eqx.filter(model, eqx.is_inexact_array)
        # optax's Adam raises its decay (a float) to its int32 step count: standard
        # promotion for optax's code, whatever the caller's jax_numpy_dtype_promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_state = optimizer.update(grads, opt_state, params)
        new_model = eqx.apply_updates(model, updates)
        # A step whose every solve failed has no gradient at all; leave the
        # parameters and the optimiser's moments as they were, rather than
        # let Adam's momentum move the parameters on stale information.
        any_ok = aux["failed_solves"] < u0.shape[0]
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(any_ok, a, b), new, old)  # noqa: E731
        arrays = keep(eqx.filter(new_model, eqx.is_array), eqx.filter(model, eqx.is_array))
        model = eqx.combine(arrays, eqx.filter(model, eqx.is_array, inverse=True))
        opt_state = keep(new_state, opt_state)
        aux["grad_norm"] = optax.tree.norm(grads)
        aux["skipped_update"] = (~any_ok).astype(jnp.int32)
        # Checked by the loop before the state can reach a checkpoint (an update
        # can overflow to Inf with a finite loss and gradient, e.g. a huge lr).
        aux["finite_state"] = _all_finite((eqx.filter(model, eqx.is_inexact_array), opt_state))
        if mesh is not None:  # the same parameters, state and metrics on every device
            model, opt_state, aux = _replicate((model, opt_state, aux), mesh)
        return model, opt_state, aux

    return step


def _replicate(tree, mesh):
    arrays, rest = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.lax.with_sharding_constraint(arrays, replicated(mesh)), rest)


def _all_finite(tree) -> jax.Array:
    """1 if every inexact array leaf of ``tree`` is finite, else 0."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)).astype(jnp.int32) if leaves else jnp.int32(1)


def step_inputs(cfg: Config, step: int, n_train: int):
    """The batch indices and solver keys of ``step``: a function of (seed, step) only."""
    key = jax.random.fold_in(jax.random.key(cfg.run.seed), step)
    k_batch, k_solve = jax.random.split(key)
    B = cfg.optim.batch
    idx = jax.random.choice(k_batch, n_train, (B,), replace=n_train < B)
    return np.asarray(idx), jax.random.split(k_solve, B)
