"""XLA's CPU code generator for a command-line run, chosen from the case before JAX starts its backend.

jaxlib 0.10 compiles element-wise fusions on the CPU through XLA's newer MLIR emitters by default. Its older
emitters compile 10-40 % faster; they run 1D stencils as fast or faster, and 2D stencils mostly slower (up to
1.5x the time); see benchmarks/README, "XLA:CPU's fusion emitters for `diffphys run`". A single-window run of a case on a
1D grid is mostly compilation (a cold ``heat1d-sparse`` run: 80-86 %), so ``diffphys run`` asks for the older
emitters there, through ``XLA_FLAGS``, which JAX reads once, when it starts its backend. 2D cases and cycled
runs (mostly solving: ``lorenz96-4dvar``'s 330 windows ran 5-16 % slower warm with the older emitters) keep
XLA's default. The test suite compiles with the older emitters throughout (tests/conftest.py).

Only jaxlib 0.10 is measured, and an XLA that does not know a flag of ``XLA_FLAGS`` stops the process, so
other versions keep their defaults, as does a user whose ``XLA_FLAGS`` already chooses the emitters.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

__all__ = ["OLDER_CPU_EMITTERS", "ask_for_older_cpu_emitters", "choose_for", "grid_is_one_dimensional"]

OLDER_CPU_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _measured_jaxlib() -> bool:
    try:
        return version("jaxlib").startswith("0.10.")
    except PackageNotFoundError:
        return False


def ask_for_older_cpu_emitters(environ=None) -> bool:
    """Add :data:`OLDER_CPU_EMITTERS` to ``environ["XLA_FLAGS"]`` (default ``os.environ``) unless the flags already
    choose the emitters or jaxlib is not the measured 0.10; return whether it was added. It takes effect only if
    JAX has not started its backend yet in this process (and in processes started from it)."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags or not _measured_jaxlib():
        return False
    environ["XLA_FLAGS"] = f"{flags} {OLDER_CPU_EMITTERS}".strip()
    return True


def grid_is_one_dimensional(case) -> bool:
    """Whether the case's grid (``[grid] n``) has one axis: a number of cells rather than a list of two."""
    return not isinstance(case["grid"]["n"], (list, tuple))


def choose_for(case, environ=None) -> bool:
    """The run's choice (see the module docstring), made before its first computation: the older CPU emitters for
    a single-window case on a 1D grid. Returns whether they were asked for."""
    cycled = case["cycling"]["cycles"] is not None
    return grid_is_one_dimensional(case) and not cycled and ask_for_older_cpu_emitters(environ)
