"""Parse dcmdump-style listings (DCMTK's dcmdump and `agora dump`) and
compare two of them element by element.

Both tools print one line per element:

    (gggg,eeee) VR value                    #  len, VM Keyword

with items and their contents indented by two spaces per level.  A parsed
listing is a `Dump`: the meta group and the data set, each a dict keyed by
the element's *tag path*, a tuple of (tag, item index) pairs naming the
enclosing sequence items, ending with (tag, None) for the element itself:

    ((0x300a0010, 1), (0x300a0012, None))   # (300a,0010)[1].(300a,0012)

Values are kept as text; `compare()` decides per VR how to compare them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN",
              "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
INT_VRS = {"US", "SS", "UL", "SL", "SV", "UV"}
FLOAT_VRS = {"FL", "FD"}
BULK_VRS = {"OB", "OW", "UN", "OF", "OD", "OL", "OV"}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# DCMTK-internal VRs dcmdump prints, and the standard VR each stands for:
# "??" an implicit-VR element with no dictionary entry (UN), "up" a DICOMDIR
# offset (UL), "xs" US-or-SS, "ox" OB-or-OW, "lt" OW-or-US-or-SS.
DCMTK_VRS = {"??": {"UN"}, "up": {"UL"}, "xs": {"US", "SS"},
             "ox": {"OB", "OW"}, "lt": {"OW", "US", "SS"}}
SPECIFIC_CHARACTER_SET = 0x00080005

_START = re.compile(r"^(?P<indent> *)\((?P<g>[0-9a-fA-F]{4}),"
                    r"(?P<e>[0-9a-fA-F]{4})\) (?P<vr>\S\S) (?P<rest>.*)$",
                    re.DOTALL)
# The trailer is the *last* "# len, vm keyword" on the record; a greedy
# value keeps any '#' that a value itself contains.
_TRAILER = re.compile(r"^(?P<value>.*) # *(?P<len>\d+|u/l), *"
                             r"(?P<vm>\d+) (?P<kw>[^#\n]*)$", re.DOTALL)
_ITEM_TAG = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD


@dataclass
class Element:
    path: tuple
    vr: str
    value: str                 # text after the VR, trailing padding removed
    length: int | None         # None for "u/l" (undefined length)
    vm: int
    keyword: str
    items: list = field(default_factory=list)      # item lengths (SQ)
    fragments: list = field(default_factory=list)  # fragment lengths

    @property
    def tag(self) -> int:
        return self.path[-1][0]


@dataclass
class Dump:
    meta: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    meta_ts: str | None = None        # "# Used TransferSyntax:" lines
    dataset_ts: str | None = None


def format_path(path) -> str:
    """(300a,0010)[1].(300a,0012) — for messages."""
    parts = []
    for tag, idx in path:
        s = "(%04x,%04x)" % (tag >> 16, tag & 0xFFFF)
        if idx is not None:
            s += "[%d]" % idx
        parts.append(s)
    return ".".join(parts)


def _records(text: str):
    """Yield ('hdr', line) or ('el', indent, tag, vr, value, len, vm, kw).

    A value may contain newlines (LT, ST, UT print control characters as
    they are), so a record runs until a line completes its trailer."""
    start = None          # the _START match of a record still open
    rest = ""             # its text after the VR so far
    for line in text.split("\n"):
        if start is not None:
            rest += "\n" + line
        else:
            start = _START.match(line)
            if start is None:
                yield ("hdr", line)
                continue
            rest = start.group("rest")
        m = _TRAILER.match(rest)
        if m is not None:
            yield _record(start, m)
            start = None
    if start is not None:
        raise ValueError("unterminated record: %r" % rest[:200])


def _record(s, m):
    tag = (int(s.group("g"), 16) << 16) | int(s.group("e"), 16)
    length = None if m.group("len") == "u/l" else int(m.group("len"))
    return ("el", len(s.group("indent")), tag, s.group("vr"),
            m.group("value").rstrip(" "), length, int(m.group("vm")),
            m.group("kw").strip())


def parse(text: str) -> Dump:
    """Parse a whole listing (one file) into a Dump."""
    dump = Dump()
    section = dump.dataset
    # stack[k] = [seq element, current item index] for nesting level k
    stack: list = []
    last_at_level: dict = {}
    for rec in _records(text):
        if rec[0] == "hdr":
            line = rec[1].strip()
            if line == "# Dicom-Meta-Information-Header":
                section, stack, last_at_level = dump.meta, [], {}
            elif line == "# Dicom-Data-Set":
                section, stack, last_at_level = dump.dataset, [], {}
            elif line.startswith("# Used TransferSyntax:"):
                ts = line.split(":", 1)[1].strip()
                if section is dump.meta:
                    dump.meta_ts = ts
                else:
                    dump.dataset_ts = ts
            continue
        _, indent, tag, vr, value, length, vm, kw = rec
        if tag in (_ITEM_END, _SEQ_END):
            continue
        if tag == _ITEM_TAG:
            # Items sit one level (2 spaces) deeper than their sequence.
            level = (indent - 2) // 4
            owner = last_at_level.get(level)
            if owner is None:
                raise ValueError("item without a sequence at indent %d"
                                 % indent)
            if vr == "pi":
                owner.fragments.append(length)
                continue
            del stack[level:]
            owner.items.append(length)
            stack.append((owner.tag, len(owner.items) - 1))
            last_at_level = {k: v for k, v in last_at_level.items()
                             if k <= level}
            continue
        level = indent // 4
        del stack[level:]
        path = tuple(stack[:level]) + ((tag, None),)
        if len(path) != level + 1:
            raise ValueError("element %s at indent %d outside any item"
                             % (format_path(path), indent))
        el = Element(path=path, vr=vr, value=value, length=length, vm=vm,
                     keyword=kw)
        if path in section:
            raise ValueError("element %s listed twice" % format_path(path))
        section[path] = el
        last_at_level[level] = el
    return dump


# ---- value comparison -------------------------------------------------------

NO_VALUE = "(no value available)"


def string_value(el: Element):
    """The text inside [...] or None for an empty value."""
    v = el.value
    if v == NO_VALUE:
        return None
    if v.startswith("[") and v.endswith("]"):
        return v[1:-1]
    raise ValueError("%s: string value not in brackets: %r"
                     % (format_path(el.path), v[:80]))


def _trim(s):
    return None if s is None else s.strip(" \0")


def _numbers(el: Element):
    if el.value == NO_VALUE:
        return []
    return el.value.split("\\")


def _same_float(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-30)


def compare_element(ref: Element, got: Element) -> str | None:
    """None when got's value agrees with ref's, else a description."""
    where = format_path(ref.path)
    if ref.vr != got.vr and got.vr not in DCMTK_VRS.get(ref.vr, ()):
        return "%s: VR %s, expected %s" % (where, got.vr, ref.vr)
    vr = got.vr
    if ref.vm != got.vm:
        return "%s %s: VM %d, expected %d" % (where, vr, got.vm, ref.vm)
    if vr == "SQ":
        if len(ref.items) != len(got.items):
            return "%s: %d items, expected %d" % (where, len(got.items),
                                                 len(ref.items))
        return None
    if ref.fragments or got.fragments:
        if ref.fragments != got.fragments:
            return "%s: fragment lengths %s, expected %s" % (
                where, got.fragments[:8], ref.fragments[:8])
        return None
    if (ref.length is not None and got.length is not None and
            got.length % 2 == 1 and ref.length == got.length + 1):
        # DCMTK pads an odd-length value to even length when it reads it
        # (+ao); Agora reports the length in the file.  Compare what both
        # hold: the odd prefix.
        ref = Element(ref.path, ref.vr, ref.value, got.length, ref.vm,
                      ref.keyword)
        if vr in BULK_VRS:
            return None
    if ref.length != got.length and (vr not in STRING_VRS or
                                     (ref.value.isascii() and
                                      got.value.isascii())):
        # dcmdump +U8 prints the length of the converted (UTF-8) value, so
        # string lengths only compare when the text is ASCII.
        return "%s: length %s, expected %s" % (where, got.length, ref.length)
    if vr in BULK_VRS or ref.tag in PIXEL_TAGS:
        return None          # bulk data: lengths only
    if vr in STRING_VRS:
        a, b = _trim(string_value(ref)), _trim(string_value(got))
        if a != b:
            return "%s %s: %r, expected %r" % (where, vr, b, a)
        return None
    if vr in INT_VRS:
        a, b = _numbers(ref), _numbers(got)
        if len(a) != len(b) or any(int(x) != int(y) for x, y in zip(a, b)):
            return "%s %s: %s, expected %s" % (where, vr, got.value[:200],
                                               ref.value[:200])
        return None
    if vr in FLOAT_VRS:
        a, b = _numbers(ref), _numbers(got)
        if len(a) != len(b) or not all(_same_float(x, y)
                                       for x, y in zip(a, b)):
            return "%s %s: %s, expected %s" % (where, vr, got.value[:200],
                                               ref.value[:200])
        return None
    if vr == "AT":
        if ref.value.lower() != got.value.lower():
            return "%s AT: %s, expected %s" % (where, got.value, ref.value)
        return None
    if ref.value != got.value:
        return "%s %s: %r, expected %r" % (where, vr, got.value[:200],
                                           ref.value[:200])
    return None


def compare(ref: Dump, got: Dump, *, skip=(), meta=True) -> list:
    """All differences between two parsed listings, as readable strings.

    ref is the reference (dcmdump).  Paths whose last tag is in `skip` are
    ignored in both.  With meta=False the meta groups are not compared."""
    problems = []
    sections = [("data set", ref.dataset, got.dataset)]
    if meta:
        sections.insert(0, ("meta", ref.meta, got.meta))
    for name, a, b in sections:
        keys_a = {k for k in a if k[-1][0] not in skip}
        keys_b = {k for k in b if k[-1][0] not in skip}
        for k in sorted(keys_a - keys_b, key=format_path):
            problems.append("%s: %s %s missing" % (name, format_path(k),
                                                   a[k].vr))
        for k in sorted(keys_b - keys_a, key=format_path):
            problems.append("%s: %s %s unexpected" % (name, format_path(k),
                                                      b[k].vr))
        for k in sorted(keys_a & keys_b, key=format_path):
            p = compare_element(a[k], b[k])
            if p is not None:
                problems.append("%s: %s" % (name, p))
    return problems
