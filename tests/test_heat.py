"""Heat equation: convergence orders against analytic solutions, conservation, boundary data."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp


def _steps(model, t_end, fraction=0.5):
    """Step count and ``dt`` (a fraction of the stability limit) landing exactly on ``t_end``."""
    n = int(np.ceil(t_end / (fraction * model.max_stable_dt)))
    return n, t_end / n


@pytest.mark.parametrize(
    "bc, mode",
    [
        ("periodic", lambda x: jnp.sin(2 * np.pi * x)),
        ("dirichlet", lambda x: jnp.sin(np.pi * x)),
        ("neumann", lambda x: jnp.cos(np.pi * x)),
    ],
)
def test_heat1d_space_order_two_against_decaying_mode(bc, mode):
    kappa, t_end = 0.1, 0.2
    k = 2 * np.pi if bc == "periodic" else np.pi
    errors, spacings = [], []
    for n in (16, 32, 64):
        grid = dp.Grid1D(n, 1.0, bc=bc)
        probe = dp.Heat(grid, kappa)
        steps, dt = _steps(probe, t_end, 0.25)
        model = dp.Heat(grid, kappa, dt=dt, scheme="rk4")
        u = dp.rollout(model, mode(grid.x), steps)[-1]
        exact = mode(grid.x) * np.exp(-kappa * k**2 * t_end)
        errors.append(float(jnp.max(jnp.abs(u - exact))))
        spacings.append(grid.dx)
    assert abs(observed_order(spacings, errors) - 2.0) <= 0.3


def _manufactured_1d(x):
    """Steady u*(x) with κ(x) and the source f = -(κ u*')' that keeps it steady."""
    u = 0.5 + jnp.sin(3 * x) + x**2
    du = 3 * jnp.cos(3 * x) + 2 * x
    d2u = -9 * jnp.sin(3 * x) + 2.0
    kappa = 1.0 + 0.5 * jnp.sin(2 * x)
    dkappa = jnp.cos(2 * x)
    return u, du, kappa, -(dkappa * du + kappa * d2u)


@pytest.mark.parametrize("sides", [("dirichlet", "dirichlet"), ("neumann", "neumann"), ("dirichlet", "neumann"), ("neumann", "dirichlet")])
def test_heat1d_variable_kappa_inhomogeneous_bc_order_two(sides):
    """Manufactured steady state with spatially varying κ and non-zero boundary data (value or flux)."""
    x_ends = jnp.array([0.0, 1.0])
    u_end, du_end, _, _ = _manufactured_1d(x_ends)
    conds = []
    for side, kind in enumerate(sides):
        if kind == "dirichlet":
            conds.append(dp.Dirichlet(float(u_end[side])))
        else:
            outward = -1.0 if side == 0 else 1.0
            conds.append(dp.Neumann(float(outward * du_end[side])))
    errors, spacings = [], []
    for n in (16, 32, 64):
        grid = dp.Grid1D(n, 1.0, bc=tuple(conds))
        u_star, _, kappa, source = _manufactured_1d(grid.x)
        probe = dp.Heat(grid, kappa, source=source)
        steps, dt = _steps(probe, 0.3)
        model = dp.Heat(grid, kappa, dt=dt, source=source, scheme="rk4")
        u = dp.rollout(model, u_star, steps)[-1]
        errors.append(float(jnp.max(jnp.abs(u - u_star))))
        spacings.append(grid.dx)
    assert abs(observed_order(spacings, errors) - 2.0) <= 0.3


def test_heat2d_variable_kappa_dirichlet_x_neumann_y_order_two():
    """2D manufactured steady state: u = 1 + sin(πx)(1 + ½cos(πy)), κ = 1 + 0.3 sin(x + 2y)."""

    def fields(X, Y):
        s, c = jnp.sin(np.pi * X), jnp.cos(np.pi * Y)
        u = 1.0 + s * (1.0 + 0.5 * c)
        ux = np.pi * jnp.cos(np.pi * X) * (1.0 + 0.5 * c)
        uxx = -np.pi**2 * s * (1.0 + 0.5 * c)
        uy = -0.5 * np.pi * s * jnp.sin(np.pi * Y)
        uyy = -0.5 * np.pi**2 * s * c
        kappa = 1.0 + 0.3 * jnp.sin(X + 2 * Y)
        kx, ky = 0.3 * jnp.cos(X + 2 * Y), 0.6 * jnp.cos(X + 2 * Y)
        return u, kappa, -(kx * ux + kappa * uxx + ky * uy + kappa * uyy)

    errors, spacings = [], []
    for n in (8, 16, 32):
        grid = dp.Grid2D(n, n, bc=(dp.Dirichlet(1.0), "neumann"))
        u_star, kappa, source = fields(*grid.coordinates)
        probe = dp.Heat(grid, kappa, source=source)
        steps, dt = _steps(probe, 0.2)
        model = dp.Heat(grid, kappa, dt=dt, source=source, scheme="rk4")
        u = dp.rollout(model, u_star, steps)[-1]
        errors.append(float(jnp.max(jnp.abs(u - u_star))))
        spacings.append(grid.spacing[0])
    assert abs(observed_order(spacings, errors) - 2.0) <= 0.3


def test_heat2d_side_data_varying_along_the_boundary():
    """Dirichlet data with one value per boundary cell: u = x (1 + y) is discretely harmonic inside.

    u is linear in x with the exact values 0 and 1 + y on the x-sides, and linear in y, so the
    discrete operator vanishes on every cell away from the zero-flux y-sides (where ∂u/∂y = x ≠ 0).
    """
    n = 12
    y = (jnp.arange(n) + 0.5) / n
    grid = dp.Grid2D(n, n, bc=((dp.Dirichlet(jnp.zeros(n)), dp.Dirichlet(1.0 + y)), "neumann"))
    X, Y = grid.coordinates
    model = dp.Heat(grid, 1.0)
    np.testing.assert_allclose(model.rhs(X * (1.0 + Y))[:, 1:-1], 0.0, atol=1e-10)
    with pytest.raises(ValueError, match=r"Dirichlet.value has shape \(5,\); it must be a scalar or an array of shape \(12,\)"):
        dp.Grid2D(n, n, bc=(dp.Dirichlet(jnp.zeros(5)), "neumann"))


@pytest.mark.parametrize("scheme, order", [("euler", 1), ("ssprk3", 3), ("rk4", 4)])
@pytest.mark.parametrize("ndim", [1, 2])
def test_heat_time_order_against_semi_discrete_exact(scheme, order, ndim):
    """On a fixed grid a Fourier mode decays exactly like exp(λ_h t): isolates the scheme's order."""
    n, kappa, t_end = 16, 1.0, 0.04
    grid = dp.Grid1D(n) if ndim == 1 else dp.Grid2D(n, n)
    h = 1.0 / n
    lam_1d = -kappa * 4.0 / h**2 * np.sin(np.pi * h) ** 2
    if ndim == 1:
        u0 = jnp.sin(2 * np.pi * grid.x)
    else:
        X, Y = grid.coordinates
        u0 = jnp.sin(2 * np.pi * X) * jnp.sin(2 * np.pi * Y)
    exact = u0 * np.exp(ndim * lam_1d * t_end)
    errors, dts = [], []
    probe = dp.Heat(grid, kappa, scheme=scheme)
    base = int(np.ceil(t_end / (0.8 * probe.max_stable_dt)))
    for steps in (base, 2 * base, 4 * base):
        model = dp.Heat(grid, kappa, dt=t_end / steps, scheme=scheme)
        u = dp.rollout(model, u0, steps)[-1]
        errors.append(float(jnp.max(jnp.abs(u - exact))))
        dts.append(t_end / steps)
    assert abs(observed_order(dts, errors) - order) <= 0.3


@pytest.mark.parametrize("bc", ["periodic", "neumann"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_heat_conserves_total_with_periodic_or_zero_flux(bc, ndim):
    grid = dp.Grid1D(40, bc=bc) if ndim == 1 else dp.Grid2D(24, 20, lengths=(1.0, 0.7), bc=bc)
    coords = grid.coordinates
    kappa = 0.5 + 0.4 * jnp.sin(3 * coords[0]) ** 2
    u0 = jnp.exp(-20 * sum((c - 0.4) ** 2 for c in coords)) + 0.1 * coords[0]
    model = dp.Heat(grid, kappa, scheme="ssprk3")
    traj = dp.rollout(model, u0, 2000, save_every=500)
    totals = np.array([float(model.total(u)) for u in traj])
    np.testing.assert_allclose(totals, totals[0], rtol=1e-12, atol=0)
    assert float(jnp.std(traj[-1])) < 0.5 * float(jnp.std(u0))  # it did diffuse


def test_heat_source_adds_its_integral():
    grid = dp.Grid1D(32, bc="neumann")
    source = 1.0 + jnp.cos(np.pi * grid.x)
    model = dp.Heat(grid, 0.2, dt=1e-3, source=source, scheme="rk4")
    u = dp.rollout(model, jnp.zeros(32), 100)[-1]
    np.testing.assert_allclose(float(model.total(u)), 0.1 * float(model.total(source)), rtol=1e-12)
