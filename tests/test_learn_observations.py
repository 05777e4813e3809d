"""Learning a correction from sparse noisy observations only: the error against the hidden truth goes down."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffphys as dp
from diffphys import learn as dl
from diffphys import observe as ob
from diffphys.adjoint import Checkpointed, Direct


def _nrmse(model, truth_traj):
    pred = jax.vmap(lambda u: dp.rollout(model, u, truth_traj.shape[1] - 1, save_every=1))(truth_traj[:, 0])
    return float(jnp.mean(jnp.linalg.norm(pred - truth_traj, axis=-1)[:, 1:] / jnp.linalg.norm(truth_traj, axis=-1)[:, 1:]))


def _windows(truth, schedule, B, key, n, sigma=0.005):
    """A twin experiment per window (vectorised): truth trajectories, noisy sparse readings, backgrounds."""
    k_x0, k_noise, k_b = jax.random.split(key, 3)
    x0 = dl.random_periodic_fields(k_x0, truth.grid, n, amplitude=0.5)
    traj = jax.vmap(lambda u: dp.rollout(truth, u, schedule.n_steps, save_at=schedule.steps))(x0)
    clean = jax.vmap(schedule.observe)(traj)
    readings = clean + sigma * jax.random.normal(k_noise, clean.shape)
    background = x0 + jax.vmap(B.sample)(jax.random.split(k_b, n), x0)
    return dl.ObservationWindows(schedule, readings, ob.DiagonalR(sigma), background, B), x0


def test_training_on_sparse_observations_reduces_the_error_against_the_hidden_truth():
    model = dp.Heat(dp.Grid1D(16), 0.01, dt=0.01)
    truth = dl.TruthWithExtraTerm(model, 1.0, "burgers")
    sensors = ob.PointSensors(model.grid, jnp.linspace(0.03, 0.97, 8))
    schedule = ob.ObservationSchedule.from_steps(list(range(1, 13)), sensors, dt=model.dt)
    B = ob.DiffusionB(model.grid, sigma=0.02, length_scale=0.1)
    windows, _ = _windows(truth, schedule, B, jax.random.key(0), 8)
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=8, depth=1, kernel_size=3, output_scale=0.1)
    corrected = dl.CorrectedStepper(model, net, scale=10 * model.dt)
    trained, x0, history = dl.train_from_observations(
        corrected, windows, validation=windows, optimizer=optax.adam(1e-2), epochs=3, steps_per_epoch=15,
        batch_size=4, key=jax.random.key(2), progress=False,
    )
    assert x0.shape == (8, 16) and len(history.loss) == 45 and len(history.validation) == 3
    # the assimilation cost fell ...
    assert history.validation[-1][1] < 0.5 * history.validation[0][1] and history.loss[-1] < 0.5 * history.loss[0]
    # ... and so did the model error measured against the truth the training never saw (held-out states)
    held_out = dl.random_periodic_fields(jax.random.key(9), model.grid, 4, amplitude=0.5)
    truth_traj = jax.vmap(lambda u: dp.rollout(truth, u, 24, save_every=1))(held_out)
    before, after = _nrmse(corrected, truth_traj), _nrmse(trained, truth_traj)
    assert after < 0.5 * before, (before, after)
    np.testing.assert_array_equal(trained.stepper.kappa, model.kappa)


def test_observation_loss_is_the_mean_normalised_4dvar_cost_of_the_windows():
    model = dp.Heat(dp.Grid1D(12), 0.01, dt=0.01)
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=4, depth=1, kernel_size=3, output_scale=0.1)
    corrected = dl.CorrectedStepper(model, net, scale=10 * model.dt)
    sensors = ob.PointSensors(model.grid, jnp.array([0.15, 0.5, 0.8]))
    schedule = ob.ObservationSchedule.from_steps([2, 3, 5], sensors, dt=model.dt)
    B = ob.DiffusionB(model.grid, sigma=0.1, length_scale=0.2)
    sigma = jnp.array([0.1, 0.2, 0.3] * 3)
    keys = jax.random.split(jax.random.key(4), 3)
    y = jax.random.normal(keys[0], (4, 9)).at[1, 4].set(jnp.nan).at[3, 0].set(jnp.nan)  # two missing readings
    xb = jax.random.normal(keys[1], (4, 12))
    v = 0.3 * jax.random.normal(keys[2], (4, 12))
    windows = dl.ObservationWindows(schedule, y, ob.DiagonalR(sigma), xb, B)
    # Independently: roll out each window, observe at the schedule's steps, whiten, drop missing readings.
    sqrt_b = jax.jacfwd(B.sqrt)(jnp.zeros(12))

    def expected(idx, with_increments):
        total = 0.0
        for w in idx:
            x0 = xb[w] + (sqrt_b @ v[w] if with_increments else 0.0)
            states = [x0]
            for _ in range(5):
                states.append(corrected.step(states[-1]))
            predicted = jnp.concatenate([sensors(states[k]) for k in (2, 3, 5)])
            d = np.where(np.isnan(y[w]), 0.0, (np.asarray(y[w]) - predicted) / sigma)
            total += 0.5 * np.sum(d**2) + (0.5 * np.sum(np.asarray(v[w]) ** 2) if with_increments else 0.0)
        return total / len(idx) / 9

    np.testing.assert_allclose(dl.observation_loss(corrected, windows, v), expected(range(4), True), rtol=1e-12)
    np.testing.assert_allclose(dl.observation_loss(corrected, windows), expected(range(4), False), rtol=1e-12)
    idx = jnp.array([3, 1])
    np.testing.assert_allclose(dl.observation_loss(corrected, windows, v, idx), expected([3, 1], True), rtol=1e-12)
    no_b = dl.ObservationWindows(schedule, y, ob.DiagonalR(sigma), xb)  # B=None: held at the backgrounds
    np.testing.assert_allclose(dl.observation_loss(corrected, no_b, v), expected(range(4), False), rtol=1e-12)


def test_observation_windows_and_training_reject_bad_input():
    model = dp.Heat(dp.Grid1D(16), 0.01, dt=0.01)
    sensors = ob.PointSensors(model.grid, jnp.array([0.2, 0.6]))
    schedule = ob.ObservationSchedule.from_steps([1, 2], sensors, dt=model.dt)
    R = ob.DiagonalR(0.1)
    with pytest.raises(ValueError, match=r"observations have shape \(3, 5\); expected \(windows, 4\)"):
        dl.ObservationWindows(schedule, jnp.zeros((3, 5)), R, jnp.zeros((3, 16)))
    with pytest.raises(ValueError, match=r"background has shape \(2, 16\); expected \(3, 16\)"):
        dl.ObservationWindows(schedule, jnp.zeros((3, 4)), R, jnp.zeros((2, 16)))
    with pytest.raises(TypeError, match="R must be a DiagonalR"):
        dl.ObservationWindows(schedule, jnp.zeros((3, 4)), 0.1, jnp.zeros((3, 16)))
    with pytest.raises(TypeError, match="schedule must be an ObservationSchedule"):
        dl.ObservationWindows([1, 2], jnp.zeros((3, 4)), R, jnp.zeros((3, 16)))
    with pytest.raises(TypeError, match="B must be a covariance .* or None, got float"):
        dl.ObservationWindows(schedule, jnp.zeros((3, 4)), R, jnp.zeros((3, 16)), 0.5)
    windows = dl.ObservationWindows(schedule, jnp.zeros((3, 4)), R, jnp.zeros((3, 16)))
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=2, depth=1, kernel_size=3)
    other = dl.CorrectedStepper(dp.Heat(dp.Grid1D(16), 0.01, dt=0.005), net)
    with pytest.raises(ValueError, match="dt=0.005 differs from the windows' schedule dt=0.01"):
        dl.train_from_observations(other, windows, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size=4 exceeds the 3 windows"):
        dl.train_from_observations(dl.CorrectedStepper(model, net), windows, batch_size=4, key=jax.random.key(0))
    with pytest.raises(TypeError, match="corrected must be a CorrectedStepper, got Heat"):
        dl.train_from_observations(model, windows, key=jax.random.key(0))
    coarse = dl.CorrectedStepper(dp.Heat(dp.Grid1D(8), 0.01, dt=0.01), dl.ConvNet(dp.Grid1D(8), key=jax.random.key(1)))
    with pytest.raises(ValueError, match=r"the windows' grid has shape \(16,\), the model's state \(8,\)"):
        dl.train_from_observations(coarse, windows, key=jax.random.key(0))
    with pytest.raises(TypeError, match="windows must be ObservationWindows"):
        dl.train_from_observations(dl.CorrectedStepper(model, net), jnp.zeros((3, 4)), key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"rollout_adjoint: adjoint must be Direct\(\) or Checkpointed\(...\) .* got int"):
        dl.train_from_observations(dl.CorrectedStepper(model, net), windows, rollout_adjoint=4, key=jax.random.key(0))


@pytest.mark.parametrize("adjoint", [Checkpointed(every=2), Checkpointed()])
def test_observation_loss_gradient_is_the_same_for_every_rollout_adjoint(adjoint):
    model = dp.Heat(dp.Grid1D(16), 0.01, dt=0.01)
    schedule = ob.ObservationSchedule.from_steps([1, 3, 6], ob.PointSensors(model.grid, jnp.array([0.2, 0.6])), dt=model.dt)
    B = ob.DiffusionB(model.grid, sigma=0.02, length_scale=0.1)
    windows, _ = _windows(dl.TruthWithExtraTerm(model, 1.0, "burgers"), schedule, B, jax.random.key(0), 3)
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=4, depth=1, kernel_size=3, output_scale=0.1)
    corrected = dl.CorrectedStepper(model, net, scale=10 * model.dt)
    v = 0.1 * jax.random.normal(jax.random.key(3), windows.background.shape)
    grad = lambda a: jax.grad(lambda c, v: dl.observation_loss(c, windows, v, adjoint=a), argnums=(0, 1))(corrected, v)
    reference = jax.tree_util.tree_leaves(grad(Direct()))
    for a, b in zip(reference, jax.tree_util.tree_leaves(grad(adjoint))):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-14)
