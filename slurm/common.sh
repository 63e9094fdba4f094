# Sourced by the batch scripts in slurm/ (after they cd to the repository root): site settings, the
# run directory and its log, and preemption (stop request -> checkpoint -> requeue -> resume).
#
# Nothing stands between the job and its log: the job's own output file (sbatch --output, by
# default runs/slurm/<name>-<job id>.out) gets every line, whatever ends the job, and
# <run dir>/slurm.log links to it.

# A signal only records the request; launch() hands it to the trainer through a stop file that the
# trainer reads before every compiled call, so no signal can reach the trainer before it is ready.
# The traps stay to the end of the script: a signal after training is logged and changes nothing.
STOP_SIGNAL=
STOP_FILE=
on_signal() {
    STOP_SIGNAL=$1
    local what="checkpoint, then requeue"
    [[ $1 == TERM ]] && what="checkpoint, then stop"
    echo "$(date +%T) SIG$1: $what (the trainer stops before its next compiled call)"
    if [[ -n $STOP_FILE ]]; then echo "$1" >"$STOP_FILE"; fi
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

[[ -d research && -d slurm ]] || { echo "error: $PWD is not the repository root (submit from it, or set REPO_DIR)" >&2; exit 2; }

# Site settings: slurm/site.local.sh (yours, not tracked), else the tracked defaults;
# $RESEARCH_SITE_FILE names another file (the tests use the defaults whatever is installed here).
SITE_FILE=${RESEARCH_SITE_FILE:-slurm/site.local.sh}
[[ -f $SITE_FILE || -n ${RESEARCH_SITE_FILE:-} ]] || SITE_FILE=slurm/site.example.sh
# shellcheck source=slurm/site.example.sh
source "$SITE_FILE" || { echo "error: $SITE_FILE: site settings not readable" >&2; exit 2; }
PYTHON=${PYTHON:-python}
export PYTHONUNBUFFERED=1   # lines reach the log as they are printed, also when the job is killed
missing=$("$PYTHON" -c 'import importlib.util as u
print(" ".join(m for m in ("absl", "ml_collections", "jax", "orbax") if u.find_spec(m) is None))' 2>&1) || missing="python"
if [[ -n $missing ]]; then
    echo "error: $SITE_FILE: '$PYTHON' ($(command -v "$PYTHON" || echo not found)) cannot import: $missing;" \
         "activate the environment with requirements.txt there (cp slurm/site.example.sh slurm/site.local.sh)" >&2
    exit 2
fi

# start_run CONFIG [OVERRIDES...]: sets RUN_DIR (named after the job, so a requeued job finds its
# checkpoint) and links RUN_DIR/slurm.log to the job's output file.
start_run() {
    RUN_DIR=$("$PYTHON" -m research.train --print_run_dir "--config=$1" "${@:2}") || exit 2
    mkdir -p "$RUN_DIR"
    local id=${SLURM_JOB_ID:-} out=
    [[ -n ${SLURM_ARRAY_JOB_ID:-} ]] && id=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
    [[ -n $id ]] && out=$(scontrol show job "$id" 2>/dev/null | sed -n 's/^ *StdOut=//p' | head -1)
    if [[ -f $out ]]; then
        ln -sfn "$(realpath --relative-to="$RUN_DIR" "$out")" "$RUN_DIR/slurm.log"
    fi
    echo "=== job ${id:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname)} at $(date '+%F %T')"
    echo "site: $SITE_FILE; python: $(command -v "$PYTHON"); JAX_PLATFORMS=${JAX_PLATFORMS:-}"
    echo "run directory: $RUN_DIR"
    echo "log: ${out:-(this output)}"
}

# launch COMMAND...: runs the trainer (directly or through srun) with RESEARCH_STOP_FILE set. Exit
# status 75 means "checkpoint written, requeue me": the job requeues itself, and the requeued job
# (same job id -> same run directory) resumes. The trainer refuses a requeue that would not help
# (run.max_restarts reached, or no step gained since the last restart) with exit status 3.
launch() {
    STOP_FILE=$RUN_DIR/.stop
    rm -f "$STOP_FILE"
    if [[ -n $STOP_SIGNAL ]]; then echo "$STOP_SIGNAL" >"$STOP_FILE"; fi   # it came while the job started
    RESEARCH_STOP_FILE=$STOP_FILE "$@" &
    local pid=$! rc
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done   # a trapped signal interrupts wait
    wait "$pid"; rc=$?
    rm -f "$STOP_FILE"
    case $rc in
        0) echo "$(date '+%F %T') finished: exit status 0; run directory: $RUN_DIR${STOP_SIGNAL:+ (SIG$STOP_SIGNAL came after training and changed nothing)}" ;;
        75)
            if [[ -n ${SLURM_JOB_ID:-} ]]; then
                echo "$(date '+%F %T') requeued: job $SLURM_JOB_ID resumes from $RUN_DIR/checkpoints/latest"
                if scontrol requeue "$SLURM_JOB_ID"; then
                    trap 'exit 75' TERM   # SLURM ends this script now
                    sleep 300 & wait $!
                fi
                echo "error: scontrol requeue failed; resume by hand with --config.run.name=$(basename "$RUN_DIR") --config.run.resume=True"
            fi
            echo "$(date '+%F %T') stopped: exit status 75; run directory: $RUN_DIR" ;;
        *) echo "$(date '+%F %T') ended: exit status $rc; run directory: $RUN_DIR" ;;
    esac
    return "$rc"
}
