#!/usr/bin/python3
"""Data-layer benchmark: parse a corpus of Part 10 files with Agora's reader
(bench/parse_bench.c), DCMTK's dcmdump and pydicom, header-only and full.

Run through bench/parse (or as part of bench/run).  Writes
bench/out/parse-results.md and bench/out/parse-results.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
CORPUS = os.path.join(BENCH, "corpus")
sys.path.insert(0, BENCH)

import gen_corpus  # noqa: E402

DCMDUMP_BATCH = 500          # files per dcmdump process


def log(msg):
    print("[parse] " + msg, file=sys.stderr, flush=True)


def corpus_files(quick):
    args = argparse.Namespace(preset="parse", quick=quick, seed=1,
                              patients=None, studies=None, series=None,
                              instances=None, rows=None, cols=None,
                              modality=None, pixels=None)
    p = gen_corpus.resolve_params(args)
    out = os.path.join(CORPUS, p["preset"])
    t0 = time.time()
    m, made = gen_corpus.ensure(p, out, log=False)
    if made:
        log("generated %s (%d files) in %.1f s" % (out, m["instances_total"],
                                                   time.time() - t0))
    files = []
    for dirpath, _dirs, names in os.walk(out):
        files += [os.path.join(dirpath, n) for n in names
                  if n.endswith(".dcm")]
    files.sort()
    return m, files


def build_agora_parser(timeout=600):
    """Compile parse_bench.c against build/'s static libraries.
    Returns (path, None) or (None, reason)."""
    build = os.path.join(ROOT, "build")
    try:
        if os.environ.get("AGORA_BENCH_NO_BUILD") == "1":
            raise StopIteration
        if not os.path.exists(os.path.join(build, "build.ninja")):
            r = subprocess.run(["meson", "setup", build], cwd=ROOT,
                               capture_output=True, text=True,
                               timeout=timeout)
            if r.returncode != 0:
                return None, "meson setup failed"
        r = subprocess.run(["ninja", "-C", build], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            log("ninja failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
            return None, "build failed"
    except StopIteration:
        pass        # AGORA_BENCH_NO_BUILD=1: use build/ as it is
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "build failed (%s)" % e
    libs = [os.path.join(build, "libagora_dicom.a"),
            os.path.join(build, "libagora_core.a")]
    for lib in libs:
        if not os.path.exists(lib):
            return None, "%s missing" % os.path.relpath(lib, ROOT)
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(OUT, "parse_bench")
    cmd = ["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I",
           os.path.join(ROOT, "src"), os.path.join(BENCH, "parse_bench.c")] \
        + libs + ["-lz", "-ljansson", "-lpthread", "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        log("compiling parse_bench.c failed:\n" + r.stderr[-3000:])
        if "undefined reference" in r.stderr:
            return None, "reader not implemented yet (link failed)"
        return None, "parse_bench.c does not compile"
    return exe, None


def run_agora(exe, list_path, header, reps, timeout):
    cmd = [exe, "--reps", str(reps), "--list", list_path]
    if header:
        cmd.insert(1, "--header-only")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        if "unsupported" in msg or "not implemented" in msg:
            return None, "reader not implemented yet"
        return None, "failed: " + msg[:120]
    secs = [json.loads(line)["seconds"] for line in r.stdout.splitlines()
            if line.startswith("{")]
    if len(secs) != reps:
        return None, "unexpected output"
    return secs, None


def run_dcmdump(files, header, timeout):
    base = ["dcmdump", "-q"] + (["-M", "+P", "0010,0010"] if header
                                else ["+M"])
    t0 = time.perf_counter()
    for i in range(0, len(files), DCMDUMP_BATCH):
        r = subprocess.run(base + files[i:i + DCMDUMP_BATCH],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("dcmdump failed: %s" % r.stderr[-300:])
    return time.perf_counter() - t0


def run_pydicom(files, header):
    import pydicom
    t0 = time.perf_counter()
    n = 0
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=header)
        n += len(ds._dict)
    secs = time.perf_counter() - t0
    if n == 0:
        raise RuntimeError("pydicom parsed nothing")
    return secs


def fmt_rate(files, nbytes, secs):
    if secs is None:
        return None
    return "%s files/s · %s MB/s" % (fmt_num(files / secs),
                                     fmt_num(nbytes / 1e6 / secs))


def fmt_num(x):
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def ratio(a, b):
    """Speed ratio from times: how many times faster a is than b."""
    if a is None or b is None or a <= 0:
        return "—"
    return "%.2f×" % (b / a)


def run_parse(quick=False, reps=None, timeout=900):
    reps = reps or (1 if quick else 3)
    m, files = corpus_files(quick)
    nbytes = sum(os.path.getsize(f) for f in files)
    os.makedirs(OUT, exist_ok=True)
    list_path = os.path.join(OUT, "parse-files.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(files) + "\n")
    log("warming the page cache (%d files, %.0f MB)" % (len(files),
                                                       nbytes / 1e6))
    for p in files:
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass

    results = {"files": len(files), "bytes": nbytes, "reps": reps,
               "rows": {}}
    exe, agora_reason = build_agora_parser()
    for mode in ("header", "full"):
        header = mode == "header"
        row = {}
        if exe:
            secs, reason = run_agora(exe, list_path, header, reps, timeout)
            row["agora"] = statistics.median(secs) if secs else None
            row["agora_note"] = reason
        else:
            row["agora"] = None
            row["agora_note"] = agora_reason
        row["dcmdump"] = statistics.median(
            run_dcmdump(files, header, timeout) for _ in range(reps))
        row["pydicom"] = statistics.median(
            run_pydicom(files, header) for _ in range(reps))
        log("%s: agora %s, dcmdump %.3f s, pydicom %.3f s" % (
            mode, "%.3f s" % row["agora"] if row["agora"] else
            row["agora_note"], row["dcmdump"], row["pydicom"]))
        results["rows"][mode] = row
    results["markdown"] = parse_table(results, m)
    with open(os.path.join(OUT, "parse-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(OUT, "parse-results.md"), "w") as f:
        f.write(results["markdown"])
    return results


def parse_table(res, m):
    n, nbytes = res["files"], res["bytes"]
    lines = [
        "### Data layer: parsing %d files (%d×%d 16-bit CT, %.0f MB), "
        "warm page cache, median of %d run%s" % (
            n, m["rows"], m["cols"], nbytes / 1e6, res["reps"],
            "s" if res["reps"] > 1 else ""),
        "",
        "| parse | Agora | dcmdump | pydicom | Agora vs dcmdump | "
        "Agora vs pydicom |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"header": "header only (stop before pixel data)",
              "full": "full (pixel data loaded)"}
    for mode in ("header", "full"):
        r = res["rows"][mode]
        ag = fmt_rate(n, nbytes, r["agora"]) if r["agora"] else \
            "n/a (%s)" % (r["agora_note"] or "not built")
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            labels[mode], ag, fmt_rate(n, nbytes, r["dcmdump"]),
            fmt_rate(n, nbytes, r["pydicom"]),
            ratio(r["agora"], r["dcmdump"]), ratio(r["agora"], r["pydicom"])))
    lines += [
        "",
        "MB/s counts the whole file size (also for header-only, where the "
        "pixel data is skipped, not read). \"Agora vs X\" is how many times "
        "faster Agora is (>1× = faster). Agora: `bench/parse_bench.c`, one "
        "64 MiB arena per file, `dicom_read_path()`. dcmdump: %d files per "
        "process, header-only = `dcmdump -q -M +P 0010,0010`, full = "
        "`dcmdump -q +M` to /dev/null (includes formatting the dump). "
        "pydicom: `dcmread(stop_before_pixels=True)` vs `dcmread()` in one "
        "process (pydicom converts values lazily, on access)." %
        DCMDUMP_BATCH,
        "",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 files, 1 run (CI smoke test)")
    ap.add_argument("--reps", type=int, help="runs per figure (median)")
    args = ap.parse_args()
    res = run_parse(args.quick, args.reps)
    print(res["markdown"])


if __name__ == "__main__":
    main()
