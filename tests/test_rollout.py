"""Rollout: save points, adjoint strategies (same states and gradients, bounded memory), bad arguments."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from diffphys.adjoint import Checkpointed, Direct, Implicit, snapshots

GRID = dp.Grid1D(32)
MODEL = dp.Heat(GRID, 0.3 + 0.1 * jnp.sin(2 * jnp.pi * GRID.x), scheme="ssprk3")
U0 = jnp.exp(-30 * (GRID.x - 0.3) ** 2)


def _manual(model, state, n):
    states = [state]
    for _ in range(n):
        state = model.step(state)
        states.append(state)
    return states


def test_irregular_save_points_match_a_python_loop():
    save_at = [0, 1, 2, 5, 8, 11, 19, 20]
    traj = dp.rollout(MODEL, U0, 25, save_at=save_at)
    reference = _manual(MODEL, U0, 20)
    assert traj.shape == (len(save_at), 32)
    np.testing.assert_allclose(traj, jnp.stack([reference[s] for s in save_at]), rtol=1e-13, atol=1e-15)


def test_irregular_save_points_compile_the_stepper_once():
    """XLA compiles each scan on its own, so stepping each run of equal save intervals by a scan of its own put
    a copy of the stepper in the program per run (seven here, fourteen in the gradient). A small rollout with
    irregular save points is one scan that keeps every state: one loop in the forward program, one forward and
    one backward in the gradient's; regular save points keep their nested scans (two loops). Loops are counted
    in the program handed to XLA (what XLA's passes make of them depends on its version and flags)."""
    save_at = (0, 1, 2, 5, 8, 11, 19, 20)
    forward = lambda u, save_at: dp.rollout(MODEL, u, 20, save_at=save_at)
    loops = lambda f: jax.jit(f).lower(U0).as_text().count("stablehlo.while")
    assert loops(lambda u: forward(u, save_at)) == 1
    assert loops(jax.grad(lambda u: jnp.sum(jnp.sin(forward(u, save_at))))) == 2
    assert loops(lambda u: forward(u, (0, 5, 10, 15, 20))) == 2  # a scan of intervals, each a scan of steps
    # the tuple state of a second-order model takes the same path
    wave = dp.Wave(GRID, 1.0)
    u, v = dp.rollout(wave, (U0, jnp.zeros(32)), 20, save_at=save_at)
    reference = _manual(wave, (U0, jnp.zeros(32)), 20)
    np.testing.assert_allclose(u, jnp.stack([reference[s][0] for s in save_at]), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(v, jnp.stack([reference[s][1] for s in save_at]), rtol=1e-13, atol=1e-13)


def test_save_every_and_tuple_states():
    model = dp.Wave(GRID, 1.0)
    u, v = dp.rollout(model, (U0, jnp.zeros(32)), 12, save_every=4)
    reference = _manual(model, (U0, jnp.zeros(32)), 12)
    assert u.shape == v.shape == (4, 32)
    for k, step in enumerate((0, 4, 8, 12)):
        np.testing.assert_allclose(u[k], reference[step][0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(v[k], reference[step][1], rtol=1e-13, atol=1e-15)


def test_default_saves_the_final_state_only():
    traj = dp.rollout(MODEL, U0, 7)
    assert traj.shape == (1, 32)
    np.testing.assert_allclose(traj[0], _manual(MODEL, U0, 7)[-1], rtol=1e-13)


def _sin_loss(save_at, adjoint, n_steps=450):
    def loss(u0, kappa):
        model = dp.Heat(GRID, kappa, dt=MODEL.dt, scheme="ssprk3")
        traj = dp.rollout(model, u0, n_steps, save_at=save_at, adjoint=adjoint)
        return jnp.sum(jnp.sin(traj) ** 2)

    return loss


def _assert_same_gradient(reference, other, rtol):
    for a, b in zip(reference, other):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(a))))


@pytest.mark.xla_default_optimisation  # gradients of two programs agree to 1e-12 (tests/conftest.py)
@pytest.mark.parametrize("save_at", [None, (0, 37, 200, 201, 450)])
@pytest.mark.parametrize("every", [1, 16, 64, 1000])
def test_block_checkpointing_gives_the_same_gradient(save_at, every):
    plain = jax.grad(_sin_loss(save_at, Direct()), argnums=(0, 1))(U0, MODEL.kappa)
    checkpointed = jax.grad(_sin_loss(save_at, Checkpointed(every=every)), argnums=(0, 1))(U0, MODEL.kappa)
    _assert_same_gradient(plain, checkpointed, 1e-12)


@pytest.mark.parametrize(
    "n_steps, kwargs",
    [(25, dict(save_at=[0, 1, 2, 5, 8, 11, 19, 20])), (12, dict(save_every=3)), (7, {}), (0, {}), (5, dict(save_at=[0]))],
)
def test_recursive_checkpointing_saves_the_same_states(n_steps, kwargs):
    """The checkpointed while loop takes exactly the scan's steps and saves the same ones (one- and two-field states)."""
    for model, state in ((MODEL, U0), (dp.Wave(GRID, 1.0), (U0, jnp.zeros(32)))):
        plain = dp.rollout(model, state, n_steps, **kwargs)
        recursive = dp.rollout(model, state, n_steps, adjoint=Checkpointed(), **kwargs)
        for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(recursive)):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("save_at, checkpoints", [(None, None), ((0, 37, 200, 201, 450), 3)])
