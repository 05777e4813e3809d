r"""Strong-constraint 4D-Var as whitened residuals, with the initial state or a parameter field as control.

$$r(v) = \begin{pmatrix} v \\ R^{-1/2}\big(y - \mathcal H(M(z(v)))\big)\end{pmatrix},\qquad
  z(v) = z_b + B^{1/2} v,\qquad J(v) = \tfrac12\|r(v)\|^2,$$

where $z$ is the control (the initial state, or a transformed parameter field such as $\log\kappa$),
$M$ the model rolled out to the observation times and $\mathcal H$ the schedule's stacked
observation operators. Missing observations (NaN) give a zero residual. Gradient methods minimise
$J$; Gauss–Newton and Levenberg–Marquardt use $r$ and its Jacobian (``jax.jvp``/``jax.vjp``).

References: F.-X. Le Dimet, O. Talagrand, Tellus A 38 (1986) 97-110 (4D-Var); P. Courtier,
J.-N. Thépaut, A. Hollingsworth, Q. J. R. Meteorol. Soc. 120 (1994) 1367-1387 (incremental
4D-Var and the control-variable transform).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._misc import tree_ravel
from .._rollout import rollout
from .._types import PyTree
from .._validate import array_module, device_array, is_concrete
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint
from ..models import AbstractStepper
from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule
from ..solvers import AbstractProblem

__all__ = ["AbstractControl", "InitialState", "Joint", "Parameter", "StrongConstraint4DVar"]


class AbstractControl(eqx.Module):
    """What the control field of a 4D-Var problem is: maps it to a ``(model, initial state)`` pair."""

    @abc.abstractmethod
    def apply(self, model: AbstractStepper, z: Float[Array, "*grid"]) -> tuple[AbstractStepper, PyTree]:
        """The model and the initial state for control ``z``."""

    @abc.abstractmethod
    def to_control(self, value):
        """The control field for a physical value (the inverse of the transform, if any)."""


class InitialState(AbstractControl):
    """The control is the initial state; for a tuple state, one of its fields, the others fixed.

    **Arguments:**

    - ``template``: for a tuple state (wave: ``(u, du/dt)``), the full initial state whose other
      fields are known and kept; ``None`` (default) for a one-array state.
    - ``field``: the index of the controlled field of a tuple state (default 0).
    """

    template: PyTree | None = None
    field: int = eqx.field(static=True, default=0)

    def apply(self, model, z):
        if self.template is None:
            return model, z
        return model, tuple(z if i == self.field else f for i, f in enumerate(self.template))

    def to_control(self, value):
        return value[self.field] if isinstance(value, tuple) else value


_TRANSFORMS = {  # name: (control -> parameter, parameter -> control), as names of NumPy / jax.numpy functions
    "identity": ("asarray", "asarray"),
    "log": ("exp", "log"),
}


def _transformed(function: str, value, shape=None):
    """``function`` (a name in ``_TRANSFORMS``) of ``value``, reshaped to ``shape``; by NumPy on a concrete value,
    so that building or checking a problem on the host compiles no program."""
    if is_concrete(value):
        result = getattr(np, function)(np.asarray(value))
        return device_array(result if shape is None else result.reshape(shape))
    result = getattr(jnp, function)(value)
    return result if shape is None else result.reshape(shape)


class Parameter(AbstractControl):
    r"""The control is a parameter field of the model (e.g. ``"kappa"``), through a transform.

    The model's field is set to $p = T(z)$: ``transform="log"`` (default) estimates $z = \log p$,
    so $p = e^z$ stays positive and B describes relative (log) errors; ``"identity"`` sets $p = z$.
    The initial state is known (``initial_state``), or is itself a control: then use
    :class:`Joint`, and ``initial_state`` stays ``None``.

    **Arguments:** ``name`` (the model's field, e.g. ``"kappa"``, ``"speed"``, ``"source"``,
    ``"velocity"``), ``initial_state``, ``transform`` (``"log"`` or ``"identity"``).
    """

    name: str = eqx.field(static=True)
    initial_state: PyTree | None = None
    transform: str = eqx.field(static=True, default="log")

    def __check_init__(self):
        if self.transform not in _TRANSFORMS:
            raise ValueError(f"Parameter: unknown transform {self.transform!r}; valid are {sorted(_TRANSFORMS)}")

    def apply(self, model, z):
        self._check_field_of(model)
        return self.with_value(model, _transformed(_TRANSFORMS[self.transform][0], z, getattr(model, self.name).shape))

    def _check_field_of(self, model) -> None:
        if not hasattr(model, self.name) or not eqx.is_inexact_array(getattr(model, self.name)):
            fields = [f for f in model.__dataclass_fields__ if eqx.is_inexact_array(getattr(model, f))]
            raise ValueError(f"Parameter: {type(model).__name__} has no parameter field {self.name!r}; valid are {fields}")

    def with_value(self, model, value):
        """``(model, initial_state)`` with the parameter field set to the physical ``value`` $p$ (shaped like
        the field), checked as the model's constructor would when ``value`` is concrete."""
        self._check_field_of(model)
        model = eqx.tree_at(lambda m: getattr(m, self.name), model, value)
        rebuild = isinstance(model, AbstractStepper) and self.name in model._static_from_fields
        if rebuild or (is_concrete(value) and isinstance(model, AbstractStepper)):
            # tree_at skips the model's construction checks; run them on a concrete value (a traced one, inside
            # the solve, cannot be checked: callers check the final analysis, e.g. through model_for). A field the
            # constructor derives static data from (Advection's upwind sides) takes the rebuilt model: for a
            # traced value, data that holds whatever the value turns out to be.
            try:
                checked = model.checked()
                model = checked if rebuild else model
            except ValueError as error:
                hint = ("; with transform='identity' nothing keeps the field in range: transform='log' keeps a "
                        "positive parameter positive" if self.transform == "identity" else "")
                raise ValueError(f"Parameter {self.name!r}: the control sets an invalid model: {error}{hint}") from None
        return model, self.initial_state

    def to_control(self, value):
        return _transformed(_TRANSFORMS[self.transform][1], value)


