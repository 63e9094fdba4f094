"""Model registry: ``config.model.name`` picks a class, the other keys are its fields."""

import dataclasses

import flax.linen as nn

from research.errors import InputError
from research.models.conv1d import Conv1DAE
from research.models.dense import DenseAE

MODELS: dict[str, type[nn.Module]] = {
    "dense": DenseAE,
    "conv1d": Conv1DAE,
}


def register(name: str):
    def wrap(cls):
        MODELS[name] = cls
        return cls
    return wrap


def build_model(model_config) -> nn.Module:
    """Instantiates the model named in the config; unknown names or fields are one-line errors."""
    cfg = dict(model_config)
    name = cfg.pop("name")
    if name not in MODELS:
        raise InputError(f"config key model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise InputError(f"config key model.{unknown[0]}: not a field of {cls.__name__} (fields: {sorted(fields)})")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return cls(**cfg)
