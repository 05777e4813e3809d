r"""Approximate message passing (AMP) for sparse linear inverse problems, on the solver core.

For $y = A x + w$ with $A \in \mathbb{R}^{M\times N}$ of about unit-norm columns (i.i.d.
$\mathcal N(0, 1/M)$ entries), AMP iterates soft thresholding $\eta(r;\theta) =
\operatorname{sign}(r)\max(|r| - \theta, 0)$ with the Onsager correction of the residual
(Donoho, Maleki & Montanari 2009, eq. (2.4)-(2.5), with $\delta = M/N$):

$$x_{k+1} = \eta(x_k + A^\top z_k;\ \theta_k), \qquad
z_{k+1} = y - A x_{k+1} + \frac{N}{M}\,\big\langle \eta'(x_k + A^\top z_k;\ \theta_k)\big\rangle\, z_k ,$$

from $z_0 = y - A x_0$, where $\frac{N}{M}\langle\eta'\rangle = \|x_{k+1}\|_0 / M =: \omega_k$.
The Onsager term makes the pseudo-data $x_k + A^\top z_k$ behave as the signal plus Gaussian
noise of variance $\tau_k^2$, which the scalar *state evolution* predicts
(:func:`amp_state_evolution`; Bayati & Montanari 2011).

**Thresholds** (``threshold_rule``):

- ``"residual"``: $\theta_k = \alpha_k\,\hat\sigma_k$ with $\hat\sigma_k = \|z_k\|/\sqrt M$, the
  estimate of $\tau_k$ (Donoho–Maleki–Montanari; Borgerding et al. use $\alpha = 1.1402$). Unrolled,
  the per-layer $\alpha_k$ are learnable: this is LAMP with tied matrices (Borgerding, Schniter &
  Rangan 2017). A fixed point $(x^*, z^*)$ has $z^* = (y - A x^*)/(1-\omega^*)$ and
  $A^\top z^* \in \theta^*\partial\|x^*\|_1$, i.e. $x^*$ solves the LASSO at
  $\lambda^* = \theta^*(1-\omega^*) = \alpha\,\|y - A x^*\|/\sqrt M$ (equivalently the square-root
  LASSO $\min \|y - Ax\| + (\alpha/\sqrt M)\|x\|_1$).
- ``"lasso"``: the thresholds are calibrated to the prior's $\lambda$ (``Composite(...,
  L1(lam))``): $\theta_0 = \lambda$, $\theta_{k+1} = \lambda + \omega_k\theta_k$ (the "AMP.A"
  form of Donoho, Maleki & Montanari, "Message passing algorithms for compressed sensing: I",
  ITW 2010). A fixed point has $\theta^*(1-\omega^*) = \lambda$, the calibration of Montanari
  (2012) and Bayati & Montanari ("The LASSO risk for Gaussian matrices", 2012): $x^*$ is the
  LASSO solution at the prior's $\lambda$. The parameters $\alpha_k$ are not used (learn
  $\lambda$ itself, an array of the prior, or use ``"residual"``).
- ``"auto"`` (default): ``"lasso"`` when the problem has an L1 prior, else ``"residual"``.

**Optimality residual** (what converged mode differentiates): the LASSO's prox-gradient
fixed-point residual with unit step (natural for unit-norm columns),

$$F(x) = x - \eta\big(x - A^\top(Ax - y);\ \lambda(x)\big),$$

with $\lambda(x) = \lambda$ (lasso rule) or $\lambda(x) = \alpha\|Ax - y\|/\sqrt M$ (residual
rule). It is zero exactly at AMP's fixed points (above), and its Jacobian is block triangular,
$\begin{psmallmatrix} A_S^\top A_S & \cdot \\ 0 & I\end{psmallmatrix}$ on the support $S$ (plus a
rank-one term for the residual rule), invertible when $A_S$ has full column rank. So the implicit
derivative is the LASSO's: $\partial x_S^*/\partial\lambda = -(A_S^\top A_S)^{-1}\operatorname{sign}(x_S^*)$.

The problem must be ``LinearLeastSquares(A, y)`` with a dense ``A`` (AMP's Onsager term is derived
for i.i.d.-like matrices and needs their normalisation; a matrix-free operator is refused) or
``Composite(LinearLeastSquares(A, y), L1(lam))``.

References: D. L. Donoho, A. Maleki, A. Montanari, "Message-passing algorithms for compressed
sensing", PNAS 106 (2009) 18914-18919; M. Bayati, A. Montanari, "The dynamics of message passing
on dense graphs, with applications to compressed sensing", IEEE Trans. Inf. Theory 57 (2011)
764-785; A. Montanari, "Graphical models concepts in compressed sensing", in *Compressed Sensing:
Theory and Applications*, CUP 2012; M. Bayati, A. Montanari, "The LASSO risk for Gaussian
matrices", IEEE Trans. Inf. Theory 58 (2012) 1997-2017; M. Borgerding, P. Schniter, S. Rangan,
"AMP-inspired deep networks for sparse linear inverse problems", IEEE Trans. Signal Process. 65
(2017) 4293-4308.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._misc import check_number
from .._solution import RESULTS
from .._validate import device_array
from ..priors import L1, soft_threshold
from ._base import AbstractIterativeSolver
from ._mode import Converged
from ._problem import Composite, LinearLeastSquares

__all__ = ["AMP", "THRESHOLD_RULES"]

THRESHOLD_RULES = ("auto", "lasso", "residual")

BORGERDING_ALPHA = 1.1402
"""The threshold multiplier of Borgerding, Schniter & Rangan's AMP baseline (their ``ista_fista_amp.m``)."""

