"""Shared helpers for the tests: observed convergence order and rollout losses."""

import jax
import jax.numpy as jnp
import numpy as np

import diffphys as dp


def observed_order(spacings, errors) -> float:
    """Least-squares slope of log(error) against log(spacing) over all resolutions."""
    spacings, errors = np.asarray(spacings, float), np.asarray(errors, float)
    assert spacings.size >= 3, "fit an order over at least three resolutions"
    assert np.all(errors > 0) and np.all(np.isfinite(errors)), errors
    return float(np.polyfit(np.log(spacings), np.log(errors), 1)[0])


def final_state(model, state, n_steps: int):
    """The state after ``n_steps`` steps of ``model``."""
    return jax.tree_util.tree_map(lambda x: x[-1], dp.rollout(model, state, n_steps))


def rollout_loss(model, state, n_steps: int):
    """A nonlinear scalar of the final state (so that the Taylor residual is genuinely second order)."""
    leaves = jax.tree_util.tree_leaves(final_state(model, state, n_steps))
    return sum(jnp.sum(jnp.sin(x) + 0.5 * x**2) for x in leaves)


def float_leaves(tree):
    """The inexact arrays of a pytree as NumPy arrays (for bit-for-bit comparisons)."""
    import equinox as eqx

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]


def check_bit_identical_resume(train, tmp_path, interrupt_at: int, start_step: int, remaining: int, checkpoint_name: str):
    """Train straight through; train again, interrupted after step ``interrupt_at``, and resume from the
    checkpoint left in the folder: the resumed run starts at ``start_step``, records ``remaining`` losses,
    ends with the same parameters bit for bit, and leaves only the checkpoint file behind.

    ``train(folder, **kw)`` runs one training into ``folder`` (``kw`` may hold ``progress``).
    """
    import pytest

    straight, _ = train(tmp_path / "a")

    def interrupt(step, loss):
        if step == interrupt_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", progress=interrupt)
    resumed, history = train(tmp_path / "b")
    assert history.start_step == start_step and len(history.loss) == remaining
    for a, b in zip(float_leaves(straight), float_leaves(resumed)):
        assert np.array_equal(a, b)  # bit for bit
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [checkpoint_name]  # no temporary files left
    return straight
