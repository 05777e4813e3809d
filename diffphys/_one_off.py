"""Random draws for one-off use (a network's initial weights, the directions of a derivative check), built by
one compiled program that is optimised for compile time, not run time.

Such a program runs once, and its run time is negligible; its compile time was not: LLVM optimising the
threefry hash of ``jax.random`` took 0.2-1.3 s per draw of a new shape on a 2-core CPU (one 16x16x5 uniform
draw: 1.3 s), against about 0.1 s at XLA's LLVM optimisation level 0. Drawn op by op, every new shape was a
program of its own: a three-layer ``ConvNet`` compiled 16 programs and took ~5 s before its first use, and a
dot-product test of a state and two parameter fields compiled about 0.25-0.5 s per array. A second call with
the same shapes reuses the program.

The values are ``jax.random``'s for the same keys: its integer hash is exact, and the float transforms
(uniform into [-lim, lim), the normal's inverse error function) may round differently in the last bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax

__all__ = ["drawn"]


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options={"xla_backend_optimization_level": 0})
def _arrays(build: Callable, arguments: tuple, key):
    return eqx.filter(build(key, *arguments), eqx.is_array)


def drawn(build: Callable, arguments: tuple, key):
    """``build(key, *arguments)``, a pytree (e.g. an equinox module) whose arrays are random draws, with its arrays
    computed by one program compiled for compile speed. ``build`` and ``arguments`` must be hashable (they are
    static: a module-level function and a tuple of ints, shapes, dtypes, tree structures)."""
    structure = eqx.filter(eqx.filter_eval_shape(build, key, *arguments),
                           lambda x: not isinstance(x, jax.ShapeDtypeStruct))
    return eqx.combine(_arrays(build, arguments, key), structure)
