"""Injected features (known spans and amplitudes) and region-level scoring, plus a small-scale
injection evaluation on real spectra."""

import numpy as np
import pytest

from research.regions import injection
from research.regions import Regions


def _regions(spans_by_row, n):
    rows = [i for i, spans in spans_by_row.items() for _ in spans]
    start = [s for spans in spans_by_row.values() for s, _ in spans]
    end = [e for spans in spans_by_row.values() for _, e in spans]
    return Regions(np.asarray(rows, int), np.asarray(start, int), np.asarray(end, int), None, None,
                   np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n), np.zeros((n, 1), bool), {})


@pytest.mark.parametrize("kind", injection.KINDS)
def test_injected_feature_has_the_asked_amplitude_and_span(kind):
    rng = np.random.default_rng(0)
    length = 2000
    x = np.ones(length, np.float32)
    ivar = np.full(length, 1 / 0.05 ** 2, np.float32)
    ivar[:1000] = 1 / 0.2 ** 2  # noisier half: sigma depends on where the feature lands
    mask = np.ones(length, bool)
    mask[:300] = False
    new, (start, end, sigma) = injection.inject_one(x, ivar, mask, kind, 5.0, rng)
    delta = new - x
    assert mask[start:end].mean() >= 0.9 and start >= 0 and end <= length
    assert sigma == pytest.approx(np.median(1 / np.sqrt(ivar[start:end])))
    if kind == "dropout":
        assert np.allclose(delta[start:end], -5.0 * sigma) and not delta[:start].any() and not delta[end:].any()
    else:
        peak = np.argmax(np.abs(delta))
        assert abs(delta[peak]) == pytest.approx(5.0 * sigma, rel=0.02)
        assert np.sign(delta[peak]) == (1 if kind == "emission" else -1)
        assert start < peak < end - 1
        outside = np.r_[delta[:start], delta[end:]]
        assert np.abs(outside).max() < 0.14 * 5.0 * sigma  # span = profile above 13.5% of the peak


def test_score_counts_matches_false_regions_and_iou():
    feats = [injection.Feature(0, 0, "emission", 100, 120, 5.0, 1.0),
             injection.Feature(1, 1, "dropout", 500, 560, 5.0, 1.0),
             injection.Feature(2, 2, "absorption", 300, 340, 5.0, 1.0)]
    regions = _regions({0: [(100, 150), (900, 950)], 1: [(500, 550), (550, 600)], 2: [(0, 2000)]}, 3)
    got = injection.score(feats, regions)
    # row 0: 1 match + 1 false; row 1: 2 matches; row 2: one region over everything matches nothing
    assert got["n_predicted"] == 5 and got["precision"] == pytest.approx(3 / 5)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["iou"] == pytest.approx((20 / 50 + 60 / 100 + 0) / 3)
    # the false region at 900-950 was already found in the clean spectrum 0: P_new leaves it out
    got = injection.score(feats, regions, clean={0: [(880, 940)]})
    assert got["precision_new"] == pytest.approx(3 / 4) and got["precision"] == pytest.approx(3 / 5)


def test_small_injection_evaluation_on_real_spectra(sdss_galaxies):
    x, ivar, mask = sdss_galaxies
    rng = np.random.default_rng(5)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    # a model that knows the normal spectrum and nothing else: the clean flux with fresh noise,
    # whatever was injected, so the residual is noise plus the injected feature
    normal = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
    trials = injection.make_trials(x, ivar, mask, lambda b: np.zeros_like(b), [1.0, 10.0], copies=4, seed=0)
    for t in trials:
        t.recon = normal[t.source]
    assert all(not np.array_equal(t.x[i], x[t.source[i]]) for t in trials for i in range(len(t.x)))
    detector = {"window_size": 10, "abs_threshold": 3.0, "range_mismatch_factor": None,
                "noise_units": True, "rel_threshold": 0.0}  # window-mean |residual| > 3 sigma
    rows = injection.score_trials(trials, x, ivar, mask, normal, detector)
    by = {(r["amplitude"], r["kind"]): r for r in rows}
    assert by[(10.0, "all")]["recall"] >= 0.9 and by[(10.0, "all")]["precision"] >= 0.8
    assert by[(1.0, "all")]["recall"] < 0.5
    assert by[(10.0, "all")]["iou"] > 0.3
    assert by[(10.0, "all")]["n_features"] == 3 * 3 * 4
    table = injection.markdown_table(rows)
    assert table.count("\n") == 3 and "| 10 |" in table


