"""pihc.training.step: failed solves skip the update; the loss on a coarsened grid."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _tiny import FINE, TinyData, tiny_config

from pihc.pdes import diffusion_sorption_grid
from pihc.training.loop import train
from pihc.training.model import build_model


def test_failed_solves_are_excluded_and_counted(tmp_path):
    """max_steps=1 makes every solve fail: the step reports it and updates nothing."""
    from pihc.training.optim import make_optimizer
    from pihc.training.step import make_step

    cfg = tiny_config(tmp_path, "moe", constraint__solver={"max_steps": 1, "rtol": 1e-14, "atol": 1e-10})
    data = TinyData()
    grid = diffusion_sorption_grid(9, 32, t_max=40.0)
    model = build_model(cfg, data.pde, grid, jax.random.key(0))
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    u0 = jnp.asarray(np.stack([FINE.restrict(u, FINE.factors_to(grid))[0] for u in data.u[:3]]))
    new, _, aux = make_step(cfg, opt, data.pde, grid)(model, state, u0,
                                                        jax.random.split(jax.random.key(1), 3))
    assert int(aux["failed_solves"]) == 3 and float(aux["grad_norm"]) == 0.0
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), eqx.filter(model, eqx.is_inexact_array),
                        eqx.filter(new, eqx.is_inexact_array))
    assert all(jax.tree.leaves(same))
    # After a successful step Adam has momentum; a step whose solves all fail
    # must still leave the parameters and the optimiser state unchanged.
    cfg_ok = tiny_config(tmp_path, "moe")
    good = build_model(cfg_ok, data.pde, grid, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 3)
    good, state, aux = make_step(cfg_ok, opt, data.pde, grid)(good, opt.init(eqx.filter(good, eqx.is_inexact_array)),
                                                              u0, keys)
    assert int(aux["failed_solves"]) == 0 and int(aux["skipped_update"]) == 0
    failing = eqx.tree_at(lambda m: m.backbone, model, good.backbone)
    # The same moments, on the failing model's pytree (its static solver settings differ).
    state = jax.tree.unflatten(jax.tree.structure(opt.init(eqx.filter(failing, eqx.is_inexact_array))),
                               jax.tree.leaves(state))
    assert float(jnp.max(jnp.abs(jax.tree.leaves(state)[1]))) > 0  # Adam has momentum now
    after, state2, aux = make_step(cfg, opt, data.pde, grid)(failing, state, u0, keys)
    assert int(aux["skipped_update"]) == 1
    for a, b in zip(jax.tree.leaves(eqx.filter(failing, eqx.is_inexact_array)) + jax.tree.leaves(state),
                    jax.tree.leaves(eqx.filter(after, eqx.is_inexact_array)) + jax.tree.leaves(state2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loss_coarsen_scores_the_restricted_prediction_on_the_coarse_grid(tmp_path):
    from pihc.losses import LossWeights, physics_loss
    from pihc.training.data import load_initial, prepare_data
    from pihc.training.step import step_inputs

    cfg = tiny_config(tmp_path, "hc", loss__coarsen=[2, 2])
    run = train(cfg, tmp_path / "run", max_steps=1, progress=False, log=lambda s: None)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # The same first step by hand: the initial model's prediction, restricted with NumPy.
    data = prepare_data(cfg, log=lambda s: None)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(cfg.run.seed + 1))
    idx, keys = step_inputs(cfg, 0, len(data.train_idx))
    u0 = load_initial(cfg, data, data.train_idx)[idx]
    u = np.asarray(jax.vmap(lambda a, k: model(a, k))(jnp.asarray(u0), keys).u)
    f = {"t": 2, "x": 2}
    coarse = data.grid.coarsen(f)
    w = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)
    losses = [float(physics_loss(data.pde, jnp.asarray(data.grid.restrict(v, f)),
                                 jnp.asarray(a.reshape(16, 2).mean(1)), coarse, w)[0]) for v, a in zip(u, u0)]
    assert first["failed_solves"] == 0
    # float32 network, jitted there and not here, and solves converged to rtol 1e-6: agreement to 1e-5.
    np.testing.assert_allclose(first["loss"], np.mean(losses), rtol=1e-5)
    full = train(tiny_config(tmp_path, "hc"), tmp_path / "full", max_steps=1, progress=False, log=lambda s: None)
    full_loss = json.loads((full / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert abs(full_loss - first["loss"]) > 1e-3 * first["loss"]  # the fine-grid loss: 100x the tolerance away
