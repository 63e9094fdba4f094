"""``python -m research.train --config=experiments/sdss_cnn_skip.py`` (the seed system as it was:
``--config=experiments/sdss_cnn_skip.py:seed``).

SDSS spectra, CNN autoencoder: train on the galaxies of ``sdss/`` and ``sdss_extra/`` (rest frame,
3600-7400 A, galaxies with ZWARNING = 0), score the held-out galaxies and the quasars and stars, then
find anomalous wavelength regions in every test spectrum (analysis ``sdss_regions``) and rank the test
spectra by the density of their latent codes too (analysis ``latent_density``).

Default detector: the matched filter on the detrended residual (significance in noise sigma of the
summed residual, research/matched_filter.py; tuned by the injection evaluation). The ``seed`` variant
keeps everything of the seed system: ``sdss/`` only, observed frame, any and_mask bit masked, the
window rule (window 50, 95th percentile, range factor 1.5, overall 0.3) on the raw residual.

The spectra are few, so the model is small, trained for many epochs with input noise (denoising)
on the masked, inverse-variance-weighted loss.

No skip connections and a dense 32-number bottleneck: the injection evaluation
(bench/injection_eval.py) measured that with U-Net skips the reconstruction copies 97-100% of an
injected feature (so nothing is left to detect), and that even a skip-free convolutional path with
a narrow channel bottleneck copies 64-93%. ``--config.model.skip_levels=None
--config.model.latent_dim=None`` restores the full U-Net.
"""

import ml_collections

from research.config import base_config
from research.data.sdss_fits import DEFAULT_MASK_BITS


def get_config(variant: str = "default"):
    if variant not in VARIANTS:
        raise ValueError(f"experiments/sdss_cnn_skip.py: unknown variant {variant!r}; choose one of {VARIANTS}")
    c = base_config()
    c.experiment = "sdss_cnn_skip" if variant == "default" else f"sdss_cnn_skip_{variant}"
    c.smoke_epochs = 2
    c.data.name = "sdss"
    c.data.folders = ("sdss", "sdss_extra")  # under the data root, used when data.path is unset
    c.data.cache_dir = ml_collections.config_dict.placeholder(str)
    c.data.frame = "rest"  # or 'observed'
    # the galaxies' common rest-frame range ([OII] 3727 to [SII] 6731); a spectrum with < min_good_fraction
    # of it covered (quasars at z > ~1.3) is skipped and listed in the ingestion report
    c.data.wave_range = (3600.0, 7400.0)
    c.data.min_good_fraction = 0.1
    # and_mask bits that mask a pixel (ivar = 0 always does): SPPIXMASK names (or bit numbers; "ANY" = every
    # bit), by default the bits that mean bad data, not the informational ones (sdss_fits.DEFAULT_MASK_BITS)
    c.data.mask_bits = DEFAULT_MASK_BITS
    c.data.zwarning_ok = True  # leave out galaxies with ZWARNING != 0 (their rest frame is not trusted)
    c.data.n_train = 0  # > 0: a seeded subset of that many training galaxies (learning curves)
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

    c.train.epochs = 150  # ~1,500 steps on ~80 galaxies, as the seed's 500 epochs on 21 galaxies
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
    c.regions.method = "matched_filter"  # or 'window', the seed rule (research/regions.py)
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
    c.regions.detrend_width = 201
    c.regions.noise_width = 0
    c.regions.only_anomalous = False
    c.regions.sample_n = 0  # 0 = every selected spectrum
    c.regions.seed = 0
    c.regions.image_dir = ml_collections.config_dict.placeholder(str)  # SDSS cutouts <id>.jpg
    c.regions.chunk_size = 256
    # latent-density score (research/analyses/latent_density.py): a BIC-chosen Gaussian mixture on the
    # training galaxies' latent codes
    c.latent = ml_collections.ConfigDict()
    c.latent.max_components = 4
    c.latent.covariance_types = ("full", "diag")
    c.latent.reg_covar = 1e-3
    c.latent.seed = 0
    c.analyses = ("sdss_regions", "latent_density")
    if variant == "seed":
        c.data.folders = ("sdss",)
        c.data.frame = "observed"
        c.data.wave_range = None
        c.data.mask_bits = ("ANY",)
        c.data.zwarning_ok = False
        c.train.epochs = 500
        c.regions.method = "window"
        c.regions.detrend_width = 0
        c.analyses = ("sdss_regions",)
    return c


VARIANTS = ("default", "seed")
