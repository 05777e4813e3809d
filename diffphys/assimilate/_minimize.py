r"""Minimise a 4D-Var cost with a gradient method (L-BFGS with a zoom line search, or Adam), from optax.

Each iteration is one compiled call; the Python loop between calls checks convergence and reports
progress, so a long run can print its cost as it goes.

References: D. C. Liu, J. Nocedal, "On the limited memory BFGS method for large scale
optimization", Math. Program. 45 (1989) 503-528; D. P. Kingma, J. Ba, "Adam: a method for
stochastic optimization", ICLR 2015.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ._fourdvar import StrongConstraint4DVar

__all__ = ["METHODS", "MinimizeResult", "minimize"]

METHODS = ("lbfgs", "adam")
"""The gradient methods of :func:`minimize`."""


@dataclasses.dataclass(frozen=True)
class MinimizeResult:
    """Outcome of :func:`minimize`.

    - ``v``: the control increment at the end ($z_a = z_b + B^{1/2} v$; ``problem.control(v)``).
    - ``costs``: the cost $J$ at the start and after each iteration (length ``iterations + 1``).
    - ``gradient_norms``: $\\|\\nabla J\\|$ at the same points.
    - ``iterations``: the number of iterations done.
    - ``converged``: whether $\\|\\nabla J\\| \\le$ ``gtol`` $\\cdot \\|\\nabla J(v_0)\\|$ was reached.
    """

    v: Float[Array, "*grid"]
    costs: np.ndarray
    gradient_norms: np.ndarray
    iterations: int
    converged: bool


def _optimizer(method: str, learning_rate: float):
    if method == "lbfgs":
        return optax.lbfgs()
    return optax.adam(learning_rate)


@eqx.filter_jit
def _init(problem, v, method: str, learning_rate: float):
    return _optimizer(method, learning_rate).init(v)


@eqx.filter_jit
def _iterate(problem: StrongConstraint4DVar, v, state, method: str, learning_rate: float):
    """One optimiser iteration from ``v``: returns the next point and state, and the cost and gradient at ``v``.

    The cost and gradient at ``v`` come from the optimiser's state where L-BFGS's line search left
    them (computed here only at the first iteration), so the whole minimisation compiles one function.
    """
    opt = _optimizer(method, learning_rate)
    if method == "lbfgs":
        value, grad = optax.value_and_grad_from_state(problem.cost)(v, state=state)
        updates, state = opt.update(grad, state, v, value=value, grad=grad, value_fn=problem.cost)
    else:
        value, grad = jax.value_and_grad(problem.cost)(v)
        updates, state = opt.update(grad, state, v)
    return optax.apply_updates(v, updates), state, value, grad


def minimize(
    problem: StrongConstraint4DVar,
    v0: Float[Array, "*grid"] | None = None,
    *,
    method: str = "lbfgs",
    max_iterations: int = 100,
    gtol: float = 1e-5,
    learning_rate: float = 0.05,
    callback: Callable[[int, float, float], None] | None = None,
) -> MinimizeResult:
    r"""Minimise $J(v) = \tfrac12\|r(v)\|^2$ of a 4D-Var problem with L-BFGS or Adam.

    Stops when $\|\nabla J(v_k)\| \le \text{gtol}\,\|\nabla J(v_0)\|$ (converged) or after
    ``max_iterations`` iterations.

    **Arguments:**

    - ``problem``: a :class:`StrongConstraint4DVar` (anything with ``cost(v)`` and ``zero_control()``).
    - ``v0``: the starting control increment (default 0, the background).
    - ``method``: ``"lbfgs"`` (default; optax's L-BFGS with a zoom line search) or ``"adam"``.
    - ``max_iterations``: iteration budget (>= 1); ``gtol``: relative gradient tolerance (> 0).
    - ``learning_rate``: Adam's step size (unused by L-BFGS).
    - ``callback``: called as ``callback(iteration, cost, gradient_norm)`` at the start (iteration 0)
      and after every iteration, e.g. to print progress.

    **Returns:** a :class:`MinimizeResult`.
    """
    if method not in METHODS:
        raise ValueError(f"minimize: unknown method {method!r}; valid are {list(METHODS)}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise ValueError(f"minimize: max_iterations must be an integer >= 1, got {max_iterations!r}")
    for name, value in (("gtol", gtol), ("learning_rate", learning_rate)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"minimize: {name} must be a finite number > 0, got {value!r}")
    v = problem.zero_control() if v0 is None else jnp.asarray(v0)
    state = _init(problem, v, method, float(learning_rate))
    costs: list[float] = []
    norms: list[float] = []
    while True:
        # Evaluating at v_k also computes the step to v_{k+1}; it is dropped when v_k is the last.
        v_next, state_next, value, grad = _iterate(problem, v, state, method, float(learning_rate))
        costs.append(float(value))
        norms.append(float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grad)))))
        if not math.isfinite(costs[-1]):
            raise ValueError(
                f"minimize: the cost is not finite at iteration {len(costs) - 1}; check the observations, the "
                "background and that the model is stable for these controls"
            )
        iterations = len(costs) - 1
        if callback is not None:
            callback(iterations, costs[-1], norms[-1])
        converged = norms[-1] <= gtol * norms[0]
        if converged or iterations == max_iterations:
            break
        v, state = v_next, state_next
    return MinimizeResult(v, np.asarray(costs), np.asarray(norms), iterations, bool(converged))
