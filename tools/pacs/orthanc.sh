#!/bin/bash
# A DICOM server of our own on this machine: Orthanc with its DICOMweb plugin, run as a user
# process from one folder (`make pacs-up`, `make pacs-down`; docs/pacs.md). The folder (default
# .pacs/) holds everything: the configuration, the credentials, the database and storage, the log
# and the pid file. Nothing of the system's own Orthanc (/etc/orthanc, the orthanc service) is read
# or changed.
#
#   tools/pacs/orthanc.sh up     [--dir DIR] [--port PORT]   install if missing, start, print the exports
#   tools/pacs/orthanc.sh down   [--dir DIR]                 stop the server `up` started
#   tools/pacs/orthanc.sh status [--dir DIR]
#
# The server answers HTTP on PORT for clients on this machine only (RemoteAccessAllowed false:
# Orthanc has no option to bind one address, so it listens on every interface and refuses each
# remote client), asks every client for the user and password (AuthenticationEnabled), which are
# generated once into DIR/credentials (mode 600, one line user:password), and runs no DICOM
# (DIMSE) server (DicomServerEnabled false): DICOMweb over HTTP is the only way in.
# Both commands are idempotent; `down` stops only the process whose pid file is in DIR and that is
# Orthanc running DIR's configuration.
set -euo pipefail

PACKAGES=(orthanc orthanc-dicomweb)
USER_NAME=medsr

die() { echo "pacs-$cmd: $*" >&2; exit 1; }
say() { echo "pacs-$cmd: $*"; }
usage() { echo "usage: $0 up|down|status [--dir DIR] [--port PORT]" >&2; exit 2; }

cmd=${1:-}
# shellcheck source=../daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/../daemons.sh"
[ $# -gt 0 ] && shift
dir=.pacs
port=18042
while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
        --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
        *) usage ;;
    esac
done
case $cmd in up|down|status) ;; *) usage ;; esac
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65535 ] \
    || die "--port must be 1024..65535, got '$port'"
