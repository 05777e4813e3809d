"""Sparse observations of several assimilation windows (the data of :func:`~diffphys.learn.train_from_observations`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule

__all__ = ["ObservationWindows"]


class ObservationWindows(eqx.Module):
    """Sparse observations of several assimilation windows that share one schedule.

    **Arguments:**

    - ``schedule``: the :class:`~diffphys.observe.ObservationSchedule` of every window.
    - ``observations``: ``(W, schedule.size)``, NaN where missing.
    - ``R``: the observation-error :class:`~diffphys.observe.DiagonalR`.
    - ``background``: ``(W, *grid)``, the first guesses of the windows' initial states.
    - ``B``: the background covariance (e.g. :class:`~diffphys.observe.DiffusionB`), or ``None`` to
      keep the initial states at the backgrounds.
    """

    schedule: ObservationSchedule
    observations: Float[Array, "W N"]
    mask: jax.Array
    R: DiagonalR
    background: Float[Array, "W *grid"]
    B: AbstractCovariance | None

    def __init__(self, schedule, observations, R, background, B=None):
        if not isinstance(schedule, ObservationSchedule):
            raise TypeError(f"ObservationWindows: schedule must be an ObservationSchedule, got {type(schedule).__name__}")
        y = jnp.asarray(observations, dtype=jnp.result_type(float))
        if y.ndim != 2 or y.shape[1] != schedule.size:
            raise ValueError(
                f"ObservationWindows: observations have shape {y.shape}; expected (windows, {schedule.size}) "
                f"for a schedule of {schedule.size} observations"
            )
        if not isinstance(R, DiagonalR):
            raise TypeError(f"ObservationWindows: R must be a DiagonalR, got {type(R).__name__}")
        xb = jnp.asarray(background, dtype=jnp.result_type(float))
        if xb.shape != (y.shape[0], *schedule.grid.shape):
            raise ValueError(
                f"ObservationWindows: background has shape {xb.shape}; expected ({y.shape[0]}, "
                f"{', '.join(map(str, schedule.grid.shape))}): one initial state per window"
            )
        if B is not None and not isinstance(B, AbstractCovariance):
            raise TypeError(f"ObservationWindows: B must be a covariance (e.g. DiffusionB) or None, got {type(B).__name__}")
        self.schedule, self.R, self.background, self.B = schedule, R, xb, B
        self.mask = jnp.isfinite(y)
        self.observations = jnp.where(self.mask, y, 0.0)

    @property
    def n_windows(self) -> int:
        return self.observations.shape[0]
