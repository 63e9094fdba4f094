"""A whole sharded run (stream-train, stream-score, regions, figures) against the in-memory run of the same spectra."""

import csv

import numpy as np
import pytest

from experiments import sdss_cnn_skip
from research import experiment, stream_score
from research.data import sdss_fits, sdss_shards, shards

pytestmark = pytest.mark.data("sdss")
WAVE = (3600.0, 10400.0)


def small_config(tmp_path, **data):
    c = sdss_cnn_skip.get_config()
    c.smoke = True
    c.model.features = (4, 8)
    c.model.latent_dim = 8
    c.train.eval_batch_size = 8
    c.run.root = str(tmp_path / "runs")
    c.regions.sample_n = 2
    c.regions.top_n = 2
    c.plots.enabled = True
    for k, v in data.items():
        c.data[k] = v
    return c


@pytest.mark.slow
def test_sharded_run_scores_and_regions_equal_the_in_memory_run(data_dir, tmp_path):
    sdss_fits.ingest(data_dir / "sdss", tmp_path / "d.npz", wave_range=WAVE)
    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "shards", wave_range=WAVE, shard_size=16)
    shards.merge(tmp_path / "shards")
    mem = experiment.run(small_config(tmp_path, path=str(tmp_path / "d.npz")), log=lambda m: None)
    streamed = experiment.run(small_config(tmp_path, path=str(tmp_path / "shards"), format="sharded"),
                              log=lambda m: None)
    with open(f"{mem['run_dir']}/scores.csv") as f:
        rows = list(csv.DictReader(f))
    table = stream_score.read_parts(f"{streamed['run_dir']}/scores")
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    np.testing.assert_allclose(table.column("score").to_numpy(), [float(r["score"]) for r in rows], rtol=1e-6)
    assert table.column("label").to_pylist() == [int(r["label"]) for r in rows]
    assert streamed["threshold"]["value"] == pytest.approx(mem["threshold"]["value"], rel=1e-6)
    assert streamed["n_flagged"] == mem["n_flagged"] and streamed["test"]["roc_auc"] == pytest.approx(
        mem["test"]["roc_auc"])
    assert streamed["regions"]["n_regions"] == mem["analyses"]["sdss_regions"]["n_regions"]
    assert streamed["regions"]["n_flagged"] == mem["analyses"]["sdss_regions"]["n_flagged"]
    regions = stream_score.read_parts(f"{streamed['run_dir']}/scores", "regions")
    assert regions.num_rows == streamed["regions"]["n_regions"]
    top = table.sort_by([("score", "descending")]).column("id").to_pylist()[:2]
    assert streamed["regions"]["top"] == top
    assert len(streamed["regions"]["figures"]) == len(set(top) | set(streamed["regions"]["sampled_ids"]))


@pytest.mark.parametrize("key,value,message", [
    ("data.scaling", "minmax", "config key data.scaling: the sharded path streams spectra as stored; use 'none'"),
    ("data.path", None, "config key data.path: the merged shard folder is required with data.format='sharded'"),
    ("regions.threshold_scope", "global",
     "config key regions.threshold_scope: only 'spectrum' streams (one batch at a time)"),
])
def test_keys_the_sharded_path_cannot_honour_are_one_line_errors(tmp_path, key, value, message):
    from research.errors import InputError
    from research.stream_run import check_config

    c = small_config(tmp_path, path=str(tmp_path), format="sharded")
    block, name = key.split(".")
    c[block][name] = value
    with pytest.raises(InputError) as err:
        check_config(c)
    assert str(err.value) == message


def test_sharded_splits_are_the_in_memory_splits(data_dir, tmp_path):
    from research.data import load_dataset
    from research.experiment import split_validation
    from research.data.sdss import fill_gaps
    from research.stream_run import splits

    sdss_fits.ingest(data_dir / "sdss", tmp_path / "d.npz", wave_range=WAVE)
    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "s", wave_range=WAVE)
    shards.merge(tmp_path / "s")
    c = small_config(tmp_path, path=str(tmp_path / "d.npz"))
    ds = load_dataset(c.data)
    split_validation(ds, c.data.val_fraction, c.seed)
    sh = shards.Shards(tmp_path / "s")
    rows = splits(sh, c.data, c.seed)
    for name, split in (("train", ds.train), ("val", ds.val)):
        got = sh.read(rows[name])
        assert np.array_equal(fill_gaps(got["flux"], got["mask"]), split["x"])  # same rows, same order
        assert np.array_equal(got["mask"], split["mask"])
    ids = sh.column("id")
    assert [ids[i] for i in rows["test"]] == ds.test_ids
    assert list(rows["labels"][rows["test"]]) == list(ds.test_labels)
