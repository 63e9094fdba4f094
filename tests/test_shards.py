"""Sharded SDSS ingestion on the real FITS files: fast reader, round trip, tasks + merge, bad files, CLI."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from research.data import sdss_fits, sdss_fastread, sdss_shards, shards
from research.errors import InputError

WAVE = (3600.0, 10400.0)
pytestmark = pytest.mark.data("sdss")


@pytest.fixture(scope="module")
def sdss_dir(data_dir):
    return data_dir / "sdss"


@pytest.fixture(scope="module")
def one_task(sdss_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards1")
    report = sdss_shards.ingest_task(sdss_dir, out, wave_range=WAVE, shard_size=16)
    shards.merge(out)
    return report, shards.Shards(out)


def assert_fast_reader_equals_astropy(paths):
    for path in paths:
        a, b = sdss_fits.read_spectrum(path), sdss_fastread.read_spectrum(path)
        for k in ("loglam", "flux", "ivar", "bad"):
            assert getattr(a, k).dtype == getattr(b, k).dtype and np.array_equal(getattr(a, k), getattr(b, k)), k
        for k in a.meta:  # same values and Python types (NaN = NaN)
            assert type(a.meta[k]) is type(b.meta[k]), (path.name, k)
            assert a.meta[k] == b.meta[k] or (a.meta[k] != a.meta[k] and b.meta[k] != b.meta[k]), (path.name, k)
        assert a.meta.keys() == b.meta.keys()


def test_fast_reader_equals_the_astropy_reader_on_every_file(sdss_dir):
    assert_fast_reader_equals_astropy(sdss_fits.find_files(sdss_dir))


@pytest.mark.slow
@pytest.mark.data("sdss_extra")
def test_fast_reader_equals_the_astropy_reader_on_the_odd_files(data_dir):
    assert_fast_reader_equals_astropy(sdss_fits.find_files(data_dir / "sdss_extra"))


@pytest.mark.data("sdss_extra")
def test_fast_reader_reads_plain_files_without_the_astropy_fallback(sdss_dir, data_dir, monkeypatch):
    """The equality above would also hold if every file fell back to astropy (5-8x slower): with the fallback
    gone, every spec file with named HDUs and the spSpec file still read; only the three whose HDUs have no
    EXTNAME need it."""
    def no_fallback(path, mask_bits=None):
        raise AssertionError(f"fell back to astropy: {path}")

    monkeypatch.setattr(sdss_fastread.sdss_fits, "read_spectrum", no_fallback)
    unnamed, read = [], 0
    for path in sdss_fits.find_files(sdss_dir) + sdss_fits.find_files(data_dir / "sdss_extra"):
        try:
            read += sdss_fastread.read_spectrum(path).flux.size > 0
        except AssertionError:
            with fits.open(path) as hdul:
                assert not any(h.name for h in hdul[1:]), path.name  # only tables without EXTNAME fall back
            unnamed.append(path.name)
    assert read == 173 and len(unnamed) == 3


def test_shards_round_trip_the_npz_ingestion_bit_for_bit(sdss_dir, one_task, tmp_path):
    report, ds = one_task
    sdss_fits.ingest(sdss_dir, tmp_path / "ref.npz", wave_range=WAVE)
    arrays, cat = sdss_fits.load_ingested(tmp_path / "ref.npz")
    assert len(ds) == len(cat["id"]) == 46 and len(report["shards"]) == 3  # 16 + 16 + 14
    assert np.array_equal(ds.loglam, arrays["loglam"])
    back = ds.read()
    for k in ("flux", "ivar", "mask"):
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k]), k
    assert list(ds.column("id")) == list(arrays["ids"])
    for col in ("class", "plate", "mjd", "fiberid", "file", "format"):
        assert list(ds.column(col)) == list(cat[col]), col
    for col in ("z", "norm", "good_fraction"):
        assert np.array_equal(ds.column(col), cat[col], equal_nan=True), col
    assert list(back["index"]) == list(range(46))
    # random access in any order gives the same records
    order = np.random.default_rng(0).permutation(46)
    src = ds.source(order)
    for i in (0, 17, 45):
        assert np.array_equal(src[i]["flux"], arrays["flux"][order[i]]) and src[i]["index"] == order[i]


def test_tasks_plus_merge_equal_one_task_and_workers_do_not_change_the_shards(sdss_dir, one_task, tmp_path):
    _, ref = one_task
    for t in range(3):
        sdss_shards.ingest_task(sdss_dir, tmp_path, wave_range=WAVE, task=t, num_tasks=3, shard_size=16,
                                workers=2 if t == 1 else 1)
    manifest = shards.merge(tmp_path)
    ds = shards.Shards(tmp_path)
    assert manifest["n_spectra"] == 46 and manifest["num_tasks"] == 3 and len(manifest["shards"]) == 3
    a, b = ds.read(), ref.read()
    for k in ("flux", "ivar", "mask"):
        assert np.array_equal(a[k], b[k]), k
    drop = ("shard", "row")
    assert ds.catalogue.drop_columns(list(drop)).equals(ref.catalogue.drop_columns(list(drop)))


def test_bad_files_are_skipped_and_listed_per_task_and_in_the_manifest(sdss_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(sdss_dir.glob("spec-*.fits"))[:2]
    for p in good:
        shutil.copy(p, folder / p.name)
    data = good[0].read_bytes()
    (folder / "truncated.fits").write_bytes(data[: len(data) // 3])
    with fits.open(good[0]) as h:
        zero = fits.HDUList([x.copy() for x in h])
        zero["COADD"].data["ivar"][:] = 0
        zero.writeto(folder / "zz_ivar_zero.fits")
    shutil.copy(good[0], folder / "zz_copy.fits")  # a duplicate, in the other task
    r0 = sdss_shards.ingest_task(folder, tmp_path / "out", wave_range=WAVE, task=0, num_tasks=2)
    r1 = sdss_shards.ingest_task(folder, tmp_path / "out", wave_range=WAVE, task=1, num_tasks=2)
    # sorted names: spec-a, spec-b | truncated, zz_copy, zz_ivar_zero ... split 2 | 3
    saved = json.loads((tmp_path / "out" / "task-00001-of-00002.json").read_text())
    assert (r0["n_ingested"], r0["n_skipped"]) == (2, 0) and "skipped" not in r1  # the list: in the report file
    assert {s["file"] for s in saved["skipped"]} == {"truncated.fits", "zz_ivar_zero.fits"}
    assert saved["n_skipped"] == r1["n_skipped"] == 2
    assert r1["n_ingested"] == 1  # the copy: a duplicate only across tasks, caught by the merge
    manifest = shards.merge(tmp_path / "out")
    assert "skipped" not in manifest and manifest["n_skipped"] == 3  # the list: in manifest.json
    reasons = {s["file"]: s["reason"] for s in json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"]}
    assert set(reasons) == {"truncated.fits", "zz_ivar_zero.fits", "zz_copy.fits"}
    assert "truncated" in reasons["truncated.fits"] or "corrupt" in reasons["truncated.fits"]
    assert "masked" in reasons["zz_ivar_zero.fits"] and "duplicate" in reasons["zz_copy.fits"]
    assert all(r.startswith(str(folder / f)) or r.startswith(f) for f, r in reasons.items())
    assert len(shards.Shards(tmp_path / "out")) == 2
    assert not list((tmp_path / "out").glob("*.partial"))  # the skip spools are gone


@pytest.mark.parametrize("workers", [1, 2])
def test_a_duplicate_in_a_task_names_the_earlier_file_by_its_index(sdss_dir, tmp_path, workers):
    """Duplicates are found by a 64-bit hash of the id (:class:`shards.IdIndex`) that keeps the earlier file's
    index, not its path: the message still names that file, and only the copy is skipped."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(sdss_dir.glob("spec-*.fits"))[:3]
    for p in good:
        shutil.copy(p, folder / p.name)
    shutil.copy(good[1], folder / "zz_copy.fits")  # sorts last: a copy of the middle file
    report = sdss_shards.ingest_task(folder, tmp_path / "out", wave_range=WAVE, workers=workers)
    saved = json.loads((tmp_path / "out" / "task-00000-of-00001.json").read_text())
    sid = sdss_fastread.read_spectrum(good[1]).id
    assert (report["n_ingested"], report["n_skipped"]) == (3, 1)
    assert saved["skipped"] == [{"file": "zz_copy.fits", "reason": f"{folder / 'zz_copy.fits'}: duplicate of "
                                 f"{good[1].name} (same plate-mjd-fiber {sid})"}]


