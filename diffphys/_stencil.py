r"""Finite-volume operators on cell-centred grids, with boundary conditions through ghost cells.

Every operator takes unbatched arrays of shape ``grid.shape`` and is pure JAX, so ``jit``,
``vmap``, ``jvp`` and ``grad`` all work through it. Each axis is handled separately (dimension
splitting of the fluxes), so one code path serves 1D and 2D.

References: R. J. LeVeque, *Finite Volume Methods for Hyperbolic Problems*, CUP 2002 (flux form,
ghost cells); R. Borges, M. Carmona, B. Costa, W. S. Don, "An improved weighted essentially
non-oscillatory scheme for hyperbolic conservation laws", J. Comput. Phys. 227 (2008) 3191-3211
(WENO-Z); W. S. Don, R. Borges, J. Comput. Phys. 250 (2013) 347-372 (the exponent p = 2 used here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._validate import is_concrete
from .grid import AbstractGrid, Dirichlet, Neumann, Periodic

ADVECTION_SCHEMES = ("upwind", "weno5")


def _slice(x, start: int, stop: int, axis: int) -> jnp.ndarray:
    """``x[start:stop]`` along ``axis``, as one piece of a ``lax.split`` rather than a ``lax.slice``.

    Reverse mode is the reason: a slice transposes to a ``pad`` and a concatenation to pieces that
    are padded back, which XLA:CPU leaves as separate, unfused kernels (a gradient of an RK4 heat
    rollout took 10-30 forward passes). A split transposes to a concatenation and back, so every
    stencil here built from splits and concatenations has a transpose of the same kind, which XLA
    fuses as well as the forward pass.
    """
    n = x.shape[axis]
    if start == 0 and stop == n:
        return x
    sizes = [size for size in (start, stop - start, n - stop) if size]
    return lax.split(x, sizes, axis=axis)[1 if start else 0]


def _roll(x, shift: int, axis: int) -> jnp.ndarray:
    """``jnp.roll(x, shift, axis)`` as a split and a concatenation (its transpose is a roll back; see :func:`_slice`)."""
    n = x.shape[axis]
    shift %= n
    if shift == 0:
        return x
    head, tail = lax.split(x, (n - shift, shift), axis=axis)
    return lax.concatenate([tail, head], dimension=axis)


def _shape_along(axis: int, ndim: int, values) -> jnp.ndarray:
    """Reshape a 1D array so it broadcasts along ``axis`` of an ``ndim``-dimensional array."""
    shape = [1] * ndim
    shape[axis] = -1
    return jnp.reshape(values, shape)


def _side_data(value, axis: int) -> jnp.ndarray:
    """Boundary data (a scalar, or one value per boundary cell in 2D) shaped to broadcast on a side."""
    value = jnp.asarray(value)
    return value if value.ndim == 0 else jnp.expand_dims(value, axis)


def _ghosts(condition, mirror, spacing: float, axis: int, distances) -> jnp.ndarray:
    """Ghost values from the mirrored interior cells for one side of one axis.

    ``distances`` holds ``2j - 1`` for ghost ``j``: the distance between a ghost and its mirror
    cell, in cells.
    """
    if isinstance(condition, Dirichlet):
        # Odd reflection about the face value: second-order accurate u = value on the face.
        return 2.0 * _side_data(condition.value, axis) - mirror
    if isinstance(condition, Neumann):
        # Even reflection plus the prescribed outward slope: (ghost - mirror) / distance = gradient.
        d = _shape_along(axis, mirror.ndim, distances)
        return mirror + d * (spacing * _side_data(condition.gradient, axis))
    raise TypeError(f"no ghost-cell rule for boundary condition {condition!r}")


def ghost_cells(u, grid: AbstractGrid, axis: int, width: int):
    """The ``width`` ghost cells below and above ``u`` along ``axis``, as the boundary conditions say.

    * periodic: the opposite end's cells;
    * Dirichlet ``g``: ``u_ghost = 2 g - u_mirror`` (odd reflection about the face value);
    * Neumann ``q``: ``u_ghost = u_mirror + (2j-1) h q`` (even reflection plus the outward slope).
    """
    low, high = grid.bc[axis]
    n = u.shape[axis]
    if isinstance(low, Periodic):
        return _slice(u, n - width, n, axis=axis), _slice(u, 0, width, axis=axis)
    h = grid.spacing[axis]
    far_to_near = 2.0 * jnp.arange(width, 0, -1, dtype=u.dtype) - 1.0
    lo = _ghosts(low, jnp.flip(_slice(u, 0, width, axis=axis), axis), h, axis, far_to_near)
    hi = _ghosts(high, jnp.flip(_slice(u, n - width, n, axis=axis), axis), h, axis, far_to_near[::-1])
    return lo, hi


def pad(u, grid: AbstractGrid, axis: int, width: int) -> jnp.ndarray:
    """Extend ``u`` by ``width`` ghost cells on both sides of ``axis`` (see :func:`ghost_cells`)."""
    lo, hi = ghost_cells(u, grid, axis, width)
    return jnp.concatenate([lo, u, hi], axis=axis)


def face_average(c, grid: AbstractGrid, axis: int, *, nonnegative: bool = False) -> jnp.ndarray:
    """A cell-centred coefficient (κ, c², velocity) on the ``n + 1`` faces of ``axis``.

    Interior faces take the mean of their two cells. Boundary faces of a periodic axis wrap; on
    other boundaries the coefficient is extrapolated linearly to the face,
    ``c_face = (3 c_0 - c_1) / 2`` (second order: taking ``c_0`` alone would make a prescribed
    Neumann flux first-order accurate). For a ``nonnegative`` coefficient the extrapolated ghost
    value is clipped at 0, which keeps ``c_face >= c_0 / 2``.
    """
    n = c.shape[axis]
    if isinstance(grid.bc[axis][0], Periodic):
        cp = jnp.concatenate(
            [_slice(c, n - 1, n, axis=axis), c, _slice(c, 0, 1, axis=axis)], axis=axis
        )
    else:
        first, second = _slice(c, 0, 1, axis=axis), _slice(c, 1, 2, axis=axis)
        last, before = _slice(c, n - 1, n, axis=axis), _slice(c, n - 2, n - 1, axis=axis)
        lo, hi = 2.0 * first - second, 2.0 * last - before
        if nonnegative:
            lo, hi = jnp.maximum(lo, 0.0), jnp.maximum(hi, 0.0)
        cp = jnp.concatenate([lo, c, hi], axis=axis)
    return 0.5 * (_slice(cp, 0, n + 1, axis=axis) + _slice(cp, 1, n + 2, axis=axis))


def _low_high(faces, axis: int):
    """Face values on each cell's low and high side: ``(F_{i-1/2}, F_{i+1/2})``, each of cell shape."""
    n = faces.shape[axis] - 1
    return _slice(faces, 0, n, axis=axis), _slice(faces, 1, n + 1, axis=axis)


