"""Storage Commitment Push Model SCP (PS3.4 J), driven by a small DIMSE
client written here over a raw socket (DCMTK has no commitment SCU)."""
import io
import os
import time
import socket
import struct

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from test_dimse import Server, agora, dcmtk, read_pdu

COMMIT = "1.2.840.10008.1.20.1"
COMMIT_INSTANCE = "1.2.840.10008.1.20.1.1"
IMPLICIT = "1.2.840.10008.1.2"
SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"


def item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def associate(port, abstract=COMMIT, aet="SCU"):
    """An association from aet with one context (id 1, Implicit VR LE) for
    abstract, which must be accepted."""
    body = struct.pack(">HH", 1, 0) + b"AGORA".ljust(16) + aet.encode().ljust(16) + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += item(0x20, struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, abstract.encode())
                 + item(0x40, IMPLICIT.encode()))
    body += item(0x50, item(0x51, struct.pack(">I", 65536)) + item(0x52, b"1.2.3.4"))
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
    t, ac = read_pdu(s)
    assert t == 2, "association not accepted"
    i = ac.index(b"\x21\x00", 68)           # presentation context (AC)
    assert ac[i + 4] == 1 and ac[i + 6] == 0, f"{abstract} context not accepted"
    return s


def el(tag, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def command(fields):
    body = b"".join(el(t, v) for t, v in sorted(fields.items()))
    return el(0x00000000, struct.pack("<I", len(body))) + body


def pdata(payload, is_command):
    pdv = struct.pack(">IBB", len(payload) + 2, 1, (1 if is_command else 0) | 2) + payload
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def parse_command(b):
    out, i = {}, 0
    while i + 8 <= len(b):
        g, e, n = struct.unpack("<HHI", b[i:i + 8])
        out[(g << 16) | e] = b[i + 8:i + 8 + n]
        i += 8 + n
    return out


def recv_message(s):
    cmd, data, got_cmd = b"", b"", None
    while True:
        t, body = read_pdu(s, timeout=10)
        assert t == 4, f"expected P-DATA, got {t}"
        i = 0
        while i < len(body):
            n = struct.unpack(">I", body[i:i + 4])[0]
            flags = body[i + 5]
            payload = body[i + 6:i + 4 + n]
            i += 4 + n
            if flags & 1:
                cmd += payload
                if flags & 2:
                    got_cmd = parse_command(cmd)
                    if struct.unpack("<H", got_cmd[0x00000800])[0] == 0x0101:
                        return got_cmd, None
            else:
                data += payload
                if flags & 2:
                    ds = read_dataset(io.BytesIO(data), True, True)
                    return got_cmd, ds


def implicit_bytes(ds):
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def send_n_action(s, refs, tx):
    ds = Dataset()
    ds.TransactionUID = tx
    ds.ReferencedSOPSequence = []
    for cls, inst in refs:
        it = Dataset()
        it.ReferencedSOPClassUID = cls
        it.ReferencedSOPInstanceUID = inst
        ds.ReferencedSOPSequence.append(it)
    cmd = command({0x00000003: COMMIT.encode(), 0x00000100: struct.pack("<H", 0x0130),
                   0x00000110: struct.pack("<H", 7), 0x00000800: struct.pack("<H", 0),
                   0x00001001: COMMIT_INSTANCE.encode(), 0x00001008: struct.pack("<H", 1)})
    s.sendall(pdata(cmd, True) + pdata(implicit_bytes(ds), False))
    rsp, _ = recv_message(s)
    assert struct.unpack("<H", rsp[0x00000100])[0] == 0x8130
    return struct.unpack("<H", rsp[0x00000900])[0]


def request_commit(port, refs, tx="1.2.826.0.1.3680043.10.1447.99.9.1"):
    s = associate(port)
    status = send_n_action(s, refs, tx)
    if status != 0:
        s.close()
        return status, None, None
    ev, evds = recv_message(s)
    assert struct.unpack("<H", ev[0x00000100])[0] == 0x0100
    event_type = struct.unpack("<H", ev[0x00001002])[0]
    msg_id = ev[0x00000110]
    s.sendall(pdata(command({0x00000002: COMMIT.encode(),
                             0x00000100: struct.pack("<H", 0x8100),
                             0x00000120: msg_id, 0x00000800: struct.pack("<H", 0x0101),
                             0x00000900: struct.pack("<H", 0)}), True))
    s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))   # release
    read_pdu(s)
    s.close()
    return status, event_type, evds


@pytest.fixture
def srv(tmp_path):
    data = str(tmp_path / "d")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    s = Server(data)
    f = os.path.join(SAMPLES, "CT_small.dcm")
    assert dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
                 str(s.port), f).returncode == 0
    yield s, data, pydicom.dcmread(f, stop_before_pixels=True)
    s.stop()


def test_commit_stored_instance(srv):
    s, _, d = srv
    status, event, ds = request_commit(s.port, [(d.SOPClassUID, d.SOPInstanceUID)])
    assert status == 0 and event == 1
    assert ds.TransactionUID == "1.2.826.0.1.3680043.10.1447.99.9.1"
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == [d.SOPInstanceUID]
    assert "FailedSOPSequence" not in ds


