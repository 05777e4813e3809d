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
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._rollout import rollout
from .._types import PyTree
from ..models import AbstractStepper
from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule

__all__ = ["AbstractControl", "InitialState", "Parameter", "StrongConstraint4DVar"]


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


_TRANSFORMS = {
    "identity": (lambda z: z, lambda p: p),
    "log": (jnp.exp, jnp.log),
}


class Parameter(AbstractControl):
    r"""The control is a parameter field of the model (e.g. ``"kappa"``), through a transform.

    The model's field is set to $p = T(z)$: ``transform="log"`` (default) estimates $z = \log p$,
    so $p = e^z$ stays positive and B describes relative (log) errors; ``"identity"`` sets $p = z$.
    The initial state is known.

    **Arguments:** ``name`` (the model's field, e.g. ``"kappa"``, ``"speed"``, ``"source"``,
    ``"velocity"``), ``initial_state``, ``transform`` (``"log"`` or ``"identity"``).
    """

    name: str = eqx.field(static=True)
    initial_state: PyTree
    transform: str = eqx.field(static=True, default="log")

    def __check_init__(self):
        if self.transform not in _TRANSFORMS:
            raise ValueError(f"Parameter: unknown transform {self.transform!r}; valid are {sorted(_TRANSFORMS)}")

    def apply(self, model, z):
        if not hasattr(model, self.name) or not eqx.is_inexact_array(getattr(model, self.name)):
            fields = [f for f in model.__dataclass_fields__ if eqx.is_inexact_array(getattr(model, f))]
            raise ValueError(f"Parameter: {type(model).__name__} has no parameter field {self.name!r}; valid are {fields}")
        value = _TRANSFORMS[self.transform][0](z)
        return eqx.tree_at(lambda m: getattr(m, self.name), model, value.reshape(getattr(model, self.name).shape)), self.initial_state

    def to_control(self, value):
        return _TRANSFORMS[self.transform][1](jnp.asarray(value))


class StrongConstraint4DVar(eqx.Module):
    r"""The whitened residuals $r(v)$ and cost $J(v) = \frac12\|r(v)\|^2$ of strong-constraint 4D-Var.

    $$r(v) = \Big(v,\ \ m \odot R^{-1/2}\big(y - \mathcal H(M(z_b + B^{1/2}v))\big)\Big),$$

    with $m$ the mask of present (non-NaN) observations. $v = 0$ is the background;
    :meth:`control` maps $v$ to the control field $z$ and :meth:`initial_state` /
    :meth:`model_for` to the analysis state or model.

    **Arguments:**

    - ``model``: the stepper (for a parameter control, its other parameters are fixed).
    - ``schedule``: an :class:`~diffphys.observe.ObservationSchedule` with ``dt == model.dt``.
    - ``observations``: the stacked observations, shape ``(schedule.size,)``, NaN where missing.
    - ``R``: a :class:`~diffphys.observe.DiagonalR` (a scalar σ or one per observation).
    - ``B``: the background covariance of the control (e.g. :class:`~diffphys.observe.DiffusionB`).
    - ``background``: the background *control* field $z_b$ (for ``Parameter(transform="log")``, the
      log of the first-guess parameter: ``control.to_control(p_b)``).
    - ``control``: :class:`InitialState` (default) or :class:`Parameter`.
    - ``checkpoint_every``: gradient checkpointing block of the rollout (see :func:`~diffphys.rollout`).
    """

    model: AbstractStepper
    schedule: ObservationSchedule
    observations: Float[Array, " N"]
    mask: Bool[Array, " N"]
    R: DiagonalR
    B: AbstractCovariance
    background: Float[Array, "*grid"]
    control_map: AbstractControl
    checkpoint_every: int | None = eqx.field(static=True)

    def __init__(self, model, schedule, observations, R, B, background, control=None, *, checkpoint_every=None):
        if not isinstance(schedule, ObservationSchedule):
            raise TypeError(f"StrongConstraint4DVar: schedule must be an ObservationSchedule, got {type(schedule).__name__}")
        if not np.isclose(model.dt, schedule.dt, rtol=1e-12, atol=0.0):
            raise ValueError(
                f"StrongConstraint4DVar: the model's dt={model.dt:g} differs from the schedule's dt={schedule.dt:g}"
            )
        if schedule.grid.shape != model.grid.shape:
            raise ValueError(
                f"StrongConstraint4DVar: the observation operators are on a grid of shape {schedule.grid.shape}, "
                f"the model on {model.grid.shape}"
            )
        y = jnp.asarray(observations, dtype=jnp.result_type(float))
        if y.shape != (schedule.size,):
            raise ValueError(
                f"StrongConstraint4DVar: observations have shape {y.shape}, but the schedule's operators make "
                f"{schedule.size} observations ({len(schedule.times)} times with {list(schedule.sizes)} sensors); "
                "stack them time by time (schedule.per_observation)"
            )
        if not isinstance(R, DiagonalR):
            raise TypeError(f"StrongConstraint4DVar: R must be a DiagonalR, got {type(R).__name__}")
        if R.sigma.shape not in ((), (schedule.size,)):
            raise ValueError(
                f"StrongConstraint4DVar: R.sigma has shape {R.sigma.shape}; give a scalar or ({schedule.size},)"
            )
        control = InitialState() if control is None else control
        if not isinstance(control, AbstractControl):
            raise TypeError(f"StrongConstraint4DVar: control must be InitialState or Parameter, got {type(control).__name__}")
        background = jnp.asarray(background, dtype=jnp.result_type(float))
        if background.shape != model.grid.shape:
            raise ValueError(
                f"StrongConstraint4DVar: the background control field has shape {background.shape}, "
                f"expected the grid's shape {model.grid.shape}"
            )
        self.model, self.schedule, self.R, self.B = model, schedule, R, B
        self.mask = jnp.isfinite(y)
        self.observations = y
        self.background = background
        self.control_map = control
        self.checkpoint_every = checkpoint_every

    @property
    def n_observations(self) -> int:
        """The number of present (non-NaN) observations."""
        return int(jnp.sum(self.mask))

    def control(self, v: Float[Array, "*grid"]) -> Float[Array, "*grid"]:
        r"""$z = z_b + B^{1/2} v$."""
        return self.background + self.B.sqrt(v)

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
            checkpoint_every=self.checkpoint_every, check_finite=False,
        )

    def observation_residuals(self, v) -> Float[Array, " N"]:
        r"""$m \odot R^{-1/2}(y - \mathcal H(M(z(v))))$; zero where an observation is missing."""
        innovation = jnp.where(self.mask, self.observations, 0.0) - self.schedule.observe(self.trajectory(v))
        return jnp.where(self.mask, self.R.whiten(innovation), 0.0)

    def residuals(self, v: Float[Array, "*grid"]) -> Float[Array, " n+N"]:
        """The whitened residual vector $r(v) = (v, R^{-1/2}(y - H M z))$, flat."""
        return jnp.concatenate([jnp.ravel(v), self.observation_residuals(v)])

    def cost(self, v: Float[Array, "*grid"]) -> Float[Array, ""]:
        r"""$J(v) = \tfrac12\|r(v)\|^2$."""
        r = self.residuals(v)
        return 0.5 * jnp.sum(r * r)

    def zero_control(self) -> Float[Array, "*grid"]:
        """The control increment of the background, $v = 0$."""
        return jnp.zeros_like(self.background)