class Joint(AbstractControl):
    r"""Joint state–parameter control: the initial state and one or more parameter fields together.

    The control is the tuple $z = (x_0, z_{p_1}, \dots)$; its background and B are tuples in the
    same order (one covariance per part: the parameter's B is its prior). The parts share nothing,
    so the background term is $\tfrac12\|v_x\|^2 + \sum_i \tfrac12\|v_{p_i}\|^2$.

    **Arguments:** ``state`` (an :class:`InitialState`), ``parameters`` (a tuple of
    :class:`Parameter` whose ``initial_state`` is ``None``).
    """

    state: InitialState
    parameters: tuple[Parameter, ...]

    def __init__(self, state: InitialState, parameters):
        parameters = (parameters,) if isinstance(parameters, Parameter) else tuple(parameters)
        if not isinstance(state, InitialState):
            raise TypeError(f"Joint: state must be an InitialState, got {type(state).__name__}")
        if not parameters or not all(isinstance(p, Parameter) for p in parameters):
            raise TypeError(f"Joint: parameters must be one or more Parameter controls, got {parameters!r}")
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"Joint: parameter {names} appears twice; each field can be controlled once")
        self.state, self.parameters = state, parameters

    @property
    def n_parts(self) -> int:
        return 1 + len(self.parameters)

    def apply(self, model, z):
        for p, zp in zip(self.parameters, z[1:]):
            model = p.apply(model, zp)[0]
        return model, self.state.apply(model, z[0])[1]

    def to_control(self, value):
        return tuple(c.to_control(v) for c, v in zip((self.state, *self.parameters), value))


