"""Shared helpers for the tests: observed convergence order, rollout losses, a small log-κ 4D-Var problem."""

import jax
import jax.numpy as jnp
import numpy as np

import diffphys as dp


def observed_order(spacings, errors) -> float:
    """Least-squares slope of log(error) against log(spacing) over all resolutions."""
    spacings, errors = np.asarray(spacings, float), np.asarray(errors, float)
    assert spacings.size >= 3, "fit an order over at least three resolutions"
    assert np.all(errors > 0) and np.all(np.isfinite(errors)), errors
    return float(np.polyfit(np.log(spacings), np.log(errors), 1)[0])


def final_state(model, state, n_steps: int):
    """The state after ``n_steps`` steps of ``model``."""
    return jax.tree_util.tree_map(lambda x: x[-1], dp.rollout(model, state, n_steps))


def rollout_loss(model, state, n_steps: int):
    """A nonlinear scalar of the final state (so that the Taylor residual is genuinely second order)."""
    leaves = jax.tree_util.tree_leaves(final_state(model, state, n_steps))
    return sum(jnp.sum(jnp.sin(x) + 0.5 * x**2) for x in leaves)


def float_leaves(tree):
    """The inexact arrays of a pytree as NumPy arrays (for bit-for-bit comparisons)."""
    import equinox as eqx

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]


def check_bit_identical_resume(train, tmp_path, interrupt_at: int, start_step: int, remaining: int, checkpoint_name: str):
    """Train straight through; train again, interrupted after step ``interrupt_at``, and resume from the
    checkpoint left in the folder: the resumed run starts at ``start_step``, records ``remaining`` losses,
    ends with the same parameters bit for bit, and leaves only the checkpoint file behind.

    ``train(folder, **kw)`` runs one training into ``folder`` (``kw`` may hold ``progress``).
    """
    import pytest

    straight, _ = train(tmp_path / "a")

    def interrupt(step, loss):
        if step == interrupt_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", progress=interrupt)
    resumed, history = train(tmp_path / "b")
    assert history.start_step == start_step and len(history.loss) == remaining
    for a, b in zip(float_leaves(straight), float_leaves(resumed)):
        assert np.array_equal(a, b)  # bit for bit
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [checkpoint_name]  # no temporary files left
    return straight


def log_kappa_problem(grid):
    """A 1D heat 4D-Var problem estimating log κ (truth 0.02 exp(0.4 sin 2πx), first guess 0.02) from every
    other cell at steps 10, 20, 30; returns ``(problem, kappa_true)``."""
    from diffphys import assimilate as da
    from diffphys import observe as ob

    kappa_true = 0.02 * jnp.exp(0.4 * jnp.sin(2 * jnp.pi * grid.x))
    model = dp.Heat(grid, kappa_true, dt=1e-3)
    u0 = jnp.cos(jnp.pi * grid.x) + 0.5 * jnp.cos(3 * jnp.pi * grid.x)
    schedule = ob.ObservationSchedule.from_steps([10, 20, 30], ob.subsample(grid, 2), dt=model.dt)
    twin = ob.twin_experiment(model, u0, schedule, 0.002, jax.random.key(1))
    control = da.Parameter("kappa", u0, transform="log")
    background = control.to_control(jnp.full(grid.shape, 0.02))
    problem = da.StrongConstraint4DVar(model, schedule, twin.observations, twin.R, ob.DiffusionB(grid, 0.5, 0.15),
                                       background, control)
    return problem, kappa_true


SMALL_LEAST_SQUARES_DATA = jnp.arange(5.0)


def _scanned_residual(x, theta):
    return jax.lax.scan(lambda u, _: (u + 0.1 * jnp.sin(u), None), x, None, length=3)[0] - SMALL_LEAST_SQUARES_DATA


def _plain_residual(x, theta):
    return x + 0.1 * jnp.sin(x) - SMALL_LEAST_SQUARES_DATA


def model_loops_in_solver_program(solver, max_steps: int):
    """How many while loops the model adds to a converged solve of $x + 0.1\\sin x = d$ (XLA compiles each call site
    on its own): the loops of the program with a 3-step scanned residual minus those with the same residual unscanned
    (the solver's own loops cancel). Returns ``(loops, solve, problem)``: ``solve(problem)`` is the compiled solve and
    ``problem`` the unscanned one, to check the answer with."""
    solve = jax.jit(lambda problem: dp.solvers.iterate(
        solver, problem, mode=dp.solvers.Converged(rtol=1e-12, max_steps=max_steps), throw=False))
    loops = [solve.lower(dp.solvers.LeastSquares(residual, jnp.zeros(5))).compile().as_text().count(" while(")
             for residual in (_scanned_residual, _plain_residual)]
    return loops[0] - loops[1], solve, dp.solvers.LeastSquares(_plain_residual, jnp.zeros(5))
