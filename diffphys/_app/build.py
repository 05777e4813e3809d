"""Build a validated case: grid, models, observations (twin experiment or a data file) and the 4D-Var problem.

Fields (initial states, diffusivity, speed, ...) are numbers or expressions of the coordinates
``x`` (and ``y``), evaluated on the grid (see :mod:`diffphys._app.expression`); the model comes from
its kind's entry in :mod:`diffphys._app.registry`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .. import io
from .._rollout import check_finite_on_host, rollout
from .._time_step import common_spacing
from .._validate import device_array
from ..adjoint import Checkpointed, Direct
from ..assimilate import CycledTwin, InitialState, Parameter, StrongConstraint4DVar, cycled_twin_experiment
from ..grid import Grid1D, Grid2D
from ..observe import DiagonalR, DiffusionB, FootprintAverage, ObservationSchedule, PointSensors, subsample, twin_experiment
from .expression import ExpressionError, evaluate
from .load import Case
from .registry import MODEL_KINDS, build_prior
from .schema import CaseError

__all__ = ["CycledProblem", "Problem", "build_cycled_problem", "build_problem", "case_key"]

MAX_STEPS = 1_000_000


def case_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` for a case's seed (0 ≤ seed < 2³², the schema's range), made on the host.

    With the default threefry implementation that key's data is ``[0, seed]``; building it from NumPy
    spares the two small programs JAX compiles for ``jax.random.key`` (tests compare the two keys).
    """
    if jax.config.jax_default_prng_impl != "threefry2x32" or not 0 <= seed < 2**32:
        return jax.random.key(seed)
    return jax.random.wrap_key_data(np.array([0, seed], dtype=np.uint32))


@dataclasses.dataclass
class Problem:
    """A case made concrete: grid, models, schedule, data, the 4D-Var problem and what is known of the truth.

    ``truth_control`` / ``background_control`` are physical fields (the initial state, or the
    parameter field) to compare with the analysis (``None`` when the truth is unknown). ``prior`` is
    the non-Gaussian prior of the control (``None``: the Gaussian B inside ``fourdvar``).
    """

    case: Case
    grid: Any
    model: Any
    schedule: ObservationSchedule
    observations: np.ndarray
    sigma: np.ndarray
    fourdvar: StrongConstraint4DVar
    prior: Any
    n_steps: int
    truth_state: Any
    truth_model: Any
    truth_control: Any
    background_control: Any
    clean_observations: Any
    notes: tuple[str, ...] = ()  # what the run should say about its input (e.g. an observation file's rows were sorted)


def _nested_tuple(value):
    return tuple(_nested_tuple(v) for v in value) if isinstance(value, list) else value


def _grid(config) -> Grid1D | Grid2D:
    g = config["grid"]
    ring = MODEL_KINDS[config["model"]["kind"]].ring
    if ring is not None:
        return ring(g["n"])
    bc = _nested_tuple(g["bc"])
    try:
        if isinstance(g["n"], list):
            lengths = g["length"] if isinstance(g["length"], list) else [g["length"]] * 2
            return Grid2D(g["n"][0], g["n"][1], tuple(lengths), bc=bc)
        if isinstance(g["length"], list):
            raise CaseError("[grid] length must be one number on a 1D grid (n is one number)")
        return Grid1D(g["n"], g["length"], bc=bc)
    except CaseError:
        raise
    except ValueError as error:
        raise CaseError(f"[grid]: {error}") from None


def _evaluate(value, grid, where: str) -> np.ndarray:
    variables = dict(zip(("x", "y"), (np.asarray(c) for c in grid.coordinates)))
    if isinstance(value, str):
        try:
            value = evaluate(value, variables)
        except ExpressionError as error:
            raise CaseError(f"{where}: {error}") from None
    try:
        out = np.broadcast_to(np.asarray(value, dtype=float), grid.shape).copy()
    except ValueError:
        raise CaseError(f"{where} has shape {np.shape(value)}, which does not fit the grid's {grid.shape}") from None
    if not np.isfinite(out).all():
        raise CaseError(f"{where} is not finite everywhere on the grid (check the expression's domain)")
    return out


