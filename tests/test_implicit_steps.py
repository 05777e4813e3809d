"""Implicit and IMEX steppers: order against analytic solutions, stability far beyond the explicit limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp


def _eigenmode(grid, bc):
    """An eigenvector of the discrete Laplacian for homogeneous ``bc`` and its eigenvalue (κ = 1)."""
    mode, eigenvalue = 1.0, 0.0
    lengths = (grid.length,) if grid.ndim == 1 else grid.lengths
    for x, h, length, k in zip(grid.coordinates, grid.spacing, lengths, (1, 2)):
        if bc == "periodic":
            mode = mode * jnp.sin(2 * jnp.pi * k * x / length)
            eigenvalue -= 4 / h**2 * np.sin(np.pi * k * h / length) ** 2
        elif bc == "dirichlet":
            mode = mode * jnp.sin(k * jnp.pi * x / length)
            eigenvalue -= 4 / h**2 * np.sin(k * np.pi * h / (2 * length)) ** 2
        else:
            mode = mode * jnp.cos(k * jnp.pi * x / length)
            eigenvalue -= 4 / h**2 * np.sin(k * np.pi * h / (2 * length)) ** 2
    return mode, eigenvalue


def _grid(ndim, bc):
    return dp.Grid1D(32, 1.0, bc=bc) if ndim == 1 else dp.Grid2D(16, 12, (1.0, 0.75), bc=bc)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("bc", ["periodic", "dirichlet", "neumann"])
@pytest.mark.parametrize("scheme, order", [("backward_euler", 1), ("crank_nicolson", 2)])
def test_heat_order_against_exact_eigenmode_decay(ndim, bc, scheme, order):
    """u(t) = exp(κλt) φ solves the semi-discrete heat equation exactly, so the error is the scheme's alone."""
    grid = _grid(ndim, bc)
    kappa, t_end = 0.02, 0.5
    mode, eigenvalue = _eigenmode(grid, bc)
    exact = np.exp(kappa * eigenvalue * t_end) * mode
    errors, steps = [], [4, 8, 16]
    for n in steps:
        model = dp.Heat(grid, kappa, dt=t_end / n, scheme=scheme)
        final = dp.rollout(model, mode, n)[-1]
        errors.append(float(jnp.max(jnp.abs(final - exact))))
    rate = observed_order([t_end / n for n in steps], errors)
    assert order - 0.1 <= rate <= order + 0.15, (rate, errors)


def test_heat_crank_nicolson_converges_to_the_pde_solution_at_second_order_in_space_and_time():
    """u = exp(-κπ²t) sin(πx) with u(0) = u(1) = 0, refining h and dt together (dt ∝ h)."""
    kappa, t_end, errors, spacings = 0.1, 0.5, [], []
    for n in (16, 32, 64):
        grid = dp.Grid1D(n, 1.0, bc="dirichlet")
        model = dp.Heat(grid, kappa, dt=t_end / n, scheme="crank_nicolson")
        final = dp.rollout(model, jnp.sin(jnp.pi * grid.x), n)[-1]
        errors.append(float(jnp.max(jnp.abs(final - np.exp(-kappa * np.pi**2 * t_end) * jnp.sin(jnp.pi * grid.x)))))
        spacings.append(grid.dx)
    assert observed_order(spacings, errors) >= 1.9, errors


@pytest.mark.parametrize("scheme, order", [("backward_euler", 1), ("crank_nicolson", 2)])
def test_heat_order_with_varying_kappa_inhomogeneous_bcs_and_source(scheme, order):
    """2D, κ(x, y) varying, Dirichlet/Neumann data and a source; reference: RK4 far below its stability limit."""
    grid = dp.Grid2D(12, 10, (1.0, 0.8), bc=((dp.Dirichlet(1.0), dp.Neumann(0.5)), ("periodic", "periodic")))
    x, y = grid.coordinates
    kappa = 0.05 * (1.0 + 0.5 * jnp.sin(2 * jnp.pi * x) * jnp.cos(2 * jnp.pi * y / 0.8))
    source = jnp.cos(3 * x)
    u0 = jnp.exp(-10 * ((x - 0.4) ** 2 + (y - 0.4) ** 2))
    t_end = 0.4
    explicit = dp.Heat(grid, kappa, source=source, scheme="rk4")
    n_ref = int(np.ceil(t_end / (explicit.max_stable_dt / 10)))
    reference = dp.rollout(dp.Heat(grid, kappa, source=source, dt=t_end / n_ref), u0, n_ref)[-1]
    errors, steps = [], [5, 10, 20]
    for n in steps:
        model = dp.Heat(grid, kappa, source=source, dt=t_end / n, scheme=scheme)
        errors.append(float(jnp.max(jnp.abs(dp.rollout(model, u0, n)[-1] - reference))))
    assert observed_order([t_end / n for n in steps], errors) >= order - 0.1, errors


