"""Learned (unrolled) solvers: training over a distribution of problems with the one training loop
(supervised, cost and optimality losses), its checkpoints and bit-identical resume, the non-finite stop,
progress lines, and bad input."""

import io
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffphys as dp
from diffphys import assimilate as da
from diffphys import learn as dl
from diffphys import observe as ob
from helpers import check_bit_identical_resume
from helpers import float_leaves as _leaves

GRID = dp.Grid1D(24, 1.0, bc="neumann")
MODEL = dp.Heat(GRID, 0.02, dt=1e-3)
TRUTH = jnp.exp(-((GRID.x - 0.4) ** 2) / 0.01)
SCHEDULE = ob.ObservationSchedule.from_steps([4, 11, 13, 30], ob.PointSensors(GRID, [0.1, 0.25, 0.45, 0.7, 0.9]),
                                             dt=MODEL.dt)
B = ob.DiffusionB(GRID, 0.5, 0.1)
INNER = dp.LinearSolver(method="cg", rtol=1e-10, max_steps=30, throw=False)
PLAIN_GN = dp.solvers.GaussNewton(globalization="none", damping=3.0, step_length=0.5, inner=INNER)
ADAM = optax.adam(0.1)  # one optimiser object: runs with the same settings reuse the compiled step


def _heat_problems(n, seed):
    """Heat state-estimation problems drawn from B, observed by 5 sensors at 4 times."""
    keys = jax.random.split(jax.random.key(seed), n)
    problems, truths = [], []
    for k in keys:
        k1, k2 = jax.random.split(k)
        truth = 0.5 + B.sample(k1, TRUTH)
        twin = ob.twin_experiment(MODEL, truth, SCHEDULE, 0.05, k2, background=B)
        problems.append(da.StrongConstraint4DVar(MODEL, SCHEDULE, twin.observations, twin.R, B, twin.background))
        truths.append(truth)
    return problems, truths



def test_unrolled_gauss_newton_trains_over_a_distribution_of_heat_problems():
    train, train_truths = _heat_problems(6, seed=10)
    held_out, held_truths = _heat_problems(4, seed=20)
    solver = dl.UnrolledSolver(PLAIN_GN, 2)
    before = float(dl.unrolled_solver_loss(solver, dl.stack_problems(held_out), jnp.stack(held_truths)))
    seen = []
    trained, history = dl.train_unrolled_solver(solver, train, truths=train_truths, steps=30,
                                                optimizer=ADAM, validation=(held_out, held_truths),
                                                validate_every=30, progress=lambda step, loss: seen.append(step))
    assert seen == list(range(1, 31))
    assert history.loss[-1] < 0.8 * history.loss[0]
    assert history.validation_steps.tolist() == [30]
    assert history.validation_loss[-1] < 0.8 * before  # held-out error drops
    assert np.all(np.abs(np.asarray(trained.params.log_damping) - np.log(3.0)) > 0.1)  # learned parameters moved
    assert np.all(np.abs(np.asarray(trained.params.step_length) - 0.5) > 0.05)
    assert trained.solver == solver.solver and trained.adjoint == solver.adjoint  # only the params are trained
    # The unsupervised losses train too and need no truths.
    _, unsupervised = dl.train_unrolled_solver(solver, train, loss="cost", steps=5, optimizer=ADAM, progress=None)
    assert unsupervised.loss[-1] < unsupervised.loss[0]


def test_the_optimality_loss_is_the_relative_gradient_norm_and_trains():
    problems, _ = _heat_problems(2, seed=40)
    solver = dl.UnrolledSolver(PLAIN_GN, 2)
    # For Gauss-Newton the optimality residual is the gradient of the cost: compare with jax.grad directly.
    relative_gradient = eqx.filter_jit(
        lambda p: jnp.sum(jax.grad(p.cost)(solver(p)) ** 2) / jnp.sum(jax.grad(p.cost)(p.zero_control()) ** 2))
    expected = np.mean([float(relative_gradient(p)) for p in problems])
    value = dl.unrolled_solver_loss(solver, dl.stack_problems(problems), loss="optimality")
    np.testing.assert_allclose(value, expected, rtol=1e-10)
    _, history = dl.train_unrolled_solver(solver, problems, loss="optimality", steps=8, optimizer=ADAM, progress=None)
    assert history.loss[-1] < 0.5 * history.loss[0]