def _make_model(config, grid, parameters: dict, dt):
    """The model of the case's ``[model] kind`` (through its registry entry) with these parameter fields."""
    model = config["model"]
    try:
        return MODEL_KINDS[model["kind"]].build(grid, parameters, model, dt, model["scheme"])
    except ValueError as error:
        raise CaseError(f"[model]: {error}") from None


def _whole_steps(value: float, dt: float, where: str) -> int:
    """``value / dt`` when it is a whole number of steps; else a :class:`CaseError` with the nearest valid values."""
    ratio = value / dt
    steps = round(ratio)
    if abs(ratio - steps) <= 1e-9 * max(ratio, 1.0):
        return steps
    below, above = math.floor(ratio) * dt, math.ceil(ratio) * dt
    raise CaseError(
        f"{where} = {value:g} is not a whole number of time steps dt = {dt:.6g} ({ratio:.6g} steps); the nearest "
        f"valid values are {below:.6g} and {above:.6g} (or choose a [model] dt that divides {value:g})"
    )


def _time_step(times: np.ndarray, duration: float, dt_max: float) -> float:
    """The largest dt <= dt_max of which every observation time and the duration are multiples (the rule of
    :func:`diffphys.stable_time_step`, with the stability limit already in ``dt_max``)."""
    spacing = common_spacing((*times.tolist(), duration), name="[observations] times and [window] duration")
    sub = max(1, math.ceil(spacing / dt_max * (1 - 1e-12)))
    dt = spacing / sub
    if duration / dt > MAX_STEPS:
        raise CaseError(
            f"the observation times need a time step of {dt:.3g} ({duration / dt:.3g} steps over the window); "
            "round the times to a coarser spacing or set [model] dt"
        )
    return dt


def _operator(config, grid):
    obs = config["observations"]
    try:
        if obs["sensors"] == "grid":
            return subsample(grid, obs["stride"], obs["offset"])
        if obs["sensors"] == "footprints":
            return FootprintAverage(grid, obs["positions"], obs["radius"])
        return PointSensors(grid, obs["positions"])
    except ValueError as error:
        raise CaseError(f"[observations]: {error}") from None


def _fields(config, grid) -> dict:
    """The true physical parameter fields of ``[model]``, evaluated on the grid."""
    out = {}
    for name in MODEL_KINDS[config["model"]["kind"]].fields:
        value = config["model"].get(name)
        if value is not None:
            where = f"[model] {name}"
            out[name] = ([_evaluate(v, grid, f"{where}[{i}]") for i, v in enumerate(value)]
                         if isinstance(value, list) else _evaluate(value, grid, where))
    return out


def _read_data(config):
    obs = config["observations"]
    default_sigma = obs["sigma"] if isinstance(obs["sigma"], float) else None
    try:
        return io.read_observations(obs["file"], default_sigma=default_sigma, names=obs["names"])
    except ValueError as error:
        raise CaseError(f"[observations] file: {error}") from None


def _observation_times(config, data) -> np.ndarray:
    obs, duration = config["observations"], config["window"]["duration"]
    if data is not None:
        return np.asarray(data["time"].values, dtype=float)
    if obs["times"] is not None:
        return np.asarray(obs["times"])
    times = obs["every"] * np.arange(1, math.floor(duration / obs["every"] * (1 + 1e-12)) + 1)
    if times.size == 0:
        raise CaseError(f"[observations] every = {obs['every']:g} is longer than the window (duration {duration:g})")
    return times


def _default_time_step(config, grid, parameters: dict, guess_field, times) -> float:
    """The largest stable dt that puts the observation times on steps, with room for an estimated parameter."""
    control = config["control"]
    bound = dict(parameters)
    if control["kind"] == "parameter":
        name, sigma_b = control["parameter"], config["background"]["sigma"]
        top = np.maximum(np.abs(bound[name]), np.abs(guess_field))
        if sigma_b is None:  # a non-Gaussian prior: its upper bound if it has one, else twice the larger field
            upper = config["prior"]["upper"]
            bound[name] = np.maximum(top, abs(upper)) if upper is not None else 2 * top
        else:  # leave room for the estimate: 2 σ_b above the larger of truth and first guess
            bound[name] = top * math.exp(2 * sigma_b) if control["transform"] == "log" else top + 2 * sigma_b
    return _time_step(times, config["window"]["duration"], _make_model(config, grid, bound, None).dt)


