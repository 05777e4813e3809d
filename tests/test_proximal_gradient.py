"""ISTA and FISTA on the solver core: the lasso minimiser against an independent reference (coordinate descent),
ISTA's monotone objective, the implicit derivative against the lasso's closed form, converged vs unrolled modes and
their gradients, dot-product and Taylor tests of the unrolled layers, a stall that keeps the best iterate, and the
bad inputs each rejects.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffphys import priors as P
from diffphys import solvers as S

M, N, LAM = 30, 60, 0.05


def _lasso_data():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(M, N)) / np.sqrt(M)
    x_true = np.zeros(N)
    x_true[rng.choice(N, 6, replace=False)] = rng.normal(size=6)
    y = A @ x_true + 0.01 * rng.normal(size=M)
    return A, y


def _coordinate_descent(A, y, lam, sweeps=5000):
    """Cyclic coordinate descent for ½‖Ax − y‖² + λ‖x‖₁ (Friedman et al. 2007): an independent algorithm."""
    x = np.zeros(A.shape[1])
    r = y.copy()
    norms = np.sum(A**2, axis=0)
    for _ in range(sweeps):
        change = 0.0
        for j in range(A.shape[1]):
            rho = A[:, j] @ r + norms[j] * x[j]
            new = np.sign(rho) * max(abs(rho) - lam, 0.0) / norms[j]
            r += A[:, j] * (x[j] - new)
            change = max(change, abs(new - x[j]))
            x[j] = new
        if change < 1e-15:
            break
    return x


A, Y = _lasso_data()
REFERENCE = _coordinate_descent(A, Y, LAM)
SUPPORT = np.abs(REFERENCE) > 0


def _problem(lam=LAM, y=Y):
    return S.Composite(S.LinearLeastSquares(A, y), P.L1(lam))


TIGHT = S.Converged(rtol=1e-11, max_steps=20000)


@pytest.mark.parametrize(
    "solver",
    [S.ISTA(), S.FISTA(), S.FISTA(continuation=10.0), S.ISTA(backtracking=True)],
    ids=["ista", "fista", "fista-continuation", "ista-backtracking"],
)
def test_lasso_minimiser_equals_coordinate_descent(solver):
    sol = S.iterate(solver, _problem(), mode=TIGHT)
    assert sol.converged
    # Both solvers stop at a relative gradient-mapping tolerance of 1e-11; the minimiser is well conditioned on
    # its support (cond(A_S) ~ 3), so 1e-8 in the iterate is comfortably reached.
    np.testing.assert_allclose(sol.value, REFERENCE, atol=1e-8)
    assert 0 < SUPPORT.sum() < N  # a genuinely sparse solution, not the trivial one


def test_ista_objective_decreases_monotonically_and_fista_is_faster():
    ista = S.iterate(S.ISTA(), _problem(), mode=TIGHT)
    cost = np.asarray(ista.history()["cost"])
    assert np.all(np.diff(cost) <= 1e-14 * np.abs(cost[:-1]))
    fista = S.iterate(S.FISTA(), _problem(), mode=TIGHT)
    assert fista.num_steps < ista.num_steps / 2


def test_implicit_derivative_in_lambda_equals_the_lasso_closed_form():
    def solve(lam):
        return S.iterate(S.FISTA(), _problem(lam), mode=TIGHT).value

    closed = -np.linalg.solve(A[:, SUPPORT].T @ A[:, SUPPORT], np.sign(REFERENCE[SUPPORT]))
    forward = jax.jacfwd(solve)(jnp.asarray(LAM))
    reverse = jax.jacrev(solve)(jnp.asarray(LAM))
    for derivative in (forward, reverse):
        np.testing.assert_allclose(derivative[SUPPORT], closed, atol=1e-10)
        np.testing.assert_array_equal(derivative[~SUPPORT], 0.0)


def _loss_of_data(mode, solver, adjoint=None):
    weights = jnp.asarray(np.random.default_rng(3).normal(size=N))

    def loss(y):
        return jnp.vdot(weights, S.iterate(solver, _problem(y=y), mode=mode, adjoint=adjoint).value)

    return loss


def test_unrolled_to_convergence_gradient_equals_implicit_and_finite_differences():
    implicit = jax.grad(_loss_of_data(TIGHT, S.FISTA()))(jnp.asarray(Y))
    unrolled = jax.grad(_loss_of_data(S.Unrolled(400), S.FISTA()))(jnp.asarray(Y))
    np.testing.assert_allclose(unrolled, implicit, atol=1e-9)
    # The solution is piecewise linear in y with the support fixed near Y: central differences are exact up to
    # round-off of the converged solves.
    loss = _loss_of_data(TIGHT, S.FISTA())
    e = np.zeros(M)
    for i in (0, 7, 19):
        e[:] = 0
        e[i] = 1e-5
        fd = (loss(jnp.asarray(Y + e)) - loss(jnp.asarray(Y - e))) / 2e-5
        assert abs(fd - implicit[i]) < 1e-7 * max(1.0, abs(implicit[i]))


def test_unrolled_layers_dot_product_and_taylor_in_learned_parameters():
    K = 12
    solver = S.ISTA()
    params = S.ProximalStep(step_scale=jnp.linspace(1.0, 0.8, K), weight_scale=jnp.linspace(3.0, 1.0, K))

    def layers(y, params):
        return S.iterate(solver, _problem(y=y), mode=S.Unrolled(K), params=params).value

    # Dot product: <J dy, dx> = <dy, J^T dx> for the map y -> x_K (piecewise linear; smooth at a generic y).
    rng = np.random.default_rng(5)
    dy, dx = jnp.asarray(rng.normal(size=M)), jnp.asarray(rng.normal(size=N))
    _, jdy = jax.jvp(lambda y: layers(y, params), (jnp.asarray(Y),), (dy,))
    _, vjp = jax.vjp(lambda y: layers(y, params), jnp.asarray(Y))
    (jtdx,) = vjp(dx)
    lhs, rhs = jnp.vdot(jdy, dx), jnp.vdot(dy, jtdx)
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)

    # Taylor test in the learned per-layer parameters of a smooth loss.
    def loss(p):
        return 0.5 * jnp.sum((layers(jnp.asarray(Y), p) - jnp.asarray(REFERENCE)) ** 2)

    grad = jax.grad(loss)(params)
    h = S.ProximalStep(step_scale=jnp.asarray(rng.normal(size=K)), weight_scale=jnp.asarray(rng.normal(size=K)))
    slope = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(h)))
    eps = 1e-3 * 2.0 ** -np.arange(5)
    base = loss(params)
    remainders = [
        abs(loss(jax.tree_util.tree_map(lambda p, d: p + e * d, params, h)) - base - e * slope) for e in eps
    ]
    rates = np.log2(np.asarray(remainders[:-1]) / np.asarray(remainders[1:]))
    assert np.all(rates > 1.9), rates


def test_converged_with_zero_tolerance_equals_unrolled():
    K = 25
    for solver in (S.ISTA(), S.FISTA()):
        converged = S.iterate(solver, _problem(), mode=S.Converged(rtol=0.0, max_steps=K), throw=False)
        unrolled = S.iterate(solver, _problem(), mode=S.Unrolled(K))
        assert converged.num_steps == K
        np.testing.assert_allclose(converged.value, unrolled.value, rtol=0, atol=1e-14)


def test_a_stalled_run_reports_it_and_keeps_the_best_iterate():
    # FISTA's objective is not monotone; with patience 1 the first rise stops the run.
    sol = S.iterate(S.FISTA(patience=1), _problem(), mode=TIGHT, throw=False)
    assert sol.result == S.RESULTS.no_decrease
    cost = np.asarray(sol.history()["cost"])
    cost = cost[np.isfinite(cost)]
    objective = 0.5 * np.sum((A @ np.asarray(sol.value) - Y) ** 2) + LAM * np.sum(np.abs(np.asarray(sol.value)))
    np.testing.assert_allclose(objective, cost.min(), rtol=1e-13)
    assert cost[-1] > cost.min()  # the last iterate was worse: the best one came back
    with pytest.raises(Exception, match="no_decrease|did not decrease|stall"):
        S.iterate(S.FISTA(patience=1), _problem(), mode=TIGHT)


def test_bad_inputs_are_refused_with_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"weight \(lambda\) must be finite and >= 0.*-0.1"):
        P.L1(-0.1)
    with pytest.raises(Exception, match=r"step_size=0.5 is not below 2/L"):
        # L = ||A||^2 ~ 5.8 here, so 2/L ~ 0.34.
        S.iterate(S.ISTA(step_size=0.5), _problem(), mode=TIGHT)
    with pytest.raises(ValueError, match=r"needs a prior.*Composite"):
        S.iterate(S.ISTA(), S.LinearLeastSquares(A, Y), mode=TIGHT)
    with pytest.raises(ValueError, match="either step_size= or backtracking"):
        S.ISTA(step_size=0.1, backtracking=True)
    with pytest.raises(ValueError, match="continuation"):
        S.FISTA(continuation=0.5)
    with pytest.raises(ValueError, match="cannot be unrolled"):
        S.iterate(S.ISTA(backtracking=True), _problem(), mode=S.Unrolled(3))
    with pytest.raises(ValueError, match=r"per-entry weight must have the control's shape \(60,\)"):
        S.Composite(S.LinearLeastSquares(A, Y), P.L1(jnp.ones(5)))
    with pytest.raises(ValueError, match="operator must be an \\(M, N\\) matrix"):
        S.LinearLeastSquares(A[:5], Y)
