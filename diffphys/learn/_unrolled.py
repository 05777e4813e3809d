r"""Learned (unrolled) solvers: $K$ iterations of a core solver as layers with learnable per-iteration parameters.

$$v_0 = x_0,\qquad v_{k+1} = \mathrm{step}(p, v_k; \phi_k),\quad k = 0,\dots,K-1,\qquad S_\phi(p) = v_K,$$

for a problem $p$ and any unrollable :class:`~diffphys.solvers.AbstractIterativeSolver` (e.g.
``GaussNewton(globalization="none")``: $\phi_k = (\log\lambda_k, \alpha_k)$, the damping and step
length of layer $k$). This is :func:`~diffphys.solvers.iterate` in ``Unrolled(K)`` mode with the
parameters held in a module, so that :func:`train_unrolled_solver` can learn them over a
distribution of problems with the one training loop (:func:`~diffphys.learn.fit`) and the losses of
:func:`~diffphys.learn.unrolled_solver_loss`.

References: K. Gregor, Y. LeCun, "Learning fast approximations of sparse coding", ICML 2010;
V. Monga, Y. Li, Y. C. Eldar, "Algorithm unrolling: interpretable, efficient deep learning for
signal and image processing", IEEE Signal Process. Mag. 38 (2021) 18-44; J. Adler, O. Öktem,
"Solving ill-posed inverse problems using iterative deep neural networks", Inverse Problems 33
(2017) 124007.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .. import adjoint as adjoints
from .._misc import check_int
from ..solvers import AbstractIterativeSolver, Unrolled, iterate, stack_params
from ._fit import TrainingHistory, fit
from ._losses import SOLVER_LOSSES, unrolled_solver_loss

__all__ = ["UnrolledSolver", "stack_problems", "train_unrolled_solver"]


class UnrolledSolver(eqx.Module):
    r"""Exactly $K$ iterations of ``solver`` with learnable per-iteration parameters (see the module docstring).

    **Arguments:**

    - ``solver``: an unrollable :class:`~diffphys.solvers.AbstractIterativeSolver` (its settings are
      static configuration), e.g. ``GaussNewton(globalization="none", damping=1e-2)``.
    - ``iterations``: $K \ge 1$.
    - ``params``: the per-iteration parameters, a pytree whose every leaf has leading axis $K$
      (the learnable arrays); default ``solver.default_params`` repeated $K$ times (for a solver
      whose parameters depend on the control's shape, give
      ``stack_params(solver.default_params(problem.zero_control()), K)``).
    - ``adjoint``: how the layers are differentiated: :class:`~diffphys.adjoint.Checkpointed`
      (default ``every=1``: one stored state per layer) or :class:`~diffphys.adjoint.Direct`.

    Calling it, ``unrolled(problem, x0=None)``, returns $v_K$ (differentiable with respect to the
    problem and ``params``).
    """

    solver: AbstractIterativeSolver = eqx.field(static=True)
    params: Any
    adjoint: adjoints.AbstractAdjoint = eqx.field(static=True)

    def __init__(self, solver: AbstractIterativeSolver, iterations: int, params=None,
                 adjoint: adjoints.AbstractAdjoint = adjoints.Checkpointed(every=1)):
        if not isinstance(solver, AbstractIterativeSolver):
            raise TypeError(f"UnrolledSolver: solver must be an AbstractIterativeSolver (e.g. "
                            f"GaussNewton(globalization='none')), got {type(solver).__name__}")
        iterations = check_int("UnrolledSolver: iterations", iterations)
        if not solver.unrollable:
            raise ValueError(f"UnrolledSolver: {solver.not_unrollable_reason()}")
        adjoints.check_loop_adjoint("UnrolledSolver", adjoint)
        if params is None:
            params = stack_params(solver.default_params(jnp.zeros((), jnp.result_type(float))), iterations)
        lengths = {jnp.shape(p)[0] if jnp.ndim(p) else None for p in jax.tree_util.tree_leaves(params)}
        if lengths != {iterations}:
            raise ValueError(
                f"UnrolledSolver: every parameter needs a leading axis of length iterations={iterations} (one entry "
                f"per layer); got leading sizes {sorted(lengths, key=str)}"
            )
        self.solver, self.params, self.adjoint = solver, params, adjoint

    @property
    def iterations(self) -> int:
        return jax.tree_util.tree_leaves(self.params)[0].shape[0]

    def __call__(self, problem, x0=None):
        """$v_K$: the iterate after the $K$ layers, from ``x0`` (default ``problem.zero_control()``)."""
        return iterate(self.solver, problem, x0, mode=Unrolled(self.iterations), params=self.params,
                       adjoint=self.adjoint).value


def stack_problems(problems: Sequence) -> Any:
    """Stack problems that share their structure into one batched pytree (leading axis: problem).

    Raises ``ValueError`` naming the first problem whose static structure (model settings, schedule,
    covariance settings, shapes) differs from the first one's.
    """
    problems = list(problems)
    if not problems:
        raise ValueError("stack_problems: give at least one problem")
    parts = [eqx.partition(p, eqx.is_array) for p in problems]
    ref_dynamic, ref_static = parts[0]
    ref_leaves = jax.tree_util.tree_leaves(ref_dynamic)
    for i, (dynamic, static) in enumerate(parts[1:], start=1):
        same = jax.tree_util.tree_structure(dynamic) == jax.tree_util.tree_structure(ref_dynamic) and static == ref_static
        if not same or any(a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(dynamic), ref_leaves)):
            raise ValueError(
                f"stack_problems: problem {i} differs in structure from problem 0 (model, schedule, covariances and "
                "array shapes must match; only array values such as observations and backgrounds may differ)"
            )
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[dynamic for dynamic, _ in parts])
    return eqx.combine(stacked, ref_static)


class _SolverLoss(eqx.Module):
    """The full-batch training loss (static settings, so the compiled step is reused across runs)."""

    loss: str = eqx.field(static=True)

    def __call__(self, unrolled, data, key):
        return unrolled_solver_loss(unrolled, *data, loss=self.loss)


def _batch(name: str, problems, truths, loss: str):
    if loss == "supervised" and truths is None:
        raise ValueError(f"{name}: loss='supervised' needs the true control fields (truths)")
    if loss != "supervised":
        return stack_problems(problems), None
    if len(truths) != len(problems):
        raise ValueError(f"{name}: {len(problems)} problems but {len(truths)} truths")
    return stack_problems(problems), jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *truths)


def train_unrolled_solver(
    unrolled: UnrolledSolver,
    problems: Sequence,
    *,
    truths: Sequence | None = None,
    loss: str = "supervised",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 100,
    validation: tuple[Sequence, Sequence | None] | None = None,
    validate_every: int | None = None,
    key=None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress=True,
) -> tuple[UnrolledSolver, TrainingHistory]:
    r"""Learn the per-iteration parameters of an :class:`UnrolledSolver` over a set of problems.

    Full batch: every step minimises :func:`~diffphys.learn.unrolled_solver_loss` (the mean over the
    stacked problems, solved with ``eqx.filter_vmap``: one compiled call per step) by the one
    training loop :func:`~diffphys.learn.fit` (checkpoints, bit-identical resume, non-finite stop).
    Only ``unrolled.params`` is trained.

    **Arguments:**

    - ``unrolled``: the initial :class:`UnrolledSolver`.
    - ``problems``: the training problems (same structure; see :func:`stack_problems`).
    - ``truths``: their true control fields (``loss="supervised"``).
    - ``loss``: ``"supervised"`` (default), ``"cost"`` or ``"optimality"``.
    - ``optimizer``: an optax transformation (default ``optax.adam(0.05)``); ``steps`` (>= 1).
    - ``validation``: ``(problems, truths)`` (``truths`` may be ``None`` for the unsupervised losses),
      evaluated every ``validate_every`` steps (default: at the end) and after the last step.
    - ``key``: unused by the full-batch loss (kept in checkpoints); default ``jax.random.key(0)``.
    - ``checkpoint_dir``, ``checkpoint_every``, ``resume``, ``progress``: as in :func:`~diffphys.learn.fit`
      (``progress``: ``None``, ``True`` or ``fn(step, loss)``).

    **Returns:** ``(trained UnrolledSolver, TrainingHistory)``.

    **Raises:** ``ValueError``/``TypeError`` for bad settings;
    :class:`~diffphys.learn.NonFiniteLossError` naming the step.
    """
    name = "train_unrolled_solver"
    if not isinstance(unrolled, UnrolledSolver):
        raise TypeError(f"{name}: unrolled must be an UnrolledSolver, got {type(unrolled).__name__}")
    if loss not in SOLVER_LOSSES:
        raise ValueError(f"{name}: unknown loss {loss!r}; valid are {list(SOLVER_LOSSES)}")
    train = _batch(name, problems, truths, loss)
    validate = None
    if validation is not None:
        valid = _batch(f"{name} (validation)", validation[0], validation[1], loss)
        validate = eqx.filter_jit(lambda model: unrolled_solver_loss(model, *valid, loss=loss))
    optimizer = optax.adam(0.05) if optimizer is None else optimizer
    trainable = eqx.tree_at(lambda u: u.params, jax.tree_util.tree_map(lambda _: False, unrolled),
                            replace=jax.tree_util.tree_map(eqx.is_inexact_array, unrolled.params))
    return fit(unrolled, _SolverLoss(loss), train, optimizer=optimizer, steps=steps, key=key, trainable=trainable,
               validate=validate, validate_every=validate_every, checkpoint_dir=checkpoint_dir,
               checkpoint_every=checkpoint_every, resume=resume, progress=progress, name=name)