def build_problem(case: Case) -> Problem:
    """Build the grid, models, observations (twin experiment or file) and the 4D-Var problem of ``case``."""
    config = case.config
    if config["cycling"]["cycles"] is not None:
        raise CaseError(f"case {case.name} has [cycling] cycles: build it with build_cycled_problem")
    grid = _grid(config)
    obs, control = config["observations"], config["control"]
    second_order = MODEL_KINDS[config["model"]["kind"]].state_fields == 2  # the state is (u, ∂u/∂t)
    duration = config["window"]["duration"]
    truth_parameters = _fields(config, grid)
    estimating = control["parameter"] if control["kind"] == "parameter" else None
    if estimating == "source" and "source" not in truth_parameters:
        truth_parameters["source"] = np.zeros(grid.shape)
    first_guess = config["background"]["first_guess"]
    guess_field = None if first_guess is None else _evaluate(first_guess, grid, "[background] first_guess")
    prior = build_prior(config["prior"], grid.ndim)
    if prior is not None and guess_field is None:
        guess_field = np.zeros(grid.shape)
    data = _read_data(config) if obs["sensors"] == "file" else None
    times = _observation_times(config, data)
    dt = config["model"]["dt"] or _default_time_step(config, grid, truth_parameters, guess_field, times)
    truth_model = _make_model(config, grid, truth_parameters, dt)

    u0 = None if config["truth"]["initial"] is None else _evaluate(config["truth"]["initial"], grid, "[truth] initial")
    velocity0 = _evaluate(config["truth"]["initial_velocity"], grid, "[truth] initial_velocity")
    truth_state = (u0, velocity0) if second_order and u0 is not None else u0
    if prior is None:
        try:
            B = DiffusionB(grid, config["background"]["sigma"], config["background"]["length_scale"])
        except ValueError as error:
            raise CaseError(f"[background]: {error}") from None
    else:  # a non-Gaussian prior: no background term (the first guess defaults to zero, above)
        B = None

    if data is not None:
        try:
            schedule, values, sigma = io.dataset_to_observations(data, grid, dt=dt, t_end=duration)
            if isinstance(obs["sigma"], list):
                sigma = np.where(np.isfinite(values), schedule.per_observation(obs["sigma"], "sigma"), 1.0)
        except ValueError as error:
            raise CaseError(f"[observations] file: {error}") from None
        n_steps = _whole_steps(duration, dt, "[window] duration")  # after the times' own check (more specific)
        clean = twin = None
        if estimating is None and guess_field is None:
            raise CaseError("[background] first_guess is required with observations from a file (there is no truth to perturb)")
    else:
        try:
            schedule = ObservationSchedule(times, _operator(config, grid), dt=dt, t_end=duration)
            sigma = schedule.per_observation(obs["sigma"], "sigma")
        except ValueError as error:
            raise CaseError(f"[observations]: {error}") from None
        n_steps = _whole_steps(duration, dt, "[window] duration")
        twin = twin_experiment(
            truth_model, truth_state, schedule, sigma, case_key(config["seed"]),
            background=B if (estimating is None and guess_field is None) else None,
            missing_fraction=obs["missing_fraction"],
        )
        values, clean = np.asarray(twin.observations), np.asarray(twin.clean_observations)
        if not np.isfinite(values).any():
            raise CaseError(
                f"[observations] missing_fraction = {obs['missing_fraction']:g} lost all {values.size} readings of the "
                "twin experiment, so there is nothing to assimilate; lower it (or observe more sensors or times)"
            )

    if estimating is None:
        u_b = guess_field if guess_field is not None else _first(twin.background)
        control_map = (InitialState(template=(device_array(u_b), device_array(velocity0)), field=0) if second_order
                       else InitialState())
        truth_control = None if data is not None else u0
        background_control, z_b = u_b, device_array(u_b)
    else:
        if control["transform"] == "log" and not (guess_field > 0).all():
            raise CaseError("[background] first_guess must be > 0 everywhere to estimate the log of a parameter")
        known = tuple(map(device_array, truth_state)) if second_order else device_array(truth_state)
        control_map = Parameter(estimating, known, transform=control["transform"])
        truth_control = None if data is not None else np.asarray(truth_parameters[estimating]).reshape(grid.shape)
        background_control, z_b = guess_field, control_map.to_control(device_array(guess_field))
    block = config["solver"]["checkpoint_every"]
    fourdvar = StrongConstraint4DVar(truth_model, schedule, values, DiagonalR(sigma), B, z_b, control_map,
                                     adjoint=Direct() if block is None else Checkpointed(every=block))
    known_truth = data is None
    return Problem(case, grid, truth_model, schedule, values, np.asarray(sigma), fourdvar, prior, n_steps,
                   truth_state if known_truth else None, truth_model if known_truth else None,
                   truth_control, np.asarray(background_control), clean,
                   notes=() if data is None or "notes" not in data.attrs else (str(data.attrs["notes"]),))


