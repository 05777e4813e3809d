"""The ``diffphys`` command line (at reduced size)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


# Each built-in case at reduced size (the full-size numbers are in the README).
REDUCED = {
    "heat1d-sparse": ["grid.n=32", "solver.max_iterations=30", "observations.every=0.05", "units.length=\"m\"",
                      "units.time=\"s\"", "units.field=\"K\""],
    "advection2d-sparse": ["grid.n=[16, 16]", "solver.max_iterations=20", "window.duration=0.4", "observations.every=0.05"],
    "wave1d-initial": ["grid.n=48", "solver.max_iterations=40", "observations.every=0.02"],
    "heat2d-diffusivity": ["grid.n=[12, 12]", "observations.stride=2", "observations.offset=0",
                           "solver.max_iterations=15", "observations.every=0.2"],
    "heat1d-deblur-tv": ["grid.n=32", "solver.max_iterations=400"],
    "heat2d-source-l1": ["grid.n=[12, 12]", "observations.stride=2", "observations.offset=0",
                         "model.source=\"40 * (abs(x - 0.2917) < 0.02) * (abs(y - 0.375) < 0.02)\"",
                         "solver.max_iterations=300"],
}
SUMMARY_KEYS = ("case", "rmse_background", "rmse_analysis", "cost_initial", "cost_final", "iterations", "converged",
                "wall_time_s")


@pytest.mark.parametrize("case", REDUCED)
def test_run_every_builtin_case_at_reduced_size(case, tmp_path, capsys):
    overrides = [arg for setting in REDUCED[case] for arg in ("--set", setting)]
    name = [] if case == "heat1d-sparse" else [case]  # no name: the default case
    assert main(["run", *name, "--out", str(tmp_path), *overrides]) == 0
    printed = capsys.readouterr().out
    assert f"diffphys run: {case}" in printed and "iteration    0   cost" in printed and "rmse background" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(key in summary for key in SUMMARY_KEYS)
    assert summary["case"] == case
    assert summary["rmse_analysis"] < summary["rmse_background"]
    assert summary["cost_final"] < summary["cost_initial"]
    assert summary["innovation_rms_analysis"] < summary["innovation_rms_background"]
    for picture in ("analysis.png", "cost.png"):
        assert (tmp_path / picture).stat().st_size > 10_000
    with xr.open_dataset(tmp_path / "analysis.nc") as ds:
        assert {"truth", "background", "analysis"} <= set(ds.data_vars)
        assert ds["analysis"].dims[0] == "time" and ds["analysis"].attrs["long_name"] == "analysis state"
        declared = case == "heat1d-sparse"  # [units] given; the others declare none: no units attribute
        assert (ds["x"].attrs.get("units"), ds["time"].attrs.get("units"), ds["analysis"].attrs.get("units")) == (
            ("m", "s", "K") if declared else (None, None, None))
    with xr.open_dataset(tmp_path / "analysis.nc", group="observations") as obs:
        assert obs["value"].dims == ("time", "sensor")
        assert {"sigma", "truth", "background", "analysis"} <= set(obs.data_vars)
    from diffphys.cases import load_case

    config = load_case(case, REDUCED[case]).config
    if config["prior"]["kind"] == "gaussian":  # the posterior σ of the estimated field, below the prior's
        name = "kappa_analysis_std" if case == "heat2d-diffusivity" else "analysis_std"
        with xr.open_dataset(tmp_path / "analysis.nc") as ds:
            std = ds[name].values
        assert std.shape == tuple(summary["grid"]) and np.all(std > 0) and np.all(np.isfinite(std))
        assert summary["posterior"]["method"] == "exact" and summary["analysis_std"]["max"] == pytest.approx(std.max())
        prior_std = config["background"]["sigma"]
        if case == "heat2d-diffusivity":  # σ of log κ: κ's prior σ is about κ σ_b
            prior_std = prior_std * np.asarray(xr.open_dataset(tmp_path / "analysis.nc")["kappa_analysis"])
        assert np.all(std < prior_std)
    else:  # no Gaussian posterior around a sparsity or TV prior
        assert "analysis_std" not in summary
    if case == "heat2d-source-l1":  # one point source, found where it is
        support = summary["prior"]["metrics"]["support"]
        assert summary["prior"]["kind"] == "l1" and support["true_support"] == 1 and support["recall"] == 1.0
        assert summary["prior"]["metrics"]["relative_error"] < 0.5
    if case == "heat1d-deblur-tv":  # the three edges of the truth, each within a cell
        edges = summary["prior"]["metrics"]["edges"]
        assert edges["true_edges"] == 3 and edges["edge_location_error"] <= 1 / 32
    if case == "heat2d-diffusivity":
        parameter = summary["parameter"]
        assert parameter["name"] == "kappa" and parameter["rmse_analysis"] == summary["rmse_analysis"]
        assert parameter["relative_error_analysis"] < parameter["relative_error_background"]
        assert set(parameter["truth"]) == {"mean", "min", "max"}
        with xr.open_dataset(tmp_path / "analysis.nc") as ds:
            assert {"kappa_truth", "kappa_background", "kappa_analysis"} <= set(ds.data_vars)


def test_run_the_cycled_lorenz96_case_at_reduced_size(tmp_path, capsys):
    overrides = ["cycling.cycles=12", "cycling.spin_up=4", "truth.spin_up=20"]
    assert main(["run", "lorenz96-4dvar", "--out", str(tmp_path), *[a for o in overrides for a in ("--set", o)]]) == 0
    printed = capsys.readouterr().out
    assert "diffphys run: lorenz96-4dvar" in printed and "window    12/12" in printed and "time-averaged RMSE" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_cycles"] == 12 and summary["spin_up"] == 4 and summary["shift_steps"] == 4
    assert summary["window_steps"] == 16 and summary["n_variables"] == 40 and summary["dt"] == 0.05
    assert summary["rmse_analysis"] < summary["rmse_forecast"] and summary["rmse_analysis"] < 1.0  # σ_obs = 1
    assert summary["cost_final"] < summary["cost_initial"] and summary["wall_time_s"] > 0
    for picture in ("analysis.png", "cost.png"):
        assert (tmp_path / picture).stat().st_size > 10_000
    with xr.open_dataset(tmp_path / "analysis.nc") as ds:
        assert {"truth", "analysis", "forecast"} <= set(ds.data_vars)
        assert ds["analysis"].shape == (12, 40)
        assert float(ds["time"][0]) == 0.8 and float(ds["time"][1]) == pytest.approx(1.0)


def test_cases_command_lists_the_builtin_cases(capsys):
    assert main(["cases"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["advection2d-sparse", "heat1d-deblur-tv", "heat1d-sparse",
                                                   "heat2d-diffusivity", "heat2d-source-l1", "lorenz96-4dvar",
                                                   "wave1d-initial"]
    assert all(len(line.split()) > 3 for line in lines)


def test_run_errors_exit_2_with_the_message_and_no_traceback(tmp_path):
    for args, message in (
        (["run", "heat1d"], ("diffphys run: error: unknown case 'heat1d': not a file, and the built-in cases are "
                             "['advection2d-sparse', 'heat1d-deblur-tv', 'heat1d-sparse', 'heat2d-diffusivity', "
                             "'heat2d-source-l1', 'lorenz96-4dvar', 'wave1d-initial'] "
                             "(did you mean 'heat1d-sparse'?)")),
        (["run", "--set", "solver.max_iteration=5"], "unknown key 'max_iteration' in [solver]"),
    ):
        proc = subprocess.run([sys.executable, "-m", "diffphys.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                              check=False)
        assert proc.returncode == 2, proc
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["observations.positions=[0.5, 1.2]"], "sensor 1 at x=1.2 lies outside the domain; valid coordinates are 0 <= x <= 1"),
        (["observations.every=", "observations.times=[0.2, 0.1]"], "observation times are not sorted"),
        (["observations.every=", "observations.times=[0.1, 0.1]"], "duplicate observation time t=0.1"),
        (["observations.every=", "observations.times=[0.1, 0.9]"], "t=0.9 (position 1) lies outside the assimilation window [0, 0.5]"),
        (["observations.sigma=-1"], "[observations] sigma must be a number > 0"),
        (["background.length_scale=0"], "[background] length_scale must be a number > 0, got 0"),
        (["observations.sigma=[0.1, 0.2]"], "[observations]: sigma has shape (2,); it must be a scalar, (6,) (one per sensor)"),
        (["observations.sensors=file", "observations.file=nothing.csv", "observations.positions=", "observations.every="],
         "[observations] file: observation file"),
    ],
)
def test_run_bad_input_exits_2_naming_the_field(overrides, message, tmp_path, capsys):
    args = ["run", "--out", str(tmp_path)] + [arg for setting in overrides for arg in ("--set", setting)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: ") and message in err, err


def test_run_on_a_users_observation_file(tmp_path, capsys):
    # Data written by one run (analysis.nc, group 'observations') are a valid observation file.
    assert main(["run", "--out", str(tmp_path / "twin"), "--quiet", *[a for s in REDUCED["heat1d-sparse"] for a in ("--set", s)]]) == 0
    case = (Path(__file__).resolve().parents[1] / "cases" / "heat1d-sparse.toml").read_text()
    case = case.replace('sensors = "points"', 'sensors = "file"\nfile = "twin/analysis.nc"')
    case = "\n".join(line for line in case.splitlines() if not line.startswith(("positions", "every", "missing_fraction")))
    case = case.replace("[background]", "[background]\nfirst_guess = 0.0")
    (tmp_path / "mine.toml").write_text(case)
    assert main(["run", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "mine"), "--set", "grid.n=32",
                 "--set", "solver.max_iterations=30"]) == 0
    assert "rmse background" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "mine" / "summary.json").read_text())
    assert summary["rmse_background"] is None and summary["rmse_analysis"] is None
    assert summary["n_observations"] == json.loads((tmp_path / "twin" / "summary.json").read_text())["n_observations"]
    assert summary["innovation_rms_analysis"] < 0.5 * summary["innovation_rms_background"]
    with xr.open_dataset(tmp_path / "mine" / "analysis.nc") as ds:
        assert "truth" not in ds and {"background", "analysis"} <= set(ds.data_vars)


SMALLEST = ["--set", "grid.n=16", "--set", "solver.max_iterations=3", "--set", "observations.every=0.1"]
KILLED_WHILE_PLOTTING = r"""
import os, signal, sys
import matplotlib.figure

