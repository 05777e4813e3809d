r"""Observation schedules: sorted observation times on the model's time grid, each with its operator.

A schedule stacks all observations of a window into one vector, time by time:
$\mathbf y = (y_{t_1}, y_{t_2}, \dots)$ with $y_{t_k} = H_k\, u(t_k)$. Sensor sets may differ from
one time to the next; times need not fall on every step. Missing values are NaN in the data and
are masked out by the residuals (see :class:`~diffphys.assimilate.StrongConstraint4DVar`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._operators import AbstractObservationOperator

__all__ = ["TIME_TOLERANCE", "ObservationSchedule"]

TIME_TOLERANCE = 1e-6
"""Observation times may be off the model's time grid by at most this fraction of ``dt`` (round-off)."""


def _check_times(times, t0: float, t_end: float | None, dt: float) -> np.ndarray:
    t = np.asarray(times, dtype=float).reshape(-1) if np.ndim(times) <= 1 else None
    if t is None or t.size == 0:
        raise ValueError(
            f"ObservationSchedule: times must be a non-empty 1D sequence of numbers, got shape {np.shape(times)}"
        )
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ValueError(f"ObservationSchedule: observation time {int(bad[0])} is {t[bad[0]]}; times must be finite")
    for i in range(t.size - 1):
        if t[i + 1] == t[i]:
            raise ValueError(
                f"ObservationSchedule: duplicate observation time t={t[i]:g} (positions {i} and {i + 1}); "
                "times must be strictly increasing: merge the observations of one time into one entry"
            )
        if t[i + 1] < t[i]:
            raise ValueError(
                f"ObservationSchedule: observation times are not sorted: t[{i + 1}]={t[i + 1]:g} comes after "
                f"t[{i}]={t[i]:g}; times must be strictly increasing (sort them together with their values)"
            )
    end = math.inf if t_end is None else t_end
    slack = TIME_TOLERANCE * dt  # round-off: 0.025 * 24 > 0.6 in floating point
    outside = np.flatnonzero((t < t0 - slack) | (t > end + slack))
    if outside.size:
        i = int(outside[0])
        raise ValueError(
            f"ObservationSchedule: observation time t={t[i]:g} (position {i}) lies outside the assimilation "
            f"window [{t0:g}, {end:g}]; valid times satisfy {t0:g} <= t <= {end:g} (drop it or widen the window)"
        )
    return t


def _steps_from_times(t: np.ndarray, dt: float, t0: float) -> tuple[int, ...]:
    k = np.rint((t - t0) / dt).astype(np.int64)
    off = np.abs(t - t0 - k * dt)
    bad = np.flatnonzero(off > TIME_TOLERANCE * dt)
    if bad.size:
        i = int(bad[0])
        lo = int(np.floor((t[i] - t0) / dt))
        raise ValueError(
            f"ObservationSchedule: observation time t={t[i]:g} (position {i}) is not on the model's time grid "
            f"t0 + k dt (t0={t0:g}, dt={dt:g}); the nearest steps are t={t0 + lo * dt:g} (k={lo}) and "
            f"t={t0 + (lo + 1) * dt:g} (k={lo + 1}); use times that are multiples of dt after t0, or change dt"
        )
    return tuple(int(s) for s in k)


