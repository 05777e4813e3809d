r"""Error covariances as operators: a diagonal observation-error covariance R and a diffusion-based B.

Neither is ever stored as a dense matrix. Variational assimilation uses them through square roots:
$R^{-1/2}$ whitens observation misfits, and the control-variable transform
$x_0 = x_b + B^{1/2} v$ makes the background term $\tfrac12\|v\|^2$.

References: A. T. Weaver, P. Courtier, "Correlation modelling on the sphere using a generalized
diffusion equation", Q. J. R. Meteorol. Soc. 127 (2001) 1815-1846 (diffusion operators as
correlation models, normalisation); A. C. Lorenc, "Development of an operational variational
assimilation scheme", J. Meteorol. Soc. Japan 75 (1997) 339-346 (control-variable transform).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.fft as jax_fft
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import array_module, check_field
from ..grid import AbstractGrid, Grid1D, Grid2D, Periodic

__all__ = ["AbstractCovariance", "DiagonalR", "DiffusionB"]


class AbstractCovariance(eqx.Module):
    r"""A symmetric positive (semi-)definite covariance $C = C^{1/2} C^{\top/2}$, matrix-free.

    Subclasses implement ``sqrt`` ($v \mapsto C^{1/2} v$) and ``sqrt_transpose``
    ($w \mapsto C^{\top/2} w$); ``__call__`` applies $C$ itself.
    """

    @abc.abstractmethod
    def sqrt(self, v):
        r"""$C^{1/2} v$."""

    @abc.abstractmethod
    def sqrt_transpose(self, w):
        r"""$C^{\top/2} w$, the transpose of :meth:`sqrt`."""

    def __call__(self, w):
        r"""$C w = C^{1/2}(C^{\top/2} w)$."""
        return self.sqrt(self.sqrt_transpose(w))

    @property
    def variance(self) -> Array:
        """The diagonal of $C$ (each point's variance); subclasses that know it exactly provide it."""
        raise NotImplementedError(f"{type(self).__name__} does not provide its variance (the diagonal of C)")

    def sample(self, key: jax.Array, like) -> Array:
        r"""A draw from $\mathcal N(0, C)$: $C^{1/2}\xi$ with $\xi$ standard normal shaped like ``like``."""
        xi = jax.random.normal(key, jnp.shape(like), jnp.result_type(float))
        return self.sqrt(xi)


class DiagonalR(AbstractCovariance):
    r"""Diagonal observation-error covariance $R = \operatorname{diag}(\sigma_i^2)$.

    $$R^{1/2} e = \sigma \odot e,\qquad R^{-1/2} d = d / \sigma \quad\text{(whitening)}.$$

    **Arguments:**

    - ``sigma``: the standard deviation of each observation's error, a positive scalar (the same for
      all) or an array with one value per observation (per sensor: broadcast with
      ``schedule.per_observation(sigma)``). Zero, negative or non-finite values are refused.
    """

    sigma: Float[Array, "*N"]

    def __init__(self, sigma: float | Float[ArrayLike, " N"]):
        arr = jnp.asarray(sigma, dtype=jnp.result_type(float))
        if arr.ndim > 1:
            raise ValueError(f"DiagonalR: sigma must be a scalar or a 1D array (one per observation), got shape {arr.shape}")
        check_field("DiagonalR: sigma (observation error standard deviation)", arr, positive=True)
        self.sigma = arr

    def sqrt(self, v):
        return self.sigma * v

    def sqrt_transpose(self, w):
        return self.sigma * w

    @property
    def variance(self) -> Float[Array, "*N"]:
        """$\\sigma^2$."""
        return self.sigma**2

    def whiten(self, d):
        r"""$R^{-1/2} d = d / \sigma$: misfits in units of their standard deviation."""
        return d / self.sigma


def _symbol(n: int, h: float, alpha: float, steps: int, periodic: bool) -> np.ndarray:
    r"""The eigenvalues $s_k = (1 - 4\alpha/h^2\,\sin^2\theta_k)^M$ of $G = (I + \alpha\Delta_h)^M$ on one axis.

    $\Delta_h$ is the 3-point Laplacian, periodic ($\theta_k = \pi k/n$, Fourier modes; only the
    $\lfloor n/2\rfloor + 1$ of a real FFT are returned) or with zero-flux walls (mirror ghost cells,
    $\theta_k = \pi k/(2n)$, the DCT-II modes). $\alpha/h^2 \le 1/4$, so $0 \le s_k \le 1$.
    """
    k = np.arange(n // 2 + 1 if periodic else n)
    theta = np.pi * k / n if periodic else np.pi * k / (2 * n)
    return (1.0 - 4.0 * (alpha / h**2) * np.sin(theta) ** 2) ** steps


def _diagonal_of_square(n: int, symbol: np.ndarray, periodic: bool) -> np.ndarray:
    r"""$\operatorname{diag}(G G^\top)$ on one axis, exactly, from $G$'s eigenvalues (:func:`_symbol`).

    $(GG^\top)_{ii} = \sum_k \phi_k(i)^2 s_k^2$ with orthonormal eigenvectors $\phi_k$: constant
    $\frac1n\sum_k s_k^2$ for Fourier modes; for DCT-II modes $\phi_0^2 = 1/n$,
    $\phi_k(i)^2 = \frac2n\cos^2(\pi k (i+\frac12)/n)$.
    """
    if periodic:  # the full spectrum from the rfft half: s_k = s_{n-k}
        full = np.concatenate([symbol, symbol[1:(n + 1) // 2][::-1]])
        return np.full(n, np.sum(full**2) / n)
    s2 = symbol**2
    k = np.arange(n)
    out = np.empty(n)
    centres = np.arange(n) + 0.5
    for start in range(0, n, 512):  # rows in blocks: never an n x n array for large n
        i = centres[start:start + 512, None]
        phi2 = (2.0 / n) * np.cos(np.pi * k[None, 1:] * i / n) ** 2
        out[start:start + 512] = s2[0] / n + phi2 @ s2[1:]
    return out


def _along(u, axis: int, symbol, periodic: bool):
    """Multiply ``u`` by a symbol in the eigenbasis of one axis: real FFT (periodic) or orthonormal DCT-II."""
    shape = [1] * u.ndim
    shape[axis] = -1
    symbol = jnp.reshape(symbol, shape)
    if periodic:
        return jnp.fft.irfft(symbol * jnp.fft.rfft(u, axis=axis), n=u.shape[axis], axis=axis)
    return jax_fft.idct(symbol * jax_fft.dct(u, type=2, axis=axis, norm="ortho"), type=2, axis=axis, norm="ortho")


class DiffusionB(AbstractCovariance):
    r"""Background-error covariance from a diffusion operator: Gaussian-like correlations, length scale L.

    $$B^{1/2} = \Sigma\, D^{-1/2}\, G,\qquad G = \prod_{\text{axes } a}\big(I + \alpha_a \Delta_a\big)^{M_a},
      \qquad B = \Sigma D^{-1/2} G G^\top D^{-1/2} \Sigma,$$

    $M_a = \lceil L_a^2/h_a^2\rceil$ explicit steps of the 3-point diffusion operator with
    $\alpha_a = L_a^2/(4M_a)$ (so $\alpha_a/h_a^2 \le 1/4$: $G$ is symmetric positive semi-definite),
    i.e. diffusion for a time $L^2/4$ along each axis. $GG^\top$ diffuses for $L^2/2$, whose
    kernel is the Gaussian $\exp(-r^2/2L^2)$ of the continuum limit: **the correlation between two
    points at distance r is about** $\exp(-r^2/(2L^2))$ (exactly a binomial kernel on the grid).
    $D = \operatorname{diag}(GG^\top)$ is computed exactly at construction (spectrally), so
    **the variance is** $\sigma^2$ **at every cell**, next to walls too. Periodic axes wrap;
    non-periodic axes use zero-flux (reflecting) walls, which raise correlations along a wall.

    $G$ is applied in its eigenbasis, not by $M_a$ sweeps: a real FFT along periodic axes and an
    orthonormal DCT-II along walled ones (the reflecting 3-point Laplacian's eigenvectors), times the
    eigenvalues $(1 - 4\alpha_a/h_a^2\,\sin^2\theta_k)^{M_a}$. So one application costs
    $O(N\log N)$ whatever L is (the sweeps cost $O(N L^2/h^2)$); the operator is the same to round-off
    (tested against the explicit sweeps). $G$ is symmetric, so $B^{\top/2} w = G\, D^{-1/2}\Sigma w$.

    **Arguments:**

    - ``grid``: the :class:`~diffphys.Grid1D`/:class:`~diffphys.Grid2D` of the field (its
      boundary conditions decide periodic or reflecting axes).
    - ``sigma``: the standard deviation σ > 0, a scalar or a field of the grid's shape.
    - ``length_scale``: L > 0, one value or one per axis (same units as the grid's lengths).

    Reference: Weaver & Courtier (2001), see the module docstring.
    """

    grid: AbstractGrid
    sigma: Float[Array, "*grid"]
    length_scale: tuple[float, ...] = eqx.field(static=True)
    steps: tuple[int, ...] = eqx.field(static=True)
    alphas: tuple[float, ...] = eqx.field(static=True)
    inverse_sqrt_diagonal: Float[Array, "*grid"]

    def __init__(self, grid: AbstractGrid, sigma, length_scale: float | Sequence[float]):
        if not isinstance(grid, (Grid1D, Grid2D)):
            raise TypeError(f"DiffusionB: grid must be a Grid1D or Grid2D, got {type(grid).__name__}")
        scales = tuple(length_scale) if isinstance(length_scale, Sequence) else (length_scale,) * grid.ndim
        if len(scales) != grid.ndim or not all(
            isinstance(s, (int, float, np.number)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
            for s in scales
        ):
            raise ValueError(
                f"DiffusionB: length_scale must be a finite number > 0 (or one per axis, {grid.ndim} in all), "
                f"got {length_scale!r}"
            )
        xp = array_module(sigma)  # NumPy for a concrete sigma: no compiled program at construction
        sig = xp.asarray(sigma, dtype=jnp.result_type(float))
        if sig.shape not in ((), grid.shape):
            raise ValueError(f"DiffusionB: sigma has shape {sig.shape}; give a scalar or a field of shape {grid.shape}")
        check_field("DiffusionB: sigma (background error standard deviation)", sig, positive=True)
        self.grid = grid
        self.sigma = jnp.asarray(xp.broadcast_to(sig, grid.shape), dtype=jnp.result_type(float))
        self.length_scale = tuple(float(s) for s in scales)
        self.steps = tuple(max(1, math.ceil(s**2 / h**2)) for s, h in zip(scales, grid.spacing))
        self.alphas = tuple(s**2 / (4.0 * m) for s, m in zip(scales, self.steps))
        diagonal = np.ones(())
        for a, symbol in enumerate(self._symbols()):
            d = _diagonal_of_square(grid.shape[a], symbol, self._periodic(a))
            diagonal = diagonal[..., None] * d if a else d
        self.inverse_sqrt_diagonal = jnp.asarray(1.0 / np.sqrt(diagonal), dtype=jnp.result_type(float))

    def _periodic(self, axis: int) -> bool:
        return isinstance(self.grid.bc[axis][0], Periodic)

    def _symbols(self) -> list[np.ndarray]:
        """G's eigenvalues along each axis: fixed by the static settings (constants, not parameters)."""
        return [_symbol(n, h, self.alphas[a], self.steps[a], self._periodic(a))
                for a, (n, h) in enumerate(zip(self.grid.shape, self.grid.spacing))]

    @eqx.filter_jit
    def _smooth(self, u):
        """Apply the symmetric diffusion filter G, axis by axis in its eigenbasis (one compiled program)."""
        for a, symbol in enumerate(self._symbols()):
            u = _along(u, a, jnp.asarray(symbol, dtype=u.dtype), self._periodic(a))
        return u

    def _check(self, name: str, u):
        if jnp.shape(u) != self.grid.shape:
            raise ValueError(f"DiffusionB.{name}: input has shape {jnp.shape(u)}, expected the grid's shape {self.grid.shape}")

    def sqrt(self, v: Float[Array, "*grid"]) -> Float[Array, "*grid"]:
        r"""$B^{1/2} v = \sigma\, D^{-1/2} G v$."""
        self._check("sqrt", v)
        return self.sigma * self.inverse_sqrt_diagonal * self._smooth(jnp.asarray(v))

    def sqrt_transpose(self, w: Float[Array, "*grid"]) -> Float[Array, "*grid"]:
        r"""$B^{\top/2} w = G\, D^{-1/2} \sigma w$ (G is symmetric)."""
        self._check("sqrt_transpose", w)
        return self._smooth(self.sigma * self.inverse_sqrt_diagonal * jnp.asarray(w))

    @property
    def variance(self) -> Float[Array, "*grid"]:
        """The variance at each cell, σ² (exact)."""
        return self.sigma**2


DENSE_SQRT_MAX_SIZE = 256  # states up to this size may apply B through its dense square root


class DenseSqrtCovariance(AbstractCovariance):
    r"""A covariance applied through its dense square root $S$ ($S v$, $S^\top w$): the same $B$ to round-off.

    On a small state one matrix–vector product costs less than a matrix-free $B^{1/2}$ (two FFTs
    and their transposes for :class:`DiffusionB`) and compiles to one kernel, which counts in the
    tangent-linear and adjoint runs of every CG iteration. Made by :func:`dense_square_root`.
    """

    S: Float[Array, "n n"]

    def sqrt(self, v):
        return jnp.reshape(self.S @ jnp.reshape(v, -1), jnp.shape(v))

    def sqrt_transpose(self, w):
        return jnp.reshape(self.S.T @ jnp.reshape(w, -1), jnp.shape(w))


def dense_square_root(B: AbstractCovariance, like, max_size: int = DENSE_SQRT_MAX_SIZE) -> AbstractCovariance:
    """``B`` as a :class:`DenseSqrtCovariance` (its square root formed column by column, ``B.sqrt`` of the
    unit vectors) on states shaped like ``like`` of at most ``max_size`` values; else ``B`` itself."""
    shape, n = jnp.shape(like), int(np.prod(jnp.shape(like)))
    if n > max_size or isinstance(B, DenseSqrtCovariance):
        return B
    columns = jax.vmap(lambda e: jnp.reshape(B.sqrt(jnp.reshape(e, shape)), -1))(jnp.eye(n, dtype=jnp.result_type(like)))
    return DenseSqrtCovariance(columns.T)
