"""Case files: read a TOML file or a built-in case, apply ``section.key=value`` overrides, validate.

Every section and key is checked against :data:`~diffphys._app.schema.SCHEMA`: an unknown section or
key (a typo) is an error naming it, its section and the valid keys, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .schema import REQUIRED, SCHEMA, CaseError, check_consistency, check_known

__all__ = ["DEFAULT_CASE", "Case", "builtin_case_text", "builtin_cases", "load_case"]

DEFAULT_CASE = "heat1d-sparse"
_UNSET = object()  # "--set section.key=" removes a key


@dataclasses.dataclass(frozen=True)
class Case:
    """A validated case: ``config[section][key]`` holds every key of :data:`SCHEMA` (defaults filled)."""

    name: str
    description: str
    source: Path
    config: dict

    def __getitem__(self, section: str) -> dict:
        return self.config[section]


def _builtin_dir():
    return resources.files("diffphys") / "cases_data"


def builtin_cases() -> dict[str, str]:
    """The built-in cases: ``{name: one-line description}``, sorted by name."""
    out = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out[entry.name[: -len(".toml")]] = tomllib.loads(entry.read_text(encoding="utf-8")).get("description", "")
    return out


def builtin_case_text(name: str) -> str:
    """The TOML text of built-in case ``name`` (to copy and edit); :class:`CaseError` for an unknown name."""
    names = builtin_cases()
    if name not in names:
        hint = difflib.get_close_matches(name, list(names), n=1)
        raise CaseError(f"unknown built-in case {name!r}; the built-in cases are {sorted(names)}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return (_builtin_dir() / f"{name}.toml").read_text(encoding="utf-8")


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text:
        raise CaseError(f"--set {text!r}: expected section.key=value (e.g. solver.max_iterations=20)")
    path, value = (s.strip() for s in text.split("=", 1))
    section, _, key = path.rpartition(".")
    if "." in section:
        raise CaseError(f"--set {text!r}: expected section.key=value with one dot, got {path!r}")
    if not value:
        return section, key, _UNSET
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word or expression: a string
    return section, key, parsed


def load_case(spec: str | Path | None = None, overrides: Sequence[str] = ()) -> Case:
    """Read and validate a case: a path to a ``.toml`` file or a built-in name (``None``: the default).

    **Arguments:**

    - ``spec``: a file path, or one of :func:`builtin_cases` (default ``"heat1d-sparse"``).
    - ``overrides``: ``"section.key=value"`` strings (values in TOML syntax; a bare word is a
      string), applied over the file, e.g. ``["grid.n=64", "solver.max_iterations=20"]``;
      ``"section.key="`` removes the key (its default applies).

    **Returns:** a :class:`Case`. **Raises** :class:`CaseError` naming the offending field.
    """
    spec = DEFAULT_CASE if spec is None else spec
    path = Path(spec)
    if not (path.suffix == ".toml" or path.exists()):
        names = builtin_cases()
        if str(spec) not in names:
            hint = difflib.get_close_matches(str(spec), list(names), n=1)
            raise CaseError(
                f"unknown case {str(spec)!r}: not a file, and the built-in cases are {sorted(names)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        text, path = (_builtin_dir() / f"{spec}.toml").read_text(encoding="utf-8"), Path(f"{spec}.toml")
        base = None
    else:
        if not path.is_file():
            raise CaseError(f"case file {str(path)!r} does not exist")
        text, base = path.read_text(encoding="utf-8"), path.resolve().parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CaseError(f"case {str(path)!r} is not valid TOML: {error}") from None
    check_known(raw, f"case {path.name}")
    for text_override in overrides:
        section, key, value = _parse_override(text_override)
        check_known({section: {key: value}} if section else {key: value}, f"--set {text_override!r}")
        target = raw.setdefault(section, {}) if section else raw
        if value is _UNSET:
            target.pop(key, None)
        else:
            target[key] = value
    config = {}
    for section, keys in SCHEMA.items():
        given = raw if not section else raw.get(section, {})
        config[section] = {}
        for key, spec_key in keys.items():
            where = f"[{section}] {key}" if section else key
            if key in given and (section or not isinstance(given[key], dict)):  # top level: a table is a section
                config[section][key] = spec_key.check(given[key], where)
            elif spec_key.default is REQUIRED:
                raise CaseError(f"case {path.name}: {where} is required ({spec_key.doc})")
            else:
                config[section][key] = spec_key.default
    top = config.pop("")
    config["seed"] = top["seed"]
    if config["observations"]["file"] is not None and base is not None:
        config["observations"]["file"] = str(base / config["observations"]["file"])
    check_consistency(config, {k: v for k, v in raw.items() if isinstance(v, dict)}, path.name)
    return Case(top["name"] or path.stem, top["description"], path, config)


#
