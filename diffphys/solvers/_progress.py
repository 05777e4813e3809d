"""Progress of an iterative solve: nothing, printed lines, or a callback.

A progress object is called on the host, from inside the compiled loop, with the iteration number
and that iteration's records (``cost``, ``gradient_norm``, ...). It is **not** part of the compiled
function: :func:`register` files it in a host-side table under a number, and the loop carries only
that number (a traced integer) to :func:`report`. So every progress object, a fresh ``lambda`` each
call included, reuses one compiled solve; only "no progress" and "some progress" compile apart.

The table keeps the last :data:`TABLE_SIZE` objects (equal objects share one entry), so a solve
compiled inside a user's own ``jax.jit`` keeps reporting on later calls. A report whose entry has
been dropped is skipped.
"""

from __future__ import annotations

import itertools
import sys
from collections import OrderedDict
from collections.abc import Callable

import equinox as eqx
import jax

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


TABLE_SIZE = 1024
_table: OrderedDict[int, AbstractProgress] = OrderedDict()
_numbers = itertools.count()


def register(progress: AbstractProgress | None) -> int | None:
    """File ``progress`` in the host-side table; its number (``None`` for no progress)."""
    if progress is None:
        return None
    for number, known in _table.items():
        if known is progress or (type(known) is type(progress) and eqx.tree_equal(known, progress) is True):
            _table.move_to_end(number)
            return number
    number = next(_numbers)
    _table[number] = progress
    while len(_table) > TABLE_SIZE:
        _table.popitem(last=False)
    return number


def _dispatch(number, iteration, records):
    progress = _table.get(int(number))
    if progress is not None:
        progress(int(iteration), {name: float(value) for name, value in records.items()})


def report(number, iteration, records) -> None:
    """Inside a compiled loop: send ``(iteration, records)`` to progress object ``number`` (none if ``None``)."""
    if number is not None:
        jax.debug.callback(_dispatch, number, iteration, records)
