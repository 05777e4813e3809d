r"""Differentiate the solution of $F(x, \theta) = 0$ (or $x = T(x, \theta)$) by the implicit function theorem.

If $x^*(\theta)$ solves $F(x^*, \theta) = 0$ and $\partial_x F$ is invertible there, then

$$\frac{\partial x^*}{\partial\theta}\,\dot\theta
  = -\big(\partial_x F\big)^{-1}\,\partial_\theta F\,\dot\theta ,\qquad
  \bar\theta = -\big(\partial_\theta F\big)^\top \big(\partial_x F\big)^{-\top}\,\bar x .$$

So the derivative of a solve costs one linear solve with $\partial_x F$ (forward mode) or its
transpose (reverse mode), whatever algorithm found $x^*$ and however many iterations it took:
nothing of the forward iterations is stored. Both linear solves are matrix-free (Jacobian–vector
products of ``F``) and go through :func:`diffphys.solve_linear`.

:func:`implicit_solution` attaches these derivatives to a solution found by any solver;
:func:`solve_root` (Newton with a matrix-free Krylov inner solve) and :func:`solve_fixed_point`
(fixed-point iteration) are forward solvers packaged with it. Implicit time steps, converged
Gauss–Newton and proximal solvers and deep-equilibrium layers all use them.

References: S. G. Krantz, H. R. Parks, *The Implicit Function Theorem*, Birkhäuser 2002;
B. Christianson, "Reverse accumulation and attractive fixed points", Optim. Methods Softw. 3
(1994) 311-326; M. Blondel et al., "Efficient and modular implicit differentiation", NeurIPS 2022;
C. T. Kelley, *Solving Nonlinear Equations with Newton's Method*, SIAM 2003 (inexact Newton).
"""

from __future__ import annotations

import inspect
from typing import Callable

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax

from ._linear_solve import LinearSolver, default_rtol, raise_if_failed, solve_linear
from ._misc import all_finite, max_norm, stop_gradient
from ._solution import RESULTS, Solution

__all__ = ["Newton", "FixedPointIteration", "implicit_solution", "solve_root", "solve_fixed_point"]


def _zeros_for_none(tangent, primal):
    """Materialise symbolic-zero (``None``) tangents of inexact arrays as zeros."""

    def fill(t, p):
        if t is None and eqx.is_inexact_array(p):
            return jnp.zeros_like(p)
        return t

    return jtu.tree_map(fill, tangent, primal, is_leaf=lambda t: t is None)


def _closes_over_nothing(fn) -> bool:
    """Whether ``fn`` carries no hidden state: an equinox Module (its arrays are leaves) or a
    function without closure cells."""
    return isinstance(fn, eqx.Module) or (inspect.isfunction(fn) and not fn.__closure__)


@eqx.filter_custom_jvp
def _with_implicit_derivative(residual, theta, solution, *, settings, spd, diagonal):
    del residual, theta, settings, spd, diagonal
    return solution


@_with_implicit_derivative.def_jvp
def _with_implicit_derivative_jvp(primals, tangents, *, settings, spd, diagonal):
    residual, theta, x = primals
    t_residual, t_theta, _ = tangents  # the solution's own tangent is zero: it is a stopped output
    out = _with_implicit_derivative(residual, theta, x, settings=settings, spd=spd, diagonal=diagonal)
    if t_residual is None and t_theta is None:
        return out, None
    t_residual = _zeros_for_none(t_residual, residual)
    t_theta = _zeros_for_none(t_theta, theta)
    # ∂F/∂θ·θ̇ (θ includes the arrays the residual function closes over).
    _, dF = eqx.filter_jvp(lambda f, th: f(x, th), (residual, theta), (t_residual, t_theta))

    def jacobian_x(v):
        return eqx.filter_jvp(lambda y: residual(y, theta), (x,), (v,))[1]

    # Solve on one flat vector: a block of -dF that does not depend on the tangents (a residual
    # block independent of theta) would be a constant right-hand side, which JAX's transpose of a
    # linear solve refuses; concatenated with the rest it is part of one linear right-hand side.
    neg_dF, unravel = jax.flatten_util.ravel_pytree(jtu.tree_map(jnp.negative, dF))
    if diagonal is not None:
        diagonal = jax.flatten_util.ravel_pytree(diagonal)[0]
    dx = solve_linear(
        lambda v: jax.flatten_util.ravel_pytree(jacobian_x(unravel(v)))[0], neg_dF, settings, spd=spd,
        diagonal=diagonal, what="implicit-function-theorem solve",
    ).value
    return out, unravel(dx)


