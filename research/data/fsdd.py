"""Free Spoken Digit Dataset: FFT amplitude spectra of spoken "six" (normal) vs other digits.

A recording (``{digit}_{speaker}_{index}.wav``, 8 kHz mono int16) becomes one spectrum:

1. samples scaled to [-1, 1) and the mean (DC offset) removed;
2. ``rfft`` with a fixed length ``n_fft``: shorter recordings are zero-padded, longer ones cropped
   (the default 8192 samples = 1.02 s keeps >99 % of FSDD recordings whole);
3. the ``n_fft / 2`` amplitude bins below Nyquist averaged in groups down to ``n_bins`` (the default
   512 bins are 7.8 Hz wide, far finer than voice harmonics);
4. divided by its maximum, so every spectrum peaks at exactly 1.

Split by speaker so the test asks "is this a six?" of voices the model never heard: train = the
``digit`` recordings of ``train_speakers``; test = ``digit`` recordings of ``test_speakers`` (label 0)
and their other digits (label 1; ``anomaly_digits`` picks which, empty = all others). ``test_ids``
are file stems; :func:`wav_path` turns one back into its file for waveform plots.
"""

from __future__ import annotations

import pathlib
import re
import struct
import warnings

import numpy as np
from scipy.io import wavfile

from research.config import with_defaults
from research.data import Dataset, limit_rows
from research.data.sources import expand
from research.errors import InputError
from research.paths import dataset_dir

SAMPLE_RATE = 8000
TRAIN_SPEAKERS = ("george", "jackson", "nicolas")
TEST_SPEAKERS = ("lucas", "yweweler")
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)$")