@pytest.mark.parametrize("scheme", ["newmark", "crank_nicolson"])
def test_wave_implicit_order_against_exact_standing_wave(scheme):
    """u = cos(ωt) φ, v = -ω sin(ωt) φ with ω² = -c²λ is an exact semi-discrete solution."""
    grid = dp.Grid1D(32, 1.0, bc="dirichlet")
    speed, t_end = 1.0, 0.7  # not a multiple of the half period, where phase errors would cancel
    mode, eigenvalue = _eigenmode(grid, "dirichlet")
    omega = np.sqrt(-speed**2 * eigenvalue)
    errors, steps = [], [10, 20, 40]
    for n in steps:
        model = dp.Wave(grid, speed, dt=t_end / n, scheme=scheme)
        u, _ = dp.rollout(model, (mode, jnp.zeros_like(mode)), n)
        errors.append(float(jnp.max(jnp.abs(u[-1] - np.cos(omega * t_end) * mode))))
    rate = observed_order([t_end / n for n in steps], errors)
    assert 1.9 <= rate <= 2.15, (rate, errors)


def test_imex_advection_diffusion_third_order_against_exact_fourier_mode():
    """Periodic upwind advection + diffusion: a Fourier mode evolves by exp(λt), λ from both symbols."""
    n, length, v, kappa, k = 32, 1.0, 1.0, 0.05, 2
    grid = dp.Grid1D(n, length, bc="periodic")
    h, theta = grid.dx, 2 * np.pi * k * grid.dx / length
    lam = -(v / h) * (1 - np.exp(-1j * theta)) - 4 * kappa / h**2 * np.sin(theta / 2) ** 2
    phase = np.exp(2j * np.pi * k * np.asarray(grid.x) / length)
    t_end = 0.25
    exact = np.real(np.exp(lam * t_end) * phase)
    errors, steps = [], [12, 24, 48]
    for m in steps:
        model = dp.AdvectionDiffusion(grid, v, kappa, dt=t_end / m, reconstruction="upwind")
        final = dp.rollout(model, jnp.asarray(np.real(phase)), m)[-1]
        errors.append(float(jnp.max(jnp.abs(final - exact))))
    rate = observed_order([t_end / m for m in steps], errors)
    assert 2.85 <= rate <= 3.2, (rate, errors)


def test_nonlinear_heat_orders_by_self_convergence():
    """κ(u) = κ₀ e^{βu}: no closed form, so the reference is Crank–Nicolson with a 16x smaller step."""
    grid = dp.Grid1D(32, 1.0, bc=(dp.Dirichlet(0.0), dp.Neumann(0.0)))
    u0 = jnp.exp(-30 * (grid.x - 0.5) ** 2)
    t_end = 0.2

    def final(scheme, n):
        model = dp.NonlinearHeat(grid, 0.05, beta=1.5, dt=t_end / n, scheme=scheme)
        return dp.rollout(model, u0, n)[-1]

    reference = final("crank_nicolson", 320)
    for scheme, order in [("backward_euler", 1), ("crank_nicolson", 2)]:
        steps = [5, 10, 20]
        errors = [float(jnp.max(jnp.abs(final(scheme, n) - reference))) for n in steps]
        assert observed_order([t_end / n for n in steps], errors) >= order - 0.1, (scheme, errors)


