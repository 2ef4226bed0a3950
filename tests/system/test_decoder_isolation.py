"""The server decodes compressed pixel data in sandboxed helper processes
(issue 5, decoding at arm's length): a frame request for a JPEG-LS instance
is answered through `agora codec-helper` children; --decode-in-process
turns that off."""
import os
import subprocess

import pydicom
import requests

from test_dimse import ENV, Server, agora, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"


def helpers_of(pid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == pid and b"codec-helper" in cmd:
            out.append(int(p))
    return out


def jls_study(tmp_path):
    src = tmp_path / "ct.dcm"
    jls = tmp_path / "ct-jls.dcm"
    d = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    d.save_as(str(src), write_like_original=False)
    subprocess.run(["dcmcjpls", str(src), str(jls)], check=True, env=ENV,
                   capture_output=True, timeout=60)
    return d, jls


def frame(srv, d):
    url = (f"{srv.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}/frames/1")
    r = requests.get(url, headers={"Accept": "multipart/related; "
                                   "type=\"application/octet-stream\""}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def test_frames_are_decoded_by_sandboxed_helpers(tmp_path):
    d, jls = jls_study(tmp_path)
    data = str(tmp_path / "data")
    agora("import", "--data", data, str(jls))
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--decoders", "1")
    srv.base = f"http://127.0.0.1:{port}"
    try:
        assert helpers_of(srv.proc.pid) == []          # started on first use
        r = frame(srv, d)
        assert d.PixelData in r.content                # decoded, bit-exact
        kids = helpers_of(srv.proc.pid)
        assert len(kids) == 1
        with open(f"/proc/{kids[0]}/status") as f:
            status = f.read()
        assert "Seccomp:\t2" in status                 # filter mode
        # a helper that dies is replaced; the next frame still decodes
        os.kill(kids[0], 9)
        assert d.PixelData in frame(srv, d).content
    finally:
        srv.stop()


def test_decode_in_process_when_asked(tmp_path):
    d, jls = jls_study(tmp_path)
    data = str(tmp_path / "data")
    agora("import", "--data", data, str(jls))
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--decode-in-process")
    srv.base = f"http://127.0.0.1:{port}"
    try:
        assert d.PixelData in frame(srv, d).content
        assert helpers_of(srv.proc.pid) == []
    finally:
        srv.stop()
