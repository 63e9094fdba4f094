"""Preemption: a stop request ends training between two compiled calls with a checkpoint.

A request is SIGUSR1 / SIGTERM sent to the trainer, or the file named by ``$RESEARCH_STOP_FILE``
appearing (the batch scripts in slurm/ write it when they get the signal, so no signal can reach
the trainer before it is ready). SIGUSR1 (sent by SLURM ``--signal=B:USR1@<seconds>`` before the
time limit, or by ``scancel --signal=USR1 --batch``) means "checkpoint and come back": the CLI exits
with :data:`REQUEUE_EXIT` and the batch script requeues the job, which resumes from the checkpoint.
SIGTERM (``scancel``, node shutdown) means "checkpoint and stop": exit 128+15, no requeue.

The trainer polls :class:`StopFlag` before every compiled call (an epoch, or
``train.steps_per_call`` steps); a request after training has finished changes nothing. With
several processes the decision is collective (any process asked -> all stop before the same call),
otherwise one process would enter the checkpoint while another trains on.
"""

from __future__ import annotations

import os
import signal
from typing import Mapping

import numpy as np

REQUEUE_EXIT = 75  # EX_TEMPFAIL: stopped with a checkpoint, run me again
TERMINATED_EXIT = 128 + signal.SIGTERM
NOT_REQUEUED_EXIT = 3  # stopped with a checkpoint on SIGUSR1, but requeueing again would not help
STOP_FILE_ENV = "RESEARCH_STOP_FILE"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    """Callable ``should_stop`` for :func:`research.training.fit`: signals and the stop file.

    :meth:`install` early (before the heavy imports), so that a signal during start-up is a stop
    request and not the default action (death); :meth:`ignore` once the run has returned, so that a
    signal while the interpreter shuts down cannot turn a finished run into exit 128+signal.
    """

    def __init__(self, stop_file: str | None = None):
        self.signum: int | None = None
        self.stopped_by: int | None = None  # the request that actually ended training
        self.stop_file = os.environ.get(STOP_FILE_ENV) if stop_file is None else stop_file

    def install(self) -> "StopFlag":
        for s in SIGNALS:
            signal.signal(s, self._handle)
        return self

    def ignore(self) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)

    def _handle(self, signum, frame) -> None:
        if self.signum is None or signum == signal.SIGTERM:
            self.signum = signum

    def _local(self) -> int:
        """The request seen by this process: 0, SIGUSR1 or SIGTERM (a TERM wins)."""
        requested = self.signum or 0
        if self.stop_file and os.path.exists(self.stop_file):
            try:
                text = open(self.stop_file).read().strip()
            except OSError:
                text = ""
            requested = max(requested, int(signal.SIGTERM if text == "TERM" else signal.SIGUSR1))
        return requested

    def __call__(self) -> bool:
        import jax

        code = self._local()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            code = int(np.max(multihost_utils.process_allgather(np.int32(code))))
        if code:
            self.stopped_by = code
        return bool(code)

    @property
    def exit_code(self) -> int:
        return TERMINATED_EXIT if self.stopped_by == signal.SIGTERM else REQUEUE_EXIT


def stop_exit(stopped_by: int | None, stopped_at_step: int, resumed_at_step: int | None, max_restarts: int,
              env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Exit status and log line of a run that stopped with a checkpoint.

    SIGUSR1 asks for a requeue, which is refused (:data:`NOT_REQUEUED_EXIT`) when the job has been
    requeued ``max_restarts`` times already, or when it was requeued and gained no step since: the
    next cycle would stop in the same place, for ever.
    """
    env = os.environ if env is None else env
    if stopped_by == signal.SIGTERM:
        return TERMINATED_EXIT, f"stopped on SIGTERM at step {stopped_at_step}, checkpoint written; not requeued"
    restarts = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    if restarts >= max_restarts:
        return NOT_REQUEUED_EXIT, (f"not requeued: the job was requeued {restarts} times already "
                                   f"(run.max_restarts={max_restarts}); checkpoint at step {stopped_at_step}")
    if restarts > 0 and resumed_at_step is not None and stopped_at_step <= resumed_at_step:
        return NOT_REQUEUED_EXIT, (f"not requeued: no step gained since the restart (still at step {stopped_at_step}): "
                                   "the stop request came before the first call ended; give the job more --time, "
                                   "a smaller T in --signal=B:USR1@T, or a lower train.steps_per_call")
    return REQUEUE_EXIT, f"stopped on SIGUSR1 at step {stopped_at_step}, checkpoint written; exit {REQUEUE_EXIT} (requeue me)"
