"""Learned model corrections: rollout error of uncorrected, one-step-trained and solver-in-the-loop models.

Two model-error scenarios (``diffphys.learn``), each a 1D periodic problem on 32 cells:

- **resolution**: advection (upwind, SSP-RK3) against the same scheme on a 4x finer grid with a 4x
  smaller step, cell-averaged onto the coarse grid;
- **missing physics**: heat (RK4, kappa = 0.01) against a truth with an extra Burgers term
  -d(u^2/2)/dx.

For each, one ConvNet (2 hidden layers of 16 channels, 5-point stencils, circular padding,
``feed="state"``, output scaled by dt) is trained from the same initial weights with the same
optimiser (Adam, cosine-decayed learning rate 3e-3) and the same number of steps, twice:
**one-step** (supervised on pairs of consecutive truth states, no solver in the backward pass) and
**solver-in-the-loop** (unrolled through the differentiable stepper, curriculum m = 2, 4, 8, 16).
On held-out initial conditions, the table reports the rollout nRMSE ||u - u_ref|| / ||u_ref||
averaged over a horizon of 128 steps (8x the longest training unroll) and at its end, and the
ratios uncorrected / SITL and one-step / SITL.

    python benchmarks/bench_corrections.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_corrections.py --quick    # tiny sizes, a smoke run
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax


def nrmse_curve(model, truth_trajectories, horizon: int) -> np.ndarray:
    """Mean over trajectories of ||u_k - u_ref,k|| / ||u_ref,k|| for k = 0..horizon."""
    import diffphys as dp

    pred = jax.vmap(lambda u: dp.rollout(model, u, horizon, save_every=1, check_finite=False))(truth_trajectories[:, 0])
    ref = truth_trajectories[:, : horizon + 1]
    err = jnp.linalg.norm(pred - ref, axis=-1) / jnp.linalg.norm(ref, axis=-1)
    return np.asarray(jnp.mean(err, axis=0))


def run_scenario(name, dataset, *, horizon, unroll, epochs, steps_per_epoch, batch_size, width, seed=1):
    from diffphys import learn as dl

    net = dl.ConvNet(dataset.model.grid, key=jax.random.key(seed), width=width, depth=2, kernel_size=5, output_scale=0.1)
    initial = dl.CorrectedStepper(dataset.model, net, scale=float(dataset.dt))
    total = epochs * steps_per_epoch
    results = {"uncorrected": {"curve": nrmse_curve(dataset.model, dataset.test, horizon), "train_s": 0.0}}
    for label, method, m in (("one-step", "one_step", 1), ("solver-in-the-loop", "unrolled", unroll)):
        optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, total))
        start = time.perf_counter()
        trained, history = dl.train_correction(
            initial, dataset.train, validation=dataset.validation, method=method, unroll=m,
            validation_unroll=max(unroll), optimizer=optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
            batch_size=batch_size, key=jax.random.key(seed + 1), progress=False,
        )
        elapsed = time.perf_counter() - start
        results[label] = {
            "curve": nrmse_curve(trained, dataset.test, horizon), "train_s": elapsed,
            "final_loss": history.loss[-1], "validation": history.validation, "unroll": history.unroll,
        }
        print(f"  {name}: {label} trained in {elapsed:.1f} s (validation {history.validation[-1][1]:.3e})", flush=True)
    return results


def run_sparse_observations(dataset, *, horizon, window, every, n_sensors, epochs, steps_per_epoch, batch_size, width,
                            seed=1):
    """Train the correction from sparse noisy readings of the training trajectories only (no full truth)."""
    from diffphys import learn as dl
    from diffphys import observe as ob

    grid = dataset.model.grid
    sensors = ob.PointSensors(grid, np.linspace(0.5 / n_sensors, 1 - 0.5 / n_sensors, n_sensors))
    schedule = ob.ObservationSchedule.from_steps(list(range(every, window + 1, every)), sensors, dt=dataset.dt)
    B = ob.DiffusionB(grid, sigma=0.05, length_scale=0.1)
    starts = range(0, dataset.train.shape[1] - window, window)
    segments = jnp.concatenate([dataset.train[:, s: s + window + 1] for s in starts])  # (windows, window + 1, n)
    k_noise, k_b = jax.random.split(jax.random.key(seed + 10))
    clean = jax.vmap(schedule.observe)(segments[:, list(schedule.steps)])
    sigma = 0.01
    readings = clean + sigma * jax.random.normal(k_noise, clean.shape)
    background = segments[:, 0] + jax.vmap(B.sample)(jax.random.split(k_b, segments.shape[0]), segments[:, 0])
    windows = dl.ObservationWindows(schedule, readings, ob.DiagonalR(sigma), background, B)
    net = dl.ConvNet(grid, key=jax.random.key(seed), width=width, depth=2, kernel_size=5, output_scale=0.1)
    initial = dl.CorrectedStepper(dataset.model, net, scale=float(dataset.dt))
    start = time.perf_counter()
    trained, _, history = dl.train_from_observations(
        initial, windows, optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, epochs * steps_per_epoch)),
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=min(batch_size, windows.n_windows),
        key=jax.random.key(seed + 1), progress=False,
    )
    elapsed = time.perf_counter() - start
    curve = nrmse_curve(trained, dataset.test, horizon)
    print(f"  sparse observations: trained in {elapsed:.1f} s on {windows.n_windows} windows x "
          f"{schedule.size} readings ({n_sensors} sensors every {every} steps)", flush=True)
    return {"curve": curve, "train_s": elapsed, "n_windows": windows.n_windows, "readings_per_window": schedule.size,
            "n_sensors": n_sensors, "every": every, "window": window, "sigma": sigma,
            "cost_first": history.loss[0], "cost_last": history.loss[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 cells, short trajectories, few steps")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    from diffphys import learn as dl
    from diffphys.io import write_json

    if args.quick:
        cfg = dict(n=16, n_steps=16, n_train=4, n_val=2, n_test=2, horizon=16, unroll=(2, 4), epochs=2,
                   steps_per_epoch=10, batch_size=4, width=4,
                   sparse=dict(window=8, every=2, n_sensors=4, epochs=1, steps_per_epoch=5, batch_size=4, width=4))
    else:
        cfg = dict(n=32, n_steps=128, n_train=32, n_val=4, n_test=8, horizon=128, unroll=(2, 4, 8, 16), epochs=8,
                   steps_per_epoch=200, batch_size=16, width=16,
                   sparse=dict(window=16, every=2, n_sensors=8, epochs=6, steps_per_epoch=100, batch_size=16, width=16))
    sizes = dict(n=cfg["n"], n_steps=cfg["n_steps"], n_train=cfg["n_train"], n_val=cfg["n_val"], n_test=cfg["n_test"])
    key = jax.random.key(0)
    scenarios = {
        "resolution": lambda: dl.resolution_scenario(key, factor=4, **sizes),
        "missing physics": lambda: dl.missing_physics_scenario(key, kind="burgers", strength=1.0, kappa=0.01, dt=0.004, **sizes),
    }
    train_cfg = {k: cfg[k] for k in ("horizon", "unroll", "epochs", "steps_per_epoch", "batch_size", "width")}
    start_all = time.perf_counter()
    rows, records = [], []
    for name, make in scenarios.items():
        dataset = make()
        print(f"{name}: {dataset.name}, dt={dataset.dt:.4g}, train {dataset.train.shape}", flush=True)
        res = run_scenario(name, dataset, **train_cfg)
        mean = {k: float(np.mean(v["curve"][1:])) for k, v in res.items()}
        final = {k: float(v["curve"][-1]) for k, v in res.items()}
        record = {
            "scenario": name, "dataset": dataset.name, "dt": dataset.dt, "grid": list(dataset.model.grid.shape),
            "horizon_steps": cfg["horizon"], "longest_training_unroll": max(cfg["unroll"]),
            "nrmse_mean": mean, "nrmse_final": final,
            "uncorrected_over_sitl": mean["uncorrected"] / mean["solver-in-the-loop"],
            "one_step_over_sitl": mean["one-step"] / mean["solver-in-the-loop"],
            "train_s": {k: v["train_s"] for k, v in res.items()},
            "curves": {k: [float(x) for x in v["curve"]] for k, v in res.items()},
            "validation": {k: v.get("validation") for k, v in res.items()},
        }
        record["goal_met"] = bool(record["uncorrected_over_sitl"] >= 5 and record["one_step_over_sitl"] > 1)
        records.append(record)
        rows.append(record)
        if name == "missing physics":
            sparse = run_sparse_observations(dataset, horizon=cfg["horizon"], **cfg["sparse"])
            record["sparse_observations"] = {k: (float(np.mean(v[1:])) if k == "curve" else v) for k, v in sparse.items()}
            record["sparse_observations"]["nrmse_mean"] = record["sparse_observations"].pop("curve")
            record["sparse_observations"]["nrmse_final"] = float(sparse["curve"][-1])
            record["sparse_observations"]["uncorrected_over_sparse"] = mean["uncorrected"] / record["sparse_observations"]["nrmse_mean"]
            record["curves"]["sparse observations"] = [float(x) for x in sparse["curve"]]
    wall = time.perf_counter() - start_all

    print()
    print("| scenario | horizon | uncorrected | one-step | solver-in-the-loop | uncorrected / SITL | one-step / SITL |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        m, f = r["nrmse_mean"], r["nrmse_final"]
        print(f"| {r['scenario']} | {r['horizon_steps']} steps | {m['uncorrected']:.4f} (end {f['uncorrected']:.4f}) "
              f"| {m['one-step']:.4f} (end {f['one-step']:.4f}) | {m['solver-in-the-loop']:.4f} "
              f"(end {f['solver-in-the-loop']:.4f}) | {r['uncorrected_over_sitl']:.1f}x | {r['one_step_over_sitl']:.2f}x |")
    for r in rows:
        if "sparse_observations" in r:
            sp = r["sparse_observations"]
            print(f"\n{r['scenario']}, trained on sparse observations only ({sp['n_windows']} windows of {sp['window']} steps, "
                  f"{sp['n_sensors']} sensors every {sp['every']} steps, sigma {sp['sigma']}): nRMSE against the hidden truth "
                  f"{r['nrmse_mean']['uncorrected']:.4f} (uncorrected) -> {sp['nrmse_mean']:.4f} "
                  f"({sp['uncorrected_over_sparse']:.1f}x lower; end of horizon {sp['nrmse_final']:.4f})")
    print(f"\nnRMSE averaged over steps 1..horizon and {cfg['n_test']} held-out initial conditions; wall time {wall:.0f} s")

    result = {
        "quick": args.quick, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "records": records, "wall_time_s": wall,
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "device": {"backend": jax.default_backend(), "description": str(jax.devices()[0])}, "dtype": "float64",
    }
    out = args.out if args.out.suffix == ".json" else args.out / f"corrections_float64{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
