"""WADO-RS content negotiation, frames in every layout and bulk data;
STOW-RS of DICOM JSON with bulk data parts; gzip and CORS (PS3.18).

The running binary against real references: pydicom reads every answer
and gives the expected pixels and attributes; where pydicom has no decoder
(JPEG-LS, JPEG lossless) DCMTK or GDCM decompress first (dcmdjpls,
dcmdjpeg, dcmdrle, gdcmconv --raw).  Compressed inputs with several
fragments per frame come from dcmcrle/dcmcjpls +fs and gdcmconv --split.
"""
import copy
import gzip
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_pixel_data_frame
from pydicom.uid import generate_uid

from test_dimse import AGORA, Server, agora, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
ELE = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"
JLS = "1.2.840.10008.1.2.4.80"
JLS_NEAR = "1.2.840.10008.1.2.4.81"
J2K = "1.2.840.10008.1.2.4.90"
J2K_ANY = "1.2.840.10008.1.2.4.91"
JPEG_BASE = "1.2.840.10008.1.2.4.50"
JPEG_SV1 = "1.2.840.10008.1.2.4.70"
LOSSY = {JPEG_BASE, "1.2.840.10008.1.2.4.51", JLS_NEAR, J2K_ANY}
UID_ROOT = "1.2.826.0.1.3680043.10.1447.99.9."
ORIGIN = "https://viewer.example.org"
# Attributes a transcoder may change (PS3.5 §8, PS3.3 C.7.6.1.1.5).
CHANGED_BY_CODEC = {0x00280004, 0x00280006, 0x00282110, 0x00282112,
                    0x00282114, 0x7FE00010, 0x7FE00001, 0x7FE00002}


# ---- helpers -----------------------------------------------------------------

def run(*argv):
    r = subprocess.run([str(a) for a in argv], capture_output=True, timeout=120)
    assert r.returncode == 0, (argv, r.stderr.decode(errors="replace"))
    return r


def parts(r):
    """[(headers (lowercase names), body)] of a multipart/related answer."""
    ct = r.headers["Content-Type"]
    assert ct.startswith("multipart/related"), ct
    boundary = re.search(r'boundary="?([^";]+)', ct).group(1).encode()
    body = r.content
    assert body.rstrip().endswith(b"--" + boundary + b"--"), "no close delimiter"
    out = []
    segs = body.split(b"--" + boundary)
    for seg in segs[1:]:
        if seg.startswith(b"--"):
            break
        head, _, data = seg.partition(b"\r\n\r\n")
        hdrs = {}
        for line in head.decode().strip().split("\r\n"):
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        assert data.endswith(b"\r\n")
        out.append((hdrs, data[:-2]))
    return out


def ts_of(hdrs):
    m = re.search(r"transfer-syntax=([0-9.]+)", hdrs["content-type"])
    return m.group(1) if m else None


DECOMPRESS = {
    RLE: lambda src, dst: run("dcmdrle", src, dst),
    JLS: lambda src, dst: run("dcmdjpls", src, dst),
    JLS_NEAR: lambda src, dst: run("dcmdjpls", src, dst),
    J2K: lambda src, dst: run("gdcmconv", "--raw", src, dst),
    J2K_ANY: lambda src, dst: run("gdcmconv", "--raw", src, dst),
}
for _ts in (JPEG_BASE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
            JPEG_SV1):
    DECOMPRESS[_ts] = lambda src, dst: run("dcmdjpeg", src, dst)
ENCAPSULATED = set(DECOMPRESS)


_decodable = {}


def decodable(path):
    """Can Agora's codecs decode this file at all (`agora transcode` to
    Explicit VR LE)?  Not: 12-bit JPEG Extended (README, "Not yet"), and
    DCMTK's JPEG-LS near-lossless of a 3x3 colour image, which CharLS
    refuses.  Only used to tell an expected 406 from a wrong one."""
    if path not in _decodable:
        out = path + ".ele-check"
        r = subprocess.run([AGORA, "transcode", "--ts", ELE, path, out],
                           capture_output=True, timeout=60)
        _decodable[path] = r.returncode == 0
        if os.path.exists(out):
            os.unlink(out)
    return _decodable[path]


# GDCM cannot decode JPEG 2000 with 16-bit colour (it fails on its own
# output) and pydicom's Pillow decoder gives 8 bits: no reference.
def j2k_reference_missing(d):
    return d.SamplesPerPixel == 3 and d.BitsAllocated > 8


def native(path, tmp):
    """pydicom data set of path with native little-endian pixel data:
    converted by DCMTK/GDCM first when pydicom has no decoder of its own
    for the syntax.  pydicom leaves 8-bit samples of a big-endian OW value
    in their swapped words (PS3.5 §8.1.1 and DCMTK swap each 16-bit word),
    so those go through dcmconv too."""
    d = pydicom.dcmread(str(path))
    ts = str(d.file_meta.TransferSyntaxUID)
    if ts == "1.2.840.10008.1.2.2" and d.get("BitsAllocated") == 8:
        out = os.path.join(str(tmp), "le-%s" % os.path.basename(str(path)))
        run("dcmconv", "+te", str(path), out)
        return pydicom.dcmread(out)
    if ts not in DECOMPRESS:
        return d
    out = os.path.join(str(tmp), "native-%s.dcm" % os.path.basename(str(path)))
    DECOMPRESS[ts](str(path), out)
    return pydicom.dcmread(out)


def pixels(d):
    """Frames x rows x columns [x samples] of a native data set, as pydicom
    decodes them (1-bit data unpacked)."""
    a = d.pixel_array
    n = int(d.get("NumberOfFrames", 1) or 1)
    return a.reshape((n,) + a.shape[-3 + (d.SamplesPerPixel == 1):]) \
        if n > 1 else a.reshape((1,) + a.shape)


