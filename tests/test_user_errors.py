"""Bad input that used to crash with a traceback or give a silently wrong answer: each is refused with a
message naming the offending key or value and what would be valid (issue 14)."""

from pathlib import Path

import numpy as np
import pytest

from diffphys.cases import CaseError, build_problem, load_case
from diffphys.cli import main

SMALL = ["grid.n=16", "solver.max_iterations=2"]
CASES = Path(__file__).resolve().parents[1] / "cases"


@pytest.mark.parametrize(
    "override, key, message",
    [
        ("model.kappa=1/0", "[model] kappa", "ZeroDivisionError"),
        ("truth.initial=10.0**400", "[truth] initial", "OverflowError"),
        ("truth.initial=(-1.0)**0.5", "[truth] initial", "evaluates to a complex number"),
        ("truth.initial=where(x)", "[truth] initial", "does not evaluate to a number or a field"),
        ("background.first_guess=sqrt(1, 2)", "[background] first_guess", "cannot evaluate 'sqrt(1, 2)'"),
    ],
)
def test_an_expression_that_cannot_be_evaluated_names_its_key(override, key, message):
    with pytest.raises(CaseError) as error:
        build_problem(load_case("heat1d-sparse", [*SMALL, override]))
    assert str(error.value).startswith(f"{key}: ") and message in str(error.value), error.value


@pytest.mark.parametrize("seed", ["1000000000000000000000000000000", "4294967296"])
def test_a_seed_out_of_range_is_refused_with_the_range(seed):
    with pytest.raises(CaseError, match=rf"seed must be an integer >= 0 and <= 4294967295, got {seed}"):
        load_case("heat1d-sparse", [f"seed={seed}"])
    assert load_case("heat1d-sparse", ["seed=4294967295"])["seed"] == 4294967295


