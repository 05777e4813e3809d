"""The diffusion background covariance B: cost of one B^{1/2} application as the grid grows, against
the explicit diffusion sweeps it replaces and against one model rollout; and how a Gauss–Newton
solve's time grows with N at a fixed step count.

``DiffusionB`` applies its filter $G = \\prod_a (I + \\alpha_a\\Delta_a)^{M_a}$ in $G$'s eigenbasis
(a real FFT on periodic axes, an orthonormal DCT-II on walled ones): $O(N\\log N)$ per application.
The reference is the definition itself, $M = \\lceil L^2/h^2\\rceil$ explicit 3-point sweeps (a
jitted ``lax.fori_loop``, $O(N M) = O(N^3)$ at a fixed physical L), timed in the same process; both
are checked equal (relative 1e-10) at every size. The rollout is the 1D heat model (RK4, Neumann)
over 100 steps on the same grid.

The Gauss–Newton part solves a 1D heat 4D-Var problem (initial-state control, 100 steps, 16
sensors, L = 0.1) for N = 256 ... 2048 and fits the exponent p of solve time ~ N^p (the rollout's
own exponent at a fixed step count shown beside it).

    python benchmarks/bench_covariance.py           # N up to 8192 and GN up to 2048
    python benchmarks/bench_covariance.py --quick   # small sizes (the smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from _common import environment, median_time, write_json


def _sweeps(B):
    """G by explicit sweeps, the operator's definition (1D, Neumann walls): the timing reference."""
    import jax.numpy as jnp

    (h,), (alpha,), (m,) = B.grid.spacing, B.alphas, B.steps

    def step(_, u):
        padded = jnp.concatenate([u[:1], u, u[-1:]])
        return u + alpha * (padded[2:] - 2.0 * u + padded[:-2]) / h**2

    return jax.jit(lambda u: jax.lax.fori_loop(0, m, step, u))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import diffphys as dp
    from diffphys import observe as ob
    from diffphys import solvers as S
    from diffphys import assimilate as da

    sizes = (128, 256, 512) if args.quick else (256, 512, 1024, 2048, 4096, 8192)
    sweep_limit = 512 if args.quick else 8192
    length, steps = 0.1, 100
    rows = []
    for n in sizes:
        grid = dp.Grid1D(n, 1.0, bc="neumann")
        B = ob.DiffusionB(grid, 1.0, length)
        model = dp.Heat(grid, 0.01)
        u = jax.random.normal(jax.random.key(0), grid.shape)
        spectral = jax.jit(lambda v, B=B: B.sqrt(v))
        rollout = jax.jit(lambda u0: dp.rollout(model, u0, steps, save_at=(steps,)))
        row = {"n": n, "sweeps_M": B.steps[0], "spectral_s": median_time(lambda: spectral(u), repeats=20),
               "rollout_s": median_time(lambda: rollout(u), repeats=5)}
        if n <= sweep_limit:
            explicit = _sweeps(B)
            reference = B.sigma * B.inverse_sqrt_diagonal * explicit(u)
            error = float(jnp.linalg.norm(spectral(u) - reference) / jnp.linalg.norm(reference))
            if error > 1e-10:
                print(f"N={n}: spectral B^1/2 differs from the sweeps by {error:.1e}", file=sys.stderr)
                return 1
            row.update(sweeps_s=median_time(lambda: explicit(u), repeats=3), relative_difference=error)
        rows.append(row)

    print("\n| N | sweeps M | spectral B^1/2 | explicit sweeps | sweeps / spectral | spectral / rollout (100 steps) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sweeps, spectral = r.get("sweeps_s"), r["spectral_s"]
        explicit = "– | –" if sweeps is None else f"{sweeps * 1e3:.3f} ms | {sweeps / spectral:.0f}x"
        print(f"| {r['n']} | {r['sweeps_M']} | {spectral * 1e3:.3f} ms | {explicit} | {spectral / r['rollout_s']:.3f} |")

    gn_sizes = (64, 128, 256) if args.quick else (256, 512, 1024, 2048)
    gn_rows = []
    for n in gn_sizes:
        grid = dp.Grid1D(n, 1.0, bc="neumann")
        model = dp.Heat(grid, 0.01)
        truth = jnp.exp(-((grid.x - 0.4) ** 2) / 0.01)
        sensors = ob.PointSensors(grid, np.linspace(0.05, 0.95, 16))
        schedule = ob.ObservationSchedule.from_steps([25, 50, 75, 100], sensors, dt=model.dt)
        B = ob.DiffusionB(grid, 0.5, length)
        twin = ob.twin_experiment(model, truth, schedule, 0.02, jax.random.key(1), background=B)
        problem = da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, B, twin.background)
        solve = lambda p=problem: S.iterate(S.GaussNewton(), p, mode=S.Converged(rtol=1e-8, max_steps=20))
        history = solve().history()
        u0 = twin.background
        rollout = jax.jit(lambda x, m=model: dp.rollout(m, x, 100, save_at=(100,)))
        gn_rows.append({"n": n, "solve_s": median_time(lambda: solve().value, repeats=3),
                        "rollout_s": median_time(lambda: rollout(u0), repeats=5),
                        "outer_iterations": int(np.sum(np.isfinite(history["cost"]))) - 1,
                        "cg_iterations": int(np.nansum(history["inner_iterations"]))})
    log_n = np.log([r["n"] for r in gn_rows])
    exponent = float(np.polyfit(log_n, np.log([r["solve_s"] for r in gn_rows]), 1)[0])
    rollout_exponent = float(np.polyfit(log_n, np.log([r["rollout_s"] for r in gn_rows]), 1)[0])
    # The control is B^(-1/2)-whitened, so the inner solve's matrix is I plus a rank <= (number of readings)
    # term: CG's iterations are bounded by the readings, not by N, but grow as the shorter window (a fixed step
    # count at dt ~ 1/N^2) smooths less and leaves more of that rank above the identity.
    print("\n| N | GN solve | rollout (100 steps) | solve / rollout | outer iterations | CG iterations |")
    print("|---|---|---|---|---|---|")
    for r in gn_rows:
        print(f"| {r['n']} | {r['solve_s'] * 1e3:.1f} ms | {r['rollout_s'] * 1e3:.2f} ms | {r['solve_s'] / r['rollout_s']:.0f} "
              f"| {r['outer_iterations']} | {r['cg_iterations']} |")
    print(f"\nGN solve time ~ N^{exponent:.2f} (rollout ~ N^{rollout_exponent:.2f}) at a fixed step count")

    result = {**environment(), "quick": args.quick, "length_scale": length, "apply": rows,
              "gauss_newton": gn_rows, "solve_exponent": exponent, "rollout_exponent": rollout_exponent}
    path = args.out / f"covariance{'_quick' if args.quick else ''}.json"
    write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
