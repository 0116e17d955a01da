#!/usr/bin/env bash
# scripts/peer-tgt.sh - run the reference userspace iSCSI target (tgtd, Debian package "tgt")
# on loopback, for side-by-side comparison with our own target.
#
# Usage:
#   peer-tgt.sh start PORT DIR   start tgtd on 127.0.0.1:PORT, state + backing files in DIR
#   peer-tgt.sh stop [DIR]       stop the tgtd whose PID is recorded in DIR
#   peer-tgt.sh status [DIR]     print state (exit 0 if running)
#   peer-tgt.sh show [DIR]       tgtadm --op show of the running instance
#
# DIR defaults to $PEER_TGT_DIR or /tmp/peer-tgt for stop/status/show.
#
# What it sets up:
#   target iqn.2026-11.org.example:tgt (tid 1), ACL: ALL initiators, no CHAP
#   LUN 0: tgt's built-in controller LUN (cannot be removed)
#   LUN 1: DIR/lun1.img, sparse file, SIZE (default 1G), all tgt defaults
#          (512-byte blocks, rdwr backing store, write cache on, no thin provisioning)
#   LUN 2: DIR/lun2.img, sparse file, SIZE, thin_provisioning=1 (UNMAP/WRITE SAME unmap,
#          GET LBA STATUS via hole punching), otherwise defaults
#
# Each instance uses its own management socket (tgtd/tgtadm --control-port PORT, i.e.
# /run/tgtd/socket.PORT), so it does not clash with a system tgtd (socket.0) or other
# instances. tgtd runs with -f (foreground) in the background of this script; its log is
# DIR/tgtd.log and its PID is DIR/tgtd.pid. "stop" only ever kills that PID (after checking
# that it still is a tgtd with our control port).
#
# Environment: SIZE (default 1G), IQN (default iqn.2026-11.org.example:tgt),
#              TGTD_ARGS (extra tgtd args), PEER_TGT_DIR (default DIR for stop/status).
#
# Starting is idempotent: if the recorded PID is alive, it only (re)applies missing config.
set -euo pipefail

IQN=${IQN:-iqn.2026-11.org.example:tgt}
SIZE=${SIZE:-1G}
TID=1
ADDR=127.0.0.1

die() { echo "peer-tgt: $*" >&2; exit 1; }
log() { echo "peer-tgt: $*" >&2; }

# Is PID (arg 1) a live tgtd started with control port (arg 2)?
is_our_tgtd() {
    local pid=$1 cport=$2 cmd
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *tgtd* && $cmd == *"-C $cport "* ]]
}

read_state() {   # sets PID PORT from DIR
    PID=""; PORT=""
    [[ -f $DIR/tgtd.pid ]] && PID=$(<"$DIR/tgtd.pid")
    [[ -f $DIR/port ]] && PORT=$(<"$DIR/port")
    return 0
}

tgtadm_() { tgtadm --control-port "$PORT" --lld iscsi "$@"; }

port_in_use() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . 
}

configure() {
    # "--op show" without --tid lists targets/LUNs/ACLs (with --tid it prints iSCSI params);
    # this instance only ever has our one target.
    local show
    show=$(tgtadm_ --mode target --op show)
    if ! grep -q "^Target $TID: " <<<"$show"; then
        tgtadm_ --mode target --op new --tid "$TID" --targetname "$IQN"
        show=$(tgtadm_ --mode target --op show)
    fi
    grep -q "^Target $TID: $IQN\$" <<<"$show" || die "tid $TID exists but is not $IQN"
    # LUN 1: all defaults
    if ! grep -qE '^\s+LUN: 1$' <<<"$show"; then
        tgtadm_ --mode logicalunit --op new --tid "$TID" --lun 1 \
            --backing-store "$DIR/lun1.img"
    fi
    # LUN 2: thin provisioned
    if ! grep -qE '^\s+LUN: 2$' <<<"$show"; then
        tgtadm_ --mode logicalunit --op new --tid "$TID" --lun 2 \
            --backing-store "$DIR/lun2.img"
        tgtadm_ --mode logicalunit --op update --tid "$TID" --lun 2 \
            --params thin_provisioning=1
    fi
    # ACL: all initiators
    if ! awk '/ACL information:/{f=1;next} f' <<<"$show" | grep -qE '^\s+ALL$'; then
        tgtadm_ --mode target --op bind --tid "$TID" --initiator-address ALL
    fi
}

wait_ready() {   # wait until tgtd accepts mgmt commands and listens on the portal
    local i
    for i in $(seq 1 100); do
        is_our_tgtd "$PID" "$PORT" || { tail -n 20 "$DIR/tgtd.log" >&2 || true; die "tgtd exited during startup (see $DIR/tgtd.log)"; }
        if tgtadm_ --mode target --op show >/dev/null 2>&1 && port_in_use "$PORT"; then
            return 0
        fi
        sleep 0.1
    done
    die "tgtd did not become ready in 10s (see $DIR/tgtd.log)"
}

