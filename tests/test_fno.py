"""The FNO backbone against independent numpy references and analytic facts.

* SpectralConv equals a direct numpy implementation (np.fft.rfftn and an
  explicit loop over the kept frequencies) in 1D, 2D and 3D;
* a single Fourier mode is cut or multiplied by its weight, as computed by hand;
* the FNO commutes with integer shifts on a periodic grid;
* SpectralConv is resolution invariant on band-limited inputs;
* the whole FNO (padding, no activation after the last layer) equals a numpy
  forward pass; gradients equal finite differences;
* too many modes, wrong ranks and wrong dtypes fail with clear messages.

The suite runs in float64 (conftest); float32 cases ask for it explicitly.
Every test runs under strict dtype promotion and with rank promotion off.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.models import FNO, SpectralConv, max_modes


@eqx.filter_jit
def call(model, x):
    """``model(x)``, compiled: one XLA program instead of many small eager ones."""
    return model(x)


@pytest.fixture(autouse=True)
def _strict_promotion():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


# ------------------------------------------------------------ numpy references

def _kept_frequencies(grid, modes):
    """Yield (corner, in-block index, rfftn index) for every kept frequency, explicitly."""
    d = len(grid)
    for corner, signs in enumerate(itertools.product((0, 1), repeat=d - 1)):
        for k in itertools.product(*(range(m) for m in modes)):
            index = []
            for j in range(d - 1):
                # positive frequency k_j, or negative frequency -(m_j - k_j)
                freq = k[j] if signs[j] == 0 else -(modes[j] - k[j])
                index.append(freq % grid[j])
            index.append(k[-1])
            yield corner, k, tuple(index)


def spectral_reference(x, w_re, w_im, modes):
    """SpectralConv in numpy: rfftn, multiply each kept frequency by its matrix, irfftn."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w_re, np.float64) + 1j * np.asarray(w_im, np.float64)
    grid, d = x.shape[:-1], x.ndim - 1
    spectrum = np.fft.rfftn(x, axes=tuple(range(d)))
    out = np.zeros(spectrum.shape[:-1] + (w.shape[2],), complex)
    for corner, k, index in _kept_frequencies(grid, modes):
        out[index] = spectrum[index] @ w[(corner, slice(None), slice(None)) + k]
    return np.fft.irfftn(out, s=grid, axes=tuple(range(d)))


def _gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))


def fno_reference(fno, x):
    """The FNO forward pass in numpy, from the module's parameters."""
    def linear(layer, v):
        return v @ np.asarray(layer.weight) + np.asarray(layer.bias)

    grid = x.shape[:-1]
    v = linear(fno.lift, np.asarray(x, np.float64))
    v = np.pad(v, [(0, p) for p in fno.padding] + [(0, 0)])
    for layer, (sc, pw) in enumerate(zip(fno.spectral, fno.pointwise)):
        v = spectral_reference(v, sc.weight_re, sc.weight_im, sc.modes) + linear(pw, v)
        if layer < len(fno.spectral) - 1:
            v = _gelu_tanh(v)
    v = v[tuple(slice(0, n) for n in grid)]
    return linear(fno.proj2, _gelu_tanh(linear(fno.proj1, v)))


CASES = [((16,), (5,)), ((12, 10), (4, 3)), ((8, 7, 9), (3, 2, 4))]


# ------------------------------------------------------------ SpectralConv

@pytest.mark.parametrize("grid, modes", CASES)
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_spectral_conv_matches_numpy(grid, modes, dtype, tol):
    kw, kx = jax.random.split(jax.random.key(0))
    conv = SpectralConv(3, 2, modes, key=kw, dtype=dtype)
    # O(1) weights (the default init is 1/(c_in c_out) small) so the tolerance is meaningful.
    conv = eqx.tree_at(lambda c: (c.weight_re, c.weight_im), conv,
                       (conv.weight_re * 6 - 3, conv.weight_im * 6 - 3))
    x = jax.random.normal(kx, grid + (3,), dtype)
    y = call(conv, x)
    assert y.dtype == dtype and y.shape == grid + (2,)
    ref = spectral_reference(x, conv.weight_re, conv.weight_im, modes)
    assert np.max(np.abs(ref)) > 0.5
    np.testing.assert_allclose(np.asarray(y), ref, rtol=0, atol=tol)


