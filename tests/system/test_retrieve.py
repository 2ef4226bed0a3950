"""C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3) against DCMTK's getscu and
movescu, with a DCMTK storescp as the move destination."""
import filecmp
import os
import socket
import subprocess
import time

import pydicom
import pytest

from test_dimse import ENV, Server, agora, dcmtk, free_port
from test_find import make_corpus

STUDY = "1.2.826.0.1.3680043.10.1447.99.5.{}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieve")
    src = root / "src"
    src.mkdir()
    make_corpus(str(src))
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    scp_port = free_port()
    agora("node", "--data", data, "add", "DEST", "127.0.0.1", str(scp_port))
    agora("node", "--data", data, "add", "NOWHERE", "127.0.0.1", str(free_port()))
    out = root / "dest"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(out), str(scp_port)],
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", scp_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    srv = Server(data)
    yield {"srv": srv, "src": str(src), "dest": str(out), "root": root}
    srv.stop()
    scp.terminate()
    scp.wait(10)


def by_uid(folder):
    res = {}
    for f in os.listdir(folder):
        d = pydicom.dcmread(os.path.join(folder, f))
        res[d.SOPInstanceUID] = d
    return res


def test_get_study(world, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    r = dcmtk("getscu", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY.format(1)}",
              "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0, r.stderr
    got = by_uid(str(out))
    assert len(got) == 3
    sent = {d.SOPInstanceUID: d for d in
            (pydicom.dcmread(os.path.join(world["src"], f)) for f in os.listdir(world["src"]))}
    for uid, d in got.items():
        assert d.PixelData == sent[uid].PixelData
        assert d.PatientName == sent[uid].PatientName


def test_get_series_and_image_levels(world, tmp_path):
    out = tmp_path / "g2"
    out.mkdir()
    st = STUDY.format(3)
    r = dcmtk("getscu", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={st}",
              "-k", f"SeriesInstanceUID={st}.2", "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0, r.stderr
    assert set(by_uid(str(out))) == {f"{st}.2.1", f"{st}.2.2"}
    out3 = tmp_path / "g3"
    out3.mkdir()
    r = dcmtk("getscu", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(out3),
              "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={st}",
              "-k", f"SeriesInstanceUID={st}.1", "-k", f"SOPInstanceUID={st}.1.2",
              "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0, r.stderr
    assert set(by_uid(str(out3))) == {f"{st}.1.2"}


def test_get_patient_root(world, tmp_path):
    out = tmp_path / "gp"
    out.mkdir()
    r = dcmtk("getscu", "-P", "-aet", "SCU", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P1",
              "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(out)) == 5


def test_move_to_storescp(world):
    st = STUDY.format(2)
    r = dcmtk("movescu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-aem", "DEST",
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={st}",
              "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0, r.stderr
    assert "Final Move Response (Success)" in r.stderr
    got = by_uid(world["dest"])
    assert {f"{st}.1.1", f"{st}.1.2"} <= set(got)


def test_move_unknown_destination(world):
    r = dcmtk("movescu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-aem", "UNKNOWN",
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY.format(1)}",
              "127.0.0.1", str(world["srv"].port))
    assert "MoveDestinationUnknown" in r.stderr, r.stderr


def test_move_destination_down_fails_every_suboperation(world):
    r = dcmtk("movescu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-aem", "NOWHERE",
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY.format(1)}",
              "127.0.0.1", str(world["srv"].port))
    # A702: refused, out of resources, unable to perform sub-operations
    assert "Final Move Response (Refused: OutOfResourcesSubOperations)" in r.stderr, \
        r.stderr


def test_retrieve_of_nothing_succeeds_empty(world, tmp_path):
    out = tmp_path / "none"
    out.mkdir()
    r = dcmtk("getscu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3.4.5.6.7",
              "127.0.0.1", str(world["srv"].port))
    assert r.returncode == 0
    assert os.listdir(out) == []


def test_retrieve_without_unique_key_refused(world, tmp_path):
    r = dcmtk("getscu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-od", str(tmp_path),
              "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY.format(1)}",
              "127.0.0.1", str(world["srv"].port))
    assert "DataSetDoesNotMatchSOPClass" in r.stderr or "Failed" in r.stderr, r.stderr


def test_move_decompresses_for_an_uncompressed_only_peer(tmp_path):
    """storescp accepts only uncompressed syntaxes by default: an RLE
    instance is decoded for it (PS3.4 B.4.1), pixels bit-exact with dcmdrle."""
    src = os.path.join("/usr/lib/python3/dist-packages/pydicom/data/test_files",
                       "MR_small_RLE.dcm")
    data = str(tmp_path / "d")
    agora("import", "--data", data, src)
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    port = free_port()
    agora("node", "--data", data, "add", "PLAIN", "127.0.0.1", str(port))
    out = tmp_path / "out"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "PLAIN", "-od", str(out), str(port)],
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = Server(data)
    try:
        time.sleep(0.3)
        d = pydicom.dcmread(src)
        r = dcmtk("movescu", "-v", "-S", "-aet", "SCU", "-aec", "AGORA", "-aem", "PLAIN",
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={d.StudyInstanceUID}",
                  "127.0.0.1", str(srv.port))
        assert "Final Move Response (Success)" in r.stderr, r.stderr
        (got,) = [pydicom.dcmread(os.path.join(out, f)) for f in os.listdir(out)]
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        ref = tmp_path / "ref.dcm"
        subprocess.run(["dcmdrle", src, str(ref)], check=True, capture_output=True)
        assert got.PixelData == pydicom.dcmread(str(ref)).PixelData
    finally:
        srv.stop()
        scp.terminate()
        scp.wait(10)
