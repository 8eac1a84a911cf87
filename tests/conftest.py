"""Suite-wide settings: every test runs in float64.

Convergence-order tests measure errors down to ~1e-12, far below float32
round-off, so double precision is switched on before any array is made.
"""

import jax

jax.config.update("jax_enable_x64", True)
