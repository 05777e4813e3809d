"""Adaptive method of lines (``dp.integrate``): accuracy against the exact semi-discrete heat solution,
tolerance convergence, derivatives (Taylor, dot-product, adjoint equivalence), and every documented error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observed_order

import diffphys as dp
from diffphys.adjoint import Checkpointed, Direct, Implicit

GRID = dp.Grid1D(32)  # periodic
KAPPA, MODE = 0.05, 3
MODEL = dp.Heat(GRID, KAPPA)
U0 = jnp.sin(2 * np.pi * MODE * GRID.x)
TIMES = (0.0, 0.1, 0.5)


def _exact(times):
    r"""The semi-discrete solution: the Fourier mode is an eigenvector of the periodic 3-point Laplacian,
    with eigenvalue $-4\kappa/h^2 \sin^2(\pi m h)$ (not the continuous $-\kappa (2\pi m)^2$)."""
    rate = -4 * KAPPA / GRID.dx**2 * np.sin(np.pi * MODE * GRID.dx) ** 2
    return np.stack([np.exp(rate * t) * np.asarray(U0) for t in times])


@pytest.mark.parametrize("solver", ["tsit5", "kvaerno5"])
def test_heat_mode_decays_at_the_stencil_rate_and_error_falls_with_the_tolerance(solver):
    errors = []
    for rtol in (1e-4, 1e-6, 1e-8):
        y = dp.integrate(MODEL, U0, 0.5, save_at=TIMES, rtol=rtol, atol=1e-3 * rtol, solver=solver)
        assert y.shape == (3, 32)
        errors.append(float(np.max(np.abs(np.asarray(y) - _exact(TIMES)))))
    assert errors[-1] < 1e-8
    assert errors[0] > errors[1] > errors[2]
    assert observed_order([1e-4, 1e-6, 1e-8], errors) > 0.8  # error ~ tolerance


def test_stiff_solver_takes_large_steps_where_an_explicit_one_runs_out_of_budget():
    """256 cells: the explicit step is limited by stability (h^2 / kappa), the L-stable one by accuracy."""
    grid = dp.Grid1D(256)
    model, u0 = dp.Heat(grid, KAPPA), jnp.sin(2 * np.pi * grid.x)
    y = dp.integrate(model, u0, 1.0, solver="kvaerno5", rtol=1e-6, atol=1e-9, max_steps=200)
    rate = -4 * KAPPA / grid.dx**2 * np.sin(np.pi * grid.dx) ** 2
    np.testing.assert_allclose(y[0], np.exp(rate) * u0, atol=1e-6)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"max_steps=200 ran out at t in \[0.\d+, 0.\d+\] of \[t0=0, t1=1\]; raise max_steps, "
                       r"loosen rtol/atol; if the problem is stiff .* solver='kvaerno5'"):
        dp.integrate(model, u0, 1.0, solver="tsit5", rtol=1e-6, atol=1e-9, max_steps=200)


def test_tuple_states_integrate():
    wave = dp.Wave(dp.Grid1D(32, bc="dirichlet"), 1.0)
    g = wave.grid
    u, v = dp.integrate(wave, (jnp.sin(np.pi * g.x), jnp.zeros(32)), 1.0, save_at=[0.0, 1.0], rtol=1e-9, atol=1e-12)
    assert u.shape == v.shape == (2, 32)
    # the fundamental mode of the semi-discrete string returns to minus itself after half a period
    omega = 2 / g.dx * np.sin(np.pi * g.dx / 2)
    np.testing.assert_allclose(u[1], np.cos(omega) * np.sin(np.pi * g.x), atol=1e-7)


def _loss(adjoint):
    """(The model's dt and scheme are unused by integrate; backward Euler takes any dt under grad.)"""
    def loss(kappa, u0):
        y = dp.integrate(dp.Heat(GRID, kappa, dt=1.0, scheme="backward_euler"), u0, 0.3, save_at=(0.1, 0.3), rtol=1e-10, atol=1e-12, adjoint=adjoint)
        return jnp.sum(jnp.sin(y) + 0.5 * y**2)

    return loss


# Adaptive steps: the two adjoints' programs must round alike to take the same steps (see tests/conftest.py).
@pytest.mark.xla_default_optimisation
def test_gradient_passes_the_taylor_test_and_both_adjoints_agree():
    kappa = KAPPA * (1 + 0.3 * jnp.cos(2 * np.pi * GRID.x))
    u0 = U0 + 0.5 * jnp.cos(2 * np.pi * GRID.x)
    assert dp.check.taylor_test(lambda m: _loss(Checkpointed())(*m), (kappa, u0), eps0=1e-3).rate >= 1.9
    recursive = jax.grad(_loss(Checkpointed(checkpoints=4)), argnums=(0, 1))(kappa, u0)
    direct = jax.grad(_loss(Direct()), argnums=(0, 1))(kappa, u0)
    for a, b in zip(direct, recursive):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(a))))


def test_direct_adjoint_supports_forward_mode():
    run = lambda u0: dp.integrate(MODEL, u0, 0.2, rtol=1e-9, atol=1e-12, adjoint=Direct())
    assert dp.check.dot_product_test(run, U0 + 0.3 * jnp.cos(2 * np.pi * GRID.x)).relative_error <= 1e-12


def test_non_finite_state_names_the_time_reached():
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"became non-finite \(NaN or inf\) at t in \[0, 0.005\] of \[t0=0, t1=0.5\]"):
        dp.integrate(MODEL, U0.at[3].set(jnp.nan), 0.5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(solver="rk45"), ValueError, r"unknown solver 'rk45'; valid are \['tsit5', 'dopri5', 'dopri8', 'bosh3', 'kvaerno3', 'kvaerno5'\]"),
        (dict(t1=0.0), ValueError, "t1=0.0 must be greater than t0=0.0"),
        (dict(t1=float("nan")), ValueError, "t1 must be a finite number, got nan"),
        (dict(save_at=[0.2, 0.7]), ValueError, r"save_at has times \[0.7\] outside \[t0=0, t1=0.5\]"),
        (dict(save_at=[0.3, 0.2]), ValueError, r"save_at must be strictly increasing, got \[0.3, 0.2\]"),
        (dict(save_at=[]), ValueError, "save_at is empty"),
        (dict(rtol=0.0), ValueError, "rtol must be a finite number > 0, got 0.0"),
        (dict(atol=-1e-9), ValueError, "atol must be a finite number > 0, got -1e-09"),
        (dict(max_steps=0), ValueError, "max_steps must be an integer >= 1, got 0"),
        (dict(dt0=-0.1), ValueError, r"dt0 must be > 0 \(or None for an automatic first step\), got -0.1"),
        (dict(adjoint=Checkpointed(every=4)), TypeError, r"adjoint must be Checkpointed\(\) .* got Checkpointed\(every=4"),
        (dict(adjoint=Implicit()), TypeError, r"no converged solution for Implicit"),
        (dict(state=jnp.zeros(16)), ValueError, r"Heat: state has shape \(16,\), expected \(32,\)"),
        (dict(model=lambda u: u), TypeError, "model must be a diffphys model .* got function"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(model=MODEL, state=U0, t1=0.5)
    args.update(kwargs)
    model, state, t1 = args.pop("model"), args.pop("state"), args.pop("t1")
    with pytest.raises(error, match=match):
        dp.integrate(model, state, t1, **args)
