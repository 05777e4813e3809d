r"""The problem protocol that every solver consumes: a smooth least-squares part and an optional prior.

$$\min_x\ \Phi(x) = \tfrac12\|r(x)\|^2 + g(x),$$

with $r$ the whitened residuals (4D-Var: background and observation terms; any differentiable
function of a pytree control) and $g$ a non-smooth prior (:mod:`diffphys.priors`: sparsity, total
variation, bounds), ``None`` for a pure least-squares problem. Gauss–Newton and
Levenberg–Marquardt use $r$ and its Jacobian, gradient methods $\nabla\tfrac12\|r\|^2$,
proximal methods also the prior's proximal map. A prior is attached to any problem with
:class:`Composite` (a wrapper). Solvers see only this protocol, never models or observation
operators.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._misc import half_squared_norm
from .._validate import is_concrete
from ..priors import AbstractPrior

__all__ = ["AbstractProblem", "Composite", "LeastSquares", "LinearLeastSquares"]


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

    def within_stability_limit(self, x) -> jax.Array:
        """Whether the model behind ``x`` is stable at its time step (a boolean array; traceable).

        Problems whose control sets a model's parameters (4D-Var) override it; the driver reports a
        solution outside the limit as ``RESULTS.unstable_model``. Default: always true.
        """
        return jnp.asarray(True)


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


class LinearLeastSquares(AbstractProblem):
    r"""$\min_x \tfrac12\|A x - y\|^2$ with a dense matrix or a matrix-free linear map $A$.

    **Arguments:** ``operator``: an ``(M, N)`` array, or a linear function ``x -> A x`` (then
    ``x0`` fixes the control's shape); ``data``: $y$, shape ``(M,)``; ``x0``: the starting point
    (default zeros of shape ``(N,)`` for a matrix). The transpose $A^\top$ is exact
    (``jax.linear_transpose`` for a function). Used for compressed sensing (AMP needs the matrix
    form) and deblurring (the heat semigroup as $A$).
    """

    operator: object
    data: Float[Array, " M"]
    x0: object = None

    def __init__(self, operator, data, x0=None):
        data = jnp.asarray(data)
        if data.ndim != 1:
            raise ValueError(f"LinearLeastSquares: data must be a vector (M,), got shape {data.shape}")
        if is_concrete(data) and not bool(jnp.all(jnp.isfinite(data))):
            bad = np.flatnonzero(~np.isfinite(np.asarray(data)))
            raise ValueError(
                f"LinearLeastSquares: data must be finite; entries {bad[:5].tolist()}{' ...' if len(bad) > 5 else ''} "
                f"are {np.asarray(data)[bad[:5]].tolist()}: drop those readings (and their rows of the operator)"
            )
        if callable(operator) and not isinstance(operator, jax.Array):
            if x0 is None:
                raise ValueError("LinearLeastSquares: a matrix-free operator needs x0 to fix the control's shape")
            self.operator = operator
        else:
            operator = jnp.asarray(operator)
            if operator.ndim != 2 or operator.shape[0] != data.shape[0]:
                raise ValueError(
                    f"LinearLeastSquares: operator must be an (M, N) matrix with M = len(data) = {data.shape[0]}, "
                    f"got shape {operator.shape}"
                )
            self.operator = operator
            if x0 is None:
                x0 = jnp.zeros(operator.shape[1], data.dtype)
        self.data = data
        self.x0 = jnp.asarray(x0)

    @property
    def is_matrix(self) -> bool:
        return isinstance(self.operator, jax.Array)

    def matvec(self, x):
        """$A x$."""
        return self.operator @ x if self.is_matrix else jnp.ravel(self.operator(x))

    def rmatvec(self, r):
        r"""$A^\top r$."""
        if self.is_matrix:
            return self.operator.T @ r
        (x,) = jax.linear_transpose(lambda x: jnp.ravel(self.operator(x)), self.x0)(r)
        return x

    def residuals(self, x):
        return self.matvec(x) - self.data

    def zero_control(self):
        return self.x0


class Composite(AbstractProblem):
    r"""$\min_x \tfrac12\|r(x)\|^2 + g(x)$: a smooth problem with a prior $g$ attached (a wrapper).

    **Arguments:** ``smooth``: any :class:`AbstractProblem` without a prior; ``regularizer``: an
    :class:`~diffphys.priors.AbstractPrior` that the control (``smooth.zero_control()``) can carry
    (checked here: a TV prior needs a 1D/2D field, a weighted L1 matching weights).
    """

    smooth: AbstractProblem
    regularizer: AbstractPrior

    def __check_init__(self):
        if not isinstance(self.smooth, AbstractProblem):
            raise TypeError(f"Composite: smooth must be an AbstractProblem, got {type(self.smooth).__name__}")
        if self.smooth.prior() is not None:
            raise ValueError("Composite: the smooth problem already has a prior; combine priors with priors.Sum")
        if not isinstance(self.regularizer, AbstractPrior):
            raise TypeError(
                f"Composite: regularizer must be a diffphys.priors prior (e.g. priors.L1(0.1)), "
                f"got {type(self.regularizer).__name__}"
            )
        self.regularizer.check_control(self.smooth.zero_control())

    def residuals(self, x):
        return self.smooth.residuals(x)

    def zero_control(self):
        return self.smooth.zero_control()

    def prior(self):
        return self.regularizer

    def within_stability_limit(self, x):
        return self.smooth.within_stability_limit(x)
