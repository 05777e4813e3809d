r"""The one training loop of :mod:`diffphys.learn`: optax steps, validation, checkpoints, resume, progress.

Every trainer (:func:`~diffphys.learn.train_correction`,
:func:`~diffphys.learn.train_from_observations`, :func:`~diffphys.learn.train_unrolled_solver`) is
this loop with its own loss. Step $s$ (counted from 1) evaluates the loss and its gradient at the
trainable parameters $\theta_{s-1}$ and applies the optimiser's update,
$$\ell_s = L(\theta_{s-1}; \text{data}, k_s),\qquad (u_s, o_s) = \mathrm{opt}(\nabla L(\theta_{s-1}), o_{s-1}),
  \qquad \theta_s = \theta_{s-1} + u_s,$$
with $k_s$ the $s$-th split of the PRNG key (mini-batches; unused by full-batch losses). The
parameters that are not trainable (physics, solver settings) never change.

* **Curriculum**: ``loss`` may be a sequence of ``(label, loss)`` stages (e.g. unroll lengths
  $m = 2, 4, 8$), split evenly over the validation periods.
* **Validation** after every ``validate_every`` steps and after the last one.
* **Checkpoints** (trainable parameters, optimiser state, key, step; written atomically by
  :func:`~diffphys.learn.save_checkpoint`) every ``checkpoint_every`` steps; a run started again
  with the same settings resumes from the checkpoint and gives bit-identical parameters. Resuming
  is refused (``ValueError`` naming the checkpoint's step) when the checkpoint is past the steps
  asked for, or was written by a run with another key or another optimiser (told apart by the
  update a fresh optimiser state gives for a fixed probe gradient: its kind and first-step
  settings, such as the learning rate); ``resume=False`` starts over.
* A non-finite loss or update raises :class:`NonFiniteLossError` naming the step; the last good
  checkpoint is kept (the bad update is never written).
* **Progress** is an argument: ``None`` (silent), ``True`` (lines on stderr; rewritten in place on a
  terminal, plain lines without carriage returns in a log file or a notebook) or ``fn(step, loss)``.

Reference: D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015 (the default
optimiser of the trainers); optax (DeepMind, https://github.com/google-deepmind/optax).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._misc import all_finite, check_int
from ._checkpoint import CHECKPOINT_NAME, _key_data, checkpoint_info, load_checkpoint, save_checkpoint

__all__ = ["NonFiniteLossError", "TrainingHistory", "fit"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite (NaN or inf) loss or parameter update; ``step`` names the optimiser step."""

    def __init__(self, message: str, step: int, last_checkpoint_step: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint_step = last_checkpoint_step


@dataclasses.dataclass
class TrainingHistory:
    """What a training run did.

    - ``loss``: the training loss of every optimiser step from ``start_step + 1`` (each evaluated
      before that step's update);
    - ``validation``: ``(step, loss)`` after every validation period and after the last step;
    - ``unroll``: the curriculum stage (e.g. the unroll length) of each validation period;
    - ``start_step``: > 0 when the run resumed from a checkpoint.
    """

    loss: list[float] = dataclasses.field(default_factory=list)
    validation: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    unroll: list[Any] = dataclasses.field(default_factory=list)
    start_step: int = 0

    @property
    def validation_steps(self) -> np.ndarray:
        return np.asarray([s for s, _ in self.validation], dtype=int)

    @property
    def validation_loss(self) -> np.ndarray:
        return np.asarray([v for _, v in self.validation], dtype=float)


class _Lines:
    """Progress lines on standard error: rewritten in place on a terminal, plain lines elsewhere."""

    def __init__(self, name: str):
        self.name = name
        self.open = False  # a terminal line is being rewritten

    def __call__(self, text: str, final: bool):
        stream = sys.stderr  # looked up at each call: capture (pytest, notebooks) replaces it
        line = f"{self.name}: {text}"
        if stream.isatty():
            print("\r" + line, end="\n" if final else "", file=stream, flush=True)
        else:
            print(line, file=stream, flush=True)


def _as_progress(progress, name: str):
    """``(lines, callback)`` from ``progress``: ``None``/``False``, ``True`` or ``fn(step, loss)``."""
    if progress is None or progress is False:
        return None, None
    if progress is True:
        return _Lines(name), None
    if callable(progress):
        return None, progress
    raise TypeError(f"{name}: progress must be None, True or a callable fn(step, loss), got {progress!r}")


def _run_identity(key, optimizer, params) -> dict:
    """What a checkpoint records of the run that wrote it: the starting key, and the optimiser's first
    update of a fixed probe gradient (per leaf: the sum and the sum of squares), which tells apart
    optimisers and their first-step settings such as the learning rate."""
    arrays = eqx.filter(params, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(arrays)
    probe = treedef.unflatten([0.5 + jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape) for x in leaves])
    try:
        updates, _ = optimizer.update(probe, optimizer.init(probe), probe)
        fingerprint = [float(f(u)) for u in jax.tree_util.tree_leaves(updates) for f in (jnp.sum, lambda u: jnp.sum(u * u))]
    except Exception:  # an optimiser that needs more than (updates, state, params): not compared
        fingerprint = None
    return {"key": _key_data(key).tolist(), "optimizer": fingerprint}


def _check_resumable(name: str, path: Path, steps: int, identity: dict) -> None:
    """Refuse to resume from a checkpoint past ``steps``, or written by another run (another key or optimiser)."""
    info = checkpoint_info(path)
    at, run = info["step"], info.get("run") or {}
    again = "pass resume=False to start over (its checkpoints replace this one), or use another checkpoint_dir"
    if at > steps:
        raise ValueError(
            f"{name}: the checkpoint {path} is at step {at}, past the {steps} steps asked for: resuming would return "
            f"it untrained further. Ask for steps >= {at} to continue it, or {again}"
        )
    if run.get("key") is not None and run["key"] != identity["key"]:
        raise ValueError(
            f"{name}: the checkpoint {path} (step {at}) was written by a run with another key (key data {run['key']}, "
            f"this run's {identity['key']}); give that key to resume it, or {again}"
        )
    saved, now = run.get("optimizer"), identity["optimizer"]
    if saved is not None and now is not None and (
            len(saved) != len(now) or not np.allclose(saved, now, rtol=1e-6, atol=0, equal_nan=True)):
        raise ValueError(
            f"{name}: the checkpoint {path} (step {at}) was written with another optimiser (its first update of a "
            f"probe gradient differs from this run's: another optimiser or learning rate); give that optimiser to "
            f"resume it, or {again}"
        )


@eqx.filter_jit
def _update(params, static, opt_state, data, key, loss_fn, optimizer):
    loss, grads = eqx.filter_value_and_grad(lambda p: loss_fn(eqx.combine(p, static), data, key))(params)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_inexact_array))
    new = eqx.apply_updates(params, updates)
    return new, opt_state, loss, jnp.isfinite(loss) & all_finite(new)


