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
