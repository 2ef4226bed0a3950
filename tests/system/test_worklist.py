"""Modality Worklist (PS3.4 K): items added through the REST API and
`agora worklist`, fetched by DCMTK's findscu -W the way a modality does,
matched like C-FIND, answered with the keys asked, scoped by department,
audited; bad items refused with a precise 400 and nothing kept.  And the
Modality Performed Procedure Step SCP (PS3.4 F.7) that moves items along."""
import datetime
import json
import os
import struct
import subprocess
import time

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from test_dimse import AGORA, Server, agora, dcmtk, free_port

PW = {"admin": "admin-password-1", "tech": "tech-password-1",
      "view": "view-password-1", "aud": "aud-password-1"}
# Dates around the real one: `agora serve` expires steps scheduled more
# than 30 days ago (--worklist-keep-days), so fixed dates would age out.
def day(offset):
    return (datetime.date.today() + datetime.timedelta(days=offset)).strftime("%Y%m%d")


TODAY, TOMORROW = day(0), day(1)


def item(pid, name, modality, aet, date, time, **more):
    """A worklist item as DICOM JSON; more: top-level keyword=(vr, value)."""
    def el(vr, v):
        if vr == "PN":
            return {"vr": "PN", "Value": [{"Alphabetic": v}]}
        return {"vr": vr, "Value": [v]}
    step = {"00080060": el("CS", modality), "00400001": el("AE", aet),
            "00400002": el("DA", date), "00400003": el("TM", time),
            "00400007": el("LO", f"{modality} scheduled")}
    out = {"00100020": el("LO", pid), "00100010": el("PN", name),
           "00400100": {"vr": "SQ", "Value": [step]}}
    for kw, (vr, v) in more.items():
        out[f"{pydicom.datadict.tag_for_keyword(kw):08X}"] = el(vr, v)
    return out