def test_commit_reports_missing_and_wrong_class(srv):
    s, _, d = srv
    refs = [(d.SOPClassUID, d.SOPInstanceUID),
            (d.SOPClassUID, "1.2.3.4.5.6.7.8"),
            ("1.2.840.10008.5.1.4.1.1.4", d.SOPInstanceUID)]
    status, event, ds = request_commit(s.port, refs)
    assert status == 0 and event == 2
    failed = {(i.ReferencedSOPInstanceUID, i.FailureReason) for i in ds.FailedSOPSequence}
    assert failed == {("1.2.3.4.5.6.7.8", 0x0112), (d.SOPInstanceUID, 0x0122)}
    assert len(ds.ReferencedSOPSequence) == 1


def test_corrupted_blob_is_not_committed(srv):
    s, data, d = srv
    # a small blob is staged in the index first, written out once idle
    deadline = time.time() + 10
    while True:
        blobs = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(data, "blobs"))
                 for f in fs if not f.endswith(".tmp")]
        if blobs or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(blobs) == 1
    os.chmod(blobs[0], 0o600)
    with open(blobs[0], "r+b") as fh:
        fh.seek(-10, 2)
        b = fh.read(1)
        fh.seek(-10, 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    status, event, ds = request_commit(s.port, [(d.SOPClassUID, d.SOPInstanceUID)])
    assert event == 2
    assert ds.FailedSOPSequence[0].FailureReason == 0x0110


def test_bad_request_refused(srv):
    s, _, d = srv
    status, _, _ = request_commit(s.port, [], tx="not-a-uid")
    assert status != 0


def sub_items(body, start):
    """(type, value) of the items of an A-ASSOCIATE PDU from offset start."""
    out, i = [], start
    while i + 4 <= len(body):
        t, n = body[i], struct.unpack(">H", body[i + 2:i + 4])[0]
        out.append((t, body[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def accept_report(lsock):
    """Accept Agora's association as the commitment SCU would (J.3.3.1.3):
    the SCP role it proposes granted; return (event type, data set)."""
    c, _ = lsock.accept()
    c.settimeout(15)
    t, rq = read_pdu(c, timeout=15)
    assert t == 1, "expected an A-ASSOCIATE-RQ"
    assert rq[4:20].strip() == b"SCU" and rq[20:36].strip() == b"AGORA"
    items = sub_items(rq, 68)
    ctx = [v for t, v in items if t == 0x20]
    assert len(ctx) == 1 and COMMIT.encode() in ctx[0]
    ctx_id = ctx[0][0]
    user = dict(sub_items([v for t, v in items if t == 0x50][0], 0))
    role = user[0x54]                       # SCP/SCU role selection
    n = struct.unpack(">H", role[:2])[0]
    assert role[2:2 + n] == COMMIT.encode() and role[2 + n:] == b"\x00\x01"
    body = struct.pack(">HH", 1, 0) + rq[4:36] + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += item(0x21, struct.pack(">BBBB", ctx_id, 0, 0, 0) + item(0x40, IMPLICIT.encode()))
    body += item(0x50, item(0x51, struct.pack(">I", 65536)) + item(0x52, b"1.2.3.4")
                 + item(0x54, role))
    c.sendall(struct.pack(">BBI", 2, 0, len(body)) + body)
    ev, evds = recv_message(c)
    assert struct.unpack("<H", ev[0x00000100])[0] == 0x0100
    rsp = command({0x00000002: COMMIT.encode(), 0x00000100: struct.pack("<H", 0x8100),
                   0x00000120: ev[0x00000110], 0x00000800: struct.pack("<H", 0x0101),
                   0x00000900: struct.pack("<H", 0)})
    pdv = struct.pack(">IBB", len(rsp) + 2, ctx_id, 3) + rsp
    c.sendall(struct.pack(">BBI", 4, 0, len(pdv)) + pdv)
    t, _ = read_pdu(c, timeout=15)
    assert t == 5, "expected A-RELEASE-RQ"
    c.sendall(struct.pack(">BBI", 6, 0, 4) + bytes(4))
    c.close()
    return struct.unpack("<H", ev[0x00001002])[0], evds


def test_report_on_a_new_association_after_release(tmp_path):
    """J.3.3.1.2: the SCU released right after the N-ACTION-RSP; the result
    comes on an association Agora opens to it, with the SCP role."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(20)
    data = str(tmp_path / "d")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", str(lsock.getsockname()[1]))
    srv = Server(data)
    try:
        f = os.path.join(SAMPLES, "CT_small.dcm")
        assert dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
                     str(srv.port), f).returncode == 0
        d = pydicom.dcmread(f, stop_before_pixels=True)
        tx = "1.2.826.0.1.3680043.10.1447.99.9.77"
        s = associate(srv.port)
        assert send_n_action(s, [(d.SOPClassUID, d.SOPInstanceUID)], tx) == 0
        s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))   # release at once
        while True:          # a report on this association goes unanswered
            t, _ = read_pdu(s, timeout=10)
            if t in (6, None):
                break
        s.close()
        event, ds = accept_report(lsock)
        assert event == 1 and ds.TransactionUID == tx
        assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == [d.SOPInstanceUID]
        assert srv.alive()
    finally:
        lsock.close()
        srv.stop()
