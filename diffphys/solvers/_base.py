r"""The abstract iterative solver: what :func:`~diffphys.solvers.iterate` needs from every method.

A solver is a configuration (an ``equinox.Module`` of settings) with pure methods on an explicit
state. The same :meth:`~AbstractIterativeSolver.step` drives the converged while loop and the
unrolled layers; :meth:`~AbstractIterativeSolver.optimality_residual` (zero exactly at a
solution: a gradient, a KKT or fixed-point residual) gives the implicit-function-theorem
derivative of a converged solution and serves as an unsupervised training loss.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax

from .._solution import RESULTS
from ._mode import Converged
from ._problem import AbstractProblem

__all__ = ["AbstractIterativeSolver"]


class AbstractIterativeSolver(eqx.Module):
    """An iterative method: ``init`` / ``step`` / ``terminate`` on an explicit state, plus its optimality condition.

    Class attributes: ``name`` (for progress lines and errors) and ``symmetric_optimality`` (the
    Jacobian of :meth:`optimality_residual` in ``x`` is symmetric positive definite at a solution,
    so the implicit derivative's solve can use CG).
    """

    name: ClassVar[str] = "solver"
    symmetric_optimality: ClassVar[bool] = False

    @abc.abstractmethod
    def default_params(self, x0) -> Any:
        """One iteration's learnable parameters (step lengths, damping, thresholds): a pytree of arrays."""

    @abc.abstractmethod
    def init(self, problem: AbstractProblem, x0, params) -> Any:
        """The state at the starting point ``x0`` (with its records: cost, gradient, ...)."""

    @abc.abstractmethod
    def step(self, problem: AbstractProblem, state, params) -> Any:
        """One iteration with the parameters ``params`` (in unrolled mode, layer k's)."""

    @abc.abstractmethod
    def terminate(self, problem: AbstractProblem, state, mode: Converged) -> tuple[jax.Array, RESULTS]:
        """``(done, result)``: whether to stop after this state, and why (``result`` is read only when done)."""

    @abc.abstractmethod
    def value(self, state) -> Any:
        """The current iterate (a pytree like the starting point)."""

    def implicit_point(self, state, result: RESULTS) -> Any:
        """Where a converged run stopped with ``result``: the variables of :meth:`optimality_residual`.

        Default :meth:`value` (the iterate $x$). A solver that keeps its best iterate returns that
        one when it stalled; a splitting method returns $x$ with its dual variables, since its
        optimality condition needs them.
        """
        return self.value(state)

    def point_value(self, point) -> Any:
        """The solution $x$ within an :meth:`implicit_point` (default: the point itself)."""
        return point

    @abc.abstractmethod
    def records(self, state) -> dict[str, jax.Array]:
        """Scalars recorded once per iteration at :meth:`value` (e.g. ``cost``, ``gradient_norm``)."""

    @abc.abstractmethod
    def optimality_residual(self, problem: AbstractProblem, x, params) -> Any:
        """A pytree shaped like ``x`` (an :meth:`implicit_point`) that is zero exactly at a solution.

        A gradient, a KKT or a fixed-point residual; its Jacobian in ``x`` must be invertible there.
        """

    def for_mode(self, mode) -> "AbstractIterativeSolver":
        """This solver as it runs in ``mode`` (default: unchanged).

        A solver whose best default depends on the mode fills it in here; e.g. ADMM's inner
        tolerance can be loose when converged (only the fixed point matters to the implicit
        derivative) but not when unrolled (each layer is differentiated as an exact solve).
        """
        return self

    def check_problem(self, problem: AbstractProblem, x0) -> None:
        """Raise ``TypeError``/``ValueError`` when this solver cannot run ``problem`` (default: accept any).

        :func:`~diffphys.solvers.iterate` calls it before compiling, so checks that read array values
        (e.g. a matrix's normalisation) can name the offending value; under an outer transformation
        the arrays may be tracers, and such value checks are skipped.
        """

    @property
    def deferred_init(self) -> bool:
        """Whether :meth:`init` leaves the starting point unevaluated, for the first :meth:`step` to evaluate.

        A solver whose step evaluates the model at one place can evaluate $x_0$ there too, so the
        model is compiled once rather than once in ``init`` and once in ``step``. The converged
        driver then runs one extra trip first and records its state as iteration 0. Default
        ``False``; unrolled layers always get an evaluated starting state.
        """
        return False

    @property
    def unrollable(self) -> bool:
        """Whether :meth:`step` is reverse-mode differentiable (no data-dependent loops), as unrolled mode needs."""
        return True

    def not_unrollable_reason(self) -> str:
        return f"{type(self).__name__}'s step contains a data-dependent loop"
