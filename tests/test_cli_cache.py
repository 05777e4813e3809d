"""The command line's compilation cache, its plain progress lines, ``cases --show`` and the version."""

import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import observe as ob
from diffphys._app.cache import cache_dir
from diffphys.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "grid.n=32", "--set", "solver.max_iterations=30", "--set", "observations.every=0.05"]


def _run(tmp_path, out: str, cache, *extra):
    env = {**os.environ, "DIFFPHYS_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "diffphys.cli", "run", "--out", str(tmp_path / out), *SMALL, *extra],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_run_writes_every_program_to_the_cache_and_a_second_run_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, "OUT1", cache)
    written = sorted(p.name for p in cache.iterdir() if p.name.startswith("jit_"))
    # The twin experiment, the solve and the window's outputs: before, their host callbacks (progress,
    # equinox's run-time errors) kept JAX from writing them.
    for program in ("jit__simulate-", "jit__iterate-", "jit__window_outputs-"):
        assert any(name.startswith(program) for name in written), (program, written)
    second = _run(tmp_path, "OUT2", cache)
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("jit_")) == written
    # Progress is plain lines (no carriage returns), "compiling ..." before the first result, the same both times.
    for proc in (first, second):
        lines = proc.stdout.splitlines()
        assert "\r" not in proc.stdout and "\r" not in proc.stderr
        assert lines[1].startswith("  compiling the model and solver") and str(cache) in lines[1]
        assert lines[3].startswith("  iteration    0   cost ")
    strip = lambda text: [line for line in text.splitlines() if " in " not in line.split("/")[-1]]
    assert strip(first.stdout.replace("OUT1", "X")) == strip(second.stdout.replace("OUT2", "X"))


def test_no_cache_flag_turns_the_cache_off(tmp_path):
    # DIFFPHYS_CACHE_DIR=off is the other switch (test_cache_folder_from_the_environment).
    cache = tmp_path / "cache"
    proc = _run(tmp_path, "run", cache, "--no-cache")
    assert not cache.exists()
    assert "the compilation cache is off" in proc.stdout


def test_cache_folder_from_the_environment():
    assert cache_dir({"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/x/diffphys/jax")
    assert cache_dir({"DIFFPHYS_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/x"}) == Path("/mine")
    assert cache_dir({"DIFFPHYS_CACHE_DIR": "~/c"}) == Path("~/c").expanduser()
    for off in ("off", "OFF", "0", ""):
        assert cache_dir({"DIFFPHYS_CACHE_DIR": off}) is None
    assert cache_dir({}) == Path("~/.cache/diffphys/jax").expanduser()


def test_importing_diffphys_leaves_the_cache_off():
    code = "import diffphys, jax; print(repr(jax.config.jax_compilation_cache_dir))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip() == "None"


def test_cases_show_prints_the_builtin_case_file(capsys):
    assert main(["cases", "--show", "wave1d-initial"]) == 0
    assert capsys.readouterr().out == (ROOT / "cases" / "wave1d-initial.toml").read_text()


def test_cases_show_of_an_unknown_name_lists_the_valid_ones(capsys):
    assert main(["cases", "--show", "wave1d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys cases: error: unknown built-in case 'wave1d'; the built-in cases are [")
    assert "'heat1d-sparse'" in err and "(did you mean 'wave1d-initial'?)" in err


def test_version_has_one_source():
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "diffphys.cli", "--version"], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip() == f"diffphys {dp.__version__}"
    assert version("diffphys") == dp.__version__


# The twin experiment checks its truth run on the host (no host callback in its compiled program),
# and still inside the program when traced.
GRID = dp.Grid1D(16, 1.0, bc="periodic")


def _diverging():
    model = dp.Heat(GRID, 1.0, scheme="euler")
    unstable = eqx.tree_at(lambda m: m.kappa, model, 40.0 * model.kappa)
    schedule = ob.ObservationSchedule.from_steps((100, 2000, 4000), ob.PointSensors(GRID, [0.25, 0.5]), dt=model.dt)
    return unstable, jnp.sin(2 * jnp.pi * GRID.x) + 1e-3 * jnp.cos(14 * jnp.pi * GRID.x), schedule


def test_a_diverging_twin_experiment_names_the_step():
    model, u0, schedule = _diverging()
    with pytest.raises(eqx.EquinoxRuntimeError,
                       match=r"twin_experiment: the truth run: the state became non-finite \(NaN or inf\) by step "
                             r"(2000 \(it was finite at step 100\)|4000 \(it was finite at step 2000\))"):
        ob.twin_experiment(model, u0, schedule, 0.1, jax.random.key(0))
    with pytest.raises(eqx.EquinoxRuntimeError, match="became non-finite"):
        eqx.filter_jit(lambda m, u: ob.twin_experiment(m, u, schedule, 0.1, jax.random.key(0)).observations)(model, u0)


def test_check_finite_on_host_matches_the_compiled_check():
    from diffphys._rollout import check_finite_on_host

    traj = np.ones((3, 4))
    check_finite_on_host(traj, (0, 5, 10))
    traj[2, 1] = np.nan
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"^rollout: .* by step 10 \(it was finite at step 5\); reduce dt"):
        check_finite_on_host(traj, (0, 5, 10))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"^the analysis run: .* by step 0; reduce dt"):
        check_finite_on_host((np.full((2, 3), np.inf), np.ones((2, 3))), (0, 1), "the analysis run")


def test_a_diverging_cycled_twin_experiment_names_the_step():
    from diffphys import assimilate as da

    model, u0, _ = _diverging()
    schedule = ob.ObservationSchedule.from_steps((1000, 2000), ob.PointSensors(GRID, [0.25, 0.5]), dt=model.dt)
    with pytest.raises(eqx.EquinoxRuntimeError,
                       match=r"^cycled_twin_experiment: the truth run: the state became non-finite \(NaN or inf\) "
                             r"by step \d+ \(it was finite at step \d+\)"):
        da.cycled_twin_experiment(model, u0, schedule, 3, 0.1, jax.random.key(0))
