"""HTJ2K (High-Throughput JPEG 2000, PS3.5 §8.2.4, transfer syntaxes
1.2.840.10008.1.2.4.201/.202/.203) decoded through OpenJPEG 2.5: codestreams
made by OpenJPH's ojph_compress (Debian openjph-tools), wrapped in DICOM by
pydicom, must come back bit-exact from `agora transcode` and from WADO-RS
frames of a running server."""
import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from test_dimse import Server, agora, free_port

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"

pytestmark = pytest.mark.skipif(shutil.which("ojph_compress") is None,
                                reason="openjph-tools is not installed")


def codestream(tmp, img):
    src = tmp / ("in.ppm" if img.ndim == 3 else "in.pgm")
    with open(src, "wb") as f:
        if img.ndim == 3:
            f.write(b"P6\n%d %d\n255\n" % (img.shape[1], img.shape[0]))
            f.write(img.astype(np.uint8).tobytes())
        else:
            f.write(b"P5\n%d %d\n65535\n" % (img.shape[1], img.shape[0]))
            f.write(img.astype(">u2").tobytes())
    out = tmp / "out.j2c"
    subprocess.run(["ojph_compress", "-i", str(src), "-o", str(out),
                    "-reversible", "true"], check=True, capture_output=True,
                   timeout=60)
    return out.read_bytes()


def wrap(path, img, stream):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = J2K_LOSSLESS   # patched below
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "HT1", "High^Throughput", "OT"
    ds.Rows, ds.Columns = img.shape[0], img.shape[1]
    color = img.ndim == 3
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8 if color else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].is_undefined_length = True
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(path, write_like_original=False)
    # This pydicom does not know the HTJ2K UIDs: written as JPEG 2000, then
    # the Transfer Syntax UID (0002,0010) and the group length patched.
    raw = bytearray(open(path, "rb").read())
    old = b"\x02\x00\x10\x00UI" + bytes([len(J2K_LOSSLESS), 0]) + J2K_LOSSLESS.encode()
    at = raw.index(old)
    new_uid = HTJ2K_LOSSLESS.encode() + b"\0"
    raw[at:at + len(old)] = b"\x02\x00\x10\x00UI" + bytes([len(new_uid), 0]) + new_uid
    gl = raw.index(b"\x02\x00\x00\x00UL\x04\x00") + 8
    n = int.from_bytes(raw[gl:gl + 4], "little") + len(new_uid) - len(J2K_LOSSLESS)
    raw[gl:gl + 4] = n.to_bytes(4, "little")
    open(path, "wb").write(bytes(raw))
    return ds


def images():
    rng = np.random.default_rng(7)
    gray = (np.add.outer(np.arange(64), np.arange(64)) * 40 +
            rng.integers(0, 50, (64, 64))).astype(np.uint16)
    rgb = rng.integers(0, 255, (32, 48, 3)).astype(np.uint8)
    return [gray, rgb]


@pytest.mark.parametrize("which", [0, 1], ids=["gray16", "rgb8"])
def test_htj2k_transcodes_bit_exact(tmp_path, which):
    img = images()[which]
    f = tmp_path / "ht.dcm"
    wrap(f, img, codestream(tmp_path, img))
    assert HTJ2K_LOSSLESS in agora("dump", "--meta", str(f)).stdout
    out = tmp_path / "native.dcm"
    agora("transcode", "--ts", "1.2.840.10008.1.2.1", str(f), str(out))
    back = pydicom.dcmread(out)
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(back.pixel_array, img)


def test_htj2k_frames_over_wado(tmp_path):
    img = images()[0]
    f = tmp_path / "ht.dcm"
    ds = wrap(f, img, codestream(tmp_path, img))
    data = str(tmp_path / "data")
    agora("import", "--data", data, str(f))
    port = free_port()
    srv = Server(data, "--http-port", str(port))
    try:
        url = (f"http://127.0.0.1:{port}/dicom-web/studies/{ds.StudyInstanceUID}/"
               f"series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1")
        r = requests.get(url, headers={"Accept": "multipart/related; "
                                       "type=\"application/octet-stream\""}, timeout=60)
        assert r.status_code == 200, r.text
        assert img.astype("<u2").tobytes() in r.content
    finally:
        srv.stop()
