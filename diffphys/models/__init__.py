"""PDE models as differentiable time steppers, and the explicit time schemes they use."""

from ._advection import Advection as Advection
from ._base import AbstractStepper as AbstractStepper
from ._heat import Heat as Heat
from ._schemes import (
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractScheme as AbstractScheme,
    ForwardEuler as ForwardEuler,
    LeapFrog as LeapFrog,
    time_scheme as time_scheme,
)
from ._wave import Wave as Wave
