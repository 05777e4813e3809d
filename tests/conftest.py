"""Test configuration: every test runs in float64 (gradient checks need it) and deterministically."""

import gc
import os
import shutil
import tempfile

# Several test workers (pytest-xdist) may share one GPU: allocate on demand, not 75% each.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _legacy_cpu_fusion_emitters() -> None:
    """Compile the suite with XLA:CPU's older element-wise fusion emitters (before JAX reads XLA_FLAGS).

    jaxlib 0.10 compiles CPU fusions through the newer MLIR emitters by default; for the suite's many small
    programs that is most of its time (XLA's backend compilation is about 80 % of the suite), and the older
    emitters compile them 30-37 % faster (test_gauss_newton.py: 134-141 s -> 87-99 s, alternated runs). The
    arithmetic is the same up to round-off: every accuracy, adjoint and Taylor test passes under both.
    Subprocesses the tests start (`diffphys run`, benchmark smokes, notebook kernels) inherit the flag.
    DIFFPHYS_TEST_XLA_DEFAULTS=1 runs the suite with XLA's defaults instead. `diffphys run` asks for the same
    emitters for 1D cases and keeps XLA's default for 2D ones, whose stencils run faster with the newer
    emitters (diffphys/_app/xla_options.py).
    """
    if os.environ.get("DIFFPHYS_TEST_XLA_DEFAULTS", "").strip().lower() in ("1", "true", "yes"):
        return
    from diffphys._app.xla_options import ask_for_older_cpu_emitters

    ask_for_older_cpu_emitters()


_legacy_cpu_fusion_emitters()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# JAX's persistent compilation cache, shared by the session's processes. Most of the suite's time is XLA
# compilation, and programs come back: in both test workers (pytest-xdist), in later modules (the in-memory
# caches are dropped between modules, below), in `diffphys run` subprocesses. A program read from the cache is
# the executable compiled from the same HLO with the same options: results do not change. The folder is fresh
# for each session: `jax-cache` in pytest's temporary folder, made by the first process (the controller under
# xdist; its workers inherit it through the environment) and removed at its end. DIFFPHYS_TEST_JAX_CACHE names
# a folder to keep instead (a rerun then reads what the last one compiled), or "off" for no cache.
CACHE_VARIABLE = "DIFFPHYS_TEST_JAX_CACHE"
_OFF = ("off", "0", "false", "no", "none", "")
_own_cache = None


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path_factory is set up
def pytest_configure(config):
    global _own_cache
    folder = os.environ.get(CACHE_VARIABLE)
    if folder is None:
        factory = getattr(config, "_tmp_path_factory", None)
        base = factory.getbasetemp() if factory is not None else tempfile.mkdtemp(prefix="diffphys-tests-")
        folder = _own_cache = os.environ[CACHE_VARIABLE] = os.path.join(base, "jax-cache")
    folder = None if folder.strip().lower() in _OFF else folder
    # `diffphys run` turns JAX's persistent cache on (in ~/.cache): the tests that call it, in this process or
    # in a subprocess, use the session's folder instead and leave the user's alone; the cache's own tests
    # (test_cli_cache.py) pass folders of their own. The benchmark scripts and notebook kernels the tests
    # start compile programs no other process compiles: they run without the cache, as before (measured:
    # no cache hits in bench_steppers --quick, and no run of them got faster with one).
    os.environ["DIFFPHYS_CACHE_DIR"] = folder or "off"
    if folder:  # every program, however fast it compiled (as diffphys._app.cache.enable_cache does)
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    if _own_cache is not None:
        shutil.rmtree(_own_cache, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module.

    Every compiled XLA:CPU executable keeps its machine code in memory mappings of its own. A
    process that compiles the whole suite's few thousand programs passes Linux's default limit of
    65 530 mappings (vm.max_map_count) and then crashes inside the compiler (a segmentation
    fault, seen in CI). The persistent cache above gives back, without compiling, the programs
    later modules share.
    """
    yield
    jax.clear_caches()
    gc.collect()
