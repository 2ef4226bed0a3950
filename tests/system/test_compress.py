"""Storage policy: compress uncompressed images on ingest (issue 5).
`agora serve --compress jpeg-ls|rle|j2k` stores native images re-encoded
losslessly (checked bit-exact before the original is dropped), leaves
everything else as received, and reports the saving in /metrics."""
import os
import re
import subprocess

import numpy as np
import pydicom
import pytest
import requests

from test_dimse import ENV, Server, agora, dcmtk, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
JLS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"


def stored_syntax(base, d):
    url = (f"{base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}")
    r = requests.get(url, headers={"Accept": "multipart/related; "
                                   "type=\"application/dicom\"; transfer-syntax=*"},
                     timeout=30)
    assert r.status_code == 200
    m = re.search(rb"transfer-syntax=([0-9.]+)", r.content[:2000])
    return m.group(1).decode(), r


def decoded(base, d):
    url = (f"{base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}")
    r = requests.get(url, headers={"Accept": "multipart/related; "
                                   "type=\"application/dicom\""}, timeout=30)
    body = r.content
    start = body.index(b"DICM") - 128
    import io
    return pydicom.dcmread(io.BytesIO(body[start:]))


@pytest.mark.parametrize("policy,ts", [("jpeg-ls", JLS), ("rle", RLE)])
def test_native_images_are_stored_compressed_and_bit_exact(tmp_path, policy, ts):
    data = str(tmp_path / "d")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    agora("import", "--data", data, os.path.join(SAMPLES, "JPEG2000.dcm"))
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--compress", policy)
    base = f"http://127.0.0.1:{port}"
    try:
        files = [os.path.join(SAMPLES, f) for f in
                 ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
        r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
                  str(srv.port), *files)
        assert r.returncode == 0, r.stderr
        for name in ("CT_small.dcm", "MR_small.dcm"):
            d = pydicom.dcmread(os.path.join(SAMPLES, name))
            got, _ = stored_syntax(base, d)
            assert got == ts, name
            back = decoded(base, d)
            assert np.array_equal(back.pixel_array, d.pixel_array), name
            assert back.PatientName == d.PatientName
        # not an image, and already compressed: as received
        plan = pydicom.dcmread(os.path.join(SAMPLES, "rtplan.dcm"))
        r = requests.get(f"{base}/dicom-web/studies/{plan.StudyInstanceUID}/metadata",
                         timeout=30)
        assert r.status_code == 200
        j2k = pydicom.dcmread(os.path.join(SAMPLES, "JPEG2000.dcm"))
        assert stored_syntax(base, j2k)[0] == j2k.file_meta.TransferSyntaxUID
        m = requests.get(base + "/metrics", timeout=10).text
        n = int(re.search(r"^agora_compressed_instances_total (\d+)$", m, re.M).group(1))
        saved = int(re.search(r"^agora_compressed_bytes_saved_total (\d+)$", m, re.M).group(1))
        assert n == 2 and saved > 0
    finally:
        srv.stop()


def test_unknown_policy_is_refused(tmp_path):
    r = subprocess.run([os.environ.get("AGORA_BIN") or "build/agora", "serve",
                        "--data", str(tmp_path / "d"), "--compress", "zip"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--compress" in r.stderr
