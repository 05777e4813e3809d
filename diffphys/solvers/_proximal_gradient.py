r"""Proximal gradient methods for $\min_x f(x) + g(x)$ with $f = \tfrac12\|r(x)\|^2$: ISTA and FISTA.

One iteration with step $\alpha$ and per-iteration weight scale $w$ (continuation, learned
thresholds) is

$$x_{k+1} = \operatorname{prox}_{\alpha w g}\bigl(y_k - \alpha\nabla f(y_k)\bigr),$$

with $y_k = x_k$ (ISTA) or the Nesterov extrapolation
$y_k = x_k + \tfrac{t_{k-1}-1}{t_k}(x_k - x_{k-1})$,
$t_k = \tfrac12\bigl(1 + \sqrt{1 + 4t_{k-1}^2}\bigr)$ (FISTA), restarted ($t = 1$) when the
momentum points uphill, $\langle y_k - x_{k+1}, x_{k+1} - x_k\rangle > 0$ (the gradient scheme of
O'Donoghue & Candès). The step is $1/L$ with $L$ the largest eigenvalue of $J^\top J$ at the
starting point (power iteration; exact for a linear $r$), a given step (checked against $2/L$), or
found by backtracking (Beck & Teboulle) for non-linear residuals.

Optimality is the scaled fixed-point residual (the gradient mapping)

$$G_\alpha(x) = \bigl(x - \operatorname{prox}_{\alpha g}(x - \alpha\nabla f(x))\bigr)/\alpha,$$

zero exactly at a minimiser for any $\alpha > 0$ (for L1 it is a projection of
$\operatorname{dist}(0, \nabla f + \lambda\partial\|x\|_1)$). Its norm is the convergence test, the
implicit-function-theorem condition of a converged solve and an unsupervised training loss.

References: I. Daubechies, M. Defrise, C. De Mol, "An iterative thresholding algorithm for linear
inverse problems with a sparsity constraint", CPAM 57 (2004) 1413-1457; A. Beck, M. Teboulle,
"A fast iterative shrinkage-thresholding algorithm for linear inverse problems", SIAM J. Imaging
Sci. 2 (2009) 183-202; B. O'Donoghue, E. Candès, "Adaptive restart for accelerated gradient
schemes", Found. Comput. Math. 15 (2015) 715-732; E. T. Hale, W. Yin, Y. Zhang, "Fixed-point
continuation for l1-minimization", SIAM J. Optim. 19 (2008) 1107-1130 (continuation).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
from jax import lax

from .._misc import check_int, check_number, stop_gradient, tree_dot, tree_squared_norm
from .._solution import RESULTS
from .._validate import device_array
from ._base import AbstractIterativeSolver
from ._mode import Converged
from ._problem import AbstractProblem

__all__ = ["FISTA", "ISTA", "ProximalStep", "gradient_mapping_residual", "lipschitz_estimate"]


def lipschitz_estimate(problem: AbstractProblem, x, iterations: int = 100) -> jax.Array:
    r"""$\lambda_{\max}(J^\top J)$ at ``x`` by power iteration ($J$ the Jacobian of the residuals).

    $L = \|J\|_2^2$ is the Lipschitz constant of $\nabla\tfrac12\|r\|^2$ for a linear $r$ (a local
    estimate otherwise). The start vector is a fixed pseudo-random one (deterministic runs).
    Power iteration approaches $L$ from below; ``iterations`` (default 100) sets how closely.
    """
    x, problem = lax.stop_gradient(x), stop_gradient(problem)
    flat, unravel = jax.flatten_util.ravel_pytree(x)
    _, jvp = jax.linearize(lambda w: problem.residuals(unravel(w)), flat)
    vjp = jax.linear_transpose(jvp, flat)

    def normal(v):
        return vjp(jvp(v))[0]

    v = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = normal(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(flat.dtype).tiny)

    v = lax.fori_loop(0, iterations, body, v)
    return lax.stop_gradient(jnp.vdot(v, normal(v)))


def gradient_mapping_residual(problem: AbstractProblem, x, power_iterations: int = 100):
    r"""$x - \operatorname{prox}_{\alpha g}(x - \alpha\nabla f(x))$ with $\alpha = 1/L$ at ``x``: zero exactly at a minimiser.

    The optimality condition of every method whose prior has a prox (proximal gradient, and the
    splitting methods when the prior is not split); $\alpha$ is held constant (stopped gradient:
    it does not move the zero set) and $1/L$ keeps the implicit derivative's system well scaled.
    """
    alpha = 1.0 / lipschitz_estimate(problem, x, power_iterations)
    gradient = jax.grad(problem.cost)(x)
    z = jax.tree_util.tree_map(lambda a, g: a - alpha * g, x, gradient)
    return jax.tree_util.tree_map(jnp.subtract, x, _prox(problem, z, alpha))


class ProximalStep(eqx.Module):
    r"""One proximal-gradient iteration's learnable parameters.

    ``step_scale``: the step as a multiple of the base step ($1/L$ or the given one);
    ``weight_scale``: a factor on the prior's weight (a learned threshold or a regularisation
    schedule). Defaults 1 and 1: plain ISTA/FISTA.
    """

    step_scale: jax.Array
    weight_scale: jax.Array


class _State(eqx.Module):
    x: Any  # x_k
    x_previous: Any  # x_{k-1} (FISTA's momentum)
    momentum: jax.Array  # t_k
    gradient: Any  # grad f(x_k) (ISTA reuses it; FISTA evaluates at the extrapolated point)
    step: jax.Array  # the base step alpha (1/L, given, or backtracked)
    continuation: jax.Array  # the continuation factor on the prior's weight (>= 1, decays to 1)
    smooth: jax.Array  # f(x_k)
    objective: jax.Array  # f(x_k) + g(x_k)
    optimality: jax.Array  # ||G_alpha(y)||: the gradient mapping at the last prox step's starting point
    optimality0: jax.Array
    best_x: Any
    best_objective: jax.Array
    best_optimality: jax.Array
    since_best: jax.Array  # iterations since neither the objective nor the gradient mapping improved on its best
    gradients: jax.Array  # evaluations of f with its gradient (one forward and one adjoint pass)
    costs: jax.Array  # evaluations of f alone (one forward pass)


def _prox(problem, z, gamma):
    return problem.prior().prox(z, gamma)


def _objective(problem, x):
    return problem.cost(x) + problem.prior().value(x)


class _AbstractProximalGradient(AbstractIterativeSolver):
    step_size: float | None = None
    backtracking: bool = False
    continuation: float = 1.0
    continuation_rate: float = 0.5
    power_iterations: int = 100
    patience: int = 50
    restart: bool = True
    accelerated: ClassVar[bool] = False

    def __check_init__(self):
        if self.step_size is not None:
            check_number(f"{type(self).__name__}: step_size", self.step_size, allow_minimum=False)
        check_number(f"{type(self).__name__}: continuation (the first weight factor)", self.continuation, minimum=1.0)
        check_number(f"{type(self).__name__}: continuation_rate", self.continuation_rate, allow_minimum=False)
        if self.continuation_rate >= 1:
            raise ValueError(f"{type(self).__name__}: continuation_rate must be in (0, 1), got {self.continuation_rate!r}")
        check_int(f"{type(self).__name__}: power_iterations", self.power_iterations)
        check_int(f"{type(self).__name__}: patience", self.patience)
        if self.backtracking and self.step_size is not None:
            raise ValueError(f"{type(self).__name__}: give either step_size= or backtracking=True, not both")

    @property
    def unrollable(self) -> bool:
        return not self.backtracking

    def not_unrollable_reason(self) -> str:
        return f"{type(self).__name__}(backtracking=True) searches its step in a data-dependent loop; use a fixed step"

    def default_params(self, x0) -> ProximalStep:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(x0), float)
        return ProximalStep(step_scale=device_array(1.0, dtype), weight_scale=device_array(1.0, dtype))

    def check_problem(self, problem, x0) -> None:
        prior = problem.prior()
        if prior is None:
            raise ValueError(
                f"{type(self).__name__} needs a prior (the non-smooth part): wrap the problem as "
                f"Composite(problem, prior), e.g. Composite(problem, priors.L1(0.1))"
            )
        if not getattr(prior, "has_exact_prox", True):
            raise ValueError(
                f"{type(self).__name__} needs the prior's prox, and {type(prior).__name__} "
                f"({' + '.join(type(t).__name__ for t in prior.terms)}) has none in closed form: "
                f"use ADMM or PDHG, which split the sum into its terms"
            )

    def _base_step(self, problem, x0):
        if self.backtracking:
            # A generous first trial; the search only shrinks it.
            return 2.0 / lipschitz_estimate(problem, x0, 10)
        lipschitz = lipschitz_estimate(problem, x0, self.power_iterations)
        if self.step_size is None:
            return 1.0 / lipschitz
        step = jnp.asarray(self.step_size, jnp.result_type(float))
        return eqx.error_if(
            step, step * lipschitz >= 2.0,
            f"{type(self).__name__}: step_size={self.step_size!r} is not below 2/L (L = ||J^T J|| at the start, "
            f"from power iteration), so the iteration may diverge; lower it or leave it None for 1/L",
        )

    def init(self, problem, x0, params: ProximalStep) -> _State:
        x0 = jax.tree_util.tree_map(jnp.asarray, x0)
        step = self._base_step(problem, x0)
        smooth, gradient = jax.value_and_grad(problem.cost)(x0)
        objective = smooth + problem.prior().value(x0)
        dtype = jnp.result_type(smooth)
        alpha = step * params.step_scale
        weight = self.continuation * params.weight_scale
        x1 = _prox(problem, jax.tree_util.tree_map(lambda a, g: a - alpha * g, x0, gradient), alpha * weight)
        optimality = jnp.sqrt(tree_squared_norm(jax.tree_util.tree_map(jnp.subtract, x0, x1))) / alpha
        return _State(
            x=x0, x_previous=x0, momentum=jnp.asarray(1.0, dtype), gradient=gradient, step=jnp.asarray(step, dtype),
            continuation=jnp.asarray(self.continuation, dtype), smooth=smooth, objective=objective,
            optimality=optimality, optimality0=optimality, best_x=x0, best_objective=objective, best_optimality=optimality,
            since_best=jnp.asarray(0, jnp.int32), gradients=jnp.asarray(1, jnp.int32),
            costs=jnp.asarray(0, jnp.int32),
        )

    def _extrapolate(self, state: _State):
        if not self.accelerated:
            return state.x, state.momentum
        momentum = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.momentum**2))
        beta = (state.momentum - 1.0) / momentum
        y = jax.tree_util.tree_map(lambda a, b: a + beta * (a - b), state.x, state.x_previous)
        return y, momentum

    def _backtrack(self, problem, y, fy, gy, step, weight):
        """Beck–Teboulle: shrink the step until $f(x^+) \\le f(y) + \\langle\\nabla f(y), x^+ - y\\rangle + \\|x^+ - y\\|^2/(2\\alpha)$."""

        def trial(step):
            x = _prox(problem, jax.tree_util.tree_map(lambda a, g: a - step * g, y, gy), step * weight)
            d = jax.tree_util.tree_map(jnp.subtract, x, y)
            bound = fy + tree_dot(gy, d) + tree_squared_norm(d) / (2.0 * step)
            return x, problem.cost(x), bound

        # Slack of a few ulps of f: near the minimiser the test compares numbers equal to round-off,
        # and an exact comparison would shrink the step for nothing.
        slack = 16 * jnp.finfo(jnp.result_type(fy)).eps * jnp.abs(fy)

        def cond(carry):
            step, _, fx, bound, tries = carry
            return (fx > bound + slack) & (tries < 60)

        def body(carry):
            step, _, _, _, tries = carry
            step = 0.5 * step
            x, fx, bound = trial(step)
            return step, x, fx, bound, tries + 1

        x, fx, bound = trial(step)
        step, x, fx, _, tries = lax.while_loop(cond, body, (step, x, fx, bound, jnp.asarray(0, jnp.int32)))
        return x, step, tries

    def step(self, problem, state: _State, params: ProximalStep) -> _State:
        if self.accelerated:
            y, momentum = self._extrapolate(state)
            fy, gy = jax.value_and_grad(problem.cost)(y)
            gradients = state.gradients + 1
        else:
            y, momentum, fy, gy, gradients = state.x, state.momentum, state.smooth, state.gradient, state.gradients
        weight = state.continuation * params.weight_scale
        if self.backtracking:
            x, step, tries = self._backtrack(problem, y, fy, gy, state.step, weight)
            alpha, costs = step, state.costs + tries + 1
        else:
            step, costs = state.step, state.costs
            alpha = step * params.step_scale
            x = _prox(problem, jax.tree_util.tree_map(lambda a, g: a - alpha * g, y, gy), alpha * weight)
        optimality = jnp.sqrt(tree_squared_norm(jax.tree_util.tree_map(jnp.subtract, y, x))) / alpha
        if self.accelerated and self.restart:
            # Gradient restart: drop the momentum when it points uphill.
            uphill = tree_dot(jax.tree_util.tree_map(jnp.subtract, y, x),
                              jax.tree_util.tree_map(jnp.subtract, x, state.x)) > 0
            momentum = jnp.where(uphill, jnp.ones_like(momentum), momentum)
        if self.accelerated:
            smooth, gradient, costs = problem.cost(x), gy, costs + 1
        else:
            (smooth, gradient), gradients = jax.value_and_grad(problem.cost)(x), gradients + 1
        objective = smooth + problem.prior().value(x)
        improved = objective < state.best_objective
        # Progress is a lower objective or a smaller gradient mapping (near round-off the objective
        # stops resolving progress that the gradient mapping still shows); the objective may rise
        # while a continuation schedule lowers the weight: not a stall either.
        progress = improved | (optimality < state.best_optimality) | (state.continuation > 1.0)
        best_x = jax.tree_util.tree_map(lambda a, b: jnp.where(improved, a, b), x, state.best_x)
        return _State(
            x=x, x_previous=state.x, momentum=momentum, gradient=gradient, step=step,
            continuation=jnp.maximum(state.continuation * self.continuation_rate, 1.0),
            smooth=smooth, objective=objective, optimality=optimality,
            optimality0=state.optimality0,
            best_x=best_x, best_objective=jnp.minimum(objective, state.best_objective),
            best_optimality=jnp.minimum(optimality, state.best_optimality),
            since_best=jnp.where(progress, 0, state.since_best + 1),
            gradients=gradients, costs=costs,
        )

    def terminate(self, problem, state: _State, mode: Converged):
        finite = jnp.isfinite(state.objective) & jnp.isfinite(state.optimality)
        # The gradient mapping is measured at the point the last prox step started from (x_k for
        # ISTA, the extrapolated y_k for FISTA), relative to its value at the start.
        converged = (state.optimality <= mode.atol + mode.rtol * state.optimality0) & (state.continuation <= 1.0)
        stalled = state.since_best >= self.patience
        done = converged | stalled | ~finite
        result = RESULTS.where(
            ~finite, RESULTS.nonfinite, RESULTS.where(converged, RESULTS.successful, RESULTS.no_decrease)
        )
        return done, result

    def value(self, state: _State):
        return state.x

    def implicit_point(self, state: _State, result):
        """The best iterate when the run stalled (the objective stopped improving), else the last."""
        stalled = result == RESULTS.no_decrease
        return jax.tree_util.tree_map(lambda b, x: jnp.where(stalled, b, x), state.best_x, state.x)

    def records(self, state: _State) -> dict[str, jax.Array]:
        dtype = state.objective.dtype
        return {"cost": state.objective, "smooth": state.smooth, "optimality": state.optimality,
                "step": state.step.astype(dtype), "gradients": state.gradients.astype(dtype),
                "costs": state.costs.astype(dtype)}

    def optimality_residual(self, problem, x, params: ProximalStep):
        r"""$\alpha\,G_\alpha(x) = x - \operatorname{prox}_{\alpha g}(x - \alpha\nabla f(x))$, $\alpha = 1/L$ at ``x``.

        Zero exactly at a minimiser for any $\alpha > 0$; $\alpha = 1/L$ (held constant: it does
        not move the zero set) keeps the implicit derivative's linear system well scaled. The
        per-iteration weight scale is 1 here: a converged solve solves the problem as stated.
        """
        return gradient_mapping_residual(problem, x, self.power_iterations)


class ISTA(_AbstractProximalGradient):
    r"""Iterative shrinkage-thresholding (proximal gradient): $x_{k+1} = \operatorname{prox}_{\alpha g}(x_k - \alpha\nabla f(x_k))$.

    The objective decreases monotonically for $\alpha \le 1/L$; $O(1/k)$ convergence.

    **Arguments:**

    - ``step_size``: ``None`` (default: $1/L$, $L$ by power iteration at the start) or a fixed
      step (checked against $2/L$ at run time).
    - ``backtracking``: search the step (Beck & Teboulle) instead; for non-linear residuals whose
      $L$ varies. Not unrollable.
    - ``continuation``: the prior's weight starts at ``continuation`` × its value and is multiplied
      by ``continuation_rate`` each iteration down to 1 (geometric schedule; 1 = off). Speeds up
      sparse solves with a small weight; the converged answer is the problem's as stated.
    - ``power_iterations``: for the estimate of $L$ (default 100).
    - ``patience``: a converged run stops with ``RESULTS.no_decrease`` and returns its best
      iterate when neither the objective nor the gradient mapping has improved for this many
      iterations (default 50).

    Per-iteration parameters (:class:`ProximalStep`): ``step_scale`` and ``weight_scale``, learnable
    in :class:`~diffphys.solvers.Unrolled` mode (LISTA-type step and threshold per layer).
    """

    name: ClassVar[str] = "ista"


class FISTA(_AbstractProximalGradient):
    r"""ISTA with Nesterov momentum and adaptive (gradient) restart; $O(1/k^2)$ convergence.

    Same arguments as :class:`ISTA`, and ``restart`` (default ``True``): the adaptive gradient
    restart; ``False`` gives Beck & Teboulle's original FISTA. The objective is not monotone (the
    restart keeps it close); the best iterate is kept if a run stalls.
    """

    name: ClassVar[str] = "fista"
    accelerated: ClassVar[bool] = True
