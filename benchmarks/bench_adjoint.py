"""Memory and time of reverse-mode gradients of a long rollout for each adjoint strategy.

For a nonlinear stepper (reverse mode through a linear one stores no states) rolled out ``n`` steps,
the gradient of ``sum(sin(y_n))`` with respect to ``y_0`` under

- ``Direct()``: every step's residuals stored (memory ~ n states);
- ``Checkpointed(every=b)``, ``b ~ sqrt(n)``: block checkpointing (memory ~ (n/b + b) states, one
  extra forward pass);
- ``Checkpointed()`` (c = ceil(log2 n)) / ``Checkpointed(checkpoints=b)`` (as many snapshots as the
  block strategy keeps states): recursive binomial checkpointing in equinox's checkpointed while loop
  (memory ~ c states, O(n log n) steps).

Memory is XLA's compiled memory analysis of the jitted gradient (``temp_size_in_bytes``: the
scratch the executable allocates, which holds the stored states), also given in units of one
state. Time is the median of repeated calls after a warm-up, as a ratio to the forward rollout
measured in the same run. The gradients of every strategy are checked against ``Direct()``'s.

Models: ``Advection`` with WENO5 + SSP-RK3 (periodic, 1D) and ``Lorenz96`` (40 variables, RK4).

Usage::

    python benchmarks/bench_adjoint.py            # 10^4 steps, float64, ~2 minutes on 2 CPU cores
    python benchmarks/bench_adjoint.py --quick    # 200 steps (the smoke test runs this)
    python benchmarks/bench_adjoint.py --steps 100000 --out my.json

Results go to ``benchmarks/results/bench_adjoint_<backend>.json`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import diffphys  # noqa: E402
from diffphys.adjoint import Checkpointed, Direct  # noqa: E402
from _common import median_time, write_json


def models(quick: bool):
    grid = diffphys.Grid1D(32 if quick else 128)
    advection = diffphys.Advection(grid, 1.0, reconstruction="weno5", scheme="ssprk3")
    u0 = jnp.exp(-40 * (grid.x - 0.5) ** 2) + 0.2 * jnp.sin(2 * jnp.pi * grid.x)
    lorenz = diffphys.Lorenz96(40, forcing=8.0, scheme="rk4", dt=0.01)
    x0 = 8.0 + jnp.sin(jnp.arange(40.0))
    return {"advection/weno5+ssprk3": (advection, u0), "lorenz96/rk4": (lorenz, x0)}


def strategies(n_steps: int):
    block = max(1, round(math.sqrt(n_steps)))
    return {
        "direct": Direct(),
        f"block(every={block})": Checkpointed(every=block),
        "recursive(checkpoints=None)": Checkpointed(),
        f"recursive(checkpoints={block})": Checkpointed(checkpoints=block),
    }


def run_model(label, model, y0, n_steps: int, repeats: int):
    forward = lambda y: diffphys.rollout(model, y, n_steps)[-1]
    fwd = jax.jit(forward).lower(y0).compile()
    forward_s = median_time(lambda: fwd(y0), repeats)
    state_bytes = y0.size * y0.dtype.itemsize
    rows, reference = [], None
    for name, adjoint in strategies(n_steps).items():
        loss = lambda y, adjoint=adjoint: jnp.sum(jnp.sin(diffphys.rollout(model, y, n_steps, adjoint=adjoint)[-1]))
        start = time.perf_counter()
        exe = jax.jit(jax.grad(loss)).lower(y0).compile()
        compile_s = time.perf_counter() - start
        temp = exe.memory_analysis().temp_size_in_bytes
        gradient_s = median_time(lambda: exe(y0), repeats)
        g = exe(y0)
        if reference is None:
            reference = g
        rel = float(jnp.max(jnp.abs(g - reference)) / jnp.max(jnp.abs(reference)))
        rows.append({
            "model": label, "strategy": name, "n_steps": n_steps, "state_bytes": state_bytes,
            "gradient_temp_bytes": temp, "gradient_temp_states": temp / state_bytes,
            "forward_s": forward_s, "gradient_s": gradient_s, "grad_over_forward": gradient_s / forward_s,
            "compile_s": compile_s, "rel_error_vs_direct": rel,
        })
        print(f"  {label} {name}: compiled in {compile_s:.1f} s, gradient {gradient_s:.3g} s", file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    head = f"{'model':24s} {'strategy':28s} {'temp MiB':>10s} {'states':>10s} {'grad/fwd':>9s} {'rel err':>9s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:24s} {r['strategy']:28s} {r['gradient_temp_bytes'] / 2**20:10.2f} "
            f"{r['gradient_temp_states']:10.0f} {r['grad_over_forward']:9.1f} {r['rel_error_vs_direct']:9.1e}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 steps, small grid, few repeats (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="rollout length (default 10 000; --quick: 200)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 5; --quick: 2)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    n_steps = args.steps or (200 if args.quick else 10_000)
    repeats = args.repeats or (2 if args.quick else 5)
    rows = []
    for label, (model, y0) in models(args.quick).items():
        rows.extend(run_model(label, model, y0, n_steps, repeats))
    print(table(rows))
    device = jax.devices()[0]
    passed = all(r["rel_error_vs_direct"] <= 1e-9 for r in rows)
    result = {
        "benchmark": "bench_adjoint", "quick": args.quick, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "diffphys": diffphys.__version__},
        "device": {"backend": jax.default_backend(), "description": str(device)}, "dtype": "float64",
        "gradients_agree": passed, "records": rows,
    }
    out = args.out or Path(__file__).resolve().parent / "results" / f"bench_adjoint_{jax.default_backend()}.json"
    write_json(out, result)
    print(f"\nwrote {out}; gradients agree with Direct(): {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
