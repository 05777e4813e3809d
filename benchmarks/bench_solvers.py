"""4D-Var solvers side by side on the heat cases: diffphys Gauss–Newton vs L-BFGS vs optimistix.

Problems: the built-in cases ``heat1d-sparse`` (initial state, 128 cells, linear: one
Gauss–Newton step is exact) and ``heat2d-diffusivity`` (log κ(x, y) on 32 x 32 cells, nonlinear),
at full size (``--quick``: reduced). Solvers, all on the same whitened residuals from the same start:

- **diffphys GN**: ``gauss_newton`` (Levenberg–Marquardt, matrix-free CG inner solves);
- **L-BFGS**: ``diffphys.solvers.LBFGS`` (optax's L-BFGS direction, a strong-Wolfe line search, the
  cost and its gradient jitted in one function);
- **optimistix GN**: ``optimistix.GaussNewton`` with ``lineax.Normal(lineax.CG)`` (matrix-free; its own stopping
  rule on step and cost) and, for reference, ``optimistix.LevenbergMarquardt``.

Every solver runs to the same final cost: within 1e-6 (relative) of a reference minimum from a
tight Gauss–Newton solve. For each solver the loosest of a ladder of its own tolerances that
reaches that cost is used; the wall time of that run (compiled, median of repeats) is reported
with its ratio to diffphys GN. "rollouts" counts the forward runs of the model over the window
(residual evaluations; a debug callback, in a separate, untimed run); tangent-linear and adjoint
sweeps are not counted there (GN: two per CG iteration; L-BFGS: one adjoint per rollout).

    python benchmarks/bench_solvers.py            # full size, a few minutes on 2 CPU cores
    python benchmarks/bench_solvers.py --quick    # reduced sizes (a smoke run)
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import equinox as eqx
import jax
from _common import median_time, write_json

from diffphys.solvers import AbstractProblem

TARGET = 1e-6
LADDER = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
QUICK = {"heat1d-sparse": ["grid.n=32", "observations.every=0.05"],
         "heat2d-diffusivity": ["grid.n=[12, 12]", "observations.stride=2", "observations.offset=0",
                                "observations.every=0.2"]}

_COUNT = [0]


def _tick():
    _COUNT[0] += 1


class _Counting(AbstractProblem):
    """A 4D-Var problem whose residual evaluations (= forward rollouts) are counted at run time."""

    problem: object

    def residuals(self, v):
        jax.debug.callback(_tick)
        return self.problem.residuals(v)

    def zero_control(self):
        return self.problem.zero_control()


def _solvers():
    import lineax as lx
    import optimistix as optx

    from diffphys import solvers as S

    def gn(problem, tol):
        result = S.iterate(S.GaussNewton(), problem, mode=S.Converged(rtol=tol, max_steps=100), throw=False)
        return result.value, {"iterations": result.num_steps,
                              "cg_iterations": int(result.history()["inner_iterations"].sum())}

    def lbfgs(problem, tol):
        result = S.iterate(S.LBFGS(), problem, mode=S.Converged(rtol=tol, max_steps=2000), throw=False)
        return result.value, {"iterations": result.num_steps}

    def optimistix(kind):
        @eqx.filter_jit
        def run(problem, tol):
            solver = kind(rtol=tol, atol=tol, linear_solver=lx.Normal(lx.CG(rtol=1e-8, atol=1e-12)))
            return optx.least_squares(lambda v, p: p.residuals(v), solver, problem.zero_control(), problem,
                                      max_steps=500, throw=False)

        def solve(problem, tol):
            sol = run(problem, tol)
            return sol.value, {"iterations": int(sol.stats["num_steps"])}

        return solve

    return {"diffphys GN (LM)": gn, "L-BFGS (optax, jitted)": lbfgs,
            "optimistix GaussNewton (Normal CG)": optimistix(optx.GaussNewton),
            "optimistix LevenbergMarquardt (Normal CG)": optimistix(optx.LevenbergMarquardt)}


def compare(name: str, problem, skip=()) -> list[dict]:
    from diffphys import solvers as S

    reference = S.iterate(S.GaussNewton(), problem, mode=S.Converged(rtol=1e-12, max_steps=200), throw=False)
    j_star = float(problem.cost(reference.value))
    rows = []
    for solver, solve in _solvers().items():
        if any(word in solver for word in skip):
            continue
        chosen = None
        for tol in LADDER:
            v, info = solve(problem, tol)
            cost = float(problem.cost(v))
            if cost <= j_star * (1 + TARGET):
                chosen = (tol, v, info, cost)
                break
        if chosen is None:
            rows.append({"problem": name, "solver": solver, "reached": False, "cost": cost, "cost_gap": cost / j_star - 1})
            print(f"  {solver}: did not reach the target cost (gap {cost / j_star - 1:.1e} at tolerance {LADDER[-1]:g})")
            continue
        tol, v, info, cost = chosen
        elapsed = median_time(lambda: solve(problem, tol)[0])
        _COUNT[0] = 0
        jax.block_until_ready(solve(_Counting(problem), tol)[0])
        rows.append({"problem": name, "solver": solver, "reached": True, "tolerance": tol, "time_s": elapsed,
                     "cost": cost, "cost_gap": cost / j_star - 1, "rollouts": _COUNT[0], **info})
        print(f"  {solver}: tolerance {tol:g}, {elapsed:.3f} s, {_COUNT[0]} rollouts", flush=True)
    base = next(r["time_s"] for r in rows if r["solver"].startswith("diffphys"))
    for r in rows:
        if r["reached"]:
            r["time_ratio_to_diffphys_gn"] = r["time_s"] / base
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes")
    parser.add_argument("--heat2d-cells", type=int, default=None,
                        help="cells per side of heat2d-diffusivity (default: the case's 32; the peers need minutes there)")
    parser.add_argument("--skip", nargs="*", default=(), help="solver names to leave out (substrings)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    from diffphys.cases import build_problem, load_case

    rows = []
    for name, quick in QUICK.items():
        overrides = quick if args.quick else []
        if name == "heat2d-diffusivity" and args.heat2d_cells and not args.quick:
            overrides = [f"grid.n=[{args.heat2d_cells}, {args.heat2d_cells}]", "observations.stride=2",
                         "observations.offset=0"]
        problem = build_problem(load_case(name, overrides))
        print(f"{name}: {problem.grid.shape} cells, {problem.n_steps} steps, {problem.fourdvar.n_observations} observations",
              flush=True)
        rows += compare(name, problem.fourdvar, args.skip)

    print(f"\nEach solver to the same final cost (within {TARGET:g} of the minimum):\n")
    print("| problem | solver | its tolerance | iterations | rollouts | time | time / diffphys GN | cost gap |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["reached"]:
            print(f"| {r['problem']} | {r['solver']} | - | - | - | not reached | - | {r['cost_gap']:.1e} |")
            continue
        print(f"| {r['problem']} | {r['solver']} | {r['tolerance']:g} | {r['iterations']} | {r['rollouts']} | "
              f"{r['time_s'] * 1e3:.1f} ms | {r['time_ratio_to_diffphys_gn']:.2f} | {r['cost_gap']:.1e} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"solvers{'_quick' if args.quick else ''}.json"
    write_json(path, {"benchmark": "solvers", "target": TARGET, "rows": rows, "quick": args.quick,
                      "heat2d_cells": args.heat2d_cells, "backend": jax.default_backend(),
                      "device": str(jax.devices()[0]), "jax": jax.__version__, "python": platform.python_version()})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
