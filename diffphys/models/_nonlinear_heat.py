r"""Heat equation with a state-dependent diffusivity κ(x, u) = κ₀(x) exp(β u)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._stencil import div_kappa_grad, div_kappa_grad_diagonal
from .._validate import check_field
from ..grid import AbstractGrid
from ._base import AbstractStepper, as_field, check_grid, resolve_time_step
from ..schemes import AbstractImplicitScheme, AbstractScheme, time_scheme

__all__ = ["NonlinearHeat"]


class NonlinearHeat(AbstractStepper):
    r"""Nonlinear heat equation $\partial_t u = \nabla\cdot\big(\kappa_0(x)\,e^{\beta u}\,\nabla u\big) + f(x)$.

    The diffusivity grows (β > 0) or falls (β < 0) exponentially with the state, as for
    temperature-dependent conductivities (Arrhenius-type laws, linearised around a reference).
    Space: :func:`diffphys._stencil.div_kappa_grad` with the cell diffusivity $\kappa_0 e^{\beta u}$.
    Time: implicit only (the explicit stability limit would depend on the state), so each step is
    a Newton solve with a matrix-free GMRES inner solve, differentiated with respect to u, κ₀, β
    and f by the implicit function theorem.

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``kappa``: κ₀(x) >= 0, a scalar or an array of the grid's shape.
    - ``beta``: β, a scalar (array) exponent.
    - ``dt``: time step (required).
    - ``source``: f(x) or ``None``.
    - ``scheme``: ``"backward_euler"`` (default), ``"crank_nicolson"`` or an implicit scheme instance.
    """

    grid: AbstractGrid
    kappa: Float[Array, "*grid"]
    beta: Float[Array, ""]
    source: Float[Array, "*grid"] | None
    dt: float = eqx.field(static=True)
    scheme: AbstractScheme = eqx.field(static=True)

    def __init__(self, grid: AbstractGrid, kappa, *, beta=0.0, dt: float | None = None, source=None, scheme="backward_euler"):
        check_grid("NonlinearHeat", grid)
        self.grid = grid
        self.kappa = as_field("NonlinearHeat: kappa (diffusivity κ₀)", kappa, grid, nonnegative=True)
        beta = jnp.asarray(beta, dtype=self.kappa.dtype)
        if beta.shape != ():
            raise ValueError(f"NonlinearHeat: beta must be a scalar, got shape {beta.shape}")
        check_field("NonlinearHeat: beta (the exponent of κ₀ e^{βu})", beta)
        self.beta = beta
        self.source = None if source is None else as_field("NonlinearHeat: source", source, grid)
        self.scheme = time_scheme(scheme)
        if not isinstance(self.scheme, AbstractImplicitScheme):
            raise ValueError(
                f"NonlinearHeat: scheme {self.scheme.name!r} is explicit, whose stability limit would depend on "
                "the state; use 'backward_euler' or 'crank_nicolson'"
            )
        self.dt = resolve_time_step(self, dt)

    def diffusivity(self, u) -> Float[Array, "*grid"]:
        r"""$\kappa(x, u) = \kappa_0(x)\,e^{\beta u}$."""
        return self.kappa * jnp.exp(self.beta * u)

    def rhs(self, u):
        du = div_kappa_grad(u, self.diffusivity(u), self.grid)
        return du if self.source is None else du + self.source

    def jacobian_diagonal(self, part, state):
        # The frozen-coefficient part (κ(u) held fixed): a good Jacobi preconditioner.
        return div_kappa_grad_diagonal(self.diffusivity(state), self.grid) if part == "rhs" else None

    def spectral_bound(self):
        return "diffusion", jnp.inf

    def _state_shapes(self):
        return (self.grid.shape,)

    def total(self, u) -> Float[Array, ""]:
        r"""$\int_\Omega u\,dx$: conserved with periodic/zero-flux boundaries and f = 0."""
        return jnp.sum(u) * self.grid.cell_volume
