"""PDE models (and the Lorenz-96 test model) as differentiable time steppers, and the time schemes they use."""

from ._advection import Advection as Advection
from ._advection_diffusion import AdvectionDiffusion as AdvectionDiffusion
from ._base import AbstractStepper as AbstractStepper
from ._heat import Heat as Heat
from ._implicit_schemes import (
    AbstractImplicitScheme as AbstractImplicitScheme,
    BackwardEuler as BackwardEuler,
    CrankNicolson as CrankNicolson,
    IMEXARS443 as IMEXARS443,
    Newmark as Newmark,
)
from ._lorenz96 import Lorenz96 as Lorenz96
from ._nonlinear_heat import NonlinearHeat as NonlinearHeat
from ._schemes import (
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractScheme as AbstractScheme,
    ForwardEuler as ForwardEuler,
    LeapFrog as LeapFrog,
    time_scheme as time_scheme,
)
from ._wave import Wave as Wave
