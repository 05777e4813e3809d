r"""Cycled 4D-Var over sliding windows: each analysis is forecast into the next window's background.

Window $k$ covers $(t_k, t_k + L\Delta t]$ with $t_k = k S \Delta t$: $L$ = ``schedule.n_steps``
steps long, observed at the schedule's steps $s_j \in [1, L]$ (relative to $t_k$), and shifted by
$S$ steps from the previous one (``shift``; $S = L$: consecutive windows, $S < L$: overlapping
windows). Strong-constraint 4D-Var (:func:`~diffphys.assimilate.gauss_newton`) turns the
background $x^b_k$ into the analysis $x^a_k$ at $t_k$:

$$x^a_k = \arg\min_x \tfrac12\|x - x^b_k\|^2_{B^{-1}}
    + \tfrac{1}{2}\sum_j \|y_{k,j} - H_j M_{0\to s_j}(x)\|^2_{(\beta R)^{-1}},\qquad
  x^b_{k+1} = M_{0\to S}(x^a_k).$$

With overlapping windows every observation is assimilated in $L/S$ windows; multiple data
assimilation (MDA) counts it once in all by inflating $R$ by $\beta = L/S$ ($\beta = 1$ for
consecutive windows). The *filter* analysis $M_{0\to L}(x^a_k)$ is the estimate at the window's end
given every observation up to then; it is what sequential filters are compared on. The background
covariance $B$ is static (the same every window).

References: F. Rabier, P. Courtier, Q. J. R. Meteorol. Soc. 118 (1992) 649-672 (cycled 4D-Var);
M. Bocquet, P. Sakov, Q. J. R. Meteorol. Soc. 140 (2014) 1521-1535 (sliding windows, multiple
data assimilation, and the Lorenz-96 benchmarks of 4D-Var and the iterative ensemble Kalman smoother).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._rollout import check_finite_on_host, rollout
from .._validate import device_array, is_concrete
from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule
from ..observe._covariance import dense_square_root
from ._fourdvar import StrongConstraint4DVar
from .._solution import RESULT_NAMES, RESULTS
from ..solvers import Converged, GaussNewton
from ._gauss_newton import FOURDVAR_MODE, gauss_newton

__all__ = ["CycledAnalysis", "CycledTwin", "cycled_4dvar", "cycled_twin_experiment"]


def _window_shape(name: str, model, schedule, shift) -> tuple[int, int]:
    """Validate a window's schedule and shift; return ``(L, S)``."""
    if not isinstance(schedule, ObservationSchedule):
        raise TypeError(f"{name}: schedule must be an ObservationSchedule, got {type(schedule).__name__}")
    if not np.isclose(model.dt, schedule.dt, rtol=1e-12, atol=0.0):
        raise ValueError(f"{name}: the model's dt={model.dt:g} differs from the schedule's dt={schedule.dt:g}")
    if schedule.steps[0] == 0:
        raise ValueError(
            f"{name}: the window's schedule observes step 0, which belongs to the previous window (a window "
            "is (t_k, t_k + L dt]); start the schedule at step >= 1"
        )
    length = schedule.n_steps
    shift = length if shift is None else shift
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 1 <= shift <= length or length % shift:
        raise ValueError(
            f"{name}: shift must be an integer in [1, {length}] that divides the window length {length} "
            f"(steps), got {shift!r}"
        )
    return length, int(shift)


def _check_cycles(name: str, n_cycles) -> int:
    if isinstance(n_cycles, bool) or not isinstance(n_cycles, (int, np.integer)) or n_cycles < 1:
        raise ValueError(f"{name}: n_cycles must be an integer >= 1, got {n_cycles!r}")
    return int(n_cycles)


class CycledTwin(eqx.Module):
    """The data of a cycled twin experiment (see :func:`cycled_twin_experiment`), row $k$ = window $k$.

    - ``truth_start``, ``truth_end``: the true state at each window's start $t_k$ and end $t_k + L\\Delta t$.
    - ``observations``: noisy observations, shape ``(K, N)``, each row stacked as the schedule orders
      them (an observation shared by overlapping windows has the same noise in each);
      ``clean_observations``: the same without noise.
    """

    truth_start: Float[Array, "K *state"]
    truth_end: Float[Array, "K *state"]
    observations: Float[Array, "K N"]
    clean_observations: Float[Array, "K N"]