def fit(model, loss: Callable | Sequence[tuple[Any, Callable]], data, *, optimizer: optax.GradientTransformation,
        steps: int, key=None, trainable=eqx.is_inexact_array, validate: Callable | None = None,
        validate_every: int | None = None, checkpoint_dir=None, checkpoint_every: int | None = None,
        resume: bool = True, progress=None, name: str = "fit", stage_label: str = "stage"):
    r"""Minimise ``loss(model, data, key)`` over the trainable part of ``model`` with optax (see the module docstring).

    **Arguments:**

    - ``model``: any pytree (an equinox module, or a tuple of them and arrays).
    - ``loss``: ``loss(model, data, key) -> scalar``; or a curriculum ``[(label, loss), ...]`` whose
      stages split the validation periods evenly. Give an ``equinox.Module`` of static settings (or
      a top-level function) rather than a fresh closure, so that runs with the same settings reuse
      the compiled step.
    - ``data``: a pytree passed to the loss unchanged (arrays are traced, the rest is static).
    - ``optimizer``: an optax transformation; ``steps``: the number of optimiser steps.
    - ``key``: a ``jax.random`` key split once per step (default ``jax.random.key(0)``; full-batch
      losses ignore it).
    - ``trainable``: which leaves are trained: a filter function or a pytree of booleans, as for
      ``equinox.partition`` (default: every floating-point array).
    - ``validate``: ``validate(model) -> scalar``, run every ``validate_every`` steps (default: only
      after the last step) and after the last step.
    - ``checkpoint_dir``, ``checkpoint_every``, ``resume``: write a checkpoint every N steps into the
      folder, and (``resume=True``) continue from the checkpoint found there. A checkpoint past
      ``steps``, or written with another key or optimiser, is refused (``ValueError``);
      ``resume=False`` starts over and replaces it.
    - ``progress``: ``None``, ``True`` or ``fn(step, loss)`` (called after every step).
    - ``name``: the prefix of error messages and progress lines; ``stage_label``: how a curriculum
      stage is named in progress lines (``"m"`` for unroll lengths).

    **Returns:** ``(trained model, TrainingHistory)``.

    **Raises:** ``ValueError``/``TypeError`` for bad settings; :class:`NonFiniteLossError`.
    """
    steps = check_int(f"{name}: steps", steps)
    validate_every = steps if validate_every is None else check_int(f"{name}: validate_every", validate_every)
    if checkpoint_every is not None:
        checkpoint_every = check_int(f"{name}: checkpoint_every", checkpoint_every)
        if checkpoint_dir is None:
            raise ValueError(f"{name}: checkpoint_every={checkpoint_every} needs checkpoint_dir (a folder)")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"{name}: optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    lines, callback = _as_progress(progress, name)
    stages = list(loss) if isinstance(loss, (list, tuple)) else [(None, loss)]
    if not stages:
        raise ValueError(f"{name}: the curriculum is empty")
    key = jax.random.key(0) if key is None else key
    params, static = eqx.partition(model, trainable)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    history, step, last_saved = TrainingHistory(), 0, None
    identity = None if path is None else _run_identity(key, optimizer, params)
    if path is not None and resume and path.is_file():
        _check_resumable(name, path, steps, identity)
        params, opt_state, key, step = load_checkpoint(path, params, opt_state, key)
        history.start_step = last_saved = step
        if lines is not None:
            lines(f"resuming from the checkpoint at step {step} in {path.parent}", final=True)
    periods = -(-steps // validate_every)
    report_every = max(1, validate_every // 10)  # ~10 progress lines per validation period
    while step < steps:
        period = step // validate_every
        label, loss_fn = stages[min(period * len(stages) // periods, len(stages) - 1)]
        key, sub = jax.random.split(key)
        params, opt_state, value, ok = _update(params, static, opt_state, data, sub, loss_fn, optimizer)
        step += 1
        value = float(value)
        if not bool(ok):
            kept = (f"the last good checkpoint (step {last_saved}) in {path.parent} is kept" if last_saved
                    else "no checkpoint was written")
            raise NonFiniteLossError(
                f"{name}: the loss or the parameter update became non-finite at optimiser step {step} "
                f"(loss {value}); {kept}. Lower the learning rate, clip gradients (optax.clip_by_global_norm) "
                "or shorten the unroll", step, last_saved,
            )
        history.loss.append(value)
        if checkpoint_every is not None and step % checkpoint_every == 0:
            save_checkpoint(path, params, opt_state, key, step, run=identity)
            last_saved = step
        if callback is not None:
            callback(step, value)
        stage = "" if label is None else f"  {stage_label}={label}"
        text = f"step {step}/{steps}{stage}  loss {value:.3e}"
        if step % validate_every == 0 or step == steps:
            if label is not None:
                history.unroll.append(label)
            if validate is not None:
                val = float(validate(eqx.combine(params, static)))
                history.validation.append((step, val))
                text += f"  validation {val:.3e}" if math.isfinite(val) else f"  validation {val}"
            if lines is not None:
                lines(text, final=True)
        elif lines is not None and step % report_every == 0:
            lines(text, final=False)
    return eqx.combine(params, static), history
