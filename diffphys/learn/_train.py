r"""Train a correction network with optax: one-step (supervised) or solver-in-the-loop (unrolled) losses.

* **One-step** (``method="one_step"``): pairs of consecutive truth states,
  $$L_1(\theta) = \frac{1}{B}\sum_b \frac{1}{|\Omega|}\big\|M(u^t_{n_b}) + s N_\theta(\cdot) - u^t_{n_b+1}\big\|^2,$$
  the solver's step $M(u^t_n)$ is a fixed input: no gradient flows through the solver.
* **Solver-in-the-loop** (``method="unrolled"``): the corrected model is rolled out $m$ steps
  from a truth state and compared with the truth at every step,
  $$L_m(\theta) = \frac{1}{B m}\sum_b\sum_{k=1}^{m} \frac{1}{|\Omega|}\big\|\tilde M_\theta^{\,k}(u^t_{n_b}) - u^t_{n_b+k}\big\|^2,
    \qquad \tilde M_\theta = M + s N_\theta,$$
  differentiated through the $m$ steps of the differentiable stepper, so the network learns to
  correct the states its own corrections produce. ``unroll`` may be a curriculum
  ``(m_1, m_2, ...)``: the epochs are split evenly between the stages. ``rollout_adjoint``
  (e.g. ``Checkpointed(every=b)``, see :func:`~diffphys.rollout`) bounds the memory of long unrolls.

Validation (the $m$-step loss on the validation trajectories, with $m$ = ``validation_unroll``)
runs after every epoch. With ``checkpoint_dir``, a checkpoint (trainable parameters, optimiser
state, PRNG key, step) is written every ``checkpoint_every`` optimiser steps, and training resumes
from it: a resumed run gives bit-identical parameters to an uninterrupted one. A non-finite loss or
update raises :class:`NonFiniteLossError` naming the step; the last good checkpoint is kept.

References: K. Um, R. Brand, Y. Fei, P. Holl, N. Thuerey, "Solver-in-the-loop: learning from
differentiable physics to interact with iterative PDE-solvers", NeurIPS 2020; D. Kochkov et al.,
"Machine learning-accelerated computational fluid dynamics", PNAS 118 (2021) e2101784118; B. List,
L.-W. Chen, N. Thuerey, "Learned turbulence modelling with differentiable fluid solvers", J. Fluid
Mech. 949 (2022) A25 (optimisation horizons, curricula).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._rollout import rollout
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint
from ._checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ._corrected import CorrectedStepper

__all__ = ["METHODS", "NonFiniteLossError", "TrainingHistory", "fit", "one_step_loss", "train_correction", "trainable_partition", "unrolled_loss"]

METHODS = ("one_step", "unrolled")


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite (NaN or inf) loss or parameter update; ``step`` names the optimiser step."""

    def __init__(self, message: str, step: int, last_checkpoint_step: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint_step = last_checkpoint_step


@dataclasses.dataclass
class TrainingHistory:
    """What a training run did: ``loss`` per optimiser step (from ``start_step + 1``), ``validation``
    as ``(step, loss)`` after each epoch, the unroll length of each epoch, and ``start_step`` (> 0 when
    resumed from a checkpoint)."""

    loss: list[float] = dataclasses.field(default_factory=list)
    validation: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    unroll: list[int] = dataclasses.field(default_factory=list)
    start_step: int = 0


def one_step_loss(corrected: CorrectedStepper, states, targets) -> jax.Array:
    r"""$L_1$: mean squared error of one corrected step, the solver's prediction held fixed.

    **Arguments:** ``corrected``; ``states``, ``targets``: batches ``(B, *grid)`` of truth states
    $u^t_n$ and $u^t_{n+1}$. **Returns:** a scalar.
    """
    prediction = jax.lax.stop_gradient(jax.vmap(corrected._model_step)(states))
    stepped = prediction + jax.vmap(corrected.correction)(states, prediction)
    return jnp.mean((stepped - targets) ** 2)


def unrolled_loss(corrected: CorrectedStepper, windows, *, adjoint: AbstractAdjoint = Direct()) -> jax.Array:
    r"""$L_m$: mean squared error of an $m$-step corrected rollout against the truth, through the solver.

    **Arguments:** ``corrected``; ``windows``: truth windows ``(B, m + 1, *grid)`` (entry 0 starts
    the rollout); ``adjoint``: the rollout's derivative strategy. **Returns:** a scalar.
    """
    m = windows.shape[1] - 1
    run = lambda u0: rollout(corrected, u0, m, save_every=1, adjoint=adjoint, check_finite=False)[1:]
    return jnp.mean((jax.vmap(run)(windows[:, 0]) - windows[:, 1:]) ** 2)


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
        return unrolled_loss(model, windows, adjoint=self.adjoint)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


@eqx.filter_jit
def _update(params, static, opt_state, data, key, loss_fn, optimizer):
    loss, grads = eqx.filter_value_and_grad(lambda p: loss_fn(eqx.combine(p, static), data, key))(params)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_inexact_array))
    new = eqx.apply_updates(params, updates)
    return new, opt_state, loss, jnp.isfinite(loss) & _all_finite(new)


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fit(params, static, loss_for_stage: Callable[[int], Callable], stages: Sequence, *, data, optimizer,
        epochs: int, steps_per_epoch: int, key, validate: Callable | None = None, checkpoint_dir=None,
        checkpoint_every: int | None = None, resume: bool = True, progress: bool = True,
        callback: Callable | None = None, name: str = "train", stage_label: str = "m"):
    """The optax loop shared by the trainers (see :func:`train_correction`): ``epochs`` x
    ``steps_per_epoch`` steps of ``loss_for_stage(stage)(combine(params, static), data, key)``, the
    epochs split evenly over ``stages``; returns ``(params, history)``."""
    epochs = _check_int(f"{name}: epochs", epochs)
    steps_per_epoch = _check_int(f"{name}: steps_per_epoch", steps_per_epoch)
    if checkpoint_every is not None:
        checkpoint_every = _check_int(f"{name}: checkpoint_every", checkpoint_every)
        if checkpoint_dir is None:
            raise ValueError(f"{name}: checkpoint_every={checkpoint_every} needs checkpoint_dir (a folder)")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"{name}: optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    history, step, last_saved = TrainingHistory(), 0, None
    if path is not None and resume and path.is_file():
        params, opt_state, key, step = load_checkpoint(path, params, opt_state, key)
        history.start_step = last_saved = step
    total = epochs * steps_per_epoch
    losses = {}
    while step < total:
        epoch = step // steps_per_epoch
        stage = stages[min(epoch * len(stages) // epochs, len(stages) - 1)]
        if stage not in losses:
            losses[stage] = loss_for_stage(stage)
        key, sub = jax.random.split(key)
        params, opt_state, loss, ok = _update(params, static, opt_state, data, sub, losses[stage], optimizer)
        step += 1
        loss = float(loss)
        if not bool(ok):
            kept = f"the last good checkpoint (step {last_saved}) in {path.parent} is kept" if last_saved else "no checkpoint was written"
            raise NonFiniteLossError(
                f"{name}: the loss or the parameter update became non-finite at optimiser step {step} "
                f"(loss {loss}); {kept}. Lower the learning rate, clip gradients (optax.clip_by_global_norm) "
                "or shorten the unroll", step, last_saved,
            )
        history.loss.append(loss)
        if checkpoint_every is not None and step % checkpoint_every == 0:
            save_checkpoint(path, params, opt_state, key, step)
            last_saved = step
        if callback is not None:
            callback(step, loss)
        if step % steps_per_epoch == 0:
            if stage_label == "m":
                history.unroll.append(stage)
            val = math.nan if validate is None else float(validate(eqx.combine(params, static)))
            if validate is not None:
                history.validation.append((step, val))
            if progress:
                print(f"\r{name}: epoch {epoch + 1}/{epochs}  step {step}/{total}  {stage_label}={stage}  loss {loss:.3e}"
                      + ("" if validate is None else f"  validation {val:.3e}"), file=sys.stderr, flush=True)
        elif progress and step % max(1, steps_per_epoch // 10) == 0:  # ~10 updates per epoch
            print(f"\r{name}: epoch {epoch + 1}/{epochs}  step {step}/{total}  {stage_label}={stage}  loss {loss:.3e}",
                  end="", file=sys.stderr, flush=True)
    return params, history


def trainable_partition(corrected: CorrectedStepper):
    """Split a corrected stepper into the network's float arrays (trained) and the rest (frozen, incl. physics)."""
    spec = jax.tree_util.tree_map(lambda _: False, corrected)
    spec = eqx.tree_at(lambda c: c.network, spec, replace=jax.tree_util.tree_map(eqx.is_inexact_array, corrected.network))
    return eqx.partition(corrected, spec)


def train_correction(corrected: CorrectedStepper, train, *, validation=None, method: str = "unrolled",
                     unroll: int | Sequence[int] = 4, validation_unroll: int | None = None, optimizer=None,
                     epochs: int = 10, steps_per_epoch: int = 50, batch_size: int = 16, key,
                     rollout_adjoint: AbstractAdjoint = Direct(), checkpoint_dir=None,
                     checkpoint_every: int | None = None, resume: bool = True, progress: bool = True,
                     callback: Callable | None = None):
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
    - ``rollout_adjoint``: the derivative strategy of the unrolled rollouts, ``Direct()`` or
      ``Checkpointed(...)`` for long unrolls (see :func:`~diffphys.rollout`).
    - ``checkpoint_dir``, ``checkpoint_every``, ``resume``: write a checkpoint every N optimiser
      steps into the folder, and (``resume=True``) continue from the checkpoint found there.
    - ``progress``: print a progress line (loss, validation) to stderr; ``callback(step, loss)``:
      called after every step.

    **Returns:** ``(trained corrected stepper, TrainingHistory)``.

    **Raises:** ``ValueError`` for bad settings; :class:`NonFiniteLossError` naming the step.
    """
    if not isinstance(corrected, CorrectedStepper):
        raise TypeError(f"train_correction: corrected must be a CorrectedStepper, got {type(corrected).__name__}")
    if method not in METHODS:
        raise ValueError(f"train_correction: unknown method {method!r}; valid are {list(METHODS)}")
    stages = (unroll,) if isinstance(unroll, (int, np.integer)) else tuple(unroll)
    if not stages:
        raise ValueError("train_correction: unroll is empty; give m or a curriculum (m_1, m_2, ...)")
    stages = tuple(_check_int("train_correction: unroll", m) for m in stages)
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
    batch_size = _check_int("train_correction: batch_size", batch_size)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer

    rollout_adjoint = check_loop_adjoint("train_correction: rollout_adjoint", rollout_adjoint)
    loss_for_stage = lambda m: _WindowLoss(method, m, batch_size, rollout_adjoint)

    validate = None
    if validation is not None:
        windows = _fixed_windows(jnp.asarray(validation), validation_unroll or max(stages))
        validate = eqx.filter_jit(lambda model: unrolled_loss(model, windows, adjoint=rollout_adjoint))
    params, static = trainable_partition(corrected)
    params, history = fit(
        params, static, loss_for_stage, stages, data=train, optimizer=optimizer, epochs=epochs,
        steps_per_epoch=steps_per_epoch, key=key, validate=validate, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, progress=progress, callback=callback,
        name=f"train_correction ({method})",
    )
    return eqx.combine(params, static), history
