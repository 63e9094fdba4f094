"""Multi-process start-up with JAX's own runtime: ``jax.distributed.initialize()``.

Called once, before any JAX computation. Under SLURM (an ``srun`` step with more than one task)
JAX detects coordinator, process count and id from the SLURM environment itself; elsewhere (e.g.
two processes on 127.0.0.1 in the tests) ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID`` name them. One process with no such environment runs as before. On CPU the
cross-process collectives are gloo (JAX's default).
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

from research.errors import InputError


def _int(env: Mapping[str, str], key: str) -> int:
    value = env.get(key)
    if value is None:
        raise InputError(f"environment {key}: required with JAX_COORDINATOR_ADDRESS")
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment {key}: {value!r} is not an integer") from None


def mode(env: Mapping[str, str] | None = None) -> str | None:
    """``'explicit'``, ``'slurm'`` or ``None`` (single process) for this environment."""
    env = os.environ if env is None else env
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "explicit"
    if int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1:  # set by srun, not in the batch shell
        return "slurm"
    return None


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
    """Initialises the distributed runtime when this process is one of several; returns whether it did."""
    env = os.environ if env is None else env
    how = mode(env)
    if how is None:
        return False
    if how == "explicit":
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], _int(env, "JAX_NUM_PROCESSES"),
                                   _int(env, "JAX_PROCESS_ID"), cluster_detection_method="deactivate")
    else:
        jax.distributed.initialize()  # SLURM auto-detection; on GPUs one device per task (SLURM_LOCALID)
    return True
