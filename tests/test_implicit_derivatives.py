"""Derivatives of implicit steps: dot-product and Taylor tests, finite differences, and agreement
with backpropagation through a fully unrolled tight solve."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from helpers import final_state, rollout_loss
from reference import cg_unrolled
from diffphys._stencil import div_kappa_grad

# A tight tolerance: the forward and adjoint solves agree to about rtol x cond(A).
TIGHT = dp.Newton(rtol=1e-12, linear_solver=dp.LinearSolver(rtol=1e-14, max_steps=2000))


def _bump(grid, centre=0.4):
    return jnp.exp(-20 * sum((x - centre) ** 2 for x in grid.coordinates))


def _heat(scheme_cls, ndim, bc):
    grid = dp.Grid1D(24, bc=bc) if ndim == 1 else dp.Grid2D(12, 10, (1.0, 0.8), bc=bc)
    x0 = grid.coordinates[0]
    model = dp.Heat(grid, 0.5 + 0.3 * jnp.sin(3 * x0), source=jnp.cos(2 * x0), dt=0.01, scheme=scheme_cls(TIGHT))
    return model, _bump(grid), ("kappa", "source")


def _wave(scheme_cls):
    grid = dp.Grid1D(24, bc=(dp.Dirichlet(0.2), dp.Neumann(0.0)))
    model = dp.Wave(grid, 1.0 + 0.4 * jnp.sin(2 * grid.x), source=0.5 * jnp.cos(3 * grid.x), dt=0.2, scheme=scheme_cls(TIGHT))
    return model, (_bump(grid), 0.3 * _bump(grid, 0.6)), ("speed", "source")


def _nonlinear_heat(scheme_cls):
    grid = dp.Grid1D(24, bc=(dp.Dirichlet(0.5), dp.Neumann(0.0)))
    model = dp.NonlinearHeat(grid, 0.2 + 0.1 * jnp.cos(4 * grid.x), beta=0.8, dt=0.02, scheme=scheme_cls(TIGHT))
    return model, _bump(grid), ("kappa", "beta")


def _advection_diffusion(reconstruction, ndim):
    if ndim == 1:
        grid = dp.Grid1D(24, bc="periodic")
        x = grid.x
        velocity = 0.8 + 0.2 * jnp.sin(2 * jnp.pi * x)
    else:
        grid = dp.Grid2D(12, 10, (1.0, 0.8), bc="periodic")
        x, y = grid.coordinates
        velocity = (0.8 + 0.2 * jnp.sin(2 * jnp.pi * y), -0.3)
    model = dp.AdvectionDiffusion(
        grid, velocity, 0.05 + 0.02 * jnp.cos(2 * jnp.pi * x), reconstruction=reconstruction, scheme=dp.IMEXARS443(TIGHT)
    )
    return model, _bump(grid) + 0.1 * jnp.sin(2 * jnp.pi * x), ("velocity", "kappa")


CASES = {
    "heat1d-backward_euler-dirichlet/neumann": lambda: _heat(dp.BackwardEuler, 1, (dp.Dirichlet(0.3), dp.Neumann(0.2))),
    "heat1d-crank_nicolson-periodic": lambda: _heat(dp.CrankNicolson, 1, "periodic"),
    "heat2d-backward_euler-neumann/periodic": lambda: _heat(dp.BackwardEuler, 2, ("neumann", "periodic")),
    "heat2d-crank_nicolson-dirichlet": lambda: _heat(dp.CrankNicolson, 2, dp.Dirichlet(1.0)),
    "wave1d-newmark": lambda: _wave(dp.Newmark),
    "wave1d-crank_nicolson": lambda: _wave(dp.CrankNicolson),
    "nonlinear_heat1d-backward_euler": lambda: _nonlinear_heat(dp.BackwardEuler),
    "nonlinear_heat1d-crank_nicolson": lambda: _nonlinear_heat(dp.CrankNicolson),
    "advection_diffusion2d-imex-upwind": lambda: _advection_diffusion("upwind", 2),
    "advection_diffusion1d-imex-weno5": lambda: _advection_diffusion("weno5", 1),
}

N_STEPS = 2


def _final(model, state):
    return final_state(model, state, N_STEPS)


def _loss(model, state):
    return rollout_loss(model, state, N_STEPS)


@pytest.mark.parametrize("case", CASES)
def test_implicit_step_tangent_and_adjoint_are_transposes(case):
    """jvp (forward implicit solve) against vjp (transposed solve), in the state and all parameters."""
    model, state, _ = CASES[case]()
    result = dp.check.dot_product_test(lambda ms: ms[0].step(ms[1]), (model, state), key=jax.random.key(1))
    assert result.relative_error <= 1e-12, result


def _random_like(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("case", CASES)
def test_implicit_gradient_taylor_rate_and_central_finite_differences(case):
    """The gradient in (state, every parameter field) at once: Taylor rate >= 1.9, and its
    directional derivative equal to a central finite difference to 1e-6."""
    model, state, fields = CASES[case]()
    params = (tuple(getattr(model, f) for f in fields), state)

    def loss(p):
        values, s = p
        m = eqx.tree_at(lambda m: tuple(getattr(m, f) for f in fields), model, values)
        return _loss(m, s)

    result = dp.check.taylor_test(loss, params, eps0=1e-3, key=jax.random.key(3))
    assert result.rate >= 1.9, result
    direction = _random_like(params, jax.random.key(5))
    # The loss and its gradient in one compiled program; the central difference takes its values from it.
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    gradient = value_and_grad(params)[1]
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(gradient), jax.tree_util.tree_leaves(direction)))
    eps = 1e-5
    shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction)
    central = (value_and_grad(shifted(eps))[0] - value_and_grad(shifted(-eps))[0]) / (2 * eps)
    assert abs(float(analytic - central)) <= 1e-6 * abs(float(central)), (float(analytic), float(central))


def _unrolled_heat_backward_euler(kappa, source, u0, grid, dt, iterations):
    """The naive alternative: backward Euler with CG unrolled for a fixed number of iterations."""

    def matvec(v):
        return v - dt * div_kappa_grad(v, kappa, grid) + dt * div_kappa_grad(jnp.zeros_like(v), kappa, grid)

    u = u0
    for _ in range(N_STEPS):
        b = u + dt * (div_kappa_grad(jnp.zeros_like(u), kappa, grid) + source)
        u = cg_unrolled(matvec, b, iterations)
    return jnp.sum(jnp.sin(u) + 0.5 * u**2)


def test_implicit_gradient_equals_backpropagation_through_a_fully_unrolled_tight_solve():
    model, state, _ = CASES["heat2d-backward_euler-neumann/periodic"]()
    grid, dt = model.grid, model.dt
    implicit = jax.grad(lambda k, f, u: _loss(dp.Heat(grid, k, source=f, dt=dt, scheme=model.scheme), u), argnums=(0, 1, 2))(
        model.kappa, model.source, state
    )
    unrolled_grad = jax.jit(jax.grad(_unrolled_heat_backward_euler, argnums=(0, 1, 2)), static_argnums=(3, 4, 5))
    unrolled = unrolled_grad(model.kappa, model.source, state, grid, dt, 120)
    for a, b in zip(implicit, unrolled):
        assert jnp.max(jnp.abs(a - b)) <= 1e-8 * jnp.max(jnp.abs(b)), float(jnp.max(jnp.abs(a - b)))
    # Truncated early, backpropagating through the iteration gives the derivative of the iteration.
    truncated = unrolled_grad(model.kappa, model.source, state, grid, dt, 3)
    assert jnp.max(jnp.abs(truncated[0] - implicit[0])) > 1e-4 * jnp.max(jnp.abs(implicit[0]))


def test_nonlinear_implicit_gradient_equals_backpropagation_through_unrolled_newton():
    """NonlinearHeat: IFT gradient against reverse mode through 30 Newton steps with dense inner solves."""
    model, state, _ = CASES["nonlinear_heat1d-backward_euler"]()
    grid, dt = model.grid, model.dt

    def unrolled(kappa, beta, u0):
        m = dp.NonlinearHeat(grid, kappa, beta=beta, dt=dt, scheme=model.scheme)
        u = u0
        for _ in range(N_STEPS):
            residual = lambda w, u=u: w - dt * m.rhs(w) - u
            newton = lambda _, y, residual=residual: y - jnp.linalg.solve(jax.jacfwd(residual)(y), residual(y))
            u = jax.lax.fori_loop(0, 30, newton, u)  # fixed trip count: reverse mode goes through all 30
        return jnp.sum(jnp.sin(u) + 0.5 * u**2)

    implicit = jax.grad(lambda k, b, u: _loss(dp.NonlinearHeat(grid, k, beta=b, dt=dt, scheme=model.scheme), u), argnums=(0, 1, 2))(
        model.kappa, model.beta, state
    )
    reference = jax.jit(jax.grad(unrolled, argnums=(0, 1, 2)))(model.kappa, model.beta, state)
    for a, b in zip(implicit, reference):
        assert jnp.max(jnp.abs(a - b)) <= 1e-8 * jnp.max(jnp.abs(b)), float(jnp.max(jnp.abs(a - b)))


def test_implicit_step_batches_with_vmap_over_states_and_models():
    model, state, _ = CASES["heat1d-crank_nicolson-periodic"]()
    states = jnp.stack([state, 2 * state, state**2])
    batched = jax.vmap(model.step)(states)
    for i in range(3):
        assert jnp.max(jnp.abs(batched[i] - model.step(states[i]))) < 1e-12
    kappas = jnp.stack([model.kappa, 2 * model.kappa])
    models = eqx.filter_vmap(lambda k: eqx.tree_at(lambda m: m.kappa, model, k))(kappas)
    out = eqx.filter_vmap(lambda m: m.step(state))(models)
    assert jnp.max(jnp.abs(out[1] - eqx.tree_at(lambda m: m.kappa, model, kappas[1]).step(state))) < 1e-12


def test_default_tolerance_gradients_match_tight_ones_closely():
    """With the default rtol (1e-10) the gradient is accurate to ~1e-9 relative, not just approximately right."""
    grid = dp.Grid2D(16, 16, (1.0, 1.0), bc="dirichlet")
    kappa = 0.5 + 0.3 * jnp.sin(3 * grid.coordinates[0])
    u0 = _bump(grid)

    def grad_for(newton):
        return jax.grad(lambda k: _loss(dp.Heat(grid, k, dt=0.01, scheme=dp.CrankNicolson(newton)), u0))(kappa)

    default, tight = grad_for(dp.Newton()), grad_for(TIGHT)
    assert np.max(np.abs(default - tight)) <= 1e-8 * np.max(np.abs(tight))
