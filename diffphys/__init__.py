"""diffphys: differentiable PDE time steppers and data assimilation in JAX.

The public API is what this module lists.
"""

from . import adjoint as adjoint
from . import assimilate as assimilate
from . import check as check
from . import io as io
from . import learn as learn
from . import observe as observe
from . import plot as plot
from . import priors as priors
from . import schemes as schemes
from . import solvers as solvers
from ._implicit import (
    FixedPointIteration as FixedPointIteration,
    Newton as Newton,
    implicit_solution as implicit_solution,
    solve_fixed_point as solve_fixed_point,
    solve_root as solve_root,
)
from ._integrate import integrate as integrate
from ._linear_solve import LinearSolver as LinearSolver, solve_linear as solve_linear
from ._rollout import rollout as rollout
from ._solution import RESULTS as RESULTS, Solution as Solution
from ._time_step import stable_time_step as stable_time_step
from .grid import (
    Dirichlet as Dirichlet,
    Grid1D as Grid1D,
    Grid2D as Grid2D,
    Neumann as Neumann,
    Periodic as Periodic,
)
from .models import (
    AbstractStepper as AbstractStepper,
    Advection as Advection,
    AdvectionDiffusion as AdvectionDiffusion,
    Heat as Heat,
    Lorenz96 as Lorenz96,
    NonlinearHeat as NonlinearHeat,
    Wave as Wave,
)
from .schemes import (
    IMEXARS443 as IMEXARS443,
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractImplicitScheme as AbstractImplicitScheme,
    AbstractScheme as AbstractScheme,
    BackwardEuler as BackwardEuler,
    CrankNicolson as CrankNicolson,
    ForwardEuler as ForwardEuler,
    LeapFrog as LeapFrog,
    Newmark as Newmark,
)

__version__ = "0.1.0"
