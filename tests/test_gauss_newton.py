"""Gauss–Newton / Levenberg–Marquardt 4D-Var: exactness on a linear-Gaussian problem, monotone decrease,
implicit-function-theorem hypergradients against unrolled ones and finite differences, joint
state–parameter inference, weak constraint, and bad input (the unrolled solver's training: test_learn_unrolled.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import learn as dl
from diffphys import observe as ob

GRID = dp.Grid1D(24, 1.0, bc="neumann")
MODEL = dp.Heat(GRID, 0.02, dt=1e-3)
TRUTH = jnp.exp(-((GRID.x - 0.4) ** 2) / 0.01)
SENSORS = ob.PointSensors(GRID, [0.1, 0.25, 0.45, 0.7, 0.9])
SCHEDULE = ob.ObservationSchedule.from_steps([4, 11, 13, 30], SENSORS, dt=MODEL.dt)
B = ob.DiffusionB(GRID, 0.5, 0.1)
TIGHT = dp.LinearSolver(method="cg", rtol=1e-13, max_steps=200, throw=False)
KAPPA_TRUE = 0.02 * jnp.exp(0.4 * jnp.sin(2 * jnp.pi * GRID.x))
U0 = jnp.cos(jnp.pi * GRID.x) + 0.5 * jnp.cos(3 * jnp.pi * GRID.x)
KAPPA_SCHEDULE = ob.ObservationSchedule.from_steps([10, 20, 30], ob.subsample(GRID, 2), dt=1e-3)
GN = dp.solvers.GaussNewton(inner=dp.LinearSolver(method="cg", rtol=1e-10, max_steps=100, throw=False))
CONVERGE = dp.solvers.Converged(rtol=1e-11, max_steps=40)


def _state_problem(key=0, sigma=0.05):
    twin = ob.twin_experiment(MODEL, TRUTH, SCHEDULE, sigma, jax.random.key(key), background=B)
    return da.StrongConstraint4DVar(MODEL, SCHEDULE, twin.observations, twin.R, B, twin.background), twin


def _kappa_problem(kappa_background=0.02, sigma=0.002):
    model = dp.Heat(GRID, KAPPA_TRUE, dt=1e-3)
    twin = ob.twin_experiment(model, U0, KAPPA_SCHEDULE, sigma, jax.random.key(1))
    control = da.Parameter("kappa", U0, transform="log")
    background = control.to_control(jnp.full(GRID.shape, kappa_background))
    return da.StrongConstraint4DVar(model, KAPPA_SCHEDULE, twin.observations, ob.DiagonalR(sigma),
                                    ob.DiffusionB(GRID, 0.5, 0.15), background, control)


def _relative(a, b):
    return float(jnp.linalg.norm(jnp.ravel(a - b)) / jnp.linalg.norm(jnp.ravel(b)))


def test_one_gauss_newton_iteration_is_the_exact_posterior_mean_of_a_linear_gaussian_problem():
    problem, twin = _state_problem()
    # Independent dense formula in observation space: x_a = x_b + B Gᵀ (G B Gᵀ + R)⁻¹ (y - G x_b),
    # G = H∘M (the heat model is linear), B = B^{1/2} B^{T/2} formed densely.
    x_b = twin.background

    def observe(x0):
        return SCHEDULE.observe(dp.rollout(MODEL, x0, SCHEDULE.n_steps, save_at=SCHEDULE.steps))

    @jax.jit  # one compiled program (op by op, the Jacobians compiled ~80 small ones)
    def dense(x_b):
        return jax.jacfwd(B.sqrt)(jnp.zeros(GRID.shape)), jax.jacfwd(observe)(x_b), observe(x_b)

    sqrt_b, g, observed = dense(x_b)
    b_dense = sqrt_b @ sqrt_b.T
    innovation = twin.observations - observed
    x_a = x_b + b_dense @ g.T @ np.linalg.solve(g @ b_dense @ g.T + 0.05**2 * np.eye(g.shape[0]), innovation)

    solver = dp.solvers.GaussNewton(globalization="line_search", inner=TIGHT)
    result = da.gauss_newton(problem, solver=solver, mode=dp.solvers.Converged(max_steps=1), throw=False)
    assert result.num_steps == 1
    assert _relative(problem.initial_state(result.value), x_a) <= 1e-8
    assert _relative(x_a, TRUTH) < _relative(x_b, TRUTH)  # the posterior mean is closer to the truth


def _monotone(costs) -> bool:
    """Non-increasing to the cost's round-off (64 eps |cost|): below it Gauss–Newton judges a step by the gradient."""
    return bool(np.all(np.diff(costs) <= 64 * np.finfo(float).eps * np.abs(costs[:-1])))


