"""Training on data streamed from shards: a compiled ``lax.scan`` over chunks of prefetched batches.

The in-memory :class:`research.training.Trainer` keeps the whole dataset on every device; here only
``chunk`` batches are on the device at a time. Each process reads its own rows (see
:mod:`research.data.stream`), ``jax.make_array_from_process_local_data`` makes them one global
batch split over the mesh's ``data`` axis, and the Trainer's own ``train_step`` runs on it with the
step keys the in-memory epoch would use, so with the same batch order the parameters are the
in-memory ones. Ensembles (and ``member_chunk``) share the stream: every member sees the batches
of the first seed's order (in memory each member shuffles with its own seed).

A stop request is honoured after any chunk, mid-epoch: the train state and the loader's iterator
state go into one orbax checkpoint, and the resumed run ends with the same parameters.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from research.data import stream
from research.training import Trainer, TrainState, epoch_keys


class StreamingTrainer:
    """Compiled chunk-of-steps, validation-piece and end-of-epoch programs around a :class:`Trainer`."""

    def __init__(self, trainer: Trainer, steps_per_epoch: int):
        if trainer.member_data:
            raise ValueError("streaming gives every member the same batches (member_data is not supported)")
        self.trainer, self.steps = trainer, int(steps_per_epoch)
        repl = trainer.replicated
        over = trainer._over_members
        self._chunk = jax.jit(over(self._chunk_single), donate_argnums=0, out_shardings=(repl, repl))
        self._terms = jax.jit(over(lambda st, batch, ok: trainer.loss_terms_single(st.params, batch, ok)),
                              out_shardings=repl)
        self._end = jax.jit(jax.vmap(lambda st, total, count: trainer.end_epoch_single(
            st, total / jnp.maximum(count, 1))), donate_argnums=0, out_shardings=repl)

    def _chunk_single(self, state: TrainState, batches, start) -> tuple[TrainState, jnp.ndarray]:
        _, keys = epoch_keys(state.seed, state.epoch, self.steps)
        n = batches["x"].shape[0]
        keys = jax.lax.dynamic_slice_in_dim(keys, start, n)

        def body(st, inputs):
            batch, key = inputs
            st, metrics = self.trainer.train_step(st, batch, key)
            return st, metrics["loss"]

        return jax.lax.scan(body, state, (batches, keys))

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

    def train_chunk(self, state: TrainState, batches: list[dict], start: int) -> tuple[TrainState, jnp.ndarray]:
        local = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        return self._chunk(state, self.global_batch(local, stacked=True), jnp.int32(start))

    def validate(self, state: TrainState, loader: grain.DataLoader, n_rows: int,
                 like: dict) -> tuple[TrainState, np.ndarray]:
        """Streams the validation rows in padded pieces (padding masked out), then ends the epoch;
        returns the state and each member's validation loss."""
        per_proc = self.trainer.eval_batch_size // jax.process_count()
        pieces = eval_pieces(n_rows, per_proc)
        total = count = None
        it = iter(loader)
        for _ in range(pieces):
            batch = next(it, None)
            local, ok = pad_batch(batch, per_proc, like)
            t, c = self._terms(state, self.global_batch(local, False), self.global_batch({"ok": ok}, False)["ok"])
            total, count = (t, c) if total is None else (total + t, count + c)
        val_loss = np.asarray(jax.device_get(total)) / np.maximum(np.asarray(jax.device_get(count)), 1)
        return self._end(state, total, count), val_loss


def row_like(source, prepare) -> dict:
    """Shape and dtype of one prepared row (read from row 0: a process may get no row of a batch)."""
    row = prepare.map(source[0])
    return {k: (np.shape(v), np.asarray(v).dtype) for k, v in row.items()}


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


class StreamCheckpoints:
    """``latest`` holding the train state and this process's loader iterator state, under the step number."""

    def __init__(self, directory):
        directory = pathlib.Path(directory).absolute() / "latest"
        self.manager = ocp.CheckpointManager(
            directory, item_names=("state", "data"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def save(self, state: TrainState, iterator) -> None:
        step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
        if self.manager.latest_step() == step:
            return
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=grain.PyGrainCheckpointSave(iterator)))
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_state(self, like: TrainState) -> TrainState:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        step = self.manager.latest_step()
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]

    def restore_iterator(self, iterator) -> None:
        step = self.manager.latest_step()
        self.manager.restore(step, args=ocp.args.Composite(data=grain.PyGrainCheckpointRestore(iterator)))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _first(a) -> int:
    return int(np.asarray(jax.device_get(a)).reshape(-1)[0])


def fit_stream(st: StreamingTrainer, state: TrainState, train_source, val_source, prepare: stream.Prepare, *,
               seed: int, epochs: int, chunk: int = 8, workers: int = 0, ckpt: StreamCheckpoints | None = None,
               resume: bool = False, checkpoint_every: int = 0,
               on_epoch: Callable[[TrainState, dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> tuple[TrainState, bool]:
    """Trains up to ``epochs``; returns ``(state, finished)``. ``finished`` is False when ``should_stop``
    stopped it (after a chunk, with a checkpoint when ``ckpt`` is given)."""
    batch_size = st.trainer.batch_size
    stop = should_stop or (lambda: False)
    iterator = None
    if resume and ckpt is not None and ckpt.latest_step() is not None:
        state = ckpt.restore_state(state)
        resume_mid_epoch = True
    else:
        resume_mid_epoch = False
    while _first(state.epoch) < epochs:
        epoch = _first(state.epoch)
        loader = stream.train_loader(train_source, prepare, seed=seed, epoch=epoch, batch_size=batch_size,
                                     workers=workers)
        iterator = iter(loader)
        done = _first(state.step) - epoch * st.steps
        if resume_mid_epoch and 0 < done < st.steps:
            ckpt.restore_iterator(iterator)
        resume_mid_epoch = False
        losses = []
        while done < st.steps:
            batches = [next(iterator) for _ in range(min(chunk, st.steps - done))]
            state, chunk_losses = st.train_chunk(state, batches, done)
            losses.append(chunk_losses)
            done += len(batches)
            if done < st.steps and stop():
                if ckpt is not None:
                    ckpt.save(state, iterator)
                return state, False
        val = stream.eval_loader(val_source, prepare, batch_size=st.trainer.eval_batch_size, workers=workers)
        state, val_loss = st.validate(state, val, len(val_source), row_like(val_source, prepare))
        if on_epoch is not None:
            train_loss = np.concatenate([np.asarray(jax.device_get(x)) for x in losses], axis=-1).mean(-1)
            on_epoch(state, {"train_loss": train_loss, "val_loss": val_loss})
        epoch_done, stopping = _first(state.epoch), stop()
        if ckpt is not None and (stopping or (checkpoint_every and epoch_done % checkpoint_every == 0)):
            ckpt.save(state, iterator)
        if stopping and epoch_done < epochs:
            return state, False
    if ckpt is not None and iterator is not None:
        ckpt.save(state, iterator)
    return state, True
