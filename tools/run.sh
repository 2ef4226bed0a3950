#!/usr/bin/env bash
# Install what is missing, build (release), and run `agora serve` on the
# embedded default: SQLite + files in ./agora-data.  Arguments are passed to
# `agora serve` (see `build-release/agora serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -f build-release/build.ninja ] ||
    meson setup build-release -Dbuildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
exec ./build-release/agora serve --data ./agora-data "$@"
