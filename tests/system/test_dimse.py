"""DICOM networking against real peers: DCMTK's echoscu and storescu talk to
`agora serve`; raw sockets play misbehaving peers (PS3.8, PS3.4 A/B)."""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pydicom
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGORA = os.environ.get("AGORA_BIN", os.path.join(ROOT, "build", "agora"))
SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
# Debian's DCMTK waits ~40 ms per response on a delayed ACK without this.
ENV = dict(os.environ, TCP_NODELAY="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """agora serve on free ports.  HTTP is anonymous (every right) unless
    anonymous=False: tests of access control log in like users do."""

    def __init__(self, data, *extra, anonymous=True, env=None):
        self.data = data
        self.port = free_port()
        os.makedirs(os.path.dirname(data), exist_ok=True)
        self.log = open(os.path.join(os.path.dirname(data), os.path.basename(data) + ".log"), "w")
        if "--http-port" not in extra:
            extra = (*extra, "--http-port", "0")   # several servers at once
        if anonymous:
            extra = (*extra, "--http-anonymous")
        self.proc = subprocess.Popen(
            [AGORA, "serve", "--data", data, "--dicom-port", str(self.port), *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
            env=env if env is not None else {**os.environ, "AGORA_ADMIN_PASSWORD": "admin-password-1"})
        # Ready once the DICOM port answers, and the HTTP port when one is
        # given: the web listener starts after the DICOM one (a moment
        # later under ASan), and a first request must not be refused.
        ports = [self.port]
        if "--http-port" in extra:
            http = int(extra[list(extra).index("--http-port") + 1])
            ports += [http] if http else []
        deadline = time.time() + 10
        while ports and time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", ports[0]), timeout=0.2):
                    ports.pop(0)
            except OSError:
                time.sleep(0.05)
        if ports:
            raise RuntimeError("agora serve did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None


def agora(*args, check=True):
    r = subprocess.run([AGORA, *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"agora {args}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def dcmtk(*args, timeout=60):
    return subprocess.run(list(args), capture_output=True, text=True, env=ENV, timeout=timeout)


def ls_instances(data):
    out = agora("ls", "--data", data, "--limit", "100000", "instances").stdout.splitlines()
    if not out:
        return set()
    cols = out[0].split("\t")
    i = cols.index("SOPInstanceUID")
    return {line.split("\t")[i] for line in out[1:]}


@pytest.fixture
def known(tmp_path):
    """A server that knows the calling AE 'SCU'."""
    data = str(tmp_path / "data")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    srv = Server(data)
    yield srv
    assert srv.stop() == 0, "serve must exit cleanly on SIGTERM"


def test_echo_known_ae(known):
    r = dcmtk("echoscu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(known.port))
    assert r.returncode == 0, r.stderr


def test_unknown_calling_ae_is_rejected(known):
    r = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "AGORA", "127.0.0.1", str(known.port))
    assert r.returncode != 0
    assert "Rejected" in r.stderr or "rejected" in r.stderr.lower()
    # and the server keeps serving
    assert dcmtk("echoscu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
                 str(known.port)).returncode == 0


def test_wrong_called_ae_is_rejected(known):
    r = dcmtk("echoscu", "-aet", "SCU", "-aec", "NOTAGORA", "127.0.0.1", str(known.port))
    assert r.returncode != 0


def test_accept_unknown_ae_when_configured(tmp_path):
    srv = Server(str(tmp_path / "d"), "--accept-unknown-ae")
    try:
        r = dcmtk("echoscu", "-aet", "ANYONE", "-aec", "AGORA", "127.0.0.1", str(srv.port))
        assert r.returncode == 0, r.stderr
    finally:
        srv.stop()


def storable_samples():
    files = []
    for name in ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm",
                 "waveform_ecg.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
                 "SC_rgb.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]:
        p = os.path.join(SAMPLES, name)
        if os.path.exists(p):
            files.append(p)
    return files


def unique_copies(tmp_path):
    """The samples, each with its own SOP Instance UID (several pydicom
    samples are one instance in different syntaxes), syntax kept."""
    out = []
    for n, f in enumerate(storable_samples()):
        d = pydicom.dcmread(f, force=True)
        uid = f"1.2.826.0.1.3680043.10.1447.99.8.{n + 1}"
        d.SOPInstanceUID = uid
        if "TransferSyntaxUID" in d.file_meta:
            d.file_meta.MediaStorageSOPInstanceUID = uid
        p = str(tmp_path / os.path.basename(f))
        d.save_as(p, write_like_original=True)
        out.append(p)
    return out


def test_storescu_stores_every_syntax(known, tmp_path):
    files = unique_copies(tmp_path)
    # storescu proposes only uncompressed syntaxes unless told: compressed
    # files go one by one with the option that proposes their syntax, and
    # Agora stores them as they come.
    flag = {"1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
            "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.4.80": "-xt",
            "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.70": "-xs"}
    plain = []
    for f in files:
        ts = pydicom.dcmread(f, stop_before_pixels=True, force=True).file_meta.get("TransferSyntaxUID")
        if ts in flag:
            r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", flag[ts],
                      "127.0.0.1", str(known.port), f)
            assert r.returncode == 0, (f, r.stderr)
        else:
            plain.append(f)
    r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA",
              "127.0.0.1", str(known.port), *plain)
    assert r.returncode == 0, r.stderr
    stored = ls_instances(known.data)
    for f in files:
        uid = pydicom.dcmread(f, stop_before_pixels=True, force=True).SOPInstanceUID
        assert uid in stored, f
    # What was stored is what was sent: same elements and pixel bytes (in
    # the blob files: a clean stop writes out what was staged).
    assert known.stop() == 0
    blobs = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(known.data, "blobs")) for f in fs]
    by_uid = {}
    for b in blobs:
        d = pydicom.dcmread(b)
        by_uid[d.SOPInstanceUID] = d
    for f in files:
        sent = pydicom.dcmread(f, force=True)
        got = by_uid[sent.SOPInstanceUID]
        same_ts = got.file_meta.get("TransferSyntaxUID") == \
            sent.file_meta.get("TransferSyntaxUID")
        for el in sent:
            if el.tag == 0xFFFCFFFC:
                continue   # trailing padding: storescu drops it
            if el.tag == 0x7FE00010:
                if same_ts:
                    assert got[el.tag].value == el.value, f
            elif el.VR != "SQ":
                assert got[el.tag].value == el.value, (f, el.tag)


def test_parallel_associations(known, tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    uids = []
    for i in range(200):
        base.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1447.99.7.{i + 1}"
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.InstanceNumber = i + 1
        base.save_as(str(src / f"{i}.dcm"), write_like_original=False)
        uids.append(base.SOPInstanceUID)
    procs = []
    for k in range(4):
        part = [str(src / f"{i}.dcm") for i in range(k, 200, 4)]
        procs.append(subprocess.Popen(
            ["storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(known.port), *part],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert set(uids) <= ls_instances(known.data)
    r = agora("check", "--data", known.data)
    assert "0 missing, 0 bad checksums, 0 orphans" in r.stdout


def test_unsupported_abstract_syntax(known, tmp_path):
    # Make a file with a SOP Class that is not a storage class.
    d = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    d.SOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root FIND
    d.file_meta.MediaStorageSOPClassUID = d.SOPClassUID
    p = str(tmp_path / "odd.dcm")
    d.save_as(p, write_like_original=False)
    r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(known.port), p)
    assert r.returncode != 0
    assert d.SOPInstanceUID not in ls_instances(known.data)


def test_acknowledged_instances_survive_kill(tmp_path):
    data = str(tmp_path / "k")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    srv = Server(data)
    f = os.path.join(SAMPLES, "MR_small.dcm")
    r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(srv.port), f)
    assert r.returncode == 0
    srv.stop(signal.SIGKILL)
    uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
    assert uid in ls_instances(data)
    assert agora("check", "--data", data).returncode == 0


# ---- misbehaving peers (raw sockets) ---------------------------------------

def assoc_rq(called=b"AGORA", calling=b"SCU", contexts=None):
    def item(t, body):
        return struct.pack(">BBH", t, 0, len(body)) + body
    ctx = contexts or [(1, b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])]
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for cid, as_, tss in ctx:
        sub = item(0x30, as_) + b"".join(item(0x40, t) for t in tss)
        body += item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def read_pdu(s, timeout=5):
    s.settimeout(timeout)
    h = b""
    while len(h) < 6:
        c = s.recv(6 - len(h))
        if not c:
            return None, b""
        h += c
    n = struct.unpack(">I", h[2:6])[0]
    body = b""
    while len(body) < n:
        c = s.recv(n - len(body))
        if not c:
            break
        body += c
    return h[0], body


def still_serves(port):
    return dcmtk("echoscu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(port)).returncode == 0


def test_non_dicom_bytes_are_refused(known):
    with socket.create_connection(("127.0.0.1", known.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        t, _ = read_pdu(s)
        assert t in (None, 7)      # closed, or A-ABORT
    assert still_serves(known.port)


def test_oversized_pdu_length_is_aborted(known):
    with socket.create_connection(("127.0.0.1", known.port)) as s:
        s.sendall(struct.pack(">BBI", 1, 0, 0x7FFFFFFF) + b"\x00" * 64)
        t, _ = read_pdu(s)
        assert t in (None, 7)
    assert still_serves(known.port)


def test_lying_item_length_in_request(known):
    rq = bytearray(assoc_rq())
    rq[6 + 68 + 2:6 + 68 + 4] = b"\xff\xff"   # application context length
    with socket.create_connection(("127.0.0.1", known.port)) as s:
        s.sendall(bytes(rq))
        t, _ = read_pdu(s)
        assert t in (None, 3, 7)
    assert still_serves(known.port)


def test_data_before_association_is_aborted(known):
    pdata = struct.pack(">BBI", 4, 0, 8) + struct.pack(">IBB", 2, 1, 3) + b"\x00\x00"
    with socket.create_connection(("127.0.0.1", known.port)) as s:
        s.sendall(pdata)
        t, _ = read_pdu(s)
        assert t in (None, 7)


def test_silent_peer_is_dropped(tmp_path):
    data = str(tmp_path / "s")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    srv = Server(data, "--artim-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            start = time.time()
            t, _ = read_pdu(s, timeout=10)
            assert t in (None, 7)
            assert time.time() - start < 5
        assert still_serves(srv.port)
    finally:
        srv.stop()


def test_trickling_peer_is_dropped(tmp_path):
    """A slowloris peer: each byte of its association request comes before
    any wait could time out, the whole never does.  The ARTIM timer bounds
    the whole request, not each read."""
    data = str(tmp_path / "s")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    srv = Server(data, "--artim-timeout", "1")
    try:
        rq = assoc_rq()
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            start = time.time()
            closed = None
            for b in rq:                 # ~60 s if the server waited
                try:
                    s.sendall(bytes([b]))
                    s.settimeout(0.25)
                    s.recv(64)       # an A-ABORT, or the close
                    closed = time.time() - start
                    break
                except socket.timeout:
                    continue
                except OSError:
                    closed = time.time() - start
                    break
            assert closed is not None and closed < 5, closed
        assert still_serves(srv.port)
    finally:
        srv.stop()


def test_rejected_request_gets_associate_rj(known):
    with socket.create_connection(("127.0.0.1", known.port)) as s:
        s.sendall(assoc_rq(calling=b"NOBODY"))
        t, body = read_pdu(s)
        assert t == 3
        assert body[1:4] == bytes([1, 1, 3])   # permanent, user, calling AE


def accepted_syntaxes(port, contexts):
    """{context id: accepted transfer syntax (or None)} of an A-ASSOCIATE-AC."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(assoc_rq(contexts=contexts))
        t, body = read_pdu(s)
        assert t == 2
        i, out = 68, {}
        while i < len(body):
            it, ln = body[i], struct.unpack(">H", body[i + 2:i + 4])[0]
            if it == 0x21:
                ts = body[i + 12:i + 4 + ln] if body[i + 6] == 0 else None
                out[body[i + 4]] = ts.decode() if ts else None
            i += 4 + ln
        s.sendall(struct.pack(">BBI", 7, 0, 4) + bytes(4))   # abort
        return out


def test_unknown_context_rejected_but_echo_accepted(known):
    ctx = [(1, b"1.2.3.4.5.6.7", [b"1.2.840.10008.1.2"]),
           (3, b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])]
    assert accepted_syntaxes(known.port, ctx) == {1: None, 3: "1.2.840.10008.1.2"}


