"""Hostile and malformed input, built byte by byte.

Every case runs `agora dump` (or transcode) in a subprocess with a 20 s
timeout and, where memory matters, a 1 GiB address-space limit.  The rules:
exit status 0 or 1 (never a signal, never a hang); a rejection says where
(an offset) and what; nothing in a file is ever executed; no case needs
gigabytes.
"""

from __future__ import annotations

import os
import random
import re
import resource
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

import dcmdump_parse as dp
from conftest import (DEFLATED, EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE,
                      dcmdump_file, dump_problems)

GIB = 1 << 30


# AGORA_SANITIZED: AGORA_BIN is an ASan build, which reserves terabytes of
# address space for its shadow memory and cannot start under RLIMIT_AS.
# tools/test.sh caps it through ASAN_OPTIONS instead (an allocation over
# max_allocation_size_mb fails as it would under the limit).
SANITIZED = os.environ.get("AGORA_SANITIZED") == "1"


def limit_memory(nbytes=GIB):
    def _set():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return None if SANITIZED else _set


# ---- a tiny DICOM encoder ---------------------------------------------------

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT",
            "SV", "UV"}
UNDEFINED = 0xFFFFFFFF


class Enc:
    """Encode elements in one of the native encodings.  Values are given
    as bytes already in the right byte order (use .us()/.ul() for
    numbers)."""

    def __init__(self, explicit=True, big_endian=False):
        self.explicit = explicit
        self.e = ">" if big_endian else "<"

    def tag(self, tag):
        return struct.pack(self.e + "HH", tag >> 16, tag & 0xFFFF)

    def el(self, tag, vr, value=b"", length=None):
        """One element; length overrides the real value length."""
        n = len(value) if length is None else length
        if not self.explicit:
            return self.tag(tag) + struct.pack(self.e + "I", n) + value
        vrb = vr.encode("latin-1") if isinstance(vr, str) else vr
        if (vr if isinstance(vr, str) else "") in LONG_VRS:
            return self.tag(tag) + vrb + b"\0\0" + \
                struct.pack(self.e + "I", n) + value
        return self.tag(tag) + vrb + struct.pack(self.e + "H", n) + value

    def item(self, content, undefined=False, length=None):
        n = UNDEFINED if undefined else len(content) if length is None \
            else length
        out = self.tag(0xFFFEE000) + struct.pack(self.e + "I", n) + content
        if undefined:
            out += self.tag(0xFFFEE00D) + struct.pack(self.e + "I", 0)
        return out

    def seq(self, tag, items, undefined=True):
        body = b"".join(items)
        if undefined:
            return self.el(tag, "SQ", body, length=UNDEFINED) + \
                self.tag(0xFFFEE0DD) + struct.pack(self.e + "I", 0)
        return self.el(tag, "SQ", body)

    def us(self, *v):
        return struct.pack(self.e + "%dH" % len(v), *v)

    def ul(self, *v):
        return struct.pack(self.e + "%dI" % len(v), *v)


LE = Enc()


def text(s, pad=b" "):
    b = s.encode() if isinstance(s, str) else s
    return b + pad if len(b) % 2 else b


def meta_parts(ts, sop_class="1.2.840.10008.5.1.4.1.1.7",
               sop_instance="1.2.3.4.5.6.7.8"):
    """The file meta elements, (0002,0000) first."""
    body = [LE.el(0x00020001, "OB", b"\0\1"),
            LE.el(0x00020002, "UI", text(sop_class, b"\0")),
            LE.el(0x00020003, "UI", text(sop_instance, b"\0")),
            LE.el(0x00020010, "UI", text(ts, b"\0")),
            LE.el(0x00020012, "UI", text("1.2.3.4", b"\0"))]
    n = sum(len(b) for b in body)
    return [LE.el(0x00020000, "UL", LE.ul(n))] + body


def meta(ts, **kw):
    return b"".join(meta_parts(ts, **kw))


def part10(dataset, ts=EXPLICIT_LE, preamble=bytes(128), **kw):
    if ts == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset = c.compress(dataset) + c.flush()
    return preamble + b"DICM" + meta(ts, **kw) + dataset


