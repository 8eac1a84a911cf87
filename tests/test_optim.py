"""pihc.training.optim: the learning-rate schedule."""

import numpy as np
import pytest

from pihc.training.config import ConfigError, load_config


def test_learning_rate_schedule_halves_and_warms_up():
    """lr halves every decay_every steps down to min_lr; a warmup ramps linearly
    from 0 to lr first and shifts the halvings by its length."""
    import dataclasses

    from pihc.training.config import OptimConfig
    from pihc.training.optim import learning_rate_schedule

    base = load_config("diffusion-sorption/moe-small", [])
    opt = OptimConfig(lr=4e-3, decay_every=10, decay_rate=0.5, min_lr=1e-3, steps=100)
    plain = learning_rate_schedule(dataclasses.replace(base, optim=opt))
    np.testing.assert_allclose([float(plain(s)) for s in (0, 9, 10, 19, 20, 30, 99)],
                               [4e-3, 4e-3, 2e-3, 2e-3, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    warm = learning_rate_schedule(dataclasses.replace(base, optim=dataclasses.replace(opt, warmup=4)))
    np.testing.assert_allclose([float(warm(s)) for s in (0, 1, 2, 4, 13, 14, 24)],
                               [0.0, 1e-3, 2e-3, 4e-3, 4e-3, 2e-3, 1e-3], rtol=1e-6, atol=1e-12)
    with pytest.raises(ConfigError, match="warmup must be >= 0"):
        load_config("diffusion-sorption/moe-small", ["optim.warmup=-1"])
