r"""Incremental Gauss–Newton and Levenberg–Marquardt for variational assimilation: converged or unrolled.

Both modes use one iteration body. At the control increment $v_k$ the whitened residuals
$r(v) = \big(v,\ R^{-1/2}(y - \mathcal H M(z(v)))\big)$ are linearised (the tangent-linear model is
``jax.linearize`` of the rollout, the adjoint its transpose; nothing is hand-written), and the
damped normal equations

$$\big(J_k^\top J_k + \lambda_k I\big)\,\delta_k = -J_k^\top r_k = -\nabla\mathcal J(v_k),\qquad
  J_k = \partial_v r(v_k),$$

are solved matrix-free by conjugate gradients (the control-variable transform makes
$J^\top J + \lambda I \succeq (1+\lambda) I$, so CG converges quickly). Then
$v_{k+1} = v_k + \alpha_k \delta_k$.

* **Converged** (:func:`gauss_newton`): iterate to a tolerance in a ``lax.while_loop``.
  Levenberg–Marquardt (default) adapts $\lambda_k$ from the ratio of actual to predicted decrease
  (Nielsen's rule) and retries a step that does not decrease the cost; the line-search variant
  ($\lambda = 0$) backtracks on $\alpha$ (Armijo). Both decrease the cost monotonically. The
  analysis $v^*$ carries derivatives from the implicit function theorem applied to the optimality
  condition $\nabla_v\mathcal J(v^*, \theta) = 0$: one Hessian solve (CG with Hessian–vector
  products) whatever the number of iterations, with respect to everything in the problem
  (observations, R's σ, B's σ, fixed parameters).
* **Unrolled** (:class:`UnrolledGaussNewton`): exactly $K$ iterations as layers with learnable
  per-iteration damping $\lambda_k$ and step length $\alpha_k$, differentiable end to end (each
  layer checkpointed), trained with :func:`train_unrolled`.

References: P. Courtier, J.-N. Thépaut, A. Hollingsworth, Q. J. R. Meteorol. Soc. 120 (1994)
1367-1387 (incremental 4D-Var); A. S. Lawless, S. Gratton, N. K. Nichols, Q. J. R. Meteorol. Soc.
131 (2005) 1085-1097 (incremental 4D-Var as Gauss–Newton); H. B. Nielsen, "Damping parameter in
Marquardt's method", IMM-REP-1999-05, DTU (the damping update); J. Nocedal, S. J. Wright,
*Numerical Optimization* (2006), ch. 3 and 10; S. Bai, J. Z. Kolter, V. Koltun, "Deep equilibrium
models", NeurIPS 2019, and M. Blondel et al., "Efficient and modular implicit differentiation",
NeurIPS 2022 (derivatives of a solution through its optimality condition).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

from .._implicit import implicit_solution
from .._linear_solve import LinearSolver, solve_linear

__all__ = ["GLOBALIZATIONS", "GaussNewton", "GaussNewtonResult", "UnrolledGaussNewton", "gauss_newton", "gauss_newton_direction"]

GLOBALIZATIONS = ("levenberg_marquardt", "line_search")
"""How :func:`gauss_newton` makes every step decrease the cost: adaptive damping, or no damping and a
backtracking line search."""

_ACCEPT = 1e-4  # sufficient-decrease constant (LM gain ratio; Armijo)
_MAX_RETRIES = 30  # damping increases (x2, x4, ...) or step halvings before giving up
_MAX_DAMPING = 1e16


def _positive(name: str, value, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"GaussNewton: {name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


class GaussNewton(eqx.Module):
    r"""Settings of :func:`gauss_newton`.

    **Arguments:**

    - ``globalization``: ``"levenberg_marquardt"`` (default: adaptive damping $\lambda$, robust on
      nonlinear problems) or ``"line_search"`` (pure Gauss–Newton steps, $\lambda = 0$, shortened by
      backtracking until the cost decreases enough).
    - ``max_iterations``: outer iterations (relinearisations), >= 1 (default 20).
    - ``gtol``: converged when $\|\nabla\mathcal J(v_k)\| \le \text{gtol}\,\|\nabla\mathcal J(v_0)\|$
      (default 1e-6).
    - ``xtol``: or when an accepted step satisfies $\|\delta\| \le \text{xtol}\,(\text{xtol} + \|v\|)$
      (default 1e-10).
    - ``damping``: the initial $\lambda_0$ of Levenberg–Marquardt (default 1e-3; relative to the
      identity contributed by the background term).
    - ``inner``: the CG settings of the inner solve (default ``rtol=1e-6, max_steps=100``, no raise:
      a truncated inner solve is an inexact Newton step, and the outer loop guards the decrease).
    - ``derivative``: the CG settings of the implicit-function-theorem solve with the Hessian.
    """

    globalization: str = "levenberg_marquardt"
    max_iterations: int = 20
    gtol: float = 1e-6
    xtol: float = 1e-10
    damping: float = 1e-3
    inner: LinearSolver = LinearSolver(method="cg", rtol=1e-6, max_steps=100, throw=False)
    derivative: LinearSolver = LinearSolver(method="cg", max_steps=500)

    def __check_init__(self):
        if self.globalization not in GLOBALIZATIONS:
            raise ValueError(
                f"GaussNewton: unknown globalization {self.globalization!r}; valid are {list(GLOBALIZATIONS)}"
            )
        it = self.max_iterations
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 1:
            raise ValueError(f"GaussNewton: max_iterations must be an integer >= 1, got {it!r}")
        _positive("gtol", self.gtol, allow_zero=True)
        _positive("xtol", self.xtol, allow_zero=True)
        _positive("damping", self.damping, allow_zero=True)
        for name in ("inner", "derivative"):
            if not isinstance(getattr(self, name), LinearSolver):
                raise TypeError(f"GaussNewton: {name} must be a LinearSolver, got {type(getattr(self, name)).__name__}")


class GaussNewtonResult(eqx.Module):
    """Outcome of :func:`gauss_newton`.

    - ``v``: the analysis control increment (a pytree like ``problem.zero_control()``), with
      implicit-function-theorem derivatives.
    - ``costs``, ``gradient_norms``: $\\mathcal J$ and $\\|\\nabla\\mathcal J\\|$ at $v_0$ and after each
      iteration (length ``max_iterations + 1``, NaN after the last; :meth:`history` trims them).
    - ``inner_iterations``, ``dampings``: CG iterations (all tries) and the accepted $\\lambda$ per
      iteration (0 for Gauss–Newton).
    - ``iterations``: outer iterations done; ``converged``: whether a tolerance was met;
      ``status``: see :attr:`STATUS`.
    """

    STATUS: ClassVar[tuple[str, ...]] = ("converged", "max_iterations", "no_decrease")

    v: object
    costs: Float[Array, " K+1"]
    gradient_norms: Float[Array, " K+1"]
    inner_iterations: Int[Array, " K"]
    dampings: Float[Array, " K"]
    iterations: Int[Array, ""]
    converged: Bool[Array, ""]
    status_code: Int[Array, ""]

    @property
    def status(self) -> str:
        """``"converged"``, ``"max_iterations"`` (budget spent) or ``"no_decrease"`` (no step lowered the
        cost: at round-off level, or a direction that is not a descent direction)."""
        return self.STATUS[int(self.status_code)]

    def history(self) -> dict[str, np.ndarray]:
        """The per-iteration records as NumPy arrays trimmed to the iterations done."""
        k = int(self.iterations)
        return {
            "cost": np.asarray(self.costs[: k + 1]),
            "gradient_norm": np.asarray(self.gradient_norms[: k + 1]),
            "inner_iterations": np.asarray(self.inner_iterations[:k]),
            "damping": np.asarray(self.dampings[:k]),
        }


def _flat_problem(problem, v0):
    """``(v_flat, unravel, residual(v_flat, problem))`` for a problem with a pytree control."""
    v_flat, unravel = ravel_pytree(v0)

    def residual(w, prob):
        return prob.residuals(unravel(w))

    return v_flat, unravel, residual


def gauss_newton_direction(residual: Callable, v, damping, inner: LinearSolver):
    r"""One damped Gauss–Newton direction: $\delta = -(J^\top J + \lambda I)^{-1} J^\top r$ at ``v``.

    ``residual(v)`` is the whitened residual vector (flat ``v``). Returns
    ``(delta, r, gradient, J @ delta, cg_iterations)`` where ``gradient`` $= J^\top r$. The linear
    solve is CG inside ``lax.custom_linear_solve``: differentiating the direction costs transposed
    solves, not a backward pass through the CG iterations.
    """
    r, tangent = jax.linearize(residual, v)
    adjoint = jax.linear_transpose(tangent, v)
    gradient = adjoint(r)[0]
    delta, info = _damped_solve(tangent, adjoint, gradient, damping, inner)
    return delta, r, gradient, tangent(delta), info.iterations


def _damped_solve(tangent, adjoint, gradient, damping, inner):
    def normal(d):
        return adjoint(tangent(d))[0] + damping * d

    return solve_linear(normal, -gradient, inner, spd=True, what="Gauss-Newton inner solve (J^T J + lambda I)")


def _code(x):
    return jnp.asarray(x, jnp.int32)


def _half_norm2(x):
    return 0.5 * jnp.sum(x * x)


_PROGRESS: list[Callable[[int, float, float], None]] = []  # the callback of the running gauss_newton call


def _report(k, j, g):
    if _PROGRESS:
        _PROGRESS[-1](int(k), float(j), float(g))


def _solve(problem, v0, settings: GaussNewton):
    v0_flat, _, residual_of = _flat_problem(problem, v0)

    def residual(w):
        return residual_of(w, problem)

    def cost(w):
        return _half_norm2(residual(w))

    n = settings.max_iterations
    levenberg = settings.globalization == "levenberg_marquardt"
    dtype = v0_flat.dtype
    nan = jnp.full((n + 1,), jnp.nan, dtype)
    init = dict(
        k=jnp.asarray(0, jnp.int32), v=v0_flat, damping=jnp.asarray(settings.damping if levenberg else 0.0, dtype),
        nu=jnp.asarray(2.0, dtype), done=jnp.array(False), converged=jnp.array(False), status=_code(1),
        costs=nan, gnorms=nan, inner=jnp.zeros((n,), jnp.int32), dampings=jnp.zeros((n,), dtype),
    )

    def body(s):
        k, v = s["k"], s["v"]
        r, tangent = jax.linearize(residual, v)
        adjoint = jax.linear_transpose(tangent, v)
        g = adjoint(r)[0]
        j, gnorm = _half_norm2(r), jnp.linalg.norm(g)
        costs, gnorms = s["costs"].at[k].set(j), s["gnorms"].at[k].set(gnorm)
        jax.debug.callback(_report, k, j, gnorm)  # a no-op unless a callback is registered
        g0 = jnp.where(k == 0, gnorm, s["gnorms"][0])
        small_gradient = gnorm <= settings.gtol * g0
        stop = small_gradient | (k >= n)

        def step(_):
            # Retry with more damping (LM) or a shorter step (GN) until the cost decreases enough.
            def attempt(a):
                lam, alpha = a["damping"], a["alpha"]
                delta, info = _damped_solve(tangent, adjoint, g, lam, settings.inner)
                jd = tangent(delta)
                predicted = -(jnp.vdot(r, jd) + 0.5 * jnp.vdot(jd, jd)) if levenberg else -alpha * jnp.vdot(g, delta)
                trial = cost(v + alpha * delta)
                actual = j - trial
                ok = jnp.isfinite(trial) & (predicted > 0) & (actual >= _ACCEPT * predicted)
                return dict(a, delta=delta, ok=ok, tries=a["tries"] + 1, cg=a["cg"] + _code(info.iterations),
                            gain=actual / jnp.where(predicted > 0, predicted, 1.0), trial=trial)

            def retry(a):
                a = attempt(a)
                failed = ~a["ok"]
                if levenberg:
                    a["damping"] = jnp.where(failed, jnp.maximum(a["damping"], 1e-8) * a["nu"], a["damping"])
                    a["nu"] = jnp.where(failed, 2.0 * a["nu"], a["nu"])
                else:
                    a["alpha"] = jnp.where(failed, 0.5 * a["alpha"], a["alpha"])
                return a

            start = dict(damping=s["damping"], nu=s["nu"], alpha=jnp.asarray(1.0, dtype), delta=jnp.zeros_like(v),
                         ok=jnp.array(False), tries=_code(0), cg=_code(0),
                         gain=jnp.asarray(0.0, dtype), trial=j)
            a = lax.while_loop(
                lambda a: ~a["ok"] & (a["tries"] < _MAX_RETRIES) & (a["damping"] < _MAX_DAMPING), retry, start
            )
            accepted = a["ok"]
            v_new = jnp.where(accepted, v + a["alpha"] * a["delta"], v)
            if levenberg:  # Nielsen: shrink lambda after a good step
                factor = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * a["gain"] - 1.0) ** 3)
                lam, nu = a["damping"] * factor, jnp.asarray(2.0, dtype)
            else:
                lam, nu = jnp.asarray(0.0, dtype), s["nu"]
            small_step = accepted & (
                jnp.linalg.norm(a["alpha"] * a["delta"]) <= settings.xtol * (settings.xtol + jnp.linalg.norm(v))
            )
            return dict(
                s, k=k + accepted.astype(jnp.int32), v=v_new, damping=lam, nu=nu,
                done=~accepted | small_step, converged=small_step, status=_code(jnp.where(accepted, 1, 2)),
                inner=s["inner"].at[k].set(a["cg"]), dampings=s["dampings"].at[k].set(a["damping"]),
                costs=costs, gnorms=gnorms,
            )

        def finish(_):
            return dict(s, done=jnp.array(True), converged=small_gradient,
                        status=_code(jnp.where(small_gradient, 0, 1)),
                        costs=costs, gnorms=gnorms)

        out = lax.cond(stop, finish, step, None)
        # A small accepted step ends the loop; record the cost and gradient at the new point first.
        return out

    def last_point(s):
        # After a converging small step or a failed search, the loop ended without linearising the
        # final point; fill in its cost and gradient norm.
        k = s["k"]
        j, g = jax.value_and_grad(cost)(s["v"])
        missing = jnp.isnan(s["costs"][k])
        return dict(s, costs=jnp.where(missing, s["costs"].at[k].set(j), s["costs"]),
                    gnorms=jnp.where(missing, s["gnorms"].at[k].set(jnp.linalg.norm(g)), s["gnorms"]))

    s = lax.while_loop(lambda s: ~s["done"], body, init)
    s = last_point(s)
    status = jnp.where(s["converged"], 0, s["status"])
    return s["v"], s["costs"], s["gnorms"], s["inner"], s["dampings"], s["k"], s["converged"], status


def _stop_gradient(tree):
    dynamic, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(lax.stop_gradient(dynamic), static)


def gauss_newton(
    problem,
    v0=None,
    settings: GaussNewton = GaussNewton(),
    *,
    callback: Callable[[int, float, float], None] | None = None,
) -> GaussNewtonResult:
    r"""Minimise $\mathcal J(v) = \tfrac12\|r(v)\|^2$ by incremental Gauss–Newton / Levenberg–Marquardt.

    Runs to ``settings.gtol`` (or ``xtol``, or ``max_iterations``) in one compiled while loop. The
    returned ``v`` is differentiable with respect to everything in ``problem`` by the implicit
    function theorem (see the module docstring): memory does not grow with the iteration count.

    **Arguments:**

    - ``problem``: a :class:`StrongConstraint4DVar` or :class:`WeakConstraint4DVar` (anything with
      ``residuals(v)`` and ``zero_control()``).
    - ``v0``: the starting control increment (default 0: the background).
    - ``settings``: a :class:`GaussNewton`.
    - ``callback``: ``callback(iteration, cost, gradient_norm)`` at every linearisation point, e.g.
      to print progress (it runs from inside the compiled loop; with or without it, the same
      compiled solver is used).

    The solver is compiled once per problem structure and settings. To differentiate through it
    repeatedly, wrap the whole loss in ``jax.jit``/``eqx.filter_jit`` (an eager ``jax.grad``
    re-traces the implicit derivative at every call).

    **Returns:** a :class:`GaussNewtonResult`.
    """
    if not isinstance(settings, GaussNewton):
        raise TypeError(f"gauss_newton: settings must be a GaussNewton, got {type(settings).__name__}")
    v0 = problem.zero_control() if v0 is None else v0
    j0 = _initial_cost(problem, v0)
    if not isinstance(j0, jax.core.Tracer) and not bool(jnp.isfinite(j0)):
        raise ValueError(
            "gauss_newton: the cost is not finite at the starting point; check the observations, the background "
            "and that the model is stable for these controls"
        )
    if callback is not None:
        _PROGRESS.append(callback)
    try:
        result = _gauss_newton(problem, v0, settings)
        if callback is not None:
            jax.block_until_ready(result.v)
    finally:
        if callback is not None:
            _PROGRESS.pop()
    return result


@eqx.filter_jit
def _initial_cost(problem, v0):
    v0_flat, unravel, _ = _flat_problem(problem, v0)
    return _half_norm2(_stop_gradient(problem).residuals(unravel(lax.stop_gradient(v0_flat))))


@eqx.filter_jit
def _gauss_newton(problem, v0, settings: GaussNewton) -> GaussNewtonResult:
    """The whole solve, compiled once per problem structure: the iterations, then the analysis with
    its implicit-function-theorem derivatives attached."""
    v0_flat, unravel, residual = _flat_problem(problem, v0)
    v, costs, gnorms, inner, dampings, k, converged, status = _solve(
        _stop_gradient(problem), lax.stop_gradient(unravel(v0_flat)), settings
    )

    def optimality(w, prob):  # the gradient of J: zero at the analysis
        return jax.grad(lambda u: _half_norm2(residual(u, prob)))(w)

    v = implicit_solution(optimality, v, problem, linear_solver=settings.derivative, spd=True)
    return GaussNewtonResult(unravel(v), costs, gnorms, inner, dampings, k, converged, status)


class UnrolledGaussNewton(eqx.Module):
    r"""Exactly $K$ damped Gauss–Newton iterations as differentiable layers, with learnable parameters.

    Layer $k$: $v_{k+1} = v_k + \alpha_k\,\delta_k$ with
    $\delta_k = -(J_k^\top J_k + \lambda_k I)^{-1}\nabla\mathcal J(v_k)$ (the iteration body of
    :func:`gauss_newton`, without its accept/reject safeguard), $\lambda_k = e^{\ell_k}$ and
    $\alpha_k$ learnable (arrays ``log_damping`` and ``step_length``, shape ``(K,)``). Backpropagation
    runs through all layers; each layer is checkpointed (``checkpoint=True``) so memory holds one
    state per layer. The inner CG solve is differentiated implicitly (transposed solves), as if it
    were exact: with a truncated inner solve the gradient is that of the exact-solve layer.

    **Arguments:** ``iterations`` ($K \ge 1$), ``damping`` (initial $\lambda$, > 0; default 1e-2),
    ``step_length`` (initial $\alpha$; default 1), ``inner`` (CG settings; default ``rtol=1e-8``,
    ``max_steps=50``), ``checkpoint`` (default ``True``).
    """

    log_damping: Float[Array, " K"]
    step_length: Float[Array, " K"]
    inner: LinearSolver = eqx.field(static=True)
    checkpoint: bool = eqx.field(static=True)

    def __init__(self, iterations: int, *, damping: float = 1e-2, step_length: float = 1.0,
                 inner: LinearSolver = LinearSolver(method="cg", rtol=1e-8, max_steps=50, throw=False),
                 checkpoint: bool = True):
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"UnrolledGaussNewton: iterations must be an integer >= 1, got {iterations!r}")
        if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping > 0):
            raise ValueError(f"UnrolledGaussNewton: damping must be a finite number > 0, got {damping!r}")
        if not (isinstance(step_length, (int, float)) and math.isfinite(step_length) and step_length > 0):
            raise ValueError(f"UnrolledGaussNewton: step_length must be a finite number > 0, got {step_length!r}")
        dtype = jnp.result_type(float)
        self.log_damping = jnp.full((int(iterations),), math.log(damping), dtype)
        self.step_length = jnp.full((int(iterations),), float(step_length), dtype)
        self.inner = inner
        self.checkpoint = bool(checkpoint)

    @property
    def iterations(self) -> int:
        return self.log_damping.shape[0]

    def iterates(self, problem, v0=None):
        """All iterates $v_0, \\dots, v_K$, stacked along a leading axis (flat, as ``(K+1, n)``) with
        the function that maps a flat iterate back to the control's pytree."""
        v0 = problem.zero_control() if v0 is None else v0
        v_flat, unravel, residual = _flat_problem(problem, v0)

        def layer(v, params):
            log_damping, alpha = params
            delta = gauss_newton_direction(lambda w: residual(w, problem), v, jnp.exp(log_damping), self.inner)[0]
            v_next = v + alpha * delta
            return v_next, v_next

        if self.checkpoint:
            layer = jax.checkpoint(layer)
        _, vs = lax.scan(layer, v_flat, (self.log_damping, self.step_length))
        return jnp.concatenate([v_flat[None], vs]), unravel

    def __call__(self, problem, v0=None):
        """The control increment $v_K$ after the $K$ layers (a pytree like ``problem.zero_control()``)."""
        vs, unravel = self.iterates(problem, v0)
        return unravel(vs[-1])
