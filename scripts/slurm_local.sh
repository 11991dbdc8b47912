#!/usr/bin/env bash
# A one-node Slurm on this machine, for CI and for trying the Slurm profile.
#
#   scripts/slurm_local.sh install   apt-get the Debian packages (root; idempotent)
#   scripts/slurm_local.sh start     install, write a config, start munged, slurmctld, slurmd
#   scripts/slurm_local.sh stop      cancel our jobs, stop the three daemons by pid
#   scripts/slurm_local.sh status    pids, node state, queue; exit 0 only if all three run
#   scripts/slurm_local.sh env       print `export SLURM_CONF=...` (eval it in your shell)
#
# Everything (config, munge key, sockets, state, logs, pid files) lives under
# $RESET_SLURM_DIR (default /tmp/reset-slurm); nothing is written to /etc. Slurm's
# client commands find this cluster through SLURM_CONF (export it before sbatch,
# squeue or snakemake) or, inside jobs, through the link /run/slurm/conf -> the
# config directory, made at start and removed at stop (start refuses to replace a
# real /run/slurm/conf or run where /etc/slurm/slurm.conf exists, since clients
# in jobs would read that instead). No systemd is needed: the daemons are started
# here and stopped by the pids they wrote. No accounting database
# (AccountingStorageType=accounting_storage/none), so `sacct` cannot report jobs
# and Snakemake must poll with `--slurm-status-command squeue` (MinJobAge=3600
# keeps finished jobs visible to squeue for an hour).
#
# RESET_SLURM_FAKE_GPUS=N gives the node N GPUs that are character devices aliasing
# /dev/null: Slurm schedules and binds them (CUDA_VISIBLE_DEVICES, --gpus) like real
# ones, so GPU requests can be tested on a CPU machine; nothing can compute on them.
#
# Environment: RESET_SLURM_DIR, RESET_SLURM_CTLD_PORT (6817), RESET_SLURM_SLURMD_PORT
# (6818), RESET_SLURM_FAKE_GPUS (0), RESET_SLURM_WAIT (seconds to wait for the node, 60).

set -euo pipefail

DIR=${RESET_SLURM_DIR:-/tmp/reset-slurm}
CTLD_PORT=${RESET_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${RESET_SLURM_SLURMD_PORT:-6818}
WAIT=${RESET_SLURM_WAIT:-60}
FAKE_GPUS=${RESET_SLURM_FAKE_GPUS:-0}
PACKAGES=(slurmctld slurmd slurm-client munge)
BINARIES=(slurmctld slurmd sbatch squeue sinfo scancel munged)

ETC=$DIR/etc # slurm.conf and gres.conf
CONF=$ETC/slurm.conf
# Where Slurm clients look for a node's config when SLURM_CONF is unset and
# /etc/slurm/slurm.conf does not exist (slurmd's configless cache). The Snakemake
# job step drops SLURM_* variables before its `srun`, so jobs find us through this link.
RUN_CONF_LINK=/run/slurm/conf
RUN=$DIR/run # socket and pid files; must be traversable by every user (munged checks)
MUNGE_SOCKET=$RUN/munge.socket
DAEMONS=(slurmd slurmctld munged) # stop order; start order is the reverse

export SLURM_CONF=$CONF

say() { echo "slurm_local: $*"; }
STARTING=0
die() {
    echo "slurm_local: error: $*" >&2
    if ((STARTING)); then
        cmd_stop >&2 || true # leave nothing half-started behind
    fi
    exit 1
}

pidfile() { echo "$RUN/$1.pid"; }

# The pid a daemon wrote, if that process is alive and still that daemon
# (a stale pid file must never get an unrelated process killed).
live_pid() {
    local file pid
    file=$(pidfile "$1")
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

missing_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null || echo "$b"
    done
}

cmd_install() {
    if [[ -z $(missing_binaries) ]]; then
        say "installed: $(slurmctld -V), $(munged -V 2>&1 | head -1)"
        return
    fi
    [[ $(id -u) == 0 ]] || die "installing ${PACKAGES[*]} needs root (missing: $(missing_binaries | xargs))"
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} with your package manager"
    say "apt-get install ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
    [[ -z $(missing_binaries) ]] || die "still missing after install: $(missing_binaries | xargs)"
}

# The node line: this machine's real CPUs and memory as slurmd detects them.
node_line() {
    local detected gres=""
    detected=$(slurmd -C | head -1)
    [[ $detected == NodeName=* ]] || die "slurmd -C did not describe this node: $detected"
    ((FAKE_GPUS > 0)) && gres=" Gres=gpu:$FAKE_GPUS"
    echo "$detected$gres NodeAddr=127.0.0.1 State=UNKNOWN"
}