def test_heat_implicit_stable_at_100x_the_explicit_limit():
    grid = dp.Grid2D(24, 24, (1.0, 1.0), bc="dirichlet")
    kappa = 0.5 + 0.4 * jnp.sin(3 * grid.coordinates[0])
    rough = jax.random.normal(jax.random.key(0), grid.shape)
    dt = 100 * dp.Heat(grid, kappa, scheme="euler").max_stable_dt
    be = dp.rollout(dp.Heat(grid, kappa, dt=dt, scheme="backward_euler"), rough, 20, save_every=1)
    # Backward Euler with homogeneous Dirichlet data is a discrete maximum principle: max|u| never grows.
    peaks = jnp.max(jnp.abs(be), axis=(1, 2))
    assert jnp.all(jnp.diff(peaks) <= 1e-12) and peaks[-1] < 0.5 * peaks[0]
    cn = dp.rollout(dp.Heat(grid, kappa, dt=dt, scheme="crank_nicolson"), rough, 20, save_every=1)
    norms = jnp.sqrt(jnp.sum(cn**2, axis=(1, 2)))
    assert jnp.all(jnp.diff(norms) <= 1e-10) and jnp.all(jnp.isfinite(cn))
    # The explicit scheme at that dt is refused, with the limit in the message.
    with pytest.raises(ValueError, match="largest stable dt"):
        dp.Heat(grid, kappa, dt=dt, scheme="rk4")


def test_wave_newmark_conserves_energy_at_100x_the_cfl_limit():
    grid = dp.Grid2D(16, 16, (1.0, 1.0), bc=("dirichlet", "neumann"))
    speed = 1.0 + 0.5 * jnp.sin(2 * grid.coordinates[0])
    dt = 100 * dp.Wave(grid, speed).max_stable_dt
    state = (jax.random.normal(jax.random.key(1), grid.shape), jnp.zeros(grid.shape))
    # Energy is conserved to the solver tolerance times the conditioning (ω dt ≈ 200 here).
    for rtol, bound in [(None, 1e-7), (1e-13, 1e-10)]:
        scheme = dp.Newmark(dp.Newton(linear_solver=dp.LinearSolver(rtol=rtol)))
        model = dp.Wave(grid, speed, dt=dt, scheme=scheme)
        u, v = dp.rollout(model, state, 30, save_every=1)
        energies = jnp.asarray([model.energy((u[i], v[i])) for i in range(u.shape[0])])
        assert jnp.max(jnp.abs(energies / model.energy(state) - 1)) < bound, rtol


def test_imex_dt_set_by_advection_not_diffusion():
    """IMEX takes the advective CFL step even where explicit diffusion would need a 100x smaller one."""
    grid = dp.Grid1D(64, 1.0, bc="periodic")
    model = dp.AdvectionDiffusion(grid, 1.0, 2.0)
    diffusion_limit = dp.Heat(grid, 2.0, scheme="ssprk3").max_stable_dt
    assert model.dt > 100 * diffusion_limit
    u0 = jnp.where(jnp.abs(grid.x - 0.5) < 0.2, 1.0, 0.0)
    out = dp.rollout(model, u0, 40, save_every=1)
    assert jnp.all(jnp.isfinite(out)) and jnp.max(jnp.abs(out)) <= 1.0 + 1e-6
    assert abs(float(model.total(out[-1]) - model.total(u0))) < 1e-12  # conservative


def test_heat_implicit_conserves_mass_with_zero_flux():
    grid = dp.Grid2D(12, 12, (1.0, 1.0), bc="neumann")
    kappa = 0.3 + 0.2 * jnp.cos(4 * grid.coordinates[1])
    u0 = jax.random.uniform(jax.random.key(2), grid.shape)
    for scheme in ("backward_euler", "crank_nicolson"):
        model = dp.Heat(grid, kappa, dt=0.05, scheme=scheme)
        assert abs(float(model.total(dp.rollout(model, u0, 10)[-1]) - model.total(u0))) < 1e-10


def test_jacobi_preconditioner_cuts_iterations_for_strongly_varying_kappa():
    grid = dp.Grid2D(32, 32, (1.0, 1.0), bc="dirichlet")
    x, y = grid.coordinates
    kappa = 10 ** (3 * (x > 0.5))  # a 1000x jump
    u0 = jnp.sin(jnp.pi * x) * jnp.sin(jnp.pi * y)

    def solve(preconditioner):
        scheme = dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(preconditioner=preconditioner)))
        model = dp.Heat(grid, kappa, dt=1e-3, scheme=scheme)
        return model.scheme.solve_step(model, u0, model.dt)

    plain, jacobi = solve(None), solve("jacobi")
    assert plain.result == dp.RESULTS.successful and jacobi.result == dp.RESULTS.successful
    assert int(jacobi.stats["num_steps"]) < 0.5 * int(plain.stats["num_steps"]), (plain.stats, jacobi.stats)
    assert jnp.max(jnp.abs(plain.value - jacobi.value)) < 1e-8