def test_recursive_checkpointing_gives_the_same_gradient(save_at, checkpoints):
    plain = jax.grad(_sin_loss(save_at, Direct()), argnums=(0, 1))(U0, MODEL.kappa)
    recursive = jax.grad(_sin_loss(save_at, Checkpointed(checkpoints=checkpoints)), argnums=(0, 1))(U0, MODEL.kappa)
    _assert_same_gradient(plain, recursive, 1e-10)


@pytest.mark.xla_default_optimisation  # a 1e-12 dot-product test across two programs (tests/conftest.py)
def test_recursive_checkpointing_passes_the_dot_product_and_taylor_tests():
    """Its reverse mode is the transpose of the plain rollout's forward mode, and its gradient is a derivative.

    Lorenz-96 is nonlinear and smooth (WENO's Jacobian is too ill-conditioned for a 1e-12 dot-product test).
    """
    model = dp.Lorenz96(40, forcing=8.0, scheme="rk4")
    x0 = 8.0 + jnp.sin(jnp.arange(40.0))
    run = lambda adjoint: lambda x: dp.rollout(model, x, 60, save_at=(0, 20, 60), adjoint=adjoint)
    tangent = lambda d: jax.jvp(run(Direct()), (x0,), (d,))[1]
    transpose = lambda c: jax.vjp(run(Checkpointed(checkpoints=2)), x0)[1](c)[0]
    result = dp.check.adjoint_test(tangent, transpose, x0, jax.eval_shape(run(Direct()), x0))
    assert result.relative_error <= 1e-12
    loss = lambda x: jnp.sum(jnp.sin(run(Checkpointed())(x)))
    assert dp.check.taylor_test(loss, x0, eps0=1e-6).rate >= 1.9  # small steps: 60 chaotic steps


def test_recursive_checkpointing_differentiates_a_closure_over_traced_parameters():
    run = lambda adjoint: lambda k: jnp.sum(
        dp.rollout(lambda u: dp.Heat(GRID, k, dt=MODEL.dt).step(u), U0, 30, adjoint=adjoint) ** 2
    )
    np.testing.assert_allclose(jax.grad(run(Checkpointed()))(0.3), jax.grad(run(Direct()))(0.3), rtol=1e-12)


