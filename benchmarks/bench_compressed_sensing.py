"""Compressed sensing: iterations to -35 dB NMSE for ISTA, FISTA and AMP; AMP's state evolution; time per iteration.

The standard setup of Borgerding, Schniter & Rangan, "AMP-inspired deep networks for sparse linear
inverse problems", IEEE TSP 65 (2017) 4293-4308 (their ``ista_fista_amp.m``): A is 250 x 500 with
i.i.d. N(0, 1/250) entries, x Bernoulli-Gaussian (p = 0.1, N(0, 1) non-zeros), SNR 40 dB, L test
signals (default 100), all drawn with NumPy's legacy ``np.random.RandomState(1)`` in the order
A, then the support (uniform < p) and amplitudes of the (N, L) signals, then the (M, L) noise. The
noise variance is from the *realised* signal power, sigma_w^2 = mean((A X)^2) * 10^(-SNR/10) over
all test signals (the paper's nominal p N / M * 10^(-SNR/10) is printed next to it).

- AMP: soft thresholding at theta_k = alpha ||z_k|| / sqrt(M), alpha = 1.1402 (the paper's), with the
  Onsager term; x_0 = 0.
- ISTA / FISTA (Beck-Teboulle momentum) with step 1/L, L = ||A||_2^2, on the LASSO with the
  paper's lambda: for each signal, AMP's calibrated lambda = alpha sigma_hat (1 - ||x_hat||_0 / M) at
  AMP's last iterate (Montanari 2012; Bayati & Montanari 2012).
- NMSE per iteration: the mean over signals of ||x_k - x||^2 / ||x||^2, in dB; "iterations to -35 dB"
  is the first k where it is below -35 dB. Published (the paper): ISTA 3420, FISTA 202, AMP 25; an
  independent NumPy re-run gave 3748, 202, 26. Goal: within 15 %.

Each method runs as a NumPy reference, a plain fused JAX loop (``lax.scan``, batched over the
signals), and diffphys (``diffphys.solvers.AMP``; its own ``init``/``step`` scanned for the NMSE
history, ``iterate(..., mode=Unrolled(K))`` vmapped over the signals for the time and the final
iterate). diffphys ``ISTA``/``FISTA`` rows appear when ``diffphys.solvers`` has them.

Also: AMP's state evolution (``diffphys.solvers.amp_state_evolution``) against the measured NMSE,
the gap in dB at every iteration, at N = 500 and at N = 5000 (M = 2500; the finite-size effect), and
time per iteration against NumPy and the fused JAX loop (median of repeats, compiled, float64).

    python benchmarks/bench_compressed_sensing.py            # ~2-3 minutes on 2 CPU cores
    python benchmarks/bench_compressed_sensing.py --quick    # small sizes, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffphys  # noqa: E402
from diffphys import priors as P  # noqa: E402
from diffphys import solvers as S  # noqa: E402
from _common import median_time, write_json

TARGET_DB = -35.0
ALPHA = 1.1402
PUBLISHED = {"ISTA": 3420, "FISTA": 202, "AMP": 25}
RERUN = {"ISTA": 3748, "FISTA": 202, "AMP": 26}
GOAL = 0.15


# -- data -----------------------------------------------------------------------------------------

def make_data(m: int, n: int, signals: int, p: float = 0.1, snr_db: float = 40.0, seed: int = 1):
    rng = np.random.RandomState(seed)
    a = rng.normal(size=(m, n), scale=1.0 / np.sqrt(m))
    x = (rng.uniform(0, 1, (n, signals)) < p) * rng.normal(0, 1, (n, signals))
    ax = a @ x
    noise_variance = float(np.mean(ax ** 2)) * 10 ** (-snr_db / 10)
    y = ax + np.sqrt(noise_variance) * rng.normal(0, 1, (m, signals))
    return {"A": a, "X": x, "Y": y, "noise_variance": noise_variance,
            "nominal_noise_variance": p * n / m * 10 ** (-snr_db / 10), "p": p}


def nmse_db(xs, x):
    """Mean over signals of ||x_k - x||^2 / ||x||^2, in dB; xs: (K, N, L)."""
    err = np.sum((np.asarray(xs) - x[None]) ** 2, axis=1) / np.sum(x ** 2, axis=0)[None]
    return 10 * np.log10(np.mean(err, axis=1))


def first_below(curve_db, target=TARGET_DB):
    """The iteration (1-based, curve_db[k-1] is after k iterations) where the curve first drops below target."""
    hits = np.nonzero(np.asarray(curve_db) < target)[0]
    return int(hits[0]) + 1 if hits.size else None


def _eta(r, t):
    return np.sign(r) * np.maximum(np.abs(r) - t, 0.0)


# -- NumPy references ----------------------------------------------------------------------------

def amp_numpy(a, y, iterations, alpha=ALPHA, x_true=None):
    m = a.shape[0]
    x = np.zeros((a.shape[1], y.shape[1]))
    z = y.copy()
    curve = []
    for _ in range(iterations):
        sigma = np.sqrt(np.sum(z ** 2, axis=0) / m)
        r = x + a.T @ z
        x = _eta(r, alpha * sigma)
        omega = np.count_nonzero(x, axis=0) / m
        z = y - a @ x + omega * z
        if x_true is not None:
            curve.append(nmse_db(x[None], x_true)[0])
    sigma = np.sqrt(np.sum(z ** 2, axis=0) / m)
    lam = alpha * sigma * (1 - np.count_nonzero(x, axis=0) / m)
    return x, np.asarray(curve), lam


def ista_numpy(a, y, lam, iterations, lipschitz, x_true=None, fast=False, stop_below=None):
    x = np.zeros((a.shape[1], y.shape[1]))
    v, t = x, 1.0
    curve = []
    for _ in range(iterations):
        new = _eta(v + a.T @ (y - a @ v) / lipschitz, lam / lipschitz)
        if fast:
            t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            v = new + ((t - 1) / t_next) * (new - x)
            t = t_next
        else:
            v = new
        x = new
        if x_true is not None:
            curve.append(nmse_db(x[None], x_true)[0])
            if stop_below is not None and curve[-1] < stop_below:
                break
    return x, np.asarray(curve)


# -- plain fused JAX loops (batched over signals) ---------------------------------------------------

def _soft(r, t):
    return jnp.sign(r) * jnp.maximum(jnp.abs(r) - t, 0.0)


def _nmse_lin(x, x_true):
    return jnp.mean(jnp.sum((x - x_true) ** 2, axis=0) / jnp.sum(x_true ** 2, axis=0))


@jax.jit
def _amp_jax_body(a, y, x, z, alpha):
    m = a.shape[0]
    sigma = jnp.sqrt(jnp.sum(z ** 2, axis=0) / m)
    r = x + a.T @ z
    x = _soft(r, alpha * sigma)
    omega = jnp.sum(x != 0, axis=0) / m
    return x, y - a @ x + omega * z


def amp_jax(iterations: int, with_curve: bool):
    @jax.jit
    def run(a, y, x_true):
        def body(carry, _):
            x, z = _amp_jax_body(a, y, *carry, ALPHA)
            return (x, z), (_nmse_lin(x, x_true) if with_curve else None)

        (x, z), curve = jax.lax.scan(body, (jnp.zeros((a.shape[1], y.shape[1])), y), None, length=iterations)
        return x, z, curve

    return run


def ista_jax(iterations: int, fast: bool, with_curve: bool):
    @jax.jit
    def run(a, y, lam, lipschitz, x_true):
        def body(carry, _):
            x, v, t = carry
            new = _soft(v + a.T @ (y - a @ v) / lipschitz, lam / lipschitz)
            if fast:
                t_next = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
                v = new + ((t - 1) / t_next) * (new - x)
            else:
                t_next, v = t, new
            return (new, v, t_next), (_nmse_lin(new, x_true) if with_curve else None)

        x0 = jnp.zeros((a.shape[1], y.shape[1]))
        (x, _, _), curve = jax.lax.scan(body, (x0, x0, jnp.asarray(1.0)), None, length=iterations)
        return x, curve

    return run


# -- diffphys -------------------------------------------------------------------------------------

def diffphys_history(solver, make_problem, iterations: int):
    """The NMSE after each of K iterations of a diffphys solver (its own init/step scanned, vmapped over the
    signals; each iterate's squared error is reduced inside the scan, so memory does not grow with K x L)."""

    @jax.jit
    def run(a, ys, lams, x_true):
        def one(y, lam, truth):
            problem = make_problem(a, y, lam)
            x0 = problem.zero_control()
            params = solver.default_params(x0)
            state = solver.init(problem, x0, params)

            def body(state, _):
                state = solver.step(problem, state, params)
                return state, jnp.sum((solver.value(state) - truth) ** 2)

            state, errors = jax.lax.scan(body, state, None, length=iterations)
            return errors / jnp.sum(truth ** 2), solver.value(state)

        errors, x = jax.vmap(one, in_axes=(1, 0, 1), out_axes=(1, 1))(ys, lams, x_true)  # (K, L), (N, L)
        return jnp.mean(errors, axis=1), x

    return run


def diffphys_unrolled(solver, make_problem, iterations: int):
    """The final iterate of ``iterate(solver, problem, mode=Unrolled(K))`` for each signal (vmapped)."""

    @jax.jit
    def run(a, ys, lams):
        def one(y, lam):
            return S.iterate(solver, make_problem(a, y, lam), mode=S.Unrolled(iterations)).value

        return jax.vmap(one, in_axes=(1, 0), out_axes=1)(ys, lams)

    return run


def _lls(a, y, lam):
    return S.LinearLeastSquares(a, y)


def _lasso(a, y, lam):
    return S.Composite(S.LinearLeastSquares(a, y), P.L1(lam))


def diffphys_proximal_solvers():
    """diffphys ISTA/FISTA if they exist on this branch ({} otherwise)."""
    found = {}
    for name in ("ISTA", "FISTA"):
        cls = getattr(S, name, None)
        if cls is not None:
            try:
                found[name] = cls()
            except Exception as exc:  # pragma: no cover - depends on their constructor
                print(f"diffphys {name} exists but {name}() failed: {exc}", file=sys.stderr)
    return found


# -- timing ---------------------------------------------------------------------------------------

def _finite_list(values):
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


# -- the experiments ------------------------------------------------------------------------------

def _lambda_from_amp(x, z, m):
    """Each signal's calibrated LASSO lambda = alpha sigma_hat (1 - ||x||_0 / M) at AMP's last iterate."""
    x, z = np.asarray(x), np.asarray(z)
    return ALPHA * np.sqrt(np.sum(z ** 2, axis=0) / m) * (1 - np.count_nonzero(x, axis=0) / m)


def iterations_to_target(data, caps, numpy_signals):
    """NMSE curves: JAX loop and diffphys on every signal, NumPy on the first ``numpy_signals``."""
    a, x, y = data["A"], data["X"], data["Y"]
    m = a.shape[0]
    lipschitz = float(np.linalg.norm(a, 2) ** 2)
    aj, yj, xj = jnp.asarray(a), jnp.asarray(y), jnp.asarray(x)
    curves = {}
    x_amp, z_amp, c = amp_jax(caps["AMP"], True)(aj, yj, xj)
    curves[("AMP", "jax loop")] = 10 * np.log10(np.asarray(c))
    lam = _lambda_from_amp(x_amp, z_amp, m)
    lams = jnp.asarray(lam)
    c, _ = diffphys_history(S.AMP(), _lls, caps["AMP"])(aj, yj, lams, xj)
    curves[("AMP", "diffphys")] = 10 * np.log10(np.asarray(c))
    for name, fast in (("ISTA", False), ("FISTA", True)):
        _, c = ista_jax(caps[name], fast, True)(aj, yj, lams, lipschitz, xj)
        curves[(name, "jax loop")] = 10 * np.log10(np.asarray(c))
    for name, solver in diffphys_proximal_solvers().items():
        c, _ = diffphys_history(solver, _lasso, caps[name])(aj, yj, lams, xj)
        curves[(name, "diffphys")] = 10 * np.log10(np.asarray(c))
    # NumPy on a subset (a 1000-signal NumPy ISTA would take ~10 minutes here); ISTA stops at the crossing
    sub = slice(0, numpy_signals)
    _, curves[("AMP", "numpy")], lam_np = amp_numpy(a, y[:, sub], caps["AMP"], x_true=x[:, sub])
    _, curves[("FISTA", "numpy")] = ista_numpy(a, y[:, sub], lam[sub], caps["FISTA"], lipschitz, x[:, sub], fast=True)
    _, curves[("ISTA", "numpy")] = ista_numpy(a, y[:, sub], lam[sub], caps["ISTA"], lipschitz, x[:, sub], stop_below=TARGET_DB)
    agreement = {"lambda numpy AMP vs jax-loop AMP (first signals)": float(np.max(np.abs(lam_np - lam[sub]) / lam[sub]))}
    return curves, agreement, lam


def timing_and_agreement(data, lam, signals, iterations, repeats):
    """Time per iteration on the first ``signals`` signals (NumPy, JAX loop, diffphys) and the final iterates' agreement."""
    a, x, y = data["A"], data["X"][:, :signals], data["Y"][:, :signals]
    lam = lam[:signals]
    lipschitz = float(np.linalg.norm(a, 2) ** 2)
    aj, yj, xj, lams = jnp.asarray(a), jnp.asarray(y), jnp.asarray(x), jnp.asarray(lam)
    times, agreement = {}, {}
    k = iterations["AMP"]
    x_np = amp_numpy(a, y, k)[0]
    times[("AMP", "numpy")] = median_time(lambda: amp_numpy(a, y, k)[0], repeats) / k
    loop = amp_jax(k, False)
    x_loop = np.asarray(loop(aj, yj, xj)[0])
    times[("AMP", "jax loop")] = median_time(lambda: loop(aj, yj, xj)[0], repeats) / k
    unrolled = diffphys_unrolled(S.AMP(), _lls, k)
    x_dp = np.asarray(unrolled(aj, yj, lams))
    times[("AMP", "diffphys")] = median_time(lambda: unrolled(aj, yj, lams), repeats) / k
    scale = np.max(np.abs(x_np))
    agreement["AMP jax loop vs numpy"] = float(np.max(np.abs(x_loop - x_np)) / scale)
    agreement["AMP diffphys iterate(Unrolled) vs numpy"] = float(np.max(np.abs(x_dp - x_np)) / scale)
    solvers = diffphys_proximal_solvers()
    for name, fast in (("ISTA", False), ("FISTA", True)):
        k = iterations[name]
        x_np = ista_numpy(a, y, lam, k, lipschitz, fast=fast)[0]
        times[(name, "numpy")] = median_time(lambda: ista_numpy(a, y, lam, k, lipschitz, fast=fast)[0], repeats) / k
        loop = ista_jax(k, fast, False)
        x_loop = np.asarray(loop(aj, yj, lams, lipschitz, xj)[0])
        times[(name, "jax loop")] = median_time(lambda: loop(aj, yj, lams, lipschitz, xj)[0], repeats) / k
        scale = np.max(np.abs(x_np))
        agreement[f"{name} jax loop vs numpy"] = float(np.max(np.abs(x_loop - x_np)) / scale)
        if name in solvers:
            unrolled = diffphys_unrolled(solvers[name], _lasso, k)
            x_dp = np.asarray(unrolled(aj, yj, lams))
            times[(name, "diffphys")] = median_time(lambda: unrolled(aj, yj, lams), repeats) / k
            agreement[f"{name} diffphys iterate(Unrolled) vs numpy (step sizes may differ)"] = float(
                np.max(np.abs(x_dp - x_np)) / scale)
    return times, agreement


def state_evolution_gap(data, iterations):
    """Measured AMP NMSE (the fused JAX loop, identical iterates to NumPy/diffphys) against the state evolution."""
    a, x, y = data["A"], data["X"], data["Y"]
    m, n = a.shape
    _, _, c = amp_jax(iterations, True)(jnp.asarray(a), jnp.asarray(y), jnp.asarray(x))
    measured = 10 * np.log10(np.asarray(c))
    # the state evolution for the realised noise variance and the design sparsity p
    se = S.amp_state_evolution(m / n, data["p"], data["noise_variance"], ALPHA, iterations=iterations)
    return measured, se.nmse_db[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and budgets, seconds (the smoke test)")
    parser.add_argument("--signals", type=int, default=None, help="test signals (default 1000 as in the paper; --quick: 20)")
    parser.add_argument("--numpy-signals", type=int, default=None,
                        help="signals for the NumPy curves and for timing (default 100; --quick: 10)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 3; --quick: 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    quick = args.quick
    m, n = (50, 100) if quick else (250, 500)
    signals = args.signals or (20 if quick else 1000)
    numpy_signals = min(signals, args.numpy_signals or (10 if quick else 100))
    repeats = args.repeats or (1 if quick else 3)
    caps = ({"AMP": 30, "FISTA": 200, "ISTA": 600} if quick else {"AMP": 100, "FISTA": 1000, "ISTA": 6000})
    timed = {"AMP": 30, "FISTA": 50, "ISTA": 50} if quick else {"AMP": 100, "FISTA": 200, "ISTA": 200}
    large = (1000, 2000, 4) if quick else (2500, 5000, 10)
    se_iterations = 30 if quick else 40

    data = make_data(m, n, signals)
    print(f"A {m}x{n} i.i.d. N(0, 1/{m}), {signals} Bernoulli-Gaussian signals (p = 0.1), SNR 40 dB; noise variance "
          f"{data['noise_variance']:.4e} (realised; nominal p N/M 10^-4 = {data['nominal_noise_variance']:.4e})",
          flush=True)
    curves, agreement, lam = iterations_to_target(data, caps, numpy_signals)
    times, more = timing_and_agreement(data, lam, numpy_signals, timed, repeats)
    agreement.update(more)
    methods = ("ISTA", "FISTA", "AMP")
    implementations = ("numpy", "jax loop", "diffphys")

    rows = []
    for method in methods:
        row = {"method": method, "published": PUBLISHED[method], "rerun": RERUN[method], "cap": caps[method]}
        for impl in implementations:
            curve = curves.get((method, impl))
            key = impl.replace(" ", "_")
            if curve is None:
                row[key] = {"status": "pending: diffphys ISTA/FISTA are not on this branch yet"}
                continue
            its = first_below(curve)
            row[key] = {"iterations": its, "final_nmse_db": float(curve[-1]),
                        "within_goal_of_published": None if its is None else abs(its / PUBLISHED[method] - 1) <= GOAL,
                        "signals": numpy_signals if impl == "numpy" else signals,
                        "seconds_per_iteration": times.get((method, impl)), "nmse_db": _finite_list(curve)}
        rows.append(row)

    print(f"\nIterations to {TARGET_DB:g} dB average NMSE (JAX loop and diffphys: {signals} signals; NumPy: the first "
          f"{numpy_signals}; published: Borgerding et al. 2017; goal within {GOAL:.0%} of published)\n")
    print(f"| method | NumPy ({numpy_signals}) | JAX loop | diffphys | published | NumPy re-run | "
          f"{signals} signals / published - 1 | final NMSE (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = []
        for impl in implementations:
            r = row[impl.replace(" ", "_")]
            cells.append("pending" if "status" in r else (str(r["iterations"]) if r["iterations"] else f"> {row['cap']}"))
        best = row["diffphys"] if "iterations" in row["diffphys"] else row["jax_loop"]
        rel = "-" if not best.get("iterations") else f"{best['iterations'] / row['published'] - 1:+.1%}"
        rel += "" if "iterations" in row["diffphys"] else " (JAX loop)"
        print(f"| {row['method']} | {' | '.join(cells)} | {row['published']} | {row['rerun']} | {rel} | "
              f"{best['final_nmse_db']:.2f} |")
    if not diffphys_proximal_solvers():
        print("\ndiffphys ISTA/FISTA: pending (not on this branch yet); the NumPy and JAX-loop references are reported.")

    print(f"\nTime per iteration ({numpy_signals} signals batched; {timed['AMP']} AMP / {timed['ISTA']} ISTA, FISTA "
          f"iterations; median of {repeats} repeats, compiled; float64)\n")
    print("| method | NumPy | JAX loop | diffphys | diffphys / JAX loop | diffphys / NumPy |")
    print("|---|---|---|---|---|---|")
    timing = []
    for method in methods:
        t = {impl: times.get((method, impl)) for impl in implementations}
        rec = {"method": method, **{k.replace(" ", "_") + "_s": v for k, v in t.items()}}
        if t["diffphys"]:
            rec["diffphys_over_jax_loop"] = t["diffphys"] / t["jax loop"]
            rec["diffphys_over_numpy"] = t["diffphys"] / t["numpy"]
        timing.append(rec)
        fmt = lambda v: "pending" if v is None else f"{v * 1e6:.0f} us"
        ratios = (f"{rec['diffphys_over_jax_loop']:.2f} | {rec['diffphys_over_numpy']:.2f}" if t["diffphys"]
                  else "- | -")
        print(f"| {method} | {fmt(t['numpy'])} | {fmt(t['jax loop'])} | {fmt(t['diffphys'])} | {ratios} |")

    # state evolution vs measured, at the benchmark size and at 10x
    measured, se = state_evolution_gap(data, se_iterations)
    big = make_data(*large[:2], large[2], seed=2)
    measured_big, se_big = state_evolution_gap(big, se_iterations)
    gap, gap_big = measured - se, measured_big - se_big
    early = slice(0, 5)
    mid = slice(8, 25)
    summary = {
        "N": {"early_max_abs_gap_db": float(np.max(np.abs(gap[early]))), "mid_max_abs_gap_db": float(np.max(np.abs(gap[mid]))),
              "final_gap_db": float(gap[-1])},
        "N_large": {"early_max_abs_gap_db": float(np.max(np.abs(gap_big[early]))),
                    "mid_max_abs_gap_db": float(np.max(np.abs(gap_big[mid]))), "final_gap_db": float(gap_big[-1])},
    }
    print(f"\nAMP state evolution vs measured NMSE (dB), alpha = {ALPHA}: N = {n} ({signals} signals) and "
          f"N = {large[1]} (M = {large[0]}, {large[2]} signals)\n")
    print(f"| iteration | SE (N={n}) | measured | gap | SE (N={large[1]}) | measured | gap |")
    print("|---|---|---|---|---|---|---|")
    for k in range(se_iterations):
        if k < 6 or k % 3 == 2 or k == se_iterations - 1:
            print(f"| {k + 1} | {se[k]:.2f} | {measured[k]:.2f} | {gap[k]:+.2f} | {se_big[k]:.2f} | "
                  f"{measured_big[k]:.2f} | {gap_big[k]:+.2f} |")
    for label, s in (("N=%d" % n, summary["N"]), ("N=%d" % large[1], summary["N_large"])):
        print(f"{label}: max |gap| iterations 1-5 {s['early_max_abs_gap_db']:.2f} dB, iterations 9-25 "
              f"{s['mid_max_abs_gap_db']:.2f} dB, at iteration {se_iterations} {s['final_gap_db']:+.2f} dB")

    print("\nAgreement (max relative difference of the final iterates, or dB):")
    for k, v in agreement.items():
        print(f"  {k}: {v:.1e}")
    passed = all(v <= 1e-9 for k, v in agreement.items() if "step sizes may differ" not in k)

    device = jax.devices()[0]
    result = {
        "benchmark": "bench_compressed_sensing", "quick": quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
                     "diffphys": diffphys.__version__},
        "device": {"backend": jax.default_backend(), "description": str(device)}, "dtype": "float64",
        "setup": {"M": m, "N": n, "signals": signals, "numpy_signals": numpy_signals, "timed_iterations": timed, "p": 0.1, "snr_db": 40.0, "seed": 1,
                  "rng": "numpy.random.RandomState (legacy)", "noise_variance": data["noise_variance"],
                  "noise_variance_rule": "realised: mean((A X)^2) * 10^(-SNR/10) over all test signals",
                  "nominal_noise_variance": data["nominal_noise_variance"], "alpha": ALPHA,
                  "lasso_lambda": "per signal, alpha * sigma_hat * (1 - ||x_amp||_0 / M) at AMP's last iterate "
                                  "(100 iterations of the JAX loop; NumPy's agrees, see agreement)",
                  "lasso_lambda_mean": float(np.mean(lam)), "step": "1 / ||A||_2^2", "target_db": TARGET_DB,
                  "caps": caps},
        "iterations_to_target": rows, "timing": timing,
        "state_evolution": {"iterations": se_iterations, "se_db": _finite_list(se), "measured_db": _finite_list(measured),
                            "gap_db": _finite_list(gap), "large": {"M": large[0], "N": large[1], "signals": large[2],
                                                                  "se_db": _finite_list(se_big),
                                                                  "measured_db": _finite_list(measured_big),
                                                                  "gap_db": _finite_list(gap_big)},
                            "summary": summary},
        "agreement": {"checks": agreement, "tolerance": 1e-9, "passed": passed},
        "diffphys_ista_fista": sorted(diffphys_proximal_solvers()) or "pending",
    }
    out = args.out or Path(__file__).resolve().parent / "results" / f"compressed_sensing{'_quick' if quick else ''}.json"
    write_json(out, result)
    print(f"\nwrote {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