def test_transfer_syntax_preferences(known, tmp_path):
    """Agora's order by default (uncompressed first, or a sender's
    compressed first choice); --prefer-ts puts the configured ones first,
    where the peer offers them and Agora can take them."""
    CT = b"1.2.840.10008.5.1.4.1.1.2"
    IMPL, EXPL = b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1"
    JLS, J2K = b"1.2.840.10008.1.2.4.80", b"1.2.840.10008.1.2.4.90"
    ctx = [(1, CT, [IMPL, EXPL, JLS, J2K]), (3, CT, [J2K, IMPL]),
           (5, b"1.2.840.10008.1.1", [JLS, IMPL]), (7, CT, [IMPL])]
    assert accepted_syntaxes(known.port, ctx) == {
        1: EXPL.decode(), 3: J2K.decode(), 5: IMPL.decode(), 7: IMPL.decode()}
    data = str(tmp_path / "pref")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    srv = Server(data, "--prefer-ts", "1.2.840.10008.1.2.4.80,1.2.840.10008.1.2")
    try:
        assert accepted_syntaxes(srv.port, ctx) == {
            1: JLS.decode(), 3: IMPL.decode(), 5: IMPL.decode(), 7: IMPL.decode()}
    finally:
        srv.stop()
    r = subprocess.run([AGORA, "serve", "--data", data, "--dicom-port", str(free_port()),
                        "--http-port", "0", "--prefer-ts", "1.2.3.4"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "1.2.3.4" in r.stderr


def test_flood_of_associations(known):
    socks = []
    try:
        for _ in range(100):
            socks.append(socket.create_connection(("127.0.0.1", known.port)))
        # Others are held open and silent; a real client still gets through
        # once the bounded set times out or slots free up; at least the
        # server must not die.
        assert known.alive()
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert still_serves(known.port)
