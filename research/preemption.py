"""Preemption: a signal asks the trainer to stop at the next epoch boundary and checkpoint.

SIGUSR1 (sent by SLURM ``--signal=B:USR1@<seconds>`` before the time limit, or by
``scancel --signal=USR1``) means "checkpoint and come back": the CLI exits with
:data:`REQUEUE_EXIT` and the batch script requeues the job, which resumes from the checkpoint.
SIGTERM (``scancel``, node shutdown) means "checkpoint and stop": exit 128+15, no requeue.

An epoch is one compiled ``lax.scan``, so "finish the current step" is "finish the current epoch".
With several processes the decision is collective (any process signalled -> all stop after the
same epoch), otherwise one process would enter the checkpoint while another trains on.
"""

from __future__ import annotations

import signal

import jax
import numpy as np

REQUEUE_EXIT = 75  # EX_TEMPFAIL: stopped with a checkpoint, run me again
TERMINATED_EXIT = 128 + signal.SIGTERM


class StopFlag:
    """Callable ``should_stop`` for :func:`research.experiment.run`; records the first signal."""

    def __init__(self):
        self.signum: int | None = None

    def install(self, signals=(signal.SIGUSR1, signal.SIGTERM)) -> "StopFlag":
        for s in signals:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None or signum == signal.SIGTERM:
            self.signum = signum

    def __call__(self) -> bool:
        local = self.signum is not None
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        codes = multihost_utils.process_allgather(np.int32(self.signum or 0))
        if not local and np.any(codes):
            self.signum = int(np.max(codes))
        return bool(np.any(codes))

    @property
    def exit_code(self) -> int:
        return TERMINATED_EXIT if self.signum == signal.SIGTERM else REQUEUE_EXIT
