#!/usr/bin/env bash
# Run every libFuzzer target in BUILDDIR for SECONDS each, over a seed
# corpus made from files Debian's packages ship (nothing third-party is
# committed).  Exit status: the number of targets that found a crash.
#
# FUZZ_SEED=N fixes libFuzzer's random seed, so that a run explores the
# same inputs in the same order: the test suite (tools/test.sh) uses a
# fixed seed, so a gate that passed here passes in CI and a finding can be
# replayed; exploration (unset: a new seed each run, longer runs) is how
# new bugs are looked for.
set -uo pipefail
BUILD=${1:-build-fuzz}
SECS=${2:-45}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/agora-fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

PYD=/usr/lib/python3/dist-packages/pydicom/data/test_files
mkdir -p "$WORK/seed_read" "$WORK/seed_json_read" "$WORK/seed_charset" "$WORK/seed_pdu" "$WORK/seed_multipart"
[ -d "$HERE/corpus/multipart" ] && cp "$HERE"/corpus/multipart/* "$WORK/seed_multipart/" 2>/dev/null
[ -d "$HERE/corpus/accept" ] && mkdir -p "$WORK/seed_accept" && cp "$HERE"/corpus/accept/* "$WORK/seed_accept/" 2>/dev/null
[ -d "$HERE/corpus/pdu" ] && cp "$HERE"/corpus/pdu/* "$WORK/seed_pdu/" 2>/dev/null
[ -d "$HERE/corpus/jpeg12" ] && mkdir -p "$WORK/seed_jpeg12" && cp "$HERE"/corpus/jpeg12/* "$WORK/seed_jpeg12/" 2>/dev/null
printf '\x08\x1b$B;3ED\x1b(B^\x1b$BB@O:' >"$WORK/seed_charset/jis"
printf '\x02M\xc3\xbcller^J\xc3\xbcrgen' >"$WORK/seed_charset/utf8"
for f in CT_small MR_small_implicit MR_small_bigendian image_dfl rtplan \
         nested_priv_SQ UN_sequence ExplVR_LitEndNoMeta priv_SQ \
         JPEG2000 MR_small_RLE; do
    [ -f "$PYD/$f.dcm" ] && cp "$PYD/$f.dcm" "$WORK/seed_read/"
done
[ -d "$HERE/corpus/json" ] && cp "$HERE"/corpus/json/* "$WORK/seed_json_read/" 2>/dev/null
[ -d "$HERE/corpus/read" ] && cp "$HERE"/corpus/read/* "$WORK/seed_read/" 2>/dev/null
[ -d "$HERE/corpus/qido" ] && mkdir -p "$WORK/seed_qido" && cp "$HERE"/corpus/qido/* "$WORK/seed_qido/" 2>/dev/null
# fuzz_params: a byte choosing the parser, then its text
[ -d "$HERE/corpus/params" ] && mkdir -p "$WORK/seed_params" && cp "$HERE"/corpus/params/* "$WORK/seed_params/" 2>/dev/null
# fuzz_render: a parameter byte, then a DICOM file
mkdir -p "$WORK/seed_render"
for f in "$WORK"/seed_read/*; do
    [ -f "$f" ] && { printf '\x41'; cat "$f"; } >"$WORK/seed_render/$(basename "$f")"
done

crashed=0
failed=""
for exe in "$BUILD"/tests/fuzz/fuzz_*; do
    [ -f "$exe" ] && [ -x "$exe" ] || continue
    name=$(basename "$exe")
    seed="$WORK/seed_${name#fuzz_}"
    mkdir -p "$seed" "$WORK/out_$name"
    echo "--- $name"
    if "$exe" ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
            -max_total_time="$SECS" -max_len=262144 -rss_limit_mb=2048 \
            -timeout=10 -print_final_stats=1 -artifact_prefix="$WORK/" \
            "$WORK/out_$name" "$seed" >"$WORK/$name.log" 2>&1; then
        grep -E "stat::number_of_executed_units|Done" "$WORK/$name.log" | tail -2
    else
        crashed=$((crashed + 1))
        # What happened first (the whole log's tail can be long), then
        # the input, short: the full one is base64 so it can be replayed.
        grep -m1 -A40 -E "ERROR: |==ERROR|runtime error" "$WORK/$name.log" ||
            tail -60 "$WORK/$name.log"
        for a in "$WORK"/crash-* "$WORK"/leak-* "$WORK"/timeout-* "$WORK"/oom-* \
                 "$WORK"/slow-unit-*; do
            [ -f "$a" ] || continue
            echo "artifact: $a ($(stat -c %s "$a") bytes), base64:"
            base64 -w 0 "$a" | head -c 16384
            echo
            rm -f "$a"
        done
        failed="$failed ${name}($(grep -m1 -oE "ERROR: [A-Za-z]+: [a-z-]+|runtime error: [a-z ]+" \
                                "$WORK/$name.log" | tr ' ' '_'))"
    fi
done
[ $crashed -eq 0 ] || echo "fuzz targets that failed:$failed"
exit $crashed
