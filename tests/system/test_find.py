"""C-FIND SCP (PS3.4 C.4.1) against DCMTK's findscu: both information
models, every level, each kind of matching, refusals, cancel."""
import os
import re
import subprocess

import pydicom
import pytest

from test_dimse import ENV, Server, agora, dcmtk

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"


def make_corpus(folder):
    """Three patients, four studies, known attributes (written by pydicom)."""
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    rows = [
        # patient id, name, study n, date, modality, series n, instances
        ("P1", "Smith^John", 1, "20200115", "CT", 1, 3),
        ("P1", "Smith^John", 2, "20210610", "MR", 1, 2),
        ("P2", "Smithers^Anna", 3, "20210611", "CT", 2, 2),
        ("P3", "Müller^Jürgen", 4, "20221231", "US", 1, 1),
    ]
    uids = {}
    k = 0
    for pid, name, st, date, mod, nser, ninst in rows:
        study = f"1.2.826.0.1.3680043.10.1447.99.5.{st}"
        uids.setdefault("studies", []).append(study)
        for se in range(1, nser + 1):
            series = f"{study}.{se}"
            for i in range(1, ninst + 1):
                k += 1
                d = base.copy()
                d.SpecificCharacterSet = "ISO_IR 192"
                d.PatientID = pid
                d.PatientName = name
                d.StudyInstanceUID = study
                d.StudyDate = date
                d.StudyTime = "101500"
                d.AccessionNumber = f"ACC{st}"
                d.Modality = mod
                d.SeriesInstanceUID = series
                d.SeriesNumber = se
                d.InstanceNumber = i
                d.SOPInstanceUID = f"{series}.{i}"
                d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
                d.save_as(os.path.join(folder, f"{k}.dcm"), write_like_original=False)
    return uids


def serve_corpus(root, make):
    """make(folder) writes the files; they are imported into a new archive
    that knows the SCU node, and a server is started on it."""
    src = root / "src"
    src.mkdir()
    make(src)
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    return Server(data)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = serve_corpus(tmp_path_factory.mktemp("find"),
                     lambda src: make_corpus(str(src)))
    yield s
    s.stop()


def find(srv, *keys, model="-S", extra=()):
    args = ["findscu", model, "-aet", "SCU", "-aec", "AGORA", *extra]
    for k in keys:
        args += ["-k", k]
    args += ["127.0.0.1", str(srv.port)]
    r = subprocess.run(args, capture_output=True, env=ENV, timeout=60)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r.returncode, out


def responses(out):
    """The identifiers findscu printed, as lists of (tag, value)."""
    blocks, cur = [], None
    for line in out.splitlines():
        if "Find Response" in line and "Pending" in line:
            cur = []
            blocks.append(cur)
        m = re.match(r"I: \((\w{4}),(\w{4})\) \w\w (.*?)\s+#", line)
        if m and cur is not None:
            v = m.group(3)
            v = v[1:-1] if v.startswith("[") else ("" if v.startswith("(no value") else v)
            cur.append((f"{m.group(1)}{m.group(2)}".upper(), v.rstrip()))
    return [dict(b) for b in blocks]


def final_status(out):
    m = re.search(r"Received Final Find Response \((.*?)\)", out)
    return m.group(1) if m else None


def test_study_by_patient_id(srv):
    rc, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientID=P1",
                   "StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances",
                   extra=["-v"])
    assert rc == 0, out
    rs = responses(out)
    assert len(rs) == 2
    assert {r["00080020"] for r in rs} == {"20200115", "20210610"}
    assert sorted(r["00201208"] for r in rs) == ["2", "3"]
    assert final_status(out) == "Success"


def test_name_wildcard_is_exact_case_by_default(srv):
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientName=Smith*",
                  "StudyInstanceUID", extra=["-v"])
    assert len(responses(out)) == 3     # Smith^John x2, Smithers^Anna
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientName=smith*",
                  "StudyInstanceUID", extra=["-v"])
    assert len(responses(out)) == 0
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientName=Smith?John",
                  "StudyInstanceUID", extra=["-v"])
    assert len(responses(out)) == 2


