"""diffphys's conjugate gradients (``_linear_solve._conjugate_gradient``): the same iteration as lineax's CG,
the dense solution when converged, the true residual reported, one call of the operator per program."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import diffphys as dp
from diffphys._linear_solve import _conjugate_gradient


def _spd(n, condition, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return jnp.asarray(q @ np.diag(np.geomspace(1.0, condition, n)) @ q.T), jnp.asarray(rng.standard_normal(n))


def _lineax_cg(a, b, rtol, atol, max_steps, inverse_diagonal):
    tags = (lx.symmetric_tag, lx.positive_semidefinite_tag)
    options = {} if inverse_diagonal is None else {
        "preconditioner": lx.TaggedLinearOperator(lx.DiagonalLinearOperator(inverse_diagonal), tags)}
    solution = lx.linear_solve(lx.MatrixLinearOperator(a, tags), b, lx.CG(rtol=rtol, atol=atol, max_steps=max_steps),
                               options=options, throw=False)
    return solution.value, int(solution.stats["num_steps"])


@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("max_steps", [4, 10, 500])
def test_cg_takes_lineaxs_steps_and_returns_the_true_residual(max_steps, preconditioned):
    """Up to its first residual refresh (step 10) the iterate and step count are lineax's to round-off; run to
    convergence, both reach the dense solution in about as many steps."""
    a, b = _spd(40, 1e3, seed=0)
    inverse_diagonal = 1.0 / jnp.diag(a) if preconditioned else None
    rtol, atol = 1e-10, 1e-10 * float(jnp.max(jnp.abs(b)))
    x, steps, residual = jax.jit(
        lambda b: _conjugate_gradient(lambda v: a @ v, b, rtol, atol, max_steps, inverse_diagonal))(b)
    reference, reference_steps = _lineax_cg(a, b, rtol, atol, max_steps, inverse_diagonal)
    np.testing.assert_allclose(residual, b - a @ x, rtol=0, atol=1e-13)
    if max_steps <= 10:
        assert int(steps) == reference_steps
        np.testing.assert_allclose(x, reference, rtol=1e-13, atol=1e-13 * float(jnp.max(jnp.abs(reference))))
    else:  # converged: both are the dense solution, in about as many steps (round-off steers CG's later steps)
        assert int(steps) < max_steps and abs(int(steps) - reference_steps) <= 0.1 * reference_steps
        exact = jnp.linalg.solve(a, b)
        np.testing.assert_allclose(x, exact, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(exact))))


def test_cg_applies_the_operator_at_one_place_in_the_program():
    """Each call site of the operator is compiled on its own (for Gauss–Newton a tangent-linear and an adjoint
    model run), so the lowered program must hold the operator once, however many steps and refreshes the solve
    makes (lineax's CG plus the final residual check held it four times)."""
    a, b = _spd(12, 10.0, seed=1)
    marked = lambda v: a @ v + 0.0 * jnp.flip(v)  # the reverse op marks each copy of the operator
    for method in ("cg", "gmres"):
        solve = jax.jit(lambda b: dp.solve_linear(marked, b, dp.LinearSolver(method=method, max_steps=50),
                                                  spd=method == "cg").value)
        copies = solve.lower(b).compile().as_text().count(" reverse(")  # in the optimised program
        assert copies == 1 if method == "cg" else copies > 1, (method, copies)
    np.testing.assert_allclose(solve(b), jnp.linalg.solve(a, b), rtol=1e-8)


def test_cg_on_a_pytree_under_vmap_and_with_a_zero_right_hand_side():
    a, b = _spd(8, 50.0, seed=2)
    matvec = lambda tree: {"u": a[:4, :4] @ tree["u"], "w": a[4:, 4:] @ tree["w"]}
    rhs = {"u": b[:4], "w": b[4:]}
    solve = lambda rhs: dp.solve_linear(matvec, rhs, dp.LinearSolver(method="cg"), spd=True)
    x = solve(rhs).value
    np.testing.assert_allclose(x["u"], jnp.linalg.solve(a[:4, :4], b[:4]), rtol=1e-9)
    np.testing.assert_allclose(x["w"], jnp.linalg.solve(a[4:, 4:], b[4:]), rtol=1e-9)
    batch = {"u": jnp.stack([b[:4], 2 * b[:4], jnp.zeros(4)]), "w": jnp.stack([b[4:], -b[4:], jnp.zeros(4)])}
    solutions = jax.vmap(solve)(batch)
    np.testing.assert_allclose(solutions.value["u"][1], 2 * x["u"], rtol=1e-9)
    np.testing.assert_allclose(solutions.value["w"][1], -x["w"], rtol=1e-9)
    assert np.all(np.asarray(solutions.value["u"][2]) == 0) and int(solutions.stats["num_steps"][2]) == 0
    assert np.all(np.asarray(solutions.result == dp.RESULTS.successful))


def test_cg_that_starts_with_a_refresh_takes_the_same_steps_and_with_no_step_returns_b_minus_the_operator_at_zero():
    """``refresh_first``: the first trip computes r = b - A 0 through the operator's one call. For a linear
    operator the iteration is then the plain one (the same iterate, steps and residual); with ``max_steps = 0`` and
    an affine operator it returns b - f(0), which is how Gauss–Newton takes its gradient J^T r from the CG loop."""
    a, b = _spd(20, 1e2, seed=3)
    run = jax.jit(lambda b, first, steps: _conjugate_gradient(lambda v: a @ v, b, 1e-10, 0.0, steps, None, first))
    plain, refreshed = run(b, False, 50), run(b, True, 50)
    assert int(plain[1]) == int(refreshed[1])
    np.testing.assert_allclose(refreshed[0], plain[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(refreshed[2], plain[2], rtol=0, atol=1e-13)
    offset = jnp.cos(jnp.arange(20.0))
    x, steps, residual = jax.jit(lambda b: _conjugate_gradient(lambda v: a @ v + offset, b, 1e-10, 0.0, 0, None,
                                                               True))(b)
    assert int(steps) == 0 and np.all(np.asarray(x) == 0)
    np.testing.assert_array_equal(residual, b - offset)
