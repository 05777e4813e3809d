"""Time schemes (explicit, implicit, IMEX), kept apart from the physics, and their registry by name.

A scheme advances any model's state by ``dt`` through the model's right-hand side (or its parts:
``acceleration``, ``explicit_rhs``/``implicit_rhs``); schemes never import the models.
"""

from ._explicit import (
    RK4 as RK4,
    SSPRK3 as SSPRK3,
    AbstractScheme as AbstractScheme,
    ForwardEuler as ForwardEuler,
    LeapFrog as LeapFrog,
)
from ._imex import IMEXARS443 as IMEXARS443
from ._implicit import (
    AbstractImplicitScheme as AbstractImplicitScheme,
    BackwardEuler as BackwardEuler,
    CrankNicolson as CrankNicolson,
    Newmark as Newmark,
)
from ._registry import (
    canonical_name as canonical_name,
    scheme_registry as scheme_registry,
    time_scheme as time_scheme,
    unconditionally_stable as unconditionally_stable,
)
