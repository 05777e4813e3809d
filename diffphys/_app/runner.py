"""Run a case end to end: the one runner for single-window and cycled cases.

It builds the case's run (:class:`~diffphys._app.single.SingleWindowRun`, or
:class:`~diffphys._app.cycled.CycledRun` for a ``[cycling]`` case), solves it, writes
``analysis.nc`` and the plots, and writes ``summary.json`` last, with the fields every run shares
(case, model, backend, wall time, outputs) around the run's own. Every file goes through a temporary
name (:func:`diffphys.io.atomic_path`), so a folder with a ``summary.json`` holds a complete run. A
non-empty folder is refused unless ``overwrite=True`` (``diffphys run --overwrite``).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax

from .. import io
from .cycled import CYCLED_OUTPUTS, CycledRun
from .demo import DEMO_OUTPUTS
from .folder import prepare_output_folder
from .load import Case
from .single import SINGLE_OUTPUTS, SingleWindowRun

__all__ = ["CYCLED_OUTPUTS", "SINGLE_OUTPUTS", "run_case"]


def _compiling_line() -> str:
    """What the run does before its first result: compile (or read from JAX's persistent cache)."""
    folder = jax.config.jax_compilation_cache_dir
    if folder:
        return (f"  compiling the model and solver (the first run of a case compiles; later runs read the "
                f"compilation cache in {folder}) ...")
    return "  compiling the model and solver (the compilation cache is off: every run compiles) ..."


def _import_in_background(modules: tuple[str, ...]):
    """Import ``modules`` on a daemon thread while the run compiles and solves; returns the thread.

    Importing xarray (for the NetCDF outputs) or matplotlib takes about half a second each; the main
    thread spends longer than that without the GIL (XLA compiling, reading the compilation cache,
    running programs), so their import overlaps with that. Python's import locks make a later import in the main thread wait for this
    one to finish rather than run twice; a failed import here is raised again by the main thread's.
    """

    def load():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the main thread's own import reports it
                return

    thread = threading.Thread(target=load, name="diffphys-imports", daemon=True)
    thread.start()
    return thread


def run_case(case: Case, out: Path, *, progress: Callable[[str], None] | None = print,
             overwrite: bool = False) -> dict:
    """Solve ``case`` and write its outputs into ``out`` (:data:`SINGLE_OUTPUTS`, or :data:`CYCLED_OUTPUTS`
    for a ``[cycling]`` case); return the summary.

    ``progress`` receives one line per report (start, iterations or windows, end); ``None`` is silent.
    ``out`` must be empty or new; ``overwrite=True`` first removes a previous run's outputs from it
    (see :func:`~diffphys._app.folder.prepare_output_folder`).
    """
    say = progress or (lambda line: None)
    started = time.perf_counter()
    removed = prepare_output_folder(out, {*SINGLE_OUTPUTS, *CYCLED_OUTPUTS, *DEMO_OUTPUTS}, overwrite=overwrite)
    if removed:
        say(f"diffphys run: --overwrite: removed the previous outputs {', '.join(removed)} from {out}/")
    config = case.config
    plots = ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg") if config["output"]["plots"] else ()
    _import_in_background(("xarray", *plots))
    say(f"diffphys run: {case.name} — {case.description}")
    say(_compiling_line())
    run = (CycledRun if config["cycling"]["cycles"] is not None else SingleWindowRun)(case, say)
    say(run.describe())
    run.solve()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run.write_analysis(out / "analysis.nc")
    outputs = ["analysis.nc", "summary.json"]
    if config["output"]["plots"]:
        run.write_plots(out)
        outputs += ["analysis.png", "cost.png"]
    summary = {"case": case.name, "description": case.description, "model": config["model"]["kind"],
               **run.summary(), "backend": jax.default_backend(), "wall_time_s": time.perf_counter() - started,
               "outputs": outputs}
    io.write_json(out / "summary.json", summary)  # last: a folder with a summary.json holds a complete run
    for line in run.closing_lines(summary):
        say(line)
    say(f"  wrote {', '.join(outputs)} to {out}/ in {summary['wall_time_s']:.1f} s")
    return summary
