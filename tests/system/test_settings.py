"""Run-time settings (GET/PUT /api/v1/settings) against the running binary:
the duplicate policy, unknown AE titles, case-insensitive names and the
compression policy changed by an administrator without a restart, seen by
DCMTK peers at once, kept in the index across a restart, overridden for one
run by a command-line flag; bad input and other users change nothing; every
change is in the audit trail."""
import os
import re
import sqlite3
import subprocess
import time

import pydicom
import pytest
import requests

from test_dimse import AGORA, Server, agora, dcmtk, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
UID = "1.2.826.0.1.3680043.10.1447.88.{}"
STUDY, SERIES = UID.format(1), UID.format(1) + ".1"
ADMIN_PW, RAD_PW = "admin-password-1", "rad-password-1"
CHANGEABLE = {"duplicates", "accept_unknown_ae", "fuzzy_names", "compress"}
JPEG_LS = "1.2.840.10008.1.2.4.80"


def make_instance(folder, n, version, name="Settings^Patient"):
    """CT_small as instance n of our study; version goes in ImageComments,
    so that two copies of one SOP Instance UID can be told apart."""
    d = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    d.PatientID = "SETTINGS-1"
    d.PatientName = name
    d.StudyInstanceUID = STUDY
    d.SeriesInstanceUID = SERIES
    d.SOPInstanceUID = f"{SERIES}.{n}"
    d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.InstanceNumber = n
    d.ImageComments = version
    p = os.path.join(folder, f"{n}-{version}.dcm")
    d.save_as(p, write_like_original=False)
    return p


class Admin:
    """A logged-in HTTP session."""

    def __init__(self, base, user="admin", password=ADMIN_PW):
        self.base = base
        self.s = requests.Session()
        r = self.s.post(base + "/api/v1/login",
                        json={"username": user, "password": password}, timeout=30)
        assert r.status_code == 200, r.text

    def get(self, path, **kw):
        return self.s.get(self.base + path, timeout=30, **kw)

    def put(self, path, **kw):
        return self.s.put(self.base + path, timeout=30, **kw)

    def settings(self):
        r = self.get("/api/v1/settings")
        assert r.status_code == 200, r.text
        return r.json()

    def change(self, **values):
        r = self.put("/api/v1/settings", json=values)
        assert r.status_code == 200, r.text
        return r.json()

    def comment(self, n):
        """ImageComments of the stored copy of instance n."""
        r = self.get(f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/"
                     f"{SERIES}.{n}/metadata")
        assert r.status_code == 200, r.text
        return r.json()[0]["00204000"]["Value"][0]


