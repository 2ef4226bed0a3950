#!/usr/bin/python3
"""Codec benchmark: decode and encode MB/s of Agora's pixel codecs against
DCMTK's command-line codecs (GDCM's gdcmconv for JPEG 2000) on a synthetic
512x512 16-bit CT series, and what decoding in the helper pool (codec.h,
"Decoding at arm's length") costs per frame.

    bench/codecs_bench.py [--quick] [--reps N] [--frames N] [--build DIR]
                    [--write-results]

Also run by bench/run after the server benchmark (its other options are
accepted and ignored).  Writes bench/out/codecs-results.md and .json; with
--write-results it also replaces the "Codecs" section of bench/RESULTS.md.

Method.  The series is one multi-frame file of N frames (64; 8 with
--quick) and a 1-frame file, made here with pydicom and numpy: a body
phantom (soft tissue, fat, lungs, bone ring, contrast-filled vessels) that
changes from slice to slice, plus Gaussian noise; 16 bits allocated, 12
stored.  JPEG Baseline is 8-bit only, so it gets the same series windowed to
8 bits (W 400 / L 40).  The reference tools encode each source once; those
files are what both sides decode, so the decoders see the same bytes.

Agora: bench/codec_bench.c (built here against build/'s static libraries)
reads a file once and times codec_decode_frame() / codec_encode_frame()
over all frames: per-frame work, no process start, no file I/O.  DCMTK and
GDCM: wall time of the tool on the N-frame file minus the tool on the
1-frame file, divided by N - 1 (process start cancels out; reading and
writing the file does not, but is small next to the codec).  MB/s counts
uncompressed bytes (MB = 10^6).  Each figure is the median of the runs.
Isolation: codec_bench decode --isolated (one warm helper, frames through
its shared memory) against in-process, same file, same machine, same run.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
CORPUS = os.path.join(BENCH, "corpus", "codecs")
RESULTS = os.path.join(BENCH, "RESULTS.md")
BEGIN = "<!-- codecs:begin (bench/codecs_bench.py --write-results) -->"
END = "<!-- codecs:end -->"

ROWS = COLS = 512
MB = 1e6

# key, label, transfer syntax, source, reference encode, reference decode,
# whether Agora encodes it.
CODECS = [
    ("rle", "RLE Lossless", "1.2.840.10008.1.2.5", "ct16",
     ["dcmcrle"], ["dcmdrle"], True),
    ("jpeg8", "JPEG Baseline, 8-bit (q 90)", "1.2.840.10008.1.2.4.50",
     "ct8", ["dcmcjpeg", "+eb"], ["dcmdjpeg"], True),
    ("jpeg12", "JPEG Extended, 12-bit (q 90)", "1.2.840.10008.1.2.4.51",
     "ct16", ["dcmcjpeg", "+ee", "+bt"], ["dcmdjpeg"], False),
    ("jpegll", "JPEG Lossless SV1", "1.2.840.10008.1.2.4.70", "ct16",
     ["dcmcjpeg", "+e1"], ["dcmdjpeg"], False),
    ("jpegls", "JPEG-LS lossless", "1.2.840.10008.1.2.4.80", "ct16",
     ["dcmcjpls"], ["dcmdjpls"], True),
    ("j2k", "JPEG 2000 lossless", "1.2.840.10008.1.2.4.90", "ct16",
     ["gdcmconv", "--j2k"], ["gdcmconv", "--raw"], True),
]
ISOLATION = ["jpegls", "j2k", "jpeg12", "rle"]


def log(msg):
    print("[codecs] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the series

def phantom(z, rng):
    """One 512x512 slice in stored values (HU + 1024), 12 bits."""
    import numpy as np
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    cx, cy = COLS / 2, ROWS / 2
    hu = np.full((ROWS, COLS), -1000.0, np.float32)          # air
    body = ((x - cx) / 230) ** 2 + ((y - cy) / 170) ** 2 < 1
    hu[body] = -90                                             # fat
    inner = ((x - cx) / 205) ** 2 + ((y - cy) / 148) ** 2 < 1
    hu[inner] = 45                                             # soft tissue
    ring = inner & (((x - cx) / 190) ** 2 + ((y - cy) / 135) ** 2 > 1)
    hu[ring] = 700                                             # ribs
    s = 1 + 0.15 * np.sin(z / 6.0)
    for lx in (cx - 85, cx + 85):
        lung = ((x - lx) / (60 * s)) ** 2 + ((y - cy + 10) / (95 * s)) ** 2
        hu[lung < 1] = -820                                    # lungs
    aorta = (x - cx - 20 - 3 * np.sin(z / 9.0)) ** 2 + (y - cy + 40) ** 2
    hu[aorta < 18 ** 2] = 300                                  # contrast
    spine = (x - cx) ** 2 + (y - cy - 110) ** 2 < 26 ** 2
    hu[spine] = 900
    hu += rng.normal(0, 18, hu.shape).astype(np.float32)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def write_series(path, frames, bits8, seed=1):
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    rng = np.random.default_rng(seed)
    px = np.stack([phantom(z, rng) for z in range(frames)])
    if bits8:
        lo, hi = 1024 + 40 - 200, 1024 + 40 + 200
        px = (np.clip((px.astype(np.float32) - lo) / (hi - lo), 0, 1) *
              255 + 0.5).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop = "1.2.840.10008.5.1.4.1.1.7." + ("2" if bits8 else "3")
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Bench^Codecs"
    ds.PatientID = "BENCH-CODECS"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.BitsAllocated = 8 if bits8 else 16
    ds.BitsStored = 8 if bits8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if not bits8:
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    ds.PixelData = px.tobytes()
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    tmp = path + ".tmp"
    ds.save_as(tmp, write_like_original=False)
    os.replace(tmp, path)


def ensure_corpus(frames):
    """{(source, n): path} for n in (frames, 1)."""
    os.makedirs(CORPUS, exist_ok=True)
    files = {}
    for src in ("ct16", "ct8"):
        for n in (frames, 1):
            p = os.path.join(CORPUS, "%s_%d.dcm" % (src, n))
            if not os.path.exists(p):
                write_series(p, n, src == "ct8")
            files[(src, n)] = p
    return files


# ---------------------------------------------------------------------------
# tools

def build_bench(build, timeout=900):
    """Compile codec_bench.c against build/'s static libraries.
    Returns (path, None) or (None, reason)."""
    if os.environ.get("AGORA_BENCH_NO_BUILD") != "1" and \
            os.path.exists(os.path.join(build, "build.ninja")):
        r = subprocess.run(["ninja", "-C", build], capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            log("ninja failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
            return None, "build failed"
    libs = [os.path.join(build, "lib%s.a" % n)
            for n in ("agora_codec", "agora_dicom", "agora_core")]
    for lib in libs:
        if not os.path.exists(lib):
            return None, "%s missing" % lib
    pc = subprocess.run(["pkg-config", "--libs", "libturbojpeg", "charls",
                         "libopenjp2", "spng", "libseccomp", "zlib",
                         "jansson"], capture_output=True, text=True)
    if pc.returncode != 0:
        return None, "pkg-config: " + pc.stderr.strip()[:200]
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(OUT, "codec_bench")
    cmd = ["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I",
           os.path.join(ROOT, "src"), os.path.join(BENCH, "codec_bench.c")] \
        + libs + pc.stdout.split() + ["-lm", "-lpthread", "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        log("compiling codec_bench.c failed:\n" + r.stderr[-3000:])
        return None, "codec_bench.c does not compile"
    return exe, None


def timed(cmd, timeout=600):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (
            " ".join(os.path.basename(c) for c in cmd[:2]), r.returncode,
            r.stderr.decode(errors="replace").strip()[-200:]))
    return t


def ref_per_frame(tool, src_n, src_1, frames, reps, tmp):
    """Median per-frame seconds of a reference tool: (t(N) - t(1)) / (N-1),
    the two runs alternating."""
    per = []
    for _ in range(reps):
        tn = timed(tool + [src_n, os.path.join(tmp, "o_n.dcm")])
        t1 = timed(tool + [src_1, os.path.join(tmp, "o_1.dcm")])
        per.append(max(tn - t1, 1e-9) / (frames - 1))
    return statistics.median(per)


def agora_per_frame(exe, args, reps):
    r = subprocess.run([exe] + args + ["--reps", str(reps)],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or
                            ["exit %d" % r.returncode])[-1][:200])
    runs = [json.loads(line) for line in r.stdout.splitlines()
            if line.startswith("{")]
    if len(runs) != reps:
        raise RuntimeError("unexpected output")
    return statistics.median(x["seconds"] / x["frames"] for x in runs), \
        runs[0]


def best_per_frame(exe, args, reps):
    """Per-frame seconds from the sum of each frame's fastest run."""
    r = subprocess.run([exe] + args + ["--reps", str(reps)],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or
                            ["exit %d" % r.returncode])[-1][:200])
    last = [json.loads(line) for line in r.stdout.splitlines()
            if line.startswith("{")][-1]
    return last["best"] / last["frames"]