def enc_for(ts):
    return Enc(explicit=ts != IMPLICIT_LE, big_endian=ts == EXPLICIT_BE)


def small_dataset(enc):
    """A small data set with strings, numbers, a nested sequence (defined
    and undefined lengths) and pixel data; returns (bytes, [element ends])."""
    parts = [
        enc.el(0x00080016, "UI", text("1.2.840.10008.5.1.4.1.1.7", b"\0")),
        enc.el(0x00080018, "UI", text("1.2.3.4.5.6.7.8", b"\0")),
        enc.el(0x00080060, "CS", text("OT")),
        enc.el(0x00100010, "PN", text("Doe^John")),
        enc.seq(0x00081115, [
            enc.item(enc.el(0x00081150, "UI", text("1.2.3", b"\0")) +
                     enc.seq(0x0008114A, [enc.item(
                         enc.el(0x00081155, "UI", text("1.2.3.4", b"\0")))],
                         undefined=False), undefined=True),
            enc.item(enc.el(0x00081160, "IS", text("7")))]),
        enc.el(0x00280010, "US", enc.us(2)),
        enc.el(0x00280011, "US", enc.us(2)),
        enc.el(0x00280100, "US", enc.us(16)),
        enc.el(0x00280030, "DS", text("0.5\\0.25")),
        enc.el(0x7FE00010, "OW", enc.us(1, 2, 3, 65535)),
    ]
    ends, pos = [], 0
    for p in parts:
        pos += len(p)
        ends.append(pos)
    return b"".join(parts), ends


def write(tmp, name, data):
    p = tmp / name
    p.write_bytes(data)
    return p


def dump(agora_run, path, *args, mem=None):
    t0 = time.monotonic()
    r = agora_run("dump", *args, path,
                  preexec_fn=limit_memory(mem) if mem else None)
    r.elapsed = time.monotonic() - t0
    r.err = r.stderr.decode("utf-8", "replace")
    assert r.returncode in (0, 1), "exit status %d (signal?) for %s: %s" % (
        r.returncode, path.name, r.err[-500:])
    if r.returncode == 1:
        assert r.err.strip(), "rejected without a message"
    return r


def assert_rejected(r, *words):
    assert r.returncode == 1, "accepted; stdout: %s" % r.stdout[-300:]
    low = r.err.lower()
    for w in words:
        assert w.lower() in low, "%r not in message: %s" % (w, r.err)


# ---- truncation -------------------------------------------------------------

@pytest.mark.parametrize("ts", [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE,
                                DEFLATED])
def test_truncated_at_every_offset(agora_run, tmp, ts):
    """Cut a small valid file at every offset.  A cut that falls between
    two top-level elements leaves a valid, shorter file; any other cut is
    an error that names an offset (or says the file is not DICOM, when
    only part of the preamble is left)."""
    enc = enc_for(ts)
    ds, ends = small_dataset(enc)
    full = part10(ds, ts)
    # where a cut leaves a well-formed file: after the preamble, after each
    # meta element, after each top-level element of a plain data set (a
    # deflate stream that ends early is an error wherever it is cut)
    valid_cuts = {132}
    pos = 132
    for part in meta_parts(ts):
        pos += len(part)
        valid_cuts.add(pos)
    if ts != DEFLATED:
        valid_cuts |= {pos + e for e in ends}
    r = dump(agora_run, write(tmp, "whole.dcm", full))
    assert r.returncode == 0, r.err

    def one(cut):
        return cut, dump(agora_run, write(tmp, "cut%d.dcm" % cut, full[:cut]))

    accepted = []
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        for cut, r in pool.map(one, range(len(full))):
            if r.returncode == 0:
                accepted.append(cut)
            elif cut == 0:
                assert "empty" in r.err, r.err
            elif cut < 132:
                assert "offset" in r.err or "not a DICOM file" in r.err, \
                    (cut, r.err)
            else:
                assert "offset" in r.err, (cut, r.err)
    unexpected = [c for c in accepted if c not in valid_cuts]
    assert unexpected == [], "cuts inside an element accepted: %s" % (
        unexpected[:20],)


