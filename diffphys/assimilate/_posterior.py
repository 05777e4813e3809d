r"""The Gauss–Newton (Laplace) posterior of strong-constraint 4D-Var, matrix-free and low-rank.

Around an analysis $v^\ast$ the 4D-Var posterior of the whitened control is approximated by the
Gaussian whose precision is the Gauss–Newton Hessian of $J(v) = \tfrac12\|v\|^2 + \tfrac12\|r_o(v)\|^2$:

$$H = I + J_o^\top J_o,\qquad J_o = \partial r_o/\partial v\,\big|_{v^\ast},$$

exact for a linear model and observation operator. $J_o^\top J_o$ (the prior-preconditioned
data-misfit Hessian) has rank at most the number of readings, so with its dominant eigenpairs
$J_o^\top J_o \approx V\Lambda V^\top$ (orthonormal $V$, $k$ columns)

$$H^{-1} = I - V D V^\top,\quad D = \operatorname{diag}\frac{\lambda_i}{1+\lambda_i},\qquad
  H^{-1/2} = I - V\,\operatorname{diag}\Big(1 - \frac{1}{\sqrt{1+\lambda_i}}\Big) V^\top,$$

and the posterior covariance of the control field $z = z_b + B^{1/2} v$ is
$\Gamma = B^{1/2} H^{-1} B^{\top/2}$, whose diagonal is
$\operatorname{diag}(B) - \sum_i d_i\,(B^{1/2} v_i)^2$: the prior variance less what the data explain.
The eigenpairs come from the singular value decomposition of $J_o$, built either exactly (one
adjoint run per reading, or one tangent-linear run per control, whichever is fewer) or by a
randomized range finder of rank $k$ (tangent-linear and adjoint runs, $k$ + oversampling of each).
A truncated spectrum drops the smallest reductions, so its variances are never below the exact ones.

References: T. Bui-Thanh, O. Ghattas, J. Martin, G. Stadler, "A computational framework for
infinite-dimensional Bayesian inverse problems Part I", SIAM J. Sci. Comput. 35 (2013) A2494-A2523
(low-rank update of the prior covariance, pointwise variance); N. Halko, P.-G. Martinsson,
J. A. Tropp, "Finding structure with randomness", SIAM Rev. 53 (2011) 217-288 (Algorithms 4.4 and 5.1).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._misc import check_int
from .._types import PyTree
from ._fourdvar import _TRANSFORMS, InitialState, Joint, StrongConstraint4DVar

__all__ = ["Posterior", "posterior"]


class Posterior(eqx.Module):
    r"""The Gaussian posterior $\mathcal N(v^\ast, H^{-1})$ of a 4D-Var control, $H^{-1} = I - VDV^\top$.

    Made by :func:`posterior`. ``eigenvalues`` $\lambda_i$ and orthonormal ``eigenvectors`` (columns,
    flattened control) are those of $J_o^\top J_o$ at the analysis; ``complete`` says whether every
    non-zero eigenvalue is among them (then the covariance is exact for the linearised problem).
    """

    problem: StrongConstraint4DVar
    analysis: PyTree
    eigenvalues: Float[Array, " k"]
    eigenvectors: Float[Array, "n k"]
    complete: bool = eqx.field(static=True)

    def _unravel(self, flat):
        return ravel_pytree(self.analysis)[1](flat)

    @eqx.filter_jit
    def control_std(self) -> PyTree:
        r"""The posterior standard deviation of the control field $z$, shaped like the background.

        $\sqrt{\operatorname{diag}(B) - \sum_i d_i (B^{1/2} v_i)^2}$ per part of the control.
        """
        d = self.eigenvalues / (1.0 + self.eigenvalues)
        columns = jax.vmap(lambda column: self._field_increment(self._unravel(column)), in_axes=1)(self.eigenvectors)
        parts = _parts(self.problem)
        reduction = [jnp.tensordot(d, c**2, axes=1) for c in (columns if isinstance(columns, tuple) else (columns,))]
        std = tuple(jnp.sqrt(jnp.maximum(cov.variance - r, 0.0)) for (cov, _), r in zip(parts, reduction))
        return std if isinstance(self.problem.control_map, Joint) else std[0]

    def _field_increment(self, v):
        """$B^{1/2} v$, part by part."""
        parts = _parts(self.problem)
        out = tuple(cov.sqrt(vp) for (cov, _), vp in zip(parts, v if len(parts) > 1 else (v,)))
        return out if len(parts) > 1 else out[0]

    @eqx.filter_jit
    def std(self) -> PyTree:
        r"""The posterior standard deviation of the estimated physical field(s).

        The initial state's for an :class:`InitialState` control; a parameter's $p = T(z)$ by the
        delta method, $|T'(z^\ast)|\,\sigma_z$ (for ``transform="log"``, $p^\ast\sigma_z$: the same
        linearisation as the Gauss–Newton Hessian). A tuple (state, parameters...) for :class:`Joint`.
        """
        control_map, z = self.problem.control_map, self.problem.control(self.analysis)
        std = self.control_std()
        if isinstance(control_map, Joint):
            return tuple(_physical(c, zp, s) for c, zp, s in zip((control_map.state, *control_map.parameters), z, std))
        return _physical(control_map, z, std)

    def sample(self, key: jax.Array, num: int) -> PyTree:
        r"""``num`` draws of the control increment $v \sim \mathcal N(v^\ast, H^{-1})$, stacked on a leading axis.

        $v = v^\ast + H^{-1/2}\xi$, $\xi \sim \mathcal N(0, I)$; map them with ``problem.initial_state`` /
        ``problem.model_for`` and roll them out for the spread of a trajectory.
        """
        num = check_int("Posterior.sample: num", num)
        flat, unravel = ravel_pytree(self.analysis)
        xi = jax.random.normal(key, (num, flat.size), flat.dtype)
        return jax.vmap(lambda x: unravel(flat + self.sqrt_covariance(x)))(xi)

    def sqrt_covariance(self, xi: Float[Array, " n"]) -> Float[Array, " n"]:
        r"""$H^{-1/2}\xi = \xi - V\operatorname{diag}(1 - 1/\sqrt{1+\lambda})V^\top\xi$ on the flattened control."""
        shrink = 1.0 - 1.0 / jnp.sqrt(1.0 + self.eigenvalues)
        return xi - self.eigenvectors @ (shrink * (self.eigenvectors.T @ xi))


def _parts(problem):
    """``(B, background)`` per control part."""
    if isinstance(problem.control_map, Joint):
        return tuple(zip(problem.B, problem.background))
    return ((problem.B, problem.background),)


def _physical(control, z, std):
    if isinstance(control, InitialState) or control.transform == "identity":
        return std
    forward = getattr(jnp, _TRANSFORMS[control.transform][0])  # the transform's jax.numpy function, e.g. exp
    slope = jax.vmap(jax.grad(forward))(jnp.ravel(z)).reshape(jnp.shape(z))
    return jnp.abs(slope) * std


def posterior(
    problem: StrongConstraint4DVar,
    analysis: PyTree,
    *,
    rank: int | None = None,
    key: jax.Array | None = None,
    oversampling: int = 10,
    power_iterations: int = 1,
    batch_size: int = 32,
) -> Posterior:
    r"""The Gauss–Newton posterior of ``problem`` around the control increment ``analysis``.

    **Arguments:**

    - ``problem``: a :class:`StrongConstraint4DVar` with a Gaussian background (a ``B``) on every
      control part; ``analysis``: its solution's ``value`` (the increment $v^\ast$).
    - ``rank``: ``None`` (default) for the whole spectrum, built exactly from $\min(m, n)$ adjoint or
      tangent-linear runs ($m$ present readings, $n$ controls); an integer $k$ for a randomized
      rank-$k$ approximation ($k$ + ``oversampling`` runs of each, plus two per power iteration),
      which needs ``key``. Use it when $m$ and $n$ are both large.
    - ``batch_size``: how many tangent-linear/adjoint runs go through the model together (memory).

    Returns a :class:`Posterior`; ``.std()`` is the standard deviation of the estimated field.
    """
    name = "posterior"
    if not isinstance(problem, StrongConstraint4DVar):
        raise TypeError(f"{name}: problem must be a StrongConstraint4DVar, got {type(problem).__name__}")
    missing = [i for i, (cov, _) in enumerate(_parts(problem)) if cov is None]
    if missing:
        raise ValueError(
            f"{name}: control part(s) {missing} have no background covariance B, so the posterior is not Gaussian; "
            "the Laplace approximation needs a B for every part"
        )
    expected = jax.tree_util.tree_structure(problem.zero_control())
    if jax.tree_util.tree_structure(analysis) != expected or any(
        jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree_util.tree_leaves(analysis),
                                                      jax.tree_util.tree_leaves(problem.zero_control()))
    ):
        raise ValueError(f"{name}: analysis must be shaped like problem.zero_control(), got {analysis!r:.200}")
    if not all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(analysis)):
        raise ValueError(f"{name}: the analysis has non-finite values; there is no posterior around it")
    batch_size = check_int(f"{name}: batch_size", batch_size)
    n = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(analysis))
    if rank is None:
        present = np.flatnonzero(np.asarray(problem.mask))
        values, vectors = _exact_spectrum(problem, analysis, present, batch_size)
        complete = True
    else:
        rank = check_int(f"{name}: rank", rank)
        oversampling = check_int(f"{name}: oversampling", oversampling, minimum=0)
        power_iterations = check_int(f"{name}: power_iterations", power_iterations, minimum=0)
        if key is None:
            raise ValueError(f"{name}: a randomized rank-{rank} posterior needs key=jax.random.key(...)")
        width = min(rank + oversampling, n)
        values, vectors = _randomized_spectrum(problem, analysis, key, width, power_iterations, batch_size)
        values, vectors = values[:rank], vectors[:, :rank]
        complete = False
    return Posterior(problem, analysis, values, vectors, complete)


def _linearised_observations(problem, analysis):
    """The observation residuals' Jacobian at ``analysis`` on the flattened control: ``(J_o x, J_oᵀ y)``."""
    flat, unravel = ravel_pytree(analysis)
    residuals = lambda x: problem.observation_residuals(unravel(x))
    _, tangent = jax.linearize(residuals, flat)
    adjoint = jax.linear_transpose(tangent, flat)
    return tangent, lambda y: adjoint(y)[0]


