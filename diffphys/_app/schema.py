"""The schema of case files: every section and key, its type, default and meaning, and their checks.

Each checker takes ``(value, where)`` and returns the normalised value or raises :class:`CaseError`
naming the field (``where``) and what would be valid. See :mod:`diffphys.cases` and ``cases/README.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

from ..schemes import canonical_name, scheme_registry, unconditionally_stable
from .registry import MODEL_KINDS, PRIOR_KINDS, PROXIMAL_METHODS, SOLVER_METHODS

__all__ = ["REQUIRED", "SCHEMA", "CaseError", "check_consistency", "check_known"]


class CaseError(ValueError):
    """A case file (or an override) that is not valid; the message names the field and what is valid."""


# ---------------------------------------------------------------------------------------------------
# Value checkers: each takes (value, where) and returns the normalised value or raises CaseError.

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(*, integer=False, minimum=None, maximum=None, exclusive_min=False, exclusive_max=False):
    bounds, form = [], "d" if integer else "g"
    if minimum is not None:
        bounds.append(f"{'>' if exclusive_min else '>='} {minimum:{form}}")
    if maximum is not None:
        bounds.append(f"{'<' if exclusive_max else '<='} {maximum:{form}}")
    what = ("an integer" if integer else "a number") + (" " + " and ".join(bounds) if bounds else "")

    def check(v, where):
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number(v)
        if ok and minimum is not None:
            ok = v > minimum if exclusive_min else v >= minimum
        if ok and maximum is not None:
            ok = v < maximum if exclusive_max else v <= maximum
        if not ok:
            raise CaseError(f"{where} must be {what}, got {v!r}")
        return v if integer else float(v)

    check.what = what
    return check


def _one_or_pair(check_one):
    def check(v, where):
        if isinstance(v, list):
            if len(v) != 2:
                raise CaseError(f"{where} must be {check_one.what} or a pair of them (one per axis), got {v!r}")
            return [check_one(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return check_one(v, where)

    check.what = f"{check_one.what} or a pair of them"
    return check


def _choice(*options):
    def check(v, where):
        if v not in options:
            hint = difflib.get_close_matches(str(v), options, n=1)
            raise CaseError(f"{where} must be one of {list(options)}, got {v!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return v

    check.what = f"one of {list(options)}"
    return check


def _text(v, where):
    if not isinstance(v, str):
        raise CaseError(f"{where} must be a string, got {v!r}")
    return v


def _names(v, where):
    """A table of the observation file's own names for diffphys's (value, time, sensor, x, y, sigma)."""
    from ..io import check_observation_names

    try:
        return check_observation_names(v)
    except ValueError as error:
        raise CaseError(f'{where}: {error} (e.g. {{value = "temperature", time = "t"}})') from None


def _flag(v, where):
    if not isinstance(v, bool):
        raise CaseError(f"{where} must be true or false, got {v!r}")
    return v


def _field(v, where):
    """A number, or an expression string of the coordinates (evaluated later, on the grid)."""
    if _is_number(v) or isinstance(v, str):
        return float(v) if _is_number(v) else v
    raise CaseError(f"{where} must be a number or an expression of x (and y) in quotes, got {v!r}")


def _field_or_pair(v, where):
    return [_field(x, f"{where}[{i}]") for i, x in enumerate(v)] if isinstance(v, list) else _field(v, where)


def _numbers(v, where):
    if not (isinstance(v, list) and v and all(_is_number(x) for x in v)):
        raise CaseError(f"{where} must be a non-empty list of numbers, got {v!r}")
    return [float(x) for x in v]


def _positive_or_list(v, where):
    values = v if isinstance(v, list) else [v]
    if not (values and all(_is_number(x) and x > 0 for x in values)):
        raise CaseError(f"{where} must be a number > 0 or a list of them (one per sensor), got {v!r}")
    return [float(x) for x in values] if isinstance(v, list) else float(v)


def _positions(v, where):
    ok = isinstance(v, list) and v and (
        all(_is_number(x) for x in v) or all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in v)
    )
    if not ok:
        raise CaseError(f"{where} must be a list of x values (1D) or of [x, y] pairs (2D), got {v!r}")
    return v


def _boundary(v, where):
    names = ("periodic", "dirichlet", "neumann")
    flat = v if isinstance(v, list) else [v]
    flat = [x for item in flat for x in (item if isinstance(item, list) else [item])]
    for x in flat:
        _choice(*names)(x, where)
    return v


_POSITIVE = _number(minimum=0, exclusive_min=True)
_POSITIVE_INT = _number(integer=True, minimum=1)
REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class _Key:
    check: Callable[[Any, str], Any]
    default: Any
    doc: str


SCHEMA: dict[str, dict[str, _Key]] = {
    "": {
        "name": _Key(_text, None, "case name (default: the file name)"),
        "description": _Key(_text, "", "one-line description"),
        # jax.random.key keeps 32 bits without float64: larger seeds would silently repeat smaller ones.
        "seed": _Key(_number(integer=True, minimum=0, maximum=2**32 - 1), 0,
                     "PRNG seed of the twin experiment (noise, background)"),
    },
    "grid": {
        "n": _Key(_one_or_pair(_number(integer=True, minimum=4)), REQUIRED, "cells: n (1D) or [nx, ny] (2D)"),
        "length": _Key(_one_or_pair(_POSITIVE), 1.0, "domain length L or [Lx, Ly]"),
        "bc": _Key(_boundary, "periodic", "boundary: a name, [left, right], or [bc_x, bc_y] in 2D (homogeneous)"),
    },
    "model": {
        "kind": _Key(_choice(*MODEL_KINDS), REQUIRED, "the PDE (or the Lorenz-96 model): a kind of the model registry"),
        "kappa": _Key(_field, None, "heat, nonlinear_heat (κ₀), advection_diffusion: diffusivity κ(x) (number or expression)"),
        "beta": _Key(_number(), 0.0, "nonlinear_heat: exponent β of the diffusivity κ₀(x) exp(β u)"),
        "velocity": _Key(_field_or_pair, None, "advection, advection_diffusion: velocity, [vx, vy] in 2D"),
        "speed": _Key(_field, None, "wave: wave speed c(x)"),
        "source": _Key(_field, None, "heat, wave, nonlinear_heat, advection_diffusion: source term f(x)"),
        "forcing": _Key(_field, None, "lorenz96: forcing F (number, or expression of the variable's position x)"),
        "scheme": _Key(_text, None, "time scheme, one of those the kind accepts (model default if absent)"),
        "reconstruction": _Key(_choice("weno5", "upwind"), "weno5", "advection, advection_diffusion: face reconstruction"),
        "dt": _Key(_POSITIVE, None, "time step (default: the largest stable step that hits every observation time)"),
    },
    "truth": {
        "initial": _Key(_field, None, "true initial state u(x, 0) (required for twin experiments)"),
        "initial_velocity": _Key(_field, 0.0, "wave: true ∂u/∂t(x, 0) (known to the assimilation)"),
        "spin_up": _Key(_number(minimum=0), 0.0, "time the truth runs from initial before the first window (e.g. onto an attractor)"),
    },
    "window": {
        "duration": _Key(_POSITIVE, REQUIRED, "the assimilation window is [0, duration]"),
    },
    "cycling": {
        "cycles": _Key(_POSITIVE_INT, None, "cycled 4D-Var: the number of windows (absent: one window)"),
        "shift": _Key(_POSITIVE, None, "time between window starts (default: the window duration, which it must divide)"),
        "spin_up": _Key(_number(integer=True, minimum=0), 0, "windows left out of the time-averaged RMSE"),
    },
    "observations": {
        "sensors": _Key(_choice("points", "footprints", "grid", "file"), "points", "sensor kind"),
        "positions": _Key(_positions, None, "points/footprints: x values (1D) or [x, y] pairs (2D)"),
        "radius": _Key(_POSITIVE, None, "footprints: averaging radius"),
        "stride": _Key(_one_or_pair(_POSITIVE_INT), None, "grid: observe every stride-th cell"),
        "offset": _Key(_one_or_pair(_number(integer=True, minimum=0)), 0, "grid: first observed cell"),
        "times": _Key(_numbers, None, "observation times (strictly increasing, in the window)"),
        "every": _Key(_POSITIVE, None, "or: observe at every, 2*every, ... <= duration"),
        "sigma": _Key(_positive_or_list, None, "observation-error σ (and the twin's noise): one or one per sensor"),
        "missing_fraction": _Key(_number(minimum=0, maximum=1, exclusive_max=True), 0.0, "twin: fraction of lost observations"),
        "file": _Key(_text, None, "file: observations from a .nc or .csv file (path relative to the case file)"),
        "names": _Key(_names, None, "file: the file's own names for value, time, sensor, x, y, sigma "
                                    "(e.g. {value = \"temperature\"})"),
    },
    "background": {
        "sigma": _Key(_POSITIVE, None, "background-error σ_b of B (of the control; of log p for a log parameter); "
                      "required unless [prior] is not gaussian"),
        "length_scale": _Key(_one_or_pair(_POSITIVE), None, "correlation length L of B; required unless [prior] is not gaussian"),
        "first_guess": _Key(_field, None, "the background (default: truth + a draw from B; 0 with a non-Gaussian prior)"),
    },
    "prior": {
        "kind": _Key(_choice(*PRIOR_KINDS), "gaussian",
                     "the control's prior: gaussian (the [background] B), or l1, elastic_net, tv (proximal methods)"),
        "weight": _Key(_number(minimum=0), None, "l1, elastic_net (its L1 part), tv: the weight λ (required for them)"),
        "l2_weight": _Key(_number(minimum=0), 0.0, "elastic_net: the weight of ½‖x‖²"),
        "nonnegative": _Key(_flag, False, "also constrain the control to x >= 0"),
        "lower": _Key(_number(), None, "also constrain the control to x >= lower"),
        "upper": _Key(_number(), None, "also constrain the control to x <= upper"),
        "isotropic": _Key(_flag, True, "tv on a 2D grid: isotropic (pointwise |∇u|) or anisotropic (|∂x u| + |∂y u|)"),
    },
    "control": {
        "kind": _Key(_choice("initial_state", "parameter"), "initial_state", "what is estimated"),
        "parameter": _Key(_text, None, "parameter: the model's field (kappa, speed, source, velocity)"),
        "transform": _Key(_choice("log", "identity"), "log", "parameter: estimate log p (stays positive) or p"),
    },
    "solver": {
        "method": _Key(_choice(*SOLVER_METHODS, "amp"), "gauss_newton",
                       "Gauss–Newton/Levenberg–Marquardt or a gradient method (gaussian prior); "
                       "ista, fista, admm or pdhg (a proximal method, for a non-Gaussian [prior])"),
        "max_iterations": _Key(_POSITIVE_INT, 100, "iteration budget (Gauss–Newton: outer iterations)"),
        "gtol": _Key(_POSITIVE, 1e-5, "stop when |∇J| (proximal methods: the fixed-point residual) <= gtol × its "
                                      "value at the start"),
        "learning_rate": _Key(_POSITIVE, 0.05, "adam: step size"),
        "checkpoint_every": _Key(_POSITIVE_INT, None, "gradient checkpointing block (steps): adjoint Checkpointed(every=...)"),
    },
    "units": {
        "length": _Key(_text, None, "units of x (and y), e.g. \"m\": in analysis.nc and on the plots' axes (default: not given)"),
        "time": _Key(_text, None, "units of t, e.g. \"s\" (default: not given)"),
        "field": _Key(_text, None, "units of the state and the readings, e.g. \"K\" (default: not given)"),
    },
    "output": {
        "snapshots": _Key(_number(integer=True, minimum=2), 5, "states saved over the window in analysis.nc"),
        "plots": _Key(_flag, True, "write analysis.png and cost.png"),
        "uncertainty": _Key(_flag, True, "Gaussian prior: the posterior standard deviation of the estimated field "
                                         "(Gauss–Newton Hessian at the analysis) as analysis_std"),
        "uncertainty_rank": _Key(_POSITIVE_INT, 200, "rank of the randomized posterior, used when the exact one "
                                                    "(min(readings, controls) model runs) would cost more"),
    },
}


def _did_you_mean(name: str, valid) -> str:
    hint = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _check_cycling(config: dict, origin: str) -> None:
    cycling, obs = config["cycling"], config["observations"]
    if cycling["cycles"] is None:
        for key in ("shift", "spin_up"):
            if cycling[key] != SCHEMA["cycling"][key].default:
                raise CaseError(f"{origin}: [cycling] {key} needs [cycling] cycles (the number of windows)")
        if config["truth"]["spin_up"] > 0:  # a single window starts the truth at [truth] initial: it was ignored
            raise CaseError(f"{origin}: [truth] spin_up = {config['truth']['spin_up']:g} applies only with [cycling] "
                            "cycles; a single-window case starts the truth at [truth] initial (remove spin_up)")
        return
    clashes = {
        "[solver] method": config["solver"]["method"] != "gauss_newton",
        "[control] kind": config["control"]["kind"] != "initial_state",
        "[observations] sensors": obs["sensors"] == "file",
        "[observations] missing_fraction": obs["missing_fraction"] > 0,
    }
    for key, bad in clashes.items():
        if bad:
            raise CaseError(
                f"{origin}: {key} is not supported with [cycling] (cycled 4D-Var estimates the initial state of each "
                "window by Gauss–Newton from a simulated twin experiment with no missing readings)"
            )
    if cycling["spin_up"] >= cycling["cycles"]:
        raise CaseError(f"{origin}: [cycling] spin_up = {cycling['spin_up']} must be smaller than cycles = {cycling['cycles']}")
    duration, shift = config["window"]["duration"], cycling["shift"]
    if shift is not None:
        ratio = duration / shift
        if shift > duration or abs(ratio - round(ratio)) > 1e-9 * ratio:
            raise CaseError(f"{origin}: [cycling] shift = {shift:g} must divide the window duration {duration:g}")


def _check_prior(config: dict, given: dict, origin: str, two_d: bool) -> None:
    """The prior decides the method family: B with Gauss–Newton/gradient methods, a non-Gaussian prior with a
    proximal method; each needs its own keys and refuses the other's."""
    prior, background, method = config["prior"], config["background"], config["solver"]["method"]
    kind = prior["kind"]
    if method == "amp":
        raise CaseError(
            f"{origin}: [solver] method 'amp' is not available for case files: approximate message passing needs a "
            "dense, i.i.d.-Gaussian-like measurement matrix with unit-norm columns (compressed sensing), which a PDE's "
            "forward operator is not; use 'fista' (or diffphys.solvers.AMP from Python for a compressed-sensing problem)"
        )
    if kind == "gaussian":
        for key in sorted(set(given.get("prior", {})) - {"kind"}):
            raise CaseError(f"{origin}: [prior] {key} does not apply to the gaussian prior (it is the [background] B)")
        for key in ("sigma", "length_scale"):
            if background[key] is None:
                raise CaseError(f"{origin}: [background] {key} is required with the gaussian prior (it defines B)")
        if method in PROXIMAL_METHODS:
            raise CaseError(
                f"{origin}: [solver] method {method!r} is a proximal method: it needs a non-Gaussian [prior] "
                f"(kind one of {[k for k in PRIOR_KINDS if k != 'gaussian']}); with the gaussian prior use "
                "'gauss_newton', 'lbfgs' or 'adam'"
            )
        return
    for key in ("sigma", "length_scale"):
        if background[key] is not None:
            raise CaseError(
                f"{origin}: [background] {key} defines a Gaussian B, which does not combine with [prior] kind = "
                f"{kind!r} (the control is the field itself); remove it"
            )
    if prior["weight"] is None:
        raise CaseError(f"{origin}: [prior] weight (λ >= 0) is required for kind {kind!r}")
    if kind != "elastic_net" and "l2_weight" in given.get("prior", {}):
        raise CaseError(f"{origin}: [prior] l2_weight applies only to kind 'elastic_net'")
    if (kind != "tv" or not two_d) and "isotropic" in given.get("prior", {}):
        raise CaseError(f"{origin}: [prior] isotropic applies only to kind 'tv' on a 2D grid")
    if prior["nonnegative"] and prior["lower"] is not None:
        raise CaseError(f"{origin}: [prior] give nonnegative = true or lower, not both")
    lower = 0.0 if prior["nonnegative"] else prior["lower"]
    if lower is not None and prior["upper"] is not None and lower > prior["upper"]:
        raise CaseError(f"{origin}: [prior] the bounds are empty: lower = {lower:g} > upper = {prior['upper']:g}")
    if method not in PROXIMAL_METHODS:
        raise CaseError(
            f"{origin}: [solver] method {method!r} minimises a smooth cost; the {kind!r} prior is not smooth: use one "
            f"of {list(PROXIMAL_METHODS)}"
        )
    bounded = lower is not None or prior["upper"] is not None
    if method == "pdhg" and kind != "tv":
        raise CaseError(f"{origin}: [solver] method 'pdhg' is for the tv prior (K x inside a norm); for {kind!r} use "
                        "'fista' (or 'admm')")
    if kind == "tv" and bounded and method in ("ista", "fista"):
        raise CaseError(f"{origin}: [prior] tv with bounds has no exact prox, which {method!r} needs; use 'admm' or "
                        "'pdhg' (they split the terms)")
    if config["control"]["kind"] == "parameter" and config["control"]["transform"] != "identity":
        raise CaseError(
            f"{origin}: [control] transform must be 'identity' with [prior] kind = {kind!r}: the prior acts on the "
            "parameter field itself (use nonnegative = true or lower to keep it positive)"
        )


