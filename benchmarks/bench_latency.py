"""Latency of `diffphys run`: cold and warm wall time, compile share and compiled programs per case;
the cost of one Gauss–Newton Hessian–vector product against one residual evaluation; what a rollout
with irregular save steps costs to compile and to run (one scan against one scan per run of equal
intervals).

Each case runs in a fresh Python process (no compiled code carried over, no persistent compilation
cache): the first `run_case` is the cold run a user waits for, the second in the same process the
warm one. Compilation is counted and timed with JAX's own monitoring events
(``diffphys._compile_monitor.CompileMonitor``: XLA programs built; tracing + lowering + XLA time).

The Hessian–vector product is that of Gauss–Newton's inner solve, $d \\mapsto J^\\top J d$, on the
case's 4D-Var problem (heat1d-sparse: linear in its initial-state control; heat2d-diffusivity:
nonlinear in its log-diffusivity control): linearised once per outer iteration (``jax.linearize`` +
``jax.linear_transpose``) and applied by CG through the solver's own operator
(``diffphys.solvers._gauss_newton.normal_operator``), so its amortised cost is one tangent-linear
and one adjoint pass; also shown composed directly, ``adjoint(tangent(d))`` (no branch between the two passes, so XLA
may fuse across them, which here is slower), and with the linearisation written inside the loop
(XLA hoists what does not depend on the loop variable, so this is not slower in practice). Each figure is the slope of the
time of ``n`` applications inside one compiled loop (n = 0 and 20, or 10), so call overhead cancels.

    python benchmarks/bench_latency.py            # heat1d-sparse, wave1d-initial, heat2d-diffusivity, advection2d-sparse
    python benchmarks/bench_latency.py --quick    # heat1d-sparse only, 200-step rollouts (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from _common import environment, median_time, write_json

CASES = ("heat1d-sparse", "wave1d-initial", "heat2d-diffusivity", "advection2d-sparse")
HVP_CASES = (("heat1d-sparse", 20), ("heat2d-diffusivity", 10))  # (case, products timed per loop)


def _child(case_name: str) -> dict:
    """Run one case twice in this (fresh) process; its timings and compile counts."""
    started = time.perf_counter()
    jax.config.update("jax_enable_x64", True)
    from diffphys._app.runner import run_case
    from diffphys._app.xla_options import choose_for
    from diffphys._compile_monitor import CompileMonitor
    from diffphys.cases import load_case

    import_s = time.perf_counter() - started
    case = load_case(case_name)
    choose_for(case)  # as `diffphys run` does, before the first computation
    runs = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as out, CompileMonitor() as monitor:
            start = time.perf_counter()
            summary = run_case(case, Path(out), progress=None)
            wall = time.perf_counter() - start
        runs.append({"wall_s": wall, "compile_s": monitor.seconds, "programs": monitor.programs,
                     "iterations": summary["iterations"]})
    return {"case": case_name, "import_s": import_s, "xla_flags": os.environ.get("XLA_FLAGS", ""), "cold": runs[0],
            "warm": runs[1]}


def _hvp_ratios(case_name: str, applications: int = 20) -> dict:
    """Seconds per residual evaluation and per Gauss–Newton product J^T J d, and their ratios."""
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from diffphys.cases import build_problem, load_case
    from diffphys.solvers._gauss_newton import normal_operator

    problem = build_problem(load_case(case_name)).fourdvar
    x, unravel = ravel_pytree(problem.zero_control())
    residual = lambda w: problem.residuals(unravel(w))
    d = jnp.sin(jnp.arange(x.size, dtype=x.dtype))

    def residual_loop(n):
        return jax.jit(lambda w: jax.lax.fori_loop(0, n, lambda i, u: u + 1e-30 * jnp.sum(residual(u)), w))

    def product_loop(n, how):
        def run(w, v, evaluate):  # evaluate: False, an argument so that the operator keeps its branch
            def normal(v):
                r, tangent = jax.linearize(residual, w)
                return normal_operator(tangent, jax.linear_transpose(tangent, w), r, 0.0, evaluate)(v)
            if how == "relinearised":
                return jax.lax.fori_loop(0, n, lambda i, u: normal(u) * 1e-3 + v, v)
            r, tangent = jax.linearize(residual, w)
            adjoint = jax.linear_transpose(tangent, w)
            product = (normal_operator(tangent, adjoint, r, 0.0, evaluate) if how == "solver"
                       else lambda u: adjoint(tangent(u))[0])  # "composed": XLA may fuse across the two
            return jax.lax.fori_loop(0, n, lambda i, u: product(u) * 1e-3 + v, v)
        return jax.jit(run)

    def slope(make, *args):
        none, many = make(0), make(applications)  # compiled once each, timed after a warm-up call
        t0 = median_time(lambda: none(*args), repeats=5)
        tn = median_time(lambda: many(*args), repeats=5)
        return max(tn - t0, 0.0) / applications

    r = slope(residual_loop, x)
    no = jnp.asarray(False)
    amortised = slope(lambda n: product_loop(n, "solver"), x, d, no)
    composed = slope(lambda n: product_loop(n, "composed"), x, d, no)
    relinearised = slope(lambda n: product_loop(n, "relinearised"), x, d, no)
    return {"case": case_name, "control_size": int(x.size), "residual_s": r, "hvp_amortised_s": amortised,
            "hvp_composed_s": composed, "hvp_relinearised_s": relinearised, "hvp_over_residual": amortised / r,
            "hvp_composed_over_residual": composed / r, "hvp_relinearised_over_residual": relinearised / r}


def _irregular_saves(scheme: str, n_steps: int, cells: int = 256) -> dict:
    """A rollout saved at irregular steps: diffphys (one scan keeping every state) against nested scans, one per
    run of equal save intervals (a plain JAX loop; what diffphys compiled before). Compile seconds and loops
    (in the lowered program) of the forward and gradient programs, and their run times."""
    import itertools

    import jax.numpy as jnp
    import numpy as np

    import diffphys as dp

    model = dp.Heat(dp.Grid1D(cells, 1.0, bc="neumann"), 0.01, scheme=scheme)
    u0 = jnp.sin(model.grid.x)
    save = tuple(int(round(f * n_steps)) for f in (0.05, 0.175, 0.25, 0.5, 0.85, 1.0))

    def nested(u):
        outputs = []
        for gap, run in itertools.groupby(np.diff((0,) + save)):
            segment = lambda z, _, gap=int(gap): (lambda w: (w, w))(
                jax.lax.scan(lambda y, _: (model.step(y), None), z, None, length=gap)[0])
            u, saved = jax.lax.scan(segment, u, None, length=len(list(run)))
            outputs.append(saved)
        return jnp.concatenate(outputs)

    row = {"scheme": scheme, "cells": cells, "steps": n_steps, "save_at": list(save)}
    for name, forward in (("diffphys", lambda u: dp.rollout(model, u, n_steps, save_at=save, check_finite=False)),
                          ("nested", nested)):
        for kind, fn in (("forward", forward), ("gradient", jax.grad(lambda u, f=forward: jnp.sum(f(u) ** 2)))):
            start = time.perf_counter()
            lowered = jax.jit(fn).lower(u0)
            compiled = lowered.compile()
            row[f"{name}_{kind}_compile_s"] = time.perf_counter() - start
            # Loops in the program diffphys hands to XLA (what XLA makes of them depends on its version and flags).
            row[f"{name}_{kind}_loops"] = lowered.as_text().count("stablehlo.while")
            row[f"{name}_{kind}_s"] = median_time(lambda: compiled(u0), repeats=5)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="heat1d-sparse only")
    parser.add_argument("--cases", nargs="*", default=None, help=f"built-in cases (default {', '.join(CASES)})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    cases = args.cases or (("heat1d-sparse",) if args.quick else CASES)
    rows = []
    for name in cases:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_s"] = time.perf_counter() - start
        rows.append(row)
    print("\n| case | process (s) | cold run (s) | compile share | programs | warm run (s) | warm programs | iterations |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cold, warm = r["cold"], r["warm"]
        print(f"| {r['case']} | {r['process_s']:.1f} | {cold['wall_s']:.2f} | {cold['compile_s'] / cold['wall_s']:.0%} | "
              f"{cold['programs']} | {warm['wall_s']:.2f} | {warm['programs']} | {cold['iterations']} |")
    jax.config.update("jax_enable_x64", True)
    hvp = [_hvp_ratios(name, applications) for name, applications in HVP_CASES[: 1 if args.quick else None]]
    print("\n| case | control size | residual | J^T J d (solver's operator) | ratio | J^T(J d) composed | ratio "
          "| J^T J d (relinearised) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for h in hvp:
        print(f"| {h['case']} | {h['control_size']} | {h['residual_s'] * 1e3:.3f} ms | "
              f"{h['hvp_amortised_s'] * 1e3:.3f} ms | {h['hvp_over_residual']:.2f} | "
              f"{h['hvp_composed_s'] * 1e3:.3f} ms | {h['hvp_composed_over_residual']:.2f} | "
              f"{h['hvp_relinearised_s'] * 1e3:.3f} ms | {h['hvp_relinearised_over_residual']:.2f} |")
    saves = [_irregular_saves(scheme, 200 if args.quick else 1000) for scheme in ("euler", "rk4")]
    print("\n| rollout, irregular saves | compile fwd + grad: diffphys / nested | loops | forward: diffphys / nested "
          "| gradient: diffphys / nested |")
    print("|---|---|---|---|---|")
    for r in saves:
        compile_d = r["diffphys_forward_compile_s"] + r["diffphys_gradient_compile_s"]
        compile_n = r["nested_forward_compile_s"] + r["nested_gradient_compile_s"]
        print(f"| heat {r['scheme']}, {r['cells']} cells, {r['steps']} steps, {len(r['save_at'])} saves "
              f"| {compile_d:.2f} / {compile_n:.2f} s | {r['diffphys_gradient_loops']} / {r['nested_gradient_loops']} "
              f"| {r['diffphys_forward_s'] * 1e3:.2f} / {r['nested_forward_s'] * 1e3:.2f} ms "
              f"({r['diffphys_forward_s'] / r['nested_forward_s']:.2f}) "
              f"| {r['diffphys_gradient_s'] * 1e3:.2f} / {r['nested_gradient_s'] * 1e3:.2f} ms "
              f"({r['diffphys_gradient_s'] / r['nested_gradient_s']:.2f}) |")
    result = {**environment(), "quick": args.quick, "cases": rows, "hvp": hvp, "irregular_saves": saves}
    path = args.out / f"latency{'_quick' if args.quick else ''}.json"
    write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
