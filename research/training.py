"""Training: a pure train step, one jit-compiled ``lax.scan`` per epoch, ensembles as a ``vmap`` axis.

Every array in :class:`TrainState` carries a leading member axis ``K``. Member ``i`` is seeded with
``seeds[i]`` alone, so a K-member ensemble equals K separate runs with those seeds. Each epoch's
shuffling key is derived from ``(seed, epoch)`` inside the compiled program, so the state alone
determines the rest of training and a resumed run continues exactly where it stopped.

Data lives on the device(s) for the whole run. With a multi-device mesh the dataset is
replicated, each batch is constrained to be split over the ``data`` mesh axis and XLA inserts
the gradient all-reduce: the same code runs on one CPU, N GPUs or N processes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research import losses
from research.errors import InputError

Data = Mapping[str, Any]  # {'x': (N, ...), optional 'mask' and 'weights' of the same shape}


@flax.struct.dataclass
class TrainState:
    seed: jnp.ndarray
    epoch: jnp.ndarray
    step: jnp.ndarray
    params: Any
    opt_state: Any
    best_params: Any
    best_val: jnp.ndarray
    best_epoch: jnp.ndarray


def make_mesh(devices=None) -> Mesh:
    """A 1-D ``data`` mesh over all devices of all processes."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), ("data",))


def check_options(loss_kind: str, max_shift: int, mixup: float, member_chunk: int = 0) -> None:
    """The trainer's loss, augmentation and ensemble settings, as one-line config errors."""
    if member_chunk < 0:
        raise InputError(f"config key train.member_chunk: must be >= 0 (0 = all members at once), got {member_chunk}")
    if max_shift < 0:
        raise InputError(f"config key train.max_shift: must be >= 0, got {max_shift}")
    if not (mixup >= 0 and np.isfinite(mixup)):
        raise InputError(f"config key train.mixup: must be a finite number >= 0 (0 = off), got {mixup}")
    if loss_kind not in losses.KINDS:
        raise InputError(f"config key train.loss: unknown loss {loss_kind!r}; choose one of {losses.KINDS}")


def check_train_config(tc) -> None:
    """:func:`check_options` on a ``config.train`` block: called before any data is read."""
    check_options(tc.loss, int(tc.get("max_shift", 0)), float(tc.get("mixup", 0.0)), int(tc.get("member_chunk", 0)))


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
    """Optimiser from ``config.train``: adam/adamw/sgd, constant/cosine/warmup_cosine schedule, clipping."""
    total = max(1, int(cfg.epochs) * steps_per_epoch)
    lr = float(cfg.learning_rate)
    schedule_name = cfg.get("schedule", "constant")
    if schedule_name == "constant":
        schedule = lr
    elif schedule_name == "cosine":
        schedule = optax.cosine_decay_schedule(lr, total, alpha=cfg.get("final_lr_fraction", 0.0))
    elif schedule_name == "warmup_cosine":
        warmup = max(1, int(cfg.get("warmup_epochs", 1)) * steps_per_epoch)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(total, warmup + 1), end_value=lr * cfg.get("final_lr_fraction", 0.0))
    else:
        raise InputError(f"config key train.schedule: unknown schedule {schedule_name!r} "
                         "(constant, cosine, warmup_cosine)")
    name = cfg.get("optimizer", "adam")
    if name == "adam":
        opt = optax.adam(schedule)
    elif name == "adamw":
        opt = optax.adamw(schedule, weight_decay=cfg.get("weight_decay", 1e-4))
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9))
    else:
        raise InputError(f"config key train.optimizer: unknown optimizer {name!r} (adam, adamw, sgd)")
    clip = cfg.get("grad_clip", 0.0)
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt


def epoch_keys(seed, epoch, steps: int):
    """The shuffling key and the ``steps`` step keys of epoch ``epoch`` of the member seeded ``seed``:
    a function of (seed, epoch) only, so any loader that shuffles with them sees the same batches."""
    perm_key, step_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch + 1))
    return perm_key, jax.random.split(step_key, steps)


