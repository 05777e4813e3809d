"""One assimilation window: build the 4D-Var problem, solve it with the case's solver, and what it writes."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np

from .. import io
from .._rollout import check_finite_on_host, rollout
from .._validate import device_array
from ..assimilate import posterior
from ..solvers import Composite, Converged, Solution, iterate
from .build import Problem, build_problem, case_key
from .load import Case
from .metrics import prior_metrics
from .registry import SOLVER_METHODS
from .schema import CaseError

__all__ = ["SINGLE_OUTPUTS", "SingleWindowRun"]

SINGLE_OUTPUTS = {
    "analysis.nc": "truth (twin experiments), background and analysis trajectories (dims time, x[, y]); for a "
                   "parameter case the three parameter fields; the posterior standard deviation of the estimated "
                   "field (analysis_std, or PARAMETER_analysis_std); group 'observations': the data (time, sensor), "
                   "their σ and the truth, background and analysis equivalents",
    "summary.json": "case, rmse_background, rmse_analysis, cost_initial, cost_final, iterations, converged, result, "
                    "wall_time_s, ...; parameter cases: true and estimated parameter and their errors; a non-Gaussian "
                    "prior: its settings and metrics (relative error; support precision/recall for l1/elastic_net; "
                    "edge location error for 1D tv)",
    "analysis.png": "analysis vs truth vs background with the sensor positions and the analysis's ±2σ band "
                    "(2D: a σ panel); fit to the observations",
    "cost.png": "the 4D-Var cost per iteration (log scale)",
}


def _rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a)))))


def _relative(rmse: float | None, truth) -> float | None:
    """``rmse`` relative to the truth's RMS; ``None`` (JSON null) without a truth or for a truth that is zero."""
    scale = None if truth is None else _rms(truth)
    return None if not scale else rmse / scale


def _first_field(state):
    return state[0] if isinstance(state, tuple) else state


def _stats(field) -> dict:
    f = np.asarray(field)
    return {"mean": float(f.mean()), "min": float(f.min()), "max": float(f.max())}


def _solve(fourdvar, prior, solver: dict, progress) -> Solution:
    """Minimise the case's 4D-Var cost (plus its prior, if not Gaussian) with its ``[solver]`` settings."""
    mode = Converged(rtol=solver["gtol"], max_steps=solver["max_iterations"])
    problem = fourdvar if prior is None else Composite(fourdvar, prior)
    return iterate(SOLVER_METHODS[solver["method"]](solver), problem, mode=mode, progress=progress, throw=False)


@eqx.filter_jit
def _window_outputs(fourdvar, v, truth, n_steps: int, steps: tuple[int, ...], estimating: str | None):
    """What a window's outputs need, as one compiled program: the analysis control; the truth (if
    known), background and analysis trajectories over ``n_steps`` at ``steps`` (the observed field of a tuple state);
    the background's and analysis's observation equivalents.

    Each run is one rollout, saved at the snapshot and the observation steps together (each rollout
    in the program is compiled on its own, so a second one per run would double its compile time).
    """
    zero = fourdvar.zero_control()
    if estimating is None:
        analysis_control = _first_field(fourdvar.initial_state(v))
    else:
        analysis_control = getattr(fourdvar.model_for(v), estimating)
    observed = fourdvar.schedule.steps
    saved = tuple(sorted(set(steps) | set(observed)))
    at_snapshots, at_observations = np.searchsorted(saved, steps), np.searchsorted(saved, observed)
    pick = lambda trajectory, rows: jax.tree_util.tree_map(lambda a: a[rows], trajectory)
    states, equivalents = {}, {}
    # Non-finite states are checked on the host (see ``solve``): equinox's run-time errors are host
    # callbacks, and a program with host callbacks is not written to JAX's persistent cache.
    if truth is not None:
        states["truth"] = _first_field(rollout(*truth, n_steps, save_at=steps, check_finite=False))
    for name, control in (("background", zero), ("analysis", v)):
        model, initial = fourdvar.control_map.apply(fourdvar.model, fourdvar.control(control))
        trajectory = rollout(model, initial, max(n_steps, saved[-1]), save_at=saved, check_finite=False)
        states[name] = _first_field(pick(trajectory, at_snapshots))
        equivalents[name] = fourdvar.schedule.observe(pick(trajectory, at_observations))
    return analysis_control, states, equivalents


