"""Case files: built-ins, overrides, expressions, observation files and every documented error."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import cases
from diffphys._app.expression import ExpressionError, evaluate
from diffphys._compile_monitor import CompileMonitor

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("advection2d-sparse", "heat1d-deblur-tv", "heat1d-sparse", "heat2d-diffusivity", "heat2d-source-l1",
           "lorenz96-4dvar", "wave1d-initial")
SINGLE_WINDOW = tuple(name for name in BUILTIN if name != "lorenz96-4dvar")


def test_builtin_cases_are_listed_and_shipped_identical_to_the_user_copies():
    listed = cases.builtin_cases()
    assert tuple(listed) == BUILTIN
    assert all(listed[name] for name in BUILTIN)
    packaged = {p.name: p.read_text() for p in (ROOT / "diffphys" / "cases_data").glob("*.toml")}
    user = {p.name: p.read_text() for p in (ROOT / "cases").glob("*.toml")}
    assert packaged == user, "cases/*.toml and diffphys/cases_data/*.toml must be identical (copy one onto the other)"


@pytest.mark.parametrize("name", SINGLE_WINDOW)
def test_every_builtin_case_loads_and_builds_at_reduced_size(name):
    case = cases.load_case(name, ["grid.n=8" if "1d" in name else "grid.n=[8, 8]"])
    assert case.name == name and case.source.name == f"{name}.toml"
    if name in ("heat2d-diffusivity", "heat2d-source-l1"):
        case = cases.load_case(name, ["grid.n=[8, 8]", "observations.stride=2", "observations.offset=1"])
    with CompileMonitor() as monitor:
        problem = cases.build_problem(case)
    # Two XLA programs, the twin experiment's (none if an earlier test in this process compiled them): its random
    # draws, compiled for compile speed, and its truth run. The fields, operators, keys and controls are made on
    # the host, so a first run compiles nothing else.
    assert monitor.programs <= 2
    assert problem.fourdvar.n_observations > 0 and problem.truth_control is not None
    # Every observation time lies on the model's time grid, the window end too.
    assert problem.schedule.n_steps <= problem.n_steps
    np.testing.assert_allclose(problem.n_steps * problem.model.dt, case["window"]["duration"], rtol=1e-12)


def test_the_default_case_and_overrides():
    case = cases.load_case(None, ["solver.max_iterations=7", "solver.method=adam", "seed=3",
                                  "model.kappa=0.02 + 0.01 * x", "grid.bc=[\"dirichlet\", \"neumann\"]"])
    assert case.name == "heat1d-sparse"
    assert case["solver"]["max_iterations"] == 7 and case["solver"]["method"] == "adam" and case.config["seed"] == 3
    assert case["model"]["kappa"] == "0.02 + 0.01 * x"  # a bare expression is a string
    assert case["grid"]["bc"] == ["dirichlet", "neumann"]
    assert case["solver"]["gtol"] == 1e-5  # defaults filled in


def test_time_step_puts_every_observation_time_on_a_step():
    case = cases.load_case(None, ["grid.n=16", "observations.every=", "observations.times=[0.01, 0.025, 0.1]",
                                  "window.duration=0.1"])
    problem = cases.build_problem(case)
    dt = problem.model.dt
    assert problem.schedule.steps == tuple(round(t / dt) for t in (0.01, 0.025, 0.1))
    assert abs(0.005 / dt - round(0.005 / dt)) < 1e-9 and dt <= 0.9 * problem.model.max_stable_dt / 0.9 + 1e-15


def test_expressions():
    x = np.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(evaluate("exp(-(x - 0.5)**2 / 0.1) + 2 * pi", {"x": x}), np.exp(-((x - 0.5) ** 2) / 0.1) + 2 * np.pi)
    np.testing.assert_array_equal(evaluate("where(0.25 < x <= 0.75, 1, 0)", {"x": x}), [0, 0, 1, 1, 0])
    for text, match in (
        ("__import__('os').system('true')", r"system\('true'\)\" is not allowed in the expression"),
        ("sin(z)", "unknown name 'z'"),
        ("x +", "cannot parse the expression"),
        ("x.real", "is not allowed"),
        ("sin(x, x, x)", "cannot evaluate"),
    ):
        with pytest.raises(ExpressionError, match=match):
            evaluate(text, {"x": x})


def _write(tmp_path, text: str, name: str = "case.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
description = "test"
[grid]
n = 16
bc = "neumann"
[model]
kind = "heat"
kappa = 0.01
[truth]
initial = "sin(pi * x)"
[window]
duration = 0.2
[observations]
positions = [0.25, 0.75]
every = 0.05
sigma = 0.01
[background]
sigma = 0.2
length_scale = 0.1
"""


