"""The Gauss–Newton posterior of 4D-Var: std against dense inverse Hessians, low-rank modes, samples, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob

from helpers import log_kappa_problem

GRID = dp.Grid1D(24, 1.0, bc="neumann")
MODEL = dp.Heat(GRID, 0.02, dt=1e-3)
TRUTH = jnp.exp(-((GRID.x - 0.4) ** 2) / 0.01)
SENSORS = ob.PointSensors(GRID, [0.1, 0.45, 0.7])
B = ob.DiffusionB(GRID, 0.5, 0.1)


def _state_problem(steps=(4, 11, 13, 30), lost=()):
    schedule = ob.ObservationSchedule.from_steps(list(steps), SENSORS, dt=MODEL.dt)
    twin = ob.twin_experiment(MODEL, TRUTH, schedule, 0.05, jax.random.key(0), background=B)
    y = np.asarray(twin.observations).copy()
    y[list(lost)] = np.nan
    return da.StrongConstraint4DVar(MODEL, schedule, y, twin.R, B, twin.background)


def _dense_parts(problem, v):
    """The dense Gauss–Newton Hessian JᵀJ of the full residuals and the columns of B^{1/2}, independently."""
    flat, unravel = jax.flatten_util.ravel_pytree(v)
    J = jax.jacfwd(lambda x: problem.residuals(unravel(x)))(flat)
    return J.T @ J


def _dense_state_std(problem, v):
    hessian = _dense_parts(problem, v)
    B_sqrt = jax.vmap(problem.B.sqrt, in_axes=1, out_axes=1)(jnp.eye(GRID.n))
    return jnp.sqrt(jnp.diag(B_sqrt @ jnp.linalg.inv(hessian) @ B_sqrt.T)), hessian


def test_state_std_equals_the_dense_inverse_hessian_diagonal():
    problem = _state_problem(lost=(2, 7))  # 10 present readings < 24 controls: J_o by adjoint rows
    v = 0.3 * jax.random.normal(jax.random.key(3), GRID.shape)  # linear: any point is the analysis's Hessian
    post = da.posterior(problem, v)
    expected, hessian = _dense_state_std(problem, v)
    assert post.complete and post.eigenvalues.shape == (10,)
    np.testing.assert_allclose(post.std(), expected, rtol=1e-8)
    np.testing.assert_allclose(post.control_std(), expected, rtol=1e-8)
    assert np.all(np.asarray(post.std()) < 0.5)  # the data reduce the prior σ = 0.5 everywhere
    # H^{-1/2}: its square is the inverse Hessian (so samples have the posterior covariance).
    root = jax.vmap(post.sqrt_covariance, in_axes=1, out_axes=1)(jnp.eye(GRID.n))
    np.testing.assert_allclose(root @ root.T, jnp.linalg.inv(hessian), atol=1e-10)


def test_more_readings_than_controls_builds_the_jacobian_by_tangent_columns():
    problem = _state_problem(steps=tuple(range(2, 40, 3)))  # 39 readings > 24 controls
    v = jnp.zeros(GRID.shape)  # linear problem: the Hessian is the same everywhere
    expected, _ = _dense_state_std(problem, v)
    np.testing.assert_allclose(da.posterior(problem, v).std(), expected, rtol=1e-8)


def test_randomized_rank_matches_exact_when_it_covers_the_spectrum_and_is_conservative_below():
    problem = _state_problem()
    v = jnp.zeros(GRID.shape)
    exact = da.posterior(problem, v)
    full = da.posterior(problem, v, rank=12, key=jax.random.key(1), oversampling=4)
    np.testing.assert_allclose(full.std(), exact.std(), rtol=1e-8)
    np.testing.assert_allclose(full.eigenvalues, exact.eigenvalues, rtol=1e-8)
    low = da.posterior(problem, v, rank=3, key=jax.random.key(1))
    assert not low.complete
    np.testing.assert_allclose(low.eigenvalues, exact.eigenvalues[:3], rtol=1e-6)
    assert np.all(np.asarray(low.std()) >= np.asarray(exact.std()) - 1e-12)
    assert np.max(np.asarray(low.std() - exact.std())) > 1e-4  # truncation does drop something


def test_parameter_std_is_the_delta_method_of_the_log_transform():
    problem, _ = log_kappa_problem(GRID)
    prior = problem.B
    v = 0.3 * jax.random.normal(jax.random.key(4), GRID.shape)  # a nonlinear model: the Hessian depends on v
    post = da.posterior(problem, v)  # 36 readings > 24 controls
    hessian = _dense_parts(problem, v)
    B_sqrt = jax.vmap(prior.sqrt, in_axes=1, out_axes=1)(jnp.eye(GRID.n))
    z_std = jnp.sqrt(jnp.diag(B_sqrt @ jnp.linalg.inv(hessian) @ B_sqrt.T))
    kappa = problem.model_for(v).kappa
    np.testing.assert_allclose(post.control_std(), z_std, rtol=1e-8)
    np.testing.assert_allclose(post.std(), kappa * z_std, rtol=1e-8)


def test_joint_control_std_matches_the_dense_posterior_per_part():
    model = dp.Heat(GRID, jnp.full(GRID.shape, 0.02), dt=1e-3)
    schedule = ob.ObservationSchedule.from_steps([5, 10, 15, 20, 25, 30], ob.subsample(GRID, 3), dt=model.dt)
    twin = ob.twin_experiment(model, TRUTH, schedule, 0.01, jax.random.key(2))
    control = da.Joint(da.InitialState(), da.Parameter("kappa", transform="identity"))
    priors = (ob.DiffusionB(GRID, 0.5, 0.1), ob.DiffusionB(GRID, 0.005, 0.2))
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, priors,
                                       (TRUTH + 0.1, jnp.full(GRID.shape, 0.02)), control)
    v = (jnp.zeros(GRID.shape), jnp.zeros(GRID.shape))
    post = da.posterior(problem, v)
    hessian = _dense_parts(problem, v)
    columns = [jax.vmap(p.sqrt, in_axes=1, out_axes=1)(jnp.eye(GRID.n)) for p in priors]
    B_sqrt = jax.scipy.linalg.block_diag(*columns)
    expected = jnp.sqrt(jnp.diag(B_sqrt @ jnp.linalg.inv(hessian) @ B_sqrt.T))
    std = post.std()
    assert isinstance(std, tuple) and len(std) == 2
    np.testing.assert_allclose(jnp.concatenate(std), expected, rtol=1e-8)


def test_samples_are_the_analysis_plus_the_inverse_hessian_square_root():
    problem = _state_problem()
    v = jnp.zeros(GRID.shape)
    post = da.posterior(problem, v)
    draws = post.sample(jax.random.key(5), 3)
    xi = jax.random.normal(jax.random.key(5), (3, GRID.n))
    assert draws.shape == (3, GRID.n)
    np.testing.assert_allclose(draws, jax.vmap(post.sqrt_covariance)(xi), atol=1e-14)


def test_bad_inputs_are_refused():
    problem = _state_problem()
    v = jnp.zeros(GRID.shape)
    with pytest.raises(ValueError, match="shaped like problem.zero_control"):
        da.posterior(problem, jnp.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        da.posterior(problem, v.at[0].set(jnp.nan))
    with pytest.raises(ValueError, match="needs key"):
        da.posterior(problem, v, rank=4)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        da.posterior(problem, v, rank=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="StrongConstraint4DVar"):
        da.posterior(object(), v)
    no_B = da.StrongConstraint4DVar(MODEL, problem.schedule, problem.observations, problem.R, None, problem.background)
    with pytest.raises(ValueError, match="no background covariance B"):
        da.posterior(no_B, v)
