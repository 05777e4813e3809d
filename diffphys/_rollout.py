"""Advance a stepper many steps with ``lax.scan``, saving chosen steps, with optional checkpointing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._types import PyTree

__all__ = ["rollout", "save_steps"]

_MAX_STEP_MESSAGES = 4096


def save_steps(n_steps: int, save_at: Sequence[int] | None = None, save_every: int | None = None) -> tuple[int, ...]:
    """The sorted step indices a rollout saves (validated); see :func:`rollout`."""
    if not (isinstance(n_steps, (int, np.integer)) and not isinstance(n_steps, bool)) or n_steps < 0:
        raise ValueError(f"rollout: n_steps must be a non-negative integer, got {n_steps!r}")
    if save_at is not None and save_every is not None:
        raise ValueError("rollout: give save_at or save_every, not both")
    if save_every is not None:
        if not isinstance(save_every, (int, np.integer)) or save_every < 1 or n_steps % save_every:
            raise ValueError(
                f"rollout: save_every must be a positive integer dividing n_steps={n_steps}, got {save_every!r}"
            )
        return tuple(range(0, n_steps + 1, int(save_every)))
    if save_at is None:
        return (int(n_steps),)
    steps = tuple(int(s) for s in np.asarray(save_at).reshape(-1))
    if not steps:
        raise ValueError("rollout: save_at is empty; give at least one step index in [0, n_steps]")
    bad = [s for s in steps if not 0 <= s <= n_steps]
    if bad:
        raise ValueError(f"rollout: save_at has steps {bad} outside [0, n_steps={n_steps}]")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"rollout: save_at must be strictly increasing, got {list(steps)}")
    return steps


def _scan_steps(step: Callable, state, n: int):
    """``n`` applications of ``step`` in one ``lax.scan`` (no per-step outputs kept)."""
    if n == 0:
        return state
    final, _ = lax.scan(lambda y, _: (step(y), None), state, None, length=n)
    return final


def _advance(step: Callable, state, n: int, checkpoint_every: int | None):
    """``n`` steps; with checkpointing, in rematerialised blocks of ``checkpoint_every`` steps."""
    if checkpoint_every is None:
        return _scan_steps(step, state, n)
    if n <= checkpoint_every:
        return jax.checkpoint(lambda y: _scan_steps(step, y, n))(state)
    n_blocks, rest = divmod(n, checkpoint_every)
    block = jax.checkpoint(lambda y: _scan_steps(step, y, checkpoint_every))
    state, _ = lax.scan(lambda y, _: (block(y), None), state, None, length=n_blocks)
    if rest:
        state = jax.checkpoint(lambda y: _scan_steps(step, y, rest))(state)
    return state


def rollout(
    stepper: Callable[[PyTree], PyTree],
    state: PyTree,
    n_steps: int,
    *,
    save_at: Sequence[int] | None = None,
    save_every: int | None = None,
    checkpoint_every: int | None = None,
    check_finite: bool = True,
) -> PyTree:
    r"""Advance ``state`` by ``n_steps`` applications of ``stepper`` and return the saved states.

    $$y_{k+1} = \text{stepper}(y_k),\qquad \text{returns } (y_{s})_{s \in \text{save steps}}.$$

    **Arguments:**

    - ``stepper``: any ``state -> state`` callable, usually a model such as :class:`~diffphys.Heat`
      (or a wrapper around one). Must not depend on the step index.
    - ``state``: the initial state ``y_0`` (an array, or a tuple of arrays for the wave equation).
    - ``n_steps``: number of steps (static).
    - ``save_at``: strictly increasing step indices in ``[0, n_steps]`` to return (``0`` is the
      initial state). Default: only ``n_steps``. Steps after the last saved one are not computed.
    - ``save_every``: alternatively, save steps ``0, k, 2k, ..., n_steps`` (``k`` must divide ``n_steps``).
    - ``checkpoint_every``: block length ``b`` for gradient checkpointing (``None``: off).
    - ``check_finite``: raise an error (``equinox.error_if``) naming the first saved step whose state
      is not finite, instead of returning NaN/inf silently.

    **Returns:** the saved states stacked along a new leading axis (for a tuple state, a tuple of
    stacked arrays), of length ``len(save steps)``.

    **Memory and time of reverse-mode gradients.** Without checkpointing, reverse mode keeps the
    residuals of every step: memory grows like ``n_steps`` states (x the scheme's stages) and
    the gradient costs about 2-3 forward passes. With ``checkpoint_every=b``, only the state at
    the start of each block of ``b`` steps (and of each save interval) is kept; during the backward
    pass each block is recomputed once from its start, so memory is about ``n_steps/b + b`` states
    (minimal near ``b = sqrt(n_steps)``: ~630 states for 10^5 steps instead of 10^5) at the price of
    one extra forward pass (gradient about 3-4 forward passes). Save intervals no longer than ``b``
    are recomputed as one block.
    """
    steps = save_steps(n_steps, save_at, save_every)
    if checkpoint_every is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
            raise ValueError(
                f"rollout: checkpoint_every must be a positive integer or None, got {checkpoint_every!r}"
            )
        checkpoint_every = int(checkpoint_every)
    return _rollout(stepper, state, steps, checkpoint_every, bool(check_finite))


@eqx.filter_jit
def _rollout(stepper, state, steps: tuple[int, ...], checkpoint_every: int | None, check_finite: bool):
    gaps = np.diff((0,) + steps)
    outputs = []
    y = state
    for gap, run in itertools.groupby(gaps):
        count = len(list(run))
        segment = lambda z, _, gap=int(gap): (lambda w: (w, w))(_advance(stepper, z, gap, checkpoint_every))
        y, saved = lax.scan(segment, y, None, length=count)
        outputs.append(saved)
    trajectory = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *outputs)
    if check_finite:
        trajectory = _error_if_not_finite(trajectory, steps)
    return trajectory


def _error_if_not_finite(trajectory, steps: tuple[int, ...]):
    """Raise at run time if a saved state is non-finite, naming the first such step."""
    finite = [jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jax.tree_util.tree_leaves(trajectory)]
    ok = jnp.all(jnp.stack(finite), axis=0)
    first_bad = jnp.argmin(ok)
    if len(steps) <= _MAX_STEP_MESSAGES:
        messages = [
            f"rollout: the state became non-finite (NaN or inf) by step {s}"
            + (f" (it was finite at step {p})" if p is not None else "")
            + "; reduce dt, check the parameters and the initial state, or pass check_finite=False"
            for s, p in zip(steps, (None,) + steps[:-1])
        ]
        return eqx.branched_error_if(trajectory, ~jnp.all(ok), first_bad, messages)
    return eqx.error_if(
        trajectory, ~jnp.all(ok),
        "rollout: a saved state is non-finite (NaN or inf); reduce dt, check the parameters and the "
        "initial state, or pass check_finite=False",
    )
