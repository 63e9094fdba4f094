"""Figures: ``standard`` (every run: loss curves, error histogram and scatter, reconstructions, ROC),
``images`` (image datasets and the one-class benchmark). The per-spectrum region figure is
:mod:`research.regions.plots`; an analysis's own figures live with it in ``research/analyses/``."""

from research.plots.standard import error_histogram, error_scatter, loss_curves, reconstruction_examples, roc_curve

__all__ = ["error_histogram", "error_scatter", "loss_curves", "reconstruction_examples", "roc_curve"]
