r"""Twin experiments: a known truth, the noisy sparse observations it produces, and a first guess."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._one_off import drawn
from .._rollout import check_finite_on_host, rollout
from .._types import PyTree
from .._validate import is_concrete
from ._covariance import AbstractCovariance, DiagonalR
from ._schedule import ObservationSchedule

__all__ = ["TwinExperiment", "twin_experiment"]


class TwinExperiment(eqx.Module):
    """The data of a twin experiment (see :func:`twin_experiment`).

    - ``truth``: the true initial state; ``truth_trajectory``: the true states at the schedule's
      steps (leading axis: observation time).
    - ``observations``: the noisy observations, stacked as the schedule orders them; NaN where a
      value is missing. ``clean_observations``: the same without noise or gaps.
    - ``R``: the observation-error covariance (:class:`DiagonalR`) the noise was drawn from.
    - ``background``: the first guess of the initial state (``None`` if none was asked for).
    """

    truth: PyTree
    truth_trajectory: PyTree
    observations: Float[Array, " N"]
    clean_observations: Float[Array, " N"]
    R: DiagonalR
    background: PyTree | None


def twin_experiment(
    model,
    truth: PyTree,
    schedule: ObservationSchedule,
    noise_sigma,
    key: jax.Array,
    *,
    background: PyTree | AbstractCovariance | None = None,
    missing_fraction: float = 0.0,
) -> TwinExperiment:
    r"""Simulate a truth, observe it with noise, and make a background, all from one PRNG key.

    $$u^{t}_k = M_{0\to s_k}(x^t_0),\qquad y = H(u^t) + R^{1/2}\xi,\quad \xi \sim \mathcal N(0, I),
      \qquad x_b = x^t_0 + B^{1/2}\eta\ \ (\text{if } B \text{ is given}).$$

    **Arguments:**

    - ``model``: the stepper with the *true* parameters (its ``dt`` must be the schedule's).
    - ``truth``: the true initial state (an array, or a tuple for the wave equation).
    - ``schedule``: an :class:`ObservationSchedule` (when and what is observed).
    - ``noise_sigma``: the observation-error standard deviation: a scalar, one per sensor or one per
      observation (see :meth:`ObservationSchedule.per_observation`); must be > 0.
    - ``key``: a ``jax.random`` key; the same key gives the same experiment.
    - ``background``: ``None`` (no background), a state (used as given) or a covariance ``B``: then
      the background is the truth plus a draw from ``N(0, B)`` (for a tuple state, only the
      observed field ``schedule.field`` is perturbed).
    - ``missing_fraction``: the probability, in ``[0, 1)``, that an observation is lost (NaN).

    **Returns:** a :class:`TwinExperiment`.
    """
    if not np.isclose(getattr(model, "dt", schedule.dt), schedule.dt, rtol=1e-12, atol=0.0):
        raise ValueError(
            f"twin_experiment: the model's dt={model.dt:g} differs from the schedule's dt={schedule.dt:g}; "
            "build the schedule with dt=model.dt"
        )
    if not (isinstance(missing_fraction, (int, float)) and 0.0 <= missing_fraction < 1.0):
        raise ValueError(f"twin_experiment: missing_fraction must be in [0, 1), got {missing_fraction!r}")
    R = DiagonalR(schedule.per_observation(noise_sigma, "twin_experiment: noise_sigma"))
    # Outside a trace the truth run is checked on the host, which keeps the compiled program free of
    # host callbacks (equinox's run-time errors), so JAX's persistent cache can store it.
    traced = not is_concrete((model, truth, key, background))
    perturbed = None
    if isinstance(background, AbstractCovariance):
        perturbed = truth[schedule.field] if isinstance(truth, tuple) else truth
    draws = drawn(_standard_draws, (schedule.size, float(missing_fraction),
                                    None if perturbed is None else jnp.shape(perturbed), jnp.result_type(float)), key)
    trajectory, clean, noisy, background = _simulate(model, truth, schedule, R, background, draws, traced)
    if not traced:
        check_finite_on_host(trajectory, schedule.steps, "twin_experiment: the truth run")
    return TwinExperiment(truth, trajectory, noisy, clean, R, background)


def _standard_draws(key, n_observations: int, missing_fraction: float, background_shape, dtype):
    """The experiment's random numbers, from one key split in three: standard normal noise per observation, the
    mask of lost readings (``None`` without losses), a standard normal field for the background (``None``
    without ``B``). Drawn by a one-off program (:func:`~diffphys._one_off.drawn`), apart from the truth run."""
    k_noise, k_missing, k_background = jax.random.split(key, 3)
    noise = jax.random.normal(k_noise, (n_observations,), dtype)
    lost = jax.random.bernoulli(k_missing, missing_fraction, (n_observations,)) if missing_fraction > 0.0 else None
    field = None if background_shape is None else jax.random.normal(k_background, background_shape, dtype)
    return noise, lost, field


@eqx.filter_jit
def _simulate(model, truth, schedule, R, background, draws, check_finite: bool):
    """The experiment's arithmetic, one compiled program: truth run, observation, noise R^½ξ, gaps, background
    x_t + B^½η, from the standard draws (ξ, lost, η)."""
    noise, lost, field = draws
    trajectory = rollout(model, truth, schedule.n_steps, save_at=schedule.steps, check_finite=check_finite)
    clean = schedule.observe(trajectory)
    noisy = clean + R.sqrt(noise)
    if lost is not None:
        noisy = jnp.where(lost, jnp.nan, noisy)
    if isinstance(background, AbstractCovariance):
        if isinstance(truth, tuple):
            perturbed = truth[schedule.field] + background.sqrt(field)
            background = tuple(perturbed if i == schedule.field else f for i, f in enumerate(truth))
        else:
            background = truth + background.sqrt(field)
    return trajectory, clean, noisy, background
