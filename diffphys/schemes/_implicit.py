r"""Implicit time schemes (and the implicit stage shared with the IMEX scheme), differentiated by the implicit function theorem.

Every implicit stage of these schemes has the form

$$G(y) = y - c\,\Delta t\, f(y) - b = 0,$$

with ``f`` a part of the model's right-hand side (``rhs``, ``acceleration`` or ``implicit_rhs``).
It is solved matrix-free by Newton–Krylov (:func:`diffphys.solve_root`); when the model declares
``f`` affine in the state, one Newton step is the exact solve, so a linear model costs one Krylov
solve per stage. Derivatives never go through the Krylov or Newton iterations: they come from
the implicit function theorem, one (transposed) Krylov solve with $I - c\Delta t\,\partial f/\partial y$.

A model describes each part through ``jacobian_properties(part)`` (``"affine"``: ``f`` is affine
in the state; ``"symmetric"``: its Jacobian is symmetric negative semi-definite, so $I - c\Delta t
J$ is symmetric positive definite and CG applies) and may give ``jacobian_diagonal(part, y)`` for
Jacobi preconditioning.

References: E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, Springer 1996
(backward Euler, Crank–Nicolson as the trapezoidal rule, A- and L-stability); N. M. Newmark,
"A method of computation for structural dynamics", J. Eng. Mech. Div. 85 (1959) 67-94;
U. M. Ascher, S. J. Ruuth, R. J. Spiteri, "Implicit-explicit Runge–Kutta methods for
time-dependent partial differential equations", Appl. Numer. Math. 25 (1997) 151-167.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._implicit import Newton, solve_root
from .._solution import RESULTS, Solution
from ._explicit import AbstractScheme, _add

__all__ = ["AbstractImplicitScheme", "BackwardEuler", "CrankNicolson", "Newmark", "combine_stages", "solve_stage"]

_INF = math.inf
_UNCONDITIONAL = {"diffusion": _INF, "oscillation": _INF, "upwind": _INF, "weno5": _INF}


class AbstractImplicitScheme(AbstractScheme):
    """A time scheme with implicit stages, each solved by Newton–Krylov with implicit derivatives.

    ``newton`` holds the solver settings (tolerances, iteration budgets, Krylov method,
    preconditioner, ``throw``). ``solve_step`` returns the step as a :class:`~diffphys.Solution`
    (the new state, the worst result of its stages, their total iterations and largest residual),
    which is how to read the result code with ``throw=False``.
    """

    newton: eqx.AbstractVar[Newton]

    def step(self, model, state, dt):
        return self.solve_step(model, state, dt).value

    def solve_step(self, model, state, dt) -> Solution:
        """Advance ``state`` by ``dt``; the :class:`~diffphys.Solution`'s value is the new state.

        Compiled (``eqx.filter_jit``, keyed on the scheme, the model's structure and ``dt``): called
        from Python, a step is one program rather than hundreds of single operations (a 48x48 implicit
        heat step: 9 s op by op), and a second call with the same model compiles nothing. Inside a
        rollout or a user's ``jax.jit`` it is traced inline.
        """
        return _compiled_advance(self, model, state, dt)

    @abc.abstractmethod
    def advance(self, model, state, dt) -> Solution:
        """The step itself, as traced by :meth:`solve_step` (subclasses implement this)."""


@eqx.filter_jit
def _compiled_advance(scheme: AbstractImplicitScheme, model, state, dt) -> Solution:
    return scheme.advance(model, state, dt)


def combine_stages(value, *stages: Solution) -> Solution:
    """One step's :class:`~diffphys.Solution` from its stages': the worst result (non-finite before
    budget spent before successful), the total iterations and the largest residual."""
    results = [stage.result for stage in stages]
    worst = RESULTS.successful
    for bad in (RESULTS.max_steps_reached, RESULTS.nonfinite):
        worst = RESULTS.where(jnp.any(jnp.stack([r == bad for r in results])), bad, worst)
    stats = {"num_steps": sum(stage.stats["num_steps"] for stage in stages),
             "residual": jnp.max(jnp.stack([stage.stats["residual"] for stage in stages]))}
    return Solution(value, worst, stats, None)


def solve_stage(model, part: str, b, c_dt: float, guess, newton: Newton, what: str):
    r"""Solve $y - c\Delta t\, f(y) = b$ for $y$, $f$ = ``getattr(model, part)``; returns a :class:`~diffphys.Solution`."""
    properties = model.jacobian_properties(part)

    def residual(y, theta):
        m, rhs = theta
        return jax.tree_util.tree_map(lambda yi, fi, bi: yi - c_dt * fi - bi, y, getattr(m, part)(y), rhs)

    diagonal = None
    if newton.linear_solver.preconditioner == "jacobi":
        if model.jacobian_diagonal(part, guess) is None:
            raise ValueError(
                f"{type(model).__name__} does not provide the diagonal of ∂{part}/∂y, so preconditioner='jacobi' "
                "is not available for it; use preconditioner=None"
            )

        def diagonal(y, theta):
            d = theta[0].jacobian_diagonal(part, y)
            return jax.tree_util.tree_map(lambda di: 1.0 - c_dt * di, d)

    return solve_root(
        residual,
        guess,
        (model, b),
        solver=newton,
        spd="symmetric" in properties,
        diagonal=diagonal,
        linear="affine" in properties,
        what=what,
    )


class BackwardEuler(AbstractImplicitScheme):
    r"""Backward (implicit) Euler, order 1, L-stable: $y_{n+1} = y_n + \Delta t\, f(y_{n+1})$.

    Damps every stiff mode (no oscillations at large ``dt``); unconditionally stable for the
    diffusion, advection and wave operators of diffphys (their spectra lie in the left half plane).
    """

    name: ClassVar[str] = "backward_euler"
    order: ClassVar[int] = 1
    stability_limits: ClassVar[dict[str, float]] = _UNCONDITIONAL
    newton: Newton = Newton()

    def advance(self, model, state, dt):
        return solve_stage(model, "rhs", state, dt, state, self.newton, f"{type(model).__name__} backward-Euler step")


class CrankNicolson(AbstractImplicitScheme):
    r"""Crank–Nicolson (trapezoidal rule), order 2, A-stable:
    $y_{n+1} = y_n + \tfrac{\Delta t}{2}\big(f(y_n) + f(y_{n+1})\big)$.

    Not L-stable: the stiffest modes are not damped but flip sign each step (amplification
    → -1), which can leave high-frequency oscillations from rough data at large ``dt``. For linear
    systems it conserves quadratic invariants (the wave energy) exactly.
    """

    name: ClassVar[str] = "crank_nicolson"
    order: ClassVar[int] = 2
    stability_limits: ClassVar[dict[str, float]] = _UNCONDITIONAL
    newton: Newton = Newton()

    def advance(self, model, state, dt):
        b = _add(state, 0.5 * dt, model.rhs(state))
        return solve_stage(model, "rhs", b, 0.5 * dt, state, self.newton, f"{type(model).__name__} Crank–Nicolson step")


class Newmark(AbstractImplicitScheme):
    r"""Newmark-β average acceleration (β = 1/4, γ = 1/2) for $\ddot u = a(u)$, order 2.

    $$u_{n+1} = u_n + \Delta t\, v_n + \tfrac{\Delta t^2}{4}\big(a(u_n) + a(u_{n+1})\big),\qquad
      v_{n+1} = v_n + \tfrac{\Delta t}{2}\big(a(u_n) + a(u_{n+1})\big).$$

    One implicit solve per step, for $u_{n+1}$, with the operator $I - \tfrac{\Delta t^2}{4}\partial a/\partial u$
    (symmetric positive definite for the wave equation: CG). Unconditionally stable; for a linear
    $a(u) = Au + g$ with symmetric $A$ it equals the trapezoidal rule on the first-order system and
    conserves the energy $\tfrac12 v^\top v - \tfrac12 u^\top A u - g^\top u$ exactly (to the solver
    tolerance), at the price of a phase error $O((\omega\Delta t)^2)$. Needs ``model.acceleration``;
    the state is ``(u, v)``.
    """

    name: ClassVar[str] = "newmark"
    order: ClassVar[int] = 2
    stability_limits: ClassVar[dict[str, float]] = {"oscillation": _INF}
    requires: ClassVar[tuple[str, ...]] = ("acceleration",)
    newton: Newton = Newton()

    def advance(self, model, state, dt):
        u, v = state
        a_now = model.acceleration(u)
        c = 0.25 * dt * dt
        b = u + dt * v + c * a_now
        stage = solve_stage(model, "acceleration", b, c, u + dt * v, self.newton, f"{type(model).__name__} Newmark step")
        u_new = stage.value
        v_new = v + 0.5 * dt * (a_now + model.acceleration(u_new))
        return Solution((u_new, v_new), stage.result, stage.stats, None)
