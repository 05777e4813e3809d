"""A rollout as a diffrax solve, for recursive binomial checkpointing (``Checkpointed()`` in :func:`~diffphys.rollout`).

Each diffrax step is one application of the stepper (time counted in steps), and diffrax's
``RecursiveCheckpointAdjoint`` stores about ``c`` states (``c`` ~ log2 n by default) and recomputes
the rest: A. Griewank, A. Walther, "Algorithm 799: revolve", ACM TOMS 26 (2000) 19-45; J. Stumm,
A. Walther, "New algorithms for optimal online checkpointing", SIAM J. Sci. Comput. 32 (2010) 836-854. Its
own module so that ``import diffphys`` does not import diffrax.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from ._types import PyTree

__all__ = ["recursive_rollout"]


class _StepInterpolation(diffrax.AbstractLocalInterpolation):
    """Dense output of one stepper step: exactly ``y0`` at ``t0`` and ``y1`` at ``t1`` (the only
    times a rollout saves, since save points are step indices), linear in between."""

    t0: float
    t1: float
    y0: PyTree
    y1: PyTree

    def evaluate(self, t0, t1=None, left: bool = True):
        del left
        if t1 is not None:
            return jax.tree_util.tree_map(lambda a, b: b - a, self.evaluate(t0), self.evaluate(t1))
        theta = (t0 - self.t0) / (self.t1 - self.t0)
        return jax.tree_util.tree_map(
            lambda a, b: jnp.where(theta >= 1, b, jnp.where(theta <= 0, a, a + theta * (b - a))), self.y0, self.y1
        )


class _StepperSolver(diffrax.AbstractSolver):
    """A diffrax solver whose one step is one application of the stepper passed as ``args``.

    Time is measured in steps (``dt0=1``); the stepper ignores it. The term is only used by
    :meth:`func` (the step's increment per unit step, diffrax's initial-step heuristics).
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = _StepInterpolation

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del terms, t0, t1, solver_state, made_jump
        y1 = args(y0)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def _increment(t, y, stepper):
    del t
    return jax.tree_util.tree_map(lambda a, b: a - b, stepper(y), y)


def recursive_rollout(stepper, state, steps: tuple[int, ...], checkpoints: int | None):
    """The states at ``steps`` (sorted step indices) of ``stepper`` run from ``state``, as a diffrax solve
    whose reverse mode is ``RecursiveCheckpointAdjoint(checkpoints)``."""
    n = steps[-1]
    if n == 0:
        trajectory = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], state)
    else:
        checkpoints = None if checkpoints is None else min(checkpoints, n)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_increment), _StepperSolver(), t0=0, t1=n, dt0=1, y0=state, args=stepper,
            saveat=diffrax.SaveAt(ts=jnp.asarray(steps, dtype=float)),
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=n,
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints),
        )
        trajectory = sol.ys
    return trajectory
