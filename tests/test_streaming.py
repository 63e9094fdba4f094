"""Streaming training from shards of the real SDSS spectra against the in-memory trainer."""

import jax
import numpy as np
import optax
import pytest

from research.data import sdss_shards, shards, stream
from research.models.dense import DenseAE
from research.checkpoints import Checkpoints
from research.streaming import StreamingTrainer, fit_stream
from research.training import Trainer

pytestmark = pytest.mark.data("sdss")
TRAIN, VAL = np.arange(0, 30), np.arange(30, 38)
PREP = stream.Prepare(fill_masked=True, weight_clip=10.0)
BATCH, EPOCHS = 6, 2


@pytest.fixture(scope="module")
def ds(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    sdss_shards.ingest_task(data_dir / "sdss", out, wave_range=(3600.0, 10400.0), shard_size=16)
    shards.merge(out)
    return shards.Shards(out)


def in_memory(ds, rows):
    src = ds.source(rows)
    items = [PREP.map(src[i]) for i in range(len(src))]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def make_trainer(member_chunk=0):
    return Trainer(DenseAE(latent_dim=8, hidden=(16,)), optax.adam(1e-3), batch_size=BATCH, input_noise=0.05,
                   mixup=0.4, eval_batch_size=4, member_chunk=member_chunk)


def stream_fit(ds, trainer, seeds, state=None, workers=0, **kw):
    st = StreamingTrainer(trainer, len(TRAIN) // BATCH, chunk=2)
    state = trainer.init(seeds, (ds.n_pixels,)) if state is None else state
    return fit_stream(st, state, stream.Stream(ds.source(TRAIN), PREP, workers),
                      stream.Stream(ds.source(VAL), PREP, workers), EPOCHS, **kw)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def reference(ds):
    """The in-memory trainer (masks, ivar weights, input noise and mixup on) and the streaming one."""
    trainer = make_trainer()
    train, val = trainer.put(in_memory(ds, TRAIN)), trainer.put(in_memory(ds, VAL))
    mem = trainer.init([0], (ds.n_pixels,))
    val_losses = []
    for _ in range(EPOCHS):
        mem, metrics = trainer.epoch(mem, train, val)
        val_losses.append(np.asarray(metrics["val_loss"]))
    seen = []
    streamed = stream_fit(ds, trainer, [0], on_epoch=lambda s, m: seen.append(m["val_loss"]))
    return mem, val_losses, streamed, seen


@pytest.mark.slow
def test_streaming_equals_the_in_memory_trainer_given_its_batch_order(reference):
    """Same batches in the same order and the same step keys: the same parameters, bit for bit on CPU.
    Validation sums its pieces in another order, so its loss agrees to float32 rounding only."""
    mem, mem_val, streamed, stream_val = reference
    assert int(np.asarray(streamed.epoch)[0]) == EPOCHS == int(np.asarray(mem.epoch)[0])
    assert int(np.asarray(streamed.step)[0]) == EPOCHS * (len(TRAIN) // BATCH)
    for a, b in zip(leaves(mem.params), leaves(streamed.params)):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(np.concatenate(stream_val), np.concatenate(mem_val), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(streamed.best_val), np.asarray(mem.best_val), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_ends_with_the_uninterrupted_parameters(ds, reference, tmp_path, workers):
    """Stopped mid-epoch and resumed from the checkpoint (train state + grain iterator state, also with
    grain worker processes): the parameters of the uninterrupted run."""
    _, _, uninterrupted, _ = reference
    calls = []

    def stop():  # polled before every chunk of 2 of the 5 steps an epoch: the 5th poll is mid-epoch 1
        calls.append(1)
        return len(calls) >= 5

    ckpt = Checkpoints(tmp_path)
    state = stream_fit(ds, make_trainer(), [0], checkpoints=ckpt, should_stop=stop, workers=workers)
    assert int(np.asarray(state.epoch)[0]) == 1 and int(np.asarray(state.step)[0]) == 7
    ckpt.close()
    ckpt = Checkpoints(tmp_path)
    assert ckpt.latest_step() == 7 and (tmp_path / "latest" / "7" / "data").is_dir()
    trainer = make_trainer()
    restored, step = ckpt.restore(trainer.init([0], (ds.n_pixels,)))
    resumed = stream_fit(ds, trainer, [0], state=restored, checkpoints=ckpt, resumed_at_step=step, workers=workers)
    ckpt.close()
    assert int(np.asarray(resumed.epoch)[0]) == EPOCHS
    for a, b in zip(leaves(uninterrupted.params), leaves(resumed.params)):
        assert np.array_equal(a, b)
    for a, b in zip(leaves(uninterrupted.best_params), leaves(resumed.best_params)):
        assert np.array_equal(a, b)


@pytest.mark.slow
def test_ensembles_in_chunks_share_the_stream(ds, reference):
    """Member 0 of a 2-member ensemble (trained one member at a time) is the single seed-0 model;
    member 1 (seed 1) starts and steps with its own keys on the same batches."""
    _, _, single, _ = reference
    ens = stream_fit(ds, make_trainer(member_chunk=1), [0, 1])
    for a, b in zip(leaves(single.params), leaves(ens.params)):
        assert np.array_equal(a[0], b[0]) and b.shape[0] == 2
    assert not np.allclose(leaves(ens.params)[0][0], leaves(ens.params)[0][1])


def test_processes_read_disjoint_blocks_that_make_the_global_batch(ds):
    """Two processes' loaders (as ShardByJaxProcess would give them): each reads only its own half
    of every batch, and the halves in process order are the single-process batch."""
    import grain.python as grain

    keep = stream.Prepare(fill_masked=False, weight_clip=None, keep=("index",))
    src = ds.source(TRAIN)
    rows = [[b["index"] for b in stream.train_loader(src, keep, seed=0, epoch=1, batch_size=BATCH,
                                                     shard=grain.ShardOptions(p, 2))] for p in range(2)]
    single = [b["index"] for b in stream.train_loader(src, keep, seed=0, epoch=1, batch_size=BATCH)]
    order = TRAIN[stream.epoch_order(0, 1, len(TRAIN), BATCH)]
    assert len(single) == len(rows[0]) == len(rows[1]) == len(TRAIN) // BATCH
    assert not set(np.concatenate(rows[0])) & set(np.concatenate(rows[1]))
    for b, (a, c) in enumerate(zip(*rows)):
        assert len(a) == len(c) == BATCH // 2
        assert list(np.concatenate([a, c])) == list(single[b]) == list(order[b * BATCH:(b + 1) * BATCH])
    # evaluation: every row exactly once, in order, 19 rows in global batches of 8 (the last one short)
    ev = [[b["index"] for b in stream.eval_loader(ds.source(np.arange(19)), keep, batch_size=8,
                                                  shard=grain.ShardOptions(p, 2))] for p in range(2)]
    assert [len(e) for e in ev] == [3, 2]  # process 1 has no rows of the last batch (rows 16-18 are process 0's)
    merged = [i for b in range(3) for p in range(2) if b < len(ev[p]) for i in ev[p][b]]
    assert merged == list(range(19))


def test_worker_processes_give_the_same_batches(ds):
    """``data.workers=2``: grain's worker processes read the records, the batches (and so training) are the
    in-process ones, also the short last evaluation batch."""
    keep = stream.Prepare(fill_masked=True, weight_clip=10.0, keep=("index",))
    src = ds.source(TRAIN)
    for make in (lambda w: stream.train_loader(src, keep, seed=0, epoch=1, batch_size=BATCH, workers=w),
                 lambda w: stream.eval_loader(ds.source(np.arange(19)), keep, batch_size=8, workers=w)):
        alone, workers = list(make(0)), list(make(2))
        assert [len(b["index"]) for b in workers] == [len(b["index"]) for b in alone]
        for a, b in zip(alone, workers):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
