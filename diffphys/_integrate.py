r"""Adaptive method of lines: integrate a model's right-hand side with diffrax's error-controlled solvers.

The semi-discrete system $\dot y = f(y)$ of a model (its :meth:`~diffphys.AbstractStepper.rhs`) is
integrated from $t_0$ to $t_1$ with an embedded Runge–Kutta pair whose step size a PI controller
adapts so that the local error estimate $e$ satisfies $\|e / (\text{atol} + \text{rtol}\,|y|)\|_\infty
\le 1$: no fixed ``dt``, no stability limit to respect by hand, and stiff problems (diffusion on a fine
grid) use an implicit (ESDIRK) pair whose step is not limited by stability.

References: E. Hairer, S. P. Nørsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer (1993) (Dormand–Prince, step-size control); E. Hairer, G. Wanner, *Solving Ordinary
Differential Equations II* (1996) (stiff problems); Ch. Tsitouras, "Runge–Kutta pairs of order 5(4)
satisfying only the first column simplifying assumption", Comput. Math. Appl. 62 (2011) 770-775;
A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit first stage", BIT 44
(2004) 489-502; P. Kidger, "On neural differential equations", PhD thesis (2021) (diffrax).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._misc import all_finite, check_int
from ._types import PyTree
from .adjoint import AbstractAdjoint, Checkpointed, Direct
from .models import AbstractStepper

if TYPE_CHECKING:
    import diffrax

__all__ = ["SOLVERS", "integrate"]

SOLVERS: dict[str, tuple[str, str]] = {
    "tsit5": ("Tsit5", "explicit 5(4), Tsitouras (the default for non-stiff problems)"),
    "dopri5": ("Dopri5", "explicit 5(4), Dormand–Prince"),
    "dopri8": ("Dopri8", "explicit 8(7), Dormand–Prince (tight tolerances)"),
    "bosh3": ("Bosh3", "explicit 3(2), Bogacki–Shampine (loose tolerances)"),
    "kvaerno3": ("Kvaerno3", "implicit ESDIRK 3(2), L-stable (stiff: diffusion)"),
    "kvaerno5": ("Kvaerno5", "implicit ESDIRK 5(4), L-stable (stiff, tight tolerances)"),
}
"""The integrators :func:`integrate` accepts, by name: (diffrax class name, description)."""


def _diffrax():
    """diffrax, imported on first use: it (with optimistix) is a third of ``import diffphys``'s time and most runs
    never integrate adaptively."""
    import diffrax

    return diffrax

_BUCKETS = 100
"""The time reached at a failure is reported to within 1/_BUCKETS of the interval (the message is static)."""


def integrate(
    model: AbstractStepper,
    state: PyTree,
    t1: float,
    *,
    t0: float = 0.0,
    save_at: Sequence[float] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    solver: str = "tsit5",
    adjoint: AbstractAdjoint = Checkpointed(),
    max_steps: int = 100_000,
    dt0: float | None = None,
) -> PyTree:
    r"""Integrate $\dot y = f(y)$ (the model's right-hand side) from ``t0`` to ``t1`` with adaptive steps.

    $$y(t) = y(t_0) + \int_{t_0}^{t} f(y(s))\,ds,\qquad \text{returns } (y(s))_{s \in \text{save\_at}}.$$

    The model's ``dt`` and ``scheme`` are not used: an embedded Runge–Kutta pair of ``solver`` picks
    each step so that the local error stays below ``atol + rtol |y|`` (diffrax's PI controller).

    **Arguments:**

    - ``model``: an :class:`~diffphys.AbstractStepper` (its :meth:`rhs`; e.g. :class:`~diffphys.Heat`).
    - ``state``: $y(t_0)$ (an array, or a tuple of arrays for the wave equation).
    - ``t1``: the final time (> ``t0``); ``t0``: the initial time (default 0).
    - ``save_at``: strictly increasing times in ``[t0, t1]`` to return (default: ``t1`` only).
      Steps are made to end on these times (diffrax's ``step_ts``), so the saved values carry the
      solver's full accuracy rather than that of its dense output (cubic Hermite for ``kvaerno*``).
    - ``rtol``, ``atol``: relative and absolute local error tolerances (> 0).
    - ``solver``: a key of :data:`SOLVERS`: ``"tsit5"`` (default), ``"dopri5"``, ``"dopri8"``,
      ``"bosh3"`` (explicit: their step is limited by stability on stiff problems, e.g. diffusion
      with many cells, where they exhaust ``max_steps``), ``"kvaerno3"``, ``"kvaerno5"``
      (implicit, L-stable: stiff problems; each stage solves a nonlinear system with a dense
      Jacobian, so they suit grids of up to a few thousand unknowns).
    - ``adjoint``: how reverse-mode derivatives are formed (:mod:`diffphys.adjoint`), mapped to
      diffrax:

      * ``Checkpointed()`` / ``Checkpointed(checkpoints=c)`` (default) ->
        ``diffrax.RecursiveCheckpointAdjoint(checkpoints=c)``: discretise-then-optimise with online
        binomial checkpointing, memory $O(c)$ states ($c$ = None: diffrax's default, the smallest
        $c$ with $(c+1)(c+2)/2 >$ ``max_steps``, about $\sqrt{2\,\texttt{max\_steps}}$: 446 at the default
        budget, up to which online checkpointing recomputes as little as offline binomial checkpointing
        (Stumm, Walther, SIAM J. Sci. Comput. 32 (2010) 836-854); the step count is not known in
        advance, and $\lceil\log_2 \texttt{max\_steps}\rceil$ = 17 made a 650-step gradient 1.7x
        slower). Reverse mode only (``jax.jvp`` raises).
      * ``Direct()`` -> ``diffrax.DirectAdjoint()``: forward *and* reverse mode (``jax.jvp``,
        ``jax.jacfwd``, Gauss–Newton's Jacobian-vector products), through nested bounded loops
        whose cost grows with ``max_steps``; use it when forward mode is needed.
      * ``Checkpointed(every=b)`` (blocks of a known number of steps) and ``Implicit`` (converged
        solutions) have no meaning for an adaptive time loop and raise ``TypeError``.
    - ``max_steps``: the step budget (accepted and rejected steps). Exhausting it raises an error
      naming the time reached.
    - ``dt0``: the first step (default: diffrax's estimate from $f(y_0)$).

    **Returns:** the saved states stacked along a new leading axis (for a tuple state, a tuple of
    stacked arrays), of length ``len(save_at)`` (1 by default).

    **Raises:** ``TypeError``/``ValueError`` for bad arguments; at run time (``equinox`` error) when
    the step budget is exhausted or the state or its right-hand side becomes non-finite, with the
    interval of time reached and what to change.
    """
    name = "integrate"
    if not isinstance(model, AbstractStepper):
        raise TypeError(f"{name}: model must be a diffphys model (an AbstractStepper with rhs), got {type(model).__name__}")
    model.check_state(state)
    if solver not in SOLVERS:
        raise ValueError(f"{name}: unknown solver {solver!r}; valid are {list(SOLVERS)}")
    t0, t1 = _check_time(name, "t0", t0), _check_time(name, "t1", t1)
    if not t1 > t0:
        raise ValueError(f"{name}: t1={t1!r} must be greater than t0={t0!r}")
    times = _save_times(name, save_at, t0, t1)
    for label, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"{name}: {label} must be a finite number > 0, got {tol!r}")
    max_steps = check_int(f"{name}: max_steps", max_steps)
    if dt0 is not None:
        dt0 = _check_time(name, "dt0", dt0)
        if not dt0 > 0:
            raise ValueError(f"{name}: dt0 must be > 0 (or None for an automatic first step), got {dt0!r}")
    diffrax_adjoint = _diffrax_adjoint(name, adjoint)
    return _integrate(model, state, t0, t1, times, float(rtol), float(atol), solver, diffrax_adjoint, max_steps, dt0)


def _check_time(name: str, label: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ValueError(f"{name}: {label} must be a finite number, got {value!r}")
    return float(value)


def _save_times(name: str, save_at, t0: float, t1: float) -> tuple[float, ...]:
    if save_at is None:
        return (t1,)
    times = tuple(float(s) for s in np.asarray(save_at, dtype=float).reshape(-1))
    if not times:
        raise ValueError(f"{name}: save_at is empty; give at least one time in [t0, t1]")
    bad = [s for s in times if not t0 <= s <= t1]
    if bad:
        raise ValueError(f"{name}: save_at has times {bad} outside [t0={t0:g}, t1={t1:g}]")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"{name}: save_at must be strictly increasing, got {list(times)}")
    return times


def _diffrax_adjoint(name: str, adjoint) -> diffrax.AbstractAdjoint:
    """The diffrax adjoint for a strategy of :mod:`diffphys.adjoint` (see :func:`integrate`)."""
    diffrax = _diffrax()
    if isinstance(adjoint, Direct):
        return diffrax.DirectAdjoint()
    if isinstance(adjoint, Checkpointed) and adjoint.every is None:
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=adjoint.checkpoints)
    raise TypeError(
        f"{name}: adjoint must be Checkpointed() / Checkpointed(checkpoints=c) (recursive, reverse mode) or "
        f"Direct() (forward and reverse mode), got {adjoint!r}; an adaptive solve has no fixed number of steps "
        "for block checkpointing (every=) and no converged solution for Implicit"
    )


def _vector_field(t, y, model):
    return model.vector_field(t, y, None)


@eqx.filter_jit
def _integrate(model, state, t0, t1, times, rtol, atol, solver, adjoint, max_steps, dt0):
    diffrax = _diffrax()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_vector_field), getattr(diffrax, SOLVERS[solver][0])(), t0=t0, t1=t1, dt0=dt0, y0=state,
        args=model,
        saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.asarray(times)), diffrax.SubSaveAt(t1=True)]),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, step_ts=jnp.asarray(times)),
        max_steps=max_steps,
        adjoint=adjoint, throw=False,
    )
    saved, (t_reached, y_reached) = sol.ys[0], (sol.ts[1][0], jax.tree_util.tree_map(lambda y: y[0], sol.ys[1]))
    failed = sol.result != diffrax.RESULTS.successful
    finite = all_finite(y_reached) & all_finite(model.rhs(y_reached))
    bucket = jnp.clip(jnp.floor((t_reached - t0) / (t1 - t0) * _BUCKETS), 0, _BUCKETS - 1).astype(int)
    index = jnp.where(finite, 0, _BUCKETS) + bucket
    return eqx.branched_error_if(saved, failed, index, _failure_messages(t0, t1, max_steps, solver))


def _failure_messages(t0: float, t1: float, max_steps: int, solver: str) -> list[str]:
    edges = [t0 + (t1 - t0) * i / _BUCKETS for i in range(_BUCKETS + 1)]
    where = [f"at t in [{a:.6g}, {b:.6g}] of [t0={t0:g}, t1={t1:g}]" for a, b in zip(edges, edges[1:])]
    stiff = ("; if the problem is stiff (diffusion on a fine grid), use an implicit solver such as "
             "solver='kvaerno5'" if not solver.startswith("kvaerno") else "")
    budget = [
        f"integrate: the step budget max_steps={max_steps} ran out {w}; raise max_steps, loosen rtol/atol{stiff}"
        for w in where
    ]
    non_finite = [
        f"integrate: the state or its right-hand side became non-finite (NaN or inf) {w}; check the initial state "
        "and the parameters (e.g. a negative diffusivity makes the problem ill-posed)"
        for w in where
    ]
    return budget + non_finite
