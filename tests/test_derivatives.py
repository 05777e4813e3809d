"""Derivatives of every stepper: dot-product (adjoint) tests and Taylor tests for state and parameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import diffphys as dp
from helpers import final_state, rollout_loss

N_STEPS = 6


def _grid(ndim, bc):
    return dp.Grid1D(24, bc=bc) if ndim == 1 else dp.Grid2D(12, 10, lengths=(1.0, 0.8), bc=bc)


def _bump(grid, centre=0.4):
    return jnp.exp(-20 * sum((x - centre) ** 2 for x in grid.coordinates))


def _heat(ndim, scheme, bc):
    grid = _grid(ndim, bc)
    x0 = grid.coordinates[0]
    model = dp.Heat(grid, 0.5 + 0.3 * jnp.sin(3 * x0), source=jnp.cos(2 * x0), scheme=scheme)
    return model, _bump(grid), ("kappa", "source")


def _advection(ndim, scheme, bc, reconstruction):
    grid = _grid(ndim, bc)
    coords = grid.coordinates
    velocity = 0.8 + 0.3 * jnp.sin(2 * jnp.pi * coords[0])
    if ndim == 2:
        velocity = (velocity, -0.5 + 0.2 * jnp.cos(2 * jnp.pi * coords[1]))
    model = dp.Advection(grid, velocity, reconstruction=reconstruction, scheme=scheme)
    return model, _bump(grid) + 0.2 * jnp.sin(2 * jnp.pi * coords[0]), ("velocity",)


def _wave(ndim, scheme, bc):
    grid = _grid(ndim, bc)
    x0 = grid.coordinates[0]
    model = dp.Wave(grid, 1.0 + 0.4 * jnp.sin(2 * x0), source=0.5 * jnp.cos(3 * x0), scheme=scheme)
    return model, (_bump(grid), 0.3 * _bump(grid, 0.6)), ("speed", "source")


CASES = {
    "heat1d-euler-dirichlet/neumann": lambda: _heat(1, "euler", (dp.Dirichlet(0.3), dp.Neumann(0.2))),
    "heat1d-ssprk3-periodic": lambda: _heat(1, "ssprk3", "periodic"),
    "heat1d-rk4-neumann": lambda: _heat(1, "rk4", "neumann"),
    "heat2d-rk4-periodic/dirichlet": lambda: _heat(2, "rk4", ("periodic", dp.Dirichlet(1.0))),
    "advection1d-upwind-euler-periodic": lambda: _advection(1, "euler", "periodic", "upwind"),
    "advection1d-weno5-ssprk3-periodic": lambda: _advection(1, "ssprk3", "periodic", "weno5"),
    "advection1d-weno5-rk4-inflow/outflow": lambda: _advection(1, "rk4", (dp.Dirichlet(0.1), "neumann"), "weno5"),
    "advection2d-weno5-ssprk3-periodic": lambda: _advection(2, "ssprk3", "periodic", "weno5"),
    "advection2d-upwind-rk4-periodic": lambda: _advection(2, "rk4", "periodic", "upwind"),
    "wave1d-leapfrog-dirichlet": lambda: _wave(1, "leapfrog", "dirichlet"),
    "wave1d-ssprk3-periodic": lambda: _wave(1, "ssprk3", "periodic"),
    "wave1d-rk4-neumann": lambda: _wave(1, "rk4", "neumann"),
    "wave2d-leapfrog-neumann/periodic": lambda: _wave(2, "leapfrog", ("neumann", "periodic")),
}


def _final(model, state):
    return final_state(model, state, N_STEPS)


def _loss(model, state):
    return rollout_loss(model, state, N_STEPS)


@pytest.mark.parametrize("case", CASES)
def test_step_tangent_and_adjoint_are_transposes(case):
    model, state, _ = CASES[case]()
    result = dp.check.dot_product_test(model.step, state, key=jax.random.key(1))
    assert result.relative_error <= 1e-12, result


@pytest.mark.parametrize("case", CASES)
def test_rollout_jacobian_in_state_and_parameters_passes_dot_product_test(case):
    model, state, _ = CASES[case]()
    result = dp.check.dot_product_test(lambda ms: _final(*ms), (model, state), key=jax.random.key(2))
    assert result.relative_error <= 1e-12, result


@pytest.mark.parametrize("case", CASES)
def test_taylor_rate_for_state_gradient(case):
    model, state, _ = CASES[case]()
    result = dp.check.taylor_test(lambda s: _loss(model, s), state, eps0=1e-3, key=jax.random.key(3))
    assert result.rate >= 1.9, result


@pytest.mark.parametrize("case", CASES)
def test_taylor_rate_for_each_parameter_field(case):
    model, state, fields = CASES[case]()
    for name in fields:
        where = lambda m, name=name: getattr(m, name)
        fn = lambda p: _loss(eqx.tree_at(where, model, p), state)
        result = dp.check.taylor_test(fn, where(model), eps0=1e-3, key=jax.random.key(4))
        assert result.rate >= 1.9, (name, result)


def test_gradient_wrt_boundary_value():
    """A JAX-array Dirichlet value is a differentiable leaf of the model (e.g. to infer an inflow value)."""
    def loss(value):
        grid = dp.Grid1D(20, bc=(dp.Dirichlet(value), "neumann"))
        return jnp.sum(dp.rollout(dp.Heat(grid, 1.0, dt=1e-4), jnp.zeros(20), 50)[-1] ** 2)

    result = dp.check.taylor_test(loss, jnp.asarray(0.7), eps0=1e-2)
    assert result.rate >= 1.9, result


@pytest.mark.parametrize("shape", [(7,), (5, 6)])
def test_split_slice_and_roll_equal_lax_slice_and_jnp_roll(shape):
    from diffphys._stencil import _roll, _slice

    x = jax.random.normal(jax.random.key(5), shape)
    for axis, n in enumerate(shape):
        for start, stop in [(0, n), (0, 1), (0, n - 1), (1, n), (2, n - 1), (n - 1, n)]:
            assert jnp.array_equal(_slice(x, start, stop, axis), jax.lax.slice_in_dim(x, start, stop, axis=axis))
        for shift in range(-n - 1, n + 2):
            assert jnp.array_equal(_roll(x, shift, axis), jnp.roll(x, shift, axis=axis))


@pytest.mark.parametrize("case", CASES)
def test_reverse_mode_of_a_step_has_no_pad(case):
    """The stencils shift by splits and concatenations, whose transposes are again splits and concatenations.

    A ``lax.slice`` or ``jnp.roll`` transposes to ``pad``s, which XLA:CPU does not fuse with the rest
    of the backward pass (gradients of an RK4 heat rollout cost 10-30 forward passes instead of ~2).
    """
    model, state, _ = CASES[case]()
    _, vjp = jax.vjp(model.step, state)
    jaxpr = jax.make_jaxpr(vjp)(state)
    assert "pad[" not in str(jaxpr)
