"""A finished run applied to new data: its config, best parameters, scaler and threshold, nothing retrained.

``load_run(path)`` gives a :class:`Run` for notebooks (``.score(x)``, ``.reconstruct(x)``,
``.regions(x, ...)``); :meth:`Run.score_data` reads new data with the run's own loader and
preprocessing and writes a scoring directory ``<run>/scores/<name>/`` (what ``python -m
research.score`` does). The run directory is only read: checkpoints are opened read-only and
everything new goes under ``scores/``.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import pathlib
import sys
from typing import Any

import ml_collections
from absl import logging
import numpy as np
import orbax.checkpoint as ocp

from research import plots, scoring
from research.data.scaling import PREPROCESSING, Scaler, load_preprocessing
from research.cli import parse_value
from research.config import check
from research.errors import InputError
from research.metrics import classification_metrics
from research.models import build_model
from research.rundir import RunDir
from research.training import Trainer

ANALYSES_ON_NEW_DATA = ("sdss_regions",)  # the others compare with training data, which scoring does not read


def _read_json(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: not found; is {path.parent} a finished run directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _shapes(tree) -> dict[str, tuple]:
    import jax

    return {jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, "shape")}


def _restore(directory: pathlib.Path, like, params_of=lambda tree: tree) -> Any:
    """The newest checkpoint in ``directory`` restored like ``like``, read-only; a parameter whose stored
    shape differs from the model's, or any other failure, is one line."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no checkpoint (the run did not finish, or was trained elsewhere)")
    from research.checkpoints import keep_closed_loop_reports

    abstract = jax_tree_abstract(like)
    keep_closed_loop_reports()  # a failed read's leftover threads report "Event loop is closed" after it
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only manager will not save
    sys.stderr.flush()
    real_stderr = os.dup(2)
    # orbax's reader threads print the traceback of a damaged checkpoint themselves; the failure is
    # reported below in one line
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        with ocp.CheckpointManager(directory.absolute(), options=options) as m:
            step = m.latest_step()
            if step is None:
                raise InputError(f"{directory}: no checkpoint (the run did not finish, or was trained elsewhere)")
            stored = ocp.StandardCheckpointer().metadata(directory.absolute() / str(step) / "default")
            stored = _shapes(params_of(getattr(stored, "item_metadata", stored)))
            for name, shape in _shapes(params_of(abstract)).items():
                if name in stored and stored[name] != shape:
                    raise InputError(f"{directory}: parameter {name} is stored with shape {stored[name]}, the model "
                                     f"rebuilt from the run's config and preprocessing.npz needs {shape}; the run "
                                     "directory's files do not belong together")
            return m.restore(step, args=ocp.args.StandardRestore(abstract))
    except InputError:
        raise
    except Exception as exc:  # orbax raises ValueError/KeyError/... with multi-line texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{directory}: cannot restore the parameters ({first[:200]})") from None
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(real_stderr)
        logging.set_verbosity(verbosity)


def jax_tree_abstract(tree):
    import jax

    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


