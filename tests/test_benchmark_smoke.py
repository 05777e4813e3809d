"""Smoke tests of the benchmarks (bench_steppers, bench_implicit, bench_adjoint, bench_tv_prox, bench_proximal_pde): they run (--quick) and write well-formed JSON.

Timings are never asserted (tests never assert wall-clock times); only the structure of the
results and the agreement of diffphys with the benchmark's hand-written reference numerics.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_steppers.py"


def _run_quick(script: str, out) -> str:
    """Run ``benchmarks/<script> --quick --out <out>``; assert it succeeded; its standard output."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / script), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_steppers_quick(tmp_path):
    out = tmp_path / "x.json"
    stdout = _run_quick("bench_steppers.py", out)
    assert "dp/fused" in stdout  # the table was printed

    result = json.loads(out.read_text())
    for key in ("versions", "device", "dtype", "agreement", "records", "notes"):
        assert key in result
    assert result["quick"] is True
    assert result["versions"]["jax"]
    assert result["device"]["backend"] and result["device"]["description"]
    assert result["dtype"] in ("float32", "float64")

    agreement = result["agreement"]
    assert agreement["passed"] is True
    assert agreement["tolerance"] <= 1e-5
    assert {c["model"] for c in agreement["checks"]} == {"heat/euler", "advection/upwind+euler"}
    assert {len(c["shape"]) for c in agreement["checks"]} == {1, 2}
    for check in agreement["checks"]:
        assert set(check["rel_errors"]) == {"forward_vs_fused", "gradient_vs_fused", "numpy_vs_fused"}
        for err in check["rel_errors"].values():
            assert math.isfinite(err) and err <= agreement["tolerance"]

    records = result["records"]
    labels = {r["label"] for r in records}
    assert labels == {"heat/euler", "advection/upwind+euler", "heat/rk4", "advection/weno5+ssprk3"}
    for r in records:
        assert r["n_cells"] == math.prod(r["shape"]) and r["ndim"] == len(r["shape"])
        assert _positive(r["n_steps"]) and _positive(r["dt"])
        dp = r["diffphys"]
        for key in ("forward_s", "gradient_s", "throughput_mcell_steps_per_s", "grad_over_forward"):
            assert _positive(dp[key])
        with_refs = r["scheme"] == "euler"
        assert (r["fused"] is not None) == with_refs and (r["numpy"] is not None) == with_refs
        if with_refs:
            assert _positive(r["fused"]["throughput_mcell_steps_per_s"]) and _positive(r["fused"]["grad_over_forward"])
            assert _positive(r["numpy"]["forward_s"]) and 1 <= r["numpy"]["steps_timed"] <= r["n_steps"]
            for key in ("diffphys_over_fused", "diffphys_over_fused_gradient", "diffphys_over_numpy"):
                assert _positive(r["ratios"][key])
        if r["exponax"] is not None:  # only when exponax is importable
            assert result["versions"]["exponax"] and _positive(r["ratios"]["diffphys_over_exponax"])
        else:
            assert "diffphys_over_exponax" not in r["ratios"]


def test_bench_implicit_quick(tmp_path):
    """The implicit-gradient benchmark runs; IFT memory does not grow with the CG budget, unrolled does."""
    stdout = _run_quick("bench_implicit.py", tmp_path)
    assert "| workload | CG iterations K |" in stdout
    result = json.loads((tmp_path / "implicit_float64_quick.json").read_text())
    assert result["agreement"]["max_relative_difference"] < 1e-8
    rows = {(r["workload"], r["cg_iterations"], r["gradient"]): r for r in result["rows"]}
    for workload in ("1 step", "10 steps"):
        ift = [rows[(workload, k, "ift")]["grad_memory_bytes"] for k in (10, 50)]
        unrolled = [rows[(workload, k, "unrolled")]["grad_memory_bytes"] for k in (10, 50)]
        assert ift[0] == ift[1] and unrolled[1] > 3 * unrolled[0]
        assert all(rows[(workload, k, g)]["finite"] for k in (10, 50) for g in ("ift", "unrolled"))


def test_bench_adjoint_quick(tmp_path):
    out = tmp_path / "adjoint.json"
    stdout = _run_quick("bench_adjoint.py", out)
    assert "grad/fwd" in stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["gradients_agree"] is True
    rows = result["records"]
    assert {r["model"] for r in rows} == {"advection/weno5+ssprk3", "lorenz96/rk4"}
    for model in {r["model"] for r in rows}:
        by = {r["strategy"].split("(")[0] + ("_b" if r["strategy"].startswith("recursive(checkpoints=") and "None" not in r["strategy"] else ""): r for r in rows if r["model"] == model}
        assert set(by) == {"direct", "block", "recursive", "recursive_b"}
        for r in by.values():
            assert _positive(r["gradient_temp_bytes"]) and _positive(r["grad_over_forward"]) and r["rel_error_vs_direct"] <= 1e-9
        # memory ordering from XLA's analysis (not a timing): checkpointing stores fewer states
        assert by["recursive"]["gradient_temp_bytes"] < by["direct"]["gradient_temp_bytes"]
        assert by["block"]["gradient_temp_bytes"] < by["direct"]["gradient_temp_bytes"]


