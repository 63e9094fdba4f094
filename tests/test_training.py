import jax
import ml_collections
import numpy as np
import pytest

from research.checkpoints import Checkpoints
from research.errors import InputError
from research.data.ecg5000 import read_ucr
from research.models import build_model
from research.training import Trainer, fit, make_optimizer


@pytest.fixture(scope="module")
def ecg_normals(ecg_dir):
    labels, x = read_ucr(ecg_dir / "ECG5000_TRAIN.txt")
    return {"x": x[labels == 1][:192]}


def _trainer(epochs=3, **kwargs):
    cfg = ml_collections.ConfigDict({"epochs": epochs, "learning_rate": 2e-3, "schedule": "cosine"})
    model = build_model({"name": "conv1d", "features": (8, 16), "latent_dim": 8})
    return Trainer(model, make_optimizer(cfg, 192 // 32), batch_size=32, **kwargs)


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))), a, b)))


def test_training_reduces_loss_on_real_data(ecg_normals):
    trainer = _trainer(epochs=5)
    data = trainer.put(ecg_normals)
    history = []
    fit(trainer, trainer.init([0], (140,)), data, data, 5, on_epoch=lambda s, m: history.append(m["val_loss"][0]))
    assert history[-1] < 0.6 * history[0]


def test_vmapped_ensemble_equals_separate_runs(ecg_normals):
    trainer = _trainer()
    data = trainer.put(ecg_normals)
    ensemble = fit(trainer, trainer.init([3, 4, 5], (140,)), data, data, 3)
    for i, seed in enumerate([3, 4, 5]):
        single = fit(trainer, trainer.init([seed], (140,)), data, data, 3)
        member = jax.tree.map(lambda a: a[i:i + 1], ensemble.params)
        assert _max_diff(member, single.params) < 1e-4
    # members really differ (different seeds -> different init and shuffling)
    assert _max_diff(jax.tree.map(lambda a: a[0], ensemble.params), jax.tree.map(lambda a: a[1], ensemble.params)) > 1e-2


@pytest.mark.parametrize("member_data", [False, True])
def test_members_in_chunks_equal_members_in_one_vmap(ecg_normals, member_data):
    """member_chunk=2 over 3 members: one chunk of two, then the remainder of one, in sequence."""
    x = ecg_normals["x"][:96]
    data = {"x": np.stack([x, x[::-1], x[:, ::-1]])} if member_data else {"x": x}
    runs = {}
    for chunk in (0, 2):
        trainer = _trainer(member_data=member_data, member_chunk=chunk)
        placed = trainer.put(data)
        logged = []
        state = fit(trainer, trainer.init([3, 4, 5], (140,)), placed, placed, 3,
                    on_epoch=lambda s, m: logged.append(m["val_loss"]))
        runs[chunk] = state, np.stack(logged), trainer.predict(state.params, placed)[1]
        np.testing.assert_array_equal(trainer.errors(state.params, placed), runs[chunk][2])
    (full, full_log, full_err), (chunked, chunked_log, chunked_err) = runs[0], runs[2]
    assert full_log.shape == chunked_log.shape == (3, 3)
    assert _max_diff(full.params, chunked.params) < 1e-4
    np.testing.assert_allclose(chunked_log, full_log, rtol=1e-4)
    np.testing.assert_allclose(chunked_err, full_err, rtol=1e-3, atol=1e-6)
    assert np.ptp(chunked_log[-1]) > 0  # members differ, so a mixed-up member order would show


def test_negative_member_chunk_is_a_config_error():
    with pytest.raises(InputError, match="train.member_chunk"):
        _trainer(member_chunk=-1)


def test_best_params_track_lowest_validation_loss(ecg_normals):
    trainer = _trainer(epochs=4)
    data = trainer.put(ecg_normals)
    vals = []
    state = fit(trainer, trainer.init([0], (140,)), data, data, 4, on_epoch=lambda s, m: vals.append(m["val_loss"][0]))
    assert int(state.best_epoch[0]) == int(np.argmin(vals))
    assert float(state.best_val[0]) == pytest.approx(min(vals))
    _, err = trainer.predict(state.best_params, data)
    assert float(np.asarray(err).mean()) == pytest.approx(min(vals), rel=1e-4)


def test_checkpoint_round_trip_and_resume_is_exact(ecg_normals, tmp_path):
    trainer = _trainer(epochs=4)
    data = trainer.put(ecg_normals)
    uninterrupted = fit(trainer, trainer.init([7, 8], (140,)), data, data, 4)

    half = fit(trainer, trainer.init([7, 8], (140,)), data, data, 2)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(half)
    ckpt.close()
    restored, _ = Checkpoints(tmp_path).restore(trainer.init([0, 0], (140,)))
    assert _max_diff(restored, half) == 0.0
    resumed = fit(trainer, restored, data, data, 4)
    assert _max_diff(resumed.params, uninterrupted.params) == 0.0
    assert _max_diff(resumed.opt_state, uninterrupted.opt_state) == 0.0
    assert np.array_equal(np.asarray(resumed.epoch), [4, 4])


