"""Test configuration: every test runs in float64 (gradient checks need it) and deterministically."""

import gc
import os

# Several test workers (pytest-xdist) may share one GPU: allocate on demand, not 75% each.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# `diffphys run` turns JAX's persistent compilation cache on (in ~/.cache): tests that call it, in
# this process or in a subprocess, leave the user's cache alone; the cache's own tests pass a folder.
os.environ.setdefault("DIFFPHYS_CACHE_DIR", "off")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module.

    Every compiled XLA:CPU executable keeps its machine code in memory mappings of its own. A
    process that compiles the whole suite's few thousand programs passes Linux's default limit of
    65 530 mappings (vm.max_map_count) and then crashes inside the compiler (a segmentation
    fault, seen in CI). Modules rarely share compiled functions, so clearing between them costs
    little.
    """
    yield
    jax.clear_caches()
    gc.collect()
