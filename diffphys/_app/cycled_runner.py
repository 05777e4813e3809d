"""Run a ``[cycling]`` case: cycled 4D-Var over sliding windows; write analysis.nc, summary.json, plots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from .. import io
from ..assimilate import cycled_4dvar
from ..solvers import Converged
from .build import CycledProblem, build_cycled_problem
from .load import Case

__all__ = ["CYCLED_OUTPUTS", "run_cycled_case"]

CYCLED_OUTPUTS = {
    "analysis.nc": "truth, filter analysis and forecast at every window's end (dims time, x)",
    "summary.json": "case, rmse_analysis (time-averaged filter analysis RMSE after spin-up), rmse_smoother, "
                    "rmse_forecast, rmse_background (at the windows' starts), n_cycles, spin_up, iterations, converged, "
                    "wall_time_s, ...",
    "analysis.png": "RMSE per window (analysis, forecast) and the last window's analysis against the truth",
    "cost.png": "each window's 4D-Var cost before and after Gauss–Newton",
}


def _rmse_per_window(estimate, truth) -> np.ndarray:
    err = np.asarray(estimate) - np.asarray(truth)
    return np.sqrt(np.mean(err.reshape(err.shape[0], -1) ** 2, axis=1))


def run_cycled_case(case: Case, out: Path, *, progress: Callable[[str], None] | None = print) -> dict:
    """Cycle 4D-Var through the windows of ``case`` and write its outputs (see :data:`CYCLED_OUTPUTS`)."""
    say = progress or (lambda line: None)
    started = time.perf_counter()
    problem = build_cycled_problem(case)
    config, model, schedule = case.config, problem.model, problem.schedule
    n_cycles, length = config["cycling"]["cycles"], schedule.n_steps
    say(f"diffphys run: {case.name} — {case.description}")
    say(f"  {config['model']['kind']} with {model.grid.n} variables, dt={model.dt:g}; {n_cycles} windows of "
        f"{length} steps ({len(schedule.times)} observation times, {schedule.size} observations each), shifted by "
        f"{problem.shift} steps; RMSE averaged after {problem.spin_up} windows")
    solver = config["solver"]
    mode = Converged(rtol=solver["gtol"], max_steps=solver["max_iterations"])
    every = max(1, n_cycles // 10)
    errors = []

    def report(k, record):
        errors.append(float(np.sqrt(np.mean((record["filter_analysis"] - np.asarray(problem.twin.truth_end[k])) ** 2))))
        if (k + 1) % every == 0 or k + 1 == n_cycles:
            recent = np.mean(errors[max(problem.spin_up, k + 1 - every):]) if k + 1 > problem.spin_up else errors[-1]
            say(f"  window {k + 1:5d}/{n_cycles}   analysis rmse {errors[-1]:.3f} (mean of the last {every}: "
                f"{recent:.3f})   Gauss–Newton iterations {int(record['iterations'])}")

    result = cycled_4dvar(model, schedule, problem.twin.observations, problem.R, problem.B, problem.background,
                          mode=mode, shift=problem.shift, progress=report)
    scores = result.rmse(problem.twin, spin_up=problem.spin_up)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_analysis(out / "analysis.nc", problem, result)
    outputs = ["analysis.nc", "summary.json"]
    if config["output"]["plots"]:
        _write_plots(out, problem, result)
        outputs += ["analysis.png", "cost.png"]
    iterations = np.asarray(result.iterations)
    summary = {
        "case": case.name,
        "description": case.description,
        "model": config["model"]["kind"],
        "n_variables": int(model.grid.n),
        "dt": model.dt,
        "window": config["window"]["duration"],
        "window_steps": length,
        "shift_steps": problem.shift,
        "n_cycles": n_cycles,
        "spin_up": problem.spin_up,
        "observation_sigma": config["observations"]["sigma"],
        "rmse_analysis": scores["analysis"],
        "rmse_smoother": scores["smoother"],
        "rmse_forecast": scores["forecast"],
        "rmse_background": scores["background"],
        "iterations": float(iterations.mean()),
        "iterations_max": int(iterations.max()),
        "converged": float(np.mean(np.asarray(result.converged))),
        "cost_initial": float(np.mean(np.asarray(result.cost_initial))),
        "cost_final": float(np.mean(np.asarray(result.cost_final))),
        "solver": "gauss_newton",
        "backend": jax.default_backend(),
        "wall_time_s": time.perf_counter() - started,
        "outputs": outputs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"  time-averaged RMSE after spin-up: analysis {scores['analysis']:.4f}, smoother {scores['smoother']:.4f}, "
        f"forecast {scores['forecast']:.4f} (observation σ {config['observations']['sigma']})")
    say(f"  {n_cycles} windows, {summary['iterations']:.1f} Gauss–Newton iterations per window "
        f"({100 * summary['converged']:.0f}% converged); wrote {', '.join(outputs)} to {out}/ in "
        f"{summary['wall_time_s']:.1f} s")
    return summary


def _window_end_times(problem: CycledProblem) -> np.ndarray:
    k = np.arange(problem.twin.truth_end.shape[0])
    return (k * problem.shift + problem.schedule.n_steps) * problem.model.dt


def _write_analysis(path, problem: CycledProblem, result) -> None:
    names = ("truth", "analysis", "forecast")
    long_names = ("true state", "filter analysis (the window's analysis at its end)",
                  "forecast from the window's background")
    ds = io.trajectory_to_dataset(
        problem.model.grid, (np.asarray(problem.twin.truth_end), np.asarray(result.filter_analysis),
                             np.asarray(result.forecast)),
        _window_end_times(problem), names=names, long_names=long_names, units=("1",) * 3, length_units="1",
        time_units="1", attrs={"title": f"diffphys run: {problem.case.name}", "case": problem.case.name,
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
    fig.savefig(out / "analysis.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    k = np.arange(len(times))
    ax.plot(k, np.asarray(result.cost_initial), color="0.6", lw=0.8, label="background")
    ax.plot(k, np.asarray(result.cost_final), color="C0", lw=1.0, label="analysis")
    ax.set(xlabel="window", ylabel="4D-Var cost", yscale="log", title="cost per window")
    ax.legend(fontsize="small")
    fig.savefig(out / "cost.png", dpi=100)
    plt.close(fig)
