"""pihc.training.io: atomic writes and checkpoints."""

import jax.numpy as jnp
import numpy as np
import pytest

from pihc.training.io import atomic_write_bytes, load_checkpoint, save_checkpoint


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.eqx"
    save_checkpoint(target, {"a": jnp.arange(3.0)}, {"step": 1})
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, {"a": jnp.arange(3.0) + 1}, {"step": 2})
    monkeypatch.undo()
    tree, meta = load_checkpoint(target, {"a": jnp.zeros(3)})
    assert meta["step"] == 1 and np.all(np.asarray(tree["a"]) == np.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.eqx"]  # no temp file left
    with pytest.raises(RuntimeError):
        atomic_write_bytes(tmp_path / "x.bin", _raises())


def _raises():
    raise RuntimeError("producer failed")
