"""Construction checks shared by the priors (one copy each): weights and their shapes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import device_array, is_concrete


def nonnegative_weight(owner: str, name: str, value: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
    """``value`` as a float array, after checking (when concrete) that it is numeric, finite and >= 0.

    Traced values (a weight built inside ``jit``/``grad``, e.g. a learned threshold) cannot be
    inspected and are let through.
    """
    if is_concrete(value):
        w = np.asarray(value)
        if (
            not np.issubdtype(w.dtype, np.number)
            or np.issubdtype(w.dtype, np.complexfloating)
            or not np.all(np.isfinite(w))
            or np.any(w < 0)
        ):
            raise ValueError(f"{owner}: {name} must be finite and >= 0, got {value!r}")
    return device_array(value, dtype=float)


def check_entrywise_shape(owner: str, name: str, value: Array, x) -> None:
    """Raise ``ValueError`` unless ``value`` is a scalar or has the control ``x``'s shape."""
    if jnp.ndim(value) and jnp.shape(value) != jnp.shape(x):
        raise ValueError(
            f"{owner}: a per-entry {name} must have the control's shape {jnp.shape(x)}, got {jnp.shape(value)}; "
            "give a scalar or an array of that shape"
        )