@pytest.mark.data("sdss_extra")
def test_file_list_and_id_index_hold_what_the_lists_and_dicts_held(sdss_dir, data_dir):
    for folder in (sdss_dir, data_dir / "sdss_extra"):
        files = shards.FileList.find(folder, sdss_fits.FITS_SUFFIXES)
        assert list(files) == [str(p) for p in sdss_fits.find_files(folder)] and files[-1] == files[len(files) - 1]
    assert all(isinstance(a, np.ndarray) for a in files._names)  # small folders: in memory
    both = shards.FileList.join([shards.FileList.find(str(sdss_dir) + "/", sdss_fits.FITS_SUFFIXES),
                                 shards.FileList.find([sdss_dir / "SOURCE.txt", "x.fits"], ())])
    assert len(both) == 48 and both[0] == str(sorted(sdss_dir.glob("*.fits"))[0]) and both[46:] == [
        str(sdss_dir / "SOURCE.txt"), "x.fits"]
    ids = [f"{p}-{m}-{f:04d}" for p in range(3000, 3010) for m in (55000, 55001) for f in range(1, 301)]
    index = shards.IdIndex(capacity=8)  # grows 8 -> 8192 slots
    for i, sid in enumerate(ids):
        index[sid] = i
    index[ids[5]] = 7  # overwritten, as a dict
    assert len(index) == len(ids) and [index.get(s) for s in ids[:5]] == list(range(5)) and index.get(ids[5]) == 7
    assert index.get(ids[-1]) == len(ids) - 1 and "3000-55000-0000" not in index and index.get("x", -1) == -1


