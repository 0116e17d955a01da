#!/usr/bin/env bash
# Runs the whole rstmf test suite: formatting, clippy, build (providers are cdylibs the tests
# load from target/debug), plugins-sdk under Miri (scripts/miri.sh; installs nightly Miri if
# needed), unit, integration and interop tests.
#
# Interop tests drive real clients and peers from Debian packages; when one is missing this
# script installs it (apt-get, needs root). If it cannot, the suite fails with the exact
# install line — a test never passes by skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need (command they provide).
PACKAGES=(tgt:tgtd libiscsi-bin:iscsi-inq)

missing=()
for entry in "${PACKAGES[@]}"; do
    pkg=${entry%%:*} cmd=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "test-all: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}"
    else
        echo "test-all: missing packages; run: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# qemu-img 7.2 with qemu's libiscsi driver (Debian 12's packages, downloaded and extracted
# into the target dir, not installed) for the qemu interop test; the test fetches it too,
# this only makes a failure show early.
echo "== qemu-img 7.2 for the interop tests"
scripts/fetch-qemu72.sh "${CARGO_TARGET_DIR:-target}/debug/qemu-7.2"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets
echo "== miri (plugins-sdk)"
# Miri comes from rustup, not from the machine's packages: when it cannot be installed the
# suite says so loudly (here and in its closing line) and goes on; any other Miri failure
# fails the suite. MIRI_REQUIRED=1 makes a missing Miri fail it too.
miri_note=""
miri_rc=0
scripts/miri.sh || miri_rc=$?
if ((miri_rc == 3)) && [[ ${MIRI_REQUIRED:-0} != 1 ]]; then
    miri_note=" (MIRI NOT RUN: it could not be installed)"
elif ((miri_rc != 0)); then
    exit "$miri_rc"
fi
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed%s\n", p, f, note }' note="$miri_note" "$log"
exit "$rc"