def _is_edge(n: int, ndim: int, axis: int, last: bool):
    """Boolean mask, broadcastable along ``axis``, true on the first (or last) cell."""
    return _shape_along(axis, ndim, jnp.arange(n) == (n - 1 if last else 0))


def _next_cells(u, high_ghost, grid: AbstractGrid, axis: int):
    """``u_{i+1}`` for every cell, the ghost cell after the last one.

    A split and a concatenation (a roll when periodic), whose transposes are again a concatenation
    and a split, so the reverse-mode pass is as simple as the forward one. (A roll with the edge
    cell selected from the broadcast ghost would give the same values, but the transpose of that
    broadcast is a sum over the axis: two extra kernels per face and stage in the adjoint.)
    """
    if isinstance(grid.bc[axis][0], Periodic):
        return _roll(u, -1, axis)
    n = u.shape[axis]
    return jnp.concatenate([_slice(u, 1, n, axis=axis), _edge_slab(high_ghost, u, axis)], axis=axis)


def _edge_slab(value, like, axis: int):
    """``value`` shaped as one slab of ``like`` along ``axis`` (broadcast only if it is not already)."""
    shape = list(like.shape)
    shape[axis] = 1
    return jnp.broadcast_to(value, shape)


def _divergence(high_flux, low_boundary_flux, grid: AbstractGrid, axis: int, spacing: float):
    """``(F_{i+1/2} - F_{i-1/2}) / h`` from the high-side fluxes of all cells and the first low face.

    Each flux is computed once and shifted (like a hand-written roll stencil): computing
    it on both sides of every face instead lets XLA duplicate work across the stages of a
    Runge–Kutta step (measured 3x slower for RK4).
    """
    if isinstance(grid.bc[axis][0], Periodic):
        low_flux = _roll(high_flux, 1, axis)
    else:  # the boundary face's flux, then the high faces of all cells but the last (see _next_cells)
        n = high_flux.shape[axis]
        low_flux = jnp.concatenate([_edge_slab(low_boundary_flux, high_flux, axis),
                                    _slice(high_flux, 0, n - 1, axis=axis)], axis=axis)
    return (high_flux - low_flux) / spacing