def test_a_minimal_case_file_with_defaults(tmp_path):
    case = cases.load_case(_write(tmp_path, MINIMAL))
    assert case.name == "case" and case["observations"]["sensors"] == "points" and case["output"]["snapshots"] == 5
    problem = cases.build_problem(case)
    assert problem.schedule.sizes == (2, 2, 2, 2)


def test_the_cycled_lorenz96_case_builds_its_sliding_windows():
    case = cases.load_case("lorenz96-4dvar", ["cycling.cycles=5", "cycling.spin_up=1", "truth.spin_up=1.0"])
    problem = cases.build_cycled_problem(case)
    assert problem.model.dt == 0.05 and problem.model.grid.n == 40 and problem.shift == 4
    assert problem.schedule.steps == (4, 8, 12, 16) and problem.schedule.size == 160
    assert problem.twin.observations.shape == (5, 160) and problem.spin_up == 1
    # The truth starts from the attractor: 1.0 time units (20 steps) after the initial expression.
    x = np.arange(40) + 0.5
    start = dp.rollout(problem.model, 8 + 0.01 * np.sin(2 * np.pi * x / 40), 20)[-1]
    np.testing.assert_allclose(problem.twin.truth_start[0], start, rtol=0, atol=1e-12)
    with pytest.raises(cases.CaseError, match=r"has \[cycling\] cycles: build it with build_cycled_problem"):
        cases.build_problem(case)
    with pytest.raises(cases.CaseError, match=r"needs \[cycling\] cycles; use build_problem"):
        cases.build_cycled_problem(cases.load_case("heat1d-sparse"))


def test_observations_from_a_csv_file(tmp_path):
    (tmp_path / "data.csv").write_text("time,x,value,sigma\n0.05,0.25,0.7,0.02\n0.05,0.75,0.7,0.02\n0.1,0.5,0.9,0.05\n")
    text = MINIMAL.replace("positions = [0.25, 0.75]\nevery = 0.05\nsigma = 0.01", 'sensors = "file"\nfile = "data.csv"')
    text = text.replace("length_scale = 0.1", "length_scale = 0.1\nfirst_guess = 0.5")
    problem = cases.build_problem(cases.load_case(_write(tmp_path, text)))
    assert problem.schedule.steps[-1] * problem.model.dt == pytest.approx(0.1)
    assert problem.fourdvar.n_observations == 3 and problem.truth_control is None and problem.truth_model is None
    np.testing.assert_array_equal(problem.sigma[np.isfinite(problem.observations)], [0.02, 0.02, 0.05])
    with pytest.raises(cases.CaseError, match="first_guess is required with observations from a file"):
        cases.build_problem(cases.load_case(_write(tmp_path, text.replace("first_guess = 0.5", ""), "b.toml")))


def test_an_observation_file_with_its_own_names_and_rows_out_of_order(tmp_path):
    (tmp_path / "data.csv").write_text("T,pos,temp\n0.1,0.5,0.9\n0.05,0.25,0.7\n0.05,0.75,0.7\n")
    text = MINIMAL.replace("positions = [0.25, 0.75]\nevery = 0.05\nsigma = 0.01",
                           'sensors = "file"\nfile = "data.csv"\nsigma = 0.02\nnames = {time = "T", x = "pos", value = "temp"}')
    text = text.replace("length_scale = 0.1", "length_scale = 0.1\nfirst_guess = 0.5")
    problem = cases.build_problem(cases.load_case(_write(tmp_path, text)))
    assert problem.fourdvar.n_observations == 3
    np.testing.assert_allclose(np.asarray(problem.schedule.times), [0.05, 0.1])
    assert problem.notes == ("the rows of data.csv were not in time order; they were sorted by time",)
    with pytest.raises(cases.CaseError, match=r"no column \['temperature'\]"):
        cases.build_problem(cases.load_case(_write(tmp_path, text), ['observations.names={value = "temperature"}']))
    with pytest.raises(cases.CaseError, match=r"\['depth'\] are not observation names"):
        cases.load_case(_write(tmp_path, text), ['observations.names={depth = "d"}'])
    with pytest.raises(cases.CaseError, match="names applies only to sensors = 'file'"):
        cases.load_case(_write(tmp_path, MINIMAL), ['observations.names={value = "temp"}'])


