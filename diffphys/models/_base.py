"""The stepper interface shared by every model: ``step(state) -> state`` plus its right-hand side."""

from __future__ import annotations

import abc
import inspect
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validate import array_module, check_field, device_array, is_concrete
from ..grid import AbstractGrid, Grid1D, Grid2D
from ..schemes import AbstractScheme, scheme_registry

__all__ = ["AbstractStepper"]


class AbstractStepper(eqx.Module):
    """A differentiable time stepper for a semi-discretised PDE ``dy/dt = rhs(y)``.

    Fields are the grid, the physical parameters (arrays: differentiable, batchable with
    ``eqx.filter_vmap``) and static settings (time step ``dt``, time scheme). ``step`` maps one
    unbatched state to the next; batch with ``jax.vmap``. ``vector_field(t, y, args)`` is the
    right-hand side in diffrax's signature (method of lines).
    """

    grid: eqx.AbstractVar[AbstractGrid]
    dt: eqx.AbstractVar[float]
    scheme: eqx.AbstractVar[AbstractScheme]
    # Fields the constructor derives static data from (Advection's WENO upwind sides from its velocity): code that
    # replaces one of them (4D-Var's Parameter control) rebuilds the model through its constructor (`checked`).
    _static_from_fields: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def rhs(self, state):
        """The semi-discrete right-hand side ``f(y)`` of ``dy/dt = f(y)``."""

    @abc.abstractmethod
    def spectral_bound(self) -> tuple[str, jax.Array]:
        """``(region, ρ)``: the region of the spatial operator's eigenvalues and a bound on their size.

        ``region`` is a key of :attr:`AbstractScheme.stability_limits`.
        """

    @abc.abstractmethod
    def _state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the state's fields, in order."""

    @property
    def max_stable_dt(self) -> float:
        """The largest stable time step of this model's scheme at its current parameters."""
        region, rho = self.spectral_bound()
        limit = self.scheme.stability_limits.get(region, 0.0)
        rho = float(rho)
        return math.inf if rho == 0.0 else limit / rho

    def checked(self) -> AbstractStepper:
        """This model constructed again from its fields, so that every construction check runs on its values.

        A parameter replaced with ``eqx.tree_at`` (as 4D-Var's :class:`~diffphys.assimilate.Parameter`
        control does) skips ``__init__``; this applies the same checks (finite, of the right sign, the time
        step within the scheme's stability limit) and raises ``ValueError`` naming the field. Traced values
        (inside ``jit``) cannot be checked and pass, as at construction.
        """
        return type(self)(**self._construction_arguments())

    def _construction_arguments(self) -> dict:
        """The keyword arguments that rebuild this model: the fields named like ``__init__``'s arguments."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def check_state(self, state) -> None:
        """Raise ``ValueError`` (at trace time) if ``state`` does not match the grid."""
        fields = state if isinstance(state, tuple) else (state,)
        expected = self._state_shapes()
        shapes = tuple(jnp.shape(f) for f in fields)
        if len(fields) != len(expected) or shapes != expected:
            hint = " (one field)" if len(expected) == 1 else f" (a tuple of {len(expected)} fields)"
            batched = len(fields) == len(expected) and all(
                len(s) > len(e) and s[-len(e):] == e for s, e in zip(shapes, expected)
            )
            extra = "; for a batch of states use jax.vmap(model.step)" if batched else ""
            raise ValueError(
                f"{type(self).__name__}: state has shape {shapes if len(shapes) > 1 else shapes[0]}, "
                f"expected {expected if len(expected) > 1 else expected[0]}{hint} from its grid{extra}"
            )

    def step(self, state):
        """Advance one unbatched ``state`` by one time step ``dt``."""
        self.check_state(state)
        return self.scheme.step(self, state, self.dt)

    def __call__(self, state):
        return self.step(state)

    def _with_step_invariants(self) -> AbstractStepper:
        """This stepper with what every step recomputes from its parameters alone (e.g. face coefficients)
        computed once, for a loop of steps; the steps' values are the same.

        :func:`diffphys.rollout` calls it inside its program, before its loop. A derivative with respect to a
        parameter then collects on those quantities over all steps and goes back to the parameter once, not
        at every stage. Replacing a parameter of the returned stepper (``eqx.tree_at``) would leave them stale,
        so it is used only where it is made. Default: the stepper itself.
        """
        return self

    def jacobian_properties(self, part: str = "rhs") -> frozenset[str]:
        """What implicit schemes may assume about the Jacobian of ``getattr(self, part)``.

        ``"affine"``: the part is affine in the state (an implicit stage is one linear solve);
        ``"symmetric"``: its Jacobian is symmetric negative semi-definite (CG applies). Default: nothing.
        """
        del part
        return frozenset()

    def jacobian_diagonal(self, part: str, state):
        """The diagonal of the Jacobian of ``getattr(self, part)`` at ``state`` (for Jacobi
        preconditioning), or ``None`` when the model does not provide it."""
        del part, state
        return None

    def vector_field(self, t, y, args):
        """``rhs`` in diffrax's signature, e.g. ``diffrax.ODETerm(model.vector_field)``."""
        del t, args
        return self.rhs(y)


