"""Seconds per epoch of a K-member vmapped ensemble (``config.train.ensemble_size = K``), one process per K.

    python -m bench.ensembles --config experiments/ecg5000.py:dense --members 16
"""

from __future__ import annotations

from bench.common import emit, load_config, prepare, project_trainer, worker_args
from bench.throughput import _run_epochs, step_costs


def _args(p):
    p.add_argument("--members", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-epochs", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-epochs", type=int, default=400)


def main() -> None:
    import jax

    args = worker_args(__doc__.splitlines()[0], _args)
    config = load_config(args.config, args.set)
    config.train.ensemble_size = args.members
    ds = prepare(config)
    trainer = project_trainer(config, len(ds.train["x"]))
    train, val = trainer.put(ds.train), trainer.put(ds.val)
    box = {"state": trainer.init([config.seed + i for i in range(args.members)], ds.train["x"].shape[1:])}

    def one_epoch():
        box["state"], metrics = trainer.epoch(box["state"], train, val)
        jax.block_until_ready((box["state"], metrics))

    costs = step_costs(trainer, box["state"], train)
    times, warmup = _run_epochs(one_epoch, args)
    emit({"members": args.members, "config": args.config, "times": times, "warmup_seconds": warmup, **costs,
          "steps_per_epoch": len(ds.train["x"]) // config.train.batch_size,
          "device": str(jax.devices()[0])})


if __name__ == "__main__":
    main()