def _check_scheme(model: dict, entry, origin: str) -> None:
    """``[model] scheme`` must name a scheme the kind accepts; an unconditionally stable one needs ``[model] dt``."""
    given = model["scheme"]
    name = entry.default_scheme if given is None else canonical_name(given)
    if name not in entry.schemes:
        raise CaseError(
            f"{origin}: [model] scheme {given!r} is not a time scheme of kind {entry.name!r}; valid are "
            f"{list(entry.schemes)}{_did_you_mean(name, entry.schemes)}"
        )
    if model["dt"] is None and unconditionally_stable(scheme_registry()[name]):
        raise CaseError(
            f"{origin}: [model] dt is required with scheme {name!r}: it is stable at any dt, so there is no stability "
            "limit to derive one from; give a step chosen for accuracy that divides the observation times"
        )


def check_known(raw: dict, origin: str) -> None:
    """Every section and key of ``raw`` must be in the schema (typos are errors, not ignored)."""
    sections = [s for s in SCHEMA if s]
    for name, value in raw.items():
        if name in sections and not isinstance(value, dict):
            raise CaseError(f"{origin}: [{name}] must be a table (a section of keys), got {value!r}")
        if isinstance(value, dict):
            if name not in sections:
                raise CaseError(
                    f"{origin}: unknown section [{name}]; valid sections are {sections}{_did_you_mean(name, sections)}"
                )
            for key in value:
                if key not in SCHEMA[name]:
                    raise CaseError(
                        f"{origin}: unknown key {key!r} in [{name}]; valid keys are {list(SCHEMA[name])}"
                        f"{_did_you_mean(key, SCHEMA[name])}"
                    )
        elif name not in SCHEMA[""]:
            raise CaseError(
                f"{origin}: unknown top-level key {name!r}; valid are {list(SCHEMA[''])} and the sections "
                f"{sections}{_did_you_mean(name, [*SCHEMA[''], *sections])}"
            )


