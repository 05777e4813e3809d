"""Uniform cell-centred grids in one and two dimensions, with their boundary conditions.

A grid of ``n`` cells on ``[0, L]`` has spacing ``dx = L / n`` and cell centres
``x_i = (i + 1/2) dx``. States live at the cell centres; fluxes live on the ``n + 1`` faces.
Boundary conditions act on the two end faces of each axis and are imposed through ghost
cells (see :func:`diffphys._stencil.pad`):

* :class:`Periodic` -- the axis wraps around (both sides of the axis must be periodic);
* :class:`Dirichlet` -- ``u = value`` on the boundary face;
* :class:`Neumann` -- the outward normal derivative ``∂u/∂n = gradient`` on the boundary face
  (zero flux by default). For a diffusion operator ``∇·(κ∇u)`` the flux leaving the domain is
  ``κ·gradient``.

Boundary data may be Python floats (constants) or JAX arrays (then they are differentiable leaves
of the model, e.g. to infer an inflow value or a boundary heat flux). On a 2D grid the data of a
side may also vary along it: an array with one value per boundary cell (shape ``(ny,)`` on the
x-sides, ``(nx,)`` on the y-sides). Boundary data are constant in time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from jaxtyping import ArrayLike, Float

from ._types import Scalar
from ._validate import check_field

__all__ = [
    "AbstractBoundaryCondition",
    "Periodic",
    "Dirichlet",
    "Neumann",
    "Grid1D",
    "Grid2D",
    "boundary_condition",
]


class AbstractBoundaryCondition(eqx.Module):
    """A condition imposed on one boundary face of one axis."""


class Periodic(AbstractBoundaryCondition):
    """The axis wraps around; must be used on both sides of an axis."""


class Dirichlet(AbstractBoundaryCondition):
    r"""Prescribed value on the boundary face: $u|_{\partial\Omega} = \text{value}$."""

    value: Scalar | Float[ArrayLike, " side"] = 0.0


class Neumann(AbstractBoundaryCondition):
    r"""Prescribed outward normal derivative: $\partial u/\partial n|_{\partial\Omega} = \text{gradient}$.

    The default ``gradient=0`` is a zero-flux (insulated, reflecting) boundary.
    """

    gradient: Scalar | Float[ArrayLike, " side"] = 0.0


_BC_BY_NAME = {"periodic": Periodic, "dirichlet": Dirichlet, "neumann": Neumann}


def boundary_condition(spec) -> AbstractBoundaryCondition:
    """Turn a name (``"periodic"``, ``"dirichlet"``, ``"neumann"``) or a condition into a condition.

    Names give the homogeneous condition (zero value, zero flux).
    """
    if isinstance(spec, AbstractBoundaryCondition):
        return spec
    if isinstance(spec, str) and spec.lower() in _BC_BY_NAME:
        return _BC_BY_NAME[spec.lower()]()
    raise ValueError(
        f"unknown boundary condition {spec!r}; valid are the names "
        f"{sorted(_BC_BY_NAME)} or an instance of Periodic, Dirichlet(value) or Neumann(gradient)"
    )


def _axis_conditions(spec, axis_name: str) -> tuple[AbstractBoundaryCondition, AbstractBoundaryCondition]:
    """Normalise one axis' boundary specification into a (low side, high side) pair."""
    if isinstance(spec, (str, AbstractBoundaryCondition)):
        low = high = boundary_condition(spec)
    elif isinstance(spec, Sequence) and len(spec) == 2:
        low, high = boundary_condition(spec[0]), boundary_condition(spec[1])
    else:
        raise ValueError(
            f"boundary conditions for axis {axis_name} must be one condition or a pair "
            f"(low side, high side), got {spec!r}"
        )
    if isinstance(low, Periodic) != isinstance(high, Periodic):
        raise ValueError(
            f"axis {axis_name}: a periodic boundary must be periodic on both sides, got {low} and {high}"
        )
    for side in (low, high):
        for field_name in ("value", "gradient"):
            if hasattr(side, field_name):
                check_field(f"axis {axis_name}: {type(side).__name__}.{field_name}", getattr(side, field_name))
    return low, high


def _check_side_data(pair, side_shape: tuple[int, ...], axis_name: str) -> None:
    """Boundary data must be a scalar or, in 2D, have one value per cell along the side."""
    for side in pair:
        for field_name in ("value", "gradient"):
            if hasattr(side, field_name):
                shape = jnp.shape(getattr(side, field_name))
                if shape not in ((), side_shape):
                    valid = "a scalar" + (f" or an array of shape {side_shape}" if side_shape else "")
                    raise ValueError(
                        f"axis {axis_name}: {type(side).__name__}.{field_name} has shape {shape}; "
                        f"it must be {valid}"
                    )


def _check_size(n, length, name: str) -> None:
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool)) or n < 2:
        raise ValueError(f"{name}: the number of cells must be an integer >= 2, got {n!r}")
    if not (isinstance(length, (int, float, np.floating, np.integer)) and math.isfinite(length) and length > 0):
        raise ValueError(f"{name}: the domain length must be a finite positive number, got {length!r}")