def _first(x, axis: int):
    """The first slice of ``x`` along ``axis`` (kept as an axis of length 1)."""
    return _slice(x, 0, 1, axis=axis)


def diffusion_faces(kappa, grid: AbstractGrid) -> tuple:
    r"""The face diffusivities :func:`div_kappa_grad` uses, per axis; they do not depend on ``u``.

    An insulated axis (zero gradient on both sides) has its ``n - 1`` interior faces
    $\kappa_{i+1/2}$; another axis the high face of every cell and the first cell's low face,
    ``(κ_{i+1/2}, κ_{1/2})`` (see :func:`face_average`). A time loop computes them once, before its
    first step (``AbstractStepper._with_step_invariants``): a derivative with respect to κ then
    collects on the faces over all steps and is mapped back to the cells once, not at every stage.
    """
    faces = []
    for axis in range(grid.ndim):
        n = kappa.shape[axis]
        if all(_zero_flux(condition) for condition in grid.bc[axis]):
            faces.append(0.5 * (_slice(kappa, 0, n - 1, axis=axis) + _slice(kappa, 1, n, axis=axis)))
        else:
            k_low, k_high = _low_high(face_average(kappa, grid, axis, nonnegative=True), axis)
            faces.append((k_high, _first(k_low, axis)))
    return tuple(faces)


def div_kappa_grad(u, kappa, grid: AbstractGrid, *, faces: tuple | None = None) -> jnp.ndarray:
    r"""Conservative diffusion operator $\nabla\cdot(\kappa(x)\nabla u)$, second order.

    $$[\nabla\cdot(\kappa\nabla u)]_i \approx \sum_{\text{axes}} \frac{1}{h}\Big(
      \kappa_{i+1/2}\frac{u_{i+1}-u_i}{h} - \kappa_{i-1/2}\frac{u_i-u_{i-1}}{h}\Big),\qquad
      \kappa_{i+1/2} = \tfrac12(\kappa_i + \kappa_{i+1}).$$

    On non-periodic boundaries the face diffusivity is extrapolated from the two cells next to it
    (see :func:`face_average`). Each face flux is computed once and used by both cells it
    separates, so fluxes telescope: with periodic or zero-flux boundaries $\sum_i [\cdot]_i h = 0$
    to round-off (conservation).

    **Arguments:** ``u`` and ``kappa``, arrays of shape ``grid.shape``; ``grid``; ``faces``:
    :func:`diffusion_faces` of ``kappa`` computed beforehand (the same values), or ``None`` to
    compute them here.

    **Returns:** an array of shape ``grid.shape``.
    """
    faces = diffusion_faces(kappa, grid) if faces is None else faces
    out = jnp.zeros_like(u)
    for axis, (h, face) in enumerate(zip(grid.spacing, faces)):
        n = u.shape[axis]
        if all(_zero_flux(condition) for condition in grid.bc[axis]):
            # insulated: no flux through either boundary face, so neither κ's extrapolation to it
            # nor u's ghost enters (the same values as below, without the tangents of zero terms)
            flux = face * (_slice(u, 1, n, axis=axis) - _slice(u, 0, n - 1, axis=axis)) / h
            zero = jnp.zeros_like(_first(flux, axis))
            out = out + (jnp.concatenate([flux, zero], axis=axis) - jnp.concatenate([zero, flux], axis=axis)) / h
            continue
        k_high, k_first = face
        if isinstance(grid.bc[axis][0], Periodic):
            high_flux, low_boundary = k_high * (_roll(u, -1, axis) - u) / h, None
        else:
            low_jump, high_jump = _boundary_jumps(u, grid, axis)
            jumps = jnp.concatenate([_slice(u, 1, n, axis=axis) - _slice(u, 0, n - 1, axis=axis),
                                     _edge_slab(high_jump, u, axis)], axis=axis)
            high_flux, low_boundary = k_high * jumps / h, k_first * low_jump / h
        out = out + _divergence(high_flux, low_boundary, grid, axis, h)
    return out


