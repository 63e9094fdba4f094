"""Gathers a sweep's runs (``<root>/<experiment>/<array id>_<task>/metrics.json``) into one table.

    python slurm/summarize.py --job=<array id> --sweep-file=slurm/sweep_example.txt [--root=runs]

Writes ``<root>/sweeps/<array id>.csv`` and ``.md`` (one row per sweep line, in order; a task that
did not finish is listed with its status) and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

COLUMNS = ["task", "status", "overrides", "roc_auc", "pr_auc", "f1", "threshold", "flagged", "epochs",
           "best_val_loss", "seconds", "run_dir"]


def sweep_lines(path: pathlib.Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _mean(value):
    if isinstance(value, list):
        return sum(value) / len(value) if value else None
    return value


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def row(task: int, overrides: str, runs: list[pathlib.Path]) -> dict:
    r = {c: None for c in COLUMNS}
    r.update(task=task, overrides=overrides, status="missing")
    if not runs:
        return r
    run = runs[0]
    r["run_dir"] = str(run)
    metrics = run / "metrics.json"
    if not metrics.is_file():
        r["status"] = "unfinished" if (run / "checkpoints").is_dir() else "failed"
        return r
    try:
        m = json.loads(metrics.read_text())
    except json.JSONDecodeError:
        r["status"] = "corrupt metrics.json"
        return r
    test, train = m.get("test") or {}, m.get("train") or {}
    r.update(status="done", roc_auc=test.get("roc_auc"), pr_auc=test.get("pr_auc"), f1=test.get("f1"),
             threshold=(m.get("threshold") or {}).get("value"),
             flagged=f"{m.get('n_flagged')}/{m.get('n_test')}", epochs=train.get("epochs"),
             best_val_loss=_mean(train.get("best_val_loss")), seconds=m.get("seconds_total"))
    return r


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="the array job id")
    parser.add_argument("--sweep-file", required=True, type=pathlib.Path)
    parser.add_argument("--root", default="runs", type=pathlib.Path, help="runs root (config run.root)")
    args = parser.parse_args(argv)
    if not args.sweep_file.is_file():
        print(f"error: {args.sweep_file}: sweep file not found", file=sys.stderr)
        return 2
    rows = [row(i, line, sorted(args.root.glob(f"*/{args.job}_{i}")))
            for i, line in enumerate(sweep_lines(args.sweep_file))]
    out = args.root / "sweeps"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{args.job}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({c: _fmt(r[c]) for c in COLUMNS} for r in rows)
    table = markdown(rows)
    (out / f"{args.job}.md").write_text(f"# Sweep {args.job} ({args.sweep_file})\n\n" + table)
    print(table + f"\nsummary: {out / f'{args.job}.csv'} and .md", end="\n")
    done = sum(r["status"] == "done" for r in rows)
    print(f"{done}/{len(rows)} runs done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
