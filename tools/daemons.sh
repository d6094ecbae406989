# Sourced by the scripts that start daemons of their own (tools/slurm/local_cluster.sh,
# tools/pacs/orthanc.sh): the Debian packages they lack, and one way to stop what they started.

missing_packages() {  # missing_packages PACKAGE...: those of them dpkg does not list as installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
    return 0
}

stop_pid() {  # stop_pid LABEL PID SECONDS: TERM, then KILL when it is still alive after SECONDS
    local i
    kill -TERM "$2" 2>/dev/null || return 0
    for i in $(seq 1 $(($3 * 2))); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.5; done
    echo "$1 (pid $2) ignored SIGTERM for $3 s: SIGKILL" >&2
    kill -KILL "$2" 2>/dev/null || true
}