def _zero_flux(condition) -> bool:
    """Whether ``condition`` is a Neumann condition with a gradient known to be zero (a Python number)."""
    return isinstance(condition, Neumann) and isinstance(condition.gradient, (int, float)) and condition.gradient == 0


def _boundary_jumps(u, grid: AbstractGrid, axis: int):
    r"""``(u_0 - u_ghost, u_ghost - u_{n-1})``: the differences across the two boundary faces of a non-periodic axis.

    A Neumann face's is the prescribed $\pm hq$ itself, not $u_0 - (u_0 + hq)$: the same value
    (exactly for $q = 0$, to round-off otherwise), but free of $u$, so the tangent-linear and
    adjoint models do not carry a difference of a boundary cell with itself, which is zero.
    """
    low, high = grid.bc[axis]
    h, n = grid.spacing[axis], u.shape[axis]
    first, last = _slice(u, 0, 1, axis=axis), _slice(u, n - 1, n, axis=axis)
    one = jnp.ones(1, u.dtype)  # the ghost's distance to its mirror cell, in cells
    if isinstance(low, Neumann):
        low_jump = 0.0 - h * _side_data(low.gradient, axis)  # +0 for q = 0, as u_0 - (u_0 + 0) was
    else:
        low_jump = first - _ghosts(low, first, h, axis, one)
    if isinstance(high, Neumann):
        high_jump = h * _side_data(high.gradient, axis)
    else:
        high_jump = _ghosts(high, last, h, axis, one) - last
    return low_jump, high_jump


def div_kappa_grad_diagonal(kappa, grid: AbstractGrid) -> jnp.ndarray:
    r"""The diagonal of the linear map $u \mapsto$ :func:`div_kappa_grad` $(u, \kappa)$.

    $$D_i = -\sum_{\text{axes}} \frac{w_{i-1/2}\,\kappa_{i-1/2} + w_{i+1/2}\,\kappa_{i+1/2}}{h^2},$$

    with weight $w = 1$ on interior (and periodic) faces, $2$ on a Dirichlet face (the ghost
    $2g - u_0$ depends on $u_0$) and $0$ on a Neumann face (the ghost moves with $u_0$). Used for
    Jacobi preconditioning of implicit diffusion solves.

    **Returns:** an array of shape ``grid.shape``.
    """
    out = jnp.zeros(grid.shape, dtype=jnp.result_type(kappa, float))
    for axis, h in enumerate(grid.spacing):
        k_low, k_high = _low_high(face_average(kappa, grid, axis, nonnegative=True), axis)
        low, high = grid.bc[axis]
        if not isinstance(low, Periodic):
            weight = {Dirichlet: 2.0, Neumann: 0.0}
            n = kappa.shape[axis]
            k_low = jnp.where(_is_edge(n, kappa.ndim, axis, last=False), weight[type(low)] * k_low, k_low)
            k_high = jnp.where(_is_edge(n, kappa.ndim, axis, last=True), weight[type(high)] * k_high, k_high)
        out = out - (k_low + k_high) / h**2
    return out


# Stencil coefficients of the WENO5 pieces over the five cells (a, b, c, d, e), for the partial
# derivatives below: candidate values q_j, and the two linear combinations l_j, m_j whose squares
# make the smoothness indicators, beta_j = 13/12 l_j^2 + 1/4 m_j^2.
_WENO_Q = ((2 / 6, -7 / 6, 11 / 6, 0, 0), (0, -1 / 6, 5 / 6, 2 / 6, 0), (0, 0, 2 / 6, 5 / 6, -1 / 6))
_WENO_L = ((1, -2, 1, 0, 0), (0, 1, -2, 1, 0), (0, 0, 1, -2, 1))
_WENO_M = ((1, -4, 3, 0, 0), (0, 1, 0, -1, 0), (0, 0, 3, -4, 1))
_WENO_IDEAL = (0.1, 0.6, 0.3)
# eps = 1e-6 (Jiang & Shu's value) bounds the weights' sensitivity where the data are nearly
# constant (beta ~ 0): much smaller values make the scheme's derivative vary over tiny scales, so
# gradients, though exact, stop being informative (and Taylor tests fail). Assumes O(1) data.
_WENO_EPS = 1e-6


