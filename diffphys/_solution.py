"""One result type for every iterative computation: :class:`Solution` and the :class:`RESULTS` enumeration.

Solvers (:func:`~diffphys.solvers.iterate`), and the assimilation wrappers and runners built on
them, return a :class:`Solution`. A result other than ``RESULTS.successful`` raises at run time
when ``throw=True`` (the default), with the message of its enumeration item, which says what
happened and what to change; with ``throw=False`` the caller inspects ``solution.result``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._misc import all_finite

__all__ = ["RESULTS", "RESULT_NAMES", "Solution", "nonfinite_to_result", "result_name", "throw_if_failed"]


class RESULTS(eqx.Enumeration):
    """How an iterative solve ended. Compare with ``==`` (``solution.result == RESULTS.successful``)."""

    successful = ""
    max_steps_reached = (
        "the iteration budget (max_steps) was spent before the tolerance was met; raise max_steps, loosen "
        "rtol/atol, or pass throw=False to keep the last iterate"
    )
    nonfinite = (
        "the iterate or the objective became non-finite (NaN or inf); check the data, the starting point, "
        "the step lengths, and that the model is stable (dt) for these controls"
    )
    no_decrease = (
        "the objective stopped decreasing (the solve stalled; with throw=False the best iterate is "
        "returned): either the iterate is already optimal to round-off (loosen the tolerance), or the steps "
        "do not descend (an inexact inner solve: tighten it; too long a step: shorten it)"
    )
    linear_solve_failed = (
        "an inner linear solve did not converge; raise its max_steps, loosen its rtol, or precondition it"
    )
    unstable_model = (
        "the solution's model violates its explicit time scheme's stability limit at this dt, so the model "
        "that fits the data is not the one that was simulated; use a smaller dt (dp.stable_time_step with a "
        "bound on the parameter), an implicit scheme, or a prior that bounds the parameter"
    )


class Solution(eqx.Module):
    """The outcome of an iterative solve.

    - ``value``: the solution (a pytree like the starting point), with the derivatives the chosen
      adjoint gives it.
    - ``result``: a :class:`RESULTS` item.
    - ``stats``: ``num_steps`` (iterations done) and ``history``: per-iteration records (e.g.
      ``cost``, ``gradient_norm``) at the start and after each iteration; in converged mode the
      arrays have length ``max_steps + 1`` and hold NaN after the last iteration
      (:meth:`history` trims them).
    - ``state``: the solver's final state (solver-specific).
    """

    value: Any
    result: RESULTS
    stats: dict[str, Any]
    state: Any

    @property
    def converged(self) -> jax.Array:
        """Whether the solve ended successfully (a boolean array)."""
        return self.result == RESULTS.successful

    @property
    def num_steps(self) -> int:
        return int(self.stats["num_steps"])

    @property
    def message(self) -> str:
        """What the result means (empty when successful)."""
        return RESULTS[self.result]

    @property
    def outcome(self) -> str:
        """The result's name: ``"successful"``, ``"max_steps_reached"``, ``"nonfinite"``, ..."""
        return result_name(self.result)

    def history(self) -> dict[str, np.ndarray]:
        """The per-iteration records as NumPy arrays, trimmed to the ``num_steps + 1`` points visited."""
        k = self.num_steps
        return {name: np.asarray(values)[: k + 1] for name, values in self.stats["history"].items()}


RESULT_NAMES = ("successful", "max_steps_reached", "nonfinite", "no_decrease", "linear_solve_failed", "unstable_model")
"""The names of the :class:`RESULTS` items, as written into summaries."""


_NAME_OF_MESSAGE = {RESULTS[getattr(RESULTS, name)]: name for name in RESULT_NAMES}
assert len(_NAME_OF_MESSAGE) == len(RESULT_NAMES), "RESULTS messages must be distinct"


def result_name(result: RESULTS) -> str:
    """The name of a concrete :class:`RESULTS` item (e.g. ``"max_steps_reached"``).

    Looked up on the host through the item's message (``result == RESULTS.x`` on a concrete item
    would compile a program per comparison).
    """
    if not isinstance(result, RESULTS.successful.__class__) or RESULTS[result] not in _NAME_OF_MESSAGE:
        raise ValueError(f"result_name: {result!r} is not a concrete RESULTS item")
    return _NAME_OF_MESSAGE[RESULTS[result]]


def nonfinite_to_result(value, result: RESULTS) -> RESULTS:
    """``RESULTS.nonfinite`` if ``value`` has a NaN or inf, else ``result``."""
    return RESULTS.where(all_finite(value), result, RESULTS.nonfinite)


def throw_if_failed(value, result: RESULTS):
    """Return ``value``, raising at run time with the result's message if ``result`` is not successful."""
    return result.error_if(value, result != RESULTS.successful)

