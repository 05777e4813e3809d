r"""The Gaussian prior $\tfrac12\|x - m\|^2_{B^{-1}}$ with a matrix-free covariance $B = SS^\top$.

$$g(x) = \tfrac12 (x - m)^\top B^{-1} (x - m), \qquad
\operatorname{prox}_{\gamma g}(z) = m + B (B + \gamma I)^{-1} (z - m).$$

$B$ is any :class:`~diffphys.observe.AbstractCovariance`, known only through its square root $S$
(``sqrt``) and $S^\top$ (``sqrt_transpose``); it is never assembled and never inverted directly.

* **prox** in the control-variable form $u = m + S w$ (Lorenc 1997): $w$ minimises
  $\tfrac12\|m + Sw - z\|^2 + \tfrac\gamma2\|w\|^2$, i.e.
  $(\gamma I + S^\top S)\, w = S^\top (z - m)$, solved by CG; then $u = m + S w$, which equals
  $m + SS^\top(SS^\top + \gamma I)^{-1}(z - m)$ by the push-through identity. The system is
  symmetric positive definite with condition number at most $1 + \|S\|^2/\gamma$, whatever $B$'s
  own conditioning, and $S$ may map a control space of another size than $x$'s.
* **value** needs $B^{-1}(x - m)$: one CG solve with $B = SS^\top$. Smooth covariances (long
  correlation lengths) make $B$ very ill-conditioned, so this solve can be slow or fail to reach
  the tolerance (it then raises, or with ``throw=False`` returns an inaccurate value): a
  mathematical limitation of evaluating $B^{-1}$ from $S$ alone. Proximal solvers need only the
  prox; use the value for monitoring, on small or well-conditioned $B$.

Both solves go through ``diffphys._linear_solve.solve_linear`` (``lax.custom_linear_solve``), so
derivatives with respect to $z$, $\gamma$, $m$ and the arrays inside $B$ are implicit (one more
solve), never differentiated through the CG iterations.

References: A. C. Lorenc, "Development of an operational variational assimilation scheme",
J. Meteorol. Soc. Japan 75 (1997) 339-346 (control-variable transform); Parikh & Boyd, "Proximal
algorithms" (2014), §6.1.1 (prox of a quadratic).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._linear_solve import LinearSolver, solve_linear
from .._validate import check_field, device_array
from ..observe._covariance import AbstractCovariance
from ._base import AbstractPrior
from ._checks import check_entrywise_shape

__all__ = ["Gaussian"]


class Gaussian(AbstractPrior):
    r"""$g(x) = \tfrac12 (x - m)^\top B^{-1}(x - m)$ with $B$ a diffphys covariance (see the module docstring).

    **Arguments:**

    - ``covariance``: $B$, an :class:`~diffphys.observe.AbstractCovariance` (e.g.
      :class:`~diffphys.observe.DiffusionB`) acting on arrays of the control's shape.
    - ``mean``: $m$, a scalar or an array of the control's shape (default 0).
    - ``linear_solver``: the :class:`~diffphys.LinearSolver` settings of the CG solves (default:
      CG to rtol 1e-10 in float64, 500 iterations, raising if not converged).
    """

    covariance: AbstractCovariance
    mean: Float[Array, "..."]
    linear_solver: LinearSolver = eqx.field(static=True)

    def __init__(
        self,
        covariance: AbstractCovariance,
        mean: Float[ArrayLike, "..."] = 0.0,
        *,
        linear_solver: LinearSolver = LinearSolver(),
    ):
        if not isinstance(covariance, AbstractCovariance):
            raise TypeError(
                "Gaussian: covariance must be a diffphys covariance (an observe.AbstractCovariance with sqrt and "
                f"sqrt_transpose, e.g. observe.DiffusionB), got {type(covariance).__name__}"
            )
        if not isinstance(linear_solver, LinearSolver):
            raise TypeError(f"Gaussian: linear_solver must be a diffphys LinearSolver, got {type(linear_solver).__name__}")
        try:
            m = device_array(mean, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"Gaussian: mean must be a real number or array, got {mean!r}") from None
        check_field("Gaussian: mean", m)
        self.covariance, self.mean, self.linear_solver = covariance, m, linear_solver

    def check_control(self, x) -> None:
        super().check_control(x)
        check_entrywise_shape("Gaussian", "mean", self.mean, x)
        try:
            out = jax.eval_shape(self.covariance, x)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Gaussian: the covariance {type(self.covariance).__name__} cannot act on a control of shape "
                f"{jnp.shape(x)} ({error}); build it for that shape"
            ) from None
        if out.shape != jnp.shape(x):
            raise ValueError(
                f"Gaussian: the covariance {type(self.covariance).__name__} maps a control of shape {jnp.shape(x)} "
                f"to shape {out.shape}; B must map the control's space to itself"
            )

    def value(self, x):
        d = x - self.mean
        v = solve_linear(self.covariance, d, self.linear_solver, spd=True, what="Gaussian.value: B v = x - m").value
        return 0.5 * jnp.vdot(d, v)

    def prox(self, z, step):
        cov = self.covariance
        rhs = cov.sqrt_transpose(z - self.mean)
        w = solve_linear(
            lambda w: cov.sqrt_transpose(cov.sqrt(w)) + step * w,
            rhs,
            self.linear_solver,
            spd=True,
            what="Gaussian.prox: (gamma I + S^T S) w = S^T (z - m)",
        ).value
        return self.mean + cov.sqrt(w)