def test_bench_compressed_sensing_quick(tmp_path):
    """The compressed-sensing benchmark runs: NumPy, the JAX loop and diffphys's AMP agree; the state evolution table is written."""
    out = tmp_path / "cs.json"
    stdout = _run_quick("bench_compressed_sensing.py", out)
    assert "Iterations to -35 dB" in stdout and "state evolution vs measured" in stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["agreement"]["passed"] is True
    assert result["setup"]["rng"].startswith("numpy.random.RandomState") and result["setup"]["seed"] == 1
    rows = {r["method"]: r for r in result["iterations_to_target"]}
    assert set(rows) == {"ISTA", "FISTA", "AMP"}
    assert rows["AMP"]["published"] == 25 and "nmse_db" in rows["AMP"]["diffphys"]
    for impl in ("numpy", "jax_loop"):
        for r in rows.values():
            assert len(r[impl]["nmse_db"]) >= 1 and r[impl]["nmse_db"][0] < 0
    # diffphys's AMP follows the same iterates as the references, so the same NMSE curve
    assert rows["AMP"]["diffphys"]["nmse_db"] == pytest.approx(rows["AMP"]["jax_loop"]["nmse_db"], abs=1e-9)
    se = result["state_evolution"]
    assert len(se["gap_db"]) == se["iterations"] and len(se["large"]["gap_db"]) == se["iterations"]
    assert all(_positive(t["numpy_s"]) and _positive(t["jax_loop_s"]) for t in result["timing"])


def test_bench_tv_prox_quick(tmp_path):
    """The TV prox benchmark runs: the exact 1D prox meets 1e-10 against BVLS; the 2D curve is well formed
    (pyproximal, an optional peer, is reported as 'not installed' when absent)."""
    out = tmp_path / "tv.json"
    stdout = _run_quick("bench_tv_prox.py", out)
    assert "| n | segments | max error |" in stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["goal_1d_error_met"] is True
    assert all(_positive(r["seconds"]) and r["max_error"] <= 1e-10 for r in result["one_d"])
    two_d = result["two_d"]
    assert two_d["reference"]["converged"] and two_d["reference"]["duality_gap"] < 1e-8
    gaps = [c["gap"] for c in two_d["curves"]["diffphys"]]
    assert all(_positive(c["seconds"]) for c in two_d["curves"]["diffphys"]) and gaps[-1] < gaps[0]
    if two_d["pyproximal"] == "not installed":
        assert two_d["curves"]["pyproximal"] is None
    else:
        assert all(_positive(c["seconds"]) for c in two_d["curves"]["pyproximal"])


def test_bench_proximal_pde_quick(tmp_path):
    """The sparse heat-source benchmark runs (--quick, the case heat2d-source-l1 at 12 x 12): the JSON is well
    formed, the pass counts agree with a run-time count, FISTA needs no more model passes than ISTA to any gap
    both reach, the inexact ADMM takes fewer CG products than the tight one, and the L1 estimate finds at least
    as much of the true support as the best Gaussian-B estimate."""
    out = tmp_path / "prox.json"
    stdout = _run_quick("bench_proximal_pde.py", out)
    assert "| solver | iterations run |" in stdout and "| estimate | rel. error |" in stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["dtype"] == "float64"
    setup = result["setup"]
    assert setup["case"] == "heat2d-source-l1" and setup["grid"] == [12, 12]
    assert setup["n_observations"] == 16 * 8 and setup["n_unknowns"] == 144  # 4 x 4 sensors, 8 times

    solvers = result["solvers"]
    assert solvers["lambda"] == result["lambda"]["case"] == 0.5  # the case's prior.weight
    assert "no analysis term" in solvers["pdhg"]  # PDHG refuses a prior without K x
    assert all(c["counted"] == c["predicted"] > 0 for c in solvers["forward_count_check"])
    rows = {r["solver"]: r for r in solvers["rows"]}
    assert set(rows) == {"ISTA", "FISTA", "ADMM", "ADMM (inner CG 1e-10)"}
    for r in rows.values():
        assert _positive(r["time_s"]) and r["iterations_run"] >= r["timed_iterations"] >= 1
        assert set(r["to_gap"]) == {f"{g:g}" for g in solvers["gaps"]}
        reached = [r["to_gap"][f"{g:g}"] for g in solvers["gaps"]]
        hits = [x for x in reached if x is not None]
        assert reached[: len(hits)] == hits  # a tighter gap is never reached before a looser one
        for x in hits:
            assert x["total"] == x["forward"] + x["tangent"] + x["adjoint"]
        for a, b in zip(hits, hits[1:]):
            assert a["iterations"] <= b["iterations"] and a["total"] <= b["total"]
    # the reference is FISTA's long run: it reaches every gap
    assert all(rows["FISTA"]["to_gap"][f"{g:g}"] is not None for g in solvers["gaps"])
    assert solvers["reference"]["gap_to_f_star"] <= 1e-12
    for g in solvers["gaps"]:
        fista, ista = rows["FISTA"]["to_gap"][f"{g:g}"], rows["ISTA"]["to_gap"][f"{g:g}"]
        if ista is not None:
            assert fista["total"] <= ista["total"]
    # ADMM's passes: one forward per linearisation and per objective, setup included
    for name in ("ADMM", "ADMM (inner CG 1e-10)"):
        admm = rows[name]["to_gap"][f"{solvers['gaps'][0]:g}"]
        if admm is not None:
            assert admm["forward"] == 2 + 2 * admm["iterations"] and admm["tangent"] >= 101 + admm["recorded_cg_iterations"]
    # the loose inner tolerance (the converged default) does fewer CG iterations over the same outer iterations
    assert rows["ADMM"]["iterations_run"] == rows["ADMM (inner CG 1e-10)"]["iterations_run"]
    assert rows["ADMM"]["cg_iterations_run"] < rows["ADMM (inner CG 1e-10)"]["cg_iterations_run"]

    recovery = {r["kind"]: r for r in result["recovery"]}
    assert {"l1", "nonnegative", "l1_only", "gaussian"} <= set(recovery)
    for r in recovery.values():
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and _positive(r["relative_error"])
    assert recovery["l1"]["recall"] >= recovery["gaussian"]["recall"]
    assert recovery["l1"]["relative_error"] <= recovery["gaussian"]["relative_error"]
    assert recovery["l1"]["min"] >= 0 and recovery["gaussian"]["min"] < 0  # only the prior keeps s >= 0
    best = min(result["lambda_sweep"], key=lambda r: r["relative_error"] if r["lambda"] > 0 else math.inf)
    assert best["lambda"] == result["lambda"]["best"]
    assert min(r["relative_error"] for r in result["l1_only_sweep"]) == recovery["l1_only"]["relative_error"]
    assert min(r["relative_error"] for r in result["gaussian_sweep"]) == recovery["gaussian"]["relative_error"]


