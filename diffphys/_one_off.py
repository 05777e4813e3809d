"""Random draws for one-off use (a network's initial weights, the directions of a derivative check), built by
one compiled program that is optimised for compile time, not run time.

Such a program runs once, and its run time is negligible; its compile time was not: LLVM optimising the
threefry hash of ``jax.random`` took 0.2-1.3 s per draw of a new shape on a 2-core CPU (one 16x16x5 uniform
draw: 1.3 s), against about 0.1 s at XLA's LLVM optimisation level 0. Drawn op by op, every new shape was a
program of its own: a three-layer ``ConvNet`` compiled 16 programs and took ~5 s before its first use, and a
dot-product test of a state and two parameter fields compiled about 0.25-0.5 s per array. A second call with
the same shapes reuses the program.

Users: the initial weights of ``learn.ConvNet`` and ``learn.MLP``, the directions of ``dp.check``, and the
twin experiment's noise, lost readings and background perturbation (``observe.twin_experiment``, whose truth
run is a program of its own at the default level, since its run time grows with the problem).

The values are ``jax.random``'s for the same keys: its integer hash is exact, and the float transforms
(uniform into [-lim, lim), the normal's inverse error function) may round differently in the last bit.
Inside a caller's ``jax.jit`` the draws are traced into the caller's program (JAX allows compile options on
top-level programs only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax

__all__ = ["drawn"]


_LEVEL_0 = {"xla_backend_optimization_level": 0}
_OLDER_CPU_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
"""XLA:CPU's older element-wise fusion emitters compile a one-off draw faster again (the twin experiment's
draws for ``heat1d-sparse``: 0.6 s -> 0.3-0.4 s at level 0). An XLA without the option refuses it when the
program compiles ("No such compile option"); level 0 alone is used from then on."""
_use_older_emitters = True


@functools.cache
def _program(older_emitters: bool) -> Callable:
    options = _LEVEL_0 | (_OLDER_CPU_EMITTERS if older_emitters else {})
    return jax.jit(_arrays, static_argnums=(0, 1), compiler_options=options)


def _computed(build: Callable, arguments: tuple, key):
    """The arrays of ``build(key, *arguments)`` from the one-off program. Inside a caller's ``jax.jit`` a nested
    program cannot have compile options of its own (JAX refuses them): the draw is then traced into the
    caller's program."""
    global _use_older_emitters
    try:
        return _program(_use_older_emitters)(build, arguments, key)
    except ValueError as error:  # "`compiler_options` can only be passed to top-level `jax.jit`"
        if "top-level" not in str(error):
            raise
        return _arrays(build, arguments, key)
    except jax.errors.JaxRuntimeError as error:
        if not (_use_older_emitters and "No such compile option" in str(error)):
            raise
        _use_older_emitters = False
        return _program(False)(build, arguments, key)


def _arrays(build: Callable, arguments: tuple, key):
    return eqx.filter(build(key, *arguments), eqx.is_array)


def drawn(build: Callable, arguments: tuple, key):
    """``build(key, *arguments)``, a pytree (e.g. an equinox module) whose arrays are random draws, with its arrays
    computed by one program compiled for compile speed. ``build`` and ``arguments`` must be hashable (they are
    static: a module-level function and a tuple of ints, shapes, dtypes, tree structures)."""
    structure = eqx.filter(eqx.filter_eval_shape(build, key, *arguments),
                           lambda x: not isinstance(x, jax.ShapeDtypeStruct))
    return eqx.combine(_computed(build, arguments, key), structure)