def cycled_twin_experiment(model, truth, schedule: ObservationSchedule, n_cycles: int, noise_sigma,
                           key: jax.Array, *, shift: int | None = None) -> CycledTwin:
    r"""Simulate a truth through ``n_cycles`` sliding windows and observe it with noise.

    $$x^t(t) = M_{0\to t}(x^t_0),\qquad y_{k,j} = H_j\,x^t(t_k + s_j\Delta t) + \sigma\,\xi_{t_k + s_j\Delta t},
      \quad \xi \sim \mathcal N(0, I),$$

    with one noise draw per observation time (``jax.random.fold_in(key, step)``), so windows that
    share a time share its observations.

    **Arguments:** ``model`` (the true stepper), ``truth`` (the true state at $t_0$, one array),
    ``schedule`` (one window's observations, steps relative to its start, the first >= 1),
    ``n_cycles`` (number of windows $K \ge 1$), ``noise_sigma`` (σ > 0: a scalar or one per
    observation of a window), ``key`` (a ``jax.random`` key), ``shift`` (steps between window
    starts; default the window length).

    **Returns:** a :class:`CycledTwin`.
    """
    name = "cycled_twin_experiment"
    length, shift = _window_shape(name, model, schedule, shift)
    n_cycles = _check_cycles(name, n_cycles)
    sigma = schedule.per_observation(noise_sigma, f"{name}: noise_sigma")
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"{name}: noise_sigma must be > 0 everywhere, got {float(np.min(sigma)):g}")
    sigma = device_array(sigma)
    truth = jnp.asarray(truth, dtype=jnp.result_type(float))
    model.check_state(truth)
    n_steps = (n_cycles - 1) * shift + length
    # Concrete inputs are checked on the host, which keeps the rollout's program free of host
    # callbacks (equinox's run-time errors) so JAX's persistent cache can store it.
    concrete = is_concrete((model, truth))
    states = rollout(model, truth, n_steps, save_at=range(n_steps + 1), check_finite=not concrete)
    if concrete:
        check_finite_on_host(states, range(n_steps + 1), f"{name}: the truth run")
    truth_start, truth_end, observations, clean = _observe_windows(schedule, states, key, sigma, shift, n_cycles)
    return CycledTwin(truth_start, truth_end, observations, clean)


@eqx.filter_jit
def _observe_windows(schedule, states, key, sigma, shift: int, n_cycles: int):
    """Every window's states, clean and noisy observations from the truth run: one program, no loop
    over windows on the host (one noise draw per observation time, ``fold_in(key, step)``)."""
    steps = np.asarray(schedule.steps)
    starts = np.arange(n_cycles) * shift
    clean = jax.vmap(schedule.observe)(states[starts[:, None] + steps])
    draws = {}
    for n in sorted(set(schedule.sizes)):  # one vmapped draw per observation count (threefry compiles slowly)
        slots = [j for j, m in enumerate(schedule.sizes) if m == n]
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, (starts[:, None] + steps[slots]).reshape(-1))
        z = jax.vmap(lambda k: jax.random.normal(k, (n,), clean.dtype))(keys).reshape(n_cycles, len(slots), n)
        draws.update({j: z[:, i] for i, j in enumerate(slots)})
    xi = jnp.concatenate([draws[j] for j in range(len(steps))], axis=1)
    return states[starts], states[starts + schedule.n_steps], clean + sigma * xi, clean


