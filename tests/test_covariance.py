"""Error covariances: R whitening, B^{1/2} adjoint, variance and correlation length, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import observe as ob
from reference import diffusion_filter_explicit


def _rows_of_sqrt(B):
    """All rows of B^{1/2} (row i is (B^{T/2} e_i)^T): small grids only."""
    n = int(np.prod(B.grid.shape))
    units = jnp.eye(n).reshape(n, *B.grid.shape)
    return np.asarray(jax.vmap(B.sqrt_transpose)(units)).reshape(n, n)


def test_diagonal_r_whitens_and_samples():
    R = ob.DiagonalR(jnp.array([0.5, 2.0, 1.0]))
    np.testing.assert_allclose(R.whiten(jnp.array([1.0, 1.0, 3.0])), [2.0, 0.5, 3.0])
    np.testing.assert_allclose(R(jnp.ones(3)), [0.25, 4.0, 1.0])
    assert dp.check.adjoint_test(R.sqrt, R.sqrt_transpose, jnp.zeros(3), jnp.zeros(3)).relative_error <= 1e-12
    draws = jax.vmap(lambda k: ob.DiagonalR(0.3).sample(k, jnp.zeros(2000)))(jax.random.split(jax.random.key(0), 5))
    assert abs(float(jnp.std(draws)) / 0.3 - 1.0) < 0.02


GRIDS = {
    "1d-neumann": dp.Grid1D(30, 1.0, bc="neumann"),
    "1d-periodic": dp.Grid1D(24, 2.0),
    "2d-mixed": dp.Grid2D(10, 8, (1.0, 0.8), bc=("periodic", ("dirichlet", "neumann"))),
}


@pytest.mark.parametrize("name", GRIDS)
def test_b_sqrt_passes_the_dot_product_test_and_has_the_documented_variance(name):
    grid = GRIDS[name]
    B = ob.DiffusionB(grid, 0.7, 0.15)
    x = jnp.zeros(grid.shape)
    assert dp.check.adjoint_test(B.sqrt, B.sqrt_transpose, x, x).relative_error <= 1e-12
    rows = _rows_of_sqrt(B)
    np.testing.assert_allclose(np.sum(rows**2, axis=1), 0.49, rtol=1e-12)  # diag(B) = σ², walls included
    dense = rows @ rows.T
    np.testing.assert_allclose(dense, dense.T, atol=1e-14)
    assert np.linalg.eigvalsh(dense).min() > -1e-12  # positive semi-definite
    # B applied matrix-free equals B^{1/2} B^{T/2}.
    w = jax.random.normal(jax.random.key(1), grid.shape)
    np.testing.assert_allclose(np.asarray(B(w)).ravel(), dense @ np.asarray(w).ravel(), atol=1e-12)


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("length", [0.04, 0.15, 0.6])
def test_b_spectral_filter_equals_the_explicit_diffusion_sweeps(name, length):
    """G applied by FFT/DCT equals its definition, M explicit 3-point sweeps per axis (M = 1 to 324 here)."""
    grid = GRIDS[name]
    B = ob.DiffusionB(grid, 1.0, length)
    periodic = [isinstance(grid.bc[a][0], dp.Periodic) for a in range(grid.ndim)]
    u = jax.random.normal(jax.random.key(4), grid.shape)
    expected = diffusion_filter_explicit(u, grid.spacing, B.alphas, B.steps, periodic)
    np.testing.assert_allclose(B._smooth(u), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("length", [0.05, 0.1])
def test_b_correlation_is_gaussian_with_the_documented_length_scale(length):
    grid = dp.Grid1D(200, 1.0)
    B = ob.DiffusionB(grid, 1.0, length)
    centre = jnp.zeros(200).at[100].set(1.0)
    correlation = np.asarray(B(centre))  # column 100 of B, unit variance: correlations
    r = np.abs(np.asarray(grid.x) - float(grid.x[100]))
    expected = np.exp(-(r**2) / (2 * length**2))
    np.testing.assert_allclose(correlation, expected, atol=0.02)
    at_l = np.interp(length, r[100:], correlation[100:])
    assert abs(at_l - np.exp(-0.5)) < 0.01


def test_b_with_a_standard_deviation_field_and_per_axis_length_scales():
    grid = GRIDS["2d-mixed"]
    sigma = 0.5 + grid.coordinates[0]
    B = ob.DiffusionB(grid, sigma, (0.2, 0.1))
    np.testing.assert_allclose(np.sum(_rows_of_sqrt(B) ** 2, axis=1), np.ravel(sigma**2), rtol=1e-12)
    np.testing.assert_allclose(B.variance, sigma**2)
    assert B.steps == (4, 1) and B.length_scale == (0.2, 0.1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ob.DiagonalR(0.0), r"sigma \(observation error standard deviation\) must be > 0 everywhere; found 0\.0"),
        (lambda: ob.DiagonalR([0.1, -1.0]), r"must be > 0 everywhere; found -1\.0 at index \(1,\)"),
        (lambda: ob.DiagonalR([0.1, np.nan]), r"must be finite everywhere; found nan at index \(1,\)"),
        (lambda: ob.DiagonalR(np.ones((2, 2))), "sigma must be a scalar or a 1D array"),
        (lambda: ob.DiffusionB(GRIDS["1d-neumann"], 1.0, 0.0), "length_scale must be a finite number > 0"),
        (lambda: ob.DiffusionB(GRIDS["1d-neumann"], 1.0, -0.1), r"got -0\.1"),
        (lambda: ob.DiffusionB(GRIDS["2d-mixed"], 1.0, (0.1, 0.1, 0.1)), "or one per axis, 2 in all"),
        (lambda: ob.DiffusionB(GRIDS["1d-neumann"], -1.0, 0.1), r"sigma \(background error standard deviation\) must be > 0"),
        (lambda: ob.DiffusionB(GRIDS["1d-neumann"], jnp.ones(3), 0.1), r"sigma has shape \(3,\); give a scalar or a field of shape \(30,\)"),
        (lambda: ob.DiffusionB(GRIDS["1d-neumann"], 1.0, 0.1).sqrt(jnp.ones(3)), r"input has shape \(3,\), expected"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", ["1d-neumann", "2d-mixed"])
def test_the_dense_square_root_applies_the_same_b(name):
    """``dense_square_root`` (used by cycled 4D-Var on small states) gives B^1/2 and its transpose to round-off,
    and leaves B matrix-free above its size limit."""
    from diffphys.observe._covariance import DenseSqrtCovariance, dense_square_root

    grid = GRIDS[name]
    B = ob.DiffusionB(grid, 0.7, 0.15)
    like = jnp.zeros(grid.shape)
    dense = dense_square_root(B, like)
    assert isinstance(dense, DenseSqrtCovariance) and dense.S.shape == (like.size, like.size)
    v = jax.random.normal(jax.random.key(3), grid.shape)
    np.testing.assert_allclose(dense.sqrt(v), B.sqrt(v), rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(B.sqrt(v)))))
    np.testing.assert_allclose(dense.sqrt_transpose(v), B.sqrt_transpose(v), rtol=0,
                               atol=1e-12 * float(jnp.max(jnp.abs(B.sqrt_transpose(v)))))
    assert dense_square_root(B, like, max_size=like.size - 1) is B
    assert dense_square_root(dense, like) is dense
