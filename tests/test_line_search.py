"""The strong-Wolfe line search under L-BFGS: the step it returns meets both Wolfe conditions (checked in NumPy), its
value and gradient are those of the returned point, and it fails visibly when the direction does not descend."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys.solvers import RESULTS
from diffphys.solvers._line_search import strong_wolfe_search

C1, C2 = 1e-4, 0.9
A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = jnp.array([1.0, -2.0, 0.5])


def quadratic(x):
    return 0.5 * x @ A @ x - B @ x


def rosenbrock(x):
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def barrier(x):
    """Finite only for x < 1 (NaN beyond): a step too long leaves the domain."""
    return jnp.sum(-jnp.log1p(-x) + 0.5 * x**2 - 2.0 * x)


def _search(f, x, direction, **kwargs):
    value, gradient = jax.value_and_grad(f)(x)
    return jax.jit(lambda x, d, v, g: strong_wolfe_search(jax.value_and_grad(f), x, d, v, g, **kwargs))(
        x, direction, value, gradient)


def _assert_strong_wolfe(f, x, direction, result):
    """Both conditions in NumPy, from independent evaluations at x and at x + a d."""
    x, d = np.asarray(x), np.asarray(direction)
    a = float(result.stepsize)
    f0, g0 = (np.asarray(v) for v in jax.value_and_grad(f)(jnp.asarray(x)))
    np.testing.assert_allclose(result.x, x + a * d, rtol=1e-15, atol=1e-15)
    fa, ga = (np.asarray(v) for v in jax.value_and_grad(f)(result.x))
    slope0, slope_a = float(g0 @ d), float(ga @ d)
    assert a > 0 and bool(result.found)
    assert fa <= f0 + C1 * a * slope0
    assert abs(slope_a) <= C2 * abs(slope0)
    # the value and gradient returned are those at the returned point (to round-off: compiled vs eager)
    np.testing.assert_allclose(result.value, fa, rtol=1e-14)
    np.testing.assert_allclose(result.gradient, ga, rtol=1e-12, atol=1e-12 * np.max(np.abs(ga)))


@pytest.mark.parametrize("scale, expect", [(1.0, "first"), (40.0, "zoom"), (1e-3, "expand")])
def test_steps_meet_both_wolfe_conditions_on_a_quadratic(scale, expect):
    """A unit step that is right is taken at once; one too long is zoomed into, one too short doubled."""
    x = jnp.array([1.0, 1.0, -1.0])
    direction = -scale * jnp.linalg.solve(A, A @ x - B)  # scale 1: the Newton step, exact minimiser at a = 1
    result = _search(quadratic, x, direction)
    _assert_strong_wolfe(quadratic, x, direction, result)
    if expect == "first":
        assert float(result.stepsize) == 1.0 and int(result.evaluations) == 1
    elif expect == "zoom":
        assert float(result.stepsize) < 1.0 and int(result.evaluations) > 1
    else:
        assert float(result.stepsize) >= 2.0 and int(result.evaluations) > 1
    # On a quadratic the cubic through the bracket is exact: a zoom lands on the line's minimiser (a* = 1/scale).
    if expect == "zoom":
        np.testing.assert_allclose(float(result.stepsize), 1.0 / scale, rtol=1e-10)


@pytest.mark.parametrize("f, x", [(rosenbrock, jnp.array([-1.2, 1.0])), (barrier, jnp.array([0.5, -0.3, 0.9]))])
def test_steps_meet_both_wolfe_conditions_on_nonconvex_and_bounded_domains(f, x):
    """Rosenbrock along steepest descent (the unit step overshoots by orders of magnitude), and a barrier whose
    value is NaN beyond x = 1: the search backs off from non-finite values."""
    direction = -jax.grad(f)(x)
    if f is barrier:
        direction = 10.0 * direction  # the unit step leaves the domain
        assert not np.isfinite(float(f(x + direction)))
    _assert_strong_wolfe(f, x, direction, _search(f, x, direction))


def test_a_pytree_control_is_searched_like_its_flattened_vector():
    f = lambda p: quadratic(jnp.concatenate([p[0], p[1]]))
    x = (jnp.array([1.0, 1.0]), jnp.array([-1.0]))
    direction = jax.tree_util.tree_map(lambda g: -40.0 * g, jax.grad(f)(x))
    tree = _search(f, x, direction)
    flat = _search(quadratic, jnp.concatenate(x), jnp.concatenate(direction))
    assert float(tree.stepsize) == float(flat.stepsize)
    np.testing.assert_allclose(jnp.concatenate(tree.x), flat.x, rtol=1e-15)


def test_evaluate_start_only_evaluates_the_start():
    x = jnp.array([1.0, 1.0, -1.0])
    result = jax.jit(lambda x: strong_wolfe_search(jax.value_and_grad(quadratic), x, jnp.zeros(3), jnp.nan,
                                                   jnp.zeros(3), evaluate_start=jnp.asarray(True)))(x)
    assert float(result.stepsize) == 0.0 and int(result.evaluations) == 1 and bool(result.found)
    np.testing.assert_array_equal(result.x, x)
    assert float(result.value) == float(quadratic(x))
    np.testing.assert_array_equal(result.gradient, jax.grad(quadratic)(x))


def test_an_ascent_direction_finds_nothing_and_does_not_move():
    x = jnp.array([1.0, 1.0, -1.0])
    result = _search(quadratic, x, jax.grad(quadratic)(x), max_steps=8)
    assert not bool(result.found) and float(result.stepsize) == 0.0 and int(result.evaluations) == 8
    np.testing.assert_array_equal(result.x, x)
    assert float(result.value) == float(quadratic(x))


@jax.custom_jvp
def _wrong_slope(x):
    return x


@_wrong_slope.defjvp
def _wrong_slope_jvp(primals, tangents):
    return primals[0], -tangents[0]  # the sign of the derivative is wrong: "descent" directions ascend


def test_lbfgs_stops_with_no_decrease_when_the_gradient_is_wrong():
    """A gradient that does not describe the cost makes every L-BFGS direction an ascent: the solve stops with
    RESULTS.no_decrease at the start (raising unless throw=False), instead of spending its budget in place."""
    data = jnp.array([1.0, -2.0, 0.5])
    problem = dp.solvers.LeastSquares(lambda x, theta: _wrong_slope(x) - data, jnp.zeros(3))
    solution = dp.solvers.iterate(dp.solvers.LBFGS(), problem, mode=dp.solvers.Converged(rtol=1e-8, max_steps=50),
                                  throw=False)
    assert solution.result == RESULTS.no_decrease and solution.num_steps == 1  # one search, and it failed
    np.testing.assert_array_equal(solution.value, jnp.zeros(3))
    with pytest.raises(eqx.EquinoxRuntimeError, match="the objective stopped decreasing"):
        dp.solvers.iterate(dp.solvers.LBFGS(), problem, mode=dp.solvers.Converged(rtol=1e-8, max_steps=50))
