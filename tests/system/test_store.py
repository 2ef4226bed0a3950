"""System tests of the archive core through the binary: `agora import`,
`agora check [--repair]` and `agora ls` (DESIGN.md §4, §6; SECURITY.md
"Storage": disk full and I/O errors at every write point, kill -9 during
concurrent ingest, silent blob corruption, a lost index rebuilt from blobs).

The binary is $AGORA_BIN (default <repo>/build/agora).  Fixtures here are
prefixed st_ so that they never meet conftest.py's.  Inputs: pydicom's
sample folder, DCMTK (dcmconv) re-encodings of a few samples, and small
instances generated with pydicom.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
AGORA = os.environ.get("AGORA_BIN", str(REPO / "build" / "agora"))
PYDICOM_DATA = pathlib.Path(
    "/usr/lib/python3/dist-packages/pydicom/data/test_files")
TIMEOUT = 60

TS = {
    "+ti": "1.2.840.10008.1.2",
    "+te": "1.2.840.10008.1.2.1",
    "+tb": "1.2.840.10008.1.2.2",
    "+td": "1.2.840.10008.1.2.1.99",
}
FAULT_POINTS = {
    # point: words one of which the rejection must say
    "blob.write": ("write", "no space"),
    "blob.fsync": ("fsync",),
    "blob.rename": ("rename",),
    "blob.dirsync": ("fsync",),
    "index.commit": ("commit",),
}
# The syncfs that makes a cycle's blobs and index commit durable at once
# (many files in flight): failing it fails all of them.
BATCH_POINTS = {**FAULT_POINTS, "blob.syncfs": ("fsync",)}
UID_ROOT = "1.2.826.0.1.3680043.10.543.77"
# `agora import --sync`: one syncfs per cycle (adapting to the load), or
# fsyncs of each file and folder.
SYNC_MODES = ["filesystem", "files"]


# ---- running the binary -----------------------------------------------------

def st_run(*args, fault=None, timeout=TIMEOUT):
    env = dict(os.environ)
    env.pop("AGORA_FAULT", None)
    if fault is not None:
        env["AGORA_FAULT"] = fault
    return subprocess.run([AGORA, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@dataclass
class ImportResult:
    rc: int
    stored: dict = field(default_factory=dict)     # path -> uid
    duplicate: dict = field(default_factory=dict)  # path -> uid
    rejected: dict = field(default_factory=dict)   # path -> reason
    skipped: dict = field(default_factory=dict)    # path -> reason
    summary: tuple | None = None                   # (stored, dup, rej, skip)
    conflicts: set = field(default_factory=set)
    stdout: str = ""
    stderr: str = ""

    def paths(self):
        return (set(self.stored) | set(self.duplicate) | set(self.rejected)
                | set(self.skipped))

    def where(self):
        return (f"stdout:\n{self.stdout[-3000:]}\n"
                f"stderr:\n{self.stderr[-2000:]}")


LINE_STORED = re.compile(
    r"^(stored|duplicate) (.+) ([0-9.]+)( \(patient conflict flagged\))?$")
LINE_OTHER = re.compile(r"^(rejected|skipped) (.+?): (.+)$")
LINE_SUMMARY = re.compile(
    r"^summary: (\d+) stored, (\d+) duplicates, (\d+) rejected, (\d+) "
    r"skipped; ")


def parse_import(stdout, *, complete=True):
    """Lines of `agora import`; complete=False tolerates a cut last line
    and no summary (a killed import)."""
    res = ImportResult(rc=0, stdout=stdout)
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif not complete and lines:
        lines.pop()              # cut mid-line by kill -9
    for line in lines:
        m = LINE_STORED.match(line)
        if m:
            kind, path, uid, conflict = m.groups()
            getattr(res, kind)[path] = uid
            if conflict:
                res.conflicts.add(uid)
            continue
        m = LINE_OTHER.match(line)
        if m:
            kind, path, reason = m.groups()
            getattr(res, kind)[path] = reason
            continue
        m = LINE_SUMMARY.match(line)
        if m:
            assert res.summary is None, "two summary lines"
            res.summary = tuple(int(g) for g in m.groups())
            continue
        raise AssertionError(f"unexpected import line: {line!r}")
    if complete:
        assert res.summary is not None, f"no summary line:\n{stdout}"
    return res


def st_import(data, *paths, jobs=None, duplicates=None, fault=None,
              sync=None):
    args = ["import", "--data", data]
    if jobs is not None:
        args += ["--jobs", jobs]
    if duplicates is not None:
        args += ["--duplicates", duplicates]
    if sync is not None:
        args += ["--sync", sync]
    p = st_run(*args, *paths, fault=fault)
    res = parse_import(p.stdout)
    res.rc = p.returncode
    res.stderr = p.stderr
    # The summary counts what the lines say, and the exit status follows
    # the rejections (cmd_import usage: 0 if nothing was rejected).
    assert res.summary == (len(res.stored), len(res.duplicate),
                           len(res.rejected), len(res.skipped)), res.where()
    assert res.rc == (1 if res.rejected else 0), res.where()
    return res


def st_ls(data, level="instances", *filters):
    p = st_run("ls", "--data", data, "--limit", "100000", level, *filters)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.split("\n") if ln]
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]
    for ln in lines[1:]:
        assert len(ln.split("\t")) == len(header), ln
    return rows


def ls_uids(data):
    return {r["SOPInstanceUID"] for r in st_ls(data, "instances")}


CHECK_LINE = re.compile(
    r"checked (\d+) instances, (\d+) blobs: (\d+) missing, (\d+) bad "
    r"checksums, (\d+) orphans(?:; repaired: (\d+) re-indexed, (\d+) rows "
    r"removed, \d+ duplicate copies removed, (\d+) not DICOM)?")


@dataclass
class CheckResult:
    rc: int
    instances: int
    blobs: int
    missing: int
    bad: int
    orphans: int
    reindexed: int | None
    removed: int | None
    unreadable: int | None
    stdout: str


def st_check(data, repair=False):
    p = st_run("check", "--data", data, *(["--repair"] if repair else []))
    m = CHECK_LINE.search(p.stdout)
    assert m, f"no summary from check (rc {p.returncode}):\n{p.stdout}\n" \
              f"{p.stderr}"
    g = [None if x is None else int(x) for x in m.groups()]
    return CheckResult(p.returncode, *g, p.stdout)


def assert_check_clean(data, instances=None):
    c = st_check(data)
    assert c.rc == 0, c.stdout
    assert "0 missing, 0 bad checksums, 0 orphans" in c.stdout, c.stdout
    if instances is not None:
        assert c.instances == instances and c.blobs == instances, c.stdout
    return c


def blob_files(data):
    root = pathlib.Path(data) / "blobs"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not p.name.endswith(".tmp"))


def tmp_leftovers(data):
    """*.tmp anywhere under D, and whatever is in D/tmp."""
    d = pathlib.Path(data)
    tmps = [p for p in d.rglob("*.tmp")]
    spool = list((d / "tmp").iterdir()) if (d / "tmp").exists() else []
    return tmps + spool


def blob_uid_hash(uid):
    """Blob names start with a BLAKE2b-128 of the SOP Instance UID."""
    return hashlib.blake2b(uid.encode(), digest_size=16).hexdigest()


def blob_of(data, uid):
    h = blob_uid_hash(uid)
    found = [p for p in blob_files(data) if p.name.startswith(h)]
    assert len(found) == 1, f"{uid}: blobs {found}"
    return found[0]


def flip_byte(path, offset):
    os.chmod(path, 0o640)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


# ---- inputs -----------------------------------------------------------------

def make_instances(folder, n, tag, *, patients=6):
    """n small CT-like instances (64x64, 16 bit) with distinct UIDs,
    written by pydicom; returns [(path, sop_uid, patient_id)].  tag (digits,
    no leading zero) keeps the UIDs of different sets apart."""
    assert re.fullmatch(r"[1-9][0-9]*", tag), tag
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    import pydicom

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    px = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    for i in range(n):
        p = i % patients
        study = f"{UID_ROOT}.{tag}.1.{p}.{(i // patients) % 2}"
        series = f"{study}.1"
        sop = f"{UID_ROOT}.{tag}.3.{i + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"i{i:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.PatientID = f"STPAT{p}"
        ds.PatientName = f"Store^Test{p}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyDate = "20240102"
        ds.Modality = "CT" if p % 2 == 0 else "MR"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 64
        ds.Columns = 64
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = px
        pydicom.dcmwrite(str(path), ds, write_like_original=False)
        out.append((path, sop, ds.PatientID))
    return out


@pytest.fixture(scope="session")
def st_generated(tmp_path_factory):
    """600 generated instances (kill -9 test and listings)."""
    folder = tmp_path_factory.mktemp("st_gen600")
    return make_instances(folder, 600, "600")


@pytest.fixture
def st_data(tmp_path):
    return tmp_path / "D"


@pytest.fixture(scope="session")
def st_dcmtk(tmp_path_factory):
    """{option: folder} with dcmconv re-encodings of a few samples."""
    root = tmp_path_factory.mktemp("st_dcmtk")
    sources = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
               "SC_rgb_small_odd.dcm"]
    out = {}
    for opt in TS:
        d = root / opt.strip("+")
        d.mkdir()
        for s in sources:
            src = PYDICOM_DATA / s
            p = subprocess.run(["dcmconv", opt, str(src),
                                str(d / s)], capture_output=True, text=True)
            assert p.returncode == 0, f"dcmconv {opt} {s}: {p.stderr}"
        out[opt] = d
    return out


# ---- import -----------------------------------------------------------------

def test_import_pydicom_samples(st_data):
    files = {str(p) for p in PYDICOM_DATA.rglob("*") if p.is_file()}
    res = st_import(st_data, PYDICOM_DATA)
    # Every file is reported exactly once.
    assert res.paths() == files, res.where()
    n_lines = (len(res.stored) + len(res.duplicate) + len(res.rejected)
               + len(res.skipped))
    assert n_lines == len(files)
    assert len(res.stored) > 50, res.where()
    # What was reported stored is listed, and nothing else is.
    uids = ls_uids(st_data)
    assert set(res.stored.values()) == uids
    assert len(uids) == len(res.stored)
    assert set(res.duplicate.values()) <= uids
    # Not DICOM: skipped, saying so.
    for name in ["README.txt", "test1.json", "zipMR.gz", "rtplan.dump"]:
        p = str(PYDICOM_DATA / name)
        assert p in res.skipped, f"{name}: {res.where()}"
        assert "not DICOM" in res.skipped[p]
    # Truncated Part 10 files: rejected with a reason, never stored.
    for name in ["MR_truncated.dcm", "rtplan_truncated.dcm"]:
        p = str(PYDICOM_DATA / name)
        assert p in res.rejected, f"{name}: {res.where()}"
        assert len(res.rejected[p]) > 10
    assert res.rc == 1                  # the folder holds bad files
    assert len(blob_files(st_data)) == len(uids)
    assert tmp_leftovers(st_data) == []
    assert_check_clean(st_data, len(uids))

    # Again: nothing new, every stored file is now a duplicate.
    blobs_before = blob_files(st_data)
    again = st_import(st_data, PYDICOM_DATA)
    assert again.stored == {}, again.where()
    assert set(again.duplicate) == set(res.stored) | set(res.duplicate)
    assert set(again.rejected) == set(res.rejected)
    assert set(again.skipped) == set(res.skipped)
    assert ls_uids(st_data) == uids
    assert blob_files(st_data) == blobs_before
    assert_check_clean(st_data, len(uids))


@pytest.mark.parametrize("opt", list(TS), ids=[o.strip("+") for o in TS])
def test_import_dcmtk_encodings(st_dcmtk, st_data, opt):
    res = st_import(st_data, st_dcmtk[opt])
    assert res.rc == 0, res.where()
    assert len(res.stored) == 4 and not res.duplicate, res.where()
    rows = st_ls(st_data, "instances")
    assert {r["SOPInstanceUID"] for r in rows} == set(res.stored.values())
    for r in rows:
        assert r["TransferSyntaxUID"] == TS[opt], r
    # The blob is the file as received, byte for byte.
    for path, uid in res.stored.items():
        assert blob_of(st_data, uid).read_bytes() == \
            pathlib.Path(path).read_bytes()
    assert_check_clean(st_data, 4)


def test_import_same_instances_in_every_encoding(st_dcmtk, st_data):
    res = st_import(st_data, *st_dcmtk.values(), jobs=1)
    assert res.rc == 0, res.where()
    assert len(res.stored) == 4, res.where()
    assert len(res.duplicate) == 12, res.where()
    assert set(res.duplicate.values()) == set(res.stored.values())
    assert len(st_ls(st_data, "instances")) == 4
    assert len(blob_files(st_data)) == 4
    assert_check_clean(st_data, 4)


def test_import_not_dicom_and_truncated(st_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    ct = (PYDICOM_DATA / "CT_small.dcm").read_bytes()
    (src / "notes.txt").write_text("this is not a DICOM file\n" * 20)
    (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    (src / "empty.dcm").write_bytes(b"")
    (src / "good.dcm").write_bytes(ct)
    res = st_import(st_data, src)
    assert res.rc == 0, res.where()
    for name in ["notes.txt", "image.png", "empty.dcm"]:
        p = str(src / name)
        assert p in res.skipped and "not DICOM" in res.skipped[p], \
            res.where()
    assert list(res.stored) == [str(src / "good.dcm")]

    # Truncated copies (with DICM intact): each rejected with a reason.
    bad = tmp_path / "bad"
    bad.mkdir()
    cuts = [140, 200, 400, len(ct) // 2, len(ct) - 2, len(ct) - 1]
    for c in cuts:
        (bad / f"cut{c}.dcm").write_bytes(ct[:c])
    before = ls_uids(st_data)
    res = st_import(st_data, bad)
    assert res.rc == 1, res.where()
    assert set(res.rejected) == {str(bad / f"cut{c}.dcm") for c in cuts}, \
        res.where()
    for reason in res.rejected.values():
        assert reason.strip(), res.where()
    assert ls_uids(st_data) == before
    assert len(blob_files(st_data)) == 1
    assert tmp_leftovers(st_data) == []
    assert_check_clean(st_data, 1)


def test_import_missing_path_is_an_error(st_data, tmp_path):
    """A PATH that does not exist is not "nothing rejected": a script
    must not read exit status 0 as "all imported"."""
    missing = tmp_path / "no-such-folder"
    p = st_run("import", "--data", st_data, missing)
    assert missing.name in p.stderr
    assert p.returncode != 0, \
        f"exit {p.returncode} for a missing PATH:\n{p.stdout}{p.stderr}"


# ---- duplicate policies -----------------------------------------------------

@pytest.fixture
def st_small(tmp_path):
    return make_instances(tmp_path / "small", 12, "12")


def test_duplicates_reject(st_data, st_small):
    folder = st_small[0][0].parent
    first = st_import(st_data, folder)
    assert len(first.stored) == 12 and first.rc == 0
    blobs = blob_files(st_data)
    res = st_import(st_data, folder, duplicates="reject")
    assert res.rc == 1
    assert set(res.rejected) == set(first.stored), res.where()
    for reason in res.rejected.values():
        assert "already stored" in reason, reason
    assert not res.stored and not res.duplicate
    assert len(st_ls(st_data, "instances")) == 12
    assert blob_files(st_data) == blobs
    assert_check_clean(st_data, 12)


def test_duplicates_replace(st_data, st_small):
    folder = st_small[0][0].parent
    first = st_import(st_data, folder)
    assert len(first.stored) == 12
    blobs = blob_files(st_data)
    res = st_import(st_data, folder, duplicates="replace")
    assert res.rc == 0, res.where()
    assert set(res.stored) == set(first.stored), res.where()
    assert len(st_ls(st_data, "instances")) == 12
    after = blob_files(st_data)
    assert len(after) == len(blobs) == 12      # the old copies went
    assert set(after).isdisjoint(blobs)        # replaced by new files
    assert tmp_leftovers(st_data) == []
    assert_check_clean(st_data, 12)
    # Keep (default) afterwards: duplicates again, nothing changes.
    res = st_import(st_data, folder)
    assert len(res.duplicate) == 12 and blob_files(st_data) == after


def test_duplicates_bad_policy_is_usage_error(st_data, st_small):
    p = st_run("import", "--data", st_data, "--duplicates", "merge",
               st_small[0][0])
    assert p.returncode == 2
    assert not blob_files(st_data)


# ---- check ------------------------------------------------------------------

def test_check_clean_corrupt_missing_repair(st_data, st_small):
    folder = st_small[0][0].parent
    st_import(st_data, folder)
    assert_check_clean(st_data, 12)

    # One flipped bit in one blob.
    victim_uid = st_small[3][1]
    victim = blob_of(st_data, victim_uid)
    flip_byte(victim, victim.stat().st_size - 100)
    c = st_check(st_data)
    assert c.rc == 1 and c.bad == 1 and c.missing == 0, c.stdout
    assert "checksum" in c.stdout
    assert victim.name in c.stdout
    flip_byte(victim, victim.stat().st_size - 100)     # put it back
    assert_check_clean(st_data, 12)

    # A lost blob: reported, then its row removed by --repair.
    gone_uid = st_small[5][1]
    blob_of(st_data, gone_uid).unlink()
    c = st_check(st_data)
    assert c.rc == 1 and c.missing == 1 and c.bad == 0, c.stdout
    assert "missing" in c.stdout and gone_uid in c.stdout
    assert gone_uid in ls_uids(st_data)     # check alone changes nothing
    c = st_check(st_data, repair=True)
    assert c.rc == 0 and c.removed == 1, c.stdout
    assert gone_uid not in ls_uids(st_data)
    assert len(ls_uids(st_data)) == 11
    assert_check_clean(st_data, 11)
    # Importing it again brings it back.
    res = st_import(st_data, st_small[5][0])
    assert list(res.stored.values()) == [gone_uid]
    assert_check_clean(st_data, 12)


def test_check_rebuilds_lost_index(st_data, st_generated):
    files = [p for p, _, _ in st_generated[:60]]
    res = st_import(st_data, *files)
    uids = ls_uids(st_data)
    assert uids == set(res.stored.values()) and len(uids) == 60
    studies = {r["StudyInstanceUID"]: r for r in st_ls(st_data, "studies")}
    for p in pathlib.Path(st_data).glob("index.sqlite*"):
        p.unlink()
    c = st_check(st_data)
    assert c.rc == 1 and c.orphans == 60 and c.instances == 0, c.stdout
    c = st_check(st_data, repair=True)
    assert c.rc == 0, c.stdout
    assert c.reindexed == 60 and c.unreadable == 0, c.stdout
    assert ls_uids(st_data) == uids
    # Studies come back with their patients and counts.
    again = {r["StudyInstanceUID"]: r for r in st_ls(st_data, "studies")}
    assert set(again) == set(studies)
    for k, r in studies.items():
        for col in ["PatientID", "PatientName", "StudyDate",
                    "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                    "NumberOfStudyRelatedInstances"]:
            assert again[k][col] == r[col], (k, col)
    assert_check_clean(st_data, 60)
    # And the rebuilt index knows its instances: a re-import is duplicates.
    res = st_import(st_data, *files)
    assert len(res.duplicate) == 60 and not res.stored


# ---- injected faults --------------------------------------------------------

@pytest.mark.parametrize("sync", SYNC_MODES)
@pytest.mark.parametrize("point", list(FAULT_POINTS))
def test_fault_at_each_write_point(st_data, tmp_path, point, sync):
    files = make_instances(tmp_path / "f", 8,
                           str(100 + list(FAULT_POINTS).index(point)))
    paths = [p for p, _, _ in files]
    res = st_import(st_data, *paths, jobs=1, fault=f"{point}:3", sync=sync)
    assert res.rc == 1, res.where()
    assert len(res.rejected) == 1, res.where()
    reason = next(iter(res.rejected.values())).lower()
    assert any(w in reason for w in FAULT_POINTS[point]), \
        f"{point}: rejection does not name the problem: {reason}"
    assert len(res.stored) == 7, res.where()
    assert ls_uids(st_data) == set(res.stored.values())
    assert len(blob_files(st_data)) == 7
    assert tmp_leftovers(st_data) == []
    assert_check_clean(st_data, 7)
    assert tmp_leftovers(st_data) == []
    # Without the fault: exactly the rejected one is stored now.
    again = st_import(st_data, *paths, jobs=1, sync=sync)
    assert set(again.stored) == set(res.rejected), again.where()
    assert set(again.duplicate) == set(res.stored)
    assert len(ls_uids(st_data)) == 8
    assert_check_clean(st_data, 8)


# Many files in flight: blobs wait unsynced and one syncfs per cycle makes
# a whole batch durable (and, deferred, the index commit before it).  A
# fault there fails every instance of that step of the cycle -- and only
# those: the rest is stored, durable and consistent.  How many cycles an
# import takes depends on timing (a cycle with only rows to flush syncs the
# WAL alone, no syncfs): 300 files have made 3 syncfs at the least, so the
# first three are the ones failed here.
BATCH_FAULTS = ["blob.write:40", "blob.rename:60", "index.commit:2",
                "blob.syncfs:1", "blob.syncfs:2", "blob.syncfs:3"]


# --sync files never calls syncfs: those pairs are not generated.
BATCH_CASES = [(f, s) for f in BATCH_FAULTS for s in SYNC_MODES
               if not (f.startswith("blob.syncfs") and s == "files")]


@pytest.mark.parametrize("fault,sync", BATCH_CASES)
def test_fault_in_a_large_batch(st_data, st_generated, fault, sync):
    paths = [str(p) for p, _, _ in st_generated[:300]]
    res = st_import(st_data, *paths, fault=fault, sync=sync)
    point = fault.split(":")[0]
    assert res.rc == 1 and res.rejected, res.where()
    for reason in res.rejected.values():
        assert any(w in reason.lower() for w in BATCH_POINTS[point]), \
            f"{fault}: rejection does not name the problem: {reason}"
    assert len(res.stored) + len(res.rejected) == 300, res.where()
    # What was acknowledged is there, and nothing else.
    assert ls_uids(st_data) == set(res.stored.values())
    assert len(blob_files(st_data)) == len(res.stored)
    assert tmp_leftovers(st_data) == []
    assert_check_clean(st_data, len(res.stored))
    again = st_import(st_data, *paths, sync=sync)
    assert set(again.stored) == set(res.rejected), again.where()
    assert len(ls_uids(st_data)) == 300
    assert_check_clean(st_data, 300)


@pytest.mark.parametrize("sync", SYNC_MODES)
@pytest.mark.parametrize("point", list(FAULT_POINTS))
def test_fault_every_time_in_large_batches(st_data, st_generated, point,
                                           sync):
    paths = [str(p) for p, _, _ in st_generated[:120]]
    st_check(st_data)    # lay out the data folder (its fsyncs are faults too)
    res = st_import(st_data, *paths, fault=f"{point}:*", sync=sync)
    assert len(res.rejected) == 120 and not res.stored, res.where()
    assert blob_files(st_data) == []
    assert tmp_leftovers(st_data) == []
    assert st_ls(st_data, "patients") == []
    assert_check_clean(st_data, 0)


def test_import_sync_modes_store_the_same(tmp_path, st_generated):
    """Both ways of syncing store the same instances, byte for byte."""
    paths = [str(p) for p, _, _ in st_generated[:100]]
    blobs = {}
    for sync in SYNC_MODES:
        data = tmp_path / sync
        res = st_import(data, *paths, sync=sync)
        assert res.rc == 0 and len(res.stored) == 100, res.where()
        assert_check_clean(data, 100)
        blobs[sync] = {uid: blob_of(data, uid).read_bytes()
                       for uid in res.stored.values()}
        for path, uid in res.stored.items():
            assert blobs[sync][uid] == pathlib.Path(path).read_bytes()
    assert blobs["filesystem"] == blobs["files"]


def test_import_bad_sync_is_usage_error(st_data, st_small):
    p = st_run("import", "--data", st_data, "--sync", "never",
               st_small[0][0])
    assert p.returncode == 2
    assert not blob_files(st_data)


def test_fault_disk_full_everywhere(st_data, tmp_path):
    files = make_instances(tmp_path / "f", 6, "200")
    res = st_import(st_data, *[p for p, _, _ in files],
                    fault="blob.write:*")
    assert res.rc == 1
    assert len(res.rejected) == 6 and not res.stored, res.where()
    for reason in res.rejected.values():
        assert "no space" in reason.lower() or "write" in reason.lower()
    assert blob_files(st_data) == []
    assert tmp_leftovers(st_data) == []
    assert st_ls(st_data, "instances") == []
    assert_check_clean(st_data, 0)


def test_fault_commit_everywhere(st_data, tmp_path):
    files = make_instances(tmp_path / "f", 6, "201")
    res = st_import(st_data, *[p for p, _, _ in files], jobs=3,
                    fault="index.commit:*")
    assert len(res.rejected) == 6 and not res.stored, res.where()
    assert blob_files(st_data) == []
    assert st_ls(st_data, "patients") == []
    assert_check_clean(st_data, 0)


# ---- kill -9 during concurrent ingest ---------------------------------------

@pytest.mark.parametrize("jobs,sync", [(4, None), (None, "filesystem"),
                                       (None, "files")],
                         ids=["4-filesystem", "many-filesystem",
                              "many-files"])
def test_kill9_during_import(st_data, tmp_path, st_generated, jobs, sync):
    """Killed at random moments: everything acknowledged survives intact.
    With many files in flight the blobs wait for a shared syncfs and the
    index commit leaves its fsync to the next one: still, no "stored" line
    comes before both are on disk."""
    folder = st_generated[0][0].parent
    extra = [] if jobs is None else ["--jobs", str(jobs)]
    extra += [] if sync is None else ["--sync", sync]
    all_uids = {u for _, u, _ in st_generated}
    rng = random.Random(1234)
    acknowledged = set()
    killed = attempts = 0
    delay_max = 0.6
    while killed < 5:
        attempts += 1
        assert attempts <= 12, "import always finished before the kill"
        out = tmp_path / f"import{attempts}.out"
        with open(out, "w") as f:
            env = dict(os.environ)
            env.pop("AGORA_FAULT", None)
            proc = subprocess.Popen(
                [AGORA, "import", "--data", str(st_data), *extra,
                 str(folder)], stdout=f, stderr=subprocess.DEVNULL, env=env)
            time.sleep(rng.uniform(min(0.05, delay_max / 2), delay_max))
            proc.send_signal(signal.SIGKILL)
            rc = proc.wait(timeout=TIMEOUT)
        res = parse_import(out.read_text(), complete=False)
        if rc != -signal.SIGKILL or res.summary is not None:
            delay_max /= 2       # a fast machine: kill sooner next time
        else:
            killed += 1
        acknowledged |= set(res.stored.values())
        # Every acknowledged instance survived, with intact bytes.
        listed = ls_uids(st_data)
        lost = acknowledged - listed
        assert not lost, f"attempt {attempts}: acknowledged, then lost: " \
                         f"{sorted(lost)[:5]}"
        assert listed <= all_uids
        c = st_check(st_data)
        assert c.missing == 0 and c.bad == 0, f"attempt {attempts}:\n" \
                                              f"{c.stdout}"
        # That open reconciled the temporary files.
        assert tmp_leftovers(st_data) == [], f"attempt {attempts}"
        c = st_check(st_data, repair=True)
        assert c.rc == 0 and c.unreadable == 0, c.stdout
        assert_check_clean(st_data)
        assert acknowledged <= ls_uids(st_data)
    assert acknowledged, "no instance was acknowledged before a kill"
    # One clean run takes the rest.
    res = st_import(st_data, folder, jobs=4)
    assert res.rc == 0, res.where()
    assert len(res.stored) + len(res.duplicate) == 600
    assert ls_uids(st_data) == all_uids
    assert len(blob_files(st_data)) == 600
    assert_check_clean(st_data, 600)


# ---- listing ----------------------------------------------------------------

@pytest.fixture
def st_listed(st_data, st_generated):
    files = [p for p, _, _ in st_generated[:48]]
    res = st_import(st_data, *files)
    assert len(res.stored) == 48
    return st_data


def test_ls_filters(st_listed):
    d = st_listed
    assert len(st_ls(d, "patients")) == 6
    studies = st_ls(d, "studies")
    assert len(studies) == 12
    rows = st_ls(d, "studies", "PatientID=STPAT1")
    assert len(rows) == 2
    assert {r["PatientID"] for r in rows} == {"STPAT1"}
    assert all(r["NumberOfStudyRelatedInstances"] == "4" for r in rows)
    assert len(st_ls(d, "instances", "PatientID=STPAT1")) == 8
    assert len(st_ls(d, "series", "Modality=MR")) == 6
    assert len(st_ls(d, "instances", "Modality=CT", "PatientID=STPAT1")) \
        == 0
    one = studies[0]["StudyInstanceUID"]
    assert len(st_ls(d, "instances", f"StudyInstanceUID={one}")) == 4
    assert len(st_ls(d, "studies", "PatientName=Store^Test2")) == 2
    # Default level is studies.
    p = st_run("ls", "--data", d, "PatientID=STPAT0")
    assert p.returncode == 0 and len(p.stdout.strip().split("\n")) == 3
    p = st_run("ls", "--data", d, "--limit", "5", "instances")
    assert p.returncode == 0 and len(p.stdout.strip().split("\n")) == 6


def test_ls_unknown_filter_refused(st_listed):
    p = st_run("ls", "--data", st_listed, "studies", "Bogus=1")
    assert p.returncode == 1
    assert "Bogus" in p.stderr and p.stdout == ""
    # A key of a lower level is unknown at this one.
    p = st_run("ls", "--data", st_listed, "studies", "SOPInstanceUID=1.2")
    assert p.returncode == 1 and "SOPInstanceUID" in p.stderr


@pytest.mark.parametrize("value", [
    "' OR 1=1 --", "STPAT1' OR '1'='1", "STPAT1; DROP TABLE instances; --",
    "%", "STPAT_", "\" OR \"\"=\"", "*"])
def test_ls_sql_in_values_is_data(st_listed, value):
    for level in ["patients", "studies", "instances"]:
        p = st_run("ls", "--data", st_listed, level, f"PatientID={value}")
        assert p.returncode == 0, p.stderr
        assert p.stdout == "", p.stdout
    assert len(st_ls(st_listed, "instances")) == 48


def test_ls_never_drops_a_filter(st_listed):
    """16 matching filters and a 17th that matches nothing: no rows, or a
    refusal -- never the rows of the first 16 alone."""
    args = ["PatientID=STPAT1"] * 16 + ["PatientID=NOBODY"]
    p = st_run("ls", "--data", st_listed, "studies", *args)
    assert p.returncode != 0 or p.stdout == "", \
        f"17th filter ignored: {len(p.stdout.splitlines())} lines listed"


def test_ls_does_not_create_data_dir(tmp_path):
    """ls is read-only: a mistyped --data leaves nothing behind."""
    d = tmp_path / "typo"
    p = st_run("ls", "--data", d, "studies")
    assert p.returncode == 1 and str(d) in p.stderr
    assert not d.exists(), "agora ls created the data directory"


def test_demo_stores_synthetic_studies(tmp_path):
    """`agora demo N` stores N studies (CT + MR phantom series) through the
    ingest pipeline: listed, checksummed, readable, with real pixels."""
    import pydicom
    data = str(tmp_path / "demo")
    r = st_run("demo", "--data", data, "2")
    assert r.returncode == 0, r.stderr
    studies = st_run("ls", "--data", data, "studies").stdout.splitlines()
    assert len(studies) == 3                     # header + 2
    insts = st_run("ls", "--data", data, "--limit", "1000", "instances").stdout.splitlines()
    assert len(insts) == 1 + 2 * 2 * 12
    assert st_check(data).rc == 0
    blob = next(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(data, "blobs"))
                for f in fs)
    d = pydicom.dcmread(blob)
    assert d.pixel_array.max() > d.pixel_array.min()
    assert st_run("demo", "--data", data, "0").returncode == 2


# ---- C-STORE: received in memory, or spooled when large ---------------------

def big_instance(path, uid, rows=1100, cols=1100):
    """An instance of ~2.4 MB: over the size C-STORE keeps in memory, so it
    is spooled to a file and renamed into the blob store."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    import pydicom
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = uid
    ds.PatientID = "STBIG"
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint32) % 65521).astype(
        np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, write_like_original=False)
    return path


