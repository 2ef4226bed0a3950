"""Staging (src/store/store.c): with few instances in flight, a small blob
is committed inside the index with its rows and written out to its file
later, when the store is idle.  These tests hold the blobs staged (a long
idle time) and show that every way out of the archive serves them, that
they survive kill -9, and that a failed write-out keeps them."""
import io
import os
import signal
import sqlite3
import time

import pydicom
import requests

from test_dicomweb import series_files
from test_dimse import SAMPLES, Server, agora, dcmtk, free_port, ls_instances

STUDY = "1.2.826.0.1.3680043.10.1447.99.91"
HOLD = {**os.environ, "AGORA_ADMIN_PASSWORD": "admin-password-1",
        "AGORA_SPILL_IDLE_MS": "600000"}


def blob_files(data):
    n = 0
    for _dir, _sub, names in os.walk(os.path.join(data, "blobs")):
        n += sum(1 for x in names if not x.endswith(".tmp"))
    return n


def staged(data):
    db = sqlite3.connect(f"file:{data}/index.sqlite?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM staged_blobs").fetchone()[0]
    finally:
        db.close()


def store(srv, files):
    r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
              str(srv.port), *files)
    assert r.returncode == 0, r.stderr


def test_staged_instances_are_served_and_survive_kill(tmp_path):
    files = series_files(tmp_path, STUDY, 12)   # CT_small copies, 39 KB each
    data = str(tmp_path / "data")
    http = free_port()
    srv = Server(data, "--accept-unknown-ae", "--http-port", str(http), env=HOLD)
    store(srv, files)
    # one association, one instance at a time: all staged, no file yet
    assert staged(data) == 12
    assert blob_files(data) == 0
    # WADO-RS serves the staged bytes as they were sent
    uid = f"{STUDY}.1.5"
    w = requests.get(f"http://127.0.0.1:{http}/dicom-web/studies/{STUDY}/series/"
                     f"{STUDY}.1/instances/{uid}", timeout=30)
    assert w.status_code == 200
    boundary = w.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    part = w.content.split(b"--" + boundary.encode())[1].split(b"\r\n\r\n", 1)[1]
    got = pydicom.dcmread(io.BytesIO(part[:-2]))
    sent = pydicom.dcmread(files[4])
    assert got.SOPInstanceUID == uid and got.PixelData == sent.PixelData
    assert (got.PatientName, got.InstanceNumber) == (sent.PatientName, 5)
    # C-GET streams them too
    out = tmp_path / "get"
    out.mkdir()
    r = dcmtk("getscu", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY}",
              "-k", f"SeriesInstanceUID={STUDY}.1", "127.0.0.1", str(srv.port))
    assert r.returncode == 0, r.stderr
    got = {pydicom.dcmread(str(out / f)).SOPInstanceUID for f in os.listdir(out)}
    assert got == {f"{STUDY}.1.{i + 1}" for i in range(12)}
    # kill -9 while staged: nothing acknowledged is lost
    srv.stop(signal.SIGKILL)
    assert staged(data) == 12
    assert ls_instances(data) == {f"{STUDY}.1.{i + 1}" for i in range(12)}
    # other commands read them where they are, and leave them there
    c = agora("check", "--data", data)
    assert c.returncode == 0 and "12" in c.stdout, c.stdout + c.stderr
    assert staged(data) == 12
    # an interrupted write-out may have left a torn file under a staged
    # name: the next serve drops it, then writes the staged copy out
    name = sqlite3.connect(f"file:{data}/index.sqlite?mode=ro", uri=True).execute(
        "SELECT name FROM staged_blobs LIMIT 1").fetchone()[0]
    torn = os.path.join(data, "blobs", name)
    os.makedirs(os.path.dirname(torn), exist_ok=True)
    with open(torn, "wb") as fh:
        fh.write(b"torn")
    srv = Server(data, "--accept-unknown-ae", env=HOLD)
    try:
        assert not os.path.exists(torn)
        assert staged(data) == 12
    finally:
        assert srv.stop() == 0     # a clean stop writes everything out
    assert staged(data) == 0
    assert blob_files(data) == 12
    c = agora("check", "--data", data)
    assert c.returncode == 0 and "12" in c.stdout, c.stdout


def test_written_out_when_idle_and_after_a_failed_write(tmp_path):
    """The first write-out fails (fault point blob.spill): the staged
    copies stay, the instances stay readable, and the retry writes them."""
    files = series_files(tmp_path, STUDY, 6)
    data = str(tmp_path / "data")
    http = free_port()
    env = {**HOLD, "AGORA_SPILL_IDLE_MS": "50", "AGORA_FAULT": "blob.spill:1"}
    srv = Server(data, "--accept-unknown-ae", "--http-port", str(http), env=env)
    try:
        store(srv, files)
        deadline = time.time() + 20
        while time.time() < deadline and staged(data) != 0:
            r = requests.get(f"http://127.0.0.1:{http}/dicom-web/studies/{STUDY}/"
                             f"series/{STUDY}.1/instances/{STUDY}.1.1", timeout=30)
            assert r.status_code == 200
            time.sleep(0.1)
        assert staged(data) == 0
        assert blob_files(data) == 6
    finally:
        srv.stop()
    log = open(data + ".log").read()
    assert "writing staged blobs out" in log
    assert agora("check", "--data", data).returncode == 0


def test_large_and_concurrent_instances_are_files(tmp_path):
    """Above 64 KiB an instance goes straight to its file."""
    data = str(tmp_path / "data")
    srv = Server(data, "--accept-unknown-ae", env=HOLD)
    try:
        small = os.path.join(SAMPLES, "MR_small.dcm")         # 9.8 KB
        large = os.path.join(SAMPLES, "SC_rgb_jpeg_dcmd.dcm")  # 197 KB
        assert os.path.getsize(large) > 64 << 10
        store(srv, [small, large])
        assert staged(data) == 1
        assert blob_files(data) == 1
    finally:
        srv.stop()
    assert staged(data) == 0          # a clean stop writes everything out
    assert blob_files(data) == 2
