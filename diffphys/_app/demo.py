"""The built-in demo (``diffphys demo``): simulate 1D heat, differentiate a misfit, verify the gradient, plot and save."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import check, io
from .._rollout import rollout
from ..adjoint import Checkpointed
from ..grid import Dirichlet, Grid1D, Neumann
from ..models import Heat

__all__ = ["DEMO_OUTPUTS", "run_demo", "true_diffusivity"]

DEMO_OUTPUTS = ("demo.png", "trajectory.nc", "summary.json")


def true_diffusivity(x):
    """The hidden diffusivity field of the demo: a smooth bump on a background."""
    return 0.02 + 0.03 * jnp.exp(-((x - 0.6) ** 2) / 0.02)


def run_demo(out: Path, n_cells: int = 128, n_steps: int = 2000, n_saves: int = 5, *, overwrite: bool = False,
             say=None) -> dict:
    """Run the demo and write ``demo.png``, ``trajectory.nc`` and ``summary.json`` (last) into ``out``.

    ``out`` must be empty or new; ``overwrite=True`` first removes a previous demo's or run's outputs
    from it (``say`` receives a line naming them).

    1. Simulate heat ``u_t = (κ(x) u_x)_x`` from a Gaussian bump with a hot left end (Dirichlet 1)
       and an insulated right end (zero-flux Neumann), with the true κ(x).
    2. Define the misfit ``J(κ) = ½ Σ (u_T(κ) - u_T(κ_true))² dx`` for a constant first-guess κ and
       differentiate it with respect to the whole field κ(x) by reverse mode through the rollout.
    3. Verify the gradient with the Taylor test (rate 2) and the step's adjoint with the dot-product test.
    """
    from .cycled import CYCLED_OUTPUTS
    from .folder import prepare_output_folder
    from .single import SINGLE_OUTPUTS

    removed = prepare_output_folder(out, {*DEMO_OUTPUTS, *SINGLE_OUTPUTS, *CYCLED_OUTPUTS}, overwrite=overwrite)
    if removed and say is not None:
        say(f"diffphys demo: --overwrite: removed the previous outputs {', '.join(removed)} from {out}/")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    grid = Grid1D(n_cells, 1.0, bc=(Dirichlet(1.0), Neumann(0.0)))
    u0 = jnp.exp(-((grid.x - 0.3) ** 2) / 0.005)
    truth = Heat(grid, true_diffusivity(grid.x), scheme="rk4")
    dt = truth.dt
    if n_steps % (n_saves - 1):
        n_steps += (n_saves - 1) - n_steps % (n_saves - 1)
    trajectory = rollout(truth, u0, n_steps, save_every=n_steps // (n_saves - 1))
    times = np.arange(n_saves) * (n_steps // (n_saves - 1)) * dt

    observed = trajectory[-1]

    def misfit(kappa):
        model = Heat(grid, kappa, dt=dt, scheme="rk4")
        final = rollout(model, u0, n_steps, adjoint=Checkpointed(every=int(np.sqrt(n_steps))))[-1]
        return 0.5 * jnp.sum((final - observed) ** 2) * grid.dx

    first_guess = jnp.full(grid.shape, 0.03)
    value, gradient = jax.jit(jax.value_and_grad(misfit))(first_guess)
    taylor = check.taylor_test(misfit, first_guess, eps0=1e-2, n=5)
    adjoint = check.dot_product_test(truth.step, u0)
    elapsed = time.perf_counter() - started

    _save_trajectory(out / "trajectory.nc", grid, trajectory, times, truth)
    _save_figure(out / "demo.png", grid, trajectory, times, truth, first_guess, gradient, taylor)
    summary = {
        "model": "Heat 1D, Dirichlet(1) left, zero-flux right, RK4",
        "n_cells": n_cells,
        "n_steps": n_steps,
        "dt": dt,
        "t_final": float(times[-1]),
        "misfit_at_first_guess": float(value),
        "gradient_norm": float(jnp.linalg.norm(gradient)),
        "taylor_rates": [float(r) for r in taylor.rates],
        "taylor_rate": taylor.rate,
        "dot_product_relative_error": adjoint.relative_error,
        "backend": jax.default_backend(),
        "wall_time_s": elapsed,
        "outputs": list(DEMO_OUTPUTS),
    }
    io.write_json(out / "summary.json", summary)  # last: a folder with a summary.json holds a complete run
    return summary


def _save_trajectory(path: Path, grid: Grid1D, trajectory, times, model: Heat) -> None:
    import xarray as xr

    ds = xr.Dataset(
        {
            "u": (("time", "x"), np.asarray(trajectory), {"long_name": "temperature", "units": "1"}),
            "kappa": (("x",), np.asarray(model.kappa), {"long_name": "diffusivity", "units": "m2 s-1"}),
        },
        coords={
            "time": ("time", np.asarray(times), {"long_name": "time", "units": "s"}),
            "x": ("x", np.asarray(grid.x), {"long_name": "cell-centre position", "units": "m"}),
        },
        attrs={"title": "diffphys demo: 1D heat equation", "Conventions": "CF-1.8"},
    )
    io.write_netcdf(ds, path)


def _save_figure(path, grid, trajectory, times, truth, first_guess, gradient, taylor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plot import plot_field_1d, plot_snapshots_1d, plot_taylor

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    plot_snapshots_1d(axes[0], grid, trajectory, times)
    axes[0].set_title("Heat equation, κ(x) varying")
    axes[1].plot(np.asarray(grid.x), np.asarray(truth.kappa), "k", label="true κ(x)")
    axes[1].plot(np.asarray(grid.x), np.asarray(first_guess), "k:", label="first guess")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel("κ")
    twin = axes[1].twinx()
    plot_field_1d(twin, grid, gradient, label="∂J/∂κ", color="tab:red")
    axes[1].set_title("Diffusivity and the misfit gradient ∂J/∂κ (red)")
    axes[1].legend(loc="upper left", fontsize="small")
    plot_taylor(axes[2], taylor)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