def check_observations(name: str, model, schedule, observations, R) -> Float[Array, " N"]:
    """Validate the observation side of a 4D-Var problem; return the observations as a float array."""
    if not isinstance(schedule, ObservationSchedule):
        raise TypeError(f"{name}: schedule must be an ObservationSchedule, got {type(schedule).__name__}")
    if not np.isclose(model.dt, schedule.dt, rtol=1e-12, atol=0.0):
        raise ValueError(f"{name}: the model's dt={model.dt:g} differs from the schedule's dt={schedule.dt:g}")
    if schedule.grid.shape != model.grid.shape:
        raise ValueError(
            f"{name}: the observation operators are on a grid of shape {schedule.grid.shape}, "
            f"the model on {model.grid.shape}"
        )
    y = jnp.asarray(observations, dtype=jnp.result_type(float))
    if y.shape != (schedule.size,):
        raise ValueError(
            f"{name}: observations have shape {y.shape}, but the schedule's operators make "
            f"{schedule.size} observations ({len(schedule.times)} times with {list(schedule.sizes)} sensors); "
            "stack them time by time (schedule.per_observation)"
        )
    if not isinstance(R, DiagonalR):
        raise TypeError(f"{name}: R must be a DiagonalR, got {type(R).__name__}")
    if R.sigma.shape not in ((), (schedule.size,)):
        raise ValueError(f"{name}: R.sigma has shape {R.sigma.shape}; give a scalar or ({schedule.size},)")
    if is_concrete(y):
        _check_readings(name, schedule, np.asarray(y))
    return y


def _check_readings(name: str, schedule: ObservationSchedule, y: np.ndarray) -> None:
    """NaN marks a missing reading; ±inf is not one (it would be masked silently), and a problem needs at
    least one reading (with none, the cost is the background term alone and "converges" at once)."""
    infinite = np.flatnonzero(np.isinf(y))
    if infinite.size:
        i = int(infinite[0])
        k = int(np.searchsorted(np.cumsum(schedule.sizes), i, side="right"))
        sensor = i - sum(schedule.sizes[:k])
        raise ValueError(
            f"{name}: observation {i} (time {schedule.times[k]:g}, sensor {sensor}) is {y[i]}; a reading must be "
            "finite, or NaN where it is missing"
        )
    if not np.isfinite(y).any():
        raise ValueError(
            f"{name}: all {y.size} observations are missing (NaN), so there is nothing to assimilate; give at "
            "least one finite reading"
        )


def check_background(name: str, model, control, background, B, *, allow_no_B: bool = False):
    """Validate the control, its background field(s) and covariance(s); return ``(control, background, B)``.

    For a :class:`Joint` control, ``background`` and ``B`` are tuples with one entry per part. With
    ``allow_no_B``, a part's B may be ``None`` (no background term: a prior of another kind).
    """
    control = InitialState() if control is None else control
    if not isinstance(control, AbstractControl):
        raise TypeError(f"{name}: control must be InitialState, Parameter or Joint, got {type(control).__name__}")
    if isinstance(control, Parameter) and control.initial_state is None:
        raise ValueError(
            f"{name}: Parameter({control.name!r}) needs initial_state (the known initial state); to estimate "
            "the state as well, use Joint(InitialState(), Parameter(...))"
        )
    joint = isinstance(control, Joint)
    parts = control.n_parts if joint else 1
    backgrounds = tuple(background) if joint and isinstance(background, (tuple, list)) else (background,)
    covariances = tuple(B) if joint and isinstance(B, (tuple, list)) else (B,)
    if len(backgrounds) != parts or len(covariances) != parts:
        raise ValueError(
            f"{name}: a Joint control has {parts} parts (state, {', '.join(p.name for p in control.parameters)}); "
            f"give background and B as tuples of {parts} (got {len(backgrounds)} and {len(covariances)})"
            if joint else f"{name}: background and B must be one field and one covariance"
        )
    checked = []
    for k, (b, cov) in enumerate(zip(backgrounds, covariances)):
        where = f" (part {k})" if joint else ""
        if not isinstance(cov, AbstractCovariance) and not (allow_no_B and cov is None):
            valid = "a covariance (e.g. DiffusionB) or None" if allow_no_B else "a covariance (e.g. DiffusionB)"
            raise TypeError(f"{name}: B{where} must be {valid}, got {type(cov).__name__}")
        b = jnp.asarray(b, dtype=jnp.result_type(float))
        if b.shape != model.grid.shape:
            raise ValueError(
                f"{name}: the background control field{where} has shape {b.shape}, expected the grid's shape "
                f"{model.grid.shape}"
            )
        checked.append(b)
    if joint:
        return control, tuple(checked), covariances
    return control, checked[0], covariances[0]


