r"""Wave equation with a spatially varying wave speed, as a first-order system in (u, ∂u/∂t)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._stencil import diffusion_faces, div_kappa_grad, div_kappa_grad_diagonal
from .._symmetric_tangent import symmetric_tangent
from .._validate import array_module
from ..grid import AbstractGrid
from ._base import AbstractStepper, as_field, check_grid, resolve_time_step, with_faces
from ..schemes import AbstractScheme, time_scheme

__all__ = ["Wave"]


class Wave(AbstractStepper):
    r"""Wave equation $\partial_t^2 u = \nabla\cdot(c(x)^2\nabla u) + f(x)$ as a time stepper.

    The state is the pair ``(u, v)`` with $v = \partial_t u$; the first-order system is
    $\dot u = v,\ \dot v = a(u) := \nabla\cdot(c^2\nabla u) + f$. Space: the conservative
    second-order operator of :func:`diffphys._stencil.div_kappa_grad` with κ = c². Time: the
    Störmer–Verlet leapfrog (default; symplectic, conserves a discrete energy with bounded
    oscillation) or SSP-RK3/RK4 on the first-order system (slightly dissipative). Stable for
    ``dt·ω_max <= limit`` with $\omega_{\max}^2 = \sum_{\text{axes}} 4\max c^2/h^2$ and ``limit``
    2 (leapfrog), √3 (SSP-RK3), 2√2 (RK4); forward Euler is unstable for waves at any dt.
    Implicit, stable at any ``dt`` (which must then be given): ``"newmark"`` (average
    acceleration; one CG solve per step; conserves the energy exactly), ``"crank_nicolson"``
    (the same trapezoidal rule on the first-order system, solved with GMRES) and
    ``"backward_euler"`` (dissipative).

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``speed``: wave speed c(x) > 0, a scalar or an array of the grid's shape.
    - ``dt``: time step, checked against the CFL limit (the error gives the largest stable dt);
      ``None`` (default) takes 0.9 of the largest stable dt.
    - ``source``: f(x), a scalar or an array of the grid's shape; ``None`` (default) for no source
      term (pass an array, even zeros, to differentiate with respect to the source).
    - ``scheme``: ``"leapfrog"`` (default), ``"ssprk3"``, ``"rk4"``, ``"newmark"``,
      ``"crank_nicolson"``, ``"backward_euler"`` or an ``AbstractScheme``.
    """

    grid: AbstractGrid
    speed: Float[Array, "*grid"]
    source: Float[Array, "*grid"] | None
    dt: float = eqx.field(static=True)
    scheme: AbstractScheme = eqx.field(static=True)
    _faces: tuple | None = None  # diffusion_faces(speed**2), filled only inside a time loop (see _with_step_invariants)

    def __init__(self, grid: AbstractGrid, speed, *, dt: float | None = None, source=None, scheme="leapfrog"):
        check_grid("Wave", grid)
        self.grid = grid
        self.speed = as_field("Wave: speed (wave speed c)", speed, grid, positive=True)
        self.source = None if source is None else as_field("Wave: source", source, grid)
        self.scheme = time_scheme(scheme)
        self.dt = resolve_time_step(self, dt)
        self._faces = None

    @symmetric_tangent  # affine, symmetric: its adjoint is its tangent map
    def acceleration(self, u):
        r"""$a(u) = \nabla\cdot(c^2\nabla u) + f$."""
        a = div_kappa_grad(u, self.speed**2, self.grid, faces=self._faces)
        return a if self.source is None else a + self.source

    def _with_step_invariants(self):
        return with_faces(self, diffusion_faces(self.speed**2, self.grid))

    def rhs(self, state):
        u, v = state
        return v, self.acceleration(u)

    def jacobian_properties(self, part="rhs"):
        if part == "acceleration":  # ∇·(c²∇u) + f: affine, symmetric negative semi-definite
            return frozenset({"affine", "symmetric"})
        return frozenset({"affine"}) if part == "rhs" else frozenset()

    def jacobian_diagonal(self, part, state):
        if part == "acceleration":
            return div_kappa_grad_diagonal(self.speed**2, self.grid)
        if part == "rhs":  # ∂(v, a(u))/∂(u, v) has zero diagonal blocks
            return jax.tree_util.tree_map(jnp.zeros_like, state)
        return None

    def spectral_bound(self):
        xp = array_module(self.speed)
        c2max = xp.max(xp.asarray(self.speed)) ** 2
        return "oscillation", xp.sqrt(sum(4.0 * c2max / h**2 for h in self.grid.spacing))

    def _state_shapes(self):
        return (self.grid.shape, self.grid.shape)

    def energy(self, state) -> Float[Array, ""]:
        r"""Discrete energy $E = \tfrac12\langle v, v\rangle - \tfrac12\langle u, \nabla\cdot(c^2\nabla u)\rangle$.

        With homogeneous boundary conditions (zero Dirichlet value, zero Neumann flux, or periodic)
        and no source this is $\tfrac12\int v^2 + c^2|\nabla u|^2$, the conserved wave energy.
        """
        u, v = state
        dv = self.grid.cell_volume
        return 0.5 * dv * (jnp.sum(v * v) - jnp.sum(u * div_kappa_grad(u, self.speed**2, self.grid)))
