r"""Derivative checks a user can run to trust a gradient: the dot-product test and the Taylor test.

Both accept any function of pytrees (arrays, tuples, equinox modules such as a model); only the
floating-point array leaves of the input are perturbed, the rest is held fixed.

* :func:`dot_product_test` compares $\langle J\,\delta x, \delta y\rangle$ with
  $\langle \delta x, J^\top \delta y\rangle$, where $J$ is the Jacobian of the function: the
  tangent-linear (``jvp``) and adjoint (``vjp``) models must be exact transposes of each other.
* :func:`adjoint_test` does the same for a hand-written linear map and its transpose.
* :func:`taylor_test` checks a gradient against the function itself:
  $r(\varepsilon) = |J(m+\varepsilon h) - J(m) - \varepsilon\langle\nabla J(m), h\rangle| = O(\varepsilon^2)$,
  so halving ε divides the residual by 4 (observed rate 2); a wrong gradient gives rate 1.

Reference: P. E. Farrell, D. A. Ham, S. W. Funke, M. E. Rognes, "Automated derivation of the
adjoint of high-level transient finite element programs", SIAM J. Sci. Comput. 35 (2013)
C369-C393 (Taylor tests); the dot-product test is the classical adjoint check of data assimilation
(e.g. F.-X. Le Dimet, O. Talagrand, Tellus A 38 (1986) 97-110).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._one_off import drawn
from ._types import PyTree

__all__ = ["DotProductResult", "TaylorResult", "adjoint_test", "dot_product_test", "taylor_test"]


def _inner(a: PyTree, b: PyTree) -> jax.Array:
    """Euclidean inner product of two pytrees of the same structure."""
    leaves = [jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]
    return jnp.real(sum(leaves, jnp.zeros(())))


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _standard_normal(key: jax.Array, treedef, specs: tuple) -> PyTree:
    keys = jax.random.split(key, max(len(specs), 1))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, shape, dtype) for k, (shape, dtype) in zip(keys, specs)])


def _random_like(key: jax.Array, tree: PyTree) -> PyTree:
    """Standard normal pytree with the structure, shapes and dtypes of ``tree``'s array leaves (drawn by one
    program compiled for compile speed: see ``diffphys._one_off``)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return drawn(_standard_normal, (treedef, tuple((_shape(x), jnp.dtype(x.dtype)) for x in leaves)), key)