@pytest.mark.data("sdss_extra")
def test_a_large_folder_is_listed_sorted_on_disk_as_in_memory(data_dir, tmp_path, monkeypatch):
    """Past ``LIST_IN_MEMORY`` names a folder is sorted in runs on disk and merged (here runs of 7 of the 130 odd
    names and of 1,000 made-up ones of mixed lengths): the same list, and a task ingests the same block."""
    folder = tmp_path / "names"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in rng.permutation(1000):
        (folder / f"{'ab'[i % 2]}{i * 7919 % 1000:0{1 + i % 5}d}.fits").touch()
    (folder / "notes.txt").touch()
    extra = data_dir / "sdss_extra"
    in_memory = [list(shards.FileList.find(f, sdss_fits.FITS_SUFFIXES)) for f in (folder, extra)]
    monkeypatch.setattr(shards, "LIST_IN_MEMORY", 7)
    on_disk = [shards.FileList.find(f, sdss_fits.FITS_SUFFIXES) for f in (folder, extra)]
    assert all(isinstance(f._names[0], shards.DiskNames) for f in on_disk)
    assert [list(f) for f in on_disk] == in_memory and in_memory[1] == [str(p) for p in sdss_fits.find_files(extra)]
    assert len(on_disk[0]) == 1000 and on_disk[0][-1] == in_memory[0][-1] and on_disk[1][5] == in_memory[1][5]
    both = shards.FileList.join(on_disk + [shards.FileList.find(extra / "SOURCE.txt", ())])
    assert list(both) == in_memory[0] + in_memory[1] + [str(extra / "SOURCE.txt")]
    report = sdss_shards.ingest_task(extra, tmp_path / "out", wave_range=WAVE, task=1, num_tasks=20)
    n = len(shards.task_block(len(in_memory[1]), 1, 20))  # files 6-12 of 130
    assert report["n_files"] == n == 7 and report["n_ingested"] + report["n_skipped"] == n
    ingested = pq.read_table(tmp_path / "out" / "task-00001-of-00020.parquet").column("file").to_pylist()
    skipped = [s["file"] for s in json.loads((tmp_path / "out" / "task-00001-of-00020.json").read_text())["skipped"]]
    assert sorted(ingested + skipped) == [pathlib.Path(p).name for p in in_memory[1][6:13]]