def test_levenberg_marquardt_decreases_the_cost_monotonically_on_a_nonlinear_problem_and_recovers_kappa():
    problem = _kappa_problem(kappa_background=0.05)  # 2.5x off: strongly nonlinear in log(kappa)
    lines = []
    result = da.gauss_newton(problem, solver=GN, mode=CONVERGE, progress=lambda k, records: lines.append((k, records)))
    history = result.history()
    assert result.outcome == "successful" and bool(result.converged)
    assert _monotone(history["cost"]) and history["cost"][-1] < 0.05 * history["cost"][0]
    assert history["gradient_norm"][-1] <= 1e-11 * history["gradient_norm"][0]
    assert [line[0] for line in lines] == list(range(result.num_steps + 1))
    np.testing.assert_allclose([line[1]["cost"] for line in lines], history["cost"], rtol=1e-15)
    # Record 0 is the starting point (no inner solve yet); every iteration ran CG.
    assert np.all(history["inner_iterations"][1:] >= 1) and np.all(history["damping"] > 0)
    # The twin experiment recovers the diffusivity field: within 6% where the background was 150% off.
    estimate = problem.model_for(result.value).kappa
    assert _relative(estimate, KAPPA_TRUE) < 0.06
    assert _relative(jnp.full(GRID.shape, 0.05), KAPPA_TRUE) > 1.3


def test_line_search_gauss_newton_reaches_the_same_analysis():
    problem = _kappa_problem()
    lm = da.gauss_newton(problem, solver=GN, mode=CONVERGE)
    ls = da.gauss_newton(problem, solver=eqx.tree_at(lambda s: s.globalization, GN, "line_search"), mode=CONVERGE)
    assert ls.outcome == "successful" and _monotone(ls.history()["cost"])
    np.testing.assert_allclose(ls.value, lm.value, rtol=1e-7, atol=1e-9)


def _hyper_loss(sigma, observations, solve):
    base = _kappa_problem()
    problem = eqx.tree_at(lambda p: (p.R.sigma, p.observations), base, (sigma, observations))
    v = solve(problem)
    return jnp.sum((problem.model_for(v).kappa - KAPPA_TRUE) ** 2) / jnp.sum(KAPPA_TRUE**2)


def _converged(problem):
    return da.gauss_newton(problem, solver=GN, mode=CONVERGE).value


UNROLLED = dl.UnrolledSolver(dp.solvers.GaussNewton(globalization="none", damping=1e-12, inner=dp.LinearSolver(
    method="cg", rtol=1e-12, max_steps=100, throw=False)), 12)


def _central(f, step):
    """Fourth-order central difference of a scalar function of t at t = 0."""
    return (-f(2 * step) + 8 * f(step) - 8 * f(-step) + f(-2 * step)) / (12 * step)


def test_implicit_hypergradient_equals_the_unrolled_gradient_and_finite_differences():
    base = _kappa_problem()
    sigma, y = base.R.sigma, base.observations
    dy = jax.random.normal(jax.random.key(5), y.shape) * 0.002
    # At convergence the unrolled solver (12 plain Gauss-Newton layers) and the converged one agree...
    np.testing.assert_allclose(_converged(base), UNROLLED(base), rtol=1e-8, atol=1e-10)
    # ...and so do their derivatives: implicit function theorem vs backpropagation through the layers. Each
    # loss and its gradient are one compiled program, whose values give the finite differences below.
    ift = jax.jit(jax.value_and_grad(lambda s, obs: _hyper_loss(s, obs, _converged), argnums=(0, 1)))
    unrolled = jax.jit(jax.value_and_grad(lambda s, obs: _hyper_loss(s, obs, UNROLLED), argnums=(0, 1)))
    grad_ift, grad_unrolled = ift(sigma, y)[1], unrolled(sigma, y)[1]
    for a, b in zip(grad_ift, grad_unrolled):
        assert _relative(a, b) <= 1e-6
    # Finite differences of the unrolled solver, a smooth function (the converged solver's stopping
    # test makes its output move in steps of its tolerance, which swamps differences below ~1e-5).
    fd_sigma = _central(lambda t: unrolled(sigma * (1 + t), y)[0], 1e-3) / sigma
    fd_y = _central(lambda t: unrolled(sigma, y + t * dy)[0], 1e-3)
    for grad in (grad_ift, grad_unrolled):
        np.testing.assert_allclose(grad[0], fd_sigma, rtol=1e-6)
        np.testing.assert_allclose(jnp.vdot(grad[1], dy), fd_y, rtol=1e-6)
    converged = _central(lambda t: ift(sigma, y + t * dy)[0], 3e-3)
    np.testing.assert_allclose(jnp.vdot(grad_ift[1], dy), converged, rtol=1e-5)


