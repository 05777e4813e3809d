"""The solver core across a problem zoo: every solver x mode x adjoint on linear-Gaussian heat, nonlinear heat,
wave and Lorenz-96 4D-Var problems.

- Converged solvers (Levenberg–Marquardt, line-search Gauss–Newton, L-BFGS) reach the same minimiser; on the
  linear-Gaussian problem it is the dense posterior mean.
- The modes are one iteration: ``Converged(rtol=0, max_steps=K)`` and ``Unrolled(K)`` give the same iterates.
- Derivatives of a loss of the solution: implicit (converged) = unrolled through K layers with every loop
  adjoint (Direct, block and recursive checkpointing) = central finite differences of the unrolled solver.
Sizes are tiny so that each compiled solve is cheap; the numerics are the production code paths.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob
from diffphys import solvers as S


def _heat_linear():
    grid = dp.Grid1D(16, 1.0, bc="neumann")
    model = dp.Heat(grid, 0.02, dt=2e-3)
    schedule = ob.ObservationSchedule.from_steps([3, 7, 12], ob.PointSensors(grid, [0.15, 0.5, 0.8]), dt=model.dt)
    truth = jnp.exp(-((grid.x - 0.4) ** 2) / 0.01)
    B = ob.DiffusionB(grid, 0.5, 0.1)
    twin = ob.twin_experiment(model, truth, schedule, 0.05, jax.random.key(0), background=B)
    return da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, B, twin.background)


def _heat_nonlinear():
    """Heat with the log-diffusivity field as control: a nonlinear inverse problem."""
    grid = dp.Grid1D(12, 1.0, bc="neumann")
    kappa_true = 0.02 * jnp.exp(0.4 * jnp.sin(2 * jnp.pi * grid.x))
    model = dp.Heat(grid, kappa_true, dt=2e-3)
    u0 = jnp.cos(jnp.pi * grid.x) + 0.5 * jnp.cos(3 * jnp.pi * grid.x)
    schedule = ob.ObservationSchedule.from_steps([5, 10], ob.subsample(grid, 2), dt=model.dt)
    twin = ob.twin_experiment(model, u0, schedule, 0.002, jax.random.key(1))
    control = da.Parameter("kappa", u0, transform="log")
    return da.StrongConstraint4DVar(model, schedule, twin.observations, ob.DiagonalR(0.002),
                                    ob.DiffusionB(grid, 0.5, 0.15), control.to_control(jnp.full(grid.shape, 0.03)),
                                    control)


def _wave():
    grid = dp.Grid1D(16, 1.0, bc="dirichlet")
    model = dp.Wave(grid, 1.0)
    truth = (jnp.exp(-((grid.x - 0.4) ** 2) / 0.01), jnp.zeros(16))
    schedule = ob.ObservationSchedule.from_steps([4, 8, 12], ob.PointSensors(grid, [0.2, 0.5, 0.8]), dt=model.dt)
    B = ob.DiffusionB(grid, 0.3, 0.1)
    twin = ob.twin_experiment(model, truth, schedule, 0.02, jax.random.key(2), background=B)
    control = da.InitialState(template=twin.background, field=0)
    return da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, B,
                                    control.to_control(twin.background), control)


def _lorenz96():
    model = dp.Lorenz96(10, 8.0)
    x0 = dp.rollout(model, 8.0 + 0.1 * jnp.sin(jnp.arange(10.0)), 200)[-1]
    schedule = ob.ObservationSchedule.from_steps([2, 4, 6], ob.subsample(model.grid, 2), dt=model.dt)
    B = ob.DiffusionB(model.grid, 0.5, 1.0)
    twin = ob.twin_experiment(model, x0, schedule, 0.5, jax.random.key(3), background=B)
    return da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, B, twin.background)


ZOO = {"heat-linear": _heat_linear, "heat-nonlinear": _heat_nonlinear, "wave": _wave, "lorenz96": _lorenz96}
TIGHT_INNER = dp.LinearSolver(method="cg", rtol=1e-12, max_steps=200, throw=False)
CONVERGED = S.Converged(rtol=1e-10, max_steps=60)


@pytest.fixture(scope="module", params=sorted(ZOO))
def problem(request):
    return request.param, ZOO[request.param]()


def _relative(a, b):
    a, b = jnp.ravel(jnp.asarray(a)), jnp.ravel(jnp.asarray(b))
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_converged_solvers_reach_the_same_minimiser(problem):
    name, p = problem
    solutions = {
        "levenberg_marquardt": S.iterate(S.GaussNewton(inner=TIGHT_INNER), p, mode=CONVERGED),
        "line_search": S.iterate(S.GaussNewton(globalization="line_search", inner=TIGHT_INNER), p, mode=CONVERGED),
        "lbfgs": S.iterate(S.LBFGS(), p, mode=S.Converged(rtol=1e-9, max_steps=500)),
    }
    reference = solutions["levenberg_marquardt"].value
    for solver, solution in solutions.items():
        assert solution.outcome == "successful", solver
        costs = solution.history()["cost"]
        assert np.all(np.diff(costs) <= 1e-12 * costs[0]), solver  # monotone: all three globalise
        assert _relative(solution.value, reference) <= 1e-6, solver
    for solver in ("levenberg_marquardt", "line_search"):  # not stopped short where the cost stops resolving progress
        gradient_norm = solutions[solver].history()["gradient_norm"]
        assert gradient_norm[-1] <= CONVERGED.rtol * gradient_norm[0], solver
    if name == "heat-linear":  # the dense posterior mean: (I + G^T G) v = G^T d
        zero = p.zero_control()  # d and G in one compiled program (op by op, they compiled ~90 small ones)
        d, G = jax.jit(lambda z: (p.observation_residuals(z), -jax.jacfwd(p.observation_residuals)(z)))(zero)
        exact = np.linalg.solve(np.eye(G.shape[1]) + G.T @ G, G.T @ d)
        assert _relative(reference, exact) <= 1e-9


MODE_CASES = [(name, "gauss_newton") for name in sorted(ZOO)] + [("lorenz96", "adam")]
MODE_SOLVERS = {"gauss_newton": S.GaussNewton(globalization="none", damping=1e-2), "adam": S.Adam(learning_rate=0.05)}


# The two modes' programs must round alike to stop their inner CG solves at the same iteration (tests/conftest.py).
@pytest.mark.xla_default_optimisation
@pytest.mark.parametrize(("name", "solver_name"), MODE_CASES, ids=[f"{a}-{b}" for a, b in MODE_CASES])
def test_converged_and_unrolled_modes_run_the_same_iteration(name, solver_name):
    p, solver = ZOO[name](), MODE_SOLVERS[solver_name]
    k = 4
    converged = S.iterate(solver, p, mode=S.Converged(rtol=0.0, max_steps=k), throw=False)
    unrolled = S.iterate(solver, p, mode=S.Unrolled(k))
    assert converged.outcome == "max_steps_reached" and converged.num_steps == k
    np.testing.assert_allclose(unrolled.value, converged.value, rtol=1e-12, atol=1e-14)
    for record, values in unrolled.history().items():
        np.testing.assert_allclose(values, converged.history()[record], rtol=1e-12, atol=1e-14)


def _loss_of_solution(p, solve, observations):
    """A scalar of the analysis that depends on the observations: the mean analysis control."""
    problem = eqx.tree_at(lambda r: r.observations, p, observations)
    return jnp.sum(jnp.sin(jnp.ravel(problem.control(solve(problem)))))


UNROLLED_LAYERS = 16
# Every loop adjoint runs on the cheapest problem (Lorenz-96); the others use one each, so that every
# problem and every adjoint is covered without compiling the 12 combinations (compilation dominates).
GRADIENT_CASES = [("lorenz96", "direct"), ("lorenz96", "checkpointed-block"), ("lorenz96", "checkpointed-recursive"),
                  ("heat-linear", "direct"), ("heat-nonlinear", "checkpointed-block"), ("wave", "checkpointed-recursive")]
ADJOINTS = {"direct": dp.adjoint.Direct(), "checkpointed-block": dp.adjoint.Checkpointed(every=1),
            "checkpointed-recursive": dp.adjoint.Checkpointed()}


@pytest.mark.parametrize(("name", "adjoint_name"), GRADIENT_CASES, ids=[f"{a}-{b}" for a, b in GRADIENT_CASES])
def test_implicit_and_unrolled_gradients_agree_and_match_finite_differences(name, adjoint_name):
    p, adjoint = ZOO[name](), ADJOINTS[adjoint_name]
    implicit = lambda q: S.iterate(S.GaussNewton(inner=TIGHT_INNER), q, mode=CONVERGED).value
    gn = S.GaussNewton(globalization="none", damping=1e-12, inner=TIGHT_INNER)
    unrolled = lambda q: S.iterate(gn, q, mode=S.Unrolled(UNROLLED_LAYERS), adjoint=adjoint).value
    y = jnp.where(p.mask, p.observations, 0.0)
    loss_implicit = jax.jit(jax.value_and_grad(lambda obs: _loss_of_solution(p, implicit, obs)))
    loss_unrolled = jax.jit(jax.value_and_grad(lambda obs: _loss_of_solution(p, unrolled, obs)))
    value_i, grad_i = loss_implicit(y)
    value_u, grad_u = loss_unrolled(y)
    # Both converged: the converged solve stops where the cost no longer resolves progress (its
    # acceptance test compares costs), which leaves the control accurate to ~1e-9 here.
    assert abs(float(value_i - value_u)) <= 1e-8 * max(1.0, abs(float(value_i)))
    assert _relative(grad_u, grad_i) <= 1e-7
    # Central differences of the unrolled solver (smooth in the data) along a random direction; its values
    # from the compiled value-and-gradient program (one program fewer to compile than a forward-only one).
    direction = jnp.where(p.mask, jax.random.normal(jax.random.key(9), y.shape), 0.0)
    f = lambda t: loss_unrolled(y + t * direction)[0]
    assert float(jnp.vdot(grad_i, direction)) == pytest.approx(_fd_along(f), rel=1e-6, abs=1e-10)


def _fd_along(f, h=1e-4):
    """Fourth-order central difference of a scalar function of t at t = 0."""
    return float((-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h))


@pytest.mark.parametrize("name", ["lorenz96", "heat-linear"])
def test_converged_lbfgs_hypergradient_equals_gauss_newtons_and_finite_differences(name):
    """Two converged solvers of one problem have one implicit derivative: that of its optimality condition."""
    p = ZOO[name]()
    y = jnp.where(p.mask, p.observations, 0.0)
    lbfgs = lambda q: S.iterate(S.LBFGS(), q, mode=S.Converged(rtol=1e-11, max_steps=500)).value
    gauss_newton = lambda q: S.iterate(S.GaussNewton(inner=TIGHT_INNER), q, mode=CONVERGED).value
    grad_lbfgs = jax.jit(jax.grad(lambda obs: _loss_of_solution(p, lbfgs, obs)))(y)
    loss_gn = jax.jit(jax.value_and_grad(lambda obs: _loss_of_solution(p, gauss_newton, obs)))
    grad_gn = loss_gn(y)[1]
    # Both solutions agree to ~1e-9 (the solvers' stopping tests); the derivative's solve is to 1e-10.
    assert _relative(grad_lbfgs, grad_gn) <= 1e-7
    direction = jnp.where(p.mask, jax.random.normal(jax.random.key(10), y.shape), 0.0)
    f = lambda t: loss_gn(y + t * direction)[0]  # the loss's values from the compiled value-and-gradient program
    assert float(jnp.vdot(grad_lbfgs, direction)) == pytest.approx(_fd_along(f), rel=1e-6, abs=1e-10)


def test_unrolled_adam_gradients_agree_across_loop_adjoints_and_match_finite_differences():
    """A gradient method unrolled as layers: every loop adjoint gives one gradient, that of finite differences."""
    p = ZOO["lorenz96"]()
    y = jnp.where(p.mask, p.observations, 0.0)
    grads, losses = {}, {}
    for adjoint_name, adjoint in ADJOINTS.items():
        adam = lambda q, a=adjoint: S.iterate(S.Adam(learning_rate=0.05), q, mode=S.Unrolled(5), adjoint=a).value
        losses[adjoint_name] = jax.jit(jax.value_and_grad(lambda obs, adam=adam: _loss_of_solution(p, adam, obs)))
        grads[adjoint_name] = losses[adjoint_name](y)[1]
    for adjoint_name, grad in grads.items():  # the same arithmetic, recomputed or stored: equal to round-off
        np.testing.assert_allclose(grad, grads["direct"], rtol=1e-12, atol=1e-15, err_msg=adjoint_name)
    direction = jnp.where(p.mask, jax.random.normal(jax.random.key(11), y.shape), 0.0)
    # The unrolled Adam's values (the forward pass does not depend on the adjoint) from the compiled
    # value-and-gradient program of the Direct adjoint: one program fewer to compile.
    f = lambda t: losses["direct"](y + t * direction)[0]
    assert float(jnp.vdot(grads["direct"], direction)) == pytest.approx(_fd_along(f), rel=1e-6, abs=1e-10)
