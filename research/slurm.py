"""What a run takes from its SLURM job: its name, so that a requeued job finds its checkpoint."""

from __future__ import annotations

import os
import time
from typing import Mapping

import jax
import numpy as np


def job_run_name(env: Mapping[str, str] | None = None) -> str | None:
    """``<jobid>``, or ``<arrayjobid>_<taskid>`` for an array task; ``None`` outside SLURM."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def apply_run_defaults(config, env: Mapping[str, str] | None = None) -> None:
    """Names an unnamed run after its SLURM job; a requeued job (SLURM_RESTART_COUNT > 0) resumes
    (``run.resume='auto'``: from its checkpoint if it wrote one).

    A requeued job keeps its id, so it finds its own run directory and checkpoint. An explicit
    ``run.name`` is kept. Several processes outside SLURM share process 0's timestamp name, so they
    agree on the run directory.
    """
    env = os.environ if env is None else env
    if config.run.name is None:
        name = job_run_name(env)
        if name is not None:
            config.run.name = name
        elif jax.process_count() > 1:
            from jax.experimental import multihost_utils

            stamp = int(multihost_utils.broadcast_one_to_all(np.int32(time.time())))
            config.run.name = time.strftime("%Y%m%d-%H%M%S", time.localtime(stamp))
    if int(env.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and config.run.resume is False:
        config.run.resume = "auto"  # resume when the first run got to a checkpoint, else start afresh
