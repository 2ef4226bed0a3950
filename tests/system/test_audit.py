"""The audit trail (issue 7; PS3.15 A.5 messages, A.6 SYSLOG-TLS export):
`agora serve` records Application Start and Stop; `agora audit verify`
passes on an untouched log and names the first record changed, removed
or moved with Python's sqlite3; `agora audit list` filters; a Python
re-implementation of the keyed chain agrees with every hash the C code
wrote; a Python TLS syslog collector receives RFC 5425-framed RFC 5424
messages carrying the DICOM audit message XML, also after an outage and
across a restart, and only when its certificate is trusted and names it."""
import hashlib
import json
import os
import pwd
import shutil
import socket
import sqlite3
import ssl
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from test_dicomweb import series_files
from test_dimse import AGORA, Server, dcmtk, free_port

BOM = b"\xef\xbb\xbf"


def agora(*args, timeout=60):
    return subprocess.run([AGORA, *args], capture_output=True, text=True,
                          timeout=timeout)


def audit_json(data, *args):
    r = agora("audit", "list", "--data", data, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def verify(data):
    return agora("audit", "verify", "--data", data)


def db(data):
    return sqlite3.connect(os.path.join(data, "audit.db"))


def served(tmp_path, *extra):
    """A data folder that has seen one start and one clean stop."""
    data = str(tmp_path / "d")
    srv = Server(data, *extra)
    assert srv.stop() == 0
    return data


# ---- the chain, re-implemented from audit.h ------------------------------

def _put_str(h, s):
    if s is None:
        h.update(b"\0")
    else:
        b = s.encode("utf-8")
        h.update(b"\1" + struct.pack(">I", len(b)) + b)


def record_hash(key, row, prev):
    """hash_n = BLAKE2b-256 keyed with audit.key (audit.h, chain.c)."""
    h = hashlib.blake2b(key=key, digest_size=32)
    h.update(b"agora.audit.v1\0")
    h.update(struct.pack(">Q", row["seq"]))
    _put_str(h, row["time"])
    h.update(struct.pack(">II", row["event"], row["type"]))
    h.update(row["action"].encode("ascii"))
    h.update(struct.pack(">I", row["outcome"]))
    for f in ("user", "source", "destination", "patient_id", "patient_name",
              "study_uid", "sop_class"):
        _put_str(h, row[f])
    h.update(struct.pack(">Q", row["count"]))
    _put_str(h, row["detail"])
    h.update(prev)
    return h.digest()


def head_mac(key, seq, time_, hash_):
    h = hashlib.blake2b(key=key, digest_size=32)
    h.update(b"agora.audit.head.v1\0")
    h.update(struct.pack(">Q", seq))
    _put_str(h, time_)
    h.update(hash_)
    return h.digest()


def rows(data):
    con = db(data)
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute("SELECT * FROM events ORDER BY seq")]
    con.close()
    return out


def read_key(data):
    with open(os.path.join(data, "audit.key"), "rb") as f:
        return f.read()


def append_with_key(data, **fields):
    """Append one record the way audit.h says the writer does (what an
    attacker holding audit.key could do; here: known-answer records)."""
    key = read_key(data)
    con = db(data)
    seq, t, prev = con.execute("SELECT seq, time, hash FROM head").fetchone()
    row = dict(seq=seq + 1, time=t[:-1] + "Z", event=110112, type=0,
               action="E", outcome=0, user=None, source=None,
               destination=None, patient_id=None, patient_name=None,
               study_uid=None, sop_class=None, count=0, detail=None)
    row.update(fields)
    h = record_hash(key, row, bytes.fromhex(prev))
    cols = ", ".join(row)
    con.execute("INSERT INTO events (%s, hash) VALUES (%s, ?)" %
                (cols, ", ".join("?" * len(row))), [*row.values(), h.hex()])
    mac = head_mac(key, row["seq"], row["time"], h)
    con.execute("UPDATE head SET seq = ?, time = ?, hash = ?, mac = ?",
                (row["seq"], row["time"], h.hex(), mac.hex()))
    con.commit()
    con.close()


# ---- start, stop, verify ---------------------------------------------------

