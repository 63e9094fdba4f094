"""Experiment-specific analyses that run after training and scoring.

``config.analyses`` lists names; each maps to ``"module:function"`` and is called as
``function(ctx)`` with a :class:`RunContext`. It may write files under ``ctx.run.path`` and return
a dict of numbers that is merged into ``metrics.json`` under its name.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from research.errors import InputError

ANALYSES: dict[str, str] = {
    "sdss_regions": "research.analyses.sdss_regions:run",
    "baselines": "research.analyses.baselines:run",
    "fsdd_maps": "research.analyses.fsdd_maps:run",
    "image_examples": "research.analyses.image_examples:run",
    "latent_density": "research.analyses.latent_density:run",
}


@dataclasses.dataclass
class RunContext:
    config: Any  # the resolved ml_collections.ConfigDict
    dataset: Any  # research.data.Dataset (after scaling; the scaler is in ``scaler``)
    run: Any  # research.rundir.RunDir
    recon_test: np.ndarray  # (K, N_test, ...) reconstructions of every member
    errors: dict[str, np.ndarray]  # per split ('train', 'val', 'test'): ensemble-mean per-sample error
    scaler: Any = None
    trainer: Any = None  # research.training.Trainer (its ``model``), for analyses that run parts of the model
    params: Any = None  # the scored parameters, leading member axis
    model_error: Any = None  # sdss_regions: the model error the training run calibrated (scoring new data)


def _module(name: str):
    if name not in ANALYSES:
        raise InputError(f"config key analyses: unknown analysis {name!r}; choose from {sorted(ANALYSES)}")
    module, func = ANALYSES[name].split(":")
    return importlib.import_module(module), func


def check_analyses(config) -> None:
    """Fails before training on an unknown analysis or on settings its ``check(config)`` rejects."""
    for name in config.get("analyses") or ():
        module, _ = _module(name)
        if hasattr(module, "check"):
            module.check(config)


def run_analyses(names, ctx: RunContext) -> dict:
    results = {}
    for name in names:
        module, func = _module(name)
        results[name] = getattr(module, func)(ctx) or {}
    return results
