r"""A stepper corrected by a learned network: $u_{n+1} = M(u_n) + s\,N_\theta(\cdot)$, usable wherever a stepper is.

References: K. Um, R. Brand, Y. Fei, P. Holl, N. Thuerey, "Solver-in-the-loop: learning from
differentiable physics to interact with iterative PDE-solvers", NeurIPS 2020; D. Kochkov,
J. A. Smith, A. Alieva, Q. Wang, M. P. Brenner, S. Hoyer, "Machine learning-accelerated
computational fluid dynamics", PNAS 118 (2021) e2101784118; B. List, L.-W. Chen, N. Thuerey,
"Learned turbulence modelling with differentiable fluid solvers: physics-based loss functions and
optimisation horizons", J. Fluid Mech. 949 (2022) A25.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["FEEDS", "CorrectedStepper"]

FEEDS = ("state", "prediction")


def _state_shape(stepper, state_shape) -> tuple[int, ...]:
    if state_shape is not None:
        return tuple(int(s) for s in state_shape)
    shapes_fn = getattr(stepper, "_state_shapes", None)
    if shapes_fn is not None:
        shapes = shapes_fn()
        if len(shapes) != 1:
            raise ValueError(
                f"CorrectedStepper: {type(stepper).__name__} has a state of {len(shapes)} fields {list(shapes)}; "
                "only one-array states can be corrected (wrap the stepper so that it maps one array to one array)"
            )
        return tuple(shapes[0])
    grid = getattr(stepper, "grid", None)
    if grid is None:
        raise ValueError(
            f"CorrectedStepper: cannot tell the state's shape of {type(stepper).__name__} (it has no grid); "
            "pass state_shape=..."
        )
    return tuple(grid.shape)


class CorrectedStepper(eqx.Module):
    r"""A stepper plus a learned correction network: the corrected model of solver-in-the-loop training.

    With ``feed="state"`` (default) the network sees the current state,
    $$u_{n+1} = M(u_n) + s\,N_\theta(u_n),$$
    a learned additive model-error term (Kochkov et al. 2021 style closure). With
    ``feed="prediction"`` it sees the model's prediction and corrects it,
    $$u_{n+1} = M(u_n) + s\,N_\theta\big(M(u_n)\big),$$
    the post-step correction of Um et al. (2020). $M$ is the wrapped stepper, $s$ a fixed scale
    (``scale``; e.g. the time step, so that the network's output is O(1)). The physical parameters
    of $M$ stay fields of the wrapped stepper (training freezes them; see
    :func:`~diffphys.learn.train_correction`).

    It is a wrapper, not a subclass: it exposes ``grid``, ``dt``, :meth:`step` and ``__call__``, so
    :func:`~diffphys.rollout`, :func:`~diffphys.observe.twin_experiment` and
    :class:`~diffphys.assimilate.StrongConstraint4DVar` accept it in place of the stepper.

    **Arguments:**

    - ``stepper``: a stepper (``step(state) -> state`` with ``grid`` and ``dt``), or any such callable.
    - ``network``: an equinox module mapping one state to a field of the same shape (e.g.
      :class:`~diffphys.learn.ConvNet`, :class:`~diffphys.learn.MLP`). Its output shape is checked
      against the state's at construction (``ValueError`` naming both).
    - ``feed``: ``"state"`` or ``"prediction"``: what the network is fed.
    - ``scale``: the fixed factor $s$ (default 1.0).
    - ``state_shape``: the state's shape, only for steppers without ``grid`` (e.g. Lorenz-96).

    **Returns** (of :meth:`step`): the corrected next state.
    """

    stepper: Callable
    network: Callable
    feed: str = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    state_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, stepper, network, *, feed="state", scale=1.0, state_shape=None):
        if not callable(getattr(stepper, "step", None)) and not callable(stepper):
            raise TypeError(f"CorrectedStepper: stepper must have a step method, got {type(stepper).__name__}")
        if not callable(network):
            raise TypeError(f"CorrectedStepper: network must be callable (an equinox module), got {type(network).__name__}")
        if feed not in FEEDS:
            raise ValueError(f"CorrectedStepper: unknown feed {feed!r}; valid are {list(FEEDS)}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"CorrectedStepper: scale must be a finite positive number, got {scale!r}")
        shape = _state_shape(stepper, state_shape)
        probe = jax.ShapeDtypeStruct(shape, jnp.result_type(float))
        try:
            out = jax.eval_shape(network, probe)
        except Exception as error:  # the network itself rejects the state's shape
            raise ValueError(
                f"CorrectedStepper: the network cannot be applied to a state of shape {shape}: {error}"
            ) from None
        out_shape = getattr(out, "shape", None)
        if out_shape != shape:
            raise ValueError(
                f"CorrectedStepper: the network's output has shape "
                f"{out_shape if out_shape is not None else type(out).__name__}, but the state has shape {shape}; "
                "the correction must be a field of the state's shape (e.g. a ConvNet on the stepper's grid, or "
                "an MLP of the state's size)"
            )
        self.stepper, self.network = stepper, network
        self.feed, self.scale, self.state_shape = feed, float(scale), shape

    @property
    def grid(self):
        """The wrapped stepper's grid."""
        return self.stepper.grid

    @property
    def dt(self) -> float:
        """The wrapped stepper's time step."""
        return self.stepper.dt

    def _model_step(self, u):
        step = getattr(self.stepper, "step", None)
        return step(u) if step is not None else self.stepper(u)

    def correction(self, u: Float[Array, "*grid"], prediction: Float[Array, "*grid"] | None = None):
        r"""The correction term $s\,N_\theta(\cdot)$ added to the model's step from ``u``."""
        if self.feed == "prediction":
            prediction = self._model_step(u) if prediction is None else prediction
            return self.scale * self.network(prediction)
        return self.scale * self.network(u)

    def step(self, u: Float[Array, "*grid"]) -> Float[Array, "*grid"]:
        """Advance one unbatched state by one corrected step."""
        if jnp.shape(u) != self.state_shape:
            raise ValueError(
                f"CorrectedStepper: state has shape {jnp.shape(u)}, expected {self.state_shape}"
                + ("; for a batch of states use jax.vmap(model.step)" if jnp.ndim(u) > len(self.state_shape) else "")
            )
        prediction = self._model_step(u)
        return prediction + self.correction(u, prediction)

    def __call__(self, u):
        return self.step(u)
