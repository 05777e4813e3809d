r"""The problem protocol that every solver consumes: a smooth least-squares part and an optional prior.

$$\min_x\ \Phi(x) = \tfrac12\|r(x)\|^2 + g(x),$$

with $r$ the whitened residuals (4D-Var: background and observation terms; any differentiable
function of a pytree control) and $g$ a non-smooth prior (sparsity, total variation; ``None``
today: the proximal solvers fill it). Gauss–Newton and Levenberg–Marquardt use $r$ and its
Jacobian, gradient methods $\nabla\tfrac12\|r\|^2$, proximal methods the prior's proximal map.
Solvers see only this protocol, never models or observation operators.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._misc import half_squared_norm

__all__ = ["AbstractProblem", "LeastSquares"]


class AbstractProblem(eqx.Module):
    r"""A variational problem $\min_x \tfrac12\|r(x)\|^2 + g(x)$ (see the module docstring)."""

    @abc.abstractmethod
    def residuals(self, x) -> jax.Array:
        """The whitened residual vector $r(x)$ (flat), differentiable in ``x`` and in the problem's arrays."""

    @abc.abstractmethod
    def zero_control(self) -> Any:
        """The default starting point (for 4D-Var, the background's increment $x = 0$)."""

    def cost(self, x) -> jax.Array:
        r"""The smooth part $\tfrac12\|r(x)\|^2$."""
        return half_squared_norm(self.residuals(x))

    def prior(self):
        """The non-smooth part $g$ (an object with ``value`` and ``prox``), or ``None``."""
        return None


class LeastSquares(AbstractProblem):
    r"""$\min_x \tfrac12\|r(x, \theta)\|^2$ for a residual function of your own.

    **Arguments:** ``residual_fn(x, theta) -> `` a flat array; ``x0``: the default starting point
    (its structure is the control's); ``theta``: parameters (any pytree; differentiable).
    """

    residual_fn: Callable = eqx.field(static=True)
    x0: Any
    theta: Any = None

    def residuals(self, x):
        return jnp.ravel(self.residual_fn(x, self.theta))

    def zero_control(self):
        return self.x0