def check_consistency(config: dict, given: dict, origin: str) -> None:
    """Checks that involve several keys: which keys go with which kinds, and what each kind needs.

    ``given`` holds the sections as written in the file (before defaults), to tell a key set from a default.
    """
    model, obs, control = config["model"], config["observations"], config["control"]
    kind = model["kind"]
    entry = MODEL_KINDS[kind]
    for key in sorted(set(given.get("model", {})) - set(entry.keys)):
        raise CaseError(f"{origin}: [model] {key} does not apply to kind {kind!r}; its keys are {list(entry.keys)}")
    if entry.ring is not None:
        if isinstance(config["grid"]["n"], list):
            raise CaseError(f"{origin}: [grid] n must be one number (the number of variables) for kind {kind!r}")
        for key in sorted(set(given.get("grid", {})) - {"n"}):
            raise CaseError(f"{origin}: [grid] {key} does not apply to kind {kind!r} (its variables sit on a ring, "
                            "one per unit cell); give only [grid] n")
    _check_cycling(config, origin)
    for key in entry.required:
        if model[key] is None:
            raise CaseError(f"{origin}: [model] {key} is required for kind {kind!r}")
    _check_scheme(model, entry, origin)
    two_d = isinstance(config["grid"]["n"], list)
    if "velocity" in entry.keys and two_d != isinstance(model["velocity"], list):
        raise CaseError(f"{origin}: [model] velocity must be {'[vx, vy]' if two_d else 'one value'} on a {2 if two_d else 1}D grid")
    sensors = obs["sensors"]
    needs = {"points": ("positions",), "footprints": ("positions", "radius"), "grid": ("stride",), "file": ("file",)}
    for key in needs[sensors]:
        if obs[key] is None:
            raise CaseError(f"{origin}: [observations] {key} is required for sensors = {sensors!r}")
    if sensors == "file":
        clash = [k for k in ("positions", "radius", "stride", "times", "every") if obs[k] is not None]
        if clash:
            raise CaseError(f"{origin}: [observations] {clash} cannot be combined with sensors = 'file' (the file gives them)")
    else:
        if obs["names"] is not None:
            raise CaseError(f"{origin}: [observations] names applies only to sensors = 'file' (an observation file)")
        if (obs["times"] is None) == (obs["every"] is None):
            raise CaseError(f"{origin}: [observations] give exactly one of times (a list) or every (a spacing)")
        if obs["sigma"] is None:
            raise CaseError(f"{origin}: [observations] sigma is required (the observation-error standard deviation)")
        if config["truth"]["initial"] is None:
            raise CaseError(f"{origin}: [truth] initial is required for a twin experiment (or use sensors = 'file')")
    _check_prior(config, given, origin, two_d)
    if control["kind"] == "parameter":
        valid = entry.valid_controls(2 if two_d else 1)
        if control["parameter"] not in valid:
            raise CaseError(
                f"{origin}: [control] parameter must be one of {list(valid)} for a {'2D ' if two_d else ''}{kind} model, "
                f"got {control['parameter']!r}"
            )
        if config["background"]["first_guess"] is None and config["prior"]["kind"] == "gaussian":
            raise CaseError(f"{origin}: [background] first_guess is required to estimate a parameter")
        if sensors == "file" and config["truth"]["initial"] is None:
            raise CaseError(f"{origin}: [truth] initial is required: a parameter case needs the known initial state")