def test_bench_covariance_quick(tmp_path):
    """The covariance benchmark runs: the spectral B^{1/2} equals the explicit sweeps at every size (checked by
    the script, exit 1 otherwise), and the Gauss–Newton scaling fit is written."""
    stdout = _run_quick("bench_covariance.py", tmp_path)
    assert "| N | sweeps M | spectral B^1/2 |" in stdout and "GN solve time ~ N^" in stdout
    result = json.loads((tmp_path / "covariance_quick.json").read_text())
    assert result["quick"] is True and [r["n"] for r in result["apply"]] == [128, 256, 512]
    for r in result["apply"]:
        assert r["relative_difference"] <= 1e-10 and _positive(r["spectral_s"]) and _positive(r["sweeps_s"])
        assert r["sweeps_M"] == math.ceil((result["length_scale"] * r["n"]) ** 2)  # M = ceil(L^2/h^2)
    assert all(_positive(r["solve_s"]) and _positive(r["rollout_s"]) for r in result["gauss_newton"])
    assert all(r["outer_iterations"] >= 1 and r["cg_iterations"] >= r["outer_iterations"] for r in result["gauss_newton"])
    assert math.isfinite(result["solve_exponent"]) and math.isfinite(result["rollout_exponent"])


def test_bench_latency_quick(tmp_path):
    """The latency benchmark runs heat1d-sparse in a fresh process: the cold run compiles, the warm run
    compiles nothing (every program is reused), and the Hessian–vector product ratios are written."""
    stdout = _run_quick("bench_latency.py", tmp_path)
    assert "| case | process (s) | cold run (s) |" in stdout and "J^T J d (solver's operator)" in stdout
    result = json.loads((tmp_path / "latency_quick.json").read_text())
    (row,) = result["cases"]
    assert row["case"] == "heat1d-sparse" and row["cold"]["programs"] >= 1 and row["warm"]["programs"] == 0
    assert row["cold"]["iterations"] == row["warm"]["iterations"] >= 1
    assert 0 < row["cold"]["compile_s"] < row["cold"]["wall_s"]
    (hvp,) = result["hvp"]
    assert hvp["case"] == "heat1d-sparse" and hvp["control_size"] == 128
    assert all(_positive(hvp[k]) for k in ("residual_s", "hvp_amortised_s", "hvp_composed_s", "hvp_relinearised_s"))
    # irregular save steps: diffphys's rollout compiles the stepper once, the nested reference once per run
    assert {r["scheme"] for r in result["irregular_saves"]} == {"euler", "rk4"}
    for r in result["irregular_saves"]:
        assert r["diffphys_forward_loops"] == 1 and r["diffphys_gradient_loops"] == 2
        assert r["nested_forward_loops"] > r["diffphys_forward_loops"]
        assert all(_positive(r[f"{who}_{kind}_{what}"]) for who in ("diffphys", "nested")
                   for kind in ("forward", "gradient") for what in ("s", "compile_s"))
