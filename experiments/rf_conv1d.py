"""RF spectrum frames, Conv1D AE: same data, split and threshold as rf_dense."""

from experiments.rf_dense import rf_data
from research.config import base_config


def get_config():
    c = rf_data(base_config())
    c.experiment = "rf_conv1d"
    c.model.name = "conv1d"
    c.model.features = (16, 32, 64)
    c.model.kernel_size = 7
    c.model.stride = 2
    c.model.latent_dim = 16
    c.model.activation = "gelu"
    c.model.output_activation = "none"
    c.train.epochs = 60
    c.train.batch_size = 64
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every = 20
    return c
