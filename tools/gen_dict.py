#!/usr/bin/python3
"""Generate src/dicom/dict_data.c: the PS3.6 data dictionary, the private
dictionary and the UID registry as sorted C tables.

Run from the repository root with Debian's Python (it has python3-pydicom):

    /usr/bin/python3 tools/gen_dict.py > src/dicom/dict_data.c
    /usr/bin/python3 tools/gen_dict.py src/dicom/dict_data.c
    /usr/bin/python3 tools/gen_dict.py --pydicom-dir DIR src/dicom/dict_data.c

Where the data comes from: the machine-readable copy of PS3.6 that pydicom
ships (Debian package python3-pydicom, /usr/lib/python3/dist-packages/pydicom):

  _dicom_dict.py    DicomDictionary (tag -> VR, VM, name, retired, keyword)
                    and RepeatersDictionary ('60xx0010', '1000xxx0', ...)
  _private_dict.py  private_dictionaries (creator -> '0019xx0C' -> VR, VM,
                    name, retired), pydicom's conversion of GDCM's list
  _uid_dict.py      UID_dictionary (PS3.6 Annex A)

The files are loaded by path with importlib, so pydicom itself (and its
dependencies) need not import.  Output is deterministic: every table is
sorted explicitly, nothing depends on dict order or the environment.

Table layout (declared in src/dicom/dict_int.h):

  dicom__dict[]             standard entries sorted by (tag, mask descending);
                            a repeater's tag has its x digits zeroed and its
                            mask has those nibbles clear ('60xx0010' ->
                            0x60000010 / 0xff00ffff), so an exact entry sorts
                            before a repeater with the same zeroed tag
  dicom__dict_masked[]      indexes of the repeater entries (mask != ~0)
  dicom__dict_by_keyword[]  indexes of entries with a keyword, by keyword
  dicom__private_creators[] creator -> [first, first + count) of
                            dicom__private[], sorted by creator (strcmp)
  dicom__private[]          private entries, per creator sorted by (tag,
                            mask descending); '0019xx0C' -> 0x0019000c /
                            0xffff00ff, '60xxxx01' -> 0x60000001 / 0xff0000ff,
                            a literal '00290089' -> 0x00290089 / 0xffffffff
  dicom__private_masked[]   indexes of private entries whose mask is neither
                            ~0 nor 0xffff00ff (the '60xxxx01' kind)
  dicom__uids[]             UID registry sorted by UID (strcmp)

Private keys that can never name a private element are dropped: those
pydicom's own lookup (datadict.get_private_entry) never matches, since it
tries only 'ggggeeee', 'ggggxxee' and 'ggxxxxee' (GDCM's '000910xx' rows
would otherwise claim a whole block), and those in an even group, which is
not private (PS3.5 §7.8.1; 'FDMS 1.0' '0032xx32').
"""

import argparse
import importlib.util
import io
import os
import sys

DEFAULT_DIR = "/usr/lib/python3/dist-packages/pydicom"

# The 34 VRs of PS3.5 §6.2.
VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST "
    "SV TM UC UI UL UN UR US UT UV".split())

# Registry entries newer than the pydicom release Debian ships (PS3.6 2023b
# Table A-1).  ts.c knows these transfer syntaxes, so the registry must too.
# Added only when pydicom lacks them.
UID_SUPPLEMENT = {
    "1.2.840.10008.1.2.4.201": (
        "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
        "Transfer Syntax", "", "", "HTJ2KLossless"),
    "1.2.840.10008.1.2.4.202": (
        "High-Throughput JPEG 2000 with RPCL Options Image Compression "
        "(Lossless Only)",
        "Transfer Syntax", "", "", "HTJ2KLosslessRPCL"),
    "1.2.840.10008.1.2.4.203": (
        "High-Throughput JPEG 2000 Image Compression",
        "Transfer Syntax", "", "", "HTJ2K"),
}

FULL = 0xFFFFFFFF
BLOCK = 0xFFFF00FF   # private (gggg,xxee): block byte free