def isolation(row, exe, path, reps):
    """In-process and isolated decodes of the same file, best of reps for
    each frame: what isolation costs when neither run is disturbed by the
    other sessions of a shared machine."""
    row["inproc_dec"] = best_per_frame(exe, ["decode", path], reps)
    row["isolated_dec"] = best_per_frame(exe, ["decode", "--isolated",
                                               path], reps)
    row["isolation_cost"] = row["isolated_dec"] - row["inproc_dec"]


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (r.stdout + r.stderr).strip().splitlines()
        return text[0].strip("$ ").split(" $")[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


# ---------------------------------------------------------------------------
# the run

def measure(args):
    frames = args.frames or (8 if args.quick else 64)
    reps = args.reps or (1 if args.quick else 3)
    pairs = 3 if args.quick else 7
    t_start = time.time()
    log("series: %d frames of %dx%d" % (frames, ROWS, COLS))
    files = ensure_corpus(frames)
    exe, why = build_bench(args.build)
    if exe is None:
        log("Agora columns n/a: " + why)
    tmp = os.path.join(OUT, "codecs-tmp")
    os.makedirs(tmp, exist_ok=True)
    rows = []
    fsize = {"ct16": ROWS * COLS * 2, "ct8": ROWS * COLS}
    for key, label, ts, src, enc, dec, agora_enc in CODECS:
        row = {"key": key, "label": label, "ts": ts, "frame_bytes":
               fsize[src], "notes": []}
        rows.append(row)
        if shutil.which(enc[0]) is None or shutil.which(dec[0]) is None:
            row["notes"].append("%s not installed" % enc[0])
            continue
        comp_n = os.path.join(CORPUS, "%s_%d.dcm" % (key, frames))
        comp_1 = os.path.join(CORPUS, "%s_1.dcm" % key)
        try:
            for s, d in ((files[(src, frames)], comp_n),
                         (files[(src, 1)], comp_1)):
                if not os.path.exists(d):
                    subprocess.run(enc + [s, d], check=True,
                                   capture_output=True, timeout=600)
            row["compressed_bytes"] = os.path.getsize(comp_n)
            row["ref_enc"] = ref_per_frame(enc, files[(src, frames)],
                                           files[(src, 1)], frames, reps, tmp)
            row["ref_dec"] = ref_per_frame(dec, comp_n, comp_1, frames, reps,
                                           tmp)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            row["notes"].append("reference: %s" % e)
        if exe is None:
            continue
        try:
            row["agora_dec"], first = agora_per_frame(
                exe, ["decode", comp_n], reps)
            row["ratio"] = (first["bytes"] / first["compressed"]
                            if first["compressed"] else None)
            if agora_enc:
                row["agora_enc"], first = agora_per_frame(
                    exe, ["encode", "--ts", ts, files[(src, frames)]], reps)
                row["agora_ratio"] = (first["bytes"] / first["compressed"]
                                      if first["compressed"] else None)
            if key in ISOLATION:
                isolation(row, exe, comp_n, pairs)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            row["notes"].append("agora: %s" % e)
        log("%-28s done" % label)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "frames": frames, "reps": reps, "pairs": pairs, "rows": rows,
        "seconds": time.time() - t_start,
        "machine": machine(),
        "versions": {"dcmtk": version(["dcmcjpeg", "--version"]),
                     "gdcm": version(["gdcmconv", "--version"]),
                     "agora": git_rev()},
    }


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d cores, %s, Linux %s, load %.1f at start" % (
        os.cpu_count() or 0, cpu, platform.release(), os.getloadavg()[0])


