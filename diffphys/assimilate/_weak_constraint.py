r"""Weak-constraint 4D-Var: the model is imperfect, and the control includes its error forcing.

The model error is an additive forcing, constant over blocks of $m$ steps (``forcing_every``):

$$x_{k+1} = M(x_k) + \eta_{\lfloor k/m\rfloor},\qquad \eta_j = Q^{1/2} w_j,\qquad
  x_0 = x_b + B^{1/2} v,$$

and the control is $(v, w_0, \dots, w_{J-1})$ with the cost

$$\mathcal J = \tfrac12\|v\|^2 + \tfrac12\sum_j\|w_j\|^2
  + \tfrac12\sum_k \|R^{-1/2}(y_k - H_k x(t_k))\|^2,$$

whitened like :class:`StrongConstraint4DVar`, so :func:`gauss_newton` and the gradient methods
solve it unchanged. $Q$ is the covariance of the per-step forcing $\eta$ (e.g. a
:class:`~diffphys.observe.DiffusionB` with a small σ). With $Q \to 0$ it is strong-constraint
4D-Var (the forcing-free formulation of Trémolet's "model-error forcing" control).

References: Y. Trémolet, "Accounting for an imperfect model in 4D-Var", Q. J. R. Meteorol. Soc.
132 (2006) 2483-2504; A. F. Bennett, *Inverse Modeling of the Ocean and Atmosphere* (2002).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._types import PyTree
from ..adjoint import AbstractAdjoint, Direct, check_loop_adjoint, scan
from ..models import AbstractStepper
from ..observe import AbstractCovariance, DiagonalR, ObservationSchedule
from ..solvers import AbstractProblem
from ._fourdvar import InitialState, check_background, check_observations, whitened_innovation

__all__ = ["WeakConstraint4DVar"]


class WeakConstraint4DVar(AbstractProblem):
    r"""Weak-constraint 4D-Var with a model-error forcing in the control (see the module docstring).

    The control increment is the tuple ``(v, w)``: ``v`` shaped like the grid (initial state) and
    ``w`` of shape ``(n_blocks, *grid)`` (one whitened forcing per block of ``forcing_every`` steps).

    **Arguments:**

    - ``model``: a stepper with a one-array state (e.g. :class:`~diffphys.Heat`).
    - ``schedule``, ``observations``, ``R``, ``B``, ``background``: as for
      :class:`StrongConstraint4DVar` (the control of the initial state).
    - ``Q``: the covariance of the per-step model-error forcing $\eta$ (an
      :class:`~diffphys.observe.AbstractCovariance` on the grid).
    - ``forcing_every``: $m$, the number of steps over which one forcing is held constant
      (default 1: a forcing per step). The window's ``schedule.n_steps`` steps make
      $J = \lceil n/m\rceil$ blocks.
    - ``adjoint``: how the rollout over the window is differentiated: ``Direct()`` (default) or
      ``Checkpointed(...)`` (e.g. ``every=1`` recomputes each step's internals in the backward
      pass: less memory, one more forward pass); see :mod:`diffphys.adjoint`.
    """

    model: AbstractStepper
    schedule: ObservationSchedule
    observations: Float[Array, " N"]
    mask: Bool[Array, " N"]
    R: DiagonalR
    B: AbstractCovariance
    Q: AbstractCovariance
    background: Float[Array, "*grid"]
    forcing_every: int = eqx.field(static=True)
    adjoint: AbstractAdjoint = eqx.field(static=True)

    def __init__(self, model, schedule, observations, R, B, background, Q, *, forcing_every: int = 1,
                 adjoint: AbstractAdjoint = Direct()):
        name = "WeakConstraint4DVar"
        y = check_observations(name, model, schedule, observations, R)
        _, self.background, self.B = check_background(name, model, InitialState(), background, B)
        if len(model._state_shapes()) != 1:
            raise ValueError(
                f"{name}: {type(model).__name__} has a tuple state; the model-error forcing is defined for "
                "one-array states (e.g. Heat, Advection)"
            )
        if not isinstance(Q, AbstractCovariance):
            raise TypeError(f"{name}: Q must be a covariance (e.g. DiffusionB), got {type(Q).__name__}")
        if isinstance(forcing_every, bool) or not isinstance(forcing_every, int) or forcing_every < 1:
            raise ValueError(f"{name}: forcing_every must be an integer >= 1, got {forcing_every!r}")
        if schedule.n_steps < 1:
            raise ValueError(f"{name}: the schedule observes only the initial time; there is no step to force")
        self.model, self.schedule, self.R, self.Q = model, schedule, R, Q
        self.observations, self.mask = y, jnp.isfinite(y)
        self.forcing_every = forcing_every
        self.adjoint = check_loop_adjoint(name, adjoint)

    @property
    def n_blocks(self) -> int:
        """The number of forcing blocks $J = \\lceil n_{steps} / m\\rceil$."""
        return math.ceil(self.schedule.n_steps / self.forcing_every)

    @property
    def n_observations(self) -> int:
        return int(jnp.sum(self.mask))

    def zero_control(self):
        """$(v, w) = (0, 0)$: the background initial state and no model error."""
        return jnp.zeros_like(self.background), jnp.zeros((self.n_blocks, *self.background.shape), self.background.dtype)

    def control(self, v):
        """The initial-state control field $x_0 = x_b + B^{1/2} v$ (the state part of the control)."""
        return self.background + self.B.sqrt(v[0])

    def initial_state(self, v) -> PyTree:
        return self.control(v)

    def model_for(self, v) -> AbstractStepper:
        """The model (unchanged: the forcing is not part of it; see :meth:`forcing`)."""
        del v
        return self.model

    def forcing(self, v) -> Float[Array, "J *grid"]:
        r"""The model-error forcings $\eta_j = Q^{1/2} w_j$, shape ``(n_blocks, *grid)``."""
        return jax.vmap(self.Q.sqrt)(v[1])

    def states(self, v) -> Float[Array, "n+1 *grid"]:
        """Every state $x_0, \\dots, x_n$ of the forced rollout over the window."""
        eta = self.forcing(v)
        block = jnp.arange(self.schedule.n_steps) // self.forcing_every

        def step(x, j):
            x = self.model.step(x) + eta[j]
            return x, x

        x0 = self.control(v)
        _, xs = scan(step, x0, block, self.schedule.n_steps, self.adjoint)
        return jnp.concatenate([x0[None], xs])

    def trajectory(self, v) -> Float[Array, "T *grid"]:
        """The forced model states at the schedule's observation times."""
        return self.states(v)[jnp.asarray(self.schedule.steps)]

    def observation_residuals(self, v) -> Float[Array, " N"]:
        return whitened_innovation(self, self.trajectory(v))

    def residuals(self, v) -> Float[Array, " n+N"]:
        r"""$r = (v, w, R^{-1/2}(y - H x))$, flat."""
        return jnp.concatenate([jnp.ravel(v[0]), jnp.ravel(v[1]), self.observation_residuals(v)])
