"""python -m research.train --config=experiments/sdss_cnn_skip.py

SDSS spectra, CNN-skip autoencoder: train on galaxies, score held-out galaxies and other classes,
then find anomalous wavelength regions in every test spectrum (analysis ``sdss_regions``).

47 real spectra are few, so the model is small, trained for many epochs with input noise
(denoising) on the masked, inverse-variance-weighted loss.

No skip connections and a dense 32-number bottleneck: the injection evaluation
(bench/injection_eval.py) measured that with U-Net skips the reconstruction copies 97-100% of an
injected feature (so nothing is left to detect), and that even a skip-free convolutional path with
a narrow channel bottleneck copies 64-93%. ``--config.model.skip_levels=None
--config.model.latent_dim=None`` restores the full U-Net.
"""

import ml_collections

from research.config import base_config


def get_config():
    c = base_config("sdss", "cnn_skip")
    c.experiment = "sdss_cnn_skip"
    c.smoke_epochs = 2
    c.data.name = "sdss"
    c.data.cache_dir = ml_collections.config_dict.placeholder(str)
    c.data.frame = "observed"  # or 'rest' (grid from each spectrum's z)
    c.data.norm = "median"
    c.data.norm_window = ml_collections.config_dict.placeholder(tuple)
    c.data.train_classes = ("GALAXY",)
    c.data.holdout_fraction = 0.25  # of the train classes, kept for the test split (label 0)
    c.data.split_seed = 0
    c.data.n_folds = 0  # > 1: hold out fold data.fold of n_folds instead (cross-validation)
    c.data.fold = 0
    c.data.ivar_weighting = True
    c.data.val_fraction = 0.1
    c.data.scaling = "none"  # spectra are already normalised by their median flux

    c.model.name = "cnn_skip"
    c.model.features = (16, 32, 64, 64)
    c.model.kernel_size = 7
    c.model.skip_levels = ()
    c.model.latent_dim = 32
    c.model.activation = "gelu"
    c.model.output_activation = "none"

    c.train.epochs = 500
    c.train.batch_size = 7
    c.train.learning_rate = 2e-3
    c.train.schedule = "cosine"
    c.train.input_noise = 0.05
    # mixup of pairs of galaxies (a composite of two galaxies' light is still a galaxy): on the held-out
    # galaxies the median |residual|/sigma of the brightest fell from 2.2 to 1.4 (bench/injection_eval.py)
    c.train.mixup = 0.4
    c.train.checkpoint_every = 200
    c.train.eval_batch_size = 64

    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"

    c.regions = ml_collections.ConfigDict()
    c.regions.method = "window"  # the seed rule below, or 'matched_filter' (research/matched_filter.py)
    c.regions.window_size = 50
    c.regions.percentile_threshold = 95.0
    c.regions.range_mismatch_factor = 1.5  # 0 turns the range test off
    c.regions.overall_anomaly_threshold = 0.3
    c.regions.threshold_scope = "spectrum"  # 'spectrum' or 'global'
    c.regions.noise_units = False  # True: absolute residuals in sigma (uses ivar)
    c.regions.abs_threshold = ml_collections.config_dict.placeholder(float)  # fixed instead of the percentile
    c.regions.rel_threshold = ml_collections.config_dict.placeholder(float)  # 0 = the relative test always passes
    # residual preprocessing (research/residuals.py), 0 = off: detrend_width = width (px) of the running
    # median of orig - recon added to the reconstruction, removing the smooth model misfit (wider than
    # the features to keep: 201 in the injection evaluation); noise_width = local robust noise scale
    # (needs noise_units)
    # matched filter: significance (sigma) of the summed residual in windows of these widths (px),
    # flagged runs closer than merge_gap px joined; local_scale_block > 0 rescales the significance
    # by its robust scale in blocks of that many pixels. Values tuned by bench/injection_eval.py
    # (with detrend_width=201).
    c.regions.scales = (4, 8, 16, 32, 64)
    c.regions.significance = 8.0
    c.regions.merge_gap = 32
    c.regions.local_scale_block = 0
    c.regions.min_coverage = 0.5
    c.regions.detrend_width = 0
    c.regions.noise_width = 0
    c.regions.only_anomalous = False
    c.regions.sample_n = 0  # 0 = every selected spectrum
    c.regions.top_n = 10  # data.format=sharded: figures of the top_n highest scores plus the sample_n sample
    c.regions.seed = 0
    c.regions.image_dir = ml_collections.config_dict.placeholder(str)  # SDSS cutouts <id>.jpg
    c.regions.chunk_size = 256
    c.analyses = ("sdss_regions",)
    return c
