"""Sparse heat-source recovery on the built-in case ``heat2d-source-l1``: ISTA vs FISTA vs ADMM, and what each prior gains.

The setup is the case itself, loaded with ``diffphys.cases.load_case("heat2d-source-l1")`` and
built by ``build_problem`` (the same problem ``diffphys run heat2d-source-l1`` solves): 2D heat
$\\partial_t u = \\kappa\\Delta u + s(x, y)$ on the unit square, 24 x 24 Neumann cells,
$\\kappa = 0.01$, RK4 with the case's time step, zero initial state; the unknown source $s$ is three
point sources (one cell each, amplitudes 40, 30, 25); 64 sensors (every 3rd cell) read 8 times
with $\\sigma = 0.01$: 512 observations for 576 unknowns.

**1. Solvers** at the case's prior, $\\min_s \\tfrac12\\|R^{-1/2}(y - H M(s))\\|^2 + \\lambda\\|s\\|_1 +
\\iota_{s \\ge 0}$ with $\\lambda$ = ``prior.weight`` = 0.5 (``StrongConstraint4DVar`` with ``B=None``,
``Composite(problem, Sum(L1(lambda), NonNegative()))``; the sum has an exact prox, so ISTA and FISTA
apply directly and ADMM takes it as one term). PDHG is not applicable: it is for analysis priors
$h(Kx)$ (TV) and refuses a prior without one (its error message is recorded). Each solver runs
from $s = 0$ with its defaults (step $1/L$, $L$ by 100 power iterations; ADMM's $\\rho = L$ with
residual balancing and CG inner solves to its converged-mode default 1e-3), plus ADMM with inner
solves to 1e-10 (the earlier default) to show what the inexact steps save. The first iteration
whose objective is within a relative gap $(F_k - F^*)/F^*$ of 1e-2, 1e-4, 1e-6 of the reference
optimum $F^*$ (a long FISTA run; the lowest objective any run reaches) is reported with the model
evaluations it cost. Model evaluations are passes over the window (forward rollouts,
tangent-linear and adjoint passes; for this linear model each costs about one rollout), counted
from the solvers' recorded counters and their source:

- setup (all): the power iteration for $L$, 1 forward + 101 tangent + 101 adjoint passes;
- ISTA: 1 gradient (forward + adjoint) at the start, then one per iteration (``gradients``);
- FISTA: a gradient at the extrapolated point and a cost at the new iterate per iteration
  (``gradients`` and ``costs``);
- ADMM: per iteration one linearisation (forward), one adjoint for $J^\\top r$, the CG products
  with $J^\\top J$ (one tangent + one adjoint each), and the objective at the new iterate (forward).
  The recorded ``cg_iterations`` counts CG iterations; each CG solve also does 2 more products (lineax's
  initial residual and diffphys's final residual check) and one per 10 iterations (lineax's
  residual re-stabilisation), which are added here.

The forward counts are checked against a ``jax.debug.callback`` count over each whole run. Wall
time: a run of exactly the iterations that reach the 1e-6 gap (compiled, warmed up, median of
repeats), as a ratio to FISTA's; a solver that does not reach it within its cap (ISTA 20 000,
ADMM 300 iterations) is timed once at the cap (marked "(N it.)").

**2. What each prior gains**, on the same data: L1 + non-negativity (a sweep of $\\lambda$, the
case's 0.5 among them), non-negativity alone ($\\lambda = 0$: non-negative least squares), L1 alone
(signed sources allowed: what a sparsity prior does when the sign is not known), and Gauss-Newton
on the classical problem with a Gaussian background term ``B = DiffusionB(grid, sigma_b, L)``,
background 0, for a sweep of $(\\sigma_b, L)$. Every family is tuned the same way: the row with the
lowest error against the truth (an oracle, available in a twin experiment); the discrepancy
principle's $\\lambda$ (the largest with $\\|r\\|^2 \\le N$) is reported as well. Metrics are the
case summary's (``diffphys._app.metrics.support_metrics``): $\\|s - s_t\\|/\\|s_t\\|$, support
precision and recall (support = cells whose magnitude exceeds 10 % of the true peak), and the
peak amplitude error $(\\max s - \\max s_t)/\\max s_t$.

    python benchmarks/bench_proximal_pde.py            # 24 x 24, ~15 minutes on 2 shared CPU cores
    python benchmarks/bench_proximal_pde.py --quick    # the case at 12 x 12, forward Euler, two sources,
                                                       # few iterations: about a minute (the smoke test)
    python benchmarks/bench_proximal_pde.py --out my.json

Results go to ``benchmarks/results/bench_proximal_pde[_quick].json`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffphys as dp  # noqa: E402
from diffphys import assimilate as da  # noqa: E402
from diffphys import observe as ob  # noqa: E402
from diffphys import priors as P  # noqa: E402
from diffphys import solvers as S  # noqa: E402
from diffphys._app.metrics import support_metrics  # noqa: E402
from diffphys.cases import build_problem, load_case  # noqa: E402
from _common import median_time, write_json

CASE = "heat2d-source-l1"

GAPS = (1e-2, 1e-4, 1e-6)
POWER_ITERATIONS = 100  # the solvers' default (ISTA/FISTA/ADMM power_iterations)
SUPPORT_FRACTION = 0.1


QUICK_OVERRIDES = [  # the case at 12 x 12 (cell centres (i + 1/2)/12), forward Euler, two point sources
    "grid.n=[12, 12]", 'model.scheme="euler"',
    'model.source="40 * (abs(x - 0.2917) < 0.02) * (abs(y - 0.2917) < 0.02) + 30 * (abs(x - 0.7083) < 0.02) * (abs(y - 0.625) < 0.02)"',
]


def config(quick: bool) -> dict:
    if quick:
        return {"overrides": QUICK_OVERRIDES, "lambdas": [5.0, 0.5, 0.05], "l1_only_lambdas": [10.0, 1.0],
                "sigma_b": [0.5, 1.0], "length_scales": [0.1], "caps": {"ISTA": 1000, "ADMM": 50},
                "reference_steps": 1000, "sweep_steps": 500, "repeats": 1, "time_to_gap": False}
    return {"overrides": [], "lambdas": [5.0, 2.0, 0.5, 0.1], "l1_only_lambdas": [30.0, 10.0, 3.0, 1.0, 0.3],
            "sigma_b": [0.25, 0.5, 1.0, 2.0], "length_scales": [0.025, 0.05, 0.1, 0.2],
            "caps": {"ISTA": 20000, "ADMM": 300}, "reference_steps": 4000, "sweep_steps": 6000,
            "repeats": 3, "time_to_gap": True}


class Setup(eqx.Module):
    problem: da.StrongConstraint4DVar
    truth: jax.Array
    grid: dp.Grid2D
    weight: float = eqx.field(static=True)  # the case's prior.weight


def build(cfg: dict) -> Setup:
    case = load_case(CASE, cfg["overrides"])
    built = build_problem(case)
    return Setup(built.fourdvar, jnp.asarray(built.truth_control), built.grid, float(case.config["prior"]["weight"]))


def composite(setup: Setup, lam: float, counting: bool = False, nonnegative: bool = True):
    # lambda = 0 keeps the same structure (L1(0) + non-negativity): one compiled solver for the sweep.
    prior = P.Sum(P.L1(lam), P.NonNegative()) if nonnegative else P.L1(lam)
    return S.Composite(Counted(setup.problem, jnp.asarray(counting)), prior)


def metrics(estimate, truth) -> dict:
    """The case summary's support metrics (cells whose magnitude exceeds 10 % of the true peak) and errors."""
    s, t = np.asarray(estimate), np.asarray(truth)
    support = support_metrics(t, s, SUPPORT_FRACTION)
    return {
        "relative_error": float(np.linalg.norm(s - t) / np.linalg.norm(t)),
        "precision": support["precision"] or 0.0, "recall": support["recall"] or 0.0,
        "support_size": support["estimated_support"], "true_support_size": support["true_support"],
        "peak": float(s.max()), "peak_error": float((s.max() - t.max()) / t.max()),
        "min": float(s.min()), "negative_mass_fraction": float(-s[s < 0].sum() / t.sum()),
    }


