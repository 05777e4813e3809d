"""Every documented bad input raises a clear error naming the value and what would be valid."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp

GRID = dp.Grid1D(16)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: dp.Heat(GRID, -0.1), r"kappa \(diffusivity\) must be >= 0 everywhere; found -0.1 at index \(0,\)"),
        (lambda: dp.Heat(GRID, jnp.ones(16).at[5].set(jnp.nan)), r"kappa \(diffusivity\) must be finite everywhere; found nan at index \(5,\)"),
        (lambda: dp.Heat(GRID, jnp.ones(16).at[3].set(jnp.inf)), r"must be finite everywhere; found inf at index \(3,\)"),
        (lambda: dp.Heat(GRID, 1.0, source=jnp.full(16, jnp.nan)), "source must be finite"),
        (lambda: dp.Heat(GRID, jnp.ones(5)), r"kappa \(diffusivity\) has shape \(5,\), which does not broadcast to the grid's shape \(16,\)"),
        (lambda: dp.Wave(GRID, 0.0), r"speed \(wave speed c\) must be > 0 everywhere; found 0.0"),
        (lambda: dp.Wave(GRID, -1.0), r"must be > 0 everywhere; found -1.0"),
        (lambda: dp.Wave(GRID, jnp.nan), "speed .* must be finite"),
        (lambda: dp.Advection(GRID, jnp.inf), "velocity must be finite"),
        (lambda: dp.NonlinearHeat(GRID, 0.01, beta=jnp.nan, dt=1e-3), r"NonlinearHeat: beta .* must be finite everywhere; found nan"),
        (lambda: dp.NonlinearHeat(GRID, 0.01, beta=float("inf"), dt=1e-3), r"NonlinearHeat: beta .* must be finite everywhere; found inf"),
        (lambda: dp.Advection(dp.Grid2D(4, 4), (1.0, 2.0, 3.0)), r"needs two components \(vx, vy\), got 3"),
        (lambda: dp.Advection(dp.Grid2D(4, 4), jnp.ones((3, 4, 4))), r"array of shape \(2, 4, 4\), got shape \(3, 4, 4\)"),
    ],
)
def test_bad_parameters_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "cls, args, kwargs",
    [
        (dp.Heat, (0.5,), dict(scheme="euler")),
        (dp.Heat, (jnp.linspace(0.1, 2.0, 16),), dict(scheme="rk4")),
        (dp.Advection, (-2.0,), dict(reconstruction="upwind", scheme="euler")),
        (dp.Advection, (1.0,), dict(reconstruction="weno5", scheme="rk4")),
        (dp.Wave, (3.0,), dict(scheme="leapfrog")),
        (dp.Wave, (1.0,), dict(scheme="ssprk3")),
    ],
)
def test_time_step_above_stability_limit_names_largest_stable_dt(cls, args, kwargs):
    limit = cls(GRID, *args, **kwargs).max_stable_dt
    cls(GRID, *args, dt=limit, **kwargs)  # exactly at the limit is allowed
    with pytest.raises(ValueError, match=f"exceeds the stability limit.*largest stable dt is {limit:.6g}"):
        cls(GRID, *args, dt=1.01 * limit, **kwargs)


def test_stability_limits_are_the_textbook_values():
    h = GRID.dx
    assert np.isclose(dp.Heat(GRID, 1.0, scheme="euler").max_stable_dt, h**2 / 2)
    assert np.isclose(dp.Advection(GRID, 2.0, reconstruction="upwind", scheme="euler").max_stable_dt, h / 2)
    assert np.isclose(dp.Wave(GRID, 1.0).max_stable_dt, h)  # leapfrog: c dt / h <= 1


def test_default_dt_is_stable_and_recorded():
    model = dp.Heat(GRID, 1.0, scheme="euler")
    assert np.isclose(model.dt, 0.9 * GRID.dx**2 / 2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: dp.Wave(GRID, 1.0, scheme="euler"), r"'euler' is unstable or not applicable .* use one of \['backward_euler', 'crank_nicolson', 'leapfrog', 'newmark', 'rk4', 'ssprk3'\]"),
        (lambda: dp.Advection(GRID, 1.0, scheme="euler"), r"'euler' is unstable .*'weno5' region"),
        (lambda: dp.Heat(GRID, 1.0, scheme="leapfrog"), r"'leapfrog' needs model.acceleration, which Heat does not have; use one of \['backward_euler', 'crank_nicolson', 'euler', 'rk4', 'ssprk3'\]"),
        (lambda: dp.Heat(GRID, 1.0, scheme="bdf2"), r"unknown time scheme 'bdf2'; valid are \['backward_euler', 'crank_nicolson', 'euler', 'imex_ars443', 'leapfrog', 'newmark', 'rk4', 'ssprk3'\]"),
        (lambda: dp.Advection(GRID, 1.0, reconstruction="weno3"), r"unknown reconstruction 'weno3'; valid are \['upwind', 'weno5'\]"),
        (lambda: dp.Heat(GRID, 1.0, dt=-1e-3), "dt must be a finite positive number"),
        (lambda: dp.Heat(GRID, 1.0, dt=float("nan")), "dt must be a finite positive number"),
        (lambda: dp.Heat("grid", 1.0), "grid must be a Grid1D or Grid2D, got str"),
    ],
)
def test_bad_settings_are_rejected(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize(
    "model, state, match",
    [
        (dp.Heat(GRID, 1.0), jnp.zeros(17), r"state has shape \(17,\), expected \(16,\)"),
        (dp.Heat(GRID, 1.0), jnp.zeros((3, 16)), r"expected \(16,\) .*use jax.vmap\(model.step\)"),
        (dp.Wave(GRID, 1.0), jnp.zeros(16), r"expected \(\(16,\), \(16,\)\) \(a tuple of 2 fields\)"),
        (dp.Advection(dp.Grid2D(4, 5), (1.0, 1.0)), jnp.zeros((5, 4)), r"state has shape \(5, 4\), expected \(4, 5\)"),
    ],
)
def test_state_shape_mismatch_is_rejected(model, state, match):
    with pytest.raises(ValueError, match=match):
        model.step(state)
    with pytest.raises(ValueError, match=match):
        dp.rollout(model, state, 3)


def test_non_finite_state_during_rollout_is_reported_with_its_step():
    # A NaN in the source enters the state at the first step; the rollout names the first bad save.
    model = eqx.tree_at(lambda m: m.source, dp.Heat(GRID, 1.0, source=jnp.zeros(16)), jnp.zeros(16).at[4].set(jnp.nan))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"non-finite \(NaN or inf\) by step 10 \(it was finite at step 0\)"):
        dp.rollout(model, jnp.ones(16), 30, save_every=10)
    traj = dp.rollout(model, jnp.ones(16), 30, save_every=10, check_finite=False)
    assert not bool(jnp.all(jnp.isfinite(traj)))


def test_blow_up_of_an_unstable_run_is_reported():
    # Bypass the construction check (as a traced dt would) to provoke an instability.
    model = dp.Heat(GRID, 1.0, scheme="euler")
    unstable = eqx.tree_at(lambda m: m.kappa, model, 40.0 * model.kappa)
    with pytest.raises(eqx.EquinoxRuntimeError, match="became non-finite"):
        dp.rollout(unstable, jnp.sin(2 * jnp.pi * GRID.x) + 1e-3 * jnp.cos(14 * jnp.pi * GRID.x), 5000, save_every=1000)


def test_validation_is_skipped_but_models_work_under_tracing():
    """Inside jit/vmap the values are unknown: construction must not fail, dt must be explicit."""
    kappas = jnp.stack([jnp.full(16, 0.5), jnp.full(16, 1.0)])
    build = lambda k: dp.Heat(GRID, k, dt=1e-4)
    models = eqx.filter_vmap(build)(kappas)
    assert models.kappa.shape == (2, 16)
    with pytest.raises(ValueError, match="pass dt explicitly when the parameters are traced"):
        jax.jit(lambda k: dp.Heat(GRID, k).kappa)(kappas[0])
    betas = eqx.filter_vmap(lambda b: dp.NonlinearHeat(GRID, 0.01, beta=b, dt=1e-3).beta)(jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(betas, [0.0, 1.0])
