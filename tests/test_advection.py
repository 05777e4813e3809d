"""Advection: convergence orders against the translated profile, time orders, mass conservation, boundaries, and
WENO5's upwind side (per face, or fixed per axis at construction)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp
from diffphys import assimilate as da


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


@pytest.mark.parametrize("velocity, side", [(lambda x: np.sin(2 * np.pi * x + 0.3), 0),
                                             (lambda x: 1.0 + 0.5 * np.sin(2 * np.pi * x), 1),
                                             (lambda x: -0.7 + 0.2 * np.cos(2 * np.pi * x), -1)],
                         ids=["sign-changing", "positive", "negative"])
def test_weno5_flux_takes_each_face_from_its_upwind_side(velocity, side):
    # Faces with v > 0 reconstruct from the left, the others from the right: chosen per face when the velocity
    # changes sign, fixed for the axis at construction (no per-face choice) when it does not. An independent
    # NumPy WENO-Z on a periodic grid, F = v u_upwind, (F_{i+1/2} - F_{i-1/2}) / h.
    n = 40
    grid = dp.Grid1D(n)
    x = np.asarray(grid.x)
    u = np.exp(-40 * (x - 0.3) ** 2) + 0.5 * (x > 0.6)
    v_cells = velocity(x)
    v_face = 0.5 * (v_cells + np.roll(v_cells, -1))  # face i + 1/2
    cell = lambda k: np.roll(u, -k)  # u_{i+k}
    left = _weno5z_numpy(cell(-2), cell(-1), cell(0), cell(1), cell(2))
    right = _weno5z_numpy(cell(3), cell(2), cell(1), cell(0), cell(-1))
    flux = v_face * np.where(v_face > 0, left, right)
    expected = -(flux - np.roll(flux, 1)) / grid.spacing[0]
    model = dp.Advection(grid, v_cells)
    assert model._upwind == (side,)
    assert (np.any(v_face > 0) and np.any(v_face < 0)) == (side == 0)
    np.testing.assert_allclose(model.rhs(jnp.asarray(u)), expected, rtol=1e-12, atol=1e-12 * np.max(np.abs(expected)))


def test_upwind_sides_are_found_per_axis_from_the_face_velocities():
    grid = dp.Grid2D(12, 10)
    assert dp.Advection(grid, (1.0, -0.5))._upwind == (1, -1)
    assert dp.Advection(grid, (1.0, 0.0))._upwind == (1, 0)  # a zero face velocity: chosen per face
    x, _ = grid.coordinates
    assert dp.Advection(grid, (np.asarray(x) - 0.5, 1.0))._upwind == (0, 1)
    assert dp.Advection(grid, (1.0, 0.5), reconstruction="upwind")._upwind == (0, 0)  # first order makes no choice
    assert dp.AdvectionDiffusion(grid, (-1.0, 0.5), 0.01)._upwind == (-1, 1)
    # non-periodic: the boundary face's velocity is extrapolated, (3 v_0 - v_1) / 2 < 0 although every cell's is > 0
    line = dp.Grid1D(16, 1.0, bc=(dp.Dirichlet(0.0), dp.Neumann(0.0)))
    assert dp.Advection(line, np.linspace(0.05, 3.0, 16))._upwind == (0,)
    assert dp.Advection(line, np.linspace(0.5, 1.0, 16))._upwind == (1,)
    # a traced velocity (a model built inside jit) has no side: each face chooses at run time
    sides = jax.jit(lambda v: jnp.asarray(dp.Advection(grid, v, dt=0.01)._upwind))(jnp.ones((2, 12, 10)))
    np.testing.assert_array_equal(sides, [0, 0])


def _one_sided_and_per_face(model, u0, n_steps):
    """Forward, gradient in u0 and in the velocity of a rollout loss: the model as built (a side fixed per axis)
    and the same model built inside the trace, whose faces choose their side at run time; one program each."""
    def loss(make):
        return lambda v, u: jnp.sum(jnp.sin(dp.rollout(make(v), u, n_steps)) ** 2)

    fixed = loss(lambda v: eqx.tree_at(lambda m: m.velocity, model, v))
    per_face = loss(lambda v: type(model)(**{**model._construction_arguments(), "velocity": v}))
    return [jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(model.velocity, u0) for f in (fixed, per_face)]


@pytest.mark.parametrize("case", ["1d-periodic", "1d-inflow-left", "1d-inflow-right", "2d-periodic"])
def test_one_sided_weno_windows_give_the_per_face_values_and_derivatives(case):
    """The windows taken from a side fixed at construction are the ones the per-face choice takes: the same
    rollout (to round-off: the compiled kernels differ) and the same gradients in u0 and in the velocity."""
    if case.startswith("1d"):
        inflow_left = case != "1d-inflow-right"
        bc = "periodic" if case == "1d-periodic" else (
            (dp.Dirichlet(0.2), dp.Neumann(0.0)) if inflow_left else (dp.Neumann(0.0), dp.Dirichlet(0.2)))
        grid = dp.Grid1D(24, 1.0, bc=bc)
        x = np.asarray(grid.x)
        speed = 1.0 + 0.3 * np.sin(2 * np.pi * x)
        model = dp.Advection(grid, speed if inflow_left else -speed)
        u0 = jnp.asarray(0.2 + np.exp(-60 * (x - 0.5) ** 2))
    else:
        grid = dp.Grid2D(16, 12)
        x, y = (np.asarray(c) for c in grid.coordinates)
        model = dp.Advection(grid, (1.0 + 0.2 * np.cos(2 * np.pi * y), -0.6))
        u0 = jnp.asarray(np.exp(-30 * ((x - 0.4) ** 2 + (y - 0.5) ** 2)))
    assert 0 not in model._upwind
    (value, grads), (reference, reference_grads) = _one_sided_and_per_face(model, u0, 6)
    np.testing.assert_allclose(value, reference, rtol=1e-13)
    for g, r in zip(grads, reference_grads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(r))))


def test_a_velocity_replaced_against_its_side_is_reported_not_used():
    """The side is static: a velocity set with eqx.tree_at that contradicts it makes the faces NaN, so a rollout
    raises instead of reconstructing from the wrong side; model.checked() rebuilds the model with the new side."""
    grid = dp.Grid1D(24)
    model = dp.Advection(grid, 1.0)
    u0 = jnp.exp(-60 * (grid.x - 0.5) ** 2)
    flipped = eqx.tree_at(lambda m: m.velocity, model, -model.velocity)
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        dp.rollout(flipped, u0, 3)
    assert bool(jnp.all(jnp.isnan(dp.rollout(flipped, u0, 3, check_finite=False))))
    rebuilt = flipped.checked()
    assert rebuilt._upwind == (-1,)
    np.testing.assert_array_equal(dp.rollout(rebuilt, u0, 3), dp.rollout(dp.Advection(grid, -1.0), u0, 3))


def test_a_velocity_control_rebuilds_the_side():
    """4D-Var's Parameter control rebuilds an advection model it sets the velocity of: the side of a concrete
    velocity is found again, and a traced one (inside a solve, where it may change sign) leaves it to each face."""
    grid = dp.Grid1D(24)
    model = dp.Advection(grid, 1.0)
    control = da.Parameter("velocity", jnp.zeros(24), transform="identity")
    assert control.with_value(model, -model.velocity)[0]._upwind == (-1,)
    sides = jax.jit(lambda v: jnp.asarray(control.with_value(model, v)[0]._upwind))(model.velocity)
    np.testing.assert_array_equal(sides, [0])
