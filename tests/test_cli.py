"""The ``diffphys`` command line (at reduced size)."""

import json
import subprocess
import sys

import xarray as xr

from diffphys.cli import main


def test_demo_writes_its_outputs_and_verifies_the_gradient(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cells", "32", "--steps", "200"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cells"] == 32 and summary["n_steps"] == 200
    assert summary["taylor_rate"] >= 1.9
    assert summary["dot_product_relative_error"] <= 1e-12
    assert (out / "demo.png").stat().st_size > 10_000
    with xr.open_dataset(out / "trajectory.nc") as ds:
        assert ds["u"].dims == ("time", "x") and ds["u"].shape == (5, 32)
        assert ds["u"].attrs["long_name"] == "temperature" and ds["time"].attrs["units"] == "s"


def test_cli_errors_exit_non_zero_with_a_message_and_no_traceback(tmp_path):
    for args, message in (
        (["demo", "--cells", "4", "--out", str(tmp_path)], "--cells must be at least 8 for the demo, got 4"),
        (["demo", "--steps", "0"], "expected a positive integer, got 0"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ):
        proc = subprocess.run([sys.executable, "-m", "diffphys.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