def test_serve_records_start_and_stop(tmp_path):
    data = served(tmp_path)
    r = verify(data)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("records, chain intact"), r.stdout
    recs = audit_json(data, "--action", "application activity")
    assert [x["type_name"] for x in recs] == ["Application Stop",
                                              "Application Start"]
    start = recs[1]
    assert start["event"] == 110100 and start["type"] == 110120
    assert start["action"] == "E" and start["outcome"] == 0
    assert start["time"].endswith("Z") and len(start["time"]) == 27
    assert recs[0]["seq"] > start["seq"]
    # a second run appends to the same chain
    srv = Server(data)
    assert srv.stop() == 0
    assert len(audit_json(data, "--action", "application-start")) == 2
    assert verify(data).returncode == 0


def test_files_are_private(tmp_path):
    data = served(tmp_path)
    for name in ("audit.key", "audit.db"):
        assert os.stat(os.path.join(data, name)).st_mode & 0o077 == 0, name
    assert len(read_key(data)) == 32
    log = open(data + ".log").read()
    assert read_key(data).hex() not in log


def test_python_chain_agrees_with_agora(tmp_path):
    """An independent implementation of the documented chain."""
    data = served(tmp_path)
    key = read_key(data)
    prev = bytes(32)
    recs = rows(data)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    for r in recs:
        h = record_hash(key, r, prev)
        assert h.hex() == r["hash"], "record %d" % r["seq"]
        prev = h
    con = db(data)
    seq, t, hh, mac = con.execute("SELECT seq, time, hash, mac FROM head")\
        .fetchone()
    con.close()
    assert seq == recs[-1]["seq"] and hh == recs[-1]["hash"]
    assert head_mac(key, seq, t, bytes.fromhex(hh)).hex() == mac
    # and records made with it pass agora's verify
    append_with_key(data, user="alice", patient_id="P\u00e9<1>",
                    detail="keys\u0001")
    r = verify(data)
    assert r.returncode == 0, r.stdout


# {n}: the number of records (other layers may record more than Start and
# Stop); the expected message names the first bad record.
@pytest.mark.parametrize("tamper, expect", [
    ("UPDATE events SET user = 'mallory' WHERE seq = 2", "record 2 changed"),
    ("UPDATE events SET detail = NULL WHERE seq = 1", "record 1 changed"),
    ("UPDATE events SET time = '2001-01-01T00:00:00.000000Z' WHERE seq = 3",
     "record 3 "),
    ("DELETE FROM events WHERE seq = 2", "record 2 missing"),
    ("DELETE FROM events WHERE seq = {n}",
     "record {n} missing: removed from the end"),
    ("DELETE FROM events WHERE seq >= 3",
     "record 3 missing: removed from the end"),
    ("UPDATE events SET seq = -seq WHERE seq IN (2, 3);"
     "UPDATE events SET seq = 5 + seq WHERE seq IN (-2, -3)",
     "record 2 out of order: its content is stored as record 3"),
    ("DELETE FROM head", "the chain head is missing"),
    ("UPDATE head SET seq = seq - 1", "the chain head was changed"),
])
def test_tampering_is_named(tmp_path, tamper, expect):
    data = served(tmp_path)
    srv = Server(data)      # two runs: at least records 1-4
    assert srv.stop() == 0
    n = len(rows(data))
    assert n >= 4
    assert verify(data).returncode == 0
    con = db(data)
    con.executescript(tamper.format(n=n))
    con.close()
    r = verify(data)
    assert r.returncode == 1, r.stdout
    assert expect.format(n=n) in r.stdout, r.stdout