def _uncertainty(fourdvar, v, rank: int, seed: int):
    """The posterior standard deviation of the estimated field and how it was computed (:func:`posterior`).

    Exact (one adjoint or tangent-linear run per reading or control, whichever are fewer) when that
    takes no more model runs than the randomized rank-``rank`` approximation (4 (rank + 10) runs).
    """
    controls = int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(v)))
    exact = min(fourdvar.n_observations, controls) <= 4 * (rank + 10)
    post = posterior(fourdvar, v) if exact else posterior(fourdvar, v, rank=rank, key=case_key(seed))
    method = {"method": "exact" if exact else "randomized", "rank": int(post.eigenvalues.size),
              "readings": fourdvar.n_observations, "controls": controls}
    return np.asarray(post.std()), method


def _measure(history) -> tuple[str, object]:
    """The solver's convergence measure: the gradient norm (smooth methods) or the fixed-point residual (proximal)."""
    for name in ("gradient_norm", "optimality", "primal_residual"):
        if name in history:
            return name, history[name]
    raise KeyError(f"no convergence measure among the solver's records {sorted(history)}")


def _refuse_nonfinite(costs: np.ndarray, solver: dict) -> None:
    """A solve that ended with a NaN/inf cost (or gradient) has no analysis to report: say where it broke and
    which settings to look at, instead of writing outputs full of NaN/inf with exit status 0."""
    bad = np.flatnonzero(~np.isfinite(costs))
    if bad.size and bad[0] == 0:
        where = f"at the first guess (cost {costs[0]})"
    elif bad.size:
        where = f"at iteration {bad[0]} (cost {costs[bad[0] - 1]:.6g} at iteration {bad[0] - 1})"
    else:
        where = "in its gradient or step, with a finite cost"
    hint = (f"lower [solver] learning_rate (now {solver['learning_rate']:g}); " if solver["method"] == "adam" else "")
    raise CaseError(
        f"the solver ({solver['method']}) stopped because the 4D-Var cost became non-finite (NaN or inf) {where}, so "
        f"there is no analysis to report; {hint}check that [observations] sigma is not tiny for the readings' scale, "
        "that the fields and first guess are of sensible size, and [model] dt"
    )