def _weno5z_parts(a, b, c, d, e):
    """The face value of :func:`_weno5z_face` and the intermediates its derivative needs."""
    q0 = (2.0 * a - 7.0 * b + 11.0 * c) / 6.0
    q1 = (-b + 5.0 * c + 2.0 * d) / 6.0
    q2 = (2.0 * c + 5.0 * d - e) / 6.0
    l0, m0 = a - 2.0 * b + c, a - 4.0 * b + 3.0 * c
    l1, m1 = b - 2.0 * c + d, b - d
    l2, m2 = c - 2.0 * d + e, 3.0 * c - 4.0 * d + e
    b0 = 13.0 / 12.0 * l0 ** 2 + 0.25 * m0 ** 2
    b1 = 13.0 / 12.0 * l1 ** 2 + 0.25 * m1 ** 2
    b2 = 13.0 / 12.0 * l2 ** 2 + 0.25 * m2 ** 2
    eps = _WENO_EPS
    tau = b0 - b2
    tau2 = tau ** 2
    a0 = 0.1 * (1.0 + tau2 / (b0 + eps) ** 2)
    a1 = 0.6 * (1.0 + tau2 / (b1 + eps) ** 2)
    a2 = 0.3 * (1.0 + tau2 / (b2 + eps) ** 2)
    s = a0 + a1 + a2
    face = (a0 * q0 + a1 * q1 + a2 * q2) / s
    return face, (q0, q1, q2), (l0, l1, l2), (m0, m1, m2), (b0, b1, b2), tau, (a0, a1, a2), s


@jax.custom_jvp
def _weno5z_face(a, b, c, d, e) -> jnp.ndarray:
    r"""Fifth-order WENO-Z value at the face right of ``c`` from cells ``a..e`` (upwind side first).

    $$f = \frac{\sum_j \alpha_j q_j}{\sum_j \alpha_j},\qquad
      \alpha_j = C_j\Big(1 + \frac{\tau^2}{(\beta_j + \varepsilon)^2}\Big),\qquad \tau = \beta_0 - \beta_2,$$

    with candidate values $q_j$, ideal weights $C = (0.1, 0.6, 0.3)$ and smoothness indicators
    $\beta_j$ of Jiang & Shu (1996); weights of Borges et al. (2008) with the exponent p = 2, which
    keeps the weights smooth functions of the data (differentiable).

    The derivative is hand-written (:func:`_weno5z_face_jvp`): the five partial derivatives
    $\partial f/\partial(a..e)$ in closed form, so the tangent is $\sum_k D_k\,\dot x_k$, linear in
    the tangents (``jax.linearize``, ``jax.linear_transpose`` and ``vmap`` work as before).
    Differentiating the expression above instead chains through every intermediate, and its
    transpose has one branch per input that XLA fuses separately, each recomputing the weights
    (twice the flops and 2x the time of a 1D WENO gradient).
    """
    return _weno5z_parts(a, b, c, d, e)[0]


def _weno5z_partials(a, b, c, d, e):
    r"""The face value and its five partial derivatives $D_k = \partial f/\partial x_k$, $x = (a..e)$.

    With $\omega_j = \alpha_j/S$, $S = \sum_j\alpha_j$:
    $df = \sum_j \omega_j\,dq_j + \sum_j \frac{q_j - f}{S}\,d\alpha_j$ and
    $d\alpha_j = g_j'\,(d\tau - \frac{\tau}{\beta_j+\varepsilon}\,d\beta_j)$,
    $g_j' = 2C_j\tau/(\beta_j+\varepsilon)^2$. So with $g_j = g_j'(q_j - f)/S$,
    $h_j = g_j\tau/(\beta_j+\varepsilon)$ and $G = \sum_j g_j$,
    $df = \sum_j\omega_j\,dq_j + (G - h_0)\,d\beta_0 - h_1\,d\beta_1 - (G + h_2)\,d\beta_2$,
    where $d\beta_j = \tfrac{13}{6} l_j\,dl_j + \tfrac12 m_j\,dm_j$ and $dq_j, dl_j, dm_j$ have the
    constant stencil coefficients ``_WENO_Q``, ``_WENO_L``, ``_WENO_M``.
    """
    face, q, l, m, beta, tau, alpha, s = _weno5z_parts(a, b, c, d, e)
    g = [2.0 * _WENO_IDEAL[j] * tau / (beta[j] + _WENO_EPS) ** 2 * (q[j] - face) / s for j in range(3)]
    h = [g[j] * tau / (beta[j] + _WENO_EPS) for j in range(3)]
    total = g[0] + g[1] + g[2]
    d_beta = (total - h[0], -h[1], -(total + h[2]))  # coefficients of dβ_j in df
    omega = [alpha[j] / s for j in range(3)]
    partials = []
    for k in range(5):
        terms = [_WENO_Q[j][k] * omega[j] for j in range(3) if _WENO_Q[j][k]]
        for j in range(3):  # ∂β_j/∂x_k, leaving out zero stencil coefficients
            dbeta = [c * v for c, v in ((13.0 / 6.0 * _WENO_L[j][k], l[j]), (0.5 * _WENO_M[j][k], m[j])) if c]
            if dbeta:
                terms.append(d_beta[j] * sum(dbeta[1:], dbeta[0]))
        partials.append(sum(terms[1:], terms[0]))
    return face, partials


