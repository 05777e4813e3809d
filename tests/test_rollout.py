"""Rollout: save points, checkpointing (same gradients, bounded memory), bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp

GRID = dp.Grid1D(32)
MODEL = dp.Heat(GRID, 0.3 + 0.1 * jnp.sin(2 * jnp.pi * GRID.x), scheme="ssprk3")
U0 = jnp.exp(-30 * (GRID.x - 0.3) ** 2)


def _manual(model, state, n):
    states = [state]
    for _ in range(n):
        state = model.step(state)
        states.append(state)
    return states


def test_irregular_save_points_match_a_python_loop():
    save_at = [0, 1, 2, 5, 8, 11, 19, 20]
    traj = dp.rollout(MODEL, U0, 25, save_at=save_at)
    reference = _manual(MODEL, U0, 20)
    assert traj.shape == (len(save_at), 32)
    np.testing.assert_allclose(traj, jnp.stack([reference[s] for s in save_at]), rtol=1e-13, atol=1e-15)


def test_save_every_and_tuple_states():
    model = dp.Wave(GRID, 1.0)
    u, v = dp.rollout(model, (U0, jnp.zeros(32)), 12, save_every=4)
    reference = _manual(model, (U0, jnp.zeros(32)), 12)
    assert u.shape == v.shape == (4, 32)
    for k, step in enumerate((0, 4, 8, 12)):
        np.testing.assert_allclose(u[k], reference[step][0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(v[k], reference[step][1], rtol=1e-13, atol=1e-15)


def test_default_saves_the_final_state_only():
    traj = dp.rollout(MODEL, U0, 7)
    assert traj.shape == (1, 32)
    np.testing.assert_allclose(traj[0], _manual(MODEL, U0, 7)[-1], rtol=1e-13)


@pytest.mark.parametrize("save_at", [None, (0, 37, 200, 201, 450)])
@pytest.mark.parametrize("checkpoint_every", [1, 16, 64, 1000])
def test_checkpointing_gives_the_same_gradient(save_at, checkpoint_every):
    def loss(u0, kappa, checkpoint):
        model = dp.Heat(GRID, kappa, dt=MODEL.dt, scheme="ssprk3")
        traj = dp.rollout(model, u0, 450, save_at=save_at, checkpoint_every=checkpoint)
        return jnp.sum(jnp.sin(traj) ** 2)

    plain = jax.grad(loss, argnums=(0, 1))(U0, MODEL.kappa, None)
    checkpointed = jax.grad(loss, argnums=(0, 1))(U0, MODEL.kappa, checkpoint_every)
    for a, b in zip(plain, checkpointed):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_checkpointing_bounds_gradient_memory():
    """XLA's compiled memory analysis: 20 000 steps keep ~n states without, ~2 sqrt(n) with checkpointing.

    The stepper must be nonlinear (WENO): reverse mode through a linear stepper keeps no states at all.
    """
    n_steps = 20_000
    model = dp.Advection(GRID, 1.0, reconstruction="weno5", scheme="ssprk3")

    def temp_bytes(checkpoint):
        loss = lambda u0: jnp.sum(dp.rollout(model, u0, n_steps, checkpoint_every=checkpoint)[-1] ** 2)
        analysis = jax.jit(jax.grad(loss)).lower(U0).compile().memory_analysis()
        return analysis.temp_size_in_bytes

    state_bytes = U0.size * U0.dtype.itemsize
    plain, checkpointed = temp_bytes(None), temp_bytes(141)
    assert plain >= n_steps * state_bytes  # every step's state is kept
    assert checkpointed < 0.05 * plain


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_steps=-1), "n_steps must be a non-negative integer, got -1"),
        (dict(n_steps=2.5), "n_steps must be a non-negative integer"),
        (dict(n_steps=10, save_every=3), "save_every must be a positive integer dividing n_steps=10, got 3"),
        (dict(n_steps=10, save_at=[0, 11]), r"save_at has steps \[11\] outside \[0, n_steps=10\]"),
        (dict(n_steps=10, save_at=[3, 2]), r"save_at must be strictly increasing, got \[3, 2\]"),
        (dict(n_steps=10, save_at=[2, 2]), "strictly increasing"),
        (dict(n_steps=10, save_at=[]), "save_at is empty"),
        (dict(n_steps=10, save_at=[1], save_every=2), "give save_at or save_every, not both"),
        (dict(n_steps=10, checkpoint_every=0), "checkpoint_every must be a positive integer or None, got 0"),
    ],
)
def test_bad_rollout_arguments(kwargs, match):
    n = kwargs.pop("n_steps")
    with pytest.raises(ValueError, match=match):
        dp.rollout(MODEL, U0, n, **kwargs)


def test_rollout_accepts_any_stepper_callable():
    damped = lambda u: 0.5 * MODEL.step(u)
    traj = dp.rollout(damped, U0, 3, save_every=1)
    np.testing.assert_allclose(traj[3], 0.5 * MODEL.step(0.5 * MODEL.step(0.5 * MODEL.step(U0))), rtol=1e-13)
