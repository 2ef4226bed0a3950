"""`agora transcode` between the native transfer syntaxes.

* A file written again in its own syntax comes out byte for byte the same
  (deflated files: the same header and the same inflated data set; group
  lengths are recomputed, like `dcmconv +g` does).
* Written in another native syntax, the result has the original's values:
  agora dump and dcmdump of the result agree with each other and with
  dcmdump of the original; pydicom reads the same element values and the
  same pixel values; converting back gives the original bytes.
* Encapsulated pixel data only passes through unchanged; anything that needs
  a codec fails cleanly.  A failed transcode leaves neither OUT nor a
  temporary file behind.
"""

import struct
import zlib

import numpy as np
import pytest

import dcmdump_parse as dp
from conftest import (COMPRESSED_TOOLS, DEFLATED, EXPLICIT_BE, EXPLICIT_LE,
                      IMPLICIT_LE, NATIVE_SYNTAXES, corpus_plan,
                      dcmdump_file, dump_problems, run)

TARGETS = sorted(NATIVE_SYNTAXES)


def transcode(agora_run, src, ts, dst, *extra):
    r = agora_run("transcode", "--ts", ts, *extra, src, dst)
    assert r.returncode == 0, "transcode %s -> %s failed: %s" % (
        src.name, ts, r.stderr.decode("utf-8", "replace"))
    assert dst.exists()
    return dst


def split_part10(data: bytes):
    """(preamble+DICM+meta bytes, data set bytes) of a Part 10 file."""
    assert data[128:132] == b"DICM"
    pos = 132
    # (0002,0000) UL gives the meta length (explicit VR LE, PS3.10 §7.1)
    assert data[pos:pos + 6] == b"\x02\x00\x00\x00UL"
    meta_len = struct.unpack_from("<I", data, pos + 8)[0]
    end = pos + 12 + meta_len
    return data[:end], data[end:]


def inflate(raw: bytes) -> bytes:
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    out = d.decompress(raw) + d.flush()
    assert d.eof, "deflate stream is not terminated"
    return out


