r"""A strong-Wolfe line search that evaluates the objective at one place: once per trip of its loop.

Along a descent direction $d$ from $x$, with $\phi(a) = f(x + a d)$, it looks for a step $a > 0$ with

- sufficient decrease: $\phi(a) \le \phi(0) + c_1 a \phi'(0)$, or Hager and Zhang's approximate form near
  round-off, $(2 c_1 - 1)\phi'(0) \ge \phi'(a)$ and $\phi(a) \le \phi(0) + \epsilon |\phi(0)|$;
- small curvature: $|\phi'(a)| \le c_2 |\phi'(0)|$.

It brackets such a step by doubling $a$ and then narrows the bracket (Nocedal and Wright's Algorithms 3.5 and
3.6, "zoom"), each new trial the minimiser of the cubic through the bracket's ends with their slopes, or the
midpoint when that falls within a tenth of the bracket's length of an end. These are the conditions and the
defaults of optax's zoom line search ($c_1 = 10^{-4}$, $c_2 = 0.9$, $\epsilon = 10^{-6}$, at most 20
evaluations, first trial $a = 1$). Every trip first chooses its trial from the search's state, then evaluates
$f$ and $\nabla f$ there, then updates the state: the compiled program holds one copy of the objective and its
gradient, where optax's holds one in each of its two phases (XLA compiles each call site on its own, and for a
PDE-constrained objective each copy is a forward and an adjoint model run).

If no step meets both conditions within the budget, the search returns the lowest point it found with
sufficient decrease, or $a = 0$ (no move, ``found=False``) when it found none.

References: J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer (2006), Sec. 3.5;
W. W. Hager, H. Zhang, "A new conjugate gradient method with guaranteed descent and an efficient line
search", SIAM J. Optim. 16 (2005) 170-192.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._misc import tree_dot

__all__ = ["LineSearchResult", "strong_wolfe_search"]


class LineSearchResult(eqx.Module):
    """Where the search stopped: ``x + stepsize * direction``, its ``value`` and ``gradient``; ``found`` is
    False when no evaluated step decreased the objective sufficiently (then ``stepsize`` is 0)."""

    stepsize: jax.Array
    x: Any
    value: jax.Array
    gradient: Any
    found: jax.Array
    evaluations: jax.Array


class _Point(eqx.Module):
    """A step along the line with its value and slope $\\phi'(a)$."""

    stepsize: jax.Array
    value: jax.Array
    slope: jax.Array


class _Search(eqx.Module):
    count: jax.Array
    trial: jax.Array
    previous: _Point
    low: _Point
    high: _Point
    bracketed: jax.Array
    done: jax.Array
    last: _Point  # the point evaluated last, with its gradient
    last_gradient: Any
    safe: _Point  # the lowest point with sufficient decrease so far (stepsize 0: none yet)
    safe_gradient: Any


def _select(condition, a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(condition, u, v), a, b)


def _cubic_minimiser(low: _Point, high: _Point):
    """Minimiser of the cubic with the values and slopes of both ends (Nocedal and Wright, eq. 3.59); NaN if
    it has none."""
    d1 = low.slope + high.slope - 3 * (low.value - high.value) / (low.stepsize - high.stepsize)
    discriminant = d1**2 - low.slope * high.slope
    d2 = jnp.sign(high.stepsize - low.stepsize) * jnp.sqrt(jnp.where(discriminant >= 0, discriminant, jnp.nan))
    return high.stepsize - (high.stepsize - low.stepsize) * (high.slope + d2 - d1) / (high.slope - low.slope + 2 * d2)


