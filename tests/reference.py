"""Independent reference implementations the tests (and ``benchmarks/bench_implicit.py``) compare against.

They live with the tests, not in the package: a reference is never the package's own helper. The
benchmarks import this file by putting ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["cg_unrolled", "diffusion_filter_explicit", "lasso_coordinate_descent", "lasso_data"]


def cg_unrolled(matvec: Callable, b, iterations: int, inverse_diagonal=None):
    r"""Exactly ``iterations`` steps of (Jacobi-preconditioned) CG, differentiated *through* the iterations.

    The naive alternative to :func:`diffphys.solve_linear`, the reference for tests and benchmarks:
    reverse mode stores every iterate, so gradient memory grows linearly with ``iterations``, and
    the gradient is that of the truncated iteration (it equals the implicit one only when the
    iteration has converged). ``matvec`` must be symmetric positive definite; ``b`` an array.

    $$x_0 = 0,\ r_0 = b,\ p_0 = z_0 = M^{-1}r_0;\quad \alpha_k = \frac{r_k^\top z_k}{p_k^\top A p_k},\
      x_{k+1} = x_k + \alpha_k p_k,\ r_{k+1} = r_k - \alpha_k A p_k,\
      p_{k+1} = z_{k+1} + \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k} p_k.$$

    Reference: M. R. Hestenes, E. Stiefel, "Methods of conjugate gradients for solving linear
    systems", J. Res. Natl. Bur. Stand. 49 (1952) 409-436.
    """
    m_inv = (lambda r: r) if inverse_diagonal is None else (lambda r: inverse_diagonal * r)
    x = jnp.zeros_like(b)
    r = b
    z = m_inv(r)
    p = z
    rz = jnp.vdot(r, z)

    # Iterations stop updating once r·z has fallen by ε⁴ (well past round-off in x, so that its
    # derivative has converged too): dividing by the
    # underflowing r·z and p·Ap would make the reverse pass overflow to NaN.
    # In float32 the reverse pass's 1/(r·z)² overflows first, so the floor is sqrt(tiny) there.
    info = jnp.finfo(b.dtype)
    floor = lax.stop_gradient(max(float(info.eps) ** 4, float(info.tiny) ** 0.5) * rz)

    def body(carry, _):
        x, r, p, rz = carry
        active = rz > floor
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(active, rz / jnp.where(active, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = m_inv(r)
        rz_new = jnp.vdot(r, z)
        p = jnp.where(active, z + rz_new / jnp.where(active, rz, 1.0) * p, p)
        return (x, r, p, jnp.where(active, rz_new, rz)), None

    (x, _, _, _), _ = lax.scan(body, (x, r, p, rz), None, length=iterations)
    return x


def lasso_data(M: int, N: int, nonzeros: int = 6, noise: float = 0.01, seed: int = 0):
    """A small lasso test problem: A with i.i.d. N(0, 1/M) entries, a sparse x, y = A x + noise."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(M, N)) / np.sqrt(M)
    x_true = np.zeros(N)
    x_true[rng.choice(N, nonzeros, replace=False)] = rng.normal(size=nonzeros)
    y = A @ x_true + noise * rng.normal(size=M)
    return A, y


def lasso_coordinate_descent(A, y, lam, sweeps=5000, nonnegative=False):
    """Cyclic coordinate descent for ½‖Ax − y‖² + λ‖x‖₁ (+ x ≥ 0) (Friedman et al. 2007): an independent algorithm."""
    x = np.zeros(A.shape[1])
    r = y.copy()
    norms = np.sum(A**2, axis=0)
    for _ in range(sweeps):
        change = 0.0
        for j in range(A.shape[1]):
            rho = A[:, j] @ r + norms[j] * x[j]
            new = (max(rho - lam, 0.0) if nonnegative else np.sign(rho) * max(abs(rho) - lam, 0.0)) / norms[j]
            r += A[:, j] * (x[j] - new)
            change = max(change, abs(new - x[j]))
            x[j] = new
        if change < 1e-15:
            break
    return x


def diffusion_filter_explicit(u, spacing, alphas, steps, periodic):
    r"""$G u = \prod_a (I + \alpha_a \Delta_a)^{M_a} u$ by explicit 3-point sweeps, in NumPy.

    The direct definition of :class:`diffphys.observe.DiffusionB`'s filter, which the package applies
    spectrally: along each axis $M_a$ steps $u \leftarrow u + \alpha_a (u_{i+1} - 2u_i + u_{i-1})/h_a^2$,
    periodic (wrapping) or with zero-flux walls (mirror ghost cells $u_{-1} = u_0$, $u_n = u_{n-1}$).
    """
    u = np.asarray(u, dtype=float)
    for axis, (h, alpha, m, wrap) in enumerate(zip(spacing, alphas, steps, periodic)):
        for _ in range(m):
            nxt, prv = np.roll(u, -1, axis=axis), np.roll(u, 1, axis=axis)
            if not wrap:
                last = [slice(None)] * u.ndim
                first = [slice(None)] * u.ndim
                last[axis], first[axis] = -1, 0
                nxt[tuple(last)] = u[tuple(last)]
                prv[tuple(first)] = u[tuple(first)]
            u = u + alpha * (nxt - 2.0 * u + prv) / h**2
    return u