def as_field(name: str, value, grid: AbstractGrid, *, positive=False, nonnegative=False) -> jax.Array:
    """Broadcast a scalar or array parameter to the grid's shape, checking it when concrete."""
    dtype = jnp.result_type(float, value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype)
    xp = array_module(value)  # NumPy for a concrete value: no compiled program at construction
    arr = xp.asarray(value, dtype=dtype)
    try:
        arr = xp.broadcast_to(arr, grid.shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {arr.shape}, which does not broadcast to the grid's shape {grid.shape}; "
            "pass a scalar or an array of the grid's shape"
        ) from None
    check_field(name, arr, positive=positive, nonnegative=nonnegative)
    return device_array(arr)


def with_faces(model: AbstractStepper, faces) -> AbstractStepper:
    """``model`` with its ``_faces`` field (``None`` until a time loop fills it) set to ``faces``."""
    return eqx.tree_at(lambda m: m._faces, model, faces, is_leaf=lambda x: x is None)


def check_grid(name: str, grid) -> None:
    if not isinstance(grid, (Grid1D, Grid2D)):
        raise TypeError(f"{name}: grid must be a Grid1D or Grid2D, got {type(grid).__name__}")


DEFAULT_SAFETY = 0.9


def resolve_time_step(model: AbstractStepper, dt: float | None) -> float:
    """Validate ``dt`` against the scheme's stability limit (when the parameters are concrete).

    ``dt=None`` picks ``0.9 x`` the largest stable step; the model's ``dt`` field shows the value.
    """
    name = type(model).__name__
    region, rho = model.spectral_bound()
    concrete = is_concrete(rho)
    missing = [m for m in model.scheme.requires if not hasattr(model, m)]
    if missing:
        raise ValueError(
            f"{name}: time scheme {model.scheme.name!r} needs model.{missing[0]}, which {name} does not have; "
            f"use one of {_valid_schemes(model, region)}"
        )
    if concrete and model.scheme.stability_limits.get(region, 0.0) == 0.0:
        good = _valid_schemes(model, region)
        raise ValueError(
            f"{name}: time scheme {model.scheme.name!r} is unstable or not applicable for this model at "
            f"any dt (its spatial operator's eigenvalues lie in the {region!r} region); use one of {good}"
        )
    if dt is None:
        if concrete and math.isinf(model.scheme.stability_limits.get(region, 0.0)):
            raise ValueError(
                f"{name}: scheme {model.scheme.name!r} is unconditionally stable, so there is no stability limit "
                "to derive dt from; pass dt, chosen for accuracy"
            )
        if not concrete:
            raise ValueError(f"{name}: pass dt explicitly when the parameters are traced (inside jit/vmap/grad)")
        return DEFAULT_SAFETY * model.max_stable_dt
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"{name}: dt must be a finite positive number (or None for a stable default), got {dt!r}")
    if concrete:
        dt_max = model.max_stable_dt
        if dt > dt_max * (1.0 + 1e-12):
            raise ValueError(
                f"{name}: dt={dt:.6g} exceeds the stability limit of scheme {model.scheme.name!r} on this grid "
                f"and these parameters; the largest stable dt is {dt_max:.6g}"
            )
    return float(dt)


def _valid_schemes(model: AbstractStepper, region: str) -> list[str]:
    """Names of the built-in schemes stable for ``region`` whose required model methods exist."""
    return sorted(
        n
        for n, cls in scheme_registry().items()
        if cls.stability_limits.get(region, 0.0) > 0 and all(hasattr(model, m) for m in cls.requires)
    )
