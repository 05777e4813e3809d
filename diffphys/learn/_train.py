r"""Train a correction network with optax: one-step (supervised) or solver-in-the-loop (unrolled) losses.

* **One-step** (``method="one_step"``): pairs of consecutive truth states,
  $$L_1(\theta) = \frac{1}{B}\sum_b \frac{1}{|\Omega|}\big\|M(u^t_{n_b}) + s N_\theta(\cdot) - u^t_{n_b+1}\big\|^2,$$
  the solver's step $M(u^t_n)$ is a fixed input: no gradient flows through the solver
  (:func:`~diffphys.learn.one_step_loss`).
* **Solver-in-the-loop** (``method="unrolled"``): the corrected model is rolled out $m$ steps
  from a truth state and compared with the truth at every step,
  $$L_m(\theta) = \frac{1}{B m}\sum_b\sum_{k=1}^{m} \frac{1}{|\Omega|}\big\|\tilde M_\theta^{\,k}(u^t_{n_b}) - u^t_{n_b+k}\big\|^2,
    \qquad \tilde M_\theta = M + s N_\theta,$$
  differentiated through the $m$ steps of the differentiable stepper, so the network learns to
  correct the states its own corrections produce (:func:`~diffphys.learn.rollout_loss`). ``unroll`` may be a curriculum
  ``(m_1, m_2, ...)``: the epochs are split evenly between the stages. ``rollout_adjoint``
  (e.g. ``Checkpointed(every=b)``, see :func:`~diffphys.rollout`) bounds the memory of long unrolls.

Validation (the $m$-step loss on the validation trajectories, with $m$ = ``validation_unroll``)
runs after every epoch. The loop is :func:`~diffphys.learn.fit`: with ``checkpoint_dir``, a
checkpoint (trainable parameters, optimiser state, PRNG key, step) is written every
``checkpoint_every`` optimiser steps, and training resumes from it: a resumed run gives
bit-identical parameters to an uninterrupted one. A non-finite loss or update raises
:class:`~diffphys.learn.NonFiniteLossError` naming the step; the last good checkpoint is kept.

References: K. Um, R. Brand, Y. Fei, P. Holl, N. Thuerey, "Solver-in-the-loop: learning from
differentiable physics to interact with iterative PDE-solvers", NeurIPS 2020; D. Kochkov et al.,
"Machine learning-accelerated computational fluid dynamics", PNAS 118 (2021) e2101784118; B. List,
L.-W. Chen, N. Thuerey, "Learned turbulence modelling with differentiable fluid solvers", J. Fluid
Mech. 949 (2022) A25 (optimisation horizons, curricula).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._misc import check_int
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint
from ._corrected import CorrectedStepper
from ._fit import fit
from ._losses import one_step_loss, rollout_loss

__all__ = ["METHODS", "train_correction", "trainable_partition"]

METHODS = ("one_step", "unrolled")


def _sample_windows(data, key, batch_size: int, m: int):
    n_traj, n_time = data.shape[0], data.shape[1]
    k1, k2 = jax.random.split(key)
    i = jax.random.randint(k1, (batch_size,), 0, n_traj)
    s = jax.random.randint(k2, (batch_size,), 0, n_time - m)
    return data[i[:, None], s[:, None] + jnp.arange(m + 1)[None, :]]


def _fixed_windows(data, m: int):
    """All non-overlapping windows of ``m`` steps (deterministic, for validation)."""
    starts = np.arange(0, data.shape[1] - m, m)
    idx = starts[:, None] + np.arange(m + 1)[None, :]
    return data[:, idx].reshape(-1, m + 1, *data.shape[2:])


class _WindowLoss(eqx.Module):
    """The training loss on a random batch of windows (a module of static settings, so that compiled
    training steps are reused by every run with the same settings)."""

    method: str = eqx.field(static=True)
    m: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    adjoint: AbstractAdjoint = eqx.field(static=True)

    def __call__(self, model, data, key):
        windows = _sample_windows(data, key, self.batch_size, self.m)
        if self.method == "one_step":
            return one_step_loss(model, windows[:, 0], windows[:, 1])
        return rollout_loss(model, windows, adjoint=self.adjoint)


def _trainable_spec(corrected: CorrectedStepper):
    """True on the network's float arrays, False elsewhere (the physics stays fixed)."""
    spec = jax.tree_util.tree_map(lambda _: False, corrected)
    return eqx.tree_at(lambda c: c.network, spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, corrected.network))


def trainable_partition(corrected: CorrectedStepper):
    """Split a corrected stepper into the network's float arrays (trained) and the rest (frozen, incl. physics)."""
    return eqx.partition(corrected, _trainable_spec(corrected))


