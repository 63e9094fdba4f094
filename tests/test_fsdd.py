"""Spoken digits (real FSDD recordings): WAV reading, normalised spectra, loader, baselines, maps."""

import shutil

import ml_collections
import numpy as np
import pytest
from scipy.io import wavfile

from research.analyses import RunContext, baselines, fsdd_maps
from research.data import fsdd
from research.errors import InputError
from research.paths import data_root
from research.rundir import RunDir

REC = data_root() / "fsdd" / "recordings"  # never a download at import
pytestmark = pytest.mark.skipif(not REC.is_dir(), reason=f"real data not found at {REC} (set RESEARCH_DATA)")


def test_read_wav_real_recording():
    rate, raw = wavfile.read(REC / "6_george_0.wav")
    wave = fsdd.read_wav(REC / "6_george_0.wav")
    assert rate == fsdd.SAMPLE_RATE and len(wave) == len(raw)
    np.testing.assert_array_equal(wave, raw / 32768.0)
    assert -1.0 <= wave.min() and wave.max() < 1.0


def test_amplitude_spectrum_normalised_padded_and_cropped():
    for name in ("6_george_0.wav", "6_yweweler_3.wav", "2_lucas_10.wav"):
        wave = fsdd.read_wav(REC / name)
        for n_fft, n_bins in ((8192, 512), (2048, 256)):  # 2048 < every recording: cropped
            spec, peak = fsdd.amplitude_spectrum(wave, n_fft, n_bins)
            assert spec.shape == (n_bins,) and spec.max() == 1.0 and spec.min() >= 0.0
            centred = wave - wave.mean()
            padded = np.zeros(n_fft)
            padded[:min(n_fft, len(wave))] = centred[:n_fft]
            manual = np.abs(np.fft.fft(padded))[: n_fft // 2].reshape(n_bins, -1).mean(1)
            np.testing.assert_allclose(spec * peak, manual, rtol=1e-9, atol=1e-12)
    freqs = fsdd.frequencies(8192, 512)
    assert freqs[0] > 0 and freqs[-1] < fsdd.SAMPLE_RATE / 2 and np.all(np.diff(freqs) > 0)
    with pytest.raises(InputError, match="n_bins"):
        fsdd.amplitude_spectrum(wave, 8192, 500)


def test_resynthesis_with_full_resolution_is_exact():
    wave = fsdd.read_wav(REC / "6_lucas_0.wav")
    spec, _ = fsdd.amplitude_spectrum(wave, 8192, 4096)  # one bin per FFT bin: nothing averaged away
    full = np.fft.rfft(wave - wave.mean(), 8192)
    full[-1] = 0.0  # the Nyquist bin is not part of the spectrum, so it cannot come back
    expected = np.fft.irfft(full, 8192)[:len(wave)] + wave.mean()
    np.testing.assert_allclose(fsdd.resynthesise(wave, spec, 8192), expected, atol=1e-12)
    assert np.abs(expected - wave).max() < 1e-3 * np.abs(wave).max()


def test_read_wav_errors(tmp_path):
    good = (REC / "6_george_0.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(good[:30])
    wavfile.write(tmp_path / "fast.wav", 16000, np.zeros(100, np.int16))
    wavfile.write(tmp_path / "stereo.wav", 8000, np.zeros((100, 2), np.int16))
    for name, problem in (("cut.wav", "not a readable WAV"), ("fast.wav", "16000 Hz"), ("stereo.wav", "mono")):
        with pytest.raises(InputError, match=problem):
            fsdd.read_wav(tmp_path / name)


def test_loader_split_and_bad_files(tmp_path):
    for stem in ["6_george_%d" % i for i in range(6)] + ["6_lucas_%d" % i for i in range(3)] + \
                ["3_lucas_%d" % i for i in range(3)] + ["3_george_0", "6_jackson_0"]:
        shutil.copy(REC / f"{stem}.wav", tmp_path)
    (tmp_path / "6_george_99.wav").write_bytes(b"RIFF junk")
    shutil.copy(REC / "6_george_0.wav", tmp_path / "six.wav")
    cfg = ml_collections.ConfigDict(dict(name="fsdd", path=str(tmp_path), train_speakers=("george",),
                                         test_speakers=("lucas",), n_fft=4096, n_bins=256))
    ds = fsdd.load(cfg)
    assert ds.train["x"].shape == (6, 256) and ds.test["x"].shape == (6, 256)
    np.testing.assert_allclose(ds.train["x"].max(1), 1.0)
    assert sorted(ds.test_ids) == sorted(["6_lucas_0", "6_lucas_1", "6_lucas_2", "3_lucas_0", "3_lucas_1", "3_lucas_2"])
    np.testing.assert_array_equal(ds.test_labels, [int(i.startswith("3_")) for i in ds.test_ids])
    assert len(ds.meta["skipped"]) == 2 and any("6_george_99.wav" in s for s in ds.meta["skipped"])
    assert fsdd.wav_path(ds.meta, ds.test_ids[0]).is_file()
    assert ds.axis.shape == (256,) and ds.axis_label == "frequency (Hz)"
    with pytest.raises(InputError, match="'nobody'"):
        fsdd.load(ml_collections.ConfigDict(dict(path=str(tmp_path), train_speakers=("nobody",),
                                                 test_speakers=("lucas",))))
    assert len(fsdd.load(ml_collections.ConfigDict(dict(path=str(tmp_path), train_speakers=("george",),
                                                        test_speakers=("lucas",), limit=4))).train["x"]) == 4


@pytest.fixture(scope="module")
def six_dataset():
    """The default split: sixes of 3 speakers train; 2 unseen speakers' sixes vs their other digits."""
    return fsdd.load(ml_collections.ConfigDict(dict(name="fsdd")))


def test_baselines_better_than_chance(six_dataset):
    ds = six_dataset
    assert len(ds.train["x"]) == 150 and (ds.test_labels == 0).sum() == 100 and (ds.test_labels == 1).sum() == 900
    from sklearn.metrics import roc_auc_score

    scores = baselines.baseline_scores(ds.train["x"], ds.test["x"], seed=0)
    for name, s in scores.items():
        assert roc_auc_score(ds.test_labels, s) > 0.55, name


@pytest.mark.slow
def test_maps_write_files(tmp_path):
    ds = fsdd.load(ml_collections.ConfigDict(dict(name="fsdd", limit=300)))  # 300 of the 1000 test spectra
    # A PCA fitted on the training sixes stands in for the autoencoder: the analysis only needs
    # reconstructions and their errors.
    from sklearn.decomposition import PCA

    pca = PCA(8).fit(ds.train["x"])
    recon = pca.inverse_transform(pca.transform(ds.test["x"]))
    errors = ((recon - ds.test["x"]) ** 2).mean(1)
    config = ml_collections.ConfigDict(dict(seed=0, plots=dict(enabled=True, n_examples=3),
                                            fsdd_maps=dict(n_clusters=3)))
    ctx = RunContext(config=config, dataset=ds, run=RunDir(tmp_path, "maps"), recon_test=recon[None],
                     errors={"test": errors})
    out = fsdd_maps.run(ctx)
    assert sum(c["n"] for c in out["clusters"]) == len(errors) and out["n_clusters"] == 3
    assert out["top_anomalies"][0] == ds.test_ids[int(np.argmax(errors))]
    for name in ("map_spectra.png", "map_errors.png", "cluster_profiles.png", "top_anomalies.png"):
        assert (ctx.run.plots / name).stat().st_size > 10_000, name
    rows = (ctx.run.path / "fsdd_maps.csv").read_text().splitlines()
    assert len(rows) == len(errors) + 1 and rows[0].startswith("id,label,score")


@pytest.mark.slow
def test_fsdd_six_smoke_run(tmp_path):
    from experiments.fsdd_six import get_config
    from research.experiment import run

    c = get_config()
    c.smoke = True
    c.run.root = str(tmp_path)
    summary = run(c, log=lambda *_: None)
    assert set(summary["analyses"]) == {"baselines", "fsdd_maps"}
    assert set(summary["analyses"]["baselines"]) == {"autoencoder", "iforest", "pca"}
    (run_path,) = (tmp_path / "fsdd_six").iterdir()
    assert (run_path / "baselines.json").is_file() and (run_path / "plots" / "map_errors.png").is_file()
