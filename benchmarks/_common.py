"""What every benchmark shares: compiled-call timing and atomic strict-JSON output (one copy each)."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import jax

__all__ = ["environment", "median_time", "write_json"]


def median_time(fn, repeats: int = 3, budget_s: float = 60.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up (compilation) call.

    Results are blocked on (``jax.block_until_ready``); the repeats stop early once ``budget_s``
    seconds are spent, so a slow case does not stall a benchmark.
    """
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return statistics.median(times)


def environment(dtype: str = "float64") -> dict:
    """What a result was measured with: versions, the device and the dtype (the JSON's common header)."""
    return {"versions": {"jax": jax.__version__, "python": platform.python_version()},
            "device": {"backend": jax.default_backend(), "description": str(jax.devices()[0])}, "dtype": dtype}


def write_json(path: Path, data) -> None:
    """Strict JSON (non-finite numbers become null), written atomically: :func:`diffphys.io.write_json`."""
    from diffphys.io import write_json as write

    write(path, data)
