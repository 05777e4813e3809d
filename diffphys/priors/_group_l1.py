r"""The group-L1 (mixed ℓ2,1) prior and its proximal map, block soft thresholding.

The Euclidean norm is taken over ``axis``; every index of the remaining axes is one group. For a
2D control ``x[i, j]`` with ``axis=-1`` the groups are the rows ``x[i, :]``; for a 1D control the
whole vector is one group; for a vector field ``x[c, iy, ix]`` with ``axis=0`` each cell's vector
is a group (joint sparsity of the components):

$$g(x) = \sum_{\text{groups } k} \lambda_k \|x_k\|_2, \qquad
\operatorname{prox}_{\gamma g}(z)_k = \max\!\Big(1 - \frac{\gamma\lambda_k}{\|z_k\|_2}, 0\Big)\, z_k .$$

At $z_k = 0$ the norm is not differentiable; the map and its derivative are computed with a
guarded division (the "double where"), so the prox is $0$ there with derivative $0$ (the prox is
identically zero on the ball $\|z_k\| \le \gamma\lambda_k$), and ``value`` takes the subgradient 0.

Reference: M. Yuan, Y. Lin, "Model selection and estimation in regression with grouped
variables", J. R. Stat. Soc. B 68 (2006) 49-67; Parikh & Boyd, "Proximal algorithms" (2014), §6.5.4.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from ._base import AbstractPrior
from ._checks import nonnegative_weight

__all__ = ["GroupL1"]


def _group_norm(x, axes):
    """``(norm, nonzero, safe_norm)`` over ``axes`` (kept as size-1 axes); ``safe_norm`` is 1 where ``norm`` is 0.

    The square root sees only positive arguments, so derivatives are finite at a zero group.
    """
    squared = jnp.sum(jnp.square(x), axis=axes, keepdims=True)
    nonzero = squared > 0
    safe = jnp.sqrt(jnp.where(nonzero, squared, 1.0))
    return jnp.where(nonzero, safe, 0.0), nonzero, safe


class GroupL1(AbstractPrior):
    r"""$g(x) = \sum_k \lambda_k\|x_k\|_2$ over the groups $x_k$ = vectors along ``axis`` (see the module docstring).

    **Arguments:**

    - ``weight``: $\lambda \ge 0$, a scalar or one value per group (an array of the control's shape
      with ``axis`` removed).
    - ``axis``: the axis (an int, default ``-1``) or axes (a tuple of ints) along which the norm of
      a group is taken.
    """

    weight: Float[ArrayLike, "..."]
    axis: int | tuple[int, ...] = eqx.field(static=True)

    def __init__(self, weight: Float[ArrayLike, "..."], axis: int | tuple[int, ...] = -1):
        self.weight = nonnegative_weight("GroupL1", "weight (lambda)", weight)
        axes = axis if isinstance(axis, tuple) else (axis,)
        if not axes or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"GroupL1: axis must be an int or a non-empty tuple of ints, got {axis!r}")
        self.axis = tuple(int(a) for a in axis) if isinstance(axis, tuple) else int(axis)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        if any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) != len(axes):
            raise ValueError(
                f"GroupL1: axis={self.axis!r} does not name distinct axes of a {ndim}D control; "
                f"valid axes are {-ndim}..{ndim - 1}"
            )
        return tuple(sorted(a % ndim for a in axes))

    def _weight(self, ndim: int):
        """The weight broadcastable against the group norms (size-1 axes at ``axis``)."""
        return jnp.expand_dims(self.weight, self._axes(ndim)) if self.weight.ndim else self.weight

    def check_control(self, x) -> None:
        super().check_control(x)
        if jnp.ndim(x) == 0:
            raise ValueError("GroupL1: the control is a scalar; a group norm needs at least a 1D array")
        axes = self._axes(jnp.ndim(x))
        groups = tuple(n for i, n in enumerate(jnp.shape(x)) if i not in axes)
        if self.weight.ndim and self.weight.shape != groups:
            raise ValueError(
                f"GroupL1: a per-group weight must have the shape of the groups {groups} (the control's shape "
                f"{jnp.shape(x)} without axis={self.axis!r}), got {self.weight.shape}"
            )

    def value(self, x):
        norm, _, _ = _group_norm(x, self._axes(jnp.ndim(x)))
        return jnp.sum(self._weight(jnp.ndim(x)) * norm)

    def prox(self, z, step):
        _, nonzero, safe = _group_norm(z, self._axes(jnp.ndim(z)))
        threshold = step * self._weight(jnp.ndim(z))
        # A zero group stays zero (any threshold > 0 kills it); with a zero threshold the prox is the identity.
        scale = jnp.where(nonzero, jnp.maximum(1.0 - threshold / safe, 0.0), jnp.where(threshold == 0, 1.0, 0.0))
        return scale * z
