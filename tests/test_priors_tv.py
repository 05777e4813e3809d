"""Total-variation priors: TV1D (exact prox) and TV2D (dual FGP prox), their values and derivatives.

References are independent of diffphys: the prox's dual problem, a bound-constrained least
squares min ½‖z − t Dᵀq‖² over |q| ≤ 1, solved by SciPy's BVLS (an exact active-set method) for
TV1D and anisotropic TV2D, and by SciPy's SLSQP over the pointwise discs for isotropic TV2D, with
dense difference matrices built here.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import lsq_linear, minimize

import diffphys as dp
from diffphys.priors import TV1D, TV2D

RNG = np.random.default_rng(20260412)


@pytest.fixture(autouse=True)
def _seed():
    """Each test draws from its own fixed stream (independent of which other tests ran)."""
    global RNG
    RNG = np.random.default_rng(20260412)


def _difference_matrix(n):
    return np.diff(np.eye(n), axis=0)  # (n-1, n): (Dx)_i = x_{i+1} - x_i


def _bvls_prox(z, t, D):
    """u = z − t Dᵀq*, q* = argmin ½‖z − t Dᵀq‖² over the box |q| ≤ 1 (BVLS: exact active set)."""
    if t == 0 or D.shape[0] == 0:
        return z.copy()
    fit = lsq_linear(t * D.T, z, bounds=(-1.0, 1.0), method="bvls", tol=1e-15, max_iter=10_000)
    return z - t * D.T @ fit.x


def _gradient_matrix(n0, n1):
    """Dense forward differences along axis 0 then axis 1 (Neumann: last difference 0), rows (2·n0·n1)."""
    d0 = np.kron(np.vstack([_difference_matrix(n0), np.zeros((1, n0))]), np.eye(n1))
    d1 = np.kron(np.eye(n0), np.vstack([_difference_matrix(n1), np.zeros((1, n1))]))
    return np.vstack([d0, d1])


def _signals(n):
    noisy = RNG.normal(size=n)
    steps = np.repeat(3.0 * RNG.normal(size=n // 5 + 1), 5)[:n] + 0.1 * RNG.normal(size=n)
    return noisy, steps


# One compilation per prior configuration and shape: the step is passed as an array (a Python
# float would be a static argument of filter_jit and recompile for each value).
_prox1d = eqx.filter_jit(lambda prior, z, step: prior.prox(z, step))
_prox2d = eqx.filter_jit(lambda prior, z, step: prior.prox_solution(z, step))


def prox1d(prior, z, step):
    return _prox1d(prior, z, jnp.asarray(step, jnp.result_type(z)))


def prox2d(prior, z, step):
    return _prox2d(prior, z, jnp.asarray(step, jnp.result_type(z)))


# ---------------------------------------------------------------------------------------------- 1D


@pytest.mark.parametrize("n", [1, 2, 13, 50])
def test_tv1d_prox_equals_the_dual_qp(n):
    prior = TV1D(1.0)
    for z in _signals(n):
        for t in (0.0, 1e-3, 0.05, 0.4, 2.0, 1e4):
            x = np.asarray(prox1d(prior, jnp.asarray(z), t))
            np.testing.assert_allclose(x, _bvls_prox(z, t, _difference_matrix(n)), rtol=0, atol=1e-10)
        np.testing.assert_array_equal(np.asarray(prox1d(prior, jnp.asarray(z), 0.0)), z)  # t = 0: identity
        np.testing.assert_allclose(np.asarray(prox1d(prior, jnp.asarray(z), 1e4)), np.full(n, z.mean()), atol=1e-12)


def test_tv1d_weight_step_float32_and_vmap():
    z = RNG.normal(size=(3, 13))
    # the prox depends on step * weight only
    a = prox1d(TV1D(0.5), jnp.asarray(z[0]), 0.8)
    b = prox1d(TV1D(0.2), jnp.asarray(z[0]), 2.0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-14)
    batched = jax.vmap(lambda zi: TV1D(0.5).prox(zi, 0.8))(jnp.asarray(z))
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), _bvls_prox(z[i], 0.4, _difference_matrix(13)), atol=1e-10)
    single = prox1d(TV1D(0.5), jnp.asarray(z[0], jnp.float32), 0.8)
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(single), np.asarray(a), atol=1e-5)


def test_tv1d_value():
    x = jnp.array([1.0, 3.0, 2.0, 2.0])
    assert float(TV1D(0.5).value(x)) == pytest.approx(0.5 * (2 + 1 + 0))


def test_tv1d_derivatives_match_finite_differences():
    """Exact custom_jvp (segment averaging + the sign formula) vs central differences away from ties.

    The prox is piecewise affine in (z, step, weight): central differences are exact up to
    round-off while the segments do not change, so the tolerance is 1e-8 at eps = 1e-6.
    """
    z = jnp.asarray(_signals(20)[1])
    weight, step = jnp.asarray(0.7), jnp.asarray(0.5)

    @jax.jit
    def f(z, weight, step):
        return TV1D(weight).prox(z, step)

    x = f(z, weight, step)
    assert 2 < len(np.unique(np.round(np.asarray(x), 12))) < 20  # some segments, some jumps
    eps = 1e-6
    dz = jnp.asarray(RNG.normal(size=20))
    for tangent in ((dz, 0.0, 0.0), (jnp.zeros(20), 1.0, 0.0), (jnp.zeros(20), 0.0, 1.0), (dz, 0.3, -0.2)):
        _, jvp = jax.jvp(f, (z, weight, step), tangent)
        plus = f(z + eps * tangent[0], weight + eps * tangent[1], step + eps * tangent[2])
        minus = f(z - eps * tangent[0], weight - eps * tangent[1], step - eps * tangent[2])
        np.testing.assert_allclose(np.asarray(jvp), np.asarray((plus - minus) / (2 * eps)), atol=1e-8)
    # reverse mode (JAX transposes the linear tangent rule) agrees with forward mode
    w = jnp.asarray(RNG.normal(size=20))
    grads = jax.grad(lambda *a: jnp.vdot(w, f(*a)), argnums=(0, 1, 2))(z, weight, step)
    jz = jax.jvp(f, (z, weight, step), (dz, 0.0, 0.0))[1]
    assert float(jnp.vdot(w, jz)) == pytest.approx(float(jnp.vdot(grads[0], dz)), rel=1e-12)
    for i, t in ((1, (jnp.zeros(20), 1.0, 0.0)), (2, (jnp.zeros(20), 0.0, 1.0))):
        assert float(grads[i]) == pytest.approx(float(jnp.vdot(w, jax.jvp(f, (z, weight, step), t)[1])), rel=1e-12)


# ---------------------------------------------------------------------------------------------- 2D

N0 = N1 = 8
G = _gradient_matrix(N0, N1)


def _image():
    return np.kron(RNG.normal(size=(2, 2)), np.ones((4, 4))) + 0.2 * RNG.normal(size=(N0, N1))


def _slsqp_iso_prox(z, t):
    """Isotropic reference: the dual over pointwise discs by SLSQP; returns (u, its duality gap)."""
    zf, n = z.ravel(), z.size
    B = t * G.T

    def cost(p):
        r = zf - B @ p
        return 0.5 * r @ r, -B.T @ r

    def discs(p):
        return 1.0 - p[:n] ** 2 - p[n:] ** 2

    def discs_jac(p):
        return np.hstack([np.diag(-2 * p[:n]), np.diag(-2 * p[n:])])

    fit = minimize(cost, np.zeros(2 * n), jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": discs, "jac": discs_jac}], options={"ftol": 1e-16, "maxiter": 2000})
    p = fit.x.reshape(2, n)
    p = p / np.maximum(1.0, np.hypot(p[0], p[1]))  # feasible, so the gap below is a valid bound
    u = zf - B @ p.ravel()
    du = (G @ u).reshape(2, n)
    return u.reshape(z.shape), t * (np.sum(np.hypot(du[0], du[1])) - np.vdot(du, p))


def _objective(u, z, t, isotropic):
    du = (G @ np.ravel(u)).reshape(2, -1)
    tv = np.sum(np.hypot(du[0], du[1])) if isotropic else np.sum(np.abs(du))
    return 0.5 * np.sum((np.asarray(u) - z) ** 2) + t * tv


def test_tv2d_anisotropic_equals_the_dual_qp_and_tv1d_on_a_row():
    prior = TV2D(1.0, isotropic=False)
    keep = np.any(G != 0, axis=1)  # the Neumann rows are zero
    for t in (0.05, 0.3, 3.0):
        z = _image()
        solution = prox2d(prior, jnp.asarray(z), t)
        assert solution.converged and float(solution.stats["residual"]) <= 1e-10
        ref = _bvls_prox(z.ravel(), t, G[keep]).reshape(N0, N1)
        np.testing.assert_allclose(np.asarray(solution.value), ref, atol=1e-8)
        # the reported duality gap certifies the error: ½‖u − u*‖² ≤ gap
        assert 0.5 * np.sum((np.asarray(solution.value) - ref) ** 2) <= float(solution.stats["gap"]) + 1e-15
    row = RNG.normal(size=(1, 30))
    np.testing.assert_allclose(
        np.asarray(prox2d(prior, jnp.asarray(row), 0.4).value[0]),
        np.asarray(prox1d(TV1D(1.0), jnp.asarray(row[0]), 0.4)), atol=1e-8,
    )


def test_tv2d_isotropic_equals_slsqp():
    """Agreement 1e-7: SLSQP stalls at a duality gap of ≲1e-8 and ours stops at a dual residual of 1e-10
    (the √(2·gap) bounds, ~1e-4, are very pessimistic: the errors are first order in the gap on flat
    regions); our objective is at most the reference's + 1e-9 (often below it: SLSQP's is the looser)."""
    prior = TV2D(1.0, isotropic=True)
    for t in (0.3, 1.0):
        z = _image()
        solution = prox2d(prior, jnp.asarray(z), t)
        assert solution.converged
        ref, ref_gap = _slsqp_iso_prox(z, t)
        assert ref_gap < 1e-6
        np.testing.assert_allclose(np.asarray(solution.value), ref, atol=1e-7)
        assert _objective(solution.value, z, t, True) <= _objective(ref, z, t, True) + 1e-9
        assert float(TV2D(2.0).value(jnp.asarray(z))) == pytest.approx(2 * _objective(z, z, 1.0, True), rel=1e-13)


@pytest.mark.parametrize("prior", [TV1D(0.3), TV2D(0.3, isotropic=True), TV2D(0.3, isotropic=False)], ids=["1d", "iso", "aniso"])
def test_firm_nonexpansiveness_and_optimality(prior):
    shape = (40,) if isinstance(prior, TV1D) else (N0, N1)
    step = 1.7

    def prox(z):
        return prox1d(prior, z, step) if isinstance(prior, TV1D) else prox2d(prior, z, step).value

    def objective(u, z):
        return float(prior.value(u) + 0.5 * jnp.sum((u - z) ** 2) / step)

    for _ in range(4):
        x, y = (jnp.asarray(RNG.normal(size=shape)) for _ in range(2))
        px, py = prox(x), prox(y)
        # ⟨Px − Py, x − y⟩ ≥ ‖Px − Py‖² (firm non-expansiveness), up to the solver's accuracy
        assert float(jnp.vdot(px - py, x - y)) >= float(jnp.sum((px - py) ** 2)) - 1e-9
        best = objective(px, x)
        for scale in (1e-1, 1e-3):
            for _ in range(5):
                assert best <= objective(px + scale * jnp.asarray(RNG.normal(size=shape)), x) + 1e-12


def test_tv2d_derivatives():
    """IFT derivatives of the 2D prox: Taylor tests in z, step and weight, and a jvp/vjp dot-product test.

    The prox is piecewise smooth; away from changes of the active set a Taylor remainder
    |u(m + εh) − u(m) − ε u'(m)h| is O(ε²) (rate ≥ 1.9) until it reaches the solver's accuracy
    (the dual residual 1e-12 here, so errors ~1e-11), which sets the smallest ε used.
    """
    z = jnp.asarray(_image())
    for isotropic in (True, False):
        prior = TV2D(1.0, isotropic=isotropic, tolerance=1e-12)

        @jax.jit
        def f(z, weight, step, prior=prior):
            return eqx.tree_at(lambda p: p.weight, prior, weight).prox(z, step)

        primal = (z, jnp.asarray(1.0), jnp.asarray(0.3))
        jvp = jax.jit(lambda primal, h, f=f: jax.jvp(f, primal, h))  # one compilation gives u and u'h
        directions = [
            (jnp.asarray(RNG.normal(size=(N0, N1))), jnp.asarray(0.0), jnp.asarray(0.0)),
            (jnp.zeros((N0, N1)), jnp.asarray(0.0), jnp.asarray(1.0)),
            (jnp.zeros((N0, N1)), jnp.asarray(1.0), jnp.asarray(0.0)),
        ]
        for h in directions:
            u, du = jvp(primal, h)
            residuals = []
            for eps in (1e-3 * 2.0**-i for i in range(4)):
                moved = jvp(tuple(a + eps * b for a, b in zip(primal, h)), h)[0]
                residuals.append(float(jnp.max(jnp.abs(moved - u - eps * du))))
            rates = np.log2(np.array(residuals[:-1]) / np.array(residuals[1:]))
            assert np.all((rates >= 1.9) | (np.array(residuals[1:]) < 1e-10)), (isotropic, residuals)
        # dot-product test: ⟨J dx, dy⟩ = ⟨dx, Jᵀ dy⟩ for the derivative in z
        dx, dy = (jnp.asarray(RNG.normal(size=(N0, N1))) for _ in range(2))
        jdx = jvp(primal, (dx, jnp.asarray(0.0), jnp.asarray(0.0)))[1]
        jtdy = jax.jit(lambda primal, dy, f=f: jax.vjp(f, *primal)[1](dy)[0])(primal, dy)
        lhs, rhs = float(jnp.vdot(jdx, dy)), float(jnp.vdot(dx, jtdy))
        assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), 1e-30)


# --------------------------------------------------------------------------------------- bad input


def test_bad_input():
    for bad in (-1.0, float("nan"), float("inf"), [1.0, 2.0]):
        with pytest.raises(ValueError, match="TV1D: weight must be a finite scalar >= 0"):
            TV1D(bad)
        with pytest.raises(ValueError, match="TV2D: weight must be a finite scalar >= 0"):
            TV2D(bad)
    with pytest.raises(ValueError, match=r"TV1D acts on a non-empty 1D array .* shape \(3, 4\)"):
        TV1D(1.0).check_control(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"TV2D acts on a non-empty 2D array .* shape \(5,\)"):
        TV2D(1.0).check_control(jnp.zeros(5))
    TV1D(1.0).check_control(jnp.zeros(5))
    TV2D(1.0).check_control(jnp.zeros((3, 4)))
    for tol in (0.0, -1e-3, 1.0):
        with pytest.raises(ValueError, match="TV2D: tolerance must be a number in"):
            TV2D(1.0, tolerance=tol)
    with pytest.raises(ValueError, match="TV2D: max_steps must be a positive integer"):
        TV2D(1.0, max_steps=0)


def test_tv2d_reports_non_convergence():
    z = jnp.asarray(_image())
    quiet = prox2d(TV2D(1.0, max_steps=3, throw=False), z, 0.3)
    assert quiet.result == dp.RESULTS.max_steps_reached and int(quiet.stats["num_steps"]) == 3
    with pytest.raises(Exception, match="did not reach tolerance"):
        jax.block_until_ready(prox2d(TV2D(1.0, max_steps=3), z, 0.3))
