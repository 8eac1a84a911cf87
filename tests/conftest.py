"""Suite-wide settings: float64, strict dtype and rank promotion, runtime shape checks.

Convergence-order tests measure errors down to ~1e-12, far below float32
round-off, so double precision is switched on before any array is made.

Strict promotion makes every mix of dtypes (int32 with float64, float32 with
float64) and every implicit rank broadcast an error, so the library states its
casts (``astype``) and broadcasts (``x[:, None]``) where it makes them. Python
scalars stay weakly typed and mix freely.

The shape annotations of ``pihc`` (``Float[Array, "nt nx"]``) are checked at
every call by jaxtyping with beartype: pyproject's ``addopts`` passes
``--jaxtyping-packages=pihc,beartype.beartype``, whose pytest hook instruments
the package before this file or any test imports it.
"""

import jax
import jaxtyping
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def unchecked():
    """The runtime annotation checks off for one test.

    For tests that pass an ill-typed argument on purpose (``kind="edges"`` for a
    ``Literal``) to see the library's own error, the one a caller without a type
    checker gets; with the checks on, jaxtyping would refuse the call first.
    """
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
