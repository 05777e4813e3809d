"""Scenarios, one-step and solver-in-the-loop training, checkpoints: resume is bit-identical, non-finite losses stop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffphys as dp
from diffphys import learn as dl
from diffphys.adjoint import Checkpointed, Direct, Implicit
from helpers import check_bit_identical_resume
from helpers import float_leaves as _leaves


@pytest.fixture(scope="module")
def tiny():
    return dl.missing_physics_scenario(jax.random.key(0), n=16, kappa=0.01, dt=0.01, n_steps=12,
                                       n_train=4, n_val=2, n_test=2, amplitude=0.5)


def _corrected(ds, seed=1):
    net = dl.ConvNet(ds.model.grid, key=jax.random.key(seed), width=8, depth=1, kernel_size=3, output_scale=0.1)
    return dl.CorrectedStepper(ds.model, net, scale=10 * ds.dt)



def test_scenarios_are_seeded_split_and_contain_model_error(tiny):
    again = dl.missing_physics_scenario(jax.random.key(0), n=16, kappa=0.01, dt=0.01, n_steps=12,
                                        n_train=4, n_val=2, n_test=2, amplitude=0.5)
    np.testing.assert_array_equal(again.train, tiny.train)
    assert tiny.train.shape == (4, 13, 16) and tiny.validation.shape == (2, 13, 16) and tiny.test.shape == (2, 13, 16)
    firsts = np.concatenate([tiny.train[:, 0], tiny.validation[:, 0], tiny.test[:, 0]])
    assert len({tuple(np.round(f, 12)) for f in firsts}) == 8  # no initial condition shared between splits
    model_traj = dp.rollout(tiny.model, tiny.train[0, 0], 12, save_every=1)
    assert float(jnp.max(jnp.abs(model_traj - tiny.train[0]))) > 1e-3  # the truth has what the model lacks
    res = dl.resolution_scenario(jax.random.key(1), n=8, factor=4, n_steps=3, n_train=2, n_val=1, n_test=1)
    assert res.train.shape == (2, 4, 8) and res.truth.grid.n == 32 and np.isclose(res.truth.dt * 4, res.dt)
    fine0 = dl.random_periodic_fields(jax.random.split(jax.random.key(1), 3)[0], res.truth.grid, 2)
    fine = jax.vmap(lambda u: dp.rollout(res.truth, u, 12, save_every=4))(fine0)
    np.testing.assert_allclose(res.train, dl.downsample(fine, 4), atol=1e-13)
    assert float(jnp.max(jnp.abs(dp.rollout(res.model, res.train[1, 0], 3)[-1] - res.train[1, 3]))) > 1e-3
    with pytest.raises(ValueError, match="unknown kind 'drag'.*'burgers', 'reaction', 'parameter'"):
        dl.missing_physics_scenario(jax.random.key(0), kind="drag")
    with pytest.raises(ValueError, match="factor must be an integer >= 2, got 1"):
        dl.resolution_scenario(jax.random.key(0), factor=1)
    with pytest.raises(ValueError, match="split sizes must be an integer >= 1, got 0"):
        dl.missing_physics_scenario(jax.random.key(0), n=8, n_steps=2, n_test=0)
    u = jnp.sin(2 * jnp.pi * tiny.model.grid.x)
    burgers = dl.TruthWithExtraTerm(tiny.model, 0.5, "burgers").extra(u)
    np.testing.assert_allclose(burgers, -0.5 * u * 2 * jnp.pi * jnp.cos(2 * jnp.pi * tiny.model.grid.x), atol=0.15)
    np.testing.assert_allclose(dl.TruthWithExtraTerm(tiny.model, 0.5, "reaction").extra(u), 0.5 * u * (1 - u**2))
    np.testing.assert_allclose(dl.TruthWithExtraTerm(tiny.model, 0.5, "parameter").extra(u), 0.5 * tiny.model.rhs(u))
    with pytest.raises(ValueError, match="unknown kind 'drag'"):
        dl.TruthWithExtraTerm(tiny.model, 0.5, "drag")
    with pytest.raises(ValueError, match="'burgers' term is implemented on periodic 1D grids only"):
        dl.TruthWithExtraTerm(dp.Heat(dp.Grid1D(8, bc="neumann"), 0.01), 0.5, "burgers")


@pytest.mark.parametrize("method", ["one_step", "unrolled"])
def test_training_reduces_the_loss(tiny, method):
    c = _corrected(tiny)
    windows = jnp.stack([tiny.validation[:, k:k + 5] for k in range(0, 8, 4)], 1).reshape(-1, 5, 16)
    before = float(dl.rollout_loss(c, windows))
    trained, history = dl.train_correction(
        c, tiny.train, validation=tiny.validation, method=method, unroll=(2, 4), validation_unroll=4,
        optimizer=optax.adam(1e-2), epochs=4, steps_per_epoch=15, batch_size=8, key=jax.random.key(3), progress=False,
    )
    after = float(dl.rollout_loss(trained, windows))
    assert after < 0.3 * before, (before, after)
    assert len(history.loss) == 60 and len(history.validation) == 4
    assert history.validation[-1][1] < history.validation[0][1]
    assert history.unroll == ([1] * 4 if method == "one_step" else [2, 2, 4, 4])  # the curriculum
    # only the network was trained: the physics is untouched
    np.testing.assert_array_equal(trained.stepper.kappa, tiny.model.kappa)


def test_one_step_loss_does_not_differentiate_through_the_solver(tiny):
    c = _corrected(tiny)
    u, target = tiny.train[:, 3], tiny.train[:, 4]
    g = jax.grad(lambda k: dl.one_step_loss(eqx.tree_at(lambda m: m.stepper.kappa, c, k), u, target))(c.stepper.kappa)
    np.testing.assert_array_equal(g, 0.0)
    windows = tiny.train[:, 3:5]
    g_unrolled = jax.grad(lambda k: dl.rollout_loss(eqx.tree_at(lambda m: m.stepper.kappa, c, k), windows))(c.stepper.kappa)
    assert float(jnp.max(jnp.abs(g_unrolled))) > 0


def test_checkpointed_unroll_gives_the_same_gradient(tiny):
    c = _corrected(tiny)
    params, static = dl.trainable_partition(c)
    windows = tiny.train[:, :9]
    grad = lambda adjoint: jax.grad(lambda p: dl.rollout_loss(eqx.combine(p, static), windows, adjoint=adjoint))(params)
    reference = jax.tree_util.tree_leaves(grad(Direct()))
    for adjoint, rtol in ((Checkpointed(every=3), 1e-12), (Checkpointed(checkpoints=2), 1e-10)):
        for a, b in zip(reference, jax.tree_util.tree_leaves(grad(adjoint))):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-20)


ADAM = optax.adam(1e-2)  # one optimiser object: runs with the same settings reuse the compiled step


def _train(ds, folder, **kw):
    settings = dict(method="unrolled", unroll=2, optimizer=ADAM, epochs=2, steps_per_epoch=4,
                    batch_size=4, key=jax.random.key(5), progress=False, checkpoint_dir=folder, checkpoint_every=2)
    settings.update(kw)
    return dl.train_correction(_corrected(ds), ds.train, **settings)


def test_resume_from_checkpoint_is_bit_identical(tiny, tmp_path):
    straight = check_bit_identical_resume(lambda folder, **kw: _train(tiny, folder, **kw), tmp_path,
                                          interrupt_at=5, start_step=4, remaining=4, checkpoint_name=dl.CHECKPOINT_NAME)
    # training moved the parameters (so the comparison above can fail)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(straight), _leaves(_corrected(tiny))))


def test_resuming_from_a_later_or_foreign_checkpoint_is_refused(tiny, tmp_path):
    folder = tmp_path / "run"
    trained, _ = _train(tiny, folder)  # 8 steps, a checkpoint every 2
    assert dl.checkpoint_info(folder / dl.CHECKPOINT_NAME)["step"] == 8
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.eqx is at step 8, past the 4 steps asked for.*"
                                         r"steps >= 8.*resume=False"):
        _train(tiny, folder, epochs=1)
    with pytest.raises(ValueError, match=r"\(step 8\) was written by a run with another key.*resume=False"):
        _train(tiny, folder, key=jax.random.key(6))
    with pytest.raises(ValueError, match=r"\(step 8\) was written with another optimiser.*learning rate.*resume=False"):
        _train(tiny, folder, optimizer=optax.adam(2e-2))
    again, history = _train(tiny, folder)  # the same run: resumed, nothing left to do
    assert history.start_step == 8 and history.loss == []
    for a, b in zip(_leaves(trained), _leaves(again)):
        assert np.array_equal(a, b)
    _, history = _train(tiny, folder, epochs=1, resume=False)  # asked: start over, replacing the checkpoint
    assert history.start_step == 0 and len(history.loss) == 4
    assert dl.checkpoint_info(folder / dl.CHECKPOINT_NAME)["step"] == 4


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    poison = optax.chain(ADAM, optax.scale_by_schedule(lambda count: jnp.where(count == 2, jnp.nan, 1.0)))
    with pytest.raises(dl.NonFiniteLossError, match=r"non-finite at optimiser step 3 .*last good checkpoint \(step 2\)") as info:
        _train(tiny, tmp_path / "bad", optimizer=poison)
    assert info.value.step == 3 and info.value.last_checkpoint_step == 2
    good, _ = _train(tiny, tmp_path / "good", epochs=1, steps_per_epoch=2)
    params, static = dl.trainable_partition(_corrected(tiny))
    opt_state = poison.init(params)  # the template must have the saved optimiser's structure
    loaded, _, _, step = dl.load_checkpoint(tmp_path / "bad" / dl.CHECKPOINT_NAME, params, opt_state, jax.random.key(0))
    assert step == 2
    for a, b in zip(_leaves(eqx.combine(loaded, static)), _leaves(good)):
        assert np.array_equal(a, b) and np.all(np.isfinite(a))
    bad_data = tiny.train.at[:, :, 3].set(jnp.nan)
    with pytest.raises(dl.NonFiniteLossError, match="optimiser step 1 .*no checkpoint was written"):
        dl.train_correction(_corrected(tiny), bad_data, method="unrolled", unroll=2, optimizer=ADAM, epochs=1,
                            steps_per_epoch=2, batch_size=4, key=jax.random.key(0), progress=False)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    params = {"w": jnp.arange(3.0), "b": jnp.float64(2.5)}
    opt = optax.adam(1e-3)
    state = opt.init(params)
    key = jax.random.split(jax.random.key(42))[1]
    dl.save_checkpoint(tmp_path / "c.eqx", params, state, key, 17)
    p2, s2, k2, step = dl.load_checkpoint(tmp_path / "c.eqx", params, state, jax.random.key(0))
    assert step == 17 and np.array_equal(jax.random.key_data(k2), jax.random.key_data(key))
    assert np.array_equal(p2["w"], params["w"])
    raw = jax.random.PRNGKey(3)
    dl.save_checkpoint(tmp_path / "r.eqx", params, state, raw, 1)
    assert np.array_equal(dl.load_checkpoint(tmp_path / "r.eqx", params, state, raw)[2], raw)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        dl.load_checkpoint(tmp_path / "missing.eqx", params, state, key)
    with pytest.raises(ValueError, match="does not match the given templates"):
        dl.load_checkpoint(tmp_path / "c.eqx", {"w": jnp.arange(4.0), "b": jnp.float64(0)}, state, key)
    assert dl.checkpoint_info(tmp_path / "c.eqx")["step"] == 17
    (tmp_path / "other.eqx").write_bytes(b"\x93NUMPY not a checkpoint")
    for read in (dl.checkpoint_info, lambda p: dl.load_checkpoint(p, params, state, key)):
        with pytest.raises(ValueError, match="other.eqx is not a diffphys-checkpoint file"):
            read(tmp_path / "other.eqx")


def test_bad_training_settings_are_rejected(tiny, tmp_path):
    c = _corrected(tiny)
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown method 'sitl'.*'one_step', 'unrolled'"):
        dl.train_correction(c, tiny.train, method="sitl", key=k)
    with pytest.raises(TypeError, match="must be a CorrectedStepper, got Heat"):
        dl.train_correction(tiny.model, tiny.train, key=k)
    with pytest.raises(ValueError, match="13 states are too short for an unroll of 20"):
        dl.train_correction(c, tiny.train, unroll=20, key=k)
    with pytest.raises(ValueError, match=r"train has shape \(4, 13, 8\).*\(16,\)"):
        dl.train_correction(c, tiny.train[..., :8], key=k)
    with pytest.raises(ValueError, match="checkpoint_every=5 needs checkpoint_dir"):
        dl.train_correction(c, tiny.train, checkpoint_every=5, key=k)
    with pytest.raises(TypeError, match=r"train_correction: rollout_adjoint: adjoint must be Direct\(\) or Checkpointed"):
        dl.train_correction(c, tiny.train, rollout_adjoint=Implicit(), key=k)
    with pytest.raises(ValueError, match="unroll must be an integer >= 1, got 0"):
        dl.train_correction(c, tiny.train, unroll=(2, 0), key=k)
    with pytest.raises(ValueError, match="unroll is empty"):
        dl.train_correction(c, tiny.train, unroll=(), key=k)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        dl.train_correction(c, tiny.train, batch_size=0, key=k)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        dl.train_correction(c, tiny.train, optimizer="adam", key=k)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        dl.train_correction(c, tiny.train, epochs=0, key=k)
