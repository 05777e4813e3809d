"""Matplotlib figures for diffphys results (snapshots of a field, gradients, Taylor tests)."""

from __future__ import annotations

import numpy as np

from .check import TaylorResult
from .grid import Grid1D

__all__ = ["plot_snapshots_1d", "plot_field_1d", "plot_taylor"]


def plot_snapshots_1d(ax, grid: Grid1D, states, times, *, label: str = "u", cmap: str = "viridis"):
    """Plot saved 1D states (leading axis: time) as curves coloured by time."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap(cmap)(np.linspace(0.0, 1.0, len(times)))
    for state, t, colour in zip(np.asarray(states), times, colours):
        ax.plot(np.asarray(grid.x), state, color=colour, label=f"t = {t:.3g}")
    ax.set_xlabel("x")
    ax.set_ylabel(label)
    ax.legend(fontsize="small")
    return ax


def plot_field_1d(ax, grid: Grid1D, field, *, label: str, **kwargs):
    """Plot one 1D field against the cell centres."""
    ax.plot(np.asarray(grid.x), np.asarray(field), **kwargs)
    ax.set_xlabel("x")
    ax.set_ylabel(label)
    return ax


def plot_taylor(ax, result: TaylorResult, *, title: str = "Taylor test"):
    """Log-log plot of the first- and second-order Taylor residuals against ε, with slopes 1 and 2."""
    eps = result.epsilons
    ax.loglog(eps, result.first_order_residuals, "o-", label="|J(m+εh) − J(m)|  (slope 1)")
    ax.loglog(eps, result.residuals, "s-", label="|J(m+εh) − J(m) − ε∇J·h|  (slope 2)")
    reference = result.residuals[0] * (eps / eps[0]) ** 2
    ax.loglog(eps, reference, "k--", lw=0.8, label="ε²")
    ax.set_xlabel("ε")
    ax.set_title(f"{title}: observed rate {result.rate:.2f}")
    ax.legend(fontsize="small")
    return ax
