r"""Train an unrolled Gauss–Newton solver (its per-iteration damping and step lengths) over many problems.

The solver $v_K = \mathrm{GN}_\phi(\text{problem})$ (:class:`UnrolledGaussNewton`, parameters
$\phi = (\log\lambda_k, \alpha_k)_{k<K}$) is trained with optax on a batch of problems that share
their structure (same model, schedule and covariances; different observations, backgrounds,
truths), by minimising one of

* ``"supervised"``: $\frac1P\sum_p \|z_p(v_K) - z_p^{\text{true}}\|^2 / \|z_p(0) - z_p^{\text{true}}\|^2$,
  the error of the analysis control relative to the background's (needs the truths);
* ``"cost"``: $\frac1P\sum_p \mathcal J_p(v_K) / \mathcal J_p(0)$ (unsupervised: the 4D-Var cost);
* ``"gradient"``: $\frac1P\sum_p \|\nabla\mathcal J_p(v_K)\|^2 / \|\nabla\mathcal J_p(0)\|^2$
  (unsupervised: the optimality residual).

Problems are stacked into one batched pytree and solved with ``eqx.filter_vmap``, so one training
step is one compiled call. Reference: K. Gregor, Y. LeCun, "Learning fast approximations of sparse
coding", ICML 2010 (unrolled, learned iterations); V. Monga, Y. Li, Y. C. Eldar, "Algorithm
unrolling", IEEE Signal Process. Mag. 38 (2021) 18-44.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._gauss_newton import UnrolledGaussNewton

__all__ = ["LOSSES", "TrainingHistory", "stack_problems", "train_unrolled", "unrolled_loss"]

LOSSES = ("supervised", "cost", "gradient")


def stack_problems(problems: Sequence) -> object:
    """Stack problems that share their structure into one batched pytree (leading axis: problem).

    Raises ``ValueError`` naming the first problem whose static structure (model settings, schedule,
    covariance settings, shapes) differs from the first one's.
    """
    problems = list(problems)
    if not problems:
        raise ValueError("stack_problems: give at least one problem")
    arrays = [eqx.partition(p, eqx.is_array) for p in problems]
    ref_static = jax.tree_util.tree_structure(arrays[0][0]), arrays[0][1]
    for i, (dyn, static) in enumerate(arrays[1:], start=1):
        same = jax.tree_util.tree_structure(dyn) == ref_static[0] and static == ref_static[1]
        if not same or any(a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(dyn),
                                                               jax.tree_util.tree_leaves(arrays[0][0]))):
            raise ValueError(
                f"stack_problems: problem {i} differs in structure from problem 0 (model, schedule, covariances and "
                "array shapes must match; only array values such as observations and backgrounds may differ)"
            )
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[a[0] for a in arrays])
    return eqx.combine(stacked, arrays[0][1])


def _sq(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def _tree_sub(a, b):
    return jax.tree_util.tree_map(lambda x, y: x - y, a, b)


def unrolled_loss(solver: UnrolledGaussNewton, problems, truths=None, loss: str = "supervised") -> jax.Array:
    """The training loss (see the module docstring) of ``solver`` on a stacked batch of problems.

    ``truths``: the true control fields, stacked like the problems (``loss="supervised"`` only).
    """
    if loss not in LOSSES:
        raise ValueError(f"unrolled_loss: unknown loss {loss!r}; valid are {list(LOSSES)}")
    if loss == "supervised" and truths is None:
        raise ValueError("unrolled_loss: loss='supervised' needs the true control fields (truths)")

    def one(problem, truth):
        zero = problem.zero_control()
        v = solver(problem)
        if loss == "supervised":
            return _sq(_tree_sub(problem.control(v), truth)) / _sq(_tree_sub(problem.control(zero), truth))
        if loss == "cost":
            return problem.cost(v) / problem.cost(zero)
        return _sq(jax.grad(problem.cost)(v)) / _sq(jax.grad(problem.cost)(zero))

    return jnp.mean(eqx.filter_vmap(one)(problems, truths))


@dataclasses.dataclass(frozen=True)
class TrainingHistory:
    """Losses recorded by :func:`train_unrolled`: ``loss`` at every step (before its update) and
    ``validation_loss`` at every ``validate_every`` steps (``validation_steps``)."""

    loss: np.ndarray
    validation_steps: np.ndarray
    validation_loss: np.ndarray


def train_unrolled(
    solver: UnrolledGaussNewton,
    problems: Sequence,
    *,
    truths: Sequence | None = None,
    loss: str = "supervised",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 100,
    validation: tuple[Sequence, Sequence | None] | None = None,
    validate_every: int = 10,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[UnrolledGaussNewton, TrainingHistory]:
    """Train the per-iteration parameters of an :class:`UnrolledGaussNewton` on a set of problems.

    **Arguments:**

    - ``solver``: the initial :class:`UnrolledGaussNewton`.
    - ``problems``: the training problems (same structure; see :func:`stack_problems`).
    - ``truths``: their true control fields (``loss="supervised"``).
    - ``loss``: ``"supervised"`` (default), ``"cost"`` or ``"gradient"``.
    - ``optimizer``: an optax transformation (default ``optax.adam(0.05)``).
    - ``steps``: training steps (full batch), >= 1.
    - ``validation``: ``(problems, truths)`` evaluated every ``validate_every`` steps and at the end.
    - ``callback``: ``callback(step, loss)`` after every step (progress).

    **Returns:** ``(trained solver, TrainingHistory)``. Raises ``FloatingPointError`` naming the step if
    the loss becomes non-finite (the solver returned is then never the bad one).
    """
    if not isinstance(solver, UnrolledGaussNewton):
        raise TypeError(f"train_unrolled: solver must be an UnrolledGaussNewton, got {type(solver).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train_unrolled: steps must be an integer >= 1, got {steps!r}")
    if isinstance(validate_every, bool) or not isinstance(validate_every, int) or validate_every < 1:
        raise ValueError(f"train_unrolled: validate_every must be an integer >= 1, got {validate_every!r}")
    if loss not in LOSSES:
        raise ValueError(f"train_unrolled: unknown loss {loss!r}; valid are {list(LOSSES)}")

    def batch(probs, tru):
        if loss == "supervised" and tru is None:
            raise ValueError("train_unrolled: loss='supervised' needs the true control fields (truths)")
        if tru is not None and len(tru) != len(probs):
            raise ValueError(f"train_unrolled: {len(probs)} problems but {len(tru)} truths")
        stacked_truths = None if tru is None else jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *tru)
        return stack_problems(probs), stacked_truths

    train = batch(problems, truths if loss == "supervised" else None)
    valid = None if validation is None else batch(validation[0], validation[1] if loss == "supervised" else None)
    optimizer = optax.adam(0.05) if optimizer is None else optimizer
    params, static = eqx.partition(solver, eqx.is_inexact_array)
    state = optimizer.init(params)

    @eqx.filter_jit
    def evaluate(params, data):
        return unrolled_loss(eqx.combine(params, static), *data, loss=loss)

    @eqx.filter_jit
    def update(params, state, data):
        value, grads = jax.value_and_grad(lambda p: unrolled_loss(eqx.combine(p, static), *data, loss=loss))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    losses, v_steps, v_losses = [], [], []
    for step in range(steps):
        if valid is not None and step % validate_every == 0:
            v_steps.append(step)
            v_losses.append(float(evaluate(params, valid)))
        new_params, new_state, value = update(params, state, train)
        value = float(value)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"train_unrolled: the training loss is not finite at step {step} ({value}); lower the learning rate "
                "or the initial step lengths"
            )
        params, state = new_params, new_state
        losses.append(value)
        if callback is not None:
            callback(step, value)
    if valid is not None:
        v_steps.append(steps)
        v_losses.append(float(evaluate(params, valid)))
    history = TrainingHistory(np.asarray(losses), np.asarray(v_steps), np.asarray(v_losses))
    return eqx.combine(params, static), history