class Client:
    def __init__(self, base, user):
        self.base = base
        self.s = requests.Session()
        r = self.s.post(base + "/api/v1/login",
                        json={"username": user, "password": PW[user]}, timeout=30)
        assert r.status_code == 200, r.text

    def __getattr__(self, method):
        return lambda path, **kw: self.s.request(method.upper(), self.base + path,
                                                 timeout=30, **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("worklist")
    data = str(root / "data")
    for d in ("radiology", "cardiology"):
        agora("dept", "--data", data, "add", d)
    agora("node", "--data", data, "add", "CT01", "127.0.0.1", str(free_port()))
    agora("node", "--data", data, "--department", "cardiology", "add", "ECHO1",
          "127.0.0.1", str(free_port()))
    for name, role, dept in [("admin", "admin", None), ("tech", "technologist", "radiology"),
                             ("view", "viewer", "radiology"), ("aud", "auditor", None)]:
        args = ["user", "--data", data, "add", name, "--role", role, "--password-stdin"]
        if dept:
            args += ["--department", dept]
        r = subprocess.run([AGORA, *args], input=PW[name] + "\n",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    port = free_port()
    srv = Server(data, "--http-port", str(port), anonymous=False)
    srv.base = f"http://127.0.0.1:{port}"
    srv.root = root
    admin = Client(srv.base, "admin")
    srv.ids = {}
    for key, body in [
        ("ct", {"item": item("P1", "DOE^JANE", "CT", "CT01", TODAY, "0900",
                             AccessionNumber=("SH", "ACC1"))}),
        ("mr", {"item": item("P2", "MÜLLER^HANS", "MR", "MR01", TOMORROW, "1000")}),
        ("ct2", {"item": item("P3", "DOE^JOHN", "CT", "CT02", TODAY, "0700")}),
        ("echo", {"item": item("P4", "HEART^ANNA", "US", "ECHO1", TODAY, "0800"),
                  "department": "cardiology"}),
    ]:
        r = admin.post("/api/v1/worklist", json=body)
        assert r.status_code == 201, r.text
        srv.ids[key] = r.json()["id"]
    yield srv
    srv.stop()


def mwl(site, tmp_path, *keys, aet="CT01"):
    """findscu -W with keys; the responses as pydicom data sets."""
    out = tmp_path / f"rsp-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = ["findscu", "-W", "-X", "-aet", aet, "-aec", "AGORA"]
    for k in keys:
        args += ["-k", k]
    r = subprocess.run([*args, "127.0.0.1", str(site.port)], cwd=out,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TCP_NODELAY="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    return [pydicom.dcmread(str(p)) for p in sorted(out.iterdir())]


STEP = "ScheduledProcedureStepSequence[0]."
ASK = ["PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID",
       STEP + "Modality", STEP + "ScheduledStationAETitle",
       STEP + "ScheduledProcedureStepStartDate", STEP + "ScheduledProcedureStepStartTime",
       STEP + "ScheduledProcedureStepID"]


def pids(rs):
    return [r.PatientID for r in rs]


def test_modality_fetches_its_worklist(site, tmp_path):
    rs = mwl(site, tmp_path, *ASK, STEP + "Modality=CT",
             STEP + f"ScheduledProcedureStepStartDate={TODAY}")
    assert pids(rs) == ["P3", "P1"]          # by scheduled time
    r = rs[1]
    assert r.SpecificCharacterSet == "ISO_IR 192"
    assert str(r.PatientName) == "DOE^JANE" and r.AccessionNumber == "ACC1"
    assert r.StudyInstanceUID.startswith("2.25.")   # made up at add
    step = r.ScheduledProcedureStepSequence
    assert len(step) == 1
    assert step[0].Modality == "CT" and step[0].ScheduledStationAETitle == "CT01"
    assert step[0].ScheduledProcedureStepStartTime == "0900"
    assert step[0].ScheduledProcedureStepID.startswith("WL")
    # not asked, not answered
    assert "ScheduledProcedureStepDescription" not in step[0]
    assert "RequestedProcedureID" not in r


def test_matching_kinds(site, tmp_path):
    assert pids(mwl(site, tmp_path, *ASK, STEP + "ScheduledStationAETitle=CT02")) == ["P3"]
    assert pids(mwl(site, tmp_path, *ASK,
                    STEP + f"ScheduledProcedureStepStartDate={TOMORROW}-")) == ["P2"]
    assert pids(mwl(site, tmp_path, *ASK,
                    STEP + f"ScheduledProcedureStepStartDate=-{TODAY}")) == ["P3", "P4", "P1"]
    assert pids(mwl(site, tmp_path, *ASK, "PatientName=DOE*")) == ["P3", "P1"]
    assert pids(mwl(site, tmp_path, *ASK, "PatientName=doe*")) == []
    assert pids(mwl(site, tmp_path, *ASK, "PatientID=P2")) == ["P2"]
    assert pids(mwl(site, tmp_path, *ASK, "AccessionNumber=ACC?")) == ["P1"]
    assert pids(mwl(site, tmp_path, *ASK, STEP + "Modality=NM")) == []
    # non-ASCII in the key (its character set declared, as modalities do)
    rs = mwl(site, tmp_path, "SpecificCharacterSet=ISO_IR 192", *ASK,
             "PatientName=MÜLLER*")
    assert pids(rs) == ["P2"] and str(rs[0].PatientName) == "MÜLLER^HANS"


def test_whole_step_and_no_step_key(site, tmp_path):
    # an empty sequence key: the whole step comes back
    rs = mwl(site, tmp_path, "PatientID=P1", "ScheduledProcedureStepSequence")
    assert len(rs) == 1
    step = rs[0].ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepDescription == "CT scheduled"
    assert step.ScheduledStationAETitle == "CT01"
    # no step key at all: every item of the caller's scope
    assert sorted(pids(mwl(site, tmp_path, "PatientID"))) == ["P1", "P2", "P3", "P4"]


def test_department_scope(site, tmp_path):
    """A node of cardiology sees cardiology's steps only; the imaging
    team's own (archive-wide) node sees all."""
    assert pids(mwl(site, tmp_path, *ASK, aet="ECHO1")) == ["P4"]
    assert len(mwl(site, tmp_path, *ASK, aet="CT01")) == 4
    tech = Client(site.base, "tech")
    r = tech.get("/api/v1/worklist")
    assert r.status_code == 200 and r.json() == []       # radiology has none
    assert tech.get(f"/api/v1/worklist/{site.ids['echo']}").status_code == 404
    assert tech.delete(f"/api/v1/worklist/{site.ids['echo']}").status_code == 404
    admin = Client(site.base, "admin")
    one = admin.get(f"/api/v1/worklist/{site.ids['echo']}").json()
    assert one["department"] == "cardiology" and one["item"]["00100020"]["Value"] == ["P4"]


def test_rest_refuses_bad_items_and_keeps_nothing(site):
    admin = Client(site.base, "admin")
    before = len(admin.get("/api/v1/worklist").json())
    good = item("P9", "NEW^ONE", "CT", "CT01", TODAY, "1200")
    cases = []
    no_pid = dict(good)
    del no_pid["00100020"]
    cases.append(({"item": no_pid}, "(0010,0020)"))
    bad_date = json.loads(json.dumps(good))
    bad_date["00400100"]["Value"][0]["00400002"]["Value"] = ["2026-12-01"]
    cases.append(({"item": bad_date}, "(0040,0002)"))
    no_step = dict(good)
    del no_step["00400100"]
    cases.append(({"item": no_step}, "(0040,0100)"))
    cases.append(({"item": good, "department": "nowhere"}, "nowhere"))
    cases.append(({"item": {"00100020": {"vr": "XX", "Value": ["P"]}}}, "DICOM JSON"))
    cases.append(({"items": good}, "item"))
    for body, what in cases:
        r = admin.post("/api/v1/worklist", json=body)
        assert r.status_code == 400, (body, r.text)
        assert what in r.json()["detail"], (what, r.json())
    assert len(admin.get("/api/v1/worklist").json()) == before
    assert admin.get("/api/v1/worklist/abc").status_code == 400
    assert admin.get("/api/v1/worklist/999999").status_code == 404
    assert admin.put("/api/v1/worklist/1", json={}).status_code == 405


def test_rest_rights(site, tmp_path):
    good = {"item": item("P5", "TECH^MADE", "CR", "CR01", TODAY, "1300")}
    view, tech = Client(site.base, "view"), Client(site.base, "tech")
    assert view.post("/api/v1/worklist", json=good).status_code == 403
    # a technologist limited to radiology adds to radiology only
    assert tech.post("/api/v1/worklist", json=good).status_code == 403
    assert tech.post("/api/v1/worklist",
                     json={**good, "department": "cardiology"}).status_code == 403
    r = tech.post("/api/v1/worklist", json={**good, "department": "radiology"})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    assert [i["id"] for i in view.get("/api/v1/worklist").json()] == [wid]
    assert view.delete(f"/api/v1/worklist/{wid}").status_code == 403
    assert pids(mwl(site, tmp_path, *ASK, STEP + "Modality=CR")) == ["P5"]
    assert tech.delete(f"/api/v1/worklist?before={TOMORROW}").status_code == 403
    assert tech.delete(f"/api/v1/worklist/{wid}").status_code == 200
    assert tech.delete(f"/api/v1/worklist/{wid}").status_code == 404
    assert pids(mwl(site, tmp_path, *ASK, STEP + "Modality=CR")) == []
    # ids are never reused: an audit record names one
    r = tech.post("/api/v1/worklist", json={**good, "department": "radiology"})
    assert r.json()["id"] > wid
    tech.delete(f"/api/v1/worklist/{r.json()['id']}")


def test_changes_and_queries_are_audited(site, tmp_path):
    mwl(site, tmp_path, "PatientID=P1", "PatientName")
    aud = Client(site.base, "aud")
    orders = aud.get("/api/v1/audit", params={"event": "110109", "limit": 500}).json()
    added = [e for e in orders if e.get("action") == "C"]
    assert any("P1" in json.dumps(e) for e in added), orders[:3]
    queries = aud.get("/api/v1/audit", params={"event": "110112", "limit": 500}).json()
    assert any("1.2.840.10008.5.1.4.31" in json.dumps(e) for e in queries)


def test_purge_past_days(site, tmp_path):
    admin = Client(site.base, "admin")
    r = admin.post("/api/v1/worklist", json={"item": item("P0", "OLD^ONE", "CT", "CT01",
                                                           "20261001", "0800")})
    assert r.status_code == 201
    assert admin.delete("/api/v1/worklist?before=2026110").status_code == 400
    r = admin.delete(f"/api/v1/worklist?before={TODAY}")
    assert r.status_code == 200 and r.json() == {"removed": 1}
    assert "P0" not in pids(mwl(site, tmp_path, "PatientID"))


WL_DUMP = """\
(0008,0005) CS [ISO_IR 100]
(0010,0010) PN [{name}]
(0010,0020) LO [{pid}]
(0040,0100) SQ (Sequence with explicit length #=1)
(fffe,e000) na (Item with explicit length #=4)
(0008,0060) CS [MR]
(0040,0001) AE [MR01]
(0040,0002) DA [{date}]
(0040,0003) TM [1015]
(fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
"""


def test_cli_moves_a_dcmtk_worklist_folder_over(tmp_path):
    """`agora worklist`: .wl files made by dump2dcm (as wlmscpfs and
    Orthanc's plugin keep them) and DICOM JSON, listed, shown, removed,
    purged; what it added is what a modality then fetches."""
    data = str(tmp_path / "data")
    agora("dept", "--data", data, "add", "radiology")
    dump = tmp_path / "a.dump"
    dump.write_text(WL_DUMP.format(name="GR\xdcN^ERIK", pid="W1", date=TODAY),
                    encoding="latin-1")
    wl = tmp_path / "a.wl"
    r = dcmtk("dump2dcm", "-F", str(dump), str(wl))
    assert r.returncode == 0, r.stderr
    js = tmp_path / "b.json"
    js.write_text(json.dumps(item("W2", "ROE^ANN", "CT", "CT01", "20261001", "0800")))
    r = agora("worklist", "--data", data, "add", str(wl), str(js))
    assert r.stdout.count("added ") == 2, r.stdout
    r = agora("worklist", "--data", data, "--department", "radiology", "add",
              str(js))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"00100020": {"vr": "LO", "Value": ["W3"]}}))
    r = agora("worklist", "--data", data, "add", str(bad), check=False)
    assert r.returncode == 1 and "(0010,0010)" in r.stderr
    r = agora("worklist", "--data", data, "add", str(dump), check=False)
    assert r.returncode == 1 and "neither DICOM JSON nor a DICOM file" in r.stderr
    items = json.loads(agora("worklist", "--data", data, "list", "--json").stdout)
    assert [i["item"]["00100020"]["Value"][0] for i in items] == ["W2", "W2", "W1"]
    assert [i.get("department") for i in items] == [None, "radiology", None]
    # the Latin-1 name arrives as UTF-8
    assert items[2]["item"]["00100010"]["Value"][0]["Alphabetic"] == "GRÜN^ERIK"
    table = agora("worklist", "--data", data, "list").stdout.splitlines()
    assert table[0].startswith("id\tscheduled\tmodality") and len(table) == 4
    shown_date = f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    assert f"{shown_date} 10:15\tMR\tMR01\tW1\tGRÜN^ERIK" in table[3]
    assert table[0].endswith("\tdepartment\tstatus") and table[3].endswith("\tSCHEDULED")
    shown = json.loads(agora("worklist", "--data", data, "show",
                             str(items[2]["id"])).stdout)
    assert shown["00400100"]["Value"][0]["00400001"]["Value"] == ["MR01"]
    agora("worklist", "--data", data, "remove", str(items[1]["id"]))
    r = agora("worklist", "--data", data, "remove", str(items[1]["id"]), check=False)
    assert r.returncode == 1 and "no worklist item" in r.stderr
    r = agora("worklist", "--data", data, "purge", "--before", TODAY)
    assert "removed 1" in r.stdout
    srv = Server(data, "--accept-unknown-ae")
    try:
        rs = mwl(srv, tmp_path, *ASK, aet="MR01")
        assert pids(rs) == ["W1"]
        assert str(rs[0].PatientName) == "GRÜN^ERIK"
    finally:
        srv.stop()
    log = json.loads(agora("audit", "list", "--data", data, "--action", "110109",
                           "--json").stdout)
    assert sorted(e["action"] for e in log) == ["C", "C", "C", "C", "D", "D"]
    assert sorted(e["outcome"] for e in log) == [0, 0, 0, 0, 0, 4]   # bad.json


