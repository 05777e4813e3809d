r"""Model-error scenarios: a truth that contains what the model cannot represent, as trajectory datasets.

* :func:`resolution_scenario` (**resolution error**): the truth is the same PDE on a grid
  ``factor`` times finer, advanced with ``dt / factor`` and cell-averaged onto the model's grid,
  $$u^{t}_n = \mathcal D\big(M_f^{\,n\cdot f}(\mathcal U x_0)\big),\qquad (\mathcal D v)_i = \tfrac1f\textstyle\sum_{j<f} v_{fi+j}.$$
* :func:`missing_physics_scenario` (**missing physics**): the truth on the model's grid has an
  extra term the model lacks, or a wrong parameter:
  $$\partial_t u = \nabla\cdot(\kappa\nabla u) + g(u),\qquad
    g(u) = -\beta\,\partial_x(u^2/2)\ (\text{"burgers"}),\ \ \beta\,u(1-u^2)\ (\text{"reaction"}),\ \ \beta\,\kappa\,\partial_{xx}u\ (\text{"parameter"}).$$

Both draw smooth random periodic initial conditions from seeded keys and split them into
train/validation/test sets that share no initial condition. Reference for the set-up: K. Um et al.,
"Solver-in-the-loop", NeurIPS 2020 (coarse model vs. a finer reference, downsampled).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._rollout import rollout
from ..grid import Grid1D, Periodic
from ..models import Advection, Heat

__all__ = ["EXTRA_TERMS", "CorrectionDataset", "missing_physics_scenario", "random_periodic_fields", "resolution_scenario"]

EXTRA_TERMS = ("burgers", "reaction", "parameter")


class CorrectionDataset(eqx.Module):
    """Truth trajectories on the model's grid and time step, split by initial condition.

    - ``model``: the (uncorrected) stepper whose error is to be learned.
    - ``truth``: the stepper that made the data (for :func:`resolution_scenario`, the fine-grid
      stepper; its states live on the fine grid).
    - ``train``, ``validation``, ``test``: arrays ``(n_trajectories, n_steps + 1, *grid)``; entry
      ``[:, k]`` is the truth at time ``k * model.dt`` on the model's grid.
    - ``name``: a label for tables.
    """

    model: Heat | Advection
    truth: eqx.Module
    train: Float[Array, "n_train time *grid"]
    validation: Float[Array, "n_val time *grid"]
    test: Float[Array, "n_test time *grid"]
    name: str = eqx.field(static=True)

    @property
    def dt(self) -> float:
        return self.model.dt


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def random_periodic_fields(key, grid: Grid1D, n: int, *, n_modes: int = 4, amplitude: float = 1.0,
                           offset: float = 0.0) -> Float[Array, "n nx"]:
    r"""``n`` smooth random periodic fields $u(x) = c + A\sum_{k=1}^{K} (a_k\cos + b_k\sin)(2\pi k x/L)/k$, rescaled to RMS $A$.

    $a_k, b_k \sim \mathcal N(0, 1)$ from ``key`` (same key, same fields).
    """
    _check_count("random_periodic_fields: n", n)
    _check_count("random_periodic_fields: n_modes", n_modes)
    ka, kb = jax.random.split(key)
    a = jax.random.normal(ka, (n, n_modes))
    b = jax.random.normal(kb, (n, n_modes))
    k = jnp.arange(1, n_modes + 1)
    phase = 2 * jnp.pi * grid.x[None, :] * k[:, None] / grid.length
    u = (a[:, :, None] * jnp.cos(phase) + b[:, :, None] * jnp.sin(phase)) / k[None, :, None]
    u = u.sum(axis=1)
    u = u / jnp.sqrt(jnp.mean(u**2, axis=1, keepdims=True))
    return offset + amplitude * u


def downsample(u: Float[Array, "... nf"], factor: int) -> Float[Array, "... n"]:
    """Cell averages of ``factor`` consecutive fine cells (the fine grid's cells nest in the coarse ones)."""
    return u.reshape(*u.shape[:-1], u.shape[-1] // factor, factor).mean(axis=-1)


def _splits(name, key, sizes, draw, simulate):
    """Initial conditions of each split from its own key, simulated in one batch (one compilation)."""
    sizes = [_check_count(f"{name}: split sizes", n) for n in sizes]
    x0 = jnp.concatenate([draw(k, n) for k, n in zip(jax.random.split(key, 3), sizes)])
    trajectories = simulate(x0)
    return tuple(jnp.split(trajectories, np.cumsum(sizes)[:-1]))


def resolution_scenario(key, *, n: int = 32, factor: int = 4, n_steps: int = 64, n_train: int = 16,
                        n_val: int = 4, n_test: int = 8, velocity: float = 1.0, reconstruction: str = "upwind",
                        scheme: str = "ssprk3", n_modes: int = 4, amplitude: float = 1.0) -> CorrectionDataset:
    r"""Resolution error: 1D periodic advection on ``n`` cells vs. the same scheme on ``factor·n`` cells, averaged.

    $\partial_t u + c\,\partial_x u = 0$ on $[0, 1)$, both grids with the same reconstruction and
    time scheme and the same CFL number (the fine step is ``dt / factor``). Initial conditions are
    drawn on the fine grid (:func:`random_periodic_fields`), the model starts from their averages.

    **Arguments:** ``key`` (seeds the three splits), ``n`` (coarse cells), ``factor`` (>= 2),
    ``n_steps`` (coarse steps per trajectory), ``n_train``/``n_val``/``n_test`` (initial
    conditions per split), ``velocity`` c, ``reconstruction`` and ``scheme`` of
    :class:`~diffphys.Advection`, ``n_modes`` and ``amplitude`` of the initial conditions.

    **Returns:** a :class:`CorrectionDataset`.
    """
    factor = _check_count("resolution_scenario: factor", factor, minimum=2)
    n = _check_count("resolution_scenario: n", n, minimum=4)
    n_steps = _check_count("resolution_scenario: n_steps", n_steps)
    model = Advection(Grid1D(n), velocity, reconstruction=reconstruction, scheme=scheme)
    fine = Advection(Grid1D(n * factor), velocity, dt=model.dt / factor, reconstruction=reconstruction, scheme=scheme)

    draw = lambda k, count: random_periodic_fields(k, fine.grid, count, n_modes=n_modes, amplitude=amplitude)
    simulate = lambda x0: downsample(jax.vmap(lambda u: rollout(fine, u, n_steps * factor, save_every=factor))(x0), factor)
    train, val, test = _splits("resolution_scenario", key, (n_train, n_val, n_test), draw, simulate)
    return CorrectionDataset(model, fine, train, val, test, f"resolution x{factor}")


class TruthWithExtraTerm(eqx.Module):
    r"""A truth stepper: the model's right-hand side plus an extra term, $f(u) + g(u)$, with the model's scheme and dt.

    ``kind`` is one of :data:`EXTRA_TERMS`, ``strength`` is β (see the module docstring).
    """

    model: Heat
    strength: float
    kind: str = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in EXTRA_TERMS:
            raise ValueError(f"TruthWithExtraTerm: unknown kind {self.kind!r}; valid are {list(EXTRA_TERMS)}")
        grid = self.model.grid
        if self.kind == "burgers" and not (isinstance(grid, Grid1D) and isinstance(grid.bc[0][0], Periodic)):
            raise ValueError(
                "TruthWithExtraTerm: the 'burgers' term is implemented on periodic 1D grids only; "
                f"got {type(grid).__name__} with bc {grid.bc}"
            )

    @property
    def grid(self):
        return self.model.grid

    @property
    def dt(self):
        return self.model.dt

    def extra(self, u):
        if self.kind == "burgers":  # conservative central flux difference, periodic
            flux = 0.5 * u**2
            return -self.strength * (jnp.roll(flux, -1) - jnp.roll(flux, 1)) / (2 * self.model.grid.dx)
        if self.kind == "reaction":
            return self.strength * u * (1.0 - u**2)
        return self.strength * self.model.rhs(u)

    def rhs(self, u):
        return self.model.rhs(u) + self.extra(u)

    def step(self, u):
        return self.model.scheme.step(self, u, self.model.dt)

    def __call__(self, u):
        return self.step(u)


def missing_physics_scenario(key, *, kind: str = "burgers", strength: float = 1.0, n: int = 32,
                             kappa: float = 0.01, dt: float | None = 0.004, n_steps: int = 64,
                             n_train: int = 16, n_val: int = 4, n_test: int = 8, n_modes: int = 4,
                             amplitude: float = 0.5) -> CorrectionDataset:
    r"""Missing physics: the model is periodic 1D heat (RK4); the truth adds $g(u)$ (see the module docstring).

    **Arguments:** ``key``, ``kind`` (``"burgers"``, ``"reaction"`` or ``"parameter"``),
    ``strength`` β, ``n`` cells, ``kappa``, ``dt`` (checked against the heat model's stability
    limit; keep the truth's advective CFL number ``max|u| dt / dx`` well below 1), ``n_steps``, the
    split sizes, ``n_modes`` and ``amplitude`` of the initial conditions.

    **Returns:** a :class:`CorrectionDataset`.
    """
    if kind not in EXTRA_TERMS:
        raise ValueError(f"missing_physics_scenario: unknown kind {kind!r}; valid are {list(EXTRA_TERMS)}")
    n_steps = _check_count("missing_physics_scenario: n_steps", n_steps)
    model = Heat(Grid1D(_check_count("missing_physics_scenario: n", n, minimum=4)), kappa, dt=dt, scheme="rk4")
    truth = TruthWithExtraTerm(model, float(strength), kind)

    draw = lambda k, count: random_periodic_fields(k, model.grid, count, n_modes=n_modes, amplitude=amplitude)
    simulate = lambda x0: jax.vmap(lambda u: rollout(truth, u, n_steps, save_every=1))(x0)
    train, val, test = _splits("missing_physics_scenario", key, (n_train, n_val, n_test), draw, simulate)
    return CorrectionDataset(model, truth, train, val, test, f"missing physics ({kind})")
