"""Cycled 4D-Var over sliding windows: equivalence with one Gauss–Newton solve, shared observations of
overlapping windows, error reduction on Lorenz-96, and the inputs it refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob

SETTINGS = {"mode": dp.solvers.Converged(rtol=1e-8, max_steps=30)}


@pytest.fixture(scope="module")
def lorenz():
    model = dp.Lorenz96(40, 8.0)
    x0 = dp.rollout(model, 8.0 + 0.01 * jnp.sin(jnp.arange(40.0)), 1000)[-1]
    schedule = ob.ObservationSchedule.from_steps([4, 8, 12, 16], ob.subsample(model.grid, 1), dt=model.dt)
    return model, x0, schedule, ob.DiffusionB(model.grid, 0.3, 0.5)


def test_one_window_is_one_gauss_newton_solve_and_its_forecast_is_the_next_background(lorenz):
    model, x0, schedule, B = lorenz
    twin = da.cycled_twin_experiment(model, x0, schedule, 2, 1.0, jax.random.key(0))
    x_b = x0 + B.sample(jax.random.key(1), x0)
    result = da.cycled_4dvar(model, schedule, twin.observations, ob.DiagonalR(1.0), B, x_b, **SETTINGS)
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations[0], ob.DiagonalR(1.0), B, x_b)
    direct = problem.initial_state(da.gauss_newton(problem, **SETTINGS).value)
    assert jnp.allclose(result.analysis[0], direct, rtol=0, atol=1e-9)
    end = dp.rollout(model, direct, 16)[-1]
    assert jnp.allclose(result.filter_analysis[0], end, rtol=0, atol=1e-8)
    assert jnp.allclose(result.background[1], result.filter_analysis[0], rtol=0, atol=1e-12)
    assert jnp.allclose(result.forecast[0], dp.rollout(model, x_b, 16)[-1], rtol=0, atol=1e-12)
    assert bool(jnp.all(result.converged)) and result.iterations.shape == (2,)
    assert result.results == ("successful", "successful")


def test_overlapping_windows_share_their_observations_and_inflate_R(lorenz):
    model, x0, schedule, B = lorenz
    twin = da.cycled_twin_experiment(model, x0, schedule, 3, 0.5, jax.random.key(2), shift=4)
    # Window k+1 starts 4 steps later: its first three observation times are window k's last three.
    assert jnp.array_equal(twin.observations[1, :120], twin.observations[0, 40:])
    assert jnp.array_equal(twin.observations[2, :80], twin.observations[0, 80:])
    truth = dp.rollout(model, x0, 24, save_at=range(25))
    assert jnp.allclose(twin.truth_start, truth[jnp.array([0, 4, 8])], rtol=0, atol=1e-12)
    assert jnp.allclose(twin.truth_end, truth[jnp.array([16, 20, 24])], rtol=0, atol=1e-12)
    assert jnp.allclose(twin.clean_observations[0], truth[jnp.array([4, 8, 12, 16])].reshape(-1), rtol=0, atol=1e-12)
    noise = twin.observations - twin.clean_observations
    assert float(jnp.std(noise)) == pytest.approx(0.5, rel=0.15)
    # Multiple data assimilation: each observation is in 4 windows, so R is inflated 4x.
    x_b = x0 + B.sample(jax.random.key(3), x0)
    result = da.cycled_4dvar(model, schedule, twin.observations[:1], ob.DiagonalR(0.5), B, x_b, **SETTINGS, shift=4)
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations[0], ob.DiagonalR(1.0), B, x_b)
    direct = problem.initial_state(da.gauss_newton(problem, **SETTINGS).value)
    assert jnp.allclose(result.analysis[0], direct, rtol=0, atol=1e-9)


def test_the_twin_draws_one_noise_vector_per_observation_time(lorenz):
    model, x0, schedule, B = lorenz
    key = jax.random.key(6)
    twin = da.cycled_twin_experiment(model, x0, schedule, 3, 0.5, key, shift=4)
    noise = np.asarray(twin.observations - twin.clean_observations).reshape(3, 4, 40)
    for k in range(3):
        for j, step in enumerate((4, 8, 12, 16)):
            expected = 0.5 * jax.random.normal(jax.random.fold_in(key, 4 * k + step), (40,))
            np.testing.assert_allclose(noise[k, j], expected, rtol=0, atol=1e-12)


def test_the_windows_run_in_one_program_whatever_the_progress_stretches(lorenz):
    from diffphys._compile_monitor import CompileMonitor

    model, x0, schedule, B = lorenz
    twin = da.cycled_twin_experiment(model, x0, schedule, 3, 1.0, jax.random.key(7), shift=8)
    x_b = x0 + B.sample(jax.random.key(8), x0)
    run = lambda progress: da.cycled_4dvar(model, schedule, twin.observations, ob.DiagonalR(1.0), B, x_b, shift=8,
                                           progress=progress, **SETTINGS)
    whole = run(None)
    records = []
    with CompileMonitor() as monitor:
        stretched = run(lambda k, record: records.append((k, record)))  # 3 windows: stretches of one
    assert monitor.programs == 0
    assert [k for k, _ in records] == [0, 1, 2]
    for name in ("background", "analysis", "filter_analysis", "forecast", "iterations", "cost_final"):
        np.testing.assert_array_equal(np.asarray(getattr(stretched, name)), np.asarray(getattr(whole, name)))
        np.testing.assert_array_equal(np.stack([r[name] for _, r in records]), np.asarray(getattr(whole, name)))
    assert [r["result"] for _, r in records] == list(whole.results) == ["successful"] * 3


@pytest.mark.parametrize("shift", [16, 4])
def test_cycling_lorenz96_tracks_the_truth_below_the_observation_noise(lorenz, shift):
    model, x0, schedule, B = lorenz
    twin = da.cycled_twin_experiment(model, x0, schedule, 10, 1.0, jax.random.key(4), shift=shift)
    x_b = x0 + ob.DiffusionB(model.grid, 1.0, 0.5).sample(jax.random.key(5), x0)
    seen = []
    result = da.cycled_4dvar(model, schedule, twin.observations, ob.DiagonalR(1.0), B, x_b,
                             mode=dp.solvers.Converged(max_steps=20), shift=shift, progress=lambda k, r: seen.append(k))
    assert seen == list(range(10))
    scores = result.rmse(twin, spin_up=3)
    assert scores["analysis"] < 0.6 < 1.0  # well below the observation noise (σ = 1)
    assert scores["analysis"] < scores["forecast"]
    assert scores["smoother"] < scores["background"]
    assert float(jnp.mean(result.cost_final / result.cost_initial)) < 1.0


def test_bad_input_is_refused(lorenz):
    model, x0, schedule, B = lorenz
    R = ob.DiagonalR(1.0)
    twin = da.cycled_twin_experiment(model, x0, schedule, 2, 1.0, jax.random.key(0))
    at_zero = ob.ObservationSchedule.from_steps([0, 8], ob.subsample(model.grid, 1), dt=model.dt)
    with pytest.raises(ValueError, match=r"observes step 0, which belongs to the previous window"):
        da.cycled_twin_experiment(model, x0, at_zero, 2, 1.0, jax.random.key(0))
    for shift in (5, 0, 32, 2.0):
        with pytest.raises(ValueError, match=rf"shift must be an integer in \[1, 16\] that divides the window length 16 \(steps\), got {shift}"):
            da.cycled_4dvar(model, schedule, twin.observations, R, B, x0, shift=shift)
    with pytest.raises(ValueError, match=r"n_cycles must be an integer >= 1, got 0"):
        da.cycled_twin_experiment(model, x0, schedule, 0, 1.0, jax.random.key(0))
    with pytest.raises(ValueError, match=r"observations must have shape \(n_cycles, 160\) .* got \(160,\)"):
        da.cycled_4dvar(model, schedule, twin.observations[0], R, B, x0)
    with pytest.raises(TypeError, match=r"R must be a DiagonalR, got DiffusionB"):
        da.cycled_4dvar(model, schedule, twin.observations, B, B, x0)
    with pytest.raises(ValueError, match=r"state has shape \(39,\), expected \(40,\)"):
        da.cycled_4dvar(model, schedule, twin.observations, R, B, x0[:39])
    with pytest.raises(ValueError, match=r"cycled_twin_experiment: noise_sigma must be > 0 everywhere, got -1"):
        da.cycled_twin_experiment(model, x0, schedule, 2, -1.0, jax.random.key(0))
    with pytest.raises(FloatingPointError, match=r"the analysis of window 0 is not finite"):
        da.cycled_4dvar(model, schedule, twin.observations, R, B, jnp.full(40, jnp.inf))
    result = da.cycled_4dvar(model, schedule, twin.observations, R, B, x0, mode=dp.solvers.Converged(max_steps=3))
    with pytest.raises(ValueError, match=r"spin_up must be an integer in \[0, 2\), got 2"):
        result.rmse(twin, spin_up=2)
    other = da.cycled_twin_experiment(model, x0, schedule, 3, 1.0, jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected the CycledTwin of these 2 windows"):
        result.rmse(other)
    assert np.isfinite(result.rmse(twin)["analysis"])
