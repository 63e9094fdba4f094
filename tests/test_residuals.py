"""Residual preprocessing (research/regions/residuals.py): the smooth part of a model misfit goes, a narrow
injected feature stays, masked pixels are ignored; and the detector uses it through the injection
evaluation's detector dict."""

import numpy as np
import pytest

from research.errors import InputError
from research.regions import injection, residuals


def _real_galaxy(data_dir, name="spec-0266-51602-0001.fits"):
    from research.data import sdss_fits as sdss

    path = data_dir / "sdss" / name
    if not path.is_file():
        pytest.skip("SDSS files not found")
    flux, ivar, mask = sdss.resample(sdss.read_spectrum(path), sdss.make_grid(3.59, 3.95))
    norm = np.median(flux[mask])
    return (flux / norm).astype(np.float32), (ivar * norm * norm).astype(np.float32), mask


def _misfit(length):
    """A broad model misfit: a tilt plus a wave ~600 px long, up to 0.2 in normalised flux (several sigma)."""
    px = np.arange(length)
    return (0.1 * (px / length - 0.5) + 0.15 * np.sin(2 * np.pi * px / 600.0)).astype(np.float32)


def test_detrend_removes_a_smooth_misfit_and_keeps_a_narrow_feature(data_dir):
    x, ivar, mask = _real_galaxy(data_dir)
    rng = np.random.default_rng(3)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    # the model: the clean spectrum (plus noise) with a broad misfit, and it ignores the injection
    recon = x + sigma * rng.standard_normal(x.shape).astype(np.float32) + _misfit(len(x))
    injected = {}
    for kind in injection.KINDS:
        new, (start, end, s) = injection.inject_one(x, ivar, mask, kind, 8.0, rng)
        injected[kind] = (new, start, end, s)
    good = mask & (ivar > 0)
    for kind, (new, start, end, s) in injected.items():
        raw = (new - recon) * np.sqrt(ivar)
        fixed = (new - residuals.detrend(new, recon, mask, 151, ivar)) * np.sqrt(ivar)
        outside = good.copy()
        outside[max(start - 100, 0):end + 100] = False
        # before: the misfit dominates (many sigma); after: noise level (median |chi| of N(0, 2) ~ 0.95)
        assert np.median(np.abs(raw[outside])) > 3.0
        assert np.median(np.abs(fixed[outside])) < 1.3
        assert np.percentile(np.abs(fixed[outside]), 99) < 5.0
        # the feature survives: its mean signed residual over the span keeps most of the injection
        added = ((new - x) * np.sqrt(ivar))[start:end][good[start:end]]
        kept = fixed[start:end][good[start:end]]
        assert np.sum(kept * added) / np.sum(added * added) > 0.8, kind


