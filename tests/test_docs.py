"""The documentation site stays complete: every public name has an API-reference entry, every include resolves.

Reads the sources with `ast` (no import of diffphys, no mkdocs needed); CI builds the site itself with
`mkdocs build --strict`.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffphys"
DOCS = ROOT / "docs"
API = DOCS / "api"
# The command line is documented by `diffphys --help`, the README and the case-file reference.
NOT_IN_API_REFERENCE = {"diffphys.cli"}
BLOCK = re.compile(r"^::: (?P<ident>[\w.]+)[ \t]*$", re.MULTILINE)


def _file(module: str) -> Path | None:
    """The source file of a diffphys module (package __init__ or plain module), or None."""
    path = ROOT.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


@functools.cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_file(module).read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module
    parts = module.split(".")
    if _file(module).name != "__init__.py":
        parts = parts[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


@functools.cache
def _reexports(module: str) -> dict[str, str]:
    """Explicit re-exports `from X import a as a` of a module: name -> absolute module X."""
    out = {}
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.asname == alias.name:
                    out[alias.name] = _absolute(module, node)
    return out


@functools.cache
def _definitions(module: str) -> set[str]:
    return {
        node.name
        for node in _tree(module).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    }


def _all(module: str) -> list[str] | None:
    for node in _tree(module).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


@functools.cache
def public_names(module: str) -> set[str]:
    """A module's `__all__` where it has one; else a package's public API is what its __init__ re-exports
    (submodules excluded: they get their own page), and a plain module's is its public functions and classes."""
    if (names := _all(module)) is not None:
        return set(names)
    if _file(module).name == "__init__.py":
        return {name for name, source in _reexports(module).items() if _file(f"{source}.{name}") is None}
    return _definitions(module)


@functools.cache
def origin(module: str, name: str) -> str:
    """Where `module.name` is defined, following re-exports."""
    source = _reexports(module).get(name)
    if source is None:
        return f"{module}.{name}"
    return origin(source, name)


def public_modules() -> list[str]:
    """diffphys, the modules it re-exports (`from . import x as x`), every public subpackage and every
    public module with an `__all__`."""
    modules = {"diffphys"}
    modules |= {f"{src}.{n}" for n, src in _reexports("diffphys").items() if _file(f"{src}.{n}")}
    modules |= {f"diffphys.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py") if not p.parent.name.startswith("_")}
    # Public modules that declare their API (grid, cases, ...).
    modules |= {f"diffphys.{p.stem}" for p in PACKAGE.glob("[!_]*.py") if _all(f"diffphys.{p.stem}") is not None}
    return sorted(modules - NOT_IN_API_REFERENCE)


def _split(ident: str) -> tuple[str, str | None]:
    """`diffphys.solvers.iterate` -> ("diffphys.solvers", "iterate"); a module -> (module, None)."""
    if _file(ident) is not None:
        return ident, None
    module, _, name = ident.rpartition(".")
    assert _file(module) is not None, f"::: {ident}: no module {module}"
    return module, name


def api_blocks() -> dict[str, list[tuple[str, str | None]]]:
    """Each API page's `::: identifier` blocks, as (module, name or None)."""
    return {page.name: [_split(m["ident"]) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]
            for page in sorted(API.glob("*.md"))}


def test_every_public_name_is_in_the_api_reference():
    documented: dict[str, list[str]] = {}
    pages_of_modules: set[str] = set()
    for page, blocks in api_blocks().items():
        for module, name in blocks:
            pages_of_modules.add(module)
            if name is not None:
                assert name in public_names(module), f"{page}: ::: {module}.{name} is not a public name of {module}"
                documented.setdefault(origin(module, name), []).append(f"{page}: {module}.{name}")
    missing = []
    for module in public_modules():
        names = public_names(module)
        # diffphys.models has no page of its own: diffphys re-exports all of it.
        whole = {n for n in public_names("diffphys") if origin("diffphys", n) == origin(module, n)}
        if module not in pages_of_modules and not names <= whole:
            missing.append(f"{module} (no ::: {module} block on any page of docs/api/)")
        missing += [f"{module}.{n}" for n in sorted(names) if origin(module, n) not in documented]
    twice = [where for where in documented.values() if len(where) > 1]
    assert not missing, "public names missing from docs/api/*.md: " + ", ".join(missing)
    assert not twice, f"documented more than once: {twice}"


def test_api_pages_are_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert [p.name for p in sorted(API.glob("*.md")) if f"api/{p.name}" not in config] == []


def test_included_sections_exist():
    spec = importlib.util.spec_from_file_location("include_sections", DOCS / "_hooks" / "include_sections.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    pages = list(DOCS.glob("*.md"))
    assert sum(bool(hook.DIRECTIVE.search(p.read_text(encoding="utf-8"))) for p in pages) >= 4
    for page in pages:
        text = page.read_text(encoding="utf-8")
        expanded = hook.expand(text, ROOT)  # raises on a missing file or heading
        assert "<!-- include" not in expanded, page.name
    with pytest.raises(hook.IncludeError, match="no line"):
        hook.expand('<!-- include README.md from "## No such heading" -->\n', ROOT)
