"""Lorenz-96: exact solutions and identities, derivatives, and the inputs it refuses."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from helpers import final_state, observed_order, rollout_loss


def test_the_nonlinear_term_conserves_energy_and_the_uniform_state_F_is_a_fixed_point():
    model = dp.Lorenz96(40, 8.0)
    x = jax.random.normal(jax.random.key(0), (40,)) * 3.0
    nonlinear = model.rhs(x) + x - model.forcing  # (x_{i+1} - x_{i-2}) x_{i-1}
    assert abs(float(jnp.vdot(x, nonlinear))) < 1e-12 * float(jnp.vdot(x, x)) * 3.0
    assert float(jnp.max(jnp.abs(model.rhs(jnp.full(40, 8.0))))) == 0.0
    # The ring is cyclic: shifting the state shifts the tendency.
    assert jnp.allclose(model.rhs(jnp.roll(x, 3)), jnp.roll(model.rhs(x), 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme, order", [("rk4", 4), ("ssprk3", 3)])
def test_time_order_against_the_exact_relaxation_of_a_uniform_state(scheme, order):
    # A uniform state stays uniform and relaxes to F exactly: c(t) = F + (c0 - F) exp(-t).
    forcing, c0, t_end = 8.0, 2.0, 1.0
    errors, steps = [], (20, 40, 80, 160)
    for n in steps:
        model = dp.Lorenz96(12, forcing, dt=t_end / n, scheme=scheme)
        x = final_state(model, jnp.full(12, c0), n)
        errors.append(float(jnp.max(jnp.abs(x - (forcing + (c0 - forcing) * np.exp(-t_end))))))
    assert observed_order([t_end / n for n in steps], errors) == pytest.approx(order, abs=0.15)


def test_chaotic_regime_has_the_attractor_statistics():
    model = dp.Lorenz96()
    x = dp.rollout(model, 8.0 + 0.01 * jnp.sin(jnp.arange(40.0)), 4000, save_every=20)[50:]
    assert float(jnp.mean(x)) == pytest.approx(2.35, abs=0.25)  # climatological mean and std, F = 8
    assert float(jnp.std(x)) == pytest.approx(3.6, abs=0.3)


def test_derivatives_of_the_step_in_state_and_forcing():
    model = dp.Lorenz96(40, 8.0 + jnp.sin(jnp.arange(40.0)))
    x = dp.rollout(model, 8.0 + 0.01 * jnp.sin(jnp.arange(40.0)), 400)[-1]
    assert dp.check.dot_product_test(model.step, x).relative_error < 1e-12
    assert dp.check.dot_product_test(lambda m: m.step(x), model).relative_error < 1e-12
    loss = lambda pair: rollout_loss(eqx.tree_at(lambda m: m.forcing, model, pair[1]), pair[0], 20)
    assert dp.check.taylor_test(loss, (x, model.forcing), eps0=1e-3).rate >= 1.9


def test_a_batch_of_forcings_with_filter_vmap():
    models = eqx.filter_vmap(lambda f: dp.Lorenz96(8, f))(jnp.array([6.0, 8.0, 10.0]))
    out = eqx.filter_vmap(lambda m: m.step(jnp.ones(8)))(models)
    assert out.shape == (3, 8)
    assert jnp.allclose(out[1], dp.Lorenz96(8, 8.0).step(jnp.ones(8)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=3), r"n \(number of variables\) must be an integer >= 4, got 3"),
        (dict(n=40.0), r"must be an integer >= 4, got 40.0"),
        (dict(dt=0.0), r"dt must be a finite number > 0, got 0.0"),
        (dict(dt=0.2), r"dt=0.2 exceeds the 'rk4' limit 0.08571 .* use dt <= 0.08571"),
        (dict(scheme="euler"), r"scheme 'euler' is not applicable .* use 'rk4' or 'ssprk3'"),
        (dict(scheme="backward_euler"), r"scheme 'backward_euler' is not applicable"),
        (dict(forcing=jnp.ones(7)), r"forcing F has shape \(7,\), which does not broadcast to the grid's shape \(40,\)"),
        (dict(forcing=jnp.nan), r"forcing F must be finite everywhere"),
    ],
)
def test_bad_input_is_refused_with_the_offending_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dp.Lorenz96(**kwargs)


def test_a_state_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match=r"Lorenz96: state has shape \(39,\), expected \(40,\)"):
        dp.Lorenz96().step(jnp.zeros(39))