class SingleWindowRun:
    """A case without ``[cycling]``: one 4D-Var solve over the window (see :data:`SINGLE_OUTPUTS`)."""

    outputs = SINGLE_OUTPUTS

    def __init__(self, case: Case, say):
        self.case, self.say = case, say
        self.problem = build_problem(case)

    def describe(self) -> str:
        problem, config = self.problem, self.case.config
        fourdvar, estimating = problem.fourdvar, self._estimating
        prior = config["prior"]["kind"]
        return (f"  {config['model']['kind']} on {problem.grid.shape} cells, dt={fourdvar.model.dt:.4g}, "
                f"{problem.n_steps} steps; {fourdvar.n_observations} observations at {len(problem.schedule.times)} "
                f"times; control: {estimating or 'initial state'}; prior: {prior}"
                + "".join(f"\n  note: {note}" for note in problem.notes))

    @property
    def _estimating(self):
        control = self.case.config["control"]
        return control["parameter"] if control["kind"] == "parameter" else None

    def solve(self) -> None:
        """Solve the 4D-Var problem and derive everything the outputs need."""
        problem, config, say, estimating = self.problem, self.case.config, self.say, self._estimating
        fourdvar = problem.fourdvar
        solver = config["solver"]
        # The iteration lines come from the solution's history after the solve, not from a callback
        # inside it: JAX's persistent cache does not store a program with host callbacks.
        solution = _solve(fourdvar, problem.prior, solver, progress=None)
        history, v, iterations = solution.history(), solution.value, solution.num_steps
        costs = history["cost"]
        self.measure, measures = _measure(history)
        label = "|gradient|" if self.measure == "gradient_norm" else "residual"
        every = max(1, solver["max_iterations"] // 10)
        for i in sorted(set(range(0, iterations + 1, every)) | {iterations}):
            say(f"  iteration {i:4d}   cost {costs[i]:.6e}   {label} {measures[i]:.3e}")
        if solution.outcome == "nonfinite":
            _refuse_nonfinite(np.asarray(costs), solver)
        # Trajectories over the window at a few snapshots (the observed field of a tuple state).
        steps = tuple(int(s) for s in np.unique(np.rint(np.linspace(0, problem.n_steps, config["output"]["snapshots"]))))
        truth = None if problem.truth_model is None else (problem.truth_model, problem.truth_state)
        analysis_control, states, equivalents = jax.tree_util.tree_map(
            np.asarray, _window_outputs(fourdvar, v, truth, problem.n_steps, steps, estimating)
        )
        if estimating is not None:  # the solve traces the parameter; check the final one, concrete, before reporting it
            try:  # (an estimate past the scheme's stability limit at dt, RESULTS.unstable_model, fails here too)
                fourdvar.control_map.with_value(fourdvar.model, device_array(analysis_control))
            except ValueError as error:
                raise CaseError(f"[control] parameter {estimating}: the analysis is not a valid model, so it is not "
                                f"reported: {error}") from None
        for name, field in states.items():
            check_finite_on_host(field, steps, f"the {name} run")
        analysis_control = analysis_control.reshape(problem.grid.shape)
        if problem.clean_observations is not None:
            equivalents = {"truth": problem.clean_observations, **equivalents}
        self.solution, self.costs, self.measures = solution, costs, measures
        self.analysis_control = analysis_control
        self.states = states
        self.times = np.asarray(steps) * fourdvar.model.dt
        self.equivalents = equivalents
        self.analysis_std, self.posterior_method = None, None
        if config["output"]["uncertainty"] and problem.prior is None:
            say("  posterior standard deviation from the Gauss–Newton Hessian at the analysis ...")
            std, self.posterior_method = _uncertainty(fourdvar, v, config["output"]["uncertainty_rank"], config["seed"])
            self.analysis_std = std.reshape(problem.grid.shape)

    def summary(self) -> dict:
        problem, config, estimating = self.problem, self.case.config, self._estimating
        truth_control, background_control = problem.truth_control, problem.background_control
        rmse_b = None if truth_control is None else _rms(background_control - truth_control)
        rmse_a = None if truth_control is None else _rms(self.analysis_control - truth_control)
        present = np.isfinite(problem.observations)
        innovation = {k: _rms((problem.observations - self.equivalents[k])[present]) for k in ("background", "analysis")}
        costs, measures, solution = self.costs, self.measures, self.solution
        summary = {
            "grid": list(problem.grid.shape),
            "dt": problem.fourdvar.model.dt,
            "n_steps": problem.n_steps,
            "window": config["window"]["duration"],
            "control": estimating or "initial_state",
            "n_observations": int(present.sum()),
            "n_observation_times": len(problem.schedule.times),
            "rmse_background": rmse_b,
            "rmse_analysis": rmse_a,
            "cost_initial": float(costs[0]),
            "cost_final": float(costs[-1]),
            f"{self.measure}_initial": float(measures[0]),
            f"{self.measure}_final": float(measures[-1]),
            "iterations": solution.num_steps,
            "converged": solution.outcome == "successful",
            "result": solution.outcome,
            "solver": config["solver"]["method"],
            "innovation_rms_background": innovation["background"],
            "innovation_rms_analysis": innovation["analysis"],
        }
        if self.analysis_std is not None:
            summary["analysis_std"] = _stats(self.analysis_std)
            summary["posterior"] = self.posterior_method
        prior = config["prior"]
        if prior["kind"] != "gaussian":
            summary["prior"] = {key: prior[key] for key in ("kind", "weight", "l2_weight", "nonnegative", "lower", "upper")}
            if truth_control is not None:
                summary["prior"]["metrics"] = prior_metrics(prior["kind"], truth_control, self.analysis_control,
                                                            problem.grid)
        if estimating is not None:
            summary["parameter"] = {
                "name": estimating,
                "transform": config["control"]["transform"],
                "truth": None if truth_control is None else _stats(truth_control),
                "background": _stats(background_control),
                "analysis": _stats(self.analysis_control),
                "rmse_background": rmse_b,
                "rmse_analysis": rmse_a,
                "relative_error_background": _relative(rmse_b, truth_control),
                "relative_error_analysis": _relative(rmse_a, truth_control),
            }
        return summary

    def closing_lines(self, summary: dict) -> list[str]:
        lines = []
        if summary["rmse_background"] is not None:
            lines.append(f"  rmse background {summary['rmse_background']:.4g} -> analysis {summary['rmse_analysis']:.4g}")
        state = "converged" if self.solution.outcome == "successful" else f"stopped ({self.solution.outcome})"
        lines.append(f"  {state} after {summary['iterations']} iterations; cost {summary['cost_initial']:.4g} -> "
                     f"{summary['cost_final']:.4g}")
        return lines

    def write_analysis(self, path) -> None:
        _write_analysis(path, self.problem, self.states, self.times, self._estimating, self.analysis_control,
                        self.equivalents, self.analysis_std)

    def write_plots(self, out) -> None:
        _write_plots(out, self.problem, self.states, self._estimating, self.analysis_control, self.equivalents,
                     self.costs, self.analysis_std)


def _write_analysis(path, problem: Problem, states, times, estimating, analysis_control, equivalents, std) -> None:
    units = problem.case.config["units"]
    long = {"truth": "true state", "background": "background (first-guess) state", "analysis": "analysis state"}
    names = tuple(states)
    fields = {}
    if estimating is not None:
        controls = {"truth": problem.truth_control, "background": problem.background_control, "analysis": analysis_control}
        for name, field in controls.items():
            if field is not None:
                fields[f"{estimating}_{name}"] = (field, {"long_name": f"{name} {estimating}"})
    if std is not None:
        what = estimating or "initial state"
        fields[f"{estimating}_analysis_std" if estimating else "analysis_std"] = (std, {
            "long_name": f"posterior standard deviation of the analysis {what} (Gauss-Newton Hessian at the analysis)",
            **({} if estimating or units["field"] is None else {"units": units["field"]})})
    ds = io.trajectory_to_dataset(
        problem.grid, tuple(states[n] for n in names), times, names=names, long_names=tuple(long[n] for n in names),
        units=(units["field"],) * len(names), length_units=units["length"], time_units=units["time"], fields=fields,
        attrs={"title": f"diffphys run: {problem.case.name}", "case": problem.case.name,
               "description": problem.case.description},
    )
    sigma = np.where(np.isfinite(problem.observations), problem.sigma, np.nan)
    obs = io.observations_to_dataset(problem.schedule, problem.observations, sigma, extra=equivalents,
                                     units=units["field"], length_units=units["length"], time_units=units["time"])
    io.write_netcdf(ds, path, groups={"observations": obs})


def _with_units(label: str, units: str | None) -> str:
    return label if units is None else f"{label} [{units}]"


def _write_plots(out, problem: Problem, states, estimating, analysis_control, equivalents, costs, std) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plot import plot_analysis_1d, plot_analysis_2d, plot_cost, plot_observation_fit

    grid, schedule = problem.grid, problem.schedule
    units = problem.case.config["units"]
    sensors = schedule.operators[0].locations
    label = estimating or _with_units("u(x, 0)", units["field"])
    fields = {"analysis": analysis_control, "background": problem.background_control, "truth": problem.truth_control,
              "std": std}
    table = io.observations_to_dataset(schedule, problem.observations, extra=equivalents)
    if grid.ndim == 1:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
        plot_analysis_1d(axes[0], grid, sensors=sensors, label=label, **fields)
        fit_ax = axes[1]
    elif problem.truth_control is not None:  # truth, background, analysis / error, fit to observations
        fig = plt.figure(figsize=(14, 8), constrained_layout=True)
        layout = fig.add_gridspec(2, 3)
        panels = [fig.add_subplot(layout[0, i]) for i in range(3)] + [fig.add_subplot(layout[1, 0])]
        if std is not None:
            panels.append(fig.add_subplot(layout[1, 1]))
        plot_analysis_2d(panels, grid, sensors=sensors, label=label, **fields)
        fit_ax = fig.add_subplot(layout[1, 2] if std is not None else layout[1, 1:])
    else:
        panels = 3 if std is None else 4
        fig, axes = plt.subplots(1, panels, figsize=(4.7 * panels, 4), constrained_layout=True)
        plot_analysis_2d(axes[:-1], grid, sensors=sensors, label=label, **fields)
        fit_ax = axes[-1]
    plot_observation_fit(fit_ax, table["time"].values, table["value"].values, table["background"].values,
                         table["analysis"].values, label=_with_units("reading", units["field"]))
    fit_ax.set_xlabel(_with_units("t", units["time"]))
    for ax in fig.axes:  # the image panels and curves: x (and y) in the case's length units
        if ax is not fit_ax and ax.get_xlabel() in ("x", "y"):
            ax.set_xlabel(_with_units(ax.get_xlabel(), units["length"]))
        if ax is not fit_ax and ax.get_ylabel() == "y":
            ax.set_ylabel(_with_units("y", units["length"]))
    fig.suptitle(f"{problem.case.name}: {problem.case.description}", fontsize="medium")
    with io.atomic_path(out / "analysis.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    plot_cost(ax, costs)
    with io.atomic_path(out / "cost.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
