"""Type aliases shared across diffphys (jaxtyping shapes)."""

from typing import Any, Union

from jaxtyping import ArrayLike, Float

Scalar = Union[float, Float[ArrayLike, ""]]
"""A real scalar: a Python float or a 0-d array (differentiable when it is a JAX array)."""

PyTree = Any
"""A state: one array (heat, advection) or a tuple of arrays (wave: ``(u, du/dt)``)."""