def test_truncated_inside_a_value_says_truncated(agora_run, tmp):
    ds, _ = small_dataset(LE)
    full = part10(ds)
    r = dump(agora_run, write(tmp, "t.dcm", full[:-3]))
    assert_rejected(r, "offset", "(7fe0,0010)")
    assert "truncat" in r.err or "exceeds" in r.err, r.err


# ---- lying lengths ----------------------------------------------------------

@pytest.mark.parametrize("length", [0x100, 0x7FFFFFF0, 0xFFFFFFFE])
def test_length_beyond_the_file(agora_run, tmp, length):
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00091010, "OB", b"\0" * 16, length=length))
    r = dump(agora_run, write(tmp, "l.dcm", part10(ds)), mem=GIB)
    assert_rejected(r, "offset", "(0009,1010)")
    assert r.elapsed < 10


def test_short_length_beyond_the_file(agora_run, tmp):
    ds = LE.el(0x00100010, "PN", b"Doe^John", length=0xFFF0)
    r = dump(agora_run, write(tmp, "l.dcm", part10(ds)))
    assert_rejected(r, "offset", "(0010,0010)")


@pytest.mark.parametrize("length", [0x3FFFFFF0, 0x7FFFFFF0, 0xFFFFFFFE])
def test_lying_length_through_a_pipe(agora_run, tmp, length):
    """Through a pipe the size is unknown: a huge length must not turn into
    a huge allocation before the bytes arrive (SECURITY.md rule 1).  Under
    a 1 GiB address-space limit the answer is "truncated" or a configured
    budget refusal, never "out of memory"."""
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00091010, "OB", b"\0" * 16, length=length))
    data = part10(ds)
    r = agora_run("dump", "/dev/stdin", input=data,
                  preexec_fn=limit_memory())
    assert r.returncode == 1, r.stdout[-300:]
    assert b"(0009,1010)" in r.stderr, r.stderr
    assert b"out of memory" not in r.stderr, r.stderr


def test_item_length_beyond_the_sequence(agora_run, tmp):
    seq = LE.seq(0x00081115, [LE.item(LE.el(0x00081150, "UI",
                                            text("1.2", b"\0")),
                                      length=0x1000)], undefined=False)
    r = dump(agora_run, write(tmp, "i.dcm", part10(seq)))
    assert_rejected(r, "offset", "(fffe,e000)")


def test_sequence_length_beyond_the_file(agora_run, tmp):
    body = LE.item(LE.el(0x00081150, "UI", text("1.2", b"\0")))
    seq = LE.el(0x00081115, "SQ", body, length=len(body) + 100)
    r = dump(agora_run, write(tmp, "s.dcm", part10(seq)))
    assert_rejected(r, "offset", "(0008,1115)")


def test_item_overrunning_its_length(agora_run, tmp):
    """An item whose elements run past the item's own length."""
    inner = LE.el(0x00081150, "UI", text("1.2.3.4", b"\0"))
    seq = LE.seq(0x00081115, [LE.item(inner, length=len(inner) - 4)])
    r = dump(agora_run, write(tmp, "o.dcm", part10(seq)))
    assert_rejected(r, "offset")


# ---- undefined lengths ------------------------------------------------------

@pytest.mark.parametrize("vr", ["UT", "OB", "UC"])
def test_undefined_length_on_a_non_sequence(agora_run, tmp, vr):
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00081030, vr, b"abcd", length=UNDEFINED))
    r = dump(agora_run, write(tmp, "u.dcm", part10(ds)))
    assert_rejected(r, "offset", "(0008,1030)", "undefined length")


def test_undefined_length_implicit_non_sequence(agora_run, tmp):
    imp = Enc(explicit=False)
    ds = imp.el(0x00100010, None, b"abcd", length=UNDEFINED) + \
        imp.tag(0xFFFEE0DD) + b"\0" * 4
    r = dump(agora_run, write(tmp, "u.dcm", part10(ds, IMPLICIT_LE)))
    assert_rejected(r, "offset", "(0010,0010)")


