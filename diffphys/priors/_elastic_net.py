r"""The elastic-net prior (L1 plus a squared L2 term) and its proximal map.

$$g(x) = \sum_i \lambda_{1,i}|x_i| + \tfrac12\sum_i \lambda_{2,i} x_i^2, \qquad
\operatorname{prox}_{\gamma g}(z)_i = \frac{\operatorname{sign}(z_i)\max(|z_i| - \gamma\lambda_{1,i}, 0)}{1 + \gamma\lambda_{2,i}}.$$

The squared term makes $g$ strongly convex, so the solution is unique even for correlated
components, where plain L1 picks among them arbitrarily. Reference: H. Zou, T. Hastie,
"Regularization and variable selection via the elastic net", J. R. Stat. Soc. B 67 (2005) 301-320;
Parikh & Boyd, "Proximal algorithms" (2014), §6.5.3.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ._base import AbstractPrior
from ._checks import check_entrywise_shape, nonnegative_weight
from ._l1 import soft_threshold

__all__ = ["ElasticNet"]


class ElasticNet(AbstractPrior):
    r"""$g(x) = \sum_i \lambda_{1,i}|x_i| + \tfrac12\sum_i\lambda_{2,i} x_i^2$ (see the module docstring).

    **Arguments:**

    - ``l1_weight``: $\lambda_1 \ge 0$, a scalar or an array of the control's shape.
    - ``l2_weight``: $\lambda_2 \ge 0$, a scalar or an array of the control's shape.
    """

    l1_weight: Float[ArrayLike, "..."]
    l2_weight: Float[ArrayLike, "..."]

    def __init__(self, l1_weight: Float[ArrayLike, "..."], l2_weight: Float[ArrayLike, "..."]):
        self.l1_weight = nonnegative_weight("ElasticNet", "l1_weight (lambda_1)", l1_weight)
        self.l2_weight = nonnegative_weight("ElasticNet", "l2_weight (lambda_2)", l2_weight)

    def check_control(self, x) -> None:
        super().check_control(x)
        check_entrywise_shape("ElasticNet", "l1_weight", self.l1_weight, x)
        check_entrywise_shape("ElasticNet", "l2_weight", self.l2_weight, x)

    def value(self, x):
        return jnp.sum(self.l1_weight * jnp.abs(x)) + 0.5 * jnp.sum(self.l2_weight * jnp.square(x))

    def prox(self, z, step):
        return soft_threshold(z, step * self.l1_weight) / (1.0 + step * self.l2_weight)
