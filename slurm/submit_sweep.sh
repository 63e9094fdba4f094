#!/usr/bin/env bash
# Submits a sweep: a job array with one task per line of SWEEP_FILE, then a job that runs after
# all of them (whatever their outcome) and writes the summary table runs/sweeps/<array id>.csv/.md.
#   bash slurm/submit_sweep.sh [sbatch options...] SWEEP_FILE experiments/<name>.py [--config.a.b=v ...]
# sbatch options (e.g. --partition=gpu --time=1:00:00) go before SWEEP_FILE and apply to every task.
set -euo pipefail
cd "$(dirname "$0")/.."
opts=()
while [[ $# -gt 0 && $1 == -* ]]; do opts+=("$1"); shift; done
[[ $# -ge 2 ]] || { echo "usage: bash slurm/submit_sweep.sh [sbatch options...] SWEEP_FILE experiments/<name>.py [overrides...]" >&2; exit 2; }
sweep_file=$1
[[ -f $sweep_file ]] || { echo "error: $sweep_file: sweep file not found" >&2; exit 2; }
n=$(grep -cvE '^[[:space:]]*(#|$)' "$sweep_file" || true)
[[ $n -gt 0 ]] || { echo "error: $sweep_file: no override lines" >&2; exit 2; }
root=runs
for arg in "${@:3}"; do [[ $arg == --config.run.root=* ]] && root=${arg#*=}; done
mkdir -p "$root/sweeps"

array=$(sbatch --parsable "${opts[@]}" --array="0-$((n - 1))" --output="$root/sweeps/%A_%a.out" \
        slurm/sweep.sbatch "$@")
array=${array%%;*}
summary=$(sbatch --parsable "${opts[@]}" --job-name=sweep-summary --dependency="afterany:$array" \
          --kill-on-invalid-dep=no --gres=none --cpus-per-task=1 --time=00:10:00 --output="$root/sweeps/${array}_summary.out" \
          --wrap=". slurm/site.sh; \${PYTHON:-python} slurm/summarize.py --job=$array --sweep-file=$sweep_file --root=$root")
echo "sweep: array job $array ($n tasks), summary job ${summary%%;*}"
echo "runs: $root/<experiment>/${array}_<task>/   summary: $root/sweeps/$array.md"
