"""Windowed residual region detection: hand-built residuals with known answers, and the
vectorised/chunked implementation against the plain loop."""

import tracemalloc

import numpy as np
import pytest

from research.errors import InputError
from research.regions import detect_regions, detect_regions_loop

L, W = 500, 50  # 10 windows


def _flat(n=1):
    """Flux 1 with a +-0.01 alternation (so every pixel has a small residual against recon = 1)."""
    original = np.ones((n, L), np.float32) + 0.01 * np.where(np.arange(L) % 2, 1, -1).astype(np.float32)
    return original, np.ones((n, L), np.float32)


@pytest.mark.parametrize("detect", [detect_regions, detect_regions_loop])
def test_one_bump_gives_exactly_its_window(detect):
    original, recon = _flat()
    original[0, 160:180] += 1.0  # 4% of the pixels: the 95th percentile stays at the noise level
    axis = np.linspace(4000.0, 8990.0, L)
    res = detect(original, recon, None, axis, window_size=W, range_mismatch_factor=None)
    assert res.abs_threshold[0] == pytest.approx(np.percentile(np.abs(original - recon), 95))
    assert res.window_flags[0].tolist() == [w == 3 for w in range(10)]
    assert res.regions_of(0) == [{"start": 150, "end": 200, "start_wavelength": axis[150], "end_wavelength": axis[199]}]
    assert res.scores[0] == pytest.approx(0.1) and not res.flags[0]


@pytest.mark.parametrize("detect", [detect_regions, detect_regions_loop])
def test_range_mismatch_alone_flags_a_window(detect):
    original, _ = _flat()
    recon = original.copy()
    recon[0, 250:300] = 1.0  # reconstruction loses the wiggle: its range is 0, the original's 0.02
    res = detect(original, recon, None, window_size=W, range_mismatch_factor=1.5)
    assert res.window_flags[0].tolist() == [w == 5 for w in range(10)]
    for disabled in (None, 0, float("inf")):
        off = detect(original, recon, None, window_size=W, range_mismatch_factor=disabled)
        assert not off.window_flags.any()  # the residuals alone (0.01 = the threshold) are not enough
        assert off.params["range_mismatch_factor"] is None


@pytest.mark.parametrize("detect", [detect_regions, detect_regions_loop])
def test_adjacent_windows_merge_and_the_spectrum_is_flagged_above_the_fraction(detect):
    original, recon = _flat(2)
    original[0, 100:250] += 2.0  # windows 2, 3, 4: 30% of the windows, not above 0.3
    original[1, 0:10] += 2.0
    original[1, 300:400] += 2.0  # 2 separate regions
    original[1, 460:480] += 2.0  # windows 0, 6, 7, 9: 40% -> flagged
    res = detect(original, recon, None, window_size=W, range_mismatch_factor=None, percentile_threshold=50)
    assert res.regions_of(0) == [{"start": 100, "end": 250}]
    assert [(r["start"], r["end"]) for r in res.regions_of(1)] == [(0, 50), (300, 400), (450, 500)]
    assert res.scores.tolist() == pytest.approx([0.3, 0.4])
    assert res.flags.tolist() == [False, True]


@pytest.mark.parametrize("detect", [detect_regions, detect_regions_loop])
def test_masked_pixels_contribute_nothing(detect):
    original, recon = _flat()
    original[0, 160:180] += 1.0
    original[0, 400:420] = np.nan  # non-finite is never used
    original[0, 0:50] += 50.0  # huge, but masked
    mask = np.ones((1, L), bool)
    mask[0, 0:50] = False
    res = detect(original, recon, mask, window_size=W, range_mismatch_factor=None)
    unmasked = np.isfinite(original[0]) & mask[0]
    assert res.abs_threshold[0] == pytest.approx(np.percentile(np.abs(original[0] - 1)[unmasked], 95))
    assert res.window_flags[0].tolist() == [w == 3 for w in range(10)]  # not 0 (masked) nor 8 (NaN)
    assert res.scores[0] == pytest.approx(1 / 9)  # the fully masked window is not counted


