"""Advection: convergence orders against the translated profile, time orders, mass conservation, boundaries."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp


@pytest.mark.parametrize("reconstruction, order, sizes", [("upwind", 1, (32, 64, 128)), ("weno5", 5, (16, 32, 64))])
def test_advection1d_space_order_against_translated_profile(reconstruction, order, sizes):
    t_end, v = 0.25, 1.0
    errors, spacings = [], []
    for n in sizes:
        grid = dp.Grid1D(n)
        h = grid.dx
        # dt small enough that RK4's time error is below the spatial error of this order.
        dt_target = 0.2 * h if order == 1 else 0.5 * h ** 1.25
        steps = int(np.ceil(t_end / dt_target))
        model = dp.Advection(grid, v, dt=t_end / steps, reconstruction=reconstruction, scheme="rk4")
        u = dp.rollout(model, jnp.sin(2 * np.pi * grid.x), steps)[-1]
        errors.append(float(jnp.max(jnp.abs(u - jnp.sin(2 * np.pi * (grid.x - v * t_end))))))
        spacings.append(h)
    assert abs(observed_order(spacings, errors) - order) <= 0.3


@pytest.mark.parametrize("reconstruction, order, sizes", [("upwind", 1, (16, 32, 64)), ("weno5", 5, (8, 16, 32))])
def test_advection2d_space_order_diagonal_translation(reconstruction, order, sizes):
    t_end, vx, vy = 0.2, 1.0, -0.5
    errors, spacings = [], []
    for n in sizes:
        grid = dp.Grid2D(n, n)
        X, Y = grid.coordinates
        h = grid.spacing[0]
        dt_target = 0.1 * h if order == 1 else 0.3 * h ** 1.25
        steps = int(np.ceil(t_end / dt_target))
        model = dp.Advection(grid, (vx, vy), dt=t_end / steps, reconstruction=reconstruction, scheme="rk4")
        profile = lambda x, y: jnp.sin(2 * np.pi * x) * jnp.cos(2 * np.pi * y)
        u = dp.rollout(model, profile(X, Y), steps)[-1]
        errors.append(float(jnp.max(jnp.abs(u - profile(X - vx * t_end, Y - vy * t_end)))))
        spacings.append(h)
    assert abs(observed_order(spacings, errors) - order) <= 0.3


@pytest.mark.parametrize("scheme, order", [("euler", 1), ("ssprk3", 3), ("rk4", 4)])
def test_advection_time_order_against_semi_discrete_exact(scheme, order):
    """Upwind is linear: a Fourier mode evolves as exp(λ_h t), λ_h = -(v/h)(1 - e^{-ikh})."""
    n, v, t_end = 16, 1.0, 0.5
    grid = dp.Grid1D(n)
    k, h = 2 * np.pi, grid.dx
    lam = -(v / h) * (1 - np.exp(-1j * k * h))
    x = np.asarray(grid.x)
    exact = np.imag(np.exp(lam * t_end) * np.exp(1j * k * x))
    errors, dts = [], []
    for steps in (40, 80, 160):
        model = dp.Advection(grid, v, dt=t_end / steps, reconstruction="upwind", scheme=scheme)
        u = dp.rollout(model, jnp.sin(k * grid.x), steps)[-1]
        errors.append(float(np.max(np.abs(np.asarray(u) - exact))))
        dts.append(t_end / steps)
    assert abs(observed_order(dts, errors) - order) <= 0.3


@pytest.mark.parametrize("reconstruction", ["upwind", "weno5"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_advection_conserves_mass_with_varying_velocity(reconstruction, ndim):
    if ndim == 1:
        grid = dp.Grid1D(48)
        velocity = 1.0 + 0.5 * jnp.sin(2 * np.pi * grid.x)
        u0 = jnp.exp(-50 * (grid.x - 0.5) ** 2)
    else:
        grid = dp.Grid2D(24, 24)
        X, Y = grid.coordinates
        velocity = (jnp.sin(2 * np.pi * Y), 0.3 + 0.2 * jnp.cos(2 * np.pi * X))
        u0 = jnp.exp(-30 * ((X - 0.5) ** 2 + (Y - 0.5) ** 2))
    model = dp.Advection(grid, velocity, reconstruction=reconstruction)
    traj = dp.rollout(model, u0, 400, save_every=100)
    totals = np.array([float(model.total(u)) for u in traj])
    np.testing.assert_allclose(totals, totals[0], rtol=1e-12)
    assert float(jnp.max(jnp.abs(traj[-1] - u0))) > 1e-2  # it did move


def test_advection_weno5_is_essentially_non_oscillatory_on_a_step():
    """A square wave stays within its bounds up to a small overshoot; upwind is monotone exactly."""
    grid = dp.Grid1D(100)
    u0 = jnp.where((grid.x > 0.25) & (grid.x < 0.5), 1.0, 0.0)
    for reconstruction, tol in (("upwind", 1e-12), ("weno5", 2e-2)):
        model = dp.Advection(grid, 1.0, reconstruction=reconstruction, scheme="ssprk3")
        u = dp.rollout(model, u0, 150)[-1]
        assert float(jnp.max(u)) <= 1.0 + tol and float(jnp.min(u)) >= -tol


def test_advection_dirichlet_inflow_neumann_outflow():
    """Inflow value 1 enters through the left face and fills the domain behind a front at x = v t."""
    grid = dp.Grid1D(200, bc=(dp.Dirichlet(1.0), dp.Neumann(0.0)))
    model = dp.Advection(grid, 1.0, reconstruction="weno5", scheme="ssprk3")
    steps = int(round(0.5 / model.dt))
    u = dp.rollout(model, jnp.zeros(200), steps)[-1]
    t = steps * model.dt
    x = np.asarray(grid.x)
    np.testing.assert_allclose(np.asarray(u)[x < t - 0.1], 1.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(u)[x > t + 0.1], 0.0, atol=1e-3)


def _weno5z_numpy(a, b, c, d, e):
    """WENO5-Z (p = 2, eps = 1e-6) face value from five cells, the upwind one first (Borges et al. 2008)."""
    q = ((2 * a - 7 * b + 11 * c) / 6, (-b + 5 * c + 2 * d) / 6, (2 * c + 5 * d - e) / 6)
    beta = (13 / 12 * (a - 2 * b + c) ** 2 + 0.25 * (a - 4 * b + 3 * c) ** 2,
            13 / 12 * (b - 2 * c + d) ** 2 + 0.25 * (b - d) ** 2,
            13 / 12 * (c - 2 * d + e) ** 2 + 0.25 * (3 * c - 4 * d + e) ** 2)
    tau = abs(beta[0] - beta[2])
    alpha = [w * (1 + (tau / (bj + 1e-6)) ** 2) for w, bj in zip((0.1, 0.6, 0.3), beta)]
    return sum(al * qj for al, qj in zip(alpha, q)) / sum(alpha)


def test_weno5_flux_takes_each_face_from_its_upwind_side():
    # A velocity that changes sign: faces with v > 0 reconstruct from the left, the others from the right;
    # an independent NumPy WENO-Z on a periodic grid, F = v u_upwind, (F_{i+1/2} - F_{i-1/2}) / h.
    n = 40
    grid = dp.Grid1D(n)
    x = np.asarray(grid.x)
    u = np.exp(-40 * (x - 0.3) ** 2) + 0.5 * (x > 0.6)
    v_cells = np.sin(2 * np.pi * x + 0.3)
    v_face = 0.5 * (v_cells + np.roll(v_cells, -1))  # face i + 1/2
    cell = lambda k: np.roll(u, -k)  # u_{i+k}
    left = _weno5z_numpy(cell(-2), cell(-1), cell(0), cell(1), cell(2))
    right = _weno5z_numpy(cell(3), cell(2), cell(1), cell(0), cell(-1))
    flux = v_face * np.where(v_face > 0, left, right)
    expected = -(flux - np.roll(flux, 1)) / grid.spacing[0]
    model = dp.Advection(grid, v_cells)
    assert np.any(v_face > 0) and np.any(v_face < 0)
    np.testing.assert_allclose(model.rhs(jnp.asarray(u)), expected, rtol=1e-12, atol=1e-12 * np.max(np.abs(expected)))