def test_spectral_conv_init_and_layout():
    conv = SpectralConv(4, 5, (3, 2, 6), key=jax.random.key(1), dtype=jnp.float32)
    assert conv.weight_re.shape == conv.weight_im.shape == (4, 4, 5, 3, 2, 6)
    assert conv.weight_re.dtype == jnp.float32
    for w in (conv.weight_re, conv.weight_im):
        assert 0 <= float(w.min()) and float(w.max()) < 1 / 20
        assert float(w.mean()) == pytest.approx(1 / 40, rel=0.1)  # uniform[0,1) / (4*5)
    assert not np.allclose(conv.weight_re, conv.weight_im)


def _plane_wave(grid, freq, channel, c_in):
    """cos(2 pi k . x / n) in input channel `channel`, zero elsewhere."""
    coords = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
    theta = 2 * np.pi * sum(k * c / n for k, c, n in zip(freq, coords, grid))
    x = np.zeros(grid + (c_in,))
    x[..., channel] = np.cos(theta)
    return jnp.asarray(x), theta


@pytest.mark.parametrize("freq", [(4, 1), (-5, 2), (1, 3), (0, 4), (6, 0)])
def test_mode_above_cutoff_is_removed(freq):
    # modes (4, 3) keep k_0 in -4..3 and k_1 in 0..2: each freq is just outside.
    grid, modes = (16, 12), (4, 3)
    conv = SpectralConv(2, 3, modes, key=jax.random.key(2), dtype=jnp.float64)
    x, _ = _plane_wave(grid, freq, 1, 2)
    np.testing.assert_allclose(call(conv, x), 0.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("freq, corner, index", [((2, 1), 0, (2, 1)), ((-3, 2), 1, (1, 2)),
                                                  ((-4, 1), 1, (0, 1)), ((3, 2), 0, (3, 2))])
def test_mode_below_cutoff_is_multiplied_by_its_weight(freq, corner, index):
    # For k_1 > 0 the half-spectrum holds one coefficient, N/2 at k, so the
    # output in channel o is Re(W[corner, i, o, index] e^{i theta}).
    grid, modes, i = (16, 12), (4, 3), 1
    conv = SpectralConv(2, 3, modes, key=jax.random.key(3), dtype=jnp.float64)
    x, theta = _plane_wave(grid, freq, i, 2)
    w = np.asarray(conv.weight_re[(corner, i, slice(None)) + index]) \
        + 1j * np.asarray(conv.weight_im[(corner, i, slice(None)) + index])
    expected = np.real(w[None, None, :] * np.exp(1j * theta)[..., None])
    np.testing.assert_allclose(call(conv, x), expected, rtol=0, atol=1e-14)


def test_zero_frequency_on_last_axis_pairs_both_signs():
    # cos(2 pi k t / n) with k_1 = 0 has coefficients N/2 at +k and -k, which
    # both live in the half-spectrum: y = Re(W+ e^{i theta} + W- e^{-i theta}) / 2.
    grid, modes, k = (16, 12), (4, 3), 2
    conv = SpectralConv(1, 2, modes, key=jax.random.key(4), dtype=jnp.float64)
    x, theta = _plane_wave(grid, (k, 0), 0, 1)
    w = np.asarray(conv.weight_re) + 1j * np.asarray(conv.weight_im)
    w_plus, w_minus = w[0, 0, :, k, 0], w[1, 0, :, modes[0] - k, 0]
    expected = np.real(w_plus * np.exp(1j * theta)[..., None] + w_minus * np.exp(-1j * theta)[..., None]) / 2
    np.testing.assert_allclose(call(conv, x), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("grid, modes", [((10,), (4,)), ((10, 12), (3, 4)), ((6, 8, 10), (2, 3, 4))])
def test_spectral_conv_is_resolution_invariant(grid, modes):
    # A random band-limited field (|k_j| < n_j / 2, above and below the cutoff)
    # sampled at n and 2n: the outputs agree on the common points.
    rng = np.random.default_rng(5)
    c_in = 2
    fields = [np.zeros(tuple(scale * n for n in grid) + (c_in,)) for scale in (1, 2)]
    for freq in itertools.product(*(range(-(n // 2) + 1, n // 2) for n in grid)):
        amp = rng.normal(size=(c_in,)) + 1j * rng.normal(size=(c_in,))
        for f in fields:
            coords = np.meshgrid(*(np.arange(n) / n for n in f.shape[:-1]), indexing="ij")
            phase = np.exp(2j * np.pi * sum(k * c for k, c in zip(freq, coords)))
            f += np.real(amp * phase[..., None])
    conv = SpectralConv(c_in, 3, modes, key=jax.random.key(6), dtype=jnp.float64)
    coarse, fine = (call(conv, jnp.asarray(f)) for f in fields)
    np.testing.assert_allclose(fine[(slice(None, None, 2),) * len(grid)], coarse, rtol=0, atol=1e-12)
    assert float(jnp.max(jnp.abs(coarse))) > 0.1


# ------------------------------------------------------------ FNO

def test_fno_matches_numpy_forward_with_padding():
    fno = FNO(3, 2, width=5, modes=(3, 2), n_layers=3, padding=(3, 0), key=jax.random.key(7),
              dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(8), (7, 6, 3))
    np.testing.assert_allclose(call(fno, x), fno_reference(fno, x), rtol=0, atol=1e-12)


def test_fno_has_no_activation_after_last_fourier_layer():
    fno = FNO(2, 1, width=4, modes=(2, 2), n_layers=1, key=jax.random.key(9), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(10), (6, 6, 2))
    v = fno.lift(x)
    v = fno.spectral[0](v) + fno.pointwise[0](v)
    expected = fno.proj2(jax.nn.gelu(fno.proj1(v)))
    np.testing.assert_allclose(call(fno, x), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("grid, modes, shift", [((16,), (5,), (5,)), ((12, 10), (4, 3), (5, -3)),
                                                 ((8, 6, 10), (3, 2, 4), (2, 1, -4))])
def test_fno_is_translation_equivariant_on_periodic_grid(grid, modes, shift):
    fno = FNO(2, 3, width=8, modes=modes, n_layers=3, key=jax.random.key(11))
    x = jax.random.normal(jax.random.key(12), grid + (2,), jnp.float32)
    axes = tuple(range(len(grid)))
    shifted = call(fno, jnp.roll(x, shift, axis=axes))
    np.testing.assert_allclose(shifted, jnp.roll(call(fno, x), shift, axis=axes), rtol=0, atol=1e-5)


def test_fno_gradients_match_finite_differences():
    fno = FNO(2, 2, width=4, modes=(2, 3), n_layers=2, padding=(2, 0), key=jax.random.key(13),
              dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(14), (6, 8, 2))
    target = jax.random.normal(jax.random.key(15), (6, 8, 2))

    def loss(model):
        return jnp.sum(jnp.sin(model(x)) * target)

    grads = jax.jit(jax.grad(loss))(fno)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)  # every parameter matters

    picks = [
        (lambda m: m.spectral[0].weight_re, (1, 2, 3, 1, 2)),
        (lambda m: m.spectral[1].weight_im, (0, 0, 1, 1, 0)),
        (lambda m: m.pointwise[1].weight, (2, 3)),
        (lambda m: m.lift.bias, (1,)),
        (lambda m: m.proj2.weight, (17, 1)),
    ]
    loss_jit, eps = jax.jit(loss), 1e-6
    for where, index in picks:
        def perturbed(delta):
            return eqx.tree_at(where, fno, where(fno).at[index].add(delta))
        fd = (loss_jit(perturbed(eps)) - loss_jit(perturbed(-eps))) / (2 * eps)
        assert float(where(grads)[index]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_fno_dtypes_and_vmap():
    x = jax.random.normal(jax.random.key(16), (3, 8, 6, 3))
    f32 = FNO(3, 2, width=4, modes=(2, 2), n_layers=2, key=jax.random.key(17))
    assert f32.lift.weight.dtype == jnp.float32
    assert call(f32, x[0]).dtype == jnp.float32  # float64 input is cast to the parameters' dtype
    f64 = FNO(3, 2, width=4, modes=(2, 2), n_layers=2, key=jax.random.key(17), dtype=jnp.float64)
    assert f64.lift.weight.dtype == jnp.float64
    assert call(f64, x[0].astype(jnp.float32)).dtype == jnp.float64
    # the float32 network's parameters in float64 give the same numbers up to float32 round-off
    f32_in_64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), f32)
    np.testing.assert_allclose(call(f32, x[0]), call(f32_in_64, x[0]), rtol=0, atol=1e-5)
    batched = eqx.filter_jit(jax.vmap(f64))(x)
    np.testing.assert_allclose(batched, jnp.stack([call(f64, xi) for xi in x]), rtol=0, atol=1e-13)


# ------------------------------------------------------------ validation

def test_max_modes():
    assert max_modes((101, 1024)) == (50, 513)
    assert max_modes((7,)) == (4,)
    assert SpectralConv.max_modes((8, 9, 10)) == FNO.max_modes((8, 9, 10)) == (4, 4, 6)
    # the limits themselves fit
    conv = SpectralConv(1, 1, (4, 4, 6), key=jax.random.key(20), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(21), (8, 9, 10, 1))
    np.testing.assert_allclose(call(conv, x), spectral_reference(x, conv.weight_re, conv.weight_im, conv.modes),
                               rtol=0, atol=1e-12)


def test_too_many_modes_is_a_clear_error():
    key = jax.random.key(22)
    with pytest.raises(ValueError, match=r"grid axis 0 has 8 points: at most 4 Fourier modes fit.*5 requested"):
        SpectralConv(1, 1, (5, 3), key=key)(jnp.zeros((8, 10, 1)))
    with pytest.raises(ValueError, match=r"grid axis 1 has 10 points: at most 6 Fourier modes fit.*7 requested"):
        SpectralConv(1, 1, (2, 7), key=key)(jnp.zeros((8, 10, 1)))
    with pytest.raises(ValueError, match=r"need a 2-D grid"):
        SpectralConv(1, 1, (2, 2), key=key)(jnp.zeros((8, 1)))
    fno = FNO(1, 1, width=2, modes=(5, 2), n_layers=1, padding=(1, 0), key=key)
    with pytest.raises(ValueError, match=r"grid axis 0 has 9 points after padding \(1, 0\).*at most 4"):
        fno(jnp.zeros((8, 10, 1)))
    call(fno, jnp.zeros((9, 10, 1)))  # 10 points after padding: 5 modes fit
    with pytest.raises(ValueError, match=r"expects 1 input channels"):
        fno(jnp.zeros((9, 10, 2)))


def test_bad_constructor_arguments():
    key = jax.random.key(23)
    with pytest.raises(ValueError, match="at least 1"):
        SpectralConv(1, 1, (0, 3), key=key)
    with pytest.raises(ValueError, match="one entry per grid axis"):
        FNO(1, 1, modes=(2, 2), padding=(1,), key=key)
    with pytest.raises(ValueError, match="non-negative"):
        FNO(1, 1, modes=(2, 2), padding=(1, -1), key=key)
    with pytest.raises(ValueError, match="float32 or float64"):
        FNO(1, 1, modes=(2, 2), key=key, dtype=jnp.float16)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            FNO(1, 1, modes=(2, 2), key=key, dtype=jnp.float64)
