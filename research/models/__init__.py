"""Model registry: ``config.model.name`` picks a class, the other keys are its fields."""

import dataclasses
import importlib

import flax.linen as nn

from research.errors import InputError

MODELS: dict[str, str] = {
    # name -> "module:Class", imported on use
    "dense": "research.models.dense:DenseAE",
    "conv1d": "research.models.conv1d:Conv1DAE",
    "cnn_skip": "research.models.cnn_skip:CNNSkipAE",
    "conv2d": "research.models.conv2d:Conv2DAE",
}


def model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise InputError(f"config key model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(model_config) -> nn.Module:
    """Instantiates the model named in the config; unknown names or fields are one-line errors."""
    cfg = dict(model_config)
    name = cfg.pop("name")
    cls = model_class(name)
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise InputError(f"config key model.{unknown[0]}: not a field of {cls.__name__} (fields: {sorted(fields)})")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return cls(**cfg)