def strong_wolfe_search(
    value_and_grad: Callable[[Any], tuple[jax.Array, Any]],
    x,
    direction,
    value,
    gradient,
    *,
    evaluate_start=False,
    max_steps: int = 20,
    c1: float = 1e-4,
    c2: float = 0.9,
    approximate_rtol: float = 1e-6,
    increase: float = 2.0,
    interval_threshold: float = 1e-5,
) -> LineSearchResult:
    """Search along ``direction`` from ``x``, where the objective has ``value`` and ``gradient``.

    With ``evaluate_start`` (a traced boolean) it only evaluates ``x`` itself (one trip, stepsize 0): a solver
    whose first step must evaluate its starting point does it at the same call site.
    """
    slope0 = tree_dot(direction, gradient)
    dtype = jnp.result_type(value)
    zero = jnp.zeros((), dtype)
    start = _Point(zero, jnp.asarray(value, dtype), slope0.astype(dtype))

    def decrease_error(point: _Point):
        armijo = point.value - start.value - c1 * point.stepsize * start.slope
        approximate = jnp.maximum(point.slope - (2 * c1 - 1) * start.slope,
                                  point.value - start.value - approximate_rtol * jnp.abs(start.value))
        error = jnp.maximum(jnp.minimum(armijo, approximate), 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def curvature_error(point: _Point):
        error = jnp.maximum(jnp.abs(point.slope) - c2 * jnp.abs(start.slope), 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def trip(search: _Search) -> _Search:
        # The only evaluation of the objective.
        a = search.trial
        value_a, gradient_a = value_and_grad(jax.tree_util.tree_map(lambda u, v: u + a * v, x, direction))
        point = _Point(a, value_a.astype(dtype), tree_dot(direction, gradient_a).astype(dtype))
        decreases = decrease_error(point) <= 0
        accepted = decreases & (curvature_error(point) <= 0)

        better = decreases & (a > 0) & ((search.safe.stepsize == 0) | (point.value < search.safe.value))
        safe, safe_gradient = _select(better, (point, gradient_a), (search.safe, search.safe_gradient))

        # Bracketing (Algorithm 3.5): the step is too long, or has passed a minimum.
        too_long = ~decreases | ((point.value >= search.previous.value) & (search.count > 0))
        passed = (point.slope >= 0) & ~too_long
        low_b, high_b = _select(passed, (point, search.previous), (search.previous, point))
        # Zoom (Algorithm 3.6): the trial replaces one end of the bracket.
        to_high = ~decreases | (point.value >= search.low.value)
        flip = (point.slope * (search.high.stepsize - search.low.stepsize)) >= 0
        high_z = _select(to_high, point, _select(flip, search.low, search.high))
        low_z = _select(to_high, search.low, point)

        low, high = _select(search.bracketed, (low_z, high_z), (low_b, high_b))
        bracketed = search.bracketed | too_long | passed
        # Next trial: double the step until bracketed, then the cubic's minimiser within the bracket.
        length = jnp.abs(high.stepsize - low.stepsize)
        left, right = jnp.minimum(low.stepsize, high.stepsize), jnp.maximum(low.stepsize, high.stepsize)
        cubic = _cubic_minimiser(low, high)
        inside = (cubic > left + 0.1 * length) & (cubic < right - 0.1 * length)
        trial = jnp.where(bracketed, jnp.where(inside, cubic, 0.5 * (low.stepsize + high.stepsize)), increase * a)

        narrow = bracketed & (length <= interval_threshold) & (safe.stepsize > 0)
        done = accepted | evaluate_start | narrow
        return _Search(search.count + 1, trial, point, low, high, bracketed, done, point, gradient_a, safe,
                       safe_gradient)

    first = jnp.where(evaluate_start, zero, jnp.ones((), dtype))
    initial = _Search(jnp.asarray(0), first, start, start, start, jnp.asarray(False), jnp.asarray(False), start,
                      gradient, _Point(zero, start.value, start.slope), gradient)
    final = lax.while_loop(lambda s: ~s.done & (s.count < max_steps), trip, initial)

    accepted = evaluate_start | ((decrease_error(final.last) <= 0) & (curvature_error(final.last) <= 0))
    use_safe = ~accepted & (final.safe.stepsize > 0)
    point, point_gradient = _select(accepted, (final.last, final.last_gradient), (final.safe, final.safe_gradient))
    found = accepted | use_safe
    point, point_gradient = _select(found, (point, point_gradient), (start, gradient))
    x_new = jax.tree_util.tree_map(lambda u, v: u + point.stepsize * v, x, direction)
    return LineSearchResult(point.stepsize, x_new, point.value, point_gradient, found, final.count)
