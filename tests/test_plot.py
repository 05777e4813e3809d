"""Figures: every panel labelled, partial sensor sets said, integer iteration ticks, legends off the data."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import diffphys as dp  # noqa: E402


def test_observation_fit_says_how_many_sensors_it_draws_and_keeps_its_legend_outside():
    times = np.linspace(0.1, 1.0, 5)
    readings = np.arange(40.0).reshape(5, 8)
    fig, ax = plt.subplots()
    dp.plot.plot_observation_fit(ax, times, readings, readings, readings, max_sensors=6)
    assert "6 of 8 sensors" in ax.get_title() and ax.get_ylabel() == "reading"
    assert len(ax.get_legend().get_texts()) == 6
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # right of the axes: covers no data
    fig2, ax2 = plt.subplots()
    dp.plot.plot_observation_fit(ax2, times, readings[:, :3], readings[:, :3], readings[:, :3])
    assert "of" not in ax2.get_title().split("at")[-1]  # all 3 drawn: nothing to say
    plt.close("all")


def test_cost_has_integer_iteration_ticks_and_labels():
    fig, ax = plt.subplots()
    dp.plot.plot_cost(ax, [100.0, 10.0, 5.0])
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "J"
    plt.close("all")


def test_analysis_1d_draws_the_posterior_band_and_keeps_the_legend_above_the_data():
    grid = dp.Grid1D(16, 1.0)
    x = np.asarray(grid.x)
    fig, ax = plt.subplots()
    dp.plot.plot_analysis_1d(ax, grid, analysis=np.sin(x), background=0 * x, truth=np.cos(x),
                             sensors=np.array([[0.2], [0.6]]), std=0.1 + 0 * x)
    band = [c for c in ax.collections if c.get_label() == "analysis ± 2σ"]
    assert len(band) == 1
    vertices = band[0].get_paths()[0].vertices
    np.testing.assert_allclose(vertices[:, 1].max(), (np.sin(x) + 0.2).max())
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1 - 1  # above the axes
    assert ax.get_ylabel() == "u"
    plt.close("all")


def test_analysis_2d_adds_a_sigma_panel():
    grid = dp.Grid2D(6, 5, (1.0, 1.0))
    field = np.ones(grid.shape)
    fig, axes = plt.subplots(1, 5)
    dp.plot.plot_analysis_2d(axes, grid, analysis=field, background=field, truth=2 * field, std=0.1 * field)
    titles = [a.get_title() for a in axes]
    assert titles[-1].startswith("posterior σ") and all(a.get_ylabel() == "y" for a in axes)
    plt.close("all")