def test_wrong_key_fails_at_record_1(tmp_path):
    data = served(tmp_path)
    with open(os.path.join(data, "audit.key"), "wb") as f:
        f.write(os.urandom(32))
    r = verify(data)
    assert r.returncode == 1 and "record 1 changed" in r.stdout, r.stdout
    # and the server refuses to append to a chain it cannot vouch for
    r = subprocess.run([AGORA, "serve", "--data", data, "--dicom-port", "0",
                        "--http-port", "0"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1 and "chain head" in r.stderr, r.stderr


def test_verify_without_a_log(tmp_path):
    r = verify(str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no audit log" in r.stderr


# ---- list ----------------------------------------------------------------

def test_list_filters(tmp_path):
    data = served(tmp_path)
    append_with_key(data, user="alice", source="10.0.0.7",
                    patient_id="P1", study_uid="1.2.3",
                    detail="PatientID=P1")
    append_with_key(data, event=110103, action="R", user="bob",
                    patient_id="P2", study_uid="1.2.4", count=12)
    append_with_key(data, event=110114, type=110122, user="mallory",
                    outcome=4, detail="bad password")
    assert verify(data).returncode == 0

    assert [x["user"] for x in audit_json(data, "--user", "alice")] == \
        ["alice"]
    assert [x["study_uid"] for x in audit_json(data, "--patient", "P2")] \
        == ["1.2.4"]
    assert [x["patient_id"] for x in audit_json(data, "--study", "1.2.3")] \
        == ["P1"]
    assert [x["user"] for x in audit_json(data, "--action", "login")] == \
        ["mallory"]
    assert [x["user"] for x in audit_json(data, "--action", "110112")] == \
        ["alice"]
    read = audit_json(data, "--action", "R")    # and the listings so far
    assert {x["action"] for x in read} == {"R"}
    assert [x["user"] for x in read if x["event"] != 110101] == ["bob"]
    assert [x["user"] for x in audit_json(data, "--failures")] == \
        ["mallory"]
    assert audit_json(data, "--since", "2999-01-01") == []
    assert audit_json(data, "--until", "2000-01-01") == []
    assert len(audit_json(data, "--since", "2000-01-01", "--until",
                          "2999-12-31T23:59Z", "--limit", "3")) == 3
    one = audit_json(data, "--user", "bob")[0]
    assert one["count"] == 12 and one["event_name"] == \
        "DICOM Instances Accessed"
    # text form: one line per record, control characters escaped
    r = agora("audit", "list", "--data", data, "--user", "alice")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("seq\ttime\tevent")
    assert len(lines) == 2 and "\tQuery\t" in lines[1]
    # bad input is a usage error
    for bad in (["--since", "yesterday"], ["--action", "dance"],
                ["--limit", "x"]):
        r = agora("audit", "list", "--data", data, *bad)
        assert r.returncode == 2, bad


def test_listing_is_audited(tmp_path):
    data = served(tmp_path)
    before = len(rows(data))
    audit_json(data, "--user", "nobody")
    used = audit_json(data, "--action", "audit log used")
    assert len(used) == 1
    assert used[0]["user"] == pwd.getpwuid(os.geteuid()).pw_name
    assert "--user nobody" in used[0]["detail"]
    assert len(rows(data)) == before + 2
    assert verify(data).returncode == 0


def test_one_store_record_per_study_per_association(tmp_path):
    """C-STOREs are recorded per study per association (PS3.15 A.5.3.2,
    Instances Transferred), also when a peer interleaves many studies:
    40 studies sent round-robin in one association give 40 records with
    their counts, not one per change of study."""
    data = str(tmp_path / "d")
    root = "1.2.826.0.1.3680043.10.1447.99.88."
    by_study = [series_files(tmp_path, root + str(k), 3) for k in range(40)]
    order = [files[i] for i in range(3) for files in by_study]
    srv = Server(data, "--accept-unknown-ae")
    try:
        r = dcmtk("storescu", "-aet", "MIGRATE", "-aec", "AGORA",
                  "127.0.0.1", str(srv.port), *order, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        assert srv.stop() == 0
    stores = [x for x in audit_json(data, "--user", "MIGRATE")
              if x["event"] == 110104 and x["action"] == "C"]
    assert sorted(x["study_uid"] for x in stores) == \
        sorted(root + str(k) for k in range(40))
    assert {x["count"] for x in stores} == {3}
    assert all(x["outcome"] == 0 for x in stores)


def test_list_while_serving(tmp_path):
    data = str(tmp_path / "d")
    srv = Server(data)
    try:
        deadline = time.time() + 10
        while True:     # Start is committed as serve finishes starting
            recs = audit_json(data, "--action", "application-start")
            if recs or time.time() > deadline:
                break
            time.sleep(0.1)
        assert len(recs) == 1
        assert verify(data).returncode == 0
    finally:
        assert srv.stop() == 0
    assert verify(data).returncode == 0


# ---- syslog over TLS -------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("audit-pki"))
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout",
            "-out", "ca.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj",
            "/CN=Agora Audit Test CA", "-days", "2", "-out", "ca.crt", cwd=d)
    sans = {"collector": "DNS:localhost,IP:127.0.0.1",
            "wrongname": "DNS:elsewhere.example"}
    for name in ("collector", "wrongname", "rogue"):
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout",
                "-out", name + ".key", cwd=d)
        openssl("req", "-new", "-key", name + ".key", "-subj",
                "/CN=" + name, "-out", name + ".csr", cwd=d)
    for name, san in sans.items():
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)
    openssl("x509", "-req", "-in", "rogue.csr", "-signkey", "rogue.key",
            "-days", "2", "-out", "rogue.crt", cwd=d)
    return d


class Collector:
    """An audit record repository: TLS server, RFC 5425 frames."""

    def __init__(self, pki, port=None, cert="collector"):
        self.port = port or free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(pki, cert + ".crt"),
                                 os.path.join(pki, cert + ".key"))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.frames = []
        self.handshakes_failed = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self._read(tls)
            except (ssl.SSLError, OSError):
                with self.cond:
                    self.handshakes_failed += 1
                    self.cond.notify_all()

    def _read(self, tls):
        buf = b""
        while not self.stopping:
            try:
                chunk = tls.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk
            while b" " in buf:
                n, rest = buf.split(b" ", 1)
                assert n.isdigit(), buf[:40]
                if len(rest) < int(n):
                    break
                with self.cond:
                    self.frames.append(rest[:int(n)])
                    self.cond.notify_all()
                buf = rest[int(n):]

    def messages(self):
        with self.cond:
            return [parse(f) for f in self.frames]

    def wait_for(self, pred, timeout=20):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                found = [m for m in map(parse, self.frames) if pred(m)]
                if found or time.time() > deadline:
                    return found
                self.cond.wait(0.2)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def parse(frame):
    """RFC 5424 header fields and the parsed XML of one message."""
    pri, ts, host, app, procid, msgid, sd, msg = frame.split(b" ", 7)
    assert msg.startswith(BOM), msg[:10]
    return dict(pri=pri.decode(), time=ts.decode(), host=host.decode(),
                app=app.decode(), procid=procid.decode(),
                msgid=msgid.decode(), sd=sd.decode(),
                xml=ET.fromstring(msg[len(BOM):]))


