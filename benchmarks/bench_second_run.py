"""Second-run latency of `diffphys run` with JAX's persistent compilation cache: end-to-end wall time
of a first and a second run, each its own `python -m diffphys.cli run` process, with the cache (a
fresh temporary folder per pair, `DIFFPHYS_CACHE_DIR`) and without (`--no-cache`).

The reference measured in the same session is the floor of any run: a process that only imports
diffphys (`python -c "import diffphys.cli"`). The figure to read is the second run with the cache
against the first, and how close it gets to that floor.

The package is byte-compiled first (`compileall`), as `pip install .` does when it installs it: the
runs import the source tree, and an environment with `PYTHONDONTWRITEBYTECODE=1` would otherwise
compile diffphys's 80 modules from source in every run (about 0.3 s), which no installed copy does.

    python benchmarks/bench_second_run.py            # heat1d-sparse and wave1d-initial, full size, 3 second runs each
    python benchmarks/bench_second_run.py --quick    # heat1d-sparse at reduced size (the smoke test)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]
CASES = ("heat1d-sparse", "wave1d-initial")
QUICK = ("heat1d-sparse", ["--set", "grid.n=32", "--set", "solver.max_iterations=30"])


def _timed(args: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + system) time of one ``python args`` process, end to end (start-up, import,
    compile, solve, write). The CPU time drifts less than the wall time on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _pair(case: str, overrides: list[str], cached: bool, repeats: int) -> dict:
    """First and second run of ``case`` in a fresh temporary folder (and a fresh cache if ``cached``); the
    second run ``repeats`` times, reported by its median (wall time) and the spread."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        env = {**os.environ, "DIFFPHYS_CACHE_DIR": str(cache) if cached else "off",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        run = ["-m", "diffphys.cli", "run", case, "--quiet", *overrides, *([] if cached else ["--no-cache"])]
        first = _timed([*run, "--out", "first"], env, tmp)
        entries = len(list(cache.iterdir())) if cache.exists() else 0
        seconds = sorted(_timed([*run, "--out", f"second-{i}"], env, tmp) for i in range(repeats))
        grown = (len(list(cache.iterdir())) if cache.exists() else 0) - entries
    second = seconds[len(seconds) // 2]
    return {"case": case, "cache": cached, "first_s": first[0], "second_s": second[0], "first_cpu_s": first[1],
            "second_cpu_s": second[1], "second_runs_s": [w for w, _ in seconds], "cache_entries": entries,
            "entries_written_by_second": grown}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="heat1d-sparse at reduced size")
    parser.add_argument("--repeats", type=int, default=3, help="second runs per pair (median reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    cases = [QUICK] if args.quick else [(case, []) for case in CASES]
    # what `pip install .` does at install time (see the module docstring)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "diffphys")], check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    import_s, import_cpu_s = min(_timed(["-c", "import diffphys.cli"], env, str(ROOT)) for _ in range(2))
    repeats = 1 if args.quick else max(1, args.repeats)
    rows = [_pair(case, overrides, cached, repeats) for case, overrides in cases for cached in (True, False)]
    print(f"\nimport diffphys.cli alone: {import_s:.2f} s wall, {import_cpu_s:.2f} s CPU (the floor of a run)")
    print(f"\n| case | cache | first run: wall (CPU) s | second run, median of {repeats}: wall (CPU) s | "
          "second runs: min–max s | second / first (wall) | cache entries | written by the second |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = r["second_runs_s"]
        print(f"| {r['case']} | {'on' if r['cache'] else 'off'} | {r['first_s']:.2f} ({r['first_cpu_s']:.2f}) | "
              f"{r['second_s']:.2f} ({r['second_cpu_s']:.2f}) | {spread[0]:.2f}–{spread[-1]:.2f} | "
              f"{r['second_s'] / r['first_s']:.2f} | {r['cache_entries']} | {r['entries_written_by_second']} |")
    result = {**environment(), "quick": args.quick, "import_s": import_s, "import_cpu_s": import_cpu_s, "runs": rows}
    path = args.out / f"second_run{'_quick' if args.quick else ''}.json"
    write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
