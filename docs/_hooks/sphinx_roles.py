"""griffe extension: the docstrings' Sphinx roles (:class:`~diffphys.X`, :func:`name`, ...) as links.

The docstrings are Markdown but name other objects the Sphinx way. This turns each role into an
optional mkdocs-autorefs cross-reference: a link where the target is documented, plain code where it is
not (a private module, say), and never a build warning. A relative name is looked up in the
docstring's own module, then in the packages above it.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def _lookup(collection, path: str):
    try:
        obj = collection[path]
        return obj.target.path if obj.is_alias else obj.path
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj, loader, **kwargs):
        if obj.docstring is None or ":" not in obj.docstring.value:
            return
        collection = loader.modules_collection
        scopes = []
        scope = obj if obj.is_module else obj.parent
        while scope is not None:
            scopes.append(scope.path)
            scope = scope.parent

        def replace(match: re.Match) -> str:
            target = match["target"].lstrip(".")
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            candidates = [target] + [f"{s}.{target}" for s in scopes]
            found = next((p for p in map(lambda c: _lookup(collection, c), candidates) if p), None)
            if found is None:
                return f"`{shown}`"
            return f'<autoref identifier="{found}" optional><code>{shown}</code></autoref>'

        obj.docstring.value = ROLE.sub(replace, obj.docstring.value)
