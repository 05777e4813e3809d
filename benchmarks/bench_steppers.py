"""Throughput and gradient cost of diffphys' Heat and Advection steppers against references.

What is measured, for each configuration (model, grid, number of steps):

* **forward throughput** in cell-steps per second: ``prod(grid.shape) * n_steps / time(forward)``,
  where the forward pass is ``diffphys.rollout(model, u0, n_steps)`` (final state only);
* **gradient / forward**: the time of ``jax.grad`` of ``loss(u0) = sum(u_final**2)`` with respect to
  the initial state, divided by the time of the forward pass.

Absolute times drift on a shared machine, so every figure is reported next to references measured
in the same run (see ``/work/shared/DESIGN.md``, "Performance practice"):

* **fused**: the same numerics written by hand -- ``jnp.roll`` stencils in one ``lax.fori_loop``,
  face coefficients computed once before the loop, jitted. It is the yardstick of what the hardware
  and XLA make of this stencil written plainly; diffphys should reach a large fraction of it. It is
  not a strict upper bound: XLA fuses different formulations of the same arithmetic differently.
* **numpy**: the same numerics (the very same stencil function, called with ``numpy`` instead of
  ``jax.numpy``) in a Python loop. It is timed over fewer steps and scaled to ``n_steps``.
* **exponax**: ``exponax.stepper.Diffusion`` / ``exponax.stepper.Advection`` (if importable). These
  are spectral ETDRK steppers (periodic, constant coefficients only; for linear problems order 0,
  i.e. the exact exponential, one rFFT/irFFT pair per step). They solve a *related* problem (the
  heat rows use the constant diffusivity mean(kappa) instead of the spatially varying field) with
  different numerics, so they are a peer-library timing only, not checked for agreement.

The diffphys configurations that the references can reproduce are Heat (periodic, kappa = 0.5 +
0.25 sin, forward Euler at 0.9 of ``model.max_stable_dt``) and Advection (periodic, constant
velocity, first-order upwind, forward Euler at CFL 0.9). Before timing, the script checks once at
a small size that diffphys, the fused loop and the NumPy loop agree (states and, for the fused
loop, gradients). Rows for the production defaults (Heat ``rk4``; Advection ``weno5`` + ``ssprk3``)
are diffphys only.

Timing method: each jitted function is lowered and compiled once (compile time and XLA's memory
analysis are recorded), called once to warm up, then the implementations of one configuration are
timed round-robin (so slow drifts of the machine affect them alike) with ``block_until_ready``; the
median over the repeats is reported. Ratios are throughput ratios ``diffphys / reference`` (> 1:
diffphys is faster); for gradients also ``time(fused gradient) / time(diffphys gradient)``, since
grad/forward alone rises when the forward pass gets faster. Gradients store every step's residuals (no checkpointing), except where XLA's
memory analysis says that would take more than half the free memory (WENO5 on the large grids on a
small machine): those are timed with ``rollout(..., adjoint=Checkpointed(every=~sqrt(n_steps)))`` and marked.

Usage::

    python benchmarks/bench_steppers.py            # float32, full sizes (a few minutes on 2 CPU cores)
    python benchmarks/bench_steppers.py --x64      # float64
    python benchmarks/bench_steppers.py --quick    # tiny sizes, seconds (used by the smoke test)

Results go to ``benchmarks/results/bench_steppers_<backend>.json`` (``..._float64.json`` with
``--x64``) unless ``--out`` is given. Nothing here assumes a CPU: on a GPU the same script times
the GPU (NumPy stays on the host). The exit status is 1 if the agreement check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import diffphys
from diffphys.adjoint import Checkpointed, Direct
from diffphys.io import write_json

try:
    import exponax
except ImportError as err:  # optional peer library; the benchmark runs without it
    exponax = None
    _EXPONAX_IMPORT_ERROR = f"{type(err).__name__}: {err}"
else:
    _EXPONAX_IMPORT_ERROR = None


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------

FULL_SIZES = [((256,), 10_000), ((4096,), 1_000), ((128, 128), 1_000), ((512, 512), 100)]
QUICK_SIZES = [((64,), 40), ((16, 16), 10)]
AGREEMENT_SIZES = [((64,), 20), ((16, 16), 20)]


@dataclasses.dataclass(frozen=True)
class Case:
    model: str  # "heat" or "advection"
    scheme: str  # diffphys time scheme
    reconstruction: str | None  # advection only
    shape: tuple[int, ...]
    n_steps: int
    with_references: bool  # fused/NumPy/Exponax only exist for the Euler + 2nd-order/upwind numerics

    @property
    def label(self) -> str:
        space = f"{self.reconstruction}+" if self.reconstruction else ""
        return f"{self.model}/{space}{self.scheme}"

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)


def cases(sizes) -> list[Case]:
    out = []
    for with_refs, heat_scheme, adv_recon, adv_scheme in [(True, "euler", "upwind", "euler"),
                                                        (False, "rk4", "weno5", "ssprk3")]:
        out += [Case("heat", heat_scheme, None, s, n, with_refs) for s, n in sizes]
        out += [Case("advection", adv_scheme, adv_recon, s, n, with_refs) for s, n in sizes]
    return out


def make_grid(shape):
    return diffphys.Grid1D(shape[0]) if len(shape) == 1 else diffphys.Grid2D(*shape)


def kappa_field(grid):
    """A smooth, spatially varying diffusivity in [0.25, 0.75] on the unit domain."""
    if grid.ndim == 1:
        return 0.5 + 0.25 * jnp.sin(2 * jnp.pi * grid.x)
    x, y = grid.coordinates
    return 0.5 + 0.25 * jnp.sin(2 * jnp.pi * x) * jnp.cos(2 * jnp.pi * y)


def velocity_value(ndim: int):
    return 1.0 if ndim == 1 else (1.0, 0.5)


def initial_state(grid):
    """A smooth bump plus a sine, so neither heat nor advection leaves the state trivial."""
    coords = grid.coordinates
    r2 = sum((c - 0.5) ** 2 for c in coords)
    return jnp.exp(-50.0 * r2) + 0.1 * jnp.sin(2 * jnp.pi * coords[0])


def make_model(case: Case, grid):
    """The diffphys model of a case; ``dt=None`` is 0.9 of ``model.max_stable_dt`` (CFL 0.9)."""
    if case.model == "heat":
        return diffphys.Heat(grid, kappa_field(grid), scheme=case.scheme)
    return diffphys.Advection(grid, velocity_value(grid.ndim), reconstruction=case.reconstruction,
                              scheme=case.scheme)


def model_field(model):
    """The coefficient field the references need: kappa (heat) or velocity (advection)."""
    return model.kappa if isinstance(model, diffphys.Heat) else model.velocity


# --------------------------------------------------------------------------------------------
# The hand-written reference numerics, shared by the fused JAX loop and the NumPy loop
# --------------------------------------------------------------------------------------------

def face_coefficients(xp, kind: str, field):
    """Per axis, the coefficient on the face ``i+1/2`` (between cells ``i`` and ``i+1``).

    Face values are the mean of the two neighbouring cells, as in diffphys. Heat: ``kappa_face``.
    Advection (``field`` has a leading component axis): the positive and negative parts of the
    face velocity, for the upwind flux. Computed once, outside the time loop.
    """
    if kind == "heat":
        return [0.5 * (field + xp.roll(field, -1, axis)) for axis in range(field.ndim)]
    out = []
    for axis in range(field.ndim - 1):
        v_face = 0.5 * (field[axis] + xp.roll(field[axis], -1, axis))
        out.append((xp.maximum(v_face, 0.0), xp.minimum(v_face, 0.0)))
    return out


def euler_step(xp, kind: str, u, coeffs, spacing, dt: float):
    """One forward-Euler step of the conservative finite-volume scheme on a periodic grid.

    Heat: ``F_{i+1/2} = kappa_{i+1/2} (u_{i+1} - u_i) / h``, ``u += dt * sum_axes (F_{i+1/2} - F_{i-1/2}) / h``.
    Advection: ``F_{i+1/2} = v+ u_i + v- u_{i+1}``, ``u -= dt * sum_axes (F_{i+1/2} - F_{i-1/2}) / h``.
    ``xp`` is ``numpy`` or ``jax.numpy``.
    """
    div = None
    for axis, h in enumerate(spacing):
        if kind == "heat":
            flux = coeffs[axis] * (xp.roll(u, -1, axis) - u) / h
        else:
            v_plus, v_minus = coeffs[axis]
            flux = v_plus * u + v_minus * xp.roll(u, -1, axis)
        term = (flux - xp.roll(flux, 1, axis)) / h
        div = term if div is None else div + term
    return u + dt * div if kind == "heat" else u - dt * div


def fused_rollout(kind: str, spacing, dt: float, n_steps: int):
    """The fused JAX reference: ``(field, u0) -> u_final`` (jit it)."""

    def run(field, u0):
        coeffs = face_coefficients(jnp, kind, field)
        # Static trip count: fori_loop lowers to a scan, so reverse mode works.
        return lax.fori_loop(0, n_steps, lambda _, u: euler_step(jnp, kind, u, coeffs, spacing, dt), u0)

    return run


def numpy_rollout(kind: str, field, u0, spacing, dt: float, n_steps: int):
    coeffs = face_coefficients(np, kind, field)
    u = u0
    for _ in range(n_steps):
        u = euler_step(np, kind, u, coeffs, spacing, dt)
    return u


# --------------------------------------------------------------------------------------------
# The functions timed: forward and gradient of each implementation
# --------------------------------------------------------------------------------------------

def diffphys_forward(n_steps, block=None):
    adjoint = Direct() if block is None else Checkpointed(every=block)
    return lambda model, u0: diffphys.rollout(model, u0, n_steps, adjoint=adjoint, check_finite=True)[-1]


def fused_forward(case: Case, model):
    return fused_rollout(case.model, model.grid.spacing, model.dt, case.n_steps)


def exponax_stepper(case: Case, model):
    """The Exponax stepper solving the constant-coefficient version of the case (or None)."""
    ndim = len(case.shape)
    if exponax is None or len(set(case.shape)) != 1:  # Exponax grids are hypercubes
        return None
    if case.model == "heat":
        return exponax.stepper.Diffusion(ndim, 1.0, case.shape[0], model.dt,
                                         diffusivity=float(jnp.mean(model.kappa)))
    velocity = velocity_value(ndim)
    velocity = velocity if ndim == 1 else jnp.asarray(velocity)
    return exponax.stepper.Advection(ndim, 1.0, case.shape[0], model.dt, velocity=velocity)


def exponax_forward(n_steps):
    # Exponax states carry a leading channel axis; exponax.repeat scans and keeps the final state.
    return lambda stepper, u0: exponax.repeat(stepper, n_steps)(u0[None])[0]


def gradient_of(forward):
    """``jax.grad`` of ``sum(forward(params, u0)**2)`` with respect to ``u0``."""
    return jax.grad(lambda u0, params: jnp.sum(forward(params, u0) ** 2))


class Compiled:
    """A function compiled once for fixed arguments; calling it runs the compiled executable.

    Array leaves of the arguments (including those inside Equinox modules) are the traced inputs,
    everything else is static -- like ``eqx.filter_jit``, but keeping JAX's ``Compiled`` object for
    its compile time and memory analysis.
    """

    def __init__(self, fn: Callable, *args):
        dynamic, static = eqx.partition(args, eqx.is_array)
        start = time.perf_counter()
        self._exe = jax.jit(lambda d: fn(*eqx.combine(d, static))).lower(dynamic).compile()
        self.compile_s = time.perf_counter() - start
        self._dynamic = dynamic
        self.memory = _memory_analysis(self._exe)

    def __call__(self):
        return self._exe(self._dynamic)


def memory_budget_bytes() -> int | None:
    """Half the memory the device can give (GPU: its allocator limit; CPU: the host's available RAM).

    A reverse-mode rollout keeps every step's residuals; for nonlinear schemes on big grids that
    can exceed the machine, so such gradients are compiled, measured by XLA's memory analysis and
    only run when they fit (otherwise with checkpointing, see :func:`run_case`).
    """
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 -- optional runtime information; backends differ in what they raise
        stats = None
    if stats and "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _needed_bytes(compiled: Compiled) -> int:
    m = compiled.memory or {}
    return sum(m.get(k, 0) for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"))


def _memory_analysis(exe) -> dict | None:
    try:
        m = exe.memory_analysis()
    except Exception:  # noqa: BLE001 -- not every backend implements it
        return None
    if m is None:
        return None
    names = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    return {n: int(getattr(m, n)) for n in names if hasattr(m, n)}


def time_round_robin(fns: dict[str, Callable[[], object]], *, min_repeats: int, max_repeats: int,
                     min_total_s: float, max_total_s: float) -> dict[str, dict]:
    """Median wall time of each (compiled) function, timed in turn.

    At least 3 rounds; then up to ``min_repeats`` rounds unless ``max_total_s`` has passed (slow
    cases); then more rounds, up to ``max_repeats``, until ``min_total_s`` has passed (fast cases,
    whose single timings are noisy).
    """
    for f in fns.values():  # warm-up
        jax.block_until_ready(f())
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    repeats = 0

    def more() -> bool:
        elapsed = time.perf_counter() - start
        return (repeats < min(3, min_repeats) or (repeats < min_repeats and elapsed < max_total_s)
                or (repeats < max_repeats and elapsed < min_total_s))

    while more():
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[name].append(time.perf_counter() - t0)
        repeats += 1
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "repeats": len(t)}
            for name, t in times.items()}


def time_numpy(case: Case, field, u0, spacing, dt, target_s: float, repeats: int) -> dict:
    """NumPy loop over fewer steps, scaled to ``n_steps``: its per-step cost is flat in ``n_steps``."""
    probe = min(case.n_steps, 5)
    t0 = time.perf_counter()
    numpy_rollout(case.model, field, u0, spacing, dt, probe)
    per_step = max((time.perf_counter() - t0) / probe, 1e-9)
    steps = int(min(case.n_steps, max(probe, round(target_s / per_step))))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        numpy_rollout(case.model, field, u0, spacing, dt, steps)
        runs.append(time.perf_counter() - t0)
    timed = statistics.median(runs)
    return {"steps_timed": steps, "time_timed_s": timed, "forward_s": timed * case.n_steps / steps}


# --------------------------------------------------------------------------------------------
# Agreement check of the reference numerics with diffphys
# --------------------------------------------------------------------------------------------

def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float64).tiny))


def agreement_checks(tol: float) -> list[dict]:
    """diffphys vs. fused (state and gradient) and NumPy (state) on small grids, Euler numerics."""
    out = []
    for case in cases(AGREEMENT_SIZES):
        if not case.with_references:
            continue
        grid = make_grid(case.shape)
        model, u0 = make_model(case, grid), initial_state(grid)
        field = model_field(model)
        dp_fwd, ref_fwd = diffphys_forward(case.n_steps), fused_forward(case, model)
        u_dp = Compiled(dp_fwd, model, u0)()
        u_ref = Compiled(ref_fwd, field, u0)()
        g_dp = Compiled(gradient_of(dp_fwd), u0, model)()
        g_ref = Compiled(gradient_of(ref_fwd), u0, field)()
        u_np = numpy_rollout(case.model, np.asarray(field), np.asarray(u0), grid.spacing, model.dt,
                             case.n_steps)
        errs = {"forward_vs_fused": rel_err(u_dp, u_ref), "gradient_vs_fused": rel_err(g_dp, g_ref),
                "numpy_vs_fused": rel_err(u_np, u_ref)}
        out.append({"model": case.label, "shape": list(case.shape), "n_steps": case.n_steps,
                    "rel_errors": errs, "tolerance": tol, "passed": all(e <= tol for e in errs.values())})
    return out


# --------------------------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------------------------

def run_case(case: Case, timing: dict, budget: int | None) -> dict:
    grid = make_grid(case.shape)
    model, u0 = make_model(case, grid), initial_state(grid)
    work = case.n_cells * case.n_steps

    compiled = {}
    dp_fwd = diffphys_forward(case.n_steps)
    compiled["diffphys"] = Compiled(dp_fwd, model, u0)
    compiled["diffphys_grad"] = Compiled(gradient_of(dp_fwd), u0, model)
    # Storing all residuals may not fit (WENO5 keeps hundreds of states per step): then time the
    # gradient with checkpointing in blocks of ~sqrt(n_steps), and record the memory it would need.
    block, full_grad_bytes = None, _needed_bytes(compiled["diffphys_grad"])
    if budget is not None and full_grad_bytes > budget:
        block = max(1, round(math.sqrt(case.n_steps)))
        compiled["diffphys_grad"] = Compiled(gradient_of(diffphys_forward(case.n_steps, block)),
                                             u0, model)
        if _needed_bytes(compiled["diffphys_grad"]) > budget:
            raise MemoryError(f"{case.label} {case.shape}: the gradient needs more than {budget} bytes even "
                              f"with adjoint=Checkpointed(every={block}); use smaller sizes")
    stepper = None
    if case.with_references:
        field = model_field(model)
        ref_fwd = fused_forward(case, model)
        compiled["fused"] = Compiled(ref_fwd, field, u0)
        compiled["fused_grad"] = Compiled(gradient_of(ref_fwd), u0, field)
        stepper = exponax_stepper(case, model)
        if stepper is not None:
            ex_fwd = exponax_forward(case.n_steps)
            compiled["exponax"] = Compiled(ex_fwd, stepper, u0)
            compiled["exponax_grad"] = Compiled(gradient_of(ex_fwd), u0, stepper)
    times = time_round_robin(compiled, **{k: timing[k] for k in ("min_repeats", "max_repeats", "min_total_s",
                                                                  "max_total_s")})

    def impl(name: str) -> dict:
        fwd, grad = times[name]["median_s"], times[name + "_grad"]["median_s"]
        return {
            "forward_s": fwd, "gradient_s": grad,
            "forward_min_s": times[name]["min_s"], "gradient_min_s": times[name + "_grad"]["min_s"],
            "throughput_mcell_steps_per_s": work / fwd / 1e6,
            "grad_over_forward": grad / fwd,
            "repeats": times[name]["repeats"],
            "compile_s": {"forward": compiled[name].compile_s, "gradient": compiled[name + "_grad"].compile_s},
            "memory": {"forward": compiled[name].memory, "gradient": compiled[name + "_grad"].memory},
        }

    record = {
        "model": case.model, "label": case.label, "scheme": case.scheme,
        "reconstruction": case.reconstruction, "ndim": len(case.shape), "shape": list(case.shape),
        "n_cells": case.n_cells, "n_steps": case.n_steps, "dt": model.dt,
        "diffphys": impl("diffphys"), "fused": None, "numpy": None, "exponax": None, "ratios": {},
    }
    record["diffphys"]["gradient_checkpoint_block"] = block
    record["diffphys"]["gradient_bytes_without_checkpointing"] = full_grad_bytes
    dp_tp = record["diffphys"]["throughput_mcell_steps_per_s"]
    if case.with_references:
        record["fused"] = impl("fused")
        np_field, np_u0 = np.asarray(model_field(model)), np.asarray(u0)
        nrec = time_numpy(case, np_field, np_u0, grid.spacing, model.dt, timing["numpy_target_s"],
                          timing["numpy_repeats"])
        nrec["throughput_mcell_steps_per_s"] = work / nrec["forward_s"] / 1e6
        record["numpy"] = nrec
        record["ratios"]["diffphys_over_fused"] = dp_tp / record["fused"]["throughput_mcell_steps_per_s"]
        # grad/forward alone can mislead (a fast forward raises it): also compare the gradients directly.
        record["ratios"]["diffphys_over_fused_gradient"] = record["fused"]["gradient_s"] / record["diffphys"]["gradient_s"]
        record["ratios"]["diffphys_over_numpy"] = dp_tp / nrec["throughput_mcell_steps_per_s"]
        if stepper is not None:
            record["exponax"] = impl("exponax")
            record["exponax"]["note"] = _EXPONAX_NOTE
            record["ratios"]["diffphys_over_exponax"] = dp_tp / record["exponax"]["throughput_mcell_steps_per_s"]
    return record


_EXPONAX_NOTE = ("spectral ETDRK steppers (order 0: the exact exponential, one rFFT/irFFT pair per step), "
                 "periodic, constant coefficients only: heat uses diffusivity = mean(kappa) instead of the varying "
                 "field. Different numerics (exact in time, so it could take far fewer, larger steps): a "
                 "cost-per-step comparison, not checked for agreement")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(records: list[dict]) -> str:
    head = ["model", "dims", "N", "steps", "diffphys Mc·s/s", "fused Mc·s/s", "dp/fused",
            "dp/numpy", "dp/exponax", "grad/fwd dp", "grad/fwd fused", "dp/fused grad"]
    rows = []
    for r in records:
        ratios, fused = r["ratios"], r["fused"]
        rows.append([
            r["label"], f"{r['ndim']}D", "x".join(map(str, r["shape"])), str(r["n_steps"]),
            _fmt(r["diffphys"]["throughput_mcell_steps_per_s"], ".1f"),
            _fmt(fused and fused["throughput_mcell_steps_per_s"], ".1f"),
            _fmt(ratios.get("diffphys_over_fused"), ".2f"),
            _fmt(ratios.get("diffphys_over_numpy"), ".1f"),
            _fmt(ratios.get("diffphys_over_exponax"), ".2f"),
            _fmt(r["diffphys"]["grad_over_forward"], ".2f") + ("*" if r["diffphys"]["gradient_checkpoint_block"] else ""),
            _fmt(fused and fused["grad_over_forward"], ".2f"),
            _fmt(ratios.get("diffphys_over_fused_gradient"), ".2f"),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(row) for row in rows])


def device_info() -> dict:
    dev = jax.devices()[0]
    info = {"backend": jax.default_backend(), "platform": dev.platform, "device_kind": dev.device_kind,
            "description": f"{dev.platform}: {dev.device_kind}", "device_count": jax.device_count(),
            "host_cpu_count": os.cpu_count(), "host_processor": platform.processor() or platform.machine()}
    try:  # a more telling host CPU name on Linux; optional
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["host_processor"] = names[0]
    except OSError:
        pass
    return info


def notes(dtype: str, records: list[dict], budget: int | None) -> list[str]:
    out = [
        ("Mc·s/s = million cell-steps per second (cells x time steps / forward time); for rk4 and ssprk3 a "
         "step is 4 resp. 3 right-hand-side evaluations."),
        ("dp/X = diffphys throughput / X throughput (> 1: diffphys faster). fused = the same numerics "
         "hand-written with jnp.roll in one lax.fori_loop, face coefficients hoisted out of the loop, jitted. "
         "dp/fused grad = time(fused gradient) / time(diffphys gradient)."),
        ("grad/fwd = time(jit(grad of sum(u_final**2) w.r.t. u0)) / time(jit(forward)); all residuals stored "
         "(no checkpointing) unless marked *."),
        ("diffphys forward = diffphys.rollout(model, u0, n_steps, check_finite=True); "
         "medians of round-robin repeats after compile and warm-up."),
        f"dtype {dtype}. Rows without references (rk4, weno5+ssprk3) are diffphys' production defaults.",
    ]
    for r in records:
        k = r["diffphys"]["gradient_checkpoint_block"]
        if k:
            out.append(f"* {r['label']} {'x'.join(map(str, r['shape']))}: storing every step's residuals would need "
                       f"{r['diffphys']['gradient_bytes_without_checkpointing'] / 2**30:.1f} GiB (XLA memory analysis), "
                       f"over the budget of {budget / 2**30:.1f} GiB (half the free memory); the gradient was timed "
                       f"with rollout(..., adjoint=Checkpointed(every={k})).")
    if any(r["numpy"] and r["numpy"]["steps_timed"] < r["n_steps"] for r in records):
        out.append("numpy: the same stencil code with numpy.roll in a Python loop, timed over fewer steps "
                   "and scaled to the full step count (see numpy.steps_timed in the JSON).")
    if exponax is None:
        out.append(f"exponax: not importable ({_EXPONAX_IMPORT_ERROR}); its column is skipped. "
                   "Install with `pip install exponax` to include it.")
    else:
        out.append(f"exponax {exponax.__version__}: " + _EXPONAX_NOTE + ".")
    return out


def default_out(backend: str, x64: bool) -> Path:
    suffix = "_float64" if x64 else ""
    return Path(__file__).resolve().parent / "results" / f"bench_steppers_{backend}{suffix}.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--x64", action="store_true", help="run in float64 (default float32)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds; smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="time only configurations whose label contains TEXT (e.g. heat/euler)")
    args = parser.parse_args(argv)

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    # The dtype actually in force (JAX_ENABLE_X64 in the environment also switches it on).
    dtype = str(jnp.zeros(()).dtype)
    x64 = dtype == "float64"
    tol = 1e-12 if x64 else 1e-5
    if args.quick:
        timing = {"min_repeats": 2, "max_repeats": 2, "min_total_s": 0.0, "max_total_s": 0.0,
                  "numpy_target_s": 0.01, "numpy_repeats": 1}
    else:
        timing = {"min_repeats": 7, "max_repeats": 50, "min_total_s": 2.0, "max_total_s": 10.0,
                  "numpy_target_s": 0.5, "numpy_repeats": 3}

    dev = device_info()
    print(f"diffphys {diffphys.__version__} (git {_git_revision()}), jax {jax.__version__}, backend {dev['backend']} "
          f"({dev['description']}; host {dev['host_processor']}, {dev['host_cpu_count']} CPUs), dtype {dtype}")

    checks = agreement_checks(tol)
    print(f"\nAgreement of diffphys with the fused reference (and NumPy), relative max-norm error, tolerance {tol:g}:")
    for c in checks:
        errs = ", ".join(f"{k} {v:.2e}" for k, v in c["rel_errors"].items())
        print(f"  {c['model']:<22} {'x'.join(map(str, c['shape'])):>6} {c['n_steps']:>3} steps: {errs}  "
              f"{'ok' if c['passed'] else 'FAILED'}")

    budget = memory_budget_bytes()
    records = []
    print(file=sys.stderr)
    for case in cases(QUICK_SIZES if args.quick else FULL_SIZES):
        if args.only and args.only not in case.label:
            continue
        start = time.perf_counter()
        r = run_case(case, timing, budget)
        records.append(r)
        # Progress (stderr): a long run shows its figures as they come.
        print(f"  {case.label} {'x'.join(map(str, case.shape))} x {case.n_steps} steps: "
              f"{r['diffphys']['throughput_mcell_steps_per_s']:.1f} Mcell-steps/s, "
              f"dp/fused {_fmt(r['ratios'].get('diffphys_over_fused'), '.2f')}, "
              f"grad/fwd {r['diffphys']['grad_over_forward']:.2f} ({time.perf_counter() - start:.1f} s)",
              file=sys.stderr, flush=True)

    print()
    print(table(records))
    note_lines = notes(dtype, records, budget)
    print("\nNotes:")
    for n in note_lines:
        print(f"- {n}")

    result = {
        "benchmark": "bench_steppers",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "dtype": dtype,
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
                     "numpy": np.__version__, "diffphys": diffphys.__version__,
                     "diffphys_git": _git_revision(),
                     "exponax": None if exponax is None else exponax.__version__},
        "device": dev, "timing": timing, "memory_budget_bytes": budget,
        "exponax_available": exponax is not None, "exponax_import_error": _EXPONAX_IMPORT_ERROR,
        "agreement": {"tolerance": tol, "passed": all(c["passed"] for c in checks), "checks": checks},
        "notes": note_lines, "records": records,
    }
    out = args.out or default_out(dev["backend"], x64)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"\nwrote {out}")
    return 0 if result["agreement"]["passed"] else 1


def _git_revision() -> str | None:
    """The repository's commit (with ``-dirty`` if diffphys has uncommitted changes), if git is there."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "diffphys"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
