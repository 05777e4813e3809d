r"""Gauss–Newton and Levenberg–Marquardt on the solver core.

At the iterate $x_k$ the residuals $r$ are linearised (``jax.linearize``; the transpose by
``jax.linear_transpose``: the tangent-linear and adjoint models are never hand-written) and the
damped normal equations

$$\big(J_k^\top J_k + \lambda_k I\big)\,\delta_k = -J_k^\top r_k = -\nabla\Phi(x_k),\qquad J_k = \partial_x r(x_k),$$

are solved matrix-free by conjugate gradients; then $x_{k+1} = x_k + \alpha_k\delta_k$.

* ``globalization="levenberg_marquardt"`` (default): $\lambda_k$ adapts from the ratio of actual
  to predicted decrease (Nielsen's rule); a step that does not decrease the cost is retried with
  more damping. The predicted decrease $-(g^\top\delta + \tfrac12\|J\delta\|^2)
  = \tfrac12(\lambda\|\delta\|^2 - g^\top\delta)$ follows from CG's Galerkin condition
  $\delta^\top(J^\top J + \lambda I)\delta = -g^\top\delta$ (CG from zero, truncated or not), so it
  costs no tangent-linear run (K. Madsen, H. B. Nielsen, O. Tingleff, *Methods for non-linear
  least squares problems*, IMM DTU 2004, where it is the exact-solve form). Monotone, to the
  cost's round-off: a step whose effect is below $64\,\varepsilon|\Phi|$ is judged by the
  gradient norm instead (see ``xtol`` below).
* ``"line_search"``: $\lambda = 0$, $\alpha$ halved (Armijo backtracking) until the cost decreases
  enough. Monotone in the same sense.
* ``"none"``: plain damped steps with the parameters' $\lambda_k = e^{\ell_k}$ and $\alpha_k$, no
  safeguard: the differentiable layer of an unrolled (learned) Gauss–Newton.

The optimality condition is $\nabla\Phi(x^*) = J^\top r = 0$, whose Jacobian (the Hessian) is
symmetric: the implicit derivative of a converged solve is one CG solve with Hessian–vector
products.

References: P. Courtier, J.-N. Thépaut, A. Hollingsworth, Q. J. R. Meteorol. Soc. 120 (1994)
1367-1387; A. S. Lawless, S. Gratton, N. K. Nichols, Q. J. R. Meteorol. Soc. 131 (2005) 1085-1097
(incremental 4D-Var as Gauss–Newton); H. B. Nielsen, "Damping parameter in Marquardt's method",
IMM-REP-1999-05, DTU; J. Nocedal, S. J. Wright, *Numerical Optimization* (2006), ch. 3 and 10.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from .._linear_solve import LinearSolver, conjugate_gradient, raise_if_failed, solve_linear
from .._misc import check_number, half_squared_norm
from .._solution import RESULTS, Solution
from .._validate import device_array
from ._base import AbstractIterativeSolver
from ._mode import Converged

__all__ = ["DampedStep", "GLOBALIZATIONS", "GaussNewton"]

GLOBALIZATIONS = ("levenberg_marquardt", "line_search", "none")

_ACCEPT = 1e-4  # sufficient-decrease constant (LM gain ratio; Armijo)
_MAX_RETRIES = 30  # damping increases (x2, x4, ...) or step halvings before giving up
_MAX_DAMPING = 1e16
_ROUNDOFF = 64.0  # a predicted decrease below 64 eps |J| is not measurable in the cost


class DampedStep(eqx.Module):
    r"""Per-iteration parameters of Gauss–Newton: $\lambda = e^{\ell}$ (``log_damping``) and $\alpha$ (``step_length``).

    In converged mode they are the starting damping and trial step; in unrolled mode layer $k$
    uses its own (learnable) pair.
    """

    log_damping: jax.Array
    step_length: jax.Array


def _damped_solve(tangent, adjoint, gradient, damping, inner):
    def normal(d):
        return adjoint(tangent(d))[0] + damping * d

    return solve_linear(normal, -gradient, inner, spd=True, what="Gauss-Newton inner solve (J^T J + lambda I)")


def normal_operator(tangent, adjoint, r, damping, evaluate):
    r"""The operator of a trip's CG loop: $v \mapsto J^\top w + \lambda v$, $w = Jv$, or $w = r$ where ``evaluate``.

    ``tangent`` and ``adjoint`` are $J$ and $J^\top$ at the trip's point (``jax.linearize``,
    ``jax.linear_transpose``). ``bench_latency`` times this function as Gauss–Newton's product.
    """

    def operator(v):
        w = lax.cond(evaluate, lambda: r, lambda: tangent(v))
        return adjoint(w)[0] + damping * v

    return operator


def _direction_or_gradient(tangent, adjoint, r, gradient, damping, evaluate, inner):
    r"""One CG loop of a trip: the damped Gauss–Newton direction, or where ``evaluate`` the gradient alone.

    The direction solves $(J^\top J + \lambda I)\,\delta = -\nabla\Phi$ (``gradient``) by CG;
    the gradient is $\nabla\Phi = J^\top r$ at the trip's point. XLA compiles each call site of the
    model on its own, so both apply the adjoint model at the one place of the CG loop: its operator
    is $v \mapsto J^\top w + \lambda v$ with $w = Jv$, or $w = r$ when ``evaluate``, and then the loop
    takes no CG step: it refreshes its residual at zero, $0 - J^\top r$, and stops. Three model runs
    in the program (linearisation, tangent, adjoint) instead of four.

    **Returns:** ``(direction, inner_steps, gradient)``, the direction zero when ``evaluate``, the
    gradient zero otherwise.
    """

    operator = normal_operator(tangent, adjoint, r, damping, evaluate)
    b = jnp.where(evaluate, 0.0, -gradient)
    max_steps = jnp.where(evaluate, 0, inner.max_steps)
    x, residual, (result, stats) = conjugate_gradient(operator, b, inner, max_steps=max_steps, refresh_first=evaluate)
    if inner.throw:
        x = raise_if_failed(x, Solution(x, result, stats, None), inner, "Gauss-Newton inner solve (J^T J + lambda I)")
    return x, stats["num_steps"], jnp.where(evaluate, -residual, 0.0)


class _State(eqx.Module):
    x: Any  # the iterate (the problem's control pytree)
    cost: jax.Array
    gradient: jax.Array  # flat ∇Φ(x)
    gradient_norm0: jax.Array
    damping: jax.Array
    nu: jax.Array
    inner_iterations: jax.Array
    accepted: jax.Array
    small_step: jax.Array
    fresh: jax.Array  # x not evaluated yet: the next step only evaluates it (see GaussNewton.deferred_init)


class _Trip(eqx.Module):
    """The carry of one safeguarded step's loop: each trip evaluates the model once, at ``point``."""

    point: jax.Array  # where this trip evaluates: a trial x + alpha delta, or x itself (a base trip)
    trial: jax.Array
    damping: jax.Array
    step_length: jax.Array
    nu: jax.Array
    accepted: jax.Array
    tries: jax.Array  # trials evaluated
    inner_iterations: jax.Array
    direction: jax.Array  # delta, the last inner solve's solution
    predicted: jax.Array  # the model's decrease at the pending trial
    first_predicted: jax.Array
    gain: jax.Array
    cost: jax.Array  # at the accepted trial (or at x on a fresh state)
    gradient: jax.Array
    done: jax.Array


