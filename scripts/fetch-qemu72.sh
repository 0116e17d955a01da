#!/usr/bin/env bash
# Puts Debian 12's qemu-img 7.2 with its libiscsi block driver into DIR, without installing
# anything: `apt-get download qemu-utils qemu-block-extra` (the bookworm 7.2 version) and
# `dpkg-deb -x` both into DIR. The base image's qemu-utils (a 10.x backport) has no iSCSI
# driver and Debian 12's qemu-block-extra cannot be installed beside it (its qemu-utils
# dependency conflicts with the backport). Run it as: QEMU_MODULE_DIR=DIR/usr/lib/<triplet>/qemu
# DIR/usr/bin/qemu-img ...
#
# Usage: scripts/fetch-qemu72.sh DIR. Exits non-zero with the reason when it cannot.
set -euo pipefail
dir=${1:?usage: fetch-qemu72.sh DIR}
have() { [[ -x $dir/usr/bin/qemu-img ]] && [[ -n $(find "$dir/usr/lib" -name block-iscsi.so 2>/dev/null) ]]; }
have && exit 0
version() {
    apt-cache madison qemu-block-extra 2>/dev/null |
        awk -F'|' '{ gsub(/ /, "", $2); if ($2 ~ /^1:7\.2/) { print $2; exit } }'
}
ver=$(version)
if [[ -z $ver && $(id -u) == 0 ]]; then
    apt-get update -qq >&2 || true
    ver=$(version)
fi
if [[ -z $ver ]]; then
    echo "fetch-qemu72: no qemu-block-extra 7.2 in the apt lists (apt-cache madison qemu-block-extra); run apt-get update" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q "qemu-utils=$ver" "qemu-block-extra=$ver" >&2); then
    echo "fetch-qemu72: apt-get download qemu-utils=$ver qemu-block-extra=$ver failed" >&2
    exit 1
fi
mkdir -p "$dir"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$dir"
done
if ! have; then
    echo "fetch-qemu72: $dir has no usr/bin/qemu-img or block-iscsi.so after extracting" >&2
    exit 1
fi
"$dir/usr/bin/qemu-img" --version | head -1 >&2