class StrongConstraint4DVar(AbstractProblem):
    r"""The whitened residuals $r(v)$ and cost $J(v) = \frac12\|r(v)\|^2$ of strong-constraint 4D-Var.

    $$r(v) = \Big(v,\ \ m \odot R^{-1/2}\big(y - \mathcal H(M(z_b + B^{1/2}v))\big)\Big),$$

    with $m$ the mask of present (non-NaN) observations. $v = 0$ is the background;
    :meth:`control` maps $v$ to the control field $z$ and :meth:`initial_state` /
    :meth:`model_for` to the analysis state or model. For a :class:`Joint` control, $v$, $z$,
    the background and B are tuples (state, parameters...).

    With ``B=None`` there is no background term: $r(z) = m \odot R^{-1/2}(y - \mathcal H(M(z)))$,
    the control *is* the field $z$ and ``background`` is only the first guess
    (:meth:`zero_control`). That is the smooth part of a problem whose prior is not Gaussian
    (sparsity, total variation): attach the prior with :class:`~diffphys.solvers.Composite`.

    **Arguments:**

    - ``model``: the stepper (for a parameter control, its other parameters are fixed).
    - ``schedule``: an :class:`~diffphys.observe.ObservationSchedule` with ``dt == model.dt``.
    - ``observations``: the stacked observations, shape ``(schedule.size,)``, NaN where missing.
    - ``R``: a :class:`~diffphys.observe.DiagonalR` (a scalar σ or one per observation).
    - ``B``: the background covariance of the control (e.g. :class:`~diffphys.observe.DiffusionB`);
      a tuple of them for a :class:`Joint` control (the parameter's B is its prior).
    - ``background``: the background *control* field $z_b$ (for ``Parameter(transform="log")``, the
      log of the first-guess parameter: ``control.to_control(p_b)``); a tuple for :class:`Joint`.
    - ``control``: :class:`InitialState` (default), :class:`Parameter` or :class:`Joint`.
    - ``adjoint``: the rollout's derivative strategy, ``Direct()`` (default) or ``Checkpointed(...)``
      (see :func:`~diffphys.rollout`).
    """

    model: AbstractStepper
    schedule: ObservationSchedule
    observations: Float[Array, " N"]
    mask: Bool[Array, " N"]
    R: DiagonalR
    B: AbstractCovariance | tuple[AbstractCovariance, ...]
    background: Float[Array, "*grid"] | tuple[Float[Array, "*grid"], ...]
    control_map: AbstractControl
    adjoint: AbstractAdjoint = eqx.field(static=True)

    def __init__(self, model, schedule, observations, R, B, background, control=None, *, adjoint=Direct()):
        name = "StrongConstraint4DVar"
        y = check_observations(name, model, schedule, observations, R)
        self.control_map, self.background, self.B = check_background(
            name, model, control, background, B, allow_no_B=True
        )
        self.model, self.schedule, self.R = model, schedule, R
        self.mask = jnp.asarray(array_module(y).isfinite(y), dtype=bool)  # NumPy when concrete: no compiled program
        self.observations = y
        self.adjoint = check_loop_adjoint(name, adjoint)

    @property
    def n_observations(self) -> int:
        """The number of present (non-NaN) observations."""
        return int(np.sum(np.asarray(self.mask)))

    def control(self, v):
        r"""$z = z_b + B^{1/2} v$ (part by part for a joint control; $z = v$ for a part without B)."""
        if isinstance(self.control_map, Joint):
            return tuple(_field(zb, cov, vp) for zb, cov, vp in zip(self.background, self.B, v))
        return _field(self.background, self.B, v)

    def model_for(self, v) -> AbstractStepper:
        """The model at control increment ``v`` (differs from ``model`` only for a parameter control)."""
        return self.control_map.apply(self.model, self.control(v))[0]

    def initial_state(self, v) -> PyTree:
        """The initial state at control increment ``v``."""
        return self.control_map.apply(self.model, self.control(v))[1]

    def trajectory(self, v) -> PyTree:
        """The model states at the schedule's observation times for control increment ``v``."""
        model, x0 = self.control_map.apply(self.model, self.control(v))
        return rollout(
            model, x0, self.schedule.n_steps, save_at=self.schedule.steps,
            adjoint=self.adjoint, check_finite=False,
        )

    def observation_residuals(self, v) -> Float[Array, " N"]:
        r"""$m \odot R^{-1/2}(y - \mathcal H(M(z(v))))$; zero where an observation is missing."""
        return whitened_innovation(self, self.trajectory(v))

    def residuals(self, v) -> Float[Array, " n+N"]:
        """The whitened residual vector $r(v) = (v, R^{-1/2}(y - H M z))$, flat (no $v$ for a part without B)."""
        parts = v if isinstance(self.control_map, Joint) else (v,)
        covariances = self.B if isinstance(self.control_map, Joint) else (self.B,)
        background = [tree_ravel(vp) for vp, cov in zip(parts, covariances) if cov is not None]
        return jnp.concatenate([*background, self.observation_residuals(v)])

    def within_stability_limit(self, v) -> Bool[Array, ""]:
        r"""Whether the model at ``v`` satisfies its explicit scheme's stability limit $\rho\,\Delta t \le$ limit.

        Only a parameter control changes the model; an implicit scheme has no limit, nor has a stepper that is
        not a diffphys model (e.g. a learned :class:`~diffphys.learn.CorrectedStepper`). Traceable: the
        solver driver reports a solution outside it as ``RESULTS.unstable_model``.
        """
        if isinstance(self.control_map, InitialState) or not isinstance(self.model, AbstractStepper):
            return jnp.asarray(True)  # the model is fixed, or has no linear stability bound (a learned stepper)
        model = self.model_for(v)
        region, rho = model.spectral_bound()
        limit = model.scheme.stability_limits.get(region, 0.0)
        return jnp.asarray(rho * model.dt <= limit * (1.0 + 1e-12))

    def zero_control(self):
        """The background's control: the increment $v = 0$, or the first guess for a part without B."""
        if isinstance(self.control_map, Joint):
            return tuple(_start(zb, cov) for zb, cov in zip(self.background, self.B))
        return _start(self.background, self.B)


def _field(background, B, v):
    return v if B is None else background + B.sqrt(v)


def _start(background, B):
    if B is None:
        return background
    if is_concrete(background):  # from host zeros: jnp.zeros_like would compile two small programs
        return jax.tree_util.tree_map(lambda b: device_array(np.zeros(np.shape(b), b.dtype)), background)
    return jax.tree_util.tree_map(jnp.zeros_like, background)


def whitened_innovation(problem, trajectory) -> Float[Array, " N"]:
    r"""$m \odot R^{-1/2}(y - \mathcal H(x))$ for the states ``trajectory`` at the schedule's times."""
    innovation = jnp.where(problem.mask, problem.observations, 0.0) - problem.schedule.observe(trajectory)
    return jnp.where(problem.mask, problem.R.whiten(innovation), 0.0)
