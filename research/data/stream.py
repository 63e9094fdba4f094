"""grain loaders over shards: seeded shuffled training batches, sequential evaluation batches.

Training order is the in-memory trainer's: epoch ``e`` of seed ``s`` takes the permutation
:func:`research.training.epoch_keys` gives, cut into global batches. Each JAX process reads only
its part (``ShardByJaxProcess``: process ``p`` of ``P`` reads block ``p`` of every global batch), and
the processes' blocks in process order are exactly that global batch. One loader per epoch; its
iterator state (how far it got) goes into the checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools

import grain.python as grain
import jax
import numpy as np

from research.data.sdss import fill_gaps, noise_weights
from research.training import epoch_keys


class BlockSampler:
    """grain sampler of one process: its ``i``-th record is row ``i % b`` of its block of global batch
    ``i // b`` (``b = batch_size / shard_count``; process ``p`` holds rows ``p*b .. (p+1)*b - 1``), taken
    from ``order`` (record keys in global order). Stacked in process order, the blocks are the global
    batches in the single-process order; a short last batch leaves the later blocks short or empty."""

    def __init__(self, order: np.ndarray, batch_size: int, shard: grain.ShardOptions, name: str = ""):
        if batch_size % shard.shard_count:
            raise ValueError(f"batch size {batch_size} does not divide over {shard.shard_count} processes")
        self.order, self.batch_size, self.name = np.asarray(order, np.int64), int(batch_size), name
        self.block, self.shard = batch_size // shard.shard_count, shard
        full, rest = divmod(len(self.order), batch_size)
        self.length = full * self.block + min(max(rest - shard.shard_index * self.block, 0), self.block)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside this process's {self.length} records")
        step, row = divmod(index, self.block)
        key = self.order[step * self.batch_size + self.shard.shard_index * self.block + row]
        return grain.RecordMetadata(index=index, record_key=int(key))

    def __repr__(self) -> str:  # grain checks it when restoring an iterator state
        return (f"BlockSampler({self.name}, n={len(self.order)}, batch={self.batch_size}, "
                f"process={self.shard.shard_index}/{self.shard.shard_count})")


def epoch_order(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """The in-memory trainer's order of epoch ``epoch``: the first ``(n // batch_size) * batch_size`` of
    its permutation (computed on the host CPU)."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        perm_key, _ = epoch_keys(np.uint32(seed), epoch, 1)
        return np.asarray(jax.random.permutation(perm_key, n))[: (n // batch_size) * batch_size]


@dataclasses.dataclass(frozen=True)
class Prepare(grain.MapTransform):
    """One record -> the model's sample: flux with masked pixels filled (``fill_masked``), the mask,
    and the clipped per-spectrum noise weights (``weight_clip``, None = no weights), as the in-memory
    loader (:mod:`research.data.sdss`) makes them; a record of values only (RF, audio) is ``x`` as stored."""

    fill_masked: bool = True
    weight_clip: float | None = 10.0
    keep: tuple[str, ...] = ()

    def map(self, record: dict) -> dict:
        if "flux" not in record:  # layout 'x' (RF frames, audio spectra): the values as stored, as in memory
            return {"x": record["x"], **{k: record[k] for k in self.keep}}
        flux, mask = record["flux"][None], record["mask"][None]
        out = {"x": fill_gaps(flux, mask)[0] if self.fill_masked else record["flux"], "mask": record["mask"]}
        if self.weight_clip is not None:
            out["weights"] = noise_weights(record["ivar"][None], mask, self.weight_clip)[0]
        out.update({k: record[k] for k in self.keep})
        return out


@dataclasses.dataclass(frozen=True)
class Stream:
    """Rows of a shard folder as the model reads them: what :func:`research.pipeline.train` takes in
    place of host arrays. ``source`` is random access (:meth:`research.data.shards.Shards.source`);
    ``workers`` grain reading processes (0 = in the calling process)."""

    source: object
    prepare: Prepare
    workers: int = 0

    def __len__(self) -> int:
        return len(self.source)

    def like(self) -> dict:
        """Shape and dtype of one prepared row (row 0: a process may get no row of a batch)."""
        row = self.prepare.map(self.source[0])
        return {k: (np.shape(v), np.asarray(v).dtype) for k, v in row.items()}

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.like()["x"][0])


def _process_sharding() -> grain.ShardOptions:
    return grain.ShardByJaxProcess(drop_remainder=False)


class BatchIterator:
    """This process's batches: ``block`` records of ``records`` (a grain iterator) stacked, the last one
    possibly short. ``records`` is what a checkpoint saves (between batches, its position is whole blocks)."""

    def __init__(self, records, block: int):
        self.records, self.block = records, block

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rows = list(itertools.islice(self.records, self.block))
        if not rows:
            raise StopIteration
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@dataclasses.dataclass(frozen=True)
class Batched:
    """A grain loader of records, iterated as :class:`BatchIterator` batches. Batching is done here and not
    by ``grain.Batch``: with worker processes grain batches each worker's own (strided) records, and the
    batches would no longer be the blocks of the global batches."""

    loader: grain.DataLoader
    block: int

    def __iter__(self) -> BatchIterator:
        return BatchIterator(iter(self.loader), self.block)


def _loader(source, sampler: BlockSampler, prepare: Prepare, workers: int, buffer: int = 2) -> Batched:
    if workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read its absl flags (defaults unless parsed)
            flags.FLAGS.mark_as_parsed()
    return Batched(grain.DataLoader(data_source=source, sampler=sampler, shard_options=grain.NoSharding(),
                                    operations=[prepare], worker_count=workers, worker_buffer_size=buffer),
                   sampler.block)


def train_loader(source, prepare: Prepare, *, seed: int, epoch: int, batch_size: int, workers: int = 0,
                 buffer: int = 2, shard: grain.ShardOptions | None = None) -> Batched:
    """Epoch ``epoch``'s batches for this process (``shard``, default ``ShardByJaxProcess``): its
    ``batch_size / process_count`` rows of each global batch, read from the shards by this process only."""
    order = epoch_order(seed, epoch, len(source), batch_size)
    sampler = BlockSampler(order, batch_size, shard or _process_sharding(), f"epoch={epoch}")
    return _loader(source, sampler, prepare, workers, buffer)


def eval_loader(source, prepare: Prepare, *, batch_size: int, workers: int = 0,
                shard: grain.ShardOptions | None = None) -> Batched:
    """All rows of ``source`` once, in order, as this process's blocks of ``batch_size`` global batches
    (``ceil(N / batch_size)`` batches; the last one short, and for later processes possibly absent)."""
    sampler = BlockSampler(np.arange(len(source)), batch_size, shard or _process_sharding(), "eval")
    return _loader(source, sampler, prepare, workers)
