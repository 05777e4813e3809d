r"""Small correction networks: a convolutional network that honours the grid's boundary conditions, and an MLP.

A correction network maps one unbatched state to a field of the same shape,
$N_\theta: \mathbb R^{\text{grid}} \to \mathbb R^{\text{grid}}$. :class:`ConvNet` is local and
translation-equivariant (like the model error of a finite-difference scheme); it pads each
convolution according to the grid's boundary conditions, so that it sees the same neighbourhood
the stepper's stencils see. :class:`MLP` is a dense network for flat state vectors (e.g.
Lorenz-96), with no notion of space.

:func:`save_network` writes a trained network with its hyper-parameters (one line of JSON: the
class, the grid's shape and periodic axes, width, depth, kernel size, the activation by its
``jax.nn`` name, the dtype) followed by its weights (:func:`equinox.tree_serialise_leaves`),
atomically; :func:`load_network` rebuilds it from the file alone, with no template.

References: K. Um, R. Brand, Y. Fei, P. Holl, N. Thuerey, "Solver-in-the-loop: learning from differentiable
physics to interact with iterative PDE-solvers", NeurIPS 2020); D. Kochkov et al., "Machine
learning-accelerated computational fluid dynamics", PNAS 118 (2021) e2101784118.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._one_off import drawn
from ..grid import Grid1D, Grid2D, Periodic
from ._checkpoint import read_header, read_leaves, write_with_header

__all__ = ["MLP", "ConvNet", "load_network", "save_network"]

_FORMAT = "diffphys-network"


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_finite_number(name: str, value) -> float:
    """A real scalar (a Python number or a 0-d array), as a float: a hyper-parameter, static when compiled."""
    real = isinstance(value, numbers.Real) or (
        hasattr(value, "dtype") and np.ndim(value) == 0 and np.issubdtype(value.dtype, np.number)
        and not np.issubdtype(value.dtype, np.complexfloating))
    number = float(value) if real and not isinstance(value, (bool, np.bool_)) else math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return number


def _scaled_last_layer(layers: tuple, output_scale) -> tuple:
    last = layers[-1]
    return layers[:-1] + (eqx.tree_at(lambda c: (c.weight, c.bias), last,
                                      (last.weight * output_scale, last.bias * output_scale)),)


def _convolutions(key, ndim: int, channels: tuple[int, ...], kernel_size: int, output_scale) -> tuple:
    keys = jax.random.split(key, len(channels) - 1)
    layers = tuple(eqx.nn.Conv(ndim, c_in, c_out, kernel_size, padding=0, key=k)
                   for c_in, c_out, k in zip(channels[:-1], channels[1:], keys))
    return _scaled_last_layer(layers, output_scale)


def _mlp(key, size: int, width: int, depth: int, activation, output_scale) -> eqx.nn.MLP:
    mlp = eqx.nn.MLP(size, size, width, depth, activation=activation, key=key)
    return eqx.tree_at(lambda m: m.layers, mlp, _scaled_last_layer(tuple(mlp.layers), output_scale))


class ConvNet(eqx.Module):
    r"""A small convolutional correction network on a 1D or 2D grid, padded by the boundary conditions.

    $$N_\theta(u) = W_L * \sigma\big(W_{L-1} * \cdots \sigma(W_1 * \mathcal P(u) + b_1) \cdots\big) + b_L,$$

    where each $*$ is a convolution with a ``kernel_size``-wide stencil and $\mathcal P$ pads every
    layer's input by ``kernel_size // 2`` cells per side: **circular** (wrap-around) padding on a
    periodic axis, so the network is exactly translation-equivariant on a periodic domain;
    **edge** (replicate the boundary cell) padding on a Dirichlet or Neumann axis, a neutral
    choice that neither invents a wall value nor wraps information across the domain. The output
    has the grid's shape (one channel).

    **Arguments:**

    - ``grid``: a :class:`~diffphys.Grid1D` or :class:`~diffphys.Grid2D`.
    - ``key``: a ``jax.random`` key for the initial weights.
    - ``width``: channels of the hidden layers (default 16).
    - ``depth``: number of hidden layers (default 2; ``depth + 1`` convolutions in all).
    - ``kernel_size``: odd stencil width of every convolution (default 5).
    - ``activation``: the nonlinearity σ (default ``jax.nn.gelu``).
    - ``output_scale``: factor applied to the last layer's initial weights and bias (default 1.0;
      a small value starts the correction near zero).
    """

    layers: tuple[eqx.nn.Conv, ...]
    pad_modes: tuple[str, ...] = eqx.field(static=True)
    pad: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, grid, *, key, width=16, depth=2, kernel_size=5, activation=jax.nn.gelu, output_scale=1.0):
        if not isinstance(grid, (Grid1D, Grid2D)):
            raise TypeError(f"ConvNet: grid must be a Grid1D or Grid2D, got {type(grid).__name__}")
        _check_positive_int("ConvNet: width", width)
        _check_positive_int("ConvNet: depth", depth, minimum=0)
        _check_positive_int("ConvNet: kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvNet: kernel_size must be odd (a centred stencil), got {kernel_size}")
        output_scale = _check_finite_number("ConvNet: output_scale", output_scale)
        ndim = grid.ndim
        self.layers = drawn(_convolutions, (ndim, (1,) + (width,) * depth + (1,), kernel_size, output_scale), key)
        self.pad_modes = tuple("wrap" if isinstance(grid.bc[a][0], Periodic) else "edge" for a in range(ndim))
        self.pad = kernel_size // 2
        self.activation = activation
        self.shape = tuple(grid.shape)

    def _padded(self, h: Float[Array, "c *grid"]) -> Float[Array, "c *padded"]:
        for axis, mode in enumerate(self.pad_modes, start=1):
            widths = [(0, 0)] * h.ndim
            widths[axis] = (self.pad, self.pad)
            h = jnp.pad(h, widths, mode=mode)
        return h

    def __call__(self, u: Float[Array, "*grid"]) -> Float[Array, "*grid"]:
        if jnp.shape(u) != self.shape:
            raise ValueError(f"ConvNet: input has shape {jnp.shape(u)}, expected the grid's shape {self.shape}")
        h = u[None]
        for i, layer in enumerate(self.layers):
            h = layer(self._padded(h))
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h[0]


class MLP(eqx.Module):
    r"""A dense correction network for flat state vectors (e.g. Lorenz-96): $N_\theta: \mathbb R^n \to \mathbb R^n$.

    $$N_\theta(u) = W_L\,\sigma\big(W_{L-1} \cdots \sigma(W_1 u + b_1) \cdots\big) + b_L.$$

    **Arguments:** ``size`` (the state length n), ``key``, ``width`` (hidden units, default 64),
    ``depth`` (hidden layers, default 2), ``activation`` (default ``jax.nn.gelu``),
    ``output_scale`` (factor on the last layer's initial weights, default 1.0).
    """

    mlp: eqx.nn.MLP
    size: int = eqx.field(static=True)

    def __init__(self, size, *, key, width=64, depth=2, activation=jax.nn.gelu, output_scale=1.0):
        _check_positive_int("MLP: size", size)
        _check_positive_int("MLP: width", width)
        _check_positive_int("MLP: depth", depth, minimum=0)
        output_scale = _check_finite_number("MLP: output_scale", output_scale)
        self.mlp = drawn(_mlp, (size, width, depth, activation, output_scale), key)
        self.size = size

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " n"]:
        if jnp.shape(u) != (self.size,):
            raise ValueError(f"MLP: input has shape {jnp.shape(u)}, expected ({self.size},)")
        return self.mlp(u)


def _activation_name(fn) -> str:
    for name in sorted(dir(jax.nn)):
        if not name.startswith("_") and getattr(jax.nn, name) is fn:
            return name
    raise ValueError(
        f"save_network: the activation {fn!r} is not a function of jax.nn, and activations are saved by name; build "
        "the network with one of jax.nn's (e.g. jax.nn.gelu), or save its weights with equinox.tree_serialise_leaves "
        "and load them into a network built the same way"
    )


def _hyperparameters(net) -> dict:
    if isinstance(net, ConvNet):
        first = net.layers[0]
        return {"shape": list(net.shape), "periodic": [mode == "wrap" for mode in net.pad_modes],
                "width": first.out_channels if len(net.layers) > 1 else 1, "depth": len(net.layers) - 1,
                "kernel_size": int(first.kernel_size[0]), "activation": _activation_name(net.activation)}
    if isinstance(net, MLP):
        return {"size": net.size, "width": net.mlp.width_size, "depth": net.mlp.depth,
                "activation": _activation_name(net.mlp.activation)}
    raise TypeError(f"save_network: net must be a ConvNet or an MLP, got {type(net).__name__}")


def save_network(path, net: ConvNet | MLP) -> Path:
    """Write ``net`` (a :class:`ConvNet` or :class:`MLP`) with its hyper-parameters to ``path``, atomically.

    The file is one line of JSON (``{"format": "diffphys-network", "class": ..., "hyperparameters":
    {...}, "dtype": ...}``) followed by the weights (:func:`equinox.tree_serialise_leaves`);
    :func:`load_network` rebuilds the network from it alone. The activation must be a function of
    ``jax.nn`` (saved by name).

    **Returns:** the path written.
    """
    hyperparameters = _hyperparameters(net)
    floats = [x for x in jax.tree_util.tree_leaves(net) if eqx.is_inexact_array(x)]
    header = {"format": _FORMAT, "version": 1, "class": type(net).__name__, "hyperparameters": hyperparameters,
              "dtype": str(floats[0].dtype)}
    return write_with_header(path, header, net)


def load_network(path) -> ConvNet | MLP:
    """Rebuild a network written by :func:`save_network` (hyper-parameters and weights; no template needed).

    **Raises:** ``FileNotFoundError``; ``ValueError`` for a file that :func:`save_network` did not
    write (e.g. a training checkpoint) or whose weights do not fit its hyper-parameters.
    """
    header = read_header(path, _FORMAT, "load_network")
    kind, hp = header.get("class"), dict(header.get("hyperparameters") or {})
    key = jax.random.key(0)  # the initial weights are replaced by the saved ones
    try:
        activation = getattr(jax.nn, hp.pop("activation"))
        if kind == "ConvNet":
            shape, periodic = hp.pop("shape"), hp.pop("periodic")
            bc = ["periodic" if p else "neumann" for p in periodic]
            grid = Grid1D(shape[0], bc=bc[0]) if len(shape) == 1 else Grid2D(*shape, bc=tuple(bc))
            like = ConvNet(grid, key=key, activation=activation, **hp)
        elif kind == "MLP":
            like = MLP(hp.pop("size"), key=key, activation=activation, **hp)
        else:
            raise ValueError(f"unknown network class {kind!r}; valid are ['ConvNet', 'MLP']")
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"load_network: {path} has unusable hyper-parameters {header.get('hyperparameters')}: "
                         f"{error}") from None
    dtype = jnp.dtype(header.get("dtype", "float32"))
    like = jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, like)
    return read_leaves(path, like, "load_network")
