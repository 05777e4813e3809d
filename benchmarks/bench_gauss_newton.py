"""Gauss–Newton 4D-Var: hypergradient time and memory, implicit function theorem vs unrolled layers.

Problem: infer log κ(x, y) on a 2D heat model (Neumann walls, RK4) from sensors on every 4th cell
at 4 times (a twin experiment; background κ = 0.02 everywhere, truth 0.02 exp(0.4 sin sin)).

The hypergradient of ``|κ_a - κ_true|²`` with respect to (R's σ, the observations): by the implicit
function theorem at the converged analysis, and by backpropagation through K unrolled Gauss–Newton
layers (``learn.UnrolledSolver``, K = 5, 10, 20, 40; each layer checkpointed). Memory from XLA's compiled memory analysis;
time the median of repeats. (The solvers themselves are compared in ``bench_solvers.py``.)

    python benchmarks/bench_gauss_newton.py            # 48x48
    python benchmarks/bench_gauss_newton.py --quick    # 16x16, a smoke run
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
from bench_steppers import _memory_analysis
from _common import median_time, write_json


def _memory(exe) -> int | None:
    analysis = _memory_analysis(exe)
    return None if analysis is None else sum(analysis.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x16 grid, K = 5, 10")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import diffphys as dp
    from diffphys import assimilate as da
    from diffphys import learn as dl
    from diffphys import observe as ob

    n = 16 if args.quick else 48
    budgets = (5, 10) if args.quick else (5, 10, 20, 40)
    grid = dp.Grid2D(n, n, (1.0, 1.0), bc="neumann")
    x, y = grid.coordinates
    kappa_true = 0.02 * jnp.exp(0.4 * jnp.sin(2 * jnp.pi * x) * jnp.sin(2 * jnp.pi * y))
    u0 = jnp.cos(jnp.pi * x) * jnp.cos(2 * jnp.pi * y) + 0.5 * jnp.cos(3 * jnp.pi * x)
    model = dp.Heat(grid, kappa_true, dt=0.9 * dp.Heat(grid, 0.06).max_stable_dt)
    n_steps = 60
    schedule = ob.ObservationSchedule.from_steps([15, 30, 45, 60], ob.subsample(grid, 4), dt=model.dt)
    sigma = 0.002
    twin = ob.twin_experiment(model, u0, schedule, sigma, jax.random.key(1))
    control = da.Parameter("kappa", u0, transform="log")
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations, ob.DiagonalR(sigma),
                                       ob.DiffusionB(grid, 0.5, 0.15), jnp.log(jnp.full(grid.shape, 0.02)), control)

    def kappa_error(v):
        return float(jnp.linalg.norm(problem.model_for(v).kappa - kappa_true) / jnp.linalg.norm(kappa_true))

    print(f"2D heat {n}x{n}, {n_steps} steps, {int(problem.n_observations)} observations; "
          f"background kappa error {kappa_error(problem.zero_control()):.3f}")

    # Hypergradients (the solvers are compared in bench_solvers.py).
    mode = dp.solvers.Converged(rtol=1e-6, max_steps=50)
    def loss(theta, solve):
        sig, obs = theta
        p = eqx.tree_at(lambda q: (q.R.sigma, q.observations), problem, (sig, obs))
        return jnp.sum((p.model_for(solve(p)).kappa - kappa_true) ** 2)

    theta = (problem.R.sigma, problem.observations)
    solves = {"converged (IFT)": lambda p: da.gauss_newton(p, mode=mode, throw=False).value}
    layer = dp.solvers.GaussNewton(globalization="none", damping=1e-3,
                                   inner=dp.LinearSolver(method="cg", rtol=1e-8, max_steps=50, throw=False))
    for k in budgets:
        solves[f"unrolled K={k}"] = dl.UnrolledSolver(layer, k)
    rows = []
    reference = None
    for name, solve in solves.items():
        fwd = jax.jit(lambda t, solve=solve: loss(t, solve)).lower(theta).compile()
        grad = jax.jit(jax.grad(lambda t, solve=solve: loss(t, solve))).lower(theta).compile()
        g = grad(theta)
        reference = g if reference is None else reference
        diff = float(jnp.linalg.norm(g[1] - reference[1]) / jnp.linalg.norm(reference[1]))
        row = {"gradient": name, "grad_memory_bytes": _memory(grad), "forward_memory_bytes": _memory(fwd),
               "forward_s": median_time(lambda fwd=fwd: fwd(theta)), "grad_s": median_time(lambda grad=grad: grad(theta)),
               "loss": float(fwd(theta)), "difference_to_ift": diff}
        rows.append(row)
    print("\n| hypergradient | grad memory | grad memory / forward | forward | grad | grad / forward | loss | rel. difference to IFT |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = "-" if r["grad_memory_bytes"] is None else f"{r['grad_memory_bytes'] / 2**20:.1f} MiB"
        ratio = "-" if not (r["grad_memory_bytes"] and r["forward_memory_bytes"]) else \
            f"{r['grad_memory_bytes'] / r['forward_memory_bytes']:.1f}"
        print(f"| {r['gradient']} | {mem} | {ratio} | {r['forward_s'] * 1e3:.0f} ms | {r['grad_s'] * 1e3:.0f} ms | "
              f"{r['grad_s'] / r['forward_s']:.2f} | {r['loss']:.4e} | {r['difference_to_ift']:.1e} |")

    result = {"benchmark": "gauss_newton", "grid": [n, n], "n_steps": n_steps, "n_observations": int(problem.n_observations),
              "backend": jax.default_backend(), "device": str(jax.devices()[0]), "jax": jax.__version__,
              "python": platform.python_version(), "hypergradients": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gauss_newton{'_quick' if args.quick else ''}.json"
    write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
