"""Reconstruction-based anomaly detection with JAX: models, training, scoring, regions, plots.

``research.load_run(path)``: a finished run for notebooks (score, reconstruct, regions of new data).
"""


def load_run(path):
    """A finished run directory as a :class:`research.apply.Run` (``.score``, ``.reconstruct``, ``.regions``)."""
    from research.apply import load_run as _load_run

    return _load_run(path)
