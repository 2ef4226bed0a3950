"""C-FIND and QIDO-RS keys the index does not hold (PS3.4 C.2.2.2,
C.4.1.1.3.1): return keys are filled from each instance's metadata instead
of coming back empty, and matching keys — sequence matching (C.2.2.2.6)
included — filter the matches, with exact paging."""
import os

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from test_dimse import Server, agora, free_port
from test_find import SAMPLES, find, responses

STUDY = "1.2.826.0.1.3680043.10.1447.88.{}"


def make(folder):
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    k = 0
    for st, code in ((1, "CT123"), (2, "MR456"), (3, "CT123")):
        for i in range(1, 4):
            k += 1
            d = base.copy()
            d.PatientID = f"PM{st}"
            d.StudyInstanceUID = STUDY.format(st)
            d.SeriesInstanceUID = STUDY.format(st) + ".1"
            d.SOPInstanceUID = STUDY.format(st) + f".1.{i}"
            d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
            d.InstanceNumber = i
            d.ImageComments = "bright contrast" if i == 2 else "plain"
            d.SliceThickness = 1.25 * i
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "99LOCAL"
            item.CodeMeaning = "Procedure " + code
            d.ProcedureCodeSequence = Sequence([item])
            d.save_as(os.path.join(folder, f"{k}.dcm"), write_like_original=False)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("findmeta")
    src = root / "src"
    src.mkdir()
    make(str(src))
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    port = free_port()
    s = Server(data, "--http-port", str(port))
    s.base = f"http://127.0.0.1:{port}"
    yield s
    s.stop()


def test_non_indexed_return_keys_have_values(srv):
    rc, out = find(srv, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY.format(1)}",
                   f"SeriesInstanceUID={STUDY.format(1)}.1", "SOPInstanceUID",
                   "SliceThickness", "ImageComments", extra=["-v"])
    assert rc == 0, out
    got = {r["00080018"]: (r["00180050"], r["00204000"]) for r in responses(out)}
    assert got[STUDY.format(1) + ".1.1"] == ("1.25", "plain")
    assert got[STUDY.format(1) + ".1.2"] == ("2.5", "bright contrast")


def test_matching_on_a_non_indexed_key(srv):
    rc, out = find(srv, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY.format(2)}",
                   f"SeriesInstanceUID={STUDY.format(2)}.1", "SOPInstanceUID",
                   "ImageComments=*bright*", extra=["-v"])
    assert rc == 0, out
    rs = responses(out)
    assert [r["00080018"] for r in rs] == [STUDY.format(2) + ".1.2"]


def test_sequence_matching_at_study_level(srv):
    rc, out = find(srv, "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                   "ProcedureCodeSequence[0].CodeValue=CT123",
                   "ProcedureCodeSequence[0].CodeMeaning", extra=["-v"])
    assert rc == 0, out
    rs = responses(out)
    assert sorted(r["0020000D"] for r in rs) == [STUDY.format(1), STUDY.format(3)]
    assert "Procedure CT123" in out       # the item's requested key came back
    rc, out = find(srv, "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                   "ProcedureCodeSequence[0].CodeValue=NOPE", extra=["-v"])
    assert responses(out) == []


def test_qido_paging_after_metadata_matching(srv):
    url = srv.base + "/dicom-web/instances"
    seen = []
    for off in range(4):
        r = requests.get(url, params={"ImageComments": "bright*", "limit": 1,
                                      "offset": off, "includefield": "00204000"}, timeout=30)
        assert r.status_code == 200
        seen += [m["00080018"]["Value"][0] for m in r.json()]
    assert sorted(seen) == sorted(STUDY.format(s) + ".1.2" for s in (1, 2, 3))