def _columns(linear, inputs, batch_size):
    """``linear`` applied to each column of ``inputs``, ``batch_size`` runs at a time; columns out.

    The columns are padded with zeros to whole batches, each batch one vectorised run. (Not
    ``lax.map(..., batch_size=...)``: its remainder batch makes XLA:CPU 0.10 give a batched FFT, such as
    DiffusionB's DCT, an input layout that its FFT kernel rejects.)
    """
    count = inputs.shape[1]
    batch_size = min(batch_size, count)
    padded = jnp.pad(inputs.T, ((0, -count % batch_size), (0, 0)))
    out = jax.lax.map(jax.vmap(linear), padded.reshape(-1, batch_size, padded.shape[1]))
    return out.reshape(-1, out.shape[-1])[:count].T


def _exact_spectrum(problem, analysis, present, batch_size):
    """Eigenpairs of $J_o^\\top J_o$ from the dense $J_o$: the ``present`` rows by adjoint runs, or columns by
    tangent runs, whichever are fewer."""
    return _spectrum(_dense_jacobian(problem, analysis, present, batch_size))


def _spectrum(matrix):
    r"""Eigenpairs $(\sigma_i^2, v_i)$ of $A^\top A$ from the thin SVD $A = U\Sigma V^\top$, by LAPACK on the host.

    The factorisations run in NumPy: the matrices are small (at most a few hundred rows), and XLA
    would compile an SVD program (about a second) for each shape a run meets.
    """
    _, singular, right = np.linalg.svd(np.asarray(matrix), full_matrices=False)
    dtype = jnp.result_type(matrix)
    return jnp.asarray(singular**2, dtype), jnp.asarray(right.T, dtype)


