"""python -m research.train --config=experiments/sdss_cnn_skip.py

SDSS spectra, CNN autoencoder: train on the galaxies of ``sdss/`` and ``sdss_extra/`` (rest frame,
3600-7400 Å, galaxies with ZWARNING = 0), score the held-out galaxies and the quasars and stars, then
find anomalous wavelength regions in every test spectrum (analysis ``sdss_regions``) and rank the test
spectra by the density of their latent codes too (analysis ``latent_density``). Variants
(``sdss_cnn_skip.py:<variant>``; none = default):

* ``default``: the matched filter on the detrended residual (significance in sigma of the summed residual,
  research/regions/matched_filter.py, over its robust spread in the spectrum); added to the noise, the
  model's own error at each pixel, calibrated on the training galaxies, and near the known lines a part
  of the line's own height; tuned by ``python -m research.regions.injection_cv`` (strict precision 0.81
  at recall 0.90 for 5 sigma features).
* ``seed``: the seed system as it was: ``sdss/`` only, observed frame, any and_mask bit masked, the
  window rule (window 50, 95th percentile, range factor 1.5, overall 0.3) on the raw residual.

The spectra are few, so the model is small, trained for many epochs with input noise (denoising) on
the masked, inverse-variance-weighted loss. No skip connections and a dense 32-number bottleneck: the
injection evaluation measured that with U-Net skips the reconstruction copies 97-100% of an injected
feature (so nothing is left to detect), and that even a skip-free convolutional path with a narrow
channel bottleneck copies 64-93%. ``--config.model.skip_levels=None --config.model.latent_dim=None``
restores the full U-Net.
"""

from research.config import base_config, variant
from research.data.sdss_fits import DEFAULT_MASK_BITS

VARIANTS = ("default", "seed")


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    analyses = ("sdss_regions",) if arg == "seed" else ("sdss_regions", "latent_density")
    c = base_config("sdss", "cnn_skip", analyses=analyses)
    c.experiment = "sdss_cnn_skip" if arg == "default" else f"sdss_cnn_skip_{arg}"
    c.smoke_epochs = 2
    c.data.folders = ("sdss", "sdss_extra")
    c.data.frame = "rest"
    # the galaxies' common rest-frame range ([OII] 3727 to [SII] 6731); a spectrum with < min_good_fraction
    # of it covered (quasars at z > ~1.3) is skipped and listed in the ingestion report
    c.data.wave_range = (3600.0, 7400.0)
    c.data.mask_bits = DEFAULT_MASK_BITS
    c.data.ivar_weighting = True
    c.data.val_fraction = 0.1
    c.data.scaling = "none"  # spectra are already normalised by their median flux

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
    # galaxies the median |residual|/sigma of the brightest fell from 2.2 to 1.4 (injection evaluation)
    c.train.mixup = 0.4
    c.train.checkpoint_every = 200
    c.train.eval_batch_size = 64

    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    c.threshold.fit_on = "train"

    # the matched filter's settings chosen by the cross-validated injection evaluation (research/regions/
    # injection_cv.py: the best strict precision at recall >= 0.9 on its tuning injections): the residual
    # detrended over 201 px; added to the noise, the model's error at each pixel (0.75 quantile over the
    # training galaxies) and, within 6 Å of a known line, 0.7 x the line's observed height (a starburst's
    # lines, stronger than any training galaxy's); each scale's significance over its robust spread in the
    # spectrum (a bright galaxy's continuum misfit is many noise sigma); 5.5 sigma, runs within 96 px joined
    c.regions.method = "matched_filter"
    c.regions.scales = (4, 8, 16, 32, 64)
    c.regions.significance = 5.5
    c.regions.merge_gap = 96
    c.regions.detrend_width = 201
    c.regions.model_error_quantile = 0.75
    c.regions.line_tolerance = 0.7
    c.regions.line_halfwidth = 6.0
    c.regions.local_scale_block = 4096
    if arg == "seed":
        c.data.folders = ("sdss",)
        c.data.frame = "observed"
        c.data.wave_range = None
        c.data.mask_bits = ("ANY",)
        c.data.zwarning_ok = False
        c.train.epochs = 500
        c.regions.method = "window"
        c.regions.window_size = 50
        c.regions.percentile_threshold = 95.0
        c.regions.range_mismatch_factor = 1.5
        c.regions.overall_anomaly_threshold = 0.3
        c.regions.detrend_width = 0
        c.regions.model_error_quantile = 0.0
        c.regions.line_tolerance = 0.0
        c.regions.local_scale_block = 0
    return c
