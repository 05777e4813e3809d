"""The implicit-differentiation building block, failure reporting, and the errors of implicit schemes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp


def _cubic(x, theta):
    """F(x, θ) = x³ + x - θ, strictly monotone: one root, dx/dθ = 1 / (3x² + 1)."""
    return x**3 + x - theta


def test_solve_root_derivative_matches_the_implicit_function_theorem_formula():
    theta = jnp.linspace(-2.0, 3.0, 7)
    solution = dp.solve_root(_cubic, jnp.zeros(7), theta)
    x = solution.value
    assert solution.result == dp.RESULTS.successful
    assert jnp.max(jnp.abs(_cubic(x, theta))) < 1e-12
    jac = jax.jacrev(lambda t: dp.solve_root(_cubic, jnp.zeros(7), t).value)(theta)
    assert jnp.allclose(jac, jnp.diag(1 / (3 * x**2 + 1)), rtol=1e-10, atol=1e-12)
    # Forward mode, column by column (jvp under vmap).
    push = lambda v: jax.jvp(lambda t: dp.solve_root(_cubic, jnp.zeros(7), t).value, (theta,), (v,))[1]
    assert jnp.allclose(jax.vmap(push)(jnp.eye(7)).T, jac, rtol=1e-10, atol=1e-12)


def test_solve_root_differentiates_arrays_the_residual_closes_over():
    a = jnp.asarray([0.5, 1.0, 2.0])

    def root(a, theta):
        return dp.solve_root(lambda x, t: a * x**3 + x - t, jnp.zeros(3), theta).value

    x = root(a, 1.0)
    # d/da of the root of a x³ + x - θ = 0: -x³ / (3 a x² + 1).
    assert jnp.allclose(jax.jacrev(root)(a, 1.0), jnp.diag(-(x**3) / (3 * a * x**2 + 1)), rtol=1e-9, atol=1e-12)
    assert dp.check.dot_product_test(lambda a: root(a, 1.0), a).relative_error < 1e-12
    assert dp.check.taylor_test(lambda a: jnp.sum(root(a, 1.0) ** 2), a).rate >= 1.9


def test_implicit_solution_attaches_derivatives_to_any_solver():
    """The solution comes from a closed form evaluated without derivatives; the IFT supplies them."""
    theta = jnp.asarray([0.5, 2.0, 4.0])
    solution = jax.lax.stop_gradient(jnp.sqrt(theta))
    grad = jax.grad(lambda t: jnp.sum(dp.implicit_solution(lambda x, t: x**2 - t, jnp.sqrt(t), t)))(theta)
    assert jnp.allclose(grad, 0.5 / solution, rtol=1e-10)


def test_implicit_solution_on_a_pytree_state_with_spd_cg():
    """x = (A + I)^{-1} θ for SPD A, written as a root problem over a tuple state."""
    a = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])

    def residual(x, theta):
        u, v = x
        return u + a @ u - theta[0], 3 * v - theta[1]

    theta = (jnp.asarray([1.0, 2.0]), jnp.asarray([3.0, 6.0]))
    u, v = dp.solve_root(residual, (jnp.zeros(2), jnp.zeros(2)), theta, spd=True, linear=True).value
    assert jnp.allclose(u, jnp.linalg.solve(a + jnp.eye(2), theta[0]), atol=1e-10) and jnp.allclose(v, theta[1] / 3)
    grad_u = jax.grad(lambda t: jnp.sum(dp.solve_root(residual, (jnp.zeros(2),) * 2, t, spd=True, linear=True).value[0]))(theta)
    assert jnp.allclose(grad_u[0], jnp.linalg.solve((a + jnp.eye(2)).T, jnp.ones(2)), atol=1e-10)


def test_fixed_point_derivative_equals_formula_and_unrolled_iteration():
    """x = ½cos(x) + θ (a contraction): dx/dθ = 1 / (1 + ½ sin x)."""
    fn = lambda x, t: 0.5 * jnp.cos(x) + t
    theta = jnp.asarray([0.0, 0.3, 1.0])
    solution = dp.solve_fixed_point(fn, jnp.zeros(3), theta)
    x = solution.value
    assert solution.result == dp.RESULTS.successful and int(solution.stats["num_steps"]) > 10
    grad = jax.grad(lambda t: jnp.sum(dp.solve_fixed_point(fn, jnp.zeros(3), t).value))(theta)
    assert jnp.allclose(grad, 1 / (1 + 0.5 * jnp.sin(x)), rtol=1e-9)

    def unrolled(t):
        return jnp.sum(jax.lax.fori_loop(0, 200, lambda _, y: fn(y, t), jnp.zeros(3)))

    assert jnp.allclose(grad, jax.grad(unrolled)(theta), rtol=1e-8)


def test_solve_root_under_jit_and_vmap():
    thetas = jnp.linspace(0.0, 5.0, 12).reshape(4, 3)
    solve = eqx.filter_jit(jax.vmap(lambda t: dp.solve_root(_cubic, jnp.zeros(3), t).value))
    xs = solve(thetas)
    assert jnp.max(jnp.abs(_cubic(xs, thetas))) < 1e-12


# --- failure is reported, never silent ------------------------------------------------------------


def _heat_be(throw=True, **linear):
    grid = dp.Grid2D(24, 24, (1.0, 1.0), bc="dirichlet")
    scheme = dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(**linear), throw=throw))
    return dp.Heat(grid, 1.0, dt=0.1, scheme=scheme), jnp.sin(jnp.pi * grid.coordinates[0])


def test_linear_solve_that_runs_out_of_iterations_raises_naming_the_residual_reached():
    model, u0 = _heat_be(max_steps=3)
    with pytest.raises(Exception, match=r"did not converge within 3 iterations: relative residual reached between 1e-\d+ and 1e-?\d+, asked rtol=1e-10; increase max_steps"):
        jax.block_until_ready(model.step(u0))


def test_throw_false_returns_the_result_code_instead():
    model, u0 = _heat_be(max_steps=3, throw=False)
    step = model.scheme.solve_step(model, u0, model.dt)
    assert step.result == dp.RESULTS.max_steps_reached and not bool(step.converged)
    assert int(step.stats["num_steps"]) == 3 and 1e-10 < float(step.stats["residual"]) < 1.0
    assert jnp.all(jnp.isfinite(step.value))
    model, u0 = _heat_be()
    step = model.scheme.solve_step(model, u0, model.dt)
    assert step.result == dp.RESULTS.successful and float(step.stats["residual"]) < 1e-9


def test_a_step_called_from_python_is_one_program_and_a_repeat_compiles_nothing():
    """solve_step and model.step from Python compile the step once (op by op, a step compiled ~100 programs)."""
    from diffphys._compile_monitor import CompileMonitor

    model, u0 = _heat_be(throw=False)
    u0 = jax.block_until_ready(u0)
    with CompileMonitor() as first:
        step = model.scheme.solve_step(model, u0, model.dt)
    with CompileMonitor() as again:
        repeat = model.scheme.solve_step(model, u0, model.dt)
    assert first.programs <= 1 and again.programs == 0
    np.testing.assert_array_equal(repeat.value, step.value)
    np.testing.assert_array_equal(jax.block_until_ready(model.step(u0)), step.value)  # step is solve_step's value


def test_newton_that_does_not_converge_raises_and_reports_with_throw_false():
    grid = dp.Grid1D(32, bc="dirichlet")
    u0 = 2.0 * jnp.sin(jnp.pi * grid.x)
    strict = dp.NonlinearHeat(grid, 0.5, beta=2.0, dt=0.1, scheme=dp.BackwardEuler(dp.Newton(max_steps=1)))
    with pytest.raises(Exception, match="NonlinearHeat backward-Euler step did not converge within 1 iterations"):
        jax.block_until_ready(strict.step(u0))
    lenient = dp.NonlinearHeat(grid, 0.5, beta=2.0, dt=0.1, scheme=dp.BackwardEuler(dp.Newton(max_steps=1, throw=False)))
    step = lenient.scheme.solve_step(lenient, u0, lenient.dt)
    assert step.result == dp.RESULTS.max_steps_reached and int(step.stats["num_steps"]) == 1
    step = dp.NonlinearHeat(grid, 0.5, beta=2.0, dt=0.1).scheme.solve_step(strict, u0, 0.1)
    assert step.result == dp.RESULTS.successful and 1 < int(step.stats["num_steps"]) < 10


def test_nonfinite_input_is_reported_as_nonfinite():
    model, u0 = _heat_be(throw=False)
    step = model.scheme.solve_step(model, u0.at[3, 4].set(jnp.nan), model.dt)
    assert step.result == dp.RESULTS.nonfinite
    strict, _ = _heat_be()
    with pytest.raises(Exception, match="not finite"):
        jax.block_until_ready(strict.step(u0.at[3, 4].set(jnp.nan)))


def test_failed_adjoint_solve_also_raises():
    """The transposed solve of reverse mode has the same budget and the same error."""
    grid = dp.Grid1D(64, bc="dirichlet")
    u0 = jnp.sin(jnp.pi * grid.x)
    # Forward solve of a smooth mode converges in few iterations; the adjoint of a rough
    # cotangent needs many more than 12.
    scheme = dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(max_steps=12)))
    loss = lambda k: jnp.sum(jnp.sign(jnp.sin(40 * grid.x)) * dp.Heat(grid, k, dt=1.0, scheme=scheme).step(u0))
    step = dp.Heat(grid, 1.0, dt=1.0, scheme=dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(max_steps=12, throw=False)))).scheme.solve_step(
        dp.Heat(grid, 1.0, dt=1.0, scheme=scheme), u0, 1.0
    )
    assert step.result == dp.RESULTS.successful  # the forward solve is fine
    with pytest.raises(Exception, match=r"\(transposed, for the derivative\) did not converge"):
        jax.block_until_ready(jax.grad(loss)(jnp.ones(64)))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "lu"}, r"unknown method 'lu'; valid are \['auto', 'cg', 'gmres', 'bicgstab'\]"),
        ({"rtol": 2.0}, r"rtol must be in \(0, 1\) or None, got 2.0"),
        ({"atol": -1.0}, r"atol must be a number >= 0, got -1.0"),
        ({"max_steps": 0}, r"max_steps must be a positive integer, got 0"),
        ({"preconditioner": "ilu"}, r"unknown preconditioner 'ilu'; valid are \[None, 'jacobi'\]"),
    ],
)
def test_linear_solver_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dp.LinearSolver(**kwargs)


def test_newton_rejects_bad_settings():
    with pytest.raises(ValueError, match="Newton: max_steps must be a positive integer, got 0"):
        dp.Newton(max_steps=0)
    with pytest.raises(TypeError, match="linear_solver must be a LinearSolver, got str"):
        dp.Newton(linear_solver="cg")


def test_implicit_scheme_needs_an_explicit_dt():
    with pytest.raises(ValueError, match="'backward_euler' is unconditionally stable.*pass dt"):
        dp.Heat(dp.Grid1D(16), 1.0, scheme="backward_euler")


def test_scheme_model_mismatches_are_refused_with_the_valid_schemes():
    grid = dp.Grid1D(16)
    with pytest.raises(ValueError, match=r"'newmark' needs model.acceleration, which Heat does not have; use one of \[.*'crank_nicolson'"):
        dp.Heat(grid, 1.0, dt=0.1, scheme="newmark")
    with pytest.raises(ValueError, match="NonlinearHeat: scheme 'rk4' is explicit"):
        dp.NonlinearHeat(grid, 1.0, dt=0.1, scheme="rk4")
    with pytest.raises(ValueError, match="AdvectionDiffusion: scheme 'ssprk3' is explicit; use 'imex_ars443'"):
        dp.AdvectionDiffusion(grid, 1.0, 0.1, scheme="ssprk3")
    with pytest.raises(ValueError, match="unknown time scheme 'bdf2'; valid are .*'backward_euler'.*'newmark'"):
        dp.Heat(grid, 1.0, dt=0.1, scheme="bdf2")


def test_jacobi_needs_a_diagonal_and_cg_needs_spd():
    grid = dp.Grid1D(16)
    jacobi = dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(preconditioner="jacobi")))
    model = dp.Advection(grid, 1.0, dt=0.1, reconstruction="upwind", scheme=jacobi)
    with pytest.raises(ValueError, match="Advection does not provide the diagonal of ∂rhs/∂y"):
        model.step(jnp.ones(16))
    cg = dp.CrankNicolson(dp.Newton(linear_solver=dp.LinearSolver(method="cg")))
    wave = dp.Wave(grid, 1.0, dt=0.1, scheme=cg)
    with pytest.raises(ValueError, match="method 'cg' needs a symmetric positive definite operator"):
        wave.step((jnp.ones(16), jnp.zeros(16)))


def test_nonlinear_heat_rejects_a_non_scalar_beta_and_negative_kappa():
    grid = dp.Grid1D(16)
    with pytest.raises(ValueError, match="beta must be a scalar, got shape"):
        dp.NonlinearHeat(grid, 1.0, beta=np.ones(3), dt=0.1)
    with pytest.raises(ValueError, match="kappa"):
        dp.NonlinearHeat(grid, -1.0, dt=0.1)