def test_undefined_length_un_is_a_sequence_like_dcmdump(agora_run, tmp):
    """UN with undefined length holds an implicit VR LE sequence (PS3.5
    §6.2.2, CP-246): both tools read the items."""
    imp = Enc(explicit=False)
    items = imp.item(imp.el(0x00081150, None, text("1.2.3", b"\0")) +
                     imp.el(0x00081155, None, text("1.2.3.4", b"\0")),
                     undefined=True)
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00081115, "UN", items, length=UNDEFINED) +
          LE.tag(0xFFFEE0DD) + b"\0" * 4 +
          LE.el(0x00100010, "PN", text("Doe^John")))
    path = write(tmp, "un.dcm", part10(ds))
    problems = dump_problems(agora_run, path)
    assert problems == [], "\n".join(problems)
    got = dp.parse(dump(agora_run, path).stdout.decode())
    assert got.dataset[((0x00081115, None),)].vr == "SQ"
    assert dp.string_value(got.dataset[((0x00081115, 0),
                                        (0x00081155, None))]) == "1.2.3.4"


# ---- nesting ----------------------------------------------------------------

def nested(depth, undefined=True):
    body = LE.el(0x00100010, "PN", text("Deep^Down"))
    for _ in range(depth):
        body = LE.seq(0x00081115, [LE.item(body, undefined=undefined)],
                      undefined=undefined)
    return body


@pytest.mark.parametrize("undefined", [True, False])
def test_nesting_1000_deep_is_refused(agora_run, tmp, undefined):
    path = write(tmp, "deep.dcm", part10(nested(1000, undefined)))
    r = dump(agora_run, path, mem=GIB)
    assert_rejected(r, "nest", "offset")
    r = agora_run("transcode", "--ts", EXPLICIT_BE, path, tmp / "out.dcm")
    assert r.returncode == 1 and b"nest" in r.stderr
    assert not (tmp / "out.dcm").exists()


def test_moderate_nesting_matches_dcmdump(agora_run, tmp):
    path = write(tmp, "deep.dcm", part10(nested(20)))
    problems = dump_problems(agora_run, path)
    assert problems == [], "\n".join(problems)
    got = dp.parse(dump(agora_run, path).stdout.decode())
    deepest = max(got.dataset, key=len)
    assert len(deepest) == 21


# ---- odd lengths, VM, VRs ---------------------------------------------------

def test_odd_length_string_is_read_as_is(agora_run, tmp):
    """An odd-length string (PS3.5 §7.1.1 forbids it) is tolerated like
    dcmdump does: the value is the bytes that are there."""
    ds = (LE.el(0x00080060, "CS", b"OT") +
          LE.el(0x00100010, "PN", b"Doe") +
          LE.el(0x00100020, "LO", b"ID1"))
    path = write(tmp, "odd.dcm", part10(ds))
    r = dump(agora_run, path)
    assert r.returncode == 0, r.err
    got = dp.parse(r.stdout.decode())
    el = got.dataset[((0x00100010, None),)]
    assert dp.string_value(el) == "Doe" and el.length == 3
    # the next element is found where it really is
    assert dp.string_value(got.dataset[((0x00100020, None),)]) == "ID1"


@pytest.mark.parametrize("vr,n", [("US", 3), ("UL", 6), ("FD", 12),
                                  ("AT", 2), ("AT", 6)])
def test_binary_length_not_a_multiple_of_the_size(agora_run, tmp, vr, n):
    ds = LE.el(0x00280010 if vr == "US" else 0x00091001, vr, b"\1" * n)
    r = dump(agora_run, write(tmp, "b.dcm", part10(ds)))
    assert_rejected(r, "offset", "length %d" % n)


