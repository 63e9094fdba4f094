"""TensorBoard event files in the run directory, written as training goes (``tensorboardX``).

``tensorboard --logdir runs/`` then shows every run (and every sweep task) side by side. Scalars per
epoch: ``train_loss/member_<k>`` and ``val_loss/member_<k>`` for each ensemble member (and
``.../mean`` for an ensemble), ``lr``, ``epoch_seconds``; at the end ``final/<metric>`` and the
run's loss-curve and reconstruction plots as images.

A resumed run opens a new event file in the same directory whose first event purges every step
after the checkpoint it resumed from, so epochs logged after that checkpoint by the interrupted
run are replaced, never shown twice.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Iterable, Mapping

import numpy as np

FINAL_KEYS = ("roc_auc", "pr_auc", "f1", "precision", "recall")


def _summary_writer():
    """tensorboardX's ``SummaryWriter``, imported without its optional S3 support: where boto3 is
    installed tensorboardX imports it (0.4 s of every run's start-up), and run directories are local
    paths. boto3 stays importable for anything else."""
    if "tensorboardX" in sys.modules or "boto3" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["boto3"] = None  # makes tensorboardX's ``import boto3`` an ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["boto3"]
    return SummaryWriter


class EventLog:
    def __init__(self, logdir: str | os.PathLike, resumed_at: int | None = None, flush_secs: float = 5.0):
        SummaryWriter = _summary_writer()
        purge = resumed_at + 1 if resumed_at else None
        # Files are read in name order; the suffix keeps a resumed file after the one it continues
        # even when both were opened in the same second (the name's timestamp).
        suffix = f".resumed{resumed_at:06d}" if resumed_at else ""
        self.writer = SummaryWriter(logdir=str(logdir), purge_step=purge, flush_secs=flush_secs,
                                    filename_suffix=suffix)

    def epoch(self, epoch: int, metrics: Mapping[str, np.ndarray], lr: float | None = None,
              seconds: float | None = None) -> None:
        """One epoch's per-member losses (``metrics[name]`` has one value per member)."""
        for name, values in metrics.items():
            values = np.asarray(values, np.float64).reshape(-1)
            for k, v in enumerate(values):
                self.writer.add_scalar(f"{name}/member_{k}", v, epoch)
            if len(values) > 1:
                self.writer.add_scalar(f"{name}/mean", values.mean(), epoch)
        if lr is not None:
            self.writer.add_scalar("lr", lr, epoch)
        if seconds is not None:
            self.writer.add_scalar("epoch_seconds", seconds, epoch)

    def final(self, step: int, metrics: Mapping[str, float], images: Iterable[str | os.PathLike] = ()) -> None:
        """Final metrics as ``final/<name>`` scalars and PNG plots as images, at the last epoch."""
        for name, value in metrics.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(f"final/{name}", float(value), step)
        for path in map(pathlib.Path, images):
            if path.is_file():
                from PIL import Image

                with Image.open(path) as img:
                    self.writer.add_image(f"plots/{path.stem}", np.asarray(img.convert("RGB")), step,
                                          dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def final_metrics(summary: Mapping) -> dict:
    """The numbers of a run's summary worth comparing across runs: threshold, test metrics, members' mean."""
    out = {"threshold": (summary.get("threshold") or {}).get("value")}
    out.update({k: v for k, v in (summary.get("test") or {}).items() if k in FINAL_KEYS})
    out.update({f"members_{k}": v["mean"] for k, v in (summary.get("members") or {}).items() if k in FINAL_KEYS})
    if "mean_roc_auc" in summary:
        out["mean_roc_auc"] = summary["mean_roc_auc"]
    return out