class Site:
    """A data directory with the node SCU and the radiologist rad, and
    agora serve on it (restartable, with extra flags)."""

    def __init__(self, root):
        self.root = root
        self.data = str(root / "data")
        self.src = root / "src"
        self.src.mkdir()
        agora("node", "--data", self.data, "add", "SCU", "127.0.0.1", "11113")
        for name, role, pw in (("admin", "admin", ADMIN_PW), ("rad", "radiologist", RAD_PW)):
            r = subprocess.run([AGORA, "user", "--data", self.data, "add", name, "--role",
                                role, "--password-stdin"], input=pw + "\n",
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        self.srv = None
        self.start()

    def start(self, *flags):
        port = free_port()
        self.srv = Server(self.data, "--http-port", str(port), *flags, anonymous=False)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 10   # HTTP starts after DICOM
        while time.time() < deadline:
            try:
                requests.get(self.base + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        self.admin = Admin(self.base)

    def restart(self, *flags):
        assert self.srv.stop() == 0
        self.start(*flags)

    def store(self, path, aet="SCU"):
        return dcmtk("storescu", "-v", "-aet", aet, "-aec", "AGORA", "127.0.0.1",
                     str(self.srv.port), path)

    def echo(self, aet):
        return dcmtk("echoscu", "-aet", aet, "-aec", "AGORA", "127.0.0.1",
                     str(self.srv.port))

    def stored_rows(self):
        db = sqlite3.connect(f"file:{self.data}/index.sqlite?mode=ro", uri=True)
        try:
            return {k: v for k, v in db.execute("SELECT key, value FROM settings")}
        finally:
            db.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    assert s.srv.stop() == 0, "serve must exit cleanly on SIGTERM"


def test_defaults_and_sources(site):
    s = site.admin.settings()
    assert s["duplicates"] == "keep" and s["accept_unknown_ae"] is False
    assert s["fuzzy_names"] is False and s["compress"] == ""
    assert s["sources"] == {k: "default" for k in CHANGEABLE}
    # the read-only part is still there
    assert s["aet"] == "AGORA" and s["dicom_port"] == site.srv.port
    assert site.stored_rows() == {}


def test_duplicates_changed_at_run_time_and_kept_after_restart(site):
    src = str(site.src)
    assert site.store(make_instance(src, 1, "v1")).returncode == 0
    # keep (the default): a second copy is acknowledged, the first kept
    assert site.store(make_instance(src, 1, "v2")).returncode == 0
    assert site.admin.comment(1) == "v1"

    s = site.admin.change(duplicates="reject")
    assert s["duplicates"] == "reject" and s["sources"]["duplicates"] == "stored"
    r = site.store(make_instance(src, 1, "v2"))
    assert r.returncode != 0, "a duplicate under reject must fail"
    # PS3.7 C.4.2.1.4: 0111H Duplicate SOP Instance
    assert re.search(r"Store Response \(.*0x0?111\)", r.stdout + r.stderr), r.stderr
    assert site.admin.comment(1) == "v1"

    site.admin.change(duplicates="replace")
    r = site.store(make_instance(src, 1, "v2"))
    assert r.returncode == 0, r.stderr
    assert site.admin.comment(1) == "v2"
    assert site.stored_rows() == {"duplicates": "replace"}

    # a restart on the same data directory keeps it, and it applies
    site.restart()
    s = site.admin.settings()
    assert s["duplicates"] == "replace" and s["sources"]["duplicates"] == "stored"
    assert site.store(make_instance(src, 1, "v3")).returncode == 0
    assert site.admin.comment(1) == "v3"

    # a flag on the command line wins for that run only
    site.restart("--duplicates", "reject")
    s = site.admin.settings()
    assert s["duplicates"] == "reject"
    assert s["sources"]["duplicates"] == "command line"
    assert site.store(make_instance(src, 1, "v4")).returncode != 0
    assert site.admin.comment(1) == "v3"
    assert site.stored_rows() == {"duplicates": "replace"}
    site.restart()
    s = site.admin.settings()
    assert s["duplicates"] == "replace" and s["sources"]["duplicates"] == "stored"


def test_accept_unknown_ae_without_restart(site):
    r = site.echo("STRANGER")
    assert r.returncode != 0 and "rejected" in r.stderr.lower(), r.stderr
    assert site.admin.change(accept_unknown_ae=True)["accept_unknown_ae"] is True
    r = site.echo("STRANGER")
    assert r.returncode == 0, r.stderr
    assert site.store(make_instance(str(site.src), 5, "v1"), aet="STRANGER").returncode == 0
    site.admin.change(accept_unknown_ae=False)
    r = site.echo("STRANGER")
    assert r.returncode != 0 and "rejected" in r.stderr.lower(), r.stderr
    assert site.echo("SCU").returncode == 0   # known nodes are unaffected


def find_names(site, pattern):
    r = subprocess.run(["findscu", "-S", "-v", "-aet", "SCU", "-aec", "AGORA",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientName={pattern}",
                        "-k", "StudyInstanceUID", "127.0.0.1", str(site.srv.port)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TCP_NODELAY="1"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return len(re.findall(r"Find Response.*Pending", out))


def qido_names(site, pattern, **params):
    r = site.admin.get("/dicom-web/studies",
                       params={"PatientName": pattern, **params})
    assert r.status_code in (200, 204), r.text
    return len(r.json()) if r.status_code == 200 else 0


def test_fuzzy_names_without_restart(site):
    assert site.store(make_instance(str(site.src), 1, "v1")).returncode == 0
    assert find_names(site, "Settings*") == 1
    assert find_names(site, "settings*") == 0   # PS3.4 C.2.2.2.1: exact case
    assert qido_names(site, "settings*") == 0
    site.admin.change(fuzzy_names=True)
    assert find_names(site, "settings*") == 1
    # QIDO-RS without fuzzymatching follows the setting; the parameter wins
    assert qido_names(site, "settings*") == 1
    assert qido_names(site, "settings*", fuzzymatching="false") == 0
    site.admin.change(fuzzy_names=False)
    assert find_names(site, "settings*") == 0
    assert qido_names(site, "settings*") == 0
    assert qido_names(site, "settings*", fuzzymatching="true") == 1


def test_compress_without_restart(site):
    site.admin.change(compress="jpeg-ls")
    assert site.store(make_instance(str(site.src), 7, "v1")).returncode == 0
    site.admin.change(compress="")
    assert site.store(make_instance(str(site.src), 8, "v1")).returncode == 0
    out = agora("ls", "--data", site.data, "instances").stdout.splitlines()
    cols = out[0].split("\t")
    ts = {row.split("\t")[cols.index("SOPInstanceUID")]:
          row.split("\t")[cols.index("TransferSyntaxUID")] for row in out[1:]}
    assert ts[f"{SERIES}.7"] == JPEG_LS
    assert ts[f"{SERIES}.8"] != JPEG_LS


@pytest.mark.parametrize("body, names", [
    ({"duplicates": "sometimes"}, "duplicates"),
    ({"duplicates": "reject", "aet": "OTHER"}, "aet"),          # read-only
    ({"duplicates": "reject", "sources": {}}, "sources"),
    ({"duplicates": "reject", "retention": "5y"}, "retention"),  # unknown
    ({"duplicates": "reject", "fuzzy_names": "true"}, "fuzzy_names"),  # not a boolean
    ({"duplicates": "reject", "accept_unknown_ae": 1}, "accept_unknown_ae"),
    ({"duplicates": "reject", "compress": "jpeg"}, "compress"),
    ({"compress": None}, "compress"),
    ({}, None),
    ([], None),
    ("not json", None),
])
def test_bad_input_changes_nothing(site, body, names):
    before = site.admin.settings()
    if isinstance(body, str):
        r = site.admin.put("/api/v1/settings", data=body)
    else:
        r = site.admin.put("/api/v1/settings", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["error"] == "bad request"
    if names:
        assert names in err["detail"], err
    assert site.admin.settings() == before
    assert site.stored_rows() == {}


def test_only_admins(site):
    base = site.base
    assert requests.get(base + "/api/v1/settings", timeout=30).status_code == 401
    r = requests.put(base + "/api/v1/settings", json={"duplicates": "reject"}, timeout=30)
    assert r.status_code == 401
    rad = Admin(base, "rad", RAD_PW)
    assert rad.get("/api/v1/settings").status_code == 403
    r = rad.put("/api/v1/settings", json={"accept_unknown_ae": True})
    assert r.status_code == 403
    assert site.admin.settings()["accept_unknown_ae"] is False
    assert site.echo("STRANGER").returncode != 0
    assert site.stored_rows() == {}
    r = site.admin.s.delete(base + "/api/v1/settings", timeout=30)
    assert r.status_code == 405


def test_change_is_audited(site):
    site.admin.change(duplicates="reject", accept_unknown_ae=True)
    r = site.admin.get("/api/v1/audit", params={"event": "110113", "user": "admin"})
    assert r.status_code == 200, r.text
    details = [x.get("detail") or "" for x in r.json()]
    hit = [d for d in details if d.startswith("settings:")]
    assert len(hit) == 1, details
    assert "duplicates keep -> reject" in hit[0]
    assert "accept_unknown_ae false -> true" in hit[0]
    # a refused change is not a change
    site.admin.put("/api/v1/settings", json={"duplicates": "sometimes"})
    r = site.admin.get("/api/v1/audit", params={"event": "110113", "user": "admin"})
    assert len([x for x in r.json() if (x.get("detail") or "").startswith("settings:")]) == 1
    # the stored row says who
    db = sqlite3.connect(f"file:{site.data}/index.sqlite?mode=ro", uri=True)
    try:
        rows = dict(db.execute("SELECT key, changed_by FROM settings"))
    finally:
        db.close()
    assert rows == {"duplicates": "admin", "accept_unknown_ae": "admin"}
    # and the command-line tool shows it too
    out = agora("audit", "list", "--data", site.data, "--user", "admin", "--json").stdout
    assert "duplicates keep -> reject" in out
