"""How many copies of the model a solver's compiled program holds (XLA compiles each call site on its own)."""

import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp
from helpers import SMALL_LEAST_SQUARES_DATA, model_loops_in_solver_program


@pytest.mark.parametrize("globalization", ["levenberg_marquardt", "line_search"])
def test_a_safeguarded_gauss_newton_solve_compiles_the_model_three_times(globalization):
    """A safeguarded step linearises the residuals at one place (x or the trial; the first step evaluates the
    starting point there too), and the trial's gradient and the CG operator apply the adjoint at one place (the
    gradient trip is a refresh of the CG loop): the program holds the model's linearisation, the CG operator's
    tangent and the adjoint, three runs (four with the gradient's adjoint apart, seven when the start, the step's
    linearisation and the trial were evaluated apart). Each run of a scanned model is a while loop; those of the
    solver itself are counted with a model without a scan."""
    loops, solve, problem = model_loops_in_solver_program(dp.solvers.GaussNewton(globalization=globalization),
                                                          max_steps=20)
    assert loops == 3
    # and the solve is right: x + 0.1 sin(x) = data, elementwise
    x = solve(problem).value
    np.testing.assert_allclose(x + 0.1 * jnp.sin(x), SMALL_LEAST_SQUARES_DATA, atol=1e-8)


def test_lbfgs_program_holds_one_copy_of_the_cost_and_gradient():
    """Converged L-BFGS evaluates the cost and gradient only in its line search's loop, once per trip; the first
    step evaluates the start there too, so the program holds one copy (optax's zoom search held two, and the
    start's evaluation a third). Each copy of a scanned residual is two loops (forward, backward); the solver's
    own loops are counted with a residual without a scan."""
    loops, solve, problem = model_loops_in_solver_program(dp.solvers.LBFGS(), max_steps=50)
    data = SMALL_LEAST_SQUARES_DATA
    assert loops == 2 * 1
    # and the solve is right, with the start recorded as iteration 0
    solution = solve(problem)
    x = solution.value
    np.testing.assert_allclose(x + 0.1 * jnp.sin(x), data, atol=1e-8)
    history = solution.stats["history"]["cost"]
    assert float(history[0]) == float(0.5 * jnp.sum(data**2))
    assert int(solution.stats["num_steps"]) >= 1 and np.isfinite(history[int(solution.stats["num_steps"])])
