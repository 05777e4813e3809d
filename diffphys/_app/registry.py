"""What a case file may name: model kinds (``[model] kind``) and solver methods (``[solver] method``).

One entry per kind or method, so adding a model or a solver is one entry.

Each :class:`ModelKind` says how to build the stepper from the case's ``[model]`` values, which
``[model]`` keys it takes (required and optional), which of its fields ``[control] parameter`` may
estimate, and which time schemes (names of :func:`diffphys.schemes.scheme_registry`) it accepts.
The case schema (:mod:`diffphys._app.schema`) validates against these entries and
:mod:`diffphys._app.build` constructs models through them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..grid import AbstractGrid, Grid1D
from ..models import AbstractStepper, Advection, AdvectionDiffusion, Heat, Lorenz96, NonlinearHeat, Wave
from ..priors import L1, TV1D, TV2D, AbstractPrior, Box, ElasticNet, Sum
from ..solvers import ADMM, FISTA, ISTA, LBFGS, PDHG, AbstractIterativeSolver, Adam, GaussNewton

__all__ = ["LORENZ96_DT", "MODEL_KINDS", "ModelKind", "PRIOR_KINDS", "PROXIMAL_METHODS", "SOLVER_METHODS", "build_prior"]

PROXIMAL_METHODS: dict[str, Callable[[dict], AbstractIterativeSolver]] = {
    "ista": lambda settings: ISTA(),
    "fista": lambda settings: FISTA(),
    "admm": lambda settings: ADMM(),
    "pdhg": lambda settings: PDHG(),
}
"""The methods for a non-Gaussian ``[prior]``: they use the prior's proximal map (or split it)."""

SOLVER_METHODS: dict[str, Callable[[dict], AbstractIterativeSolver]] = {
    "gauss_newton": lambda settings: GaussNewton(),
    "lbfgs": lambda settings: LBFGS(),
    "adam": lambda settings: Adam(learning_rate=settings["learning_rate"]),
    **PROXIMAL_METHODS,
}
"""``[solver] method`` names and the solver each builds from the case's ``[solver]`` section; each runs
through :func:`diffphys.solvers.iterate`."""

PRIOR_KINDS: dict[str, Callable[[dict, int], AbstractPrior] | None] = {
    "gaussian": None,  # the [background] B: a term of the 4D-Var residuals, not a separate prior
    "l1": lambda p, ndim: L1(p["weight"]),
    "elastic_net": lambda p, ndim: ElasticNet(p["weight"], p["l2_weight"]),
    "tv": lambda p, ndim: TV1D(p["weight"]) if ndim == 1 else TV2D(p["weight"], isotropic=p["isotropic"]),
}
"""``[prior] kind`` names and how each builds its prior from the ``[prior]`` section (bounds added by :func:`build_prior`)."""


def build_prior(settings: dict, ndim: int) -> AbstractPrior | None:
    """The case's prior (``None`` for the gaussian one): the kind's prior, plus a box from the bounds."""
    make = PRIOR_KINDS[settings["kind"]]
    if make is None:
        return None
    prior = make(settings, ndim)
    lower = 0.0 if settings["nonnegative"] else settings["lower"]
    upper = settings["upper"]
    if lower is None and upper is None:
        return prior
    box = Box(-float("inf") if lower is None else lower, float("inf") if upper is None else upper)
    return Sum(prior, box)

