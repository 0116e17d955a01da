#!/usr/bin/env bash
# tests/conformance/run.sh - libiscsi's conformance suite against rstmf, checked against
# tests/conformance/expected.tsv.
#
# Starts stmfd (sbd + iscsit, release build) in a scratch directory with one file-backed
# LU (a 1 GiB sparse file, LUN 0) behind a target with two portals, runs every iscsi-test-cu
# test of family ALL with destructive tests (-d) and SANITIZE (-S) allowed and the second
# portal as the multipath URL, through tests/conformance/compliance.sh (one process and one
# timeout per suite; Sanitize runs without the multipath URL and ReadOnly against a second,
# write-protected file LU: see below), and compares each test's outcome with the
# expectations:
#   FAIL, TIMEOUT, NOTRUN          -> the run fails
#   expected PASS, now SKIP        -> the run fails (a regression)
#   expected SKIP, now PASS        -> reported ("update expected.tsv"), the run passes
#   a test expected.tsv lacks      -> reported; fails only as FAIL/TIMEOUT/NOTRUN do
#
# Builds nothing: run `cargo build --release --workspace` first (CI does).
#
# Environment:
#   RSTMF_BIN=target/release   where stmfd, stmfadm, libsbd.so and libiscsit.so are
#   COMPLIANCE_SH=...          the runner (default: tests/conformance/compliance.sh)
#   OUT=target/conformance     results (compliance.log/.tsv, per-suite.tsv, stmfd.log, ...)
#   SUITE_TIMEOUT=240          seconds per suite (the slowest, Sanitize, takes ~2 minutes)
#   SUITES="Read10 ..."        run only these suites (expectations of others are not checked)
#   KEEP=1                     keep the scratch directory
#
# Exit status: 0 conforms to expected.tsv, 1 it does not (or the run could not be made).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${RSTMF_BIN:-$root/target/release}
compliance=${COMPLIANCE_SH:-$here/compliance.sh}
expected=$here/expected.tsv
out=${OUT:-$root/target/conformance}
export SUITE_TIMEOUT=${SUITE_TIMEOUT:-240}

say() { echo "conformance: $*"; }
die() { echo "conformance: $*" >&2; exit 1; }

[[ -x $compliance ]] || die "$compliance not found or not executable"
command -v iscsi-test-cu >/dev/null ||
    die "iscsi-test-cu not found: apt-get install -y libiscsi-bin"
for f in stmfd stmfadm libsbd.so libiscsit.so; do
    [[ -e $bin/$f ]] || die "$bin/$f is missing: run cargo build --release --workspace first"
done
[[ -f $expected ]] || die "$expected is missing"

started=$(date +%s)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/rstmf-conformance.XXXXXX")
rm -rf "$out"
mkdir -p "$out" "$scratch/prov" "$scratch/state"
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then say "scratch directory kept: $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

sock=$scratch/stmfd.sock
adm() { "$bin/stmfadm" --socket "$sock" "$@"; }

# An empty providers directory: no embedded default, the providers are loaded below.
"$bin/stmfd" --state-dir "$scratch/state" --socket "$sock" --providers-dir "$scratch/prov" \
    --log warn </dev/null >"$out/stmfd.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    adm list-state >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || die "stmfd exited at start: $(tail -5 "$out/stmfd.log")"
    sleep 0.05
done
adm list-state >/dev/null || die "stmfd does not answer on $sock"
adm load-provider "$bin/libsbd.so" >/dev/null
adm load-provider "$bin/libiscsit.so" >/dev/null

# The LU: a 1 GiB sparse file. SANITIZE OVERWRITE is limited to 100 MiB/s so that a
# sanitize of it lasts ~10 s, as on a real disk: Sanitize.Reset checks what the LU does
# *while* one runs (it expects one still running 3 s after it started, and again after
# task management resets and a reconnect), which a page-cache-speed overwrite of 1 GiB
# would not leave it to see. See docs/conformance.md.
guid=$(adm create-lu -s 1g -p sanitize-rate=100m "$scratch/lu.img" |
    sed -n 's/^Logical unit created: \([0-9A-Fa-f]\{32\}\)$/\1/p')
[[ -n $guid ]] || die "create-lu gave no GUID"
adm add-view -n 0 "$guid" >/dev/null

# One target, two portals (the second path for the MultipathIO suite); ports chosen by
# the system. No keepalive NOP-Ins: iscsi-test-cu is single-threaded and sleeps up to 60 s
# between commands (Sanitize.Reset polls a sanitize once a minute) without reading its
# socket, so an unanswered NOP-In would drop its session every minute and the reconnect's
# POWER ON unit attention would keep its poll from ever seeing GOOD.
target=iqn.2026-11.org.rstmf:conformance
reply=$(adm provider-control iscsit \
    "{\"op\":\"create-target\",\"name\":\"$target\",\"portals\":[\"127.0.0.1:0\",\"127.0.0.1:0\"],\"nop_interval_ms\":0}")
