#!/usr/bin/env bash
# One-node SLURM cluster on this host, for the tests in tests/test_slurm.py (and for trying the
# batch scripts in slurm/ on a laptop). Installs Debian's slurmctld, slurmd, slurm-client and munge,
# writes /etc/slurm/slurm.conf for this host (CPUs = nproc), creates a munge key and starts munged,
# slurmctld and slurmd. Safe to run again: running daemons are kept, a drained node is resumed.
#
#   bash slurm/setup_local_cluster.sh          # install (if needed), configure, start
#   bash slurm/setup_local_cluster.sh --stop   # stop the daemons this script started
#
# Exit status: 0 ready; 3 not root; 4 apt unreachable (packages missing); 1 anything else.
set -uo pipefail

STATE=/run/research-slurm          # pid files of the daemons started here
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
say() { echo "setup_local_cluster: $*"; }
die() { say "$2" >&2; exit "$1"; }

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    for name in slurmd slurmctld munged; do
        if alive "$STATE/$name.pid"; then
            kill "$(cat "$STATE/$name.pid")" && say "stopped $name"
        fi
        rm -f "$STATE/$name.pid"
    done
}

if [[ "${1:-}" == "--stop" ]]; then stop; exit 0; fi
[[ "$(id -u)" == 0 ]] || die 3 "needs root (installs packages and starts daemons); skipping"

# ---- packages --------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if (( ${#need[@]} )); then
    command -v apt-get >/dev/null || die 4 "apt-get not found and missing packages: ${need[*]}"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    install() { timeout 240 apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/slurm-apt.log 2>&1; }
    if ! install; then
        timeout 120 apt-get update -q >>/tmp/slurm-apt.log 2>&1 \
            || die 4 "apt unreachable (apt-get update failed, see /tmp/slurm-apt.log)"
        install || die 4 "apt-get install ${need[*]} failed (see /tmp/slurm-apt.log)"
    fi
fi

# ---- configuration ---------------------------------------------------------------------------
host=$(hostname -s)
mkdir -p /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd "$STATE" /etc/munge /var/lib/munge \
         /var/log/munge /run/munge
node=$(slurmd -C 2>/dev/null | head -1)
[[ "$node" == NodeName=* ]] || node="NodeName=$host CPUs=$(nproc)"
# CPUs = nproc (slurmd -C may report the whole machine where a container limits it).
node=$(sed -E "s/ CPUs=[0-9]+/ CPUs=$(nproc)/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g" <<<"$node")
conf="# Written by slurm/setup_local_cluster.sh: a one-node test cluster.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire+1 s before it may start again (default 120): shortened here.
AuthInfo=cred_expire=20
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP"
changed=0
if [[ ! -f $CONF ]] || [[ "$(cat $CONF)" != "$conf" ]]; then
    printf '%s\n' "$conf" >$CONF
    changed=1
fi

# ---- daemons ---------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
muser=$(id -u munge >/dev/null 2>&1 && echo munge || echo root)
chown -R "$muser:" /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    if [[ $muser == munge ]]; then runuser -u munge -- munged; else munged --force; fi
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    cp /run/munge/munged.pid "$STATE/munged.pid" 2>/dev/null || true
    munge -n | unmunge >/dev/null 2>&1 || die 1 "munged did not start (see /var/log/munge/munged.log)"
fi

if (( changed )); then   # e.g. AuthInfo is read only at start: restart what runs with the old file
    for name in slurmd slurmctld; do
        if alive "$STATE/$name.pid"; then kill "$(cat "$STATE/$name.pid")"; say "restarting $name"; fi
    done
    for _ in $(seq 20); do alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid" || break; sleep 0.5; done
fi
if ! alive "$STATE/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -c 2>>$LOGDIR/slurmctld.log   # -c: no saved jobs from an earlier cluster
fi
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
scontrol ping 2>/dev/null | grep -q UP || die 1 "slurmctld did not come up (see $LOGDIR/slurmctld.log)"

if ! alive "$STATE/slurmd.pid"; then
    say "starting slurmd"
    slurmd 2>>$LOGDIR/slurmd.log
fi
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1)
    case "$state" in
        idle*|mix*|alloc*) break ;;
        drain*|down*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 ;;
    esac
    sleep 0.5
done
[[ "$state" =~ ^(idle|mix|alloc) ]] || die 1 "node $host is '$state', not idle (see $LOGDIR/slurmd.log)"
say "ready: partition local, node $host, $(nproc) CPUs ($(sinfo -h -o '%D node(s) %t'))"