def _dense_trainer(**kwargs):
    cfg = ml_collections.ConfigDict({"epochs": 3, "learning_rate": 2e-3, "schedule": "cosine"})
    model = build_model({"name": "dense", "hidden": (16,), "latent_dim": 4})
    return Trainer(model, make_optimizer(cfg, 192 // 32), batch_size=32, **kwargs)


def test_epochs_in_calls_equal_whole_epochs_and_resume_mid_epoch_exactly(ecg_normals, tmp_path):
    """train.steps_per_call=4: 6 steps per epoch in calls of 4 + 2; a stop between calls is a
    mid-epoch checkpoint, and the resumed run equals the uninterrupted one bit for bit."""
    per_call = 4
    whole = _dense_trainer()
    data = whole.put(ecg_normals)
    initial = whole.init([7, 8], (140,))
    fresh = lambda: jax.tree.map(lambda a: a.copy(), initial)  # noqa: E731 (fit donates its state)
    reference = fit(whole, fresh(), data, data, 3)

    trainer = _dense_trainer(steps_per_call=per_call)
    logged = []
    uninterrupted = fit(trainer, fresh(), data, data, 3, on_epoch=lambda s, m: logged.append(m))
    # the same steps on the same batches (a scan of another length may round differently)
    assert _max_diff(uninterrupted.params, reference.params) < 1e-6

    calls = iter(range(100))
    stopped = fit(trainer, fresh(), data, data, 3, should_stop=lambda: next(calls) == 3)
    assert np.asarray(stopped.step).tolist() == [6 + per_call] * 2 and np.asarray(stopped.epoch).tolist() == [1, 1]
    ckpt = Checkpoints(tmp_path)
    ckpt.save(stopped)
    ckpt.close()
    restored, step = Checkpoints(tmp_path).restore(fresh())
    assert step == 6 + per_call
    resumed_log = []
    resumed = fit(trainer, restored, data, data, 3, on_epoch=lambda s, m: resumed_log.append(m))
    assert _max_diff(resumed, uninterrupted) == 0.0
    for a, b in zip(resumed_log, logged[1:]):
        np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
        np.testing.assert_array_equal(a["val_loss"], b["val_loss"])


def test_a_stop_request_before_the_first_call_trains_nothing(ecg_normals):
    trainer = _dense_trainer(steps_per_call=2)
    data = trainer.put(ecg_normals)
    state = fit(trainer, trainer.init([1], (140,)), data, data, 3, should_stop=lambda: True)
    assert np.asarray(state.step).tolist() == [0] and np.asarray(state.epoch).tolist() == [0]
    with pytest.raises(InputError, match="train.steps_per_call"):
        _trainer(steps_per_call=-1)


def test_shift_augmentation_rolls_each_sample_with_its_mask_and_weights(ecg_normals):
    x = np.asarray(ecg_normals["x"][:64], np.float32)
    mask = np.ones_like(x, bool)
    mask[:, :10] = False  # a masked stretch must travel with its sample
    weights = np.broadcast_to(np.arange(x.shape[1], dtype=np.float32), x.shape).copy()
    model = build_model({"name": "conv1d", "features": (8, 16), "latent_dim": 8})
    trainer = Trainer(model, make_optimizer(ml_collections.ConfigDict({"epochs": 40, "learning_rate": 3e-3, "schedule": "cosine"}), 2),
                      batch_size=32, max_shift=7)
    out = jax.jit(trainer._shifted)({"x": x, "mask": mask, "weights": weights}, jax.random.key(0))
    shifts = (np.asarray(out["weights"])[:, 0].astype(int) * -1) % x.shape[1]  # weights[i, 0] = -shift mod L
    shifts = np.where(shifts > x.shape[1] // 2, shifts - x.shape[1], shifts)
    assert np.abs(shifts).max() <= 7 and len(np.unique(shifts)) > 5  # own shift per sample, within range
    for i, k in enumerate(shifts):
        for key, ref in (("x", x), ("mask", mask), ("weights", weights)):
            np.testing.assert_array_equal(np.asarray(out[key][i]), np.roll(ref[i], k))
    # training with the augmentation still learns the real beats
    data = trainer.put({"x": x})
    history = []
    fit(trainer, trainer.init([0], x.shape[1:]), data, data, 40, on_epoch=lambda s, m: history.append(m["val_loss"][0]))
    assert history[-1] < 0.7 * history[0]


def test_mixup_mixes_pairs_of_samples_with_their_masks_and_weights(ecg_normals):
    rng = np.random.default_rng(0)
    x = np.asarray(ecg_normals["x"][:32], np.float32)
    mask = rng.random(x.shape) > 0.1
    weights = rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    weights[:, :5] = 0.0  # zero weight stays zero in any mix
    model = build_model({"name": "conv1d", "features": (8, 16), "latent_dim": 8})
    trainer = Trainer(model, make_optimizer(ml_collections.ConfigDict({"epochs": 40, "learning_rate": 3e-3, "schedule": "cosine"}), 2),
                      batch_size=32, mixup=0.4)
    out = {k: np.asarray(v) for k, v in jax.jit(trainer._mixed)({"x": x, "mask": mask, "weights": weights},
                                                                jax.random.key(0)).items()}
    lams = []
    for i in range(len(x)):
        # out_i = lam x_i + (1 - lam) x_j for one partner j (j = i: the sample itself)
        fits = []
        for j in range(len(x)):
            d = x[i].astype(np.float64) - x[j]
            lam = 1.0 if j == i else float(np.dot(out["x"][i] - x[j], d) / np.dot(d, d))
            fits.append((np.abs(lam * d + x[j] - out["x"][i]).max(), lam, j))
        err, lam, j = min(fits)
        assert err < 1e-4 and -1e-6 <= lam <= 1 + 1e-6
        if lam > 1 - 1e-3:  # x_i almost unmixed: the partner is whichever sample's mask was combined
            j = next(k for k in range(len(x)) if np.array_equal(out["mask"][i], mask[i] & mask[k]))
            ratio = out["weights"][i, 5:] / weights[i, 5:]
            assert (j == i or np.allclose(ratio, 1, rtol=1e-2)) and np.all(out["weights"][i, :5] == 0)
            lams.append(1.0)
            continue
        np.testing.assert_array_equal(out["mask"][i], mask[i] & mask[j])
        if j != i:
            expect = 1 / (lam ** 2 / weights[i, 5:] + (1 - lam) ** 2 / weights[j, 5:])
            np.testing.assert_allclose(out["weights"][i, 5:], expect, rtol=1e-4)
        else:  # mixed with itself (lam unknown): weights grow by 1 / (lam^2 + (1 - lam)^2), one factor in [1, 2]
            ratio = out["weights"][i, 5:] / weights[i, 5:]
            assert 1 - 1e-5 <= ratio.min() and ratio.max() <= 2 + 1e-5 and np.ptp(ratio) < 1e-4
        assert np.all(out["weights"][i, :5] == 0)
        lams.append(lam if j != i else 1.0)
    assert sum(0.05 < v < 0.95 for v in lams) >= 5  # real mixes, not copies
    data = trainer.put({"x": x})
    history = []
    fit(trainer, trainer.init([0], x.shape[1:]), data, data, 40, on_epoch=lambda s, m: history.append(m["val_loss"][0]))
    assert history[-1] < 0.7 * history[0]


@pytest.mark.data("sdss")
def test_line_scaling_multiplies_only_a_real_galaxys_lines_by_a_log_linear_factor(sdss_galaxies):
    from research.training import line_scaled

    x, ivar, mask = sdss_galaxies
    weights = np.where(mask, ivar / np.median(ivar[mask]), 0).astype(np.float32)
    batch = {"x": x, "mask": mask, "weights": weights}
    out = {k: np.asarray(v) for k, v in jax.jit(lambda b, k: line_scaled(b, k, 4.0, 51))(batch, jax.random.key(3)).items()}
    again = jax.jit(lambda b, k: line_scaled(b, k, 4.0, 51))(batch, jax.random.key(3))
    assert np.array_equal(out["x"], np.asarray(again["x"]))  # a function of the key
    for i in range(len(x)):
        changed = out["x"][i] != x[i]
        # lines, not the continuum: a few per cent of the pixels, the brightest emission pixel among them
        assert 0.001 < changed.mean() < 0.1, changed.mean()
        assert changed[np.argmax(np.where(mask[i], x[i] * np.sqrt(weights[i]), -np.inf))]
        assert np.array_equal(out["weights"][i][~changed], weights[i][~changed])
        # the factor, from the weights (divided by its square), is log-linear in the pixel and within [1/4, 4]
        px = np.flatnonzero(changed & (weights[i] > 0))
        log_s = 0.5 * np.log(weights[i][px] / out["weights"][i][px])
        fit = np.polyval(np.polyfit(px, log_s, 1), px)
        assert np.abs(fit - log_s).max() < 1e-3 and np.abs(log_s).max() <= np.log(4.0) + 1e-5
        # the flux moves by (factor - 1) times the line: away from the continuum when the factor is > 1,
        # towards it when it is < 1
        padded = np.pad(np.where(mask[i], x[i], np.nan), 25, mode="edge")
        continuum = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, 51), axis=1)
        far = np.abs(log_s) > 0.1
        moved = np.sign(out["x"][i][px[far]] - x[i][px[far]])
        assert far.sum() >= 5 and np.mean(moved == np.sign(x[i][px[far]] - continuum[px[far]]) * np.sign(log_s[far])) > 0.95
    identity = line_scaled(batch, jax.random.key(3), 1.0, 51)
    assert np.array_equal(np.asarray(identity["x"]), x)


def test_line_scale_below_one_is_a_one_line_config_error():
    from research.training import check_options

    with pytest.raises(InputError, match="train.line_scale"):
        check_options("mse", 0, 0.0, line_scale=0.5)
    check_options("mse", 0, 0.0, line_scale=0.0)
