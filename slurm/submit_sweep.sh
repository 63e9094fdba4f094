#!/usr/bin/env bash
# Submits a sweep: a job array with one task per line of SWEEP_FILE, then one job that runs after
# all of them (whatever their outcome) and writes the summary table runs/sweeps/<array id>.csv/.md.
#   bash slurm/submit_sweep.sh [--max-running N] [sbatch options...] SWEEP_FILE experiments/<name>.py [--config.a.b=v ...]
# --max-running N: at most N tasks at once (the array's %N). sbatch options (as --name=value, e.g.
# --partition=gpu --time=1:00:00) go before SWEEP_FILE and apply to every task; the summary job
# (slurm/summary.sbatch: 1 CPU, 10 minutes) gets only --account, --partition, --qos and
# --reservation of them.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash slurm/submit_sweep.sh [--max-running N] [sbatch options as --name=value...] SWEEP_FILE experiments/<name>.py [overrides...]"
opts=() summary_opts=() throttle=
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        --max-running=*) throttle=${1#*=} ;;
        --max-running) [[ $# -ge 2 ]] || { echo "$usage" >&2; exit 2; }; throttle=$2; shift ;;
        --array|--array=*|-a*) echo "error: $1: the sweep sets --array itself (one task per line); use --max-running N to throttle" >&2; exit 2 ;;
        --account=*|--partition=*|--qos=*|--reservation=*) opts+=("$1"); summary_opts+=("$1") ;;
        *) opts+=("$1") ;;
    esac
    shift
done
[[ -z $throttle || $throttle =~ ^[1-9][0-9]*$ ]] || { echo "error: --max-running: must be a whole number >= 1, got '$throttle'" >&2; exit 2; }
[[ $# -ge 2 ]] || { echo "$usage" >&2; exit 2; }
sweep_file=$1
[[ -f $sweep_file ]] || { echo "error: $sweep_file: sweep file not found (sbatch options go before it, as --name=value)" >&2; exit 2; }
n=$(grep -cvE '^[[:space:]]*(#|$)' "$sweep_file" || true)
[[ $n -gt 0 ]] || { echo "error: $sweep_file: no override lines" >&2; exit 2; }
root=runs
for arg in "${@:3}"; do [[ $arg == --config.run.root=* ]] && root=${arg#*=}; done
mkdir -p "$root/sweeps"

array=$(sbatch --parsable "${opts[@]}" --array="0-$((n - 1))${throttle:+%$throttle}" \
        --output="$root/sweeps/%A_%a.out" slurm/sweep.sbatch "$@")
array=${array%%;*}
summary=$(sbatch --parsable "${summary_opts[@]}" --dependency="afterany:$array" --kill-on-invalid-dep=no \
          --output="$root/sweeps/${array}_summary.out" \
          slurm/summary.sbatch "--job=$array" "--sweep-file=$sweep_file" "--root=$root")
echo "sweep: array job $array ($n tasks${throttle:+, at most $throttle at once}), summary job ${summary%%;*}"
echo "runs: $root/<experiment>/${array}_<task>/   summary: $root/sweeps/$array.md"