def test_trials_of_separate_folds_score_as_one_set(sdss_galaxies):
    """Two 'folds' (spectra 0-1 and 2), each injected and reconstructed on its own, then stacked: the same
    rows as scoring the three spectra together, because every feature still points at its own clean row."""
    x, ivar, mask = sdss_galaxies
    rng = np.random.default_rng(5)
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    normal = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
    folds = [np.array([0, 1]), np.array([2])]
    parts = []
    for rows in folds:
        trials = injection.make_trials(x[rows], ivar[rows], mask[rows], lambda b: np.zeros_like(b), [2.0, 8.0],
                                       copies=3, seed=int(rows[0]))
        for t in trials:
            t.recon = normal[rows][t.source]
        parts.append(trials)
    joined = injection.concat_trials(parts, [len(r) for r in folds])
    assert [t.amplitude for t in joined] == [2.0, 8.0] and len(joined[1].x) == 3 * 3 * 3
    for t in joined:
        assert np.array_equal(t.recon, normal[t.source])  # each row still reconstructs its own clean spectrum
        for f in t.features:
            assert f.source == t.source[f.spectrum]
            added = t.x[f.spectrum] - x[f.source]
            inside, outside = np.abs(added[f.start:f.end]).max(), np.abs(np.delete(added, np.s_[f.start:f.end])).max()
            assert inside > 0 and outside <= 0.14 * inside  # the feature is at its own row's span (Gaussian tails)
    detector = {"window_size": 10, "abs_threshold": 3.0, "range_mismatch_factor": None,
                "noise_units": True, "rel_threshold": 0.0}
    rows = injection.score_trials(joined, x, ivar, mask, normal, detector)
    by = {(r["amplitude"], r["kind"]): r for r in rows}
    assert by[(8.0, "all")]["n_features"] == 27 and by[(8.0, "all")]["recall"] >= 0.9


@pytest.mark.slow
def test_injection_model_trains_through_the_pipeline_and_a_rerun_reuses_it(sdss_galaxies, tmp_path):
    import json

    from conftest import REPO
    from research.data import Dataset
    from research.regions.injection_eval import load_config, run_name, train_or_load

    x, ivar, mask = sdss_galaxies
    x = np.concatenate([x, x[::-1] * 1.1])[:, :512]
    mask = np.concatenate([mask, mask[::-1]])[:, :512]
    ds = Dataset(train={"x": x[:4], "mask": mask[:4]}, test={"x": x[4:], "mask": mask[4:]},
                 val={"x": x[4:], "mask": mask[4:]})
    config = load_config(f"{REPO}/experiments/sdss_cnn_skip.py:seed",
                         ["model.features=(4, 4)", "model.latent_dim=3", "train.batch_size=2"], epochs=2)
    lines = []
    trainer, params = train_or_load(config, ds, tmp_path, log=lines.append)
    rundir = tmp_path / "sdss_cnn_skip_seed" / run_name(config)
    assert [json.loads(r)["epoch"] for r in (rundir / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((rundir / "config.json").read_text())["run"]["resume"] == "auto"
    assert (rundir / "checkpoints" / "latest").is_dir()

    lines.clear()
    again, params_again = train_or_load(config, ds, tmp_path, log=lines.append)
    assert any(line.startswith("resumed from epoch 2") for line in lines), lines
    assert len((rundir / "log.jsonl").read_text().splitlines()) == 2  # nothing trained again
    for a, b in zip(*(jax_leaves(p) for p in (params, params_again))):
        assert np.array_equal(a, b)
    assert run_name(load_config(f"{REPO}/experiments/sdss_cnn_skip.py:seed", ["model.latent_dim=4"], 2)) \
        != run_name(config)


def jax_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
