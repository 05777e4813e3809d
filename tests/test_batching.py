"""jit, vmap over a batch of states and over a batch of parameter sets, for every model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp

G1, G2 = dp.Grid1D(20), dp.Grid2D(8, 6, bc=("neumann", "periodic"))


def _make(name, scale):
    if name == "heat1d":
        return dp.Heat(G1, scale * (1.0 + 0.5 * jnp.sin(G1.x)), dt=1e-4)
    if name == "heat2d":
        return dp.Heat(G2, scale, dt=1e-4)
    if name == "advection1d":
        return dp.Advection(G1, scale, dt=5e-3)
    if name == "advection2d":
        return dp.Advection(G2, (scale, -scale), dt=5e-3)
    if name == "wave1d":
        return dp.Wave(G1, scale, dt=5e-3)
    return dp.Wave(G2, scale, dt=5e-3)


def _state(model, key):
    shape = model.grid.shape
    if isinstance(model, dp.Wave):
        k1, k2 = jax.random.split(key)
        return jax.random.normal(k1, shape), jax.random.normal(k2, shape)
    return jax.random.normal(key, shape)


NAMES = ["heat1d", "heat2d", "advection1d", "advection2d", "wave1d", "wave2d"]


@pytest.mark.parametrize("name", NAMES)
def test_jit_step_equals_eager_step(name):
    model = _make(name, 1.0)
    y = _state(model, jax.random.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter_jit(lambda m, s: m.step(s))(model, y)),
                    jax.tree_util.tree_leaves(model.step(y))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_states(name):
    model = _make(name, 1.0)
    states = [_state(model, k) for k in jax.random.split(jax.random.key(1), 3)]
    batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
    batched = jax.vmap(lambda s: dp.rollout(model, s, 5)[-1] if not isinstance(s, tuple)
                       else tuple(x[-1] for x in dp.rollout(model, s, 5)))(batch)
    for i, s in enumerate(states):
        single = jax.tree_util.tree_map(lambda x: x[-1], dp.rollout(model, s, 5))
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single)):
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_parameter_sets(name):
    """A batch of models (stacked parameter fields) built with eqx.filter_vmap, stepped in one vmap."""
    scales = jnp.array([0.5, 0.8, 1.0])
    models = eqx.filter_vmap(lambda s: _make(name, s))(scales)
    y = _state(_make(name, 1.0), jax.random.key(2))
    batched = eqx.filter_vmap(lambda m: m.step(y))(models)
    for i, s in enumerate(scales):
        single = _make(name, float(s)).step(y)
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single)):
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-13)


def test_vmap_of_gradients_over_parameter_sets():
    """Per-model gradients of a loss with respect to κ, batched."""
    kappas = jnp.stack([jnp.full(20, k) for k in (0.3, 0.6, 0.9)])
    u0 = jnp.sin(2 * jnp.pi * G1.x)

    def loss(kappa):
        return jnp.sum(dp.rollout(dp.Heat(G1, kappa, dt=1e-4), u0, 20)[-1] ** 2)

    batched = jax.vmap(jax.grad(loss))(kappas)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jax.grad(loss)(kappas[i]), rtol=1e-12)
