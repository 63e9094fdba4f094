"""python -m research.train --config=experiments/rf.py:dense

RF spectrum frames: train on 4 devices + their idle noise, flag frames of 4 unseen devices.
Variants (``rf.py:<variant>``; none = dense): ``dense`` and ``conv1d`` autoencoders, same data,
split and threshold.

Normal: elektromaten, esaver, ook_overshoot, steckdose_anlernen (held-out time blocks = label 0).
Anomalies: ask, cc1101, enocean, fsk (never seen in training). Features: dB above each capture's
noise floor (see research/data/rf.py). Threshold: mean + 2 std of the validation (normal) errors.
"""

from research.config import base_config, variant

VARIANTS = ("dense", "conv1d")


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    c = base_config("rf", arg)
    c.experiment = f"rf_{arg}"
    c.data.zip_path = ""  # a zip from `python -m data_prep.rf frames`; empty = frame the I/Q folder
    c.data.floor_db = -10.0  # clip deep noise nulls: dB speckle below the floor is pure noise
    c.data.max_frames_per_device = 1000
    c.data.val_fraction = 0.1
    c.data.scaling = "global_standard"
    c.score.normalize = "tv"  # error / the frame's total variation: dense ROC-AUC 0.88 -> 0.92
    c.threshold.method = "mean_std"
    c.threshold.k = 2.0
    c.threshold.fit_on = "val"
    c.analyses = ("baselines",)
    c.baselines = dict(pca_components=0.95, iforest_estimators=200, per_group=True)
    c.model.latent_dim = 16
    c.model.output_activation = "none"
    c.train.epochs = 60
    c.train.batch_size = 64
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every = 20
    if arg == "dense":
        c.model.hidden = (128,)
        c.model.activation = "relu"
    if arg == "conv1d":
        c.model.features = (16, 32, 64)
        c.model.kernel_size = 7
        c.model.stride = 2
        c.model.activation = "gelu"
    return c