def type_code(m):
    e = m["xml"].find("EventIdentification/EventTypeCode")
    return e.get("csd-code") if e is not None else None


def is_start(m):
    return type_code(m) == "110120"


def is_stop(m):
    return type_code(m) == "110121"


def syslog_args(pki, port):
    return ("--audit-syslog", "127.0.0.1:%d" % port,
            "--audit-syslog-ca", os.path.join(pki, "ca.crt"))


def test_start_and_stop_reach_the_collector(tmp_path, pki):
    col = Collector(pki)
    try:
        data = str(tmp_path / "d")
        srv = Server(data, *syslog_args(pki, col.port))
        got = col.wait_for(is_start)
        assert got, "no Application Start at the collector"
        m = got[0]
        assert m["pri"] == "<85>1"         # authpriv.notice, version 1
        assert m["app"] == "agora" and m["msgid"] == "IHE+RFC-3881"
        assert m["sd"] == "-" and m["procid"] == str(srv.proc.pid)
        assert m["time"].endswith("Z") and "T" in m["time"]
        x = m["xml"]
        assert x.tag == "AuditMessage"
        ev = x.find("EventIdentification")
        assert ev.get("EventActionCode") == "E"
        assert ev.get("EventOutcomeIndicator") == "0"
        assert ev.get("EventDateTime") == m["time"]
        eid = ev.find("EventID")
        assert (eid.get("csd-code"), eid.get("codeSystemName"),
                eid.get("originalText")) == ("110100", "DCM",
                                             "Application Activity")
        ap = x.find("ActiveParticipant")
        assert ap.get("UserID") == "AGORA"
        assert ap.find("RoleIDCode").get("csd-code") == "110150"
        assert x.find("AuditSourceIdentification").get("AuditSourceID") == \
            "AGORA"
        assert srv.stop() == 0
        assert col.wait_for(is_stop, timeout=10), "no Application Stop"
        # the cursor covers everything: the log and the collector agree
        con = db(data)
        cur = con.execute("SELECT seq FROM export_cursor").fetchone()[0]
        con.close()
        assert cur == len(rows(data))
    finally:
        col.close()