LORENZ96_DT = 0.05  # the usual Lorenz-96 step; the default dt takes the largest step <= it that hits the observations


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """How a case file builds one kind of model.

    **Fields:**

    - ``name``: the ``[model] kind`` value.
    - ``build``: ``build(grid, fields, model, dt, scheme) -> stepper``: ``fields`` holds the
      evaluated fields (arrays on the grid, or a list of them for a 2D velocity), ``model`` the
      case's ``[model]`` section (for settings such as ``reconstruction``), ``dt`` the time step
      (``None``: the model's stable default), ``scheme`` a scheme name or ``None`` (the model's default).
    - ``required``: ``[model]`` fields that must be given.
    - ``optional``: further ``[model]`` keys it takes (besides ``kind``, ``scheme`` and ``dt``).
    - ``fields``: which of its keys are fields (numbers or expressions evaluated on the grid).
    - ``controls``: fields ``[control] parameter`` may name on a 1D grid; ``controls_2d`` on a 2D
      grid (``None``: the same).
    - ``schemes``: canonical names of the time schemes the model accepts; ``default_scheme`` its default.
    - ``state_fields``: 2 for a second-order model whose state is ``(u, ∂u/∂t)`` (``[truth]
      initial_velocity`` applies), else 1.
    - ``ring``: for a model that makes its own grid from ``[grid] n`` (Lorenz-96), that grid; then
      ``n`` is the only ``[grid]`` key.
    """

    name: str
    build: Callable[[AbstractGrid, dict, dict, Any, Any], AbstractStepper]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    fields: tuple[str, ...]
    controls: tuple[str, ...]
    schemes: tuple[str, ...]
    default_scheme: str
    controls_2d: tuple[str, ...] | None = None
    state_fields: int = 1
    ring: Callable[[int], Grid1D] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """Every ``[model]`` key this kind takes."""
        return ("kind", *self.required, *self.optional, "scheme", "dt")

    def valid_controls(self, ndim: int) -> tuple[str, ...]:
        """The fields ``[control] parameter`` may name on a grid of ``ndim`` dimensions."""
        return self.controls_2d if ndim == 2 and self.controls_2d is not None else self.controls


def _options(dt, scheme) -> dict:
    return {"dt": dt} if scheme is None else {"dt": dt, "scheme": scheme}


def _velocity(value):
    return tuple(value) if isinstance(value, list) else value


_KINDS = (
    ModelKind(
        "heat",
        lambda grid, f, m, dt, scheme: Heat(grid, f["kappa"], source=f.get("source"), **_options(dt, scheme)),
        required=("kappa",), optional=("source",), fields=("kappa", "source"), controls=("kappa", "source"),
        schemes=("euler", "ssprk3", "rk4", "backward_euler", "crank_nicolson"), default_scheme="rk4",
    ),
    ModelKind(
        "advection",
        lambda grid, f, m, dt, scheme: Advection(grid, _velocity(f["velocity"]), reconstruction=m["reconstruction"],
                                                 **_options(dt, scheme)),
        required=("velocity",), optional=("reconstruction",), fields=("velocity",), controls=("velocity",),
        controls_2d=(),  # a 2D velocity is two fields; B and the control are one field
        # Forward Euler only with upwind faces (WENO5 is unstable with it at any dt; the model says so).
        schemes=("euler", "ssprk3", "rk4", "backward_euler", "crank_nicolson"), default_scheme="ssprk3",
    ),
    ModelKind(
        "wave",
        lambda grid, f, m, dt, scheme: Wave(grid, f["speed"], source=f.get("source"), **_options(dt, scheme)),
        required=("speed",), optional=("source",), fields=("speed", "source"), controls=("speed", "source"),
        schemes=("ssprk3", "rk4", "leapfrog", "backward_euler", "crank_nicolson", "newmark"),
        default_scheme="leapfrog", state_fields=2,
    ),
    ModelKind(
        "lorenz96",
        lambda grid, f, m, dt, scheme: Lorenz96(grid.n, f["forcing"], **_options(LORENZ96_DT if dt is None else dt,
                                                                                   scheme)),
        required=("forcing",), optional=(), fields=("forcing",), controls=("forcing",),
        schemes=("ssprk3", "rk4"), default_scheme="rk4", ring=lambda n: Lorenz96(n).grid,
    ),
    ModelKind(
        "nonlinear_heat",
        lambda grid, f, m, dt, scheme: NonlinearHeat(grid, f["kappa"], beta=m["beta"], source=f.get("source"),
                                                     **_options(dt, scheme)),
        required=("kappa",), optional=("beta", "source"), fields=("kappa", "source"), controls=("kappa", "source"),
        # Implicit only: an explicit scheme's stability limit would depend on the state.
        schemes=("backward_euler", "crank_nicolson"), default_scheme="backward_euler",
    ),
    ModelKind(
        "advection_diffusion",
        lambda grid, f, m, dt, scheme: AdvectionDiffusion(grid, _velocity(f["velocity"]), f["kappa"],
                                                          source=f.get("source"),
                                                          reconstruction=m["reconstruction"], **_options(dt, scheme)),
        required=("velocity", "kappa"), optional=("source", "reconstruction"), fields=("velocity", "kappa", "source"),
        controls=("velocity", "kappa", "source"), controls_2d=("kappa", "source"),
        schemes=("imex_ars443", "backward_euler", "crank_nicolson"), default_scheme="imex_ars443",
    ),
)

MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in _KINDS}