def implicit_solution(
    residual: Callable,
    solution,
    theta,
    *,
    linear_solver: LinearSolver = LinearSolver(),
    spd: bool = False,
    diagonal=None,
):
    r"""Return ``solution`` with derivatives from the implicit function theorem.

    ``solution`` must solve $F(x, \theta) =$ ``residual(x, theta)`` $= 0$ (to the accuracy you
    want derivatives to); how it was found does not matter and is not differentiated. The
    derivatives with respect to ``theta`` (any pytree: arrays, models) and to arrays that
    ``residual`` closes over are
    $\dot x = -(\partial_x F)^{-1}\partial_\theta F\,\dot\theta$ in forward mode and one
    transposed solve in reverse mode.

    **Arguments:**

    - ``residual``: ``F(x, theta) -> `` a pytree shaped like ``x``, differentiable.
    - ``solution``: $x^*$, a pytree of arrays.
    - ``theta``: the parameters (a pytree; non-array leaves are static).
    - ``linear_solver``: a :class:`LinearSolver` for the derivative's solve with $\partial_x F$.
    - ``spd``: declare $\partial_x F$ symmetric positive definite (CG; transposed solve reuses it).
    - ``diagonal``: the diagonal of $\partial_x F$ at the solution, for a Jacobi preconditioner.

    **Returns:** ``solution``, equal in value, differentiable in forward and reverse mode.
    """
    solution = lax.stop_gradient(solution)
    # A residual that closes over nothing (a module-level function, an equinox Module) is passed
    # as it is: converting it would trace it now, in every forward call, for derivatives that may
    # never be asked for. A closure may hold tracers, so it is converted into a pytree.
    closed = residual if _closes_over_nothing(residual) else eqx.filter_closure_convert(residual, solution, theta)
    if diagonal is not None:
        diagonal = lax.stop_gradient(diagonal)
    return _with_implicit_derivative(closed, theta, solution, settings=linear_solver, spd=spd, diagonal=diagonal)


