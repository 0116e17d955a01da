#!/usr/bin/env bash
# Bounded fuzz run of the protocol parsers (PDU stream, login keys) with cargo-fuzz.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
#
# cargo-fuzz needs nightly-only -Z flags; on stable Rust we set RUSTC_BOOTSTRAP=1 for this
# build only (see docs/fuzzing.md). Installs cargo-fuzz if it is missing. A crash fails the
# run and leaves the input in idm/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../idm/fuzz"
secs=${1:-30}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in pdu_stream login_keys; do
    echo "== fuzz $t for ${secs}s"
    # New inputs go to a scratch corpus; the checked-in seeds stay as they are.
    mkdir -p "$work/$t" "corpus/$t"
    cargo fuzz run "$t" "$work/$t" "corpus/$t" -- -max_total_time="$secs" -max_len=70000 2>&1 | tail -n 4
    test "${PIPESTATUS[0]}" -eq 0
done
echo "fuzz: no crash"
