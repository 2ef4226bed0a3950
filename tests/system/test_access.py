"""Departments, users, shares and break-the-glass (issue 7) against the running
binary: the authorisation matrix over DICOMweb, the REST API and DIMSE, sessions,
tokens, rate limits.  Out-of-scope studies must answer exactly like studies that
do not exist."""
import os
import sqlite3
import subprocess
import time

import pydicom
import pytest
import requests

from test_dimse import AGORA, Server, agora, dcmtk, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
UID = "1.2.826.0.1.3680043.10.1447.77.{}"
S_RAD, S_CARD, S_ONC, S_NONE = (UID.format(n) for n in (1, 2, 3, 4))
MISSING = UID.format(99)
PW = {"admin": "admin-password-1", "rad": "rad-password-1", "card": "card-password-1",
      "tech": "tech-password-1", "view": "view-password-1", "aud": "aud-password-1"}


def make_study(folder, study, dept, n=2, pid=None):
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    paths = []
    for i in range(1, n + 1):
        d = base.copy()
        d.PatientID = pid or "PID-" + study.rsplit(".", 1)[1]
        d.PatientName = "Access^" + study.rsplit(".", 1)[1]
        d.StudyInstanceUID = study
        d.SeriesInstanceUID = study + ".1"
        d.SOPInstanceUID = f"{study}.1.{i}"
        d.InstanceNumber = i
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        if dept:
            d.InstitutionalDepartmentName = dept
        elif "InstitutionalDepartmentName" in d:
            del d.InstitutionalDepartmentName
        p = os.path.join(folder, f"{study}-{i}.dcm")
        d.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


