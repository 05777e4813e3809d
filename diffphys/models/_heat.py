r"""Heat (diffusion) equation with a spatially varying diffusivity and a source."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._stencil import diffusion_faces, div_kappa_grad, div_kappa_grad_diagonal
from .._symmetric_tangent import symmetric_tangent
from .._validate import array_module
from ..grid import AbstractGrid
from ._base import AbstractStepper, as_field, check_grid, resolve_time_step, with_faces
from ..schemes import AbstractScheme, time_scheme

__all__ = ["Heat"]


class Heat(AbstractStepper):
    r"""Heat equation $\partial_t u = \nabla\cdot(\kappa(x)\nabla u) + f(x)$ as a time stepper.

    Space: the conservative second-order finite-volume operator of
    :func:`diffphys._stencil.div_kappa_grad` (cell-centred, face diffusivity the mean of its two
    cells). Time: an explicit scheme, stable when ``dt <= limit / ρ`` with
    $\rho = \sum_{\text{axes}} 4\max\kappa / h^2$ and ``limit`` the scheme's negative-real-axis
    interval (Euler 2, SSP-RK3 2.51, RK4 2.79); or an implicit scheme (``"backward_euler"``,
    ``"crank_nicolson"``), stable at any ``dt`` (then ``dt`` must be given): each step is one
    matrix-free CG solve with $I - c\,\Delta t\,\nabla\cdot(\kappa\nabla)$, symmetric positive
    definite, differentiated by the implicit function theorem.

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D` with its boundary conditions.
    - ``kappa``: diffusivity κ(x) >= 0, a scalar or an array of the grid's shape.
    - ``dt``: time step, checked against the stability limit (the error gives the largest stable dt);
      ``None`` (default) takes 0.9 of the largest stable dt.
    - ``source``: f(x), a scalar or an array of the grid's shape; ``None`` (default) for no source
      term (pass an array, even zeros, to differentiate with respect to the source).
    - ``scheme``: ``"euler"``, ``"ssprk3"``, ``"rk4"`` (default), ``"backward_euler"``,
      ``"crank_nicolson"`` or an ``AbstractScheme`` instance (e.g.
      ``BackwardEuler(Newton(linear_solver=LinearSolver(preconditioner="jacobi")))``).

    The state is one array of shape ``grid.shape``.
    """

    grid: AbstractGrid
    kappa: Float[Array, "*grid"]
    source: Float[Array, "*grid"] | None
    dt: float = eqx.field(static=True)
    scheme: AbstractScheme = eqx.field(static=True)
    _faces: tuple | None = None  # diffusion_faces(kappa), filled only inside a time loop (see _with_step_invariants)

    def __init__(self, grid: AbstractGrid, kappa, *, dt: float | None = None, source=None, scheme="rk4"):
        check_grid("Heat", grid)
        self.grid = grid
        self.kappa = as_field("Heat: kappa (diffusivity)", kappa, grid, nonnegative=True)
        self.source = None if source is None else as_field("Heat: source", source, grid)
        self.scheme = time_scheme(scheme)
        self.dt = resolve_time_step(self, dt)
        self._faces = None

    @symmetric_tangent  # affine, symmetric: its adjoint is its tangent map
    def rhs(self, u):
        du = div_kappa_grad(u, self.kappa, self.grid, faces=self._faces)
        return du if self.source is None else du + self.source

    def _with_step_invariants(self):
        return with_faces(self, diffusion_faces(self.kappa, self.grid))

    def jacobian_properties(self, part="rhs"):
        # ∇·(κ∇u) + f is affine in u; its discretisation is symmetric negative semi-definite.
        return frozenset({"affine", "symmetric"}) if part == "rhs" else frozenset()

    def jacobian_diagonal(self, part, state):
        del state
        return div_kappa_grad_diagonal(self.kappa, self.grid) if part == "rhs" else None

    def spectral_bound(self):
        xp = array_module(self.kappa)
        kmax = xp.max(xp.asarray(self.kappa))
        return "diffusion", sum(4.0 * kmax / h**2 for h in self.grid.spacing)

    def _state_shapes(self):
        return (self.grid.shape,)

    def total(self, u) -> Float[Array, ""]:
        r"""$\int_\Omega u\,dx$ (midpoint rule): conserved with periodic/zero-flux boundaries and f = 0."""
        return jnp.sum(u) * self.grid.cell_volume