def first_difference(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return "first difference at byte %d (%d vs %d bytes): %r vs %r" \
                % (i, len(a), len(b), a[max(0, i - 8):i + 8],
                   b[max(0, i - 8):i + 8])
    return "one is a prefix of the other (%d vs %d bytes)" % (len(a), len(b))


def assert_same_file(got: bytes, want: bytes, ts: str):
    if ts == DEFLATED:
        gh, gd = split_part10(got)
        wh, wd = split_part10(want)
        assert gh == wh, "meta differs: " + first_difference(gh, wh)
        gi, wi = inflate(gd), inflate(wd)
        assert gi == wi, "inflated data set differs: " + \
            first_difference(gi, wi)
    else:
        assert got == want, first_difference(got, want)


def no_leftovers(directory, allowed=()):
    names = sorted(p.name for p in directory.iterdir())
    return [n for n in names if n not in allowed]


# ---- same syntax ------------------------------------------------------------

def test_same_syntax_is_identical(agora_run, native_corpus_file, tmp):
    f = native_corpus_file
    out = transcode(agora_run, f.path, f.ts, tmp / "out.dcm")
    assert_same_file(out.read_bytes(), f.path.read_bytes(), f.ts)
    assert no_leftovers(tmp, {"out.dcm"}) == []


def test_same_syntax_encapsulated_passes_through(agora_run,
                                                 compressed_corpus_file, tmp):
    """Compressed files kept in their syntax: fragments copied unchanged."""
    f = compressed_corpus_file
    out = transcode(agora_run, f.path, f.ts, tmp / "out.dcm")
    assert out.read_bytes() == f.path.read_bytes(), first_difference(
        out.read_bytes(), f.path.read_bytes())


def test_group_lengths_are_recomputed_like_dcmconv(agora_run, corpus, tmp):
    """A wrong group length is rewritten with the right value: the result
    equals dcmconv +g of the same input."""
    src = corpus["MR_small-explicit"].path
    with_gl = tmp / "gl.dcm"
    r = run(["dcmconv", "+g", src, with_gl])
    assert r.returncode == 0, r.stderr
    data = bytearray(with_gl.read_bytes())
    i = data.find(b"\x08\x00\x00\x00UL\x04\x00")
    assert i > 0, "dcmconv +g wrote no (0008,0000)"
    good = struct.unpack_from("<I", data, i + 8)[0]
    struct.pack_into("<I", data, i + 8, good + 1000)
    bad = tmp / "bad-gl.dcm"
    bad.write_bytes(bytes(data))
    ref = tmp / "ref.dcm"
    assert run(["dcmconv", "+g", bad, ref]).returncode == 0
    out = transcode(agora_run, bad, EXPLICIT_LE, tmp / "out.dcm")
    assert out.read_bytes() == ref.read_bytes(), first_difference(
        out.read_bytes(), ref.read_bytes())
    assert struct.unpack_from("<I", out.read_bytes(), i + 8)[0] == good


# ---- other native syntaxes --------------------------------------------------

def _units(vr):
    return {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}.get(vr, 1)


def _bulk_le(elem, little_endian):
    """Bytes of an OB/OW/... value in little-endian order (pydicom keeps
    the file's byte order)."""
    v = bytes(elem.value or b"")
    u = _units(elem.VR)
    if little_endian or u == 1 or len(v) % u:
        return v
    return np.frombuffer(v, dtype=">u%d" % u).astype("<u%d" % u).tobytes()


def _same_value(vr, a, b):
    if vr in ("FL", "FD", "DS"):
        la = list(a) if isinstance(a, (list, tuple)) or \
            type(a).__name__ == "MultiValue" else [a]
        lb = list(b) if isinstance(b, (list, tuple)) or \
            type(b).__name__ == "MultiValue" else [b]
        if len(la) != len(lb):
            return False
        for x, y in zip(la, lb):
            if (x in (None, "")) or (y in (None, "")):
                if (x in (None, "")) != (y in (None, "")):
                    return False
                continue
            if not np.isclose(float(x), float(y), rtol=1e-12, atol=0,
                              equal_nan=True):
                return False
        return True
    return a == b


def compare_pydicom(a, b, a_le, b_le, path=()):
    """Element values of two pydicom data sets.  An element whose VR was
    lost on the way (implicit VR, no dictionary entry: UN) is compared by
    presence only."""
    problems = []
    tags_a = {e.tag for e in a}
    tags_b = {e.tag for e in b}
    for t in sorted(tags_a ^ tags_b):
        problems.append("%s: only in %s" % (
            dp.format_path(path + ((t, None),)),
            "original" if t in tags_a else "result"))
    for ea in a:
        if ea.tag not in tags_b:
            continue
        eb = b[ea.tag]
        where = dp.format_path(path + ((ea.tag, None),))
        if ea.VR != eb.VR:
            if "UN" in (ea.VR, eb.VR):
                continue
            if {ea.VR, eb.VR} <= {"US", "SS", "OB", "OW", "US or SS",
                                  "OB or OW", "US or SS or OW"}:
                pass
            else:
                problems.append("%s: VR %s, expected %s" % (where, eb.VR,
                                                            ea.VR))
                continue
        if ea.VR == "SQ":
            if len(ea.value) != len(eb.value):
                problems.append("%s: %d items, expected %d" % (
                    where, len(eb.value), len(ea.value)))
                continue
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value)):
                problems += compare_pydicom(ia, ib, a_le, b_le,
                                            path + ((ea.tag, i),))
            continue
        if ea.tag == 0x7FE00010:
            continue          # compared as a pixel array
        if ea.VR in ("OB", "OW", "OL", "OF", "OD", "OV", "UN") or \
                isinstance(ea.value, bytes):
            if _bulk_le(ea, a_le) != _bulk_le(eb, b_le):
                problems.append("%s %s: bytes differ" % (where, ea.VR))
            continue
        if not _same_value(ea.VR, ea.value, eb.value):
            problems.append("%s %s: %r, expected %r" % (
                where, ea.VR, eb.value, ea.value))
    return problems


