"""The config schema: every key a run reads, declared once with its default, and one table of bounds.

:func:`base_config` declares the keys every experiment has. A data loader (``research/data/<name>.py``)
declares its own ``data.*`` keys in a ``DEFAULTS`` dict, a model its ``model.*`` keys as the fields of
its ``flax.linen`` module (``research/models/``), an analysis (``research/analyses/``) its option block in
``DEFAULTS`` (named by its ``CONFIG_BLOCK``); ``base_config(data=..., model=..., analyses=...)`` adds the
blocks of the chosen loader, model and analyses, so every key can be overridden with ``--config.a.b=value``.
:func:`resolve` refuses unknown keys (with "did you mean"), wrong types and values outside
:data:`BOUNDS` before any data is read.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import operator
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from research.errors import InputError


def base_config(data: str | None = None, model: str | None = None, analyses=()) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "experiment"  # run directories go to <run.root>/<experiment>/<run.name>
    c.runner = "reconstruction"  # what research.train runs: reconstruction | one_class (research/runners.py)
    c.seed = 0  # member i of an ensemble is seeded with seed + i
    c.smoke = False  # True: a seconds-long run (smoke_epochs epochs on smoke_limit rows)
    c.smoke_epochs = 2
    c.smoke_limit = 512

    c.data = ml_collections.ConfigDict()
    c.data.name = ""  # the loader (research/data/__init__.py LOADERS); its keys are its DEFAULTS
    c.data.root = config_dict.placeholder(str)  # data root; None = $RESEARCH_DATA, else ../shared/data
    c.data.path = config_dict.placeholder(str)  # the dataset's own file or folder, instead of root/<name>
    c.data.val_fraction = 0.1  # seeded fraction of the normal training rows held out; 0 = validate on train
    c.data.scaling = "none"  # none | minmax | standard | global_minmax | global_standard, fitted on train
    c.data.limit = 0  # max rows per split (0 = all)
    c.data.score_only = False  # set by research.score: every sample read into the test split, nothing trained
    # in_memory: the dataset on every device for the whole run (the fast path while it fits); sharded:
    # data.path is a merged shard folder (python -m data_prep.sdss --format shards), streamed by grain
    c.data.format = "in_memory"
    c.data.workers = 0  # sharded: grain reading processes per training process (0 = in the training process)
    c.data.chunk = 8  # sharded: batches prefetched and run per compiled call (a stop is seen between calls)

    c.model = ml_collections.ConfigDict()
    c.model.name = "dense"  # research/models/__init__.py MODELS; its keys are the module's fields

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 50
    c.train.batch_size = 32  # the global batch (split over all devices of all processes)
    c.train.optimizer = "adam"  # adam | adamw | sgd
    c.train.learning_rate = 1e-3
    c.train.schedule = "constant"  # constant | cosine | warmup_cosine
    c.train.warmup_epochs = 1  # warmup_cosine: epochs of linear warm-up
    c.train.final_lr_fraction = 0.0  # cosine schedules end at learning_rate times this
    c.train.weight_decay = 1e-4  # adamw only
    c.train.momentum = 0.9  # sgd only
    c.train.grad_clip = 0.0  # clip by global norm; 0 = off
    c.train.loss = "mse"  # mse | mae (masked, weighted)
    c.train.ensemble_size = 1
    c.train.member_chunk = 0  # members trained side by side (one vmap), the chunks in sequence; 0 = all at once
    c.train.input_noise = 0.0  # std of Gaussian noise added to training inputs (denoising AE)
    c.train.max_shift = 0  # augmentation: roll each 1-D training sample by up to this many positions
    c.train.mixup = 0.0  # augmentation: alpha of Beta(alpha, alpha) mixing pairs of training samples; 0 = off
    # augmentation for 1-D spectra: lines (excess over a line_width-px running median) scaled by factors in
    # [1/line_scale, line_scale], drawn at each end and log-linear between (research.training.line_scaled); 0 = off
    c.train.line_scale = 0.0
    c.train.line_width = 51
    c.train.eval_batch_size = 1024  # rows per chunk when predicting
    c.train.checkpoint_every = 10  # epochs; 0 = only at the end
    c.train.steps_per_call = 0  # steps per compiled call (a stop request is seen between calls); 0 = a whole epoch
    c.train.use_best = True  # score with the best-validation parameters

    c.score = ml_collections.ConfigDict()
    c.score.normalize = "none"  # none | tv: error / the sample's total variation (input complexity)

    c.threshold = ml_collections.ConfigDict()
    c.threshold.method = "percentile"  # percentile | mean_std | median_mad
    c.threshold.k = 2.0  # mean_std / median_mad: how many std (or MAD-sigmas) above the centre
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"  # train | val | test

    c.plots = ml_collections.ConfigDict()
    c.plots.enabled = True
    c.plots.n_examples = 4

    c.analyses = ()  # research/analyses/__init__.py ANALYSES, run after scoring

    c.run = ml_collections.ConfigDict()
    c.run.root = "runs"
    c.run.name = config_dict.placeholder(str)  # None = a timestamp (or the SLURM job id)
    # continue <run.root>/<experiment>/<run.name> from its latest checkpoint: False (a new run; an existing
    # name is refused), True (a checkpoint is required) or 'auto' (resume if there is one: SLURM requeues)
    c.run.resume = config_dict.FieldReference(False, field_type=object)
    c.run.max_restarts = 20  # a SLURM job that stopped on SIGUSR1 is requeued at most this many times
    c.run.compile_cache = "auto"  # XLA's persistent cache: a folder, "off", or auto (research/compile_cache.py)
    c.run.tensorboard = True  # TensorBoard event files in the run directory as training goes
    c.run.progress_every = 0  # batch logs: a progress line every N epochs too (0 = every 20 s only)
    if data is not None:
        c.data.name = data
        c.data.update(data_defaults(data))
    if model is not None:
        c.model.name = model
        c.model.update(model_defaults(model))
    if analyses:
        c.analyses = tuple(analyses)
        for block, declared in analysis_blocks(analyses).items():
            if declared is not None:
                c[block] = ml_collections.ConfigDict(declared)
    return c


BOUNDS: dict[str, str] = {
    # key -> condition(s) its value must meet, joined by ","; checked by resolve() before any data is read.
    # train.batch_size is also checked against the training set once it is loaded (research/pipeline.py).
    "seed": ">= 0",
    "smoke_epochs": ">= 1",
    "smoke_limit": ">= 1",
    "data.val_fraction": ">= 0, < 1",
    "data.limit": ">= 0",
    "data.workers": ">= 0",
    "data.chunk": ">= 1",
    "train.epochs": ">= 1",
    "train.batch_size": ">= 1",
    "train.learning_rate": "> 0",
    "train.warmup_epochs": ">= 0",
    "train.final_lr_fraction": ">= 0, <= 1",
    "train.weight_decay": ">= 0",
    "train.momentum": ">= 0, < 1",
    "train.grad_clip": ">= 0",
    "train.ensemble_size": ">= 1",
    "train.member_chunk": ">= 0",
    "train.input_noise": ">= 0",
    "train.max_shift": ">= 0",
    "train.mixup": ">= 0",
    "train.line_scale": ">= 0",
    "train.line_width": ">= 3",
    "train.eval_batch_size": ">= 1",
    "train.checkpoint_every": ">= 0",
    "train.steps_per_call": ">= 0",
    "run.max_restarts": ">= 0",
    "threshold.percentile": ">= 0, <= 100",
    "plots.n_examples": ">= 1",
    "run.progress_every": ">= 0",
}

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def check_value(key: str, value) -> None:
    """One-line error when ``value`` breaks the bounds of ``key`` in :data:`BOUNDS` (or is not finite)."""
    bounds = BOUNDS.get(key)
    if bounds is None or value is None:
        return
    for cond in bounds.split(","):
        op, limit = cond.split()
        if not (isinstance(value, (int, float)) and math.isfinite(value) and _OPS[op](value, float(limit))):
            raise InputError(f"config key {key}: must be {bounds}, got {value!r}")


def data_defaults(name: str) -> dict:
    """The ``DEFAULTS`` of the loader ``data.name`` (keys beyond the common ones of base_config)."""
    from research.data import LOADERS

    if name not in LOADERS:
        raise InputError(f"config key data.name: unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return fresh(getattr(importlib.import_module(LOADERS[name].split(":")[0]), "DEFAULTS", {}))


def fresh(defaults: Mapping[str, Any]) -> dict:
    """A copy of a ``DEFAULTS`` dict with a new reference for every placeholder: a config setting a
    placeholder key sets the reference's value, which must not change the module's own defaults."""
    return {k: config_dict.FieldReference(v.get(), field_type=v.get_type())
            if isinstance(v, config_dict.FieldReference) else v for k, v in defaults.items()}


def model_defaults(name: str) -> dict:
    """The fields of the model ``model.name`` with their defaults."""
    from research.models import model_class

    return {f.name: config_dict.placeholder(field_type(f.type)) if f.default is None else f.default
            for f in dataclasses.fields(model_class(name))
            if f.name not in ("parent", "name") and f.default is not dataclasses.MISSING}


def with_defaults(cfg, defaults: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """``config.data`` with every key it lacks (common or the loader's ``DEFAULTS``) at its default; loaders
    call it on the block they are given."""
    return complete(cfg, {**base_config().data.to_dict(), **defaults})


def field_type(annotation) -> type:
    """The type a ``None``-default field (of a model, a detector) takes from the command line (``int | None`` -> int)."""
    text = str(annotation)
    return next((t for word, t in (("Sequence", tuple), ("str", str), ("float", float), ("int", int))
                 if word in text), object)


def complete(block, defaults: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of a config block with every declared key it lacks set to its default."""
    out = ml_collections.ConfigDict({k: v.get() if isinstance(v, config_dict.FieldReference) else v
                                     for k, v in defaults.items()})
    out.update(dict(block))
    return out


def _type_ok(value, default) -> bool:
    if isinstance(default, config_dict.FieldReference):
        if default.get_type() is object:
            return True
        default = default.get()
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(default))


