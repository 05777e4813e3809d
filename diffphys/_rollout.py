"""Advance a stepper many steps with ``lax.scan`` (or equinox's checkpointed while loop), saving chosen steps; the adjoint
strategy is passed in."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._types import PyTree
from .adjoint import AbstractAdjoint, Checkpointed, Direct, Implicit, snapshots
from .models import AbstractStepper

__all__ = ["check_finite_on_host", "rollout", "save_steps"]

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


def _check_rollout_adjoint(adjoint) -> AbstractAdjoint:
    if not isinstance(adjoint, (Direct, Checkpointed)):
        extra = (
            " (Implicit differentiates a converged solution, not a fixed number of steps)"
            if isinstance(adjoint, Implicit) else ""
        )
        raise TypeError(
            f"rollout: adjoint must be Direct(), Checkpointed(every=b) (block) or Checkpointed(checkpoints=c) "
            f"(recursive binomial, c=None for about log2(n_steps)), got {adjoint!r}{extra}"
        )
    return adjoint


def rollout(
    stepper: Callable[[PyTree], PyTree],
    state: PyTree,
    n_steps: int,
    *,
    save_at: Sequence[int] | None = None,
    save_every: int | None = None,
    adjoint: AbstractAdjoint = Direct(),
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
    - ``adjoint``: how reverse-mode derivatives are formed (:mod:`diffphys.adjoint`):
      :class:`~diffphys.adjoint.Direct` (default), ``Checkpointed(every=b)`` (block) or
      ``Checkpointed(checkpoints=c)`` (recursive binomial; ``c=None``: $\lceil \log_2 n \rceil$). The
      forward values are the same (to round-off) whichever is chosen.
    - ``check_finite``: raise an error (``equinox.error_if``) naming the first saved step whose state
      is not finite, instead of returning NaN/inf silently.

    **Returns:** the saved states stacked along a new leading axis (for a tuple state, a tuple of
    stacked arrays), of length ``len(save steps)``.

    **Memory and time of reverse-mode gradients** ($n$ steps, $S$ the memory of one state and its
    per-step residuals; a linear stepper keeps no states at all):

    - ``Direct()``: reverse mode keeps the residuals of every step, memory $\approx n S$, and the
      gradient costs about 2-3 forward passes. Forward mode (``jax.jvp``) works.
    - ``Checkpointed(every=b)``: only the state at the start of each block of $b$ steps (and of
      each save interval) is kept; in the backward pass each block is recomputed once from its
      start, so memory is $\approx (n/b + b) S$, minimal near $b = \sqrt n$ (~630 states for
      $10^5$ steps), for one extra forward pass. Save intervals no longer than $b$ are recomputed
      as one block. Forward mode works.
    - ``Checkpointed(checkpoints=c)``: recursive binomial checkpointing (Griewank's treeverse, in
      Stumm and Walther's online form, which ``equinox.internal``'s checkpointed while loop implements
      and diffrax's ``RecursiveCheckpointAdjoint`` uses): memory $\approx c\,S$ with
      $c = \lceil \log_2 n \rceil$ by default, for $O(n \log n)$ recomputed steps. The rollout is one
      such loop of $n$ steps that writes each saved state into a buffer. Reverse mode only: the loop
      has a custom VJP, so ``jax.jvp``/``jax.jacfwd`` raise; use ``Direct()`` or block checkpointing
      for forward mode.

    References: A. Griewank, A. Walther, "Algorithm 799: Revolve", ACM TOMS 26 (2000) 19-45;
    P. Stumm, A. Walther, "New algorithms for optimal online checkpointing", SIAM J. Sci. Comput.
    32 (2010) 836-854; P. Kidger, "On neural differential equations", PhD thesis (2021) (the checkpointed loop).
    """
    steps = save_steps(n_steps, save_at, save_every)
    adjoint = _check_rollout_adjoint(adjoint)
    if isinstance(adjoint, Checkpointed) and adjoint.every is None:
        return _recursive_rollout(stepper, state, steps, snapshots(adjoint, steps[-1]), bool(check_finite))
    every = adjoint.every if isinstance(adjoint, Checkpointed) else None
    return _rollout(stepper, state, steps, every, bool(check_finite))


def _scan_steps(step: Callable, state, n: int):
    """``n`` applications of ``step`` in one ``lax.scan`` (no per-step outputs kept)."""
    if n == 0:
        return state
    final, _ = lax.scan(lambda y, _: (step(y), None), state, None, length=n)
    return final


def _advance(step: Callable, state, n: int, every: int | None):
    """``n`` steps; with block checkpointing, in rematerialised blocks of ``every`` steps."""
    if every is None:
        return _scan_steps(step, state, n)
    if n <= every:
        return jax.checkpoint(lambda y: _scan_steps(step, y, n))(state)
    n_blocks, rest = divmod(n, every)
    block = jax.checkpoint(lambda y: _scan_steps(step, y, every))
    state, _ = lax.scan(lambda y, _: (block(y), None), state, None, length=n_blocks)
    if rest:
        state = jax.checkpoint(lambda y: _scan_steps(step, y, rest))(state)
    return state


_MAX_SCAN_RUNS = 2
"""Save intervals in more runs of equal length than this are stepped by one scan when it fits (below)."""
_MAX_KEPT_STATES = 2**18
"""That scan keeps every state: at most this many numbers (2 MB in float64, so they stay in cache)."""


def _scan_keeping_every_state(step: Callable, state, steps: tuple[int, ...]):
    """All ``steps[-1]`` steps in one ``lax.scan`` that outputs every state; the saved ones are picked after."""
    _, states = lax.scan(lambda y, _: (lambda w: (w, w))(step(y)), state, None, length=steps[-1])
    rows = np.asarray(steps)
    return jax.tree_util.tree_map(lambda y, ys: jnp.concatenate([y[None], ys], axis=0)[rows], state, states)


