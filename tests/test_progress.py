"""Progress reporting: every report arrives, and a new progress callback does not recompile the solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffphys import solvers as S
from diffphys._compile_monitor import CompileMonitor


def _residuals(x, data):
    """A small nonlinear least-squares residual (defined once: the residual function is static)."""
    return jnp.array([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]]) @ jnp.tanh(x) - data


def _problem():
    return S.LeastSquares(_residuals, jnp.zeros(2), jnp.array([1.0, 0.5, 0.25]))


@pytest.mark.parametrize("mode", [S.Converged(rtol=1e-12, max_steps=5), S.Unrolled(5)], ids=["converged", "unrolled"])
def test_each_call_reports_to_its_own_callback_and_reuses_the_compiled_solve(mode):
    problem, solver = _problem(), S.GaussNewton(globalization="none")
    first = []
    S.iterate(solver, problem, mode=mode, progress=lambda k, r: first.append((k, r["cost"])), throw=False)
    second = []
    with CompileMonitor() as compiled:
        solution = S.iterate(solver, problem, mode=mode, progress=lambda k, r: second.append((k, r["cost"])), throw=False)
        jax.block_until_ready(solution.value)
    assert compiled.programs == 0  # a fresh lambda is data, not a new program
    n = int(solution.num_steps)
    assert [k for k, _ in second] == list(range(n + 1)) and second == first
    np.testing.assert_allclose([c for _, c in second], solution.history()["cost"][: n + 1])


def test_progress_inside_a_users_jit_keeps_reporting_on_later_calls():
    problem, solver = _problem(), S.GaussNewton(globalization="none")
    seen = []
    solve = jax.jit(lambda p: S.iterate(solver, p, mode=S.Unrolled(3), progress=lambda k, r: seen.append(k)).value)
    solve(problem)
    solve(problem)
    jax.effects_barrier()
    assert sorted(seen) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_progress_that_is_not_callable_is_refused():
    with pytest.raises(TypeError, match="progress must be None, True, 'lines'"):
        S.iterate(S.GaussNewton(), _problem(), progress=3)


def test_print_progress_writes_plain_lines_to_a_log_and_rewrites_a_terminal_line(capsys, monkeypatch):
    import io
    import sys

    problem, solver = _problem(), S.GaussNewton(globalization="none")
    solve = lambda: jax.block_until_ready(S.iterate(solver, problem, mode=S.Unrolled(3),
                                                    progress=S.PrintProgress(label="gn")).value)
    solve()
    err = capsys.readouterr().err
    assert "\r" not in err  # captured stderr is not a terminal: one whole line per report
    assert [line.split()[:3] for line in err.splitlines()] == [["gn", "it", str(k)] for k in range(4)]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    solve()
    assert terminal.getvalue().count("\r") == 4 and "\n" not in terminal.getvalue()