class GaussNewton(AbstractIterativeSolver):
    r"""Gauss–Newton / Levenberg–Marquardt for $\min_x \tfrac12\|r(x)\|^2$ (see the module docstring).

    **Arguments:**

    - ``globalization``: ``"levenberg_marquardt"`` (default), ``"line_search"`` or ``"none"``
      (unrolled, learnable steps).
    - ``damping``: the initial $\lambda_0$ (default 1e-3; relative to the identity contributed by the
      background term); ``step_length``: the initial $\alpha$ (default 1).
    - ``xtol``: also converged when an accepted step satisfies
      $\|\alpha\delta\| \le \mathrm{xtol}\,(\mathrm{xtol} + \|x\|)$ (default 1e-10), or when no
      step is accepted and the first one promised less than $64\,\varepsilon|\Phi|$ (optimal to
      working precision). Below that round-off level a step is judged by the gradient instead of
      the cost: it is accepted when it reduces $\|\nabla\Phi\|$, so the solve does not stop short
      of the gradient tolerance just because the cost can no longer resolve the progress. A stall
      above the round-off level is ``RESULTS.no_decrease``.
    - ``inner``: CG settings of the inner solve (default ``rtol=1e-6, max_steps=100``, no raise: a
      truncated inner solve is an inexact Newton step, and the globalization guards the decrease).
      With a globalization the inner solve is unpreconditioned CG (``method`` ``"cg"`` or ``"auto"``).

    Converged mode stops when $\|\nabla\Phi(x_k)\| \le \mathrm{atol} + \mathrm{rtol}\,\|\nabla\Phi(x_0)\|$.

    **One evaluation of the model per program.** With a globalization, a step is a loop whose every
    trip linearises the residuals once, at one point: a *base* trip at $x_k$ (then the inner CG
    solve gives the trial $x_k + \alpha\delta$), a *trial* trip at the trial (its cost, and its
    gradient $J^\top r$ from the same linearisation, decide acceptance). A rejected
    Levenberg–Marquardt trial is followed by a base trip at $x_k$ again (more damping, a new
    direction); a rejected line-search trial by a shorter trial on the same direction. The
    starting point is evaluated by the first step too (``deferred_init``), and the trial's gradient
    is computed by the CG loop's operator call (its adjoint applied to $r$), so XLA compiles the
    model's linearisation, its tangent and its adjoint once each: three model runs in the program
    instead of seven.
    """

    name: ClassVar[str] = "gauss_newton"
    symmetric_optimality: ClassVar[bool] = True

    globalization: str = "levenberg_marquardt"
    damping: float = 1e-3
    step_length: float = 1.0
    xtol: float = 1e-10
    inner: LinearSolver = LinearSolver(method="cg", rtol=1e-6, max_steps=100, throw=False)

    def __check_init__(self):
        if self.globalization not in GLOBALIZATIONS:
            raise ValueError(f"GaussNewton: unknown globalization {self.globalization!r}; valid are {list(GLOBALIZATIONS)}")
        check_number("GaussNewton: damping", self.damping, allow_minimum=self.globalization != "none")
        check_number("GaussNewton: step_length", self.step_length, allow_minimum=False)
        check_number("GaussNewton: xtol", self.xtol)
        if not isinstance(self.inner, LinearSolver):
            raise TypeError(f"GaussNewton: inner must be a LinearSolver, got {type(self.inner).__name__}")
        if self.globalization != "none" and (self.inner.method not in ("auto", "cg") or self.inner.preconditioner):
            raise ValueError(
                "GaussNewton: a safeguarded step solves its normal equations by unpreconditioned CG (the loop that "
                f"also gives the gradient); got inner method={self.inner.method!r}, preconditioner="
                f"{self.inner.preconditioner!r}; use LinearSolver(method='cg') or globalization='none'")

    @property
    def unrollable(self) -> bool:
        return self.globalization == "none"

    @property
    def deferred_init(self) -> bool:
        return self.globalization != "none"

    def not_unrollable_reason(self) -> str:
        return (f"GaussNewton(globalization={self.globalization!r}) retries rejected steps in a while loop; use "
                "globalization='none' for unrolled layers with learnable damping and step length")

    def default_params(self, x0) -> DampedStep:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(x0))
        log_damping = math.log(max(self.damping, 1e-300))
        return DampedStep(device_array(log_damping, dtype), device_array(self.step_length, dtype))

    def init(self, problem, x0, params) -> _State:
        x_flat = ravel_pytree(x0)[0]
        dtype = x_flat.dtype
        if self.deferred_init:  # the first step evaluates x0
            cost, gradient = jnp.asarray(jnp.nan, dtype), jnp.zeros_like(x_flat)
        else:
            cost, gradient = jax.value_and_grad(_flat_cost(problem, x0))(x_flat)
        levenberg = self.globalization == "levenberg_marquardt"
        damping = jnp.exp(params.log_damping) if levenberg else jnp.asarray(0.0, dtype)
        return _State(x0, cost, gradient, jnp.linalg.norm(gradient), damping.astype(dtype), jnp.asarray(2.0, dtype),
                      jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(False),
                      jnp.asarray(self.deferred_init))

    def step(self, problem, state: _State, params: DampedStep) -> _State:
        x_flat, unravel = ravel_pytree(state.x)
        residual = _flat_residual(problem, state.x)
        g, j = state.gradient, state.cost
        if self.globalization == "none":
            cost_fn = lambda w: half_squared_norm(residual(w))
            _, tangent = jax.linearize(residual, x_flat)
            adjoint = jax.linear_transpose(tangent, x_flat)
            lam, alpha = jnp.exp(params.log_damping), params.step_length
            inner_solution = _damped_solve(tangent, adjoint, g, lam, self.inner)
            x_new = x_flat + alpha * inner_solution.value
            cost, gradient = jax.value_and_grad(cost_fn)(x_new)
            return _State(unravel(x_new), cost, gradient, state.gradient_norm0, lam, state.nu,
                          inner_solution.stats["num_steps"], jnp.asarray(True), jnp.asarray(False), jnp.asarray(False))
        levenberg = self.globalization == "levenberg_marquardt"
        dtype = x_flat.dtype
        fresh = state.fresh
        roundoff = _ROUNDOFF * jnp.finfo(dtype).eps * jnp.abs(j)

        def trip(c: _Trip) -> _Trip:
            # The program's one evaluation of the model: residuals and linearisation at c.point.
            r, tangent = jax.linearize(residual, c.point)
            adjoint = jax.linear_transpose(tangent, c.point)
            cost = half_squared_norm(r)
            # A base trip (at x) solves for the damped Gauss–Newton direction; a trial trip (or the
            # start's) needs the gradient there instead. One CG loop does either (see _direction_or_gradient).
            base = ~c.trial & ~fresh
            direction, inner_steps, gradient = _direction_or_gradient(tangent, adjoint, r, g, c.damping, ~base,
                                                                      self.inner)
            # A trial trip: accept or reject. Where the step's effect is below the cost's round-off,
            # the cost cannot tell a good step from a bad one; the gradient still can: such a step is
            # taken when it reduces |∇Φ|.
            actual = j - cost
            by_gradient = ((c.predicted <= roundoff) & (jnp.abs(actual) <= roundoff)
                           & (jnp.linalg.norm(gradient) < jnp.linalg.norm(g)))
            ok = c.trial & jnp.isfinite(actual) & (c.predicted > 0) & ((actual >= _ACCEPT * c.predicted) | by_gradient)
            rejected = c.trial & ~ok
            gain = jnp.where(c.trial, jnp.where(by_gradient, 1.0, actual / jnp.where(c.predicted > 0, c.predicted, 1.0)),
                             c.gain)
            lam, nu, alpha = c.damping, c.nu, c.step_length
            if levenberg:  # more damping after a rejected step
                lam, nu = jnp.where(rejected, jnp.maximum(lam, 1e-8) * nu, lam), jnp.where(rejected, 2.0 * nu, nu)
            else:  # a shorter step
                alpha = jnp.where(rejected, 0.5 * alpha, alpha)
            tries = c.tries + c.trial.astype(jnp.int32)
            # A base trip does not change the damping (only a rejected trial does): it solved with lam.
            delta = jnp.where(base, direction, c.direction)
            # The model's decrease -(g^T delta + |J delta|^2 / 2) without another tangent-linear run: CG
            # from zero leaves its residual orthogonal to delta, delta^T (J^T J + lam I) delta = -g^T delta,
            # so it is (lam |delta|^2 - g^T delta) / 2 (a sum of two non-negative terms).
            gd = jnp.vdot(g, delta)
            if levenberg:
                predicted = jnp.where(base, 0.5 * (lam * jnp.vdot(delta, delta) - gd), c.predicted)
            else:
                predicted = -alpha * gd
            first_predicted = jnp.where(base & (c.tries == 0), predicted, c.first_predicted)
            # Next: the trial of a new direction, or (line search) a shorter trial of the same one;
            # after a rejected Levenberg–Marquardt trial, a base trip at x with more damping.
            trial_next = base | (rejected & (not levenberg))
            give_up = (tries >= _MAX_RETRIES) | (lam >= _MAX_DAMPING)
            keep = ok | fresh
            return _Trip(jnp.where(trial_next, x_flat + alpha * delta, x_flat), trial_next, lam, alpha, nu, ok, tries,
                         c.inner_iterations + inner_steps, delta, predicted, first_predicted,
                         gain, jnp.where(keep, cost, c.cost), jnp.where(keep, gradient, c.gradient),
                         fresh | ok | (rejected & give_up))

        zero = jnp.asarray(0.0, dtype)
        start = _Trip(x_flat, jnp.asarray(False), state.damping, params.step_length.astype(dtype), state.nu,
                      jnp.asarray(False), jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32), jnp.zeros_like(x_flat),
                      zero, zero, zero, j, g, ~fresh & (state.damping >= _MAX_DAMPING))
        c = lax.while_loop(lambda c: ~c.done, trip, start)
        ok, lam, nu = c.accepted, c.damping, c.nu
        step = jnp.where(ok, c.step_length * c.direction, 0.0)
        x_new = x_flat + step
        cost, gradient = jnp.where(ok | fresh, c.cost, j), jnp.where(ok | fresh, c.gradient, g)
        if levenberg:  # Nielsen: shrink lambda after a good step
            lam = jnp.where(fresh, lam, lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * c.gain - 1.0) ** 3))
            nu = jnp.where(fresh, nu, jnp.asarray(2.0, dtype))
        small = ok & (jnp.linalg.norm(step) <= self.xtol * (self.xtol + jnp.linalg.norm(x_flat)))
        # A model step that promises less than the cost's round-off and does not reduce the gradient
        # either cannot be verified: the iterate is optimal to working precision.
        at_roundoff = ~ok & ~fresh & (c.first_predicted <= roundoff)
        gradient_norm0 = jnp.where(fresh, jnp.linalg.norm(gradient), state.gradient_norm0)
        return _State(unravel(x_new), cost, gradient, gradient_norm0, lam, nu, c.inner_iterations, ok | fresh,
                      small | at_roundoff, jnp.asarray(False))

    def terminate(self, problem, state: _State, mode: Converged):
        gnorm = jnp.linalg.norm(state.gradient)
        converged = (gnorm <= mode.atol + mode.rtol * state.gradient_norm0) | state.small_step
        finite = jnp.isfinite(state.cost) & jnp.isfinite(gnorm)
        done = converged | ~state.accepted | ~finite
        result = RESULTS.where(
            ~finite, RESULTS.nonfinite, RESULTS.where(converged, RESULTS.successful, RESULTS.no_decrease)
        )
        return done, result

    def value(self, state: _State):
        return state.x

    def records(self, state: _State) -> dict[str, jax.Array]:
        return {"cost": state.cost, "gradient_norm": jnp.linalg.norm(state.gradient),
                "damping": state.damping, "inner_iterations": state.inner_iterations.astype(state.cost.dtype)}

    def optimality_residual(self, problem, x, params):
        return jax.grad(problem.cost)(x)


def _flat_residual(problem, x):
    unravel = ravel_pytree(x)[1]
    return lambda w: problem.residuals(unravel(w))


def _flat_cost(problem, x):
    residual = _flat_residual(problem, x)
    return lambda w: half_squared_norm(residual(w))
