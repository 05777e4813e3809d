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

from .._linear_solve import LinearSolver, solve_linear
from .._misc import check_number, half_squared_norm
from .._solution import RESULTS
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

    Converged mode stops when $\|\nabla\Phi(x_k)\| \le \mathrm{atol} + \mathrm{rtol}\,\|\nabla\Phi(x_0)\|$.
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

    @property
    def unrollable(self) -> bool:
        return self.globalization == "none"

    def not_unrollable_reason(self) -> str:
        return (f"GaussNewton(globalization={self.globalization!r}) retries rejected steps in a while loop; use "
                "globalization='none' for unrolled layers with learnable damping and step length")

    def default_params(self, x0) -> DampedStep:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(x0))
        log_damping = jnp.asarray(math.log(max(self.damping, 1e-300)), dtype)
        return DampedStep(log_damping, jnp.asarray(self.step_length, dtype))

    def init(self, problem, x0, params) -> _State:
        cost, gradient = jax.value_and_grad(_flat_cost(problem, x0))(ravel_pytree(x0)[0])
        dtype = gradient.dtype
        levenberg = self.globalization == "levenberg_marquardt"
        damping = jnp.exp(params.log_damping) if levenberg else jnp.asarray(0.0, dtype)
        return _State(x0, cost, gradient, jnp.linalg.norm(gradient), damping.astype(dtype), jnp.asarray(2.0, dtype),
                      jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(False))

    def step(self, problem, state: _State, params: DampedStep) -> _State:
        x_flat, unravel = ravel_pytree(state.x)
        residual = _flat_residual(problem, state.x)
        cost_fn = lambda w: half_squared_norm(residual(w))
        _, tangent = jax.linearize(residual, x_flat)
        adjoint = jax.linear_transpose(tangent, x_flat)
        g, j = state.gradient, state.cost
        if self.globalization == "none":
            lam, alpha = jnp.exp(params.log_damping), params.step_length
            inner_solution = _damped_solve(tangent, adjoint, g, lam, self.inner)
            x_new = x_flat + alpha * inner_solution.value
            cost, gradient = jax.value_and_grad(cost_fn)(x_new)
            return _State(unravel(x_new), cost, gradient, state.gradient_norm0, lam, state.nu,
                          inner_solution.stats["num_steps"], jnp.asarray(True), jnp.asarray(False))
        levenberg = self.globalization == "levenberg_marquardt"
        dtype = x_flat.dtype

        def attempt(a):
            lam, alpha, nu, _, tries, cg, (_, _, first_predicted, _, _) = a
            inner_solution = _damped_solve(tangent, adjoint, g, lam, self.inner)
            delta = inner_solution.value
            # The model's decrease -(g^T delta + |J delta|^2 / 2) without another tangent-linear run: CG
            # from zero leaves its residual orthogonal to delta, delta^T (J^T J + lam I) delta = -g^T delta,
            # so it is (lam |delta|^2 - g^T delta) / 2 (a sum of two non-negative terms).
            gd = jnp.vdot(g, delta)
            predicted = 0.5 * (lam * jnp.vdot(delta, delta) - gd) if levenberg else -alpha * gd
            # The trial's gradient comes with its cost (one forward and one adjoint pass): an
            # accepted step then needs no further evaluation.
            trial_cost, trial_gradient = jax.value_and_grad(cost_fn)(x_flat + alpha * delta)
            actual = j - trial_cost
            # Where the step's effect is below the cost's round-off, the cost cannot tell a good step
            # from a bad one; the gradient still can: such a step is taken when it reduces |∇Φ|.
            roundoff = _ROUNDOFF * jnp.finfo(dtype).eps * jnp.abs(j)
            by_gradient = ((predicted <= roundoff) & (jnp.abs(actual) <= roundoff)
                           & (jnp.linalg.norm(trial_gradient) < jnp.linalg.norm(g)))
            ok = jnp.isfinite(actual) & (predicted > 0) & ((actual >= _ACCEPT * predicted) | by_gradient)
            gain = jnp.where(by_gradient, 1.0, actual / jnp.where(predicted > 0, predicted, 1.0))
            if levenberg:  # more damping after a rejected step
                lam, nu = jnp.where(ok, lam, jnp.maximum(lam, 1e-8) * nu), jnp.where(ok, nu, 2.0 * nu)
            else:  # a shorter step
                alpha = jnp.where(ok, alpha, 0.5 * alpha)
            first_predicted = jnp.where(tries == 0, predicted, first_predicted)
            return (lam, alpha, nu, ok, tries + 1, cg + inner_solution.stats["num_steps"],
                    (delta, gain, first_predicted, trial_cost, trial_gradient))

        def keep_trying(a):
            lam, _, _, ok, tries, _, _ = a
            return ~ok & (tries < _MAX_RETRIES) & (lam < _MAX_DAMPING)

        start = (state.damping, params.step_length.astype(dtype), state.nu, jnp.asarray(False), jnp.asarray(0, jnp.int32),
                 jnp.asarray(0, jnp.int32), (jnp.zeros_like(x_flat), jnp.asarray(0.0, dtype), jnp.asarray(0.0, dtype),
                                             j, g))
        lam, alpha, nu, ok, _, cg, (delta, gain, predicted, trial_cost, trial_gradient) = lax.while_loop(
            keep_trying, attempt, start)
        step = jnp.where(ok, alpha * delta, 0.0)
        x_new = x_flat + step
        cost, gradient = jnp.where(ok, trial_cost, j), jnp.where(ok, trial_gradient, g)
        if levenberg:  # Nielsen: shrink lambda after a good step
            lam = lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
            nu = jnp.asarray(2.0, dtype)
        small = ok & (jnp.linalg.norm(step) <= self.xtol * (self.xtol + jnp.linalg.norm(x_flat)))
        # A model step that promises less than the cost's round-off and does not reduce the gradient
        # either cannot be verified: the iterate is optimal to working precision.
        at_roundoff = ~ok & (predicted <= _ROUNDOFF * jnp.finfo(dtype).eps * jnp.abs(j))
        return _State(unravel(x_new), cost, gradient, state.gradient_norm0, lam, nu, cg, ok, small | at_roundoff)

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