@pytest.mark.data("sdss_extra")
def test_input_files_lists_folders_compactly_and_files_and_globs_as_data_path_does(sdss_dir, data_dir, tmp_path):
    """RF and audio ingestion list their inputs here: folders as a FileList (flat memory), the rest as
    ``sources.expand`` gives it; the same files in the same order either way."""
    from research.data import sources

    extra = data_dir / "sdss_extra"
    for value in (sdss_dir, f"{sdss_dir},{extra}", [str(extra), str(sdss_dir), str(extra)],
                  f"{sdss_dir}/spec-*.fits,{extra}", [str(extra / "Mrk477.fits"), str(sdss_dir)]):
        files = shards.input_files(value, sdss_fits.FITS_SUFFIXES)
        expected = sources.expand([str(value)] if isinstance(value, pathlib.Path) else value, sdss_fits.FITS_SUFFIXES)
        assert isinstance(files, shards.FileList) and list(files) == [str(p) for p in expected], value
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub.fits").mkdir()  # a folder is not a file
    with pytest.raises(InputError, match=r"empty: no files in the folder \(\*\.fits"):
        shards.input_files([str(sdss_dir), str(tmp_path / "empty")], sdss_fits.FITS_SUFFIXES)


def test_the_task_report_streams_its_skip_list_as_json_dumps_would_write_it(tmp_path):
    for n in (0, 1, 3):
        skips = shards.SkipList(tmp_path, f"t{n}")
        entries = [{"file": f"f{i}.fits", "reason": f"f{i}.fits: \"odd\" name \u00e9"} for i in range(n)]
        for e in entries:
            skips.append(e)
        report = {"task": 0, "n_skipped": n, "skipped": skips, "grid": {"loglam": [3.5, 3.6]}}
        back = shards.write_report(tmp_path / f"t{n}.json", report)
        assert (tmp_path / f"t{n}.json").read_text() == json.dumps({**report, "skipped": entries}) + "\n"
        assert back == {"task": 0, "n_skipped": n, "grid": {"loglam": [3.5, 3.6]}} and not skips.path.exists()


def test_merge_refuses_missing_tasks_and_mixed_grids(sdss_dir, tmp_path):
    files = sorted(sdss_dir.glob("spec-*.fits"))[:2]
    sdss_shards.ingest_task(files, tmp_path / "a", wave_range=WAVE, task=0, num_tasks=2)
    with pytest.raises(InputError, match=r"tasks \[1\] of 2 have not finished"):
        shards.merge(tmp_path / "a")
    sdss_shards.ingest_task(files, tmp_path / "a", wave_range=(3700.0, 9000.0), task=1, num_tasks=2)
    with pytest.raises(InputError, match="another grid or options than task 0"):
        shards.merge(tmp_path / "a")


def test_catalogue_is_written_one_row_group_per_shard(one_task):
    _, ds = one_task
    task = pq.ParquetFile(ds.folder / "task-00000-of-00001.parquet")
    assert task.num_row_groups == 3 and [task.metadata.row_group(i).num_rows for i in range(3)] == [16, 16, 14]


