"""RF spectrum frames, dense AE: train on 4 devices + their idle noise, flag frames of 4 unseen devices.

Normal: elektromaten, esaver, ook_overshoot, steckdose_anlernen (held-out time blocks = label 0).
Anomalies: ask, cc1101, enocean, fsk (never seen in training). Features: dB above each capture's
noise floor (see research/data/rf.py). Threshold: mean + 2 std of the validation (normal) errors.
"""

from research.config import base_config


def rf_data(c):
    """The data block shared by the RF experiments."""
    c.data.name = "rf"
    c.data.zip_path = ""  # a zip from `python -m data_prep.rf frames`; empty = frame the I/Q folder
    c.data.frame_length = 256
    c.data.hop = 128
    c.data.window = "hann"
    c.data.db = True
    c.data.floor_db = -10.0  # clip deep noise nulls: dB speckle below the floor is pure noise
    c.data.sample_rate = 1e6  # not recorded in the captures; only labels the frequency axis
    c.data.normal_devices = ("elektromaten", "esaver", "ook_overshoot", "steckdose_anlernen")
    c.data.anomaly_devices = ("ask", "cc1101", "enocean", "fsk")
    c.data.idle_noise = True
    c.data.active_db = 10.0
    c.data.idle_db = 6.0
    c.data.dc_guard = 2
    c.data.block = 16
    c.data.test_fraction = 0.25
    c.data.max_frames_per_device = 1000
    c.data.split_seed = 0
    c.data.val_fraction = 0.1
    c.data.scaling = "global_standard"
    c.score.normalize = "tv"  # error / the frame's total variation: dense ROC-AUC 0.88 -> 0.92
    c.threshold.method = "mean_std"
    c.threshold.k = 2.0
    c.threshold.fit_on = "val"
    c.analyses = ("baselines",)
    c.baselines = dict(pca_components=0.95, iforest_estimators=200, per_group=True)
    return c


def get_config():
    c = rf_data(base_config())
    c.experiment = "rf_dense"
    c.model.name = "dense"
    c.model.hidden = (128,)
    c.model.latent_dim = 16
    c.model.activation = "relu"
    c.model.output_activation = "none"
    c.train.epochs = 60
    c.train.batch_size = 64
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every = 20
    return c
