"""Lorenz-96 cycled 4D-Var against DAPPER (iEnKS and Var4D) on the same twin, as time ratios.

The built-in case ``lorenz96-4dvar`` (40 variables, F = 8, RK4 dt = 0.05; every variable observed
every 0.2 with σ = 1; windows of 4 observation times sliding by one, R inflated 4x; static B;
330 windows, the first 30 left out of the averages) is built once. diffphys assimilates it with
:func:`diffphys.assimilate.cycled_4dvar`, timed cold (first call in this process: tracing and
compilation included) and warm (second call). DAPPER, a peer library installed only for this
benchmark in an environment of its own (not a dependency of diffphys), assimilates the *same*
truth and observations in a subprocess (``benchmarks/_dapper_l96.py``):

- ``DAPPER iEnKS``: ``iEnKS("Sqrt", N=20, Lag=4, xN=2)``, Bocquet & Sakov's iterative ensemble
  Kalman smoother on the same windows (its own flow-dependent covariance);
- ``DAPPER Var4D``: ``Var4D(Lag=4, B=B)``: DAPPER's 4D-Var with diffphys's weights (its static B,
  R inflated 4x), Gauss–Newton with the full tangent-linear Jacobian, its default 10 outer
  iterations per window;
- ``DAPPER Var4D-clim``: the same with DAPPER's own tuning for this set-up (climatological B from
  the truth, times 0.02; R not inflated).

DAPPER's windows slide by one observation time as diffphys's do, but assimilate each observation
once, in the window it ends (single data assimilation); diffphys assimilates it in all 4 windows
with R inflated 4x (multiple data assimilation). Both are Bocquet & Sakov's (2014) sliding-window
schemes; the RMSEs are of the same estimate (the filter analysis at each window's end) on the same
truth and observations.

Each row reports the time-averaged filter analysis RMSE over the same 300 windows and its wall
time, and that time over diffphys's cold time (the first run a user waits for) and warm time; the
same for the process's CPU time (user + system, all threads), which drifts less on a shared machine.

    python -m venv /work/dapper-venv && /work/dapper-venv/bin/pip install dapper   # once
    python benchmarks/bench_dapper.py --dapper-python /work/dapper-venv/bin/python
    python benchmarks/bench_dapper.py            # diffphys only: the DAPPER rows are skipped
    python benchmarks/bench_dapper.py --quick --dapper-python ...   # 60 windows, a smoke run
    python benchmarks/bench_dapper.py --cache-dir /tmp/jc     # twice: a second process's cold time
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

WORKER = Path(__file__).parent / "_dapper_l96.py"
METHODS = ("iEnKS", "Var4D", "Var4D-clim")


def _dense(B, n: int) -> np.ndarray:
    """B as a dense matrix: B = S Sᵀ with S applied to the identity's columns."""
    S = np.stack([np.asarray(B.sqrt(jax.numpy.asarray(e))) for e in np.eye(n)], axis=1)
    return S @ S.T


def _write_twin(path: Path, problem) -> None:
    """The twin of ``problem`` in DAPPER's layout: the truth at every step, one observation row per time."""
    from diffphys._rollout import rollout

    twin, schedule, shift, n_cycles = problem.twin, problem.schedule, problem.shift, problem.twin.truth_start.shape[0]
    steps = np.asarray(schedule.steps)
    dko = int(steps[0])
    if not (np.array_equal(steps, dko * np.arange(1, len(steps) + 1)) and shift == dko):
        raise SystemExit("bench_dapper: DAPPER's windows need observations every `shift` steps, the first at `shift`")
    n_steps = (n_cycles - 1) * shift + schedule.n_steps
    xx = np.asarray(rollout(problem.model, twin.truth_start[0], n_steps, save_at=range(n_steps + 1), check_finite=False))
    if not (np.allclose(xx[np.arange(n_cycles) * shift], twin.truth_start, rtol=0, atol=1e-12)
            and np.allclose(xx[np.arange(n_cycles) * shift + schedule.n_steps], twin.truth_end, rtol=0, atol=1e-12)):
        raise SystemExit("bench_dapper: the re-run truth differs from the twin's")
    lag = len(steps)
    obs = np.asarray(twin.observations).reshape(n_cycles, lag, -1)  # window k, slot i: observation time k + i
    yy = np.concatenate([obs[:, 0], obs[-1, 1:]])
    sigma = float(np.unique(np.asarray(problem.R.sigma))[0])
    n = problem.model.grid.n
    np.savez(path, xx=xx, yy=yy, mu0=np.asarray(problem.background), B=_dense(problem.B, n), dt=problem.model.dt, dko=dko,
             sigma=sigma, lag=lag, spin_up=problem.spin_up, forcing=float(np.asarray(problem.model.forcing).mean()))