@_weno5z_face.defjvp
def _weno5z_face_jvp(primals, tangents):
    r"""Tangent of :func:`_weno5z_face`: $\sum_k D_k\,\dot x_k$ with the closed-form partials."""
    face, partials = _weno5z_partials(*primals)
    tangent = sum((p * t for p, t in zip(partials[1:], tangents[1:])), partials[0] * tangents[0])
    return face, tangent


def _upwind_face_states(u, face_velocity, grid: AbstractGrid, axis: int, side: int = 0):
    """WENO5-Z reconstructions of ``u`` on the ``n + 1`` faces of ``axis``, each from its upwind side.

    A face with ``v > 0`` takes the left-biased value (cells ``f-3 .. f+1``, the upwind one first),
    any other the right-biased one (the mirrored window). The five cells are chosen first and the
    reconstruction runs once per face: computing both sides and weighting them by ``max(v, 0)`` and
    ``min(v, 0)`` gives the same fluxes (the other side's weight is an exact zero) for twice the work
    and twice the program.

    ``side`` (:func:`upwind_sides`): ``+1`` or ``-1`` when every face of the axis is known, before tracing,
    to take the left- or right-biased window. The windows are then plain slices, with no per-face choice:
    the same values (to round-off), a forward pass 1.1-1.7x and a gradient 1.3-1.6x faster (SSP-RK3 rollouts,
    1D and 2D; the choice's transpose is two selections and a padded sum per window in every backward
    stage) and 10-18 % less compilation (``benchmarks/README.md``).
    ``0``: chosen per face from the sign of ``face_velocity``.
    """
    n = u.shape[axis]
    up = pad(u, grid, axis, 3)
    s = [_slice(up, k, k + n + 1, axis=axis) for k in range(6)]
    # Face f sits between cells f-1 and f; s[k] holds cell f - 3 + k.
    if side:
        return _weno5z_face(*(s[k] if side > 0 else s[5 - k] for k in range(5)))
    positive = face_velocity > 0
    upwind = [jnp.where(positive, s[k], s[5 - k]) for k in range(5)]
    return _weno5z_face(*upwind)


def _face_signs_on_host(component: np.ndarray, grid: AbstractGrid, axis: int) -> np.ndarray:
    """The signs of :func:`face_average` of a velocity ``component`` along ``axis`` (``n + 1`` faces), by NumPy."""
    c = np.moveaxis(component, axis, 0)
    if isinstance(grid.bc[axis][0], Periodic):
        extended = np.concatenate([c[-1:], c, c[:1]])
    else:  # the linear extrapolation face_average takes to the boundary faces
        extended = np.concatenate([2.0 * c[:1] - c[1:2], c, 2.0 * c[-1:] - c[-2:-1]])
    return np.sign(0.5 * (extended[:-1] + extended[1:]))


