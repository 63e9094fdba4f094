"""Training throughput of one framework on one experiment config: seconds per epoch.

``jax``: the project's ``Trainer.epoch`` (one compiled ``lax.scan`` epoch + validation).
``torch``: the eager twin from :mod:`bench.torch_baselines` (same layers, batch size, optimiser,
samples per epoch and validation set). Both time whole epochs, after the warm-up epochs.

    python -m bench.throughput --config experiments/ecg5000.py:conv1d --framework jax
"""

from __future__ import annotations

import time

from bench.common import emit, load_config, prepare, project_trainer, worker_args


def _args(p):
    p.add_argument("--framework", choices=("jax", "torch"), required=True)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (torch only)")
    p.add_argument("--warmup", type=int, default=2, help="untimed epochs (the first one compiles)")
    p.add_argument("--min-epochs", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0, help="keep timing epochs until this much time")
    p.add_argument("--max-epochs", type=int, default=400)


def _run_epochs(one_epoch, args) -> tuple[list[float], float]:
    start = time.perf_counter()
    for _ in range(args.warmup):
        one_epoch()
    warmup = time.perf_counter() - start
    times = []
    while len(times) < args.max_epochs and (len(times) < args.min_epochs or sum(times) < args.min_seconds):
        t = time.perf_counter()
        one_epoch()
        times.append(time.perf_counter() - t)
    return times, warmup


def one_step(trainer, state, train):
    """The trainer's step over every member of ``state``, and its arguments for one batch."""
    import jax

    batch = {k: v[:, :trainer.batch_size] if trainer.member_data else v[:trainer.batch_size] for k, v in train.items()}
    step = jax.vmap(trainer.train_step, in_axes=(0, 0 if trainer.member_data else None, None))
    return step, (state, batch, jax.random.key(0))


def step_costs(trainer, state, train) -> dict:
    """XLA's flop count of one training step (a ``lax.scan`` body is counted once, so the epoch is not
    asked) and the seconds its matrix products take alone (:mod:`bench.matmul_floor`). With
    ``member_chunk`` the members run in chunks one after another: each chunk's step is costed and
    the costs added up."""
    import jax

    from bench.matmul_floor import matmul_floor

    k = len(state.seed)
    chunk = min(trainer.member_chunk or k, k)
    groups = [(chunk, k // chunk)] + ([(k % chunk, 1)] if k % chunk else [])
    flops = seconds = count = 0.0
    for size, times in groups:
        part = jax.tree.map(lambda a: a[:size], state)
        data = jax.tree.map(lambda a: a[:size], train) if trainer.member_data else train
        step, args = one_step(trainer, part, data)
        cost = jax.jit(step).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        floor = matmul_floor(step, *args)
        flops += times * float(cost.get("flops", 0.0))
        seconds += times * floor["seconds"]
        count += times * floor["count"]
    return {"flops_per_step": flops, "matmul_seconds_per_step": seconds, "matmuls_per_step": int(count)}


def time_jax(config, ds, args) -> dict:
    import jax

    trainer = project_trainer(config, len(ds.train["x"]))
    train, val = trainer.put(ds.train), trainer.put(ds.val)
    box = {"state": trainer.init([config.seed], ds.train["x"].shape[1:])}

    def one_epoch():
        box["state"], metrics = trainer.epoch(box["state"], train, val)
        jax.block_until_ready((box["state"], metrics))

    times, warmup = _run_epochs(one_epoch, args)
    return {"times": times, "warmup_seconds": warmup, **step_costs(trainer, box["state"], train),
            "device": str(jax.devices()[0]), "version": f"jax {jax.__version__}"}


def time_torch(config, ds, args) -> dict:
    import torch

    from bench import torch_baselines as tb

    torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "gpu" else "cpu"
    model = tb.build(dict(config.model), ds.train["x"].shape[1:])
    trainer = tb.EagerTrainer(model, dict(config.train), seed=config.seed, device=device)
    train, val = trainer.to_device(ds.train["x"]), trainer.to_device(ds.val["x"])
    times, warmup = _run_epochs(lambda: trainer.epoch(train, val), args)
    return {"times": times, "warmup_seconds": warmup, "threads": torch.get_num_threads(),
            "params": tb.n_params(model), "device": device, "version": f"torch {torch.__version__}"}


def main() -> None:
    args = worker_args(__doc__.splitlines()[0], _args)
    config = load_config(args.config, args.set)
    ds = prepare(config)
    result = (time_jax if args.framework == "jax" else time_torch)(config, ds, args)
    bs = config.train.batch_size
    result.update(framework=args.framework, config=args.config, batch_size=bs,
                  samples_per_epoch=(len(ds.train["x"]) // bs) * bs, n_val=len(ds.val["x"]))
    emit(result)


if __name__ == "__main__":
    main()
