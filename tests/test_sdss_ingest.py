"""SDSS ingestion on the real FITS files: both formats, the common grid, masks, bad files, loader, fetch."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from research.data import sdss_fits as sdss
from research.data import sdss_fetch
from research.errors import InputError

SPEC = "spec-0266-51602-0001.fits"
BOSS = "spec-3851-55302-0531.fits"
SPSPEC = "spSpec-51630-0266-637.fit"


@pytest.fixture(scope="session")
def sdss_dir(data_dir):
    folder = data_dir / "sdss"
    if not (folder / SPEC).is_file():
        pytest.skip(f"SDSS files not found in {folder}")
    return folder


@pytest.fixture(scope="session")
def ingested(sdss_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdss") / "sdss.npz"
    report = sdss.ingest(sdss_dir, out)
    arrays, cat = sdss.load_ingested(out)
    return report, arrays, cat, out


def test_spec_format_matches_the_coadd_table(sdss_dir):
    path = sdss_dir / SPEC
    spec = sdss.read_spectrum(path)
    with fits.open(path) as h:
        coadd, info = h["COADD"].data, h[2].data
        assert np.array_equal(spec.flux, coadd["flux"].astype(np.float64))
        assert np.allclose(10 ** spec.loglam, 10 ** coadd["loglam"].astype(np.float64))
        bad_bits = (coadd["and_mask"].astype(np.int64) & sdss.mask_bit_value(None)) != 0
        expected_bad = (coadd["ivar"] <= 0) | bad_bits | ~np.isfinite(coadd["flux"])
        assert np.array_equal(spec.bad, expected_bad)
        assert spec.meta["class"] == info["CLASS"][0].strip()
        assert spec.meta["z"] == pytest.approx(float(info["Z"][0]))
        assert spec.id == sdss.spectrum_id(info["PLATE"][0], info["MJD"][0], info["FIBERID"][0])
    assert spec.meta["format"] == "spec" and np.all(np.diff(spec.loglam) > 0)


def test_spspec_format_rows_and_wavelength_solution(sdss_dir):
    path = sdss_dir / SPSPEC
    spec = sdss.read_spectrum(path)
    with fits.open(path) as h:
        hdr, img = h[0].header, h[0].data
        n = img.shape[1]
        assert np.allclose(spec.loglam, hdr["COEFF0"] + hdr["COEFF1"] * np.arange(n))
        assert np.array_equal(spec.flux, img[0].astype(np.float64))
        err = img[2].astype(np.float64)
        good_err = err > 0
        assert np.allclose(spec.ivar[good_err], 1 / err[good_err] ** 2)
        bad_bits = (np.nan_to_num(img[3]).astype(np.int64) & sdss.mask_bit_value(None)) != 0
        assert np.all(spec.bad[bad_bits]) and np.all(spec.bad[~good_err]) and not spec.bad[good_err & ~bad_bits].any()
        assert spec.id == sdss.spectrum_id(hdr["PLATEID"], hdr["MJD"], hdr["FIBERID"])
        assert spec.meta["class"] == sdss.SPEC_CLN[int(hdr["SPEC_CLN"])]
    assert spec.meta["format"] == "spSpec"


def test_format_is_detected_from_hdus_not_the_name(sdss_dir, tmp_path):
    misleading = tmp_path / "spSpec-99999-9999-999.fit"
    shutil.copy(sdss_dir / SPEC, misleading)
    assert sdss.read_spectrum(misleading).meta["format"] == "spec"
    misleading = tmp_path / "spec-9999-99999-9999.fits"
    shutil.copy(sdss_dir / SPSPEC, misleading)
    assert sdss.read_spectrum(misleading).meta["format"] == "spSpec"


def test_whole_folder_on_one_grid(sdss_dir, ingested):
    report, arrays, cat, _ = ingested
    files = sdss.find_files(sdss_dir)
    assert report["n_files"] == len(files) and report["n_ingested"] + report["n_skipped"] == len(files)
    assert set(cat["format"]) == {"spec", "spSpec"}
    n, length = arrays["flux"].shape
    assert n == report["n_ingested"] == len(cat["id"]) and length == arrays["loglam"].size
    assert np.allclose(np.diff(arrays["loglam"]), sdss.LOGLAM_STEP)
    assert np.all(np.isfinite(arrays["flux"])) and np.all(arrays["ivar"][~arrays["mask"]] == 0)
    assert np.all(arrays["flux"][~arrays["mask"]] == 0)
    assert len(set(cat["id"])) == n  # keyed by plate-mjd-fiber
    for i in range(n):  # median normalisation: good flux has median 1
        assert np.median(arrays["flux"][i][arrays["mask"][i]]) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", [SPEC, BOSS, SPSPEC])
def test_grid_values_and_mask_follow_the_native_pixels(sdss_dir, ingested, name):
    _, arrays, cat, _ = ingested
    spec = sdss.read_spectrum(sdss_dir / name)
    i = list(cat["id"]).index(spec.id)
    grid, mask, flux = arrays["loglam"], arrays["mask"][i], arrays["flux"][i] * cat["norm"][i]
    outside = (grid < spec.loglam[0] - 1e-6) | (grid > spec.loglam[-1] + 1e-6)
    assert outside.any() and not mask[outside].any()
    nearest = np.clip(np.searchsorted(spec.loglam, grid), 0, len(spec.loglam) - 1)
    aligned = np.abs(spec.loglam[nearest] - grid) < 1e-6
    assert not mask[aligned & spec.bad[nearest]].any()  # ivar == 0 / mask bits stay masked
    ok = mask & aligned
    assert ok.sum() > 1000
    # float32 loglam in the files sits up to ~0.3% of a pixel off the grid: the value may move by
    # that fraction of the step to the neighbouring pixel, no more
    j = nearest[ok]
    step = np.maximum(np.abs(spec.flux[np.minimum(j + 1, len(spec.flux) - 1)] - spec.flux[j]),
                      np.abs(spec.flux[j] - spec.flux[np.maximum(j - 1, 0)]))
    assert np.all(np.abs(flux[ok] - spec.flux[j]) <= 0.005 * step + 1e-6 * np.abs(spec.flux[j]) + 1e-9)


def test_rest_frame_shifts_by_redshift(sdss_dir, tmp_path):
    path = sdss_dir / SPEC
    sdss.ingest([path], tmp_path / "rest.npz", frame="rest", norm="none")
    arrays, cat = sdss.load_ingested(tmp_path / "rest.npz")
    spec = sdss.read_spectrum(path)
    rest = spec.loglam - np.log10(1 + spec.meta["z"])
    good = arrays["mask"][0]
    expected = np.interp(arrays["loglam"][good], rest, spec.flux)
    assert np.allclose(arrays["flux"][0][good], expected, rtol=1e-4, atol=1e-3)
    assert arrays["wavelength"][good][0] == pytest.approx(10 ** rest[~spec.bad][0], rel=2e-4)


def _bad_files(sdss_dir, folder):
    """Real files broken four ways, next to two good ones."""
    folder.mkdir()
    shutil.copy(sdss_dir / SPEC, folder / SPEC)
    shutil.copy(sdss_dir / SPSPEC, folder / SPSPEC)
    data = (sdss_dir / BOSS).read_bytes()
    (folder / "truncated.fits").write_bytes(data[: len(data) // 3])
    with fits.open(sdss_dir / BOSS) as h:
        fits.HDUList([h[0].copy()] + [x.copy() for x in h[2:4]]).writeto(folder / "no_coadd.fits")
        nan = fits.HDUList([x.copy() for x in h])
        nan["COADD"].data["flux"][:] = np.nan
        nan.writeto(folder / "nan_flux.fits")
        zero = fits.HDUList([x.copy() for x in h])
        zero["COADD"].data["ivar"][:] = 0
        zero.writeto(folder / "ivar_zero.fits")
    return folder


def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(sdss_dir, tmp_path):
    folder = _bad_files(sdss_dir, tmp_path / "in")
    report = sdss.ingest(folder, tmp_path / "out" / "d.npz")
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert report["n_ingested"] == 2 and set(reasons) == {"truncated.fits", "no_coadd.fits", "nan_flux.fits",
                                                            "ivar_zero.fits"}
    assert "truncated" in reasons["truncated.fits"] or "corrupt" in reasons["truncated.fits"]
    assert "COADD" in reasons["no_coadd.fits"]
    assert "masked" in reasons["nan_flux.fits"] and "masked" in reasons["ivar_zero.fits"]
    assert all(f in r.split(": ")[0] and "\n" not in r for f, r in reasons.items())
    saved = json.loads((tmp_path / "out" / "d_report.json").read_text())
    assert saved["skipped"] == report["skipped"]
    for f in reasons:
        with pytest.raises(InputError, match=f):
            sdss.read_spectrum(folder / f) if f in ("truncated.fits", "no_coadd.fits") else \
                sdss.ingest([folder / f], tmp_path / f"{f}.npz")


def test_partial_nan_flux_is_masked_not_skipped(sdss_dir, tmp_path):
    with fits.open(sdss_dir / SPEC) as h:
        broken = fits.HDUList([x.copy() for x in h])
        broken["COADD"].data["flux"][1000:1100] = np.nan
        broken.writeto(tmp_path / "partial.fits")
    spec = sdss.read_spectrum(tmp_path / "partial.fits")
    assert spec.bad[1000:1100].all()
    sdss.ingest([tmp_path / "partial.fits"], tmp_path / "p.npz")
    arrays, _ = sdss.load_ingested(tmp_path / "p.npz")
    masked_wl = 10 ** spec.loglam[1000:1100]
    in_gap = (arrays["wavelength"] > masked_wl[1]) & (arrays["wavelength"] < masked_wl[-2])
    assert in_gap.sum() >= 90 and not arrays["mask"][0][in_gap].any()
    assert np.all(np.isfinite(arrays["flux"]))


def test_cli_progress_summary_and_error_exit(sdss_dir, tmp_path):
    folder = _bad_files(sdss_dir, tmp_path / "in")
    run = subprocess.run([sys.executable, "-m", "data_prep.sdss", "--input", str(folder), "--output",
                          str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1].startswith("ingested 2/6 spectra (4 skipped)")
    assert sum("skipped" in line for line in lines[:-1]) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run([sys.executable, "-m", "data_prep.sdss", "--input", str(empty), "--output",
                          str(tmp_path / "e.npz")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1


def test_loader_splits_by_class_and_caches(sdss_dir, ingested, tmp_path):
    import ml_collections
    from research.data import sdss as loader

    _, arrays, cat, out = ingested
    cfg = ml_collections.ConfigDict({"path": str(out), "train_classes": ("GALAXY",), "holdout_fraction": 0.25,
                                     "ivar_weighting": True, "limit": 0})
    ds = loader.load(cfg)
    classes = dict(zip(cat["id"], cat["class"]))
    assert {classes[i] for i in ds.meta["train_ids"]} == {"GALAXY"}
    assert [int(classes[i] != "GALAXY") for i in ds.test_ids] == ds.test_labels.tolist()
    assert 0 < (ds.test_labels == 0).sum() < (np.asarray(cat["class"]) == "GALAXY").sum()
    assert not set(ds.meta["train_ids"]) & set(ds.test_ids)
    assert ds.train["x"].shape[1] == ds.axis.size and ds.train["mask"].dtype == bool
    w = ds.train["weights"]
    assert np.all(np.isfinite(w)) and np.all(w[~ds.train["mask"]] == 0) and w.max() <= 10
    assert ds.test["ivar"].shape == ds.test["x"].shape

    cfg = ml_collections.ConfigDict({"path": str(sdss_dir), "cache_dir": str(tmp_path / "cache"), "limit": 5})
    first = loader.load(cfg)
    cached = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and len(first.train["x"]) == 5 and len(first.test["x"]) == 5
    mtime = cached[0].stat().st_mtime_ns
    second = loader.load(cfg)
    assert cached[0].stat().st_mtime_ns == mtime and second.test_ids == first.test_ids


def test_folds_hold_out_every_ordinary_spectrum_exactly_once(ingested):
    import ml_collections
    from research.data import sdss as loader

    _, _, cat, out = ingested
    galaxies = {i for i, c, w in zip(cat["id"], cat["class"], cat["zwarning"]) if c == "GALAXY" and w == 0}
    held = []
    for fold in range(3):
        cfg = ml_collections.ConfigDict({"path": str(out), "n_folds": 3, "fold": fold, "limit": 0})
        ds = loader.load(cfg)
        fold_held = [i for i, label in zip(ds.test_ids, ds.test_labels) if label == 0]
        assert not set(fold_held) & set(ds.meta["train_ids"])
        assert set(fold_held) | set(ds.meta["train_ids"]) == galaxies
        assert len(ds.test["ivar"]) == len(ds.test_ids)
        held += fold_held
    assert sorted(held) == sorted(galaxies)
    with pytest.raises(InputError, match="data.fold: 3 must be in 0..2"):
        loader.load(ml_collections.ConfigDict({"path": str(out), "n_folds": 3, "fold": 3, "limit": 0}))


def test_fetch_uses_the_cache_and_fails_offline_in_one_line(sdss_dir, tmp_path, monkeypatch):
    import requests
    from astroquery.sdss import SDSS

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'skyserver.sdss.org'")

    monkeypatch.setattr(SDSS, "get_spectra", offline)
    with pytest.raises(InputError) as err:
        sdss_fetch.fetch_spectrum(266, 51602, 1, cache_dir=tmp_path)
    assert "cannot reach SDSS" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(sdss_fetch.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("no route")))
    with pytest.raises(InputError, match="image 0266-51602-0001: cannot reach SDSS"):
        sdss_fetch.fetch_image(146.7, -1.04, "0266-51602-0001", cache_dir=tmp_path)
    cached = sdss_fetch.spectrum_path(tmp_path, 266, 51602, 1)
    cached.parent.mkdir(parents=True)
    shutil.copy(sdss_dir / SPEC, cached)
    assert sdss_fetch.fetch_spectrum(266, 51602, 1, cache_dir=tmp_path) == cached  # no network needed
    assert sdss.read_spectrum(cached).id == "0266-51602-0001"


EXTRA_RENAMED = {"MRK 0955.fits": "0392-51793-0517", "1237662637447184537.fits": "1725-54266-0497",
                 "spec-6001-56072-0702.fits": "6001-56072-0702", "spSpec-51993-0542-631.fit": "0542-51993-0631"}  # the last one's HDUs carry no EXTNAME


@pytest.fixture(scope="session")
def extra_dir(data_dir):
    folder = data_dir / "sdss_extra"
    if not all((folder / name).is_file() for name in EXTRA_RENAMED):
        pytest.skip(f"SDSS extra files not found in {folder}")
    return folder


def test_ids_come_from_the_file_not_its_name(extra_dir, tmp_path):
    for name, expected in EXTRA_RENAMED.items():
        with fits.open(extra_dir / name) as h:
            header_id = sdss.spectrum_id(h[0].header["PLATEID"], h[0].header["MJD"], h[0].header["FIBERID"])
        renamed = tmp_path / f"spec-0001-00001-0001 copy of {name}"
        shutil.copy(extra_dir / name, renamed)
        assert sdss.read_spectrum(renamed).id == expected == header_id
    # no plate/mjd/fiber anywhere: the objid of the header (DR7: run rerun camcol field id) names the spectrum
    with fits.open(extra_dir / "spSpec-51993-0542-631.fit") as h:
        primary = h[0].copy()
        for key in ("PLATEID", "MJD", "FIBERID"):
            del primary.header[key]
        objid = "-".join(str(primary.header["OBJID"]).split())
        fits.HDUList([primary]).writeto(tmp_path / "x.fits")
    assert sdss.read_spectrum(tmp_path / "x.fits").id == f"objid-{objid}" == "objid-1889-1-2-76-152"


@pytest.mark.slow
def test_both_folders_in_one_ingest_keep_every_readable_spectrum(sdss_dir, extra_dir, tmp_path):
    import ml_collections
    from research.data import sdss as loader

    cfg = ml_collections.ConfigDict({"path": [str(sdss_dir), str(extra_dir / "*.fits")], "frame": "rest",
                                     "wave_range": (3600.0, 7400.0), "cache_dir": str(tmp_path), "limit": 0})
    ds = loader.load(cfg)
    report = json.loads(next(tmp_path.glob("*_report.json")).read_text())
    assert report["n_files"] == len(sdss.find_files(sdss_dir)) + len(list(extra_dir.glob("*.fits")))
    ids = ds.meta["train_ids"] + ds.test_ids
    assert len(ids) == len(set(ids)) == report["n_ingested"] - ds.meta["n_zwarning_dropped"]
    assert {"0392-51793-0517", "1725-54266-0497", "0266-51602-0001"} <= set(ids)
    assert not any(s["reason"].endswith("not an SDSS spectrum") for s in report["skipped"])


def test_default_mask_bits_mask_bad_data_not_informational_bits(extra_dir):
    path = extra_dir / "J030341.04-002321.8_0.fits"  # MANYBADCOLUMNS on 42 % of its pixels, BRIGHTSKY on a few
    with fits.open(path) as h:
        and_mask, ivar = h[1].data["and_mask"].astype(np.int64), h[1].data["ivar"]
    informational_only = (and_mask == 1 << sdss.PIXMASK_BITS["MANYBADCOLUMNS"]) & (ivar > 0)
    bright_sky = (and_mask & 1 << sdss.PIXMASK_BITS["BRIGHTSKY"]) != 0
    assert informational_only.sum() > 100 and bright_sky.sum() > 10
    spec = sdss.read_spectrum(path)
    assert not spec.bad[informational_only].any() and spec.bad[bright_sky].all() and spec.bad[ivar <= 0].all()
    assert sdss.read_spectrum(path, ("ANY",)).bad[informational_only].all()
    assert sdss.mask_bit_value(("BRIGHTSKY", 4)) == (1 << 23) | (1 << 4)
    with pytest.raises(InputError, match="mask_bits: unknown SDSS mask bit 'SHINY'"):
        sdss.mask_bit_value(("SHINY",))


def test_zwarning_galaxies_are_left_out_and_n_train_subsets(extra_dir, tmp_path):
    import ml_collections
    from research.data import sdss as loader

    warned = "spec-1678-53433-0425.fits"  # GALAXY, ZWARNING 16
    files = [str(extra_dir / warned)] + [str(p) for p in sorted(extra_dir.glob("spec-0431-*.fits"))[:12]]
    base = {"path": files, "frame": "rest", "cache_dir": str(tmp_path), "limit": 0, "holdout_fraction": 0.25}
    ds = loader.load(ml_collections.ConfigDict(base))
    assert sdss.read_spectrum(extra_dir / warned).meta["zwarning"] == 16
    assert "1678-53433-0425" not in ds.meta["train_ids"] + ds.test_ids and ds.meta["n_zwarning_dropped"] == 1
    kept = loader.load(ml_collections.ConfigDict({**base, "zwarning_ok": False}))
    assert "1678-53433-0425" in kept.meta["train_ids"] + kept.test_ids
    small = loader.load(ml_collections.ConfigDict({**base, "n_train": 4}))
    smaller = loader.load(ml_collections.ConfigDict({**base, "n_train": 2}))
    assert small.test_ids == ds.test_ids and len(small.meta["train_ids"]) == 4
    assert set(smaller.meta["train_ids"]) < set(small.meta["train_ids"]) < set(ds.meta["train_ids"])
