"""Case files: a complete assimilation problem in one TOML file, validated key by key.

A case names its model and parameters, grid, time window, sensors and noise, background and its
covariance, control (initial state or a parameter field), solver settings and outputs; see
``cases/README.md`` for every key. :func:`load_case` reads a file or a built-in case (``diffphys
cases`` lists them), applies ``section.key=value`` overrides and checks every value: an unknown
section or key (a typo) is an error naming it, its section and the valid keys, never silently
ignored. :func:`build_problem` turns a case into arrays, a twin experiment (or a user's data file)
and a :class:`~diffphys.assimilate.StrongConstraint4DVar` problem; ``diffphys run`` solves it.

Fields (initial states, diffusivity, speed, ...) are numbers or expressions of the coordinates
``x`` (and ``y``), e.g. ``"exp(-(x - 0.3)**2 / 0.01)"`` (see :mod:`diffphys._app.expression`).
"""

from ._app.build import (
    CycledProblem as CycledProblem,
    Problem as Problem,
    build_cycled_problem as build_cycled_problem,
    build_problem as build_problem,
)
from ._app.load import (
    Case as Case,
    builtin_case_text as builtin_case_text,
    builtin_cases as builtin_cases,
    load_case as load_case,
)
from ._app.schema import SCHEMA as SCHEMA, CaseError as CaseError

__all__ = ["SCHEMA", "Case", "CaseError", "CycledProblem", "Problem", "build_cycled_problem", "build_problem",
           "builtin_case_text", "builtin_cases", "load_case"]
