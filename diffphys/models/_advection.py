r"""Linear advection in conservative (flux) form with a constant or spatially varying velocity."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._stencil import ADVECTION_SCHEMES, advection_faces, div_flux_advective, upwind_sides
from .._validate import array_module, check_field, device_array
from ..grid import AbstractGrid
from ._base import AbstractStepper, as_field, check_grid, resolve_time_step, with_faces
from ..schemes import AbstractScheme, time_scheme

__all__ = ["Advection"]


class Advection(AbstractStepper):
    r"""Advection in conservative form $\partial_t u + \nabla\cdot(\mathbf v(x)\,u) = 0$.

    The conservative form transports the integral of ``u`` (mass): with periodic boundaries
    $\int u$ is conserved exactly by the discretisation. For a divergence-free velocity it equals the
    advective form $\partial_t u + \mathbf v\cdot\nabla u = 0$; otherwise ``u`` is a density that is
    compressed where $\nabla\cdot\mathbf v < 0$.

    Space: face fluxes upwinded on the face velocity (mean of its two cells), with first-order
    upwind or fifth-order WENO-Z face values (:func:`diffphys._stencil.div_flux_advective`).
    Time: any explicit scheme; stable when ``dt·Σ_axes max|v_a|/h_a <= limit``, with ``limit``
    the scheme's CFL number for the reconstruction (upwind: Euler 1, SSP-RK3 1.26, RK4 1.39;
    WENO5: SSP-RK3 1.43, RK4 1.73, forward Euler unstable).

    Boundary conditions: use periodic, or Dirichlet (the inflow value) on inflow sides and
    zero-gradient Neumann on outflow sides.

    WENO5's upwind side: when every face velocity of an axis has one sign (a concrete velocity at
    construction), the axis's faces all reconstruct from that side without a per-face choice, which makes
    rollouts and their gradients faster (:func:`diffphys._stencil.upwind_sides`). The side is static: a
    velocity replaced with ``eqx.tree_at`` must keep it (faces that do not are NaN, so rollouts report a
    non-finite state rather than use the wrong side); rebuild with ``model.checked()`` to find it again.
    4D-Var's ``Parameter("velocity")`` control rebuilds the model itself.

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``velocity``: in 1D a scalar or an array of shape ``(n,)``; in 2D a pair ``(vx, vy)`` of
      scalars/arrays of the grid's shape, or one array of shape ``(2, nx, ny)``.
    - ``dt``: time step, checked against the CFL limit (the error gives the largest stable dt);
      ``None`` (default) takes 0.9 of the largest stable dt.
    - ``reconstruction``: ``"weno5"`` (default) or ``"upwind"``.
    - ``scheme``: ``"euler"``, ``"ssprk3"`` (default), ``"rk4"`` or an ``AbstractScheme``.
    """

    grid: AbstractGrid
    velocity: Float[Array, "ndim *grid"]
    dt: float = eqx.field(static=True)
    reconstruction: str = eqx.field(static=True)
    scheme: AbstractScheme = eqx.field(static=True)
    _faces: tuple | None = None  # advection_faces(velocity), filled only inside a time loop (see _with_step_invariants)
    # WENO5's upwind side per axis when it is one for all faces (diffphys._stencil.upwind_sides), found at construction
    _upwind: tuple[int, ...] = eqx.field(static=True, default=())
    _static_from_fields: ClassVar[frozenset[str]] = frozenset({"velocity"})

    def __init__(self, grid: AbstractGrid, velocity, *, dt: float | None = None, reconstruction="weno5", scheme="ssprk3"):
        check_grid("Advection", grid)
        if reconstruction not in ADVECTION_SCHEMES:
            raise ValueError(
                f"Advection: unknown reconstruction {reconstruction!r}; valid are {list(ADVECTION_SCHEMES)}"
            )
        self.grid = grid
        self.velocity = _velocity_field(velocity, grid)
        self.reconstruction = reconstruction
        self.scheme = time_scheme(scheme)
        self.dt = resolve_time_step(self, dt)
        self._faces = None
        self._upwind = weno_sides(self.velocity, grid, reconstruction)

    def rhs(self, u):
        return advective_tendency(u, self.velocity, self.grid, self.reconstruction, faces=self._faces,
                                  sides=self._upwind)

    def _with_step_invariants(self):
        return with_faces(self, advection_faces(self.velocity, self.grid, self._upwind))

    def jacobian_properties(self, part="rhs"):
        # Upwind fluxes are linear in u; WENO's nonlinear weights are not.
        return frozenset({"affine"}) if part == "rhs" and self.reconstruction == "upwind" else frozenset()

    def spectral_bound(self):
        return self.reconstruction, advective_rate(self.velocity, self.grid)

    def _state_shapes(self):
        return (self.grid.shape,)

    def total(self, u) -> Float[Array, ""]:
        r"""$\int_\Omega u\,dx$ (midpoint rule): conserved with periodic boundaries."""
        return jnp.sum(u) * self.grid.cell_volume


def advective_tendency(u, velocity, grid: AbstractGrid, reconstruction: str, *, faces: tuple | None = None,
                       sides: tuple[int, ...] | None = None):
    r"""$-\nabla\cdot(\mathbf v u)$ with the given face reconstruction (``faces``, ``sides``: see
    :func:`div_flux_advective`)."""
    if reconstruction == "weno5":
        # WENO's ~50 intermediates per axis would all be stored for reverse mode; recomputing
        # them from u in the backward pass keeps gradient memory at a few states per stage
        # (measured: grad/forward 12 -> 4.5 and 50x less memory, 1D N=4096).
        return jax.checkpoint(lambda w: -div_flux_advective(w, velocity, grid, "weno5", faces=faces, sides=sides))(u)
    return -div_flux_advective(u, velocity, grid, reconstruction, faces=faces)


def weno_sides(velocity, grid: AbstractGrid, reconstruction: str) -> tuple[int, ...]:
    """The static upwind side per axis (:func:`diffphys._stencil.upwind_sides`) for WENO5; no side (0) for the
    first-order upwind scheme, whose flux ``max(v, 0) u_i + min(v, 0) u_{i+1}`` makes no choice."""
    return upwind_sides(velocity, grid) if reconstruction == "weno5" else (0,) * grid.ndim


def advective_rate(velocity, grid: AbstractGrid):
    r"""$\sum_a \max|v_a| / h_a$, the advective spectral radius scale for the CFL condition."""
    xp = array_module(velocity)
    velocity = xp.asarray(velocity)  # indexed after conversion: indexing a device array compiles a program
    return sum(xp.max(xp.abs(velocity[a])) / h for a, h in enumerate(grid.spacing))


def _velocity_field(velocity, grid: AbstractGrid):
    """Velocity as an array of shape ``(ndim, *grid.shape)``."""
    xp = array_module(velocity)  # NumPy for a concrete velocity: no compiled program at construction
    if grid.ndim == 1:
        arr = xp.asarray(velocity)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        field = as_field("Advection: velocity", arr, grid)
        return device_array(np.asarray(field)[None]) if xp is np else field[None]
    if isinstance(velocity, (tuple, list)):
        if len(velocity) != 2:
            raise ValueError(f"Advection: a 2D velocity needs two components (vx, vy), got {len(velocity)}")
        components = [as_field(f"Advection: velocity[{a}]", v, grid) for a, v in enumerate(velocity)]
        return device_array(np.stack(components)) if xp is np else jnp.stack(components)
    arr = xp.asarray(velocity, dtype=jnp.result_type(float, xp.asarray(velocity).dtype))
    if arr.shape != (2, *grid.shape):
        raise ValueError(
            f"Advection: a 2D velocity must be a pair (vx, vy) or an array of shape {(2, *grid.shape)}, "
            f"got shape {arr.shape}"
        )
    check_field("Advection: velocity", arr)
    return device_array(arr)
