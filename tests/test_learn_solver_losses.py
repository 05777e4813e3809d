"""unrolled_solver_loss on proximal problems: the unsupervised cost includes the prior, and the KKT loss refuses a
splitting solver (its condition needs dual variables the unrolled solver does not return)."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffphys import learn as dl
from diffphys import priors as P
from diffphys import solvers as S
from reference import lasso_data

A, Y = lasso_data(12, 20)
LAM = 0.1


def _problems():
    return dl.stack_problems([S.Composite(S.LinearLeastSquares(A, Y), P.L1(LAM))])


def test_the_cost_loss_is_the_whole_objective_smooth_part_plus_prior():
    unrolled = dl.UnrolledSolver(S.FISTA(step_size=float(0.5 / np.linalg.norm(np.asarray(A), 2) ** 2)), 3)
    v = unrolled(S.Composite(S.LinearLeastSquares(A, Y), P.L1(LAM)))
    objective = lambda x: 0.5 * np.sum((A @ np.asarray(x) - Y) ** 2) + LAM * np.sum(np.abs(np.asarray(x)))
    expected = objective(v) / objective(np.zeros(20))
    assert np.sum(np.abs(np.asarray(v))) > 0  # the prior's value is not zero at v_K
    np.testing.assert_allclose(dl.unrolled_solver_loss(unrolled, _problems(), loss="cost"), expected, rtol=1e-12)


def test_the_optimality_loss_refuses_a_splitting_solver():
    with pytest.raises(ValueError, match="ADMM's involves its dual variables.*use loss='cost' or 'supervised'"):
        dl.unrolled_solver_loss(dl.UnrolledSolver(S.ADMM(), 2), _problems(), loss="optimality")
    # FISTA's condition (the gradient mapping) is on x alone: accepted, and positive before convergence.
    value = dl.unrolled_solver_loss(dl.UnrolledSolver(S.FISTA(step_size=0.01), 2), _problems(), loss="optimality")
    assert float(value) > 0 and jnp.isfinite(value)
