"""ADMM on the solver core: the lasso and a split sum (L1 + non-negativity) against coordinate descent, the
implicit derivative (on x and the duals) against the lasso's closed form, converged vs unrolled modes, a Taylor
test in the learned per-layer penalties, and bad inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import priors as P
from diffphys import solvers as S
from reference import lasso_coordinate_descent, lasso_data

M, N, LAM = 30, 60, 0.05
A, Y = lasso_data(M, N)
REFERENCE = lasso_coordinate_descent(A, Y, LAM)
SUPPORT = np.abs(REFERENCE) > 0
TIGHT = S.Converged(rtol=1e-11, max_steps=3000)


def _problem(lam=LAM, prior=None):
    return S.Composite(S.LinearLeastSquares(A, Y), P.L1(lam) if prior is None else prior)


@pytest.mark.parametrize("solver", [S.ADMM(), S.ADMM(penalty=1.0, adaptive_penalty=False)], ids=["adaptive", "fixed"])
def test_lasso_minimiser_equals_coordinate_descent(solver):
    sol = S.iterate(solver, _problem(), mode=TIGHT)
    assert sol.converged
    np.testing.assert_allclose(sol.value, REFERENCE, atol=1e-9)
    assert np.all(np.asarray(sol.value)[~SUPPORT] == 0.0)  # z is the prox output: exact zeros


def test_a_sum_without_an_exact_prox_is_split_into_its_terms():
    # Sum takes no closed-form prox for two L1 terms, so ADMM splits them; their sum is the lasso's L1 at the summed
    # weight, whose minimiser is an independent reference.
    prior = P.Sum(P.L1(0.3 * LAM), P.L1(0.7 * LAM))
    assert not prior.has_exact_prox
    sol = S.iterate(S.ADMM(), _problem(prior=prior), mode=TIGHT)
    np.testing.assert_allclose(sol.value, REFERENCE, atol=1e-8)
    # Non-negativity as a second term, against coordinate descent with the constraint.
    nonnegative = lasso_coordinate_descent(A, Y, LAM, nonnegative=True)
    prior = P.Sum(P.L1(0.3 * LAM), P.L1(0.7 * LAM), P.NonNegative())
    sol = S.iterate(S.ADMM(), _problem(prior=prior), mode=TIGHT)
    np.testing.assert_allclose(sol.value, nonnegative, atol=1e-8)
    with pytest.raises(ValueError, match="has none in closed form: use ADMM or PDHG"):
        S.iterate(S.FISTA(), _problem(prior=prior), mode=TIGHT)


def test_implicit_derivative_in_lambda_equals_the_lasso_closed_form():
    def solve(lam):
        return S.iterate(S.ADMM(), _problem(lam), mode=TIGHT).value

    closed = -np.linalg.solve(A[:, SUPPORT].T @ A[:, SUPPORT], np.sign(REFERENCE[SUPPORT]))
    derivative = jax.jacrev(solve)(jnp.asarray(LAM))
    # ADMM stops at primal/dual residuals of 1e-11 relative; the derivative solve is to 1e-10.
    np.testing.assert_allclose(derivative[SUPPORT], closed, atol=1e-9)
    np.testing.assert_allclose(derivative[~SUPPORT], 0.0, atol=1e-9)


def test_converged_with_zero_tolerance_equals_unrolled():
    # The default inner tolerance depends on the mode (loose when converged, tight when unrolled): the same
    # explicit inner solver makes the two modes run the same iterations.
    K = 15
    solver = S.ADMM(inner=dp.LinearSolver(method="cg", rtol=1e-10, max_steps=300, throw=False))
    converged = S.iterate(solver, _problem(), mode=S.Converged(rtol=0.0, max_steps=K), throw=False)
    unrolled = S.iterate(solver, _problem(), mode=S.Unrolled(K))
    assert converged.num_steps == K
    np.testing.assert_allclose(converged.value, unrolled.value, rtol=0, atol=1e-13)


def test_unrolled_admm_taylor_test_in_learned_penalties():
    K = 8
    rng = np.random.default_rng(4)
    params = S.ADMMStep(penalty_scale=jnp.linspace(0.5, 1.5, K), weight_scale=jnp.linspace(2.0, 1.0, K))

    def loss(p):
        x = S.iterate(S.ADMM(adaptive_penalty=False), _problem(), mode=S.Unrolled(K), params=p).value
        return 0.5 * jnp.sum((x - jnp.asarray(REFERENCE)) ** 2)

    grad = jax.grad(loss)(params)
    h = S.ADMMStep(penalty_scale=jnp.asarray(rng.normal(size=K)), weight_scale=jnp.asarray(rng.normal(size=K)))
    slope = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(h)))
    base = loss(params)
    eps = 1e-3 * 2.0 ** -np.arange(5)
    remainders = [abs(loss(jax.tree_util.tree_map(lambda p, d: p + e * d, params, h)) - base - e * slope) for e in eps]
    rates = np.log2(np.asarray(remainders[:-1]) / np.asarray(remainders[1:]))
    assert np.all(rates > 1.9), rates


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"ADMM: penalty \(rho\) must be a finite number > 0, got -1"):
        S.ADMM(penalty=-1.0)
    with pytest.raises(ValueError, match="ADMM needs a prior"):
        S.iterate(S.ADMM(), S.LinearLeastSquares(A, Y))
    with pytest.raises(TypeError, match="inner must be a LinearSolver"):
        S.ADMM(inner="cg")
