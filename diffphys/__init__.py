"""diffphys: differentiable PDE time steppers and data assimilation in JAX.

The public API is what this module lists.
"""

from . import assimilate as assimilate
from . import check as check
from . import io as io
from . import observe as observe
from . import plot as plot
from ._rollout import rollout as rollout
from .grid import (
    Dirichlet as Dirichlet,
    Grid1D as Grid1D,
    Grid2D as Grid2D,
    Neumann as Neumann,
    Periodic as Periodic,
)
from .models import (
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractScheme as AbstractScheme,
    AbstractStepper as AbstractStepper,
    Advection as Advection,
    ForwardEuler as ForwardEuler,
    Heat as Heat,
    LeapFrog as LeapFrog,
    Wave as Wave,
)

__version__ = "0.1.0"