def test_recursive_checkpointing_keeps_ceil_log2_n_snapshots_unless_told():
    """The documented default, c = ceil(log2 n), shared by rollouts and solver layers; never more than n."""
    assert [snapshots(Checkpointed(), n) for n in (1, 2, 3, 4, 5, 200, 10_000)] == [1, 1, 2, 2, 3, 8, 14]
    assert snapshots(Checkpointed(checkpoints=3), 10) == 3
    assert snapshots(Checkpointed(checkpoints=50), 10) == 10


def test_recursive_checkpointing_is_reverse_mode_only():
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda u: dp.rollout(MODEL, u, 5, adjoint=Checkpointed()), (U0,), (U0,))


def test_checkpointing_bounds_gradient_memory():
    """XLA's compiled memory analysis: 20 000 steps keep ~n states without checkpointing, ~2 sqrt(n) with
    block checkpointing and ~log2(n) with recursive checkpointing.

    The stepper must be nonlinear (WENO): reverse mode through a linear stepper keeps no states at all.
    """
    n_steps = 20_000
    model = dp.Advection(GRID, 1.0, reconstruction="weno5", scheme="ssprk3")

    def temp_bytes(adjoint):
        loss = lambda u0: jnp.sum(dp.rollout(model, u0, n_steps, adjoint=adjoint)[-1] ** 2)
        analysis = jax.jit(jax.grad(loss)).lower(U0).compile().memory_analysis()
        return analysis.temp_size_in_bytes

    state_bytes = U0.size * U0.dtype.itemsize
    plain, block, recursive = temp_bytes(Direct()), temp_bytes(Checkpointed(every=141)), temp_bytes(Checkpointed())
    assert plain >= n_steps * state_bytes  # every step's state is kept
    assert block < 0.05 * plain
    assert recursive < 0.01 * plain


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_steps=-1), "n_steps must be a non-negative integer, got -1"),
        (dict(n_steps=2.5), "n_steps must be a non-negative integer"),
        (dict(n_steps=10, save_every=3), "save_every must be a positive integer dividing n_steps=10, got 3"),
        (dict(n_steps=10, save_at=[0, 11]), r"save_at has steps \[11\] outside \[0, n_steps=10\]"),
        (dict(n_steps=10, save_at=[3, 2]), r"save_at must be strictly increasing, got \[3, 2\]"),
        (dict(n_steps=10, save_at=[2, 2]), "strictly increasing"),
        (dict(n_steps=10, save_at=[]), "save_at is empty"),
        (dict(n_steps=10, save_at=[1], save_every=2), "give save_at or save_every, not both"),
    ],
)
def test_bad_rollout_arguments(kwargs, match):
    n = kwargs.pop("n_steps")
    with pytest.raises(ValueError, match=match):
        dp.rollout(MODEL, U0, n, **kwargs)


@pytest.mark.parametrize("adjoint", [32, None, Implicit()])
def test_rollout_rejects_an_adjoint_that_is_not_a_loop_strategy(adjoint):
    with pytest.raises(TypeError, match=r"adjoint must be Direct\(\), Checkpointed\(every=b\) .* got " + repr(adjoint)[:8]):
        dp.rollout(MODEL, U0, 10, adjoint=adjoint)


def test_block_checkpointing_rejects_a_bad_block_length():
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        Checkpointed(every=0)


@pytest.mark.parametrize("adjoint", [Direct(), Checkpointed(every=4), Checkpointed()])
def test_every_adjoint_names_the_first_non_finite_step(adjoint):
    blowing_up = lambda u: 1e200 * u
    with pytest.raises(Exception, match=r"became non-finite \(NaN or inf\) by step 2 \(it was finite at step 1\)"):
        dp.rollout(blowing_up, U0, 4, save_every=1, adjoint=adjoint)


def test_rollout_accepts_any_stepper_callable():
    damped = lambda u: 0.5 * MODEL.step(u)
    traj = dp.rollout(damped, U0, 3, save_every=1)
    np.testing.assert_allclose(traj[3], 0.5 * MODEL.step(0.5 * MODEL.step(0.5 * MODEL.step(U0))), rtol=1e-13)


