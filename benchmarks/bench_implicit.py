"""Implicit heat steps: gradient by the implicit function theorem (IFT) vs backpropagation through CG.

2D heat on 256x256 (Dirichlet, kappa = 0.5 + 0.25 sin(3x) sin(2y)), backward Euler at 100x the
explicit stability limit. For a CG budget of K = 10, 50, 200 iterations (rtol far below reach, so
every solve runs exactly K iterations):

- **IFT**: ``diffphys.Heat(..., scheme=BackwardEuler(...))``; reverse mode is one transposed CG
  solve (K iterations) per step, nothing of the forward iterations stored;
- **unrolled**: the same CG (``cg_unrolled`` of ``tests/reference.py``) differentiated through its
  iterations, which stores every iterate.

Two workloads: one step, and a rollout of 100 steps (both gradients of ``sum(u_final**2)`` with
respect to (kappa, u0)). Memory is XLA's compiled memory analysis (temp + arguments + outputs);
time is the median of repeats after a warm-up; gradients too large for this machine are compiled
and measured, not run. Prints a table and writes ``benchmarks/results/implicit_<dtype>.json``.

    python benchmarks/bench_implicit.py            # float64
    python benchmarks/bench_implicit.py --f32      # float32
    python benchmarks/bench_implicit.py --quick    # 32x32, 10 steps, one timed call: a smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from bench_steppers import _memory_analysis, memory_budget_bytes
from _common import median_time, write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--f32", action="store_true", help="float32 (default float64: CG with an out-of-reach tolerance can break down in float32)")
    parser.add_argument("--quick", action="store_true", help="32x32, 10 rollout steps and one timed call per program (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.x64 = not args.f32
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import diffphys as dp
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's references
    from reference import cg_unrolled
    from diffphys._stencil import div_kappa_grad

    n = 32 if args.quick else 256
    repeats = 1 if args.quick else 3
    n_steps = 10 if args.quick else 100
    budgets = (10, 50) if args.quick else (10, 50, 200)
    dtype = jnp.float64 if args.x64 else jnp.float32
    grid = dp.Grid2D(n, n, (1.0, 1.0), bc="dirichlet")
    x, y = grid.coordinates
    kappa = (0.5 + 0.25 * jnp.sin(3 * x) * jnp.sin(2 * y)).astype(dtype)
    u0 = (jnp.sin(jnp.pi * x) * jnp.sin(jnp.pi * y) + 0.1 * jnp.sin(7 * x)).astype(dtype)
    # A rough source keeps every step's right-hand side rough, so CG needs its K iterations throughout.
    source = (0.1 * jax.random.normal(jax.random.key(0), grid.shape)).astype(dtype)
    dt = 100 * dp.Heat(grid, kappa, scheme="euler").max_stable_dt
    budget_bytes = memory_budget_bytes()
    rows = []

    for steps in (1, n_steps):
        for k in budgets:
            newton = dp.Newton(linear_solver=dp.LinearSolver(rtol=1e-30 if args.x64 else 1e-20, max_steps=k, throw=False), throw=False)
            scheme = dp.BackwardEuler(newton)

            def ift_final(kappa, u0, scheme=scheme):
                model = dp.Heat(grid, kappa, dt=dt, source=source, scheme=scheme)
                return dp.rollout(model, u0, steps, check_finite=False)[-1]

            def unrolled_final(kappa, u0, k=k):
                zero = div_kappa_grad(jnp.zeros_like(u0), kappa, grid)
                matvec = lambda v: v - dt * (div_kappa_grad(v, kappa, grid) - zero)
                body = lambda u, _: (cg_unrolled(matvec, u + dt * (zero + source), k), None)
                return jax.lax.scan(body, u0, None, length=steps)[0]

            for name, final in (("ift", ift_final), ("unrolled", unrolled_final)):
                loss = lambda kappa, u0, final=final: jnp.sum(final(kappa, u0) ** 2)
                fwd = jax.jit(final).lower(kappa, u0).compile()
                grad = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(kappa, u0).compile()
                row = {"workload": f"{steps} step" + ("s" if steps > 1 else ""), "cg_iterations": k, "gradient": name}
                row["grad_memory_bytes"] = _memory(grad)
                row["forward_memory_bytes"] = _memory(fwd)
                if row["grad_memory_bytes"] is not None and budget_bytes and row["grad_memory_bytes"] > budget_bytes:
                    row["forward_s"] = row["grad_s"] = None
                    row["note"] = "not run: gradient memory above half the machine's"
                else:
                    row["forward_s"] = median_time(lambda: fwd(kappa, u0), repeats)
                    row["grad_s"] = median_time(lambda: grad(kappa, u0), repeats)
                    row["finite"] = bool(jnp.all(jnp.isfinite(fwd(kappa, u0))))
                rows.append(row)
                print(_line(row), flush=True)

    # Sanity: at convergence the two gradients agree (small grid, tight CG).
    args_ok = _check_agreement(dp, cg_unrolled, div_kappa_grad, dtype)
    result = {
        "benchmark": "implicit", "grid": [n, n], "rollout_steps": n_steps, "dt_over_explicit_limit": 100,
        "dtype": str(jnp.dtype(dtype)), "backend": jax.default_backend(), "device": str(jax.devices()[0]),
        "jax": jax.__version__, "python": platform.python_version(), "agreement": args_ok, "rows": rows,
    }
    _print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"implicit_{jnp.dtype(dtype).name}{'_quick' if args.quick else ''}.json"
    write_json(path, result)
    print(f"wrote {path}")
    return 0


def _check_agreement(dp, cg_unrolled, div_kappa_grad, dtype) -> dict:
    grid = dp.Grid2D(24, 24, (1.0, 1.0), bc="dirichlet")
    kappa = 0.5 + 0.25 * jnp.sin(3 * grid.coordinates[0])
    u0 = jnp.sin(jnp.pi * grid.coordinates[0]).astype(dtype)
    kappa = kappa.astype(dtype)
    dt = 0.01
    tight = dp.BackwardEuler(dp.Newton(linear_solver=dp.LinearSolver(rtol=1e-14, max_steps=2000)))
    g_ift = jax.grad(lambda k: jnp.sum(dp.Heat(grid, k, dt=dt, scheme=tight).step(u0) ** 2))(kappa)

    def unrolled(k):
        zero = div_kappa_grad(jnp.zeros_like(u0), k, grid)
        return jnp.sum(cg_unrolled(lambda v: v - dt * (div_kappa_grad(v, k, grid) - zero), u0 + dt * zero, 300) ** 2)

    g_unrolled = jax.grad(unrolled)(kappa)
    rel = float(jnp.max(jnp.abs(g_ift - g_unrolled)) / jnp.max(jnp.abs(g_unrolled)))
    print(f"IFT vs unrolled-CG gradient at convergence (24x24): max relative difference {rel:.1e}")
    return {"max_relative_difference": rel}


def _memory(exe) -> int | None:
    """Temp + argument + output bytes from XLA's compiled memory analysis (None if unavailable)."""
    analysis = _memory_analysis(exe)
    return None if analysis is None else sum(analysis.values())


