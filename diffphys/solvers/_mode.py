"""How :func:`~diffphys.solvers.iterate` runs a solver: to a tolerance, or for exactly K iterations."""

from __future__ import annotations

import equinox as eqx

from .._misc import check_int, check_number

__all__ = ["AbstractMode", "Converged", "Unrolled"]


class AbstractMode(eqx.Module):
    """Converged or unrolled (see :class:`Converged`, :class:`Unrolled`)."""


class Converged(AbstractMode):
    r"""Iterate in a compiled while loop until the solver's optimality measure $m_k$ (e.g. the
    gradient norm) satisfies $m_k \le \mathrm{atol} + \mathrm{rtol}\, m_0$, or ``max_steps`` iterations.

    Derivatives of the solution come from the implicit function theorem (adjoint
    :class:`~diffphys.adjoint.Implicit`): memory does not grow with the iteration count.
    """

    rtol: float = 1e-6
    atol: float = 0.0
    max_steps: int = 100

    def __check_init__(self):
        check_number("Converged: rtol", self.rtol)
        check_number("Converged: atol", self.atol)
        check_int("Converged: max_steps", self.max_steps)


class Unrolled(AbstractMode):
    r"""Exactly ``iterations`` iterations as differentiable layers (no stopping test).

    Layer $k$ reads the solver's parameters ``params[k]`` (a pytree with leading axis $K$: step
    lengths, damping, thresholds, network weights), so they can be learned end to end; derivatives
    go through the layers with a :class:`~diffphys.adjoint.Direct` or
    :class:`~diffphys.adjoint.Checkpointed` adjoint.

    ``Converged(rtol=0, max_steps=K)`` runs the same iterations. Its program is a different one, so
    where the two round differently in the last bit, an inner linear solve may stop one iteration
    apart: compare the two to the inner solver's tolerance, not to round-off.
    """

    iterations: int

    def __check_init__(self):
        check_int("Unrolled: iterations", self.iterations)