NO_STALL = 10**9  # ISTA/FISTA patience: the stall test off (one value, so one compiled solver)


ADMM_TIGHT = "ADMM (inner CG 1e-10)"


def _solver(name: str):
    return {"ISTA": lambda: S.ISTA(patience=NO_STALL), "FISTA": lambda: S.FISTA(patience=NO_STALL),
            "ADMM": lambda: S.ADMM(),
            ADMM_TIGHT: lambda: S.ADMM(inner=dp.LinearSolver(method="cg", rtol=1e-10, max_steps=300, throw=False)),
            }[name]()


def _run(name, prob, steps):
    # rtol = atol = 0 and no stall test: exactly `steps` iterations.
    return S.iterate(_solver(name), prob, mode=S.Converged(rtol=0.0, atol=0.0, max_steps=steps), throw=False)


def evaluation_counts(name: str, history: dict) -> dict[str, np.ndarray]:
    """Cumulative forward / tangent / adjoint passes after each iteration (index k), setup included."""
    k = np.arange(len(history["cost"]))
    setup_fwd, setup_tan, setup_adj = 1, POWER_ITERATIONS + 1, POWER_ITERATIONS + 1
    if name in ("ISTA", "FISTA"):
        gradients, costs = history["gradients"].astype(int), history["costs"].astype(int)
        forward, tangent, adjoint = setup_fwd + gradients + costs, setup_tan + 0 * k, setup_adj + gradients
    else:
        cg = np.diff(history["cg_iterations"].astype(int), prepend=0)  # CG iterations per ADMM iteration
        products = np.where(k > 0, cg + 2 + cg // 10, 0)
        forward = setup_fwd + 1 + 2 * k
        tangent = setup_tan + np.cumsum(products)
        adjoint = setup_adj + np.cumsum(np.where(k > 0, 1 + products, 0))
    return {"forward": forward, "tangent": tangent, "adjoint": adjoint, "total": forward + tangent + adjoint,
            "recorded_cg_iterations": history.get("cg_iterations", np.zeros(len(k))).astype(int)}


_FORWARD = [0]


def _tick():
    _FORWARD[0] += 1


class Counted(S.AbstractProblem):
    """The smooth problem with a run-time count of its residual evaluations (forward rollouts).

    ``counting`` is an array, so a counted and an uncounted run share one compiled executable; when
    off, the count costs one ``lax.cond`` per rollout (timed runs have it off).
    """

    inner: S.AbstractProblem
    counting: jax.Array

    def residuals(self, x):
        jax.lax.cond(self.counting, lambda: jax.debug.callback(_tick), lambda: None)
        return self.inner.residuals(x)

    def zero_control(self):
        return self.inner.zero_control()


def _finite_history(solution) -> dict[str, np.ndarray]:
    history = solution.history()
    n = solution.num_steps + 1
    return {name: np.asarray(v)[:n] for name, v in history.items()}


def lambda_sweep(setup: Setup, cfg: dict, nonnegative: bool = True) -> list[dict]:
    """FISTA over a lambda sweep: L1 + non-negativity (and lambda = 0, non-negativity alone), or L1 alone."""
    n_obs = setup.problem.n_observations
    rows = []
    for lam in [*cfg["lambdas"], 0.0] if nonnegative else cfg["l1_only_lambdas"]:
        start = time.perf_counter()
        sol = S.iterate(_solver("FISTA"), composite(setup, lam, nonnegative=nonnegative),
                        mode=S.Converged(rtol=1e-8, max_steps=cfg["sweep_steps"]), throw=False)
        misfit = 2.0 * float(setup.problem.cost(sol.value))
        rows.append({"lambda": lam, "iterations": sol.num_steps, "outcome": sol.outcome, "misfit_2f": misfit,
                     "misfit_over_n": misfit / n_obs, **metrics(sol.value, setup.truth)})
        print(f"  lambda {lam:g}: {sol.num_steps} iterations ({sol.outcome}), ||r||^2/N = {misfit / n_obs:.3f}, "
              f"error {rows[-1]['relative_error']:.3f} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return rows


def gaussian_sweep(setup: Setup, cfg: dict) -> list[dict]:
    p = setup.problem
    rows = []
    gn = S.GaussNewton(inner=dp.LinearSolver(method="cg", rtol=1e-10, max_steps=1000, throw=False))
    for sigma_b in cfg["sigma_b"]:
        for length in cfg["length_scales"]:
            B = ob.DiffusionB(setup.grid, sigma_b, length)
            problem = da.StrongConstraint4DVar(p.model, p.schedule, p.observations, p.R, B,
                                               jnp.zeros(setup.grid.shape), p.control_map)
            sol = S.iterate(gn, problem, mode=S.Converged(rtol=1e-9, max_steps=20), throw=False)
            estimate = problem.control(sol.value)
            misfit = float(jnp.sum(problem.observation_residuals(sol.value) ** 2))
            rows.append({"sigma_b": sigma_b, "length_scale": length, "iterations": sol.num_steps,
                         "outcome": sol.outcome, "cg_iterations": int(np.nansum(sol.history()["inner_iterations"])),
                         "misfit_over_n": misfit / p.n_observations, **metrics(estimate, setup.truth)})
            print(f"  GN sigma_b {sigma_b:g}, L {length:g}: error {rows[-1]['relative_error']:.3f}, "
                  f"recall {rows[-1]['recall']:.2f}", file=sys.stderr, flush=True)
    return rows


def compare_solvers(setup: Setup, lam: float, cfg: dict) -> dict:
    counted, plain = composite(setup, lam, counting=True), composite(setup, lam)
    runs, checks = {}, []
    # FISTA's run is the reference too (a long run; F* is the lowest objective any run reaches).
    for name, steps in (("FISTA", cfg["reference_steps"]), ("ISTA", cfg["caps"]["ISTA"]), ("ADMM", cfg["caps"]["ADMM"]),
                        (ADMM_TIGHT, cfg["caps"]["ADMM"])):
        start = time.perf_counter()
        _FORWARD[0] = 0
        sol = _run(name, counted, steps)
        jax.block_until_ready(sol.value)
        runs[name] = _finite_history(sol)
        predicted = int(evaluation_counts(name, runs[name])["forward"][-1])
        checks.append({"solver": name, "iterations": sol.num_steps, "counted": _FORWARD[0], "predicted": predicted})
        print(f"  {name}: {sol.num_steps} iterations in {time.perf_counter() - start:.1f} s (with compilation); "
              f"forward passes {_FORWARD[0]} counted, {predicted} predicted", file=sys.stderr, flush=True)
    f_star = float(min(np.nanmin(h["cost"]) for h in runs.values()))
    try:
        S.iterate(S.PDHG(), plain, mode=S.Converged(max_steps=1))
        pdhg = "ran (unexpected)"
    except ValueError as error:
        pdhg = str(error)
    rows = []
    for name, history in runs.items():
        counts = evaluation_counts(name, history)
        gap = (history["cost"] - f_star) / abs(f_star)
        reached = {}
        for target in GAPS:
            hit = np.flatnonzero(gap <= target)
            reached[f"{target:g}"] = None if not hit.size else {
                "iterations": int(hit[0]), **{key: int(v[hit[0]]) for key, v in counts.items()}}
        rows.append({"solver": name, "iterations_run": len(gap) - 1,
                     "cg_iterations_run": int(counts["recorded_cg_iterations"][-1]), "final_gap": float(max(gap[-1], 0.0)),
                     "best_gap": float(max(np.nanmin(gap), 0.0)),
                     "gap_history": [float(max(g, 0.0)) for g in gap[:: max(1, len(gap) // 200)]],
                     "to_gap": reached})
    # Wall time of a run of exactly the iterations that reach the tightest gap (compiled, warmed up,
    # median of repeats); a run that does not reach it within its cap is timed at the cap, once,
    # reusing the executable of its counted run (the count is an array: the same compiled solver).
    for row in rows:
        target = row["to_gap"][f"{GAPS[-1]:g}"]
        exact = target is not None and cfg["time_to_gap"]
        steps = target["iterations"] if exact else row["iterations_run"]
        row["timed_iterations"], row["timed_to_gap"] = steps, exact
        run = lambda name=row["solver"], steps=steps: _run(name, plain, steps).value
        if exact:
            row["time_s"] = median_time(run, cfg["repeats"])
        else:
            start = time.perf_counter()
            jax.block_until_ready(run())
            row["time_s"] = time.perf_counter() - start
        row["time_per_iteration_s"] = row["time_s"] / max(steps, 1)
        row["estimate_error"] = metrics(run(), setup.truth)["relative_error"]
        print(f"  timed {row['solver']}: {steps} iterations in {row['time_s']:.3g} s", file=sys.stderr, flush=True)
    fista = next(r for r in rows if r["solver"] == "FISTA")
    for row in rows:
        row["time_over_fista"] = row["time_s"] / fista["time_s"]
    return {"lambda": lam, "f_star": f_star, "reference": {"solver": "FISTA", "iterations": runs["FISTA"]["cost"].size - 1,
            "objective": float(np.nanmin(runs["FISTA"]["cost"])),
            "gap_to_f_star": float((np.nanmin(runs["FISTA"]["cost"]) - f_star) / abs(f_star))},
            "gaps": list(GAPS), "rows": rows, "forward_count_check": checks, "pdhg": pdhg}


def _fmt_reach(r, key):
    return "-" if r is None else f"{r[key]}"


def solver_table(result: dict) -> str:
    gaps = [f"{g:g}" for g in result["gaps"]]
    head = ("| solver | iterations run | " + " | ".join(f"iters to {g}" for g in gaps) + " | "
            + " | ".join(f"passes to {g}" for g in gaps) + f" | fwd / tan / adj to {gaps[-1]} | best gap "
            "| time (s) | time / FISTA |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        tight = r["to_gap"][gaps[-1]]
        split = "-" if tight is None else f"{tight['forward']} / {tight['tangent']} / {tight['adjoint']}"
        time_note = "" if r["timed_to_gap"] else f" ({r['timed_iterations']} it.)"
        lines.append(
            f"| {r['solver']} | {r['iterations_run']} | " + " | ".join(_fmt_reach(r["to_gap"][g], "iterations") for g in gaps)
            + " | " + " | ".join(_fmt_reach(r["to_gap"][g], "total") for g in gaps) + f" | {split} | "
            f"{r['best_gap']:.1e} | {r['time_s']:.3g}{time_note} | {r['time_over_fista']:.2f} |"
        )
    lines.append("| PDHG | not applicable: " + result["pdhg"].split(":")[1].split(";")[0].strip() + " |")
    return "\n".join(lines)


def recovery_table(rows: list[dict]) -> str:
    head = "| estimate | rel. error | precision | recall | support (true) | peak (error) | min | ‖r‖²/N |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['relative_error']:.3f} | {r['precision']:.2f} | {r['recall']:.2f} | "
            f"{r['support_size']} ({r['true_support_size']}) | {r['peak']:.2f} ({r['peak_error']:+.1%}) | "
            f"{r['min']:.2f} | {r['misfit_over_n']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the case at 12 x 12, few iterations (the smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    cfg = config(args.quick)
    setup = build(cfg)
    n_obs = setup.problem.n_observations

    def tuned(rows):
        """The oracle's row (lowest error) and the discrepancy principle's (largest lambda with ||r||^2 <= N)."""
        rows = [r for r in rows if r["lambda"] > 0]
        feasible = [r for r in rows if r["misfit_2f"] <= n_obs]
        return min(rows, key=lambda r: r["relative_error"]), max(feasible, key=lambda r: r["lambda"]) if feasible else None

    print("lambda sweep, L1 + non-negativity (FISTA):", file=sys.stderr)
    sweep = lambda_sweep(setup, cfg)
    chosen, discrepancy = tuned(sweep)
    print("lambda sweep, L1 alone (FISTA):", file=sys.stderr)
    l1_only = lambda_sweep(setup, cfg, nonnegative=False)
    l1_only_best, l1_only_discrepancy = tuned(l1_only)
    print("Gaussian B sweep (Gauss-Newton):", file=sys.stderr)
    gaussian = gaussian_sweep(setup, cfg)
    best_gaussian = min(gaussian, key=lambda r: r["relative_error"])

    print(f"solvers at the case's lambda = {setup.weight:g}:", file=sys.stderr)
    solvers = compare_solvers(setup, setup.weight, cfg)

    case_row = next(r for r in sweep if r["lambda"] == setup.weight)
    recovery = [{"label": f"L1 + s >= 0, lambda = {chosen['lambda']:g} (best of sweep"
                          + (", the case's)" if chosen is case_row else ")"), "kind": "l1", **chosen}]
    if chosen is not case_row:
        recovery.append({"label": f"L1 + s >= 0, lambda = {setup.weight:g} (the case)", "kind": "case", **case_row})
    if discrepancy is not None:
        recovery.append({"label": f"L1 + s >= 0, lambda = {discrepancy['lambda']:g} (discrepancy principle)",
                         "kind": "l1_discrepancy", **discrepancy})
    nonneg = next(r for r in sweep if r["lambda"] == 0)
    recovery.append({"label": "s >= 0 only (lambda = 0)", "kind": "nonnegative", **nonneg})
    recovery.append({"label": f"L1 alone, lambda = {l1_only_best['lambda']:g} (best of sweep)", "kind": "l1_only",
                     **l1_only_best})
    if l1_only_discrepancy is not None:
        recovery.append({"label": f"L1 alone, lambda = {l1_only_discrepancy['lambda']:g} (discrepancy principle)",
                         "kind": "l1_only_discrepancy", **l1_only_discrepancy})
    recovery.append({"label": f"Gaussian B, sigma_b = {best_gaussian['sigma_b']:g}, L = {best_gaussian['length_scale']:g} "
                              f"(best of {len(gaussian)})", "kind": "gaussian", **best_gaussian})

    n = setup.grid.shape
    print(f"\n{CASE}: {n[0]}x{n[1]} cells, {n_obs} observations, lambda = {setup.weight:g}; F* = {solvers['f_star']:.10g}")
    print("\nSolvers: iterations and model passes (forward + tangent + adjoint, setup included) to a relative "
          "objective gap; wall time of a run to the 1e-6 gap")
    print(solver_table(solvers))
    print("\nRecovery: each prior on the same data (support: cells whose magnitude exceeds 10% of the true peak)")
    print(recovery_table(recovery))
    print("\nlambda sweep, L1 + s >= 0:")
    print(recovery_table([{"label": f"lambda = {r['lambda']:g}", **r} for r in sweep]))
    print("\nlambda sweep, L1 alone:")
    print(recovery_table([{"label": f"lambda = {r['lambda']:g}", **r} for r in l1_only]))
    print("\nGaussian B sweep:")
    print(recovery_table([{"label": f"sigma_b = {r['sigma_b']:g}, L = {r['length_scale']:g}", **r} for r in gaussian]))

    device = jax.devices()[0]
    result = {
        "benchmark": "bench_proximal_pde", "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "diffphys": dp.__version__},
        "device": {"backend": jax.default_backend(), "description": str(device)}, "dtype": "float64",
        "setup": {**{k: v for k, v in cfg.items() if k not in ("caps",)}, "caps": cfg["caps"],
                  "case": CASE, "grid": list(n), "n_observations": n_obs, "n_unknowns": int(np.prod(n)),
                  "support_fraction": SUPPORT_FRACTION,
                  "truth_peak": float(setup.truth.max()), "truth_support": int((setup.truth > 0).sum())},
        "lambda": {"case": setup.weight, "best": chosen["lambda"], "rule": "best: lowest relative error of the sweep "
                   "(oracle; the same rule as for the Gaussian B)",
                   "discrepancy_principle": None if discrepancy is None else discrepancy["lambda"],
                   "l1_only_best": l1_only_best["lambda"],
                   "l1_only_discrepancy_principle": None if l1_only_discrepancy is None else l1_only_discrepancy["lambda"],
                   "lambda_max": float(jnp.max(jnp.abs(jax.grad(setup.problem.cost)(setup.problem.zero_control()))))},
        "solvers": solvers, "lambda_sweep": sweep, "l1_only_sweep": l1_only, "gaussian_sweep": gaussian,
        "recovery": recovery,
    }
    suffix = "_quick" if args.quick else ""
    out = args.out or Path(__file__).resolve().parent / "results" / f"bench_proximal_pde{suffix}.json"
    write_json(out, result)
    counts_ok = all(c["counted"] == c["predicted"] for c in solvers["forward_count_check"])
    print(f"\nwrote {out}; forward counts match the run-time count: {counts_ok}")
    return 0 if counts_ok else 1


if __name__ == "__main__":
    sys.exit(main())