def check_block(prefix: str, block: Mapping, declared: Mapping) -> None:
    for key, value in block.items():
        name = f"{prefix}{key}"
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise InputError(f"config key {name}: unknown key{hint}")
        if not _type_ok(value, declared[key]):
            raise InputError(f"config key {name}: expected {type(declared[key]).__name__}, "
                             f"got {type(value).__name__} {value!r}")


def analysis_blocks(names) -> dict[str, dict | None]:
    """The option block of each listed analysis (``research/analyses/``) -> its ``DEFAULTS`` dict, or what its
    ``defaults()`` returns when the keys are gathered from a registry (None: the analysis has no options)."""
    from research.analyses import ANALYSES

    blocks = {}
    for name in names or ():
        if name not in ANALYSES:
            raise InputError(f"config key analyses: unknown analysis {name!r}; choose from {sorted(ANALYSES)}")
        module = importlib.import_module(ANALYSES[name].split(":")[0])
        declared = getattr(module, "DEFAULTS", None)
        if declared is None and hasattr(module, "defaults"):
            declared = module.defaults()
        blocks[getattr(module, "CONFIG_BLOCK", name)] = None if declared is None else fresh(declared)
    return blocks


def check(config: ml_collections.ConfigDict) -> None:
    """Unknown keys, wrong types and out-of-bounds values of a whole config, as one-line errors."""
    schema, config = base_config().to_dict(preserve_field_references=True), config.to_dict()
    blocks = analysis_blocks(config.get("analyses"))
    if any(isinstance(v, Mapping) and k not in schema and k not in blocks for k, v in config.items()):
        from research.analyses import ANALYSES  # the block of an analysis not listed (analyses overridden)

        blocks = {**analysis_blocks(ANALYSES), **blocks}
    for block, declared in blocks.items():
        if declared is not None and isinstance(config.get(block), Mapping):
            check_block(f"{block}.", config[block], declared)
    top = {k: v for k, v in config.items() if k not in blocks}
    check_block("", {k: v for k, v in top.items() if not isinstance(v, Mapping) or k not in schema},
                 {k: v for k, v in schema.items() if not isinstance(v, Mapping)})
    schema["data"].update(data_defaults(config["data"]["name"]))
    schema["model"].update(model_defaults(config["model"]["name"]))
    for block in ("data", "model", "train", "score", "threshold", "plots", "run"):
        check_block(f"{block}.", config[block], schema[block])
    for key in BOUNDS:
        block, _, leaf = key.rpartition(".")
        check_value(key, (config[block] if block else config).get(leaf))


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A checked copy with the smoke settings applied; the copy is what a run records and uses."""
    config = ml_collections.ConfigDict(config.to_dict())
    # to_dict() loses the untyped reference of run.resume (False, True or 'auto', set on a SLURM requeue)
    run = config.run.to_dict()
    run["resume"] = config_dict.FieldReference(run["resume"], field_type=object)
    config.run = ml_collections.ConfigDict(run)
    check(config)
    if config.smoke:
        config.train.epochs = min(config.train.epochs, config.smoke_epochs)
        config.data.limit = config.smoke_limit
        config.train.checkpoint_every = 1
    return config


def variant(arg: str | None, choices: tuple[str, ...]) -> str:
    """The variant ``arg`` of a config file (``--config=experiments/x.py:<arg>``); None = the first."""
    if arg is None:
        return choices[0]
    if arg not in choices:
        raise InputError(f"unknown variant {arg!r}; choose one of {', '.join(choices)}")
    return arg