mapfile -t portals < <(grep -o '127\.0\.0\.1:[0-9]\+' <<<"$reply")
((${#portals[@]} == 2)) || die "create-target did not report two portals: $reply"
url=iscsi://${portals[0]}/$target/0
mpurl=iscsi://${portals[1]}/$target/0
say "LU $guid on $url (multipath $mpurl), iscsi-test-cu $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null || echo '?')"

# Three passes of compliance.sh: every suite but Sanitize and ReadOnly with the multipath
# URL, Sanitize without it, ReadOnly on a write-protected LU. With a second URL, libiscsi 1.19's Sanitize.Reservations takes its
# RESERVE(6) on the multipath session, which outlives the test (only sessions it cloned are
# logged out), so the next test, Sanitize.Reset, meets that reservation from the first
# path: RESERVATION CONFLICT, as SPC requires. Without it the test clones a session and
# logs it out, which releases the reservation. (Only MultipathIO needs the second path.)
listing=$(iscsi-test-cu --list)
suites=$(awk -F. 'NF == 3 && $1 == "ALL" && !seen[$2]++ { print $2 }' <<<"$listing")
if [[ -n ${SUITES:-} ]]; then
    suites=$(awk -v want=" $SUITES " 'index(want, " " $0 " ")' <<<"$suites")
fi
[[ -n $suites ]] || die "no suites to run (SUITES=${SUITES:-})"
mp_suites=$(grep -vx 'Sanitize\|ReadOnly' <<<"$suites" | tr '\n' ' ' || true)
passes=()
if [[ -n ${mp_suites// /} ]]; then
    mkdir -p "$out/multipath"
    SUITES=$mp_suites FAMILY=ALL ALLOW_SANITIZE=1 DATALOSS=1 \
        "$compliance" "$url" "$out/multipath" "$mpurl" | sed 's/^/conformance: multipath pass: /'
    passes+=("$out/multipath")
fi
if grep -qx Sanitize <<<"$suites"; then
    mkdir -p "$out/sanitize"
    SUITES=Sanitize FAMILY=ALL ALLOW_SANITIZE=1 DATALOSS=1 \
        "$compliance" "$url" "$out/sanitize" | sed 's/^/conformance: sanitize pass: /'
    passes+=("$out/sanitize")
fi
# ReadOnly checks a write-protected LU (it skips on a writable one): a second file LU,
# 64 MiB sparse, created with wp=true and shown at LUN 1 for this pass only.
if grep -qx ReadOnly <<<"$suites"; then
    ro=$(adm create-lu -s 64m -p wp=true "$scratch/ro.img" |
        sed -n 's/^Logical unit created: \([0-9A-Fa-f]\{32\}\)$/\1/p')
    [[ -n $ro ]] || die "create-lu (write-protected) gave no GUID"
    adm add-view -n 1 "$ro" >/dev/null
    mkdir -p "$out/readonly"
    SUITES=ReadOnly FAMILY=ALL ALLOW_SANITIZE=1 DATALOSS=1 \
        "$compliance" "iscsi://${portals[0]}/$target/1" "$out/readonly" |
        sed 's/^/conformance: read-only pass: /'
    passes+=("$out/readonly")
fi

# One result set, in iscsi-test-cu's order.
for p in "${passes[@]}"; do cat "$p/compliance.log"; done >"$out/compliance.log"
awk -F'\t' 'FNR == NR { order[++n] = $0; next } { res[$1] = $0 }
    END { for (i = 1; i <= n; i++) if (order[i] in res) print res[order[i]] }' \
    <(awk -F. 'NF == 3 && $1 == "ALL" { print $2 "." $3 }' <<<"$listing") \
    "${passes[@]/%//compliance.tsv}" >"$out/compliance.tsv"
{
    head -1 "${passes[0]}/per-suite.tsv"
    for p in "${passes[@]}"; do tail -n +2 "$p/per-suite.tsv"; done
} >"$out/per-suite.tsv"
awk -F'\t' '{ c[$2]++ } END {
    printf "passed %d failed %d skipped %d", c["PASS"], c["FAIL"], c["SKIP"]
    if (c["NOTRUN"]) printf " notrun %d", c["NOTRUN"]
    if (c["TIMEOUT"]) printf " timeout %d", c["TIMEOUT"]
    printf "\n" }' "$out/compliance.tsv" >"$out/summary.txt"

kill -0 "$pid" 2>/dev/null || die "stmfd died during the run (see $out/stmfd.log)"

# Compare with the expectations.
rc=0
awk -F'\t' -v filter="${SUITES:-}" '
    function suite_of(t) { return substr(t, 1, index(t, ".") - 1) }
    function wanted(t) { return filter == "" || index(" " filter " ", " " suite_of(t) " ") }
    FNR == NR { if ($0 !~ /^#/ && NF >= 2) want[$1] = $2; next }
    {
        seen[$1] = 1
        if ($2 == "FAIL" || $2 == "TIMEOUT" || $2 == "NOTRUN") {
            printf "conformance: %s %s%s\n", $1, $2, ($1 in want) ? "" : " (not in expected.tsv)"; bad++
        } else if (!($1 in want)) {
            printf "conformance: %s %s, not in expected.tsv: add it\n", $1, $2; upd++
        } else if (want[$1] == "PASS" && $2 == "SKIP") {
            printf "conformance: %s SKIP, expected PASS: regression\n", $1; bad++
        } else if (want[$1] == "SKIP" && $2 == "PASS") {
            printf "conformance: %s PASS, expected SKIP: update expected.tsv\n", $1; upd++
        }
    }
    END {
        for (t in want) if (!(t in seen) && wanted(t)) { printf "conformance: %s in expected.tsv was not listed by iscsi-test-cu\n", t; upd++ }
        exit bad > 0
    }' "$expected" "$out/compliance.tsv" || rc=1

took=$(($(date +%s) - started))
summary=$(cat "$out/summary.txt")
if ((rc == 0)); then
    say "OK: $summary (${took}s; results in $out)"
else
    say "FAILED: $summary (${took}s; compliance.log and stmfd.log in $out)"
fi
# The closing line in the usual "N passed, N failed, N skipped" form.
awk -F'\t' '{ c[$2]++ } END { printf "conformance: %d passed, %d failed, %d skipped\n", c["PASS"], c["FAIL"] + c["TIMEOUT"] + c["NOTRUN"], c["SKIP"] }' "$out/compliance.tsv"
exit "$rc"