class CycledAnalysis(eqx.Module):
    """The outcome of :func:`cycled_4dvar`, one row per window $k = 0, \\dots, K-1$.

    - ``background``: $x^b_k$ and ``analysis``: $x^a_k$, at the window's start (the analysis is the
      smoother estimate there); ``filter_analysis``: $M_{0\\to L}(x^a_k)$ and ``forecast``:
      $M_{0\\to L}(x^b_k)$, at the window's end.
    - ``iterations``, ``converged``, ``cost_initial``, ``cost_final``: each window's Gauss–Newton record;
      ``results``: each window's :class:`~diffphys.RESULTS` name (``"successful"``,
      ``"max_steps_reached"``, ...).
    """

    background: Float[Array, "K *state"]
    analysis: Float[Array, "K *state"]
    filter_analysis: Float[Array, "K *state"]
    forecast: Float[Array, "K *state"]
    iterations: Int[Array, " K"]
    converged: Bool[Array, " K"]
    cost_initial: Float[Array, " K"]
    cost_final: Float[Array, " K"]
    results: tuple[str, ...] = eqx.field(static=True)

    def rmse(self, twin: CycledTwin, spin_up: int = 0) -> dict[str, float]:
        """Time-averaged RMSE against a twin's truth, over the windows after the first ``spin_up``.

        Returns ``{"analysis": …, "smoother": …, "forecast": …, "background": …}``: the filter
        analysis and the forecast against the truth at the windows' ends, the smoother analysis and
        the background at their starts; each the mean over windows of the RMSE over the state.
        """
        K = self.analysis.shape[0]
        if not isinstance(twin, CycledTwin) or twin.truth_start.shape != self.analysis.shape:
            got = twin.truth_start.shape if isinstance(twin, CycledTwin) else type(twin).__name__
            raise ValueError(f"CycledAnalysis.rmse: expected the CycledTwin of these {K} windows, got {got}")
        if isinstance(spin_up, bool) or not isinstance(spin_up, (int, np.integer)) or not 0 <= spin_up < K:
            raise ValueError(f"CycledAnalysis.rmse: spin_up must be an integer in [0, {K}), got {spin_up!r}")

        def average(estimate, reference):
            err = np.asarray(estimate)[spin_up:] - np.asarray(reference)[spin_up:]
            return float(np.mean(np.sqrt(np.mean(err.reshape(err.shape[0], -1) ** 2, axis=1))))

        return {"analysis": average(self.filter_analysis, twin.truth_end),
                "smoother": average(self.analysis, twin.truth_start),
                "forecast": average(self.forecast, twin.truth_end),
                "background": average(self.background, twin.truth_start)}


_ROW_KEYS = ("background", "analysis", "filter_analysis", "forecast", "iterations", "converged", "cost_initial",
             "cost_final", "result")


def _window(model, schedule, R, B, solver, mode, shift, background, observations):
    """One window: its Gauss–Newton solve, the forecasts of analysis and background; the next background."""
    problem = StrongConstraint4DVar(model, schedule, observations, R, B, background)
    solution = gauss_newton(problem, solver=solver, mode=mode, throw=False)
    x_a = problem.initial_state(solution.value)
    length = schedule.n_steps
    # The analysis and the background forecast in one batched run saving every step: one model loop
    # in the program (each call site of the model, and each run between saves, compiles again).
    pair = jax.tree.map(lambda a, b: jnp.stack([a, b]), x_a, background)
    paths = jax.vmap(lambda x: rollout(model, x, length, save_at=range(1, length + 1), check_finite=False))(pair)
    analysis_end, forecast, next_background = (jax.tree.map(lambda p: p[i, j], paths)
                                               for i, j in ((0, length - 1), (1, length - 1), (0, shift - 1)))
    k = solution.stats["num_steps"]
    costs = solution.stats["history"]["cost"]
    row = (background, x_a, analysis_end, forecast, jnp.asarray(k, jnp.int32), jnp.asarray(solution.converged, bool),
           costs[0], costs[k], jnp.asarray(solution.result._value, jnp.int32))
    return row, next_background


@eqx.filter_jit
def _cycle(model, schedule, R, B, solver, mode, shift, background, observations, start, stop, rows):
    """Windows ``start, ..., stop - 1`` one after another, each writing its row of ``rows``.

    The bounds are arrays, so one compiled program runs any stretch of windows: the host calls it
    once for all windows, or once per stretch between progress reports, and never once per window.
    """

    B = dense_square_root(B, background)  # one matrix-vector product per B^1/2 on small states

    def body(k, carry):
        x_b, rows = carry
        row, next_background = _window(model, schedule, R, B, solver, mode, shift, x_b, observations[k])
        return next_background, jax.tree.map(lambda buffer, value: buffer.at[k].set(value), rows, row)

    return jax.lax.fori_loop(start, stop, body, (background, rows))