def _with_step_invariants(stepper):
    """A model with its step-independent quantities computed once, here, before the loop (see
    ``AbstractStepper._with_step_invariants``); any other stepper as it is."""
    return stepper._with_step_invariants() if isinstance(stepper, AbstractStepper) else stepper


@eqx.filter_jit
def _rollout(stepper, state, steps: tuple[int, ...], every: int | None, check_finite: bool):
    stepper = _with_step_invariants(stepper)
    gaps = np.diff((0,) + steps)
    runs = [(int(gap), len(list(run))) for gap, run in itertools.groupby(gaps)]
    size = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(state))
    if every is None and len(runs) > _MAX_SCAN_RUNS and steps[-1] * size <= _MAX_KEPT_STATES:
        # Each run of equal save intervals below is a scan of its own, a separately compiled copy of
        # the stepper, so irregular save steps would multiply the program by the number of runs. One
        # scan keeps every state instead; reverse mode keeps as many anyway (as its residuals).
        trajectory = _scan_keeping_every_state(stepper, state, steps)
    else:
        outputs = []
        y = state
        for gap, count in runs:
            if count == 1:  # no loop around a single save (step 0 is saved this way)
                y = _advance(stepper, y, gap, every)
                outputs.append(jax.tree_util.tree_map(lambda w: w[None], y))
                continue
            segment = lambda z, _, gap=gap: (lambda w: (w, w))(_advance(stepper, z, gap, every))
            y, saved = lax.scan(segment, y, None, length=count)
            outputs.append(saved)
        trajectory = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *outputs)
    if check_finite:
        trajectory = _error_if_not_finite(trajectory, steps)
    return trajectory


@eqx.filter_jit
def _recursive_rollout(stepper, state, steps: tuple[int, ...], checkpoints: int, check_finite: bool):
    """The rollout as one checkpointed while loop (see :func:`rollout`): ``steps[-1]`` iterations of the stepper
    that write each saved state into a buffer, with Stumm and Walther's online binomial checkpointing of
    ``checkpoints`` states in reverse mode (``equinox.internal.while_loop(kind="checkpointed")``)."""
    stepper = _with_step_invariants(stepper)
    n = steps[-1]
    leaves, structure = jax.tree_util.tree_flatten(state)
    first = 1 if steps[0] == 0 else 0  # step 0 is the initial state, written before the loop
    saved = tuple(jnp.zeros((len(steps),) + jnp.shape(x), jnp.result_type(x)).at[0].set(x) if first
                  else jnp.zeros((len(steps),) + jnp.shape(x), jnp.result_type(x)) for x in leaves)
    if n > 0:
        targets = jnp.asarray(steps[first:], dtype=jnp.int32)

        def advance(carry):
            k, j, y, saved = carry  # k steps taken; targets[j] is the next step to save
            y = stepper(y)
            k = k + 1
            hit = k == targets[j]
            saved = tuple(b.at[first + j].set(v, pred=hit) for b, v in zip(saved, jax.tree_util.tree_leaves(y)))
            return k, j + hit.astype(jnp.int32), y, saved

        start = (jnp.int32(0), jnp.int32(0), state, saved)
        *_, saved = eqxi.while_loop(lambda carry: carry[0] < n, advance, start, max_steps=n,
                                    buffers=lambda carry: carry[3], kind="checkpointed", checkpoints=checkpoints)
    trajectory = jax.tree_util.tree_unflatten(structure, saved)
    if check_finite:
        trajectory = _error_if_not_finite(trajectory, steps)
    return trajectory


def _non_finite_message(step: int, previous: int | None) -> str:
    return (f"rollout: the state became non-finite (NaN or inf) by step {step}"
            + (f" (it was finite at step {previous})" if previous is not None else "")
            + "; reduce dt, check the parameters and the initial state, or pass check_finite=False")


def _error_if_not_finite(trajectory, steps: tuple[int, ...]):
    """Raise at run time if a saved state is non-finite, naming the first such step."""
    finite = [jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jax.tree_util.tree_leaves(trajectory)]
    ok = jnp.all(jnp.stack(finite), axis=0)
    first_bad = jnp.argmin(ok)
    if len(steps) <= _MAX_STEP_MESSAGES:
        messages = [_non_finite_message(s, p) for s, p in zip(steps, (None,) + steps[:-1])]
        return eqx.branched_error_if(trajectory, ~jnp.all(ok), first_bad, messages)
    return eqx.error_if(
        trajectory, ~jnp.all(ok),
        "rollout: a saved state is non-finite (NaN or inf); reduce dt, check the parameters and the "
        "initial state, or pass check_finite=False",
    )


def check_finite_on_host(trajectory, steps: Sequence[int], what: str = "rollout") -> None:
    """The check of ``rollout(..., check_finite=True)`` done on concrete arrays, outside the compiled program.

    Raises :class:`equinox.EquinoxRuntimeError` (as the compiled check does) naming the first saved
    step whose state is not finite. Used where a program must stay free of host callbacks, which
    JAX's persistent compilation cache does not store.
    """
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(trajectory)]
    ok = np.all(np.stack([np.isfinite(x).reshape(x.shape[0], -1).all(axis=1) for x in leaves]), axis=0)
    if not ok.all():
        bad = int(np.argmin(ok))
        message = _non_finite_message(steps[bad], steps[bad - 1] if bad else None)
        raise eqx.EquinoxRuntimeError(message.replace("rollout:", f"{what}:", 1))
