"""Every built-in time scheme by name, with aliases: how a scheme is chosen from a string.

:func:`time_scheme` turns a name (``"rk4"``, ``"crank_nicolson"``, an alias such as ``"cn"``) or an
instance into a scheme instance; :func:`scheme_registry` lists the classes by canonical name
(case files validate ``[model] scheme`` against it).
"""

from __future__ import annotations

import math

from ._explicit import RK4, SSPRK3, AbstractScheme, ForwardEuler, LeapFrog
from ._imex import IMEXARS443
from ._implicit import BackwardEuler, CrankNicolson, Newmark

__all__ = ["ALIASES", "canonical_name", "scheme_registry", "time_scheme", "unconditionally_stable"]

_SCHEMES: tuple[type[AbstractScheme], ...] = (
    ForwardEuler, SSPRK3, RK4, LeapFrog, BackwardEuler, CrankNicolson, Newmark, IMEXARS443
)

ALIASES = {
    "forward_euler": "euler",
    "rk3": "ssprk3",
    "verlet": "leapfrog",
    "stormer_verlet": "leapfrog",
    "implicit_euler": "backward_euler",
    "be": "backward_euler",
    "cn": "crank_nicolson",
    "trapezoidal": "crank_nicolson",
    "newmark_beta": "newmark",
    "imex": "imex_ars443",
}


def scheme_registry() -> dict[str, type[AbstractScheme]]:
    """Every built-in scheme class by its canonical name (``cls.name``)."""
    return {cls.name: cls for cls in _SCHEMES}


def canonical_name(name: str) -> str:
    """The canonical scheme name of ``name`` (case and ``-``/``_`` insensitive, aliases resolved).

    Returns the normalised name unchanged when it is not a known scheme or alias.
    """
    key = name.lower().replace("-", "_")
    return ALIASES.get(key, key)


def unconditionally_stable(cls: type[AbstractScheme]) -> bool:
    """Whether every stability limit of ``cls`` is infinite (then ``dt`` cannot be derived from one)."""
    return bool(cls.stability_limits) and all(math.isinf(v) for v in cls.stability_limits.values())


def time_scheme(spec) -> AbstractScheme:
    """A scheme instance from a name (e.g. ``"rk4"``, ``"crank_nicolson"``) or an instance."""
    if isinstance(spec, AbstractScheme):
        return spec
    registry = scheme_registry()
    if isinstance(spec, str):
        key = canonical_name(spec)
        if key in registry:
            return registry[key]()
    raise ValueError(
        f"unknown time scheme {spec!r}; valid are {sorted(registry)} (aliases {sorted(ALIASES)}) "
        "or an AbstractScheme instance"
    )
