r"""Training checkpoints: parameters, optimiser state, PRNG key and step, written atomically.

A checkpoint file is one line of JSON (the header: format, step, key kind, and what identifies the
run that wrote it) followed by :func:`equinox.tree_serialise_leaves` of ``(parameters, optimiser
state, key data)``. It is first written to a temporary file in the same folder, flushed to disk,
then renamed over the previous checkpoint (``os.replace`` is atomic; :func:`diffphys.io.atomic_path`),
so an interruption at any moment leaves either the old or the new checkpoint, never a torn one.
:func:`checkpoint_info` reads the header alone. Restoring the arrays needs a template with the same
structure (the freshly initialised parameters and optimiser state), exactly as
:func:`equinox.tree_deserialise_leaves` does; the bytes are restored exactly, which is what makes
resumed training bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..io import atomic_path, json_safe

__all__ = ["CHECKPOINT_NAME", "checkpoint_info", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.eqx"
_FORMAT = "diffphys-checkpoint"


def _is_typed(key) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _key_data(key) -> np.ndarray:
    return np.asarray(jax.random.key_data(key)) if _is_typed(key) else np.asarray(key)


def write_with_header(path, header: dict, tree) -> Path:
    """Write one line of strict JSON (``header``) and then ``tree``'s leaves (equinox), atomically."""
    path = Path(path)
    line = json.dumps(json_safe(header), allow_nan=False).encode() + b"\n"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(line)
        eqx.tree_serialise_leaves(f, tree)
    return path


def read_header(path, kind: str, what: str) -> dict:
    """The JSON header of a file written by :func:`write_with_header` with ``header["format"] == kind``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path}")
    with open(path, "rb") as f:
        line = f.readline(1 << 20)
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != kind:
        found = f" (a {header['format']} file)" if isinstance(header, dict) and "format" in header else ""
        raise ValueError(f"{what}: {path} is not a {kind} file{found}; it starts with {line[:40]!r}")
    return header


def read_leaves(path, like, what: str):
    """The tree after the header of ``path``, deserialised into the structure of ``like``."""
    with open(path, "rb") as f:
        f.readline(1 << 20)
        try:
            return eqx.tree_deserialise_leaves(f, like)
        except Exception as error:
            raise ValueError(f"{what}: {path} does not match the expected structure: {error}") from None


def save_checkpoint(path, params, opt_state, key, step: int, *, run: dict | None = None) -> Path:
    """Write ``(params, opt_state, key, step)`` to ``path`` atomically (temporary file, then rename).

    **Arguments:** ``path`` (a file; its folder is created), ``params`` (any pytree, e.g. an
    equinox model or its trainable part), ``opt_state`` (the optax state), ``key`` (a typed
    ``jax.random.key`` or a raw uint32 key), ``step`` (the number of completed optimiser steps),
    ``run`` (optional JSON-able facts that identify the run, e.g. its starting key; read back by
    :func:`checkpoint_info`, which :func:`~diffphys.learn.fit` compares before resuming).

    **Returns:** the path written.
    """
    header = {"format": _FORMAT, "version": 1, "step": int(step), "typed_key": _is_typed(key), "run": run}
    return write_with_header(path, header, (params, opt_state, _key_data(key)))


def checkpoint_info(path) -> dict:
    """The header of a checkpoint (no template needed): ``{"step": ..., "typed_key": ..., "run": ...}``.

    **Raises:** ``FileNotFoundError``; ``ValueError`` for a file that is not a diffphys checkpoint.
    """
    return read_header(path, _FORMAT, "checkpoint")


def load_checkpoint(path, params_like, opt_state_like, key_like):
    """Read a checkpoint written by :func:`save_checkpoint`.

    **Arguments:** ``path``; ``params_like``, ``opt_state_like``, ``key_like``: templates with the
    structure, shapes and dtypes of what was saved (e.g. the initial parameters, ``optimizer.init``
    of them, and any key of the same kind).

    **Returns:** ``(params, opt_state, key, step)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path}")
    header = read_header(path, _FORMAT, "load_checkpoint")
    like = (params_like, opt_state_like, _key_data(key_like))
    try:
        params, opt_state, key_data = read_leaves(path, like, "load_checkpoint")
    except ValueError as error:
        raise ValueError(
            f"load_checkpoint: {path} (step {header['step']}) does not match the given templates (different network, "
            f"optimiser or key kind?): {error}"
        ) from None
    key = jax.random.wrap_key_data(jnp.asarray(key_data)) if header["typed_key"] else jnp.asarray(key_data)
    return params, opt_state, key, int(header["step"])
