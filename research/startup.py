"""Time to first epoch, by phase: what a researcher waits for before training shows any number.

Phases, each the wall time since the previous mark: ``imports`` (process start to the run's start:
interpreter, imports, config), ``data`` (read, split, scale), ``setup`` (model, trainer, placing data,
initial state, restoring a checkpoint) and ``first_epoch``. ``compile_seconds`` is the part of these
spent tracing, lowering and compiling programs (or loading them from the persistent cache).
"""

from __future__ import annotations

import os
import time

from research import compile_cache

_IMPORTED = time.time()
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")


def process_start() -> float:
    """Wall-clock time this process started (Linux ``/proc``), else when this module was imported."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


class _Tracing:
    """Seconds JAX spent tracing and lowering (before XLA compiles), summed over programs."""

    seconds = 0.0

    @classmethod
    def on_duration(cls, event: str, seconds: float, **_) -> None:
        if event in TRACE_EVENTS:
            cls.seconds += float(seconds)


_tracing_listened = False


class Startup:
    """Marks the phases of one run's start-up; :meth:`record` is what ``run.json["startup"]`` holds."""

    def __init__(self, cache: dict):
        global _tracing_listened
        if not _tracing_listened:
            from jax import monitoring

            monitoring.register_event_duration_secs_listener(_Tracing.on_duration)
            _tracing_listened = True
        self.cache = cache
        self.stats = compile_cache.listen()
        self.t0 = process_start()
        self.marks: dict[str, float] = {}
        self._last = self.t0
        self._programs0 = len(self.stats.programs)
        self._trace0 = _Tracing.seconds
        self.mark("imports")


    def mark(self, phase: str) -> None:
        now = time.time()
        self.marks[phase] = round(now - self._last, 3)
        self._last = now

    def record(self) -> dict:
        programs = self.stats.programs[self._programs0:]
        return {
            **{f"{phase}_seconds": s for phase, s in self.marks.items()},
            "to_first_epoch_seconds": round(self._last - self.t0, 3),
            "compile_seconds": round(sum(p["seconds"] for p in programs) + _Tracing.seconds - self._trace0, 3),
            "programs_compiled": len(programs), "programs_from_cache": sum(p["cached"] for p in programs),
        }

    def cache_record(self) -> dict:
        """Every program compiled since the run began, with whether it came from the cache."""
        return {**self.cache, **self.stats.summary(self._programs0)}


_pending: Startup | None = None


def begin(config) -> Startup:
    """Turns the compilation cache on as ``run.compile_cache`` says and starts timing the next run.

    A command line calls this as soon as its config is read, so that ``data`` counts from there.
    """
    global _pending
    run = config.run
    _pending = Startup(compile_cache.enable(run.get("compile_cache", ""), run.root))
    return _pending


def take(config) -> Startup:
    """The :class:`Startup` begun for this run, or one begun now (a run started from Python)."""
    global _pending
    startup = _pending or begin(config)
    _pending = None
    return startup
