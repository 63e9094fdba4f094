"""SDSS spectra: the ingested common-grid flux with pixel masks, split by spectral class.

``cfg.path`` names an ingested ``.npz`` (from ``python -m data_prep.sdss``), or FITS folders/files
(comma-separated or a list; globs allowed; any file names); unset, the folders ``cfg.folders`` under
the data root (default ``sdss``). All FITS files are ingested together, once, into ``cfg.cache_dir`` (default ``cache/sdss``,
keyed by the files and the ingestion options), so later runs only read the npz.

The training split holds ordinary spectra of ``cfg.train_classes`` (default galaxies) minus a
seeded ``holdout_fraction`` of them (or fold ``fold`` of ``n_folds``); the test split holds that
hold-out (label 0) plus every spectrum of another class (label 1); both carry ``ivar`` (the model trains
on ``x``, ``mask`` and ``weights`` only). With ``cfg.zwarning_ok`` (default
True) an ordinary spectrum whose ZWARNING is not 0 is left out of both splits: its redshift, and so its
rest frame, is not to be trusted. ``cfg.n_train`` > 0 keeps a seeded subset of that many training
spectra (learning curves; the held-out spectra do not change). ``test['ivar']`` (normalised-flux inverse variance) travels
with the test rows so region detection can measure residuals in noise units. Masked pixels are
filled by interpolation (``fill_masked``, default True) so the input has no artificial zeros.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
from ml_collections.config_dict import placeholder

from research.config import with_defaults
from research.data import Dataset, check_finite, limit_rows
from research.data import sdss_fits as ingest_sdss
from research.data.sources import expand
from research.errors import InputError
from research.paths import SDSS_CACHE, dataset_dir


DEFAULTS = {
    "cache_dir": placeholder(str),  # ingested-npz cache; None = cache/sdss in the repository
    "folders": ("sdss",),  # FITS folders under the data root, ingested together (used when data.path is unset)
    "frame": "observed",  # observed | rest (a grid from each spectrum's redshift)
    "norm": "median",  # flux normalisation of each spectrum
    "norm_window": placeholder(tuple),  # (lo, hi) Å of the normalisation; None = the whole spectrum
    "wave_range": placeholder(tuple),  # (lo, hi) Å of the common grid; None = the overlap of the spectra
    # and_mask bits that mask a pixel (ivar = 0 always does): SPPIXMASK names or bit numbers ("ANY" = every
    # bit), an integer (-1 = any bit), or None = the bits that mean bad data (sdss_fits.DEFAULT_MASK_BITS)
    "mask_bits": placeholder(object),
    "min_good_fraction": 0.1,  # spectra with fewer unmasked pixels are skipped
    "fill_masked": True,  # interpolate over masked pixels before training
    "train_classes": ("GALAXY",),  # the normal classes
    "holdout_fraction": 0.25,  # of the train classes, kept for the test split (label 0)
    "split_seed": 0,  # seed of the hold-out permutation
    "n_folds": 0,  # > 1: hold out fold data.fold of n_folds instead (cross-validation)
    "fold": 0,  # with n_folds > 1: the fold held out
    "zwarning_ok": True,  # leave out ordinary spectra with ZWARNING != 0 (their rest frame is not trusted)
    "n_train": 0,  # > 0: a seeded subset of that many training spectra (learning curves)
    "ivar_weighting": False,  # weight the loss by the clipped inverse variance
    "weight_clip": 10.0,  # clip of the inverse-variance weights, in units of their median
}

def _pair(value):
    return None if value is None else tuple(float(v) for v in value)


def ingest_options(cfg) -> dict:
    return {"frame": cfg.frame, "norm": cfg.norm,
            "norm_window": _pair(cfg.norm_window), "wave_range": _pair(cfg.wave_range),
            "mask_bits": cfg.mask_bits, "min_good_fraction": float(cfg.min_good_fraction)}


def fits_files(sources) -> list[pathlib.Path]:
    """FITS files of a folder, or of several folders/files/globs (comma-separated or a sequence)."""
    if isinstance(sources, pathlib.Path) and sources.is_dir():
        return ingest_sdss.find_files(sources)
    return expand(sources, ingest_sdss.FITS_SUFFIXES)


INGEST_VERSION = 2  # 2: header ids with objid fallback, zwarning column, bad-data mask bits by default


def cached_ingest(sources, cache_dir: pathlib.Path, options: dict, log=print) -> pathlib.Path:
    """The ingested npz for the FITS files of ``sources`` (see :func:`fits_files`) with ``options``,
    ingesting only when no cache entry matches."""
    files = fits_files(sources)
    if not files:
        raise InputError(f"{sources}: no SDSS FITS files found")
    key = json.dumps({"files": [(str(f.resolve()), f.stat().st_size, int(f.stat().st_mtime)) for f in files],
                      "options": options, "version": INGEST_VERSION}, sort_keys=True, default=str)
    out = pathlib.Path(cache_dir) / f"sdss_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if not out.is_file():
        report = ingest_sdss.ingest(files, out, **options)
        if log:
            log(f"sdss: ingested {report['n_ingested']}/{report['n_files']} spectra into {out} "
                f"({report['n_skipped']} skipped, see {ingest_sdss.output_paths(out)['report'].name})")
    return out


def skipped_files(npz: pathlib.Path) -> list[str]:
    """The files the ingestion of ``npz`` skipped, with why (from its report, when there is one)."""
    report = ingest_sdss.output_paths(npz)["report"]
    try:
        return [s["reason"] for s in json.loads(report.read_text()).get("skipped", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def noise_weights(ivar: np.ndarray, mask: np.ndarray, clip: float = 10.0) -> np.ndarray:
    """Inverse variance divided by each spectrum's median good-pixel ivar, clipped at ``clip``.

    Per-spectrum normalisation down-weights noisy pixels (sky lines, band edges) within a spectrum
    without letting the few high-S/N spectra dominate a batch.
    """
    good = np.where(mask, ivar, np.nan)
    med = np.nanmedian(good, axis=1, keepdims=True)
    med = np.where(np.isfinite(med) & (med > 0), med, 1.0)
    return np.where(mask, np.clip(ivar / med, 0.0, clip), 0.0).astype(np.float32)


def fill_gaps(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked pixels filled by linear interpolation between the nearest usable ones (held flat
    beyond the ends), so the model's input has no artificial drops to zero; the mask still keeps
    them out of the loss and the scores."""
    out = flux.copy()
    idx = np.arange(flux.shape[1])
    for i in range(len(flux)):
        good = mask[i]
        if good.any() and not good.all():
            out[i, ~good] = np.interp(idx[~good], idx[good], flux[i, good])
    return out