class Client:
    def __init__(self, base, user=None, token=None):
        self.base = base
        self.s = requests.Session()
        if user is not None:
            r = self.s.post(base + "/api/v1/login",
                            json={"username": user, "password": PW[user]}, timeout=30)
            assert r.status_code == 200, r.text
        if token is not None:
            self.s.headers["Authorization"] = "Bearer " + token

    def get(self, path, **kw):
        return self.s.get(self.base + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.s.post(self.base + path, timeout=30, **kw)

    def delete(self, path, **kw):
        return self.s.delete(self.base + path, timeout=30, **kw)

    def studies(self, **params):
        r = self.get("/dicom-web/studies", params=params)
        assert r.status_code == 200, r.text
        return {m["0020000D"]["Value"][0] for m in r.json()}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    src = root / "src"
    src.mkdir()
    data = str(root / "data")
    make_study(str(src), S_RAD, "RADIOLOGY", n=3)
    make_study(str(src), S_ONC, "ONCOLOGY")
    make_study(str(src), S_NONE, None)
    card = root / "card"
    card.mkdir()
    card_files = make_study(str(card), S_CARD, None)
    for d in ("radiology", "cardiology", "oncology"):
        agora("dept", "--data", data, "add", d)
    agora("dept", "--data", data, "rule", "radiology", "department", "radiology")
    agora("dept", "--data", data, "rule", "oncology", "department", "Oncology")
    agora("import", "--data", data, str(src))
    agora("node", "--data", data, "--department", "cardiology", "add", "CATHLAB",
          "127.0.0.1", "11190")
    agora("node", "--data", data, "add", "PACSWS", "127.0.0.1", str(free_port()))
    users = [("admin", "admin", None), ("rad", "radiologist", "radiology"), ("card", "clinician", "cardiology"),
             ("tech", "technologist", "radiology"), ("view", "viewer", "radiology"),
             ("aud", "auditor", None)]
    for name, role, dept in users:
        args = ["user", "--data", data, "add", name, "--role", role, "--password-stdin"]
        if dept:
            args += ["--department", dept]
        r = subprocess.run([AGORA, *args],
                           input=PW[name] + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--accept-unknown-ae", anonymous=False)
    srv.base = f"http://127.0.0.1:{port}"
    srv.root = root
    srv.data = data
    r = dcmtk("storescu", "-aet", "CATHLAB", "-aec", "AGORA", "127.0.0.1",
              str(srv.port), *card_files)
    assert r.returncode == 0, r.stderr
    yield srv
    srv.stop()


# ---- anonymous ---------------------------------------------------------------


def test_nothing_is_anonymous(site):
    r = requests.get(site.base + "/dicom-web/studies", timeout=10)
    assert r.status_code == 401
    assert "Bearer" in r.headers["WWW-Authenticate"]
    assert r.json()["error"] == "unauthorized"
    assert requests.get(site.base + "/api/v1/me", timeout=10).status_code == 401
    bad = {"Authorization": "Bearer agt_notarealtokenatallnotarealtoken"}
    assert requests.get(site.base + "/dicom-web/studies", headers=bad,
                        timeout=10).status_code == 401
    assert requests.get(site.base + "/healthz", timeout=10).status_code == 200
    stow = requests.post(site.base + "/dicom-web/studies", data=b"x" * 1000,
                         headers={"Content-Type": "multipart/related; "
                                  "type=\"application/dicom\"; boundary=b"}, timeout=10)
    assert stow.status_code == 401


# ---- the matrix ----------------------------------------------------------------

SCOPE = {
    "admin": {S_RAD, S_CARD, S_ONC, S_NONE},
    "rad": {S_RAD},
    "tech": {S_RAD},
    "view": {S_RAD},
    "card": {S_CARD},
}


@pytest.mark.parametrize("user", sorted(SCOPE))
def test_qido_sees_exactly_the_scope(site, user):
    c = Client(site.base, user)
    want = SCOPE[user]
    assert c.studies() == want
    # paging and counts see only the scope: one by one, nothing else appears
    paged = set()
    for k in range(len(want) + 2):
        r = c.get("/dicom-web/studies", params={"limit": 1, "offset": k})
        paged |= {m["0020000D"]["Value"][0] for m in r.json()}
    assert paged == want
    series = c.get("/dicom-web/series").json()
    assert {m["0020000D"]["Value"][0] for m in series} == want
    inst = c.get("/dicom-web/instances").json()
    assert {m["0020000D"]["Value"][0] for m in inst} == want
    rest = c.get("/api/v1/studies").json()["studies"]
    assert {s["StudyInstanceUID"] for s in rest} == want
    # a UID outside the scope, asked for by name, matches nothing
    for other in {S_RAD, S_CARD, S_ONC, S_NONE} - want:
        assert c.studies(StudyInstanceUID=other) == set()


@pytest.mark.parametrize("user", ["rad", "card", "view"])
def test_out_of_scope_answers_like_missing(site, user):
    c = Client(site.base, user)
    outside = sorted({S_RAD, S_CARD, S_ONC, S_NONE} - SCOPE[user])[0]
    for suffix in ("/metadata", "/series", "/series/{s}.1/metadata",
                   "/series/{s}.1/instances/{s}.1.1/metadata",
                   "/series/{s}.1/instances/{s}.1.1/frames/1", ""):
        a = c.get("/dicom-web/studies/" + outside + suffix.format(s=outside))
        b = c.get("/dicom-web/studies/" + MISSING + suffix.format(s=MISSING))
        assert a.status_code == b.status_code == 404, (suffix, a.status_code, b.status_code)
        assert a.json() == b.json()
    a = c.get(f"/api/v1/studies/{outside}/shares")
    b = c.get(f"/api/v1/studies/{MISSING}/shares")
    assert a.status_code == b.status_code == 404 and a.json() == b.json()


def test_verbs(site):
    rad, tech, view = (Client(site.base, u) for u in ("rad", "tech", "view"))
    card, aud, admin = (Client(site.base, u) for u in ("card", "aud", "admin"))
    acc = {"Accept": "multipart/related; type=\"application/dicom\""}
    assert rad.get(f"/dicom-web/studies/{S_RAD}", headers=acc).status_code == 200
    assert view.get(f"/dicom-web/studies/{S_RAD}/metadata").status_code == 200
    assert view.get(f"/dicom-web/studies/{S_RAD}", headers=acc).status_code == 403
    assert tech.get(f"/dicom-web/studies/{S_RAD}", headers=acc).status_code == 403
    # the auditor reads the audit trail and break-the-glass list, not images
    assert aud.get("/dicom-web/studies").status_code == 403
    assert aud.get("/api/v1/break-glass").status_code == 200
    assert rad.get("/api/v1/break-glass").status_code == 403
    # administration
    assert rad.get("/api/v1/users").status_code == 403
    users = admin.get("/api/v1/users").json()
    assert {u["name"] for u in users} >= {"admin", "rad", "card", "tech", "view", "aud"}
    assert card.post("/api/v1/departments", json={"name": "x"}).status_code == 403
    # deleting needs the delete verb, and the study in scope
    assert rad.delete(f"/api/v1/studies/{S_RAD}").status_code == 403
    assert card.delete(f"/api/v1/studies/{S_RAD}").status_code == 404


def stow_body(paths, boundary="agoraB"):
    body = b""
    for p in paths:
        body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        body += open(p, "rb").read() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/related; type=\"application/dicom\"; "
                                  f"boundary={boundary}"}


def test_upload_verb_and_assignment_to_uploader(site, tmp_path):
    new = UID.format(20)
    body, headers = stow_body(make_study(str(tmp_path), new, None, n=1))
    card = Client(site.base, "card")
    assert card.post("/dicom-web/studies", data=body, headers=headers).status_code == 403
    tech = Client(site.base, "tech")
    r = tech.post("/dicom-web/studies", data=body, headers=headers)
    assert r.status_code == 200, r.text
    # stored by a radiology user: radiology sees it, cardiology does not
    assert new in Client(site.base, "rad").studies()
    assert new not in card.studies()


# ---- shares, links, lists, break-the-glass -------------------------------------


def test_share_with_department_and_unshare(site):
    card, rad = Client(site.base, "card"), Client(site.base, "rad")
    assert S_CARD not in rad.studies()
    r = card.post(f"/api/v1/studies/{S_CARD}/shares", json={"department": "radiology"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert S_CARD in rad.studies()
    assert rad.get(f"/dicom-web/studies/{S_CARD}/metadata").status_code == 200
    shares = card.get(f"/api/v1/studies/{S_CARD}/shares").json()
    assert [s["department"] for s in shares] == ["radiology"]
    # cannot share what one cannot see
    assert rad.post(f"/api/v1/studies/{S_ONC}/shares",
                    json={"department": "radiology"}).status_code == 404
    assert card.delete(f"/api/v1/shares/{sid}").status_code == 200
    assert S_CARD not in rad.studies()


def test_share_with_user_and_list(site):
    card, view = Client(site.base, "card"), Client(site.base, "view")
    r = card.post(f"/api/v1/studies/{S_CARD}/shares", json={"user": "view", "hours": 1})
    assert r.status_code == 201
    assert S_CARD in view.studies()
    card.delete(f"/api/v1/shares/{r.json()['id']}")
    assert S_CARD not in view.studies()
    # a tumour board list: its members see what is shared with it
    assert card.post("/api/v1/lists", json={"name": "tumour-board",
                                            "members": ["tech"]}).status_code == 201
    tech = Client(site.base, "tech")
    assert S_CARD not in tech.studies()
    assert card.post(f"/api/v1/studies/{S_CARD}/shares",
                     json={"list": "tumour-board"}).status_code == 201
    assert S_CARD in tech.studies()


def test_expired_share_grants_nothing(site):
    card, view = Client(site.base, "card"), Client(site.base, "view")
    r = card.post(f"/api/v1/studies/{S_CARD}/shares", json={"user": "view", "hours": 1})
    assert S_CARD in view.studies()
    db = sqlite3.connect(os.path.join(site.data, "index.sqlite"))
    db.execute("UPDATE shares SET expires_at = 1 WHERE id = ?", (r.json()["id"],))
    db.commit()
    db.close()
    assert S_CARD not in view.studies()


def test_share_link_sees_one_study_read_only(site):
    card = Client(site.base, "card")
    r = card.post(f"/api/v1/studies/{S_CARD}/shares", json={"link": True, "hours": 2})
    assert r.status_code == 201
    url = r.json()["url"]
    assert url.startswith("/share/agl_")
    s = requests.Session()
    r = s.get(site.base + url, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert r.headers["Location"] == f"/viewer/viewer?StudyInstanceUIDs={S_CARD}"
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    link = Client(site.base)
    link.s = s
    assert link.studies() == {S_CARD}
    assert link.get(f"/dicom-web/studies/{S_CARD}/metadata").status_code == 200
    assert link.get(f"/dicom-web/studies/{S_RAD}/metadata").status_code == 404
    body, headers = stow_body(make_study(str(site.root), UID.format(30), None, n=1))
    assert link.post("/dicom-web/studies", data=body, headers=headers).status_code == 403
    assert requests.get(site.base + "/share/agl_wrongwrongwrongwrongwrongwrong",
                        allow_redirects=False, timeout=10).status_code == 404


def test_break_the_glass(site):
    rad, admin = Client(site.base, "rad"), Client(site.base, "admin")
    assert S_ONC not in rad.studies()
    assert rad.post(f"/api/v1/studies/{S_ONC}/break-glass", json={}).status_code == 400
    assert rad.post(f"/api/v1/studies/{MISSING}/break-glass",
                    json={"reason": "trauma call, prior imaging"}).status_code == 404
    r = rad.post(f"/api/v1/studies/{S_ONC}/break-glass",
                 json={"reason": "trauma call, prior imaging", "hours": 1})
    assert r.status_code == 201, r.text
    assert S_ONC in rad.studies()
    assert rad.get(f"/dicom-web/studies/{S_ONC}/metadata").status_code == 200
    review = admin.get("/api/v1/break-glass").json()
    assert any(b["user"] == "rad" and b["study"] == S_ONC and
               b["reason"] == "trauma call, prior imaging" for b in review)
    # other users are not affected
    assert S_ONC not in Client(site.base, "view").studies()


# ---- sessions, tokens, rate limits ------------------------------------------------


def test_login_logout_everywhere(site):
    r = requests.post(site.base + "/api/v1/login",
                      json={"username": "rad", "password": "wrong-password"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    a, b = Client(site.base, "rad"), Client(site.base, "rad")
    me = a.get("/api/v1/me").json()
    assert me["name"] == "rad" and me["departments"] == ["radiology"]
    assert "download" in me["verbs"] and "admin" not in me["verbs"]
    assert a.post("/api/v1/logout").status_code == 204
    assert a.get("/api/v1/me").status_code == 401
    assert b.get("/api/v1/me").status_code == 401   # every session of the user


def test_tokens_expire_and_revoke(site):
    rad = Client(site.base, "rad")
    r = rad.post("/api/v1/tokens", json={"name": "script", "days": 1})
    assert r.status_code == 201
    tok, tid = r.json()["token"], r.json()["id"]
    t = Client(site.base, token=tok)
    assert t.studies() == {S_RAD} or S_RAD in t.studies()
    listed = rad.get("/api/v1/tokens").json()
    assert any(x["id"] == tid and x["name"] == "script" for x in listed)
    assert all("token" not in x for x in listed)        # never shown again
    assert rad.delete(f"/api/v1/tokens/{tid}").status_code == 200
    assert t.get("/dicom-web/studies").status_code == 401
    # expiry
    r = rad.post("/api/v1/tokens", json={"name": "short", "days": 1})
    t2 = Client(site.base, token=r.json()["token"])
    assert t2.get("/api/v1/me").status_code == 200
    db = sqlite3.connect(os.path.join(site.data, "index.sqlite"))
    db.execute("UPDATE credentials SET expires_at = 1 WHERE id = ?", (r.json()["id"],))
    db.commit()
    db.close()
    assert t2.get("/api/v1/me").status_code == 401
    # only a hash is stored
    db = sqlite3.connect(os.path.join(site.data, "index.sqlite"))
    hashes = [h for (h,) in db.execute("SELECT hash FROM credentials")]
    db.close()
    assert tok not in hashes and all(len(h) == 64 for h in hashes)


def test_disabled_user_loses_tokens_and_login(site):
    admin = Client(site.base, "admin")
    assert admin.post("/api/v1/users", json={"name": "temp", "password": "temp-password-1",
                                             "role": "viewer",
                                             "departments": ["radiology"]}).status_code == 201
    s = requests.Session()
    assert s.post(site.base + "/api/v1/login", json={"username": "temp",
                  "password": "temp-password-1"}, timeout=30).status_code == 200
    assert admin.post("/api/v1/users/temp", json={"disabled": True}).status_code == 200
    assert s.get(site.base + "/api/v1/me", timeout=10).status_code == 401
    assert s.post(site.base + "/api/v1/login", json={"username": "temp",
                  "password": "temp-password-1"}, timeout=30).status_code == 401


def test_login_rate_limit(site):
    admin = Client(site.base, "admin")
    admin.post("/api/v1/users", json={"name": "victim", "password": "victim-password-1",
                                      "role": "viewer"})
    for _ in range(5):
        r = requests.post(site.base + "/api/v1/login",
                          json={"username": "victim", "password": "guess"}, timeout=30)
        assert r.status_code == 401
    r = requests.post(site.base + "/api/v1/login",
                      json={"username": "victim", "password": "victim-password-1"}, timeout=30)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["error"] == "too many attempts"


def test_bad_api_bodies(site):
    admin = Client(site.base, "admin")
    r = admin.post("/api/v1/users", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad request"
    r = admin.post("/api/v1/users", data=b"{" + b" " * 70000 + b"}")
    assert r.status_code == 413
    r = admin.post("/api/v1/users", json={"name": "x y", "password": "long-enough-1"})
    assert r.status_code == 400
    r = admin.post("/api/v1/users", json={"name": "shortpw", "password": "1"})
    assert r.status_code == 400
    r = admin.post("/api/v1/users", json={"name": "rad", "password": "long-enough-1"})
    assert r.status_code == 409
    r = admin.post("/api/v1/users", json={"name": "nr", "password": "long-enough-1",
                                          "role": "emperor"})
    assert r.status_code == 400


def test_refused_admin_changes_leave_nothing_behind(site):
    """A request that names an unknown department or a bad rule is refused
    whole: no user or department half made (and so none unaudited)."""
    admin = Client(site.base, "admin")
    r = admin.post("/api/v1/users", json={"name": "halfmade", "password": "long-enough-1",
                                          "departments": ["radiology", "nowhere"]})
    assert r.status_code == 404 and "nowhere" in r.json()["detail"]
    r = admin.post("/api/v1/users", json={"name": "halfmade", "password": "long-enough-1",
                                          "departments": ["radiology", 7]})
    assert r.status_code == 400
    assert "halfmade" not in {u["name"] for u in admin.get("/api/v1/users").json()}
    r = admin.post("/api/v1/users/rad", json={"role": "viewer", "departments": ["nowhere"]})
    assert r.status_code == 404
    rad = [u for u in admin.get("/api/v1/users").json() if u["name"] == "rad"][0]
    assert rad["role"] != "viewer"
    r = admin.post("/api/v1/departments", json={"name": "halfdept", "rules": [
        {"field": "modality", "value": "CT"}, {"field": "colour", "value": "red"}]})
    assert r.status_code == 400
    assert "halfdept" not in {d["name"] for d in admin.get("/api/v1/departments").json()}


def test_department_cap_over_rest(site):
    """A user is in at most 32 departments: the 33rd is a 400 with a reason
    (an error after the user was changed used to drop the connection)."""
    admin = Client(site.base, "admin")
    for i in range(33):
        assert admin.post("/api/v1/departments", json={"name": "ward%d" % i}).status_code == 201
    wards = ["ward%d" % i for i in range(32)]
    r = admin.post("/api/v1/users", json={"name": "floater", "password": "long-enough-1",
                                          "departments": wards})
    assert r.status_code == 201, r.text
    r = admin.post("/api/v1/users/floater", json={"departments": ["ward32"]})
    assert r.status_code == 400 and "32 departments" in r.json()["detail"]
    floater = [u for u in admin.get("/api/v1/users").json() if u["name"] == "floater"][0]
    assert sorted(floater["departments"]) == sorted(wards)


# ---- DIMSE ------------------------------------------------------------------------


def find_studies(site, aet):
    r = dcmtk("findscu", "-S", "-aet", aet, "-aec", "AGORA", "-k", "QueryRetrieveLevel=STUDY",
              "-k", "StudyInstanceUID", "127.0.0.1", str(site.port))
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    return {line.split("[")[1].split("]")[0] for line in out.splitlines()
            if "(0020,000d)" in line and "[" in line}


def test_dimse_node_department_scope(site):
    assert find_studies(site, "CATHLAB") == {S_CARD}
    assert {S_RAD, S_CARD, S_ONC, S_NONE} <= find_studies(site, "PACSWS")


def test_dimse_get_out_of_scope_retrieves_nothing(site, tmp_path):
    out = tmp_path / "get"
    out.mkdir()
    r = dcmtk("getscu", "-S", "-aet", "CATHLAB", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={S_RAD}",
              "127.0.0.1", str(site.port))
    assert list(out.iterdir()) == []
    r = dcmtk("getscu", "-S", "-aet", "CATHLAB", "-aec", "AGORA", "-od", str(out),
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={S_CARD}",
              "127.0.0.1", str(site.port))
    assert r.returncode == 0, r.stderr
    assert len(list(out.iterdir())) == 2


def test_dimse_user_identity(site, tmp_path):
    new = UID.format(40)
    files = make_study(str(tmp_path), new, None, n=1)
    # a wrong passcode is refused at association time
    r = dcmtk("storescu", "-aet", "SOMEONE", "-aec", "AGORA", "--user", "tech",
              "--password", "wrong-wrong", "127.0.0.1", str(site.port), *files)
    assert r.returncode != 0
    # a viewer may not store: 0124 Refused: Not Authorized
    r = dcmtk("storescu", "-aet", "SOMEONE", "-aec", "AGORA", "--user", "view",
              "--password", PW["view"], "127.0.0.1", str(site.port), *files)
    assert "0124" in (r.stdout + r.stderr) or r.returncode != 0
    assert new not in Client(site.base, "admin").studies()
    # a technologist stores; the study joins the technologist's department
    r = dcmtk("storescu", "-aet", "SOMEONE", "-aec", "AGORA", "--user", "tech",
              "--password", PW["tech"], "127.0.0.1", str(site.port), *files)
    assert r.returncode == 0, r.stderr
    assert new in Client(site.base, "rad").studies()
    assert new not in Client(site.base, "card").studies()


def test_cli_lists(site):
    r = agora("user", "--data", site.data, "list", "--json")
    import json
    users = {u["name"]: u for u in json.loads(r.stdout)}
    assert users["card"]["role"] == "clinician" and users["card"]["departments"] == ["cardiology"]
    r = agora("dept", "--data", site.data, "list", "--json")
    depts = {d["name"]: d for d in json.loads(r.stdout)}
    assert {"field": "department", "value": "RADIOLOGY"} in depts["radiology"]["rules"]
    r = agora("node", "--data", site.data, "list")
    assert "[cardiology]" in r.stdout
    assert agora("node", "--data", site.data, "--department", "nowhere", "add", "X1",
                 "127.0.0.1", "104", check=False).returncode == 1
    assert agora("user", "--data", site.data, "role", "rad", "emperor",
                 check=False).returncode == 1


def test_first_start_creates_admin_with_a_one_time_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AGORA_ADMIN_PASSWORD"}
    port = free_port()
    srv = Server(str(tmp_path / "fresh"), "--http-port", str(port), "--http-basic",
                 anonymous=False, env=env)
    try:
        time.sleep(0.3)
        log = open(str(tmp_path / "fresh.log")).read()
        pw = log.split("with the password", 1)[1].split()[0]
        assert len(pw) >= 20
        base = f"http://127.0.0.1:{port}"
        r = requests.post(base + "/api/v1/login",
                          json={"username": "admin", "password": pw}, timeout=30)
        assert r.status_code == 200
        # HTTP Basic, when enabled, for DICOMweb clients
        assert requests.get(base + "/dicom-web/studies", auth=("admin", pw),
                            timeout=30).status_code == 200
        r = requests.get(base + "/dicom-web/studies", auth=("admin", "nope-nope"), timeout=30)
        assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    finally:
        srv.stop()
    # a second start does not print a password again
    srv = Server(str(tmp_path / "fresh"), "--http-port", str(free_port()), anonymous=False,
                 env=env)
    srv.stop()
    assert "with the password" not in open(str(tmp_path / "fresh.log")).read()


def test_dimse_patient_level_counts_only_the_scope(site, tmp_path):
    """A patient with studies in two departments: a cardiology node sees the
    patient with one related study, not two (counts leak nothing)."""
    shared = UID.format(50)
    files = make_study(str(tmp_path), shared, "RADIOLOGY", n=1, pid="PID-2")
    r = dcmtk("storescu", "-aet", "PACSWS", "-aec", "AGORA", "127.0.0.1",
              str(site.port), *files)
    assert r.returncode == 0, r.stderr

    def patients(aet):
        r = dcmtk("findscu", "-P", "-aet", aet, "-aec", "AGORA",
                  "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID",
                  "-k", "NumberOfPatientRelatedStudies", "127.0.0.1", str(site.port))
        assert r.returncode == 0, r.stderr
        out, found, pid = r.stdout + r.stderr, {}, None
        for line in out.splitlines():
            if "(0010,0020)" in line and "[" in line:
                pid = line.split("[")[1].split("]")[0].strip()
            if "(0020,1200)" in line and "[" in line:
                found[pid] = int(line.split("[")[1].split("]")[0])
        return found

    assert patients("CATHLAB") == {"PID-2": 1}
    assert patients("PACSWS")["PID-2"] == 2


def test_rest_listing_detail_nodes_stats(site):
    rad, admin = Client(site.base, "rad"), Client(site.base, "admin")
    pats = rad.get("/api/v1/patients").json()["patients"]
    assert "PID-1" in {p["PatientID"] for p in pats}
    assert "PID-4" not in {p["PatientID"] for p in pats}
    d = rad.get(f"/api/v1/studies/{S_RAD}").json()
    assert d["StudyInstanceUID"] == S_RAD and d["NumberOfStudyRelatedInstances"] == 3
    assert [s["SeriesInstanceUID"] for s in d["series"]] == [S_RAD + ".1"]
    se = rad.get(f"/api/v1/series/{S_RAD}.1").json()
    assert len(se["instances"]) == 3 and se["instances"][0]["SOPInstanceUID"] == S_RAD + ".1.1"
    assert rad.get(f"/api/v1/instances/{S_RAD}.1.2").json()["InstanceNumber"] == 2
    # out of scope: 404 like a missing UID
    for path in (f"/api/v1/studies/{S_NONE}", f"/api/v1/series/{S_NONE}.1",
                 f"/api/v1/instances/{S_NONE}.1.1"):
        assert rad.get(path).status_code == 404
    assert rad.get("/api/v1/studies", params={"PatientName": "access*", "limit": 5}) \
        .json()["studies"][0]["StudyInstanceUID"] in SCOPE["admin"] | {UID.format(20), UID.format(40), UID.format(50)}
    # nodes and statistics are for administrators
    assert rad.get("/api/v1/nodes").status_code == 403
    assert rad.get("/api/v1/stats").status_code == 403
    nodes = {n["aet"]: n for n in admin.get("/api/v1/nodes").json()}
    assert nodes["CATHLAB"]["department"] == "cardiology"
    r = admin.post("/api/v1/nodes", json={"aet": "NEWWS", "host": "127.0.0.1", "port": 104,
                                          "department": "radiology"})
    assert r.status_code == 201
    assert admin.post("/api/v1/nodes", json={"aet": "X", "host": "h", "port": 104,
                                             "department": "nowhere"}).status_code == 404
    assert admin.post("/api/v1/nodes", json={"aet": "X", "port": 0}).status_code == 400
    assert admin.delete("/api/v1/nodes/NEWWS").status_code == 200
    assert admin.delete("/api/v1/nodes/NEWWS").status_code == 404
    st = admin.get("/api/v1/stats").json()
    assert st["studies"] >= 4 and st["instances"] >= 9


# ---- the authorisation matrix ------------------------------------------------------

# role -> (verbs that matter here); all three users are in radiology
MATRIX_USERS = {"rad": {"view", "download", "share"}, "view": {"view"},
                "tech": {"view", "upload"}}


def expected(op, visible, verbs, glass=False):
    if op == "qido":
        return visible
    if not visible:
        return 404
    if glass and op in ("wado", "share", "delete"):
        return 403        # break-the-glass grants view only
    need = {"metadata": "view", "frame": "view", "rendered": "view",
            "wado": "download", "share": "share", "delete": "delete"}[op]
    ok = {"metadata": 200, "frame": 200, "rendered": 200, "wado": 200,
          "share": 201, "delete": 200}[op]
    return ok if need in verbs else 403


def run_op(c, op, study):
    base = f"/dicom-web/studies/{study}"
    inst = f"{base}/series/{study}.1/instances/{study}.1.1"
    if op == "qido":
        return study in c.studies()
    if op == "metadata":
        return c.get(base + "/metadata").status_code
    if op == "frame":
        return c.get(inst + "/frames/1", headers={
            "Accept": "multipart/related; type=\"application/octet-stream\"; "
                      "transfer-syntax=*"}).status_code
    if op == "rendered":
        return c.get(inst + "/rendered", headers={"Accept": "image/png"}).status_code
    if op == "wado":
        return c.get(base, headers={"Accept": "multipart/related; "
                                              "type=\"application/dicom\""}).status_code
    if op == "share":
        return c.post(f"/api/v1/studies/{study}/shares", json={"user": "aud"}).status_code
    if op == "delete":
        return c.delete(f"/api/v1/studies/{study}").status_code
    raise AssertionError(op)


def test_authorisation_matrix(site):
    """Each role x {in scope, shared with the department, out of scope,
    break-the-glass} x each operation, against the expected outcome."""
    card = Client(site.base, "card")
    r = card.post(f"/api/v1/studies/{S_CARD}/shares", json={"department": "radiology"})
    share_id = r.json()["id"]
    failures = []
    try:
        for user, verbs in MATRIX_USERS.items():
            c = Client(site.base, user)
            assert c.post(f"/api/v1/studies/{S_ONC}/break-glass",
                          json={"reason": "matrix test, on call", "hours": 1}).status_code == 201
            cases = {"in scope": (S_RAD, True), "shared": (S_CARD, True),
                     "out of scope": (S_NONE, False), "break-the-glass": (S_ONC, True)}
            for what, (study, visible) in cases.items():
                for op in ("qido", "metadata", "frame", "rendered", "wado", "share",
                           "delete"):
                    want = expected(op, visible, verbs, what == "break-the-glass")
                    got = run_op(c, op, study)
                    if got != want:
                        failures.append(f"{user} {op} {what}: {got} != {want}")
    finally:
        card.delete(f"/api/v1/shares/{share_id}")
    assert failures == []


# ---- the audit trail: every operation leaves its record -----------------------


def audit(site, **params):
    aud = Client(site.base, "aud")
    r = aud.get("/api/v1/audit", params={"limit": 2000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_audit_records_every_kind_of_operation(site, tmp_path):
    rad = Client(site.base, "rad")
    rad.get("/dicom-web/studies", params={"PatientID": "PID-1"})
    rad.get(f"/dicom-web/studies/{S_RAD}",
            headers={"Accept": "multipart/related; type=\"application/dicom\""})
    rad.get(f"/dicom-web/studies/{S_RAD}/metadata")
    rad.get(f"/dicom-web/studies/{S_NONE}/metadata")             # out of scope: 404
    requests.post(site.base + "/api/v1/login", json={"username": "rad",
                  "password": "not-it"}, timeout=30)
    new = UID.format(60)
    body, headers = stow_body(make_study(str(tmp_path), new, None, n=1))
    Client(site.base, "tech").post("/dicom-web/studies", data=body, headers=headers)
    admin = Client(site.base, "admin")
    admin.post("/api/v1/users", json={"name": "audited", "password": "audited-pw-1",
                                      "role": "viewer"})
    admin.delete(f"/api/v1/studies/{new}")
    find_studies(site, "CATHLAB")
    dcmtk("echoscu", "-aet", "STRANGER", "-aec", "NOTAGORA", "127.0.0.1", str(site.port))

    recs = audit(site)
    def has(**want):
        return any(all(str(r.get(k)) == str(v) if not callable(v) else v(r.get(k))
                       for k, v in want.items()) for r in recs)
    # authentication, success and failure
    assert has(event=110114, type=110122, user="rad", outcome=0)
    assert has(event=110114, type=110122, user="rad", outcome=4)
    # QIDO-RS query with its keys
    assert has(event=110112, user="rad", detail=lambda d: d and "PatientID=PID-1" in d)
    # WADO-RS retrieval and viewing, with the patient
    assert has(event=110104, action="R", user="rad", study_uid=S_RAD, patient_id="PID-1")
    assert has(event=110103, action="R", user="rad", study_uid=S_RAD)
    # a refused (out-of-scope) access is recorded as a failure
    assert has(event=110103, user="rad", study_uid=S_NONE, outcome=4)
    # STOW-RS and delete
    assert has(event=110104, action="C", user="tech", outcome=0)
    assert has(event=110105, action="D", user="admin", study_uid=new)
    # share and break-the-glass (earlier tests) and configuration changes
    assert has(event=110113, type=110135, user="card", study_uid=S_CARD)
    assert has(event=110113, type=110127, user="rad", study_uid=S_ONC,
               detail=lambda d: d and "trauma call" in d)
    assert has(event=110113, type=110137, user="admin", detail=lambda d: d and "audited" in d)
    # DIMSE: association accepted, C-FIND with keys, C-STORE count, refused AE
    assert has(event=110113, type=110126, user="CATHLAB", outcome=0)
    assert has(event=110112, user="CATHLAB", detail=lambda d: d is not None)
    assert has(event=110104, action="C", user="CATHLAB", study_uid=S_CARD, count=2)
    assert has(event=110113, type=110126, user="STRANGER", outcome=4)   # refused
    # C-GET
    assert has(event=110104, action="R", user="CATHLAB", study_uid=S_CARD)
    # user identity negotiation, refused
    assert has(event=110114, user="tech", outcome=4)
    # searching the trail is itself recorded
    again = audit(site, user="aud")
    assert any(r["event"] == 110101 for r in again)


def test_audit_search_filters_and_rights(site):
    by_study = audit(site, study=S_RAD)
    assert by_study and all(r.get("study_uid") == S_RAD for r in by_study)
    by_user = audit(site, user="card")
    assert by_user and all(r["user"] == "card" for r in by_user)
    assert Client(site.base, "rad").get("/api/v1/audit").status_code == 403
    assert Client(site.base, "aud").get("/api/v1/audit",
                                        params={"since": "yesterday"}).status_code == 400


def test_audit_trail_of_the_server_verifies(site):
    r = agora("audit", "verify", "--data", site.data)
    assert r.returncode == 0 and "chain intact" in r.stdout


def test_dicomweb_root_describes_the_service(site):
    r = Client(site.base, "rad").get("/dicom-web/")
    assert r.status_code == 200
    caps = r.json()
    assert caps["service"] == "DICOMweb" and caps["stow"] is True


def test_rest_delete_series_and_instances_and_settings(site, tmp_path):
    admin, rad = Client(site.base, "admin"), Client(site.base, "rad")
    new = UID.format(70)
    body, headers = stow_body(make_study(str(tmp_path), new, "RADIOLOGY", n=3))
    assert admin.post("/dicom-web/studies", data=body, headers=headers).status_code == 200
    # rad sees it (radiology rule) but may not delete
    assert rad.delete(f"/api/v1/instances/{new}.1.1").status_code == 403
    # cardiology cannot even see it
    assert Client(site.base, "card").delete(f"/api/v1/series/{new}.1").status_code == 404
    r = admin.delete(f"/api/v1/instances/{new}.1.1")
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert admin.get(f"/api/v1/instances/{new}.1.1").status_code == 404
    assert admin.get(f"/api/v1/studies/{new}").json()["NumberOfStudyRelatedInstances"] == 2
    r = admin.delete(f"/api/v1/series/{new}.1")
    assert r.status_code == 200 and r.json()["deleted"] == 2
    assert admin.get(f"/api/v1/studies/{new}").status_code == 404
    s = admin.get("/api/v1/settings").json()
    assert s["aet"] == "AGORA" and s["accept_unknown_ae"] is True
    assert s["http_anonymous"] is False and s["decoders"] == 2
    assert rad.get("/api/v1/settings").status_code == 403


def test_import_and_cli_changes_are_audited(tmp_path):
    import json
    data = str(tmp_path / "d")
    src = tmp_path / "src"
    src.mkdir()
    make_study(str(src), UID.format(80), None, n=2)
    agora("import", "--data", data, str(src))
    agora("dept", "--data", data, "add", "surgery")
    recs = json.loads(agora("audit", "list", "--data", data, "--json").stdout)
    imp = [r for r in recs if r["event"] == 110107]
    assert len(imp) == 1 and imp[0]["count"] == 2 and imp[0]["action"] == "C"
    assert any(r["event"] == 110113 and "dept add surgery" in r.get("detail", "")
               for r in recs)
    assert agora("audit", "verify", "--data", data).returncode == 0
