# Sourced by the batch scripts in slurm/ (after they cd to the repository): site setup, the run
# directory and its log, and preemption (SIGUSR1 -> checkpoint -> requeue -> resume).

# A signal that arrives while the job is still starting is kept until training runs.
STOP_SIGNAL=
trap 'STOP_SIGNAL=USR1' USR1
trap 'STOP_SIGNAL=TERM' TERM

[[ -d research && -d slurm ]] || { echo "error: $PWD is not the repository root (submit from it, or set REPO_DIR)" >&2; exit 2; }
# shellcheck source=slurm/site.sh
source slurm/site.sh
PYTHON=${PYTHON:-python}

# start_run CONFIG [OVERRIDES...]: sets RUN_DIR (named after the job, so a requeued job finds its
# checkpoint) and sends everything the job prints to RUN_DIR/slurm.log as well.
start_run() {
    RUN_DIR=$("$PYTHON" -m research.train --print_run_dir "--config=$1" "${@:2}") || exit 2
    mkdir -p "$RUN_DIR"
    exec > >(tee -a "$RUN_DIR/slurm.log") 2>&1
    echo "=== job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname)} at $(date '+%F %T')"
    echo "run directory: $RUN_DIR"
}

# launch COMMAND...: runs the trainer (directly or through srun) and forwards SIGUSR1/SIGTERM to
# it. The trainer then stops after the current epoch with a checkpoint; exit status 75 means
# "requeue me", and the requeued job (same job id -> same run directory) resumes.
launch() {
    "$@" &
    local pid=$! rc
    trap 'echo "$(date +%T) SIGUSR1: checkpoint at the end of this epoch, then requeue"; kill -USR1 '"$pid"' 2>/dev/null' USR1
    trap 'echo "$(date +%T) SIGTERM: checkpoint at the end of this epoch, then stop"; kill -TERM '"$pid"' 2>/dev/null' TERM
    [[ -n $STOP_SIGNAL ]] && kill -"$STOP_SIGNAL" "$pid" 2>/dev/null
    rc=0
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done   # a trapped signal interrupts wait
    wait "$pid" 2>/dev/null && rc=0 || { local r=$?; [[ $r != 127 ]] && rc=$r; }
    trap - USR1 TERM
    if [[ $rc == 75 && -n ${SLURM_JOB_ID:-} ]]; then
        echo "$(date +%T) requeueing job $SLURM_JOB_ID; it resumes from $RUN_DIR/checkpoints/latest"
        scontrol requeue "$SLURM_JOB_ID" && sleep 300   # SLURM ends this script now
        echo "error: scontrol requeue failed; resume by hand with --config.run.name=$(basename "$RUN_DIR") --config.run.resume=True"
    fi
    echo "$(date '+%F %T') exit status $rc; run directory: $RUN_DIR"
    return "$rc"
}
