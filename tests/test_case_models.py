"""Every model kind of the case registry, with every time scheme it accepts, builds from a case file and runs."""

import re

import numpy as np
import pytest

import diffphys as dp
from diffphys import cases
from diffphys._app.registry import MODEL_KINDS
from diffphys.schemes import scheme_registry, unconditionally_stable

PARAMETERS = {
    "heat": "kappa = 0.01",
    "advection": "velocity = 1.0",
    "wave": "speed = 1.0",
    "lorenz96": "forcing = 8.0",
    "nonlinear_heat": "kappa = 0.01\nbeta = 0.5",
    "advection_diffusion": "velocity = 1.0\nkappa = 0.01",
}

PDE = """
[grid]
n = 8
[model]
kind = "{kind}"
{parameters}
[truth]
initial = "sin(2 * pi * x)"
[window]
duration = 0.02
[observations]
positions = [0.25, 0.75]
every = 0.01
sigma = 0.1
[background]
sigma = 0.2
length_scale = 0.2
"""

RING = """
[grid]
n = 8
[model]
kind = "lorenz96"
{parameters}
[truth]
initial = "8 + sin(2 * pi * x / 8)"
[window]
duration = 0.1
[observations]
positions = [1.5, 5.5]
every = 0.05
sigma = 1.0
[background]
sigma = 1.0
length_scale = 1.0
"""


def _case_text(kind: str, scheme: str | None) -> str:
    lines = [PARAMETERS[kind]]
    if scheme is not None:
        lines.append(f'scheme = "{scheme}"')
        if unconditionally_stable(scheme_registry()[scheme]):
            lines.append("dt = 0.01")
        if kind == "advection" and scheme == "euler":
            lines.append('reconstruction = "upwind"')  # forward Euler is unstable with WENO5
    template = RING if MODEL_KINDS[kind].ring is not None else PDE
    return template.format(kind=kind, parameters="\n".join(lines))


def _write(tmp_path, text: str):
    path = tmp_path / "case.toml"
    path.write_text(text)
    return path


COMBINATIONS = [(kind, scheme) for kind, entry in MODEL_KINDS.items() for scheme in entry.schemes]


def test_the_registry_names_the_six_model_kinds():
    assert set(MODEL_KINDS) == {"heat", "advection", "wave", "lorenz96", "nonlinear_heat", "advection_diffusion"}
    for entry in MODEL_KINDS.values():
        assert entry.default_scheme in entry.schemes and set(entry.schemes) <= set(scheme_registry())


@pytest.mark.parametrize("kind, scheme", COMBINATIONS)
def test_every_model_kind_builds_with_every_scheme_it_accepts_and_evaluates_its_cost(tmp_path, kind, scheme):
    problem = cases.build_problem(cases.load_case(_write(tmp_path, _case_text(kind, scheme))))
    assert problem.model.scheme.name == scheme
    cost = problem.fourdvar.cost(problem.fourdvar.zero_control())
    assert np.isfinite(float(cost)) and float(cost) > 0


@pytest.mark.parametrize("kind", [k for k, e in MODEL_KINDS.items() if not unconditionally_stable(scheme_registry()[e.default_scheme])])
def test_the_default_scheme_and_time_step(tmp_path, kind):
    problem = cases.build_problem(cases.load_case(_write(tmp_path, _case_text(kind, None))))
    assert problem.model.scheme.name == MODEL_KINDS[kind].default_scheme
    assert problem.schedule.n_steps <= problem.n_steps


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_the_registry_lists_every_scheme_the_model_accepts(kind):
    """A scheme left out of a kind's list is one its model refuses (so the list is complete)."""
    entry = MODEL_KINDS[kind]
    grid = entry.ring(8) if entry.ring is not None else dp.Grid1D(8, 1.0, bc="periodic")
    fields = {name: np.full(grid.shape, 8.0 if name == "forcing" else 0.01) for name in entry.fields}
    settings = {"reconstruction": "upwind", "beta": 0.5}
    for name in sorted(set(scheme_registry()) - set(entry.schemes)):
        with pytest.raises(ValueError):
            entry.build(grid, fields, settings, 0.001, name)


def test_nonlinear_heat_and_advection_diffusion_offer_their_parameters_as_controls(tmp_path):
    text = _case_text("advection_diffusion", None).replace("[background]", "[control]\nkind = \"parameter\"\n"
                                                           "parameter = \"kappa\"\n[background]\nfirst_guess = 0.02")
    problem = cases.build_problem(cases.load_case(_write(tmp_path, text)))
    assert float(problem.fourdvar.cost(problem.fourdvar.zero_control())) > 0
    np.testing.assert_allclose(problem.truth_control, 0.01)


@pytest.mark.parametrize(
    "kind, edit, match",
    [
        ("heat", 'scheme = "leapfrog"', "[model] scheme 'leapfrog' is not a time scheme of kind 'heat'; valid are "
                                        "['euler', 'ssprk3', 'rk4', 'backward_euler', 'crank_nicolson']"),
        ("lorenz96", 'scheme = "rk5"', "[model] scheme 'rk5' is not a time scheme of kind 'lorenz96'; valid are "
                                       "['ssprk3', 'rk4'] (did you mean 'rk4'?)"),
        ("nonlinear_heat", 'scheme = "rk4"', "[model] scheme 'rk4' is not a time scheme of kind 'nonlinear_heat'; "
                                             "valid are ['backward_euler', 'crank_nicolson']"),
        ("advection_diffusion", 'scheme = "euler"', "valid are ['imex_ars443', 'backward_euler', 'crank_nicolson']"),
        ("nonlinear_heat", "", "[model] dt is required with scheme 'backward_euler': it is stable at any dt"),
        ("wave", 'scheme = "cn"', "[model] dt is required with scheme 'crank_nicolson'"),
        ("heat", "beta = 1.0", "[model] beta does not apply to kind 'heat'; its keys are "
                               "['kind', 'kappa', 'source', 'scheme', 'dt']"),
    ],
)
def test_bad_schemes_are_refused_with_the_valid_ones(tmp_path, kind, edit, match):
    text = _case_text(kind, None).replace(PARAMETERS[kind], PARAMETERS[kind] + "\n" + edit)
    with pytest.raises(cases.CaseError, match=re.escape(match)):
        cases.load_case(_write(tmp_path, text))


def test_every_required_parameter_is_required(tmp_path):
    text = _case_text("advection_diffusion", None).replace("kappa = 0.01", "")
    with pytest.raises(cases.CaseError, match=re.escape("[model] kappa is required for kind 'advection_diffusion'")):
        cases.load_case(_write(tmp_path, text))


def test_a_scheme_alias_is_accepted(tmp_path):
    text = _case_text("heat", None).replace("kappa = 0.01", 'kappa = 0.01\nscheme = "CN"\ndt = 0.01')
    problem = cases.build_problem(cases.load_case(_write(tmp_path, text)))
    assert problem.model.scheme.name == "crank_nicolson"
