#!/usr/bin/env bash
# Runs plugins-sdk's tests under Miri, which checks the SDK's unsafe code (task handle
# reference counting against a fake core, raw ABI structs, data buffers) for undefined
# behaviour: use-after-free, double free, leaks, data races, invalid references.
#
# Needs a nightly toolchain with the miri and rust-src components; installs them (rustup)
# when they are missing, as on a fresh CI machine; exits 3 with "miri: NOT RUN" when it
# cannot. Takes about two minutes once Miri's
# sysroot is built (`cargo miri setup`, the first time only).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=${MIRI_TOOLCHAIN:-nightly}

# The components go into the nightly already installed (the base image has one) rather
# than updating it; a toolchain is installed only when there is none.
if ! cargo "+$TOOLCHAIN" miri --version >/dev/null 2>&1; then
    echo "miri: adding miri and rust-src to the $TOOLCHAIN toolchain"
    rustup component add --toolchain "$TOOLCHAIN" miri rust-src ||
        rustup toolchain install "$TOOLCHAIN" --profile minimal --component miri,rust-src || {
        echo "miri: NOT RUN: cannot install Miri for $TOOLCHAIN (rustup failed, see above);" \
            "plugins-sdk's unsafe code was not checked under Miri" >&2
        exit 3
    }
fi
cargo "+$TOOLCHAIN" miri setup

# Isolation off: a GUID test reads the wall clock. Miri's own target directory
# (target/miri) keeps its artifacts apart from the normal build.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
echo "== cargo miri test -p plugins-sdk"
cargo "+$TOOLCHAIN" miri test -p plugins-sdk
