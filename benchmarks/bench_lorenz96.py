"""Lorenz-96 cycled 4D-Var: time-averaged analysis RMSE of the built-in case over several seeds.

The case ``lorenz96-4dvar`` (40 variables, F = 8, RK4, dt = 0.05; every variable observed every 0.2
with σ = 1; windows of 4 observation times sliding by one, R inflated 4x; static B) is run for
each seed (a new truth, noise and first background), 330 windows with 30 of spin-up. Rows:

- ``sliding``: the built-in case (windows shifted by one observation time);
- ``consecutive``: the same windows without overlap (shift = window, σ_b retuned to 0.35), the plain
  cycled 4D-Var, for reference.

The reference score is the published strong-constraint 4D-Var RMSE for this set-up, about 0.37
(Bocquet & Sakov); the observation noise is 1.

    python benchmarks/bench_lorenz96.py             # 5 seeds, about 5 minutes on 2 CPU cores
    python benchmarks/bench_lorenz96.py --quick     # 1 seed, 60 windows (a smoke run)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import jax

PUBLISHED = 0.37
VARIANTS = {"sliding": [], "consecutive": ["cycling.shift=0.8", "background.sigma=0.35"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 60 windows")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    from diffphys._app.runner import run_case
    from diffphys.cases import load_case
    from diffphys.io import write_json

    seeds = range(1 if args.quick else args.seeds)
    size = ["cycling.cycles=60", "cycling.spin_up=10"] if args.quick else []
    records = []
    for variant, settings in VARIANTS.items():
        for seed in seeds:
            case = load_case("lorenz96-4dvar", [f"seed={seed}", "output.plots=false", *size, *settings])
            with tempfile.TemporaryDirectory() as out:
                summary = run_case(case, Path(out), progress=None)
            records.append({"variant": variant, "seed": seed, **{k: summary[k] for k in (
                "rmse_analysis", "rmse_smoother", "rmse_forecast", "n_cycles", "spin_up", "shift_steps", "iterations",
                "converged", "wall_time_s")}})
            print(f"{variant:12s} seed {seed}: analysis RMSE {summary['rmse_analysis']:.4f}  "
                  f"({summary['wall_time_s']:.1f} s)", flush=True)

    print("\n| windows | seeds | analysis RMSE (mean, min–max) | / published 0.37 | smoother RMSE | forecast RMSE "
          "| GN iterations per window | wall time per run |")
    print("|---|---|---|---|---|---|---|---|")
    table = {}
    for variant in VARIANTS:
        rows = [r for r in records if r["variant"] == variant]
        rmse = [r["rmse_analysis"] for r in rows]
        mean = statistics.fmean(rmse)
        table[variant] = {"rmse_analysis_mean": mean, "rmse_analysis_min": min(rmse), "rmse_analysis_max": max(rmse),
                          "ratio_to_published": mean / PUBLISHED}
        print(f"| {variant} (shift {rows[0]['shift_steps']} steps, {rows[0]['n_cycles']} windows) | {len(rows)} | "
              f"{mean:.4f} ({min(rmse):.4f}–{max(rmse):.4f}) | {mean / PUBLISHED:.3f} | "
              f"{statistics.fmean(r['rmse_smoother'] for r in rows):.4f} | "
              f"{statistics.fmean(r['rmse_forecast'] for r in rows):.4f} | "
              f"{statistics.fmean(r['iterations'] for r in rows):.1f} | "
              f"{statistics.fmean(r['wall_time_s'] for r in rows):.1f} s |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lorenz96{'_quick' if args.quick else ''}.json"
    write_json(path, {"published": PUBLISHED, "summary": table, "runs": records,
                      "backend": jax.default_backend(), "jax": jax.__version__, "machine": platform.machine()})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