def test_implicit_hypergradient_passes_the_taylor_test():
    base = _kappa_problem()
    result = dp.check.taylor_test(lambda y: _hyper_loss(base.R.sigma, y, _converged), base.observations, eps0=1e-2)
    assert result.rate >= 1.9


def test_joint_state_and_diffusivity_inference():
    model = dp.Heat(GRID, KAPPA_TRUE, dt=1e-3)
    schedule = ob.ObservationSchedule.from_steps([0, 10, 20, 30], ob.subsample(GRID, 2), dt=1e-3)
    twin = ob.twin_experiment(model, U0, schedule, 0.002, jax.random.key(2))
    control = da.Joint(da.InitialState(), da.Parameter("kappa", transform="log"))
    state_b = U0 + 0.1 * jnp.sin(5 * GRID.x)
    background = (state_b, jnp.log(jnp.full(GRID.shape, 0.02)))
    covariances = (ob.DiffusionB(GRID, 0.2, 0.1), ob.DiffusionB(GRID, 0.5, 0.15))
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations, ob.DiagonalR(0.002), covariances,
                                       background, control)
    assert dp.check.dot_product_test(problem.residuals, problem.zero_control()).relative_error <= 1e-12
    result = da.gauss_newton(problem, solver=GN, mode=CONVERGE)
    assert result.outcome == "successful"
    # The state error drops 10x (from 9%) and the diffusivity error from 28% to below 8%.
    assert _relative(problem.initial_state(result.value), U0) < 0.1 * _relative(state_b, U0)
    assert _relative(jnp.full(GRID.shape, 0.02), KAPPA_TRUE) > 0.25
    assert _relative(problem.model_for(result.value).kappa, KAPPA_TRUE) < 0.08


def _model_error_problems():
    """Truth with a source the model lacks; dense sensors observe it at 10 times."""
    source = 2.0 * jnp.sin(2 * jnp.pi * GRID.x)
    truth_model = dp.Heat(GRID, 0.02, dt=1e-3, source=source)
    sensors = ob.subsample(GRID, 3)
    schedule = ob.ObservationSchedule.from_steps(list(range(5, 55, 5)), sensors, dt=1e-3)
    twin = ob.twin_experiment(truth_model, TRUTH, schedule, 0.01, jax.random.key(7), background=B)
    truth_states = dp.rollout(truth_model, TRUTH, schedule.n_steps, save_every=1)
    strong = da.StrongConstraint4DVar(MODEL, schedule, twin.observations, twin.R, B, twin.background)
    weak = da.WeakConstraint4DVar(MODEL, schedule, twin.observations, twin.R, B, twin.background,
                                  ob.DiffusionB(GRID, 2e-3, 0.1), forcing_every=5)
    return strong, weak, truth_states


def test_weak_constraint_derivatives_pass_the_dot_product_and_taylor_tests():
    _, weak, _ = _model_error_problems()
    v = jax.tree_util.tree_map(lambda z: 0.3 * jax.random.normal(jax.random.key(3), z.shape), weak.zero_control())
    assert dp.check.dot_product_test(weak.residuals, v).relative_error <= 1e-12
    assert dp.check.taylor_test(weak.cost, v).rate >= 1.9
    assert weak.n_blocks == 10 and weak.forcing(v).shape == (10, *GRID.shape)