def test_old_steps_expire(tmp_path):
    """Steps scheduled more than --worklist-keep-days days ago leave the
    worklist when the server starts (and hourly), audited as Order Record
    deletions; 0 keeps them all."""
    data = str(tmp_path / "data")
    files = []
    for pid, offset in (("OLD", -40), ("RECENT", -5), ("NOW", 0)):
        js = tmp_path / f"{pid}.json"
        js.write_text(json.dumps(item(pid, f"{pid}^ONE", "CT", "CT01", day(offset), "0800")))
        files.append(str(js))
    agora("worklist", "--data", data, "add", *files)

    def listed():
        return sorted(i["item"]["00100020"]["Value"][0] for i in json.loads(
            agora("worklist", "--data", data, "list", "--json").stdout))

    def serve_until(count, *args):
        """Serve until the modality sees count steps (at most 10 s)."""
        srv = Server(data, "--accept-unknown-ae", *args)
        try:
            deadline = time.time() + 10
            while len(pids(mwl(srv, tmp_path, "PatientID"))) != count and \
                    time.time() < deadline:
                time.sleep(0.1)
        finally:
            srv.stop()

    serve_until(3, "--worklist-keep-days", "0")
    assert listed() == ["NOW", "OLD", "RECENT"]
    serve_until(2)                                 # the default: 30 days
    assert listed() == ["NOW", "RECENT"]
    serve_until(1, "--worklist-keep-days", "3")
    assert listed() == ["NOW"]
    log = json.loads(agora("audit", "list", "--data", data, "--action", "110109",
                           "--json").stdout)
    expired = [e for e in log if e["action"] == "D"]
    assert len(expired) == 2, log
    assert all("worklist expiry: 1 item(s) scheduled before" in e.get("detail", "")
               for e in expired), expired
    r = subprocess.run([AGORA, "serve", "--data", data, "--worklist-keep-days", "x"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--worklist-keep-days" in r.stderr


# ---- Modality Performed Procedure Step (PS3.4 F.7) ---------------------------
# DCMTK has no MPPS SCU: a small client over a raw socket, as test_commit.py.

MPPS = "1.2.840.10008.3.1.2.3.3"


def mpps_associate(port, aet="CT01"):
    from test_commit import associate
    return associate(port, MPPS, aet)


def n_request(s, create, uid, ds, msg_id=1):
    """N-CREATE (create) or N-SET of step uid; (status, response fields)."""
    from test_commit import command, implicit_bytes, pdata, recv_message
    us = lambda v: struct.pack("<H", v)
    fields = {0x00000100: us(0x0140 if create else 0x0120), 0x00000110: us(msg_id),
              0x00000800: us(0)}
    if create:
        fields[0x00000002] = MPPS.encode()
        if uid:
            fields[0x00001000] = uid.encode()
    else:
        fields[0x00000003] = MPPS.encode()
        fields[0x00001001] = uid.encode()
    s.sendall(pdata(command(fields), True) + pdata(implicit_bytes(ds), False))
    rsp, _ = recv_message(s)
    assert struct.unpack("<H", rsp[0x00000100])[0] == (0x8140 if create else 0x8120)
    return struct.unpack("<H", rsp[0x00000900])[0], rsp


def performed(status, study=None, sps_id=None, **more):
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PatientID = "P7"
    if study is not None:
        step = Dataset()
        step.StudyInstanceUID = study
        step.ScheduledProcedureStepID = sps_id
        ds.ScheduledStepAttributesSequence = [step]
    for k, v in more.items():
        setattr(ds, k, v)
    return ds


def test_mpps_reports_move_the_worklist(site, tmp_path):
    study = "1.2.826.0.1.3680043.10.1447.88.1"
    it = item("P7", "STEP^BY^STEP", "DX", "DX01", TODAY, "1100",
              StudyInstanceUID=("UI", study))
    it["00400100"]["Value"][0]["00400009"] = {"vr": "SH", "Value": ["SPS-MP1"]}
    admin = Client(site.base, "admin")
    assert admin.post("/api/v1/worklist", json={"item": it}).status_code == 201
    asked = [*ASK, STEP + "ScheduledProcedureStepStatus"]
    rs = mwl(site, tmp_path, *asked, STEP + "Modality=DX")
    assert [r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
            for r in rs] == ["SCHEDULED"]

    uid = "1.2.826.0.1.3680043.10.1447.88.9"
    s = mpps_associate(site.port)
    try:
        st, _ = n_request(s, True, uid, performed("IN PROGRESS", study, "SPS-MP1",
                                                  PerformedProcedureStepStartDate=TODAY,
                                                  PerformedProcedureStepStartTime="1102"))
        assert st == 0x0000
        rs = mwl(site, tmp_path, *asked, STEP + "Modality=DX")
        assert [r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus
                for r in rs] == ["STARTED"]
        # refusals, with the standard's statuses (F.7.2.1.3, F.7.2.2.3)
        st, _ = n_request(s, True, uid, performed("IN PROGRESS", study, "SPS-MP1"), 2)
        assert st == 0x0111                                  # duplicate
        st, rsp = n_request(s, True, uid + ".2", performed("COMPLETED", study, "X"), 3)
        assert st == 0x0106                                  # invalid value
        assert rsp[0x00000901] == struct.pack("<HH", 0x0040, 0x0252)
        st, rsp = n_request(s, True, uid + ".3", performed("IN PROGRESS"), 4)
        assert st == 0x0120                                  # missing attribute
        st, _ = n_request(s, False, uid + ".404", performed("COMPLETED"), 5)
        assert st == 0x0112                                  # no such instance
        st, _ = n_request(s, False, uid, performed("PAUSED"), 6)
        assert st == 0x0106
        # the end: the step leaves the modality's list
        end = Dataset()
        end.PerformedProcedureStepStatus = "COMPLETED"
        end.PerformedProcedureStepEndDate = TODAY
        end.PerformedProcedureStepEndTime = "1130"
        st, _ = n_request(s, False, uid, end, 7)
        assert st == 0x0000
        st, _ = n_request(s, False, uid, end, 8)
        assert st == 0x0110                                  # final: no more updates
        # an SCU that gives no UID gets one (F.7.2.1.1)
        st, rsp = n_request(s, True, None, performed("IN PROGRESS", study, "none"), 9)
        assert st == 0x0000 and rsp[0x00001000].rstrip(b"\0").startswith(b"2.25.")
    finally:
        s.close()
    assert mwl(site, tmp_path, *asked, STEP + "Modality=DX") == []
    rs = mwl(site, tmp_path, *asked, STEP + "Modality=DX",
             STEP + "ScheduledProcedureStepStatus=COMPLETED")
    assert pids(rs) == ["P7"]
    steps = {m["uid"]: m for m in admin.get("/api/v1/mpps").json()}
    assert steps[uid]["status"] == "COMPLETED" and steps[uid]["study"] == study
    assert steps[uid]["calling_ae"] == "CT01"
    assert steps[uid]["step"]["00400251"]["Value"] == ["1130"]     # N-SET merged
    assert steps[uid]["step"]["00400245"]["Value"] == ["1102"]     # N-CREATE kept
    assert Client(site.base, "tech").get("/api/v1/mpps").json() == []
    aud = Client(site.base, "aud")
    recs = aud.get("/api/v1/audit", params={"event": "110111", "limit": 500}).json()
    assert {e.get("action") for e in recs} >= {"C", "U"}