def _error(tmp_path, text, overrides=()):
    with pytest.raises(cases.CaseError) as info:
        case = cases.load_case(_write(tmp_path, text), overrides)
        (cases.build_problem if case["cycling"]["cycles"] is None else cases.build_cycled_problem)(case)
    return str(info.value)


@pytest.mark.parametrize(
    "edit, overrides, match",
    [
        # Unknown keys and sections: named with their section, the valid keys and the close match.
        (("sigma = 0.01", "sigma = 0.01\nsgima = 0.02"), (),
         r"unknown key 'sgima' in \[observations\]; valid keys are \[.*'sigma'.*\] \(did you mean 'sigma'\?\)"),
        (("[window]", "[windows]"), (), r"unknown section \[windows\]; valid sections are .* \(did you mean 'window'\?\)"),
        (("description", "descripton"), (), r"unknown top-level key 'descripton'.*\(did you mean 'description'\?\)"),
        (None, ("solver.max_iteration=5",), r"--set 'solver.max_iteration=5': unknown key 'max_iteration' in \[solver\].*did you mean 'max_iterations'"),
        (None, ("solvers.method=adam",), r"unknown section \[solvers\]"),
        (None, ("nokey",), r"--set 'nokey': expected section.key=value"),
        # Types and ranges, from the file or from --set.
        (None, ("solver.max_iterations=abc",), r"\[solver\] max_iterations must be an integer >= 1, got 'abc'"),
        (None, ("solver.max_iterations=0",), r"\[solver\] max_iterations must be an integer >= 1, got 0"),
        (None, ("observations.sigma=0",), r"\[observations\] sigma must be a number > 0 or a list of them \(one per sensor\), got 0"),
        (None, ("observations.sigma=[0.1, -0.1]",), r"\[observations\] sigma must be a number > 0"),
        (None, ("background.length_scale=-0.1",), r"\[background\] length_scale must be a number > 0, got -0\.1"),
        (None, ("solver.method=newton",),
         r"\[solver\] method must be one of \['gauss_newton', 'lbfgs', 'adam', 'ista', 'fista', 'admm', 'pdhg', 'amp'\], "
         r"got 'newton'"),
        (None, ("model.kind=heta",), r"\[model\] kind must be one of \['heat', 'advection', 'wave', 'lorenz96', 'nonlinear_heat', 'advection_diffusion'\], got 'heta' \(did you mean 'heat'\?\)"),
        (None, ("grid.bc=neuman",), r"\[grid\] bc must be one of \['periodic', 'dirichlet', 'neumann'\], got 'neuman'"),
        (None, ("observations.missing_fraction=1.0",), r"missing_fraction must be a number >= 0 and < 1, got 1\.0"),
        (None, ("output.plots=1",), r"\[output\] plots must be true or false, got 1"),
        (("duration = 0.2", ""), (), r"\[window\] duration is required \(the assimilation window is \[0, duration\]\)"),
        # Consistency between keys.
        (None, ("model.speed=1.0",), r"\[model\] speed does not apply to kind 'heat'; its keys are \['kind', 'kappa', 'source', 'scheme', 'dt'\]"),
        (None, ("observations.times=[0.1]",), r"give exactly one of times \(a list\) or every \(a spacing\)"),
        (None, ("observations.sensors=footprints",), r"\[observations\] radius is required for sensors = 'footprints'"),
        (None, ("control.kind=parameter", "control.parameter=speed", "background.first_guess=0.01"),
         r"\[control\] parameter must be one of \['kappa', 'source'\] for a heat model, got 'speed'"),
        # Priors and the methods that go with them.
        (None, ("prior.kind=laplace",), r"\[prior\] kind must be one of \['gaussian', 'l1', 'elastic_net', 'tv'\], got 'laplace'"),
        (None, ("prior.kind=l1",), r"\[background\] sigma defines a Gaussian B, which does not combine with \[prior\] kind = 'l1'"),
        (None, ("prior.kind=l1", "background.sigma=", "background.length_scale="), r"\[prior\] weight \(λ >= 0\) is required for kind 'l1'"),
        (None, ("prior.kind=l1", "prior.weight=-1", "background.sigma=", "background.length_scale="),
         r"\[prior\] weight must be a number >= 0, got -1"),
        (None, ("prior.kind=l1", "prior.weight=0.1", "background.sigma=", "background.length_scale="),
         r"\[solver\] method 'gauss_newton' minimises a smooth cost; the 'l1' prior is not smooth: use one of \['ista', 'fista', 'admm', 'pdhg'\]"),
        (None, ("solver.method=fista",), r"method 'fista' is a proximal method: it needs a non-Gaussian \[prior\]"),
        (None, ("solver.method=amp",), r"method 'amp' is not available for case files: approximate message passing needs a dense"),
        (None, ("prior.weight=0.1",), r"\[prior\] weight does not apply to the gaussian prior"),
        (None, ("prior.kind=tv", "prior.weight=0.1", "prior.nonnegative=true", "solver.method=fista", "background.sigma=",
                "background.length_scale="), r"\[prior\] tv with bounds has no exact prox, which 'fista' needs; use 'admm' or 'pdhg'"),
        (None, ("prior.kind=l1", "prior.weight=0.1", "solver.method=pdhg", "background.sigma=", "background.length_scale="),
         r"method 'pdhg' is for the tv prior"),
        (None, ("prior.kind=l1", "prior.weight=0.1", "prior.lower=1", "prior.upper=0", "solver.method=fista",
                "background.sigma=", "background.length_scale="), r"the bounds are empty: lower = 1 > upper = 0"),
        (None, ("prior.kind=l1", "prior.weight=0.1", "solver.method=fista", "background.sigma=", "background.length_scale=",
                "control.kind=parameter", "control.parameter=source"), r"\[control\] transform must be 'identity' with \[prior\] kind = 'l1'"),
        (None, ("background.sigma=",), r"\[background\] sigma is required with the gaussian prior"),
        # Cycled cases and the Lorenz-96 model.
        (None, ("cycling.shift=0.1",), r"\[cycling\] shift needs \[cycling\] cycles \(the number of windows\)"),
        (None, ("cycling.cycles=3", "solver.method=lbfgs"), r"\[solver\] method is not supported with \[cycling\]"),
        (None, ("cycling.cycles=3", "observations.missing_fraction=0.2"), r"\[observations\] missing_fraction is not supported with \[cycling\]"),
        (None, ("cycling.cycles=3", "cycling.spin_up=3"), r"\[cycling\] spin_up = 3 must be smaller than cycles = 3"),
        (None, ("cycling.cycles=3", "cycling.shift=0.15"), r"\[cycling\] shift = 0\.15 must divide the window duration 0\.2"),
        (None, ("cycling.cycles=2", "observations.every=0.15"), r"with \[cycling\] a window ends at its last observation; the last time is 0\.15"),
        (None, ("model.kind=lorenz96", "model.kappa=", "grid.bc="), r"\[model\] forcing is required for kind 'lorenz96'"),
        (None, ("model.kind=lorenz96", "model.kappa=", "model.forcing=8", "grid.bc=", "grid.length=2.0"),
         r"\[grid\] length does not apply to kind 'lorenz96' .* give only \[grid\] n"),
        # Values checked against the grid and the window.
        (None, ("observations.positions=[0.5, 1.5]",), r"\[observations\]: PointSensors: sensor 1 at x=1\.5 lies outside the domain; valid coordinates are 0 <= x <= 1"),
        (None, ("observations.times=[0.1, 0.05]", "observations.every=0.05"), "give exactly one of"),
        (("every = 0.05", "times = [0.1, 0.05]"), (), r"observation times are not sorted: t\[1\]=0\.05 comes after t\[0\]=0\.1"),
        (("every = 0.05", "times = [0.05, 0.05]"), (), r"duplicate observation time t=0\.05"),
        (("every = 0.05", "times = [0.05, 0.3]"), (), r"t=0\.3 \(position 1\) lies outside the assimilation window \[0, 0\.2\]"),
        (None, ("model.dt=0.003",), r"t=0\.05 \(position 0\) is not on the model's time grid"),
        (None, ("model.kappa=\"0.01 * log(x - 2)\"",), r"\[model\] kappa is not finite everywhere on the grid"),
        (None, ("truth.initial=sin(z)",), r"\[truth\] initial: unknown name 'z'"),
        (None, ("model.kappa=-0.01",), r"\[model\]: Heat: kappa \(diffusivity\) must be >= 0 everywhere"),
        (None, ("grid.n=[8, 8]",), r"\[observations\]: PointSensors: .* on a 2D grid give a non-empty array of shape \(m, 2\)"),
    ],
)
def test_bad_case_files_raise_errors_that_name_the_field(tmp_path, edit, overrides, match):
    text = MINIMAL if edit is None else MINIMAL.replace(*edit)
    assert edit is None or text != MINIMAL
    import re

    assert re.search(match, _error(tmp_path, text, overrides))


