"""mkdocs hook: include a section of a Markdown file from the repository (README.md, cases/README.md, ...).

A page writes, on a line of its own,

    <!-- include README.md from "## A short tour" to "## Design decisions and limitations" -->

and the hook replaces it with the lines of README.md from the first line that starts with the ``from``
text up to (not including) the first later line that starts with the ``to`` text. ``from``/``to`` are
optional (start / end of the file). A missing file or marker stops the build, so a renamed heading
cannot silently empty a page. The text is never copied by hand: README.md stays the one source.
"""

from __future__ import annotations

import re
from pathlib import Path

DIRECTIVE = re.compile(
    r'^<!-- include (?P<path>\S+)(?: from "(?P<start>[^"]+)")?(?: to "(?P<stop>[^"]+)")? -->[ \t]*$',
    re.MULTILINE,
)


class IncludeError(ValueError):
    pass


def section(root: Path, path: str, start: str | None, stop: str | None) -> str:
    """The lines of ``root/path`` from the line starting with ``start`` up to the one starting with ``stop``."""
    file = root / path
    if not file.is_file():
        raise IncludeError(f"include: {file} does not exist")
    lines = file.read_text(encoding="utf-8").splitlines()
    begin = 0
    if start is not None:
        found = [i for i, line in enumerate(lines) if line.startswith(start)]
        if not found:
            raise IncludeError(f'include: no line of {path} starts with "{start}"')
        begin = found[0]
    end = len(lines)
    if stop is not None:
        found = [i for i, line in enumerate(lines) if i > begin and line.startswith(stop)]
        if not found:
            raise IncludeError(f'include: no line of {path} after "{start}" starts with "{stop}"')
        end = found[0]
    return "\n".join(lines[begin:end]).strip("\n") + "\n"


def expand(markdown: str, root: Path) -> str:
    """``markdown`` with every include directive replaced by the section it names."""
    return DIRECTIVE.sub(lambda m: section(root, m["path"], m["start"], m["stop"]), markdown)


def on_page_markdown(markdown, page, config, files):
    from mkdocs.exceptions import PluginError

    try:
        return expand(markdown, Path(config["config_file_path"]).parent)
    except IncludeError as error:
        raise PluginError(f"{page.file.src_path}: {error}") from None
