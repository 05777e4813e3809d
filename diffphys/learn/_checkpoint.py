r"""Training checkpoints: parameters, optimiser state, PRNG key and step, written atomically.

A checkpoint is one file written by :func:`equinox.tree_serialise_leaves` of the tuple
``(parameters, optimiser state, key data, step)``. It is first written to a temporary file in the
same folder, flushed to disk, then renamed over the previous checkpoint (``os.replace`` is atomic;
:func:`diffphys.io.atomic_path`),
so an interruption at any moment leaves either the old or the new checkpoint, never a torn one.
Restoring needs a template with the same structure (the freshly initialised parameters and
optimiser state), exactly as :func:`equinox.tree_deserialise_leaves` does; the bytes are restored
exactly, which is what makes resumed training bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..io import atomic_path

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.eqx"


def _is_typed(key) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _key_data(key) -> np.ndarray:
    return np.asarray(jax.random.key_data(key)) if _is_typed(key) else np.asarray(key)


def save_checkpoint(path, params, opt_state, key, step: int) -> Path:
    """Write ``(params, opt_state, key, step)`` to ``path`` atomically (temporary file, then rename).

    **Arguments:** ``path`` (a file; its folder is created), ``params`` (any pytree, e.g. an
    equinox model or its trainable part), ``opt_state`` (the optax state), ``key`` (a typed
    ``jax.random.key`` or a raw uint32 key), ``step`` (the number of completed optimiser steps).

    **Returns:** the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = (params, opt_state, _key_data(key), np.asarray(step, dtype=np.int64), np.asarray(_is_typed(key)))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
    return path


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
    like = (params_like, opt_state_like, _key_data(key_like), np.asarray(0, dtype=np.int64), np.asarray(True))
    try:
        params, opt_state, key_data, step, typed = eqx.tree_deserialise_leaves(path, like)
    except Exception as error:
        raise ValueError(
            f"load_checkpoint: {path} does not match the given templates (different network, optimiser or "
            f"key kind?): {error}"
        ) from None
    key = jax.random.wrap_key_data(jnp.asarray(key_data)) if bool(typed) else jnp.asarray(key_data)
    return params, opt_state, key, int(step)