def test_running_median_ignores_masked_pixels():
    rng = np.random.default_rng(0)
    length, width = 600, 41
    values = rng.standard_normal((3, length))
    good = rng.random((3, length)) > 0.2
    good[1, 200:260] = False  # a masked stretch
    good[2] = False  # nothing usable
    garbage = np.where(good, values, 1e6)  # masked values must not matter
    got = residuals.running_median(garbage, good, width)
    assert np.allclose(got, residuals.running_median(np.where(good, values, -7.0), good, width))
    assert np.array_equal(got[2], np.zeros(length))
    for i in (0, 1):
        idx = np.flatnonzero(good[i])
        usable = values[i, idx]
        for k in range(width // 2, len(idx) - width // 2, 37):  # away from the ends: exact window medians
            assert got[i, idx[k]] == pytest.approx(np.median(usable[k - width // 2:k + width // 2 + 1]))
        gap = np.flatnonzero(~good[i])
        assert np.all(np.abs(got[i, gap]) < 3)  # masked pixels follow their neighbours, not the 1e6


def test_detrend_ignores_masked_garbage_and_zero_width(data_dir):
    x, ivar, mask = _real_galaxy(data_dir)
    recon = x + _misfit(len(x))
    bad = x.copy()
    bad[~mask] = 1e4
    assert np.array_equal(residuals.detrend(bad, recon, mask, 0), recon)
    a = residuals.detrend(bad, recon, mask, 151)
    b = residuals.detrend(x, recon, mask, 151)
    assert np.allclose(a[mask], b[mask]) and np.abs(x - a)[mask].max() < 0.05
    # ivar <= 0 counts as masked too
    iv = np.where(mask, ivar, 0.0)
    assert np.allclose(residuals.detrend(bad, recon, None, 151, iv)[mask], b[mask])


def test_noise_scale_is_one_on_noise_and_larger_on_a_misfit():
    rng = np.random.default_rng(1)
    n, length = 4, 3000
    ivar = np.full((n, length), 400.0)
    x = 1 + rng.standard_normal((n, length)) / 20
    recon = np.ones((n, length))
    recon[:, 1000:1400] += 3 * rng.standard_normal((n, 400)) / 20  # a stretch the model gets wrong
    scale = residuals.noise_scale(x, recon, ivar, None, 101)
    assert np.median(scale[:, :800]) == pytest.approx(1.0, abs=0.15)
    assert np.median(scale[:, 1100:1300]) > 2.5
    r, iv = residuals.preprocess(x, recon, None, ivar, 0, 101)
    assert np.array_equal(r, recon) and np.allclose(iv, ivar / scale ** 2)


def test_injection_detector_with_detrending_finds_features_under_a_broad_misfit(data_dir):
    x, ivar, mask = _real_galaxy(data_dir)
    x, ivar, mask = x[None], ivar[None], mask[None]
    rng = np.random.default_rng(5)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    normal = x + sigma * rng.standard_normal(x.shape).astype(np.float32) + _misfit(x.shape[1])
    trials = injection.make_trials(x, ivar, mask, lambda b: np.zeros_like(b), [8.0], copies=6, seed=0)
    for t in trials:
        t.recon = normal[t.source]
    detector = {"window_size": 10, "abs_threshold": 3.0, "range_mismatch_factor": None, "noise_units": True,
                "rel_threshold": 0.0}
    plain = next(r for r in injection.score_trials(trials, x, ivar, mask, normal, detector) if r["kind"] == "all")
    fixed = next(r for r in injection.score_trials(trials, x, ivar, mask, normal, {**detector, "detrend_width": 151})
                 if r["kind"] == "all")
    assert plain["precision"] < 0.2  # the misfit is flagged everywhere
    assert fixed["recall"] >= 0.9 and fixed["precision"] >= 0.8


def test_model_error_covers_a_misfit_at_fixed_pixels_and_leaves_the_continuum_at_the_noise(data_dir):
    x, ivar, mask = _real_galaxy(data_dir)
    rng = np.random.default_rng(11)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    line = slice(1200, 1212)  # a line the model misfits in every galaxy, by a different amount in each

    def reconstructions(n):
        recon = np.repeat(x[None], n, 0) + sigma * rng.standard_normal((n, x.size))
        recon[:, line] -= rng.uniform(0.5, 1.5, (n, 1)) * 15 * sigma[line]
        return recon.astype(np.float32)

    calib = reconstructions(40)
    model_sigma = residuals.model_error(np.repeat(x[None], 40, 0), calib, np.repeat(mask[None], 40, 0),
                                        np.repeat(ivar[None], 40, 0), quantile=0.5, width=5)
    continuum = mask.copy()
    continuum[1190:1225] = False
    assert np.median(model_sigma[continuum] / sigma[continuum]) == 0.0  # pure noise: no model error
    assert np.all(model_sigma[line][mask[line]] > 8 * sigma[line][mask[line]])

    held = reconstructions(1)[0]
    injected, (start, end, _) = injection.inject_one(x, ivar, mask, "emission", 8.0, np.random.default_rng(2))
    assert end < 1100 or start > 1300
    detector = {"method": "matched_filter", "significance": 6.0, "merge_gap": 16}

    def found(ivar_used):
        regions = injection.detect(injected[None], held[None], mask[None], ivar_used[None], detector)
        return [(int(s), int(e)) for s, e in zip(regions.start, regions.end)]

    def covers(spans, lo, hi):
        return any(s < hi and e > lo for s, e in spans)

    plain, calibrated = found(ivar), found(residuals.with_model_error(ivar, model_sigma))
    assert covers(plain, line.start, line.stop) and covers(plain, start, end)
    assert not covers(calibrated, line.start, line.stop) and covers(calibrated, start, end)


def test_relative_error_tolerates_a_strong_real_lines_misfit_and_leaves_the_continuum(data_dir):
    # a real emission line (38 sigma above the continuum at pixel ~2350) that the model reproduces at 75% of
    # its height, as for an emitter stronger than the training galaxies; the model is smooth elsewhere
    x, ivar, mask = _real_galaxy(data_dir, "spec-0390-51900-0282.fits")
    continuum = residuals.running_median(x, mask, 51)
    peak = int(np.argmax(np.where(mask, x - continuum, 0)))
    assert 2340 <= peak <= 2360 and (x - continuum)[peak] * np.sqrt(ivar[peak]) > 30
    line = slice(peak - 6, peak + 7)
    recon = continuum.astype(np.float32)
    recon[line] += 0.75 * (x - continuum)[line]
    injected, (start, end, _) = injection.inject_one(x, ivar, mask, "emission", 8.0, np.random.default_rng(4))
    assert end < peak - 100 or start > peak + 100

    _, iv_off = residuals.preprocess(x, recon, mask, ivar)
    _, iv_on = residuals.preprocess(x, recon, mask, ivar, relative=0.3)
    far = mask.copy()
    far[peak - 60:peak + 60] = False
    assert np.array_equal(iv_off, ivar)
    assert np.median(iv_on[far] / ivar[far]) > 0.999  # the continuum keeps its noise
    chi_off, chi_on = (((x - recon) * np.sqrt(iv))[peak] for iv in (iv_off, iv_on))
    assert chi_off > 8 and chi_on < 0.5 * chi_off  # the line's residual loses its significance

    def found(relative):
        detector = {"method": "matched_filter", "significance": 6.0, "merge_gap": 16, "relative_error": relative}
        regions = injection.detect(injected[None], recon[None], mask[None], ivar[None], detector)
        spans = list(zip(regions.start.tolist(), regions.end.tolist()))
        return [any(s < hi and e > lo for s, e in spans) for lo, hi in ((line.start, line.stop), (start, end))]

    assert found(0.0) == [True, True] and found(0.3) == [False, True]
    with pytest.raises(InputError, match="relative_error"):
        residuals.preprocess(x, recon, mask, ivar, relative=-0.1)


def test_relative_error_reaches_the_analysis_and_the_streaming_scorer(data_dir):
    # research.load_run and the in-memory analysis detect through find_regions; the sharded run passes
    # regions_params to preprocess: both must see regions.relative_error
    from experiments import sdss_cnn_skip
    from research.analyses.sdss_regions import find_regions
    from research.stream_run import regions_params

    x, ivar, mask = _real_galaxy(data_dir, "spec-0390-51900-0282.fits")
    continuum = residuals.running_median(x, mask, 51).astype(np.float32)
    peak = int(np.argmax(np.where(mask, x - continuum, 0)))
    recon = continuum.copy()
    recon[peak - 6:peak + 7] += 0.75 * (x - continuum)[peak - 6:peak + 7]
    config = sdss_cnn_skip.get_config()
    config.regions.model_error_quantile = 0.0
    axis = np.arange(x.size, dtype=np.float64)
    _, _, iv_off = find_regions(config, x[None], recon[None], mask[None], ivar[None], axis)
    assert regions_params(config)["relative_error"] == 0.0
    config.regions.relative_error = 0.3
    _, _, iv_on = find_regions(config, x[None], recon[None], mask[None], ivar[None], axis)
    assert regions_params(config)["relative_error"] == 0.3
    assert iv_on[0, peak] < 0.1 * iv_off[0, peak]
    assert np.median(iv_on[0, mask] / iv_off[0, mask]) > 0.999


def test_line_tolerance_forgives_a_real_galaxys_undrawn_line_and_not_a_feature_off_the_lines(data_dir):
    # Hα of a real galaxy (38 sigma) that the model does not draw at all, as for an extreme emitter; an
    # emission feature injected 100+ px from any line must still be found
    from research.data import sdss_fits as sdss
    from research.regions import lines

    x, ivar, mask = _real_galaxy(data_dir, "spec-0390-51900-0282.fits")
    z = sdss.read_spectrum(data_dir / "sdss" / "spec-0390-51900-0282.fits").meta["z"]
    rest = 10 ** sdss.make_grid(3.59, 3.95) / (1 + z)
    near = lines.near_lines(rest, 6.0)
    continuum = residuals.running_median(x, mask, 51)
    peak = int(np.argmax(np.where(mask, x - continuum, 0)))
    assert abs(rest[peak] - lines.LINES["Hα"]) < 3 and near[peak] and 0.02 < near.mean() < 0.2
    recon = continuum.astype(np.float32)
    rng = np.random.default_rng(0)
    while True:  # a feature whose span is far from every known line
        injected, (start, end, _) = injection.inject_one(x, ivar, mask, "emission", 8.0, rng)
        if not near[max(start - 100, 0):end + 100].any():
            break

    _, iv_on = residuals.preprocess(x, recon, mask, ivar, line_tolerance=0.5, axis=rest)
    assert np.allclose(iv_on[~near], ivar[~near], rtol=1e-6, atol=0)  # off the lines: the noise alone
    assert iv_on[peak] < 0.01 * ivar[peak]

    def found(tolerance):
        detector = {"method": "matched_filter", "significance": 6.0, "merge_gap": 16, "line_tolerance": tolerance}
        regions = injection.detect(injected[None], recon[None], mask[None], ivar[None], detector, rest)
        spans = list(zip(regions.start.tolist(), regions.end.tolist()))
        return [any(s < hi and e > lo for s, e in spans) for lo, hi in ((peak - 3, peak + 4), (start, end))]

    assert found(0.0) == [True, True] and found(0.5) == [False, True]
    with pytest.raises(InputError, match="line_tolerance"):
        residuals.preprocess(x, recon, mask, ivar, line_tolerance=0.5)  # no wavelengths
    with pytest.raises(InputError, match="line_tolerance"):
        residuals.preprocess(x, recon, mask, ivar, line_tolerance=-1.0, axis=rest)


def test_line_tolerance_reaches_the_analysis_and_the_streaming_scorer_and_needs_the_rest_frame(data_dir):
    from experiments import sdss_cnn_skip
    from research.analyses.sdss_regions import check, find_regions
    from research.regions.lines import LINES
    from research.stream_run import regions_params

    x, ivar, mask = _real_galaxy(data_dir, "spec-0390-51900-0282.fits")
    continuum = residuals.running_median(x, mask, 51).astype(np.float32)
    peak = int(np.argmax(np.where(mask, x - continuum, 0)))
    axis = np.linspace(3600.0, 7400.0, x.size)
    axis += LINES["Hα"] - axis[peak]  # a rest-frame axis with Hα at the line
    config = sdss_cnn_skip.get_config()
    config.regions.model_error_quantile = 0.0
    assert config.regions.line_tolerance == 0.7  # the default config's
    config.regions.line_tolerance = 0.0
    _, _, iv_off = find_regions(config, x[None], continuum[None], mask[None], ivar[None], axis)
    config.regions.line_tolerance = 0.5
    _, _, iv_on = find_regions(config, x[None], continuum[None], mask[None], ivar[None], axis)
    assert iv_on[0, peak] < 0.01 * iv_off[0, peak]
    assert regions_params(config)["line_tolerance"] == 0.5 and regions_params(config)["line_halfwidth"] == 6.0
    config.data.frame = "observed"
    with pytest.raises(InputError, match="regions.line_tolerance: needs rest-frame spectra"):
        check(config)
