"""`agora import` of DICOMDIR media (PS3.10 §8, PS3.3 Annex F): the files
the Directory Record Sequence references are imported, and only those;
File IDs are resolved below the DICOMDIR's folder, also as ISO 9660 media
show them on Linux (lower case, ";1" versions, trailing dots); missing
files are reported, not fatal; nothing outside the media is ever read
(SECURITY.md rule 2: media import stays inside its root).

Media: pydicom's DICOMDIR samples (made with dcmmkdir, re-encoded big
endian and implicit, records reordered or mistyped) and media made here
with DCMTK's dcmmkdir; DICOMDIRs edited with pydicom for the hostile
cases.  The binary is $AGORA_BIN (default <repo>/build/agora).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pydicom
import pytest

from test_store import (assert_check_clean, blob_files, ls_uids,
                        make_instances, parse_import, st_run, tmp_leftovers)

MEDIA = pathlib.Path(
    "/usr/lib/python3/dist-packages/pydicom/data/test_files/dicomdirtests")
VARIANTS = ["DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit",
            "DICOMDIR-reordered", "DICOMDIR-nopatient"]


def records(dicomdir):
    """(ReferencedFileID components, SOP Instance UID) of every in-use
    record that references a file, as pydicom reads them."""
    d = pydicom.dcmread(str(dicomdir), force=True)
    out = []
    for r in d.DirectoryRecordSequence:
        if "ReferencedFileID" not in r:
            continue
        if r.get("RecordInUseFlag", 0xFFFF) == 0:
            continue
        fid = r.ReferencedFileID
        fid = [fid] if isinstance(fid, str) else list(fid)
        out.append((fid, r.get("ReferencedSOPInstanceUIDInFile")))
    return out


def media_import(data, *paths, fault=None):
    """Run `agora import`; returns (ImportResult, stderr)."""
    p = st_run("import", "--data", data, *paths, fault=fault)
    res = parse_import(p.stdout)
    res.rc = p.returncode
    res.stderr = p.stderr
    assert res.summary == (len(res.stored), len(res.duplicate),
                           len(res.rejected), len(res.skipped)), res.where()
    return res


def copy_media(dst):
    """pydicom's medium (the DICOMDIR and the 3 patient folders it
    references, not TINY_ALPHA) into dst."""
    dst.mkdir(parents=True)
    shutil.copy(MEDIA / "DICOMDIR", dst / "DICOMDIR")
    for name in ["77654033", "98892001", "98892003"]:
        shutil.copytree(MEDIA / name, dst / name)
    return dst


@pytest.fixture
def dd_data(tmp_path):
    return tmp_path / "D"


# ---- what a DICOMDIR references, and only that ------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_dicomdir_imports_exactly_its_records(dd_data, variant):
    dicomdir = MEDIA / variant
    recs = records(MEDIA / "DICOMDIR")
    assert len(recs) == 31
    want = {str(MEDIA.joinpath(*fid)): uid for fid, uid in recs}
    res = media_import(dd_data, dicomdir)
    assert res.rc == 0, res.where()
    # Every referenced file, as its record says, and nothing else: not the
    # other DICOMDIRs, the README, nor TINY_ALPHA's medium beside it.
    assert res.stored == want, res.where()
    assert not res.skipped and not res.rejected, res.where()
    assert ls_uids(dd_data) == set(want.values())
    assert_check_clean(dd_data, 31)


def test_folder_means_everything_in_it(dd_data, tmp_path):
    """Passing the folder imports every file in it, the ones no record
    references too; its DICOMDIR itself is reported skipped."""
    media = copy_media(tmp_path / "m")
    extra = media / "EXTRA"
    src = make_instances(tmp_path / "x", 1, "401")[0]
    shutil.copy(src[0], extra)
    res = media_import(dd_data, media / "DICOMDIR")
    assert str(extra) not in res.stored and len(res.stored) == 31
    res = media_import(dd_data, media)
    assert res.rc == 0, res.where()
    assert res.stored == {str(extra): src[1]}, res.where()
    assert len(res.duplicate) == 31
    assert str(media / "DICOMDIR") in res.skipped
    assert_check_clean(dd_data, 32)


def test_second_import_is_duplicates(dd_data):
    first = media_import(dd_data, MEDIA / "DICOMDIR")
    again = media_import(dd_data, MEDIA / "DICOMDIR")
    assert again.rc == 0 and not again.stored
    assert again.duplicate == first.stored
    assert_check_clean(dd_data, 31)


def test_empty_dicomdir_imports_nothing(dd_data):
    res = media_import(dd_data, MEDIA / "DICOMDIR-empty.dcm")
    assert res.rc == 0, res.where()
    assert res.summary == (0, 0, 0, 0)
    assert blob_files(dd_data) == []


def test_dcmmkdir_media(dd_data, tmp_path):
    """Media written by DCMTK's dcmmkdir (PS3.10 File IDs: 8-character
    upper-case components, nested folders); files on the medium that its
    DICOMDIR does not list are left alone."""
    media = tmp_path / "CD"
    insts = make_instances(tmp_path / "gen", 12, "402")
    want = {}
    for i, (p, uid, _) in enumerate(insts):
        d = media / "DICOM" / f"ST{i // 6:06d}" / f"SE{i % 2:06d}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / f"IM{i:06d}")
        want[str(d / f"IM{i:06d}")] = uid
    r = subprocess.run(["dcmmkdir", "+r", "+I", "-q", "DICOM"], cwd=media,
                       capture_output=True, text=True)
    assert r.returncode == 0 and (media / "DICOMDIR").exists(), r.stderr
    assert len(records(media / "DICOMDIR")) == 12
    stray = make_instances(tmp_path / "stray", 1, "403")[0]
    shutil.copy(stray[0], media / "DICOM" / "STRAY")
    res = media_import(dd_data, media / "DICOMDIR")
    assert res.rc == 0, res.where()
    assert res.stored == want, res.where()
    assert stray[1] not in ls_uids(dd_data)
    assert_check_clean(dd_data, 12)


def test_inactive_records_are_not_followed(dd_data, tmp_path):
    media = copy_media(tmp_path / "m")
    d = pydicom.dcmread(str(media / "DICOMDIR"))
    refs = [r for r in d.DirectoryRecordSequence if "ReferencedFileID" in r]
    refs[0].RecordInUseFlag = 0          # PS3.3 F.5: inactive record
    gone = str(media.joinpath(*refs[0].ReferencedFileID))
    d.save_as(str(media / "DICOMDIR"), write_like_original=True)
    res = media_import(dd_data, media / "DICOMDIR")
    assert res.rc == 0, res.where()
    assert gone not in res.stored and len(res.stored) == 30, res.where()


# ---- media as Linux shows ISO 9660 discs -------------------------------------

def rename_tree(root, fn):
    """Rename every entry below root (deepest first) with fn(name)."""
    for dp, dirs, files in os.walk(root, topdown=False):
        for n in files + dirs:
            os.rename(os.path.join(dp, n), os.path.join(dp, fn(n)))


@pytest.mark.parametrize("style", ["lower", "version", "dot-version"])
def test_iso9660_name_variants(dd_data, tmp_path, style):
    """The records say 77654033\\CR1\\6154; a disc mounted without Rock
    Ridge shows 77654033/cr1/6154 (map=normal), or with map=off
    6154.;1 for files (dir names plain)."""
    media = copy_media(tmp_path / "m")
    recs = records(media / "DICOMDIR")
    os.rename(media / "DICOMDIR", tmp_path / "dd")
    if style == "lower":
        rename_tree(media, str.lower)
    else:
        suffix = ";1" if style == "version" else ".;1"
        for dp, _, files in os.walk(media):
            for n in files:
                os.rename(os.path.join(dp, n), os.path.join(dp, n + suffix))
    name = "dicomdir" if style == "lower" else "DICOMDIR"
    os.rename(tmp_path / "dd", media / name)
    res = media_import(dd_data, media / name)
    assert res.rc == 0, res.where()
    assert len(res.stored) == 31, res.where()
    assert set(res.stored.values()) == {uid for _, uid in recs}
    for path in res.stored:
        assert os.path.exists(path), path   # reported as found on disc


# ---- missing, hostile -------------------------------------------------------

def test_missing_referenced_file_is_reported_not_fatal(dd_data, tmp_path):
    media = copy_media(tmp_path / "m")
    (media / "77654033" / "CR2" / "6247").unlink()
    res = media_import(dd_data, media / "DICOMDIR")
    assert res.rc == 1, res.where()               # something is missing
    assert len(res.stored) == 30, res.where()     # the rest is imported
    assert "77654033\\CR2\\6247" in res.stderr, res.stderr
    assert "1 referenced files missing" in res.stdout
    assert_check_clean(dd_data, 30)


def edited_dicomdir(media, file_ids):
    """Point the first len(file_ids) file records of media/DICOMDIR at
    file_ids instead."""
    d = pydicom.dcmread(str(media / "DICOMDIR"))
    refs = [r for r in d.DirectoryRecordSequence if "ReferencedFileID" in r]
    for r, fid in zip(refs, file_ids):
        r.ReferencedFileID = fid
    d.save_as(str(media / "DICOMDIR"), write_like_original=True)


@pytest.mark.filterwarnings("ignore::UserWarning")   # pydicom on the bad IDs
def test_file_ids_cannot_leave_the_media(dd_data, tmp_path):
    """File IDs naming "..", absolute paths or symbolic links out of the
    medium are refused and reported; the file outside is never read."""
    media = copy_media(tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = make_instances(tmp_path / "s", 2, "404")
    shutil.copy(secret[0][0], outside / "SECRET")
    shutil.copy(secret[1][0], outside / "LINKED")
    os.symlink(outside, media / "LINKDIR")
    os.symlink(outside / "LINKED", media / "77654033" / "LINK")
    edited_dicomdir(media, [
        ["..", "outside", "SECRET"],
        ["77654033", "..", "..", "outside", "SECRET"],
        [str(outside / "SECRET")],               # one "absolute" component
        ["LINKDIR", "SECRET"],                   # a linked folder
        ["77654033", "LINK"],                    # a linked file
    ])
    res = media_import(dd_data, media / "DICOMDIR")
    assert res.rc == 1, res.where()
    assert len(res.stored) == 26, res.where()
    uids = ls_uids(dd_data)
    assert secret[0][1] not in uids and secret[1][1] not in uids
    assert res.stderr.count("referenced file") == 5, res.stderr
    assert "5 referenced files missing" in res.stdout
    assert tmp_leftovers(dd_data) == []


@pytest.mark.parametrize("content", [b"", b"not a DICOMDIR\n" * 20,
                                     b"\0" * 128 + b"DICM" + b"\x02\x00"])
def test_unreadable_dicomdir_is_an_error(dd_data, tmp_path, content):
    media = copy_media(tmp_path / "m")
    (media / "DICOMDIR").write_bytes(content)
    res = media_import(dd_data, media / "DICOMDIR")
    assert res.rc == 1
    assert "DICOMDIR" in res.stderr and "not a readable" in res.stderr
    assert res.summary[0] == 0 and blob_files(dd_data) == []


def test_truncated_dicomdir_names_the_problem(dd_data):
    """pydicom's DICOMDIR-nooffset ends inside its last record (an item
    length past the end of the file): refused with the offset, and the
    hint that the folder can be imported instead."""
    res = media_import(dd_data, MEDIA / "DICOMDIR-nooffset")
    assert res.rc == 1
    assert "offset" in res.stderr and "folder" in res.stderr, res.stderr
    assert blob_files(dd_data) == []