def dataset_dcmdump_problems(original, result, target_ts):
    """dcmdump of the result vs dcmdump of the original: the data sets
    agree; only VRs of elements no dictionary knows may turn into "??"
    (UN) when the result is implicit VR."""
    want = dp.parse(dcmdump_file(str(original)).text)
    got = dp.parse(dcmdump_file(str(result)).text)
    if target_ts == IMPLICIT_LE or original.name.endswith("-implicit.dcm"):
        for p, el in list(want.dataset.items()):
            other = got.dataset.get(p)
            if other is not None and el.vr != other.vr and \
                    ("??" in (el.vr, other.vr) or "UN" in (el.vr, other.vr)):
                # compare lengths only
                if el.length != other.length:
                    continue
                del want.dataset[p]
                del got.dataset[p]
    return dp.compare(want, got, meta=False)


def conversion_plan():
    """(corpus entry, target): every reader and every writer, by converting
    explicit LE to each other syntax and each back to explicit LE; the
    whole matrix for CT_small (private elements, signed 16-bit pixels)."""
    plan = []
    for name, src, tool, _, _ in corpus_plan():
        if tool not in NATIVE_SYNTAXES:
            continue
        for target in TARGETS:
            if target == tool:
                continue
            if "explicit" in (tool, target) or src == "CT_small.dcm":
                plan.append((name, target))
    return plan


@pytest.mark.parametrize("name,target", conversion_plan(),
                         ids=["%s-to-%s" % p for p in conversion_plan()])
def test_transcode_to_other_native(agora_run, corpus, name, target, tmp,
                                   dcmdump_warm):
    import pydicom
    f = corpus[name]
    if not hasattr(f, "path"):
        pytest.skip(f.reason)
    ts = NATIVE_SYNTAXES[target]
    out = transcode(agora_run, f.path, ts, tmp / "out.dcm")
    assert no_leftovers(tmp, {"out.dcm"}) == []
    # Every check runs; the failure lists all problems at once.
    problems = ["agora dump vs dcmdump of the result: " + p
                for p in dump_problems(agora_run, out)]
    problems += ["dcmdump of the result vs the original: " + p
                 for p in dataset_dcmdump_problems(f.path, out, ts)]
    a = pydicom.dcmread(str(f.path))
    b = pydicom.dcmread(str(out))
    if str(b.file_meta.TransferSyntaxUID) != ts:
        problems.append("meta: transfer syntax %s" %
                        b.file_meta.TransferSyntaxUID)
    if b.file_meta.MediaStorageSOPInstanceUID != \
            a.file_meta.MediaStorageSOPInstanceUID:
        problems.append("meta: SOP instance UID changed")
    problems += ["pydicom, result vs original: " + p for p in
                 compare_pydicom(a, b, a.is_little_endian,
                                 b.is_little_endian)]
    if "PixelData" in a:
        # identical pixel bytes (in little-endian order) ...
        if _bulk_le(a["PixelData"], a.is_little_endian) != \
                _bulk_le(b["PixelData"], b.is_little_endian):
            problems.append("pixel bytes differ")
        # ... and identical pixel values, where pydicom 2.3 can tell: it
        # does not undo the 16-bit swap of 8-bit OW pixel data in big
        # endian files (PS3.5 §A.3), nor swap big-endian waveforms.
        elif not any(not d.is_little_endian and d["PixelData"].VR == "OW"
                     and d.BitsAllocated == 8 for d in (a, b)):
            pa, pb = a.pixel_array, b.pixel_array
            if (pa.dtype.kind, pa.dtype.itemsize, pa.shape) != \
                    (pb.dtype.kind, pb.dtype.itemsize, pb.shape):
                problems.append("pixel array type %s%s, expected %s%s" % (
                    pb.dtype, pb.shape, pa.dtype, pa.shape))
            elif not np.array_equal(pa, pb):
                problems.append("pixel values differ")
    if "WaveformSequence" in a and a.is_little_endian and b.is_little_endian:
        for i in range(len(a.WaveformSequence)):
            if not np.array_equal(a.waveform_array(i), b.waveform_array(i)):
                problems.append("waveform %d differs" % i)
    assert problems == [], "\n".join(problems[:40])