def test_date_ranges(srv):
    cases = {"20210101-20211231": 2, "-20201231": 1, "20220101-": 1,
             "20210611": 1}
    for rng, n in cases.items():
        _, out = find(srv, "QueryRetrieveLevel=STUDY", f"StudyDate={rng}",
                      "StudyInstanceUID", extra=["-v"])
        assert len(responses(out)) == n, (rng, out)


def test_modalities_in_study(srv):
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=CT",
                  "StudyInstanceUID", extra=["-v"])
    assert len(responses(out)) == 2
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR\\US",
                  "StudyInstanceUID", extra=["-v"])
    assert len(responses(out)) == 2


def test_uid_list(srv):
    uids = "1.2.826.0.1.3680043.10.1447.99.5.1\\1.2.826.0.1.3680043.10.1447.99.5.4"
    _, out = find(srv, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uids}",
                  "PatientName", extra=["-v"])
    assert len(responses(out)) == 2


def test_series_and_image_levels(srv):
    study = "1.2.826.0.1.3680043.10.1447.99.5.3"
    _, out = find(srv, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}",
                  "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances",
                  extra=["-v"])
    rs = responses(out)
    assert len(rs) == 2 and all(r["00080060"] == "CT" for r in rs)
    series = f"{study}.2"
    _, out = find(srv, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                  f"SeriesInstanceUID={series}", "SOPInstanceUID",
                  "InstanceNumber", extra=["-v"])
    rs = responses(out)
    assert sorted(r["00080018"] for r in rs) == [f"{series}.1", f"{series}.2"]


def test_patient_root(srv):
    _, out = find(srv, "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
                  "NumberOfPatientRelatedStudies", model="-P", extra=["-v"])
    rs = responses(out)
    byid = {r["00100020"]: r for r in rs}
    assert set(byid) >= {"P1", "P2", "P3"}
    assert byid["P1"]["00201200"] == "2"
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientID=P2",
                  "StudyInstanceUID", model="-P", extra=["-v"])
    assert len(responses(out)) == 1


def test_utf8_names_and_charset(srv):
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "PatientID=P3", "PatientName",
                  "SpecificCharacterSet", extra=["-v"])
    rs = responses(out)
    assert len(rs) == 1
    assert rs[0]["00080005"] == "ISO_IR 192"
    assert rs[0]["00100010"] == "Müller^Jürgen"


def test_relational_and_bad_identifiers_refused(srv):
    # Study Root at SERIES level without the study's UID: hierarchical
    # search needs it (C.4.1.2.2.1).
    _, out = find(srv, "QueryRetrieveLevel=SERIES", "Modality=CT", extra=["-v"])
    assert final_status(out) == "Error: DataSetDoesNotMatchSOPClass", out
    _, out = find(srv, "QueryRetrieveLevel=SERIES",
                  "StudyInstanceUID=1.2.826.0.1.3680043.10.1447.99.5.1",
                  "PatientName=Smith^John", extra=["-v"])
    assert final_status(out) == "Error: DataSetDoesNotMatchSOPClass", out
    _, out = find(srv, "QueryRetrieveLevel=PATIENT", "PatientID", extra=["-v"])
    assert final_status(out) == "Error: DataSetDoesNotMatchSOPClass", out
    _, out = find(srv, "QueryRetrieveLevel=STUDY", "StudyDate=2021x", extra=["-v"])
    assert final_status(out) == "Error: DataSetDoesNotMatchSOPClass", out


