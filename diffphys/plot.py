"""Matplotlib figures for diffphys results (snapshots, gradients, Taylor tests, analyses, costs)."""

from __future__ import annotations

import numpy as np

from .check import TaylorResult
from .grid import Grid1D

__all__ = [
    "plot_analysis_1d",
    "plot_analysis_2d",
    "plot_cost",
    "plot_field_1d",
    "plot_observation_fit",
    "plot_snapshots_1d",
    "plot_taylor",
]


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


def _sensor_marks(ax, grid, sensors, *, color="k"):
    """Mark sensor positions: ticks along the bottom in 1D, dots in 2D."""
    if sensors is None or len(sensors) == 0:
        return
    pts = np.asarray(sensors).reshape(len(sensors), -1)
    if grid.ndim == 1:
        ax.plot(pts[:, 0], np.zeros(len(pts)), "^", color=color, ms=8, transform=ax.get_xaxis_transform(),
                clip_on=False, label="sensors")
    else:
        ax.plot(pts[:, 0], pts[:, 1], "o", mfc="none", mec=color, ms=5, label="sensors")


def plot_analysis_1d(ax, grid: Grid1D, *, analysis, background, truth=None, sensors=None, label: str = "u",
                     std=None):
    """Analysis against background and (when known) truth of a 1D field, with sensor positions marked.

    ``std``: the analysis's posterior standard deviation σ, drawn as a band analysis ± 2σ.
    """
    x = np.asarray(grid.x)
    if std is not None:
        a, band = np.asarray(analysis), 2.0 * np.asarray(std)
        ax.fill_between(x, a - band, a + band, color="tab:red", alpha=0.2, lw=0, label="analysis ± 2σ")
    if truth is not None:
        ax.plot(x, np.asarray(truth), "k", lw=2, label="truth")
    ax.plot(x, np.asarray(background), ":", color="tab:gray", lw=1.5, label="background")
    ax.plot(x, np.asarray(analysis), color="tab:red", lw=1.5, label="analysis")
    _sensor_marks(ax, grid, sensors)
    ax.set_xlabel("x")
    ax.set_ylabel(label)
    ax.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, frameon=False)  # above the data
    return ax


def plot_analysis_2d(axes, grid, *, analysis, background, truth=None, sensors=None, label: str = "u", cmap="viridis",
                     std=None):
    """Image panels (truth), background, analysis, analysis error and (``std``) the analysis's posterior
    standard deviation of a 2D field, with sensors as circles.

    ``axes`` holds one axis per panel: 4 with a truth, 2 without, and one more with ``std``.
    """
    panels = [("background", background), ("analysis", analysis)]
    if truth is not None:
        panels = [("truth", truth), *panels, ("analysis − truth", np.asarray(analysis) - np.asarray(truth))]
    lo = min(float(np.min(f)) for name, f in panels if "−" not in name)
    hi = max(float(np.max(f)) for name, f in panels if "−" not in name)
    if std is not None:
        panels.append(("posterior σ of the analysis", std))
    extent = (0.0, grid.lengths[0], 0.0, grid.lengths[1])
    for ax, (name, field) in zip(axes, panels):
        error, spread = "−" in name, "σ" in name
        scale = float(np.max(np.abs(field))) or 1.0
        limits = (-scale, scale) if error else (0.0, scale) if spread else (lo, hi)
        image = ax.imshow(np.asarray(field).T, origin="lower", extent=extent,
                          cmap="RdBu_r" if error else "magma" if spread else cmap, vmin=limits[0], vmax=limits[1])
        _sensor_marks(ax, grid, sensors, color="w" if not error else "k")
        ax.set_title(f"{name} {label}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return axes


def plot_observation_fit(ax, times, observed, background, analysis, *, max_sensors: int = 6, label: str = "reading"):
    """Observed values (dots) and the background (dotted) and analysis (lines) equivalents over time.

    ``observed``, ``background``, ``analysis``: arrays of shape ``(time, sensor)`` (NaN: no value).
    At most ``max_sensors`` sensors are drawn (the first ones); the title says so when there are more.
    The legend sits outside the axes, so it never covers data.
    """
    colours = [f"C{i}" for i in range(10)]
    total = np.shape(observed)[1]
    shown = min(total, max_sensors)
    for s in range(shown):
        c = colours[s % 10]
        ax.plot(times, np.asarray(observed)[:, s], "o", color=c, ms=3)
        ax.plot(times, np.asarray(background)[:, s], ":", color=c, lw=1)
        ax.plot(times, np.asarray(analysis)[:, s], "-", color=c, lw=1.2, label=f"sensor {s}")
    ax.set_xlabel("t")
    ax.set_ylabel(label)
    which = f"{shown} of {total} sensors" if shown < total else "the sensors"
    ax.set_title(f"observations (dots), background (dotted) and analysis (lines) at {which}", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return ax


def plot_cost(ax, costs, *, title: str = "4D-Var cost"):
    """The cost per iteration on a logarithmic axis.

    The tick labels are plain text ("100", "1e-05"): matplotlib's default for a log axis is mathtext,
    whose parser takes about 0.15 s to set up, a noticeable share of a short run's plotting.
    """
    from matplotlib.ticker import LogFormatter, MaxNLocator

    costs = np.asarray(costs)
    ax.semilogy(np.arange(len(costs)), costs, "o-", ms=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    ax.set_xlabel("iteration")
    ax.set_ylabel("J")
    ax.set_title(f"{title}: {costs[0]:.3g} → {costs[-1]:.3g}")
    ax.grid(True, which="both", alpha=0.3)
    return ax
