"""PDE models (and the Lorenz-96 test model) as differentiable time steppers.

The time schemes they use are in :mod:`diffphys.schemes`.
"""

from ._advection import Advection as Advection
from ._advection_diffusion import AdvectionDiffusion as AdvectionDiffusion
from ._base import AbstractStepper as AbstractStepper
from ._heat import Heat as Heat
from ._lorenz96 import Lorenz96 as Lorenz96
from ._nonlinear_heat import NonlinearHeat as NonlinearHeat
from ._wave import Wave as Wave