def frame_array(d, data):
    """One octet-stream frame (little endian, laid out as the instance's
    Planar Configuration says) as numpy, colour by pixel."""
    rows, cols, spp = d.Rows, d.Columns, d.SamplesPerPixel
    if d.BitsAllocated == 1:
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        assert len(data) == (rows * cols + 7) // 8
        return bits[:rows * cols].reshape(rows, cols)
    dt = np.dtype("%s%d" % ("i" if d.PixelRepresentation else "u",
                            d.BitsAllocated // 8)).newbyteorder("<")
    a = np.frombuffer(data, dt)
    assert a.size == rows * cols * spp, (a.size, rows, cols, spp)
    if spp == 1:
        return a.reshape(rows, cols)
    if d.get("PlanarConfiguration", 0) == 1:
        return a.reshape(spp, rows, cols).transpose(1, 2, 0)
    return a.reshape(rows, cols, spp)


def same_pixels(got, want, lossy):
    got = got.astype(np.int64)
    want = want.astype(np.int64)
    assert got.shape == want.shape
    if lossy:
        span = max(1, int(want.max()) - int(want.min()))
        assert np.abs(got - want).mean() < 0.03 * span
    else:
        assert np.array_equal(got, want)


def value_le(el, big_endian):
    """An element's value as little-endian bytes where it is binary."""
    v = el.value
    if isinstance(v, bytes) and big_endian and el.VR in ("OW", "OL", "OF",
                                                         "OD", "OV"):
        unit = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}[el.VR]
        v = b"".join(v[i:i + unit][::-1] for i in range(0, len(v), unit))
    return v


def same_attributes(orig, got, skip=CHANGED_BY_CODEC):
    """Every top-level attribute of orig (but the pixel description a
    transcoder rewrites) is in got with the same value."""
    be = orig.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    for el in orig:
        if el.tag in skip or el.tag.group == 2 or el.tag.element == 0 \
                or el.tag == 0xFFFCFFFC:
            continue
        assert el.tag in got, "%s missing" % el.tag
        g = got[el.tag]
        if el.VR == "SQ":
            assert len(g.value) == len(el.value), el.tag
            continue
        assert value_le(g, False) == value_le(el, be), (el.tag, el.VR)


# ---- the archive ---------------------------------------------------------------

class Item:
    def __init__(self, name, path, lossy=False):
        self.name = name
        self.path = str(path)
        d = pydicom.dcmread(self.path, stop_before_pixels=True)
        self.ts = str(d.file_meta.TransferSyntaxUID)
        self.uid = d.SOPInstanceUID
        self.study = d.StudyInstanceUID
        self.series = d.SeriesInstanceUID
        self.lossy = lossy or self.ts in LOSSY
        self.has_pixels = "BitsAllocated" in d

    def url(self, base):
        return (f"{base}/dicom-web/studies/{self.study}/series/{self.series}"
                f"/instances/{self.uid}")


def relabel(src, dst, n):
    """A copy with its own SOP Instance UID, transfer syntax and encoding
    kept (dcmodify writes the syntax it read)."""
    shutil.copy(src, dst)
    uid = UID_ROOT + str(n)
    run("dcmodify", "-nb", "-m", "(0008,0018)=" + uid, dst)
    return dst


def multiframe_ct(dst, frames=3):
    """CT_small repeated (and varied) into a multi-frame image."""
    d = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    a = d.pixel_array
    stack = np.stack([np.roll(a, 7 * k, axis=1) for k in range(frames)])
    d.NumberOfFrames = frames
    d.PixelData = stack.astype(a.dtype).tobytes()
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    d.save_as(dst, write_like_original=False)
    return dst


def one_bit(dst, big_endian=False):
    """1-bit, 4 frames of 5 x 3 pixels: frames do not start on a byte
    (PS3.5 §8.1.1)."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=4 * 5 * 3).astype(np.uint8)
    d = Dataset()
    d.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    d.StudyInstanceUID = UID_ROOT + "100"
    d.SeriesInstanceUID = UID_ROOT + "100.1"
    d.PatientID = "BITS"
    d.Modality = "OT"
    d.Rows, d.Columns, d.NumberOfFrames = 5, 3, 4
    d.SamplesPerPixel = 1
    d.PhotometricInterpretation = "MONOCHROME2"
    d.BitsAllocated = d.BitsStored = 1
    d.HighBit = 0
    d.PixelRepresentation = 0
    packed = np.packbits(bits, bitorder="little").tobytes()
    d.PixelData = packed + b"\0" * (len(packed) % 2)
    d.file_meta = FileMetaDataset()
    d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2" if big_endian else ELE
    d.file_meta.MediaStorageSOPClassUID = d.SOPClassUID
    d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.is_little_endian = not big_endian
    d.is_implicit_VR = False
    d["PixelData"].VR = "OB"
    d.save_as(dst, write_like_original=False)
    return dst


def with_bulk_everywhere(dst, big_endian=False):
    """Values past the 1024-byte inline limit at the top level, in a
    private block, and nested five sequences deep (so BulkDataURIs have
    long tag paths); OW and OF values to check the byte order."""
    d = pydicom.dcmread(os.path.join(SAMPLES, "MR_small.dcm"))
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    rng = np.random.default_rng(3)
    d.add_new(0x00091010, "LO", "AGORA TEST")
    d.add_new(0x00091011, "OB", rng.bytes(3001) + b"\0")
    d.add_new(0x00091012, "UN", rng.bytes(2048))
    d.add_new(0x00283006, "US", list(range(600)))   # LUT Data, 1200 bytes
    d.add_new(0x54000110, "OW", rng.bytes(4096))     # Channel Minimum? (OB/OW)
    inner = Dataset()
    inner.add_new(0x00660016, "OF", np.arange(400, dtype="<f4").tobytes())
    inner.add_new(0x0040A160, "UT", "x" * 1500)
    for level in range(5):
        outer = Dataset()
        outer.add_new(0x0040A730, "SQ", pydicom.Sequence([inner]))
        outer.add_new(0x00091011, "OB", rng.bytes(1030 + 2 * level))
        inner = outer
    d.add_new(0x0040A730, "SQ", pydicom.Sequence([Dataset(), inner]))
    if big_endian:
        d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"
        d.is_little_endian = False
        d.is_implicit_VR = False
    d.save_as(dst, write_like_original=False)
    return dst


@pytest.fixture(scope="module")
def archive(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("wado")
    src = root / "src"
    src.mkdir()
    items = {}
    n = 0

    def add(name, path, **kw):
        nonlocal n
        n += 1
        dst = src / ("%03d-%s.dcm" % (n, name))
        relabel(path, dst, n)
        items[name] = Item(name, dst, **kw)

    for name, e in sorted(corpus.items()):
        if hasattr(e, "path"):
            add(name, e.path)
    for f in ["rtdose.dcm", "rtdose_expb.dcm", "liver_1frame.dcm",
              "liver_expb_1frame.dcm", "image_dfl.dcm", "SC_rgb_rle_2frame.dcm",
              "SC_rgb_rle_16bit_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "SC_rgb_jpeg_gdcm.dcm", "ExplVR_BigEnd.dcm", "JPEG2000.dcm",
              "MR_small_jp2klossless.dcm"]:
        add(f[:-4], os.path.join(SAMPLES, f))
    made = root / "made"
    made.mkdir()
    mf = multiframe_ct(str(made / "mf.dcm"))
    add("mf-native", mf)
    # several fragments per frame, with and without a Basic Offset Table
    run("dcmcrle", "+fs", "1", mf, made / "mf-rle-frag.dcm")
    add("mf-rle-fragments", made / "mf-rle-frag.dcm")
    run("dcmcjpls", "+fs", "1", mf, made / "mf-jls-frag.dcm")
    add("mf-jls-fragments", made / "mf-jls-frag.dcm")
    run("dcmcjpls", "+fs", "1", "-ot", mf, made / "mf-jls-frag-nobot.dcm")
    add("mf-jls-fragments-no-bot", made / "mf-jls-frag-nobot.dcm")
    ct = os.path.join(SAMPLES, "CT_small.dcm")
    run("gdcmconv", "--j2k", ct, made / "ct-j2k.dcm")
    run("gdcmconv", "--split", "2048", made / "ct-j2k.dcm",
        made / "ct-j2k-split.dcm")
    add("j2k-split", made / "ct-j2k-split.dcm")
    run("dcmcrle", "+fs", "1", ct, made / "ct-rle-frag.dcm")
    add("rle-fragments", made / "ct-rle-frag.dcm")
    # an Extended Offset Table (PS3.5 A.4, C.7.6.3.1.8)
    run("dcmcjpls", mf, made / "mf-jls.dcm")
    jl = pydicom.dcmread(str(made / "mf-jls.dcm"))
    frames = list(generate_pixel_data_frame(jl.PixelData, 3))
    px, eot, eot_len = encapsulate_extended(frames)
    jl.PixelData = px
    jl.ExtendedOffsetTable = eot
    jl.ExtendedOffsetTableLengths = eot_len
    jl.save_as(str(made / "mf-jls-eot.dcm"))
    add("mf-jls-eot", made / "mf-jls-eot.dcm")
    add("one-bit", one_bit(str(made / "bits.dcm")))
    add("one-bit-be", one_bit(str(made / "bits-be.dcm"), big_endian=True))
    add("bulk", with_bulk_everywhere(str(made / "bulk.dcm")))
    add("bulk-be", with_bulk_everywhere(str(made / "bulk-be.dcm"),
                                        big_endian=True))
    data = str(root / "data")
    r = agora("import", "--data", data, str(src))
    assert "rejected" not in r.stdout.split("summary")[0], r.stdout
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--cors-origin", ORIGIN)
    srv.base = f"http://127.0.0.1:{port}"
    srv.items = items
    srv.tmp = root
    yield srv
    assert srv.stop() == 0


def image_items(archive):
    return [i for i in archive.items.values() if i.has_pixels]


def stored_bytes(archive, item):
    """The blob as stored: what transfer-syntax=* must give back."""
    r = requests.get(item.url(archive.base), timeout=60, headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  'transfer-syntax=*'})
    assert r.status_code == 200, r.text
    (h, body), = parts(r)
    assert ts_of(h) == item.ts
    return body


# ---- instances: transfer syntax negotiation ------------------------------------

def test_as_stored_is_the_blob_unparsed(archive):
    for item in archive.items.values():
        body = stored_bytes(archive, item)
        assert body == open(item.path, "rb").read(), item.name


def test_default_is_explicit_vr_little_endian(archive, tmp_path):
    """No transfer-syntax parameter: Explicit VR Little Endian (PS3.18
    §8.7.3, Table 8.7.3-2), except lossy pixel data, sent as stored."""
    for item in archive.items.values():
        for accept in [None, 'multipart/related; type="application/dicom"',
                       "*/*", "multipart/related; type=application/dicom; "
                       "q=0.5, image/png"]:
            r = requests.get(item.url(archive.base), timeout=60,
                             headers={"Accept": accept} if accept else {})
            assert r.status_code == 200, (item.name, accept, r.text)
            (h, body), = parts(r)
            want = item.ts if item.lossy else ELE
            assert ts_of(h) == want, (item.name, accept)
            got = pydicom.dcmread(io.BytesIO(body))
            assert got.file_meta.TransferSyntaxUID == want
            orig = pydicom.dcmread(item.path)
            same_attributes(orig, got)
            if item.has_pixels and not item.lossy and accept is None:
                ref = native(item.path, tmp_path)
                for k, (a, b) in enumerate(zip(pixels(got), pixels(ref))):
                    same_pixels(a, b, False)


def test_single_part_instance(archive):
    """Accept: application/dicom without multipart, for one instance: a
    single-part body (PS3.18 §8.7, single-part payloads) — the stored
    bytes with transfer-syntax=*, Explicit VR Little Endian by default
    (lossy as stored).  A study asked for the same way is still multipart:
    it has more than one instance."""
    for item in archive.items.values():
        r = requests.get(item.url(archive.base), timeout=60, headers={
            "Accept": "application/dicom; transfer-syntax=*"})
        assert r.status_code == 200, (item.name, r.text)
        assert r.headers["Content-Type"] == \
            f"application/dicom; transfer-syntax={item.ts}", item.name
        assert r.content == open(item.path, "rb").read(), item.name
        r = requests.get(item.url(archive.base), timeout=60,
                         headers={"Accept": "application/dicom"})
        assert r.status_code == 200, (item.name, r.text)
        want = item.ts if item.lossy else ELE
        assert r.headers["Content-Type"] == \
            f"application/dicom; transfer-syntax={want}", item.name
        got = pydicom.dcmread(io.BytesIO(r.content))
        assert got.file_meta.TransferSyntaxUID == want
        same_attributes(pydicom.dcmread(item.path), got)
    studies = {}
    for item in archive.items.values():
        studies.setdefault(item.study, []).append(item)
    study, members = max(studies.items(), key=lambda kv: len(kv[1]))
    r = requests.get(f"{archive.base}/dicom-web/studies/{study}", timeout=120,
                     headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("multipart/related")
    assert len(parts(r)) == len(members)


def test_single_part_is_sent_with_sendfile(archive, tmp_path):
    """An instance sent as stored in one part goes out with sendfile(2):
    the blob's pages are never copied through the server's memory."""
    import time
    from test_durability import can_strace
    if not can_strace():
        pytest.skip("strace cannot trace here (ptrace refused)")
    item = next(iter(archive.items.values()))
    trace = str(tmp_path / "strace.out")
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=sendfile",
                               "-o", trace, "-p", str(archive.proc.pid)],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        r = requests.get(item.url(archive.base), timeout=60, headers={
            "Accept": "application/dicom; transfer-syntax=*"})
        time.sleep(0.3)
    finally:
        tracer.terminate()
        tracer.wait(10)
    assert r.status_code == 200 and r.content == open(item.path, "rb").read()
    sent = [int(m.group(1)) for m in re.finditer(
        r"sendfile.*\) = (\d+)", open(trace).read())]
    assert sum(sent) == len(r.content), sent


TARGETS = [ELE, RLE, JLS, J2K]


@pytest.mark.parametrize("target", TARGETS)
def test_transcode_lossless_keeps_pixels_and_attributes(archive, tmp_path,
                                                        target):
    """transfer-syntax=UID: the instance re-encoded in that syntax, pixels
    identical (pydicom, after DCMTK/GDCM decompress), every attribute kept
    but the pixel description (Photometric Interpretation, Planar
    Configuration)."""
    done = 0
    for item in image_items(archive):
        acc = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
        r = requests.get(item.url(archive.base), timeout=120,
                         headers={"Accept": acc})
        if r.status_code == 406:
            # what the codecs cannot do is refused, never sent otherwise
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.json()["error"] == "not acceptable"
            d = pydicom.dcmread(item.path, stop_before_pixels=True)
            assert not decodable(item.path) or (
                target != ELE and d.BitsAllocated in (1, 32)), item.name
            continue
        assert r.status_code == 200, (item.name, r.text)
        (h, body), = parts(r)
        assert ts_of(h) == target and h["content-type"].startswith(
            "application/dicom")
        p = tmp_path / ("%s-%s.dcm" % (item.name, target))
        p.write_bytes(body)
        got = pydicom.dcmread(str(p))
        assert got.file_meta.TransferSyntaxUID == target
        assert "LossyImageCompression" not in got or \
            got.LossyImageCompression == pydicom.dcmread(
                item.path, stop_before_pixels=True).get(
                    "LossyImageCompression")
        orig = pydicom.dcmread(item.path)
        same_attributes(orig, got)
        if target in (J2K,) and j2k_reference_missing(orig):
            continue
        ref = native(item.path, tmp_path)
        mine = native(p, tmp_path)
        for a, b in zip(pixels(mine), pixels(ref)):
            same_pixels(a, b, item.lossy)
        done += 1
    assert done >= 20


def test_lossy_only_when_named(archive, tmp_path):
    item = archive.items["SC_rgb-explicit"]
    acc = f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASE}'
    r = requests.get(item.url(archive.base), timeout=60, headers={"Accept": acc})
    assert r.status_code == 200, r.text
    (h, body), = parts(r)
    assert ts_of(h) == JPEG_BASE
    p = tmp_path / "lossy.dcm"
    p.write_bytes(body)
    got = pydicom.dcmread(str(p))
    assert got.LossyImageCompression == "01"
    assert "ISO_10918_1" in str(got.LossyImageCompressionMethod)
    same_pixels(pixels(native(p, tmp_path)),
                pixels(pydicom.dcmread(item.path)), True)
    # a 16-bit image cannot be baseline JPEG: 406, not something else
    ct = archive.items["CT_small-explicit"]
    r = requests.get(ct.url(archive.base), timeout=60, headers={"Accept": acc})
    assert r.status_code == 406 and "error" in r.json()


def test_preference_order_and_fallbacks(archive):
    item = archive.items["CT_small-explicit"]
    url = item.url(archive.base)
    acc = ('multipart/related; type="application/dicom"; '
           'transfer-syntax=1.2.840.10008.1.2.4.70; q=1, '
           'multipart/related; type="application/dicom"; '
           f'transfer-syntax={JLS}; q=0.9, '
           f'multipart/related; type="application/dicom"; transfer-syntax={RLE}; q=0.5')
    r = requests.get(url, timeout=60, headers={"Accept": acc})
    (h, _), = parts(r)
    assert ts_of(h) == JLS   # no JPEG lossless encoder: the next one
    acc = (f'multipart/related; type="application/dicom"; transfer-syntax={RLE}; q=0.4, '
           f'multipart/related; type="application/dicom"; transfer-syntax={J2K}; q=0.8')
    (h, _), = parts(requests.get(url, timeout=60, headers={"Accept": acc}))
    assert ts_of(h) == J2K
    # quoted or not, the same
    acc = f"multipart/related;type=application/dicom;transfer-syntax=\"{RLE}\""
    (h, _), = parts(requests.get(url, timeout=60, headers={"Accept": acc}))
    assert ts_of(h) == RLE


def test_not_acceptable_and_bad_accept(archive):
    item = archive.items["CT_small-explicit"]
    url = item.url(archive.base)
    for acc in ["image/png", "application/json",
                'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4',
                # Implicit VR Little Endian is not produced (PS3.18 §8.7.3)
                f'multipart/related; type="application/dicom"; transfer-syntax={IMPLICIT}',
                'multipart/related; type="image/jpeg"',
                "*/*;q=0"]:
        r = requests.get(url, timeout=30, headers={"Accept": acc})
        assert r.status_code == 406, acc
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"] == "not acceptable"
    for acc in ["multipart/related; type=", "text", "a/b; q=2", "a/b;;x=\"y",
                ", ".join(["a/b"] * 40)]:
        r = requests.get(url, timeout=30, headers={"Accept": acc})
        assert r.status_code == 400, acc
        assert "accept" in r.json()["detail"]
    # a stored Implicit VR file is still sent as it is when asked for so
    imp = archive.items["CT_small-implicit"]
    for acc in ['multipart/related; type="application/dicom"; transfer-syntax=*',
                f'multipart/related; type="application/dicom"; transfer-syntax={IMPLICIT}']:
        (h, b), = parts(requests.get(imp.url(archive.base), timeout=30,
                                     headers={"Accept": acc}))
        assert ts_of(h) == IMPLICIT and b == open(imp.path, "rb").read()


def test_study_level_mixes_syntaxes_per_part(archive):
    """One request, each part in its own negotiated syntax (PS3.18
    §8.7.8.2 note 1): lossy ones as stored, the others Explicit VR LE."""
    studies = {}
    for item in archive.items.values():
        studies.setdefault(item.study, []).append(item)
    study, members = max(studies.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 5
    r = requests.get(f"{archive.base}/dicom-web/studies/{study}", timeout=120)
    assert r.status_code == 200
    got = {}
    for h, body in parts(r):
        d = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True)
        got[d.SOPInstanceUID] = ts_of(h)
        assert d.file_meta.TransferSyntaxUID == ts_of(h)
    for item in members:
        assert got[item.uid] == (item.ts if item.lossy else ELE), item.name


# ---- frames -------------------------------------------------------------------

FRAME_FORMS = [
    ('multipart/related; type="application/octet-stream"', "native"),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', "stored"),
    ('multipart/related; type="image/jls"', JLS),
    ('multipart/related; type="image/jp2"', J2K),
    (f'multipart/related; type="image/dicom-rle"; transfer-syntax={RLE}', RLE),
    (f'multipart/related; type="image/jls"; transfer-syntax={JLS}', JLS),
]


def decode_frames(item, ts, frames, tmp):
    """Compressed frames wrapped in a copy of the instance, decoded by the
    reference tools: one array per frame."""
    d = pydicom.dcmread(item.path)
    if "NumberOfFrames" in d:
        d.NumberOfFrames = len(frames)
    d.PixelData = encapsulate(frames)
    d["PixelData"].VR = "OB"
    d.file_meta.TransferSyntaxUID = ts
    d.is_little_endian, d.is_implicit_VR = True, False
    if ts in (J2K,) and d.SamplesPerPixel == 3:
        d.PhotometricInterpretation = "YBR_RCT"
    if d.SamplesPerPixel == 3:
        d.PlanarConfiguration = 0
        if d.PhotometricInterpretation.startswith("YBR") and ts in (RLE, JLS):
            d.PhotometricInterpretation = "RGB"
    for tag in (0x7FE00001, 0x7FE00002):
        if tag in d:
            del d[tag]
    p = os.path.join(str(tmp), "frames-%s-%s.dcm" % (item.name, ts))
    d.save_as(p, write_like_original=False)
    return pixels(native(p, tmp))


def frames_of(item, archive, numbers, accept):
    url = item.url(archive.base) + "/frames/" + ",".join(map(str, numbers))
    return requests.get(url, timeout=120, headers={"Accept": accept})


def test_frames_every_layout_every_form(archive, tmp_path):
    """Each frame of each image, in each negotiated form, is the frame
    pydicom (after the reference decompressor) gives."""
    checked = 0
    for item in image_items(archive):
        d = pydicom.dcmread(item.path)
        encapsulated = item.ts in ENCAPSULATED
        if not decodable(item.path):
            # no decoder, here or in DCMTK: the stored frames only
            r = frames_of(item, archive, [1], FRAME_FORMS[1][0])
            (h, body), = parts(r)
            assert ts_of(h) == item.ts and body.rstrip(b"\0") == next(
                generate_pixel_data_frame(d.PixelData, 1)).rstrip(b"\0")
            assert frames_of(item, archive, [1], FRAME_FORMS[0][0]
                             ).status_code == 406
            continue
        ref = pixels(native(item.path, tmp_path))
        nframes = ref.shape[0]
        numbers = list(range(nframes, 0, -1)) + [1]   # any order, repeats
        for accept, form in FRAME_FORMS:
            r = frames_of(item, archive, numbers, accept)
            if r.status_code == 406:
                assert form != "stored", item.name
                assert not decodable(item.path) or (form != "native" and (
                    d.BitsAllocated in (1, 32) or str(
                        d.PhotometricInterpretation).endswith("422"))), \
                    (item.name, form, r.text)
                continue
            assert r.status_code == 200, (item.name, accept, r.text)
            ps = parts(r)
            assert len(ps) == len(numbers)
            for (h, body), n in zip(ps, numbers):
                if form == "native" or (form == "stored" and not encapsulated):
                    assert h["content-type"].startswith("application/octet-stream")
                    assert ts_of(h) == ELE
                    same_pixels(frame_array(d, body), ref[n - 1], item.lossy)
                elif form == "stored":
                    assert ts_of(h) == item.ts
                    stored = list(generate_pixel_data_frame(d.PixelData, nframes))
                    assert body.rstrip(b"\0") == stored[n - 1].rstrip(b"\0"), item.name
                elif not (form == J2K and j2k_reference_missing(d)):
                    assert ts_of(h) == form, (item.name, h)
                    mine = decode_frames(item, form, [body], tmp_path)[0]
                    same_pixels(mine, ref[n - 1], item.lossy)
            checked += 1
    assert checked >= 150


def test_frames_defaults(archive):
    """No Accept: uncompressed little endian, except lossy frames, which
    stay as stored (PS3.18 §8.7.3.3); a media type without transfer-syntax
    is its default syntax (Table 8.7.3-5)."""
    lossless = archive.items["CT_small-jpeg-ls"]
    (h, _), = parts(frames_of(lossless, archive, [1], "*/*"))
    assert h["content-type"].startswith("application/octet-stream") and ts_of(h) == ELE
    lossy = archive.items["JPEG2000"]
    r = requests.get(lossy.url(archive.base) + "/frames/1", timeout=30)
    (h, _), = parts(r)
    assert h["content-type"].startswith("image/jp2") and ts_of(h) == J2K_ANY
    assert 'type="image/jp2"' in r.headers["Content-Type"]
    (h, _), = parts(frames_of(lossless, archive, [1], "multipart/related; type=image/jls"))
    assert ts_of(h) == JLS
    # type=* is whatever is stored
    for acc in ["multipart/related; type=*", 'multipart/related; type="*"']:
        (h, _), = parts(frames_of(lossless, archive, [1], acc))
        assert h["content-type"].startswith("image/jls") and ts_of(h) == JLS
    # image/jpeg's default (JPEG lossless SV1) cannot be made here, and
    # the stored frames are not JPEG: 406
    r = frames_of(lossless, archive, [1], 'multipart/related; type="image/jpeg"')
    assert r.status_code == 406
    # lossy JPEG-LS only when named (and not of signed pixels: codec)
    rgb = archive.items["SC_rgb-jpeg-ls"]
    (h, _), = parts(frames_of(rgb, archive, [1],
                              f'multipart/related; type="image/jls"; transfer-syntax={JLS_NEAR}'))
    assert ts_of(h) == JLS_NEAR
    r = frames_of(lossless, archive, [1],
                  f'multipart/related; type="image/jls"; transfer-syntax={JLS_NEAR}')
    assert r.status_code == 406 and "signed" in r.json()["detail"]


def test_frame_errors(archive):
    item = archive.items["mf-native"]
    base = item.url(archive.base) + "/frames/"
    assert requests.get(base + "4", timeout=30).status_code == 404
    assert requests.get(base + "1,4", timeout=30).status_code == 404
    for bad in ["0", "x", "1,", ",1", "-1", "+1", "1;2", "99999999999"]:
        assert requests.get(base + bad, timeout=30).status_code in (400, 404), bad
    other = archive.items["MR_small-explicit"]
    wrong = (f"{archive.base}/dicom-web/studies/{other.study}/series/{item.series}"
             f"/instances/{item.uid}/frames/1")
    assert requests.get(wrong, timeout=30).status_code == 404
    rt = archive.items["rtplan-explicit"]
    assert requests.get(rt.url(archive.base) + "/frames/1", timeout=30).status_code == 404


# ---- bulk data ----------------------------------------------------------------

def bulk_uris(doc, path=()):
    for tag, el in doc.items():
        if "BulkDataURI" in el:
            yield path + (tag,), el["BulkDataURI"]
        for k, item in enumerate(el.get("Value", [])) if el.get("vr") == "SQ" else []:
            yield from bulk_uris(item, path + (tag, k))


def element_at(ds, path):
    for i in range(0, len(path) - 1, 2):
        ds = ds[int(path[i], 16)].value[path[i + 1]]
    return ds[int(path[-1], 16)]


def test_every_bulk_data_uri_resolves(archive, tmp_path):
    """Walk the metadata of several instances (sequences five deep,
    private blocks, big endian, deflated, encapsulated) and fetch every
    BulkDataURI: the value's little-endian bytes; pixel data as frames."""
    names = ["bulk", "bulk-be", "CT_small-deflated", "CT_small-bigendian",
             "rtstruct-explicit", "waveform_ecg-explicit", "CT_small-rle",
             "mf-jls-fragments", "rtdose_expb", "one-bit", "MR_small-j2k",
             "j2k-split", "image_dfl"]
    names = [n for n in names if n in archive.items]
    assert len(names) >= 11
    seen = 0
    deep = 0
    for name in names:
        item = archive.items[name]
        r = requests.get(item.url(archive.base) + "/metadata", timeout=30)
        assert r.status_code == 200
        (doc,) = r.json()
        orig = pydicom.dcmread(item.path)
        be = orig.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
        for path, uri in bulk_uris(doc):
            assert uri.startswith(f"/dicom-web/studies/{item.study}/series/")
            r = requests.get(archive.base + uri, timeout=60)
            assert r.status_code == 200, (name, uri, r.text)
            ps = parts(r)
            if path == ("7FE00010",):
                ref = pixels(native(item.path, tmp_path))
                assert len(ps) == ref.shape[0]
                for k, (h, body) in enumerate(ps):
                    if h["content-type"].startswith("application/octet-stream"):
                        same_pixels(frame_array(orig, body), ref[k], item.lossy)
            else:
                (h, body), = ps
                assert h["content-type"].startswith("application/octet-stream")
                el = element_at(orig, path)
                want = value_le(el, be)
                if isinstance(want, str):
                    want = want.encode()
                assert body.rstrip(b"\0 ") == want.rstrip(b"\0 "), (name, uri)
                deep = max(deep, len(path))
            seen += 1
    assert seen >= 20 and deep >= 11


def test_bulk_data_errors(archive):
    item = archive.items["bulk"]
    base = item.url(archive.base) + "/bulkdata/"
    for p in ["00100010x", "0040A730/9/00091011", "0040A730/x/00091011",
              "0040A730", "00091011/0", "12345678", "0040A730/1"]:
        assert requests.get(base + p, timeout=30).status_code == 404, p
    r = requests.get(base + "00091011", timeout=30, headers={"Accept": "image/jpeg"})
    assert r.status_code == 406


# ---- STOW-RS with application/dicom+json ----------------------------------------

def stow_json(archive, docs, bulk, study=None, boundary="mEtAbUlK"):
    """POST metadata (one part) and bulk parts [(location, content type,
    bytes)]; returns the response."""
    body = b""
    body += (f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\n"
             .encode() + json.dumps(docs).encode() + b"\r\n")
    for loc, ct, data in bulk:
        where = (f"Content-ID: <{loc[4:]}>" if loc.startswith("cid:")
                 else f"Content-Location: {loc}")
        body += (f"--{boundary}\r\nContent-Type: {ct}\r\n"
                 f"{where}\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    url = archive.base + "/dicom-web/studies" + (f"/{study}" if study else "")
    return requests.post(url, data=body, timeout=120, headers={
        "Content-Type": f'multipart/related; type="application/dicom+json"; '
                        f"boundary={boundary}",
        "Accept": "application/dicom+json"})


def to_json(d, bulk):
    """d as DICOM JSON with every binary value > 64 bytes as a BulkDataURI
    (its bytes appended to bulk)."""
    def handler(el):
        uri = "http://client.example/bulk/%s/%d" % (d.SOPInstanceUID, len(bulk))
        v = el.value
        bulk.append((uri, "application/octet-stream", v))
        return uri
    return d.to_json_dict(bulk_data_threshold=64,
                          bulk_data_element_handler=handler)


def fetch_stored(archive, d):
    url = (f"{archive.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}")
    r = requests.get(url, timeout=60, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert r.status_code == 200, r.text
    (h, body), = parts(r)
    return pydicom.dcmread(io.BytesIO(body))


def fresh(name):
    d = pydicom.dcmread(os.path.join(SAMPLES, name))
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    return d


def test_stow_json_uncompressed_and_nested_bulk(archive):
    d = pydicom.dcmread(archive.items["bulk"].path)
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    bulk = []
    doc = to_json(d, bulk)
    assert len(bulk) >= 8
    # one part named by Content-ID (a "cid:" BulkDataURI), the others by
    # Content-Location, absolute in the metadata
    old = doc["7FE00010"]["BulkDataURI"]
    doc["7FE00010"]["BulkDataURI"] = "cid:pixels@client.example"
    bulk = [("cid:pixels@client.example", c, v) if u == old else (u, c, v)
            for u, c, v in bulk]
    r = stow_json(archive, [doc], bulk)
    assert r.status_code == 200, r.text
    res = pydicom.Dataset.from_json(r.json())
    assert res.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == d.SOPInstanceUID
    got = fetch_stored(archive, d)
    assert got.file_meta.TransferSyntaxUID == ELE
    same_attributes(d, got, skip={0x00091012})   # UN keeps its bytes
    assert got.PixelData == d.PixelData
    assert got[0x00091012].value == d[0x00091012].value


def test_stow_json_compressed_pixel_data_frames(archive, tmp_path):
    """Pixel data as compressed bulk parts, one per frame (image/jls with
    its transfer syntax): stored encapsulated, frames as sent."""
    mf = archive.items["mf-jls-eot"]
    src = pydicom.dcmread(mf.path)
    frames = list(generate_pixel_data_frame(src.PixelData, 3))
    d = pydicom.dcmread(archive.items["mf-native"].path)
    d.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    bulk = []
    del d.PixelData
    doc = to_json(d, bulk)
    loc = "/client/pixels"
    doc["7FE00010"] = {"vr": "OB", "BulkDataURI": loc}
    for f in frames:
        bulk.append((loc, f"image/jls; transfer-syntax={JLS}", f))
    r = stow_json(archive, [doc], bulk)
    assert r.status_code == 200, r.text
    got = fetch_stored(archive, d)
    assert got.file_meta.TransferSyntaxUID == JLS
    assert [f.rstrip(b"\0") for f in generate_pixel_data_frame(got.PixelData, 3)] == \
        [f.rstrip(b"\0") for f in frames]
    # and the frames decode to the original pixels
    item = archive.items["mf-native"]
    url = (f"{archive.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}/frames/1,2,3")
    ps = parts(requests.get(url, timeout=60))
    ref = pixels(pydicom.dcmread(item.path))
    for k, (h, body) in enumerate(ps):
        same_pixels(frame_array(got, body), ref[k], False)


def test_stow_json_inconsistencies_are_refused_per_instance(archive):
    """Each refusal is one Failed SOP Sequence item naming the instance,
    with the PS3.18 Table I.2-2 reason; good instances of the same request
    are stored (202)."""
    good = fresh("CT_small.dcm")
    bulk = []
    docs = [to_json(good, bulk)]
    reasons = {}

    def bad(mutate, reason):
        d = fresh("CT_small.dcm")
        b = []
        doc = to_json(d, b)
        b2 = mutate(doc, b)
        docs.append(doc)
        bulk.extend(b2)
        reasons[d.SOPInstanceUID] = reason

    # a BulkDataURI no part answers
    bad(lambda doc, b: [x for x in b if x[0] != doc["7FE00010"]["BulkDataURI"]],
        0xC000)
    # pixel data shorter than Rows x Columns x Bits
    bad(lambda doc, b: [(u, c, v[:-2]) if u == doc["7FE00010"]["BulkDataURI"]
                        else (u, c, v) for u, c, v in b], 0xA900)
    # a compressed part in a syntax that is not one of its media type
    bad(lambda doc, b: [(u, f"image/jls; transfer-syntax={J2K}", v)
                        if u == doc["7FE00010"]["BulkDataURI"] else (u, c, v)
                        for u, c, v in b], 0xC122)
    # image/jls bytes that are not JPEG-LS
    bad(lambda doc, b: [(u, "image/jls", v) if u == doc["7FE00010"]["BulkDataURI"]
                        else (u, c, v) for u, c, v in b], 0xA900)
    # two compressed frames for a one-frame image
    jls = list(generate_pixel_data_frame(
        pydicom.dcmread(archive.items["CT_small-jpeg-ls"].path).PixelData, 1))[0]
    bad(lambda doc, b: [x for x in b if x[0] != doc["7FE00010"]["BulkDataURI"]]
        + [(doc["7FE00010"]["BulkDataURI"], "image/jls", jls)] * 2, 0xA900)
    r = stow_json(archive, docs + [{"00100010": {"vr": "XX"}}], bulk)
    assert r.status_code == 202, r.text
    res = pydicom.Dataset.from_json(r.json())
    assert [x.ReferencedSOPInstanceUID for x in res.ReferencedSOPSequence] == \
        [good.SOPInstanceUID]
    failed = {x.get("ReferencedSOPInstanceUID", ""): x.FailureReason
              for x in res.FailedSOPSequence}
    for uid, reason in reasons.items():
        assert failed.get(uid) == reason, (uid, failed)
    assert failed.get("") == 0xC000   # the JSON that is no data set
    fetch_stored(archive, good)
    for uid in reasons:   # nothing of a refused instance was kept
        r = requests.get(f"{archive.base}/dicom-web/instances",
                         params={"SOPInstanceUID": uid}, timeout=30)
        assert r.status_code == 200 and r.json() == []
    # nothing usable at all: 409; no metadata part: 400
    r = stow_json(archive, [{"00080018": {"vr": "UI", "Value": ["1.2.3"]}}], [])
    assert r.status_code == 409
    body = b"--b\r\nContent-Type: application/octet-stream\r\n\r\nxx\r\n--b--\r\n"
    r = requests.post(archive.base + "/dicom-web/studies", data=body, timeout=30,
                      headers={"Content-Type": 'multipart/related; '
                               'type="application/dicom+json"; boundary=b'})
    assert r.status_code == 400


def test_stow_json_study_must_match(archive):
    d = fresh("MR_small.dcm")
    bulk = []
    r = stow_json(archive, [to_json(d, bulk)], bulk, study="1.2.3.4")
    assert r.status_code == 409
    res = pydicom.Dataset.from_json(r.json())
    assert res.FailedSOPSequence[0].FailureReason == 0xA900


# ---- gzip and CORS ------------------------------------------------------------

def test_gzip_json_when_accepted(archive):
    item = archive.items["bulk"]
    url = f"{archive.base}/dicom-web/studies/{item.study}/metadata"
    plain = requests.get(url, timeout=30, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    raw = requests.get(url, timeout=30, stream=True,
                       headers={"Accept-Encoding": "gzip"}).raw
    zipped = raw.read(decode_content=False)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in raw.headers["Vary"]
    assert json.loads(gzip.decompress(zipped)) == plain.json()
    assert len(zipped) * 4 < len(plain.content)
    q = requests.get(archive.base + "/dicom-web/studies", timeout=30,
                     headers={"Accept-Encoding": "br, gzip;q=0.5"})
    assert q.headers.get("Content-Encoding") == "gzip" and len(q.json()) >= 2
    q = requests.get(archive.base + "/dicom-web/studies", timeout=30,
                     headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in q.headers


def test_cors_for_configured_origins(archive):
    url = archive.base + "/dicom-web/studies"
    r = requests.get(url, timeout=30, headers={"Origin": ORIGIN})
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    assert "Accept" in r.headers["Access-Control-Allow-Headers"]
    r = requests.get(url + "/1.2.3", timeout=30, headers={"Origin": ORIGIN})
    assert r.status_code == 404 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = requests.get(url, timeout=30, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(archive.base + "/healthz", timeout=30, headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers   # /dicom-web only
    r = requests.options(url, timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    assert int(r.headers["Access-Control-Max-Age"]) > 0


def test_cors_default_is_same_origin_and_preflight_needs_no_login(tmp_path):
    data = str(tmp_path / "d")
    port = free_port()
    srv = Server(data, "--http-port", str(port))
    try:
        r = requests.get(f"http://127.0.0.1:{port}/dicom-web/studies", timeout=30,
                         headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        srv.stop()
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--cors-origin", ORIGIN,
                 "--cors-origin", "http://localhost:3000", anonymous=False)
    try:
        base = f"http://127.0.0.1:{port}/dicom-web/studies"
        r = requests.options(base, timeout=30, headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = requests.get(base, timeout=30, headers={"Origin": ORIGIN})
        assert r.status_code == 401   # the request itself still needs a login
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    finally:
        srv.stop()
    for bad in ["viewer.example.org", "https://a/b", "https://a, https://b", ""]:
        r = subprocess.run([AGORA, "serve", "--data", data, "--cors-origin",
                            bad], capture_output=True, timeout=30)
        assert r.returncode == 2, bad
