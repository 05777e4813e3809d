"""The ``diffphys`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="diffphys", description="Differentiable PDE time steppers and data assimilation in JAX."
    )
    parser.add_argument("--version", action="version", version=f"diffphys {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="simulate 1D heat, differentiate a misfit w.r.t. the diffusivity field, verify and plot",
        description="Simulate 1D heat with a varying diffusivity, differentiate a misfit with respect to "
        "the diffusivity field, verify the gradient (Taylor and dot-product tests), and write "
        "demo.png, trajectory.nc and summary.json.",
    )
    demo.add_argument("--out", type=Path, default=Path("diffphys-demo"), help="output folder (default: %(default)s)")
    demo.add_argument("--cells", type=_positive_int, default=128, help="grid cells (default: %(default)s)")
    demo.add_argument("--steps", type=_positive_int, default=2000, help="time steps (default: %(default)s)")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder, removing its previous outputs first")
    run = commands.add_parser(
        "run",
        help="solve an assimilation case (default: heat1d-sparse) and write analysis.nc, summary.json, plots",
        description="Solve the 4D-Var assimilation problem of a case file or built-in case (twin experiment or "
        "your observation file) and write analysis.nc, summary.json, analysis.png and cost.png.",
    )
    run.add_argument("case", nargs="?", default=None, metavar="CASE",
                     help="a case file (.toml) or a built-in case name (see `diffphys cases`; default: heat1d-sparse)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: diffphys-runs/CASE)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a case value, e.g. --set solver.max_iterations=20 --set grid.n=64 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder, removing its previous outputs first")
    run.add_argument("--no-cache", action="store_true",
                     help="do not read or write the compilation cache (~/.cache/diffphys/jax, or $DIFFPHYS_CACHE_DIR; "
                          "DIFFPHYS_CACHE_DIR=off also turns it off)")
    cases = commands.add_parser("cases", help="list the built-in cases (--show NAME prints one's TOML)",
                                description="List the built-in cases, or print one's case file to copy and edit.")
    cases.add_argument("--show", metavar="NAME", default=None, help="print the TOML of built-in case NAME")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffphys`` console script; returns the exit status.

    Errors print one message, never a traceback. A user error (a bad case, option or file, or a solver's
    run-time check such as a Newton step that does not converge) exits with status 2; anything else is a
    bug in diffphys: its message, a hint to report it, and status 1. Set the environment variable
    ``DIFFPHYS_DEBUG=1`` to let every error raise with its traceback instead.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "run":
            return _run(args)
        if args.command == "cases":
            return _cases(args.show)
    except Exception as error:
        if os.environ.get("DIFFPHYS_DEBUG", "") not in ("", "0"):
            raise
        user, message = _explain(error)
        print(f"diffphys {args.command}: error: {message}", file=sys.stderr)
        return 2 if user else 1
    return 0


def _explain(error: Exception) -> tuple[bool, str]:
    """Whether ``error`` is the user's (bad input, or a run-time check of equinox.error_if), and its message."""
    text = str(error)
    marker = "EquinoxRuntimeError: "  # error_if's message, inside JAX's text about where it was raised
    if marker in text:
        return True, text.split(marker, 1)[1].split("\n\n", 1)[0].strip()
    if isinstance(error, (ValueError, TypeError, OSError)):
        return True, text
    return False, (f"{type(error).__name__}: {text}\n  This is a bug in diffphys, not in your input; please report it "
                   "(set DIFFPHYS_DEBUG=1 to see the traceback)")


def _demo(args) -> int:
    import jax

    # Gradient verification needs float64: in float32 the Taylor residuals hit round-off early.
    jax.config.update("jax_enable_x64", True)
    from ._app.demo import run_demo

    if args.cells < 8:
        raise ValueError(f"--cells must be at least 8 for the demo, got {args.cells}")
    print(f"diffphys demo: 1D heat, {args.cells} cells, {args.steps} steps -> {args.out}/", flush=True)
    summary = run_demo(args.out, n_cells=args.cells, n_steps=args.steps, overwrite=args.overwrite, say=print)
    print(f"  misfit J at the first guess   {summary['misfit_at_first_guess']:.4e}")
    print(f"  |dJ/dκ|                       {summary['gradient_norm']:.4e}")
    print(f"  Taylor test rates (expect 2)  {', '.join(f'{r:.2f}' for r in summary['taylor_rates'])}")
    print(f"  dot-product test rel. error   {summary['dot_product_relative_error']:.1e}")
    print(f"  wrote {', '.join(summary['outputs'])} in {summary['wall_time_s']:.1f} s ({summary['backend']})")
    return 0


def _run(args) -> int:
    import jax

    # Twin experiments and their derivatives are verified in float64; assimilation runs in it too.
    jax.config.update("jax_enable_x64", True)
    from ._app.cache import cache_dir, enable_cache
    from ._app.runner import run_case
    from ._app.xla_options import choose_for
    from .cases import load_case

    case = load_case(args.case, args.overrides)
    choose_for(case)  # XLA's CPU emitters, before the first computation starts JAX's backend
    out = args.out if args.out is not None else Path("diffphys-runs") / case.name
    enable_cache(None if args.no_cache else cache_dir())
    run_case(case, out, progress=None if args.quiet else (lambda line: print(line, flush=True)), overwrite=args.overwrite)
    return 0


def _cases(show: str | None = None) -> int:
    from .cases import builtin_case_text, builtin_cases

    if show is not None:
        print(builtin_case_text(show), end="")
        return 0
    cases = builtin_cases()
    width = max(map(len, cases))
    for name, description in cases.items():
        print(f"{name:<{width}}  {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
