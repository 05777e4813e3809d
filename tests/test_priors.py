"""Priors: each prox equals its definition (independent references), is firmly non-expansive,
satisfies the Moreau identity, has correct derivatives, and bad input is refused by name."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import diffphys as dp
from diffphys import observe as ob
from diffphys import priors as P

GAMMA = 0.7
N = 6
W = np.array([0.2, 0.5, 1.0, 0.0, 0.8, 0.3])  # weighted L1 with an unpenalised entry
INF = np.inf


class DenseSqrtCov(ob.AbstractCovariance):
    """B = S Sᵀ with a dense, non-square S (a control space larger than the state): a test covariance."""

    s: jax.Array

    def sqrt(self, v):
        return self.s @ v

    def sqrt_transpose(self, w):
        return self.s.T @ w


_S = np.asarray(jax.random.normal(jax.random.key(7), (N, N + 2))) / np.sqrt(N)
_MEAN = np.linspace(-0.4, 0.6, N)
_GRID = dp.Grid1D(N, 1.0, bc="neumann")

# Separable priors: entry i of g is l1[i]|u| + l2[i]/2 u² on [lo[i], hi[i]] (written here from the
# definitions, not read back from the priors).
SEPARABLE = {
    "l1": (lambda: P.L1(0.7), 0.7, 0.0, -INF, INF),
    "l1-weighted": (lambda: P.L1(W), W, 0.0, -INF, INF),
    "elastic-net": (lambda: P.ElasticNet(0.6, 1.5), 0.6, 1.5, -INF, INF),
    "elastic-net-weighted": (lambda: P.ElasticNet(W, 2 * W[::-1]), W, 2 * W[::-1], -INF, INF),
    "box": (lambda: P.Box(-0.5, np.linspace(0.0, 1.0, N)), 0.0, 0.0, -0.5, np.linspace(0.0, 1.0, N)),
    "nonnegative": (P.NonNegative, 0.0, 0.0, 0.0, INF),
    "sum-l1-box": (lambda: P.Sum(P.L1(W), P.Box(-1.0, 0.4)), W, 0.0, -1.0, 0.4),
    "sum-elastic-net-nonnegative": (lambda: P.Sum(P.NonNegative(), P.ElasticNet(0.3, 0.5)), 0.3, 0.5, 0.0, INF),
}
# Group L1 on a (3, 2) control: groups are rows (axis=-1) or columns (axis=0); weights per group.
GROUP = {
    "group-l1-rows": (lambda: P.GroupL1(0.9), 0.9 * np.ones((3, 1))),
    "group-l1-columns-weighted": (lambda: P.GroupL1(jnp.array([0.5, 1.5]), axis=0), np.array([[0.5, 1.5]])),
}
GAUSSIAN = {
    "gaussian-dense-sqrt": lambda: P.Gaussian(DenseSqrtCov(jnp.asarray(_S)), _MEAN),
    "gaussian-diffusion-b": lambda: P.Gaussian(ob.DiffusionB(_GRID, 0.8, 0.25), _MEAN),
}
ALL = {**{k: v[0] for k, v in SEPARABLE.items()}, **{k: v[0] for k, v in GROUP.items()}, **GAUSSIAN}


def _shape(name):
    return (3, 2) if name.startswith("group") else (N,)


def _point(name, key=0, scale=2.0):
    return scale * jax.random.normal(jax.random.key(key), _shape(name))


def _dense(cov):
    """B as a dense matrix, from B applied to the identity's columns."""
    return np.asarray(jax.vmap(cov)(jnp.eye(N))).T


# ---------------------------------------------------------------------------- the definition


@pytest.mark.parametrize("name", SEPARABLE)
def test_separable_prox_is_the_entrywise_argmin(name):
    make, l1, l2, lo, hi = SEPARABLE[name]
    prior = make()
    z = np.asarray(_point(name))
    got = np.asarray(prior.prox(jnp.asarray(z), GAMMA))
    l1, l2, lo, hi = (np.broadcast_to(a, (N,)) for a in (l1, l2, lo, hi))
    ref = np.empty(N)
    for i in range(N):
        def phi(u, i=i):
            return 0.5 * (u - z[i]) ** 2 + GAMMA * (l1[i] * abs(u) + 0.5 * l2[i] * u**2)

        # The minimiser of this 1-strongly convex function lies within |u - z| <= gamma*l1 of z (or on
        # the box), so the bracket [-20, 20] loses nothing for |z| <~ 8.
        res = scipy.optimize.minimize_scalar(
            phi, bounds=(max(lo[i], -20.0), min(hi[i], 20.0)), method="bounded", options={"xatol": 1e-12}
        )
        ref[i] = res.x
        # The prox attains an objective no larger than the numerical minimiser's.
        assert phi(got[i]) <= res.fun + 1e-14
    # Bounded Brent stops once its bracket is about sqrt(machine eps)*|u| wide, so the numerical
    # minimiser is only accurate to ~1e-8; the exactness is the objective check above.
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert np.all(got >= lo) and np.all(got <= hi)