def test_vm_in_the_millions(agora_run, tmp):
    """Two million US values (implicit VR allows 32-bit lengths): listed
    within limits, shortened by default, whole with --max-value."""
    imp = Enc(explicit=False)
    n = 2_000_000
    values = struct.pack("<%dH" % n, *([7] * n))
    ds = imp.el(0x00280010, None, imp.us(1)) + \
        imp.el(0x00281101, None, values)      # a LUT descriptor: US
    path = write(tmp, "vm.dcm", part10(ds, IMPLICIT_LE))
    r = dump(agora_run, path, mem=GIB)
    assert r.returncode == 0, r.err
    assert r.elapsed < 10
    el = dp.parse(r.stdout.decode()).dataset[((0x00281101, None),)]
    assert (el.vr, el.length, el.vm) == ("US", 2 * n, n)
    assert el.value.endswith("...") and len(el.value) < 200
    r = dump(agora_run, path, "--max-value", "100000000", mem=GIB)
    assert r.returncode == 0, r.err
    el = dp.parse(r.stdout.decode()).dataset[((0x00281101, None),)]
    assert el.value.count("\\") == n - 1 and el.value[:4] == "7\\7\\"


@pytest.mark.parametrize("vr", [b"ZZ", b"\x00\x01", b"ob", b"O\x00"])
def test_unknown_vr(agora_run, tmp, vr):
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.tag(0x00100010) + vr + struct.pack("<H", 4) + b"Doe ")
    r = dump(agora_run, write(tmp, "vr.dcm", part10(ds)))
    assert_rejected(r, "offset", "(0010,0010)", "VR")


# ---- garbage ----------------------------------------------------------------

def test_empty_file(agora_run, tmp):
    r = dump(agora_run, write(tmp, "empty.dcm", b""))
    assert_rejected(r, "empty")


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes(agora_run, tmp, seed):
    """Random bytes, bare or after a valid preamble and meta group."""
    rng = random.Random(seed)
    junk = bytes(rng.getrandbits(8) for _ in range(rng.choice([7, 300,
                                                               5000])))
    for data in (junk, part10(junk), part10(junk, IMPLICIT_LE),
                 part10(junk, DEFLATED)):
        r = dump(agora_run, write(tmp, "r.dcm", data), mem=GIB)
        if r.returncode == 1:
            assert "offset" in r.err or "not a DICOM file" in r.err, r.err


def test_random_mutations_of_a_valid_file(agora_run, tmp):
    """Flip bytes of a valid file; every result is 0 or 1 with a message."""
    ds, _ = small_dataset(LE)
    full = bytearray(part10(ds))
    rng = random.Random(1234)
    statuses = set()
    for i in range(150):
        data = bytearray(full)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(132, len(data))] = rng.getrandbits(8)
        r = dump(agora_run, write(tmp, "m.dcm", bytes(data)))
        statuses.add(r.returncode)
    assert statuses <= {0, 1}


# ---- the preamble is data ---------------------------------------------------

def preambles(marker):
    sh = ("#!/bin/sh\ntouch %s\n" % marker).encode()
    js = b'{"cmd": "touch %s", "x": [1,2,3]}' % str(marker).encode()
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, 62)
    return {
        "shell": sh.ljust(128, b"\n"),
        "json": js.ljust(128, b" "),
        "elf": elf.ljust(128, b"\0"),
    }


@pytest.mark.parametrize("kind", ["shell", "json", "elf"])
def test_preamble_is_only_data(agora_run, tmp, kind):
    marker = tmp / "executed"
    pre = preambles(marker)[kind]
    ds, _ = small_dataset(LE)
    path = write(tmp, "p.dcm", part10(ds, preamble=pre))
    os.chmod(path, 0o755)
    r = dump(agora_run, path)
    assert r.returncode == 0, r.err
    assert b"Doe^John" in r.stdout
    out = tmp / "out.dcm"
    r = agora_run("transcode", "--ts", EXPLICIT_LE, path, out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:128] == pre        # kept, as data
    r = agora_run("transcode", "--ts", EXPLICIT_LE, "--zero-preamble", path,
                  tmp / "clean.dcm")
    assert r.returncode == 0
    assert (tmp / "clean.dcm").read_bytes()[:128] == bytes(128)
    assert not marker.exists(), "something in the preamble was executed"


# ---- element order ----------------------------------------------------------

def test_duplicate_tags_are_refused(agora_run, tmp):
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00100010, "PN", text("Doe^John")) +
          LE.el(0x00100010, "PN", text("Roe^Jane")))
    r = dump(agora_run, write(tmp, "dup.dcm", part10(ds)))
    assert_rejected(r, "offset", "(0010,0010)", "duplicate")


