"""Wave equation: standing-wave convergence, time orders, energy conservation under leapfrog."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp


@pytest.mark.parametrize("scheme", ["leapfrog", "rk4"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_wave_standing_wave_order_two(scheme, ndim):
    """u = sin(πx)[sin(πy)] cos(ω t), ω = cπ√ndim, with fixed (Dirichlet) ends; dt ∝ h."""
    c, t_end = 1.0, 0.5
    errors, spacings = [], []
    for n in (16, 32, 64) if ndim == 1 else (8, 16, 32):
        grid = dp.Grid1D(n, bc="dirichlet") if ndim == 1 else dp.Grid2D(n, n, bc="dirichlet")
        shape = jnp.prod(jnp.stack([jnp.sin(np.pi * x) for x in grid.coordinates]), axis=0)
        probe = dp.Wave(grid, c, scheme=scheme)
        steps = int(np.ceil(t_end / (0.5 * probe.max_stable_dt)))
        model = dp.Wave(grid, c, dt=t_end / steps, scheme=scheme)
        u, _ = dp.rollout(model, (shape, jnp.zeros_like(shape)), steps)
        exact = shape * np.cos(c * np.pi * np.sqrt(ndim) * t_end)
        errors.append(float(jnp.max(jnp.abs(u[-1] - exact))))
        spacings.append(1.0 / n)
    assert abs(observed_order(spacings, errors) - 2.0) <= 0.3


def test_wave_dalembert_pulse_neumann_wave_speed_field():
    """A right-going pulse u0 = g(x), v0 = -c g'(x) travels at c; checks c(x) enters as c², 2nd order."""
    c, t_end = 0.5, 0.6
    g = lambda x: jnp.exp(-100 * (x - 0.3) ** 2)
    dg = lambda x: -200 * (x - 0.3) * g(x)
    errors, spacings = [], []
    for n in (100, 200, 400):
        grid = dp.Grid1D(n, bc="neumann")
        probe = dp.Wave(grid, c * jnp.ones(n))
        steps = int(np.ceil(t_end / (0.5 * probe.max_stable_dt)))
        model = dp.Wave(grid, c * jnp.ones(n), dt=t_end / steps)
        u, _ = dp.rollout(model, (g(grid.x), -c * dg(grid.x)), steps)
        errors.append(float(jnp.max(jnp.abs(u[-1] - g(grid.x - c * t_end)))))
        spacings.append(grid.dx)
    assert abs(observed_order(spacings, errors) - 2.0) <= 0.3


@pytest.mark.parametrize("scheme, order", [("leapfrog", 2), ("ssprk3", 3), ("rk4", 4)])
def test_wave_time_order_against_semi_discrete_exact(scheme, order):
    """On a fixed grid the mode sin(kx) oscillates as cos(ω_h t), ω_h = (2c/h) sin(kh/2)."""
    # t_end keeps sin(ω t_end) away from 0, where the phase error (order p) would hide behind amplitude error.
    n, c, t_end = 16, 1.0, 0.7
    grid = dp.Grid1D(n)
    k, h = 2 * np.pi, grid.dx
    omega = 2 * c / h * np.sin(k * h / 2)
    u0 = jnp.sin(k * grid.x)
    exact = u0 * np.cos(omega * t_end)
    errors, dts = [], []
    for steps in (80, 160, 320):
        model = dp.Wave(grid, c, dt=t_end / steps, scheme=scheme)
        u, _ = dp.rollout(model, (u0, jnp.zeros(n)), steps)
        errors.append(float(jnp.max(jnp.abs(u[-1] - exact))))
        dts.append(t_end / steps)
    assert abs(observed_order(dts, errors) - order) <= 0.3


@pytest.mark.parametrize("bc", ["dirichlet", "neumann", "periodic"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_wave_energy_bounded_without_drift_under_leapfrog(bc, ndim):
    """Störmer–Verlet conserves a modified energy: the discrete energy oscillates O(dt²), no drift."""
    grid = dp.Grid1D(64, bc=bc) if ndim == 1 else dp.Grid2D(32, 32, bc=bc)
    coords = grid.coordinates
    speed = 1.0 + 0.5 * jnp.sin(2 * np.pi * coords[0]) ** 2
    u0 = jnp.exp(-40 * sum((x - 0.5) ** 2 for x in coords))
    model = dp.Wave(grid, speed)
    u, v = dp.rollout(model, (u0, jnp.zeros_like(u0)), 4000, save_every=10)
    energy = np.asarray(jax.vmap(lambda a, b: model.energy((a, b)))(u, v))
    deviation = np.abs(energy / energy[0] - 1)
    assert deviation.max() < 2e-2
    # No secular drift: the late oscillation is no larger than the early one.
    half = len(energy) // 2
    assert deviation[half:].max() <= 1.5 * deviation[:half].max() + 1e-12
