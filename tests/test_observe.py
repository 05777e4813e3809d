"""Observation operators, schedules and twin experiments: exactness, adjoints, irregular times, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import observe as ob


def _adjoint_error(op):
    return dp.check.adjoint_test(op, op.transpose, jnp.zeros(op.grid.shape), jnp.zeros(op.size)).relative_error


GRID_1D = dp.Grid1D(40, 2.0, bc=(dp.Dirichlet(1.0), dp.Neumann(0.0)))
GRID_2D = dp.Grid2D(12, 9, (1.0, 1.5), bc=("periodic", "neumann"))


@pytest.mark.parametrize("bc", ["neumann", "dirichlet", ("dirichlet", "neumann")])
def test_point_sensors_are_exact_on_linear_fields_up_to_the_walls(bc):
    grid = dp.Grid1D(25, 2.0, bc=bc)
    where = np.array([0.0, 0.01, 0.04, 0.5, 1.2345, 1.99, 2.0])
    H = ob.PointSensors(grid, where)
    np.testing.assert_allclose(H(3.0 - 1.5 * grid.x), 3.0 - 1.5 * where, rtol=0, atol=1e-13)
    assert H.size == 7 and H.kind == "point"
    np.testing.assert_array_equal(H.locations[:, 0], where)


def test_bilinear_sensors_are_exact_on_bilinear_fields():
    grid = dp.Grid2D(10, 14, (1.0, 2.0), bc="dirichlet")
    pts = np.array([[0.0, 0.0], [1.0, 2.0], [0.33, 1.71], [0.02, 1.99], [0.5, 0.5]])
    X, Y = grid.coordinates
    f = lambda x, y: 1.0 + 2.0 * x - 0.5 * y + 0.25 * x * y
    np.testing.assert_allclose(ob.PointSensors(grid, pts)(f(X, Y)), f(pts[:, 0], pts[:, 1]), atol=1e-13)


def test_point_sensors_wrap_around_on_periodic_axes():
    grid = dp.Grid1D(8, 1.0)
    u = jnp.arange(8.0)
    # x = 0 lies half-way between the last cell (7) and the first (0).
    np.testing.assert_allclose(ob.PointSensors(grid, [0.0, 1.0, 0.0625, 0.5])(u), [3.5, 3.5, 0.0, 3.5])


def test_footprint_averages():
    grid = dp.Grid1D(10, 1.0)
    F = ob.FootprintAverage(grid, [0.0, 0.5], radius=0.1)
    u = jnp.arange(10.0)
    # Cells within 0.1 of x=0 on a periodic axis: centres 0.05 and 0.95 (cells 0 and 9).
    np.testing.assert_allclose(F(u), [4.5, 4.5])
    F2 = ob.FootprintAverage(GRID_2D, [[0.5, 0.75], [0.0, 0.0]], radius=0.3)
    np.testing.assert_allclose(F2(jnp.full(GRID_2D.shape, 2.5)), [2.5, 2.5])
    assert F2.kind == "footprint" and F2.locations.shape == (2, 2)


def test_grid_masks_and_subsampling():
    mask = np.zeros(GRID_2D.shape, bool)
    mask[3, 4] = mask[0, 8] = True
    u = jnp.arange(float(np.prod(GRID_2D.shape))).reshape(GRID_2D.shape)
    np.testing.assert_array_equal(ob.GridMask(GRID_2D, mask)(u), [u[0, 8], u[3, 4]])
    S = ob.subsample(GRID_2D, (4, 3), offset=(1, 2))
    np.testing.assert_array_equal(S(u), u[1::4, 2::3].ravel())
    np.testing.assert_allclose(S.locations[0], [GRID_2D.x[1], GRID_2D.y[2]])
    assert ob.subsample(GRID_1D, 5).size == 8


@pytest.mark.parametrize(
    "op",
    [
        ob.PointSensors(GRID_1D, [0.0, 0.7, 1.33, 2.0]),
        ob.PointSensors(GRID_2D, [[0.0, 0.0], [0.99, 1.5], [0.4, 0.8]]),
        ob.FootprintAverage(GRID_1D, [0.1, 1.0], 0.2),
        ob.FootprintAverage(GRID_2D, [[0.05, 0.1], [0.5, 0.75]], 0.25),
        ob.subsample(GRID_2D, 3),
        ob.GridMask(GRID_1D, np.arange(40) % 7 == 0),
    ],
    ids=["points-1d", "points-2d", "footprint-1d", "footprint-2d", "subsample-2d", "mask-1d"],
)
def test_every_operator_passes_the_dot_product_test(op):
    assert _adjoint_error(op) <= 1e-12
    # The operator is linear: its JAX derivatives agree with the hand-written transpose too.
    assert dp.check.dot_product_test(op, jnp.ones(op.grid.shape)).relative_error <= 1e-12


def test_irregular_schedule_with_changing_sensor_sets():
    model = dp.Heat(GRID_1D, 0.05, dt=2e-3)
    dense = ob.PointSensors(GRID_1D, [0.2, 0.6, 1.0, 1.4])
    sparse = ob.PointSensors(GRID_1D, [1.7])
    times = [0.0, 0.006, 0.008, 0.03, 0.05]
    schedule = ob.ObservationSchedule(times, [dense, sparse, dense, ob.subsample(GRID_1D, 10), sparse], dt=model.dt)
    assert schedule.steps == (0, 3, 4, 15, 25) and schedule.n_steps == 25
    assert schedule.sizes == (4, 1, 4, 4, 1) and schedule.size == 14
    assert len(schedule.operators) == 3  # shared operators are applied together
    u0 = jnp.sin(GRID_1D.x)
    trajectory = dp.rollout(model, u0, schedule.n_steps, save_at=schedule.steps)
    y = schedule.observe(trajectory)
    parts = schedule.split(y)
    every_step = dp.rollout(model, u0, schedule.n_steps, save_every=1)
    for k, step in enumerate(schedule.steps):
        np.testing.assert_allclose(parts[k], schedule.operator_at(k)(every_step[step]), rtol=1e-13)
    np.testing.assert_array_equal(schedule.time_index, [0, 0, 0, 0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4])
    assert schedule.locations.shape == (14, 1)
    per_time = schedule.per_observation([np.ones(4), [2.0], np.ones(4), np.ones(4), [3.0]])
    np.testing.assert_array_equal(per_time[[3, 4, 5, 13]], [1.0, 2.0, 1.0, 3.0])
    with pytest.raises(ValueError, match=r"sigma: per-time arrays have shapes \[\(4,\), \(2,\), .* expected sizes \[4, 1, 4, 4, 1\]"):
        schedule.per_observation([np.ones(4), [2.0, 2.0], np.ones(4), np.ones(4), [3.0]], "sigma")
    error = dp.check.adjoint_test(schedule.observe, schedule.transpose, trajectory, y).relative_error
    assert error <= 1e-12


def test_times_within_round_off_of_a_step_or_the_window_end_are_accepted():
    times = 0.025 * np.arange(1, 25)  # the last is 0.6000000000000001
    schedule = ob.ObservationSchedule(times, SPARSE_1D, dt=0.025 / 3, t_end=0.6)
    assert schedule.steps[-1] == 72 and schedule.times[-1] == times[-1]


SPARSE_1D = ob.PointSensors(GRID_1D, [0.3])


def test_schedule_from_steps_and_per_observation_values():
    H = ob.PointSensors(GRID_1D, [0.5, 1.5])
    schedule = ob.ObservationSchedule.from_steps([2, 5, 9], H, dt=0.01, t0=1.0)
    np.testing.assert_allclose(schedule.times, [1.02, 1.05, 1.09])
    np.testing.assert_array_equal(schedule.per_observation(0.1), np.full(6, 0.1))
    np.testing.assert_array_equal(schedule.per_observation([0.1, 0.2]), [0.1, 0.2] * 3)
    np.testing.assert_array_equal(schedule.per_observation([[1, 2], [3, 4], [5, 6]]), np.arange(1, 7))
    with pytest.raises(ValueError, match=r"it must be a scalar, \(2,\) \(one per sensor\) or \(6,\)"):
        schedule.per_observation([1.0, 2.0, 3.0])


def test_observing_a_tuple_state_picks_the_field():
    grid = dp.Grid1D(16, 1.0, bc="dirichlet")
    wave = dp.Wave(grid, 1.0)
    H = ob.PointSensors(grid, [0.25, 0.75])
    u0 = jnp.sin(jnp.pi * grid.x)
    for field in (0, 1):
        schedule = ob.ObservationSchedule.from_steps([0, 4], H, dt=wave.dt, field=field)
        trajectory = dp.rollout(wave, (u0, jnp.zeros(16)), 4, save_at=[0, 4])
        np.testing.assert_allclose(schedule.split(schedule.observe(trajectory))[1], H(trajectory[field][1]))


def test_twin_experiment_is_reproducible_and_noisy_as_asked():
    model = dp.Heat(GRID_1D, 0.05, dt=2e-3)
    H = ob.PointSensors(GRID_1D, np.linspace(0.1, 1.9, 50))
    schedule = ob.ObservationSchedule.from_steps(range(1, 41), H, dt=model.dt)
    u0 = jnp.cos(GRID_1D.x)
    B = ob.DiffusionB(GRID_1D, 0.2, 0.3)
    a = ob.twin_experiment(model, u0, schedule, 0.05, jax.random.key(7), background=B, missing_fraction=0.25)
    b = ob.twin_experiment(model, u0, schedule, 0.05, jax.random.key(7), background=B, missing_fraction=0.25)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.background, b.background)
    present = np.isfinite(a.observations)
    assert 0.7 < present.mean() < 0.8
    noise = np.asarray(a.observations - a.clean_observations)[present]
    assert abs(noise.std() / 0.05 - 1.0) < 0.05 and abs(noise.mean()) < 0.01
    assert 0.1 < float(jnp.std(a.background - u0)) < 0.3
    np.testing.assert_allclose(a.clean_observations, schedule.observe(a.truth_trajectory))
    c = ob.twin_experiment(model, u0, schedule, 0.05, jax.random.key(8))
    assert c.background is None and not np.allclose(c.observations, a.observations, equal_nan=True)


def test_twin_experiment_draws_are_jax_randoms_for_the_split_key():
    """Noise R^½ξ, lost readings and background x_t + B^½η come from jax.random.split(key, 3) as documented, so a
    seed gives the same experiment whichever program draws them (a one-off program, apart from the truth run)."""
    model = dp.Heat(GRID_1D, 0.05, dt=2e-3)
    H = ob.PointSensors(GRID_1D, np.linspace(0.1, 1.9, 7))
    schedule = ob.ObservationSchedule.from_steps(range(2, 21, 2), H, dt=model.dt)
    u0 = jnp.cos(GRID_1D.x)
    B = ob.DiffusionB(GRID_1D, 0.2, 0.3)
    key = jax.random.key(11)
    twin = ob.twin_experiment(model, u0, schedule, 0.05, key, background=B, missing_fraction=0.3)
    k_noise, k_missing, k_background = jax.random.split(key, 3)
    lost = np.asarray(jax.random.bernoulli(k_missing, 0.3, (schedule.size,)))
    assert 0 < lost.sum() < schedule.size
    np.testing.assert_array_equal(np.isnan(twin.observations), lost)
    noise = 0.05 * jax.random.normal(k_noise, (schedule.size,))
    np.testing.assert_allclose(twin.observations[~lost], (twin.clean_observations + noise)[~lost], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(twin.background, u0 + B.sqrt(jax.random.normal(k_background, u0.shape)),
                               rtol=1e-13, atol=1e-14)


def test_twin_experiment_background_of_a_tuple_state_perturbs_the_observed_field():
    grid = dp.Grid1D(16, 1.0, bc="dirichlet")
    wave = dp.Wave(grid, 1.0)
    schedule = ob.ObservationSchedule.from_steps([3], ob.PointSensors(grid, [0.5]), dt=wave.dt)
    truth = (jnp.sin(jnp.pi * grid.x), jnp.zeros(16))
    twin = ob.twin_experiment(wave, truth, schedule, 0.1, jax.random.key(0), background=ob.DiffusionB(grid, 0.1, 0.2))
    assert not np.allclose(twin.background[0], truth[0])
    np.testing.assert_array_equal(twin.background[1], truth[1])


H1 = ob.PointSensors(GRID_1D, [0.5, 1.0])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ob.PointSensors(GRID_1D, [0.5, 2.5]), ValueError,
         r"sensor 1 at x=2\.5 lies outside the domain; valid coordinates are 0 <= x <= 2"),
        (lambda: ob.PointSensors(GRID_2D, [[0.5, 0.5], [0.5, -0.1]]), ValueError,
         r"sensor 1 at y=-0\.1 lies outside the domain; valid coordinates are 0 <= y <= 1\.5"),
        (lambda: ob.PointSensors(GRID_2D, [0.5, 0.5]), ValueError, r"give a non-empty array of shape \(m, 2\)"),
        (lambda: ob.PointSensors(GRID_1D, [np.nan]), ValueError, "sensor 0 at x=nan lies outside the domain"),
        (lambda: ob.PointSensors(GRID_1D, []), ValueError, "non-empty array"),
        (lambda: ob.PointSensors("grid", [0.5]), TypeError, "grid must be a Grid1D or Grid2D"),
        (lambda: ob.FootprintAverage(GRID_1D, [0.5], 0.0), ValueError, "radius must be a finite number > 0, got 0.0"),
        (lambda: ob.FootprintAverage(GRID_1D, [0.5], 0.01), ValueError, r"contains no cell centre; use radius >= 0\.025"),
        (lambda: ob.FootprintAverage(GRID_1D, [3.0], 0.1), ValueError, "footprint centre 0 at x=3.0 lies outside"),
        (lambda: ob.GridMask(GRID_1D, np.zeros(40, bool)), ValueError, "the mask observes no cell"),
        (lambda: ob.GridMask(GRID_1D, np.ones(41, bool)), ValueError, r"boolean array of the grid's shape \(40,\)"),
        (lambda: ob.subsample(GRID_1D, 0), ValueError, "stride must be an integer >= 1"),
        (lambda: ob.subsample(GRID_1D, 4, offset=4), ValueError, "offset 4 along x must be smaller than the stride 4"),
        (lambda: H1(jnp.zeros(41)), ValueError, r"the field has shape \(41,\), expected the grid's shape \(40,\)"),
        (lambda: H1.transpose(jnp.zeros(3)), ValueError, r"observations have shape \(3,\), expected \(2,\)"),
        (lambda: ob.ObservationSchedule([0.1, 0.3, 0.2], H1, dt=0.1), ValueError,
         r"not sorted: t\[2\]=0\.2 comes after t\[1\]=0\.3; times must be strictly increasing"),
        (lambda: ob.ObservationSchedule([0.1, 0.2, 0.2], H1, dt=0.1), ValueError,
         r"duplicate observation time t=0\.2 \(positions 1 and 2\)"),
        (lambda: ob.ObservationSchedule([0.1, 0.5], H1, dt=0.1, t_end=0.4), ValueError,
         r"t=0\.5 \(position 1\) lies outside the assimilation window \[0, 0\.4\]; valid times satisfy 0 <= t <= 0\.4"),
        (lambda: ob.ObservationSchedule([-0.1], H1, dt=0.1), ValueError, "lies outside the assimilation window"),
        (lambda: ob.ObservationSchedule([0.1, 0.25], H1, dt=0.1), ValueError,
         r"t=0\.25 \(position 1\) is not on the model's time grid .* nearest steps are t=0\.2 \(k=2\) and t=0\.3 \(k=3\)"),
        (lambda: ob.ObservationSchedule([], H1, dt=0.1), ValueError, "times must be a non-empty 1D sequence"),
        (lambda: ob.ObservationSchedule([0.1], H1, dt=0.0), ValueError, "dt must be a finite number > 0"),
        (lambda: ob.ObservationSchedule([0.1, 0.2], [H1], dt=0.1), ValueError,
         "1 operators given for 2 observation times; give one operator"),
        (lambda: ob.ObservationSchedule([0.1], [ob.PointSensors(GRID_2D, [[0.1, 0.1]])], dt=0.1, field=-1), ValueError,
         "field must be an integer >= 0"),
        (lambda: ob.ObservationSchedule([0.1, 0.2], [H1, ob.PointSensors(GRID_2D, [[0.1, 0.1]])], dt=0.1), ValueError,
         "every operator must be on the model's grid"),
        (lambda: ob.ObservationSchedule([0.1], "sensors", dt=0.1), TypeError, "operators must be an observation operator"),
        (lambda: ob.ObservationSchedule.from_steps([1, -2], H1, dt=0.1), ValueError, "step -2 is negative"),
        (lambda: ob.ObservationSchedule.from_steps([1, 5], H1, dt=0.1, n_steps=4), ValueError, "outside the assimilation window"),
        (lambda: ob.ObservationSchedule([0.1], H1, dt=0.1).observe(jnp.zeros((2, 40))), ValueError,
         r"the trajectory has shape \(2, 40\), expected \(1, 40\)"),
        (lambda: ob.ObservationSchedule([0.1], H1, dt=0.1).transpose(jnp.zeros(3)), ValueError, r"expected \(2,\)"),
        (lambda: ob.twin_experiment(dp.Heat(GRID_1D, 0.05, dt=1e-3), jnp.zeros(40),
                                    ob.ObservationSchedule([0.1], H1, dt=0.1), 0.1, jax.random.key(0)), ValueError,
         "the model's dt=0.001 differs from the schedule's dt=0.1"),
        (lambda: ob.twin_experiment(dp.Heat(GRID_1D, 0.05, dt=1e-3), jnp.zeros(40),
                                    ob.ObservationSchedule([0.1], H1, dt=1e-3), 0.0, jax.random.key(0)), ValueError,
         "sigma .* must be > 0 everywhere"),
        (lambda: ob.twin_experiment(dp.Heat(GRID_1D, 0.05, dt=1e-3), jnp.zeros(40),
                                    ob.ObservationSchedule([0.1], H1, dt=1e-3), 0.1, jax.random.key(0),
                                    missing_fraction=1.0), ValueError, r"missing_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
