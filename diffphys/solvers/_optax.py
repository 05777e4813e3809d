r"""Gradient methods on the solver core: L-BFGS (optax's direction, a strong-Wolfe line search) and Adam (optax).

Both minimise the smooth part $\Phi(x) = \tfrac12\|r(x)\|^2$ from its value and gradient (one
forward and one adjoint model run per evaluation). Converged mode stops when
$\|\nabla\Phi(x_k)\| \le \mathrm{atol} + \mathrm{rtol}\,\|\nabla\Phi(x_0)\|$; the implicit derivative uses
the optimality condition $\nabla\Phi(x^*) = 0$ (Hessian solve by CG).

References: D. C. Liu, J. Nocedal, "On the limited memory BFGS method for large scale
optimization", Math. Program. 45 (1989) 503-528; D. P. Kingma, J. Ba, "Adam: a method for
stochastic optimization", ICLR 2015.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax

from .._misc import check_int, check_number, tree_squared_norm
from .._solution import RESULTS
from .._validate import device_array
from ._base import AbstractIterativeSolver
from ._line_search import strong_wolfe_search
from ._mode import Converged

__all__ = ["LBFGS", "Adam", "AbstractOptaxSolver"]


class _State(eqx.Module):
    x: Any
    optimizer_state: Any
    cost: jax.Array
    gradient: Any
    gradient_norm0: jax.Array
    fresh: jax.Array  # x not evaluated yet: the next step only evaluates it (see LBFGS)
    stalled: jax.Array = eqx.field(default_factory=lambda: jnp.asarray(False))  # the line search found no decrease


class AbstractOptaxSolver(AbstractIterativeSolver):
    """A first-order method from optax; subclasses say which transformation."""

    symmetric_optimality: ClassVar[bool] = True

    @abc.abstractmethod
    def optimizer(self) -> optax.GradientTransformation:
        """The optax transformation."""

    def default_params(self, x0):
        # A multiplier of the update: learnable per layer when unrolled.
        return device_array(1.0, jnp.result_type(*jax.tree_util.tree_leaves(x0)))

    def init(self, problem, x0, params) -> _State:
        cost, gradient = jax.value_and_grad(problem.cost)(x0)
        return _State(x0, self.optimizer().init(x0), cost, gradient, jnp.sqrt(tree_squared_norm(gradient)),
                      jnp.asarray(False))

    def terminate(self, problem, state: _State, mode: Converged):
        gnorm = jnp.sqrt(tree_squared_norm(state.gradient))
        finite = jnp.isfinite(state.cost) & jnp.isfinite(gnorm)
        converged = gnorm <= mode.atol + mode.rtol * state.gradient_norm0
        stalled = state.stalled & ~converged
        result = RESULTS.where(stalled, RESULTS.no_decrease, RESULTS.successful)
        result = RESULTS.where(finite, result, RESULTS.nonfinite)
        return converged | stalled | ~finite, result

    def value(self, state: _State):
        return state.x

    def records(self, state: _State):
        return {"cost": state.cost, "gradient_norm": jnp.sqrt(tree_squared_norm(state.gradient))}

    def optimality_residual(self, problem, x, params):
        return jax.grad(problem.cost)(x)


class LBFGS(AbstractOptaxSolver):
    r"""Limited-memory BFGS: optax's two-loop direction and a strong-Wolfe (zoom) line search.

    The direction is ``optax.lbfgs`` without its line search (``optax.scale_by_lbfgs``: the two-loop
    recursion over the last ``memory_size`` pairs, the first step scaled to length at most 1). The step
    along it comes from :func:`strong_wolfe_search`, which evaluates the cost and gradient at one place, once
    per trip of its loop; the first step evaluates the starting point there too (``deferred_init``). So the
    compiled solve holds one copy of the cost and its gradient, where ``optax.lbfgs``'s zoom search (one per
    phase) and the evaluation of the start held three. A search that finds no step with sufficient decrease
    ends the solve with ``RESULTS.no_decrease`` (with ``throw=False``, at the last iterate).

    **Arguments:** ``memory_size``: pairs of past steps kept (default 10). Not unrollable (the
    line search is a data-dependent loop).
    """

    name: ClassVar[str] = "lbfgs"
    memory_size: int = 10

    def __check_init__(self):
        check_int("LBFGS: memory_size", self.memory_size)

    @property
    def unrollable(self) -> bool:
        return False

    def not_unrollable_reason(self) -> str:
        return "LBFGS's zoom line search is a data-dependent loop; use Adam or GaussNewton(globalization='none')"

    def optimizer(self):
        return optax.lbfgs(memory_size=self.memory_size, linesearch=None)

    @property
    def deferred_init(self) -> bool:
        return True

    def init(self, problem, x0, params) -> _State:
        # Not evaluated here: the first step evaluates x0 (see the class docstring).
        gradient = jax.tree_util.tree_map(jnp.zeros_like, x0)
        cost = jnp.asarray(jnp.nan, jnp.result_type(*jax.tree_util.tree_leaves(x0)))
        return _State(x0, self.optimizer().init(x0), cost, gradient, cost, jnp.asarray(True))

    def step(self, problem, state: _State, params) -> _State:
        def direction():
            updates, opt_state = self.optimizer().update(state.gradient, state.optimizer_state, state.x)
            return jax.tree_util.tree_map(lambda u: params * u, updates), opt_state

        no_direction = jax.tree_util.tree_map(jnp.zeros_like, state.x)
        updates, opt_state = lax.cond(state.fresh, lambda: (no_direction, state.optimizer_state), direction)
        search = strong_wolfe_search(jax.value_and_grad(problem.cost), state.x, updates, state.cost, state.gradient,
                                     evaluate_start=state.fresh)
        gradient_norm0 = jnp.where(state.fresh, jnp.sqrt(tree_squared_norm(search.gradient)), state.gradient_norm0)
        return _State(search.x, opt_state, search.value, search.gradient, gradient_norm0, jnp.asarray(False),
                      ~search.found)


class Adam(AbstractOptaxSolver):
    r"""Adam with a fixed learning rate (each update is also scaled by the layer's parameter when unrolled).

    **Arguments:** ``learning_rate`` (> 0, default 0.05).
    """

    name: ClassVar[str] = "adam"
    learning_rate: float = 0.05

    def __check_init__(self):
        check_number("Adam: learning_rate", self.learning_rate, allow_minimum=False)

    def optimizer(self):
        return optax.adam(self.learning_rate)

    def step(self, problem, state: _State, params) -> _State:
        updates, opt_state = self.optimizer().update(state.gradient, state.optimizer_state, state.x)
        x = optax.apply_updates(state.x, jax.tree_util.tree_map(lambda u: params * u, updates))
        cost, gradient = jax.value_and_grad(problem.cost)(x)
        return _State(x, opt_state, cost, gradient, state.gradient_norm0, state.fresh)