def _models_with_step_invariants():  # (AdvectionDiffusion's, implicit, are in test_implicit_derivatives)
    g1 = dp.Grid1D(16, bc=(dp.Dirichlet(0.3), dp.Neumann(0.2)))
    g2 = dp.Grid2D(8, 6, lengths=(1.0, 0.8), bc=("neumann", "periodic"))
    g2d = dp.Grid2D(8, 6, lengths=(1.0, 0.8), bc=(dp.Dirichlet(0.5), dp.Neumann(0.0)))
    g1io = dp.Grid1D(16, bc=(dp.Dirichlet(0.2), dp.Neumann(0.0)))
    x1, (x2, y2) = g1.x, g2.coordinates
    bump2 = jnp.exp(-10 * ((x2 - 0.4) ** 2 + (y2 - 0.3) ** 2))
    return {
        "heat1d-dirichlet/neumann": (dp.Heat(g1, 0.2 + 0.1 * jnp.sin(3 * x1)), jnp.sin(3 * x1), "kappa"),
        "heat2d-insulated/periodic": (dp.Heat(g2, 0.1 + 0.05 * x2 * y2, source=0.1 * x2), bump2, "kappa"),
        "wave2d-dirichlet/neumann": (dp.Wave(g2d, 1.0 + 0.2 * x2, scheme="rk4"), (bump2, 0.0 * bump2), "speed"),
        "advection1d-weno5": (dp.Advection(dp.Grid1D(16), 0.6 + 0.2 * jnp.cos(2 * jnp.pi * x1)),
                              1.0 + 0.5 * jnp.sin(2 * jnp.pi * x1), "velocity"),
        "advection1d-upwind-inflow/outflow": (dp.Advection(g1io, 0.5 + 0.1 * x1, reconstruction="upwind", scheme="rk4"),
                                              jnp.sin(3 * x1), "velocity"),
    }


@pytest.mark.parametrize("name", list(_models_with_step_invariants()))
def test_step_invariants_computed_once_give_the_same_steps_and_derivatives(name):
    # rollout computes a model's face coefficients once, before its loop; stepping the model on its own
    # computes them at every right-hand side. Same values; derivatives with respect to the parameter equal
    # to round-off (the parameter's cotangent is summed on the faces over the steps, then mapped to cells).
    model, state, parameter = _models_with_step_invariants()[name]
    hoisted = model._with_step_invariants()
    assert hoisted._faces is not None and model._faces is None
    np.testing.assert_array_equal(np.asarray(jax.tree_util.tree_leaves(hoisted.step(state))),
                                  np.asarray(jax.tree_util.tree_leaves(model.step(state))))

    def with_parameter(value):
        return eqx.tree_at(lambda m: getattr(m, parameter), model, value)

    def loss_rollout(value):
        final = dp.rollout(with_parameter(value), state, 12)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(final))

    def loss_steps(value):  # the model stepped on its own in a scan: faces recomputed at every stage
        stepper = with_parameter(value)
        final, _ = jax.lax.scan(lambda y, _: (stepper.step(y), None), state, None, length=12)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(final))

    value = getattr(model, parameter)
    direction = jnp.cos(jnp.arange(value.size, dtype=value.dtype)).reshape(value.shape)
    np.testing.assert_allclose(loss_rollout(value), loss_steps(value), rtol=1e-14)
    g_rollout, g_steps = jax.grad(loss_rollout)(value), jax.grad(loss_steps)(value)
    assert float(jnp.max(jnp.abs(g_steps))) > 0
    np.testing.assert_allclose(g_rollout, g_steps, rtol=1e-11, atol=1e-13 * float(jnp.max(jnp.abs(g_steps))))
    t_rollout = jax.jvp(loss_rollout, (value,), (direction,))[1]
    scale = float(jnp.vdot(jnp.abs(g_steps), jnp.abs(direction)))  # the sum's terms, for its round-off
    np.testing.assert_allclose(t_rollout, jnp.vdot(g_steps, direction), rtol=0, atol=1e-11 * scale)
