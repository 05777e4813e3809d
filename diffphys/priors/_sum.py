r"""Sums of priors whose proximal map is known exactly, and the terms for splitting solvers.

The prox of a sum is not the composition of the proxes in general. One case is exact and common:
a separable convex $f(x) = \sum_i f_i(x_i)$ (L1, elastic net) plus a box $[\ell, u]$. Then the
problem separates into 1D strongly convex problems over an interval, whose minimiser is the
unconstrained one clipped to the interval:

$$\operatorname{prox}_{\gamma(f + \iota_{[\ell,u]})}(z) = \Pi_{[\ell,u]}\big(\operatorname{prox}_{\gamma f}(z)\big).$$

Any other combination (two non-separable priors, a Gaussian plus an L1, TV plus a box, ...) has
no closed-form prox: such a sum is a valid prior for the splitting solvers (ADMM, primal–dual),
which take its terms separately (``Sum.terms``), and asking for its prox is an error that says so.

Reference: Parikh & Boyd, "Proximal algorithms" (2014), §2.2 and §6.
"""

from __future__ import annotations

from ._base import AbstractPrior
from ._box import Box
from ._elastic_net import ElasticNet
from ._l1 import L1

__all__ = ["Sum"]

# Priors whose value is a sum of convex functions of single entries (their prox acts entrywise).
_SEPARABLE = (L1, ElasticNet)


class Sum(AbstractPrior):
    r"""$g = g_1 + \dots + g_k$: a prior for splitting solvers, with an exact prox where one is known.

    The prox is exact (:attr:`has_exact_prox`) for a single prior, or at most one separable prior
    (:class:`L1`, :class:`ElasticNet`) plus at most one :class:`Box` (or :func:`NonNegative`):
    the box's clipping of the separable prox (see the module docstring). Other sums have no prox:
    ADMM and the primal–dual solver split them into their terms; ISTA/FISTA refuse them. Nested
    sums are flattened.

    **Arguments:** ``*priors``: the terms, each an :class:`AbstractPrior`.

    **Attributes:** ``terms``: the tuple of terms, for splitting solvers.
    """

    terms: tuple[AbstractPrior, ...]

    def __init__(self, *priors: AbstractPrior):
        terms = []
        for p in priors:
            if not isinstance(p, AbstractPrior):
                raise TypeError(f"Sum: every term must be a diffphys prior (e.g. priors.L1(0.1)), got {type(p).__name__}")
            terms.extend(p.terms if isinstance(p, Sum) else (p,))
        if not terms:
            raise ValueError("Sum: give at least one prior, e.g. Sum(L1(0.1), NonNegative())")
        self.terms = tuple(terms)

    @property
    def has_exact_prox(self) -> bool:
        """Whether :meth:`prox` is known exactly (one term, or one separable prior plus one box)."""
        if len(self.terms) == 1:
            return True
        separable = [p for p in self.terms if isinstance(p, _SEPARABLE)]
        boxes = [p for p in self.terms if isinstance(p, Box)]
        return len(separable) <= 1 and len(boxes) <= 1 and len(separable) + len(boxes) == len(self.terms)

    def check_control(self, x) -> None:
        for p in self.terms:
            p.check_control(x)

    def value(self, x):
        return sum(p.value(x) for p in self.terms)

    def prox(self, z, step):
        if not self.has_exact_prox:
            names = " + ".join(type(p).__name__ for p in self.terms)
            raise ValueError(
                f"Sum: {names} has no exact prox. Sum has one for one prior, or one separable prior (L1 or "
                "ElasticNet; merge several into one, e.g. L1(w1 + w2)) plus one Box/NonNegative (intersect "
                "several boxes into one). Solve with a splitting solver (ADMM, PDHG), which takes the terms "
                "separately"
            )
        boxes = [p for p in self.terms if isinstance(p, Box)]
        rest = [p for p in self.terms if not isinstance(p, Box)]
        u = rest[0].prox(z, step) if rest else z
        return boxes[0].prox(u, step) if boxes else u
