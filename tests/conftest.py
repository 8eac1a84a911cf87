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

Compiled programs are cached on disk for the length of one run of the suite
(a fresh directory, removed at the end, shared by the xdist workers and the
subprocesses they start): many tests train the same tiny step more than once
(an uninterrupted run, then a resumed one), and XLA's compile time is most
of their cost. A cached executable is keyed on the program, its options and
``XLA_FLAGS``, so it is the one the compiler would have produced. For the same
reason the suite compiles with LLVM's optimisation level 0
(``--xla_backend_optimization_level=0``, appended to ``XLA_FLAGS`` unless a
caller chose a level): XLA's own passes (fusion, layout, scheduling) run as
they do for a user, only the generated loops are left unoptimised, and the
tiny programs compile faster than they run slower. The tests' references
(analytic solutions, scipy, finite differences, the same run under the same
flags) hold at either level.
"""

import gc
import os
import shutil
import tempfile

import jax
import jaxtyping
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    # The controller (or a run without xdist) makes the directory; the xdist workers and the tests'
    # subprocesses, started after this hook, inherit it through the environment, which JAX reads at
    # import. A caller's own cache stands.
    if hasattr(config, "workerinput"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:  # read when the backend starts, after this hook
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    if _CACHE in os.environ:
        return
    config.pihc_xla_cache = os.environ[_CACHE] = tempfile.mkdtemp(prefix="pihc-tests-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # tiny programs compile in well under 1 s
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    # This process imported JAX (pihc's instrumentation did) before the hook ran.
    jax.config.update("jax_compilation_cache_dir", config.pihc_xla_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if getattr(config, "pihc_xla_cache", None):
        shutil.rmtree(config.pihc_xla_cache, ignore_errors=True)


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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each XLA CPU executable keeps memory mappings of its own (its JIT-compiled
    code), and JAX keeps every executable it has compiled while the function
    lives in its caches. One process running the suite reached Linux's default
    limit of 65,530 mappings per process (``vm.max_map_count``) about halfway
    through, where the next compilation's ``mmap`` failed and the process
    died in XLA (a segmentation fault or an abort). Cleared per module, the
    count stays at what one module needs; a program compiled again is read
    back from the suite's disk cache.
    """
    yield
    jax.clear_caches()
    gc.collect()