def git_rev():
    try:
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short",
                            "HEAD"], capture_output=True, text=True,
                           timeout=30)
        return "commit " + r.stdout.strip() + " + working tree"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------------------
# the report

def mbs(row, k):
    v = row.get(k)
    return None if v is None else row["frame_bytes"] / v / MB


def fmt(v):
    if v is None:
        return "—"
    return "%.0f" % v if v >= 100 else "%.1f" % v if v >= 10 else "%.2f" % v


def times(a, b):
    return "—" if a is None or b is None else "%.2f×" % (a / b)


def markdown(res):
    ref = {"j2k": "GDCM"}
    lines = [
        "### Codecs: %d frames of 512×512 (16-bit, 12 stored; JPEG "
        "Baseline 8-bit), median of %d run%s" % (
            res["frames"], res["reps"], "s" if res["reps"] > 1 else ""),
        "",
        "| codec | decode MB/s Agora | decode MB/s reference | Agora vs "
        "reference | encode MB/s Agora | encode MB/s reference | Agora vs "
        "reference | compression |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        who = ref.get(r["key"], "DCMTK")
        ad, rd = mbs(r, "agora_dec"), mbs(r, "ref_dec")
        ae, re_ = mbs(r, "agora_enc"), mbs(r, "ref_enc")
        ratio = r.get("ratio")
        encodes = {c[0]: c[6] for c in CODECS}[r["key"]]
        lines.append("| %s | %s | %s (%s) | %s | %s | %s (%s) | %s | %s |" % (
            r["label"], fmt(ad), fmt(rd), who, times(ad, rd),
            fmt(ae) if encodes else "— (no encoder)", fmt(re_), who,
            times(ae, re_), "%.2f:1" % ratio if ratio else "—"))
    lines += [
        "",
        "MB/s: uncompressed megabytes (10^6) per second of one core; "
        "\"Agora vs reference\" >1× means Agora is faster.  Both decoders "
        "read the reference tool's file; compression is that file's.  "
        "Agora: bench/codec_bench.c, per-frame codec calls, no process "
        "start or file I/O.  Reference: (tool on %d frames − tool on 1 "
        "frame) / %d, so process start cancels out but reading and writing "
        "the file is included.  DCMTK: dcmcrle/dcmdrle, dcmcjpeg +eb / +ee "
        "+bt / +e1 and dcmdjpeg, dcmcjpls/dcmdjpls (defaults: lossless); "
        "GDCM: gdcmconv --j2k / --raw.  Agora has no JPEG Lossless or "
        "12-bit JPEG encoder (decoders only)." % (res["frames"],
                                                  res["frames"] - 1),
        "",
        "### Decoding at arm's length: cost per frame",
        "",
        "| codec | in-process frames/s | isolated frames/s | cost per frame "
        "| overhead |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        a, i = r.get("inproc_dec"), r.get("isolated_dec")
        if a is None or i is None:
            continue
        cost = r["isolation_cost"]
        lines.append("| %s | %s | %s | %.0f µs | %+.1f %% |" % (
            r["label"], fmt(1 / a), fmt(1 / i), cost * 1e6,
            cost / a * 100))
    lines += [
        "",
        "Isolated: codec_decode_frame_isolated() through one warm helper "
        "process (seccomp filter, rlimits, no privileges): the frame is "
        "copied into shared memory, a request and a reply cross a "
        "socketpair, the decoded frame is copied out.  Both columns take "
        "each frame's fastest of %d runs (the sum over frames), which "
        "keeps out most of the noise of a shared machine; the cost is "
        "their difference." % res["pairs"],
        "",
        "Machine: %s.  Versions: %s; %s; Agora %s.  Run time %.0f s." % (
            res["machine"], res["versions"]["dcmtk"],
            res["versions"]["gdcm"], res["versions"]["agora"],
            res["seconds"]),
    ]
    notes = ["%s: %s" % (r["label"], n) for r in res["rows"]
             for n in r["notes"]]
    if notes:
        lines += [""] + ["- " + n for n in notes]
    return "\n".join(lines) + "\n"


def write_results(md):
    """Replace (or append) the Codecs section of bench/RESULTS.md."""
    section = "%s\n## Codecs\n\n%s%s\n" % (BEGIN, md, END)
    try:
        with open(RESULTS) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Agora benchmark results\n"
    if BEGIN in text and END in text:
        head = text[:text.index(BEGIN)]
        tail = text[text.index(END) + len(END):].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RESULTS, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="8 frames, 1 run (well under a minute)")
    ap.add_argument("--reps", type=int, help="runs per figure (3; 1 quick)")
    ap.add_argument("--frames", type=int, help="frames in the series (64)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="Meson build directory with Agora's libraries")
    ap.add_argument("--write-results", action="store_true",
                    help="also update the Codecs section of RESULTS.md")
    args, _ = ap.parse_known_args()      # bench/run passes its own options
    if args.frames is not None and args.frames < 2:
        ap.error("--frames must be at least 2")
    res = measure(args)
    md = markdown(res)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "codecs-results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(OUT, "codecs-results.json"), "w") as f:
        json.dump(res, f, indent=1)
    if args.write_results:
        write_results(md)
    print(md)
    failed = [r for r in res["rows"] if r["notes"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