def train_correction(corrected: CorrectedStepper, train, *, validation=None, method: str = "unrolled",
                     unroll: int | Sequence[int] = 4, validation_unroll: int | None = None, optimizer=None,
                     epochs: int = 10, steps_per_epoch: int = 50, batch_size: int = 16, key,
                     rollout_adjoint: AbstractAdjoint = Direct(), checkpoint_dir=None,
                     checkpoint_every: int | None = None, resume: bool = True, progress=True):
    r"""Train ``corrected.network`` on truth trajectories; the wrapped stepper's parameters stay fixed.

    Minimises $L_1$ (``method="one_step"``) or $L_m$ (``method="unrolled"``, solver-in-the-loop) of
    the module docstring with optax, on windows drawn at random (from ``key``) from ``train``.

    **Arguments:**

    - ``corrected``: the :class:`CorrectedStepper` to train (its network's initial weights).
    - ``train``: truth trajectories ``(n, T + 1, *grid)`` at the model's time step (e.g.
      ``CorrectionDataset.train``); ``validation``: the same for validation (optional).
    - ``method``: ``"one_step"`` or ``"unrolled"``.
    - ``unroll``: $m$, or a curriculum ``(m_1, m_2, ...)`` over the epochs (unrolled only).
    - ``validation_unroll``: $m$ of the validation loss (default: the largest ``unroll``).
    - ``optimizer``: an optax transformation (default ``optax.adam(1e-3)``).
    - ``epochs``, ``steps_per_epoch``, ``batch_size``: the schedule (validation after each epoch).
    - ``key``: a ``jax.random`` key (batches); same key, same run.
    - ``rollout_adjoint``: how the unrolled rollouts are differentiated (:class:`~diffphys.adjoint.Direct`,
      or :class:`~diffphys.adjoint.Checkpointed` to bound their memory).
    - ``checkpoint_dir``, ``checkpoint_every``, ``resume``: write a checkpoint every N optimiser
      steps into the folder, and (``resume=True``) continue from the checkpoint found there.
    - ``progress``: ``True`` (default: progress lines on stderr, plain lines when it is not a
      terminal), ``None`` (silent) or ``fn(step, loss)`` called after every step.

    **Returns:** ``(trained corrected stepper, TrainingHistory)``.

    **Raises:** ``ValueError`` for bad settings; :class:`~diffphys.learn.NonFiniteLossError` naming the step.
    """
    if not isinstance(corrected, CorrectedStepper):
        raise TypeError(f"train_correction: corrected must be a CorrectedStepper, got {type(corrected).__name__}")
    if method not in METHODS:
        raise ValueError(f"train_correction: unknown method {method!r}; valid are {list(METHODS)}")
    stages = (unroll,) if isinstance(unroll, (int, np.integer)) else tuple(unroll)
    if not stages:
        raise ValueError("train_correction: unroll is empty; give m or a curriculum (m_1, m_2, ...)")
    stages = tuple(check_int("train_correction: unroll", m) for m in stages)
    if method == "one_step":
        stages = (1,)
    train = jnp.asarray(train)
    expected = corrected.state_shape
    for label, d in (("train", train), ("validation", validation)):
        if d is not None and (jnp.ndim(d) != 2 + len(expected) or tuple(jnp.shape(d)[2:]) != expected):
            raise ValueError(
                f"train_correction: {label} has shape {jnp.shape(d)}; expected (trajectories, times, *{expected})"
            )
    longest = max(stages + ((validation_unroll,) if validation_unroll else ()))
    if train.shape[1] <= longest or (validation is not None and jnp.shape(validation)[1] <= longest):
        raise ValueError(
            f"train_correction: trajectories of {train.shape[1]} states are too short for an unroll of {longest} "
            f"steps; give longer trajectories or a smaller unroll"
        )
    batch_size = check_int("train_correction: batch_size", batch_size)
    epochs = check_int("train_correction: epochs", epochs)
    steps_per_epoch = check_int("train_correction: steps_per_epoch", steps_per_epoch)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer

    rollout_adjoint = check_loop_adjoint("train_correction: rollout_adjoint", rollout_adjoint)
    curriculum = [(m, _WindowLoss(method, m, batch_size, rollout_adjoint)) for m in stages]

    validate = None
    if validation is not None:
        windows = _fixed_windows(jnp.asarray(validation), validation_unroll or max(stages))
        validate = eqx.filter_jit(lambda model: rollout_loss(model, windows, adjoint=rollout_adjoint))
    return fit(
        corrected, curriculum, train, optimizer=optimizer, steps=epochs * steps_per_epoch, key=key,
        trainable=_trainable_spec(corrected), validate=validate, validate_every=steps_per_epoch,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
        name=f"train_correction ({method})", stage_label="m",
    )
