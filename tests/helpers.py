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
