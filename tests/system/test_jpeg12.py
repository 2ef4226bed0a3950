"""12-bit JPEG Extended (process 4, src/codec/jpeg12.c) against DCMTK.

DCMTK's dcmcjpeg encodes 12-bit extended sequential JPEG (`+ee +bt`) from
synthetic 12-bit images made here with pydicom; its dcmdjpeg (the IJG 6b
12-bit library, islow IDCT, fancy upsampling) decodes them; `agora
transcode` to Explicit VR Little Endian must give the same pixels, bit for
bit.  Grayscale (what matters: CT, MR, XA) at several sizes, qualities and
contents (smooth, noise that saturates, hard edges), multi-frame, signed
CT, and colour with 4:4:4, 4:2:2 and 4:2:0 sampling.  Plus pydicom's own
12-bit samples, a round trip through JPEG-LS, and the hidden
`agora codec-helper` refusing to run by hand.

    AGORA_BIN=$PWD/build/agora /usr/bin/python3 -m pytest -q \
        tests/system/test_jpeg12.py
"""
import os
import pathlib
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = pathlib.Path(__file__).resolve().parents[2]
AGORA = pathlib.Path(os.environ.get("AGORA_BIN", REPO / "build" / "agora"))
SAMPLES = pathlib.Path(
    "/usr/lib/python3/dist-packages/pydicom/data/test_files")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEGLS = "1.2.840.10008.1.2.4.80"


def run(*args, check=True):
    r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    if check:
        assert r.returncode == 0, (args, r.stderr.decode(errors="replace"))
    return r


