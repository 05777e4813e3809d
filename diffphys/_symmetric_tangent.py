r"""Model parts that are affine in the state with a symmetric Jacobian: their tangent map is its own transpose.

A part $f(u) = A u + b$ with $A = A^\top$ (Heat's right-hand side $\nabla\cdot(\kappa\nabla u) + f$, discretised as
$-D^\top K D$ plus boundary terms; Wave's acceleration; the diffusion of advection–diffusion) has the adjoint
$\bar u \mapsto A^\top \bar u = A \bar u$: the transposed operator is the operator itself. Decorating the method
with :func:`symmetric_tangent` makes its tangent in the state one primitive, ``_tangent_p``, whose transpose rule
applies the same tangent map to the cotangent. JAX would otherwise transpose the stencil operation by operation:
shifts become concatenations of zero padding and the cotangent's sums over the stages of a step fuse into
kernels that read many arrays each, which costs more than the forward operator in 2D (``benchmarks/README.md``).

Every transformation keeps working, whatever the time scheme calls the part:

- ``jax.jvp`` / ``jax.linearize``: the tangent in the state is ``_tangent_p``. When the model's arrays (κ, f,
  boundary values, face coefficients) have a tangent too, the part's whole tangent is JAX's own, as before: a
  parameter's gradient is formed exactly as it was. (Splitting it, ``_tangent_p`` for the state plus JAX's
  $A(\dot\kappa)u + \dot f$, made Heat RK4's gradient in κ 1.3x faster at 128x128, but its round-off grew:
  450 SSP-RK3 steps gave κ-gradients 3.5e-11 apart from JAX's, relative, and direct and checkpointed
  adjoints 6.5e-13 apart, where they agree to 2e-15 with JAX's own.)
- ``jax.linear_transpose`` / reverse mode: ``_tangent_p``'s transpose rule (above);
- ``jax.vmap``: equinox's ``create_vprim`` batches the primitive by vmapping its definition;
- second derivatives: the primitive's own JVP is the tangent map in the new direction plus JAX's derivative of
  the tangent map with respect to the model's arrays.

The values are the part's own: the primal is the undecorated method, and the tangent map is JAX's tangent of it
at the zero state (the part is affine, so the tangent does not depend on where it is taken; the constant terms
drop out). Only the order of floating-point operations in adjoints changes (round-off). The primitive is built
as lineax builds its ``linear_solve_p`` (``equinox.internal.filter_primitive_*``); a ``jax.custom_vjp`` would
not be linearisable (Gauss–Newton and the posterior ``jax.linearize`` rollouts) and
``jax.custom_derivatives.linear_call`` has no batching rule in JAX 0.10.

Only for parts that really are affine and symmetric in the Euclidean inner product: a model declares it in
``jacobian_properties(part)`` (``tests/test_symmetric_tangent.py`` checks the two agree and runs the
dot-product test on every kind of boundary).
"""

from __future__ import annotations

import functools

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

__all__ = ["symmetric_tangent"]


def symmetric_tangent(method):
    """Decorate a model method ``method(self, state)`` that is affine in ``state`` with a symmetric Jacobian, so
    that its adjoint in the state is its own tangent map (module docstring). ``method.__wrapped__`` is the
    undecorated method (the reference in the tests)."""

    @functools.wraps(method)
    def wrapper(self, state):
        return _call(method, self, state)

    return wrapper


def _tangent_map(method, model, v):
    """$A v$: JAX's tangent of the part at the zero state."""
    zero = jax.tree_util.tree_map(jnp.zeros_like, v)
    return jax.jvp(lambda state: method(model, state), (zero,), (v,))[1]


def _tangent(method, model, v):
    return eqxi.filter_primitive_bind(_tangent_p, method, model, v)


def _moving(t_model) -> bool:
    """Whether any of the model's arrays has a tangent (``None`` leaves: symbolic zeros)."""
    return any(t is not None for t in jax.tree_util.tree_leaves(t_model))


def _sum(a, b):
    if a is None or b is None:
        return b if a is None else a
    return jax.tree_util.tree_map(jnp.add, a, b)


def _materialised(primal, tangent):
    return jax.tree_util.tree_map(eqxi.materialise_zeros, primal, tangent, is_leaf=lambda x: x is None)


@eqxi.filter_primitive_def
def _tangent_abstract_eval(method, model, v):
    struct = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.core.ShapedArray) else x
    out = eqx.filter_eval_shape(_tangent_map, method, *jax.tree_util.tree_map(struct, (model, v)))
    return jax.tree_util.tree_map(lambda s: jax.core.ShapedArray(s.shape, s.dtype), out)


@eqxi.filter_primitive_jvp
def _tangent_jvp(primals, tangents):
    method, model, v = primals
    _, t_model, t_v = tangents
    t_v = None if t_v is None else _materialised(v, t_v)
    in_model = None
    if _moving(t_model):
        in_model = eqx.filter_jvp(lambda m: _tangent_map(method, m, v), (model,), (t_model,))[1]
    t_out = _sum(None if t_v is None else _tangent(method, model, t_v), in_model)
    return _tangent(method, model, v), t_out


@eqxi.filter_primitive_transpose(materialise_zeros=True)
def _tangent_transpose(inputs, cts_out):
    method, model, v = inputs
    undefined = lambda x: isinstance(x, jax.interpreters.ad.UndefinedPrimal)
    if any(undefined(leaf) for leaf in jax.tree_util.tree_leaves(model, is_leaf=undefined)):
        raise NotImplementedError("a symmetric tangent map is linear in the state, not in the model")
    cts_v = _tangent(method, model, cts_out)  # A^T = A
    cts_v = jax.tree_util.tree_map(lambda x, ct: ct if undefined(x) else None, v, cts_v, is_leaf=undefined)
    return None, jax.tree_util.tree_map(lambda _: None, model), cts_v


_tangent_p = eqxi.create_vprim(
    "diffphys_symmetric_tangent", eqxi.filter_primitive_def(_tangent_map), _tangent_abstract_eval, _tangent_jvp,
    _tangent_transpose,
)


@eqx.filter_custom_jvp
def _call(method, model, state):
    return method(model, state)


@_call.def_jvp
def _call_jvp(primals, tangents):
    method, model, state = primals
    _, t_model, t_state = tangents
    if _moving(t_model):
        # A parameter moves: JAX's own derivative of the part, as for any other model (see the module docstring).
        return eqx.filter_jvp(method, (model, state), (t_model, t_state))
    out = _call(method, model, state)
    if t_state is None:
        return out, jax.tree_util.tree_map(jnp.zeros_like, out)
    return out, _tangent(method, model, _materialised(state, t_state))
