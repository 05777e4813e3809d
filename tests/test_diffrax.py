"""Each model's right-hand side integrates with diffrax (method of lines) and agrees with the native stepper."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp


def _models(scheme="euler", fraction=0.9):
    """Models and initial states; ``dt`` is ``fraction`` of each model's stability limit."""
    g1, g2 = dp.Grid1D(32, bc="neumann"), dp.Grid2D(12, 12, bc=("periodic", "dirichlet"))
    X, Y = g2.coordinates

    def build(cls, *args, **kwargs):
        limit = cls(*args, scheme=scheme, **kwargs).max_stable_dt
        return cls(*args, dt=fraction * limit, scheme=scheme, **kwargs)

    models = {
        "heat1d": (build(dp.Heat, g1, 0.2 + 0.1 * g1.x), jnp.cos(np.pi * g1.x) + g1.x),
        "heat2d": (build(dp.Heat, g2, 0.1), jnp.sin(np.pi * Y) * (1 + 0.5 * jnp.cos(2 * np.pi * X))),
        "advection1d": (build(dp.Advection, dp.Grid1D(32), 1.0, reconstruction="upwind"), jnp.sin(2 * np.pi * g1.x)),
    }
    if scheme != "euler":
        models["wave1d"] = (build(dp.Wave, dp.Grid1D(32, bc="dirichlet"), 1.0), (jnp.sin(np.pi * g1.x), jnp.zeros(32)))
    return models


@pytest.mark.parametrize("name", ["heat1d", "heat2d", "advection1d"])
def test_diffrax_euler_equals_native_euler(name):
    model, y0 = _models()[name]
    n = 40
    native = dp.rollout(model, y0, n)[-1]
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(model.vector_field), diffrax.Euler(), t0=0.0, t1=n * model.dt, dt0=model.dt, y0=y0,
        max_steps=n + 1,
    )
    np.testing.assert_allclose(sol.ys[-1], native, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["heat1d", "heat2d", "advection1d", "wave1d"])
def test_adaptive_diffrax_agrees_with_native_rk4(name):
    """Tight adaptive Tsit5 vs RK4 at 5% of the stability limit (RK4 time error ~1e-9)."""
    model, y0 = _models(scheme="rk4", fraction=0.05)[name]
    n = 200
    native = jax.tree_util.tree_map(lambda x: x[-1], dp.rollout(model, y0, n))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(model.vector_field), diffrax.Tsit5(), t0=0.0, t1=n * model.dt, dt0=model.dt, y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-13), max_steps=100_000,
    )
    final = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(native)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)