def load(directory, name):
    path = os.path.join(directory, name + ".py")
    spec = importlib.util.spec_from_file_location("agora_gen_" + name, path)
    if spec is None or spec.loader is None:
        sys.exit("gen_dict: cannot load %s" % path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pattern(key):
    """'60xx0010' -> (0x60000010, 0xff00ffff): x digits zeroed in the tag,
    their nibbles clear in the mask."""
    key = key.strip()
    if len(key) != 8:
        raise ValueError("bad tag pattern %r" % key)
    tag = mask = 0
    for ch in key:
        tag <<= 4
        mask <<= 4
        if ch in "xX":
            continue
        tag |= int(ch, 16)
        mask |= 0xF
    return tag, mask


def cstr(s):
    """C string literal.  '?' is escaped so no trigraph can form (-std=c11
    enables them); non-ASCII bytes become octal escapes (never hex, which is
    greedy)."""
    out = ['"']
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in '"\\?':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    out.append('"')
    return "".join(out)


def vrs(text, where):
    """'US or SS or OW' -> ['US', 'SS', 'OW']; '' and 'NONE' -> ['NONE']."""
    text = text.strip()
    if text in ("", "NONE"):
        return ["NONE"]
    parts = [p.strip() for p in text.replace("_", " or ").split(" or ")]
    for p in parts:
        if p not in VRS:
            raise ValueError("%s: unknown VR %r" % (where, text))
    if len(parts) > 3:
        raise ValueError("%s: more than three VRs in %r" % (where, text))
    return parts


def vr_fields(parts):
    out = ["V(%s)" % parts[0]]
    for i in (1, 2):
        out.append("V(%s)" % parts[i] if i < len(parts) else "0")
    return ", ".join(out)


def entry_line(tag, mask, parts, vm, keyword, name, retired):
    return "    {0x%08x, 0x%08x, %s, %s, %s, %s, %s},\n" % (
        tag, mask, vr_fields(parts), cstr(vm), cstr(keyword), cstr(name),
        "true" if retired else "false")


def overlap(a, b):
    """True if some tag matches both (tag, mask) patterns."""
    return ((a[0] ^ b[0]) & a[1] & b[1]) == 0


def standard(dd):
    rows = []
    for tag, (vr, vm, name, retired, keyword) in dd.DicomDictionary.items():
        where = "(%04x,%04x)" % (tag >> 16, tag & 0xFFFF)
        rows.append((tag, FULL, vrs(vr, where), vm, keyword, name,
                     retired == "Retired"))
    for key, (vr, vm, name, retired, keyword) in \
            dd.RepeatersDictionary.items():
        tag, mask = pattern(key)
        rows.append((tag, mask, vrs(vr, key), vm, keyword, name,
                     retired == "Retired"))
    rows.sort(key=lambda r: (r[0], -r[1]))

    seen = set()
    for r in rows:
        if (r[0], r[1]) in seen:
            raise ValueError("duplicate entry %08x/%08x" % (r[0], r[1]))
        seen.add((r[0], r[1]))
    masked = [i for i, r in enumerate(rows) if r[1] != FULL]
    # The masked scan returns the first match; make sure there is only one.
    for i in masked:
        for j in masked:
            if i < j and overlap(rows[i][:2], rows[j][:2]):
                raise ValueError("repeaters %08x and %08x overlap"
                                 % (rows[i][0], rows[j][0]))
    keywords = {}
    for i, r in enumerate(rows):
        if r[4]:
            if r[4] in keywords:
                raise ValueError("duplicate keyword %s" % r[4])
            keywords[r[4]] = i
    by_keyword = [keywords[k] for k in sorted(keywords, key=bytes_key)]
    if len(rows) > 0xFFFF:
        raise ValueError("too many entries for uint16_t indexes")
    return rows, masked, by_keyword


def bytes_key(s):
    return s.encode("utf-8")   # strcmp order


def private(pd):
    creators = []
    rows = []
    dropped = 0
    for creator in sorted(pd.private_dictionaries, key=bytes_key):
        if creator != creator.rstrip(" ") or creator == "":
            raise ValueError("creator %r has trailing spaces" % creator)
        entries = []
        for key, (vr, vm, name, retired) in \
                pd.private_dictionaries[creator].items():
            tag, mask = pattern(key)
            even = (mask & 0x10000) != 0 and (tag & 0x10000) == 0
            if mask not in (FULL, BLOCK, 0xFF0000FF) or even:
                dropped += 1
                continue
            entries.append((tag, mask, vrs(vr, creator + " " + key), vm, "",
                            name, retired == "Retired"))
        entries.sort(key=lambda r: (r[0], -r[1]))
        for a, b in zip(entries, entries[1:]):
            if a[:2] == b[:2]:
                raise ValueError("%s: duplicate key %08x" % (creator, a[0]))
        if entries:
            creators.append((creator, len(rows), len(entries)))
            rows.extend(entries)
    masked = [i for i, r in enumerate(rows) if r[1] not in (FULL, BLOCK)]
    if len(rows) > 0xFFFF:
        raise ValueError("too many private entries for uint16_t indexes")
    return creators, rows, masked, dropped


def uids(ud):
    table = dict(ud.UID_dictionary)
    added = 0
    for uid, value in UID_SUPPLEMENT.items():
        if uid not in table:
            table[uid] = value
            added += 1
    rows = []
    for uid in sorted(table, key=bytes_key):
        name, kind, _info, retired, keyword = table[uid]
        if uid != uid.strip() or not uid:
            raise ValueError("bad UID %r" % uid)
        rows.append((uid, name, keyword, kind, retired == "Retired"))
    return rows, added


def index_list(name, idx):
    out = io.StringIO()
    out.write("const uint16_t %s[] = {\n" % name)
    line = "   "
    for i in idx:
        item = " %d," % i
        if len(line) + len(item) > 78:
            out.write(line + "\n")
            line = "   "
        line += item
    if idx:
        out.write(line + "\n")
    else:
        out.write("    0,\n")   # C forbids empty initializers
    out.write("};\n")
    out.write("const size_t %s_count = %d;\n\n" % (name, len(idx)))
    return out.getvalue()


def generate(directory):
    dd = load(directory, "_dicom_dict")
    pd = load(directory, "_private_dict")
    ud = load(directory, "_uid_dict")
    version = "unknown"
    vpath = os.path.join(directory, "_version.py")
    if os.path.exists(vpath):
        version = getattr(load(directory, "_version"), "__version__",
                          "unknown")

    rows, masked, by_keyword = standard(dd)
    creators, prows, pmasked, dropped = private(pd)
    urows, added = uids(ud)

    out = io.StringIO()
    w = out.write
    w("/*\n")
    w(" * dict_data.c — generated by tools/gen_dict.py, do not edit.\n")
    w(" *\n")
    w(" * Source: pydicom %s (_dicom_dict.py, _private_dict.py, "
      "_uid_dict.py),\n" % version)
    w(" * a machine-readable copy of PS3.6 and of GDCM's private "
      "dictionary.\n")
    w(" * Regenerate: /usr/bin/python3 tools/gen_dict.py "
      "src/dicom/dict_data.c\n")
    w(" *\n")
    w(" * %d standard entries (%d repeaters), %d private entries of %d\n"
      % (len(rows), len(masked), len(prows), len(creators)))
    w(" * creators (%d unmatchable private keys dropped), %d UIDs "
      "(%d supplemented).\n" % (dropped, len(urows), added))
    w(" * Layout: see tools/gen_dict.py and dict_int.h.  A VR of 0 is "
      "DICOM_VR_NONE.\n")
    w(" */\n")
    w('#include "dict_int.h"\n\n')
    w("#define V(x) DICOM_VR_##x\n\n")

    w("/* tag, mask, vr, vr2, vr3, vm, keyword, name, retired */\n")
    w("const DicomDictEntry dicom__dict[] = {\n")
    for r in rows:
        w(entry_line(*r))
    w("};\n")
    w("const size_t dicom__dict_count = %d;\n\n" % len(rows))
    w(index_list("dicom__dict_masked", masked))
    w(index_list("dicom__dict_by_keyword", by_keyword))

    w("/* creator, first entry in dicom__private, count */\n")
    w("const DicomPrivateCreator dicom__private_creators[] = {\n")
    for creator, first, count in creators:
        w("    {%s, %d, %d},\n" % (cstr(creator), first, count))
    w("};\n")
    w("const size_t dicom__private_creators_count = %d;\n\n" % len(creators))
    w("const DicomDictEntry dicom__private[] = {\n")
    for r in prows:
        w(entry_line(*r))
    w("};\n")
    w("const size_t dicom__private_count = %d;\n\n" % len(prows))
    w(index_list("dicom__private_masked", pmasked))

    w("/* uid, name, keyword, type, retired */\n")
    w("const DicomUidEntry dicom__uids[] = {\n")
    for uid, name, keyword, kind, retired in urows:
        w("    {%s, %s, %s, %s, %s},\n" % (
            cstr(uid), cstr(name), cstr(keyword), cstr(kind),
            "true" if retired else "false"))
    w("};\n")
    w("const size_t dicom__uids_count = %d;\n" % len(urows))
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output", nargs="?", help="file to write (default: "
                    "standard output)")
    ap.add_argument("--pydicom-dir", default=DEFAULT_DIR,
                    help="directory holding pydicom's _dicom_dict.py, "
                    "_private_dict.py and _uid_dict.py (default: %(default)s)")
    args = ap.parse_args()
    try:
        text = generate(args.pydicom_dir)
    except ValueError as e:
        sys.exit("gen_dict: %s" % e)
    data = text.encode("utf-8")
    if args.output is None:
        sys.stdout.buffer.write(data)
        return
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