cmd_start() {
    [[ $# -eq 2 ]] || die "usage: $0 start PORT DIR"
    PORT=$1; DIR=$2
    [[ $PORT =~ ^[0-9]+$ && $PORT -gt 0 && $PORT -lt 65536 ]] || die "bad port: $PORT"
    command -v tgtd >/dev/null || die "tgtd not installed (apt-get install -y tgt)"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local want_port=$PORT
    read_state
    if [[ -n $PID ]] && is_our_tgtd "$PID" "${PORT:-$want_port}"; then
        [[ $PORT == "$want_port" ]] || die "already running in $DIR on port $PORT (pid $PID); stop it first"
        log "already running (pid $PID, port $PORT); checking configuration"
        configure
        echo "$PID"
        return 0
    fi
    rm -f "$DIR/tgtd.pid" "$DIR/port"
    PORT=$want_port
    port_in_use "$PORT" && die "TCP port $PORT already in use"
    [[ -e /run/tgtd/socket.$PORT ]] && log "removing stale /run/tgtd/socket.$PORT*" \
        && rm -f "/run/tgtd/socket.$PORT" "/run/tgtd/socket.$PORT.lock"
    mkdir -p /run/tgtd

    for l in 1 2; do
        [[ -f $DIR/lun$l.img ]] || truncate -s "$SIZE" "$DIR/lun$l.img"
    done

    # setsid: own session so that the caller's Ctrl-C / job control does not hit it.
    # Arguments kept in this exact order: is_our_tgtd() matches "-C PORT ".
    # shellcheck disable=SC2086
    setsid tgtd -f -C "$PORT" --iscsi "portal=$ADDR:$PORT" ${TGTD_ARGS:-} \
        </dev/null >>"$DIR/tgtd.log" 2>&1 &
    PID=$!
    echo "$PID" >"$DIR/tgtd.pid"
    echo "$PORT" >"$DIR/port"
    wait_ready
    configure
    log "running: pid $PID, portal $ADDR:$PORT, target $IQN, LUNs 1 (default) and 2 (thin), dir $DIR"
    log "URL: iscsi://$ADDR:$PORT/$IQN/1"
    echo "$PID"
}

cmd_stop() {
    DIR=${1:-${PEER_TGT_DIR:-/tmp/peer-tgt}}
    [[ -d $DIR ]] || { log "no state dir $DIR; nothing to stop"; return 0; }
    read_state
    if [[ -z $PID ]]; then log "no pid recorded in $DIR; nothing to stop"; return 0; fi
    if ! is_our_tgtd "$PID" "$PORT"; then
        log "pid $PID is not running (or not our tgtd); cleaning state"
        rm -f "$DIR/tgtd.pid"
        return 0
    fi
    # tgtd ignores SIGTERM while it has targets; the documented shutdown (as in the Debian
    # unit file) is: offline, delete targets, "delete --mode system". Signals only as fallback.
    tgtadm --control-port "$PORT" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
    tgtadm --control-port "$PORT" --lld iscsi --mode target --op delete --force --tid "$TID" >/dev/null 2>&1 || true
    tgtadm --control-port "$PORT" --op delete --mode system >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 30); do
        is_our_tgtd "$PID" "$PORT" || break
        sleep 0.1
    done
    if is_our_tgtd "$PID" "$PORT"; then
        kill -TERM "$PID" 2>/dev/null || true
        for i in $(seq 1 20); do
            is_our_tgtd "$PID" "$PORT" || break
            sleep 0.1
        done
    fi
    if is_our_tgtd "$PID" "$PORT"; then
        log "pid $PID still alive after 5s; SIGKILL"
        kill -KILL "$PID" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$DIR/tgtd.pid" "/run/tgtd/socket.$PORT" "/run/tgtd/socket.$PORT.lock"
    log "stopped pid $PID"
}

cmd_status() {
    DIR=${1:-${PEER_TGT_DIR:-/tmp/peer-tgt}}
    read_state
    if [[ -n $PID ]] && is_our_tgtd "$PID" "$PORT"; then
        echo "running pid $PID port $PORT dir $DIR url iscsi://$ADDR:$PORT/$IQN/1"
        return 0
    fi
    echo "not running (dir $DIR)"
    return 1
}

cmd_show() {
    DIR=${1:-${PEER_TGT_DIR:-/tmp/peer-tgt}}
    read_state
    [[ -n $PORT ]] || die "no port recorded in $DIR"
    tgtadm_ --mode target --op show
}

case ${1:-} in
    start)  shift; cmd_start "$@" ;;
    stop)   shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    show)   shift; cmd_show "$@" ;;
    *) echo "usage: $0 start PORT DIR | stop [DIR] | status [DIR] | show [DIR]" >&2; exit 2 ;;
esac
