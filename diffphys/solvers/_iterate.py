r"""One driver for every iterative solver: converged (to a tolerance) or unrolled (K layers).

* :class:`~diffphys.solvers.Converged`: ``init``, then ``step`` in a ``lax.while_loop`` until the
  solver's ``terminate`` says done or ``max_steps`` is reached. The loop itself is never
  differentiated: with the :class:`~diffphys.adjoint.Implicit` adjoint the solution $x^*$ gets
  derivatives from its optimality condition $F(x^*, \theta) = 0$ (the solver's
  ``optimality_residual``; splitting methods state it on $x$ and their dual variables),
  $\bar\theta = -(\partial_\theta F)^\top(\partial_x F)^{-\top}\bar x$: one linear solve, memory
  independent of the iteration count.
* :class:`~diffphys.solvers.Unrolled`: exactly $K$ calls of ``step`` in a scan, layer $k$ with
  ``params[k]``; derivatives through the layers (:class:`~diffphys.adjoint.Direct` or
  :class:`~diffphys.adjoint.Checkpointed`). As $K$ grows and the iteration converges, the unrolled
  gradient tends to the implicit one (Gilbert 1992; Christianson 1994).

Modelled on optimistix's ``iterate``/adjoint split, with per-iteration learnable parameters added
(optimistix has no place for them). References: J. C. Gilbert, "Automatic differentiation and
iterative processes", Optim. Methods Softw. 1 (1992) 13-21; B. Christianson, "Reverse
accumulation and attractive fixed points", Optim. Methods Softw. 3 (1994) 311-326; V. Monga, Y.
Li, Y. C. Eldar, "Algorithm unrolling", IEEE Signal Process. Mag. 38 (2021) 18-44.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .. import adjoint as adjoints
from .._implicit import implicit_solution
from .._misc import stop_gradient
from .._solution import RESULTS, Solution, nonfinite_to_result, throw_if_failed
from ._base import AbstractIterativeSolver
from ._mode import AbstractMode, Converged, Unrolled
from ._problem import AbstractProblem
from ._progress import as_progress, register, report

__all__ = ["iterate", "stack_params"]


def stack_params(params, iterations: int):
    """One iteration's parameters repeated along a new leading axis of length ``iterations``."""
    return jax.tree_util.tree_map(lambda p: jnp.broadcast_to(p, (iterations, *jnp.shape(p))), params)


def iterate(
    solver: AbstractIterativeSolver,
    problem: AbstractProblem,
    x0=None,
    *,
    mode: AbstractMode = Converged(),
    params=None,
    adjoint: adjoints.AbstractAdjoint | None = None,
    progress=None,
    throw: bool = True,
) -> Solution:
    r"""Run ``solver`` on ``problem`` from ``x0``, converged or unrolled; see the module docstring.

    **Arguments:**

    - ``solver``: an :class:`AbstractIterativeSolver` (e.g. :class:`GaussNewton`, :class:`LBFGS`).
    - ``problem``: an :class:`AbstractProblem` (e.g. a 4D-Var problem, :class:`LeastSquares`).
    - ``x0``: the starting point (default ``problem.zero_control()``).
    - ``mode``: :class:`Converged` (default) or :class:`Unrolled`.
    - ``params``: the solver's per-iteration parameters: one set in converged mode, a pytree with
      leading axis $K$ in unrolled mode (layer $k$ reads ``params[k]``); default
      ``solver.default_params`` (repeated $K$ times when unrolled).
    - ``adjoint``: :class:`~diffphys.adjoint.Implicit` (default, converged mode only),
      :class:`~diffphys.adjoint.Direct` (default when unrolled) or
      :class:`~diffphys.adjoint.Checkpointed` (unrolled only).
    - ``progress``: ``None`` (silent), ``True`` (a line per iteration on stderr), a
      :class:`PrintProgress` / :class:`CallbackProgress`, or ``fn(iteration, records)``.
    - ``throw``: raise at run time when the result is not successful (default); ``False`` returns
      the last iterate with ``solution.result`` saying what happened.

    **Returns:** a :class:`~diffphys.solvers.Solution`.
    """
    if not isinstance(solver, AbstractIterativeSolver):
        raise TypeError(f"iterate: solver must be an AbstractIterativeSolver (e.g. GaussNewton()), got {type(solver).__name__}")
    if not isinstance(problem, AbstractProblem):
        raise TypeError(f"iterate: problem must be an AbstractProblem (e.g. StrongConstraint4DVar), got {type(problem).__name__}")
    if not isinstance(mode, AbstractMode):
        raise TypeError(f"iterate: mode must be Converged(...) or Unrolled(K), got {mode!r}")
    x0 = problem.zero_control() if x0 is None else x0
    solver = solver.for_mode(mode)
    solver.check_problem(problem, x0)
    unrolled = isinstance(mode, Unrolled)
    if adjoint is None:
        adjoint = adjoints.Direct() if unrolled else adjoints.Implicit()
    if unrolled:
        adjoints.check_loop_adjoint("iterate (unrolled mode)", adjoint)
        if not solver.unrollable:
            raise ValueError(f"iterate: {solver.not_unrollable_reason()}, so it cannot be unrolled as differentiable layers")
    elif not isinstance(adjoint, adjoints.Implicit):
        raise TypeError(
            f"iterate: a converged solve is differentiated by the implicit function theorem: adjoint must be "
            f"Implicit(...), got {type(adjoint).__name__}; to differentiate through the iterations use mode=Unrolled(K)"
        )
    if params is None:
        params = solver.default_params(x0)
        if unrolled:
            params = stack_params(params, mode.iterations)
    elif unrolled:
        lengths = {jnp.shape(p)[0] if jnp.ndim(p) else None for p in jax.tree_util.tree_leaves(params)}
        if lengths != {mode.iterations}:
            raise ValueError(
                f"iterate: in Unrolled({mode.iterations}) mode every parameter needs a leading axis of length "
                f"{mode.iterations} (one entry per layer); got leading sizes {sorted(lengths, key=str)}"
            )
    number = register(as_progress(progress))
    # The progress object stays on the host; the loop carries its number as data, so a new callback
    # (a fresh lambda per call) reuses the compiled solve.
    progress_number = None if number is None else jnp.asarray(number, jnp.int32)
    return _iterate(solver, problem, x0, mode, params, adjoint, progress_number, bool(throw))


