r"""The (weighted) L1 prior and its proximal map, soft thresholding.

$$g(x) = \sum_i \lambda_i |x_i|, \qquad
\operatorname{prox}_{\gamma g}(z)_i = \operatorname{sign}(z_i)\max(|z_i| - \gamma\lambda_i, 0).$$

Reference: D. L. Donoho, "De-noising by soft-thresholding", IEEE Trans. Inf. Theory 41 (1995)
613-627; Parikh & Boyd, "Proximal algorithms" (2014), §6.5.2.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractPrior
from ._checks import check_entrywise_shape, nonnegative_weight

__all__ = ["L1", "soft_threshold"]


def soft_threshold(z: Float[Array, "..."], threshold) -> Float[Array, "..."]:
    r"""$\operatorname{sign}(z)\max(|z| - \tau, 0)$, elementwise (``threshold`` $\tau \ge 0$ broadcasts)."""
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)


class L1(AbstractPrior):
    r"""$g(x) = \sum_i \lambda_i |x_i|$ with a scalar or per-entry weight $\lambda \ge 0$.

    **Arguments:** ``weight``: $\lambda$, a non-negative scalar or an array of the control's shape
    (weighted L1; zero entries leave a component unpenalised).
    """

    weight: Float[ArrayLike, "..."]

    def __init__(self, weight: Float[ArrayLike, "..."]):
        self.weight = nonnegative_weight("L1", "weight (lambda)", weight)

    def check_control(self, x) -> None:
        super().check_control(x)
        check_entrywise_shape("L1", "weight", self.weight, x)

    def value(self, x):
        return jnp.sum(self.weight * jnp.abs(x))

    def prox(self, z, step):
        return soft_threshold(z, step * self.weight)
