"""python -m research.train --config=experiments/own_data.py:arrays --config.data.path=MY_TABLE.parquet

Your own data, by config alone: one variant per generic loader, each set up on real files from
``../shared/data`` so it runs as written; point ``--config.data.path`` (several files, folders or
globs, comma-separated) and the loader's keys at your data. Every data key, its default and what it
means is in the loader's ``DEFAULTS`` (``research/data/arrays.py``, ``wav.py``, ``iq.py``;
spectra: ``research/data/sdss.py``).

* ``arrays``: a table with one row per sample (.npy/.npz/.csv/.tsv/.txt/.parquet); here ECG5000,
  label in column 0, class 1 normal, TRAIN file for training, TEST file for the test split.
* ``wav``: WAV folders, label from the file name; here FSDD, digit six normal, speakers lucas and
  yweweler held out for the test split.
* ``iq``: I/Q captures (.complex, .complex16s, .complex32s, URH .coco), device from the file name;
  here the RF captures, four devices normal, every other one an anomaly.
* ``spectra``: SDSS/BOSS FITS spectra, any file names, several folders; here ``sdss/`` and
  ``sdss_extra/``, galaxies normal, with anomalous-region detection on every test spectrum.

The example paths are under the data root (``../shared/data``, ``$RESEARCH_DATA`` or the download
cache); building this config never downloads: on a fresh machine run ``python -m data_prep.fetch
ecg5000`` (``fsdd``, ``rf``, ``sdss``) first.

Score new data with a finished run: ``python -m research.score --run=runs/own_data_<variant>/<name>
--data.path=NEW``.
"""

from research.config import base_config, variant
from research.paths import data_root

VARIANTS = ("arrays", "wav", "iq", "spectra")


def _dense(c, hidden=(64,), latent=16, output="none"):
    c.model.hidden = hidden
    c.model.latent_dim = latent
    c.model.activation = "relu"
    c.model.output_activation = output


def get_config(arg=None):
    arg = variant(arg, VARIANTS)
    if arg == "spectra":
        from experiments.sdss_cnn_skip import get_config as sdss_config

        c = sdss_config()
        c.experiment = "own_data_spectra"
        c.data.path = f"{data_root() / 'sdss'},{data_root() / 'sdss_extra'}"
        c.data.wave_range = (3800.0, 9200.0)  # Å: the range most spectra cover, so few pixels are masked
        c.model.features = (16, 32, 32)
        c.train.epochs = 30
        c.train.batch_size = 16
        c.train.checkpoint_every = 0
        c.regions.only_anomalous = True  # figures for the flagged spectra only
        return c
    c = base_config(arg, "dense")
    c.experiment = f"own_data_{arg}"
    c.train.epochs = 50
    c.train.checkpoint_every = 0
    c.threshold.method = "percentile"
    c.threshold.percentile = 95.0
    if arg == "arrays":
        ecg = data_root() / "ecg5000"
        c.data.path = str(ecg / "ECG5000_TRAIN.txt")
        c.data.test_path = str(ecg / "ECG5000_TEST.txt")
        c.data.label_column = "0"
        c.data.normal_labels = ("1",)
        c.data.val_fraction = 0.1
        c.data.scaling = "global_minmax"
        _dense(c, (64, 32), 16, "sigmoid")
        c.score.normalize = "tv"
    elif arg == "wav":
        c.data.path = str(data_root() / "fsdd" / "recordings")
        c.data.normal_labels = ("6",)
        c.data.test_groups = ("lucas", "yweweler")
        c.data.scaling = "none"  # spectra already peak at 1
        _dense(c, (128,), 32, "sigmoid")
        c.train.batch_size = 16
        c.threshold.fit_on = "val"
    else:
        c.data.path = str(data_root() / "rf_iq")
        c.data.normal_devices = ("elektromaten", "esaver", "ook_overshoot", "steckdose_anlernen")
        c.data.scaling = "global_standard"
        _dense(c, (128,), 16)
        c.train.batch_size = 64
        c.score.normalize = "tv"
        c.threshold.method = "mean_std"
        c.threshold.fit_on = "val"
    return c
