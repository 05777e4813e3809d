r"""The state evolution of AMP with soft thresholding for a Bernoulli–Gaussian signal.

For $A$ with i.i.d. $\mathcal N(0, 1/M)$ entries, $M, N \to \infty$ at $\delta = M/N$, and noise of
variance $\sigma_w^2$, the pseudo-data of :class:`~diffphys.solvers.AMP` at iteration $k$ is
distributed as the signal plus Gaussian noise of variance $\tau_k^2$, with

$$\tau_{k+1}^2 = \sigma_w^2 + \frac1\delta\,\mathbb E\big[(\eta(X + \tau_k Z;\ \alpha_k\tau_k) - X)^2\big],
\qquad \tau_0^2 = \sigma_w^2 + \frac{\mathbb E[X^2]}{\delta}\quad(x_0 = 0),$$

$Z \sim \mathcal N(0, 1)$ independent of $X$, and the mean squared error of $x_{k+1}$ is the
expectation above (Donoho, Maleki & Montanari 2009; Bayati & Montanari 2011, Theorem 1).

For $X = B\,G$, $B \sim \mathrm{Bernoulli}(p)$, $G \sim \mathcal N(0, v)$ the expectation is
evaluated in closed form (exact to rounding), not by quadrature: with $Q$ the Gaussian tail and
$\varphi$ the density,

- zero entries: $\mathbb E[\eta(\tau Z;\theta)^2] = 2[\tau^2(a\varphi(a) + Q(a)) - 2\tau\theta\varphi(a) + \theta^2 Q(a)]$, $a = \theta/\tau$;
- Gaussian entries: with $U = X + \tau Z \sim \mathcal N(0, s^2)$, $s^2 = v + \tau^2$, $X \mid U \sim
  \mathcal N(cU, v\tau^2/s^2)$, $c = v/s^2$, so the error is $\mathbb E[(\eta(U) - cU)^2] + v\tau^2/s^2$,
  a piecewise quadratic in $U$ integrated by truncated Gaussian moments.

(Gauss–Hermite quadrature of the kinked integrand converges only algebraically and fails when
$\tau$ is far below the node spacing, as at −35 dB; the tests check the closed form against
nested adaptive quadrature.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._misc import check_int, check_number

__all__ = ["StateEvolution", "amp_state_evolution", "soft_threshold_mse"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _tail(t: float) -> float:
    """$Q(t) = P(Z > t)$, accurate in the far tail."""
    return 0.5 * math.erfc(t / _SQRT2)


def _density(t: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * t * t)


def _upper(a: float, theta: float, t: float) -> float:
    r"""$\mathbb E[(a W - \theta)^2 \mathbb 1\{W > t\}]$ for $W \sim \mathcal N(0, 1)$."""
    q, phi = _tail(t), _density(t)
    return a * a * (t * phi + q) - 2.0 * a * theta * phi + theta * theta * q


def soft_threshold_mse(tau: float, theta: float, sparsity: float, signal_variance: float = 1.0) -> float:
    r"""$\mathbb E[(\eta(X + \tau Z;\theta) - X)^2]$ for a Bernoulli($p$)–Gaussian($0, v$) $X$ (closed form).

    **Arguments:** ``tau`` $> 0$, ``theta`` $\ge 0$, ``sparsity`` $p \in [0, 1]$,
    ``signal_variance`` $v > 0$. **Returns:** the mean squared error per entry.
    """
    tau, theta = float(tau), float(theta)
    # zero entries: eta(tau Z)^2, symmetric in Z
    a = theta / tau
    zero = 2.0 * _upper(tau, theta, a)
    # Gaussian entries: E[(eta(U) - cU)^2] + v tau^2 / s^2, U = s W
    s2 = signal_variance + tau * tau
    s = math.sqrt(s2)
    c = signal_variance / s2
    t = theta / s
    outside = 2.0 * _upper((1.0 - c) * s, theta, t)  # |U| > theta: (1-c)U - theta sign(U)
    inside = c * c * s2 * ((1.0 - 2.0 * _tail(t)) - 2.0 * t * _density(t))  # |U| <= theta: -cU
    gaussian = outside + inside + signal_variance * tau * tau / s2
    return (1.0 - sparsity) * zero + sparsity * gaussian


class StateEvolution(NamedTuple):
    """The state evolution's prediction: ``tau2[k]`` ($\\tau_k^2$, the pseudo-data's noise variance at
    iteration k) and ``nmse[k]`` (the normalised mean squared error of $x_k$, ``nmse[0] = 1``); k = 0..K."""

    tau2: np.ndarray
    nmse: np.ndarray

    @property
    def nmse_db(self) -> np.ndarray:
        return 10.0 * np.log10(self.nmse)


def amp_state_evolution(delta: float, sparsity: float, noise_variance: float, alphas, *, iterations: int | None = None,
                        signal_variance: float = 1.0) -> StateEvolution:
    r"""AMP's state evolution for soft thresholding at $\theta_k = \alpha_k\tau_k$ (see the module docstring).

    **Arguments:**

    - ``delta``: $\delta = M/N$ (measurements per unknown), $> 0$.
    - ``sparsity``: $p = P(X \ne 0)$, the fraction of non-zero entries (Donoho et al.'s
      $\varepsilon = \rho\delta$), in $[0, 1]$.
    - ``noise_variance``: $\sigma_w^2 \ge 0$ per measurement.
    - ``alphas``: the threshold multipliers, a scalar (then ``iterations`` is needed) or one per
      iteration.
    - ``signal_variance``: $v$, the variance of the non-zero entries (default 1).

    **Returns:** a :class:`StateEvolution` with ``tau2`` and ``nmse`` of length $K + 1$.
    """
    check_number("amp_state_evolution: delta", delta, allow_minimum=False)
    check_number("amp_state_evolution: noise_variance", noise_variance)
    check_number("amp_state_evolution: signal_variance", signal_variance, allow_minimum=False)
    if not (isinstance(sparsity, (int, float, np.number)) and 0.0 < sparsity <= 1.0):
        raise ValueError(f"amp_state_evolution: sparsity must be in (0, 1], got {sparsity!r}")
    alphas = np.asarray(alphas, dtype=float)
    if alphas.ndim == 0:
        if iterations is None:
            raise ValueError("amp_state_evolution: a scalar alpha needs iterations=K")
        alphas = np.full(check_int("amp_state_evolution: iterations", iterations), float(alphas))
    elif alphas.ndim != 1 or (iterations is not None and len(alphas) != iterations):
        raise ValueError(f"amp_state_evolution: alphas must be a scalar or one per iteration, got shape {alphas.shape}")
    if not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise ValueError(f"amp_state_evolution: alphas must be finite and >= 0, got {alphas!r}")
    energy = sparsity * signal_variance
    tau2 = [noise_variance + energy / delta]
    nmse = [1.0]
    for alpha in alphas:
        tau = math.sqrt(tau2[-1])
        mse = soft_threshold_mse(tau, alpha * tau, sparsity, signal_variance)
        nmse.append(mse / energy)
        tau2.append(noise_variance + mse / delta)
    return StateEvolution(np.asarray(tau2), np.asarray(nmse))
