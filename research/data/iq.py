"""Folders of I/Q captures, every format :mod:`research.data.rf_iq` reads (``.complex``,
``.complex16s``, ``.complex32s``, URH's ``.coco``), the device of each capture taken from its file
name (``data.name='iq'``).

The same spectrum frames, per-capture noise floor, activity selection and time-block split as the
RF experiments (:mod:`research.data.rf`, whose module docstring explains each key); only the
defaults differ: no device names are assumed, ``data.normal_devices`` must be given, and every
other device is an anomaly unless ``data.anomaly_devices`` lists some.
"""

from __future__ import annotations

from ml_collections.config_dict import placeholder

from research.data import Dataset, rf, with_defaults
from research.errors import InputError


DEFAULTS = {  # the loader's data.* keys (beside data.name, root, path, val_fraction, scaling, limit)
    "device_pattern": placeholder(str),  # regex on the file stem, group 'device'; unset = the stem
    "normal_devices": (),  # devices whose active frames are normal (required)
    "anomaly_devices": (),  # devices scored as anomalies; empty = every other device
    "frame_length": 256,  # FFT length of a frame (samples)
    "hop": 128,  # samples between frame starts
    "window": "hann",  # scipy.signal.get_window name
    "db": True,  # features in dB above the capture's noise floor (False: amplitude over its root)
    "floor_db": -10.0,  # dB values below this are clipped (noise speckle)
    "sample_rate": 1e6,  # Hz; only labels the frequency axis (headerless captures do not record it)
    "active_db": 10.0,  # a frame this many dB above the noise floor is a transmission
    "idle_db": 6.0,  # below this it is idle noise
    "idle_noise": True,  # train on the idle frames of the normal devices too
    "dc_guard": 2,  # bins either side of DC left out of the activity measure
    "block": 16,  # frames per time block of the train/test split of normal captures
    "test_fraction": 0.25,  # share of each normal capture's blocks held out for the test split
    "max_frames_per_device": 1000,  # cap per capture and split (0 = all)
    "split_seed": 0,  # seed of the block split and the caps
}


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if not cfg.get("path"):
        raise InputError("config key data.path: the iq loader needs the folder(s) of captures")
    if not cfg.get("normal_devices"):
        raise InputError("config key data.normal_devices: name the device(s) whose captures are normal")
    return rf.load(cfg)