def test_the_cli_reports_an_expression_error_without_a_traceback(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path), "--set", "model.kappa=1/0", *[a for s in SMALL for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: [model] kappa: cannot evaluate '1/0'"), err


NONLINEAR_HEAT = """
[grid]
n = 16
bc = "neumann"
[model]
kind = "nonlinear_heat"
kappa = 0.01
beta = 30.0
dt = 0.01
[truth]
initial = "exp(-(x - 0.3)**2 / 0.004)"
[window]
duration = 0.1
[observations]
positions = [0.2, 0.5]
every = 0.05
sigma = 0.02
[background]
sigma = 0.3
length_scale = 0.05
[solver]
max_iterations = 2
"""


def test_a_solvers_run_time_failure_is_a_message_and_exit_status_2(tmp_path, capsys):
    # κ₀ e^{30 u} with u up to 1: the backward-Euler Newton iteration fails its run-time check (equinox.error_if).
    (tmp_path / "stiff.toml").write_text(NONLINEAR_HEAT)
    assert main(["run", str(tmp_path / "stiff.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: NonlinearHeat backward-Euler step did not converge"), err
    assert "Traceback" not in err and "An error occurred during the runtime" not in err


def test_an_internal_error_is_a_short_message_with_exit_1_unless_debugging(tmp_path, capsys, monkeypatch):
    import diffphys._app.runner

    def broken(*args, **kwargs):
        raise KeyError("some_internal_key")

    monkeypatch.setattr(diffphys._app.runner, "run_case", broken)
    monkeypatch.delenv("DIFFPHYS_DEBUG", raising=False)
    assert main(["run", "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: KeyError: 'some_internal_key'") and "DIFFPHYS_DEBUG=1" in err, err
    monkeypatch.setenv("DIFFPHYS_DEBUG", "1")
    with pytest.raises(KeyError, match="some_internal_key"):
        main(["run", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(CaseError, match="unknown case"):  # user errors raise too, for their traceback
        main(["run", "no-such-case", "--out", str(tmp_path)])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["observations.sigma=1e-300"], "the 4D-Var cost became non-finite (NaN or inf) at the first guess (cost inf)"),
        (["solver.method=adam", "solver.learning_rate=1e300"],
         "at iteration 1 (cost 7900.5 at iteration 0), so there is no analysis to report; lower [solver] learning_rate"),
    ],
)
def test_a_non_finite_cost_is_refused_not_reported_as_an_analysis(overrides, message, tmp_path, capsys):
    args = ["run", "--out", str(tmp_path / "out"), "--quiet", "--set", "grid.n=32", "--set", "solver.max_iterations=3"]
    assert main([*args, *[a for s in overrides for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: the solver (") and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_window_that_is_not_a_whole_number_of_steps_is_refused_with_the_nearest_valid_durations():
    # It used to run 17 steps (to t = 0.2125) while summary.json reported a window of 0.21.
    with pytest.raises(CaseError) as error:
        build_problem(load_case("heat1d-sparse", [*SMALL, "model.dt=0.0125", "window.duration=0.21"]))
    assert str(error.value) == (
        "[window] duration = 0.21 is not a whole number of time steps dt = 0.0125 (16.8 steps); the nearest valid "
        "values are 0.2 and 0.2125 (or choose a [model] dt that divides 0.21)"
    )
    assert build_problem(load_case("heat1d-sparse", [*SMALL, "model.dt=0.0125", "window.duration=0.2125"])).n_steps == 17


def test_a_cycling_shift_that_is_not_a_whole_number_of_steps_is_refused():
    from diffphys.cases import build_cycled_problem

    overrides = ["cycling.cycles=3", "cycling.spin_up=0", "model.dt=0.04", "cycling.shift=0.1", "observations.every=0.2",
                 "window.duration=0.2", "truth.spin_up=0"]
    with pytest.raises(CaseError, match=r"\[cycling\] shift = 0.1 is not a whole number of time steps dt = 0.04 "
                                        r"\(2.5 steps\); the nearest valid values are 0.08 and 0.12"):
        build_cycled_problem(load_case("lorenz96-4dvar", overrides))


def _fourdvar(values):
    import jax.numpy as jnp

    import diffphys as dp
    from diffphys import assimilate as da
    from diffphys import observe as ob

    grid = dp.Grid1D(16, bc="neumann")
    model = dp.Heat(grid, 0.01, dt=1e-3)
    schedule = ob.ObservationSchedule([0.002, 0.004], ob.PointSensors(grid, [0.25, 0.5, 0.75]), dt=1e-3)
    return da.StrongConstraint4DVar(model, schedule, jnp.asarray(values), ob.DiagonalR(0.1),
                                    ob.DiffusionB(grid, 0.3, 0.1), jnp.zeros(16))


def test_an_infinite_reading_is_refused_naming_its_time_and_sensor():
    # NaN is a missing reading; inf used to be masked as missing too, silently.
    with pytest.raises(ValueError, match=r"StrongConstraint4DVar: observation 4 \(time 0.004, sensor 1\) is -inf; a "
                                         r"reading must be finite, or NaN where it is missing"):
        _fourdvar([1.0, 2.0, 3.0, 4.0, -float("inf"), 6.0])


def test_a_problem_without_any_reading_is_refused():
    # It used to "converge" at once with cost 0 (the background term alone).
    with pytest.raises(ValueError, match=r"all 6 observations are missing \(NaN\), so there is nothing to assimilate"):
        _fourdvar([float("nan")] * 6)
    assert _fourdvar([float("nan")] * 5 + [1.0]).n_observations == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("time,x,value\n0.05,0.25,0.7\n0.05,0.75,inf\n",
         "[observations] file: observation dataset: the value at time 0.05, sensor 1 is inf; a reading must be finite"),
        ("time,x,value\n0.05,0.25,nan\n0.1,0.75,\n",
         "[observations] file: observation dataset: all 4 values are missing (NaN); there is nothing to assimilate"),
    ],
)
def test_an_observation_file_with_an_infinite_or_no_reading_is_refused(text, message, tmp_path):
    (tmp_path / "data.csv").write_text(text)
    overrides = ["observations.sensors=file", "observations.file=data.csv", "observations.positions=",
                 "observations.every=", "observations.missing_fraction=", "background.first_guess=0.0"]
    (tmp_path / "case.toml").write_text((CASES / "heat1d-sparse.toml").read_text())
    with pytest.raises(CaseError) as error:
        build_problem(load_case(tmp_path / "case.toml", [*SMALL, *overrides]))
    assert message in str(error.value), error.value


def test_a_twin_experiment_that_loses_every_reading_is_refused():
    with pytest.raises(CaseError, match=r"\[observations\] missing_fraction = 0.999999 lost all 120 readings of the twin "
                                        r"experiment, so there is nothing to assimilate"):
        build_problem(load_case("heat1d-sparse", [*SMALL, "observations.missing_fraction=0.999999"]))


def test_a_parameter_control_runs_the_models_checks_on_concrete_values():
    import equinox as eqx
    import jax.numpy as jnp

    import diffphys as dp
    from diffphys import assimilate as da

    model = dp.Heat(dp.Grid1D(16), 0.01, dt=1e-3)
    control = da.Parameter("kappa", jnp.zeros(16), transform="identity")
    kappa = jnp.full(16, 0.01).at[3].set(-0.02)
    # eqx.tree_at used to set it without any check: a negative diffusivity ran backward heat.
    with pytest.raises(ValueError, match=r"Parameter 'kappa': the control sets an invalid model: Heat: kappa \(diffusivity\) "
                                         r"must be >= 0 everywhere; found -0.02 at index \(3,\); with transform='identity'"):
        control.apply(model, kappa)
    with pytest.raises(ValueError, match=r"Heat: dt=0.001 exceeds the stability limit"):  # the dt's check too
        control.apply(model, jnp.full(16, 10.0))
    # Inside jit the value is traced: nothing can be checked, nothing fails (the caller checks the result).
    traced = eqx.filter_jit(lambda z: control.apply(model, z)[0].kappa)(kappa)
    np.testing.assert_array_equal(traced, kappa)
    np.testing.assert_array_equal(control.apply(model, jnp.full(16, 0.02))[0].kappa, jnp.full(16, 0.02))


def test_a_run_whose_analysis_parameter_is_invalid_is_refused(tmp_path, capsys):
    # 1D heat, κ estimated with transform = identity from a first guess near 0: the analysis κ dips below 0.
    overrides = ["grid.n=32", "control.kind=parameter", "control.parameter=kappa", "control.transform=identity",
                 "background.first_guess=0.002", "background.sigma=0.02", "model.kappa=0.01 * (1 + 0.9 * sin(2 * pi * x))",
                 "solver.max_iterations=10", "observations.missing_fraction=0", "observations.sigma=0.1"]
    assert main(["run", "--out", str(tmp_path / "out"), "--quiet", *[a for s in overrides for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffphys run: error: [control] parameter kappa: the analysis is not a valid model, so it is "
                          "not reported: Parameter 'kappa': the control sets an invalid model: Heat: kappa (diffusivity) "
                          "must be >= 0 everywhere; found -"), err
    assert not (tmp_path / "out").exists()


def test_a_truth_spin_up_without_cycling_is_refused_not_ignored():
    with pytest.raises(CaseError, match=r"\[truth\] spin_up = 0.3 applies only with \[cycling\] cycles; a single-window "
                                        r"case starts the truth at \[truth\] initial"):
        load_case("heat1d-sparse", ["truth.spin_up=0.3"])
