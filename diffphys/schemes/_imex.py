r"""The implicit–explicit (IMEX) Runge–Kutta scheme ARS(4,4,3): explicit advection, implicit diffusion.

Each implicit stage is solved as in :mod:`diffphys.schemes._implicit` (Newton–Krylov, derivatives by the
implicit function theorem).

Reference: U. M. Ascher, S. J. Ruuth, R. J. Spiteri, "Implicit-explicit Runge–Kutta methods for
time-dependent partial differential equations", Appl. Numer. Math. 25 (1997) 151-167.
"""

from __future__ import annotations

from typing import ClassVar

from .._implicit import Newton
from ._explicit import _add
from ._implicit import AbstractImplicitScheme, combine_stages, solve_stage

__all__ = ["IMEXARS443"]


class IMEXARS443(AbstractImplicitScheme):
    r"""IMEX Runge–Kutta ARS(4,4,3) of Ascher, Ruuth and Spiteri (1997, §2.8), order 3.

    For $\dot y = f_E(y) + f_I(y)$ with a non-stiff explicit part $f_E$ (advection) and a stiff
    implicit part $f_I$ (diffusion). Stages $i = 1..4$:

    $$Y_i = y_n + \Delta t\sum_{j<i} a^E_{ij} f_E(Y_j) + \Delta t\sum_{j\le i} a^I_{ij} f_I(Y_j),
      \qquad Y_0 = y_n,\quad y_{n+1} = Y_4,$$

    with $a^I_{ii} = 1/2$: four implicit solves of $Y - \tfrac{\Delta t}{2} f_I(Y) = b$ per step.
    Both tableaux are stiffly accurate and the implicit one is L-stable, so stiff diffusion is
    damped rather than reflected (the A-stable ARS(2,3,3) was measured unstable with WENO5 at
    diffusion numbers ~100). Explicit stability polynomial
    $1 + z + z^2/2 + z^3/6 - 7z^4/288$: CFL limits 1.07 (upwind) and 1.28 (WENO5). Needs
    ``model.explicit_rhs`` and ``model.implicit_rhs``.
    """

    name: ClassVar[str] = "imex_ars443"
    order: ClassVar[int] = 3
    stability_limits: ClassVar[dict[str, float]] = {"upwind": 1.0715, "weno5": 1.2788}
    requires: ClassVar[tuple[str, ...]] = ("explicit_rhs", "implicit_rhs")
    newton: Newton = Newton()

    # Rows i = 1..4; explicit coefficients for Y_0..Y_{i-1}, implicit for Y_1..Y_{i-1} (diagonal 1/2).
    explicit_rows: ClassVar[tuple[tuple[float, ...], ...]] = (
        (1 / 2,),
        (11 / 18, 1 / 18),
        (5 / 6, -5 / 6, 1 / 2),
        (1 / 4, 7 / 4, 3 / 4, -7 / 4),
    )
    implicit_rows: ClassVar[tuple[tuple[float, ...], ...]] = ((), (1 / 6,), (-1 / 2, 1 / 2), (3 / 2, -3 / 2, 1 / 2))
    diagonal: ClassVar[float] = 1 / 2

    def advance(self, model, state, dt):
        what = f"{type(model).__name__} IMEX stage"
        explicit = [model.explicit_rhs(state)]  # f_E(Y_0)
        implicit = []  # f_I(Y_1), f_I(Y_2), ...
        stages = []
        y = state
        for i, (row_e, row_i) in enumerate(zip(self.explicit_rows, self.implicit_rows)):
            b = state
            for a, f in zip(row_e, explicit):
                b = _add(b, a * dt, f)
            for a, f in zip(row_i, implicit):
                b = _add(b, a * dt, f)
            stage = solve_stage(model, "implicit_rhs", b, self.diagonal * dt, y, self.newton, what)
            stages.append(stage)
            y = stage.value
            if i + 1 < len(self.explicit_rows):
                explicit.append(model.explicit_rhs(y))
                implicit.append(model.implicit_rhs(y))
        return combine_stages(y, *stages)
