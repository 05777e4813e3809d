r"""The prior protocol: a value and a proximal map, both differentiable.

A prior is the non-smooth part $g$ of a composite problem $\min_x \tfrac12\|r(x)\|^2 + g(x)$.
Every prior gives

* its value $g(x)$ (its ``weight`` included), and
* its proximal map with step $\gamma > 0$,

$$\operatorname{prox}_{\gamma g}(z) = \operatorname*{arg\,min}_u\ \tfrac12\|u - z\|^2 + \gamma\, g(u),$$

which is firmly non-expansive for convex $g$. Solvers call ``prox(z, step)`` with
$\gamma$ = step length × (per-iteration weight scale), so a continuation schedule or a learned
per-layer threshold needs no new prior. Priors are pure functions of arrays: they never see models,
grids or observation operators. Reference: N. Parikh, S. Boyd, "Proximal algorithms", Found.
Trends Optim. 1 (2014) 127-239.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["AbstractAnalysisPrior", "AbstractPrior"]


class AbstractPrior(eqx.Module):
    r"""A (usually non-smooth) prior $g$ with ``value`` and ``prox`` (see the module docstring)."""

    @abc.abstractmethod
    def value(self, x: Float[Array, "..."]) -> Float[Array, ""]:
        """$g(x)$; ``+inf`` outside the domain of an indicator (box, non-negativity)."""

    @abc.abstractmethod
    def prox(self, z: Float[Array, "..."], step) -> Float[Array, "..."]:
        r"""$\operatorname{prox}_{\gamma g}(z)$ with $\gamma$ = ``step`` (a positive scalar, differentiable)."""

    def check_control(self, x) -> None:
        """Raise ``ValueError`` naming the prior and ``x``'s shape when ``x`` cannot carry this prior.

        The default accepts any single floating array; priors with a structure (TV needs a 1D or 2D
        field, a weighted L1 needs matching weights) narrow it.
        """
        if not isinstance(x, (jax.Array, np.ndarray)) or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(
                f"{type(self).__name__} acts on one floating-point array; the control is "
                f"{type(x).__name__}: put the prior on an array-valued control"
            )


class AbstractAnalysisPrior(AbstractPrior):
    r"""A prior $g(x) = h(Kx)$ with $K$ linear and $h$ prox-friendly (TV: $K$ the discrete gradient).

    Primal–dual solvers never need $\operatorname{prox}_g$ (for TV an inner iteration): they use
    $K$, $K^\top$ and the prox of the convex conjugate $h^*$, which for a norm
    $h = \lambda\|\cdot\|$ is the projection onto the dual-norm ball of radius $\lambda$.
    Reference: A. Chambolle, T. Pock, "A first-order primal-dual algorithm for convex problems with
    applications to imaging", J. Math. Imaging Vis. 40 (2011) 120-145.
    """

    @abc.abstractmethod
    def operator(self, x):
        """$K x$."""

    @abc.abstractmethod
    def operator_transpose(self, p):
        r"""$K^\top p$ (exact adjoint of :meth:`operator`)."""

    @abc.abstractmethod
    def operator_norm_squared(self) -> float:
        r"""An upper bound on $\|K\|_2^2$ (e.g. 4 for 1D forward differences, 8 in 2D)."""

    @abc.abstractmethod
    def conjugate_prox(self, p, step):
        r"""$\operatorname{prox}_{\sigma h^*}(p)$ with $\sigma$ = ``step`` (Moreau: $p - \sigma\operatorname{prox}_{h/\sigma}(p/\sigma)$)."""
