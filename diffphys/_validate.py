"""Construction-time checks of user input, raising errors that name the value and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` has a value now (not a tracer inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def array_module(*values):
    """NumPy when every value is concrete (no compiled program for a construction-time check), else jax.numpy."""
    return np if is_concrete(values) else jnp


def device_array(value, dtype=None) -> jax.Array:
    """``jnp.asarray(value, dtype)``, with any conversion done by NumPy on the host.

    A traced or device array is returned as it is (converted to ``dtype`` if given). For host data
    (NumPy arrays, lists, scalars), ``jnp.asarray`` compiles a small XLA program per shape ("stage",
    "convert_element_type") unless the data already has its final, canonical dtype; this gives it that.
    """
    if isinstance(value, jax.Array):
        return value if dtype is None else value.astype(dtype)
    arr = np.asarray(value, dtype=dtype)
    canonical = jax.dtypes.canonicalize_dtype(arr.dtype)
    return jnp.asarray(arr.astype(canonical, copy=False), dtype=canonical)


def check_field(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> None:
    """Raise ``ValueError`` if a concrete parameter field is non-finite or of the wrong sign.

    Traced values (inside ``jit``/``vmap``) cannot be inspected and are let through.
    """
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
        raise ValueError(f"{name} must be finite everywhere; found {arr[idx]} at index {idx}")
    if positive and (arr <= 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr <= 0)[0]) if arr.ndim else ()
        raise ValueError(f"{name} must be > 0 everywhere; found {arr[idx]} at index {idx}")
    if nonnegative and (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0]) if arr.ndim else ()
        raise ValueError(f"{name} must be >= 0 everywhere; found {arr[idx]} at index {idx}")
