"""The public derivative checks detect wrong derivatives (and pass right ones)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffphys as dp


@jax.custom_vjp
def _cube_wrong_adjoint(x):
    return x**3


_cube_wrong_adjoint.defvjp(lambda x: (x**3, x), lambda x, g: (2.0 * x**2 * g,))  # should be 3 x² g


def test_taylor_test_rate_two_for_a_correct_gradient():
    result = dp.check.taylor_test(lambda x: jnp.sum(jnp.sin(x) * x**2), jnp.linspace(0.1, 1.0, 7))
    assert result.rate >= 1.95
    np.testing.assert_allclose(result.rates, 2.0, atol=0.05)
    assert result.epsilons.shape == result.residuals.shape == (6,)
    # The first-order residual falls only at rate 1: it is what a wrong gradient would look like.
    np.testing.assert_allclose(np.log2(result.first_order_residuals[:-1] / result.first_order_residuals[1:]), 1.0, atol=0.05)


def test_taylor_test_exposes_a_wrong_gradient():
    result = dp.check.taylor_test(lambda x: jnp.sum(_cube_wrong_adjoint(x)), jnp.linspace(0.5, 1.5, 5))
    assert result.rate < 1.2


def test_adjoint_test_exposes_a_wrong_transpose():
    a = jax.random.normal(jax.random.key(0), (4, 6))
    x_like, y_like = jnp.zeros(6), jnp.zeros(4)
    assert dp.check.adjoint_test(lambda v: a @ v, lambda w: a.T @ w, x_like, y_like).relative_error < 1e-14
    wrong = a.T.at[2, 1].add(0.5)
    assert dp.check.adjoint_test(lambda v: a @ v, lambda w: wrong @ w, x_like, y_like).relative_error > 1e-3
    structs = jax.ShapeDtypeStruct((6,), jnp.float64), jax.ShapeDtypeStruct((4,), jnp.float64)
    assert dp.check.adjoint_test(lambda v: a @ v, lambda w: a.T @ w, *structs).relative_error < 1e-14


def test_dot_product_test_of_jax_derivatives():
    x = jnp.linspace(0.5, 1.5, 5)
    assert dp.check.dot_product_test(lambda x: jnp.sin(x) * x, x).relative_error < 1e-14


def test_checks_accept_pytrees_and_models():
    model = dp.Heat(dp.Grid1D(10), 1.0, dt=1e-3)
    result = dp.check.dot_product_test(lambda m: {"a": m.step(jnp.ones(10)), "b": m.kappa * 2}, model)
    assert result.relative_error < 1e-13
    taylor = dp.check.taylor_test(lambda t: jnp.sum(t[0] ** 2 * t[1]["w"]), (jnp.ones(3), {"w": jnp.arange(3.0)}))
    assert taylor.rate >= 1.9


def test_random_directions_are_jax_randoms_normal_draws_from_one_program():
    """The checks' directions: jax.random.normal for the split keys, the tree's shapes and dtypes (to the last
    bit: they are drawn by one program compiled for compile speed), all arrays in one program."""
    from diffphys._compile_monitor import CompileMonitor
    from diffphys.check import _random_like

    key = jax.random.key(4)
    tree = {"a": jnp.zeros((5, 3)), "b": (jnp.zeros(7, jnp.float32), jnp.zeros(()))}
    with CompileMonitor() as monitor:
        directions = _random_like(key, tree)
    assert monitor.programs == 1
    keys = jax.random.split(key, 3)
    leaves = jax.tree_util.tree_leaves(tree)
    expected = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    assert jax.tree_util.tree_structure(directions) == jax.tree_util.tree_structure(tree)
    for got, want in zip(jax.tree_util.tree_leaves(directions), expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=4 * float(jnp.finfo(want.dtype).eps), atol=0)


def test_one_off_draws_fall_back_to_level_0_alone_where_xla_refuses_the_older_emitters(monkeypatch):
    """An XLA build without the CPU emitter option refuses it at compile time; the draw is then compiled at level 0
    alone, and so are the later ones, with the same values."""
    from diffphys import _one_off
    from diffphys.check import _random_like

    monkeypatch.setattr(_one_off, "_OLDER_CPU_EMITTERS", {"xla_cpu_no_such_option_in_any_build": False})
    monkeypatch.setattr(_one_off, "_use_older_emitters", True)
    _one_off._program.cache_clear()
    try:
        key, tree = jax.random.key(5), {"a": jnp.zeros((4, 3))}
        directions = _random_like(key, tree)
        assert _one_off._use_older_emitters is False
        expected = jax.random.normal(jax.random.split(key, 1)[0], (4, 3))
        np.testing.assert_allclose(directions["a"], expected, rtol=4 * float(jnp.finfo(expected.dtype).eps), atol=0)
    finally:
        _one_off._program.cache_clear()


def test_one_off_draws_inside_a_callers_jit_are_traced_into_its_program():
    """JAX refuses compile options on a nested jit: inside a caller's jit (key traced or closed over) the draws
    join the caller's program, with the same values."""
    from diffphys.check import _random_like

    key, tree = jax.random.key(4), {"a": jnp.zeros((5, 3)), "b": jnp.zeros(2)}
    outside = _random_like(key, tree)
    for inside in (jax.jit(lambda k: _random_like(k, tree))(key), jax.jit(lambda: _random_like(key, tree))()):
        for got, want in zip(jax.tree_util.tree_leaves(inside), jax.tree_util.tree_leaves(outside)):
            np.testing.assert_allclose(got, want, rtol=4 * float(jnp.finfo(want.dtype).eps), atol=0)
    grid = dp.Grid1D(16)
    net = dp.learn.ConvNet(grid, key=jax.random.key(1), width=4, depth=1, kernel_size=3)
    jitted = eqx.filter_jit(lambda k: dp.learn.ConvNet(grid, key=k, width=4, depth=1, kernel_size=3))(jax.random.key(1))
    for got, want in zip(jax.tree_util.tree_leaves(eqx.filter(jitted, eqx.is_array)),
                         jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array))):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=4 * float(jnp.finfo(want.dtype).eps * jnp.max(jnp.abs(want))))


