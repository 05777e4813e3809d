"""Progress of an iterative solve, as an argument (no global state): nothing, printed lines, or a callback.

A progress object is called on the host, from inside the compiled loop, with the iteration number
and that iteration's records (``cost``, ``gradient_norm``, ...). It is part of the compiled
function's static configuration: equal progress objects reuse the compiled solve (two
:class:`PrintProgress` with the same settings are equal; a :class:`CallbackProgress` is equal to
another only with the same function object).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import equinox as eqx

__all__ = ["AbstractProgress", "CallbackProgress", "PrintProgress", "as_progress"]


class AbstractProgress(eqx.Module):
    """Receives ``(iteration, records)`` once per iteration (iteration 0 is the starting point)."""

    def __call__(self, iteration: int, records: dict[str, float]) -> None:
        raise NotImplementedError


class PrintProgress(AbstractProgress):
    r"""Print one line per iteration (every ``every``-th) to standard error, e.g.
    ``gauss_newton  it   3  cost 1.234e+02  gradient_norm 5.6e-03``.

    On a terminal the line is rewritten in place; otherwise (a log file, a pipe, a notebook's
    captured stream) each report is its own plain line, with no carriage returns.
    """

    label: str = "solve"
    every: int = 1

    def __call__(self, iteration, records):
        if iteration % self.every:
            return
        fields = "  ".join(f"{name} {value:.4e}" for name, value in records.items())
        stream = sys.stderr
        line = f"{self.label}  it {iteration:4d}  {fields}"
        if stream.isatty():
            print("\r" + line, end="", file=stream, flush=True)
        else:
            print(line, file=stream, flush=True)


class CallbackProgress(AbstractProgress):
    """Call ``fn(iteration, records)`` once per iteration."""

    fn: Callable[[int, dict[str, float]], None]

    def __call__(self, iteration, records):
        self.fn(iteration, records)


def as_progress(progress) -> AbstractProgress | None:
    """``None`` (silent), ``True``/``"lines"`` (:class:`PrintProgress`), a progress object, or a callable."""
    if progress is None or progress is False:
        return None
    if progress is True or progress == "lines":
        return PrintProgress()
    if isinstance(progress, AbstractProgress):
        return progress
    if callable(progress):
        return CallbackProgress(progress)
    raise TypeError(
        f"progress must be None, True, 'lines', a PrintProgress/CallbackProgress or a callable "
        f"fn(iteration, records); got {progress!r}"
    )
