"""Symmetric tangents (diffphys/_symmetric_tangent.py): an affine, symmetric model part's adjoint is its tangent map.

Every derivative JAX can take of a rollout must equal the one JAX forms by transposing the undecorated part
operation by operation (the reference: the same model with the part's ``__wrapped__`` method), to round-off, on
every kind of boundary and with explicit, implicit and leapfrog schemes; the decorated parts must be exactly
those the models declare affine and symmetric, and their tangent maps must pass the dot-product test.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys.grid import Dirichlet, Neumann
from diffphys.models._advection_diffusion import AdvectionDiffusion
from diffphys.models._heat import Heat
from diffphys.models._wave import Wave

N_STEPS = 3
GRIDS = {
    "1d-periodic": lambda: dp.Grid1D(10),
    "1d-dirichlet/neumann": lambda: dp.Grid1D(10, bc=(Dirichlet(1.0), Neumann(0.5))),
    "2d-periodic/dirichlet-neumann": lambda: dp.Grid2D(6, 5, bc=("periodic", (Dirichlet(0.3), Neumann(-1.0)))),
}
SYMMETRIC_PARTS = {Heat: "rhs", Wave: "acceleration", AdvectionDiffusion: "implicit_rhs"}


class _PlainHeat(Heat):
    """Heat with its right-hand side transposed by JAX operation by operation (the reference)."""

    def rhs(self, u):
        return Heat.rhs.__wrapped__(self, u)


class _PlainWave(Wave):
    def acceleration(self, u):
        return Wave.acceleration.__wrapped__(self, u)


def _heat(grid_name, scheme, plain=False, dt=None):
    grid = GRIDS[grid_name]()
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    kappa = 0.5 + 0.2 * jax.random.uniform(k1, grid.shape)
    source = 0.3 + 0.1 * jax.random.normal(k2, grid.shape)
    return (_PlainHeat if plain else Heat)(grid, kappa, scheme=scheme, source=source, dt=dt)


def _vectors(shape):
    u, w = jax.random.normal(jax.random.PRNGKey(5), (2, *shape))
    return u, w


def _derivatives(model, u, w, every: bool) -> dict:
    """Derivatives of a 3-step rollout by every transformation (``every``) or the first-order ones, in one program."""
    return jax.jit(lambda model, u, w: _derivative_table(model, u, w, every))(model, u, w)


def _derivative_table(model, u, w, every):
    run = lambda m, u: dp.rollout(m, u, N_STEPS)[-1]
    with_kappa = lambda k: eqx.tree_at(lambda m: m.kappa, model, k)
    _, tangent = jax.linearize(lambda u: run(model, u), u)
    adjoint = jax.linear_transpose(tangent, u)
    table = {
        "value": run(model, u),
        "tangent": tangent(w),
        "adjoint": adjoint(w)[0],
        "gradient in u": jax.grad(lambda u: jnp.vdot(run(model, u), w))(u),
        "gradient in kappa and u": jax.grad(lambda k, u: jnp.sum(run(with_kappa(k), u) ** 2), (0, 1))(model.kappa, u),
    }
    if not every:
        return table
    return table | {
        "gradient in the source": jax.grad(lambda f: jnp.vdot(run(eqx.tree_at(lambda m: m.source, model, f), u), w))(
            model.source),
        "batched adjoint": jax.vmap(lambda c: adjoint(c)[0])(jnp.stack([w, u])),
        "Hessian-vector product": jax.jvp(jax.grad(lambda u: jnp.sum(run(model, u) ** 3)), (u,), (w,))[1],
        "mixed second derivative": jax.jvp(jax.grad(lambda u, k: jnp.vdot(run(with_kappa(k), u), w)),
                                           (u, model.kappa), (w, w))[1],
        "batched models": jax.vmap(lambda k: run(with_kappa(k), u))(jnp.stack([model.kappa, 1.1 * model.kappa])),
    }


def _assert_tables_equal(ours, plain):
    assert ours.keys() == plain.keys()
    for name in ours:
        got, want = jax.tree_util.tree_leaves(ours[name]), jax.tree_util.tree_leaves(plain[name])
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * float(jnp.max(jnp.abs(b))), err_msg=name)


@pytest.mark.parametrize("grid_name, scheme, every", [
    ("2d-periodic/dirichlet-neumann", "rk4", True),  # every transformation, on every kind of boundary
    ("1d-dirichlet/neumann", "ssprk3", False),
    ("1d-periodic", "euler", False),
    ("1d-dirichlet/neumann", "crank_nicolson", False),  # CG solves and implicit-function-theorem adjoints
])
def test_every_derivative_of_heat_equals_jax_transposing_the_plain_right_hand_side(grid_name, scheme, every):
    dt = 2e-3 if scheme == "crank_nicolson" else None
    ours, plain = _heat(grid_name, scheme, dt=dt), _heat(grid_name, scheme, plain=True, dt=dt)
    u, w = _vectors(ours.grid.shape)
    _assert_tables_equal(_derivatives(ours, u, w, every), _derivatives(plain, u, w, every))


def test_the_wave_equations_leapfrog_gradients_equal_jax_transposing_the_plain_acceleration():
    grid = GRIDS["1d-dirichlet/neumann"]()
    speed = 1.0 + 0.2 * jnp.sin(2 * jnp.pi * grid.x)
    state = _vectors(grid.shape)
    def gradients(model):
        loss = lambda c, s: jnp.sum(dp.rollout(eqx.tree_at(lambda m: m.speed, model, c), s, N_STEPS)[0][-1] ** 2)
        return jax.jit(lambda c, s: (jax.grad(loss, 1)(c, s), jax.grad(loss, (0, 1))(c, s)))(speed, state)

    ours, plain = gradients(Wave(grid, speed)), gradients(_PlainWave(grid, speed))
    wave = Wave(grid, 1.0)
    in_state = jax.make_jaxpr(jax.grad(lambda s: jnp.sum(wave(s)[0] ** 2)))(state)
    assert "diffphys_symmetric_tangent" in str(in_state)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_the_tangent_map_is_symmetric_and_is_its_own_adjoint(grid_name):
    model = _heat(grid_name, "rk4")
    u, w = _vectors(model.grid.shape)
    _, tangent = jax.linearize(model.rhs, u)
    adjoint = jax.linear_transpose(tangent, u)
    # Dot-product test <A u, w> = <u, A^T w>, and A^T = A (the part's own tangent map).
    lhs, rhs = jnp.vdot(tangent(u), w), jnp.vdot(u, adjoint(w)[0])
    assert abs(lhs - rhs) <= 1e-13 * abs(lhs)
    np.testing.assert_allclose(adjoint(w)[0], tangent(w), rtol=1e-13, atol=1e-13)
    # The JAX-transposed undecorated part is the same operator: the symmetry is the model's, not assumed.
    _, plain_tangent = jax.linearize(lambda u: Heat.rhs.__wrapped__(model, u), u)
    np.testing.assert_allclose(jax.linear_transpose(plain_tangent, u)(w)[0], tangent(w), rtol=1e-12, atol=1e-12)


def test_exactly_the_parts_a_model_declares_affine_and_symmetric_are_decorated():
    for cls in (Heat, Wave, AdvectionDiffusion, dp.Advection, dp.Lorenz96):
        for part in ("rhs", "acceleration", "implicit_rhs", "explicit_rhs"):
            method = getattr(cls, part, None)
            decorated = hasattr(method, "__wrapped__")
            assert decorated == (SYMMETRIC_PARTS.get(cls) == part), (cls.__name__, part)
    grid = dp.Grid1D(8)
    models = [Heat(grid, 0.5), Wave(grid, 1.0), AdvectionDiffusion(grid, 1.0, 0.1, dt=1e-3)]
    for model in models:
        assert {"affine", "symmetric"} <= model.jacobian_properties(SYMMETRIC_PARTS[type(model)])
    heat = Heat(grid, 0.5)
    gradient = jax.make_jaxpr(jax.grad(lambda u: jnp.sum(heat(u) ** 2)))(jnp.ones(8))
    assert "diffphys_symmetric_tangent" in str(gradient)