_NORMALISATION_TOLERANCE = 0.25  # |‖A‖_F²/N - 1| above this is refused


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class _State(eqx.Module):
    x: jax.Array  # x_k
    z: jax.Array  # z_k (Onsager-corrected residual)
    theta: jax.Array  # lasso rule: the threshold of the next step; residual rule: the last one used
    change: jax.Array  # ‖x_k - x_{k-1}‖ (inf at the start)
    cost: jax.Array
    residual_norm: jax.Array  # ‖y - A x_k‖


class AMP(AbstractIterativeSolver):
    r"""Approximate message passing with soft thresholding for $\min_x \tfrac12\|Ax-y\|^2 + \lambda\|x\|_1$.

    See the module docstring for the iteration, the threshold rules and the optimality residual.

    **Arguments:**

    - ``threshold_rule``: ``"auto"`` (default), ``"lasso"`` or ``"residual"``.
    - ``alpha``: the default threshold multiplier $\alpha$ of the residual rule (default 1.1402,
      Borgerding et al.'s value); per-iteration parameters override it (learnable when unrolled).

    **Parameters** (``params``): $\alpha$, a scalar per iteration.

    Converged mode stops when $\|x_{k+1} - x_k\| \le \mathrm{atol} + \mathrm{rtol}\,\|x_{k+1}\|$;
    a non-finite iterate ends it with ``RESULTS.nonfinite``.
    """

    name: ClassVar[str] = "amp"
    symmetric_optimality: ClassVar[bool] = False

    threshold_rule: str = "auto"
    alpha: float = BORGERDING_ALPHA

    def __check_init__(self):
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"AMP: unknown threshold_rule {self.threshold_rule!r}; valid are {list(THRESHOLD_RULES)}")
        check_number("AMP: alpha", self.alpha, allow_minimum=False)

    # -- the problem -----------------------------------------------------------------------------

    def _parts(self, problem) -> tuple[LinearLeastSquares, L1 | None, str]:
        """The least-squares part, the L1 prior (or None) and the resolved threshold rule; static checks."""
        if isinstance(problem, Composite):
            smooth, prior = problem.smooth, problem.regularizer
        else:
            smooth, prior = problem, None
        if not isinstance(smooth, LinearLeastSquares):
            raise TypeError(
                f"AMP solves min 1/2||A x - y||^2 (+ lam ||x||_1): the problem must be LinearLeastSquares(A, y) or "
                f"Composite(LinearLeastSquares(A, y), L1(lam)), got {type(problem).__name__}"
                + (f" around {type(smooth).__name__}" if isinstance(problem, Composite) else "")
            )
        if prior is not None and not isinstance(prior, L1):
            raise TypeError(
                f"AMP's denoiser is soft thresholding, the proximal map of the L1 prior; got the prior "
                f"{type(prior).__name__}: use priors.L1(lam), or a proximal-gradient solver for other priors"
            )
        if not smooth.is_matrix:
            raise ValueError(
                "AMP needs the matrix A, not a matrix-free operator: its Onsager correction and normalisation "
                "assume a dense i.i.d.-like matrix; pass LinearLeastSquares(A_matrix, y) (e.g. jax.jacfwd of "
                "your operator), or use a proximal-gradient solver with the matrix-free operator"
            )
        rule = self.threshold_rule
        if rule == "auto":
            rule = "residual" if prior is None else "lasso"
        if rule == "lasso" and prior is None:
            raise ValueError(
                "AMP(threshold_rule='lasso') calibrates its thresholds to the prior's lambda, but the problem has "
                "no prior: use Composite(LinearLeastSquares(A, y), L1(lam)) or threshold_rule='residual'"
            )
        return smooth, prior, rule

    def check_problem(self, problem, x0) -> None:
        smooth, prior, _ = self._parts(problem)
        a = smooth.operator
        if _is_concrete(a):
            m, n = a.shape
            measure = float(np.sum(np.square(np.asarray(a, dtype=np.float64)))) / n
            if not abs(measure - 1.0) <= _NORMALISATION_TOLERANCE:
                raise ValueError(
                    f"AMP needs a matrix with columns of about unit norm (||A||_F^2 / N close to 1, as for i.i.d. "
                    f"N(0, 1/M) entries); got ||A||_F^2 / N = {measure:.4g} for A of shape ({m}, {n}). Normalise it: "
                    f"use A / sqrt(||A||_F^2 / N) (for i.i.d. N(0, 1) entries, A / sqrt(M) = A / {np.sqrt(m):.4g}); "
                    f"the normalised problem's solution is x * sqrt(||A||_F^2 / N)"
                )
        if prior is not None and _is_concrete(prior.weight):
            if not np.all(np.asarray(prior.weight) >= 0):
                raise ValueError(f"AMP: the L1 weight (lambda) must be >= 0, got {np.asarray(prior.weight)!r}")

    # -- the iteration ---------------------------------------------------------------------------

    def default_params(self, x0):
        return device_array(self.alpha, jnp.result_type(x0))

    def _cost(self, smooth, prior, x):
        r = smooth.data - smooth.matvec(x)
        cost = 0.5 * jnp.vdot(r, r)
        if prior is not None:
            cost = cost + prior.value(x)
        return cost, jnp.linalg.norm(r)

    def init(self, problem, x0, params) -> _State:
        smooth, prior, rule = self._parts(problem)
        x0 = jnp.asarray(x0)
        z = smooth.data - smooth.matvec(x0)
        dtype = z.dtype
        if rule == "lasso":
            # theta_0 = lambda (AMP.A's gamma_0 = 0), as an array of the threshold's shape.
            theta = jnp.broadcast_to(prior.weight, jnp.shape(prior.weight)).astype(dtype)
        else:
            theta = params * jnp.linalg.norm(z) / jnp.sqrt(z.shape[0])
        cost, rnorm = self._cost(smooth, prior, x0)
        return _State(x0, z, theta, jnp.asarray(jnp.inf, dtype), cost, rnorm)

    def step(self, problem, state: _State, params) -> _State:
        smooth, prior, rule = self._parts(problem)
        m = smooth.data.shape[0]
        pseudo = state.x + smooth.rmatvec(state.z)
        theta = state.theta if rule == "lasso" else params * jnp.linalg.norm(state.z) / jnp.sqrt(m)
        x = soft_threshold(pseudo, theta)
        # (N/M) <eta'> = ||x_{k+1}||_0 / M (the soft threshold's derivative is the indicator |r| > theta).
        omega = jnp.sum(jnp.abs(pseudo) > theta).astype(x.dtype) / m
        z = smooth.data - smooth.matvec(x) + omega * state.z
        theta_next = prior.weight + omega * theta if rule == "lasso" else theta
        cost, rnorm = self._cost(smooth, prior, x)
        return _State(x, z, theta_next, jnp.linalg.norm(x - state.x), cost, rnorm)

    def terminate(self, problem, state: _State, mode: Converged):
        finite = jnp.isfinite(state.cost) & jnp.all(jnp.isfinite(state.z)) & jnp.all(jnp.isfinite(state.x))
        converged = state.change <= mode.atol + mode.rtol * jnp.linalg.norm(state.x)
        return converged | ~finite, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)

    def value(self, state: _State):
        return state.x

    def records(self, state: _State) -> dict[str, jax.Array]:
        m = state.z.shape[0]
        return {"cost": state.cost, "residual_norm": state.residual_norm,
                "sigma": jnp.linalg.norm(state.z) / jnp.sqrt(m), "threshold": jnp.mean(state.theta)}

    def optimality_residual(self, problem, x, params):
        smooth, prior, rule = self._parts(problem)
        r = smooth.matvec(x) - smooth.data
        if rule == "lasso":
            lam = prior.weight
        else:
            lam = params * jnp.linalg.norm(r) / jnp.sqrt(r.shape[0])
        return x - soft_threshold(x - smooth.rmatvec(r), lam)
