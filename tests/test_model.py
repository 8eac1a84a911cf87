"""pihc.training.model: a coarse run's backbone carried to another grid and method (init_from)."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from _tiny import tiny_config

from pihc.training.config import ConfigError, load_config
from pihc.training.loop import train
from pihc.training.model import build_model


def test_init_from_carries_a_coarse_runs_backbone_to_another_grid_and_method(tmp_path):
    from pihc.training.data import prepare_data
    from pihc.training.model import check_init_from, load_backbone
    from pihc.training.run import load_run

    src = train(tiny_config(tmp_path, "hc", data__nx=16), tmp_path / "coarse", max_steps=2,
                progress=False, log=lambda s: None)
    cfg = tiny_config(tmp_path, "moe", model__init_from=str(src))
    _, _, coarse, _ = load_run(src, log=lambda s: None)
    data = prepare_data(cfg, log=lambda s: None)
    fresh = build_model(cfg, data.pde, data.grid, jax.random.key(5))
    model = load_backbone(fresh, src, check_init_from(cfg), data.pde, log=lambda s: None)
    a = jax.tree.leaves(eqx.filter(model.backbone, eqx.is_array))
    b = jax.tree.leaves(eqx.filter(coarse.backbone, eqx.is_array))
    c = jax.tree.leaves(eqx.filter(fresh.backbone, eqx.is_array))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))  # the fresh weights were replaced
    assert model.grid.shape == (9, 32) and coarse.grid.shape == (9, 16)
    # The whole run: its first loss is that of the carried backbone, not of a fresh one.
    run = train(cfg, tmp_path / "fine", max_steps=1, progress=False, log=lambda s: None)
    assert load_config(run / "config.yaml").model.init_from == str(src)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    scratch = train(tiny_config(tmp_path, "moe"), tmp_path / "scratch", max_steps=1, progress=False,
                    log=lambda s: None)
    assert first["loss"] != json.loads((scratch / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_init_from_refuses_a_missing_run_or_another_backbone_before_compute(tmp_path):
    src = train(tiny_config(tmp_path, "hc"), tmp_path / "src", max_steps=1, progress=False, log=lambda s: None)
    missing = tiny_config(tmp_path, "hc", model__init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not a trained run directory"):
        train(missing, tmp_path / "a", progress=False, log=lambda s: None)
    narrow = tiny_config(tmp_path, "hc", model__init_from=str(src), model__width=4,
                         data__path=str(tmp_path / "no-such-data.h5"))
    with pytest.raises(ConfigError, match="width 8 there, 4 here"):
        train(narrow, tmp_path / "b", progress=False, log=lambda s: None)
    scalar = tiny_config(tmp_path, "sc", model__init_from=str(src))
    with pytest.raises(ConfigError, match="outputs 4 there, 1 here"):
        train(scalar, tmp_path / "c", progress=False, log=lambda s: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
