"""The SDSS experiment config: the working defaults and the seed system as a named variant."""

import importlib.util

from conftest import REPO, run_cli

from research.data.sdss_fits import DEFAULT_MASK_BITS, mask_bit_value


def _config(variant=None):
    spec = importlib.util.spec_from_file_location("sdss_cnn_skip", REPO / "experiments" / "sdss_cnn_skip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


def test_seed_variant_is_the_seed_system():
    seed = _config("seed")
    assert seed.regions.method == "window" and seed.regions.detrend_width == 0
    assert seed.regions.model_error_quantile == 0.0 and seed.regions.line_tolerance == 0.0
    assert seed.regions.local_scale_block == 0
    assert (seed.regions.window_size, seed.regions.percentile_threshold, seed.regions.range_mismatch_factor,
            seed.regions.overall_anomaly_threshold) == (50, 95.0, 1.5, 0.3)
    assert seed.data.folders == ("sdss",) and seed.data.frame == "observed" and seed.data.wave_range is None
    assert mask_bit_value(seed.data.mask_bits) == -1 and not seed.data.zwarning_ok and seed.train.epochs == 500
    default = _config()
    assert default.regions.method == "matched_filter" and default.regions.detrend_width == 201
    assert default.regions.model_error_quantile == 0.75 and default.regions.line_tolerance == 0.7
    assert (default.regions.significance, default.regions.merge_gap, default.regions.local_scale_block) == (5.5, 96, 4096)
    assert default.data.folders == ("sdss", "sdss_extra") and default.data.frame == "rest"
    assert default.data.mask_bits == DEFAULT_MASK_BITS and default.data.zwarning_ok
    assert "latent_density" in default.analyses


def test_seed_variant_on_the_command_line(tmp_path):
    run = run_cli(["--config=experiments/sdss_cnn_skip.py:seed", f"--config.run.root={tmp_path}",
                   "--config.run.name=s", "--print_run_dir"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "sdss_cnn_skip_seed" / "s")
