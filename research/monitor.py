"""What a training run shows while it goes, behind one hook per epoch: the progress line with ETA,
TensorBoard events (:mod:`research.event_log`), time to first epoch (:mod:`research.startup`) and,
at the end, which programs came from the compilation cache, both into ``run.json``."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

import numpy as np

from research.event_log import EventLog, final_metrics
from research.progress import Progress
from research.startup import Startup


def _fmt(metrics: Mapping) -> str:
    return " ".join(f"{k}={np.mean(v):.4g}" for k, v in metrics.items())


class RunMonitor:
    """``epoch(n, metrics)`` after every epoch, ``finish(summary, images)`` once; only the lead process writes.

    ``lr`` maps a step count to the learning rate (an optax schedule or a number); ``text`` formats the
    progress line's metrics.
    """

    def __init__(self, config, rundir, startup: Startup, start_epoch: int, steps_per_epoch: int, lr=None,
                 lead: bool = True, text: Callable[[Mapping], str] | None = None):
        run, total = config.run, config.train.epochs
        self.rundir, self.startup, self.lead = rundir, startup, lead
        self.start_epoch, self.steps_per_epoch = start_epoch, steps_per_epoch
        self.progress = Progress(total, start_epoch, desc=config.experiment, enabled=lead,
                                 every=int(run.get("progress_every", 0)))
        self.events = EventLog(rundir.path, resumed_at=start_epoch) if lead and run.get("tensorboard", True) else None
        self.lr = self._rates(lr, start_epoch, total)
        self.last_epoch = start_epoch
        self.text = text or _fmt
        self.startup.mark("setup")
        self._t = time.time()

    def _rates(self, lr, start: int, total: int) -> dict[int, float]:
        """Learning rate at each epoch's last step, all epochs computed in one program."""
        if lr is None or self.events is None or total <= start:
            return {}
        epochs = np.arange(start + 1, total + 1)
        steps = np.maximum(epochs * self.steps_per_epoch - 1, 0)
        if callable(lr):
            import jax

            values = np.asarray(jax.jit(jax.vmap(lr))(steps.astype(np.int32)))
        else:
            values = np.full(len(epochs), float(lr))
        return dict(zip(epochs.tolist(), values.tolist()))

    def epoch(self, epoch: int, metrics: Mapping[str, np.ndarray]) -> None:
        now = time.time()
        seconds, self._t = now - self._t, now
        if epoch == self.start_epoch + 1:
            self.startup.mark("first_epoch")
            self.rundir.update_json("run.json", {"startup": self.startup.record()})
        if self.events is not None:
            self.events.epoch(epoch, metrics, self.lr.get(epoch), seconds)
        self.last_epoch = epoch
        self.progress.update(self.text(metrics))

    def finish(self, summary: Mapping | None = None, images: Iterable = ()) -> None:
        """Closes the progress line and the event file; records the compiled programs in ``run.json``."""
        self.progress.close()
        if self.events is not None:
            if summary is not None:
                self.events.final(self.last_epoch, final_metrics(summary), images)
            self.events.close()
        self.rundir.update_json("run.json", {"compile_cache": self.startup.cache_record()})
