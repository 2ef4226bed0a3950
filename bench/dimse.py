"""Minimal DICOM upper layer + DIMSE client for latency measurements.

Debian 12 has no pynetdicom, and DCMTK's findscu/echoscu open one process and
one association per query, so their timings are dominated by process start
and association set-up.  This client holds ONE association and sends C-ECHO
and study-root C-FIND requests over it, so what is timed is the server's
work plus one loopback round trip.  It implements only what that needs
(PS3.8 §9.3: A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE, A-ABORT; PS3.7 §9.3:
C-ECHO-RQ/RSP, C-FIND-RQ/RSP) with Implicit VR Little Endian only.

Usage (library):
    with Association("127.0.0.1", 4242, "ORTHANC") as a:
        a.echo()
        n = a.find({"QueryRetrieveLevel": "STUDY", "PatientID": "X", ...})
"""

import socket
import struct

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPL_CLASS_UID = "1.2.826.0.1.3680043.10.1447.99.0.2"
MAX_PDU = 65536


class DimseError(Exception):
    pass


def _uid(s):
    b = s.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def _item(itype, payload):
    return struct.pack(">BBH", itype, 0, len(payload)) + payload


def _cmd_element(group_elem, value):
    return struct.pack("<HHI", 0x0000, group_elem, len(value)) + value


def _encode_command(fields):
    """fields: list of (element, bytes) in ascending order, group 0000."""
    body = b"".join(_cmd_element(e, v) for e, v in fields)
    return _cmd_element(0x0000, struct.pack("<I", len(body))) + body


def _parse_command(data):
    out = {}
    i = 0
    while i + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, i)
        i += 8
        out[(g << 16) | e] = data[i:i + n]
        i += n
    return out


def _us(x):
    return struct.pack("<H", x)