def _pad_rows(a: jnp.ndarray, rows: int) -> jnp.ndarray:
    return jnp.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Compiled train/eval programs for one model, optimiser and loss.

    ``member_data=True`` gives every ensemble member its own dataset (arrays with a leading
    member axis), e.g. ten one-class models trained as one program.

    ``member_chunk=c`` trains ``c`` members side by side (one ``vmap``) and the chunks one after
    another inside the same compiled program (``lax.map``); 0 puts all members in one ``vmap``. An
    accelerator wants them all at once; on a few CPU cores the member-batched products and
    convolution patches of a large ensemble run slower per member than one model does, and small
    chunks keep each member at its single-model speed.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    batch_size: int
    loss_kind: str = "mse"
    input_noise: float = 0.0
    max_shift: int = 0
    mixup: float = 0.0
    eval_batch_size: int = 1024
    mesh: Mesh | None = None
    member_data: bool = False
    member_chunk: int = 0

    def __post_init__(self):
        if self.mesh is None:
            object.__setattr__(self, "mesh", make_mesh())
        n_dev = self.mesh.devices.size
        if self.batch_size % n_dev:
            raise InputError(f"config key train.batch_size: {self.batch_size} is not divisible by the "
                             f"{n_dev} devices of the data mesh")
        check_options(self.loss_kind, self.max_shift, self.mixup, self.member_chunk)
        repl = self.replicated
        object.__setattr__(self, "_epoch", jax.jit(
            self._over_members(self.epoch_single), donate_argnums=0, out_shardings=repl))
        object.__setattr__(self, "_predict", jax.jit(self._over_members(self.predict_single), out_shardings=repl))
        object.__setattr__(self, "_errors", jax.jit(
            self._over_members(lambda params, data: self.predict_single(params, data)[1]), out_shardings=repl))

    def _over_members(self, fn: Callable) -> Callable:
        """``fn(member_state, *data)`` over the leading member axis: one ``vmap``, or chunks of
        ``member_chunk`` members in sequence. Data carries a member axis only with ``member_data``."""
        if not self.member_chunk:
            d = 0 if self.member_data else None
            return lambda state, *data: jax.vmap(fn, in_axes=(0,) + (d,) * len(data))(state, *data)
        if self.member_data:
            return lambda state, *data: jax.lax.map(lambda a: fn(*a), (state, *data), batch_size=self.member_chunk)
        return lambda state, *data: jax.lax.map(lambda s: fn(s, *data), state, batch_size=self.member_chunk)

    @classmethod
    def from_config(cls, model: nn.Module, train_cfg, steps_per_epoch: int, **kwargs) -> "Trainer":
        """A trainer with the optimiser, loss and augmentations of a ``config.train`` block."""
        tc = train_cfg
        return cls(model, make_optimizer(tc, steps_per_epoch), batch_size=tc.batch_size, loss_kind=tc.loss,
                   input_noise=tc.input_noise, max_shift=tc.max_shift, mixup=float(tc.get("mixup", 0.0)),
                   eval_batch_size=tc.eval_batch_size, member_chunk=int(tc.get("member_chunk", 0)),
                   **{"mesh": make_mesh(), **kwargs})

    # ---- placement -------------------------------------------------------------------------
    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def put(self, data: Data) -> dict:
        """Places host arrays on every device of the mesh (works across processes too)."""
        def place(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])
        return {k: place(v) for k, v in data.items() if v is not None}

    def _split_batch(self, a: jnp.ndarray) -> jnp.ndarray:
        if self.mesh.devices.size == 1:
            return a
        return jax.lax.with_sharding_constraint(a, NamedSharding(self.mesh, P("data")))

    # ---- state -----------------------------------------------------------------------------
    def init(self, seeds, sample_shape: tuple[int, ...]) -> TrainState:
        """Initial state for members with the given seeds; ``sample_shape`` excludes the batch axis."""
        seeds = tuple(int(s) for s in seeds)

        def one(seed):
            key = jax.random.fold_in(jax.random.key(seed), 0)
            params = self.model.init(key, jnp.zeros((1, *sample_shape), jnp.float32))
            return TrainState(
                seed=jnp.asarray(seed, jnp.uint32), epoch=jnp.zeros((), jnp.int32),
                step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                best_params=params, best_val=jnp.asarray(jnp.inf, jnp.float32),
                best_epoch=jnp.asarray(-1, jnp.int32))

        build = jax.jit(lambda: jax.vmap(one)(jnp.asarray(seeds, jnp.uint32)), out_shardings=self.replicated)
        return build()

    # ---- pure per-member functions ----------------------------------------------------------
    def train_step(self, state: TrainState, batch: Data, rng) -> tuple[TrainState, dict]:
        """One optimiser step: pure function of (state, batch, rng) -> (state, metrics)."""
        if self.max_shift:
            batch = self._shifted(batch, jax.random.fold_in(rng, 1))
        if self.mixup:
            batch = self._mixed(batch, jax.random.fold_in(rng, 2))
        x = batch["x"]
        inputs = x
        if self.input_noise:
            inputs = x + self.input_noise * jax.random.normal(rng, x.shape, x.dtype)

        def loss_fn(params):
            recon = self.model.apply(params, inputs)
            return losses.loss(x, recon, batch.get("mask"), batch.get("weights"), self.loss_kind)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), {"loss": loss}

    def _shifted(self, batch: Data, rng) -> Data:
        """Each sample (with its mask and weights) rolled by its own random shift in
        ``[-max_shift, max_shift]`` along axis 1: on a log-wavelength grid a shift is a change of
        redshift, so a few training spectra teach the model features at every position."""
        shifts = jax.random.randint(rng, (batch["x"].shape[0],), -self.max_shift, self.max_shift + 1)
        roll = jax.vmap(lambda a, k: jnp.roll(a, k, axis=0))
        return {k: roll(v, shifts) for k, v in batch.items()}

    def _mixed(self, batch: Data, rng) -> Data:
        """Mixup: each sample becomes ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(mixup, mixup)``
        and ``perm`` a shuffle of the batch. For spectra the mix is a composite of two galaxies' light,
        still a plausible galaxy, so few training spectra span more of the normal class. A pixel is
        usable when it is in both; weights (inverse variances) combine as ``1 / (lam^2/w + (1-lam)^2/w')``."""
        perm_key, lam_key = jax.random.split(rng)
        x = batch["x"]
        perm = jax.random.permutation(perm_key, x.shape[0])
        lam = jax.random.beta(lam_key, self.mixup, self.mixup, (x.shape[0],)).astype(x.dtype)
        lam = lam.reshape((-1,) + (1,) * (x.ndim - 1))
        out = {"x": lam * x + (1 - lam) * x[perm]}
        if "mask" in batch:
            m = batch["mask"]
            out["mask"] = ((m != 0) & (m[perm] != 0)).astype(m.dtype)
        if "weights" in batch:
            w, w2 = batch["weights"], batch["weights"][perm]
            both = (w > 0) & (w2 > 0)
            var = lam ** 2 / jnp.where(both, w, 1) + (1 - lam) ** 2 / jnp.where(both, w2, 1)
            out["weights"] = jnp.where(both, 1 / var, 0).astype(w.dtype)
        return {**batch, **out}

    def epoch_single(self, state: TrainState, train: Data, val: Data) -> tuple[TrainState, dict]:
        """One epoch over shuffled batches (a ``lax.scan``), then validation and best-tracking."""
        n = train["x"].shape[0]
        steps = n // self.batch_size
        perm_key, step_keys = epoch_keys(state.seed, state.epoch, steps)
        order = jax.random.permutation(perm_key, n)[: steps * self.batch_size]
        order = order.reshape(steps, self.batch_size)

        def body(st, inputs):
            idx, rng = inputs
            batch = {k: self._split_batch(v[idx]) for k, v in train.items()}
            st, metrics = self.train_step(st, batch, rng)
            return st, metrics["loss"]

        state, step_losses = jax.lax.scan(body, state, (order, step_keys))
        val_loss = self.mean_loss_single(state.params, val)
        return self.end_epoch_single(state, val_loss), {"train_loss": step_losses.mean(), "val_loss": val_loss}

    def end_epoch_single(self, state: TrainState, val_loss) -> TrainState:
        """Counts the epoch and keeps the parameters if ``val_loss`` is the best so far."""
        improved = val_loss < state.best_val
        best_params = jax.tree.map(lambda new, old: jnp.where(improved, new, old),
                                   state.params, state.best_params)
        return state.replace(
            epoch=state.epoch + 1, best_params=best_params,
            best_val=jnp.where(improved, val_loss, state.best_val),
            best_epoch=jnp.where(improved, state.epoch, state.best_epoch))

    def _chunks(self, data: Data):
        """Pads to a whole number of eval chunks; returns chunked arrays and a row-validity mask."""
        n = data["x"].shape[0]
        size = min(self.eval_batch_size, n)
        rows = -(-n // size) * size
        chunked = {k: _pad_rows(v, rows).reshape(rows // size, size, *v.shape[1:]) for k, v in data.items()}
        valid = (jnp.arange(rows) < n).reshape(rows // size, size)
        return chunked, valid, n

    def predict_single(self, params, data: Data) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Reconstructions and per-sample errors of one member, computed in bounded-memory chunks."""
        chunked, _, n = self._chunks(data)

        def one(chunk):
            recon = self.model.apply(params, chunk["x"])
            err = losses.per_sample(chunk["x"], recon, chunk.get("mask"), chunk.get("weights"), self.loss_kind)
            return recon, err

        recon, err = jax.lax.map(one, chunked)
        return recon.reshape(-1, *recon.shape[2:])[:n], err.reshape(-1)[:n]

    def mean_loss_single(self, params, data: Data) -> jnp.ndarray:
        """The training loss over a whole dataset (all unmasked elements weigh the same)."""
        chunked, valid, _ = self._chunks(data)

        total, count = jax.lax.map(lambda a: self.loss_terms_single(params, *a), (chunked, valid))
        return total.sum() / jnp.maximum(count.sum(), 1)

    def loss_terms_single(self, params, chunk: Data, ok: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Summed loss and element count of the rows of ``chunk`` where ``ok``: validation in pieces."""
        recon = self.model.apply(params, chunk["x"])
        mask = chunk.get("mask")
        mask = jnp.ones(chunk["x"].shape, bool) if mask is None else mask.astype(bool)
        mask = mask & ok.reshape((-1,) + (1,) * (mask.ndim - 1))
        err = losses.per_sample(chunk["x"], recon, mask, chunk.get("weights"), self.loss_kind)
        count = mask.reshape(mask.shape[0], -1).sum(1)
        return (err * count).sum(), count.sum()

    # ---- compiled entry points ----------------------------------------------------------------
    def epoch(self, state: TrainState, train: Data, val: Data) -> tuple[TrainState, dict]:
        """One epoch for every member; ``state`` is donated."""
        return self._epoch(state, train, val)

    def predict(self, params, data: Data) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Reconstructions ``(K, N, ...)`` and per-sample errors ``(K, N)`` for every member."""
        return self._predict(params, data)

    def errors(self, params, data: Data) -> jnp.ndarray:
        """Per-sample errors ``(K, N)`` of every member, without keeping the reconstructions."""
        return self._errors(params, data)


def fit(trainer: Trainer, state: TrainState, train: Data, val: Data, epochs: int,
        on_epoch: Callable[[TrainState, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> TrainState:
    """Runs epochs until ``epochs`` (counted from the state's own epoch, so resuming just works).

    ``on_epoch(state, metrics)`` sees host metrics with one value per member; ``should_stop``
    is polled after each epoch (e.g. set by a preemption signal).
    """
    start = int(np.asarray(jax.device_get(state.epoch)).reshape(-1)[0])
    for _ in range(start, epochs):
        state, metrics = trainer.epoch(state, train, val)
        if on_epoch is not None:
            on_epoch(state, jax.tree.map(np.asarray, jax.device_get(metrics)))
        if should_stop is not None and should_stop():
            break
    return state
