"""How many copies of the model a solver's compiled program holds (XLA compiles each call site on its own)."""

import jax
import jax.numpy as jnp
import numpy as np

import diffphys as dp


def test_lbfgs_program_holds_three_copies_of_the_cost_and_gradient():
    """Converged L-BFGS evaluates the cost and gradient in the zoom line search (two places) and in
    ``value_and_grad_from_state`` (where the state holds no value); the first step evaluates the start there,
    so the program holds three copies (four when init evaluated the start apart). Each copy of a scanned
    residual is two loops (forward, backward); the solver's own loops are counted with a residual without a scan."""
    data = jnp.arange(5.0)

    def scanned(x, theta):
        return jax.lax.scan(lambda u, _: (u + 0.1 * jnp.sin(u), None), x, None, length=3)[0] - data

    def plain(x, theta):
        return x + 0.1 * jnp.sin(x) - data

    solve = jax.jit(lambda problem: dp.solvers.iterate(
        dp.solvers.LBFGS(), problem, mode=dp.solvers.Converged(rtol=1e-12, max_steps=50), throw=False))
    loops = [solve.lower(dp.solvers.LeastSquares(residual, jnp.zeros(5))).compile().as_text().count(" while(")
             for residual in (scanned, plain)]
    assert loops[0] - loops[1] == 2 * 3
    # and the solve is right, with the start recorded as iteration 0
    solution = solve(dp.solvers.LeastSquares(plain, jnp.zeros(5)))
    x = solution.value
    np.testing.assert_allclose(x + 0.1 * jnp.sin(x), data, atol=1e-8)
    history = solution.stats["history"]["cost"]
    assert float(history[0]) == float(0.5 * jnp.sum(data**2))
    assert int(solution.stats["num_steps"]) >= 1 and np.isfinite(history[int(solution.stats["num_steps"])])