def _first(state):
    return state[0] if isinstance(state, tuple) else state


# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CycledProblem:
    """A ``[cycling]`` case made concrete: the model, one window's schedule, the cycled twin
    experiment, R, the static B, the first background, the shift between windows and the spin-up."""

    case: Case
    model: Any
    schedule: ObservationSchedule
    twin: CycledTwin
    R: DiagonalR
    B: DiffusionB
    background: Any
    shift: int
    spin_up: int


def build_cycled_problem(case: Case) -> CycledProblem:
    """Build the model, window schedule and cycled twin experiment of a case with ``[cycling] cycles``."""
    config = case.config
    cycling, obs, duration = config["cycling"], config["observations"], config["window"]["duration"]
    if cycling["cycles"] is None:
        raise CaseError(f"case {case.name}: build_cycled_problem needs [cycling] cycles; use build_problem")
    grid = _grid(config)
    parameters = _fields(config, grid)
    times = _observation_times(config, None)
    if abs(times[-1] - duration) > 1e-9 * duration:
        raise CaseError(
            f"[observations]: with [cycling] a window ends at its last observation; the last time is {times[-1]:g}, "
            f"the window duration {duration:g}"
        )
    shift_time = duration if cycling["shift"] is None else cycling["shift"]
    dt = config["model"]["dt"] or _time_step(np.append(times, shift_time), duration,
                                             _make_model(config, grid, parameters, None).dt)
    model = _make_model(config, grid, parameters, dt)
    try:
        schedule = ObservationSchedule(times, _operator(config, grid), dt=dt, t_end=duration)
        sigma = schedule.per_observation(obs["sigma"], "sigma")
        B = DiffusionB(grid, config["background"]["sigma"], config["background"]["length_scale"])
    except ValueError as error:
        raise CaseError(f"[observations] or [background]: {error}") from None
    u0 = _evaluate(config["truth"]["initial"], grid, "[truth] initial")
    spin_up_steps = _whole_steps(config["truth"]["spin_up"], dt, "[truth] spin_up")
    shift = _whole_steps(shift_time, dt, "[cycling] shift" if cycling["shift"] is not None else "[window] duration")
    x0 = device_array(u0)
    if spin_up_steps:  # checked on the host: the program stays cacheable (no host callback)
        x0 = rollout(model, x0, spin_up_steps, check_finite=False)
        check_finite_on_host(x0, (spin_up_steps,), "[truth] spin_up")
        x0 = device_array(np.asarray(x0)[-1])
    k_twin, drawn_background = _split_and_draw(case_key(config["seed"]), x0, B)
    try:
        twin = cycled_twin_experiment(model, x0, schedule, cycling["cycles"], sigma, k_twin,
                                      shift=shift)
    except ValueError as error:
        raise CaseError(f"[cycling]: {error}") from None
    first_guess = config["background"]["first_guess"]
    background = (device_array(_evaluate(first_guess, grid, "[background] first_guess")) if first_guess is not None
                  else drawn_background)
    return CycledProblem(case, model, schedule, twin, DiagonalR(sigma), B, background, shift,
                         cycling["spin_up"])


@eqx.filter_jit
def _split_and_draw(key, x0, B):
    r"""The cycled twin's key and a first background $x_0 + B^{1/2}\xi$ from the case's second key, as one
    program (run eagerly, the split and the draw would compile seven small ones)."""
    k_twin, k_background = jax.random.split(key)
    return k_twin, x0 + B.sample(k_background, x0)