def test_explicit_directions_and_linear_functions():
    x = jnp.arange(4.0)
    dx, dy = jnp.ones(4), jnp.arange(4.0)
    result = dp.check.dot_product_test(lambda v: 3.0 * v, x, dx=dx, dy=dy)
    assert result.forward == pytest.approx(3.0 * 6.0) and result.adjoint == pytest.approx(18.0)
    # A linear function has a zero Taylor residual: no rate can be observed above round-off.
    assert np.isnan(dp.check.taylor_test(lambda v: jnp.sum(2.0 * v), x).rate)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dp.check.taylor_test(lambda v: v, jnp.ones(3)), r"fn must return a scalar, got \(3,\)"),
        (lambda: dp.check.taylor_test(jnp.sum, jnp.ones(3), n=2), "n must be >= 3"),
        (lambda: dp.check.taylor_test(jnp.sum, jnp.ones(3), eps0=0.0), "eps0 must be a finite positive number"),
        (lambda: dp.check.taylor_test(jnp.sum, jnp.ones(3), h=jnp.ones(4)), r"h must have the structure and shapes \[\(3,\)\]"),
        (lambda: dp.check.dot_product_test(lambda v: v, jnp.ones(3), dy=jnp.ones(2)), "dy must have the structure"),
        (lambda: dp.check.dot_product_test(lambda v: v, jnp.arange(3)), "no floating-point array leaves"),
        (lambda: dp.check.adjoint_test(lambda v: v[:2], lambda w: w, jnp.ones(3), jnp.ones(2)), r"transpose\(dy\) must have"),
    ],
)
def test_check_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