def test_collector_outage_loses_nothing(tmp_path, pki):
    port = free_port()      # nobody listens yet
    data = str(tmp_path / "d")
    srv = Server(data, *syslog_args(pki, port))
    try:
        time.sleep(1.5)     # a few refused connections
        assert srv.alive()
        col = Collector(pki, port=port)
        try:
            assert col.wait_for(is_start, timeout=20), "Start never arrived"
        finally:
            col.close()
    finally:
        assert srv.stop() == 0


def test_unsent_records_go_with_the_next_run(tmp_path, pki):
    port = free_port()
    data = str(tmp_path / "d")
    srv = Server(data, *syslog_args(pki, port))
    assert srv.stop() == 0          # Start and Stop, never sent
    # and a record full of hostile text, for the XML escaping end to end
    name = "Doe^</ParticipantObjectName>&\"'\u0001\u0085\u00e9"
    append_with_key(data, event=110110, action="R", user='eve"<&>',
                    source="10.9.9.9", patient_id="P<1>", patient_name=name,
                    detail="]]> <!-- \t\r\n --> &amp;")
    col = Collector(pki, port=port)
    try:
        srv = Server(data, *syslog_args(pki, port))
        try:
            def kinds():
                return [type_code(m) for m in col.messages()
                        if is_start(m) or is_stop(m)]
            col.wait_for(lambda m: len(kinds()) >= 3, timeout=20)
            assert kinds()[:3] == ["110120", "110121", "110120"], kinds()
        finally:
            assert srv.stop() == 0
    finally:
        col.close()
    # every message parsed as XML (parse() would have raised); the hostile
    # one carries the values exactly, but for U+0001, which XML 1.0 cannot
    hostile = [m["xml"] for m in col.messages()
               if m["xml"].find("EventIdentification/EventID")
               .get("csd-code") == "110110"]
    assert len(hostile) == 1
    x = hostile[0]
    assert x.find("ActiveParticipant").get("UserID") == 'eve"<&>'
    po = x.find("ParticipantObjectIdentification")
    assert po.get("ParticipantObjectID") == "P<1>"
    assert po.find("ParticipantObjectName").text == \
        name.replace("\u0001", "\ufffd")
    assert x.find("EventIdentification/EventOutcomeDescription").text == \
        "]]> <!-- \t\r\n --> &amp;"


@pytest.mark.parametrize("cert", ["rogue", "wrongname"])
def test_untrusted_collector_gets_nothing(tmp_path, pki, cert):
    col = Collector(pki, cert=cert)
    try:
        data = str(tmp_path / "d")
        srv = Server(data, *syslog_args(pki, col.port))
        try:
            deadline = time.time() + 10
            with col.cond:
                while col.handshakes_failed == 0 and time.time() < deadline:
                    col.cond.wait(0.2)
            assert col.handshakes_failed > 0, "agora never tried"
            time.sleep(0.5)
            assert col.frames == []
            assert srv.alive()
        finally:
            assert srv.stop() == 0
        con = db(data)
        cur = con.execute("SELECT seq FROM export_cursor").fetchone()[0]
        con.close()
        assert cur == 0             # everything still waits to be sent
    finally:
        col.close()


def test_export_needs_a_ca(tmp_path):
    r = subprocess.run([AGORA, "serve", "--data", str(tmp_path / "d"),
                        "--dicom-port", "0", "--http-port", "0",
                        "--audit-syslog", "127.0.0.1:6514"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "CA" in r.stderr, r.stderr
    r = subprocess.run([AGORA, "serve", "--data", str(tmp_path / "d"),
                        "--audit-syslog", "[::1"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 2
