"""The package's module import graph has no cycles (imports inside functions included), and ``import diffphys``
leaves the output libraries (xarray, pandas, matplotlib) until they are used."""

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import diffphys


def _modules() -> dict[str, Path]:
    """Every module of diffphys by dotted name, with its source file."""
    out = {"diffphys": Path(diffphys.__file__)}
    for info in pkgutil.walk_packages(diffphys.__path__, prefix="diffphys."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        out[info.name] = Path(spec.origin)
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name that a ``from ... import`` statement refers to."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The diffphys modules that ``module`` imports, anywhere in its source (functions included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            # ``from . import x`` imports the submodule x when there is one, else a name of the package.
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for name in names:
            # ``import a.b.c`` also runs a and a.b: depend on the longest known prefix.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_sees_relative_and_function_level_imports():
    graph = _graph()
    assert "diffphys.schemes._explicit" in graph["diffphys.schemes._implicit"]  # from ._explicit import ...
    assert "diffphys._app.runner" in graph["diffphys.cli"]  # imported inside a function


def test_the_package_has_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _printed_lines(*lines: str) -> list[str]:
    """What a fresh Python process running ``lines`` prints, line by line."""
    code = "\n".join(lines)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")


def test_importing_diffphys_leaves_the_output_libraries_until_used():
    """xarray, pandas and matplotlib take about a second to import; ``import diffphys`` (and the CLI module)
    must not pay for them, and the first function that writes a dataset imports xarray itself."""
    out = _printed_lines(
        "import sys, diffphys, diffphys.cli, diffphys._app.runner",
        "print(sorted(m for m in ('xarray', 'pandas', 'matplotlib') if m in sys.modules))",
        "import numpy as np",
        "grid = diffphys.Grid1D(8, 1.0, diffphys.Periodic())",
        "ds = diffphys.io.trajectory_to_dataset(grid, np.zeros((2, 8)), np.array([0.0, 1.0]))",
        "print(type(ds).__module__.split('.')[0], 'xarray' in sys.modules)")
    assert out[0] == "[]"
    assert out[1] == "xarray True"


def test_a_run_imports_xarray_and_matplotlib_in_the_background():
    """``run_case`` imports the output libraries on a daemon thread while it compiles (see _import_in_background)."""
    out = _printed_lines(
        "import sys",
        "from diffphys._app.runner import _import_in_background",
        "thread = _import_in_background(('xarray', 'matplotlib', 'matplotlib.figure', 'matplotlib.backends.backend_agg'))",
        "print(thread.daemon, thread.name)",
        "thread.join()",
        "print('xarray' in sys.modules, 'matplotlib.backends.backend_agg' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    assert out[0] == "True diffphys-imports"
    assert out[1] == "True True False"  # pyplot (which picks a GUI backend) stays for the main thread