class Grid1D(eqx.Module):
    """A uniform cell-centred grid on ``[0, length]`` with ``n`` cells.

    **Arguments:**

    - ``n``: number of cells (>= 2).
    - ``length``: domain length ``L`` (> 0); spacing ``dx = L / n``.
    - ``bc``: boundary conditions, one for both ends or a pair ``(left, right)``; each a name
      (``"periodic"``, ``"dirichlet"``, ``"neumann"``) or a condition instance. Default periodic.
    """

    n: int = eqx.field(static=True)
    length: float = eqx.field(static=True)
    bc: tuple[tuple[AbstractBoundaryCondition, AbstractBoundaryCondition]]

    def __init__(self, n: int, length: float = 1.0, bc="periodic"):
        _check_size(n, length, "Grid1D")
        self.n = int(n)
        self.length = float(length)
        self.bc = (_axis_conditions(bc, "x"),)
        _check_side_data(self.bc[0], (), "x")

    @property
    def ndim(self) -> int:
        return 1

    @property
    def shape(self) -> tuple[int]:
        return (self.n,)

    @property
    def spacing(self) -> tuple[float]:
        return (self.length / self.n,)

    @property
    def dx(self) -> float:
        return self.length / self.n

    @property
    def x(self):
        """Cell-centre coordinates, shape ``(n,)``."""
        # NumPy, then one transfer (an explicit dtype: a plain jnp.asarray compiles a copy per shape)
        return jnp.asarray((np.arange(self.n) + 0.5) * self.dx, dtype=jnp.result_type(float))

    @property
    def coordinates(self) -> tuple:
        """Cell-centre coordinates broadcast to the grid's shape, one array per axis."""
        return (self.x,)

    @property
    def cell_volume(self) -> float:
        return self.dx


class Grid2D(eqx.Module):
    """A uniform cell-centred grid on ``[0, Lx] x [0, Ly]`` with ``nx x ny`` cells.

    Arrays on this grid have shape ``(nx, ny)``: axis 0 is ``x``, axis 1 is ``y``.

    **Arguments:**

    - ``nx``, ``ny``: numbers of cells (>= 2 each).
    - ``lengths``: ``(Lx, Ly)``, default ``(1, 1)``.
    - ``bc``: one condition for every side, or a pair ``(bc_x, bc_y)`` whose entries are each one
      condition or a pair ``(low side, high side)``. Default periodic.
    """

    nx: int = eqx.field(static=True)
    ny: int = eqx.field(static=True)
    lengths: tuple[float, float] = eqx.field(static=True)
    bc: tuple[
        tuple[AbstractBoundaryCondition, AbstractBoundaryCondition],
        tuple[AbstractBoundaryCondition, AbstractBoundaryCondition],
    ]

    def __init__(self, nx: int, ny: int, lengths=(1.0, 1.0), bc="periodic"):
        if not (isinstance(lengths, Sequence) and len(lengths) == 2):
            raise ValueError(f"Grid2D: lengths must be a pair (Lx, Ly), got {lengths!r}")
        _check_size(nx, lengths[0], "Grid2D (x)")
        _check_size(ny, lengths[1], "Grid2D (y)")
        self.nx, self.ny = int(nx), int(ny)
        self.lengths = (float(lengths[0]), float(lengths[1]))
        if isinstance(bc, (str, AbstractBoundaryCondition)):
            bc = (bc, bc)
        if not (isinstance(bc, Sequence) and len(bc) == 2):
            raise ValueError(f"Grid2D: bc must be one condition or a pair (bc_x, bc_y), got {bc!r}")
        self.bc = (_axis_conditions(bc[0], "x"), _axis_conditions(bc[1], "y"))
        _check_side_data(self.bc[0], (self.ny,), "x")
        _check_side_data(self.bc[1], (self.nx,), "y")

    @property
    def ndim(self) -> int:
        return 2

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nx, self.ny)

    @property
    def spacing(self) -> tuple[float, float]:
        return (self.lengths[0] / self.nx, self.lengths[1] / self.ny)

    @property
    def x(self):
        """Cell-centre x coordinates, shape ``(nx,)``."""
        return jnp.asarray((np.arange(self.nx) + 0.5) * self.spacing[0], dtype=jnp.result_type(float))

    @property
    def y(self):
        """Cell-centre y coordinates, shape ``(ny,)``."""
        return jnp.asarray((np.arange(self.ny) + 0.5) * self.spacing[1], dtype=jnp.result_type(float))

    @property
    def coordinates(self) -> tuple:
        """``(X, Y)`` cell-centre coordinates, each of shape ``(nx, ny)`` (``ij`` indexing)."""
        return tuple(jnp.asarray(c, dtype=jnp.result_type(float)) for c in np.meshgrid(np.asarray(self.x), np.asarray(self.y), indexing="ij"))

    @property
    def cell_volume(self) -> float:
        return self.spacing[0] * self.spacing[1]


AbstractGrid = Grid1D | Grid2D
