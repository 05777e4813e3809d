"""Grids, boundary conditions and their ghost cells."""

import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys._stencil import pad


def test_grid1d_coordinates_and_spacing():
    g = dp.Grid1D(8, 2.0)
    assert g.shape == (8,) and g.dx == 0.25 and g.ndim == 1
    np.testing.assert_allclose(g.x, (np.arange(8) + 0.5) * 0.25)
    assert g.cell_volume == 0.25


def test_grid2d_coordinates_ij_indexing():
    g = dp.Grid2D(4, 6, lengths=(1.0, 3.0))
    X, Y = g.coordinates
    assert X.shape == Y.shape == (4, 6)
    np.testing.assert_allclose(X[:, 0], (np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(Y[0, :], (np.arange(6) + 0.5) * 0.5)
    assert g.spacing == (0.25, 0.5) and g.cell_volume == 0.125


def test_boundary_conditions_per_side_and_by_name():
    g = dp.Grid2D(4, 4, bc=("periodic", (dp.Dirichlet(1.0), "neumann")))
    (xl, xr), (yl, yr) = g.bc
    assert isinstance(xl, dp.Periodic) and isinstance(xr, dp.Periodic)
    assert isinstance(yl, dp.Dirichlet) and yl.value == 1.0
    assert isinstance(yr, dp.Neumann) and yr.gradient == 0.0


@pytest.mark.parametrize("bc", [("dirichlet", dp.Neumann(0.5)), (dp.Dirichlet(-2.0), dp.Dirichlet(3.0)), "periodic"])
def test_ghost_cells_reproduce_linear_functions(bc):
    """Ghost values of a linear profile satisfy the boundary condition to round-off (3 ghost layers)."""
    g = dp.Grid1D(10, 1.0, bc=bc)
    low, high = g.bc[0]
    x = np.arange(-3, 13) * g.dx + 0.5 * g.dx
    if isinstance(low, dp.Periodic):
        u = jnp.sin(2 * np.pi * g.x)
        np.testing.assert_allclose(pad(u, g, 0, 3), jnp.sin(2 * np.pi * x), atol=1e-14)
        return
    # A linear function consistent with both conditions' data where possible: check each side alone.
    for side, cond in ((0, low), (1, high)):
        slope = 0.7
        if isinstance(cond, dp.Dirichlet):
            face = 0.0 if side == 0 else 1.0
            f = lambda s: cond.value + slope * (s - face)
        else:
            outward = -1.0 if side == 0 else 1.0
            f = lambda s: 0.3 + outward * cond.gradient * s
        padded = np.asarray(pad(jnp.asarray(f(g.x)), g, 0, 3))
        ghosts = slice(0, 3) if side == 0 else slice(13, 16)
        np.testing.assert_allclose(padded[ghosts], f(x[ghosts]), atol=1e-13)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=8, bc="robin"), "unknown boundary condition 'robin'"),
        (dict(n=8, bc=("periodic", "dirichlet")), "periodic on both sides"),
        (dict(n=1), "number of cells must be an integer >= 2, got 1"),
        (dict(n=8.0), "number of cells must be an integer"),
        (dict(n=8, length=-1.0), "length must be a finite positive number, got -1.0"),
        (dict(n=8, length=float("nan")), "length must be a finite positive number"),
        (dict(n=8, bc=dp.Dirichlet(float("inf"))), "Dirichlet.value must be finite"),
        (dict(n=8, bc=("dirichlet", "neumann", "neumann")), "one condition or a pair"),
    ],
)
def test_grid1d_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dp.Grid1D(**kwargs)


def test_grid2d_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths must be a pair"):
        dp.Grid2D(4, 4, lengths=1.0)
    with pytest.raises(ValueError, match="axis y: a periodic boundary"):
        dp.Grid2D(4, 4, bc=("periodic", (dp.Periodic(), "neumann")))
