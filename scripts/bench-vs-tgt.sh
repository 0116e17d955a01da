#!/usr/bin/env bash
# Side-by-side benchmark: our target (stmfd + sbd file LU + iscsit) and Debian's tgt
# (scripts/peer-tgt.sh) serving the same kind of LU (1 GiB sparse file, 512-byte
# blocks), measured with the same clients in interleaved rounds (ours, tgt, ours, tgt, ...):
#   iscsi-perf   4 KiB random read QD 32, 1 MiB sequential read QD 8
#   rstmf-bench  4 KiB random read/write QD 32, 1 MiB sequential read/write QD 8
# Prints a table of medians and the ratio ours/tgt per row (≥ 1.00 means we are faster).
#
# Usage: scripts/bench-vs-tgt.sh [ROUNDS] [SECONDS]     (defaults 3 and 5)
# Needs: libiscsi-bin, tgt, python3; builds the release binaries if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
TOOLS=scripts
for c in iscsi-perf tgtd python3; do
    command -v "$c" >/dev/null || { echo "bench: $c missing (apt-get install -y libiscsi-bin tgt python3)" >&2; exit 1; }
done
cargo build --release -q -p stmf -p sbd -p iscsit -p iscsi-initiator
REL=target/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
low_port() { # tgtd keeps its control port in a C short: stay below 32768
    local p
    for p in $(seq 3261 3400); do ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }; done
    exit 1
}

dir=$(mktemp -d /tmp/rstmf-bench.XXXXXX)
cleanup() {
    [[ -n ${STMFD_PID:-} ]] && kill "$STMFD_PID" 2>/dev/null && wait "$STMFD_PID" 2>/dev/null || true
    "$TOOLS/peer-tgt.sh" stop "$dir/tgt" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

# --- our target ---------------------------------------------------------------------------
mkdir -p "$dir/st"
# An empty saved configuration, so stmfd does not start its embedded default.
echo '{"version":1,"settings":{"abort_timeout_ms":5000,"ctl_timeout_ms":10000},"providers":[],"core":{}}' >"$dir/st/stmf.json"
export STMF_SOCKET=$dir/stmfd.sock
"$REL/stmfd" --state-dir "$dir/st" --log warn >"$dir/stmfd.log" 2>&1 &
STMFD_PID=$!
for _ in $(seq 50); do [[ -S $STMF_SOCKET ]] && break; sleep 0.1; done
adm() { "$REL/stmfadm" "$@"; }
adm load-provider "$REL/libsbd.so" >/dev/null
adm load-provider "$REL/libiscsit.so" >/dev/null
truncate -s 1G "$dir/ours.img"
guid=$(adm --json create-lu "$dir/ours.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["guid"])')
adm add-view -n 1 "$guid" >/dev/null
P1=$(low_port)
adm provider-control iscsit "{\"op\":\"create-target\",\"name\":\"iqn.2026-11.org.rstmf:bench\",\"portals\":[\"127.0.0.1:$P1\"]}" >/dev/null
OURS=iscsi://127.0.0.1:$P1/iqn.2026-11.org.rstmf:bench/1

# --- tgt ----------------------------------------------------------------------------------
P2=$(( P1 + 1 ))
while ss -Hltn "sport = :$P2" | grep -q .; do P2=$(( P2 + 1 )); done
SIZE=1G "$TOOLS/peer-tgt.sh" start "$P2" "$dir/tgt" >/dev/null 2>"$dir/tgt.err" || { cat "$dir/tgt.err" >&2; exit 1; }
TGT=iscsi://127.0.0.1:$P2/iqn.2026-11.org.example:tgt/1

echo "# bench-vs-tgt $(date -u +%FT%TZ) rounds=$ROUNDS secs=$SECS nproc=$(nproc)"
echo "# ours: $OURS   tgt: $TGT"
res=$dir/results.tsv
: >"$res"

perf() { # name url args...
    local name=$1 url=$2; shift 2
    timeout $((SECS + 30)) iscsi-perf -i iqn.2010-11.libiscsi:iscsi-perf -t "$SECS" "$@" "$url" 2>&1 | tr '\r' '\n' \
        | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}
bench() { # url pattern bs qd -> "iops mibs"
    "$REL/rstmf-bench" --url "$1" --pattern "$2" --bs "$3" --qd "$4" --seconds "$SECS" --json --quiet 2>/dev/null \
        | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["iops"], j["mib_per_s"])'
}

# Write the whole LU once on both sides so reads hit written data.
for who in ours tgt; do
    url=$OURS; [[ $who == tgt ]] && url=$TGT
    "$REL/rstmf-bench" --url "$url" --pattern write --bs 1m --qd 8 --seconds 3 --quiet >/dev/null 2>&1 || true
done

for r in $(seq "$ROUNDS"); do
    for who in ours tgt; do
        url=$OURS; [[ $who == tgt ]] && url=$TGT
        v=$(perf rand4k "$url" -m 32 -b 8 -r); echo -e "iscsi-perf 4k randread QD32 (IOPS)\t$who\t${v:-0}" >>"$res"
        v=$(perf seq1m "$url" -m 8 -b 2048); echo -e "iscsi-perf 1M seqread QD8 (MiB/s)\t$who\t${v:-0}" >>"$res"
        read -r iops _ < <(bench "$url" randread 4k 32); echo -e "rstmf-bench 4k randread QD32 (IOPS)\t$who\t$iops" >>"$res"
        read -r iops _ < <(bench "$url" randwrite 4k 32); echo -e "rstmf-bench 4k randwrite QD32 (IOPS)\t$who\t$iops" >>"$res"
        read -r _ mibs < <(bench "$url" read 1m 8); echo -e "rstmf-bench 1M seqread QD8 (MiB/s)\t$who\t$mibs" >>"$res"
        read -r _ mibs < <(bench "$url" write 1m 8); echo -e "rstmf-bench 1M seqwrite QD8 (MiB/s)\t$who\t$mibs" >>"$res"
        echo "# round $r $who done" >&2
    done
done

python3 - "$res" <<'PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, who, v = line.rstrip("\n").split("\t")
    rows.setdefault(name, {"ours": [], "tgt": []})[who].append(float(v))
print("| row | rstmf (median) | tgt (median) | ratio rstmf/tgt |")
print("|---|---|---|---|")
for name, d in rows.items():
    o, t = statistics.median(d["ours"]), statistics.median(d["tgt"])
    # iscsi-perf reports IOPS; its 1M row is converted to MiB/s (1 IO = 1 MiB)
    ratio = o / t if t else float("nan")
    print(f"| {name} | {o:.0f} | {t:.0f} | {ratio:.2f} |")
PY
