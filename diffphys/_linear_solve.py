r"""Matrix-free Krylov solves of $A x = b$ whose derivatives are one more (transposed) solve.

The operator is a function ``matvec(x) -> A x`` (applied through the stencils, never assembled);
the Krylov iterations come from lineax (CG, GMRES, BiCGStab) and run inside
``jax.lax.custom_linear_solve``, so differentiation never goes *through* the iterations: with
respect to ``b`` and to the arrays inside ``matvec`` (κ, c, ...) the tangent is
$\dot x = A^{-1}(\dot b - \dot A x)$ and the reverse-mode cotangent is one solve with $A^\top$.
Memory is independent of the iteration count.

Failure is reported, never silent: each solve returns a :class:`SolveInfo` (result code,
iterations, the relative residual reached) and, with ``throw=True`` (default), raises a run-time
error that names the residual reached and what to change.

References: Y. Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM 2003 (CG,
GMRES, BiCGStab, Jacobi preconditioning); the lineax documentation for the implementations.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax import lax

__all__ = ["LinearSolver", "SolveInfo", "SolveResult", "solve_linear", "raise_if_failed"]

_METHODS = ("auto", "cg", "gmres", "bicgstab")
_PRECONDITIONERS = (None, "jacobi")


def default_rtol(dtype) -> float:
    """Default relative tolerance: 1e-10 in float64, 1e-5 in float32 (about √ε·10)."""
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


class SolveResult:
    """Result codes of an iterative solve (the ``result`` field of :class:`SolveInfo`)."""

    successful: ClassVar[int] = 0
    max_steps_reached: ClassVar[int] = 1
    nonfinite: ClassVar[int] = 2
    names: ClassVar[tuple[str, ...]] = ("successful", "max_steps_reached", "nonfinite")


class SolveInfo(eqx.Module):
    r"""What an iterative solve achieved; arrays, so it works under ``jit`` and ``vmap``.

    - ``result``: a :class:`SolveResult` code (0 successful, 1 max_steps_reached, 2 nonfinite).
    - ``iterations``: iterations taken (Krylov steps, or Newton steps for a nonlinear solve).
    - ``residual``: the relative residual reached, $\|r\|_\infty / \|b\|_\infty$.
    """

    result: jax.Array
    iterations: jax.Array
    residual: jax.Array

    @property
    def converged(self) -> jax.Array:
        return self.result == SolveResult.successful


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
      iterate with its :class:`SolveInfo` result code instead.
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


def _max_norm(tree) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jtu.tree_leaves(tree)]))


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(tree)]))


def _krylov(matvec, b, settings: LinearSolver, spd: bool, inverse_diagonal):
    """Run the Krylov method on ``matvec(x) = b`` (no derivatives needed here); returns ``(x, info)``."""
    method = settings.resolved_method(spd)
    dtype = jtu.tree_leaves(b)[0].dtype
    rtol = settings.rtol if settings.rtol is not None else default_rtol(dtype)
    b_norm = _max_norm(b)
    atol = settings.atol + rtol * b_norm
    structure = jax.eval_shape(lambda: b)
    tags = (lx.symmetric_tag, lx.positive_semidefinite_tag) if method == "cg" else ()
    operator = lx.FunctionLinearOperator(matvec, structure, tags=tags)
    if method == "cg":
        solver = lx.CG(rtol=rtol, atol=atol, max_steps=settings.max_steps)
    elif method == "gmres":
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
    relative = _max_norm(residual) / jnp.where(b_norm > 0, b_norm, 1.0)
    finite = _all_finite(x)
    result = jnp.where(
        ~finite,
        SolveResult.nonfinite,
        jnp.where(solution.result == lx.RESULTS.successful, SolveResult.successful, SolveResult.max_steps_reached),
    )
    info = SolveInfo(result.astype(jnp.int32), jnp.asarray(solution.stats["num_steps"], jnp.int32), relative)
    return x, info


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

    **Returns:** ``(x, info)``; with ``settings.throw`` a non-converged solve raises at run time.
    """
    if settings.preconditioner == "jacobi":
        if diagonal is None:
            raise ValueError(f"{what}: preconditioner='jacobi' needs the operator's diagonal, which is not available here")
        inverse_diagonal = jtu.tree_map(lambda d: 1.0 / lax.stop_gradient(d), diagonal)
    else:
        inverse_diagonal = None

    def forward(mv, rhs):
        x, info = _krylov(mv, rhs, settings, spd, inverse_diagonal)
        return raise_if_failed(x, info, settings, what) if settings.throw else x, info

    def transposed(vm, rhs):
        x, info = _krylov(vm, rhs, settings, spd, inverse_diagonal)
        return raise_if_failed(x, info, settings, f"{what} (transposed, for the derivative)") if settings.throw else x, info

    return lax.custom_linear_solve(matvec, b, forward, transposed, symmetric=spd, has_aux=True)


# Residual decades for the run-time message (equinox's errors carry static text, so the value reached
# is reported to within a decade).
_DECADES = tuple(range(-16, 3))


def raise_if_failed(x, info: SolveInfo, settings, what: str, hint: str = ""):
    """Return ``x``, raising at run time (``equinox.branched_error_if``) if ``info`` says the solve failed.

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
    log_residual = jnp.log10(jnp.maximum(info.residual, 1e-300))
    decade = jnp.clip(jnp.ceil(log_residual).astype(jnp.int32), _DECADES[0], _DECADES[-1] + 1)
    index = jnp.where(
        info.result == SolveResult.nonfinite,
        0,
        jnp.where(decade > _DECADES[-1], 1, 2 + decade - _DECADES[0]),
    )
    failed = info.result != SolveResult.successful
    return eqx.branched_error_if(x, failed, index, messages)
