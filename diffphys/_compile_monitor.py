"""Count and time JAX's compilations while a block runs, from JAX's own monitoring events.

Used by the latency benchmark and the tests that guard against recompilation; the count is that of
XLA programs built (``JAX_LOG_COMPILES`` lists the same ones), the time that of tracing, lowering and
XLA compilation together.
"""

from __future__ import annotations

import jax

__all__ = ["CompileMonitor"]

_BACKEND = "/jax/core/compile/backend_compile_duration"
_STAGES = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    _BACKEND,
)


class CompileMonitor:
    """``with CompileMonitor() as m: ...`` then ``m.programs`` (XLA programs compiled) and
    ``m.seconds`` (time spent tracing, lowering and compiling) inside the block."""

    def __init__(self):
        self.programs = 0
        self.seconds = 0.0

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in _STAGES:
            self.seconds += duration
            self.programs += event == _BACKEND

    def __enter__(self) -> CompileMonitor:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
