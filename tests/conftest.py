"""Test configuration: every test runs in float64 (gradient checks need it) and deterministically."""

import gc
import os
import shutil
import tempfile

# Several test workers (pytest-xdist) may share one GPU: allocate on demand, not 75% each.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


XLA_DEFAULTS_VARIABLE = "DIFFPHYS_TEST_XLA_DEFAULTS"
LEVEL_0_VARIABLE = "JAX_DISABLE_MOST_OPTIMIZATIONS"  # JAX's own switch, read when JAX is imported


def _compile_for_compile_time() -> bool:
    """Compile the suite for compile time, not run time (before JAX starts); return whether it does.

    Most of the suite's time is XLA:CPU's backend compilation (73 % of the six heaviest numerical files;
    benchmarks/README, "Where the suite's time goes"). Two settings cut it, and subprocesses the tests
    start (`diffphys run`, benchmark smokes, notebook kernels) inherit both through the environment:

    - XLA:CPU's older element-wise fusion emitters (``XLA_FLAGS``): jaxlib 0.10 compiles CPU fusions
      through the newer MLIR emitters by default, and the older ones compile the suite's programs 30-37 %
      faster (test_gauss_newton.py: 134-141 s -> 87-99 s, alternated runs). `diffphys run` asks for them
      for 1D cases too (diffphys/_app/xla_options.py).
    - LLVM at optimisation level 0 (JAX's ``jax_disable_most_optimizations``): the suite's programs are
      small and mostly run once or a few times, so LLVM's optimisation costs more than it gives back
      (test_gauss_newton.py: 60.8 -> 40.9 s; the whole suite in place: 22-24 -> 15 min on two workers).

    XLA's HLO passes (fusion, simplification) run as before; only the machine code differs, and with it
    the last bit of some results (exp, tanh, a matrix-vector product: up to 4e-16 relative, measured).
    Seven tests compare two differently compiled programs to 1e-12 or 1e-10 and failed at level 0: their
    programs round alike at the default level, but not at level 0, where the last-bit differences change
    an adaptive step size or an inner CG solve's stopping iteration, or pass the dot-product test's 1e-12
    (1e-11 measured). They carry the marker ``xla_default_optimisation`` and compile at XLA's default
    level (the fixture below), their assertions unchanged. ``DIFFPHYS_TEST_XLA_DEFAULTS=1`` runs the whole
    suite with XLA's defaults.
    """
    if os.environ.get(XLA_DEFAULTS_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return False
    from diffphys._app.xla_options import ask_for_older_cpu_emitters

    ask_for_older_cpu_emitters()
    os.environ.setdefault(LEVEL_0_VARIABLE, "1")
    return os.environ[LEVEL_0_VARIABLE].strip().lower() in ("1", "true", "yes")


_SUITE_AT_LEVEL_0 = _compile_for_compile_time()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Set here too: importing diffphys above imported JAX, which reads its environment once, at import.
jax.config.update("jax_disable_most_optimizations", _SUITE_AT_LEVEL_0)

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


_level_0_now = _SUITE_AT_LEVEL_0


@pytest.fixture(autouse=True)
def _xla_optimisation_level(request):
    """Compile a test marked ``xla_default_optimisation`` at XLA's default level, every other one at the
    suite's (see `_compile_for_compile_time`). JAX keys its compiled programs in memory without this
    setting, so the switch to the default level drops them first: a program compiled at level 0 earlier in
    the module is compiled again. Programs compiled at the default level stay and may serve later tests."""
    global _level_0_now
    if not _SUITE_AT_LEVEL_0:
        yield
        return
    wanted = request.node.get_closest_marker("xla_default_optimisation") is None
    if _level_0_now and not wanted:
        jax.clear_caches()
    if wanted != _level_0_now:
        jax.config.update("jax_disable_most_optimizations", wanted)
        _level_0_now = wanted
    yield
