r"""Gradient methods from optax on the solver core: L-BFGS (zoom line search) and Adam.

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
from ._mode import Converged

__all__ = ["LBFGS", "Adam", "AbstractOptaxSolver"]


class _State(eqx.Module):
    x: Any
    optimizer_state: Any
    cost: jax.Array
    gradient: Any
    gradient_norm0: jax.Array
    fresh: jax.Array  # x not evaluated yet: the next step only evaluates it (see LBFGS)


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
        return converged | ~finite, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)

    def value(self, state: _State):
        return state.x

    def records(self, state: _State):
        return {"cost": state.cost, "gradient_norm": jnp.sqrt(tree_squared_norm(state.gradient))}

    def optimality_residual(self, problem, x, params):
        return jax.grad(problem.cost)(x)


class LBFGS(AbstractOptaxSolver):
    r"""Limited-memory BFGS with optax's zoom line search (strong Wolfe conditions).

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
        return optax.lbfgs(memory_size=self.memory_size)

    @property
    def deferred_init(self) -> bool:
        return True

    def init(self, problem, x0, params) -> _State:
        # Not evaluated here: the first step evaluates x0 (see the class docstring).
        gradient = jax.tree_util.tree_map(jnp.zeros_like, x0)
        cost = jnp.asarray(jnp.nan, jnp.result_type(*jax.tree_util.tree_leaves(x0)))
        return _State(x0, self.optimizer().init(x0), cost, gradient, cost, jnp.asarray(True))

    def step(self, problem, state: _State, params) -> _State:
        def update():
            opt = self.optimizer()
            updates, opt_state = opt.update(state.gradient, state.optimizer_state, state.x, value=state.cost,
                                            grad=state.gradient, value_fn=problem.cost)
            return optax.apply_updates(state.x, jax.tree_util.tree_map(lambda u: params * u, updates)), opt_state

        x, opt_state = lax.cond(state.fresh, lambda: (state.x, state.optimizer_state), update)
        # The line search has evaluated the cost and gradient at the new point: reuse them. On the
        # first step the state holds no value yet, and this evaluates x0.
        cost, gradient = optax.value_and_grad_from_state(problem.cost)(x, state=opt_state)
        gradient_norm0 = jnp.where(state.fresh, jnp.sqrt(tree_squared_norm(gradient)), state.gradient_norm0)
        return _State(x, opt_state, cost, gradient, gradient_norm0, jnp.asarray(False))


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