@pytest.mark.parametrize("detect", [detect_regions, detect_regions_loop])
def test_noise_units_and_explicit_and_global_thresholds(detect):
    rng = np.random.default_rng(3)
    sigma = np.array([[0.1], [1.0]], np.float32)
    recon = np.ones((2, L), np.float32)
    original = recon + sigma * rng.standard_normal((2, L)).astype(np.float32)
    ivar = np.broadcast_to(1 / sigma ** 2, (2, L))
    res = detect(original, recon, None, ivar=ivar, window_size=W, range_mismatch_factor=None)
    chi = np.abs(original - recon) * np.sqrt(ivar)
    assert res.abs_threshold == pytest.approx([np.percentile(c, 95) for c in chi], rel=1e-5)
    glob = detect(original, recon, None, window_size=W, threshold_scope="global")
    assert glob.abs_threshold == pytest.approx([np.percentile(np.abs(original - recon), 95)] * 2, rel=1e-5)
    fixed = detect(original, recon, None, window_size=W, abs_threshold=0.5, rel_threshold=0.0,
                   range_mismatch_factor=None)
    means = np.abs(original - recon).reshape(2, 10, W).mean(2)
    assert np.array_equal(fixed.window_flags, means > 0.5)


@pytest.mark.parametrize("params", [
    {},
    {"window_size": 7, "range_mismatch_factor": None},
    {"threshold_scope": "global", "percentile_threshold": 90},
    {"noise_units": True, "window_size": 13},
])
@pytest.mark.parametrize("chunk_size", [1, 17, 4096])
def test_vectorised_equals_loop_on_random_spectra(params, chunk_size):
    rng = np.random.default_rng(1)
    n, length = 64, 1003
    recon = (1 + 0.3 * np.sin(np.linspace(0, 9, length)))[None] * rng.uniform(0.5, 2, (n, 1))
    ivar = rng.uniform(20, 400, (n, length))
    original = recon + rng.standard_normal((n, length)) / np.sqrt(ivar)
    for i in range(0, n, 5):  # anomalies of random size and place
        s = rng.integers(0, length - 60)
        original[i, s:s + rng.integers(5, 60)] += rng.uniform(-1, 1)
    mask = rng.random((n, length)) > 0.05
    mask[3, :700] = False
    mask[4] = False
    params = dict(params)
    if params.pop("noise_units", False):
        params["ivar"] = ivar
    axis = np.geomspace(3800, 9200, length)
    a = detect_regions(original, recon, mask, axis, chunk_size=chunk_size, **params)
    b = detect_regions_loop(original, recon, mask, axis, **params)
    assert np.array_equal(a.window_flags, b.window_flags)
    for key in ("spectrum", "start", "end", "start_wavelength", "end_wavelength", "scores", "flags"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert np.allclose(a.abs_threshold, b.abs_threshold, rtol=1e-6, equal_nan=True)
    assert np.allclose(a.rel_threshold, b.rel_threshold, rtol=1e-6, equal_nan=True)
    assert a.window_flags.any() and not a.window_flags[4].any()


def test_working_memory_follows_the_chunk_size():
    rng = np.random.default_rng(2)
    original = rng.standard_normal((1024, 2000)).astype(np.float32)
    recon = np.zeros_like(original)

    def peak(chunk):
        tracemalloc.start()
        detect_regions(original, recon, chunk_size=chunk)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(32), peak(1024)
    assert small < large / 8
    assert small < original.nbytes  # far below one copy of the input


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(InputError, match="must be equal"):
        detect_regions(np.zeros((2, 10)), np.zeros((2, 11)))
    with pytest.raises(InputError, match="mask shape"):
        detect_regions(np.zeros((2, 10)), np.zeros((2, 10)), np.ones((2, 9), bool))
    with pytest.raises(InputError, match="threshold_scope"):
        detect_regions(np.zeros((2, 10)), np.zeros((2, 10)), threshold_scope="batch")


TUNED = ["--config.regions.window_size=10", "--config.regions.percentile_threshold=99",
         "--config.regions.noise_units=True", "--config.regions.range_mismatch_factor=0",
         "--config.regions.rel_threshold=0", "--config.regions.detrend_width=201"]


@pytest.mark.slow
@pytest.mark.data("sdss")
@pytest.mark.parametrize("variant, overrides, detector", [
    (":seed", [], {"window_size": 50, "range_mismatch_factor": 1.5, "noise_units": False, "rel_threshold": None}),
    (":seed", TUNED, {"window_size": 10, "range_mismatch_factor": None, "noise_units": True, "rel_threshold": 0.0}),
    ("", [], {"method": "matched_filter", "significance": 5.5, "merge_gap": 96, "local_scale_block": 4096,
              "noise_units": True}),
    ("", ["--config.regions.model_error_quantile=0.0"], {"method": "matched_filter", "significance": 5.5}),
], ids=["seed", "tuned", "matched_filter", "no_model_error"])
def test_sdss_experiment_smoke_end_to_end(data_dir, tmp_path, variant, overrides, detector):
    import json

    from conftest import run_cli
    from research.regions import lines

    run = run_cli([f"--config=experiments/sdss_cnn_skip.py{variant}", "--config.smoke=True",
                   f"--config.run.root={tmp_path}", "--config.run.name=smoke",
                   f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.regions.sample_n=3",
                   "--config.regions.seed=1", *overrides], timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    rundir = tmp_path / f"sdss_cnn_skip{variant.replace(':', '_')}" / "smoke"
    summary = json.loads((rundir / "metrics.json").read_text())["analyses"]["sdss_regions"]
    meta = json.loads((rundir / "regions_metadata.json").read_text())
    assert summary["n_figures"] == 3 == len(meta["sampled_indices"]) == len(list((rundir / "plots" / "spectra").glob("*.png")))
    assert meta["seed"] == 1 and {k: meta["detector"][k] for k in detector} == detector
    assert meta["detrend_width"] == (201 if overrides or not variant else 0)
    assert summary["n_flagged"] == len(meta["flagged"])
    assert meta["model_error_quantile"] == (0.0 if variant or overrides else 0.75)
    assert meta["line_tolerance"] == (0.0 if variant else 0.7)
    for entry in meta["flagged"]:
        assert {"id", "plate", "mjd", "fiberid", "class", "z", "regions"} <= set(entry)
        for region in entry["regions"]:  # named by the nearest line (the observed frame needs the redshift)
            assert region["line"] in lines.LINES or (variant and not np.isfinite(entry["z"]))


def test_unknown_region_method_stops_before_training(tmp_path):
    from conftest import run_cli

    proc = run_cli(["--config=experiments/sdss_cnn_skip.py", "--config.regions.method=wavelet",
                    f"--config.run.root={tmp_path}"])
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "config key regions.method" in lines[0] and "'wavelet'" in lines[0], proc.stderr
    assert not (tmp_path / "sdss_cnn_skip").exists()  # no run directory: nothing was loaded or trained


@pytest.mark.parametrize("name, window, line", [
    ("spec-0266-51602-0001.fits", (6400.0, 6700.0), "Hα"),  # a star-forming galaxy's brightest line there
    ("spec-2880-54509-0230.fits", (3600.0, 9000.0), "[O III] 5007"),  # the extreme [O III] emitter
])
def test_line_labels_name_the_line_at_a_real_spectrum_s_peak(data_dir, name, window, line):
    from research.data import sdss_fits as sdss
    from research.regions import lines

    path = data_dir / "sdss" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    spec = sdss.read_spectrum(path)
    z, observed = spec.meta["z"], 10 ** spec.loglam
    flux = np.where(spec.bad | (observed < window[0] * (1 + z)) | (observed > window[1] * (1 + z)), -np.inf, spec.flux)
    peak = int(np.argmax(flux))
    region = {"start_wavelength": observed[peak - 3], "end_wavelength": observed[peak + 3]}
    got = lines.label(region, "observed", z)
    assert got["line"] == line and got["line_distance"] == 0.0 and got["sky"] is None
    rest = {k: v / (1 + z) for k, v in region.items()}
    assert lines.label(rest, "rest", z)["line"] == line
    assert lines.short_label(got) == line
    sky = lines.label({"start_wavelength": 5570.0, "end_wavelength": 5582.0}, "observed", z)
    assert sky["sky"] == "sky 5577" and lines.short_label(sky).endswith("sky 5577")
    assert lines.label(region, "observed", None)["line"] is None  # no redshift: no rest frame
