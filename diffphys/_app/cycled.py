"""A ``[cycling]`` case: cycled 4D-Var over sliding windows, and what it writes (analysis.nc, plots)."""

from __future__ import annotations

import numpy as np

from .. import io
from ..assimilate import cycled_4dvar
from ..solvers import Converged
from .build import CycledProblem, build_cycled_problem
from .load import Case

__all__ = ["CYCLED_OUTPUTS", "CycledRun"]

CYCLED_OUTPUTS = {
    "analysis.nc": "truth, filter analysis and forecast at every window's end (dims time, x)",
    "summary.json": "case, rmse_analysis (time-averaged filter analysis RMSE after spin-up), rmse_smoother, "
                    "rmse_forecast, rmse_background (at the windows' starts), n_cycles, spin_up, iterations, converged, "
                    "results (windows per solver outcome), wall_time_s, ...",
    "analysis.png": "RMSE per window (analysis, forecast) and the last window's analysis against the truth",
    "cost.png": "each window's 4D-Var cost before and after Gauss–Newton",
}


def _rmse_per_window(estimate, truth) -> np.ndarray:
    err = np.asarray(estimate) - np.asarray(truth)
    return np.sqrt(np.mean(err.reshape(err.shape[0], -1) ** 2, axis=1))


class CycledRun:
    """A ``[cycling]`` case: cycled 4D-Var through sliding windows (see :data:`CYCLED_OUTPUTS`)."""

    outputs = CYCLED_OUTPUTS

    def __init__(self, case: Case, say):
        self.case, self.say = case, say
        self.problem = build_cycled_problem(case)

    def describe(self) -> str:
        problem, config = self.problem, self.case.config
        model, schedule = problem.model, problem.schedule
        return (f"  {config['model']['kind']} with {model.grid.n} variables, dt={model.dt:g}; "
                f"{config['cycling']['cycles']} windows of {schedule.n_steps} steps ({len(schedule.times)} observation "
                f"times, {schedule.size} observations each), shifted by {problem.shift} steps; RMSE averaged after "
                f"{problem.spin_up} windows")

    def solve(self) -> None:
        problem, config, say = self.problem, self.case.config, self.say
        n_cycles = config["cycling"]["cycles"]
        solver = config["solver"]
        mode = Converged(rtol=solver["gtol"], max_steps=solver["max_iterations"])
        every = max(1, n_cycles // 10)
        errors, truth_end = [], np.asarray(problem.twin.truth_end)  # on the host: indexing on the device compiles

        def report(k, record):
            errors.append(float(np.sqrt(np.mean((record["filter_analysis"] - truth_end[k]) ** 2))))
            if (k + 1) % every == 0 or k + 1 == n_cycles:
                recent = np.mean(errors[max(problem.spin_up, k + 1 - every):]) if k + 1 > problem.spin_up else errors[-1]
                say(f"  window {k + 1:5d}/{n_cycles}   analysis rmse {errors[-1]:.3f} (mean of the last {every}: "
                    f"{recent:.3f})   Gauss–Newton iterations {int(record['iterations'])}")

        self.result = cycled_4dvar(problem.model, problem.schedule, problem.twin.observations, problem.R, problem.B,
                                   problem.background, mode=mode, shift=problem.shift, progress=report)
        self.scores = self.result.rmse(problem.twin, spin_up=problem.spin_up)

    def summary(self) -> dict:
        problem, config, result, scores = self.problem, self.case.config, self.result, self.scores
        iterations = np.asarray(result.iterations)
        return {
            "n_variables": int(problem.model.grid.n),
            "dt": problem.model.dt,
            "window": config["window"]["duration"],
            "window_steps": problem.schedule.n_steps,
            "shift_steps": problem.shift,
            "n_cycles": config["cycling"]["cycles"],
            "spin_up": problem.spin_up,
            "observation_sigma": config["observations"]["sigma"],
            "rmse_analysis": scores["analysis"],
            "rmse_smoother": scores["smoother"],
            "rmse_forecast": scores["forecast"],
            "rmse_background": scores["background"],
            "iterations": float(iterations.mean()),
            "iterations_max": int(iterations.max()),
            "converged": float(np.mean(np.asarray(result.converged))),
            "results": {name: result.results.count(name) for name in sorted(set(result.results))},
            "cost_initial": float(np.mean(np.asarray(result.cost_initial))),
            "cost_final": float(np.mean(np.asarray(result.cost_final))),
            "solver": "gauss_newton",
        }

    def closing_lines(self, summary: dict) -> list[str]:
        scores, sigma = self.scores, self.case.config["observations"]["sigma"]
        return [f"  time-averaged RMSE after spin-up: analysis {scores['analysis']:.4f}, smoother "
                f"{scores['smoother']:.4f}, forecast {scores['forecast']:.4f} (observation σ {sigma})",
                f"  {summary['n_cycles']} windows, {summary['iterations']:.1f} Gauss–Newton iterations per window "
                f"({100 * summary['converged']:.0f}% converged)"]

    def write_analysis(self, path) -> None:
        _write_analysis(path, self.problem, self.result)

    def write_plots(self, out) -> None:
        _write_plots(out, self.problem, self.result)


def _window_end_times(problem: CycledProblem) -> np.ndarray:
    k = np.arange(problem.twin.truth_end.shape[0])
    return (k * problem.shift + problem.schedule.n_steps) * problem.model.dt


def _write_analysis(path, problem: CycledProblem, result) -> None:
    units = problem.case.config["units"]
    names = ("truth", "analysis", "forecast")
    long_names = ("true state", "filter analysis (the window's analysis at its end)",
                  "forecast from the window's background")
    ds = io.trajectory_to_dataset(
        problem.model.grid, (np.asarray(problem.twin.truth_end), np.asarray(result.filter_analysis),
                             np.asarray(result.forecast)),
        _window_end_times(problem), names=names, long_names=long_names, units=(units["field"],) * 3,
        length_units=units["length"], time_units=units["time"], attrs={"title": f"diffphys run: {problem.case.name}", "case": problem.case.name,
                               "description": problem.case.description},
    )
    io.write_netcdf(ds, path)


def _write_plots(out, problem: CycledProblem, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = _window_end_times(problem)
    truth = np.asarray(problem.twin.truth_end)
    sigma = problem.case.config["observations"]["sigma"]
    fig, (ax, snap) = plt.subplots(1, 2, figsize=(13, 4.2), constrained_layout=True)
    ax.plot(times, _rmse_per_window(result.forecast, truth), color="0.6", lw=0.8, label="forecast (background run)")
    ax.plot(times, _rmse_per_window(result.filter_analysis, truth), color="C0", lw=1.0, label="analysis")
    if isinstance(sigma, float):
        ax.axhline(sigma, color="C3", ls="--", lw=0.8, label="observation σ")
    if problem.spin_up:
        ax.axvspan(times[0], times[problem.spin_up - 1], color="0.9", label="spin-up")
    ax.set(xlabel="time", ylabel="RMSE", yscale="log", title="error at each window's end")
    ax.legend(fontsize="small")
    x = np.arange(problem.model.grid.n)
    snap.plot(x, truth[-1], "k-", label="truth")
    snap.plot(x, np.asarray(result.filter_analysis)[-1], "C0--", label="analysis")
    snap.plot(x, np.asarray(result.forecast)[-1], color="0.6", lw=0.8, label="forecast")
    snap.set(xlabel="variable", ylabel="state", title=f"last window's end (t = {times[-1]:g})")
    snap.legend(fontsize="small")
    fig.suptitle(f"{problem.case.name}: {problem.case.description}", fontsize="medium")
    with io.atomic_path(out / "analysis.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    k = np.arange(len(times))
    ax.plot(k, np.asarray(result.cost_initial), color="0.6", lw=0.8, label="background")
    ax.plot(k, np.asarray(result.cost_final), color="C0", lw=1.0, label="analysis")
    ax.set(xlabel="window", ylabel="4D-Var cost", yscale="log", title="cost per window")
    ax.legend(fontsize="small")
    with io.atomic_path(out / "cost.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
