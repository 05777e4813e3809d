r"""Observation operators: linear maps from a field on a grid to sensor readings, with exact transposes.

Every operator here is *sparse*: observation $i$ is a weighted sum of a few cells,

$$y_i = (H u)_i = \sum_k w_{ik}\, u_{j_{ik}},\qquad (H^\top y)_j = \sum_{i,k:\ j_{ik} = j} w_{ik}\, y_i,$$

so applying $H$ is one gather and applying $H^\top$ one scatter-add: matrix-free, differentiable
and exactly transposed (the dot-product test holds to round-off). The weights depend only on the
sensor geometry and are computed once, at construction, from concrete coordinates.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._validate import device_array
from ..grid import AbstractGrid, Grid1D, Grid2D, Periodic

__all__ = [
    "AbstractObservationOperator",
    "AbstractSparseObservation",
    "FootprintAverage",
    "GridMask",
    "PointSensors",
    "subsample",
]

_AXES = ("x", "y")


class AbstractObservationOperator(eqx.Module):
    r"""A linear map $H$ from one field on a grid (shape ``grid.shape``) to ``size`` observations.

    Subclasses implement ``__call__`` ($u \mapsto Hu$), ``transpose`` ($y \mapsto H^\top y$),
    ``size`` and ``locations`` (one point per observation, for plots and files). Check a new
    operator with ``dp.check.adjoint_test(H, H.transpose, u_like, y_like)``.
    """

    grid: eqx.AbstractVar[AbstractGrid]

    @abc.abstractmethod
    def __call__(self, u: Float[Array, "*grid"]) -> Float[Array, " m"]:
        """The observations $Hu$ of the field ``u``."""

    @abc.abstractmethod
    def transpose(self, y: Float[Array, " m"]) -> Float[Array, "*grid"]:
        """The transpose (adjoint) $H^\\top y$: a field on the grid."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """The number of observations ``m``."""

    @property
    @abc.abstractmethod
    def locations(self) -> np.ndarray:
        """Where each observation is, shape ``(m, grid.ndim)`` (a footprint's centre, a cell's centre)."""

    @property
    def kind(self) -> str:
        """A short name of the kind of sensor (``"point"``, ``"footprint"``, ``"cell"``), for files."""
        return type(self).__name__


class AbstractSparseObservation(AbstractObservationOperator):
    r"""An operator whose observation $i$ is $\sum_k w_{ik} u_{j_{ik}}$ (a few cells each).

    ``indices`` (flat, C-order indices into the field, shape ``(m, k)``) and ``weights`` (same shape;
    unused slots have weight 0) define it; ``__call__`` is a gather and ``transpose`` a scatter-add.
    """

    indices: eqx.AbstractVar[Int[Array, "m k"]]
    weights: eqx.AbstractVar[Float[Array, "m k"]]

    def __call__(self, u):
        u = jnp.asarray(u)
        _check_field_shape(type(self).__name__, u, self.grid)
        return jnp.sum(jnp.ravel(u)[self.indices] * self.weights, axis=-1)

    def transpose(self, y):
        y = jnp.asarray(y)
        if y.shape != (self.size,):
            raise ValueError(
                f"{type(self).__name__}.transpose: observations have shape {y.shape}, expected ({self.size},) "
                "(one value per sensor)"
            )
        n_cells = int(np.prod(self.grid.shape))
        dtype = jnp.result_type(y.dtype, self.weights.dtype)
        flat = jnp.zeros(n_cells, dtype).at[self.indices].add(self.weights * y[:, None])
        return flat.reshape(self.grid.shape)

    @property
    def size(self) -> int:
        return self.indices.shape[0]


def _check_field_shape(name: str, u, grid: AbstractGrid) -> None:
    if u.shape != grid.shape:
        hint = "; for a tuple state (wave) observe one of its fields" if u.ndim == 0 else ""
        raise ValueError(f"{name}: the field has shape {u.shape}, expected the grid's shape {grid.shape}{hint}")


def _check_grid(name: str, grid) -> None:
    if not isinstance(grid, (Grid1D, Grid2D)):
        raise TypeError(f"{name}: grid must be a Grid1D or Grid2D, got {type(grid).__name__}")


def _lengths(grid: AbstractGrid) -> tuple[float, ...]:
    return (grid.length,) if grid.ndim == 1 else grid.lengths


def _periodic(grid: AbstractGrid, axis: int) -> bool:
    return isinstance(grid.bc[axis][0], Periodic)


def _as_points(name: str, coordinates, grid: AbstractGrid, what: str = "sensor") -> np.ndarray:
    """Concrete coordinates as an ``(m, ndim)`` float array, each inside the closed domain."""
    try:
        pts = np.asarray(coordinates, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} coordinates must be numbers, got {coordinates!r}") from None
    if grid.ndim == 1 and pts.ndim <= 1:
        pts = pts.reshape(-1, 1)
    shape_hint = "(m,) or (m, 1)" if grid.ndim == 1 else "(m, 2) (one (x, y) pair per sensor)"
    if pts.ndim != 2 or pts.shape[1] != grid.ndim or pts.shape[0] == 0:
        raise ValueError(
            f"{name}: {what} coordinates have shape {np.shape(coordinates)}; on a {grid.ndim}D grid give a "
            f"non-empty array of shape {shape_hint}"
        )
    for axis, length in enumerate(_lengths(grid)):
        c = pts[:, axis]
        bad = np.flatnonzero(~(np.isfinite(c) & (c >= 0.0) & (c <= length)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}: {what} {i} at {_AXES[axis]}={float(c[i])!r} lies outside the domain; "
                f"valid coordinates are 0 <= {_AXES[axis]} <= {length:g}"
            )
    return pts


def _axis_interpolation(c: np.ndarray, n: int, h: float, periodic: bool):
    """Linear-interpolation neighbours and weights along one axis for coordinates ``c``.

    Cell centres sit at ``(i + 1/2) h``. Periodic axes wrap. Otherwise a point between a boundary
    and the first (last) centre is *extrapolated* linearly from the two nearest cells, so that
    interpolation stays exact on linear fields up to the boundary.
    """
    s = c / h - 0.5
    if periodic:
        i0 = np.floor(s).astype(int)
        t = s - i0
        return np.mod(i0, n), np.mod(i0 + 1, n), 1.0 - t, t
    i0 = np.clip(np.floor(s).astype(int), 0, n - 2)
    t = s - i0
    return i0, i0 + 1, 1.0 - t, t


def _flat_index(grid: AbstractGrid, *axis_indices) -> np.ndarray:
    return np.ravel_multi_index(axis_indices, grid.shape) if grid.ndim == 2 else axis_indices[0]


class PointSensors(AbstractSparseObservation):
    r"""Point sensors at arbitrary (off-grid) positions: linear interpolation in 1D, bilinear in 2D.

    $$y_i = \sum_{\text{corners } c} w_c(\mathbf x_i)\, u_c,\qquad
      w = (1-t)\ \text{or}\ t\ \text{per axis},\ t = (x_i - x_{j})/h,$$

    where $x_j$ is the cell centre at or left of $x_i$. Exact on linear (and in 2D bilinear)
    fields. On a periodic axis points wrap around; on other axes a point between a wall and the
    first cell centre is linearly extrapolated from the two nearest cells (still exact on linear
    fields). Sensor positions are fixed at construction (not differentiable).

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``coordinates``: shape ``(m,)`` in 1D, ``(m, 2)`` in 2D; each inside the domain
      ``0 <= x <= L`` (``ValueError`` naming the sensor otherwise).
    """

    grid: AbstractGrid
    indices: Int[Array, "m k"]
    weights: Float[Array, "m k"]
    coordinates: Float[Array, "m ndim"]

    def __init__(self, grid: AbstractGrid, coordinates: Float[ArrayLike, " m *ndim"]):
        _check_grid("PointSensors", grid)
        pts = _as_points("PointSensors", coordinates, grid)
        per_axis = [
            _axis_interpolation(pts[:, a], n, h, _periodic(grid, a))
            for a, (n, h) in enumerate(zip(grid.shape, grid.spacing))
        ]
        if grid.ndim == 1:
            i0, i1, w0, w1 = per_axis[0]
            idx, w = np.stack([i0, i1], 1), np.stack([w0, w1], 1)
        else:
            (i0, i1, a0, a1), (j0, j1, b0, b1) = per_axis
            idx = np.stack([_flat_index(grid, i, j) for i, j in ((i0, j0), (i0, j1), (i1, j0), (i1, j1))], 1)
            w = np.stack([a0 * b0, a0 * b1, a1 * b0, a1 * b1], 1)
        self.grid = grid
        self.indices = jnp.asarray(idx, dtype=int)
        self.weights = jnp.asarray(w, dtype=float)
        self.coordinates = jnp.asarray(pts, dtype=float)

    @property
    def locations(self) -> np.ndarray:
        return np.asarray(self.coordinates)

    @property
    def kind(self) -> str:
        return "point"


class FootprintAverage(AbstractSparseObservation):
    r"""Spatial averages over a footprint: the mean of the cells whose centres lie within ``radius``.

    $$y_i = \frac{1}{|D_i|}\sum_{j \in D_i} u_j,\qquad D_i = \{\,j : |\mathbf x_j - \mathbf c_i| \le r\,\},$$

    a midpoint-rule approximation of $\frac{1}{|D|}\int_D u$ over a disc (2D) or interval (1D)
    of radius $r$. Distances wrap on periodic axes; on other axes the footprint is cut by the walls.

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``centres``: footprint centres, shape ``(m,)`` in 1D or ``(m, 2)`` in 2D, inside the domain.
    - ``radius``: ``r > 0``; every footprint must contain at least one cell centre (``r >= h/2``
      always does).
    """

    grid: AbstractGrid
    indices: Int[Array, "m k"]
    weights: Float[Array, "m k"]
    centres: Float[Array, "m ndim"]
    radius: float = eqx.field(static=True)

    def __init__(self, grid: AbstractGrid, centres: Float[ArrayLike, " m *ndim"], radius: float):
        _check_grid("FootprintAverage", grid)
        pts = _as_points("FootprintAverage", centres, grid, what="footprint centre")
        if isinstance(radius, bool) or not (isinstance(radius, (int, float, np.number)) and np.isfinite(radius) and radius > 0):
            raise ValueError(f"FootprintAverage: radius must be a finite number > 0, got {radius!r}")
        cells = np.stack([np.asarray(c).ravel() for c in grid.coordinates], 1)  # (n_cells, ndim)
        offsets = pts[:, None, :] - cells[None, :, :]
        for a, length in enumerate(_lengths(grid)):
            if _periodic(grid, a):
                offsets[..., a] -= length * np.round(offsets[..., a] / length)
        inside = np.sum(offsets**2, axis=-1) <= radius**2 * (1.0 + 1e-12)
        counts = inside.sum(axis=1)
        if (counts == 0).any():
            i = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(
                f"FootprintAverage: footprint {i} (centre {tuple(pts[i])}, radius {radius:g}) contains no cell "
                f"centre; use radius >= {0.5 * max(grid.spacing):g} (half a cell)"
            )
        k = int(counts.max())
        # Pad every row to k entries; padding points at cell 0 with weight 0.
        order = np.argsort(~inside, axis=1, kind="stable")[:, :k]
        valid = np.take_along_axis(inside, order, axis=1)
        self.grid = grid
        self.indices = device_array(np.where(valid, order, 0))
        self.weights = device_array(np.where(valid, 1.0 / counts[:, None], 0.0))
        self.centres = device_array(pts)
        self.radius = float(radius)

    @property
    def locations(self) -> np.ndarray:
        return np.asarray(self.centres)

    @property
    def kind(self) -> str:
        return "footprint"


class GridMask(AbstractSparseObservation):
    r"""Observe the cells where a boolean mask is true: $y = (u_j)_{j:\ \text{mask}_j}$ in C order.

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``mask``: a boolean array of the grid's shape with at least one true cell.

    See :func:`subsample` for every k-th cell.
    """

    grid: AbstractGrid
    indices: Int[Array, "m 1"]
    weights: Float[Array, "m 1"]

    def __init__(self, grid: AbstractGrid, mask: ArrayLike):
        _check_grid("GridMask", grid)
        mask = np.asarray(mask)
        if mask.shape != grid.shape or mask.dtype != bool:
            raise ValueError(
                f"GridMask: mask must be a boolean array of the grid's shape {grid.shape}, "
                f"got {mask.dtype} of shape {mask.shape}"
            )
        if not mask.any():
            raise ValueError("GridMask: the mask observes no cell; set at least one entry to True")
        self.grid = grid
        self.indices = device_array(np.flatnonzero(mask.ravel())[:, None])
        self.weights = device_array(np.ones((int(mask.sum()), 1)))

    @property
    def locations(self) -> np.ndarray:
        flat = np.asarray(self.indices)[:, 0]
        return np.stack([np.asarray(c).ravel()[flat] for c in self.grid.coordinates], 1)

    @property
    def kind(self) -> str:
        return "cell"


def subsample(grid: AbstractGrid, stride: int | Sequence[int], offset: int | Sequence[int] = 0) -> GridMask:
    """A :class:`GridMask` observing every ``stride``-th cell along each axis, starting at ``offset``.

    **Arguments:** ``grid``; ``stride`` (>= 1, one per axis or one for all); ``offset`` (``0 <= offset
    < stride``, likewise).

    **Returns:** a :class:`GridMask`.
    """
    _check_grid("subsample", grid)
    strides = _per_axis("subsample: stride", stride, grid.ndim)
    offsets = _per_axis("subsample: offset", offset, grid.ndim, minimum=0)
    for a, (s, o) in enumerate(zip(strides, offsets)):
        if o >= s or o >= grid.shape[a]:
            raise ValueError(
                f"subsample: offset {o} along {_AXES[a]} must be smaller than the stride {s} and the "
                f"number of cells {grid.shape[a]}"
            )
    mask = np.zeros(grid.shape, bool)
    mask[tuple(slice(o, None, s) for s, o in zip(strides, offsets))] = True
    return GridMask(grid, mask)


def _per_axis(name: str, value, ndim: int, minimum: int = 1) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * ndim
    if len(values) != ndim or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in values
    ):
        raise ValueError(f"{name} must be an integer >= {minimum} (or one per axis, {ndim} in all), got {value!r}")
    return tuple(int(v) for v in values)
