"""The configuration: one source of truth with the layer it configures."""

import dataclasses
import typing

import pytest

from pihc.constraint import HardConstraint
from pihc.training.config import ConfigError, ConstraintConfig, load_config


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
