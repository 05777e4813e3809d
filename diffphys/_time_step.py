r"""A time step that is stable and puts given times (observations, the window's end) on whole steps.

An explicit scheme is stable when $\rho\,\Delta t \le c$ ($\rho$ bounds the spatial operator's
eigenvalues, $c$ is the scheme's limit in that region; see :mod:`diffphys.schemes`). When a
parameter is estimated, $\rho$ must be taken at the largest value the estimate may reach, not at the
first guess: otherwise the solve can walk into parameters the model cannot simulate at that
$\Delta t$ (reported as ``RESULTS.unstable_model``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .models import AbstractStepper

__all__ = ["common_spacing", "stable_time_step"]


def common_spacing(times: Sequence[float], *, name: str = "common_spacing") -> float:
    """The largest $g$ of which every time is a whole multiple (times as decimals, to 1e-9 relative).

    E.g. ``(0.1, 0.25, 0.5) -> 0.05``. Times must be finite and positive.
    """
    values = np.asarray(times, dtype=float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name}: times must be finite numbers > 0, got {np.asarray(times).tolist()!r}")
    spacing = Fraction(0)
    for t in values.tolist():
        f = Fraction(repr(float(t))).limit_denominator(10**9)
        spacing = f if spacing == 0 else Fraction(
            math.gcd(spacing.numerator * f.denominator, f.numerator * spacing.denominator),
            spacing.denominator * f.denominator,
        )
    return float(spacing)


def stable_time_step(
    model: AbstractStepper,
    times: Sequence[float],
    *,
    bounds: Mapping[str, object] | None = None,
    safety: float = 0.9,
    max_steps: int = 10**7,
) -> float:
    r"""The largest $\Delta t \le$ ``safety`` × the stability limit of which every time is a whole multiple.

    $\Delta t = g / \lceil g / (s\,\Delta t_{\max}) \rceil$, with $g$ = :func:`common_spacing` of
    ``times`` and $\Delta t_{\max} = c/\rho$ the model's largest stable step; an implicit scheme has
    no limit, so $\Delta t = g$ (choose ``times`` finer for accuracy).

    **Arguments:**

    - ``model``: a stepper (its grid, scheme and parameters; its own ``dt`` is ignored).
    - ``times``: the times to land on, e.g. the observation times and the window's end.
    - ``bounds``: parameter values at which to take the limit instead of the model's, e.g.
      ``{"kappa": 0.05}`` when estimating a diffusivity that may reach 0.05 (a scalar or a field).
    - ``safety``: in (0, 1], the fraction of the limit to use (default 0.9).
    - ``max_steps``: refuse a step that needs more steps than this to reach the last time.

    Example: ``dp.Heat(grid, kappa, dt=dp.stable_time_step(dp.Heat(grid, kappa), [0.1, 0.2]))``.
    """
    name = "stable_time_step"
    if not isinstance(model, AbstractStepper):
        raise TypeError(f"{name}: model must be a diffphys stepper (e.g. dp.Heat), got {type(model).__name__}")
    if isinstance(safety, bool) or not isinstance(safety, (int, float)) or not 0 < safety <= 1:
        raise ValueError(f"{name}: safety must be a number in (0, 1], got {safety!r}")
    spacing = common_spacing(times, name=name)
    for field, value in (bounds or {}).items():
        current = getattr(model, field, None)
        if not eqx.is_inexact_array(current):
            valid = [f for f in model.__dataclass_fields__ if eqx.is_inexact_array(getattr(model, f))]
            raise ValueError(f"{name}: {type(model).__name__} has no parameter field {field!r}; valid are {valid}")
        value = np.asarray(value, dtype=float)
        if value.shape not in ((), current.shape) or not np.all(np.isfinite(value)):
            raise ValueError(
                f"{name}: bounds[{field!r}] must be a finite scalar or a field of shape {current.shape}, got {value!r}"
            )
        model = eqx.tree_at(lambda m: getattr(m, field), model, jnp.broadcast_to(value, current.shape))
    dt_max = model.max_stable_dt
    if dt_max <= 0 or math.isnan(dt_max):
        raise ValueError(f"{name}: scheme {model.scheme.name!r} is unstable for this model at any dt")
    dt = spacing if math.isinf(dt_max) else spacing / max(1, math.ceil(spacing / (safety * dt_max) * (1 - 1e-12)))
    steps = max(np.asarray(times, dtype=float).max() / dt, 1.0)
    if steps > max_steps:
        raise ValueError(
            f"{name}: the times need dt = {dt:.3g} ({steps:.3g} steps, more than max_steps={max_steps}); "
            "round the times to a coarser spacing or raise max_steps"
        )
    return dt
