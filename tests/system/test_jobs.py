"""Sending a study to a DICOM node as a job (REST API, /api/v1/jobs): the
Storage SCU against DCMTK's storescp as the destination, a node that refuses
the association, cancellation, the rights (the download verb, the
study's scope, whose jobs one sees), and jobs kept across a restart."""
import os
import socket
import subprocess
import time

import pydicom
import pytest
import requests

from test_dimse import AGORA, ENV, Server, agora, free_port

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
UID = "1.2.826.0.1.3680043.10.1447.66.{}"
S_RAD, S_ONC, S_BIG, S_RLE = (UID.format(n) for n in (1, 2, 3, 4))
MISSING = UID.format(99)
PW = {"admin": "admin-password-1", "rad": "rad-password-1",
      "view": "view-password-1", "rad2": "rad2-password-1"}


def make_study(folder, study, dept, n, sample="CT_small.dcm"):
    base = pydicom.dcmread(os.path.join(SAMPLES, sample))
    paths = []
    for i in range(1, n + 1):
        d = base.copy()
        d.PatientID = "JOBS-" + study.rsplit(".", 1)[1]
        d.PatientName = "Jobs^" + study.rsplit(".", 1)[1]
        d.StudyInstanceUID = study
        d.SeriesInstanceUID = study + ".1"
        d.SOPInstanceUID = f"{study}.1.{i}"
        d.InstanceNumber = i
        d.InstitutionalDepartmentName = dept
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        p = os.path.join(folder, f"{study}-{i}.dcm")
        d.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


