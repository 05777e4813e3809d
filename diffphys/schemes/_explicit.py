r"""Explicit time schemes, kept apart from the physics so every model can use every scheme.

(The implicit and IMEX schemes are in ``_implicit.py`` and ``_imex.py``; ``_registry.py`` names them all.)

A scheme advances a model's state by one step ``dt`` using only the model's right-hand side
(``model.rhs``) or, for the Störmer–Verlet leapfrog, its acceleration (``model.acceleration``).
All schemes are autonomous (the right-hand sides of diffphys' models do not depend on time).

Each scheme records its linear stability limits: the largest ``dt·ρ`` for which the scheme is
stable when the spatial operator's eigenvalues lie in the region named by the key,

* ``"diffusion"``: the negative real interval ``[-ρ, 0]`` (heat);
* ``"oscillation"``: the imaginary interval ``[-iρ, iρ]`` (wave as a first-order system);
* ``"upwind"``: the disc of first-order upwind advection, centre ``-ρ``, radius ``ρ``;
* ``"weno5"``: the symbol of fifth-order upwind-biased advection (WENO with its ideal weights).

The numbers are the roots of ``|R(z)| = 1`` of each scheme's stability polynomial ``R`` on those
curves (computed numerically; for WENO5 they agree with R. Wang, R. J. Spiteri, SIAM J. Numer.
Anal. 45 (2007) 1871-1901). A limit of 0 means the scheme is unstable there at any ``dt``.

References: E. Hairer, S. P. Nørsett, G. Wanner, *Solving Ordinary Differential Equations I*
(RK4); S. Gottlieb, C.-W. Shu, Math. Comp. 67 (1998) 73-85 (SSP-RK3); E. Hairer, C. Lubich,
G. Wanner, Acta Numerica 12 (2003) 399-450 (Störmer–Verlet).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax

__all__ = ["AbstractScheme", "ForwardEuler", "SSPRK3", "RK4", "LeapFrog"]


def _add(y, dt, dy):
    """``y + dt * dy`` on pytrees (a state may be a tuple of fields)."""
    return jax.tree_util.tree_map(lambda a, b: a + dt * b, y, dy)


def _combine(wa, a, wb, b):
    """``wa * a + wb * b`` on pytrees."""
    return jax.tree_util.tree_map(lambda x, y: wa * x + wb * y, a, b)


class AbstractScheme(eqx.Module):
    """An explicit one-step time scheme: ``step(model, state, dt) -> state``."""

    name: ClassVar[str]
    order: ClassVar[int]
    stability_limits: ClassVar[dict[str, float]]
    # Model methods the scheme calls besides ``rhs`` (e.g. ``acceleration`` for leapfrog).
    requires: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def step(self, model, state, dt: float):
        """Advance ``state`` by one step of length ``dt`` of ``model``'s dynamics."""


class ForwardEuler(AbstractScheme):
    r"""Forward Euler, order 1: $y_{n+1} = y_n + \Delta t\, f(y_n)$."""

    name: ClassVar[str] = "euler"
    order: ClassVar[int] = 1
    stability_limits: ClassVar[dict[str, float]] = {
        "diffusion": 2.0, "oscillation": 0.0, "upwind": 1.0, "weno5": 0.0
    }

    def step(self, model, state, dt):
        return _add(state, dt, model.rhs(state))


class SSPRK3(AbstractScheme):
    r"""Strong-stability-preserving Runge–Kutta of order 3 (Shu–Osher form).

    $$y^{(1)} = y_n + \Delta t f(y_n),\quad
      y^{(2)} = \tfrac34 y_n + \tfrac14\big(y^{(1)} + \Delta t f(y^{(1)})\big),\quad
      y_{n+1} = \tfrac13 y_n + \tfrac23\big(y^{(2)} + \Delta t f(y^{(2)})\big).$$
    """

    name: ClassVar[str] = "ssprk3"
    order: ClassVar[int] = 3
    stability_limits: ClassVar[dict[str, float]] = {
        "diffusion": 2.5127, "oscillation": 1.7320, "upwind": 1.2563, "weno5": 1.4349
    }

    def step(self, model, state, dt):
        y1 = _add(state, dt, model.rhs(state))
        y2 = _combine(0.75, state, 0.25, _add(y1, dt, model.rhs(y1)))
        return _combine(1.0 / 3.0, state, 2.0 / 3.0, _add(y2, dt, model.rhs(y2)))


class RK4(AbstractScheme):
    r"""Classical fourth-order Runge–Kutta.

    $$k_1 = f(y_n),\ k_2 = f(y_n + \tfrac{\Delta t}{2}k_1),\ k_3 = f(y_n + \tfrac{\Delta t}{2}k_2),\
      k_4 = f(y_n + \Delta t k_3),\quad y_{n+1} = y_n + \tfrac{\Delta t}{6}(k_1 + 2k_2 + 2k_3 + k_4).$$
    """

    name: ClassVar[str] = "rk4"
    order: ClassVar[int] = 4
    stability_limits: ClassVar[dict[str, float]] = {
        "diffusion": 2.7852, "oscillation": 2.8284, "upwind": 1.3926, "weno5": 1.7319
    }

    def step(self, model, state, dt):
        k1 = model.rhs(state)
        k2 = model.rhs(_add(state, 0.5 * dt, k1))
        k3 = model.rhs(_add(state, 0.5 * dt, k2))
        k4 = model.rhs(_add(state, dt, k3))
        incr = jax.tree_util.tree_map(lambda a, b, c, d: (a + 2.0 * b + 2.0 * c + d) / 6.0, k1, k2, k3, k4)
        return _add(state, dt, incr)


class LeapFrog(AbstractScheme):
    r"""Störmer–Verlet leapfrog (kick–drift–kick) for second-order systems $\ddot u = a(u)$, order 2.

    $$v_{n+1/2} = v_n + \tfrac{\Delta t}{2} a(u_n),\quad u_{n+1} = u_n + \Delta t\, v_{n+1/2},\quad
      v_{n+1} = v_{n+1/2} + \tfrac{\Delta t}{2} a(u_{n+1}).$$

    Symplectic and time-reversible: for the wave equation a discrete energy is conserved up to a
    bounded O(Δt²) oscillation, with no drift. Needs ``model.acceleration``; the state is ``(u, v)``.
    Stable for ``Δt·ω_max <= 2``.
    """

    name: ClassVar[str] = "leapfrog"
    order: ClassVar[int] = 2
    stability_limits: ClassVar[dict[str, float]] = {"oscillation": 2.0}
    requires: ClassVar[tuple[str, ...]] = ("acceleration",)

    def step(self, model, state, dt):
        u, v = state
        v_half = v + 0.5 * dt * model.acceleration(u)
        u_new = u + dt * v_half
        return u_new, v_half + 0.5 * dt * model.acceleration(u_new)
