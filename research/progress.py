"""Progress for long loops: a tqdm bar on a terminal, plain periodic lines in batch-job logs."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, initial: int = 0, desc: str = "train", every_seconds: float = 20.0,
                 enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.count, self.desc = total, initial, desc
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.every = every_seconds
        self.start = self.last = time.monotonic()
        self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True) if self.tty else None

    def update(self, info: str = "") -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every or self.count in (1, self.total)):
            self.last = now
            print(f"[{self.desc}] {self.count}/{self.total} {info} ({now - self.start:.1f} s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