# gres.conf next to slurm.conf (Slurm looks there). Slurm drops GPUs without a
# device file, and wants character devices: mknod aliases of /dev/null (1,3).
write_gres() {
    local host=$1 i
    rm -rf "$DIR/fake-gpu"
    if ((FAKE_GPUS == 0)); then
        : >"$ETC/gres.conf"
        return
    fi
    [[ $FAKE_GPUS =~ ^[0-9]+$ ]] || die "RESET_SLURM_FAKE_GPUS must be a number, got '$FAKE_GPUS'"
    mkdir -p "$DIR/fake-gpu"
    for ((i = 0; i < FAKE_GPUS; i++)); do
        mknod "$DIR/fake-gpu/gpu$i" c 1 3 || die "mknod failed (no CAP_MKNOD?): run with RESET_SLURM_FAKE_GPUS=0"
    done
    echo "NodeName=$host Name=gpu File=$DIR/fake-gpu/gpu[0-$((FAKE_GPUS - 1))]" >"$ETC/gres.conf"
}

write_config() {
    local host
    host=$(hostname -s)
    mkdir -p "$ETC" "$DIR/munge" "$RUN" "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 755 "$DIR" "$RUN" "$ETC"
    chmod 700 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
        chmod 400 "$DIR/munge/munge.key"
    fi
    # A fresh controller state each start: no jobs carried over from an earlier run.
    rm -rf "${DIR:?}/state/"* "${DIR:?}/spool/"*
    write_gres "$host"
    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_local.sh: a one-node test cluster, daemons as root.
ClusterName=resetci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
# No cgroups in containers: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database (sacct has nothing to report); finished jobs stay
# visible to squeue for MinJobAge seconds, which Snakemake's squeue polling needs.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
$( ((FAKE_GPUS > 0)) && echo GresTypes=gpu)
SlurmctldTimeout=30
SlurmdTimeout=60
$(node_line)
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

link_run_conf() {
    [[ -e /etc/slurm/slurm.conf ]] &&
        die "/etc/slurm/slurm.conf exists: Slurm clients inside jobs would read it, not $CONF"
    if [[ -e $RUN_CONF_LINK && ! -L $RUN_CONF_LINK ]]; then
        die "$RUN_CONF_LINK exists and is not our link (a slurmd config cache?); not replacing it"
    fi
    mkdir -p "$(dirname "$RUN_CONF_LINK")"
    ln -sfn "$ETC" "$RUN_CONF_LINK"
}

unlink_run_conf() {
    if [[ -L $RUN_CONF_LINK && $(readlink "$RUN_CONF_LINK") == "$ETC" ]]; then
        rm -f "$RUN_CONF_LINK"
        rmdir "$(dirname "$RUN_CONF_LINK")" 2>/dev/null || true # only if we left it empty
    fi
}

wait_for_node() {
    local state="" i
    for ((i = 0; i < WAIT; i++)); do
        state=$(timeout 10 sinfo -h -o %T 2>/dev/null | head -1 || true)
        if [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
            say "node is $state"
            return
        fi
        sleep 1
    done
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    die "node not up after ${WAIT}s (state '${state:-none}'); logs in $DIR/log"
}

start_daemon() {
    local name=$1 pid
    shift
    "$@" || die "$name failed to start; see $DIR/log/$name.log"
    for _ in $(seq 50); do
        pid=$(live_pid "$name") && break
        sleep 0.1
    done
    [[ -n ${pid:-} ]] || die "$name wrote no live pid to $(pidfile "$name"); see $DIR/log/$name.log"
    say "started $name pid $pid"
}

cmd_start() {
    cmd_install
    if cmd_status >/dev/null 2>&1; then
        say "already running under $DIR"
        cmd_status
        return
    fi
    cmd_stop >/dev/null # leftovers of a half-started cluster
    STARTING=1
    write_config
    link_run_conf
    start_daemon munged munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    start_daemon slurmctld slurmctld
    start_daemon slurmd slurmd
    wait_for_node
    STARTING=0
    cmd_env
}

stop_daemon() {
    local name=$1 pid
    pid=$(live_pid "$name") || {
        rm -f "$(pidfile "$name")"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name pid $pid ignored TERM, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
    say "stopped $name pid $pid"
}

cmd_stop() {
    # Jobs first, so no slurmstepd outlives its slurmd.
    if live_pid slurmctld >/dev/null; then
        timeout 10 scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
        for _ in $(seq 20); do
            [[ -z $(timeout 5 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    local name
    for name in "${DAEMONS[@]}"; do
        stop_daemon "$name"
    done
    unlink_run_conf
}

cmd_status() {
    local name pid ok=0
    for name in munged slurmctld slurmd; do
        if pid=$(live_pid "$name"); then
            echo "$name: running, pid $pid"
        else
            echo "$name: not running"
            ok=1
        fi
    done
    if ((ok == 0)); then
        timeout 10 sinfo || true
        timeout 10 squeue --states=all || true
    fi
    return $ok
}

cmd_env() { echo "export SLURM_CONF=$CONF"; }

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
-h | --help | help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
*)
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
