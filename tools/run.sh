#!/usr/bin/env bash
# Install what is missing, build, and run Agora on the embedded default
# (SQLite + files in ./agora-data).  Until `agora serve` lands this prints
# the version and a dump of a sample file.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build -Dbuildtype=release -Dtests=false >/dev/null
ninja -C build >/dev/null
if ./build/agora serve --help >/dev/null 2>&1; then
    exec ./build/agora serve --data ./agora-data "$@"
fi
./build/agora version
sample=$(mktemp /tmp/agora-sample.XXXXXX.dcm)
trap 'rm -f "$sample"' EXIT
./build/agora demo --file "$sample"
./build/agora dump "$sample"