class Newton(eqx.Module):
    r"""Settings of an inexact Newton solve $x_{k+1} = x_k - (\partial_x F(x_k))^{-1} F(x_k)$.

    The Newton system is solved matrix-free by a Krylov method (:class:`LinearSolver`), the
    Jacobian applied through Jacobian–vector products. Converged when the Newton update satisfies
    $\|\delta_k\|_\infty \le \mathrm{atol} + \mathrm{rtol}\,\|x_{k+1}\|_\infty$.

    **Arguments:**

    - ``rtol``: relative tolerance on the update; ``None`` gives 1e-9 (float64) or 1e-4 (float32).
    - ``atol``: absolute tolerance on the update (default 0).
    - ``max_steps``: Newton iteration budget (default 20).
    - ``linear_solver``: the inner (and derivative) Krylov solve.
    - ``throw``: raise when Newton does not converge (default); ``False`` returns the last iterate
      and the result code.
    """

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 20
    linear_solver: LinearSolver = LinearSolver()
    throw: bool = True

    def __check_init__(self):
        if self.rtol is not None and not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"Newton: rtol must be in (0, 1) or None, got {self.rtol!r}")
        if not (isinstance(self.atol, (int, float)) and self.atol >= 0):
            raise ValueError(f"Newton: atol must be a number >= 0, got {self.atol!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"Newton: max_steps must be a positive integer, got {self.max_steps!r}")
        if not isinstance(self.linear_solver, LinearSolver):
            raise TypeError(f"Newton: linear_solver must be a LinearSolver, got {type(self.linear_solver).__name__}")

    def resolved_rtol(self, dtype) -> float:
        return self.rtol if self.rtol is not None else 10.0 * default_rtol(dtype)


def _newton_forward(residual, x0, theta, settings: Newton, spd: bool, diagonal_fn, linear: bool):
    """The Newton iteration itself (not differentiated); returns a :class:`Solution`."""
    inner = eqx.tree_at(lambda s: s.throw, settings.linear_solver, False)
    dtype = jtu.tree_leaves(x0)[0].dtype
    rtol = settings.resolved_rtol(dtype)

    def newton_step(x):
        fx = residual(x, theta)
        diagonal = None if diagonal_fn is None else diagonal_fn(x, theta)

        def jacobian(v):
            return jax.jvp(lambda y: residual(y, theta), (x,), (v,))[1]

        inner_solution = solve_linear(jacobian, jtu.tree_map(jnp.negative, fx), inner, spd=spd, diagonal=diagonal)
        delta = inner_solution.value
        return jtu.tree_map(jnp.add, x, delta), delta, inner_solution

    if linear:
        # F is affine in x: one Newton step is the exact solve (to the Krylov tolerance).
        x, _, inner_solution = newton_step(x0)
        # A NaN in the data can stop the Krylov method at step 0 with a finite (zero) update.
        result = RESULTS.where(all_finite(x), inner_solution.result, RESULTS.nonfinite)
        return Solution(x, result, inner_solution.stats, None)

    def cond(carry):
        _, k, done, failed, _ = carry
        return (k < settings.max_steps) & ~done & ~failed

    def body(carry):
        x, k, _, _, _ = carry
        x_new, delta, inner_solution = newton_step(x)
        done = max_norm(delta) <= settings.atol + rtol * max_norm(x_new)
        failed = inner_solution.result == RESULTS.nonfinite
        return x_new, k + 1, done, failed, inner_solution.stats["residual"]

    init = (x0, jnp.asarray(0), jnp.asarray(False), jnp.asarray(False), jnp.asarray(jnp.inf, dtype))
    x, k, done, failed, _ = lax.while_loop(cond, body, init)
    fx = residual(x, theta)
    scale = jnp.maximum(max_norm(residual(x0, theta)), jnp.finfo(dtype).tiny)
    result = RESULTS.where(
        failed | ~all_finite(x), RESULTS.nonfinite, RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
    )
    return Solution(x, result, {"num_steps": k.astype(jnp.int32), "residual": max_norm(fx) / scale}, None)


def solve_root(
    residual: Callable,
    x0,
    theta,
    *,
    solver: Newton = Newton(),
    spd: bool = False,
    diagonal: Callable | None = None,
    linear: bool = False,
    what: str = "Newton solve",
):
    r"""Solve $F(x, \theta) = 0$ by Newton–Krylov; differentiate the root by the implicit function theorem.

    **Arguments:**

    - ``residual``: ``F(x, theta)``, returning a pytree shaped like ``x``.
    - ``x0``: the initial guess.
    - ``theta``: parameters (a pytree), differentiated through :func:`implicit_solution`.
    - ``solver``: :class:`Newton` settings (with its inner :class:`LinearSolver`).
    - ``spd``: $\partial_x F$ is symmetric positive definite (CG for inner and derivative solves).
    - ``diagonal``: ``(x, theta) -> diag(∂_x F(x, theta))`` (or an approximation) for a Jacobi
      preconditioner.
    - ``linear``: ``F`` is affine in ``x``; then a single Newton step is exact.
    - ``what``: a name for error messages.

    **Returns:** a :class:`~diffphys.Solution`: ``value`` is the root, ``result`` a
    :class:`~diffphys.RESULTS` code, ``stats["num_steps"]`` the Newton steps (Krylov steps when
    ``linear``) and ``stats["residual"]`` $\|F(x)\|_\infty / \|F(x_0)\|_\infty$. A failed solve
    raises unless ``solver.throw`` is false.
    """
    # The forward iteration is never differentiated: arrays the residual closes over are made
    # explicit and stopped, like theta (derivatives come from implicit_solution below).
    closed = eqx.filter_closure_convert(residual, x0, theta)
    x_stop, theta_stop = stop_gradient((x0, theta))
    forward = _newton_forward(stop_gradient(closed), x_stop, theta_stop, solver, spd, diagonal, linear)
    x = forward.value
    if solver.throw:
        settings = solver.linear_solver if linear else solver
        x = raise_if_failed(x, forward, settings, what, hint="use preconditioner='jacobi', a better initial guess or a smaller dt")
    diag_at_x = None if diagonal is None else diagonal(x, theta_stop)
    x = implicit_solution(closed, x, theta, linear_solver=solver.linear_solver, spd=spd, diagonal=diag_at_x)
    return Solution(x, forward.result, forward.stats, None)


class FixedPointIteration(eqx.Module):
    r"""Settings of the fixed-point iteration $x_{k+1} = T(x_k, \theta)$ (for contractions).

    Converged when $\|x_{k+1} - x_k\|_\infty \le \mathrm{atol} + \mathrm{rtol}\,\|x_{k+1}\|_\infty$.
    ``linear_solver`` is used for the derivative's solve with $I - \partial_x T$ (GMRES by default).
    """

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 1000
    linear_solver: LinearSolver = LinearSolver()
    throw: bool = True

    def __check_init__(self):
        if self.rtol is not None and not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"FixedPointIteration: rtol must be in (0, 1) or None, got {self.rtol!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"FixedPointIteration: max_steps must be a positive integer, got {self.max_steps!r}")


def solve_fixed_point(
    fn: Callable, x0, theta, *, solver: FixedPointIteration = FixedPointIteration(), what: str = "fixed-point iteration"
):
    r"""Iterate $x = T(x, \theta)$ to convergence; differentiate the fixed point implicitly.

    The derivative solves with $I - \partial_x T$ at the fixed point (the condition is
    $F(x, \theta) = x - T(x, \theta) = 0$), so memory does not grow with the iteration count.

    **Returns:** a :class:`~diffphys.Solution` with ``stats["residual"]``
    $= \|T(x) - x\|_\infty / \|x\|_\infty$ and ``stats["num_steps"]``.
    """
    dtype = jtu.tree_leaves(x0)[0].dtype
    rtol = solver.rtol if solver.rtol is not None else 10.0 * default_rtol(dtype)
    closed = eqx.filter_closure_convert(fn, x0, theta)
    stopped = stop_gradient(closed)
    x_stop, theta_stop = stop_gradient((x0, theta))

    def cond(carry):
        _, k, change = carry
        return (k < solver.max_steps) & (change > 0)

    def body(carry):
        x, k, _ = carry
        x_new = stopped(x, theta_stop)
        gap = max_norm(jtu.tree_map(jnp.subtract, x_new, x)) - (solver.atol + rtol * max_norm(x_new))
        # Stop when converged; NaN also stops (reported as nonfinite below).
        change = jnp.where(jnp.isnan(gap), -1.0, gap)
        return x_new, k + 1, change

    x, k, change = lax.while_loop(cond, body, (x_stop, jnp.asarray(0), jnp.asarray(jnp.inf, dtype)))
    gap = max_norm(jtu.tree_map(jnp.subtract, stopped(x, theta_stop), x))
    finite = jnp.isfinite(gap)
    result = RESULTS.where(~finite, RESULTS.nonfinite, RESULTS.where(change <= 0, RESULTS.successful, RESULTS.max_steps_reached))
    stats = {"num_steps": k.astype(jnp.int32), "residual": gap / jnp.maximum(max_norm(x), jnp.finfo(dtype).tiny)}
    if solver.throw:
        x = raise_if_failed(x, Solution(x, result, stats, None), solver, what, hint="check that the map is a contraction")

    def condition(y, th):
        return jtu.tree_map(jnp.subtract, y, closed(y, th))

    settings = solver.linear_solver
    if settings.method == "cg":
        raise ValueError("solve_fixed_point: I - ∂T/∂x is not known to be symmetric; use 'gmres' or 'bicgstab'")
    return Solution(implicit_solution(condition, x, theta, linear_solver=settings), result, stats, None)