def image12(path, rows, cols, spp=1, frames=1, kind="smooth", signed=False,
            seed=0):
    """A 12-bit (16 allocated) image: smooth phantom plus noise, uniform
    noise over the whole range, or hard-edged blocks of 0 and 4095."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    planes = []
    for f in range(frames):
        if kind == "smooth":
            img = (2000 + 1500 * np.sin(x / 17.0 + f) * np.cos(y / 23.0) +
                   rng.normal(0, 60, (rows, cols)))
        elif kind == "noise":
            img = rng.integers(0, 4096, (rows, cols))
        else:
            img = np.where(((x // 3 + y // 5) % 2) == 0, 0, 4095)
        img = np.clip(img, 0, 4095).astype(np.uint16)
        if spp == 3:
            img = np.stack([img, 4095 - img,
                            rng.integers(0, 4096, (rows, cols))],
                           axis=-1).astype(np.uint16)
        planes.append(img)
    arr = np.stack(planes)
    if signed:
        arr = (arr.astype(np.int16) - 2048).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Twelve^Bit"
    ds.PatientID = "J12"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "MONOCHROME2" if spp == 1 else "RGB"
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1 if signed else 0
    if signed:
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.tobytes()
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(str(path), write_like_original=False)


def frame_header(path):
    """(SOF marker, precision, sampling bytes) of the first frame."""
    from pydicom.encaps import generate_pixel_data_frame
    ds = pydicom.dcmread(str(path))
    fr = next(generate_pixel_data_frame(ds.PixelData))
    i = 2
    while i + 4 <= len(fr):
        m, n = fr[i + 1], fr[i + 2] << 8 | fr[i + 3]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            seg = fr[i + 4:i + 2 + n]
            return m, seg[0], [seg[7 + 3 * k] for k in range(seg[5])]
        i += 2 + n
    raise AssertionError("no frame header in %s" % path)


def agora_equals_dcmdjpeg(src, tmp):
    ours = tmp / "agora.dcm"
    theirs = tmp / "dcmdjpeg.dcm"
    r = run(AGORA, "transcode", "--ts", EXPLICIT_LE, src, ours, check=False)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    run("dcmdjpeg", src, theirs)
    a, b = pydicom.dcmread(str(ours)), pydicom.dcmread(str(theirs))
    assert a.file_meta.TransferSyntaxUID == EXPLICIT_LE
    pa, pb = a.pixel_array, b.pixel_array
    assert pa.shape == pb.shape
    assert np.array_equal(pa.astype(np.int64), pb.astype(np.int64)), \
        "%d samples differ" % int((pa != pb).sum())
    if a.SamplesPerPixel == 3:
        assert a.PhotometricInterpretation == "RGB"
    return a


GRAY = [(rows, cols, kind, q)
        for kind in ("smooth", "noise", "edges")
        for rows, cols in ((1, 1), (7, 9), (17, 33), (64, 200))
        for q in ("100", "90", "20")]


@pytest.mark.parametrize("rows,cols,kind,q", GRAY)
def test_gray_bit_exact(rows, cols, kind, q, tmp_path):
    native = tmp_path / "native.dcm"
    image12(native, rows, cols, kind=kind, seed=rows * 7 + cols)
    src = tmp_path / "jpeg12.dcm"
    run("dcmcjpeg", "+ee", "+bt", "+q", q, native, src)
    m, precision, _ = frame_header(src)
    assert (m, precision) == (0xC1, 12)     # SOF1, P = 12: process 4
    agora_equals_dcmdjpeg(src, tmp_path)


@pytest.mark.parametrize("opt,sampling", [("+s4", [0x11, 0x11, 0x11]),
                                          ("+s2", [0x21, 0x11, 0x11]),
                                          ("+n1", [0x22, 0x11, 0x11])])
@pytest.mark.parametrize("rows,cols", [(33, 50), (8, 8), (5, 3)])
def test_colour_bit_exact(opt, sampling, rows, cols, tmp_path):
    native = tmp_path / "native.dcm"
    image12(native, rows, cols, spp=3, kind="smooth", seed=rows)
    src = tmp_path / "jpeg12.dcm"
    run("dcmcjpeg", "+ee", "+bt", opt, native, src)
    assert frame_header(src)[2] == sampling
    agora_equals_dcmdjpeg(src, tmp_path)


def test_multiframe_and_signed(tmp_path):
    native = tmp_path / "native.dcm"
    image12(native, 48, 40, frames=3, signed=True, seed=3)
    src = tmp_path / "jpeg12.dcm"
    run("dcmcjpeg", "+ee", "+bt", native, src)
    a = agora_equals_dcmdjpeg(src, tmp_path)
    assert int(a.NumberOfFrames) == 3


@pytest.mark.parametrize("name", ["JPGExtended", "JPEG-lossy"])
def test_pydicom_samples(name, tmp_path):
    src = SAMPLES / (name + ".dcm")
    if not src.exists():
        pytest.skip("pydicom sample %s not installed" % name)
    assert frame_header(src)[1] == 12
    agora_equals_dcmdjpeg(src, tmp_path)


def test_round_trip_through_jpegls(tmp_path):
    """Decoded 12-bit JPEG re-encoded losslessly and back: unchanged."""
    src = SAMPLES / "JPGExtended.dcm"
    if not src.exists():
        pytest.skip("pydicom sample not installed")
    jls = tmp_path / "jls.dcm"
    back = tmp_path / "back.dcm"
    run(AGORA, "transcode", "--ts", JPEGLS, src, jls)
    run(AGORA, "transcode", "--ts", EXPLICIT_LE, jls, back)
    theirs = tmp_path / "dcmdjpeg.dcm"
    run("dcmdjpeg", src, theirs)
    assert np.array_equal(pydicom.dcmread(str(back)).pixel_array,
                          pydicom.dcmread(str(theirs)).pixel_array)


def test_corrupt_stream_is_an_error(tmp_path):
    native = tmp_path / "native.dcm"
    image12(native, 32, 32, seed=5)
    src = tmp_path / "jpeg12.dcm"
    run("dcmcjpeg", "+ee", "+bt", native, src)
    ds = pydicom.dcmread(str(src))
    from pydicom.encaps import decode_data_sequence, encapsulate
    frame = decode_data_sequence(ds.PixelData)[0]
    cut = frame[:len(frame) // 2]               # entropy-coded data cut
    ds.PixelData = encapsulate([cut + (b"\0" if len(cut) % 2 else b"")])
    bad = tmp_path / "bad.dcm"
    ds.save_as(str(bad))
    r = run(AGORA, "transcode", "--ts", EXPLICIT_LE, bad, tmp_path / "o.dcm",
            check=False)
    assert r.returncode != 0
    assert b"jpeg 12-bit" in r.stderr


def test_codec_helper_refuses_by_hand():
    r = run(AGORA, "codec-helper", check=False)
    assert r.returncode == 2
    assert b"internal command" in r.stderr
    usage = run(AGORA, "--help").stdout
    assert b"codec-helper" not in usage         # hidden