def test_unknown_case_names_and_files():
    with pytest.raises(cases.CaseError, match=r"unknown case 'heat1d': not a file, and the built-in cases are \['advection2d-sparse', 'heat1d-deblur-tv', 'heat1d-sparse', 'heat2d-diffusivity', 'heat2d-source-l1', 'lorenz96-4dvar', 'wave1d-initial'\] \(did you mean 'heat1d-sparse'\?\)"):
        cases.load_case("heat1d")
    with pytest.raises(cases.CaseError, match="case file 'missing.toml' does not exist"):
        cases.load_case("missing.toml")


def test_invalid_toml(tmp_path):
    with pytest.raises(cases.CaseError, match="is not valid TOML"):
        cases.load_case(_write(tmp_path, "[grid\nn = 3"))


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1])
def test_a_cases_prng_key_is_jax_random_key_of_its_seed(seed):
    from diffphys._app.build import case_key

    key = case_key(seed)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(seed)))
    np.testing.assert_array_equal(jax.random.normal(key, (3,)), jax.random.normal(jax.random.key(seed), (3,)))


def test_host_side_construction_compiles_no_program():
    """A run's host-side steps (its PRNG key, models and their fields, observation operators, the solver's
    default parameters, the 4D-Var control transform and starting increment, a result's name) run in NumPy
    and move data with ``device_array``; each eager ``jnp`` call would compile a tiny XLA program."""
    from diffphys._app.build import case_key
    from diffphys._solution import result_name
    from diffphys._validate import device_array

    grid1, grid2 = dp.Grid1D(8), dp.Grid2D(6, 4)
    background = device_array(np.linspace(0.1, 1.0, 8))
    B = dp.observe.DiagonalR(device_array(np.ones(8)))
    solver = dp.solvers.GaussNewton()
    control = dp.assimilate.Parameter("kappa", background, transform="log")
    with CompileMonitor() as monitor:
        case_key(7)
        heat = dp.Heat(grid1, 0.5 + 0.1 * np.sin(np.arange(8.0)))
        dp.Advection(grid1, 0.3)
        dp.Advection(grid2, (0.3, np.full(grid2.shape, -0.2)))
        dp.observe.GridMask(grid2, np.arange(24).reshape(6, 4) % 3 == 0).locations
        params = solver.default_params(background)
        start = dp.assimilate._fourdvar._start(background, B)
        z = control.to_control(heat.kappa)
        model, _ = control.apply(heat, z)
        names = [result_name(getattr(dp.RESULTS, name)) for name in ("successful", "nonfinite")]
        converted = [device_array(v) for v in (np.arange(3), np.ones(2, np.float32), [1.0, 2.0], 2.5, np.ones(2, bool))]
    assert monitor.programs == 0
    assert names == ["successful", "nonfinite"]
    assert float(params.step_length) == solver.step_length and params.log_damping.dtype == jnp.float64
    np.testing.assert_array_equal(start, np.zeros(8))
    np.testing.assert_allclose(model.kappa, heat.kappa, rtol=1e-15)
    np.testing.assert_allclose(z, np.log(np.asarray(heat.kappa)), rtol=1e-15)
    # device_array gives what jnp.asarray gives: the same values and canonical dtype (float64 here).
    for value, array in zip((np.arange(3), np.ones(2, np.float32), [1.0, 2.0], 2.5, np.ones(2, bool)), converted):
        reference = jnp.asarray(value)
        assert isinstance(array, jax.Array) and array.dtype == reference.dtype
        np.testing.assert_array_equal(array, reference)
    assert device_array(background) is background


def test_relative_errors_of_a_zero_truth_are_null_not_a_crash():
    """A case whose true field is zero (a source that misses every cell of a coarse grid) has no relative
    error: the summary says null (strict JSON) instead of dividing by zero."""
    from diffphys._app.metrics import prior_metrics
    from diffphys._app.single import _relative

    grid = dp.Grid2D(8, 8)
    zero, analysis = np.zeros((8, 8)), np.full((8, 8), 0.01)
    metrics = prior_metrics("l1", zero, analysis, grid)
    assert metrics["relative_error"] is None
    assert prior_metrics("l1", np.ones((8, 8)), analysis, grid)["relative_error"] == pytest.approx(0.99)
    assert _relative(0.5, zero) is None and _relative(0.5, None) is None
    assert _relative(0.5, np.full(4, 2.0)) == pytest.approx(0.25)
