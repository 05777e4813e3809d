"""Bad input that used to crash with a traceback or give a silently wrong answer: each is refused with a
message naming the offending key or value and what would be valid (issue 14)."""

import pytest

from diffphys.cases import CaseError, build_problem, load_case
from diffphys.cli import main

SMALL = ["grid.n=16", "solver.max_iterations=2"]


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