def torn_savefig(self, target, *args, **kwargs):
    with open(target, "wb") as f:  # a picture's first bytes, then the process dies mid-write
        f.write(b"\x89PNG\r\n\x1a\n")
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

matplotlib.figure.Figure.savefig = torn_savefig
from diffphys.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_mid_write_leaves_no_complete_looking_run_and_overwrite_clears_it(tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_PLOTTING, "run", "--out", str(out), "--quiet", *SMALLEST],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc
    # Killed while writing analysis.png: analysis.nc is complete, the picture is only a hidden temporary.
    final = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert final == ["analysis.nc"], final
    assert not (out / "summary.json").exists()
    with xr.open_dataset(out / "analysis.nc") as ds, xr.open_dataset(out / "analysis.nc", group="observations") as obs:
        assert {"truth", "background", "analysis"} <= set(ds.data_vars) and "value" in obs
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-") and leftovers[0].endswith("-analysis.png")
    # Running into the folder again is refused; --overwrite clears the partial run first and says so.
    assert main(["run", "--out", str(out), "--quiet", *SMALLEST]) == 2
    err = capsys.readouterr().err
    assert f"the output folder {out}/ is not empty" in err and "--overwrite" in err, err
    assert main(["run", "--out", str(out), "--overwrite", "--set", "output.plots=false", *SMALLEST]) == 0
    assert f"removed the previous outputs {leftovers[0]}, analysis.nc from {out}/" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["analysis.nc", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["outputs"] == ["analysis.nc", "summary.json"]


def test_run_and_demo_refuse_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "previous"
    out.mkdir()
    for name in ("summary.json", "analysis.png", "notes.txt"):
        (out / name).write_text("{}")
    for args in (["run", *SMALLEST], ["demo", "--cells", "16", "--steps", "8"]):
        proc = subprocess.run([sys.executable, "-m", "diffphys.cli", *args, "--out", str(out)], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 2, proc
        assert (f"diffphys {args[0]}: error: the output folder {out}/ is not empty (it holds analysis.png, notes.txt, "
                "summary.json); give another folder with --out, or pass --overwrite") in proc.stderr
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["analysis.png", "notes.txt", "summary.json"]  # untouched


def test_run_overwrite_removes_the_previous_runs_plots_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "previous"
    out.mkdir()
    for name in ("summary.json", "analysis.png", "cost.png", "notes.txt"):
        (out / name).write_text("{}")
    assert main(["run", "--out", str(out), "--overwrite", "--set", "output.plots=false", *SMALLEST]) == 0
    assert f"removed the previous outputs analysis.png, cost.png, summary.json from {out}/" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["analysis.nc", "notes.txt", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["case"] == "heat1d-sparse"


@pytest.mark.parametrize("case, older", [("heat1d-sparse", True), ("lorenz96-4dvar", False), ("advection2d-sparse", False)])
def test_run_asks_xla_for_the_older_cpu_emitters_for_a_1d_case_before_it_computes(case, older, tmp_path, monkeypatch):
    """A single-window 1D case compiles with XLA:CPU's older element-wise emitters (faster to compile, as fast to
    run in 1D, on the measured jaxlib 0.10); a 2D or cycled case with XLA's default; a user's own choice in
    XLA_FLAGS is kept."""
    import diffphys._app.runner as runner
    from diffphys._app.xla_options import OLDER_CPU_EMITTERS, _measured_jaxlib

    seen = []
    monkeypatch.setattr(runner, "run_case", lambda *args, **kwargs: seen.append(os.environ.get("XLA_FLAGS")))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert main(["run", case, "--out", str(tmp_path / "a"), "--no-cache"]) == 0
    expected = "--xla_force_host_platform_device_count=1" + (f" {OLDER_CPU_EMITTERS}" if older and _measured_jaxlib() else "")
    assert seen == [expected]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert main(["run", case, "--out", str(tmp_path / "b"), "--no-cache"]) == 0
    assert seen[-1] == "--xla_cpu_use_fusion_emitters=true"