@pytest.mark.parametrize("target", TARGETS)
def test_there_and_back_is_identical(agora_run, corpus, target, tmp):
    """explicit LE -> X -> explicit LE gives the original bytes for data
    whose VRs survive X (all but private elements without a dictionary
    entry through implicit VR)."""
    for src in ("CT_small", "MR_small", "rtplan", "rtstruct", "SC_rgb"):
        entry = corpus[src + "-explicit"]
        if not hasattr(entry, "path"):
            continue
        mid = transcode(agora_run, entry.path, NATIVE_SYNTAXES[target],
                        tmp / (src + "-mid.dcm"))
        back = transcode(agora_run, mid, EXPLICIT_LE,
                         tmp / (src + "-back.dcm"))
        assert back.read_bytes() == entry.path.read_bytes(), "%s via %s: %s" \
            % (src, target, first_difference(back.read_bytes(),
                                             entry.path.read_bytes()))


def test_pydicom_write_of_result_reads_back_equal(agora_run, corpus, tmp):
    """read (agora) -> write (agora) -> read (pydicom) -> write (pydicom) ->
    read (pydicom): the values survive every step."""
    import pydicom
    src = corpus["rtstruct-implicit"].path
    out = transcode(agora_run, src, EXPLICIT_BE, tmp / "be.dcm")
    first = pydicom.dcmread(str(out))
    again = tmp / "again.dcm"
    first.save_as(str(again))
    second = pydicom.dcmread(str(again))
    assert compare_pydicom(first, second, first.is_little_endian,
                           second.is_little_endian) == []
    orig = pydicom.dcmread(str(src))
    assert compare_pydicom(orig, second, True, second.is_little_endian) == []


def test_deflated_output_is_compressed_and_readable(agora_run, corpus, tmp):
    src = corpus["rtplan-explicit"].path
    out = transcode(agora_run, src, DEFLATED, tmp / "d.dcm")
    data = out.read_bytes()
    head, body = split_part10(data)
    inflated = inflate(body)
    _, plain = split_part10(src.read_bytes())
    assert inflated == plain        # explicit VR LE data set, deflated
    assert len(body) < len(plain) / 2
    r = run(["dcmdump", "-q", out])
    assert r.returncode == 0 and b"RTPlanLabel" in r.stdout
    import pydicom
    assert pydicom.dcmread(str(out)).RTPlanLabel == "Plan1"


def test_preamble_kept_or_zeroed(agora_run, corpus, tmp):
    src = corpus["MR_small-explicit"].path
    data = bytearray(src.read_bytes())
    data[:128] = bytes(range(128))
    marked = tmp / "marked.dcm"
    marked.write_bytes(bytes(data))
    kept = transcode(agora_run, marked, EXPLICIT_LE, tmp / "kept.dcm")
    assert kept.read_bytes()[:128] == bytes(range(128))
    zero = transcode(agora_run, marked, EXPLICIT_LE, tmp / "zero.dcm",
                     "--zero-preamble")
    z = zero.read_bytes()
    assert z[:128] == bytes(128) and z[128:132] == b"DICM"
    assert z[128:] == kept.read_bytes()[128:]


# ---- failures ---------------------------------------------------------------

def test_compressed_transcodes_decode_or_refuse_cleanly(agora_run,
                                                        compressed_corpus_file,
                                                        tmp):
    """To explicit little endian: decoded (pixels checked in
    test_transcode.py) or refused with the reason, nothing half-written."""
    f = compressed_corpus_file
    out = tmp / "out.dcm"
    r = agora_run("transcode", "--ts", EXPLICIT_LE, f.path, out)
    if r.returncode == 0:
        assert out.exists()
    else:
        assert r.returncode == 1
        # A precise refusal names the frame or the missing decoder.
        assert b"decoder" in r.stderr or b"not built yet" in r.stderr or \
            b"frame" in r.stderr or b"unsupported" in r.stderr.lower(), r.stderr
        assert no_leftovers(tmp) == []


@pytest.mark.parametrize("tool", sorted(COMPRESSED_TOOLS))
def test_native_to_compressed_encodes_or_refuses(agora_run, corpus, tool, tmp):
    ts = COMPRESSED_TOOLS[tool][1]
    out = tmp / "out.dcm"
    r = agora_run("transcode", "--ts", ts, corpus["CT_small-explicit"].path,
                  out)
    if r.returncode == 0:
        assert out.exists()
    else:
        assert r.returncode == 1
        assert b"encoder" in r.stderr or b"not built yet" in r.stderr or \
            b"unsupported" in r.stderr.lower() or b"signed" in r.stderr, r.stderr
        assert no_leftovers(tmp) == []