def _fmt_bytes(b):
    return "-" if b is None else f"{b / 2**20:9.1f} MiB"


def _line(row) -> str:
    t = "-" if row["grad_s"] is None else f"{row['grad_s']:.3f}s"
    return f"  {row['workload']:>9} K={row['cg_iterations']:<4} {row['gradient']:>8}: grad memory {_fmt_bytes(row['grad_memory_bytes'])}, grad {t}"


def _print_table(rows) -> None:
    print()
    print("| workload | CG iterations K | gradient | grad memory | grad memory / forward | forward | grad | grad / forward |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio_mem = (
            f"{r['grad_memory_bytes'] / r['forward_memory_bytes']:.1f}"
            if r["grad_memory_bytes"] and r["forward_memory_bytes"] else "-"
        )
        fwd = "-" if r["forward_s"] is None else f"{r['forward_s'] * 1e3:.1f} ms"
        grd = "-" if r["grad_s"] is None else f"{r['grad_s'] * 1e3:.1f} ms"
        ratio = "-" if r["grad_s"] is None else f"{r['grad_s'] / r['forward_s']:.2f}"
        print(
            f"| {r['workload']} | {r['cg_iterations']} | {r['gradient']} | {_fmt_bytes(r['grad_memory_bytes']).strip()} "
            f"| {ratio_mem} | {fwd} | {grd} | {ratio} |"
        )


if __name__ == "__main__":
    sys.exit(main())