def read_wav(path: str | pathlib.Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float64 samples in [-1, 1); any other rate, channel count, an empty or a truncated file
    (fewer data bytes than its header promises, which scipy reads with only a warning) is an error.
    Every WAV reader of the project (``fsdd``, ``wav``) goes through this function."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError, struct.error) as exc:
        raise InputError(f"{path}: not a readable WAV file ({str(exc).splitlines()[0]})") from None
    if eof := [str(w.message) for w in caught if "EOF" in str(w.message)]:
        raise InputError(f"{path}: truncated WAV file ({eof[0]})")
    if rate != sample_rate:
        raise InputError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    if data.ndim != 1:
        raise InputError(f"{path}: {data.shape[1]} channels, expected mono")
    if data.size == 0:
        raise InputError(f"{path}: no samples")
    if data.dtype.kind == "i":
        return data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    if data.dtype == np.uint8:
        return (data.astype(np.float64) - 128.0) / 128.0
    return data.astype(np.float64)


def check_bins(n_fft: int, n_bins: int) -> None:
    if n_fft < 2 or n_fft % 2 or n_bins < 1 or (n_fft // 2) % n_bins:
        raise InputError(f"config keys data.n_fft/n_bins: n_fft must be even and n_fft/2 ({n_fft // 2}) "
                         f"a multiple of n_bins ({n_bins})")


def amplitude_spectrum(wave: np.ndarray, n_fft: int = 8192, n_bins: int = 512) -> tuple[np.ndarray, float]:
    """Max-normalised binned amplitude spectrum and the maximum it was divided by (0 for silence)."""
    check_bins(n_fft, n_bins)
    amp = np.abs(np.fft.rfft(wave - wave.mean(), n=n_fft))[: n_fft // 2]
    binned = amp.reshape(n_bins, -1).mean(1)
    peak = float(binned.max())
    return (binned / peak if peak > 0 else binned), peak


def audible_spectrum(path, n_fft: int, n_bins: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The recording's :func:`amplitude_spectrum`; ``InputError`` naming the file when it is unreadable,
    truncated or silent (such a file is reported, never scored)."""
    spectrum, peak = amplitude_spectrum(read_wav(path, sample_rate), n_fft, n_bins)
    if peak == 0:
        raise InputError(f"{path}: silent recording")
    return spectrum


def spectrum_or_skip(path, n_fft: int, n_bins: int, skipped: list, sample_rate: int = SAMPLE_RATE):
    """:func:`audible_spectrum`, or None with the reason added to ``skipped``."""
    try:
        return audible_spectrum(path, n_fft, n_bins, sample_rate)
    except InputError as exc:
        skipped.append(str(exc))
        return None


def frequencies(n_fft: int = 8192, n_bins: int = 512, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequency (Hz) of each bin of :func:`amplitude_spectrum`."""
    check_bins(n_fft, n_bins)
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[: n_fft // 2].reshape(n_bins, -1).mean(1)


def resynthesise(wave: np.ndarray, spectrum: np.ndarray, n_fft: int = 8192) -> np.ndarray:
    """A waveform with the amplitudes of a (reconstructed) binned spectrum and the phases of ``wave``.

    Amplitudes are flat within each bin and scaled by the original spectrum's maximum, so the result
    is what the model's spectrum would sound like at the original loudness.
    """
    n_bins = len(spectrum)
    centred = wave - wave.mean()
    full = np.fft.rfft(centred, n=n_fft)
    _, peak = amplitude_spectrum(wave, n_fft, n_bins)
    amp = np.repeat(np.maximum(spectrum, 0.0) * peak, (n_fft // 2) // n_bins)
    full[: n_fft // 2] = amp * np.exp(1j * np.angle(full[: n_fft // 2]))
    full[n_fft // 2] = 0.0
    return np.fft.irfft(full, n=n_fft)[: min(len(wave), n_fft)] + wave.mean()


DEFAULTS = {
    "digit": 6,  # the normal digit
    "train_speakers": TRAIN_SPEAKERS,  # whose recordings of the digit train the model
    "test_speakers": TEST_SPEAKERS,  # whose recordings (the digit: normal, other digits: anomalies) are scored
    "anomaly_digits": (),  # the test's anomalies; empty = every other digit
    "n_fft": 8192,  # zero-pad / crop every recording to this many samples
    "n_bins": 512,  # amplitude spectrum averaged into this many bins (0-4 kHz)
    "split_seed": 0,  # seed of the data.limit subsets
}

def parse_name(stem: str) -> tuple[int, str, int] | None:
    m = _NAME.match(stem)
    return (int(m["digit"]), m["speaker"], int(m["index"])) if m else None


def recordings_dir(cfg) -> pathlib.Path | str:
    """The recordings folder, or ``data.path`` as given (several folders/files/globs, comma-separated)."""
    if cfg.path:
        return cfg.path
    folder = dataset_dir("fsdd", cfg.root) / "recordings"
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    return folder


def wav_files(value) -> list[pathlib.Path]:
    """The ``.wav`` files of a folder or of several folders/files/globs."""
    if isinstance(value, pathlib.Path) or ("," not in value and pathlib.Path(value).is_dir()):
        return sorted(pathlib.Path(value).glob("*.wav"))
    return expand(value, (".wav",))


def wav_path(meta: dict, test_id: str) -> pathlib.Path:
    """The WAV file of a test id (file stem) of a dataset loaded by :func:`load`."""
    if "files" in meta:
        return pathlib.Path(meta["files"][test_id])
    return pathlib.Path(meta["folder"]) / f"{test_id}.wav"


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    folder = recordings_dir(cfg)
    digit = int(cfg.digit)
    train_speakers = tuple(cfg.train_speakers)
    test_speakers = tuple(cfg.test_speakers)
    anomaly_digits = tuple(int(d) for d in cfg.anomaly_digits) or tuple(d for d in range(10) if d != digit)
    n_fft, n_bins = int(cfg.n_fft), int(cfg.n_bins)
    check_bins(n_fft, n_bins)
    if both := set(train_speakers) & set(test_speakers):
        raise InputError(f"config key data.test_speakers: {sorted(both)} also in train_speakers")

    score_only = bool(cfg.score_only)  # research.score: every recording, label 1 = not the digit
    train, test, skipped, files = [], [], [], {}
    speakers_seen = set()
    for path in wav_files(folder):
        parsed = parse_name(path.stem)
        if parsed is None:
            skipped.append(f"{path.name}: name is not digit_speaker_index.wav")
            continue
        d, speaker, _ = parsed
        speakers_seen.add(speaker)
        if score_only:
            target = test
        elif speaker in train_speakers and d == digit:
            target = train
        elif speaker in test_speakers and (d == digit or d in anomaly_digits):
            target = test
        else:
            continue
        spectrum = spectrum_or_skip(path, n_fft, n_bins, skipped)
        if spectrum is None:
            continue
        target.append((path.stem, int(d != digit), spectrum))
        files[path.stem] = str(path)
    for speaker in () if score_only else train_speakers + test_speakers:
        if speaker not in speakers_seen:
            raise InputError(f"config key data.train_speakers/test_speakers: no recordings of {speaker!r} in "
                             f"{folder} (speakers: {sorted(speakers_seen)})")
    if not train and not score_only:
        raise InputError(f"{folder}: no digit-{digit} recordings of {train_speakers}")
    if not test:
        raise InputError(f"{folder}: no " + ("readable recordings named digit_speaker_index.wav" if score_only
                                             else f"test recordings of {test_speakers}"))

    seed, limit = int(cfg.split_seed), cfg.limit
    train_split = limit_rows({"x": np.stack([s for _, _, s in train]).astype(np.float32) if train
                              else np.zeros((0, n_bins), np.float32)}, limit, seed)
    test_split = limit_rows({"x": np.stack([s for _, _, s in test]).astype(np.float32),
                             "label": np.array([y for _, y, _ in test], np.int32),
                             "row": np.arange(len(test))}, limit, seed)
    return Dataset(
        train=train_split,
        test={"x": test_split["x"]},
        test_labels=test_split["label"],
        test_ids=[test[i][0] for i in test_split["row"]],
        kind="1d",
        axis=frequencies(n_fft, n_bins).astype(np.float32),
        axis_label="frequency (Hz)",
        meta={"folder": str(folder), "files": {i: files[i] for i, _, _ in test}, "digit": digit, "train_speakers": list(train_speakers),
              "test_speakers": list(test_speakers), "anomaly_digits": list(anomaly_digits),
              "n_fft": n_fft, "n_bins": n_bins, "skipped": skipped, "score_only": score_only},
    )


def shard_rows(ds, cfg) -> dict[str, np.ndarray]:
    """Catalogue rows of the training and test splits of audio shards (``python -m data_prep.audio``),
    chosen as :func:`load` chooses recordings (speakers, digit, anomaly digits, ``data.limit``, file
    order), and every row's label (1 = not the digit)."""
    cfg = with_defaults(cfg, DEFAULTS)
    ds.check_options(cfg, ("n_fft", "n_bins"))
    if int(ds.manifest["options"].get("sample_rate", 0)) != SAMPLE_RATE:
        raise InputError(f"{ds.folder}: ingested at {ds.manifest['options'].get('sample_rate')} Hz; FSDD is "
                         f"{SAMPLE_RATE} Hz")
    if missing := [c for c in ("digit", "speaker") if c not in ds.catalogue.column_names]:
        raise InputError(f"{ds.folder}: no catalogue column {missing[0]!r}; ingest with a --pattern that has "
                         "the groups digit and speaker (the default)")
    try:
        digits = ds.column("digit").astype(int)
    except ValueError:
        raise InputError(f"{ds.folder}: catalogue column 'digit' holds non-numbers") from None
    speakers = ds.column("speaker").astype(str)
    digit = int(cfg.digit)
    train_speakers, test_speakers = tuple(cfg.train_speakers), tuple(cfg.test_speakers)
    anomaly_digits = tuple(int(d) for d in cfg.anomaly_digits) or tuple(d for d in range(10) if d != digit)
    if both := set(train_speakers) & set(test_speakers):
        raise InputError(f"config key data.test_speakers: {sorted(both)} also in train_speakers")
    for speaker in train_speakers + test_speakers:
        if speaker not in set(speakers):
            raise InputError(f"config key data.train_speakers/test_speakers: no recordings of {speaker!r} in "
                             f"{ds.folder} (speakers: {sorted(set(speakers))})")
    train = np.flatnonzero(np.isin(speakers, train_speakers) & (digits == digit))
    test = np.flatnonzero(np.isin(speakers, test_speakers) & np.isin(digits, (digit,) + anomaly_digits))
    if not len(train):
        raise InputError(f"{ds.folder}: no digit-{digit} recordings of {train_speakers}")
    if not len(test):
        raise InputError(f"{ds.folder}: no test recordings of {test_speakers}")
    seed, limit = int(cfg.split_seed), cfg.limit
    return {"train": limit_rows({"i": train}, limit, seed)["i"], "test": limit_rows({"i": test}, limit, seed)["i"],
            "labels": (digits != digit).astype(np.int32)}
