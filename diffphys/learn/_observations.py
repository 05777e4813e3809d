r"""Learn a model correction from sparse, noisy observations only, through the assimilation loss.

There is no truth to regress on: each training window $w$ has observations $y_w$ of an unknown
trajectory (an :class:`~diffphys.observe.ObservationSchedule` and a diagonal R) and a first guess
$x^b_w$ of its initial state with background covariance B. The network parameters $\theta$ and the
initial-state increments $v_w$ are found together by minimising the 4D-Var cost of all windows,
$$J(\theta, v) = \frac{1}{W}\sum_{w}\frac{1}{N}\Big(\tfrac12\|v_w\|^2 +
  \tfrac12\big\|m_w\odot R^{-1/2}\big(y_w - \mathcal H(\tilde M_\theta(x^b_w + B^{1/2}v_w))\big)\big\|^2\Big),$$
with $\tilde M_\theta$ the corrected stepper rolled out to the observation times, $\mathcal H$ the
schedule's operators, $m_w$ the mask of present observations and $N$ the number of observations
per window. The gradient with respect to $\theta$ comes from the differentiable rollout and the
observation operator. With ``B=None`` the initial states are held at the backgrounds.

References: J. Brajard, A. Carrassi, M. Bocquet, L. Bertino, "Combining data assimilation and
machine learning to infer unresolved scale parametrization", Phil. Trans. R. Soc. A 379 (2021)
20200086; A. Farchi, P. Laloyaux, M. Bonavita, M. Bocquet, "Using machine learning to correct
model error in data assimilation and forecast applications", Q. J. R. Meteorol. Soc. 147 (2021)
3067-3084; M. Bocquet, J. Brajard, A. Carrassi, L. Bertino, "Bayesian inference of chaotic
dynamics by merging data assimilation, machine learning and expectation-maximization",
Found. Data Sci. 2 (2020) 55-80.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from .._rollout import rollout
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint
from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule
from ._corrected import CorrectedStepper
from ._train import _check_int, fit, trainable_partition

__all__ = ["ObservationWindows", "observation_loss", "train_from_observations"]


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


def _initial_states(windows: ObservationWindows, v, idx):
    xb = windows.background[idx]
    if v is None or windows.B is None:
        return xb
    return xb + jax.vmap(windows.B.sqrt)(v[idx])


def observation_loss(corrected, windows: ObservationWindows, v=None, idx=None, *, adjoint: AbstractAdjoint = Direct()) -> jax.Array:
    r"""$J(\theta, v)$ of the module docstring over the windows ``idx`` (default: all).

    **Arguments:** ``corrected`` (any stepper), ``windows``, ``v`` (``(W, *grid)`` increments or
    ``None`` for the backgrounds), ``idx`` (window indices), ``adjoint`` (the rollout's derivative strategy).
    **Returns:** a scalar.
    """
    idx = jnp.arange(windows.n_windows) if idx is None else idx
    x0 = _initial_states(windows, v, idx)
    sched = windows.schedule
    run = lambda x: sched.observe(rollout(corrected, x, sched.n_steps, save_at=sched.steps,
                                          adjoint=adjoint, check_finite=False))
    predicted = jax.vmap(run)(x0)
    innovation = jnp.where(windows.mask[idx], windows.R.whiten(windows.observations[idx] - predicted), 0.0)
    cost = 0.5 * jnp.sum(innovation**2, axis=1)
    if v is not None and windows.B is not None:
        cost = cost + 0.5 * jnp.sum(v[idx].reshape(idx.shape[0], -1) ** 2, axis=1)
    return jnp.mean(cost) / sched.size


class _ObservationLoss(eqx.Module):
    batch_size: int = eqx.field(static=True)
    adjoint: AbstractAdjoint = eqx.field(static=True)

    def __call__(self, trainable, windows, key):
        corrected, v = trainable
        idx = jax.random.choice(key, windows.n_windows, (self.batch_size,), replace=False)
        return observation_loss(corrected, windows, v, idx, adjoint=self.adjoint)


def train_from_observations(corrected: CorrectedStepper, windows: ObservationWindows, *, validation=None,
                            optimizer=None, epochs: int = 10, steps_per_epoch: int = 50, batch_size: int | None = None,
                            key, rollout_adjoint: AbstractAdjoint = Direct(), checkpoint_dir=None,
                            checkpoint_every: int | None = None, resume: bool = True, progress: bool = True,
                            callback: Callable | None = None):
    r"""Train ``corrected.network`` (and the windows' initial states) on sparse observations only.

    Minimises $J(\theta, v)$ of the module docstring with optax (Adam by default), on random batches
    of windows; the wrapped stepper's physics stays fixed. Checkpoints, resume, validation per
    epoch and the non-finite stop work as in :func:`~diffphys.learn.train_correction`.

    **Arguments:**

    - ``corrected``: the :class:`CorrectedStepper` to train; ``windows``: :class:`ObservationWindows`
      (``schedule.dt`` must equal ``corrected.dt``).
    - ``validation``: other :class:`ObservationWindows` (its cost from the backgrounds is reported).
    - ``optimizer`` (default ``optax.adam(1e-3)``), ``epochs``, ``steps_per_epoch``, ``batch_size``
      (windows per step, default all), ``key``, ``rollout_adjoint``, ``checkpoint_dir``,
      ``checkpoint_every``, ``resume``, ``progress``, ``callback``: as in ``train_correction``.

    **Returns:** ``(trained corrected stepper, initial states (W, *grid), TrainingHistory)``.
    """
    name = "train_from_observations"
    if not isinstance(corrected, CorrectedStepper):
        raise TypeError(f"{name}: corrected must be a CorrectedStepper, got {type(corrected).__name__}")
    if not isinstance(windows, ObservationWindows):
        raise TypeError(f"{name}: windows must be ObservationWindows, got {type(windows).__name__}")
    for label, w in (("windows", windows), ("validation", validation)):
        if w is None:
            continue
        if abs(w.schedule.dt - corrected.dt) > 1e-12 * corrected.dt:
            raise ValueError(f"{name}: the model's dt={corrected.dt:g} differs from the {label}' schedule dt={w.schedule.dt:g}")
        if tuple(w.schedule.grid.shape) != corrected.state_shape:
            raise ValueError(f"{name}: the {label}' grid has shape {w.schedule.grid.shape}, the model's state {corrected.state_shape}")
    batch_size = windows.n_windows if batch_size is None else _check_int(f"{name}: batch_size", batch_size)
    if batch_size > windows.n_windows:
        raise ValueError(f"{name}: batch_size={batch_size} exceeds the {windows.n_windows} windows")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    params, static = trainable_partition(corrected)
    v = None if windows.B is None else jnp.zeros_like(windows.background)
    validate = None
    if validation is not None:
        validate = eqx.filter_jit(lambda t: observation_loss(t[0], validation, adjoint=rollout_adjoint))
    rollout_adjoint = check_loop_adjoint(f"{name}: rollout_adjoint", rollout_adjoint)
    loss = _ObservationLoss(batch_size, rollout_adjoint)
    (params, v), history = fit(
        (params, v), (static, None), lambda _: loss, (batch_size,), data=windows, optimizer=optimizer,
        epochs=epochs, steps_per_epoch=steps_per_epoch, key=key, validate=validate, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, progress=progress, callback=callback, name=name,
        stage_label="batch",
    )
    trained = eqx.combine(params, static)
    return trained, _initial_states(windows, v, jnp.arange(windows.n_windows)), history