def test_duplicate_tags_in_an_item_are_refused(agora_run, tmp):
    item = (LE.el(0x00081150, "UI", text("1.2", b"\0")) +
            LE.el(0x00081150, "UI", text("1.3", b"\0")))
    ds = LE.seq(0x00081115, [LE.item(item)])
    r = dump(agora_run, write(tmp, "dup.dcm", part10(ds)))
    assert_rejected(r, "offset", "(0008,1150)", "duplicate")


def test_out_of_order_tags_are_sorted(agora_run, tmp):
    """Agora accepts elements out of ascending order (PS3.5 §7.1 requires
    the order) and keeps the data set sorted: dump lists them in order and
    transcode writes them in order."""
    ds = (LE.el(0x00100020, "LO", text("ID1")) +
          LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00100010, "PN", text("Doe^John")) +
          LE.el(0x00080018, "UI", text("1.2.3", b"\0")))
    path = write(tmp, "order.dcm", part10(ds))
    r = dump(agora_run, path)
    assert r.returncode == 0, r.err
    tags = [p[0][0] for p in dp.parse(r.stdout.decode()).dataset]
    assert tags == [0x00080018, 0x00080060, 0x00100010, 0x00100020]
    out = tmp / "out.dcm"
    r = agora_run("transcode", "--ts", EXPLICIT_LE, path, out)
    assert r.returncode == 0, r.stderr
    want = (LE.el(0x00080018, "UI", text("1.2.3", b"\0")) +
            LE.el(0x00080060, "CS", text("OT")) +
            LE.el(0x00100010, "PN", text("Doe^John")) +
            LE.el(0x00100020, "LO", text("ID1")))
    assert out.read_bytes().endswith(want)
    assert dcmdump_file(str(out)).ok


# ---- deflate bombs ----------------------------------------------------------

