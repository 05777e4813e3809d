r"""Learn a model correction from sparse, noisy observations only, through the assimilation loss.

There is no truth to regress on: each training window $w$ has observations $y_w$ of an unknown
trajectory (an :class:`~diffphys.observe.ObservationSchedule` and a diagonal R) and a first guess
$x^b_w$ of its initial state with background covariance B. The network parameters $\theta$ and the
initial-state increments $v_w$ are found together by minimising the 4D-Var cost of all windows,
$$J(\theta, v) = \frac{1}{W}\sum_{w}\frac{1}{N}\Big(\tfrac12\|v_w\|^2 +
  \tfrac12\big\|m_w\odot R^{-1/2}\big(y_w - \mathcal H(\tilde M_\theta(x^b_w + B^{1/2}v_w))\big)\big\|^2\Big),$$
with $\tilde M_\theta$ the corrected stepper rolled out to the observation times, $\mathcal H$ the
schedule's operators, $m_w$ the mask of present observations and $N$ the number of observations
per window (:func:`~diffphys.learn.observation_loss`: each window is a
:class:`~diffphys.assimilate.StrongConstraint4DVar` problem with the corrected model, and $J$ the
mean of their costs). The gradient with respect to $\theta$ comes from the differentiable rollout
and the observation operator. With ``B=None`` the initial states are held at the backgrounds.

References: J. Brajard, A. Carrassi, M. Bocquet, L. Bertino, "Combining data assimilation and
machine learning to infer unresolved scale parametrization", Phil. Trans. R. Soc. A 379 (2021)
20200086; A. Farchi, P. Laloyaux, M. Bonavita, M. Bocquet, "Using machine learning to correct
model error in data assimilation and forecast applications", Q. J. R. Meteorol. Soc. 147 (2021)
3067-3084; M. Bocquet, J. Brajard, A. Carrassi, L. Bertino, "Bayesian inference of chaotic
dynamics by merging data assimilation, machine learning and expectation-maximization",
Found. Data Sci. 2 (2020) 55-80.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._misc import check_int
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint
from ._corrected import CorrectedStepper
from ._fit import fit
from ._losses import observation_loss
from ._train import _trainable_spec
from ._windows import ObservationWindows

__all__ = ["train_from_observations"]


def _initial_states(windows: ObservationWindows, v, idx):
    xb = windows.background[idx]
    if v is None or windows.B is None:
        return xb
    return xb + jax.vmap(windows.B.sqrt)(v[idx])


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
                            checkpoint_every: int | None = None, resume: bool = True, progress=True):
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
      ``checkpoint_every``, ``resume``, ``progress``: as in ``train_correction``.

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
    batch_size = windows.n_windows if batch_size is None else check_int(f"{name}: batch_size", batch_size)
    if batch_size > windows.n_windows:
        raise ValueError(f"{name}: batch_size={batch_size} exceeds the {windows.n_windows} windows")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    epochs = check_int(f"{name}: epochs", epochs)
    steps_per_epoch = check_int(f"{name}: steps_per_epoch", steps_per_epoch)
    v = None if windows.B is None else jnp.zeros_like(windows.background)
    validate = None
    if validation is not None:
        validate = eqx.filter_jit(lambda t: observation_loss(t[0], validation, adjoint=rollout_adjoint))
    rollout_adjoint = check_loop_adjoint(f"{name}: rollout_adjoint", rollout_adjoint)
    loss = _ObservationLoss(batch_size, rollout_adjoint)
    (trained, v), history = fit(
        (corrected, v), loss, windows, optimizer=optimizer, steps=epochs * steps_per_epoch, key=key,
        trainable=(_trainable_spec(corrected), True), validate=validate, validate_every=steps_per_epoch,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume, progress=progress, name=name,
    )
    return trained, _initial_states(windows, v, jnp.arange(windows.n_windows)), history