def wait_port(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def storescp(aet, port, out, *extra):
    p = subprocess.Popen(["storescp", "-aet", aet, "-od", str(out), *extra, str(port)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


class Client:
    def __init__(self, base, user=None):
        self.base = base
        self.s = requests.Session()
        if user is not None:
            r = self.s.post(base + "/api/v1/login",
                            json={"username": user, "password": PW[user]}, timeout=30)
            assert r.status_code == 200, r.text

    def get(self, path, **kw):
        return self.s.get(self.base + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.s.post(self.base + path, timeout=30, **kw)

    def delete(self, path, **kw):
        return self.s.delete(self.base + path, timeout=30, **kw)

    def send(self, study, node):
        return self.post(f"/api/v1/studies/{study}/send", json={"node": node})

    def wait_sending(self, job_id, timeout=30):
        """The job once it runs and has sent at least one instance."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get(f"/api/v1/jobs/{job_id}").json()
            if job["state"] == "running" and job["sent"] >= 1:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} is not sending: {job}")

    def wait(self, job_id, states=("done", "failed", "cancelled"), timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.get(f"/api/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job = r.json()
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['state']}: {job}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    src = root / "src"
    src.mkdir()
    data = str(root / "data")
    files = {S_RAD: make_study(str(src), S_RAD, "RADIOLOGY", 3),
             S_ONC: make_study(str(src), S_ONC, "ONCOLOGY", 2),
             S_BIG: make_study(str(src), S_BIG, "RADIOLOGY", 12),
             S_RLE: make_study(str(src), S_RLE, "RADIOLOGY", 1, "MR_small_RLE.dcm")}
    for d in ("radiology", "oncology"):
        agora("dept", "--data", data, "add", d)
        agora("dept", "--data", data, "rule", d, "department", d)
    agora("import", "--data", data, str(src))
    for name, role in (("admin", "admin"), ("rad", "radiologist"), ("rad2", "radiologist"),
                       ("view", "viewer")):
        dept = ["--department", "radiology"] if role != "admin" else []
        r = subprocess.run([AGORA, "user", "--data", data, "add", name, "--role", role,
                            *dept, "--password-stdin"],
                           input=PW[name] + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    dest, slow = root / "dest", root / "slow"
    dest.mkdir()
    slow.mkdir()
    dest_port, slow_port = free_port(), free_port()
    agora("node", "--data", data, "add", "DEST", "127.0.0.1", str(dest_port))
    agora("node", "--data", data, "add", "SLOW", "127.0.0.1", str(slow_port))
    agora("node", "--data", data, "add", "DOWN", "127.0.0.1", str(free_port()))
    scps = [storescp("DEST", dest_port, dest),
            storescp("SLOW", slow_port, slow, "--sleep-during", "1")]
    http = free_port()
    srv = Server(data, "--http-port", str(http), anonymous=False)
    srv.base = f"http://127.0.0.1:{http}"
    srv.files, srv.dest, srv.slow, srv.data = files, dest, slow, data
    # A node that refuses us: Agora's own DICOM port under another AE title
    # (Agora rejects a called AE title that is not its own).
    admin = Client(srv.base, "admin")
    r = admin.post("/api/v1/nodes", json={"aet": "WRONGAE", "host": "127.0.0.1",
                                          "port": srv.port})
    assert r.status_code == 201, r.text
    yield srv
    assert srv.stop() == 0, "serve must exit cleanly on SIGTERM"
    for p in scps:
        p.terminate()
        p.wait(10)


def jobs_gauge(site, state):
    text = requests.get(site.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'agora_jobs{{state="{state}"}} '):
            return int(line.split()[1])
    raise AssertionError("no jobs gauge in /metrics")


def received(folder):
    out = {}
    for f in os.listdir(folder):
        d = pydicom.dcmread(os.path.join(folder, f))
        out[d.SOPInstanceUID] = d
    return out


def test_send_study_to_storescp(site):
    c = Client(site.base, "rad")
    r = c.send(S_RAD, "DEST")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "send" and job["node"] == "DEST" and job["study"] == S_RAD
    assert job["total"] == 3 and job["user"] == "rad"
    assert job["state"] in ("queued", "running", "done")
    assert job["created"].endswith("Z")
    done = c.wait(job["id"])
    assert done["state"] == "done", done
    assert (done["sent"], done["failed"], done["failed_instances"]) == (3, 0, [])
    assert done["started"] and done["finished"]
    got = received(site.dest)
    for path in site.files[S_RAD]:
        sent = pydicom.dcmread(path)
        assert sent.SOPInstanceUID in got
        d = got[sent.SOPInstanceUID]
        assert d.PixelData == sent.PixelData
        assert d.PatientName == sent.PatientName
        assert d.StudyInstanceUID == S_RAD
    # the job is listed, newest first
    jobs = c.get("/api/v1/jobs").json()["jobs"]
    assert jobs[0]["id"] == job["id"]


def test_compressed_instance_is_decoded_for_a_peer_without_its_syntax(site):
    # storescp accepts only uncompressed syntaxes by default: the RLE
    # instance must arrive decoded, with pydicom's pixels.
    c = Client(site.base, "rad")
    r = c.send(S_RLE, "DEST")
    assert r.status_code == 202, r.text
    done = c.wait(r.json()["id"])
    assert done["state"] == "done", done
    src = pydicom.dcmread(site.files[S_RLE][0])
    assert src.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    got = received(site.dest)[src.SOPInstanceUID]
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    assert (got.pixel_array == src.pixel_array).all()


def test_node_that_refuses_fails_the_job_with_a_message(site):
    c = Client(site.base, "rad")
    r = c.send(S_RAD, "WRONGAE")
    assert r.status_code == 202, r.text
    job = c.wait(r.json()["id"])
    assert job["state"] == "failed", job
    assert job["sent"] == 0
    assert "WRONGAE" in job["message"]
    assert "refused the association" in job["message"]
    assert "called AE title not recognized" in job["message"], job["message"]


def test_node_that_is_down_fails_the_job(site):
    c = Client(site.base, "rad")
    r = c.send(S_RAD, "DOWN")
    assert r.status_code == 202, r.text
    job = c.wait(r.json()["id"])
    assert job["state"] == "failed", job
    assert job["message"].startswith("DOWN at 127.0.0.1:"), job["message"]


def test_cancel_a_running_job(site):
    c = Client(site.base, "rad")
    r = c.send(S_BIG, "SLOW")   # one second per instance
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = c.wait_sending(job_id)
    assert jobs_gauge(site, "running") == 1
    r = c.delete(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    assert r.json()["cancelled_by"] == "rad"
    job = c.wait(job_id)
    assert job["state"] == "cancelled", job
    assert 1 <= job["sent"] < job["total"] == 12
    assert job["message"] == "cancelled by rad"
    assert jobs_gauge(site, "running") == 0
    # what arrived is what the job counted (each sent instance was acknowledged)
    arrived = {u for u in received(site.slow) if u.startswith(S_BIG + ".")}
    assert len(arrived) == job["sent"]
    # a finished job cannot be cancelled again
    assert c.delete(f"/api/v1/jobs/{job_id}").status_code == 409


def test_cancel_a_queued_job(site):
    # Two workers: two slow sends keep them busy, the third waits.
    c = Client(site.base, "rad")
    ids = [c.send(S_BIG, "SLOW").json()["id"] for _ in range(3)]
    third = c.get(f"/api/v1/jobs/{ids[2]}").json()
    assert third["state"] == "queued", third
    assert jobs_gauge(site, "queued") == 1
    assert jobs_gauge(site, "running") == 2
    r = c.delete(f"/api/v1/jobs/{ids[2]}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert r.json()["sent"] == 0 and r.json()["started"] is None
    for i in ids[:2]:
        assert c.delete(f"/api/v1/jobs/{i}").status_code == 200
        assert c.wait(i)["state"] == "cancelled"


def test_without_the_download_verb_403(site):
    c = Client(site.base, "view")   # viewer: view only
    r = c.send(S_RAD, "DEST")
    assert r.status_code == 403, r.text
    assert "download" in r.json()["detail"]


def test_out_of_scope_study_answers_like_a_missing_one(site):
    c = Client(site.base, "rad")    # radiology does not see oncology's study
    r1 = c.send(S_ONC, "DEST")
    r2 = c.send(MISSING, "DEST")
    assert r1.status_code == r2.status_code == 404
    assert r1.json() == r2.json()
    # the admin sees it and may send it
    admin = Client(site.base, "admin")
    r = admin.send(S_ONC, "DEST")
    assert r.status_code == 202, r.text
    assert admin.wait(r.json()["id"])["state"] == "done"


def test_bad_requests(site):
    c = Client(site.base, "rad")
    r = c.send(S_RAD, "NOSUCHNODE")
    assert r.status_code == 404 and "NOSUCHNODE" in r.json()["detail"], r.text
    r = c.post(f"/api/v1/studies/{S_RAD}/send", json={"nodes": "DEST"})
    assert r.status_code == 400, r.text
    assert c.get("/api/v1/jobs/abc").status_code == 404
    assert c.get("/api/v1/jobs/999999").status_code == 404
    assert requests.get(site.base + "/api/v1/jobs", timeout=10).status_code == 401
    assert requests.post(site.base + f"/api/v1/studies/{S_RAD}/send",
                         json={"node": "DEST"}, timeout=10).status_code == 401


def test_jobs_are_their_creators(site):
    rad, rad2, admin = (Client(site.base, u) for u in ("rad", "rad2", "admin"))
    r = rad.send(S_RAD, "DEST")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    rad.wait(job_id)
    # another user of the same department does not see it, nor cancel it
    assert rad2.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert rad2.delete(f"/api/v1/jobs/{job_id}").status_code == 404
    assert job_id not in {j["id"] for j in rad2.get("/api/v1/jobs").json()["jobs"]}
    # the administrator sees every job
    assert job_id in {j["id"] for j in admin.get("/api/v1/jobs").json()["jobs"]}
    assert admin.get(f"/api/v1/jobs/{job_id}").json()["user"] == "rad"


def test_send_is_audited_as_export(site):
    rad, admin = Client(site.base, "rad"), Client(site.base, "admin")
    r = rad.send(S_RAD, "DEST")
    assert r.status_code == 202
    rad.wait(r.json()["id"])
    deadline = time.time() + 10
    while time.time() < deadline:
        a = admin.get("/api/v1/audit", params={"study": S_RAD, "event": "110106"})
        assert a.status_code == 200, a.text
        text = a.text
        if "send to DEST" in text:
            break
        time.sleep(0.2)
    assert "send to DEST" in text and "rad" in text, text


# ---- TLS: a node marked tls gets the job over TLS (PS3.15 B.1) -------------------

from test_tls import pki  # noqa: E402,F401  (the fixture: a CA, server and client certificates)


def test_send_over_tls(tmp_path, pki):  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    data = str(tmp_path / "data")
    files = make_study(str(src), S_RAD, "RADIOLOGY", 2)
    agora("import", "--data", data, str(src))
    dest = tmp_path / "dest"
    dest.mkdir()
    port = free_port()
    scp = storescp("TLSDEST", port, dest, "+tls", os.path.join(pki, "client.key"),
                   os.path.join(pki, "client.crt"), "+cf", os.path.join(pki, "ca.crt"))
    http = free_port()
    srv = Server(data, "--http-port", str(http), "--tls-port", str(free_port()),
                 "--tls-cert", os.path.join(pki, "server.crt"),
                 "--tls-key", os.path.join(pki, "server.key"),
                 "--tls-ca", os.path.join(pki, "ca.crt"))
    base = f"https://127.0.0.1:{http}"   # HTTPS too: the DICOM certificate
    try:
        c = Client(base)   # anonymous: every right
        c.s.verify = os.path.join(pki, "ca.crt")
        c.s.trust_env = False   # REQUESTS_CA_BUNDLE would override verify
        for aet, tls in (("TLSDEST", True), ("PLAINDEST", False)):
            r = c.post("/api/v1/nodes", json={"aet": aet, "host": "127.0.0.1",
                                              "port": port, "tls": tls})
            assert r.status_code == 201, r.text
        job = c.wait(c.send(S_RAD, "TLSDEST").json()["id"])
        assert job["state"] == "done", job
        got = received(dest)
        for p in files:
            sent = pydicom.dcmread(p)
            assert got[sent.SOPInstanceUID].PixelData == sent.PixelData
        # the same peer without TLS: the handshake fails, the job says so
        job = c.wait(c.send(S_RAD, "PLAINDEST").json()["id"])
        assert job["state"] == "failed" and job["message"].startswith("PLAINDEST at"), job
    finally:
        srv.stop()
        scp.terminate()
        scp.wait(10)


def test_tls_node_without_tls_configured(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = str(tmp_path / "data")
    make_study(str(src), S_RAD, "RADIOLOGY", 1)
    agora("import", "--data", data, str(src))
    http = free_port()
    srv = Server(data, "--http-port", str(http))
    try:
        c = Client(f"http://127.0.0.1:{http}")
        r = c.post("/api/v1/nodes", json={"aet": "TLSONLY", "host": "127.0.0.1",
                                          "port": srv.port, "tls": True})
        assert r.status_code == 201, r.text
        job = c.wait(c.send(S_RAD, "TLSONLY").json()["id"])
        assert job["state"] == "failed", job
        assert "wants TLS and no TLS is configured" in job["message"], job
    finally:
        srv.stop()


def test_jobs_survive_a_restart(tmp_path):
    """Jobs are kept in the index: after a restart a finished job is listed
    as it was, and a send the stop interrupted resumes after the instances
    it had sent — each instance reaches the node once."""
    import sqlite3
    src = tmp_path / "src"
    src.mkdir()
    study, other = UID.format(7), UID.format(8)
    make_study(str(src), study, "RADIOLOGY", 5)
    make_study(str(src), other, "RADIOLOGY", 1)
    data = str(tmp_path / "data")
    agora("import", "--data", data, str(src))
    dest, slow = tmp_path / "dest", tmp_path / "slow"
    dest.mkdir()
    slow.mkdir()
    dest_port, slow_port = free_port(), free_port()
    agora("node", "--data", data, "add", "DEST", "127.0.0.1", str(dest_port))
    agora("node", "--data", data, "add", "SLOW", "127.0.0.1", str(slow_port))
    log = open(tmp_path / "slow.log", "w")
    scps = [storescp("DEST", dest_port, dest),
            subprocess.Popen(["storescp", "-v", "-aet", "SLOW", "-od", str(slow),
                              "--sleep-during", "1", str(slow_port)],
                             env=ENV, stdout=log, stderr=subprocess.STDOUT)]
    wait_port(slow_port)
    http = free_port()
    base = f"http://127.0.0.1:{http}"
    srv = Server(data, "--http-port", str(http))
    try:
        c = Client(base)
        done = c.wait(c.send(other, "DEST").json()["id"])
        assert done["state"] == "done", done
        job_id = c.send(study, "SLOW").json()["id"]
        job = c.wait_sending(job_id)
        assert srv.stop() == 0
        # In the table: queued again, with what it had sent.
        with sqlite3.connect(os.path.join(data, "index.sqlite")) as db:
            doc, sops = db.execute("SELECT doc, sops FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        import json
        row = json.loads(doc)
        assert row["state"] == "queued" and 1 <= row["sent"] < 5, row
        assert len(sops.split("\n")) == 5
        srv = Server(data, "--http-port", str(http))
        c = Client(base)
        listed = {j["id"]: j for j in c.get("/api/v1/jobs").json()["jobs"]}
        assert listed[done["id"]] == done
        assert job_id in listed
        resumed = c.wait(job_id, timeout=60)
        assert resumed["state"] == "done", resumed
        assert (resumed["sent"], resumed["failed"], resumed["total"]) == (5, 0, 5)
        assert resumed["started"] == job["started"]
        # ids go on from the table's
        assert c.send(other, "DEST").json()["id"] > job_id
    finally:
        srv.stop()
        for p in scps:
            p.terminate()
            p.wait(10)
        log.close()
    got = received(slow)
    assert sorted(got) == sorted(f"{study}.1.{i}" for i in range(1, 6))
    stores = open(tmp_path / "slow.log").read().count("Received Store Request")
    assert stores == 5, stores