def upwind_sides(velocity, grid: AbstractGrid) -> tuple[int, ...]:
    """Per axis, the side all its faces take WENO values from, when it is one side for every face.

    ``+1``: every face velocity (:func:`advection_faces`) is > 0, so every face reconstructs from its left
    (lower) cells; ``-1``: every one is < 0; ``0``: signs differ or a face velocity is 0, or ``velocity`` is
    traced (inside ``jit``), so that each face chooses at run time. Computed on the host, at a model's
    construction: the result is static (it shapes the program), and :func:`advection_faces` turns a face
    that contradicts it into NaN (a velocity replaced without rebuilding the model), so a stale side is
    reported as a non-finite state, never used silently.
    """
    if not is_concrete(velocity):
        return (0,) * grid.ndim
    velocity = np.asarray(velocity)  # converted before indexing: indexing a device array compiles a program
    sides = []
    for axis in range(grid.ndim):
        signs = _face_signs_on_host(velocity[axis], grid, axis)
        sides.append(1 if np.all(signs > 0) else -1 if np.all(signs < 0) else 0)
    return tuple(sides)


def advection_faces(velocity, grid: AbstractGrid, sides: tuple[int, ...] | None = None) -> tuple:
    """The face velocities :func:`div_flux_advective` uses: per axis, its component on the ``n + 1`` faces.

    They do not depend on ``u``; a time loop computes them once (see :func:`diffusion_faces`). With
    ``sides`` (:func:`upwind_sides`), a face whose velocity does not have its axis's side (``+1``: > 0,
    ``-1``: < 0) is NaN: WENO would reconstruct it from the wrong side, and the NaN makes the state
    non-finite, which rollouts and solvers report, instead of a wrong value.
    """
    faces = tuple(face_average(velocity[axis], grid, axis) for axis in range(grid.ndim))
    if sides is None:
        return faces
    return tuple(v if not side else jnp.where(side * v > 0, v, jnp.nan) for v, side in zip(faces, sides))


def div_flux_advective(u, velocity, grid: AbstractGrid, scheme: str = "upwind", *,
                       faces: tuple | None = None, sides: tuple[int, ...] | None = None) -> jnp.ndarray:
    r"""Conservative advective flux divergence $\nabla\cdot(\mathbf v u)$ with upwinding on each face.

    $$[\nabla\cdot(\mathbf v u)]_i \approx \sum_{\text{axes}}
      \frac{F_{i+1/2}-F_{i-1/2}}{h},\qquad
      F_{i+1/2} = v^+_{i+1/2}\,u^L_{i+1/2} + v^-_{i+1/2}\,u^R_{i+1/2},$$

    with face velocity $v_{i+1/2} = \tfrac12(v_i+v_{i+1})$ (extrapolated on non-periodic boundaries), $v^\pm$ its positive/negative parts,
    and $u^{L,R}$ the face values reconstructed from the left/right: first-order upwind
    (``"upwind"``) or fifth-order WENO-Z (``"weno5"``).

    **Arguments:** ``u`` of shape ``grid.shape``; ``velocity`` of shape ``(grid.ndim, *grid.shape)``
    (component ``a`` along axis ``a``); ``grid``; ``scheme``; ``faces``: :func:`advection_faces` of
    ``velocity`` (and ``sides``) computed beforehand (the same values), or ``None`` to compute them here;
    ``sides``: :func:`upwind_sides` of ``velocity`` (WENO5 takes each axis's windows from that side without
    a per-face choice), or ``None`` to choose per face.

    **Returns:** an array of shape ``grid.shape``.
    """
    faces = advection_faces(velocity, grid, sides) if faces is None else faces
    sides = (0,) * grid.ndim if sides is None else sides
    out = jnp.zeros_like(u)
    for axis, (h, v, side) in enumerate(zip(grid.spacing, faces, sides)):
        if scheme == "upwind":
            lo, hi = ghost_cells(u, grid, axis, 1)
            v_low, v_high = _low_high(v, axis)
            nxt = _next_cells(u, hi, grid, axis)
            high_flux = jnp.maximum(v_high, 0.0) * u + jnp.minimum(v_high, 0.0) * nxt
            v0 = _first(v_low, axis)
            low_boundary = jnp.maximum(v0, 0.0) * lo + jnp.minimum(v0, 0.0) * _first(u, axis)
            out = out + _divergence(high_flux, low_boundary, grid, axis, h)
        elif scheme == "weno5":
            low, high = _low_high(v * _upwind_face_states(u, v, grid, axis, side), axis)
            out = out + (high - low) / h
        else:
            raise ValueError(f"unknown advection scheme {scheme!r}; valid are {ADVECTION_SCHEMES}")
    return out
