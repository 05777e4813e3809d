r"""ADMM (alternating direction method of multipliers) for $\min_x f(x) + \sum_{i=1}^m g_i(x)$.

$f = \tfrac12\|r(x)\|^2$ is the smooth part (a 4D-Var misfit through the PDE rollout, a linear
operator) and $g_1, \dots, g_m$ the prior's terms (one prior, or the terms of a
:class:`~diffphys.priors.Sum` that has no exact prox, such as TV + non-negativity). In consensus
form with copies $z_i = x$ and scaled duals $u_i$, one iteration with penalty $\rho$ is

$$x^+ = \operatorname*{arg\,min}_x f(x) + \tfrac\rho2\sum_i\|x - z_i + u_i\|^2,\quad
z_i^+ = \operatorname{prox}_{g_i/\rho}(x^+ + u_i),\quad u_i^+ = u_i + x^+ - z_i^+.$$

The data-consistency step is solved matrix-free: with $r$ linearised at the current $x$,
$(J^\top J + m\rho I)\,\delta = -J^\top r(x) - \rho\sum_i (x - z_i + u_i)$ by conjugate gradients
through the model's tangent and adjoint (exact for a linear $r$; one Gauss–Newton step of the
sub-problem otherwise). The penalty adapts by residual balancing (×2 / ÷2 when the primal and dual
residuals differ by more than 10×). Stopping test (Boyd et al. §3.3.1):
$\|r^k\| \le \sqrt{mn}\,\mathrm{atol} + \mathrm{rtol}\max(\|x\|, \|z\|)$ and
$\|s^k\| \le \sqrt{n}\,\mathrm{atol} + \mathrm{rtol}\,\|\rho u\|$ with the primal residual
$r^k = (x - z_i)_i$ and the dual residual $s^k = \rho(z_i^+ - z_i)_i$.

Optimality, for the implicit derivative of a converged solve, is stated on $x$ and the unscaled
duals $y_i = \rho u_i$:
$\nabla f(x) + \sum_i y_i = 0$ and $x = \operatorname{prox}_{g_i/\bar\rho}(x + y_i/\bar\rho)$
(i.e. $y_i \in \partial g_i(x)$), for any fixed $\bar\rho > 0$ (here $L$, which keeps the blocks on one scale).

References: S. Boyd, N. Parikh, E. Chu, B. Peleato, J. Eckstein, "Distributed optimization and
statistical learning via the alternating direction method of multipliers", Found. Trends Mach.
Learn. 3 (2011) 1-122; J. Eckstein, D. P. Bertsekas, "On the Douglas-Rachford splitting method and
the proximal point algorithm for maximal monotone operators", Math. Program. 55 (1992) 293-318
(convergence with summable errors in the sub-problems); Y. Yang, J. Sun, H. Li, Z. Xu, "ADMM-CSNet", IEEE TPAMI 42 (2020) 521-538
(unrolled ADMM with learned penalties).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp

from .._linear_solve import LinearSolver, solve_linear
from .._misc import check_number, tree_squared_norm
from .._solution import RESULTS
from .._validate import device_array
from ..priors import Sum
from ._base import AbstractIterativeSolver
from ._mode import Converged
from ._proximal_gradient import lipschitz_estimate

__all__ = ["ADMM", "ADMMStep"]


CONVERGED_INNER = LinearSolver(method="cg", rtol=1e-3, max_steps=300, throw=False)
UNROLLED_INNER = LinearSolver(method="cg", rtol=1e-10, max_steps=300, throw=False)


def prior_terms(problem) -> tuple:
    """The prior's terms: a :class:`~diffphys.priors.Sum` without an exact prox splits; anything else is one term."""
    prior = problem.prior()
    if isinstance(prior, Sum) and not prior.has_exact_prox:
        return prior.terms
    return (prior,)


class ADMMStep(eqx.Module):
    """One ADMM iteration's learnable parameters: ``penalty_scale`` (a factor on $\\rho$) and
    ``weight_scale`` (a factor on the prior's weights). Defaults 1 and 1."""

    penalty_scale: jax.Array
    weight_scale: jax.Array