@dataclasses.dataclass
class Run:
    """A trained run, ready to score samples shaped like its training samples (raw, unscaled units)."""

    path: pathlib.Path
    config: ml_collections.ConfigDict
    trainer: Trainer
    params: Any  # leading member axis
    scaler: Scaler
    threshold: float
    sample_shape: tuple[int, ...]
    axis: np.ndarray | None
    metrics: dict

    # ---- arrays in, numbers out -------------------------------------------------------------
    def check_shape(self, x: np.ndarray, source: str = "input") -> None:
        """A one-line error with both shapes when ``x`` does not fit the run's model."""
        shape = tuple(np.shape(x)[1:])
        if shape != self.sample_shape:
            hint = ("for SDSS spectra score through the run (research.score / Run.score_data), which resamples them "
                    "onto the run's wavelength grid" if self.config.data.name == "sdss" else
                    "resize the images to the run's size first" if self.config.data.name == "fashion_mnist" else
                    "prepare the data as for training (same loader settings: lengths, bins, frames, data.shape)")
            raise InputError(f"{source}: samples of shape {shape}, but run {self.path} was trained on samples of "
                             f"shape {self.sample_shape}; {hint}")

    def _data(self, x, mask=None, weights=None, scaled=False) -> dict:
        if isinstance(x, dict):  # a split as read by .read(): its mask and weights come with it
            x, mask, weights = x["x"], x.get("mask", mask), x.get("weights", weights)
        x = np.asarray(x, np.float32)
        if x.ndim == len(self.sample_shape):
            x = x[None]
        self.check_shape(x)
        d = {"x": x if scaled else self.scaler.transform(x)}
        if mask is not None:
            d["mask"] = np.asarray(mask, bool).reshape(x.shape)
        if weights is not None:
            d["weights"] = np.asarray(weights, np.float32).reshape(x.shape)
        return d

    def member_errors(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every member ``(K, N)`` (normalised as the run's ``score.normalize``) and the
        reconstructions ``(K, N, ...)`` of scaled samples, exactly as training scored its splits."""
        placed = self.trainer.put(data)
        recon, err = self.trainer.predict(self.params, placed)
        return scoring.normalize(err, placed["x"], self.config.score.normalize), np.asarray(recon)

    def score(self, x, mask=None, weights=None) -> np.ndarray:
        """Ensemble-mean anomaly score of each sample (compare with ``.threshold``); ``x`` is an array
        in the units of the training data, or a split dict from :meth:`read` (with its mask and weights)."""
        errors, _ = self.member_errors(self._data(x, mask, weights))
        return scoring.ensemble_scores(errors)[0]

    def reconstruct(self, x, mask=None) -> np.ndarray:
        """Ensemble-mean reconstruction of each sample, in the units of ``x``."""
        _, recon = self.member_errors(self._data(x, mask))
        return self.scaler.inverse(recon.mean(0))

    def regions(self, x, mask=None, ivar=None, **overrides):
        """Anomalous regions of spectra ``x`` (on the run's grid, ``self.axis``; or a split dict from
        :meth:`read`) by the run's detector (``config.regions``, keys overridable here): a
        :class:`research.regions.Regions` (``.scores``, ``.flags``, ``.regions_of(i)``)."""
        from research.analyses.sdss_regions import find_regions

        if isinstance(x, dict):
            x, mask, ivar = x["x"], x.get("mask", mask), x.get("ivar", ivar)
        x = np.asarray(x, np.float32).reshape(-1, *self.sample_shape)
        mask = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool).reshape(x.shape)
        config = ml_collections.ConfigDict(self.config.to_dict())
        for key, value in overrides.items():
            set_key(config, f"regions.{key}", value)
        axis = self.axis if self.axis is not None else np.arange(x.shape[1], dtype=np.float64)
        if config.regions.get("model_error_quantile") not in (0, 0.0, None, self.config.regions.get("model_error_quantile")):
            raise InputError(f"regions.model_error_quantile: run {self.path} calibrated the model error with "
                             f"{self.config.regions.get('model_error_quantile')}; 0 turns it off")
        return find_regions(config, x, self.reconstruct(x, mask), mask, ivar, axis, self.model_error())[0]

    def model_error(self) -> np.ndarray | None:
        """The model error per pixel that the run's region analysis calibrated on its training spectra."""
        from research.analyses.sdss_regions import MODEL_ERROR_FILE

        path = pathlib.Path(self.path) / MODEL_ERROR_FILE
        return np.load(path) if path.is_file() else None

    # ---- new data through the run's own loader ----------------------------------------------
    def data_config(self, overrides: dict | None = None) -> ml_collections.ConfigDict:
        """The run's config with ``overrides`` (``{'data.path': ...}``) applied; SDSS data is put on
        the run's own wavelength grid whatever grid the new files would give on their own."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        for key, value in (overrides or {}).items():
            set_key(config, key, value)
        if config.data.name == "sdss" and self.axis is not None and not (overrides or {}).get("data.wave_range"):
            set_key(config, "data.wave_range", (float(self.axis[0]), float(self.axis[-1])))
        check(config)
        return config

    def read(self, overrides: dict | None = None, split: str = "all", log=print, **data):
        """New data through the run's loader, unscaled: the :class:`research.data.Dataset` whose ``test``
        split holds the samples (``x``; for spectra also ``mask``, ``weights``, ``ivar``, on the run's
        grid), and the config it was read with. Data keys as ``overrides`` (``{'data.path': ...}``) or
        keywords (``path=...``); skipped input files are reported through ``log``."""
        from research.data import load_splits

        overrides = {**(overrides or {}), **{f"data.{k}": v for k, v in data.items()}}
        if split not in ("test", "all"):
            raise InputError(f"--split: {split!r} is not 'test' or 'all'")
        # new data: every sample of it (no data.limit of a smoke run), through the loader's scoring mode
        new = {"data.score_only": True, "data.limit": 0} if split == "all" else {}
        config = self.data_config({**new, **(overrides or {})})
        ds = load_splits(config, log or (lambda *a: None), validation=split == "test")
        if split == "all" and not ds.meta.get("score_only"):  # a loader without a scoring mode: both splits
            n_train = len(ds.train["x"])
            ds.test = {k: np.concatenate([ds.train[k], ds.test[k]]) for k in ds.test if k in ds.train}
            ds.test_ids = (ds.train_ids or [f"train_{i}" for i in range(n_train)]) + \
                (ds.test_ids or [f"test_{i}" for i in range(len(ds.test["x"]) - n_train)])
            if ds.test_labels is not None:
                ds.test_labels = np.concatenate([np.zeros(n_train, np.int32), ds.test_labels])
        return ds, config

    def score_data(self, overrides: dict | None = None, name: str | None = None, split: str | None = None,
                   refit_threshold: bool = False, log=print) -> dict:
        """Reads data with the run's loader (``overrides`` change data keys, e.g. ``data.path``), scores
        ``split`` ('test', the default without ``data.path``: the loader's test split, as the run scored it;
        'all', the default with it: every sample the loader reads, through its ``data.score_only`` mode where it has one, else the training rows then the test
        rows) and writes ``<run>/scores/<name>/``; returns the summary written to
        ``scoring.json``. The run's threshold flags the samples; ``refit_threshold`` fits the run's rule
        (method, k, percentile) to the new scores of the rows labelled normal (all rows without labels)."""
        if split is None:
            split = "all" if "data.path" in (overrides or {}) else "test"
        ds, config = self.read(overrides, split, log=log)
        self.check_shape(ds.test["x"], _source(config))
        data = {k: v for k, v in ds.test.items() if k in ("x", "mask", "weights")}
        data["x"] = self.scaler.transform(data["x"])
        member, recon = self.member_errors(data)
        scores, spread = scoring.ensemble_scores(member)

        th = self.config.threshold
        thr = self.threshold
        if refit_threshold:
            normal = np.ones(len(scores), bool) if ds.test_labels is None else ds.test_labels == 0
            if not normal.any():
                raise InputError("--refit-threshold: no rows labelled normal among the scored data to fit it on")
            thr = scoring.threshold(scores[normal], th.method, th.k, th.percentile)
        flags = scoring.flag(scores, thr)

        out = RunDir(self.path / "scores", "", name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
                     create=False)
        out.plots.mkdir(parents=True, exist_ok=True)
        ids = ds.test_ids or [str(i) for i in range(len(flags))]
        columns = {"id": ids, "score": scores, "score_std": spread, "flag": flags}
        if ds.test_labels is not None:
            columns["label"] = ds.test_labels
        out.write_csv("scores.csv", columns)
        summary = {"run": str(self.path), "data": {k: v for k, v in config.data.to_dict().items() if v is not None},
                   "split": split, "n_scored": int(len(flags)), "n_flagged": int(flags.sum()),
                   "threshold": {"value": thr, "refitted": bool(refit_threshold), "method": th.method,
                                 "run_value": self.threshold},
                   "skipped": ds.meta.get("skipped", [])}
        if ds.test_labels is not None:
            metrics = {"threshold": summary["threshold"], "n_flagged": summary["n_flagged"],
                       "n_test": int(len(flags)), "test": classification_metrics(ds.test_labels, scores, thr)}
            out.write_json("metrics.json", metrics)
            summary["test"] = metrics["test"]
        if self.config.plots.enabled:
            recon_mean = recon.mean(0)
            plots.error_histogram(scores, thr, out.plot_path("error_hist.png"), ds.test_labels)
            plots.error_scatter(scores, thr, out.plot_path("error_scatter.png"), ds.test_labels)
            plots.reconstruction_examples(
                data["x"], recon_mean, scores, out.plot_path("examples.png"), kind=ds.kind, axis=ds.axis,
                axis_label=ds.axis_label, n=self.config.plots.n_examples, ids=ds.test_ids, mask=ds.test.get("mask"))
            if ds.test_labels is not None and len(np.unique(ds.test_labels)) == 2:
                plots.roc_curve(ds.test_labels, scores, out.plot_path("roc.png"))
        analyses = [a for a in (self.config.get("analyses") or ()) if a in ANALYSES_ON_NEW_DATA]
        if analyses:
            from research.analyses import RunContext, run_analyses

            ds.test = {**ds.test, "x": data["x"]}
            ctx = RunContext(config=config, dataset=ds, run=out, recon_test=recon, errors={"test": scores},
                             scaler=self.scaler, model_error=self.model_error())
            summary["analyses"] = run_analyses(analyses, ctx)
        summary["output"] = str(out.path)
        out.write_json("scoring.json", summary)
        if log:
            log(f"scored {len(flags)} samples, {int(flags.sum())} above the threshold {thr:.5g} -> {out.path}")
        return summary


def _source(config) -> str:
    return str(config.data.get("path") or config.data.get("root") or f"data {config.data.name}")


def set_key(config: ml_collections.ConfigDict, key: str, value) -> None:
    """Sets ``a.b.c`` in ``config``; a key the run's config does not have is a one-line error."""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents + [leaf]):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            siblings = list(node) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, siblings, n=1)
            prefix = ".".join(parents[:depth])
            hint = f" (did you mean {'.'.join(filter(None, [prefix, close[0]]))!r}?)" if close else ""
            raise InputError(f"config key {key}: unknown key{hint}")
        if depth < len(parents):
            node = node[part]
    if isinstance(value, str) and isinstance(node[leaf], (int, float)) and not isinstance(node[leaf], bool):
        value = parse_value(value)
    with node.ignore_type():
        node[leaf] = tuple(value) if isinstance(value, list) else value


def load_run(path) -> Run:
    """A finished run directory (``runs/<experiment>/<name>``) as a :class:`Run`."""
    path = pathlib.Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: no such run directory")
    config = ml_collections.ConfigDict(_read_json(path / "config.json"))
    # data.classes is a key of every Fashion-MNIST config (the one_class runner's): the runner tells them apart
    if config.get("runner", "reconstruction") != "reconstruction":
        raise InputError(f"{path}: a {config.runner} benchmark run (a model per class, ROC-AUC per class, no "
                         "threshold) cannot be scored; research.score applies a run of one model (or ensemble) "
                         "with a threshold, e.g. experiments/fashion_mnist.py:dense with data.normal_classes set")
    metrics = _read_json(path / "metrics.json")
    if "threshold" not in metrics:
        raise InputError(f"{path / 'metrics.json'}: no threshold; the run stopped before scoring (resume it first)")
    pre = path / PREPROCESSING
    if pre.is_file():
        scaler, sample_shape, axis = load_preprocessing(pre)
    else:  # runs from before preprocessing.npz: refit the scaler on the run's own training data
        from research.data import prepare_data

        ds, scaler = prepare_data(config, log=lambda *a: None)
        sample_shape, axis = tuple(ds.train["x"].shape[1:]), ds.axis
    run_info = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    tc = config.train
    seeds = run_info.get("seeds") or [config.seed + i for i in range(tc.ensemble_size)]
    trainer = Trainer.from_config(build_model(config.model), tc, 1)
    like = trainer.init(seeds, sample_shape)
    if tc.use_best:
        params = _restore(path / "checkpoints" / "best", like.best_params)
    else:
        params = _restore(path / "checkpoints" / "latest", like,
                          lambda t: t.params if hasattr(t, "params") else t["params"]).params
    return Run(path=path, config=config, trainer=trainer, params=params, scaler=scaler,
               threshold=float(metrics["threshold"]["value"]), sample_shape=sample_shape, axis=axis,
               metrics=metrics)
