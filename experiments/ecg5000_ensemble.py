"""ECG5000 best config: five dense autoencoders (seeds 0-4) trained as one vmapped program.

The test score is the ensemble-mean error; ``metrics.json["members"]`` also scores each member
alone, which gives the mean ± std over the five seeds.
"""

from experiments import ecg5000_dense


def get_config():
    c = ecg5000_dense.get_config()
    c.experiment = "ecg5000_ensemble"
    c.train.ensemble_size = 5
    return c