def _run_dapper(python: str, twin: Path, method: str, out: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([python, str(WORKER), str(twin), method, str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_dapper: DAPPER {method} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "process_seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dapper-python", help="the Python of an environment with DAPPER installed; without it "
                        "the DAPPER rows are skipped")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="DAPPER methods to run, comma-separated (default iEnKS,Var4D,Var4D-clim)")
    parser.add_argument("--quick", action="store_true", help="60 windows, 10 of spin-up (a smoke run)")
    parser.add_argument("--cache-dir", type=Path, help="JAX's persistent compilation cache in this folder, as "
                        "`diffphys run` uses it: run twice, the second run's cold time is a second process's")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.cache_dir is not None:
        from diffphys._app.cache import enable_cache

        enable_cache(args.cache_dir)
    from diffphys._compile_monitor import CompileMonitor
    from diffphys._app.build import build_cycled_problem
    from diffphys.assimilate import cycled_4dvar
    from diffphys.cases import load_case
    from diffphys.solvers import Converged

    size = ["cycling.cycles=60", "cycling.spin_up=10"] if args.quick else []
    case = load_case("lorenz96-4dvar", ["output.plots=false", *size])
    problem = build_cycled_problem(case)
    solver = case.config["solver"]
    mode = Converged(rtol=solver["gtol"], max_steps=solver["max_iterations"])

    def assimilate():
        result = cycled_4dvar(problem.model, problem.schedule, problem.twin.observations, problem.R, problem.B,
                              problem.background, mode=mode, shift=problem.shift)
        jax.block_until_ready(result.filter_analysis)
        return result

    with CompileMonitor() as monitor:
        start, cpu = time.perf_counter(), time.process_time()
        result = assimilate()
        cold, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    warm_result = assimilate()
    warm, warm_cpu = time.perf_counter() - start, time.process_time() - cpu
    n_cycles = int(result.analysis.shape[0])
    first = "cold: compilation included" if args.cache_dir is None else "cold: persistent cache"
    rows = [{"method": f"diffphys cycled_4dvar ({first})", "seconds": cold, "cpu_seconds": cold_cpu,
             "rmse_analysis": result.rmse(problem.twin, spin_up=problem.spin_up)["analysis"],
             "iterations": float(np.mean(np.asarray(result.iterations)[problem.spin_up:])),
             "programs_compiled": monitor.programs, "compile_seconds": monitor.seconds},
            {"method": "diffphys cycled_4dvar (warm: second call)", "seconds": warm, "cpu_seconds": warm_cpu,
             "rmse_analysis": warm_result.rmse(problem.twin, spin_up=problem.spin_up)["analysis"],
             "iterations": float(np.mean(np.asarray(warm_result.iterations)[problem.spin_up:]))}]
    print(f"diffphys: {n_cycles} windows, cold {cold:.2f} s ({monitor.programs} programs compiled, "
          f"{monitor.seconds:.2f} s tracing and compiling), warm {warm:.2f} s", flush=True)

    if args.dapper_python is None:
        print("DAPPER rows skipped: pass --dapper-python PATH (the Python of an environment with DAPPER installed, "
              "e.g. python -m venv dapper-venv && dapper-venv/bin/pip install dapper)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            twin = Path(tmp) / "twin.npz"
            _write_twin(twin, problem)
            for method in filter(None, args.methods.split(",")):
                record = _run_dapper(args.dapper_python, twin, method, Path(tmp) / f"{method}.json")
                rows.append({**record, "method": f"DAPPER {method}"})
                print(f"DAPPER {method}: {record['seconds']:.2f} s, analysis RMSE {record['rmse_analysis']:.4f}", flush=True)

    print(f"\n| method | analysis RMSE ({n_cycles - problem.spin_up} windows) | wall time (CPU time) "
          "| / diffphys cold: wall (CPU) | / diffphys warm: wall (CPU) |")
    print("|---|---|---|---|---|")
    for row in rows:
        row["ratio_to_diffphys_cold"], row["ratio_to_diffphys_warm"] = row["seconds"] / cold, row["seconds"] / warm
        row["cpu_ratio_to_diffphys_cold"] = row["cpu_seconds"] / cold_cpu
        row["cpu_ratio_to_diffphys_warm"] = row["cpu_seconds"] / warm_cpu
        print(f"| {row['method']} | {row['rmse_analysis']:.4f} | {row['seconds']:.2f} s ({row['cpu_seconds']:.2f} s) | "
              f"{row['ratio_to_diffphys_cold']:.2f} ({row['cpu_ratio_to_diffphys_cold']:.2f}) | "
              f"{row['ratio_to_diffphys_warm']:.2f} ({row['cpu_ratio_to_diffphys_warm']:.2f}) |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"dapper{'_quick' if args.quick else ''}.json"
    write_json(path, {"case": "lorenz96-4dvar", "n_cycles": n_cycles, "spin_up": problem.spin_up, "rows": rows,
                      "persistent_cache": None if args.cache_dir is None else str(args.cache_dir), **environment()})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
