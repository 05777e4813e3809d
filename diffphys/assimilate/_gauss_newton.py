r"""Incremental 4D-Var by Gauss–Newton / Levenberg–Marquardt: a thin wrapper over the solver core.

``gauss_newton(problem)`` is ``solvers.iterate(GaussNewton(), problem, mode=Converged(rtol=1e-6,
max_steps=20))``: the defaults of operational incremental 4D-Var (a few outer iterations, each a
matrix-free CG solve of the damped normal equations with tangent-linear and adjoint model runs),
with implicit-function-theorem derivatives of the analysis (one Hessian solve by CG). See
:mod:`diffphys.solvers` for the method, the modes and the adjoints.

References: P. Courtier, J.-N. Thépaut, A. Hollingsworth, Q. J. R. Meteorol. Soc. 120 (1994)
1367-1387; A. S. Lawless, S. Gratton, N. K. Nichols, Q. J. R. Meteorol. Soc. 131 (2005) 1085-1097.
"""

from __future__ import annotations

from .. import adjoint as adjoints
from .._linear_solve import LinearSolver
from .._solution import Solution
from ..solvers import AbstractProblem, Converged, GaussNewton, iterate

__all__ = ["FOURDVAR_ADJOINT", "FOURDVAR_MODE", "gauss_newton"]

FOURDVAR_MODE = Converged(rtol=1e-6, max_steps=20)
"""The default stopping rule of :func:`gauss_newton`: $\\|\\nabla J\\| \\le 10^{-6}\\|\\nabla J(v_0)\\|$, at most 20 outer iterations."""

FOURDVAR_ADJOINT = adjoints.Implicit(LinearSolver(method="cg", max_steps=500))
"""The default derivative of the analysis: one Hessian solve by CG (the Hessian of $J$ is SPD at a minimum)."""


def gauss_newton(
    problem: AbstractProblem,
    v0=None,
    *,
    solver: GaussNewton = GaussNewton(),
    mode: Converged = FOURDVAR_MODE,
    adjoint: adjoints.Implicit = FOURDVAR_ADJOINT,
    progress=None,
    throw: bool = True,
) -> Solution:
    r"""Minimise the 4D-Var cost $J(v) = \tfrac12\|r(v)\|^2$ by Gauss–Newton / Levenberg–Marquardt.

    **Arguments:** ``problem`` (a :class:`StrongConstraint4DVar`, :class:`WeakConstraint4DVar` or
    any :class:`~diffphys.solvers.AbstractProblem`), ``v0`` (default 0: the background), ``solver``
    (a :class:`~diffphys.solvers.GaussNewton`), ``mode`` (a :class:`~diffphys.solvers.Converged`),
    ``adjoint``, ``progress`` and ``throw`` as in :func:`~diffphys.solvers.iterate`.

    **Returns:** a :class:`~diffphys.solvers.Solution` whose ``value`` is the analysis increment
    (``problem.initial_state(solution.value)`` is the analysis state), differentiable with respect
    to everything in the problem (observations, σ's, fixed parameters).
    """
    if not isinstance(solver, GaussNewton):
        raise TypeError(f"gauss_newton: solver must be a GaussNewton, got {type(solver).__name__}")
    if not isinstance(mode, Converged):
        raise TypeError(f"gauss_newton: mode must be Converged(...), got {type(mode).__name__}; for unrolled "
                        "iterations use diffphys.solvers.iterate(..., mode=Unrolled(K)) or diffphys.learn.UnrolledSolver")
    return iterate(solver, problem, v0, mode=mode, adjoint=adjoint, progress=progress, throw=throw)

