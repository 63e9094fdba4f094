"""Reconstruction-based anomaly detection with JAX: models, training, scoring, regions, plots."""
