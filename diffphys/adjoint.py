r"""How reverse-mode derivatives of an iterative computation are formed: one vocabulary everywhere.

A rollout of $n$ time steps, an unrolled solver of $K$ layers and a training unroll are all loops
$y_{k+1} = f(y_k, p_k)$. Their reverse-mode derivative needs the intermediate states; an adjoint
strategy says how it gets them:

* :class:`Direct` stores every intermediate (plain reverse mode): memory $O(n)$ states, the
  cheapest in time (a gradient costs about 2–3 forward passes).
* :class:`Checkpointed` stores a few states and recomputes the rest during the backward pass:
  with ``every=b``, the state at the start of each block of $b$ steps (memory $n/b + b$ states, one
  extra forward pass); with ``every=None``, Griewank's recursive binomial checkpointing
  (``checkpoints`` snapshots; memory $O(\log n)$ for $O(n \log n)$ recomputation).
* :class:`Implicit` differentiates the *solution* of an equation rather than the loop that found it
  (the implicit function theorem: one linear solve with the Jacobian of the optimality, root or
  fixed-point condition, whatever the number of iterations). It applies to converged solvers and
  to implicit time steps.

The same objects are passed to :func:`~diffphys.rollout` (``adjoint=``), to
:func:`~diffphys.solvers.iterate` and to the training loops.

References: A. Griewank, A. Walther, "Algorithm 799: Revolve", ACM TOMS 26 (2000) 19-45 (binomial
checkpointing); Q. Wang, P. Moin, G. Iaccarino, "Minimal repetition dynamic checkpointing
algorithm for unsteady adjoint calculation", SIAM J. Sci. Comput. 31 (2009) 2549-2567 (online
checkpointing, as used by diffrax's ``RecursiveCheckpointAdjoint``); M. Blondel et al., "Efficient
and modular implicit differentiation", NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import equinox.internal as eqxi
import jax
from jax import lax

from ._linear_solve import LinearSolver
from ._misc import check_int

__all__ = ["AbstractAdjoint", "Checkpointed", "Direct", "Implicit", "scan"]


class AbstractAdjoint(eqx.Module):
    """How reverse-mode derivatives of a loop are formed (see the module docstring)."""


class Direct(AbstractAdjoint):
    """Reverse mode through every iteration, storing all intermediates (fastest; memory grows with the length)."""


class Checkpointed(AbstractAdjoint):
    r"""Store some intermediates and recompute the others in the backward pass.

    **Arguments:**

    - ``every``: block length $b$: keep the state at the start of each block of $b$ iterations and
      recompute a block at a time (memory $\approx n/b + b$ states, minimal near $b = \sqrt n$).
      ``every=1`` checkpoints each iteration (each layer of an unrolled solver).
    - ``checkpoints``: with ``every=None`` (default), recursive binomial checkpointing with this
      many snapshots (``None``: about $\log_2 n$, the memory-optimal choice up to a constant).
    """

    every: int | None = None
    checkpoints: int | None = None

    def __check_init__(self):
        if self.every is not None:
            check_int("Checkpointed: every", self.every)
            if self.checkpoints is not None:
                raise ValueError("Checkpointed: give every (block checkpointing) or checkpoints (recursive), not both")
        if self.checkpoints is not None:
            check_int("Checkpointed: checkpoints", self.checkpoints)


class Implicit(AbstractAdjoint):
    r"""Derivatives of a converged solution by the implicit function theorem (one linear solve).

    **Arguments:** ``linear_solver``: the :class:`~diffphys.LinearSolver` of the derivative's solve
    with the Jacobian of the solution's condition (default: CG/GMRES to 1e-10 in float64).
    """

    linear_solver: LinearSolver = LinearSolver()

    def __check_init__(self):
        if not isinstance(self.linear_solver, LinearSolver):
            raise TypeError(f"Implicit: linear_solver must be a LinearSolver, got {type(self.linear_solver).__name__}")


LOOP_ADJOINTS = (Direct, Checkpointed)
"""The strategies that differentiate a loop itself (rather than its converged solution)."""


def check_loop_adjoint(where: str, adjoint) -> AbstractAdjoint:
    """``adjoint`` if it differentiates through a loop (:class:`Direct` or :class:`Checkpointed`), else an error."""
    if not isinstance(adjoint, LOOP_ADJOINTS):
        raise TypeError(
            f"{where}: adjoint must be Direct() or Checkpointed(...) for a fixed number of iterations, got "
            f"{type(adjoint).__name__}" + (" (Implicit differentiates converged solutions)" if isinstance(adjoint, Implicit) else "")
        )
    return adjoint


def snapshots(adjoint: Checkpointed, length: int) -> int:
    r"""The number of states recursive checkpointing of $n$ = ``length`` iterations keeps: ``adjoint.checkpoints``,
    or $\lceil \log_2 n \rceil$ when it is ``None`` (at least 1, at most $n$)."""
    checkpoints = adjoint.checkpoints if adjoint.checkpoints is not None else (length - 1).bit_length()
    return max(1, min(checkpoints, length))


def scan(f: Callable, init, xs, length: int, adjoint: AbstractAdjoint = Direct()):
    r"""``lax.scan(f, init, xs, length)`` whose reverse-mode derivative follows ``adjoint``.

    $(y_{k+1}, o_k) = f(y_k, x_k)$ for $k <$ ``length``; returns ``(y_n, stacked o)`` as ``lax.scan``.
    """
    check_loop_adjoint("scan", adjoint)
    if length == 0:
        return lax.scan(f, init, xs, length=0)
    if isinstance(adjoint, Direct):
        return lax.scan(f, init, xs, length=length)
    if adjoint.every is None:
        return eqxi.scan(f, init, xs, length=length, kind="checkpointed", checkpoints=snapshots(adjoint, length))
    every = adjoint.every
    if every == 1:
        return lax.scan(jax.checkpoint(f), init, xs, length=length)
    n_blocks, rest = divmod(length, every)
    head = jax.tree_util.tree_map(lambda x: x[: n_blocks * every].reshape(n_blocks, every, *x.shape[1:]), xs)

    @jax.checkpoint
    def block(y, x_block):
        return lax.scan(f, y, x_block, length=every)

    y, out = lax.scan(block, init, head, length=n_blocks)
    out = jax.tree_util.tree_map(lambda o: o.reshape(n_blocks * every, *o.shape[2:]), out)
    if rest:
        tail = jax.tree_util.tree_map(lambda x: x[n_blocks * every:], xs)
        y, out_tail = jax.checkpoint(lambda y, x: lax.scan(f, y, x, length=rest))(y, tail)
        out = jax.tree_util.tree_map(lambda a, b: jax.numpy.concatenate([a, b]), out, out_tail)
    return y, out