def cycled_4dvar(
    model,
    schedule: ObservationSchedule,
    observations: Float[Array, "K N"],
    R: DiagonalR,
    B: AbstractCovariance,
    background: Float[Array, "*state"],
    solver: GaussNewton = GaussNewton(),
    *,
    mode: Converged = FOURDVAR_MODE,
    shift: int | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> CycledAnalysis:
    r"""Cycle strong-constraint 4D-Var over sliding windows (see the module docstring).

    **Arguments:**

    - ``model``: the stepper; ``schedule``: one window's observation schedule (steps relative to
      the window's start, the first >= 1; its last step is the window length $L$).
    - ``observations``: shape ``(K, N)``: the observations of each window (NaN where missing), e.g.
      :attr:`CycledTwin.observations`.
    - ``R``: the observation-error covariance (:class:`~diffphys.observe.DiagonalR`), as the
      observations' errors are; with overlapping windows it is inflated by $L/S$ (MDA).
    - ``B``: the static background-error covariance of the state.
    - ``background``: the first window's background state $x^b_0$.
    - ``solver``, ``mode``: each window's solve (:class:`~diffphys.solvers.GaussNewton`, and
      :class:`~diffphys.solvers.Converged`, default at most 20 iterations to a relative gradient of 1e-6).
    - ``shift``: $S$, steps between window starts, dividing $L$ (default $L$: consecutive windows).
    - ``progress``: ``progress(k, record)`` after window ``k`` with its record (background,
      analysis, filter_analysis, forecast as NumPy arrays, iterations, converged, costs, and
      ``result``: the window's :class:`~diffphys.RESULTS` name), e.g.
      to print progress.

    The windows run one after another (each background is the previous analysis's forecast) in one
    compiled loop: one call without ``progress``; with it, about 20 calls, ``progress`` being called
    for each window of a stretch when the stretch ends. A non-finite analysis raises
    ``FloatingPointError`` naming the first such window.

    **Returns:** a :class:`CycledAnalysis`.
    """
    name = "cycled_4dvar"
    length, shift = _window_shape(name, model, schedule, shift)
    y = jnp.asarray(observations, dtype=jnp.result_type(float))
    if y.ndim != 2 or y.shape[1] != schedule.size or y.shape[0] < 1:
        raise ValueError(
            f"{name}: observations must have shape (n_cycles, {schedule.size}) (one row per window, as the "
            f"schedule stacks them), got {y.shape}"
        )
    if not isinstance(R, DiagonalR):
        raise TypeError(f"{name}: R must be a DiagonalR, got {type(R).__name__}")
    R_window = DiagonalR(R.sigma * math.sqrt(length // shift) if not is_concrete(R.sigma)
                         else device_array(np.asarray(R.sigma) * math.sqrt(length // shift)))
    x_b = jnp.asarray(background, dtype=jnp.result_type(float))
    model.check_state(x_b)
    n_cycles = y.shape[0]
    state, cost = np.zeros((n_cycles, *x_b.shape), x_b.dtype), np.zeros(n_cycles, x_b.dtype)
    rows = (state, state, state, state, np.zeros(n_cycles, np.int32), np.zeros(n_cycles, bool), cost, cost,
            np.zeros(n_cycles, np.int32))
    # Without progress the windows run in one call; with it, in about 20 stretches, each reported
    # window by window when it ends.
    stretch = n_cycles if progress is None else max(1, -(-n_cycles // 20))
    results = {int(getattr(RESULTS, n)._value): n for n in RESULT_NAMES}
    for start in range(0, n_cycles, stretch):
        stop = min(n_cycles, start + stretch)
        x_b, rows = _cycle(model, schedule, R_window, B, solver, mode, shift, x_b, y, np.asarray(start, np.int32),
                           np.asarray(stop, np.int32), rows)
        done = {key: np.asarray(r)[start:stop] for key, r in zip(_ROW_KEYS, rows)}
        finite = np.isfinite(done["filter_analysis"].reshape(stop - start, -1)).all(axis=1)
        for k in range(start, stop):
            record = {key: v[k - start] for key, v in done.items()}
            record["result"] = results[int(record["result"])]
            if not finite[k - start]:
                raise FloatingPointError(
                    f"{name}: the analysis of window {k} is not finite (cost {record['cost_initial']:.3g} -> "
                    f"{record['cost_final']:.3g}); check that window's observations, B, R and the model's dt"
                )
            if progress is not None:
                progress(k, record)
    arrays = dict(zip(_ROW_KEYS[:-1], rows[:-1]))
    names = tuple(results[int(r)] for r in np.asarray(rows[-1]))
    return CycledAnalysis(**arrays, results=names)
