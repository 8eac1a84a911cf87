"""partition / unpartition: identity, block contents, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from pihc.grid import GridError
from pihc.partition import check_splits, partition, unpartition


@pytest.mark.parametrize("shape,splits", [((8, 12), (1, 4)), ((8, 12, 3), (2, 3)), ((4, 6, 8, 2), (2, 3, 2))])
def test_round_trip_is_identity(shape, splits):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape))
    np.testing.assert_array_equal(unpartition(partition(x, splits), splits), x)


def test_blocks_are_the_row_major_slices():
    x = np.arange(6 * 8 * 2).reshape(6, 8, 2)
    blocks = np.asarray(partition(jnp.asarray(x), (2, 4)))
    assert blocks.shape == (8, 3, 2, 2)
    for k in range(8):
        i, j = divmod(k, 4)
        np.testing.assert_array_equal(blocks[k], x[3 * i:3 * i + 3, 2 * j:2 * j + 2])


def test_numpy_in_numpy_out():
    m = np.ones((4, 8), bool)
    assert isinstance(partition(m, (1, 2)), np.ndarray)


def test_split_that_does_not_divide_names_the_axis():
    with pytest.raises(GridError, match="axis x has 1024 points; 3 experts do not divide it"):
        partition(jnp.zeros((101, 1024)), (1, 3), names=("t", "x"))
    with pytest.raises(GridError, match="one count per grid axis"):
        check_splits((4, 4), (2, 2, 2))
    with pytest.raises(GridError, match="fewer axes than splits"):
        partition(jnp.zeros((4, 4)), (2, 2, 2))


@pytest.mark.parametrize("shape,splits,halo", [((3, 32), (1, 4), (0, 3)), ((12, 16), (3, 2), (2, 4)),
                                               ((4, 8, 12), (2, 2, 3), (1, 2, 2))])
def test_blend_windows_are_a_smooth_partition_of_unity_on_the_widened_blocks(shape, splits, halo):
    from pihc.partition import blend_windows

    w = blend_windows(shape, splits, halo)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=0, atol=1e-14)
    assert w.min() >= 0.0
    block = [n // s for n, s in zip(shape, splits)]
    for k, coords in enumerate(np.ndindex(*splits)):
        # > 0 exactly on block k widened by the halo (clipped), 1 at least halo points inside its seams.
        wide = np.zeros(shape, bool)
        wide[tuple(slice(max(c * b - h, 0), (c + 1) * b + h) for c, b, h in zip(coords, block, halo))] = True
        np.testing.assert_array_equal(w[k] > 0, wide)
        core = tuple(slice(c * b + (h if c > 0 else 0), (c + 1) * b - (h if c < s - 1 else 0))
                     for c, b, h, s in zip(coords, block, halo, splits))
        np.testing.assert_array_equal(w[k][core], 1.0)
    # Across a seam the ramp is the quintic smoothstep, symmetric about the seam (here axis -1, halo h).
    h, b = halo[-1], block[-1]
    z = (np.arange(2 * h) + 0.5) / (2 * h)  # points b - h .. b + h - 1, seam at b - 0.5
    ramp = 6 * z ** 5 - 15 * z ** 4 + 10 * z ** 3
    k1 = int(np.ravel_multi_index((0,) * (len(shape) - 1) + (1,), splits))
    np.testing.assert_allclose(w[k1][(0,) * (len(shape) - 1) + (slice(b - h, b + h),)], ramp, rtol=1e-13)
    # No halo: the indicators of partition's blocks.
    ind = blend_windows(shape, splits, (0,) * len(shape))
    np.testing.assert_array_equal(partition(ind.transpose(tuple(range(1, len(shape) + 1)) + (0,)), splits),
                                  _block_indicators(splits, block))
    with pytest.raises(GridError, match="half a block"):
        blend_windows(shape, splits, tuple(b // 2 + 1 if s > 1 else 0 for b, s in zip(block, splits)))


def _block_indicators(splits, block):
    """(K, *block, K): expert k's block holds 1 in channel k and 0 elsewhere."""
    K = int(np.prod(splits))
    return np.broadcast_to(np.eye(K).reshape((K,) + (1,) * len(block) + (K,)), (K,) + tuple(block) + (K,))