def test_unknown_syntax_is_refused(agora_run, corpus, tmp):
    for ts in ("1.2.3.4", "not-a-uid", ""):
        r = agora_run("transcode", "--ts", ts,
                      corpus["MR_small-explicit"].path, tmp / "out.dcm")
        assert r.returncode in (1, 2), (ts, r.returncode)
        assert r.stderr.strip(), ts
    assert no_leftovers(tmp) == []


def test_bad_input_leaves_no_output(agora_run, corpus, tmp):
    """A truncated input: exit 1, OUT not created, an existing OUT kept,
    no temporary file left."""
    data = corpus["CT_small-explicit"].path.read_bytes()
    bad = tmp / "in" / "bad.dcm"
    bad.parent.mkdir()
    bad.write_bytes(data[:len(data) - 1000])
    outdir = tmp / "out"
    outdir.mkdir()
    r = agora_run("transcode", "--ts", EXPLICIT_BE, bad, outdir / "o.dcm")
    assert r.returncode == 1 and b"offset" in r.stderr, r.stderr
    assert no_leftovers(outdir) == []
    (outdir / "o.dcm").write_bytes(b"previous")
    r = agora_run("transcode", "--ts", EXPLICIT_BE, bad, outdir / "o.dcm")
    assert r.returncode == 1
    assert (outdir / "o.dcm").read_bytes() == b"previous"
    assert no_leftovers(outdir, {"o.dcm"}) == []


def test_failure_while_writing_leaves_no_output(agora_run, tmp):
    """The input reads fine but cannot be written in the target syntax: a
    70000-byte LO (legal in implicit VR's 32-bit lengths) does not fit the
    16-bit length of explicit VR.  The write fails midway: no OUT, no
    temporary file."""
    def el(group, elem, value):
        return struct.pack("<HHI", group, elem, len(value)) + value
    meta_body = (struct.pack("<HH", 2, 1) + b"OB\0\0" + struct.pack("<I", 2)
                 + b"\0\1" +
                 struct.pack("<HH", 2, 0x10) + b"UI" +
                 struct.pack("<H", 18) + b"1.2.840.10008.1.2\0")
    meta = (struct.pack("<HH", 2, 0) + b"UL" + struct.pack("<HI", 4,
                                                            len(meta_body))
            + meta_body)
    ds = (el(0x0008, 0x0060, b"OT") + el(0x0010, 0x0010, b"A^B ") +
          el(0x0010, 0x0020, b"X" * 70000))
    src = tmp / "in.dcm"
    src.write_bytes(bytes(128) + b"DICM" + meta + ds)
    r = agora_run("dump", src)
    assert r.returncode == 0, r.stderr
    outdir = tmp / "out"
    outdir.mkdir()
    r = agora_run("transcode", "--ts", EXPLICIT_LE, src, outdir / "o.dcm")
    assert r.returncode == 1, "a 70000-byte LO was written in explicit VR"
    assert b"(0010,0020)" in r.stderr, r.stderr
    assert no_leftovers(outdir) == []


def test_usage_errors(agora_run, corpus, tmp):
    src = corpus["MR_small-explicit"].path
    for args in ([src, tmp / "o.dcm"],                  # no --ts
                 ["--ts", EXPLICIT_LE, src],            # no OUT
                 ["--ts", EXPLICIT_LE, src, tmp / "o.dcm", "extra"],
                 ["--bogus", src, tmp / "o.dcm"]):
        r = agora_run("transcode", *args)
        assert r.returncode == 2, args
        assert b"usage" in r.stderr, args
    assert no_leftovers(tmp) == []


def test_output_directory_missing(agora_run, corpus, tmp):
    r = agora_run("transcode", "--ts", EXPLICIT_LE,
                  corpus["MR_small-explicit"].path, tmp / "no" / "o.dcm")
    assert r.returncode == 1
    assert b"no/o.dcm" in r.stderr, r.stderr
