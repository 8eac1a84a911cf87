"""The optimiser: the learning-rate schedule and the gradient transformation built from ``cfg.optim``."""

from __future__ import annotations

import optax

from .config import Config


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
    """Step -> learning rate: ``lr`` halved (``decay_rate``) every ``decay_every`` steps down to
    ``min_lr``, after a linear ramp from 0 over ``warmup`` steps if ``warmup`` > 0."""
    o = cfg.optim
    if o.warmup:
        return optax.warmup_exponential_decay_schedule(
            0.0, o.lr, o.warmup, o.decay_every, o.decay_rate, staircase=True, end_value=o.min_lr)
    return optax.exponential_decay(o.lr, o.decay_every, o.decay_rate, staircase=True, end_value=o.min_lr)


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Adam on :func:`learning_rate_schedule`, after clipping the gradient's global norm to ``optim.clip``."""
    return optax.chain(optax.clip_by_global_norm(cfg.optim.clip), optax.adam(learning_rate_schedule(cfg)))
