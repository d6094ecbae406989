#!/bin/bash
# A one-node Slurm cluster on this machine, for trying `make grid SCHEDULER=slurm` and for the tests
# (`make slurm-up`, `make slurm-down`). Everything lives in one folder (default .slurm/): munged with
# its own key and socket, slurm.conf, the daemons' state, spool, logs and pid files. Nothing of the
# system's own configuration is read or changed; the ports are non-default (PORT for slurmctld,
# PORT+1 for slurmd, on 127.0.0.1).
#
#   tools/slurm/local_cluster.sh up     [--dir DIR] [--port PORT]   install if missing, start, print export SLURM_CONF=...
#   tools/slurm/local_cluster.sh down   [--dir DIR]                 cancel its jobs, stop the daemons it started
#   tools/slurm/local_cluster.sh status [--dir DIR]
#
# Debian 12's packages (Slurm 22.05): slurmctld slurmd slurm-client munge; `up` installs those that
# are missing with apt-get (root). Both commands are idempotent. `down` stops exactly the daemons
# whose pid files are in DIR/run (and any job step left by them, found by its SLURM_CONF).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(munged slurmctld slurmd)  # start order; stopped in reverse

die() { echo "slurm-$cmd: $*" >&2; exit 1; }
say() { echo "slurm-$cmd: $*"; }

cmd=${1:-}
# shellcheck source=../daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/../daemons.sh"
[ $# -gt 0 ] && shift
dir=${SLURM_LOCAL_DIR:-.slurm}
port=${SLURM_LOCAL_PORT:-16817}
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        *) echo "usage: $0 up|down|status [--dir DIR] [--port PORT]" >&2; exit 2 ;;
    esac