def cstore_server(tmp_path, name, fault=None, *extra):
    from test_dimse import Server
    data = str(tmp_path / name)
    st_run("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    env = {**os.environ, "AGORA_ADMIN_PASSWORD": "admin-password-1"}
    env.pop("AGORA_FAULT", None)
    if fault is not None:
        env["AGORA_FAULT"] = fault
    return Server(data, *extra, env=env)


def storescu(srv, *files):
    """-nh: go on after a refused instance."""
    from test_dimse import ENV
    return subprocess.run(["storescu", "-nh", "-aet", "SCU", "-aec", "AGORA",
                           "127.0.0.1", str(srv.port), *map(str, files)],
                          capture_output=True, text=True, env=ENV,
                          timeout=TIMEOUT)


def test_cstore_small_in_memory_and_large_spooled(tmp_path):
    import pydicom
    small = make_instances(tmp_path / "cs", 6, "300")
    big = [big_instance(tmp_path / f"big{i}.dcm", f"{UID_ROOT}.301.{i + 1}")
           for i in range(2)]
    assert all(p.stat().st_size > (1 << 20) for p in big)
    srv = cstore_server(tmp_path, "D")
    try:
        r = storescu(srv, *[p for p, _, _ in small], *big)
        assert r.returncode == 0, r.stderr
    finally:
        assert srv.stop() == 0
    data = srv.data
    sent = {pydicom.dcmread(str(p)).SOPInstanceUID: p
            for p in [p for p, _, _ in small] + big}
    assert ls_uids(data) == set(sent)
    # Each blob holds the data set as sent, behind a Part 10 header.
    for uid, p in sent.items():
        got = pydicom.dcmread(str(blob_of(data, uid)))
        want = pydicom.dcmread(str(p))
        assert got.file_meta.TransferSyntaxUID == \
            want.file_meta.TransferSyntaxUID
        assert got.PixelData == want.PixelData, uid
        assert got.PatientID == want.PatientID
    assert tmp_leftovers(data) == []
    assert_check_clean(data, len(sent))


@pytest.mark.parametrize("fault,which", [
    ("blob.write:2", "small"), ("blob.fsync:2", "small"),
    ("blob.dirsync:2", "small"), ("index.commit:2", "small"),
    ("index.commit:2", "staged"),
    ("spool.write:1", "big"), ("blob.rename:1", "big"),
    ("blob.fsync:1", "big")])
def test_cstore_fault_refuses_that_instance_only(tmp_path, fault, which):
    """An I/O failure while storing answers that C-STORE with a failure
    status (A700) and leaves nothing behind, in memory or spooled; the
    association goes on with the next instance.  "small": each blob
    written to its file before the commit (--no-staging); "staged": small
    blobs committed inside the index (the default)."""
    import pydicom
    small = [p for p, _, _ in make_instances(tmp_path / "cs", 4, "310")]
    files = small if which in ("small", "staged") else \
        [big_instance(tmp_path / "big.dcm", f"{UID_ROOT}.311.1")] + small
    extra = ("--no-staging",) if which == "small" else ()
    srv = cstore_server(tmp_path, "D", fault, *extra)
    try:
        r = storescu(srv, *files)
    finally:
        assert srv.stop() == 0
    assert r.returncode == 0, r.stderr
    log = pathlib.Path(srv.data + ".log").read_text()
    assert "failed (a700)" in log, log[-2000:]   # Refused: Out of Resources
    uids = [pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID
            for p in files]
    failed = uids[0] if which == "big" else uids[1]
    assert ls_uids(srv.data) == set(uids) - {failed}
    assert tmp_leftovers(srv.data) == []
    assert_check_clean(srv.data, len(uids) - 1)
