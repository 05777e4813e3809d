"""Smoke tests of the benchmarks (bench_steppers, bench_implicit, bench_adjoint, bench_tv_prox): they run (--quick) and write well-formed JSON.

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


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_steppers_quick(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dp/fused" in proc.stdout  # the table was printed

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
    script = SCRIPT.parent / "bench_implicit.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| workload | CG iterations K |" in proc.stdout
    result = json.loads((tmp_path / "implicit_float64_quick.json").read_text())
    assert result["agreement"]["max_relative_difference"] < 1e-8
    rows = {(r["workload"], r["cg_iterations"], r["gradient"]): r for r in result["rows"]}
    for workload in ("1 step", "10 steps"):
        ift = [rows[(workload, k, "ift")]["grad_memory_bytes"] for k in (10, 50)]
        unrolled = [rows[(workload, k, "unrolled")]["grad_memory_bytes"] for k in (10, 50)]
        assert ift[0] == ift[1] and unrolled[1] > 3 * unrolled[0]
        assert all(rows[(workload, k, g)]["finite"] for k in (10, 50) for g in ("ift", "unrolled"))


ADJOINT_SCRIPT = SCRIPT.parent / "bench_adjoint.py"


def test_bench_adjoint_quick(tmp_path):
    out = tmp_path / "adjoint.json"
    proc = subprocess.run(
        [sys.executable, str(ADJOINT_SCRIPT), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "grad/fwd" in proc.stdout
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
    script = SCRIPT.parent / "bench_compressed_sensing.py"
    out = tmp_path / "cs.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Iterations to -35 dB" in proc.stdout and "state evolution vs measured" in proc.stdout
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
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "bench_tv_prox.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1], check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| n | segments | max error |" in proc.stdout
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
