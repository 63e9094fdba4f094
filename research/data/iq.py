"""Folders of I/Q captures, every format :mod:`research.data.rf_iq` reads (``.complex``,
``.complex16s``, ``.complex32s``, URH's ``.coco``), the device of each capture taken from its file
name (``data.name='iq'``).

The same spectrum frames, per-capture noise floor, activity selection and time-block split as the
RF experiments (:mod:`research.data.rf`, whose module docstring explains each key); only the
defaults differ: no device names are assumed, ``data.normal_devices`` must be given, and every
other device is an anomaly unless ``data.anomaly_devices`` lists some.
"""

from __future__ import annotations

from research.config import with_defaults
from research.data import Dataset, rf
from research.errors import InputError


DEFAULTS = {  # the rf loader's keys (research/data/rf.py) but for zip_path, with these defaults
    **{k: v for k, v in rf.DEFAULTS.items() if k != "zip_path"},
    "normal_devices": (),  # devices whose active frames are normal (required)
    "anomaly_devices": (),  # devices scored as anomalies; empty = every other device
    "floor_db": -10.0,  # dB values below this are clipped (noise speckle)
    "max_frames_per_device": 1000,  # cap per capture and split (0 = all)
}


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if not cfg.path:
        raise InputError("config key data.path: the iq loader needs the folder(s) of captures")
    if not cfg.normal_devices:
        raise InputError("config key data.normal_devices: name the device(s) whose captures are normal")
    return rf.load(cfg)
