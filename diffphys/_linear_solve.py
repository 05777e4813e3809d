r"""Matrix-free Krylov solves of $A x = b$ whose derivatives are one more (transposed) solve.

The operator is a function ``matvec(x) -> A x`` (applied through the stencils, never assembled);
the Krylov iterations (CG here; GMRES and BiCGStab from lineax) run inside
``jax.lax.custom_linear_solve``, so differentiation never goes *through* the iterations: with
respect to ``b`` and to the arrays inside ``matvec`` (κ, c, ...) the tangent is
$\dot x = A^{-1}(\dot b - \dot A x)$ and the reverse-mode cotangent is one solve with $A^\top$.
Memory is independent of the iteration count.

Failure is reported, never silent: each solve returns a :class:`~diffphys.Solution` (the
solution, a :class:`~diffphys.RESULTS` code, and ``stats``: ``num_steps`` and the relative
``residual`` reached) and, with ``throw=True`` (default), raises a run-time error that names the
residual reached and what to change.

References: Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM 2003 (CG,
GMRES, BiCGStab, Jacobi preconditioning); J. R. Shewchuk, "An introduction to the conjugate gradient
method without the agonizing pain" (1994), B.2 (the periodically recomputed residual); the lineax
documentation for GMRES and BiCGStab.

CG is written here rather than taken from lineax because of what it costs to compile: lineax's CG
calls the operator at three places (the initial residual, the iteration and the periodic residual
refresh) and the final residual check adds a fourth, and XLA compiles each call site separately.
For Gauss–Newton the operator is a tangent-linear plus an adjoint model run, so that was eight
copies of the model in one program. :func:`_conjugate_gradient` calls it at one place.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax import lax

from ._misc import all_finite, max_norm
from ._solution import RESULTS, Solution

__all__ = ["LinearSolver", "raise_if_failed", "solve_linear"]

_METHODS = ("auto", "cg", "gmres", "bicgstab")
_PRECONDITIONERS = (None, "jacobi")


def default_rtol(dtype) -> float:
    """Default relative tolerance: 1e-10 in float64, 1e-5 in float32 (about √ε·10)."""
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


class LinearSolver(eqx.Module):
    r"""Settings of a matrix-free Krylov solve (hashable, so models may hold it as a static field).

    Converged when $|r_i| \le \mathrm{atol} + \mathrm{rtol}\,(\|b\|_\infty + |b_i|)$ for every
    component (lineax's test with a relative floor) and the last update is as small relative to $x$.

    **Arguments:**

    - ``method``: ``"cg"`` (symmetric positive definite operators), ``"gmres"``, ``"bicgstab"``,
      or ``"auto"`` (default): CG when the operator is known to be symmetric positive definite,
      else GMRES.
    - ``rtol``: relative tolerance; ``None`` (default) gives 1e-10 in float64 and 1e-5 in float32.
    - ``atol``: absolute tolerance (default 0).
    - ``max_steps``: iteration budget (default 500).
    - ``preconditioner``: ``None`` or ``"jacobi"`` (the inverse of the operator's diagonal, which
      the model supplies; it pays off for strongly varying coefficients).
    - ``restart``: GMRES restart length (default 30).
    - ``throw``: raise when the solve does not converge (default); ``False`` returns the last
      iterate with its :class:`~diffphys.RESULTS` code instead.
    """

    method: str = "auto"
    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 500
    preconditioner: str | None = None
    restart: int = 30
    throw: bool = True

    def __check_init__(self):
        if self.method not in _METHODS:
            raise ValueError(f"LinearSolver: unknown method {self.method!r}; valid are {list(_METHODS)}")
        if self.preconditioner not in _PRECONDITIONERS:
            raise ValueError(
                f"LinearSolver: unknown preconditioner {self.preconditioner!r}; valid are {list(_PRECONDITIONERS)}"
            )
        if self.rtol is not None and not (isinstance(self.rtol, (int, float)) and 0 < self.rtol < 1):
            raise ValueError(f"LinearSolver: rtol must be in (0, 1) or None, got {self.rtol!r}")
        if not (isinstance(self.atol, (int, float)) and self.atol >= 0):
            raise ValueError(f"LinearSolver: atol must be a number >= 0, got {self.atol!r}")
        for name in ("max_steps", "restart"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinearSolver: {name} must be a positive integer, got {value!r}")

    def resolved_method(self, spd: bool) -> str:
        if self.method == "auto":
            return "cg" if spd else "gmres"
        if self.method == "cg" and not spd:
            raise ValueError(
                "LinearSolver: method 'cg' needs a symmetric positive definite operator, and this one is not "
                "known to be; use 'gmres' or 'bicgstab' (or 'auto')"
            )
        return self.method


_REFRESH_EVERY = 10  # CG recomputes its residual as b - A x every this many steps (as lineax does)
_STEP, _REFRESH, _FINAL = 0, 1, 2  # what one trip of the CG loop does


def _conjugate_gradient(matvec, b, rtol, atol, max_steps, inverse_diagonal, refresh_first=False):
    r"""Preconditioned conjugate gradients from $x_0 = 0$, calling ``matvec`` at one place only.

    The recurrences, stopping test and residual refresh are lineax's CG, so are the iterates; the
    control flow differs. Each trip of the loop applies $A$ once: to $p$ on a CG step, to $x$ on a
    refresh, which replaces the recurrence residual by $b - Ax$ (after every 10th step, as lineax,
    and once at the end, so that the residual returned is the true one).

    ``refresh_first`` (a boolean, possibly traced) starts with a refresh, $r_0 = b - \mathtt{matvec}(0)$,
    instead of $r_0 = b$: for an operator whose value at zero is not zero. Gauss–Newton evaluates
    its gradient $J^\top r$ this way, with ``max_steps = 0``, so that the gradient and the CG operator
    share their adjoint model run (one call site). ``max_steps`` may be traced.

    Stops when $\max_i |r_i| / (\mathrm{atol} + \mathrm{rtol}|b_i|) \le 1$ and
    $\max_i |\Delta x_i| / (\mathrm{atol} + \mathrm{rtol}|x_i|) \le 1$, after ``max_steps`` steps,
    or when $\gamma = r^\top M^{-1} r$ is no longer positive; a breakdown ($|p^\top A p|$ below
    round-off of $\gamma$) makes the iterate NaN, which the caller reports as ``nonfinite``.

    **Returns:** ``(x, steps, r)``: the iterate, the CG steps taken and the residual $b - Ax$.
    """
    leaves = jtu.tree_leaves(b)
    dtype = jnp.result_type(*leaves)
    breakdown = 2 * jnp.finfo(dtype).eps * sum(leaf.size for leaf in leaves)  # lineax's threshold
    tree_map = jtu.tree_map

    def precondition(r):
        return r if inverse_diagonal is None else tree_map(jnp.multiply, inverse_diagonal, r)

    def dot(u, v):
        return sum(jnp.vdot(a, c) for a, c in zip(jtu.tree_leaves(u), jtu.tree_leaves(v)))

    def select(flag, u, v):
        return tree_map(lambda a, c: jnp.where(flag, a, c), u, v)

    def small(vector, reference):
        return max_norm(tree_map(lambda v, s: v / (atol + rtol * jnp.abs(s)), vector, reference)) <= 1

    def trip(state):
        x, r, p, gamma, update, steps, kind, _ = state
        stepping = kind == _STEP
        applied = matvec(select(stepping, p, x))  # the one call of the operator
        curvature = dot(applied, p)
        alpha = jnp.where(jnp.abs(curvature) > breakdown * jnp.abs(gamma), gamma / curvature, jnp.nan)
        update = select(stepping, tree_map(lambda v: alpha * v, p), update)
        x = select(stepping, tree_map(jnp.add, x, update), x)
        steps = jnp.where(stepping, steps + 1, steps)
        r = select(stepping, tree_map(lambda v, w: v - alpha * w, r, applied), tree_map(jnp.subtract, b, applied))
        refresh_next = stepping & (steps % _REFRESH_EVERY == 0)
        advance = ~refresh_next & (kind != _FINAL)
        z = precondition(r)
        gamma_next = dot(z, r)
        p = select(advance, tree_map(lambda v, w: v + (gamma_next / gamma) * w, z, p), p)
        gamma = jnp.where(advance, gamma_next, gamma)
        going = (gamma > 0) & (steps < max_steps) & ~(small(r, b) & small(update, x))
        kind_next = jnp.where(refresh_next, _REFRESH, jnp.where(going, _STEP, _FINAL))
        # a refresh that stops the iteration has already computed the true residual
        done = (kind == _FINAL) | ((kind == _REFRESH) & ~going)
        return x, r, p, gamma, update, steps, kind_next, done

    z = precondition(b)
    gamma = dot(z, b)
    zeros = tree_map(jnp.zeros_like, b)
    refresh_first = jnp.asarray(refresh_first)
    # A first refresh then sets p = z + (gamma_1 / 1) * 0 = z, the first CG direction.
    start = (zeros, b, select(refresh_first, zeros, z), jnp.where(refresh_first, jnp.ones_like(gamma), gamma),
             tree_map(lambda v: jnp.full_like(v, jnp.inf), b), jnp.asarray(0, jnp.int32),
             jnp.where(refresh_first, jnp.asarray(_REFRESH), jnp.asarray(_STEP)), ~refresh_first & ~(gamma > 0))
    x, r, *_, steps, _, _ = lax.while_loop(lambda state: ~state[-1], trip, start)
    return x, steps, r


def conjugate_gradient(matvec, b, settings: LinearSolver, inverse_diagonal=None, *, max_steps=None,
                       refresh_first=False):
    """:func:`_conjugate_gradient` with ``settings`` (no derivatives: see :func:`solve_linear` for those).

    ``max_steps`` (default ``settings.max_steps``) may be traced; ``refresh_first`` as in
    :func:`_conjugate_gradient`. **Returns:** ``(x, r, (result, stats))``: the iterate, the residual
    $b - Ax$ and what :func:`solve_linear` reports (a solve asked for no step is ``successful``).
    """
    dtype = jtu.tree_leaves(b)[0].dtype
    rtol = settings.rtol if settings.rtol is not None else default_rtol(dtype)
    max_steps = settings.max_steps if max_steps is None else max_steps
    b_norm = max_norm(b)
    atol = settings.atol + rtol * b_norm
    x, steps, residual = _conjugate_gradient(matvec, b, rtol, atol, max_steps, inverse_diagonal, refresh_first)
    relative = max_norm(residual) / jnp.where(b_norm > 0, b_norm, 1.0)
    result = RESULTS.where(
        all_finite(x),
        RESULTS.where((steps == max_steps) & (max_steps > 0), RESULTS.max_steps_reached, RESULTS.successful),
        RESULTS.nonfinite,
    )
    return x, residual, (result, {"num_steps": steps, "residual": relative})


def _krylov(matvec, b, settings: LinearSolver, spd: bool, inverse_diagonal):
    """Run the Krylov method on ``matvec(x) = b`` (no derivatives needed here); returns ``(x, (result, stats))``."""
    method = settings.resolved_method(spd)
    if method == "cg":
        x, _, aux = conjugate_gradient(matvec, b, settings, inverse_diagonal)
        return x, aux
    dtype = jtu.tree_leaves(b)[0].dtype
    rtol = settings.rtol if settings.rtol is not None else default_rtol(dtype)
    b_norm = max_norm(b)
    atol = settings.atol + rtol * b_norm
    structure = jax.eval_shape(lambda: b)
    operator = lx.FunctionLinearOperator(matvec, structure)
    if method == "gmres":
        solver = lx.GMRES(rtol=rtol, atol=atol, max_steps=settings.max_steps, restart=settings.restart)
    else:
        solver = lx.BiCGStab(rtol=rtol, atol=atol, max_steps=settings.max_steps)
    options = {}
    if inverse_diagonal is not None:
        options["preconditioner"] = lx.TaggedLinearOperator(
            lx.DiagonalLinearOperator(inverse_diagonal), (lx.symmetric_tag, lx.positive_semidefinite_tag)
        )
    solution = lx.linear_solve(operator, b, solver, options=options, throw=False)
    x = solution.value
    residual = jtu.tree_map(lambda bi, ai: bi - ai, b, matvec(x))
    relative = max_norm(residual) / jnp.where(b_norm > 0, b_norm, 1.0)
    result = RESULTS.where(
        all_finite(x),
        RESULTS.where(solution.result == lx.RESULTS.successful, RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.nonfinite,
    )
    return x, (result, {"num_steps": jnp.asarray(solution.stats["num_steps"], jnp.int32), "residual": relative})


def solve_linear(
    matvec: Callable,
    b,
    settings: LinearSolver = LinearSolver(),
    *,
    spd: bool = False,
    diagonal=None,
    what: str = "linear solve",
):
    r"""Solve $A x = b$ matrix-free; derivatives by implicit differentiation (one transposed solve).

    **Arguments:**

    - ``matvec``: the linear map ``x -> A x`` on pytrees shaped like ``b``; it may close over arrays
      (parameters), which are differentiated through the implicit rule, not through the Krylov loop.
    - ``b``: the right-hand side (an array or a pytree of arrays).
    - ``settings``: a :class:`LinearSolver`.
    - ``spd``: whether ``A`` is symmetric positive definite (enables CG; the transposed solve then
      reuses ``A``).
    - ``diagonal``: the diagonal of ``A`` (same structure as ``b``), needed for ``"jacobi"``.
    - ``what``: a name for error messages.

    **Returns:** a :class:`~diffphys.Solution`: ``value`` is $x$, ``result`` a
    :class:`~diffphys.RESULTS` code (``successful``, ``max_steps_reached``, ``nonfinite``),
    ``stats["num_steps"]`` the Krylov iterations and ``stats["residual"]`` the relative residual
    $\|b - Ax\|_\infty / \|b\|_\infty$; with ``settings.throw`` a failed solve raises at run time.
    """
    if settings.preconditioner == "jacobi":
        if diagonal is None:
            raise ValueError(f"{what}: preconditioner='jacobi' needs the operator's diagonal, which is not available here")
        inverse_diagonal = jtu.tree_map(lambda d: 1.0 / lax.stop_gradient(d), diagonal)
    else:
        inverse_diagonal = None

    def forward(mv, rhs):
        x, aux = _krylov(mv, rhs, settings, spd, inverse_diagonal)
        return raise_if_failed(x, Solution(x, *aux, None), settings, what) if settings.throw else x, aux

    def transposed(vm, rhs):
        x, aux = _krylov(vm, rhs, settings, spd, inverse_diagonal)
        where = f"{what} (transposed, for the derivative)"
        return raise_if_failed(x, Solution(x, *aux, None), settings, where) if settings.throw else x, aux

    x, (result, stats) = lax.custom_linear_solve(matvec, b, forward, transposed, symmetric=spd, has_aux=True)
    return Solution(x, result, stats, None)


# Residual decades for the run-time message (equinox's errors carry static text, so the value reached
# is reported to within a decade).
_DECADES = tuple(range(-16, 3))


def raise_if_failed(x, solution: Solution, settings, what: str, hint: str = ""):
    """Return ``x``, raising at run time (``equinox.branched_error_if``) if ``solution`` says the solve failed.

    The message names the relative residual reached (to within a decade), the tolerance and budget
    asked for, and what to change.
    """
    rtol = settings.rtol if settings.rtol is not None else default_rtol(jtu.tree_leaves(x)[0].dtype)
    hint = hint or "use preconditioner='jacobi' or a smaller dt"
    advice = (
        f"increase max_steps (now {settings.max_steps}), loosen rtol (now {rtol:g}), {hint}; "
        "or pass throw=False to get the result code instead of this error"
    )
    messages = [f"{what}: the solution is not finite (NaN/inf); check the inputs and dt"]
    messages.append(f"{what} did not converge: relative residual above 1e{_DECADES[-1]} > rtol; {advice}")
    for d in _DECADES:
        messages.append(
            f"{what} did not converge within {settings.max_steps} iterations: relative residual reached "
            f"between 1e{d - 1} and 1e{d}, asked rtol={rtol:g}; {advice}"
        )
    log_residual = jnp.log10(jnp.maximum(solution.stats["residual"], 1e-300))
    decade = jnp.clip(jnp.ceil(log_residual).astype(jnp.int32), _DECADES[0], _DECADES[-1] + 1)
    index = jnp.where(
        solution.result == RESULTS.nonfinite,
        0,
        jnp.where(decade > _DECADES[-1], 1, 2 + decade - _DECADES[0]),
    )
    failed = solution.result != RESULTS.successful
    return eqx.branched_error_if(x, failed, index, messages)
