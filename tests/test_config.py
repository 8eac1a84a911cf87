"""The configuration: one source of truth with the layer it configures."""

import dataclasses
import typing

import jax
import pytest
from _tiny import TinyData, tiny_config

from pihc.constraint import HardConstraint
from pihc.grid import GridError
from pihc.pdes import diffusion_sorption_grid
from pihc.training.config import Config, ConfigError, ConstraintConfig, from_dict, load_config
from pihc.training.loop import train
from pihc.training.model import build_model


def test_constraint_section_is_the_layers_arguments_with_their_defaults():
    """Every constraint key but global_steps is the HardConstraint field of that name: same type, same default
    (splits and n_points, which the layer requires, have the config's own defaults)."""
    layer = {f.name: f for f in dataclasses.fields(HardConstraint)}
    layer_hints = typing.get_type_hints(HardConstraint)
    config_hints = typing.get_type_hints(ConstraintConfig)
    for f in dataclasses.fields(ConstraintConfig):
        if f.name == "global_steps":
            continue
        assert f.name in layer, f.name
        assert config_hints[f.name] == layer_hints[f.name], f.name
        if f.name not in ("splits", "n_points"):
            assert f.default == layer[f.name].default, f.name
    options = set(ConstraintConfig().layer_options())
    assert options == {f.name for f in dataclasses.fields(ConstraintConfig)} - {"global_steps"}
    assert options <= set(layer) and not {"pde", "grid", "adjoint"} & options


@pytest.mark.parametrize("override,message", [
    ("constraint.row_scope=everywhere", "constraint.row_scope must be one of 'global', 'local'; got 'everywhere'"),
    ("constraint.initial_condition=exact", "constraint.initial_condition must be one of 'rows', 'construction'"),
    ("constraint.solver.rtol=-1", "constraint.solver: rtol must be a finite number >= 0"),
    ("constraint.solver.damping=0", "constraint.solver: damping must be a positive number"),
    ("constraint.row_weights.pde=-2", "constraint.row_weights: row weight pde must be a finite number >= 0"),
    ("constraint.blend=maybe", "constraint.blend: expected true or false"),
    ("constraint.pde_weight=5", "pde_weight is now constraint.row_weights.pde"),
    ("constraint.rtol=1e-6", "rtol is now constraint.solver.rtol"),
])
def test_bad_constraint_settings_are_refused_by_name_when_loaded(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("diffusion-sorption/moe-small", [override])


def test_nested_settings_load_into_the_layers_types():
    from pihc import LevenbergMarquardt, RowWeights

    cfg = load_config("diffusion-sorption/moe-small", ["constraint.solver.rtol=1e-7",
                                                       "constraint.row_weights.initial=3"])
    assert isinstance(cfg.constraint.solver, LevenbergMarquardt)
    assert isinstance(cfg.constraint.row_weights, RowWeights)
    assert cfg.constraint.solver.rtol == 1e-7 and cfg.constraint.row_weights.initial == 3.0
    # Keys not given keep the file's values, and the file's keys not given keep the layer's defaults.
    assert cfg.constraint.solver.damping == 1e-10 and cfg.constraint.row_weights.pde == 500.0
    assert cfg.constraint.start == "row_fit"


def test_config_errors_before_compute(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Config, {"optim": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="model.method"):
        load_config(None, ["model.method=xyz"])
    # YAML 1.1 reads "3e-3" as a string; a float field takes it as the number
    assert load_config(None, ["optim.lr=3e-3"]).optim.lr == 3e-3
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])
    cfg = tiny_config(tmp_path, "moe", constraint__splits=[1, 3])
    data = TinyData()
    with pytest.raises(GridError, match="axis x has 32 points; 3 experts do not divide it"):
        build_model(cfg, data.pde, diffusion_sorption_grid(9, 32, t_max=40.0), jax.random.key(0))
    cfg = tiny_config(tmp_path, "moe", model__modes=[3, 40])
    with pytest.raises(ConfigError, match="at most 17 Fourier modes fit"):
        build_model(cfg, data.pde, diffusion_sorption_grid(9, 32, t_max=40.0), jax.random.key(0))
    cfg = tiny_config(tmp_path, "moe", constraint__blend=True)
    with pytest.raises(ConfigError, match="constraint: blend needs an overlap"):
        train(cfg, tmp_path / "noblend", progress=False, log=lambda s: None)
    assert not (tmp_path / "noblend").exists()
    cfg = tiny_config(tmp_path, "moe", data__nx=48)
    with pytest.raises(GridError, match="integer multiple"):
        train(cfg, tmp_path / "bad", progress=False, log=lambda s: None)
    assert not (tmp_path / "bad").exists()
    cfg = tiny_config(tmp_path, "moe", data__path=str(tmp_path / "missing.h5"))
    with pytest.raises(Exception):
        train(cfg, tmp_path / "bad2", progress=False, log=lambda s: None)
    assert not (tmp_path / "bad2").exists()


def test_loss_coarsen_that_does_not_divide_the_grid_fails_before_compute(tmp_path):
    cfg = tiny_config(tmp_path, "hc", loss__coarsen=[1, 3], data__path=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="does not divide the grid"):
        train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="loss.coarsen needs one factor"):
        load_config(None, ["loss.coarsen=[2]"])
    assert not (tmp_path / "run").exists()


def test_global_steps_is_refused_without_experts_or_beyond_the_run():
    with pytest.raises(ConfigError, match="global_steps ties experts"):
        load_config(None, ["model.method=hc", "constraint.global_steps=10"])
    with pytest.raises(ConfigError, match=r"global_steps must be in \[0, optim.steps = 4000\]"):
        load_config(None, ["constraint.global_steps=4001"])
    assert load_config(None, ["constraint.global_steps=4000"]).constraint.global_steps == 4000
