"""Matched-filter region detection on hand-built residuals with known answers, and on real spectra
with injected features."""

import numpy as np
import pytest

from research.regions import injection
from research.errors import InputError
from research.regions.matched_filter import detect_significant_regions
from research.regions import detect


def _gauss(length, centre, width, peak):
    px = np.arange(length)
    return peak * np.exp(-0.5 * ((px - centre) / width) ** 2)


def test_summed_significance_decides_at_the_expected_amplitude():
    # noise-free residual: a boxcar of a sigma over 64 px sums to a * sqrt(64) = 8a sigma
    length = 1000
    recon = np.zeros((3, length))
    ivar = np.ones((3, length))
    orig = recon.copy()
    for row, a in enumerate((1.0, 0.7, -1.0)):  # 8, 5.6, -8 sigma at the 64-px scale
        orig[row, 300:364] = a
    reg = detect_significant_regions(orig, recon, ivar=ivar, scales=(64,), significance=6.0)
    assert list(reg.spectrum) == [0, 2]  # 5.6 sigma stays below 6, the sign does not matter
    # the window centred on j overlaps the boxcar by 64 - |j - 332| px and sums to that / 8 sigma:
    # above 6 sigma for |j - 332| < 16, so the region is the core of the boxcar, [317, 348)
    assert (reg.start[0], reg.end[0]) == (317, 348) and (reg.start[1], reg.end[1]) == (317, 348)
    assert reg.params["method"] == "matched_filter" and reg.thresholds()["significance"] == 6.0


def test_finds_injected_lines_and_segments_in_white_noise_and_nothing_else():
    rng = np.random.default_rng(0)
    n, length = 200, 2000
    orig = rng.standard_normal((n, length))
    truth = {}
    for i in range(0, n, 2):  # every other spectrum gets one feature; the others are pure noise
        c = int(rng.integers(100, length - 100))
        if i % 4 == 0:
            orig[i] += _gauss(length, c, 3.0, 5.0)  # 5 sigma peak line, sigma 3 px
            truth[i] = (c - 6, c + 7)
        else:
            orig[i, c - 20:c + 20] -= 3.0  # 3 sigma dropped segment of 40 px
            truth[i] = (c - 20, c + 20)
    reg = detect_significant_regions(orig, np.zeros_like(orig), ivar=np.ones_like(orig), significance=6.0,
                                     merge_gap=8)
    assert set(reg.spectrum.tolist()) == set(truth)  # no region in any noise-only spectrum
    for i, (s, e) in truth.items():
        found = reg.regions_of(i)
        assert len(found) == 1
        r0, r1 = found[0]["start"], found[0]["end"]
        assert min(e, r1) - max(s, r0) > 0.5 * (e - s)  # overlaps most of the feature
        assert r1 - r0 < 3 * (e - s) + 40  # and does not spread over the spectrum


def test_masked_and_nonfinite_pixels_are_ignored():
    length = 500
    orig = np.zeros((1, length))
    orig[0, 100:120] = 50.0  # masked: would be a huge detection
    orig[0, 300] = np.nan
    mask = np.ones((1, length), bool)
    mask[0, 100:120] = False
    reg = detect_significant_regions(orig, np.zeros_like(orig), mask, ivar=np.ones_like(orig), significance=5.0)
    assert len(reg.start) == 0 and reg.scores[0] == 0.0
    ivar = np.ones_like(orig)
    ivar[0, 100:120] = 0.0  # zero inverse variance is unusable too
    reg = detect_significant_regions(orig, np.zeros_like(orig), ivar=ivar, significance=5.0)
    assert len(reg.start) == 0


def test_local_scale_keeps_model_misfit_from_counting():
    rng = np.random.default_rng(1)
    n, length = 40, 4096
    orig = rng.standard_normal((n, length))
    orig[:, 1024:2048] *= 4.0  # a stretch where the model misfit is 4x the noise
    orig[:, 3000:3030] += 3.0  # one real feature, 3 sigma over 30 px (16 sigma summed)
    args = dict(recon=np.zeros_like(orig), ivar=np.ones_like(orig), significance=6.0, scales=(8, 16, 32))
    plain = detect_significant_regions(orig, **args)
    scaled = detect_significant_regions(orig, **args, local_scale_block=512)
    in_misfit = lambda r: ((r.start < 2048) & (r.end > 1024)).sum()  # noqa: E731
    assert in_misfit(plain) > n  # the misfit stretch reads as significant without the local scale
    assert in_misfit(scaled) <= n // 10  # a few where the interpolated scale ramps up at the stretch's edges
    for reg in (plain, scaled):
        assert all(any(d["start"] < 3030 and d["end"] > 3000 for d in reg.regions_of(i)) for i in range(n))


def test_merge_gap_joins_nearby_runs_and_score_counts_usable_pixels():
    length = 400
    orig = np.zeros((1, length))
    orig[0, 100:110] = 10.0
    orig[0, 120:130] = 10.0  # 10 px apart
    common = dict(recon=np.zeros_like(orig), ivar=np.ones_like(orig), scales=(1,), significance=5.0)
    apart = detect_significant_regions(orig, **common)
    joined = detect_significant_regions(orig, **common, merge_gap=10, axis=np.arange(length) * 2.0 + 4000)
    assert [(d["start"], d["end"]) for d in apart.regions_of(0)] == [(100, 110), (120, 130)]
    assert [(d["start"], d["end"]) for d in joined.regions_of(0)] == [(100, 130)]
    assert joined.regions_of(0)[0]["start_wavelength"] == 4200.0 and joined.regions_of(0)[0]["end_wavelength"] == 4258.0
    assert joined.scores[0] == pytest.approx(30 / length)
    assert not joined.flags[0]


def test_bad_arguments_are_one_line_errors():
    x = np.zeros((2, 50))
    with pytest.raises(InputError, match="needs ivar"):
        detect_significant_regions(x, x, ivar=None)
    with pytest.raises(InputError, match="scales"):
        detect_significant_regions(x, x, ivar=np.ones_like(x), scales=(0,))
    with pytest.raises(InputError, match="significance must be > 0"):
        detect_significant_regions(x, x, ivar=np.ones_like(x), significance=0)
    with pytest.raises(InputError, match="reconstruction"):
        detect_significant_regions(x, x[:, :40], ivar=np.ones_like(x))
    with pytest.raises(InputError, match="unknown method 'wavelet'"):
        detect(x, x, method="wavelet")


def test_injection_recovery_on_real_spectra(sdss_galaxies):
    x, ivar, mask = sdss_galaxies
    rng = np.random.default_rng(5)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    normal = x + sigma * rng.standard_normal(x.shape).astype(np.float32)  # oracle model: clean flux + fresh noise
    trials = injection.make_trials(x, ivar, mask, lambda b: np.zeros_like(b), [1.0, 5.0], copies=4, seed=0)
    for t in trials:
        t.recon = normal[t.source]
    detector = {"method": "matched_filter", "significance": 6.0, "merge_gap": 16}
    by = {(r["amplitude"], r["kind"]): r for r in injection.score_trials(trials, x, ivar, mask, normal, detector)}
    assert by[(5.0, "all")]["recall"] >= 0.9 and by[(5.0, "all")]["precision"] >= 0.8
    assert by[(5.0, "all")]["iou"] > 0.4
    assert by[(1.0, "all")]["recall"] < 0.5
