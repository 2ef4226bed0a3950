# bench/deps.sh — sourced by bench/run and bench/parse: install what the
# benchmarks need with apt-get when it is missing (Debian 12 packages).
# Fails loudly when a reference system cannot be installed.

bench_apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    echo "bench: installing with apt-get: $*" >&2
    if ! apt-get install -y --no-install-recommends "$@" >&2; then
        apt-get update >&2 || true
        if ! apt-get install -y --no-install-recommends "$@" >&2; then
            echo "bench: ERROR: could not install $* with apt-get." >&2
            echo "bench: the benchmark needs them (Orthanc and DCMTK are the" \
                 "reference systems); install them and run again." >&2
            exit 2
        fi
    fi
}

# bench_need_tools [--orthanc]: DCMTK, pydicom, numpy, requests; Orthanc
# and its DICOMweb plugin with --orthanc.
bench_need_tools() {
    local need=()
    local t
    for t in storescu storescp findscu getscu movescu echoscu dcmdump; do
        if ! command -v "$t" >/dev/null 2>&1; then need+=(dcmtk); break; fi
    done
    /usr/bin/python3 -c 'import pydicom' 2>/dev/null || need+=(python3-pydicom)
    /usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
    /usr/bin/python3 -c 'import requests' 2>/dev/null || need+=(python3-requests)
    if [ "${1:-}" = --orthanc ]; then
        command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
        if [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] &&
           [ ! -e /usr/lib/orthanc/libOrthancDicomWeb.so ]; then
            need+=(orthanc-dicomweb)
        fi
    fi
    if [ ${#need[@]} -gt 0 ]; then
        bench_apt_install "${need[@]}"
        case " ${need[*]} " in
        *" orthanc "*)
            # Debian's package enables a system service (port 4242/8042);
            # the bench runs its own instances, so keep that one off.
            { systemctl disable --now orthanc || service orthanc stop ||
              /etc/init.d/orthanc stop; } >/dev/null 2>&1 || true ;;
        esac
    fi
    if [ "${1:-}" = --orthanc ] && ! command -v Orthanc >/dev/null 2>&1; then
        echo "bench: ERROR: Orthanc is still not installed." >&2
        exit 2
    fi
}

# Build Agora if a build directory is there (or can be set up); a failure
# only makes Agora's columns n/a.
bench_build_agora() {
    if [ "${AGORA_BENCH_NO_BUILD:-}" = 1 ]; then
        return 0
    fi
    if [ -f build/build.ninja ] && command -v ninja >/dev/null 2>&1; then
        timeout 900 ninja -C build >bench/out/build.log 2>&1 ||
            echo "bench: warning: 'ninja -C build' failed (bench/out/build.log);" \
                 "Agora may show n/a" >&2
    elif [ ! -d build ] && command -v meson >/dev/null 2>&1; then
        { timeout 300 meson setup build && timeout 900 ninja -C build; } \
            >bench/out/build.log 2>&1 ||
            echo "bench: warning: building Agora failed (bench/out/build.log)" >&2
    fi
}