done
case $cmd in up|down|status) ;; *) echo "usage: $0 up|down|status [--dir DIR] [--port PORT]" >&2; exit 2 ;; esac
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65534 ] || die "--port must be 1024..65534, got $port"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/etc/slurm.conf
socket=$dir/run/munge.socket
export SLURM_CONF=$conf
[ ${#socket} -lt 100 ] || die "the folder $dir is too deep for munge's socket path (${#socket} > 100 characters)"

pidfile() { echo "$dir/run/$1.pid"; }

# The pid of daemon $1 if its pid file names a live process of that name, else nothing.
live_pid() {
    local f pid
    f=$(pidfile "$1")
    [ -s "$f" ] || return 0
    pid=$(tr -dc 0-9 < "$f")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
    return 0
}

log_tail() {  # the last lines of daemon $1's log, indented
    echo "  its log, $dir/log/$1.log, ends:" >&2
    tail -n 8 "$dir/log/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

who_listens() {
    command -v ss >/dev/null && ss -Hltnp "sport = :$1" 2>/dev/null \
        | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/ by \1, pid \2/p' | head -1
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v munged >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null; then
        return 0  # a Slurm from elsewhere (not Debian's packages): use it
    fi
    [ "$(id -u)" -eq 0 ] || die "the Debian packages ${missing[*]} are missing and installing them needs root (sudo make slurm-up)"
    command -v apt-get >/dev/null || die "the packages ${missing[*]} are missing and there is no apt-get: install Slurm and munge"
    say "installing ${missing[*]} (apt-get update, apt-get install)"
    mkdir -p "$dir/log"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"; } > "$dir/log/apt.log" 2>&1 \
        || { tail -n 5 "$dir/log/apt.log" >&2; die "apt-get install ${missing[*]} failed; log: $dir/log/apt.log"; }
}

write_config() {
    local host cpus mem user
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    user=$(id -un)
    mkdir -p "$dir"/{etc,state,spool,log,run,munge}
    chmod 700 "$dir/munge" "$dir/state"
    cat > "$conf.tmp" <<EOF
# Written by tools/slurm/local_cluster.sh (make slurm-up); rewritten on every start.
ClusterName=medsr-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
SlurmUser=$user
SlurmdUser=$user
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Completed jobs stay visible to squeue/scontrol (and make grid-status) for 10 minutes.
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf.tmp" "$conf"
}

# wait_for SECONDS COMMAND...: true once COMMAND succeeds
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

munge_works() { munge -S "$socket" -n | unmunge -S "$socket"; }
ctld_up() { scontrol ping | grep -q "is UP"; }
node_ready() { sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'; }

start_munged() {
    [ -s "$dir/munge/munge.key" ] || { mungekey -c -k "$dir/munge/munge.key" 2>/dev/null || \
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none; }
    chmod 600 "$dir/munge/munge.key"
    # --force: munged wants every folder above its socket open to all (x); a private home or
    # temporary folder is not, and this cluster's only user is the one who started it.
    munged --force --socket="$socket" --key-file="$dir/munge/munge.key" --log-file="$dir/log/munged.log" \
        --pid-file="$(pidfile munged)" --seed-file="$dir/munge/munged.seed" </dev/null >/dev/null 2>&1 \
        || { log_tail munged; die "munged failed to start"; }
    wait_for 10 munge_works || { log_tail munged; die "munged started but does not answer on $socket"; }
}

start_slurmctld() {
    slurmctld </dev/null >>"$dir/log/slurmctld.log" 2>&1 || { log_tail slurmctld; die "slurmctld failed to start"; }
    wait_for 30 ctld_up || { log_tail slurmctld; die "slurmctld did not come up on port $port"; }
}

start_slurmd() {
    slurmd </dev/null >>"$dir/log/slurmd.log" 2>&1 || { log_tail slurmd; die "slurmd failed to start"; }
    wait_for 30 node_ready || { log_tail slurmd; die "slurmd started but its node is not ready (sinfo: $(sinfo -h -N -o '%T %E' 2>&1 | head -1))"; }
}

up() {
    local running=() d
    for d in "${DAEMONS[@]}"; do [ -n "$(live_pid "$d")" ] && running+=("$d"); done
    if [ ${#running[@]} -eq ${#DAEMONS[@]} ]; then
        say "already up in $dir ($(sinfo -h -N -o '%N %T' 2>/dev/null | head -1))"
    else
        install_packages
        if [ ${#running[@]} -eq 0 ]; then
            write_config
            for d in slurmctld slurmd; do
                local p=$port
                [ $d = slurmd ] && p=$((port + 1))
                ! port_taken $p || die "port $p ($d) is taken$(who_listens $p): choose another with SLURM_PORT=N (uses N and N+1)"
            done
        fi
        [ -f "$conf" ] || write_config
        # A daemon that fails to start: stop those this call started, leave no half cluster.
        started=()
        trap 'for d in slurmd slurmctld munged; do [[ " ${started[*]} " == *" $d "* ]] && pid=$(live_pid $d) && [ -n "$pid" ] && stop_pid "slurm-$cmd: $d" $pid 15; done' EXIT
        for d in "${DAEMONS[@]}"; do
            if [ -z "$(live_pid "$d")" ]; then "start_$d"; started+=("$d"); fi
        done
        trap - EXIT
        say "up: one node, $(sinfo -h -N -o '%c CPUs, %T' | head -1), ports $(grep -E '^SlurmctldPort=' "$conf" | cut -d= -f2)/$(grep -E '^SlurmdPort=' "$conf" | cut -d= -f2), files in $dir"
    fi
    echo "export SLURM_CONF=$conf"
}

# Our job steps: slurmstepd processes started by our slurmd (they inherit its SLURM_CONF).
our_steps() {
    local p
    for p in $(pgrep -x slurmstepd || true); do
        tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$conf" && echo "$p"
    done
    return 0
}

down() {
    local stopped=() d pid jobs
    if [ -n "$(live_pid slurmctld)" ] && [ -n "$(live_pid munged)" ]; then
        jobs=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            say "cancelling the jobs still queued or running: $jobs(a cancelled run keeps its snapshot; resubmit to continue it)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 60 bash -c '[ -z "$(squeue -h -o %i 2>/dev/null)" ]' \
                || echo "slurm-$cmd: jobs still listed after 60 s: $(squeue -h -o '%i %T' | tr '\n' ' ')" >&2
        fi
    fi
    for d in slurmd slurmctld munged; do
        pid=$(live_pid "$d")
        if [ -n "$pid" ]; then stop_pid "slurm-$cmd: $d" "$pid" 15; stopped+=("$d (pid $pid)"); fi
        rm -f "$(pidfile "$d")"
    done
    for pid in $(our_steps); do stop_pid "slurm-$cmd: slurmstepd" "$pid" 15; stopped+=("slurmstepd (pid $pid)"); done
    if [ ${#stopped[@]} -eq 0 ]; then
        say "no daemon of ours is running ($dir)"
    else
        say "stopped $(IFS=,; echo "${stopped[*]}" | sed 's/,/, /g')"
    fi
}

status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        pid=$(live_pid "$d")
        if [ -n "$pid" ]; then echo "$d: running (pid $pid)"; else echo "$d: stopped"; rc=3; fi
    done
    [ $rc -eq 0 ] && echo "export SLURM_CONF=$conf"
    return $rc
}

"$cmd"
