"""Runner registry: ``config.runner`` picks what ``python -m research.train`` runs.

A runner module has ``run(config, should_stop=None, log=print) -> summary`` (it reads its data and
calls :func:`research.pipeline.train`) and ``headline(summary) -> str``, the line printed at the end.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from research.errors import InputError

RUNNERS: dict[str, str] = {
    "reconstruction": "research.experiment",  # one dataset, one (ensemble of) autoencoder(s), scored by error
    "one_class": "research.one_class",  # Fashion-MNIST: a model per class, per-class ROC-AUC
}


def get(name: str) -> ModuleType:
    if name not in RUNNERS:
        raise InputError(f"config key runner: unknown runner {name!r}; choose one of {sorted(RUNNERS)}")
    return importlib.import_module(RUNNERS[name])