def _group_argmin(zk, tau):
    """argmin_u ½|u - zk|² + tau |u|₂ as the cone program min ½|u - zk|² + tau t s.t. t >= |u|₂, by SLSQP.

    Independent of the closed form. SLSQP often ends with "positive directional derivative" at this
    tight ftol, so success is not asserted: over 2000 random groups it matched the minimiser to 6e-11.
    """
    m = zk.size

    def norm(u):
        return np.sqrt(np.sum(u**2))

    constraint = {
        "type": "ineq",
        "fun": lambda v: v[m] - norm(v[:m]),
        "jac": lambda v: np.r_[-v[:m] / max(norm(v[:m]), 1e-300), 1.0],
    }
    res = scipy.optimize.minimize(
        lambda v: 0.5 * np.sum((v[:m] - zk) ** 2) + tau * v[m],
        np.r_[zk, norm(zk) + 1.0],
        jac=lambda v: np.r_[v[:m] - zk, tau],
        constraints=[constraint],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x[:m], 0.5 * np.sum((res.x[:m] - zk) ** 2) + tau * norm(res.x[:m])


@pytest.mark.parametrize("name", GROUP)
def test_group_l1_prox_is_the_argmin(name):
    make, lam = GROUP[name]
    prior = make()
    axis = -1 if lam.shape == (3, 1) else 0
    z = np.array(_point(name, scale=1.5))
    z[1] *= 0.2  # a row small enough that (with rows as groups) it is thresholded to zero
    got = np.asarray(prior.prox(jnp.asarray(z), GAMMA))
    # Optimality (exact, independent of the closed form): z - u is in gamma * the subdifferential.
    norms = np.sqrt(np.sum(got**2, axis=axis, keepdims=True))
    zero = (norms == 0).squeeze(axis)
    assert zero.any() or axis == 0
    zn = np.sqrt(np.sum(z**2, axis=axis, keepdims=True))
    assert np.all((zn <= GAMMA * lam + 1e-12) | (norms > 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(np.where(norms > 0, z - got - GAMMA * lam * got / norms, 0.0), 0.0, atol=1e-12)
    # Each group's cone program solved by SLSQP (accurate to ~1e-10, see _group_argmin); the prox
    # must also reach an objective no larger than the numerical minimiser's.
    groups, taus = np.moveaxis(z, axis, -1).reshape(-1, 2 if axis == -1 else 3), GAMMA * lam.ravel()
    got_groups = np.moveaxis(got, axis, -1).reshape(groups.shape)
    for zk, tau, uk in zip(groups, np.broadcast_to(taus, len(groups)), got_groups):
        ref, fun = _group_argmin(zk, tau)
        assert 0.5 * np.sum((uk - zk) ** 2) + tau * np.linalg.norm(uk) <= fun + 1e-14
        np.testing.assert_allclose(uk, ref, atol=1e-8)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_prox_and_value_equal_dense_solves_and_satisfy_moreau(name):
    prior = GAUSSIAN[name]()
    B = _dense(prior.covariance)
    z = np.asarray(_point(name))
    prox, value = eqx.filter_jit(lambda p, z: (p.prox(z, GAMMA), p.value(z)))(prior, jnp.asarray(z))
    # argmin_u ½|u - z|² + γ/2 (u - m)ᵀB⁻¹(u - m): the gradient vanishes where (I + γB⁻¹) u = z + γB⁻¹m.
    # CG runs to rtol 1e-10 on a system with condition number <= 1 + |S|²/γ (small here): 1e-8 holds.
    Binv = np.linalg.inv(B)
    ref = np.linalg.solve(np.eye(N) + GAMMA * Binv, z + GAMMA * Binv @ _MEAN)
    np.testing.assert_allclose(prox, ref, rtol=1e-8, atol=1e-8)
    d = z - _MEAN
    np.testing.assert_allclose(value, 0.5 * d @ np.linalg.solve(B, d), rtol=1e-8)
    # Moreau: g*(y) = mᵀy + ½yᵀBy, so prox_{g*/γ}(v) solves (I + B/γ) y = v - m/γ.
    conjugate = np.linalg.solve(np.eye(N) + B / GAMMA, z / GAMMA - _MEAN / GAMMA)
    np.testing.assert_allclose(z - prox - GAMMA * conjugate, 0.0, atol=1e-9)


def test_values_follow_their_definitions():
    x = np.array([-1.5, -0.2, 0.0, 0.3, 0.9, 2.0])
    assert np.isclose(P.L1(W).value(jnp.asarray(x)), np.sum(W * np.abs(x)), rtol=1e-14)
    assert np.isclose(P.ElasticNet(0.6, 1.5).value(jnp.asarray(x)), 0.6 * np.abs(x).sum() + 0.75 * (x**2).sum())
    assert P.Box(-2.0, 2.0).value(jnp.asarray(x)) == 0.0 and P.Box(-1.0, 2.0).value(jnp.asarray(x)) == np.inf
    assert P.NonNegative().value(jnp.abs(jnp.asarray(x))) == 0.0 and P.NonNegative().value(jnp.asarray(x)) == np.inf
    assert P.Sum(P.L1(1.0), P.Box(-2.0, 2.0)).value(jnp.asarray(x)) == np.abs(x).sum()
    rows = x.reshape(3, 2)
    assert np.isclose(P.GroupL1(0.5).value(jnp.asarray(rows)), 0.5 * np.linalg.norm(rows, axis=1).sum(), rtol=1e-14)
    assert np.isclose(P.GroupL1(0.5, axis=(0, 1)).value(jnp.asarray(rows)), 0.5 * np.linalg.norm(x), rtol=1e-14)


# ------------------------------------------------------------------- firm non-expansiveness


@pytest.mark.parametrize("name", ALL)
def test_prox_is_firmly_nonexpansive_and_jit_compatible(name):
    prior = ALL[name]()
    keys = jax.random.split(jax.random.key(3), 2 * 16)
    a = jax.vmap(lambda k: 2.0 * jax.random.normal(k, _shape(name)))(keys[:16])
    b = jax.vmap(lambda k: 2.0 * jax.random.normal(k, _shape(name)))(keys[16:])
    prox = eqx.filter_jit(lambda p, z: jax.vmap(lambda zi: p.prox(zi, GAMMA))(z))
    pa, pb = prox(prior, a), prox(prior, b)
    if name not in GAUSSIAN:  # (the Gaussian's jitted prox is compared with a dense solve above)
        np.testing.assert_allclose(pa[0], prior.prox(a[0], GAMMA), rtol=1e-12, atol=1e-12)  # jit = eager
    axes = tuple(range(1, a.ndim))
    inner = jnp.sum((pa - pb) * (a - b), axis=axes)
    assert np.all(inner >= jnp.sum((pa - pb) ** 2, axis=axes) - 1e-12)


# --------------------------------------------------------------------------- Moreau identity


def _moreau(prior, z, conjugate_prox):
    """z - (prox_{γg}(z) + γ prox_{g*/γ}(z/γ)), with the conjugate's prox written in the test."""
    return np.asarray(z) - np.asarray(prior.prox(z, GAMMA)) - GAMMA * conjugate_prox(np.asarray(z) / GAMMA)


def test_moreau_identity_l1_and_group_l1():
    # (λ|·|)* is the indicator of the ∞-ball of radius λ: its prox (any scaling) is clipping.
    for weight in (0.7, W):
        z = _point("l1")
        np.testing.assert_allclose(_moreau(P.L1(weight), z, lambda y: np.clip(y, -weight, weight)), 0.0, atol=1e-14)
    # (λ‖·‖₂)* per group is the indicator of the 2-ball of radius λ: radial projection.
    for name, (make, lam) in GROUP.items():
        axis = -1 if lam.shape == (3, 1) else 0

        def project(y, lam=lam, axis=axis):
            norm = np.sqrt(np.sum(y**2, axis=axis, keepdims=True))
            return y * np.minimum(1.0, lam / norm)

        np.testing.assert_allclose(_moreau(make(), _point(name), project), 0.0, atol=1e-14)


def test_moreau_identity_elastic_net():
    # f = λ1|x| + λ2/2 x² has f*(y) = (|y| - λ1)₊² / (2λ2); the prox of f*/γ at v is v when |v| <= λ1,
    # else sign(v)(γλ2|v| + λ1)/(γλ2 + 1) (stationarity of the 1D quadratic).
    l1, l2 = 0.6, 1.5

    def conj_prox(v):
        big = np.sign(v) * (GAMMA * l2 * np.abs(v) + l1) / (GAMMA * l2 + 1.0)
        return np.where(np.abs(v) <= l1, v, big)

    np.testing.assert_allclose(_moreau(P.ElasticNet(l1, l2), _point("l1"), conj_prox), 0.0, atol=1e-14)


# ----------------------------------------------------------------------------- derivatives


def _loss(u):
    c = jnp.linspace(-1.0, 1.0, u.size).reshape(u.shape)
    return jnp.sum(c * u + 0.5 * u**2 + jnp.sin(u))


def _central(f, x, h=1e-6):
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(jnp.asarray(x + e)) - f(jnp.asarray(x - e))) / (2 * h)
    return g


# Points at least 0.03 (>> the finite-difference step) away from every kink: |z| = γλ, the box bounds, ‖z_k‖ = γλ.
Z_FLAT = jnp.array([-2.0, -0.25, 0.15, 0.7, 1.3, 2.5])
DERIVATIVE_CASES = {
    # name: (builder of a prior from its parameters, parameters, z)
    "l1": (P.L1, (0.4,), Z_FLAT),
    "l1-weighted": (P.L1, (jnp.array([0.2, 0.1, 0.05, 0.0, 0.8, 0.3]),), Z_FLAT),
    "elastic-net": (P.ElasticNet, (0.4, 1.2), Z_FLAT),
    "box": (P.Box, (jnp.full(N, -1.0), jnp.array([0.5, 0.5, 1.0, 0.5, 1.0, 2.0])), Z_FLAT),
    "sum-l1-box": (lambda w, lo, hi: P.Sum(P.L1(w), P.Box(lo, hi)), (0.1, -1.0, 1.0), Z_FLAT),
    "group-l1": (P.GroupL1, (jnp.array([0.5, 2.0, 0.3]),), jnp.array([[1.0, -2.0], [0.5, 0.3], [0.0, 0.0]])),
}


@pytest.mark.parametrize("name", DERIVATIVE_CASES)
def test_prox_derivatives_match_finite_differences(name):
    build, params, z = DERIVATIVE_CASES[name]

    def f(z, gamma, *params):
        return _loss(build(*params).prox(z, gamma))

    grads = jax.jit(jax.grad(f, argnums=tuple(range(2 + len(params)))))(z, GAMMA, *params)
    args = [z, GAMMA, *params]
    f_jit = jax.jit(f)
    for k, (g, a) in enumerate(zip(grads, args)):
        assert np.all(np.isfinite(g))
        fd = _central(lambda v, k=k: float(f_jit(*args[:k], v, *args[k + 1:])), a)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=f"argument {k}")


def test_group_l1_derivatives_are_finite_at_a_zero_group():
    z = jnp.array([[1.0, -2.0], [0.0, 0.0]])

    @jax.jit
    def derivatives(z, weight):
        return (
            jax.jacobian(lambda z: P.GroupL1(weight).prox(z, GAMMA))(z),
            jax.grad(lambda z: P.GroupL1(weight).value(z))(z),
            jax.grad(lambda w: _loss(P.GroupL1(w).prox(z, GAMMA)))(weight),
        )

    for weight in (0.5, 0.0):
        jac, grad_value, grad_weight = derivatives(z, weight)
        assert np.all(np.isfinite(jac)) and np.all(np.isfinite(grad_value)) and np.isfinite(grad_weight)
        # On a zero group the prox is 0 near z (threshold > 0) or the identity (threshold 0).
        np.testing.assert_array_equal(jac[1, :, 1, :], np.eye(2) if weight == 0.0 else 0.0)


def test_gaussian_prox_derivatives_pass_a_taylor_test():
    """One Taylor test along a random direction in (z, γ, m, the arrays inside B): a wrong derivative in
    any of them would leave a first-order residual (rate 1)."""
    prior = GAUSSIAN["gaussian-diffusion-b"]()
    m = (prior, _point("gaussian"), jnp.asarray(GAMMA))
    taylor = dp.check.taylor_test(lambda m: _loss(m[0].prox(m[1], m[2])), m, eps0=1e-2)
    assert taylor.rate >= 1.9, taylor


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: P.L1(-0.1), r"L1: weight .* >= 0, got -0\.1"),
        (lambda: P.L1(jnp.array([0.1, -1.0])), r"L1: weight .*got Array\(\[ 0\.1, -1\. *\]"),  # concrete jax array
        (lambda: P.L1(np.nan), r"L1: weight .*finite.*got nan"),
        (lambda: P.ElasticNet(0.1, -2.0), r"ElasticNet: l2_weight .*got -2\.0"),
        (lambda: P.ElasticNet(np.inf, 1.0), r"ElasticNet: l1_weight .*got inf"),
        (lambda: P.GroupL1(-1.0), r"GroupL1: weight .*got -1\.0"),
        (lambda: P.GroupL1(np.nan), r"GroupL1: weight .*got nan"),
        (lambda: P.GroupL1(1.0, axis="rows"), r"GroupL1: axis must be an int .*got 'rows'"),
        (lambda: P.Box(1.0, 0.0), r"Box: the box is empty: lower = 1\.0 and upper = 0\.0"),
        (lambda: P.Box(np.zeros(3), [1.0, -1.0, 1.0]), r"lower = 0\.0 and upper = -1\.0 at index \(1,\)"),
        (lambda: P.Box(np.nan, 1.0), r"Box: lower .*NaN not.*got nan"),
        (lambda: P.Box(np.zeros(3), np.ones(2)), r"Box: lower \(shape \(3,\)\) and upper \(shape \(2,\)\)"),
        (lambda: P.Sum(P.GroupL1(1.0), P.Gaussian(ob.DiagonalR(1.0))).prox(jnp.ones(2), 1.0),
         r"GroupL1 \+ Gaussian has no exact prox.*splitting solver"),
        (lambda: P.Sum(P.L1(1.0), P.L1(2.0)).prox(jnp.ones(2), 1.0), r"L1 \+ L1 .*merge several into one"),
        (lambda: P.Sum(), r"Sum: give at least one prior"),
        (lambda: P.Gaussian(ob.DiagonalR(1.0), mean=np.inf), r"Gaussian: mean must be finite.*found inf"),
    ],
)
def test_bad_construction_raises_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: P.Gaussian(np.eye(3)), r"Gaussian: covariance must be a diffphys covariance.*got ndarray"),
        (lambda: P.Gaussian(ob.DiagonalR(1.0), linear_solver="cg"), r"linear_solver must be .*got str"),
        (lambda: P.Sum(P.L1(1.0), 0.5), r"Sum: every term must be a diffphys prior.*got float"),
    ],
)
def test_wrong_types_raise_type_error_naming_the_type(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize(
    "prior, match",
    [
        (P.L1(jnp.ones(3)), r"L1: a per-entry weight must have the control's shape \(6,\), got \(3,\)"),
        (P.ElasticNet(0.1, jnp.ones(4)), r"ElasticNet: a per-entry l2_weight .*\(6,\), got \(4,\)"),
        (P.Box(0.0, jnp.ones(5)), r"Box: a per-entry upper bound .*\(6,\), got \(5,\)"),
        (P.GroupL1(jnp.ones(6)), r"GroupL1: a per-group weight must have the shape of the groups \(\)"),
        (P.GroupL1(1.0, axis=1), r"GroupL1: axis=1 does not name distinct axes of a 1D control"),
        (P.Gaussian(ob.DiagonalR(1.0), mean=jnp.zeros(2)), r"Gaussian: a per-entry mean .*got \(2,\)"),
        (P.Gaussian(ob.DiffusionB(dp.Grid1D(4, 1.0), 1.0, 0.3)), r"DiffusionB cannot act on a control of shape \(6,\)"),
        (P.Sum(P.L1(1.0), P.Box(jnp.zeros(2))), r"Box: a per-entry lower bound"),
    ],
)
def test_check_control_refuses_mismatched_shapes(prior, match):
    with pytest.raises(ValueError, match=match):
        prior.check_control(jnp.zeros(N))


def test_sum_flattens_and_exposes_terms_and_composite_checks_the_control():
    l1, box = P.L1(0.3), P.NonNegative()
    s = P.Sum(P.Sum(l1), box)
    assert s.terms == (l1, box)
    assert P.Sum(P.Gaussian(ob.DiagonalR(1.0))).terms[0].covariance == ob.DiagonalR(1.0)  # one term: any prior
    from diffphys import solvers as S

    problem = S.LinearLeastSquares(jnp.eye(N), jnp.ones(N))
    assert S.Composite(problem, s).prior() is s
    with pytest.raises(ValueError, match=r"L1: a per-entry weight"):
        S.Composite(problem, P.Sum(P.L1(jnp.ones(2)), box))
