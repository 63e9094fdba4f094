"""JAX's persistent compilation cache, on by default, and a record of what came from it.

A run compiles its train epoch, evaluation and prediction programs; the second run of the same
config (or a requeued SLURM job) loads them from disk instead of compiling again. Where the cache
lives (first that is set):

- ``run.compile_cache``: a directory, or ``off``;
- ``$RESEARCH_COMPILE_CACHE``: a directory, or ``off``;
- ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own variable);
- inside a SLURM job: ``<run.root>/.compile_cache`` (the run root is on a filesystem every node sees);
- else ``$XDG_CACHE_HOME/research/jax_compile`` (``~/.cache/research/jax_compile``).

JAX writes each entry atomically and only from process 0, so concurrent runs share a cache safely.
"""

from __future__ import annotations

import os
import pathlib
import threading

from research.errors import InputError

OFF = ("off", "none", "false", "0", "no")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
HIT_EVENT = "/jax/compilation_cache/cache_hits"


def default_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "research" / "jax_compile"


def choose_dir(setting: str | None, run_root: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The cache directory for a ``run.compile_cache`` setting (``''``/``auto`` = the default), or None if off."""
    for value in (setting, os.environ.get("RESEARCH_COMPILE_CACHE")):
        value = (value or "").strip()
        if value and value.lower() != "auto":
            return None if value.lower() in OFF else pathlib.Path(value).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    if os.environ.get("SLURM_JOB_ID") and run_root is not None:
        return pathlib.Path(run_root) / ".compile_cache"
    return default_dir()


class CacheStats:
    """Every program XLA compiled while listening: its name, seconds, and whether it came from the cache.

    JAX reports a cache hit just before the compile-duration event of the same program, so a hit
    marks the next program compiled on the same thread.
    """

    def __init__(self):
        self.programs: list[dict] = []
        self._hit = threading.local()
        self._lock = threading.Lock()

    def on_event(self, event: str, **_) -> None:
        if event == HIT_EVENT:
            self._hit.pending = True

    def on_duration(self, event: str, seconds: float, fun_name: str = "?", **_) -> None:
        if event != COMPILE_EVENT:
            return
        hit = getattr(self._hit, "pending", False)
        self._hit.pending = False
        with self._lock:
            self.programs.append({"name": fun_name, "seconds": round(float(seconds), 3), "cached": hit})

    def summary(self, start: int = 0) -> dict:
        """Programs compiled since the ``start``-th: counts of cache hits and misses, and the list."""
        with self._lock:
            programs = self.programs[start:]
        hits = sum(p["cached"] for p in programs)
        return {"hits": hits, "misses": len(programs) - hits,
                "compile_seconds": round(sum(p["seconds"] for p in programs), 3), "programs": programs}


_stats: CacheStats | None = None


def listen() -> CacheStats:
    """Starts (once per process) counting compiled programs and cache hits; returns the counter."""
    global _stats
    if _stats is None:
        from jax import monitoring

        _stats = CacheStats()
        monitoring.register_event_listener(_stats.on_event)
        monitoring.register_event_duration_secs_listener(_stats.on_duration)
    return _stats


def enable(setting: str | None = None, run_root: str | os.PathLike | None = None) -> dict:
    """Points JAX's persistent cache at :func:`choose_dir` (every program is cached, however fast it
    compiled) and starts :func:`listen`. Call before the first compilation; returns what was chosen."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    listen()
    path = choose_dir(setting, run_root)
    current = jax.config.jax_compilation_cache_dir
    if path is None:
        if current is not None:
            jax.config.update("jax_compilation_cache_dir", None)
            cc.reset_cache()
        return {"enabled": False, "dir": None}
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"config key run.compile_cache: cannot create the cache folder {path} "
                         f"({exc.strerror or exc}); choose another folder or 'off'") from None
    if current != str(path):
        jax.config.update("jax_compilation_cache_dir", str(path))
        cc.reset_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return {"enabled": True, "dir": str(path)}
