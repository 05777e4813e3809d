"""The corrected stepper: shapes, feeds, derivative checks (Taylor, dot product), use in rollout and 4D-Var."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import diffphys as dp
from diffphys import assimilate as da
from diffphys import learn as dl
from diffphys import observe as ob


def _heat(n=16, bc="periodic"):
    return dp.Heat(dp.Grid1D(n, bc=bc), 0.01)


def _state(grid, seed=0):
    x = grid.x
    return jnp.sin(2 * jnp.pi * x) + 0.3 * jnp.cos(4 * jnp.pi * x + seed)


def test_corrected_step_is_model_plus_scaled_network():
    model = _heat()
    net = dl.ConvNet(model.grid, key=jax.random.key(0), width=4, depth=1, kernel_size=3)
    u = _state(model.grid)
    for feed, inp in (("state", u), ("prediction", model.step(u))):
        c = dl.CorrectedStepper(model, net, feed=feed, scale=0.1)
        np.testing.assert_allclose(c.step(u), model.step(u) + 0.1 * net(inp), rtol=0, atol=1e-15)
        assert c.grid is model.grid and c.dt == model.dt
        np.testing.assert_array_equal(c(u), c.step(u))
    # the two feeds genuinely differ
    a = dl.CorrectedStepper(model, net, feed="state").step(u)
    b = dl.CorrectedStepper(model, net, feed="prediction").step(u)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-6


def test_network_output_shape_mismatch_is_rejected_with_both_shapes():
    model = _heat(16)
    wrong = dl.ConvNet(dp.Grid1D(12), key=jax.random.key(0), width=2, depth=1, kernel_size=3)
    with pytest.raises(ValueError, match=r"state of shape \(16,\).*grid.s shape \(12,\)"):  # the network rejects it
        dl.CorrectedStepper(model, wrong)

    class Halve(eqx.Module):
        def __call__(self, u):
            return u[::2]

    with pytest.raises(ValueError, match=r"network's output has shape \(8,\), but the state has shape \(16,\)"):
        dl.CorrectedStepper(model, Halve())
    mlp = dl.MLP(10, key=jax.random.key(1), width=4, depth=1)
    with pytest.raises(ValueError, match=r"\(16,\)"):
        dl.CorrectedStepper(model, mlp)


def test_networks_start_from_jax_randoms_draws_built_by_one_program():
    """A network's initial weights are equinox's initialisation for the same keys (drawn by jax.random, the last
    layer scaled by output_scale), computed by one compiled program that later networks of the same
    hyper-parameters reuse (op by op, a ConvNet compiled 16 programs)."""
    from diffphys._compile_monitor import CompileMonitor

    grid = dp.Grid2D(8, 6, bc=("periodic", "neumann"))
    keys = [jax.random.key(11), jax.random.key(12)]
    with CompileMonitor() as first:
        conv = dl.ConvNet(grid, key=keys[0], width=3, depth=2, kernel_size=3, output_scale=0.1)
    with CompileMonitor() as second:
        dl.ConvNet(grid, key=keys[1], width=3, depth=2, kernel_size=3, output_scale=0.1)
        mlp = dl.MLP(7, key=keys[1], width=5, depth=1, output_scale=0.5)
    assert (first.programs, second.programs) == (1, 1)
    # The reference, equinox's layers built op by op from the same keys
    layer_keys = jax.random.split(keys[0], 3)
    reference = [eqx.nn.Conv(2, c_in, c_out, 3, padding=0, key=k) for c_in, c_out, k in zip((1, 3, 3), (3, 3, 1), layer_keys)]
    reference_mlp = eqx.nn.MLP(7, 7, 5, 1, key=keys[1])
    pairs = [(layer, ref, 0.1 if i == 2 else 1.0) for i, (layer, ref) in enumerate(zip(conv.layers, reference))]
    pairs += [(layer, ref, 0.5 if i == 1 else 1.0) for i, (layer, ref) in enumerate(zip(mlp.mlp.layers, reference_mlp.layers))]
    for layer, ref, scale in pairs:  # equal up to the rounding of the scaling into [-lim, lim)
        for got, expected in ((layer.weight, ref.weight), (layer.bias, ref.bias)):
            np.testing.assert_allclose(got, scale * expected, rtol=1e-15, atol=1e-16)
    assert [a.shape for a in jax.tree_util.tree_leaves(conv)] == [a.shape for a in jax.tree_util.tree_leaves(reference)]


def test_bad_options_are_rejected():
    model = _heat()
    net = dl.ConvNet(model.grid, key=jax.random.key(0), width=2, depth=1, kernel_size=3)
    with pytest.raises(ValueError, match="unknown feed 'output'.*'state', 'prediction'"):
        dl.CorrectedStepper(model, net, feed="output")
    with pytest.raises(ValueError, match="scale must be a finite positive number, got -1"):
        dl.CorrectedStepper(model, net, scale=-1.0)
    with pytest.raises(TypeError, match="stepper must have a step method, got int"):
        dl.CorrectedStepper(3, net)
    with pytest.raises(TypeError, match="network must be callable"):
        dl.CorrectedStepper(model, 3.0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        dl.ConvNet(model.grid, key=jax.random.key(0), kernel_size=4)
    with pytest.raises(TypeError, match="grid must be a Grid1D or Grid2D"):
        dl.ConvNet((16,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        dl.MLP(8, key=jax.random.key(0), width=0)
    for scale in (float("nan"), "0.1", jnp.ones(2)):
        with pytest.raises(ValueError, match="output_scale must be a finite real number, got"):
            dl.ConvNet(model.grid, key=jax.random.key(0), output_scale=scale)
        with pytest.raises(ValueError, match="output_scale must be a finite real number, got"):
            dl.MLP(8, key=jax.random.key(0), output_scale=scale)
    c = dl.CorrectedStepper(model, net)
    with pytest.raises(ValueError, match=r"state has shape \(3, 16\), expected \(16,\).*jax.vmap"):
        c.step(jnp.zeros((3, 16)))
    wave = dp.Wave(dp.Grid1D(16), 1.0)
    with pytest.raises(ValueError, match="only one-array states"):
        dl.CorrectedStepper(wave, net)


def test_convnet_padding_follows_boundary_conditions():
    periodic = dl.ConvNet(dp.Grid1D(16), key=jax.random.key(3), width=4, depth=2, kernel_size=5)
    u = _state(dp.Grid1D(16))
    # periodic: exactly equivariant under a cyclic shift
    np.testing.assert_allclose(periodic(jnp.roll(u, 5)), jnp.roll(periodic(u), 5), atol=1e-13)
    walls = dl.ConvNet(dp.Grid1D(16, bc="neumann"), key=jax.random.key(3), width=4, depth=2, kernel_size=5)
    assert walls.pad_modes == ("edge",)  # same weights (same key), edge padding: not equivariant
    assert float(jnp.max(jnp.abs(walls(jnp.roll(u, 5)) - jnp.roll(walls(u), 5)))) > 1e-6
    # 2D periodic: equivariant under shifts along both axes
    g2 = dp.Grid2D(8, 6)
    net2 = dl.ConvNet(g2, key=jax.random.key(4), width=3, depth=1, kernel_size=3)
    v = jax.random.normal(jax.random.key(5), g2.shape)
    assert net2(v).shape == (8, 6) and net2.pad_modes == ("wrap", "wrap")
    np.testing.assert_allclose(net2(jnp.roll(v, (2, 3), (0, 1))), jnp.roll(net2(v), (2, 3), (0, 1)), atol=1e-13)
    # 2D mixed: periodic in x, walls in y -> equivariant along x only
    mixed = dl.ConvNet(dp.Grid2D(8, 6, bc=("periodic", "dirichlet")), key=jax.random.key(4), width=3, depth=1, kernel_size=3)
    assert mixed.pad_modes == ("wrap", "edge")
    np.testing.assert_allclose(mixed(jnp.roll(v, 3, 0)), jnp.roll(mixed(v), 3, 0), atol=1e-13)
    assert float(jnp.max(jnp.abs(mixed(jnp.roll(v, 2, 1)) - jnp.roll(mixed(v), 2, 1)))) > 1e-6


def _network_loss(corrected, u0, n_steps=3):
    params, static = eqx.partition(corrected.network, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def loss(theta):
        c = eqx.tree_at(lambda m: m.network, corrected, eqx.combine(unravel(theta), static))
        u = dp.rollout(c, u0, n_steps)[-1]
        return jnp.sum(jnp.sin(u) + 0.5 * u**2)

    return loss, flat


def test_gradient_wrt_network_parameters_passes_taylor_test():
    model = _heat()
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=4, depth=1, kernel_size=3)
    corrected = dl.CorrectedStepper(model, net, feed="prediction", scale=0.5)
    loss, theta = _network_loss(corrected, _state(model.grid))
    result = dp.check.taylor_test(loss, theta, key=jax.random.key(2))
    assert min(result.rates) >= 1.9, result


def test_corrected_step_tangent_and_adjoint_pass_dot_product_test():
    model = _heat()
    net = dl.ConvNet(model.grid, key=jax.random.key(1), width=4, depth=2, kernel_size=3)
    corrected = dl.CorrectedStepper(model, net, feed="state", scale=0.5)
    u = _state(model.grid)
    # the step's Jacobian with respect to (state, network parameters, physics) together
    wrt_all = dp.check.dot_product_test(lambda cu: cu[0].step(cu[1]), (corrected, u), key=jax.random.key(4))
    assert wrt_all.relative_error <= 1e-12, wrt_all
    assert abs(wrt_all.forward) > 1e-3


def test_mlp_corrects_a_flat_stepper_without_grid():
    def lorenz96(x, forcing=8.0, dt=0.01):
        f = lambda y: (jnp.roll(y, -1) - jnp.roll(y, 2)) * jnp.roll(y, 1) - y + forcing
        return x + dt * f(x)

    net = dl.MLP(8, key=jax.random.key(0), width=8, depth=1)
    with pytest.raises(ValueError, match="pass state_shape"):
        dl.CorrectedStepper(lorenz96, net)
    c = dl.CorrectedStepper(lorenz96, net, state_shape=(8,), scale=0.01)
    x = jnp.linspace(-1.0, 1.0, 8)
    np.testing.assert_allclose(c(x), lorenz96(x) + 0.01 * net(x), atol=1e-15)
    assert dp.rollout(c, x, 5).shape == (1, 8)


def test_corrected_stepper_works_in_rollout_and_fourdvar():
    model = _heat(16)
    net = dl.ConvNet(model.grid, key=jax.random.key(7), width=4, depth=1, kernel_size=3, output_scale=0.1)
    c = dl.CorrectedStepper(model, net)
    u0 = _state(model.grid)
    traj = dp.rollout(c, u0, 6, save_every=2)
    manual = u0
    for _ in range(6):
        manual = c.step(manual)
    np.testing.assert_allclose(traj[-1], manual, atol=1e-14)
    sensors = ob.PointSensors(model.grid, jnp.array([0.1, 0.4, 0.7]))
    schedule = ob.ObservationSchedule.from_steps([2, 4, 6], sensors, dt=c.dt)
    twin = ob.twin_experiment(c, u0, schedule, 0.01, jax.random.key(8))
    B = ob.DiffusionB(model.grid, sigma=0.5, length_scale=0.1)
    problem = da.StrongConstraint4DVar(c, schedule, twin.observations, twin.R, B, jnp.zeros(16))
    v = problem.zero_control()
    g = jax.grad(problem.cost)(v)
    assert g.shape == (16,) and bool(jnp.all(jnp.isfinite(g)))
    # the 4D-Var problem rolls out the corrected model: at the truth its misfit is the noise only
    truth_problem = da.StrongConstraint4DVar(c, schedule, twin.clean_observations, twin.R, B, u0)
    np.testing.assert_allclose(truth_problem.observation_residuals(v), 0.0, atol=1e-12)
    uncorrected = da.StrongConstraint4DVar(model, schedule, twin.clean_observations, twin.R, B, u0)
    assert float(jnp.max(jnp.abs(uncorrected.observation_residuals(v)))) > 1e-3


def test_an_mlp_corrects_lorenz96_and_its_derivatives_pass_the_checks():
    model = dp.Lorenz96(40, 8.0)
    corrected = dl.CorrectedStepper(model, dl.MLP(40, key=jax.random.key(3), width=16, depth=1), scale=model.dt)
    x = dp.rollout(model, 8.0 + 0.01 * jnp.sin(jnp.arange(40.0)), 200)[-1]
    assert corrected.step(x).shape == (40,) and corrected.dt == model.dt
    assert dp.check.dot_product_test(corrected.step, x).relative_error < 1e-12
    loss = lambda c: jnp.sum(dp.rollout(c, x, 5)[-1] ** 2)
    assert dp.check.taylor_test(lambda net: loss(eqx.tree_at(lambda c: c.network, corrected, net)),
                                corrected.network).rate >= 1.9


def test_networks_are_saved_with_their_hyperparameters_and_rebuilt_without_a_template(tmp_path):
    nets = [
        dl.ConvNet(dp.Grid1D(12), key=jax.random.key(0), width=3, depth=2, kernel_size=3, activation=jax.nn.relu),
        dl.ConvNet(dp.Grid2D(6, 5, bc=("periodic", "dirichlet")), key=jax.random.key(1), width=2, depth=1,
                   kernel_size=5, output_scale=0.1),
        dl.ConvNet(dp.Grid1D(8, bc="neumann"), key=jax.random.key(2), depth=0),
        dl.MLP(7, key=jax.random.key(3), width=5, depth=3, activation=jax.nn.tanh),
    ]
    for i, net in enumerate(nets):
        path = dl.save_network(tmp_path / f"net{i}.eqx", net)
        loaded = dl.load_network(path)
        assert type(loaded) is type(net)
        assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(net)  # incl. static fields
        for a, b in zip(jax.tree_util.tree_leaves(net), jax.tree_util.tree_leaves(loaded)):
            assert (a.dtype == b.dtype and np.array_equal(a, b)) if eqx.is_array(a) else a is b  # MLP: activation
        u = jax.random.normal(jax.random.key(9), net.shape if isinstance(net, dl.ConvNet) else (net.size,))
        assert np.array_equal(net(u), loaded(u))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"net{i}.eqx" for i in range(4)]  # no temporaries


def test_loading_a_file_that_is_not_a_saved_network_is_a_clear_error(tmp_path):
    net = dl.MLP(4, key=jax.random.key(0), width=3, depth=1)
    params = {"w": jnp.arange(3.0)}
    dl.save_checkpoint(tmp_path / "checkpoint.eqx", params, {}, jax.random.key(0), 3)
    with pytest.raises(ValueError, match="checkpoint.eqx is not a diffphys-network file \\(a diffphys-checkpoint file\\)"):
        dl.load_network(tmp_path / "checkpoint.eqx")
    eqx.tree_serialise_leaves(tmp_path / "leaves.eqx", net)  # weights without hyper-parameters
    with pytest.raises(ValueError, match="leaves.eqx is not a diffphys-network file; it starts with"):
        dl.load_network(tmp_path / "leaves.eqx")
    saved = dl.save_network(tmp_path / "net.eqx", net).read_bytes()
    (tmp_path / "torn.eqx").write_bytes(saved[: len(saved) // 2 + 40])
    with pytest.raises(ValueError, match="torn.eqx does not match the expected structure"):
        dl.load_network(tmp_path / "torn.eqx")
    with pytest.raises(FileNotFoundError, match="load_network: no file at"):
        dl.load_network(tmp_path / "missing.eqx")
    with pytest.raises(ValueError, match="activation .* is not a function of jax.nn"):
        dl.save_network(tmp_path / "x.eqx", dl.MLP(4, key=jax.random.key(0), activation=lambda x: x ** 2))
    with pytest.raises(TypeError, match="must be a ConvNet or an MLP, got dict"):
        dl.save_network(tmp_path / "x.eqx", params)
    assert not (tmp_path / "x.eqx").exists()
