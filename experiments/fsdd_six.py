"""python -m research.train --config=experiments/fsdd_six.py:dense

Spoken "six" (FSDD) on max-normalised FFT amplitude spectra. Train: sixes of george, jackson,
nicolas. Test: sixes of lucas and yweweler (label 0) against their other digits (label 1). Isolation
Forest and PCA baselines side by side; PaCMAP maps of spectra and of per-frequency errors.
Variants (``fsdd_six.py:<variant>``; none = dense): ``dense`` and ``conv1d`` autoencoders, same data.
"""

from research.config import base_config, variant

VARIANTS = ("dense", "conv1d")


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    c = base_config("fsdd", arg)
    c.experiment = "fsdd_six" if arg == "dense" else f"fsdd_six_{arg}"
    c.data.digit = 6
    c.data.anomaly_digits = ()  # empty = every other digit
    c.data.n_fft = 8192  # zero-pad / crop every recording to 1.02 s
    c.data.n_bins = 128  # 31 Hz bins, 0-4 kHz: averages away the speaker's pitch harmonics (512 bins:
    # AE / PCA / IForest ROC-AUC 0.71 / 0.76 / 0.63; 128: 0.77 / 0.79 / 0.70)
    c.data.val_fraction = 0.1
    c.data.scaling = "none"  # spectra already peak at 1
    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "val"  # held-out sixes of the training speakers; train errors are overfitted
    c.analyses = ("baselines", "fsdd_maps")
    c.fsdd_maps = dict(n_clusters=4)
    c.baselines = dict(pca_components=0.95, iforest_estimators=200)
    c.train.batch_size = 16
    c.train.learning_rate = 1e-3
    if arg == "dense":
        c.model.hidden = (128,)
        c.model.latent_dim = 32  # 8: 0.74, 16: 0.76, 32: 0.77 ROC-AUC
        c.model.activation = "relu"
        c.model.output_activation = "sigmoid"
        c.train.epochs = 300
        c.train.checkpoint_every = 100
    if arg == "conv1d":
        c.model.features = (16, 32, 64)
        c.model.kernel_size = 9
        c.model.stride = 2
        c.model.latent_dim = 16
        c.model.activation = "gelu"
        c.model.output_activation = "none"  # a sigmoid output stalls this model at the mean spectrum
        c.train.epochs = 100
        c.train.checkpoint_every = 50
    return c