def _differentiable_part(fn: Callable, x: PyTree):
    """Split ``x`` into its floating-point arrays and the rest; return ``(f(diff), diff)``."""
    diff, static = eqx.partition(x, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(diff):
        raise ValueError("the input has no floating-point array leaves to perturb")
    return (lambda d: fn(eqx.combine(d, static))), diff


def _check_like(name: str, given: PyTree, reference: PyTree) -> None:
    s1, s2 = jax.tree_util.tree_structure(given), jax.tree_util.tree_structure(reference)
    shapes1 = [_shape(x) for x in jax.tree_util.tree_leaves(given)]
    shapes2 = [_shape(x) for x in jax.tree_util.tree_leaves(reference)]
    if s1 != s2 or shapes1 != shapes2:
        raise ValueError(f"{name} must have the structure and shapes {shapes2} of its reference, got {shapes1}")


@dataclasses.dataclass(frozen=True)
class DotProductResult:
    """Outcome of :func:`dot_product_test`.

    ``forward`` is ⟨J dx, dy⟩, ``adjoint`` is ⟨dx, Jᵀ dy⟩ and ``relative_error`` is
    |forward − adjoint| / max(|forward|, |adjoint|, tiny): round-off (~1e-15 in float64) for an
    exact adjoint.
    """

    forward: float
    adjoint: float
    relative_error: float


def dot_product_test(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    key: jax.Array | None = None,
    dx: PyTree | None = None,
    dy: PyTree | None = None,
) -> DotProductResult:
    r"""Dot-product (adjoint) test of ``fn`` at ``x``: $\langle J\,dx, dy\rangle = \langle dx, J^\top dy\rangle$.

    $J\,dx$ comes from forward mode (``jax.jvp``) and $J^\top dy$ from reverse mode (``jax.vjp``),
    so custom derivative rules must support both (use :func:`adjoint_test` for a hand-written pair).

    **Arguments:**

    - ``fn``: a function of pytrees (e.g. ``model.step``, or ``lambda m: m.step(u)`` for a model's
      parameters).
    - ``x``: the linearisation point; only its floating-point array leaves are perturbed.
    - ``key``: PRNG key for the random directions (default ``jax.random.key(0)``).
    - ``dx``, ``dy``: directions in input and output space (default: standard normal).

    **Returns:** a :class:`DotProductResult`.
    """
    f, x0 = _differentiable_part(fn, x)
    dx = None if dx is None else eqx.filter(dx, eqx.is_inexact_array)
    tangent = eqx.filter_jit(lambda d: jax.jvp(f, (x0,), (d,))[1])
    vjp = eqx.filter_jit(lambda c: jax.vjp(f, x0)[1](c)[0])
    return adjoint_test(tangent, vjp, x0, jax.eval_shape(f, x0), key=key, dx=dx, dy=dy)


def adjoint_test(
    apply: Callable[[PyTree], PyTree],
    transpose: Callable[[PyTree], PyTree],
    x_like: PyTree,
    y_like: PyTree,
    *,
    key: jax.Array | None = None,
    dx: PyTree | None = None,
    dy: PyTree | None = None,
) -> DotProductResult:
    r"""Check that ``transpose`` is the adjoint of the linear map ``apply``: $\langle A\,dx, dy\rangle = \langle dx, A^\top dy\rangle$.

    For hand-written pairs (an observation operator and its transpose, a covariance square root,
    a custom adjoint).

    **Arguments:**

    - ``apply``, ``transpose``: the linear map and its claimed transpose.
    - ``x_like``, ``y_like``: pytrees (or ``jax.ShapeDtypeStruct`` trees) with the input and output
      structure, shapes and dtypes.
    - ``key``, ``dx``, ``dy``: as in :func:`dot_product_test`.

    **Returns:** a :class:`DotProductResult`.
    """
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    dx = _random_like(k1, x_like) if dx is None else dx
    dy = _random_like(k2, y_like) if dy is None else dy
    _check_like("dx", dx, x_like)
    _check_like("dy", dy, y_like)
    jdx, jtdy = apply(dx), transpose(dy)
    _check_like("apply(dx)", jdx, y_like)
    _check_like("transpose(dy)", jtdy, x_like)
    forward = float(_inner(jdx, dy))
    adjoint = float(_inner(dx, jtdy))
    scale = max(abs(forward), abs(adjoint), np.finfo(np.float64).tiny)
    return DotProductResult(forward, adjoint, abs(forward - adjoint) / scale)


@dataclasses.dataclass(frozen=True)
class TaylorResult:
    """Outcome of :func:`taylor_test`.

    - ``epsilons``: the step sizes ε₀·2⁻ⁱ.
    - ``residuals``: |J(m+εh) − J(m) − ε⟨∇J(m), h⟩| (second order: should fall 4× per halving).
    - ``rates``: log₂ of successive residual ratios (≈ 2 for a correct gradient, ≈ 1 for a wrong one).
    - ``first_order_residuals``: |J(m+εh) − J(m)| for comparison (rate ≈ 1).
    - ``rate``: the smallest rate among residuals above the round-off floor
      (10³·machine-ε·|J(m)|); NaN when all residuals are at round-off (e.g. ``fn`` is linear).
    """

    epsilons: np.ndarray
    residuals: np.ndarray
    rates: np.ndarray
    first_order_residuals: np.ndarray
    rate: float


def taylor_test(
    fn: Callable[[PyTree], jax.Array],
    m: PyTree,
    *,
    h: PyTree | None = None,
    key: jax.Array | None = None,
    eps0: float = 1e-2,
    n: int = 6,
) -> TaylorResult:
    r"""Taylor test of ``jax.grad(fn)`` at ``m`` along direction ``h``.

    $$r_i = |J(m + \varepsilon_i h) - J(m) - \varepsilon_i\langle\nabla J(m), h\rangle|,\qquad
      \varepsilon_i = \varepsilon_0 2^{-i},\qquad \text{rate}_i = \log_2(r_i / r_{i+1}) \to 2.$$

    **Arguments:**

    - ``fn``: a scalar-valued function of a pytree (e.g. a loss of a rollout).
    - ``m``: the point; only its floating-point array leaves are perturbed.
    - ``h``: the direction (default: standard normal, rescaled leaf by leaf to the RMS size of
      ``m``'s leaf, or to 1 where that leaf is zero, so ``eps0`` is a relative perturbation).
    - ``key``: PRNG key for the default direction (default ``jax.random.key(0)``).
    - ``eps0``: the largest step; ``n``: the number of step sizes (>= 3).

    **Returns:** a :class:`TaylorResult`.
    """
    if n < 3:
        raise ValueError(f"taylor_test: n must be >= 3 to observe rates, got {n}")
    if not (math.isfinite(eps0) and eps0 > 0):
        raise ValueError(f"taylor_test: eps0 must be a finite positive number, got {eps0}")
    key = jax.random.key(0) if key is None else key
    f, m0 = _differentiable_part(fn, m)
    if h is None:
        h = jax.tree_util.tree_map(_scale_like, _random_like(key, m0), m0)
    else:
        h = eqx.filter(h, eqx.is_inexact_array)
        _check_like("h", h, m0)
    out = jax.eval_shape(f, m0)
    if not (hasattr(out, "shape") and out.shape == ()):
        raise ValueError(f"taylor_test: fn must return a scalar, got {getattr(out, 'shape', type(out).__name__)}")
    f_jit = jax.jit(f)
    j0, grad = jax.jit(jax.value_and_grad(f))(m0)
    slope = float(_inner(grad, h))
    j0 = float(j0)
    eps = eps0 * 0.5 ** np.arange(n)
    values = np.array([float(f_jit(jax.tree_util.tree_map(lambda a, b, e=e: a + e * b, m0, h))) for e in eps])
    residuals = np.abs(values - j0 - eps * slope)
    first = np.abs(values - j0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.log2(residuals[:-1] / residuals[1:])
    floor = 1e3 * np.finfo(np.result_type(*[np.asarray(x).dtype for x in jax.tree_util.tree_leaves(m0)])).eps
    usable = residuals[1:] > floor * max(abs(j0), np.finfo(np.float64).tiny)
    rate = float(np.min(rates[usable])) if usable.any() else float("nan")
    return TaylorResult(eps, residuals, rates, first, rate)


def _scale_like(direction: jax.Array, reference: jax.Array) -> jax.Array:
    rms = jnp.sqrt(jnp.mean(jnp.abs(reference) ** 2))
    return direction * jnp.where(rms > 0, rms, 1.0) / jnp.sqrt(jnp.mean(direction**2))
