"""Spoken "six" (FSDD), Conv1D AE: same data, split, baselines and maps as fsdd_six."""

from experiments.fsdd_six import fsdd_data
from research.config import base_config


def get_config():
    c = fsdd_data(base_config())
    c.experiment = "fsdd_six_conv1d"
    c.model.name = "conv1d"
    c.model.features = (16, 32, 64)
    c.model.kernel_size = 9
    c.model.stride = 2
    c.model.latent_dim = 16
    c.model.activation = "gelu"
    c.model.output_activation = "none"  # a sigmoid output stalls this model at the mean spectrum
    c.train.epochs = 100
    c.train.batch_size = 16
    c.train.learning_rate = 1e-3
    c.train.checkpoint_every = 50
    return c