def _orthonormal_basis(matrix):
    """An orthonormal basis of the columns of ``matrix`` (thin QR by LAPACK on the host, see :func:`_spectrum`)."""
    return jnp.asarray(np.linalg.qr(np.asarray(matrix))[0], jnp.result_type(matrix))


@eqx.filter_jit
def _dense_jacobian(problem, analysis, present, batch_size):
    """$J_o$ (its present rows), one compiled program.

    The factorisations stay out of it: inside one program with the model's batched runs, XLA:CPU 0.10
    lays out a DCT's input (DiffusionB) in an order its FFT kernel rejects.
    """
    tangent, adjoint = _linearised_observations(problem, analysis)
    n = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(analysis))
    if present.size <= n:  # J_o's present rows, one adjoint run each (the missing rows are zero)
        rows = jnp.zeros((problem.mask.size, present.size)).at[present, jnp.arange(present.size)].set(1.0)
        return _columns(adjoint, rows, batch_size).T
    return _columns(tangent, jnp.eye(n), batch_size)


@eqx.filter_jit
def _apply(problem, analysis, inputs, transpose, batch_size):
    """$J_o$ (or $J_o^\\top$) applied to the columns of ``inputs``: one compiled program per direction."""
    tangent, adjoint = _linearised_observations(problem, analysis)
    return _columns(adjoint if transpose else tangent, inputs, batch_size)


def _randomized_spectrum(problem, analysis, key, width, power_iterations, batch_size):
    """Halko et al. (2011) Algorithm 4.4 (subspace iteration) then 5.1 (SVD of $Q^\\top J_o$)."""
    n = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(analysis))
    probes = jax.random.normal(key, (n, width))
    basis = _orthonormal_basis(_apply(problem, analysis, probes, False, batch_size))
    for _ in range(power_iterations):
        back = _orthonormal_basis(_apply(problem, analysis, basis, True, batch_size))
        basis = _orthonormal_basis(_apply(problem, analysis, back, False, batch_size))
    projected = _apply(problem, analysis, basis, True, batch_size).T  # Qᵀ J_o, (width, n)
    return _spectrum(projected)
