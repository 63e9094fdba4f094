"""Folders of I/Q captures, every format :mod:`research.data.rf_iq` reads (``.complex``,
``.complex16s``, ``.complex32s``, URH's ``.coco``), the device of each capture taken from its file
name (``data.name='iq'``).

The same spectrum frames, per-capture noise floor, activity selection and time-block split as the
RF experiments (:mod:`research.data.rf`, whose module docstring explains each key); only the
defaults differ: no device names are assumed, ``data.normal_devices`` must be given, and every
other device is an anomaly unless ``data.anomaly_devices`` lists some.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from research.data import Dataset, rf
from research.errors import InputError


def defaults() -> ml_collections.ConfigDict:
    """The ``data`` block of the ``iq`` loader."""
    d = ml_collections.ConfigDict()
    d.name = "iq"
    d.path = config_dict.placeholder(str)  # capture folders, files or globs, comma-separated
    d.device_pattern = config_dict.placeholder(str)  # regex on the file stem, group 'device'; unset = the stem
    d.normal_devices = ()  # devices whose active frames are normal (required)
    d.anomaly_devices = ()  # devices scored as anomalies; empty = every other device
    d.frame_length = 256  # FFT length of a frame (samples)
    d.hop = 128  # samples between frame starts
    d.window = "hann"  # scipy.signal.get_window name
    d.db = True  # features in dB above the capture's noise floor (False: amplitude over its root)
    d.floor_db = -10.0  # dB values below this are clipped (noise speckle)
    d.sample_rate = 1e6  # Hz; only labels the frequency axis (headerless captures do not record it)
    d.active_db = 10.0  # a frame this many dB above the noise floor is a transmission
    d.idle_db = 6.0  # below this it is idle noise
    d.idle_noise = True  # train on the idle frames of the normal devices too
    d.dc_guard = 2  # bins either side of DC left out of the activity measure
    d.block = 16  # frames per time block of the train/test split of normal captures
    d.test_fraction = 0.25  # share of each normal capture's blocks held out for the test split
    d.max_frames_per_device = 1000  # cap per capture and split (0 = all)
    d.split_seed = 0  # seed of the block split and the caps
    return d


def load(cfg) -> Dataset:
    if not cfg.get("path"):
        raise InputError("config key data.path: the iq loader needs the folder(s) of captures")
    if not cfg.get("normal_devices"):
        raise InputError("config key data.normal_devices: name the device(s) whose captures are normal")
    return rf.load(cfg)