[ -n "$dir" ] || die "--dir is empty"
# The folder goes into Orthanc's JSON configuration as it is: a name JSON would need escaped is refused.
[[ $dir != *[\"\\]* && $dir != *[[:cntrl:]]* ]] || die "the folder name '$dir' holds a quote, backslash or control character: choose another PACS_DIR"
if [ "$cmd" = up ]; then
    [ -e "$dir" ] || mkdir -p -m 700 -- "$dir" || die "cannot create the folder $dir"
fi
if [ -d "$dir" ]; then dir=$(cd -- "$dir" && pwd); fi
conf=$dir/orthanc.json
creds=$dir/credentials
pidfile=$dir/orthanc.pid
log=$dir/orthanc.log

# The pid of the Orthanc that runs this folder's configuration, if its pid file names one; else nothing.
live_pid() {
    local pid
    [ -s "$pidfile" ] || return 0
    pid=$(tr -dc 0-9 < "$pidfile")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = Orthanc ] \
        && tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$conf" && echo "$pid"
    return 0
}

# The HTTP port in this folder's configuration (that of the running server).
conf_port() { sed -nE 's/^ *"HttpPort" *: *([0-9]+).*/\1/p' "$conf" | head -1; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

who_listens() {
    command -v ss >/dev/null && ss -Hltnp "sport = :$1" 2>/dev/null \
        | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/ by \1, pid \2/p' | head -1
}

find_orthanc() {
    command -v Orthanc 2>/dev/null || { [ -x /usr/sbin/Orthanc ] && echo /usr/sbin/Orthanc; } || true
}

# The DICOMweb plugin's library, where the Debian package put it.
find_plugin() {
    local f
    for f in $(dpkg -L orthanc-dicomweb 2>/dev/null | grep -E '/libOrthancDicomWeb\.so$' || true) \
        /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/orthanc/libOrthancDicomWeb.so; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 0
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    [ ${#missing[@]} -eq 0 ] && return 0
    # An Orthanc and plugin from elsewhere (not Debian's packages): use them.
    [ -n "$(find_orthanc)" ] && [ -n "$(find_plugin)" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "the Debian packages ${missing[*]} are missing and installing them needs root (sudo make pacs-up)"
    command -v apt-get >/dev/null || die "the packages ${missing[*]} are missing and there is no apt-get: install Orthanc and its DICOMweb plugin"
    say "installing ${missing[*]} (apt-get update, apt-get install; Debian may also start its own orthanc service, on port 8042, which pacs-up does not use)"
    # Another apt-get (a parallel make setup) holds the dpkg lock for a while: wait for it.
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
        --no-install-recommends "${missing[@]}"; } > "$dir/apt.log" 2>&1 \
        || { tail -n 5 "$dir/apt.log" >&2; die "apt-get install ${missing[*]} failed; log: $dir/apt.log"; }
}

# The credentials, generated once (a restart keeps them, so an exported MEDSR_PACS_CREDENTIALS stays valid).
write_credentials() {
    local password
    if [ -s "$creds" ] && grep -qE "^$USER_NAME:[A-Za-z0-9]{20,}$" "$creds"; then
        chmod 600 "$creds"
        return 0
    fi
    password=$(tr -dc A-Za-z0-9 < /dev/urandom | head -c 32 || true)
    [ ${#password} -eq 32 ] || die "cannot read 32 random characters from /dev/urandom"
    (umask 077 && printf '%s:%s\n' "$USER_NAME" "$password" > "$creds.tmp") && mv "$creds.tmp" "$creds"
}

# The configuration, rewritten on every start (mode 600: it holds the password too).
write_config() {
    local plugin password
    plugin=$(find_plugin)
    [ -n "$plugin" ] || die "Orthanc's DICOMweb plugin (libOrthancDicomWeb.so, Debian package orthanc-dicomweb) is not installed"
    password=$(cut -d: -f2- < "$creds")
    mkdir -p "$dir/db"
    (umask 077 && cat > "$conf.tmp") <<EOF
{
  "//": "Written by tools/pacs/orthanc.sh (make pacs-up); rewritten on every start.",
  "Name": "medsr-caffe PACS",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "HttpServerEnabled": true,
  "HttpPort": $port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "$USER_NAME": "$password" },
  "DicomServerEnabled": false,
  "DicomPort": 0,
  "WebDavEnabled": false,
  "ExecuteLuaEnabled": false,
  "SaveJobs": false,
  "ConcurrentJobs": 1,
  "Plugins": [ "$plugin" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": false }
}
EOF
    mv "$conf.tmp" "$conf"
}

# The HTTP status code the server answers to GET $1 (with the credentials when $2 is "auth"), or nothing.
http_status() {
    local header="" line
    if [ "${2:-}" = auth ]; then
        header="Authorization: Basic $(tr -d '\n' < "$creds" | base64 -w0)"$'\r\n'
    fi
    {
        exec 3<>"/dev/tcp/127.0.0.1/$port" || return 0
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n' "$1" "$header" >&3
        IFS= read -r -t 10 line <&3 || true
        exec 3>&-
        line=${line#HTTP/* }
        echo "${line%% *}"
    } 2>/dev/null
}

log_tail() {
    echo "  its log, $log, ends:" >&2
    tail -n 8 "$log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

exports() {
    echo "export MEDSR_PACS_URL=http://127.0.0.1:$(conf_port)"
    echo "export MEDSR_PACS_CREDENTIALS=$creds"
}

start() {
    local orthanc pid status i logsize
    orthanc=$(find_orthanc)
    [ -n "$orthanc" ] || die "the Orthanc program is not installed (Debian package orthanc)"
    ! port_taken "$port" || die "port $port is taken$(who_listens "$port"): choose another with PACS_PORT=N"
    write_credentials
    write_config
    logsize=$(stat -c %s "$log" 2>/dev/null || echo 0)
    # setsid: the server outlives this script and a Ctrl-C in the terminal that started it.
    setsid "$orthanc" --no-jobs "$conf" </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" > "$pidfile"
    trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$pidfile"' EXIT
    # Up when an anonymous request is refused (401) and ours reaches DICOMweb (200).
    for i in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            # Taken on another address than 127.0.0.1 (which the check above tried): Orthanc says so.
            tail -c +$((logsize + 1)) "$log" | grep -q "already in use" \
                && die "port $port is taken$(who_listens "$port"): choose another with PACS_PORT=N"
            log_tail; die "Orthanc did not start"
        fi
        if [ "$(http_status /system)" = 401 ]; then
            status=$(http_status /dicom-web/studies auth)
            [ "$status" = 200 ] && break
            [ -n "$status" ] && { log_tail; die "Orthanc is up but GET /dicom-web/studies answered HTTP $status (the DICOMweb plugin: $(find_plugin))"; }
        fi
        [ "$i" -lt 120 ] || { log_tail; die "Orthanc did not answer on port $port within 60 s"; }
        sleep 0.5
    done
    trap - EXIT
    say "up: Orthanc $("$orthanc" --version 2>/dev/null | head -1 | awk '{print $NF}') with DICOMweb on 127.0.0.1:$port (pid $pid), files in $dir"
}

up() {
    if [ -n "$(live_pid)" ]; then
        say "already up in $dir (pid $(live_pid), port $(conf_port))"
    else
        install_packages
        start
    fi
    exports
}

down() {
    local pid
    pid=$(live_pid)
    if [ -z "$pid" ]; then
        say "no Orthanc of ours is running ($dir)"
    else
        stop_pid "pacs-$cmd: Orthanc" "$pid" 30
        say "stopped Orthanc (pid $pid)"
    fi
    rm -f "$pidfile"
}

status() {
    local pid
    pid=$(live_pid)
    if [ -z "$pid" ]; then echo "orthanc: stopped ($dir)"; return 3; fi
    echo "orthanc: running (pid $pid, port $(conf_port))"
    exports
}

"$cmd"