class Association:
    def __init__(self, host, port, called_aet, calling_aet="BENCHSCU",
                 timeout=30.0, abstract_syntaxes=None):
        self.host, self.port = host, port
        self.abstract_syntaxes = abstract_syntaxes or [VERIFICATION,
                                                       STUDY_ROOT_FIND]
        self.called, self.calling = called_aet, calling_aet
        self.timeout = timeout
        self.sock = None
        self.msg_id = 0
        self.pc = {}          # abstract syntax -> accepted context id
        self.peer_max = 0

    # ---- PDU I/O ----------------------------------------------------------
    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise DimseError("connection closed by peer")
            buf += chunk
        return bytes(buf)

    def _recv_pdu(self):
        head = self._recv_exact(6)
        ptype, _, length = struct.unpack(">BBI", head)
        if length > 64 * 1024 * 1024:
            raise DimseError("PDU too large: %d" % length)
        return ptype, self._recv_exact(length)

    def _send_pdu(self, ptype, payload):
        self.sock.sendall(struct.pack(">BBI", ptype, 0, len(payload)) +
                          payload)

    # ---- association --------------------------------------------------------
    def open(self):
        self.sock = socket.create_connection((self.host, self.port),
                                             timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        items = [_item(0x10, APP_CONTEXT.encode())]
        contexts = [(1 + 2 * i, sop)
                    for i, sop in enumerate(self.abstract_syntaxes)]
        for pcid, sop in contexts:
            sub = _item(0x30, sop.encode()) + _item(0x40, IMPLICIT_LE.encode())
            items.append(_item(0x20, struct.pack(">BBBB", pcid, 0, 0, 0) +
                               sub))
        user = _item(0x51, struct.pack(">I", MAX_PDU)) + \
            _item(0x52, IMPL_CLASS_UID.encode()) + \
            _item(0x55, b"AGORA_BENCH")
        items.append(_item(0x50, user))
        rq = struct.pack(">HH", 1, 0) + \
            self.called.ljust(16).encode()[:16] + \
            self.calling.ljust(16).encode()[:16] + b"\0" * 32 + \
            b"".join(items)
        self._send_pdu(0x01, rq)
        ptype, data = self._recv_pdu()
        if ptype == 0x03:
            raise DimseError("association rejected: result %d source %d "
                             "reason %d" % (data[1], data[2], data[3]))
        if ptype != 0x02:
            raise DimseError("unexpected PDU type 0x%02x" % ptype)
        i = 68
        by_id = dict(contexts)
        while i + 4 <= len(data):
            itype, _, ilen = struct.unpack_from(">BBH", data, i)
            body = data[i + 4:i + 4 + ilen]
            if itype == 0x21 and body[2] == 0:
                self.pc[by_id[body[0]]] = body[0]
            elif itype == 0x50:
                j = 0
                while j + 4 <= len(body):
                    st, _, sl = struct.unpack_from(">BBH", body, j)
                    if st == 0x51:
                        self.peer_max = struct.unpack_from(">I", body,
                                                           j + 4)[0]
                    j += 4 + sl
            i += 4 + ilen
        return self

    def close(self):
        if self.sock is None:
            return
        try:
            self._send_pdu(0x05, b"\0\0\0\0")
            ptype, _ = self._recv_pdu()
        except (OSError, DimseError):
            pass
        finally:
            self.sock.close()
            self.sock = None

    def abort(self):
        if self.sock is not None:
            try:
                self._send_pdu(0x07, b"\0\0\0\0")
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    # ---- messages -----------------------------------------------------------
    def _send_message(self, pcid, command, dataset=None):
        # command and data set each fit in one PDV here (small messages)
        limit = (self.peer_max or MAX_PDU) - 6
        for payload, mch in ((command, 0x03), (dataset, 0x02)):
            if payload is None:
                continue
            if len(payload) > limit:
                raise DimseError("message larger than the peer's max PDU")
            pdv = struct.pack(">IBB", len(payload) + 2, pcid, mch) + payload
            self._send_pdu(0x04, pdv)

    def _recv_message(self):
        """Returns (command dict, dataset bytes or None)."""
        cmd = bytearray()
        data = bytearray()
        cmd_done = False
        need_data = False
        while True:
            ptype, payload = self._recv_pdu()
            if ptype == 0x07:
                raise DimseError("association aborted by peer")
            if ptype != 0x04:
                raise DimseError("unexpected PDU type 0x%02x" % ptype)
            i = 0
            while i + 6 <= len(payload):
                plen, _pcid, mch = struct.unpack_from(">IBB", payload, i)
                frag = payload[i + 6:i + 4 + plen]
                i += 4 + plen
                if mch & 1:
                    cmd += frag
                    if mch & 2:
                        cmd_done = True
                        fields = _parse_command(bytes(cmd))
                        dst = fields.get(0x00000800, b"\x01\x01")
                        need_data = struct.unpack("<H", dst)[0] != 0x0101
                        if not need_data:
                            return fields, None
                else:
                    data += frag
                    if mch & 2 and cmd_done:
                        return _parse_command(bytes(cmd)), bytes(data)

    def _next_id(self):
        self.msg_id = (self.msg_id % 65535) + 1
        return self.msg_id

    def echo(self):
        if VERIFICATION not in self.pc:
            raise DimseError("verification not accepted")
        mid = self._next_id()
        cmd = _encode_command([(0x0002, _uid(VERIFICATION)),
                               (0x0100, _us(0x0030)), (0x0110, _us(mid)),
                               (0x0800, _us(0x0101))])
        self._send_message(self.pc[VERIFICATION], cmd)
        fields, _ = self._recv_message()
        status = struct.unpack("<H", fields.get(0x00000900, b"\xff\xff"))[0]
        if status != 0:
            raise DimseError("C-ECHO status 0x%04x" % status)

    def find(self, keys):
        """Study-root C-FIND; keys: {keyword: value}.  Returns match count."""
        if STUDY_ROOT_FIND not in self.pc:
            raise DimseError("study root C-FIND not accepted")
        ds = Dataset()
        for k, v in keys.items():
            setattr(ds, k, v)
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = True
        write_dataset(fp, ds)
        mid = self._next_id()
        cmd = _encode_command([(0x0002, _uid(STUDY_ROOT_FIND)),
                               (0x0100, _us(0x0020)), (0x0110, _us(mid)),
                               (0x0700, _us(0)), (0x0800, _us(0x0000))])
        self._send_message(self.pc[STUDY_ROOT_FIND], cmd, fp.getvalue())
        matches = 0
        for _ in range(1000000):
            fields, _data = self._recv_message()
            status = struct.unpack("<H",
                                   fields.get(0x00000900, b"\xff\xff"))[0]
            if status in (0xFF00, 0xFF01):
                matches += 1
                continue
            if status != 0:
                raise DimseError("C-FIND status 0x%04x" % status)
            return matches
        raise DimseError("too many C-FIND responses")


def probe(host, port, called_aet, calling_aet="BENCHSCU", timeout=10.0):
    """The query/retrieve services a peer accepts: a subset of
    {"echo", "find", "move", "get"} (study root)."""
    names = {VERIFICATION: "echo", STUDY_ROOT_FIND: "find",
             STUDY_ROOT_MOVE: "move", STUDY_ROOT_GET: "get"}
    a = Association(host, port, called_aet, calling_aet, timeout,
                    abstract_syntaxes=list(names))
    a.open()
    try:
        return {names[sop] for sop in a.pc}
    finally:
        a.close()
