r"""Advection–diffusion, for IMEX time stepping: explicit advection, implicit diffusion."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._stencil import ADVECTION_SCHEMES, advection_faces, diffusion_faces, div_kappa_grad, div_kappa_grad_diagonal
from .._symmetric_tangent import symmetric_tangent
from ..grid import AbstractGrid
from ._advection import _velocity_field, advective_rate, advective_tendency, weno_sides
from ._base import AbstractStepper, as_field, check_grid, resolve_time_step, with_faces
from ..schemes import AbstractImplicitScheme, AbstractScheme, time_scheme

__all__ = ["AdvectionDiffusion"]


class AdvectionDiffusion(AbstractStepper):
    r"""Advection–diffusion $\partial_t u + \nabla\cdot(\mathbf v u) = \nabla\cdot(\kappa\nabla u) + f$.

    Split as $\dot u = f_E(u) + f_I(u)$ with $f_E = -\nabla\cdot(\mathbf v u)$ (upwind or WENO5
    fluxes, as :class:`~diffphys.Advection`) and $f_I = \nabla\cdot(\kappa\nabla u) + f$ (as
    :class:`~diffphys.Heat`). The default scheme, IMEX ARS(4,4,3), treats advection explicitly and
    diffusion implicitly (one CG solve per implicit stage), so ``dt`` is limited by the advective
    CFL number only (upwind 1.07, WENO5 1.28), however large κ is. Fully implicit
    ``"backward_euler"``/``"crank_nicolson"`` are also accepted (Newton–GMRES with WENO, one GMRES
    solve with upwind); explicit schemes are not (use :class:`~diffphys.Advection` or
    :class:`~diffphys.Heat` for those).

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``velocity``: as for :class:`~diffphys.Advection`.
    - ``kappa``: diffusivity κ(x) >= 0.
    - ``dt``: time step; ``None`` takes 0.9 of the advective limit (IMEX only).
    - ``source``: f(x) or ``None``.
    - ``reconstruction``: ``"weno5"`` (default) or ``"upwind"``.
    - ``scheme``: ``"imex_ars443"`` (default), ``"backward_euler"``, ``"crank_nicolson"`` or an instance.
    """

    grid: AbstractGrid
    velocity: Float[Array, "ndim *grid"]
    kappa: Float[Array, "*grid"]
    source: Float[Array, "*grid"] | None
    dt: float = eqx.field(static=True)
    reconstruction: str = eqx.field(static=True)
    scheme: AbstractScheme = eqx.field(static=True)
    # (diffusion_faces(kappa), advection_faces(velocity)), filled only inside a time loop (see _with_step_invariants)
    _faces: tuple | None = None
    # WENO5's upwind side per axis when it is one for all faces (diffphys._stencil.upwind_sides), found at construction
    _upwind: tuple[int, ...] = eqx.field(static=True, default=())
    _static_from_fields: ClassVar[frozenset[str]] = frozenset({"velocity"})

    def __init__(
        self, grid: AbstractGrid, velocity, kappa, *, dt=None, source=None, reconstruction="weno5", scheme="imex_ars443"
    ):
        check_grid("AdvectionDiffusion", grid)
        if reconstruction not in ADVECTION_SCHEMES:
            raise ValueError(
                f"AdvectionDiffusion: unknown reconstruction {reconstruction!r}; valid are {list(ADVECTION_SCHEMES)}"
            )
        self.grid = grid
        self.velocity = _velocity_field(velocity, grid)
        self.kappa = as_field("AdvectionDiffusion: kappa (diffusivity)", kappa, grid, nonnegative=True)
        self.source = None if source is None else as_field("AdvectionDiffusion: source", source, grid)
        self.reconstruction = reconstruction
        self.scheme = time_scheme(scheme)
        if not isinstance(self.scheme, AbstractImplicitScheme):
            raise ValueError(
                f"AdvectionDiffusion: scheme {self.scheme.name!r} is explicit; use 'imex_ars443' (explicit advection, "
                "implicit diffusion), 'backward_euler' or 'crank_nicolson', or Advection/Heat for explicit stepping"
            )
        self.dt = resolve_time_step(self, dt)
        self._faces = None
        self._upwind = weno_sides(self.velocity, grid, reconstruction)

    def explicit_rhs(self, u):
        r"""$f_E(u) = -\nabla\cdot(\mathbf v u)$."""
        faces = None if self._faces is None else self._faces[1]
        return advective_tendency(u, self.velocity, self.grid, self.reconstruction, faces=faces, sides=self._upwind)

    @symmetric_tangent  # affine, symmetric: its adjoint is its tangent map
    def implicit_rhs(self, u):
        r"""$f_I(u) = \nabla\cdot(\kappa\nabla u) + f$."""
        du = div_kappa_grad(u, self.kappa, self.grid, faces=None if self._faces is None else self._faces[0])
        return du if self.source is None else du + self.source

    def rhs(self, u):
        return self.explicit_rhs(u) + self.implicit_rhs(u)

    def _with_step_invariants(self):
        return with_faces(self, (diffusion_faces(self.kappa, self.grid),
                                 advection_faces(self.velocity, self.grid, self._upwind)))

    def jacobian_properties(self, part="rhs"):
        if part == "implicit_rhs":
            return frozenset({"affine", "symmetric"})
        return frozenset({"affine"}) if part == "rhs" and self.reconstruction == "upwind" else frozenset()

    def jacobian_diagonal(self, part, state):
        del state
        return div_kappa_grad_diagonal(self.kappa, self.grid) if part == "implicit_rhs" else None

    def spectral_bound(self):
        return self.reconstruction, advective_rate(self.velocity, self.grid)

    def _state_shapes(self):
        return (self.grid.shape,)

    def total(self, u) -> Float[Array, ""]:
        r"""$\int_\Omega u\,dx$: conserved with periodic boundaries and f = 0."""
        return jnp.sum(u) * self.grid.cell_volume
