"""Progress for long loops: a tqdm bar on a terminal, plain periodic lines with an ETA in batch-job logs.

A plain line is printed for the first and last step, every ``every`` steps (0: never by count) and
whenever ``every_seconds`` have passed since the last one. The ETA leaves out the first step of the
session, which also compiles.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    def __init__(self, total: int, initial: int = 0, desc: str = "train", every_seconds: float = 20.0,
                 enabled: bool = True, stream=None, every: int = 0):
        self.stream = stream or sys.stderr
        self.total, self.count, self.desc = total, initial, desc
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.every, self.every_seconds = every, every_seconds
        self.start = self.last = time.monotonic()
        self._after_first: tuple[float, int] | None = None
        self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True) if self.tty else None

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate of the steps after the session's first, or None before two steps."""
        if self._after_first is None:
            return None
        t, n = self._after_first
        done = self.count - n
        return (now - t) / done * (self.total - self.count) if done > 0 else None

    def update(self, info: str = "") -> None:
        self.count += 1
        now = time.monotonic()
        first = self._after_first is None
        if first:
            self._after_first = (now, self.count)
        if self.bar is not None:
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
            return
        due = (now - self.last >= self.every_seconds or first or self.count == self.total
               or (self.every and self.count % self.every == 0))
        if self.enabled and due:
            self.last = now
            eta = self.eta(now)
            tail = f"{_duration(now - self.start)}" + (f", ETA {_duration(eta)}" if eta is not None else "")
            print(f"[{self.desc}] {self.count}/{self.total} {info} ({tail})", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