def _held_out(normal_idx: np.ndarray, cfg, train_classes) -> np.ndarray:
    """The ordinary spectra kept for the test split: the first ``holdout_fraction`` of the seeded
    permutation, or with ``n_folds > 1`` its fold number ``fold`` (every spectrum is held out by exactly
    one fold: cross-validation over the few spectra there are)."""
    n_folds, fold = int(cfg.n_folds or 0), int(cfg.fold or 0)
    if n_folds > 1:
        if not 0 <= fold < n_folds or n_folds > len(normal_idx):
            raise InputError(f"config key data.fold: {fold} must be in 0..{n_folds - 1}, with data.n_folds "
                             f"({n_folds}) at most the {len(normal_idx)} {train_classes} spectra")
        return np.array_split(normal_idx, n_folds)[fold]
    n_hold = int(round(float(cfg.holdout_fraction) * len(normal_idx)))
    if n_hold >= len(normal_idx):
        raise InputError(f"config key data.holdout_fraction: leaves no {train_classes} spectra to train on")
    return normal_idx[:n_hold]


def dataset_path(cfg) -> pathlib.Path:
    """The ingested npz the config names, ingesting its FITS sources first when needed."""
    sources = cfg.path
    if isinstance(sources, str) and sources.endswith(".npz"):
        return pathlib.Path(sources).expanduser()
    if not sources:
        sources = [dataset_dir(name, cfg.root) for name in (cfg.folders or ("sdss",))]
        for folder in sources:
            if not folder.is_dir():
                raise InputError(f"{folder}: SDSS folder not found (set config key data.root, data.folders or data.path)")
    return cached_ingest(sources, pathlib.Path(cfg.cache_dir or SDSS_CACHE), ingest_options(cfg))


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    path = dataset_path(cfg)
    arrays, cat = ingest_sdss.load_ingested(path)
    flux, ivar, mask = arrays["flux"], arrays["ivar"], arrays["mask"].astype(bool)
    check_finite(flux, f"{path}: flux")
    if cfg.fill_masked:
        flux = fill_gaps(flux, mask)
    ids = [str(i) for i in arrays["ids"]]

    train_classes = tuple(str(c).upper() for c in (cfg.train_classes or ("GALAXY",)))
    classes = np.char.upper(cat["class"].astype(str))
    normal = np.isin(classes, train_classes)
    usable = np.ones(len(classes), bool)
    if cfg.zwarning_ok and "zwarning" in cat:
        usable = ~normal | (cat["zwarning"] == 0)
        normal &= usable
    if cfg.score_only:  # research.score: every spectrum, in catalogue order
        train_idx, test_idx = np.zeros(0, int), np.arange(len(ids))
        usable = np.ones(len(classes), bool)
    elif not normal.any():
        raise InputError(f"config key data.train_classes: no spectra of {train_classes} in {path} "
                         f"(classes present: {sorted(set(classes))})")
    else:
        rng = np.random.default_rng(int(cfg.split_seed))
        normal_idx = rng.permutation(np.flatnonzero(normal))
        held = _held_out(normal_idx, cfg, train_classes)
        train_idx = np.setdiff1d(normal_idx, held)
        n_train = int(cfg.n_train or 0)
        if n_train < 0:
            raise InputError(f"config key data.n_train: {n_train} must be >= 0 (0 = every training spectrum)")
        if n_train:
            train_idx = np.random.default_rng(int(cfg.split_seed) + 1).permutation(train_idx)[:n_train]
        train_idx = np.sort(train_idx)
        test_idx = np.sort(np.concatenate([held, np.flatnonzero(~normal & usable)]))

    weights = noise_weights(ivar, mask, float(cfg.weight_clip)) if cfg.ivar_weighting else None

    def split(idx):
        d = {"x": flux[idx], "mask": mask[idx], "ivar": ivar[idx], "index": idx}
        if weights is not None:
            d["weights"] = weights[idx]
        d = limit_rows(d, cfg.limit, int(cfg.split_seed))
        return d, d.pop("index")

    train, train_rows = split(train_idx)
    test, test_rows = split(test_idx)
    columns = [c for c in ingest_sdss.CATALOGUE_COLUMNS if c in cat and c not in ("index", "id")]
    catalogue = {ids[i]: {c: (cat[c][i].item() if hasattr(cat[c][i], "item") else cat[c][i]) for c in columns}
                 for i in np.concatenate([train_rows, test_rows])}
    return Dataset(
        train=train, test=test,
        test_labels=(~normal[test_rows]).astype(np.int32),
        test_ids=[ids[i] for i in test_rows],
        train_ids=[ids[i] for i in train_rows],
        kind="1d", axis=arrays["wavelength"].astype(np.float64),
        axis_label="observed wavelength (Å)" if str(arrays.get("frame", "observed")) == "observed"
        else "rest wavelength (Å)",
        meta={"source": str(path), "frame": str(arrays.get("frame", "observed")), "train_classes": list(train_classes),
              "train_ids": [ids[i] for i in train_rows], "n_train": int(len(train_rows)),
              "n_zwarning_dropped": int((~usable).sum()),
              "n_test": int(len(test_rows)), "ivar_weighting": weights is not None, "catalogue": catalogue,
              "score_only": bool(cfg.score_only), "skipped": skipped_files(path)},
    )
