"""Total-variation problems with a PDE forward operator: deblurring is backward heat.

min_x ½‖A x − y‖² + λ TV(x) with A the heat semigroup (a diffphys rollout, matrix-free) is solved by PDHG
(Condat–Vũ), FISTA (exact 1D TV prox) and ADMM, each checked against an independent reference: the problem's
dual, a box-constrained least-squares problem solved by SciPy's BVLS. The implicit derivative of the converged
solution in the data equals the closed form on the solution's piecewise-constant structure. Also: PDHG ≡ the 2D
TV prox when A = I, converged ≡ unrolled, a split sum (TV + non-negativity), bad inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

import diffphys as dp
from diffphys import priors as P
from diffphys import solvers as S

N, LAM = 24, 0.02
GRID = dp.Grid1D(N, 1.0, bc="neumann")
HEAT = dp.Heat(GRID, 0.01, dt=2e-3)
STEPS = 4


def blur(x):
    """The heat semigroup over STEPS steps: a symmetric blur (deblurring it is the backward heat equation)."""
    return dp.rollout(HEAT, x, STEPS)[-1]


def _data():
    truth = np.where(np.asarray(GRID.x) < 0.3, 0.2, np.where(np.asarray(GRID.x) < 0.65, 1.0, 0.4))
    noise = 0.01 * np.random.default_rng(0).normal(size=N)
    return truth, np.asarray(blur(jnp.asarray(truth))) + noise


TRUTH, Y = _data()
A = np.asarray(jax.jacfwd(blur)(jnp.zeros(N)))  # dense, for the references only


def _tv_reference(A, y, lam):
    """argmin ½‖Ax − y‖² + λ‖Dx‖₁ through its dual: x = (AᵀA)⁻¹(Aᵀy − Dᵀq) with
    q = argmin_{|q| ≤ λ} ½‖R⁻ᵀ(Aᵀy − Dᵀq)‖² (AᵀA = RᵀR), a bounded least-squares problem solved by BVLS."""
    D = np.diff(np.eye(A.shape[1]), axis=0)
    R = scipy.linalg.cholesky(A.T @ A)
    c = scipy.linalg.solve_triangular(R, A.T @ y, trans="T")
    G = scipy.linalg.solve_triangular(R, D.T, trans="T")
    q = scipy.optimize.lsq_linear(G, c, bounds=(-lam, lam), method="bvls", tol=1e-15).x
    return np.linalg.solve(A.T @ A, A.T @ y - D.T @ q)


REFERENCE = _tv_reference(A, Y, LAM)
TIGHT = S.Converged(rtol=1e-11, max_steps=20000)


def _problem(y=Y, prior=None):
    smooth = S.LinearLeastSquares(blur, jnp.asarray(y), jnp.zeros(N))
    return S.Composite(smooth, P.TV1D(LAM) if prior is None else prior)


@pytest.mark.parametrize("solver", [S.PDHG(), S.FISTA(), S.ADMM()], ids=["pdhg", "fista", "admm"])
def test_tv_deblurring_through_the_heat_equation_equals_the_dual_reference(solver):
    sol = S.iterate(solver, _problem(), mode=TIGHT)
    assert sol.converged
    # The reference is exact to BVLS's tolerance; the solvers stop at a relative fixed-point residual of 1e-11.
    np.testing.assert_allclose(sol.value, REFERENCE, atol=1e-7)
    jumps = np.abs(np.diff(REFERENCE)) > 1e-8
    assert 1 <= jumps.sum() < N // 2  # piecewise constant: the prior did its job


def test_implicit_derivative_in_the_data_equals_the_closed_form_on_the_segments():
    # On the solution's segments (constant pieces, B their indicator matrix) the minimiser is
    # x = B c with c = (BᵀAᵀAB)⁻¹(BᵀAᵀy − λ BᵀDᵀs), s the fixed jump signs: dx/dy = B (BᵀAᵀAB)⁻¹ BᵀAᵀ.
    starts = np.concatenate([[0], np.flatnonzero(np.abs(np.diff(REFERENCE)) > 1e-8) + 1])
    B = np.zeros((N, len(starts)))
    for j, s in enumerate(starts):
        B[s : (starts[j + 1] if j + 1 < len(starts) else N), j] = 1.0
    closed = B @ np.linalg.solve(B.T @ A.T @ A @ B, B.T @ A.T)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=N))

    def loss(solver, y):
        return jnp.vdot(weights, S.iterate(solver, _problem(y=y), mode=TIGHT).value)

    for solver in (S.PDHG(), S.FISTA()):
        np.testing.assert_allclose(jax.grad(lambda y: loss(solver, y))(jnp.asarray(Y)), closed.T @ weights, atol=1e-7)


def test_pdhg_with_the_identity_operator_is_the_2d_tv_prox():
    rng = np.random.default_rng(2)
    image = np.kron(np.array([[0.0, 1.0], [1.0, 0.3]]), np.ones((4, 4))) + 0.05 * rng.normal(size=(8, 8))
    prior = P.TV2D(0.1)
    problem = S.Composite(S.LinearLeastSquares(lambda x: x, jnp.ravel(image), jnp.zeros((8, 8))), prior)
    sol = S.iterate(S.PDHG(), problem, mode=S.Converged(rtol=1e-10, max_steps=20000))
    np.testing.assert_allclose(sol.value, prior.prox(jnp.asarray(image), 1.0), atol=1e-7)


def test_a_split_sum_tv_plus_nonnegativity_agrees_across_pdhg_and_admm():
    prior = P.Sum(P.TV1D(LAM), P.NonNegative())
    y = Y - 0.5  # the unconstrained minimiser goes negative, so the constraint is active
    pdhg = S.iterate(S.PDHG(), _problem(y=y, prior=prior), mode=TIGHT).value
    admm = S.iterate(S.ADMM(), _problem(y=y, prior=prior), mode=TIGHT).value
    assert np.min(np.asarray(pdhg)) == 0.0 and np.any(np.asarray(_tv_reference(A, y, LAM)) < -1e-3)
    np.testing.assert_allclose(pdhg, admm, atol=1e-7)


def test_implicit_derivative_of_a_split_2d_sum_with_a_singular_dual_equals_finite_differences():
    # TV2D + non-negativity has no joint prox, so PDHG's implicit derivative solves its primal-dual fixed point on
    # (x, p), singular in p (the divergence has a null space). The x-derivative is still unique: compare it with
    # central differences of the converged solution (piecewise smooth in y; h = 1e-6 against a 1e-11 residual).
    rng = np.random.default_rng(3)
    image = np.kron(np.array([[0.0, 1.0], [1.0, 0.3]]), np.ones((4, 4))) - 0.2 + 0.05 * rng.normal(size=(8, 8))
    prior = P.Sum(P.TV2D(0.1), P.NonNegative())
    weights = jnp.asarray(rng.normal(size=(8, 8)))

    def loss(y):
        problem = S.Composite(S.LinearLeastSquares(lambda x: x, y, jnp.zeros((8, 8))), prior)
        solution = S.iterate(S.PDHG(), problem, mode=S.Converged(rtol=1e-11, max_steps=20000))
        return jnp.vdot(weights, solution.value), solution.value

    y = jnp.ravel(jnp.asarray(image))
    (_, x), gradient = jax.value_and_grad(loss, has_aux=True)(y)
    assert np.sum(np.asarray(x) == 0.0) >= 8 and np.any(image < 0)  # the constraint is active
    h = 1e-6
    for direction in rng.normal(size=(2, 64)):
        fd = (loss(y + h * direction)[0] - loss(y - h * direction)[0]) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(gradient, direction), fd, rtol=1e-5)


def test_converged_with_zero_tolerance_equals_unrolled():
    K = 20
    converged = S.iterate(S.PDHG(), _problem(), mode=S.Converged(rtol=0.0, max_steps=K), throw=False)
    unrolled = S.iterate(S.PDHG(), _problem(), mode=S.Unrolled(K))
    np.testing.assert_allclose(converged.value, unrolled.value, rtol=0, atol=1e-13)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no analysis term"):
        S.iterate(S.PDHG(), _problem(prior=P.L1(0.1)))
    with pytest.raises(ValueError, match="PDHG needs a prior"):
        S.iterate(S.PDHG(), S.LinearLeastSquares(blur, jnp.asarray(Y), jnp.zeros(N)))
    with pytest.raises(ValueError, match=r"PDHG: dual_ratio must be a finite number > 0, got 0"):
        S.PDHG(dual_ratio=0)
    with pytest.raises(ValueError, match=r"TV1D acts on a non-empty 1D array.*\(4, 6\)"):
        S.Composite(S.LinearLeastSquares(lambda x: x, jnp.zeros(24), jnp.zeros((4, 6))), P.TV1D(0.1))