def test_cli_one_line_errors_and_summary(sdss_dir, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "data_prep.sdss", "--format", "shards", *args],
                              capture_output=True, text=True, timeout=120)

    run = cli("--input", str(sdss_dir), "--output", str(tmp_path / "o"))
    assert run.returncode == 2 and run.stderr.strip() == (
        "error: --wave-range: required with --format shards (shards ingested apart must share one grid)")
    run = cli("--input", str(sdss_dir), "--output", str(tmp_path / "o"), "--wave-range", "3600,10400",
              "--shard", "5", "--num-shards", "2")
    assert run.returncode == 2 and run.stderr.strip() == "error: --shard: 5 must be in 0..1 (--num-shards 2)"
    run = cli("--merge", "--output", str(tmp_path / "empty"))
    assert run.returncode == 2 and "no task reports" in run.stderr and "Traceback" not in run.stderr
    run = cli("--input", str(sdss_dir), "--output", str(tmp_path / "o"), "--wave-range", "3600,10400",
              "--quiet")
    assert run.returncode == 0 and "ingested 46/46 spectra" in run.stdout and "merged 1 task(s)" in run.stdout
    assert len(shards.Shards(tmp_path / "o")) == 46


@pytest.mark.slow
@pytest.mark.data("sdss_extra")
def test_both_folders_through_the_cli_equal_the_npz_ingestion(data_dir, tmp_path):
    """``--input`` with both SDSS folders (header ids, unnamed HDUs, spSpec files, one bad file) and mask
    bits by name: the shards hold the npz ingestion's spectra, ids, ZWARNING and arrays, bit for bit."""
    inputs = [data_dir / "sdss", data_dir / "sdss_extra"]
    files = [f for i in inputs for f in sdss_fits.find_files(i)]
    run = subprocess.run([sys.executable, "-m", "data_prep.sdss", "--format", "shards", "--input", *map(str, inputs),
                          "--output", str(tmp_path / "s"), "--wave-range", "3600,10400", "--mask-bits",
                          "NOPLUG,BRIGHTSKY", "--workers", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    sdss_fits.ingest(files, tmp_path / "ref.npz", wave_range=WAVE, mask_bits="NOPLUG,BRIGHTSKY")
    arrays, cat = sdss_fits.load_ingested(tmp_path / "ref.npz")
    ds = shards.Shards(tmp_path / "s")
    assert list(ds.column("id")) == list(arrays["ids"]) and len(ds) > 46
    assert list(ds.column("zwarning")) == list(cat["zwarning"])
    back = ds.read()
    for k in ("flux", "ivar", "mask"):
        assert np.array_equal(back[k], arrays[k]), k


def test_the_benchmark_scale_set_is_rolled_noisy_copies_of_the_real_spectra(one_task, tmp_path):
    """bench.scale's N-spectrum set (BENCHMARKS section 7): record i is real spectrum i mod n, rolled,
    the rolled-in pixels masked, fresh noise within the ivar, written through the shard writer."""
    from bench.scale import make_scale_set

    _, base = one_task
    make_scale_set(base.folder, tmp_path / "set", 60, shard_size=16)
    got, real = shards.Shards(tmp_path / "set"), base.read()
    out = got.read()
    assert len(got) == 60 and got.n_pixels == base.n_pixels
    ids = got.column("id").tolist()
    assert len(set(ids)) == 60 and ids[47] == f"{base.column('id')[1]}-s47"
    for i in (0, 47, 59):
        b = i % len(real["flux"])
        good = out["mask"][i].astype(bool)
        shift = next(s for s in range(-20, 21) if np.array_equal(good, np.roll(real["mask"][b], s) & good)
                     and np.allclose(out["ivar"][i][good], np.roll(real["ivar"][b], s)[good]))
        assert np.array_equal(out["ivar"][i][good], np.roll(real["ivar"][b], shift)[good])
        z = (out["flux"][i] - np.roll(real["flux"][b], shift))[good] * np.sqrt(out["ivar"][i][good])
        assert 0.8 < np.std(z) < 1.2  # noise of the spectrum's own sigma
        assert not out["flux"][i][~good].any() and not out["ivar"][i][~good].any()
