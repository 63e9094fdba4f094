"""Defaults every experiment config starts from, and the smoke-run shrink.

An experiment file in ``experiments/`` calls :func:`base_config` and changes what it needs; a run
picks it with ``--config=experiments/X.py`` and overrides any key with ``--config.a.b=value``.
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "experiment"
    c.seed = 0
    c.smoke = False
    c.smoke_epochs = 2
    c.smoke_limit = 512

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.root = config_dict.placeholder(str)
    c.data.path = config_dict.placeholder(str)
    c.data.val_fraction = 0.1
    c.data.scaling = "none"  # none | minmax | standard, fitted on the training split only
    c.data.limit = 0  # max rows per split (0 = all)
    c.data.score_only = False  # set by research.score: every sample read into the test split, nothing trained

    c.model = ml_collections.ConfigDict()
    c.model.name = "dense"

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 50
    c.train.batch_size = 32
    c.train.optimizer = "adam"
    c.train.learning_rate = 1e-3
    c.train.schedule = "constant"
    c.train.weight_decay = 1e-4
    c.train.grad_clip = 0.0
    c.train.loss = "mse"
    c.train.ensemble_size = 1
    c.train.member_chunk = 0  # members trained side by side (one vmap), the chunks in sequence; 0 = all at once
    c.train.input_noise = 0.0
    c.train.max_shift = 0  # augmentation: roll each 1-D training sample by up to this many positions
    c.train.mixup = 0.0  # augmentation: alpha of Beta(alpha, alpha) mixing pairs of training samples; 0 = off
    c.train.eval_batch_size = 1024
    c.train.checkpoint_every = 10  # epochs; 0 = only at the end
    c.train.use_best = True  # score with the best-validation parameters

    c.score = ml_collections.ConfigDict()
    c.score.normalize = "none"  # none | tv: error / the sample's total variation (input complexity)

    c.threshold = ml_collections.ConfigDict()
    c.threshold.method = "percentile"  # percentile | mean_std | median_mad
    c.threshold.k = 2.0
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"  # train | val | test

    c.plots = ml_collections.ConfigDict()
    c.plots.enabled = True
    c.plots.n_examples = 4

    c.analyses = ()

    c.run = ml_collections.ConfigDict()
    c.run.root = "runs"
    c.run.name = config_dict.placeholder(str)
    c.run.resume = False
    return c


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy with the smoke settings applied; the copy is what a run records and uses."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.smoke:
        config.train.epochs = min(config.train.epochs, config.smoke_epochs)
        config.data.limit = config.smoke_limit
        config.train.checkpoint_every = 1
    return config
