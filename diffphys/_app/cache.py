"""JAX's persistent compilation cache for the command line (never switched on by importing diffphys).

A second ``diffphys run`` of a case reads its compiled XLA programs from a user-level folder instead
of compiling them again. The folder is ``$DIFFPHYS_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/diffphys/jax`` (default ``~/.cache/diffphys/jax``); ``DIFFPHYS_CACHE_DIR=off``
or ``diffphys run --no-cache`` turns it off.

JAX does not write a program that holds host callbacks (``jax.debug.callback``, equinox's run-time
errors) to the cache, so the programs a run compiles keep them out: iteration lines are printed from
the solution's history after the solve, and non-finite states are checked on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OFF", "cache_dir", "enable_cache"]

OFF = ("off", "0", "false", "no", "none", "")


def cache_dir(environ=None) -> Path | None:
    """The cache folder the environment asks for, or ``None`` if ``DIFFPHYS_CACHE_DIR`` turns it off."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("DIFFPHYS_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else Path(chosen).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "diffphys" / "jax"


def enable_cache(folder: Path | None) -> Path | None:
    """Point JAX's persistent compilation cache at ``folder`` (``None``: leave it off); return the folder used.

    Every program is cached however fast it compiled (JAX's default keeps only programs that took a
    second or more to compile).
    """
    if folder is None:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
