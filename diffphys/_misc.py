"""Small pytree helpers shared across diffphys (one copy each)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import lax

__all__ = [
    "all_finite", "check_int", "check_number", "half_squared_norm", "max_norm", "stop_gradient",
    "tree_dot", "tree_ravel", "tree_squared_norm",
]


def max_norm(tree) -> jax.Array:
    r"""$\max_i |x_i|$ over every leaf of a pytree of arrays."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jtu.tree_leaves(tree)]))


def all_finite(tree) -> jax.Array:
    """True when every inexact array of ``tree`` is finite (True for a tree without any)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def stop_gradient(tree):
    """``lax.stop_gradient`` on every array of a pytree that may also hold functions and static leaves."""
    dynamic, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(lax.stop_gradient(dynamic), static)


def tree_dot(a, b) -> jax.Array:
    r"""$\langle a, b\rangle = \sum_i a_i b_i$ over matching pytrees."""
    return sum(jnp.vdot(x, y) for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)))


def tree_squared_norm(tree) -> jax.Array:
    r"""$\|x\|^2$ over every leaf of a pytree."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jtu.tree_leaves(tree))


def half_squared_norm(tree) -> jax.Array:
    r"""$\tfrac12\|x\|^2$."""
    return 0.5 * tree_squared_norm(tree)


def tree_ravel(tree) -> jax.Array:
    """All leaves of a pytree flattened and concatenated into one vector."""
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jtu.tree_leaves(tree)])


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (not a bool); else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value, *, minimum: float = 0.0, allow_minimum: bool = True) -> float:
    """``value`` as a ``float`` if it is a finite real ``>= minimum`` (``>`` with ``allow_minimum=False``)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (value == minimum and not allow_minimum):
        relation = ">=" if allow_minimum else ">"
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}, got {value!r}")
    return float(value)
