r"""Box constraints (and non-negativity) as priors: an indicator whose proximal map is a projection.

$$g(x) = \iota_{[\ell, u]}(x) = \begin{cases} 0 & \ell_i \le x_i \le u_i \text{ for all } i\\
+\infty & \text{otherwise}\end{cases}, \qquad
\operatorname{prox}_{\gamma g}(z) = \Pi_{[\ell,u]}(z) = \min(\max(z, \ell), u),$$

independent of the step $\gamma$ (an indicator is unchanged by scaling). Reference: Parikh & Boyd,
"Proximal algorithms" (2014), §1.2 and §6.2.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._validate import device_array, is_concrete
from ._base import AbstractPrior
from ._checks import check_entrywise_shape

__all__ = ["Box", "NonNegative"]


def _bound(name: str, value) -> Float[Array, "..."]:
    if is_concrete(value):
        b = np.asarray(value)
        if not np.issubdtype(b.dtype, np.number) or np.issubdtype(b.dtype, np.complexfloating) or np.any(np.isnan(b)):
            raise ValueError(f"Box: {name} must be a real number or array (+-inf allowed, NaN not), got {value!r}")
    return device_array(value, dtype=float)


class Box(AbstractPrior):
    r"""The indicator of the box $\ell \le x \le u$ (elementwise); its prox is clipping.

    ``value`` is $0$ inside the box and $+\infty$ outside it.

    **Arguments:**

    - ``lower``: $\ell$, a scalar or an array of the control's shape; ``-inf`` (default) for no
      lower bound.
    - ``upper``: $u$, likewise; ``+inf`` (default) for no upper bound. ``lower <= upper`` is
      required everywhere (the box must not be empty).
    """

    lower: Float[ArrayLike, "..."]
    upper: Float[ArrayLike, "..."]

    def __init__(self, lower: Float[ArrayLike, "..."] = -jnp.inf, upper: Float[ArrayLike, "..."] = jnp.inf):
        lo, up = _bound("lower", lower), _bound("upper", upper)
        if is_concrete((lo, up)):
            try:
                lo_np, up_np = np.broadcast_arrays(np.asarray(lo), np.asarray(up))
            except ValueError:
                raise ValueError(
                    f"Box: lower (shape {lo.shape}) and upper (shape {up.shape}) must be scalars or arrays of the "
                    "control's shape"
                ) from None
            bad = (lo_np > up_np) | (lo_np == np.inf) | (up_np == -np.inf)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
                raise ValueError(
                    f"Box: the box is empty: lower = {lo_np[idx]} and upper = {up_np[idx]} at index {idx}; "
                    "need lower <= upper, lower < +inf and upper > -inf everywhere"
                )
        self.lower, self.upper = lo, up

    def check_control(self, x) -> None:
        super().check_control(x)
        check_entrywise_shape("Box", "lower bound", self.lower, x)
        check_entrywise_shape("Box", "upper bound", self.upper, x)

    def value(self, x):
        inside = jnp.all((x >= self.lower) & (x <= self.upper))
        return jnp.where(inside, 0.0, jnp.inf)

    def prox(self, z, step):
        del step  # the projection does not depend on the step
        return jnp.clip(z, self.lower, self.upper)


def NonNegative() -> Box:
    r"""The indicator of $x \ge 0$: ``Box(lower=0, upper=inf)``, whose prox is $\max(z, 0)$."""
    return Box(0.0, jnp.inf)
