"""Strong-constraint 4D-Var residuals and the gradient solver: derivatives, masks, exactness, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob
from diffphys import solvers as S
from diffphys.adjoint import Checkpointed, Direct, Implicit

from helpers import log_kappa_problem

GRID = dp.Grid1D(24, 1.0, bc="neumann")
MODEL = dp.Heat(GRID, 0.02, dt=1e-3)
TRUTH = jnp.exp(-((GRID.x - 0.4) ** 2) / 0.01)
SENSORS = ob.PointSensors(GRID, [0.1, 0.25, 0.45, 0.7, 0.9])
STEPS = [4, 11, 13, 30]  # irregular


def _problem(schedule=None, sigma=0.05, key=0, **kwargs):
    schedule = schedule or ob.ObservationSchedule.from_steps(STEPS, SENSORS, dt=MODEL.dt)
    B = ob.DiffusionB(GRID, 0.5, 0.1)
    twin = ob.twin_experiment(MODEL, TRUTH, schedule, sigma, jax.random.key(key), background=B)
    return da.StrongConstraint4DVar(MODEL, schedule, twin.observations, twin.R, B, twin.background, **kwargs), twin


def _kappa_problem():
    return log_kappa_problem(GRID)


def test_cost_is_half_the_squared_residual_and_zero_control_is_the_background():
    problem, twin = _problem()
    v = jax.random.normal(jax.random.key(2), GRID.shape)
    r = problem.residuals(v)
    assert r.shape == (24 + 20,)
    np.testing.assert_allclose(problem.cost(v), 0.5 * jnp.sum(r**2), rtol=1e-14)
    np.testing.assert_array_equal(r[:24], v)
    np.testing.assert_allclose(problem.initial_state(problem.zero_control()), twin.background)
    expected = (twin.observations - problem.schedule.observe(problem.trajectory(v))) / 0.05
    np.testing.assert_allclose(problem.observation_residuals(v), expected, rtol=1e-12)


@pytest.mark.parametrize("control", ["state", "kappa"])
def test_residual_jacobian_passes_the_dot_product_test_and_the_cost_the_taylor_test(control):
    problem = _problem()[0] if control == "state" else _kappa_problem()[0]
    v = 0.3 * jax.random.normal(jax.random.key(3), GRID.shape)
    assert dp.check.dot_product_test(problem.residuals, v).relative_error <= 1e-12
    assert dp.check.taylor_test(problem.cost, v).rate >= 1.9


def test_missing_observations_are_masked_out_of_cost_and_gradient():
    problem, twin = _problem()
    y = np.asarray(twin.observations).copy()
    y[[1, 11]] = np.nan  # time 0 sensor 1, time 2 sensor 1
    masked = da.StrongConstraint4DVar(MODEL, problem.schedule, y, twin.R, problem.B, problem.background)
    assert masked.n_observations == 18
    # The same data without those observations: the sensor is absent at times 0 and 2.
    four = ob.PointSensors(GRID, [0.1, 0.45, 0.7, 0.9])
    schedule = ob.ObservationSchedule.from_steps(STEPS, [four, SENSORS, four, SENSORS], dt=MODEL.dt)
    kept = np.delete(y, [1, 11])
    reduced = da.StrongConstraint4DVar(MODEL, schedule, kept, ob.DiagonalR(0.05), problem.B, problem.background)
    v = jax.random.normal(jax.random.key(4), GRID.shape)
    (c1, g1), (c2, g2) = (jax.value_and_grad(p.cost)(v) for p in (masked, reduced))
    assert np.isfinite(c1) and np.all(np.isfinite(g1))
    np.testing.assert_allclose(c1, c2, rtol=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-14)


def test_lbfgs_reaches_the_exact_posterior_mean_of_a_linear_gaussian_problem():
    problem, _ = _problem()
    # Heat is linear: J(v) = ½|v|² + ½|G v - d|², minimised by (I + GᵀG) v = Gᵀd (dense, small).
    zero = problem.zero_control()
    d = problem.observation_residuals(zero)
    G = -jax.jacfwd(problem.observation_residuals)(zero)
    exact = np.linalg.solve(np.eye(24) + G.T @ G, G.T @ d)
    result = S.iterate(S.LBFGS(), problem, mode=S.Converged(rtol=1e-10, max_steps=200))
    costs = result.history()["cost"]
    assert result.converged and result.num_steps < 200
    np.testing.assert_allclose(result.value, exact, rtol=0, atol=1e-7 * np.abs(exact).max())
    assert np.all(np.diff(costs) <= 1e-12 * costs[0])  # monotone (line search)


def test_without_B_the_control_is_the_field_and_the_cost_is_the_observation_misfit():
    """B=None: no background term; the first guess is the starting point; a sparse source is recovered by FISTA."""
    source = jnp.zeros(GRID.shape).at[6].set(3.0).at[17].set(2.0)
    model = dp.Heat(GRID, 0.02, dt=1e-3, source=jnp.zeros(GRID.shape))
    schedule = ob.ObservationSchedule.from_steps([10, 20, 30], ob.subsample(GRID, 2), dt=model.dt)
    control = da.Parameter("source", jnp.zeros(GRID.shape), transform="identity")
    truth_model = eqx.tree_at(lambda m: m.source, model, source)
    twin = ob.twin_experiment(truth_model, jnp.zeros(GRID.shape), schedule, 1e-4, jax.random.key(3))
    guess = jnp.full(GRID.shape, 0.1)
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, None, guess, control)
    np.testing.assert_array_equal(problem.zero_control(), guess)
    np.testing.assert_array_equal(problem.residuals(guess), problem.observation_residuals(guess))
    assert problem.residuals(guess).shape == (problem.n_observations,)
    np.testing.assert_array_equal(problem.model_for(source).source, source)
    composite = S.Composite(problem, dp.priors.Sum(dp.priors.L1(1e-4), dp.priors.NonNegative()))
    estimate = S.iterate(S.FISTA(), composite, mode=S.Converged(rtol=1e-8, max_steps=5000)).value
    assert np.flatnonzero(np.asarray(estimate) > 0.3).tolist() == [6, 17]
    np.testing.assert_allclose(np.asarray(estimate)[[6, 17]], [3.0, 2.0], rtol=0.05)


def test_assimilation_beats_the_background_and_reports_progress():
    problem, twin = _problem()
    seen = []
    result = S.iterate(S.LBFGS(), problem, mode=S.Converged(rtol=1e-5, max_steps=30),
                       progress=lambda k, records: seen.append((k, records["cost"])), throw=False)
    assert [s[0] for s in seen] == list(range(result.num_steps + 1))
    np.testing.assert_allclose([s[1] for s in seen], result.history()["cost"])
    analysis = problem.initial_state(result.value)
    assert jnp.linalg.norm(analysis - TRUTH) < 0.5 * jnp.linalg.norm(twin.background - TRUTH)
    adam = S.iterate(S.Adam(learning_rate=0.1), problem, mode=S.Converged(rtol=1e-5, max_steps=20), throw=False)
    costs = adam.history()["cost"]
    assert adam.num_steps == 20 and adam.outcome == "max_steps_reached" and costs[-1] < 0.5 * costs[0]


def test_parameter_estimation_recovers_a_diffusivity_field():
    problem, kappa_true = _kappa_problem()
    result = S.iterate(S.LBFGS(), problem, mode=S.Converged(rtol=1e-5, max_steps=40), throw=False)
    kappa = problem.model_for(result.value).kappa
    background = problem.model_for(problem.zero_control()).kappa
    error = lambda k: float(jnp.sqrt(jnp.mean((k - kappa_true) ** 2)))
    assert error(kappa) < 0.5 * error(background)
    assert result.history()["cost"][-1] < problem.n_observations  # 2J ≈ N at the optimum (χ²)


def test_initial_displacement_of_a_wave():
    grid = dp.Grid1D(32, 1.0, bc="dirichlet")
    wave = dp.Wave(grid, 1.0)
    truth = (jnp.exp(-((grid.x - 0.3) ** 2) / 0.005), jnp.zeros(32))
    schedule = ob.ObservationSchedule.from_steps(range(4, 41, 4), ob.PointSensors(grid, [0.2, 0.5, 0.8]), dt=wave.dt)
    B = ob.DiffusionB(grid, 0.3, 0.05)
    twin = ob.twin_experiment(wave, truth, schedule, 0.01, jax.random.key(0), background=B)
    control = da.InitialState(template=twin.background, field=0)
    problem = da.StrongConstraint4DVar(wave, schedule, twin.observations, twin.R, B, control.to_control(twin.background), control)
    result = S.iterate(S.LBFGS(), problem, mode=S.Converged(rtol=1e-5, max_steps=40), throw=False)
    u0 = problem.initial_state(result.value)
    assert isinstance(u0, tuple) and np.array_equal(u0[1], truth[1])
    assert jnp.linalg.norm(u0[0] - truth[0]) < 0.5 * jnp.linalg.norm(twin.background[0] - truth[0])


@pytest.mark.parametrize("adjoint", [Checkpointed(every=1), Checkpointed(every=7), Checkpointed(checkpoints=2), Checkpointed()])
def test_every_rollout_adjoint_gives_the_same_gradient_in_strong_and_weak_constraint_4dvar(adjoint):
    problem, twin = _problem()
    weak = lambda a: da.WeakConstraint4DVar(MODEL, problem.schedule, twin.observations, twin.R, problem.B,
                                            twin.background, ob.DiffusionB(GRID, 0.01, 0.1), forcing_every=4, adjoint=a)
    v = 0.3 * jax.random.normal(jax.random.key(3), GRID.shape)
    w = (v, 0.1 * jax.random.normal(jax.random.key(4), (weak(Direct()).n_blocks, *GRID.shape)))
    for make, x in ((lambda a: _problem(adjoint=a)[0], v), (weak, w)):
        reference, other = jax.grad(make(Direct()).cost)(x), jax.grad(make(adjoint).cost)(x)
        for a, b in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(other)):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(a))))


def _bad(**kwargs):
    problem, twin = _problem()
    args = {"model": MODEL, "schedule": problem.schedule, "observations": twin.observations, "R": twin.R,
            "B": problem.B, "background": problem.background}
    return lambda: da.StrongConstraint4DVar(**{**args, **kwargs})


@pytest.mark.parametrize(
    "call, error, match",
    [
        (_bad(observations=jnp.zeros(8)), ValueError,
         r"observations have shape \(8,\), but the schedule's operators make 20 observations \(4 times with \[5, 5, 5, 5\] sensors\)"),
        (_bad(model=dp.Heat(GRID, 0.02, dt=2e-3)), ValueError, "the model's dt=0.002 differs from the schedule's dt=0.001"),
        (_bad(model=dp.Heat(dp.Grid1D(20), 0.02, dt=1e-3)), ValueError, r"operators are on a grid of shape \(24,\), the model on \(20,\)"),
        (_bad(R=ob.DiagonalR(jnp.ones(4))), ValueError, r"R.sigma has shape \(4,\); give a scalar or \(20,\)"),
        (_bad(R=0.1), TypeError, "R must be a DiagonalR"),
        (_bad(background=jnp.zeros(5)), ValueError, r"background control field has shape \(5,\), expected the grid's shape \(24,\)"),
        (_bad(schedule=[0.1]), TypeError, "schedule must be an ObservationSchedule"),
        (_bad(control="kappa"), TypeError, "control must be InitialState, Parameter or Joint"),
        (_bad(adjoint=Implicit()), TypeError, r"adjoint must be Direct\(\) or Checkpointed\(...\) .*got Implicit"),
        (_bad(adjoint=10), TypeError, r"StrongConstraint4DVar: adjoint must be Direct\(\) or Checkpointed\(...\) .*got int"),
        (lambda: da.WeakConstraint4DVar(MODEL, _problem()[0].schedule, _problem()[1].observations, ob.DiagonalR(0.05),
                                        ob.DiffusionB(GRID, 0.5, 0.1), TRUTH, ob.DiffusionB(GRID, 0.5, 0.1), adjoint=True),
         TypeError, r"WeakConstraint4DVar: adjoint must be Direct\(\) or Checkpointed\(...\) .*got bool"),
        (lambda: da.Parameter("kappa", TRUTH, transform="sqrt"), ValueError, r"unknown transform 'sqrt'; valid are \['identity', 'log'\]"),
        (lambda: _bad(control=da.Parameter("kapa", TRUTH))().cost(jnp.zeros(24)), ValueError,
         r"Heat has no parameter field 'kapa'; valid are \['kappa'\]"),
        (lambda: S.iterate(S.Adam(learning_rate=0.0), _problem()[0]), ValueError, "learning_rate must be a finite number > 0"),
        (lambda: S.iterate(S.LBFGS(memory_size=0), _problem()[0]), ValueError, "memory_size must be an integer >= 1"),
        (lambda: S.iterate(S.LBFGS(), _problem()[0], mode=S.Converged(atol=-1.0)), ValueError,
         "atol must be a finite number >= 0"),
        (lambda: S.iterate(S.LBFGS(), _problem()[0], jnp.full(24, jnp.inf)), eqx.EquinoxRuntimeError,
         "became non-finite"),
        (lambda: S.iterate(S.LBFGS(), _problem()[0], mode=S.Unrolled(3)), ValueError, "zoom line search"),
        (lambda: S.iterate(S.LBFGS(), "problem"), TypeError, "problem must be an AbstractProblem"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
