"""PyTorch eager twins of the project's models and a straightforward training loop, the baseline
a researcher would write by hand: same layers, widths, activations, optimiser and batch size.

The loop indexes a tensor that already holds the whole dataset (no DataLoader overhead), with the
usual ``model.train()``, ``zero_grad``/``backward``/``step`` per batch, then a no-grad validation pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

_ACT = {"relu": nn.ReLU, "gelu": lambda: nn.GELU(approximate="tanh"),  # flax's gelu is the tanh form
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity, None: nn.Identity}


class TorchDenseAE(nn.Module):
    """Mirror of ``research.models.dense.DenseAE``."""

    def __init__(self, n_in: int, latent_dim=64, hidden=(), activation="relu", latent_activation=None,
                 output_activation=None):
        super().__init__()
        act = _ACT[activation]
        layers, width = [], n_in
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers += [nn.Linear(width, latent_dim), (act if latent_activation is None else _ACT[latent_activation])()]
        width = latent_dim
        for h in reversed(tuple(hidden)):
            layers += [nn.Linear(width, h), act()]
            width = h
        layers += [nn.Linear(width, n_in), _ACT[output_activation]()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape)


class TorchConv1DAE(nn.Module):
    """Mirror of ``research.models.conv1d.Conv1DAE`` for ``(batch, length)`` input whose length is a
    multiple of the total stride (true for ECG5000's 140 with two stride-2 layers)."""

    def __init__(self, length: int, features=(32, 64), kernel_size=7, stride=2, latent_dim=16,
                 activation="gelu", output_activation=None):
        super().__init__()
        assert length % stride ** len(features) == 0, "pad the input to a multiple of the total stride"
        act, pad = _ACT[activation], kernel_size // 2
        enc, ch = [], 1
        for f in features:
            enc += [nn.Conv1d(ch, f, kernel_size, stride, padding=pad), act()]
            ch = f
        self.encoder = nn.Sequential(*enc)
        self.inner = (features[-1], length // stride ** len(features))
        flat = self.inner[0] * self.inner[1]
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(flat, latent_dim), nn.Linear(latent_dim, flat), act())
        dec = []
        for f in reversed(tuple(features[:-1])):
            dec += [nn.ConvTranspose1d(ch, f, kernel_size, stride, padding=pad, output_padding=stride - 1), act()]
            ch = f
        dec += [nn.ConvTranspose1d(ch, 1, kernel_size, stride, padding=pad, output_padding=stride - 1),
                _ACT[output_activation]()]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        h = self.encoder(x[:, None, :])
        h = self.bottleneck(h).reshape(-1, *self.inner)
        return self.decoder(h)[:, 0, :]


def build(model_cfg: dict, sample_shape: tuple[int, ...]) -> nn.Module:
    """The torch twin of a project model config (``config.model`` as a dict)."""
    cfg = dict(model_cfg)
    name = cfg.pop("name")
    if name == "dense":
        return TorchDenseAE(int(np.prod(sample_shape)), **cfg)
    if name == "conv1d":
        return TorchConv1DAE(sample_shape[0], **cfg)
    raise ValueError(f"no torch twin for model {name!r}")


class EagerTrainer:
    """Adam (+ cosine decay per epoch when the config asks for it) and MSE, one epoch per call."""

    def __init__(self, model: nn.Module, train_cfg: dict, seed: int = 0, device: str = "cpu"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.opt = torch.optim.Adam(model.parameters(), lr=float(train_cfg["learning_rate"]))
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=int(train_cfg["epochs"]))
                      if train_cfg.get("schedule") == "cosine" else None)
        self.batch_size = int(train_cfg["batch_size"])
        self.loss = nn.MSELoss()
        self.gen = torch.Generator().manual_seed(seed)

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def epoch(self, train: torch.Tensor, val: torch.Tensor) -> tuple[float, float]:
        self.model.train()
        n = train.shape[0]
        steps = n // self.batch_size
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        total = torch.zeros((), device=self.device)
        for i in range(steps):
            x = train[perm[i * self.batch_size:(i + 1) * self.batch_size]]
            self.opt.zero_grad()
            loss = self.loss(self.model(x), x)
            loss.backward()
            self.opt.step()
            total += loss.detach()  # no per-step host sync
        if self.sched is not None:
            self.sched.step()
        self.model.eval()
        with torch.no_grad():
            val_loss = float(sum(((self.model(c) - c) ** 2).sum() for c in val.split(1024)) / val.numel())
        self._sync()
        return float(total) / max(steps, 1), val_loss


def n_params(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
