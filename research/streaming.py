"""Training on data streamed from shards: a compiled ``lax.scan`` over chunks of prefetched batches.

The in-memory :class:`research.training.Trainer` keeps the whole dataset on every device; here only
``chunk`` batches are on the device at a time. Each process reads its own rows (see
:mod:`research.data.stream`), ``jax.make_array_from_process_local_data`` makes them one global
batch split over the mesh's ``data`` axis, and the Trainer's own ``train_step`` runs on it with the
step keys the in-memory epoch would use, so with the same batch order the parameters are the
in-memory ones. Ensembles (and ``member_chunk``) share the stream: every member sees the batches
of the first seed's order (in memory each member shuffles with its own seed).

:func:`fit_stream` is :func:`research.training.fit` for streamed data, called by
:func:`research.pipeline.train` when it is given :class:`research.data.stream.Stream` rows: a stop
request is seen before every chunk, so a run can stop mid-epoch; the train state and the loader's
iterator state then go into one orbax checkpoint, and the resumed run ends with the same parameters.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from research.data import stream
from research.errors import InputError
from research.training import Trainer, TrainState, epoch_keys


class StreamingTrainer:
    """Compiled chunk-of-steps, validation-piece and end-of-epoch programs around a :class:`Trainer`."""

    def __init__(self, trainer: Trainer, steps_per_epoch: int, chunk: int = 8):
        if trainer.member_data:
            raise InputError("config key data.format: streaming gives every member the same batches "
                             "(a dataset per member needs data.format='in_memory')")
        self.trainer, self.steps, self.chunk = trainer, int(steps_per_epoch), int(chunk)
        repl = trainer.replicated
        over = trainer._over_members
        self._chunk = jax.jit(over(self._chunk_single), donate_argnums=0, out_shardings=repl)
        self._terms = jax.jit(over(lambda st, batch, ok: trainer.loss_terms_single(st.params, batch, ok)),
                              out_shardings=repl)
        self._end = jax.jit(jax.vmap(self._end_single), donate_argnums=0, out_shardings=repl)

    def _chunk_single(self, state: TrainState, batches, start) -> TrainState:
        _, keys = epoch_keys(state.seed, state.epoch, self.steps)
        keys = jax.lax.dynamic_slice_in_dim(keys, start, batches["x"].shape[0])

        def body(st, inputs):
            batch, key = inputs
            st, metrics = self.trainer.train_step(st, batch, key)
            return st, metrics["loss"]

        state, losses = jax.lax.scan(body, state, (batches, keys))
        return state.replace(loss_sum=state.loss_sum + losses.sum())

    def _end_single(self, state: TrainState, total, count) -> tuple[TrainState, dict]:
        val_loss = total / jnp.maximum(count, 1)
        train_loss = state.loss_sum / self.steps
        state = self.trainer.end_epoch_single(state.replace(loss_sum=jnp.zeros_like(state.loss_sum)), val_loss)
        return state, {"train_loss": train_loss, "val_loss": val_loss}

    def global_batch(self, local: dict, stacked: bool) -> dict:
        """Process-local rows (axis 1 if ``stacked`` chunks, else 0) -> global arrays split over ``data``."""
        spec = P(None, "data") if stacked else P("data")
        sharding = NamedSharding(self.trainer.mesh, spec)
        out = {}
        for k, v in local.items():
            shape = list(v.shape)
            shape[1 if stacked else 0] *= jax.process_count()
            out[k] = jax.make_array_from_process_local_data(sharding, v, tuple(shape))
        return out

    def train_chunk(self, state: TrainState, batches: list[dict], start: int) -> TrainState:
        local = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        return self._chunk(state, self.global_batch(local, stacked=True), jnp.int32(start))

    def end_epoch(self, state: TrainState, val: stream.Stream) -> tuple[TrainState, dict]:
        """Streams the validation rows in padded pieces (padding masked out), then ends the epoch;
        returns the state and each member's training and validation loss (host arrays)."""
        per_proc = self.trainer.eval_batch_size // jax.process_count()
        loader = stream.eval_loader(val.source, val.prepare, batch_size=self.trainer.eval_batch_size,
                                    workers=val.workers)
        like, it = val.like(), iter(loader)
        total = count = None
        for _ in range(eval_pieces(len(val), per_proc)):
            local, ok = pad_batch(next(it, None), per_proc, like)
            t, c = self._terms(state, self.global_batch(local, False), self.global_batch({"ok": ok}, False)["ok"])
            total, count = (t, c) if total is None else (total + t, count + c)
        state, metrics = self._end(state, total, count)
        return state, jax.tree.map(np.asarray, jax.device_get(metrics))


def eval_pieces(n_rows: int, per_process: int) -> int:
    """Evaluation batches every process runs (:func:`research.data.stream.eval_loader`'s global batches)."""
    return -(-n_rows // (per_process * jax.process_count()))


def pad_batch(batch: dict | None, rows: int, like: dict) -> tuple[dict, np.ndarray]:
    """A batch padded to ``rows`` rows, and which rows are real."""
    n = 0 if batch is None else len(next(iter(batch.values())))
    out = {}
    for k, (shape, dtype) in like.items():
        a = np.zeros((rows, *shape), dtype)
        if n:
            a[:n] = batch[k]
        out[k] = a
    return out, np.arange(rows) < n


def _first(a) -> int:
    return int(np.asarray(jax.device_get(a)).reshape(-1)[0])


def fit_stream(st: StreamingTrainer, state: TrainState, train: stream.Stream, val: stream.Stream, epochs: int,
               on_epoch: Callable[[TrainState, dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, checkpoints=None,
               resumed_at_step: int | None = None) -> TrainState:
    """Runs epochs until ``epochs``, as :func:`research.training.fit` does, on streamed rows.

    ``should_stop`` is polled before every chunk of ``st.chunk`` batches; a stop in the middle of an
    epoch saves the state with this process's iterator position into ``checkpoints``
    (:class:`research.checkpoints.Checkpoints`), and a state restored from step ``resumed_at_step``
    in the middle of an epoch moves the new loader to the saved position.
    """
    epoch, step = _first(state.epoch), _first(state.step)
    done = step - epoch * st.steps
    if not 0 <= done < st.steps:
        raise InputError(f"train state: step {step} is not in epoch {epoch} of {st.steps} steps "
                         "(resumed with another data size or train.batch_size?)")
    seed = _first(state.seed)  # every member reads the first member's order
    while epoch < epochs:
        loader = stream.train_loader(train.source, train.prepare, seed=seed, epoch=epoch,
                                     batch_size=st.trainer.batch_size, workers=train.workers)
        iterator = iter(loader)
        if done:
            if checkpoints is None or resumed_at_step != step:
                raise InputError(f"train state: step {step} is inside epoch {epoch}; resuming there needs the "
                                 "data iterator saved with it")
            checkpoints.restore_data(step, iterator.records)
        while done < st.steps:
            if should_stop is not None and should_stop():
                if done and checkpoints is not None:
                    checkpoints.save(state, iterator.records)
                return state
            batches = [next(iterator) for _ in range(min(st.chunk, st.steps - done))]
            state = st.train_chunk(state, batches, done)
            done += len(batches)
        state, metrics = st.end_epoch(state, val)
        epoch, done = epoch + 1, 0
        if on_epoch is not None:
            on_epoch(state, metrics)
    return state