def _train(problems, folder, **kw):
    settings = dict(loss="cost", steps=6, optimizer=ADAM, checkpoint_dir=folder, checkpoint_every=2, progress=None)
    settings.update(kw)
    return dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 2), problems, **settings)


def test_unrolled_solver_training_resumes_bit_identically_from_a_checkpoint(tmp_path):
    problems, _ = _heat_problems(2, seed=40)
    straight = check_bit_identical_resume(lambda folder, **kw: _train(problems, folder, **kw), tmp_path,
                                          interrupt_at=3, start_step=2, remaining=4, checkpoint_name=dl.CHECKPOINT_NAME)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(straight), _leaves(dl.UnrolledSolver(PLAIN_GN, 2))))


def test_a_non_finite_loss_stops_unrolled_solver_training(tmp_path):
    problems, _ = _heat_problems(2, seed=40)
    poison = optax.chain(ADAM, optax.scale_by_schedule(lambda count: jnp.where(count == 2, jnp.nan, 1.0)))
    with pytest.raises(dl.NonFiniteLossError, match=r"train_unrolled_solver: .*non-finite at optimiser step 3 "
                                                    r".*last good checkpoint \(step 2\)") as info:
        _train(problems, tmp_path / "bad", optimizer=poison)
    assert info.value.step == 3 and info.value.last_checkpoint_step == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_lines_are_plain_in_a_log_and_rewritten_on_a_terminal(capsys, monkeypatch):
    problems, _ = _heat_problems(2, seed=40)
    run = lambda: dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 2), problems, loss="cost", steps=4,
                                           optimizer=ADAM, validation=(problems, None), validate_every=2, progress=True)
    run()
    err = capsys.readouterr().err
    assert "\r" not in err  # stderr is captured, not a terminal: plain lines for log files
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("train_unrolled_solver: step ") for line in lines)
    assert "validation" in lines[1] and "validation" in lines[3] and "step 4/4" in lines[3]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run()
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().count("\n") == 2  # rewritten in place
    with pytest.raises(TypeError, match="progress must be None, True or a callable"):
        dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 2), problems, loss="cost", steps=1, progress="loud")


def _other_problem():
    schedule = ob.ObservationSchedule.from_steps([5], ob.PointSensors(GRID, [0.5]), dt=MODEL.dt)
    return da.StrongConstraint4DVar(MODEL, schedule, jnp.zeros(1), ob.DiagonalR(0.1), B, TRUTH)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: dl.UnrolledSolver(PLAIN_GN, 0), ValueError, "iterations must be an integer >= 1, got 0"),
        (lambda: dl.UnrolledSolver(dp.solvers.GaussNewton(), 3), ValueError, "retries rejected steps"),
        (lambda: dl.UnrolledSolver("gn", 3), TypeError, "solver must be an AbstractIterativeSolver"),
        (lambda: dl.UnrolledSolver(PLAIN_GN, 3, adjoint=dp.adjoint.Implicit()), TypeError,
         "adjoint must be Direct"),
        (lambda: dl.UnrolledSolver(PLAIN_GN, 3, params=PLAIN_GN.default_params(TRUTH)), ValueError,
         "leading axis of length iterations=3"),
        (lambda: dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 1), [_heat_problems(1, 0)[0][0]]), ValueError,
         "needs the true control fields"),
        (lambda: dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 1), [_heat_problems(1, 0)[0][0]], loss="l2"),
         ValueError, "unknown loss 'l2'"),
        (lambda: dl.train_unrolled_solver(PLAIN_GN, [_heat_problems(1, 0)[0][0]]), TypeError,
         "unrolled must be an UnrolledSolver"),
        (lambda: dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 1), *_heat_problems(2, 0)[:1],
                                          truths=[TRUTH]), ValueError, "2 problems but 1 truths"),
        (lambda: dl.train_unrolled_solver(dl.UnrolledSolver(PLAIN_GN, 1), [_heat_problems(1, 0)[0][0]], loss="cost",
                                          steps=0), ValueError, "steps must be an integer >= 1, got 0"),
        (lambda: dl.unrolled_solver_loss(dl.UnrolledSolver(PLAIN_GN, 1), _heat_problems(1, 0)[0][0], loss="gradient"),
         ValueError, "unknown loss 'gradient'"),
        (lambda: dl.stack_problems([_heat_problems(1, 0)[0][0], _other_problem()]), ValueError, "problem 1 differs"),
        (lambda: dl.stack_problems([]), ValueError, "give at least one problem"),
    ],
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()