def test_sql_metacharacters_match_literally(srv):
    for v in ["' OR 1=1 --", "P1' --", "%", "_", "\\\\"]:
        _, out = find(srv, "QueryRetrieveLevel=STUDY", f"PatientID={v}",
                      "StudyInstanceUID", extra=["-v"])
        assert len(responses(out)) == 0, v
        assert final_status(out) in ("Success", "Error: DataSetDoesNotMatchSOPClass")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """1,500 studies: enough that responses are still being produced when
    the SCU's C-CANCEL arrives."""
    root = tmp_path_factory.mktemp("big")
    src = root / "src"
    src.mkdir()
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"), stop_before_pixels=True)
    for i in range(1500):
        base.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1447.99.6.{i + 1}"
        base.SeriesInstanceUID = base.StudyInstanceUID + ".1"
        base.SOPInstanceUID = base.StudyInstanceUID + ".1.1"
        base.PatientID = f"B{i}"
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        pydicom.dcmwrite(str(src / f"{i}.dcm"), base, write_like_original=False)
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    s = Server(data)
    yield s
    s.stop()


def test_cancel(big):
    _, out = find(big, "QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                  "PatientID", extra=["-v", "--cancel", "1"])
    assert final_status(out) == "Cancel: MatchingTerminatedDueToCancelRequest", out
    assert len(responses(out)) < 1500
    # the association and the server are fine afterwards
    rc, out = find(big, "QueryRetrieveLevel=STUDY", "PatientID=B7",
                   "StudyInstanceUID", extra=["-v"])
    assert rc == 0 and len(responses(out)) == 1


NAMES = ["Doe^Jane", "DOE^", "Doe", "doe^john", "Doe^J=ドウ^ジェーン",
         "Dobson^Al", "Doé^Zoé", "Doe Smith^Ann"]


def make_names(src):
    """One study per name in NAMES, patient ids N0, N1, ..."""
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    for k, name in enumerate(NAMES):
        d = base.copy()
        d.SpecificCharacterSet = "ISO_IR 192"
        d.PatientID = f"N{k}"
        d.PatientName = name
        uid = f"1.2.826.0.1.3680043.10.1447.99.6.{k + 1}"
        d.StudyInstanceUID = uid
        d.SeriesInstanceUID = uid + ".1"
        d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = uid + ".1.1"
        d.save_as(str(src / f"{k}.dcm"), write_like_original=False)


@pytest.fixture(scope="module")
def names_srv(tmp_path_factory):
    s = serve_corpus(tmp_path_factory.mktemp("names"), make_names)
    yield s
    s.stop()


@pytest.mark.parametrize("query,expected", [
    ("Doe*", {0, 2, 4, 7}),          # exact case; not DOE^, doe^john, Dobson
    ("DOE*", {1}),
    ("DOE^*", {1}),                  # '^*' matches the empty rest
    ("Doe^J*", {0, 4}),              # and the ideographic group after '='
    ("Do?^*", {0, 4, 6}),            # ? is one character, é too
    ("Doe ?mith^*", {7}),
    ("doe^*", {3}),
    ("Doé*", {6}),
    ("*oe*", {0, 2, 3, 4, 7}),
    ("Doe^J=ドウ*", {4}),
    ("Doe", {2}),                    # single value: the whole name
    ("DOE^", {1}),
    ("Doe^J=ドウ^ジェーン", {4}),
    ("Doe^Jane", {0}),
    ("doe^jane", set()),
])
def test_person_name_matching_edges(names_srv, query, expected):
    """PS3.4 C.2.2.2.1/C.2.2.2.4 on PatientName, exact case: the candidates
    come through the index of the normalised name (upper case, trailing '^'
    dropped) and the PN itself decides."""
    _, out = find(names_srv, "QueryRetrieveLevel=STUDY",
                  "SpecificCharacterSet=ISO_IR 192", f"PatientName={query}",
                  "PatientID", extra=["-v"])
    assert final_status(out) == "Success", out
    got = {int(r["00100020"][1:]) for r in responses(out)}
    assert got == expected, (query, out)