def deflate_bomb(elements, size):
    """A deflated data set of `elements` OB elements of `size` zero bytes
    each.  Built from one compressed block of zeros repeated: after a full
    flush deflate starts afresh, so the block's bytes can be reused."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = 1 << 20
    assert size % chunk == 0
    c.compress(b"\0" * chunk)
    c.flush(zlib.Z_FULL_FLUSH)
    zeros = c.compress(b"\0" * chunk) + c.flush(zlib.Z_FULL_FLUSH)
    out = []
    for i in range(elements):
        hdr = LE.el(0x00091000 + 0x10 + i, "OB", b"", length=size)
        out.append(c.compress(hdr) + c.flush(zlib.Z_FULL_FLUSH))
        out.append(zeros * (size // chunk))
    out.append(c.flush())
    return b"".join(out)


def test_deflate_bomb_helper_is_a_bomb():
    bomb = deflate_bomb(2, 4 << 20)
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    plain = d.decompress(bomb) + d.flush()
    assert len(plain) == 2 * (12 + (4 << 20)) and d.eof
    assert plain[12:12 + 100] == bytes(100)
    assert len(bomb) * 200 < len(plain)


def run_measured(argv, mem=GIB, timeout=20):
    """Run argv under an address-space limit; returns (status, stdout,
    stderr, peak RSS in bytes, seconds).  os.wait4 gives this child's own
    peak RSS (RUSAGE_CHILDREN would mix in earlier children)."""
    import subprocess
    import threading
    t0 = time.monotonic()
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=limit_memory(mem))
    out = {}
    readers = [threading.Thread(target=lambda k, f: out.__setitem__(
        k, f.read()), args=(k, f)) for k, f in (("o", p.stdout),
                                                 ("e", p.stderr))]
    for t in readers:
        t.start()
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            pytest.fail("%s did not finish in %d s" % (argv[:2], timeout))
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    return (p.returncode, out["o"], out["e"], usage.ru_maxrss * 1024,
            time.monotonic() - t0)


@pytest.mark.parametrize("elements,size,command", [
    (1, 0xFFF00000, "dump"),          # one 4 GiB element
    (1, 0xFFF00000, "transcode"),
    (3000, 1 << 20, "dump"),          # 3 GiB in 1 MiB elements
])
def test_deflate_bomb(agora, tmp, elements, size, command):
    """Gigabytes once inflated, megabytes on disk: agora fails (or
    finishes) within seconds, with a message, without using gigabytes --
    a decompression cap (SECURITY.md rule 10) must stop it well before a
    1 GiB address-space limit does."""
    bomb = deflate_bomb(elements, size)
    assert len(bomb) < 16 << 20
    data = b"\0" * 128 + b"DICM" + meta(DEFLATED) + bomb
    path = write(tmp, "bomb.dcm", data)
    out = tmp / "out.dcm"
    args = ["--ts", EXPLICIT_LE, path, out] if command == "transcode" \
        else [path]
    status, _, err, rss, elapsed = run_measured([agora, command, *args])
    assert status in (0, 1), err
    assert elapsed < 15, "took %.1f s" % elapsed
    assert rss < 512 << 20, "peak RSS %d MiB; stderr: %s" % (rss >> 20, err)
    if status == 1:
        assert re.search(rb"offset \d+|budget|inflat|ratio", err), err
        assert b"out of memory" not in err, err
        assert not out.exists()
    assert sorted(p.name for p in tmp.iterdir()) in (["bomb.dcm"],
                                                     ["bomb.dcm", "out.dcm"])


def test_corrupt_deflate_stream(agora_run, tmp):
    ds, _ = small_dataset(LE)
    data = bytearray(part10(ds, DEFLATED))
    start = len(part10(b"", DEFLATED))
    data[start:start + 4] = b"\xff\xff\xff\xff"
    r = dump(agora_run, write(tmp, "z.dcm", bytes(data)))
    assert_rejected(r, "offset")


# ---- hostile text -----------------------------------------------------------

HOSTILE_UID = "1.2.3;rm -rf /;$(touch {m})`touch {m}`/../../etc/passwd|&>"


def test_shell_and_path_characters_in_uids(agora_run, tmp):
    marker = tmp / "executed"
    uid = HOSTILE_UID.format(m=marker)
    ds = (LE.el(0x00080018, "UI", text(uid, b"\0")) +
          LE.el(0x0020000D, "UI", text("../../../../tmp/x", b"\0")) +
          LE.el(0x00100010, "PN", text("'; DROP TABLE patients;--")))
    path = write(tmp, "uid.dcm", part10(ds, sop_instance=uid))
    r = dump(agora_run, path, "--max-value", "1000")
    assert r.returncode == 0, r.err
    got = dp.parse(r.stdout.decode())
    assert dp.string_value(got.dataset[((0x00080018, None),)]) == uid
    assert dp.string_value(got.meta[((0x00020003, None),)]) == uid
    out = tmp / "out.dcm"
    r = agora_run("transcode", "--ts", EXPLICIT_BE, path, out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp.iterdir()) == ["out.dcm", "uid.dcm"]
    assert not marker.exists()


def test_hostile_transfer_syntax_uid(agora_run, tmp):
    """A transfer syntax UID that is not a UID is refused, and the message
    shows it as data."""
    marker = tmp / "executed"
    ts = "$(touch %s)" % marker
    ds, _ = small_dataset(LE)
    r = dump(agora_run, write(tmp, "ts.dcm", part10(ds, ts)))
    assert_rejected(r, "transfer syntax")
    assert not marker.exists()


def test_control_characters_in_values(agora_run, tmp):
    """Escape sequences and NULs in text values are printed as data and do
    not break the listing (the line structure stays parseable)."""
    ds = (LE.el(0x00080060, "CS", text("OT")) +
          LE.el(0x00081030, "LO", text("a\x1b[2Jb\x00c")) +
          LE.el(0x00104000, "LT", text("line1\r\nline2\n# 9, 9 Fake")))
    path = write(tmp, "ctl.dcm", part10(ds))
    r = dump(agora_run, path)
    assert r.returncode == 0, r.err
    got = dp.parse(r.stdout.decode("utf-8", "surrogateescape"))
    assert set(got.dataset) == {((0x00080060, None),), ((0x00081030, None),),
                                ((0x00104000, None),)}
