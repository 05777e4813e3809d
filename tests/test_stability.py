"""Stability at the time step in use: a solution outside the limit is reported, and a helper picks a dt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob

GRID = dp.Grid1D(32, 1.0, bc="neumann")
U0 = jnp.cos(jnp.pi * GRID.x)


def _kappa_problem():
    """κ = 0.02 in the data; a dt stable only up to κ = 0.0067 (near the first guess 0.006)."""
    dt = 0.9 * dp.Heat(GRID, 0.006, scheme="euler").max_stable_dt
    truth = dp.Heat(GRID, 0.02, dt=dt / 10, scheme="euler")
    fine = ob.ObservationSchedule.from_steps([200, 400, 600], ob.subsample(GRID, 4), dt=dt / 10)
    twin = ob.twin_experiment(truth, U0, fine, 0.001, jax.random.key(0))
    schedule = ob.ObservationSchedule.from_steps([20, 40, 60], ob.subsample(GRID, 4), dt=dt)
    control = da.Parameter("kappa", U0, transform="log")
    return da.StrongConstraint4DVar(dp.Heat(GRID, 0.006, dt=dt, scheme="euler"), schedule, twin.observations, twin.R,
                                    ob.DiffusionB(GRID, 1.0, 0.3), control.to_control(jnp.full(GRID.shape, 0.006)),
                                    control)


def test_a_solution_outside_the_stability_limit_is_reported_not_returned_as_an_answer():
    problem = _kappa_problem()
    solution = da.gauss_newton(problem, mode=dp.solvers.Converged(rtol=1e-6, max_steps=30), throw=False)
    kappa = jnp.exp(problem.control(solution.value))
    assert float(kappa.max()) > 0.006 / 0.9  # the data pull κ past the limit ...
    assert solution.outcome == "unstable_model"  # ... and the solver says so
    assert "stability limit" in solution.message and "dp.stable_time_step" in solution.message
    with pytest.raises(ValueError, match="exceeds the stability limit"):  # such a model cannot be built
        problem.model_for(solution.value)


def _increment(problem, kappa):
    """The control increment v with exp(z_b + B^{1/2} v) = κ everywhere (B^{1/2} inverted by least squares)."""
    target = jnp.log(jnp.full(GRID.shape, kappa)) - problem.background
    columns = jax.vmap(problem.B.sqrt, in_axes=1, out_axes=1)(jnp.eye(GRID.n))
    return jnp.linalg.lstsq(columns, target)[0]


def test_a_stable_problem_is_within_its_limit_and_an_implicit_scheme_has_none():
    problem = _kappa_problem()
    within = jax.jit(lambda p, v: p.within_stability_limit(v))  # traced, as in the solve (eagerly, an unstable
    assert bool(within(problem, _increment(problem, 0.0066)))   # model is refused when it is built)
    assert not bool(within(problem, _increment(problem, 0.0068)))
    implicit = da.StrongConstraint4DVar(dp.Heat(GRID, 0.006, dt=problem.model.dt, scheme="backward_euler"),
                                        problem.schedule, problem.observations, problem.R, problem.B,
                                        problem.background, problem.control_map)
    assert bool(within(implicit, _increment(problem, 1.0)))


def test_stable_time_step_lands_on_the_times_and_respects_the_limit_at_the_bound():
    model = dp.Heat(GRID, 0.05, scheme="rk4")
    times = [0.1, 0.25, 0.5]
    dt = dp.stable_time_step(model, times)
    assert np.allclose(np.asarray(times) / dt, np.rint(np.asarray(times) / dt), rtol=0, atol=1e-9)
    assert dt <= 0.9 * model.max_stable_dt
    assert 0.05 / (round(0.05 / dt) - 1) > 0.9 * model.max_stable_dt  # the largest such dt
    bounded = dp.stable_time_step(model, times, bounds={"kappa": 0.2})
    assert bounded < dt and bounded <= 0.9 * dp.Heat(GRID, 0.2, scheme="rk4").max_stable_dt
    dp.Heat(GRID, 0.2, dt=bounded, scheme="rk4")  # accepted at the bound
    with pytest.raises(ValueError, match="exceeds the stability limit"):
        dp.Heat(GRID, 0.2, dt=dt, scheme="rk4")  # the unbounded step is not
    implicit = dp.Heat(GRID, 0.01, dt=1e-3, scheme="crank_nicolson")
    assert dp.stable_time_step(implicit, times) == pytest.approx(0.05)


def test_stable_time_step_refuses_bad_input():
    model = dp.Heat(GRID, 0.01)
    with pytest.raises(ValueError, match="no parameter field 'kapa'; valid are"):
        dp.stable_time_step(model, [0.1], bounds={"kapa": 0.1})
    with pytest.raises(ValueError, match="finite scalar or a field of shape"):
        dp.stable_time_step(model, [0.1], bounds={"kappa": np.inf})
    with pytest.raises(ValueError, match="times must be finite numbers > 0"):
        dp.stable_time_step(model, [0.1, -0.2])
    with pytest.raises(ValueError, match="safety must be a number in"):
        dp.stable_time_step(model, [0.1], safety=1.5)
    with pytest.raises(ValueError, match="more than max_steps"):
        dp.stable_time_step(model, [10.0], max_steps=10)
    with pytest.raises(TypeError, match="must be a diffphys stepper"):
        dp.stable_time_step("heat", [0.1])
