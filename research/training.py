"""Training: a pure train step, one jit-compiled ``lax.scan`` per epoch, ensembles as a ``vmap`` axis.

Every array in :class:`TrainState` carries a leading member axis ``K``. Member ``i`` is seeded with
``seeds[i]`` alone, so a K-member ensemble equals K separate runs with those seeds. Each epoch's
shuffling key is derived from ``(seed, epoch)`` inside the compiled program, so the state alone
determines the rest of training and a resumed run continues exactly where it stopped.

``steps_per_call=k`` runs an epoch as several compiled calls of ``k`` steps (the same permutation,
sliced at ``state.step``), so a long epoch can stop and checkpoint between calls and resume mid-epoch
with the same result; 0 runs a whole epoch per call.

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
from research.config import base_config, check_value, complete
from research.errors import InputError

Data = Mapping[str, Any]  # {'x': (N, ...), optional 'mask' and 'weights' of the same shape}
MODEL_KEYS = ("x", "mask", "weights")  # what the device gets; other per-row arrays (ivar) stay for analyses


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
    loss_sum: jnp.ndarray  # the current epoch's step losses so far (epochs in several calls only)


def make_mesh(devices=None) -> Mesh:
    """A 1-D ``data`` mesh over all devices of all processes."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), ("data",))


def check_options(loss_kind: str, max_shift: int, mixup: float, member_chunk: int = 0,
                  steps_per_call: int = 0, line_scale: float = 0.0, line_width: int = 51) -> None:
    """The trainer's loss, augmentation, ensemble and call-size settings, as one-line config errors."""
    for key, value in (("member_chunk", member_chunk), ("max_shift", max_shift), ("mixup", mixup),
                       ("steps_per_call", steps_per_call), ("line_scale", line_scale), ("line_width", line_width)):
        check_value(f"train.{key}", value)
    if 0 < line_scale < 1:
        raise InputError(f"config key train.line_scale: must be 0 (off) or >= 1, got {line_scale!r}")
    if loss_kind not in losses.KINDS:
        raise InputError(f"config key train.loss: unknown loss {loss_kind!r}; choose one of {losses.KINDS}")


def check_train_config(tc) -> None:
    """:func:`check_options` on a ``config.train`` block: called before any data is read."""
    check_options(tc.loss, tc.max_shift, tc.mixup, tc.member_chunk, tc.steps_per_call, tc.line_scale, tc.line_width)


def make_schedule(cfg, steps_per_epoch: int) -> optax.ScalarOrSchedule:
    """Learning rate from ``config.train``: constant, cosine or warmup_cosine over all steps."""
    cfg = complete(cfg, base_config().train.to_dict())
    total = max(1, int(cfg.epochs) * steps_per_epoch)
    lr = float(cfg.learning_rate)
    schedule_name = cfg.schedule
    if schedule_name == "constant":
        return lr
    if schedule_name == "cosine":
        return optax.cosine_decay_schedule(lr, total, alpha=cfg.final_lr_fraction)
    if schedule_name == "warmup_cosine":
        warmup = max(1, int(cfg.warmup_epochs) * steps_per_epoch)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(total, warmup + 1), end_value=lr * cfg.final_lr_fraction)
    raise InputError(f"config key train.schedule: unknown schedule {schedule_name!r} "
                     "(constant, cosine, warmup_cosine)")


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
    """Optimiser from ``config.train``: adam/adamw/sgd on :func:`make_schedule`, optional clipping."""
    cfg = complete(cfg, base_config().train.to_dict())
    schedule = make_schedule(cfg, steps_per_epoch)
    name = cfg.optimizer
    if name == "adam":
        opt = optax.adam(schedule)
    elif name == "adamw":
        opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.momentum)
    else:
        raise InputError(f"config key train.optimizer: unknown optimizer {name!r} (adam, adamw, sgd)")
    clip = cfg.grad_clip
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt


def epoch_keys(seed, epoch, steps: int):
    """The shuffling key and the ``steps`` step keys of epoch ``epoch`` of the member seeded ``seed``:
    a function of (seed, epoch) only, so any loader that shuffles with them sees the same batches."""
    perm_key, step_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch + 1))
    return perm_key, jax.random.split(step_key, steps)