class _State(eqx.Module):
    x: Any
    z: tuple
    u: tuple  # scaled duals
    rho: jax.Array
    smooth: jax.Array
    objective: jax.Array
    primal: jax.Array  # ||x - z_i||
    dual: jax.Array  # rho ||z_i^+ - z_i||
    primal_tolerance_scale: jax.Array  # max(||x||, ||z||)
    dual_tolerance_scale: jax.Array  # ||rho u||
    cg_iterations: jax.Array  # of the data-consistency solves (each one J^T J product; a solve adds ~2 for its residual checks)


def _tree_sub(a, b):
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def _norm(tree):
    return jnp.sqrt(tree_squared_norm(tree))


class ADMM(AbstractIterativeSolver):
    r"""ADMM with a matrix-free data-consistency step (see the module docstring).

    **Arguments:**

    - ``penalty``: $\rho$; ``None`` (default) takes $L = \|J^\top J\|$ at the start (power
      iteration), which balances the two terms of the data-consistency step.
    - ``adaptive_penalty``: residual balancing (default ``True``).
    - ``inner``: the :class:`~diffphys.LinearSolver` of the data-consistency step (CG). The
      default (``None``) depends on the mode. Converged: relative tolerance 1e-3, relative to the
      sub-problem's gradient at the current iterate, which vanishes at the solution, so the
      absolute error of each inexact step vanishes with it and the fixed point is the exact one
      (inexact ADMM with summable errors, Eckstein & Bertsekas 1992); on ``heat2d-source-l1`` it
      takes the same outer iterations as 1e-10 with a third of the CG products
      (``benchmarks/bench_proximal_pde.py``). Unrolled: 1e-10, since each layer is differentiated
      as an exact linear solve and its derivative must match what it computed.
    - ``power_iterations``: for the estimate of $L$.

    Per-iteration parameters (:class:`ADMMStep`): ``penalty_scale`` and ``weight_scale``, learnable
    in :class:`~diffphys.solvers.Unrolled` mode. The returned iterate is $z$ (exactly in the
    prior's domain: sparse, non-negative) for a single prior, $x$ for a split sum.
    """

    name: ClassVar[str] = "admm"
    penalty: float | None = None
    adaptive_penalty: bool = True
    inner: LinearSolver | None = None
    power_iterations: int = 100

    def __check_init__(self):
        if self.penalty is not None:
            check_number("ADMM: penalty (rho)", self.penalty, allow_minimum=False)
        if self.inner is not None and not isinstance(self.inner, LinearSolver):
            raise TypeError(f"ADMM: inner must be a LinearSolver, got {type(self.inner).__name__}")

    def for_mode(self, mode) -> "ADMM":
        if self.inner is not None:
            return self
        inner = CONVERGED_INNER if isinstance(mode, Converged) else UNROLLED_INNER
        return eqx.tree_at(lambda s: s.inner, self, inner, is_leaf=lambda v: v is None)

    def default_params(self, x0) -> ADMMStep:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(x0), float)
        return ADMMStep(penalty_scale=device_array(1.0, dtype), weight_scale=device_array(1.0, dtype))

    def check_problem(self, problem, x0) -> None:
        if problem.prior() is None:
            raise ValueError(
                "ADMM needs a prior (the non-smooth part): wrap the problem as Composite(problem, prior), "
                "e.g. Composite(problem, priors.L1(0.1))"
            )

    def init(self, problem, x0, params: ADMMStep) -> _State:
        terms = prior_terms(problem)
        x0 = jax.tree_util.tree_map(jnp.asarray, x0)
        if self.penalty is None:
            rho = lipschitz_estimate(problem, x0, self.power_iterations)
        else:
            rho = jnp.asarray(self.penalty, jnp.result_type(float))
        smooth = problem.cost(x0)
        dtype = jnp.result_type(smooth)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, x0)
        z = tuple(x0 for _ in terms)
        objective = smooth + sum(g.value(zi) for g, zi in zip(terms, z))
        inf = jnp.asarray(jnp.inf, dtype)
        return _State(
            x=x0, z=z, u=tuple(zeros for _ in terms), rho=jnp.asarray(rho, dtype), smooth=smooth,
            objective=objective, primal=inf, dual=inf, primal_tolerance_scale=_norm(x0),
            dual_tolerance_scale=jnp.asarray(0.0, dtype), cg_iterations=jnp.asarray(0, jnp.int32),
        )

    def step(self, problem, state: _State, params: ADMMStep) -> _State:
        terms = prior_terms(problem)
        m = len(terms)
        rho = state.rho * params.penalty_scale
        flat, unravel = jax.flatten_util.ravel_pytree(state.x)
        residual, jvp = jax.linearize(lambda w: problem.residuals(unravel(w)), flat)
        vjp = jax.linear_transpose(jvp, flat)
        consensus = sum(ravel(_tree_sub(state.x, zi)) + ravel(ui) for zi, ui in zip(state.z, state.u))
        rhs = -vjp(residual)[0] - rho * consensus
        solve = solve_linear(
            lambda d: vjp(jvp(d))[0] + m * rho * d, rhs, UNROLLED_INNER if self.inner is None else self.inner, spd=True, what="ADMM data-consistency step"
        )
        x = unravel(flat + solve.value)
        z = tuple(g.prox(jax.tree_util.tree_map(jnp.add, x, ui), params.weight_scale / rho)
                  for g, ui in zip(terms, state.u))
        u = tuple(jax.tree_util.tree_map(lambda a, b, c: a + b - c, ui, x, zi) for ui, zi in zip(state.u, z))
        primal = jnp.sqrt(sum(tree_squared_norm(_tree_sub(x, zi)) for zi in z))
        dual = rho * jnp.sqrt(sum(tree_squared_norm(_tree_sub(zn, zo)) for zn, zo in zip(z, state.z)))
        smooth = problem.cost(self._output(x, z))
        objective = smooth + sum(g.value(zi) for g, zi in zip(terms, z))
        primal_scale = jnp.maximum(_norm(x), jnp.sqrt(sum(tree_squared_norm(zi) for zi in z)))
        dual_scale = rho * jnp.sqrt(sum(tree_squared_norm(ui) for ui in u))
        if self.adaptive_penalty:
            # Residual balancing; the scaled duals follow the penalty (y = rho u is unchanged).
            factor = jnp.where(primal > 10 * dual, 2.0, jnp.where(dual > 10 * primal, 0.5, 1.0))
            u = tuple(jax.tree_util.tree_map(lambda a: a / factor, ui) for ui in u)
        else:
            factor = 1.0
        return _State(
            x=x, z=z, u=u, rho=state.rho * factor, smooth=smooth, objective=objective, primal=primal, dual=dual,
            primal_tolerance_scale=primal_scale, dual_tolerance_scale=dual_scale,
            cg_iterations=state.cg_iterations + solve.stats["num_steps"].astype(jnp.int32),
        )

    def terminate(self, problem, state: _State, mode: Converged):
        n = sum(jnp.size(leaf) for leaf in jax.tree_util.tree_leaves(state.x))
        m = len(state.z)
        # The residuals start at +inf (none measured yet): only NaN marks them as broken.
        finite = jnp.isfinite(state.objective) & ~jnp.isnan(state.primal) & ~jnp.isnan(state.dual)
        converged = (state.primal <= (m * n) ** 0.5 * mode.atol + mode.rtol * state.primal_tolerance_scale) & (
            state.dual <= n**0.5 * mode.atol + mode.rtol * state.dual_tolerance_scale
        )
        return converged | ~finite, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)

    @staticmethod
    def _output(x, z):
        return z[0] if len(z) == 1 else x

    def value(self, state: _State):
        return self._output(state.x, state.z)

    def records(self, state: _State) -> dict[str, jax.Array]:
        dtype = state.objective.dtype
        return {"cost": state.objective, "smooth": state.smooth, "primal_residual": state.primal,
                "dual_residual": state.dual, "penalty": state.rho, "cg_iterations": state.cg_iterations.astype(dtype)}

    def implicit_point(self, state: _State, result):
        return self.value(state), tuple(jax.tree_util.tree_map(lambda a: state.rho * a, ui) for ui in state.u)

    def point_value(self, point):
        return point[0]

    def optimality_residual(self, problem, point, params: ADMMStep):
        x, duals = point
        terms = prior_terms(problem)
        rho = lipschitz_estimate(problem, x, self.power_iterations)
        gradient = jax.grad(problem.cost)(x)
        stationarity = jax.tree_util.tree_map(lambda g, *ys: (g + sum(ys)) / rho, gradient, *duals)
        feasibility = tuple(
            _tree_sub(x, g.prox(jax.tree_util.tree_map(lambda a, y: a + y / rho, x, yi), 1.0 / rho))
            for g, yi in zip(terms, duals)
        )
        return stationarity, feasibility


def ravel(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]