def test_weak_constraint_beats_strong_constraint_when_the_model_is_wrong():
    strong, weak, truth_states = _model_error_problems()
    a_strong = da.gauss_newton(strong, solver=GN, mode=CONVERGE)
    a_weak = da.gauss_newton(weak, solver=GN, mode=CONVERGE)
    assert a_strong.outcome == a_weak.outcome == "successful"
    states_strong = dp.rollout(MODEL, strong.initial_state(a_strong.value), strong.schedule.n_steps, save_every=1)
    states_weak = weak.states(a_weak.value)
    # Over the window the weak-constraint analysis is ~40% closer to the truth, at every step.
    err_strong, err_weak = _relative(states_strong, truth_states), _relative(states_weak, truth_states)
    assert err_weak < 0.7 * err_strong
    per_step = [jnp.linalg.norm(s - truth_states, axis=1) for s in (states_strong, states_weak)]
    assert np.all(per_step[1] < per_step[0])
    # With a vanishing Q the weak formulation is the strong one.
    tiny = eqx.tree_at(lambda p: p.Q, weak, ob.DiffusionB(GRID, 1e-9, 0.1))
    a_tiny = da.gauss_newton(tiny, solver=GN, mode=CONVERGE)
    np.testing.assert_allclose(tiny.initial_state(a_tiny.value), strong.initial_state(a_strong.value), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: dp.solvers.GaussNewton(globalization="newton"), ValueError, "unknown globalization 'newton'"),
        (lambda: dp.solvers.Converged(max_steps=0), ValueError, "max_steps must be an integer >= 1, got 0"),
        (lambda: dp.solvers.Converged(rtol=-1.0), ValueError, "rtol must be a finite number >= 0, got -1.0"),
        (lambda: dp.solvers.GaussNewton(damping=float("nan")), ValueError, "damping must be a finite number >= 0"),
        (lambda: dp.solvers.GaussNewton(inner="cg"), TypeError, "inner must be a LinearSolver"),
        (lambda: dp.solvers.GaussNewton(inner=dp.LinearSolver(method="gmres")), ValueError,
         "normal equations by unpreconditioned CG"),
        (lambda: dp.solvers.GaussNewton(globalization="none", damping=0.0), ValueError,
         "damping must be a finite number > 0"),
        (lambda: da.gauss_newton(_state_problem()[0], solver="fast"), TypeError, "solver must be a GaussNewton"),
        (lambda: da.gauss_newton(_state_problem()[0], mode=dp.solvers.Unrolled(3)), TypeError, "mode must be Converged"),
        (lambda: da.Joint(da.InitialState(), ()), TypeError, "one or more Parameter controls"),
        (lambda: da.Joint(da.InitialState(), (da.Parameter("kappa"), da.Parameter("kappa"))), ValueError,
         "appears twice"),
        (lambda: da.StrongConstraint4DVar(MODEL, SCHEDULE, jnp.zeros(20), ob.DiagonalR(0.1), B, TRUTH,
                                          da.Parameter("kappa")), ValueError, "needs initial_state"),
        (lambda: da.StrongConstraint4DVar(MODEL, SCHEDULE, jnp.zeros(20), ob.DiagonalR(0.1), B, TRUTH,
                                          da.Joint(da.InitialState(), da.Parameter("kappa"))), ValueError,
         "give background and B as tuples of 2"),
        (lambda: da.WeakConstraint4DVar(MODEL, SCHEDULE, jnp.zeros(20), ob.DiagonalR(0.1), B, TRUTH, 0.1),
         TypeError, "Q must be a covariance"),
        (lambda: da.WeakConstraint4DVar(MODEL, SCHEDULE, jnp.zeros(20), ob.DiagonalR(0.1), B, TRUTH, B,
                                        forcing_every=0), ValueError, "forcing_every must be an integer >= 1, got 0"),
    ],
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_non_finite_start_is_reported():
    problem, _ = _state_problem()
    bad = eqx.tree_at(lambda p: p.background, problem, problem.background.at[3].set(jnp.inf))
    with pytest.raises(eqx.EquinoxRuntimeError, match="became non-finite"):
        da.gauss_newton(bad)
    # Without throw, the result says so and the iterate is the starting point.
    solution = da.gauss_newton(bad, throw=False)
    assert solution.outcome == "nonfinite" and solution.num_steps == 0
