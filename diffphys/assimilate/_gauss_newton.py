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

import math

import equinox as eqx
import jax.numpy as jnp

from .. import adjoint as adjoints
from .._linear_solve import LinearSolver
from .._misc import check_int, check_number
from .._solution import Solution
from ..solvers import AbstractProblem, Converged, DampedStep, GaussNewton, Unrolled, iterate

__all__ = ["FOURDVAR_ADJOINT", "FOURDVAR_MODE", "UnrolledGaussNewton", "gauss_newton"]

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
                        "iterations use diffphys.solvers.iterate(..., mode=Unrolled(K))")
    return iterate(solver, problem, v0, mode=mode, adjoint=adjoint, progress=progress, throw=throw)


class UnrolledGaussNewton(eqx.Module):
    r"""Exactly $K$ plain damped Gauss–Newton layers with learnable $\lambda_k = e^{\ell_k}$ and $\alpha_k$.

    ``iterate(GaussNewton(globalization="none"), problem, mode=Unrolled(K), params=DampedStep(...))``
    packaged with its parameters, so that it can be trained (:func:`train_unrolled`). Each layer is
    checkpointed (``checkpoint=True``: adjoint ``Checkpointed(every=1)``) so memory holds one state
    per layer. The inner CG solve is differentiated implicitly, as if it were exact.

    **Arguments:** ``iterations`` ($K \ge 1$), ``damping`` (initial $\lambda$, > 0; default 1e-2),
    ``step_length`` (initial $\alpha$; default 1), ``inner`` (CG settings), ``checkpoint``.
    """

    params: DampedStep
    inner: LinearSolver = eqx.field(static=True)
    checkpoint: bool = eqx.field(static=True)

    def __init__(self, iterations: int, *, damping: float = 1e-2, step_length: float = 1.0,
                 inner: LinearSolver = LinearSolver(method="cg", rtol=1e-8, max_steps=50, throw=False),
                 checkpoint: bool = True):
        check_int("UnrolledGaussNewton: iterations", iterations)
        check_number("UnrolledGaussNewton: damping", damping, allow_minimum=False)
        check_number("UnrolledGaussNewton: step_length", step_length, allow_minimum=False)
        dtype = jnp.result_type(float)
        self.params = DampedStep(jnp.full((iterations,), math.log(damping), dtype), jnp.full((iterations,), step_length, dtype))
        self.inner, self.checkpoint = inner, bool(checkpoint)

    @property
    def log_damping(self):
        return self.params.log_damping

    @property
    def step_length(self):
        return self.params.step_length

    def __call__(self, problem, v0=None):
        """The control increment $v_K$ after the $K$ layers."""
        adjoint = adjoints.Checkpointed(every=1) if self.checkpoint else adjoints.Direct()
        solver = GaussNewton(globalization="none", inner=self.inner)
        return iterate(solver, problem, v0, mode=Unrolled(self.params.log_damping.shape[0]), params=self.params,
                       adjoint=adjoint).value