class ObservationSchedule(eqx.Module):
    r"""When and what is observed: observation times on the model's time grid, each with an operator.

    $$\mathbf y = \big(H_1 u(t_1),\ H_2 u(t_2),\ \dots\big),\qquad t_k = t_0 + s_k\,\Delta t,$$

    with strictly increasing step indices $s_k \ge 0$ ($s = 0$ observes the initial state).

    **Arguments:**

    - ``times``: strictly increasing observation times in the window ``[t0, t_end]``; each must be
      within ``TIME_TOLERANCE * dt`` of a step ``t0 + k dt`` (``ValueError`` naming the time and its
      nearest steps otherwise) and is then assigned to that step (the same slack applies at the
      window's ends). Use :meth:`from_steps` to give step indices instead.
    - ``operators``: one :class:`AbstractObservationOperator` used at every time, or a sequence with
      one operator per time (sensor sets may change; reuse the same object for times that share one,
      so they are applied together).
    - ``dt``: the model's time step; ``t0``: the window's start (default 0); ``t_end``: its end
      (default: no limit).
    - ``field``: for a tuple state such as the wave equation's ``(u, du/dt)``, the index of the
      observed field (default 0).

    Observations are stacked time by time (``size`` in all, ``sizes[k]`` at time ``k``).
    """

    times: tuple[float, ...] = eqx.field(static=True)
    steps: tuple[int, ...] = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    operators: tuple[AbstractObservationOperator, ...]
    groups: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    sizes: tuple[int, ...] = eqx.field(static=True)
    field: int = eqx.field(static=True)
    _order: Int[Array, " N"]
    _inverse: Int[Array, " N"]

    def __init__(self, times: Float[ArrayLike, " T"], operators, *, dt: float, t0: float = 0.0,
                 t_end: float | None = None, field: int = 0):
        if isinstance(dt, bool) or not (isinstance(dt, (int, float, np.number)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"ObservationSchedule: dt must be a finite number > 0, got {dt!r}")
        if not (isinstance(t0, (int, float, np.number)) and math.isfinite(t0)):
            raise ValueError(f"ObservationSchedule: t0 must be a finite number, got {t0!r}")
        if t_end is not None and not (isinstance(t_end, (int, float, np.number)) and t_end >= t0):
            raise ValueError(f"ObservationSchedule: t_end must be a number >= t0={t0:g} (or None), got {t_end!r}")
        t = _check_times(times, float(t0), None if t_end is None else float(t_end), float(dt))
        self.steps = _steps_from_times(t, float(dt), float(t0))
        self.times = tuple(float(x) for x in t)
        self.dt, self.t0 = float(dt), float(t0)
        if isinstance(field, bool) or not isinstance(field, (int, np.integer)) or field < 0:
            raise ValueError(f"ObservationSchedule: field must be an integer >= 0, got {field!r}")
        self.field = int(field)
        ops = _per_time_operators(operators, len(t))
        unique: list[AbstractObservationOperator] = []
        positions: list[list[int]] = []
        for k, op in enumerate(ops):
            for g, seen in enumerate(unique):
                if op is seen:
                    positions[g].append(k)
                    break
            else:
                unique.append(op)
                positions.append([k])
        self.operators = tuple(unique)
        self.groups = tuple(tuple(p) for p in positions)
        self.sizes = tuple(op.size for op in ops)
        # Observations are computed group by group; _order puts them back in time order.
        offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        grouped = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for p in positions for k in p])
        self._order = jnp.asarray(np.argsort(grouped, kind="stable"), dtype=int)
        self._inverse = jnp.asarray(grouped, dtype=int)

    @classmethod
    def from_steps(cls, steps: Sequence[int], operators, *, dt: float, t0: float = 0.0,
                   n_steps: int | None = None, field: int = 0) -> ObservationSchedule:
        """A schedule from step indices ``s_k`` (times ``t0 + s_k dt``), optionally within ``n_steps``."""
        s = np.asarray(steps)
        if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"ObservationSchedule.from_steps: steps must be a non-empty 1D list of integers, got {steps!r}")
        if (s < 0).any():
            raise ValueError(f"ObservationSchedule.from_steps: step {int(s[s < 0][0])} is negative; steps must be >= 0")
        t_end = None if n_steps is None else t0 + n_steps * dt
        return cls(t0 + s * dt, operators, dt=dt, t0=t0, t_end=t_end, field=field)

    @property
    def size(self) -> int:
        """The total number of observations ``N``."""
        return int(sum(self.sizes))

    @property
    def n_steps(self) -> int:
        """The number of model steps needed to reach the last observation."""
        return self.steps[-1]

    @property
    def grid(self):
        return self.operators[0].grid

    def operator_at(self, k: int) -> AbstractObservationOperator:
        """The operator used at observation time ``k``."""
        for op, positions in zip(self.operators, self.groups):
            if k in positions:
                return op
        raise IndexError(f"observation time index {k} is out of range [0, {len(self.times)})")

    def _field(self, trajectory):
        if isinstance(trajectory, (tuple, list)):
            return trajectory[self.field]
        if self.field != 0:
            raise ValueError(f"ObservationSchedule: field={self.field} needs a tuple state, got one array")
        return trajectory

    def observe(self, trajectory) -> Float[Array, " N"]:
        r"""The stacked observations $(H_k u(t_k))_k$ of a trajectory saved at ``steps``.

        ``trajectory`` is what ``dp.rollout(model, x0, schedule.n_steps, save_at=schedule.steps)``
        returns: an array of shape ``(len(times), *grid)`` or, for a tuple state, a tuple of them.
        """
        u = jnp.asarray(self._field(trajectory))
        expected = (len(self.steps), *self.grid.shape)
        if u.shape != expected:
            raise ValueError(
                f"ObservationSchedule.observe: the trajectory has shape {u.shape}, expected {expected} "
                "(one saved state per observation time: rollout(..., save_at=schedule.steps))"
            )
        parts = [jax.vmap(op)(u[np.asarray(p)]).reshape(-1) for op, p in zip(self.operators, self.groups)]
        return jnp.concatenate(parts)[self._order]

    def transpose(self, y: Float[Array, " N"]) -> Float[Array, " T *grid"]:
        r"""The transpose of :meth:`observe`: $\sum_k$ (time slot $k$) $\leftarrow H_k^\top y_k$, one field."""
        y = jnp.asarray(y)
        if y.shape != (self.size,):
            raise ValueError(
                f"ObservationSchedule.transpose: observations have shape {y.shape}, expected ({self.size},)"
            )
        grouped = y[self._inverse]
        out = jnp.zeros((len(self.steps), *self.grid.shape), y.dtype)
        start = 0
        for op, p in zip(self.operators, self.groups):
            stop = start + len(p) * op.size
            fields = jax.vmap(op.transpose)(grouped[start:stop].reshape(len(p), op.size))
            out = out.at[np.asarray(p)].set(fields)
            start = stop
        return out

    def split(self, y) -> list:
        """The stacked vector ``y`` (length ``size``) as a list with one array per observation time."""
        y = np.asarray(y) if not isinstance(y, jax.Array) else y
        if y.shape != (self.size,):
            raise ValueError(f"ObservationSchedule.split: got shape {y.shape}, expected ({self.size},)")
        offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        return [y[offsets[k]:offsets[k + 1]] for k in range(len(self.sizes))]

    def per_observation(self, value, name: str = "value") -> np.ndarray:
        """Broadcast ``value`` to one entry per observation (length ``size``).

        Accepts a scalar, one value per sensor (when every time has the same number of sensors), a
        list with one array per time, or the stacked vector itself.
        """
        per_time = isinstance(value, (list, tuple)) and len(value) == len(self.sizes) and all(np.ndim(v) == 1 for v in value)
        if per_time:
            parts = [np.asarray(v, dtype=float) for v in value]
            if [p.shape for p in parts] != [(m,) for m in self.sizes]:
                raise ValueError(f"{name}: per-time arrays have shapes {[p.shape for p in parts]}, expected sizes {list(self.sizes)}")
            return np.concatenate(parts)
        arr = np.asarray(value, dtype=float)
        if arr.ndim == 0:
            return np.full(self.size, float(arr))
        if arr.shape == (self.size,):
            return arr
        if arr.ndim == 1 and len(set(self.sizes)) == 1 and arr.shape == (self.sizes[0],):
            return np.tile(arr, len(self.sizes))
        per_sensor = f", ({self.sizes[0]},) (one per sensor)" if len(set(self.sizes)) == 1 else ""
        raise ValueError(
            f"{name} has shape {arr.shape}; it must be a scalar{per_sensor} or ({self.size},) "
            f"(one per observation, {len(self.sizes)} times with {list(self.sizes)} sensors)"
        )

    @property
    def time_index(self) -> np.ndarray:
        """For each stacked observation, the index of its observation time (length ``size``)."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    @property
    def locations(self) -> np.ndarray:
        """For each stacked observation, its location (shape ``(size, ndim)``)."""
        return np.concatenate([self.operator_at(k).locations for k in range(len(self.times))])


def _per_time_operators(operators, n_times: int) -> list[AbstractObservationOperator]:
    if isinstance(operators, AbstractObservationOperator):
        ops = [operators] * n_times
    elif isinstance(operators, Sequence) and not isinstance(operators, str):
        ops = list(operators)
        if len(ops) != n_times:
            raise ValueError(
                f"ObservationSchedule: {len(ops)} operators given for {n_times} observation times; "
                "give one operator (used at every time) or exactly one per time"
            )
    else:
        raise TypeError(
            f"ObservationSchedule: operators must be an observation operator or a sequence of them, "
            f"got {type(operators).__name__}"
        )
    for k, op in enumerate(ops):
        if not isinstance(op, AbstractObservationOperator):
            raise TypeError(f"ObservationSchedule: operator {k} is a {type(op).__name__}, not an observation operator")
        if op.grid.shape != ops[0].grid.shape or op.grid.spacing != ops[0].grid.spacing:
            raise ValueError(
                f"ObservationSchedule: operator {k} is on a grid of shape {op.grid.shape}, operator 0 on "
                f"{ops[0].grid.shape}; every operator must be on the model's grid"
            )
    return ops
