#!/usr/bin/env bash
# Install the Debian 12 packages Agora needs to build, test and run.
# Idempotent: does nothing when every package (and the viewer) is installed.
# Usage: tools/install-deps.sh [--test]   (--test adds the test peers)
set -euo pipefail

BUILD=(gcc clang meson ninja-build pkg-config
       libsqlite3-dev libpq-dev libmicrohttpd-dev libgnutls28-dev
       libsodium-dev libjansson-dev libturbojpeg0-dev libcharls-dev
       libopenjp2-7-dev libspng-dev zlib1g-dev libseccomp-dev)
TEST=(libcmocka-dev libclang-rt-14-dev llvm dcmtk libgdcm-tools
      python3-pytest python3-pydicom python3-requests python3-numpy python3-pil
      python3-hl7 valgrind openssl chromium openjph-tools strace)

want=("${BUILD[@]}")
if [ "${1:-}" = "--test" ]; then
    want+=("${TEST[@]}")
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OHIF viewer served at /viewer/ (from npm, pinned; nodejs and npm from
# apt when missing) and, with --test, playwright-core for the browser test.
viewer_args=()
if [ "${1:-}" = "--test" ]; then
    viewer_args=(--test)
fi
"$(dirname "$0")/install-viewer.sh" "${viewer_args[@]}"