def _named(fn: Callable, name: str) -> Callable:
    """Gives a compiled program a readable name (logs, profiles, ``run.json``'s compile-cache record)."""
    fn.__name__ = fn.__qualname__ = name
    return fn


def _pad_rows(a: jnp.ndarray, rows: int) -> jnp.ndarray:
    return jnp.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def running_median(x: jnp.ndarray, ok: jnp.ndarray, width: int, stride: int = 8) -> jnp.ndarray:
    """Median of the usable values of ``x`` (B, L) in a ``width``-px window, taken every ``stride`` px and
    interpolated between (a continuum: the cost of a median at every pixel is not needed for it); a
    window with no usable value gives 0."""
    length, half = x.shape[1], width // 2
    centres = jnp.arange(0, length + stride - 1, stride).clip(max=length - 1)
    idx = jnp.clip(centres[:, None] + jnp.arange(-half, half + 1)[None], 0, length - 1)
    med = jnp.nan_to_num(jnp.nanmedian(jnp.where(ok, x, jnp.nan)[:, idx], axis=-1))
    return jax.vmap(lambda m: jnp.interp(jnp.arange(length), centres, m))(med)


def line_scaled(batch: Data, rng, factor: float, width: int, z: float = 4.0, grow: int = 2) -> dict:
    """Line-strength augmentation for 1-D spectra ``x`` (B, L): each sample's lines, its excess over a
    ``width``-px running median where that is beyond ``z`` sigma (the excess's robust spread, along the
    spectrum shaped as ``1/sqrt(weights)`` where there are weights), grown by ``grow`` px, multiplied by a factor drawn
    log-uniformly in ``[1/factor, factor]`` at each end of the spectrum and log-linear between.

    A few training galaxies hold few line strengths and line ratios; without this a held-out starburst's
    lines, at the same rest wavelengths but stronger, are misfit by the model and flagged as anomalous.
    A feature elsewhere in the spectrum is not a line of any training galaxy and stays unreconstructed.
    Weights are divided by the factor squared where the excess is scaled (its noise is scaled too)."""
    x = batch["x"]
    flat = x.reshape(x.shape[0], x.shape[1])  # (B, L, 1) spectra as (B, L)
    ok = (batch["mask"].reshape(flat.shape) != 0) if "mask" in batch else jnp.ones(flat.shape, bool)
    excess = jnp.where(ok, flat - running_median(flat, ok, width), 0.0)
    if "weights" in batch:  # weights give the noise's shape along the spectrum, the spread its scale
        w = batch["weights"].reshape(flat.shape)
        ok = ok & (w > 0)
        excess = excess * jnp.sqrt(jnp.maximum(w, 0))
    spread = 1.4826 * jnp.nanmedian(jnp.where(ok, jnp.abs(excess), jnp.nan), axis=1, keepdims=True)
    significance = jnp.abs(excess) / jnp.maximum(jnp.nan_to_num(spread), 1e-12)
    strong = jax.lax.reduce_window(significance > z, False, jax.lax.bitwise_or, (1, 2 * grow + 1), (1, 1), "SAME") & ok
    ends = jax.random.uniform(rng, (flat.shape[0], 2), minval=-jnp.log(factor), maxval=jnp.log(factor))
    t = jnp.linspace(0.0, 1.0, flat.shape[1])[None]
    scale = jnp.where(strong, jnp.exp(ends[:, :1] * (1 - t) + ends[:, 1:] * t), 1.0).astype(x.dtype)
    if "weights" in batch:
        excess = excess / jnp.sqrt(jnp.where(ok, w, 1))
    out = {"x": (flat + (scale - 1) * jnp.where(ok, excess, 0)).reshape(x.shape)}
    if "weights" in batch:
        out["weights"] = batch["weights"] / scale.reshape(x.shape) ** 2
    return out


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

    ``steps_per_call=k`` (0: a whole epoch) bounds the work of one compiled call, and so the time
    :func:`fit` takes to notice a stop request.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    batch_size: int
    loss_kind: str = "mse"
    input_noise: float = 0.0
    max_shift: int = 0
    mixup: float = 0.0
    line_scale: float = 0.0
    line_width: int = 51
    eval_batch_size: int = 1024
    mesh: Mesh | None = None
    member_data: bool = False
    member_chunk: int = 0
    steps_per_call: int = 0

    def __post_init__(self):
        if self.mesh is None:
            object.__setattr__(self, "mesh", make_mesh())
        n_dev = self.mesh.devices.size
        if self.batch_size % n_dev:
            raise InputError(f"config key train.batch_size: {self.batch_size} is not divisible by the "
                             f"{n_dev} devices of the data mesh")
        check_options(self.loss_kind, self.max_shift, self.mixup, self.member_chunk, self.steps_per_call,
                      self.line_scale, self.line_width)
        repl = self.replicated
        object.__setattr__(self, "_epoch", jax.jit(
            _named(self._over_members(self.epoch_single), "train_epoch"), donate_argnums=0, out_shardings=repl))
        object.__setattr__(self, "_predict", jax.jit(
            _named(self._over_members(self.predict_single), "predict"), out_shardings=repl))
        object.__setattr__(self, "_errors", jax.jit(_named(
            self._over_members(lambda params, data: self.predict_single(params, data)[1]), "errors"),
            out_shardings=repl))
        object.__setattr__(self, "_calls", {})

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
                   input_noise=tc.input_noise, max_shift=tc.max_shift, mixup=float(tc.mixup),
                   line_scale=float(tc.line_scale), line_width=int(tc.line_width),
                   eval_batch_size=tc.eval_batch_size, member_chunk=int(tc.member_chunk),
                   steps_per_call=int(tc.steps_per_call), **{"mesh": make_mesh(), **kwargs})

    # ---- placement -------------------------------------------------------------------------
    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def put(self, data: Data) -> dict:
        """Places host arrays on every device of the mesh (works across processes too)."""
        def place(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])
        return {k: place(v) for k, v in data.items() if v is not None and k in MODEL_KEYS}

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
                best_epoch=jnp.asarray(-1, jnp.int32), loss_sum=jnp.zeros((), jnp.float32))

        build = jax.jit(_named(lambda: jax.vmap(one)(jnp.asarray(seeds, jnp.uint32)), "init_state"),
                        out_shardings=self.replicated)
        return build()

    # ---- pure per-member functions ----------------------------------------------------------
    def train_step(self, state: TrainState, batch: Data, rng) -> tuple[TrainState, dict]:
        """One optimiser step: pure function of (state, batch, rng) -> (state, metrics)."""
        if self.line_scale:
            batch = {**batch, **line_scaled(batch, jax.random.fold_in(rng, 3), self.line_scale, self.line_width)}
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

    def _plan(self, state: TrainState, n: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        """The epoch's batches (row indices, ``(steps, batch_size)``) and per-step keys, from ``(seed, epoch)``."""
        steps = n // self.batch_size
        perm_key, step_keys = epoch_keys(state.seed, state.epoch, steps)
        order = jax.random.permutation(perm_key, n)[: steps * self.batch_size]
        return order.reshape(steps, self.batch_size), step_keys

    def _steps(self, state: TrainState, train: Data, order, keys) -> tuple[TrainState, jnp.ndarray]:
        def body(st, inputs):
            idx, rng = inputs
            batch = {k: self._split_batch(v[idx]) for k, v in train.items()}
            st, metrics = self.train_step(st, batch, rng)
            return st, metrics["loss"]

        return jax.lax.scan(body, state, (order, keys))

    def _end_epoch(self, state: TrainState, val: Data, train_loss) -> tuple[TrainState, dict]:
        """Validation and best-tracking; the epoch counter moves on."""
        val_loss = self.mean_loss_single(state.params, val)
        return self.end_epoch_single(state, val_loss), {"train_loss": train_loss, "val_loss": val_loss}

    def end_epoch_single(self, state: TrainState, val_loss) -> TrainState:
        """Counts the epoch and keeps the parameters if ``val_loss`` is the best so far."""
        improved = val_loss < state.best_val
        best_params = jax.tree.map(lambda new, old: jnp.where(improved, new, old),
                                   state.params, state.best_params)
        return state.replace(
            epoch=state.epoch + 1, best_params=best_params,
            best_val=jnp.where(improved, val_loss, state.best_val),
            best_epoch=jnp.where(improved, state.epoch, state.best_epoch))

    def epoch_single(self, state: TrainState, train: Data, val: Data) -> tuple[TrainState, dict]:
        """One epoch over shuffled batches (a ``lax.scan``), then validation and best-tracking."""
        order, keys = self._plan(state, train["x"].shape[0])
        state, step_losses = self._steps(state, train, order, keys)
        return self._end_epoch(state, val, step_losses.mean())

    def call_single(self, state: TrainState, train: Data, val: Data, length: int, last: bool) -> tuple[TrainState, dict]:
        """``length`` steps of the current epoch from its step ``state.step - epoch * steps``; the
        epoch's last call also validates. Metrics only from a last call."""
        steps = train["x"].shape[0] // self.batch_size
        order, keys = self._plan(state, train["x"].shape[0])
        start = state.step - state.epoch * steps
        order = jax.lax.dynamic_slice_in_dim(order, start, length)
        keys = jax.lax.dynamic_slice_in_dim(keys, start, length)
        state, step_losses = self._steps(state, train, order, keys)
        state = state.replace(loss_sum=state.loss_sum + step_losses.sum())
        if not last:
            return state, {}
        return self._end_epoch(state.replace(loss_sum=jnp.zeros_like(state.loss_sum)), val, state.loss_sum / steps)

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

    def steps_per_epoch(self, train: Data) -> int:
        return train["x"].shape[1 if self.member_data else 0] // self.batch_size

    def run_steps(self, state: TrainState, train: Data, val: Data, start: int, length: int) -> tuple[TrainState, dict]:
        """Steps ``start .. start + length`` of the current epoch (``start`` must equal the state's);
        a whole epoch is :meth:`epoch`, anything else a separately compiled call. ``state`` is donated."""
        steps = self.steps_per_epoch(train)
        if start == 0 and length == steps:
            return self.epoch(state, train, val)
        last = start + length == steps
        if (length, last) not in self._calls:
            fn = lambda st, tr, va: self.call_single(st, tr, va, length, last)  # noqa: E731
            self._calls[length, last] = jax.jit(self._over_members(fn), donate_argnums=0, out_shardings=self.replicated)
        return self._calls[length, last](state, train, val)

    def predict(self, params, data: Data) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Reconstructions ``(K, N, ...)`` and per-sample errors ``(K, N)`` for every member."""
        return self._predict(params, data)

    def errors(self, params, data: Data) -> jnp.ndarray:
        """Per-sample errors ``(K, N)`` of every member, without keeping the reconstructions."""
        return self._errors(params, data)


def fit(trainer: Trainer, state: TrainState, train: Data, val: Data, epochs: int,
        on_epoch: Callable[[TrainState, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> TrainState:
    """Runs epochs until ``epochs`` (counted from the state's own epoch and step, so resuming, also
    in the middle of an epoch, just works).

    ``on_epoch(state, metrics)`` sees host metrics with one value per member; ``should_stop`` is
    polled before every compiled call (a whole epoch, or ``trainer.steps_per_call`` steps), the
    first one included, and ends training there when it returns true.
    """
    steps = trainer.steps_per_epoch(train)
    epoch, step = (int(np.asarray(jax.device_get(a)).reshape(-1)[0]) for a in (state.epoch, state.step))
    done = step - epoch * steps
    if not 0 <= done < steps:
        raise InputError(f"train state: step {step} is not in epoch {epoch} of {steps} steps "
                         "(resumed with another data size or train.batch_size?)")
    per_call = trainer.steps_per_call or steps
    while epoch < epochs:
        if should_stop is not None and should_stop():
            break
        length = min(per_call, steps - done)
        state, metrics = trainer.run_steps(state, train, val, done, length)
        done += length
        if done == steps:
            epoch, done = epoch + 1, 0
            if on_epoch is not None:
                on_epoch(state, jax.tree.map(np.asarray, jax.device_get(metrics)))
    return state