@eqx.filter_jit
def _iterate(solver, problem, x0, mode, params, adjoint, progress, throw):
    if isinstance(mode, Unrolled):
        x, result, k, history, state = _unrolled(solver, problem, x0, mode, params, adjoint, progress)
    else:
        # The loop is not differentiated: derivatives come from the optimality condition below.
        result, k, history, state = _converged(
            solver, stop_gradient(problem), lax.stop_gradient(x0), mode, stop_gradient(params), progress
        )
        point = implicit_solution(
            _optimality_residual, solver.implicit_point(state, result), (solver, problem, params),
            linear_solver=adjoint.linear_solver, spd=solver.symmetric_optimality,
        )
        x = solver.point_value(point)
    result = nonfinite_to_result(x, result)
    result = RESULTS.where(problem.within_stability_limit(x), result, RESULTS.unstable_model)
    if throw:
        x = throw_if_failed(x, result)
    return Solution(value=x, result=result, stats={"num_steps": k, "history": history}, state=state)


def _optimality_residual(point, theta):
    """The solver's optimality condition, zero at a solution, as a function of (solver, problem, params)."""
    solver, problem, params = theta
    return solver.optimality_residual(problem, point, params)


def _converged(solver, problem, x0, mode: Converged, params, progress):
    state = solver.init(problem, x0, params)
    records = solver.records(state)
    history = {name: jnp.full((mode.max_steps + 1,), jnp.nan, jnp.result_type(float)) for name in records}
    if solver.deferred_init:  # the loop's first trip evaluates x0: it is iteration 0
        k, done, result = -1, jnp.asarray(False), RESULTS.successful
    else:
        k = 0
        history = {name: history[name].at[0].set(value) for name, value in records.items()}
        report(progress, 0, records)
        done, result = solver.terminate(problem, state, mode)

    def cond(carry):
        _, k, done, _, _ = carry
        return ~done & (k < mode.max_steps)

    def body(carry):
        state, k, _, _, history = carry
        state = solver.step(problem, state, params)
        k = k + 1
        records = solver.records(state)
        history = {name: history[name].at[k].set(value) for name, value in records.items()}
        report(progress, k, records)
        done, result = solver.terminate(problem, state, mode)
        return state, k, done, result, history

    carry = (state, jnp.asarray(k, jnp.int32), done, result, history)
    state, k, done, result, history = lax.while_loop(cond, body, carry)
    result = RESULTS.where(done, result, RESULTS.max_steps_reached)
    return result, k, history, state


def _unrolled(solver, problem, x0, mode: Unrolled, params, adjoint, progress):
    state = solver.init(problem, x0, jax.tree_util.tree_map(lambda p: p[0], params))
    records0 = solver.records(state)
    report(progress, 0, records0)

    def layer(carry, p):
        state, k = carry
        state = solver.step(problem, state, p)
        records = solver.records(state)
        report(progress, k + 1, records)
        return (state, k + 1), records

    (state, k), records = adjoints.scan(layer, (state, jnp.asarray(0, jnp.int32)), params, mode.iterations, adjoint)
    history = {name: jnp.concatenate([jnp.reshape(records0[name], (1,)).astype(records[name].dtype), records[name]])
               for name in records}
    return solver.value(state), RESULTS.successful, k, history, state
