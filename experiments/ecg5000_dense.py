"""ECG5000 seed protocol: dense AE on the 292 TRAIN normals, threshold = 95th percentile of training errors."""

from research.config import base_config


def get_config():
    c = base_config()
    c.experiment = "ecg5000_dense"
    c.data.name = "ecg5000"
    c.data.val_fraction = 0.0  # the seed trains on all 292 normals
    c.data.scaling = "global_minmax"
    c.model.name = "dense"
    c.model.hidden = (64, 32)
    c.model.latent_dim = 16
    c.model.activation = "relu"
    c.model.output_activation = "sigmoid"
    c.train.epochs = 100
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"
    return c
