"""Shared fixtures for the system tests of the DICOM data layer.

The binary under test is $AGORA_BIN (default: <repo>/build/agora).  The
reference implementation is DCMTK (dcmdump, dcmconv, dcmcjpeg, dcmcrle,
dcmcjpls) plus GDCM's gdcmconv; pydicom reads files as a third opinion.

Fixtures:
  agora          path of the binary (a missing binary is an error, not a skip)
  agora_run      run(*args, timeout=20, preexec_fn=None) -> CompletedProcess
  dcmdump        dcmdump(path) -> DcmdumpResult (cached per path)
  tmp            a fresh temporary directory (pathlib.Path)
  pydicom_files  every sample .dcm file shipped with pydicom
  corpus         {name: CorpusFile}: pydicom samples re-encoded by DCMTK/GDCM
                 into every transfer syntax (built once per session)
  corpus_file    one CorpusFile (tests asking for it run once per entry;
                 native_corpus_file / compressed_corpus_file: those only)
  pydicom_file   one pydicom sample path (tests run once per sample)
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PYDICOM_DATA = pathlib.Path(
    "/usr/lib/python3/dist-packages/pydicom/data/test_files")
TIMEOUT = 20

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = {
    "implicit": IMPLICIT_LE,
    "explicit": EXPLICIT_LE,
    "bigendian": EXPLICIT_BE,
    "deflated": DEFLATED,
}

# ---- the corpus plan --------------------------------------------------------
#
# Sources: small pydicom samples covering images (16-bit CT/MR, 8-bit RGB with
# an odd pixel count), deep sequences (RT plan/struct) and waveforms.

IMAGE_SOURCES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"]
OTHER_SOURCES = ["rtplan.dcm", "rtstruct.dcm", "waveform_ecg.dcm"]
# SC_rgb.dcm is not shipped with every pydicom; an 8-bit RGB stand-in is.
SC_RGB_FALLBACK = "SC_rgb_small_odd.dcm"

# name -> (argv template, expected transfer syntax).  {src} {dst} are filled
# in.  Compressed variants are only made of the image sources.
NATIVE_TOOLS = {
    "implicit": (["dcmconv", "+ti", "{src}", "{dst}"], IMPLICIT_LE),
    "explicit": (["dcmconv", "+te", "{src}", "{dst}"], EXPLICIT_LE),
    "bigendian": (["dcmconv", "+tb", "{src}", "{dst}"], EXPLICIT_BE),
    "deflated": (["dcmconv", "+td", "{src}", "{dst}"], DEFLATED),
}
COMPRESSED_TOOLS = {
    "jpeg-baseline": (["dcmcjpeg", "+eb", "{src}", "{dst}"],
                      "1.2.840.10008.1.2.4.50"),
    "jpeg-extended": (["dcmcjpeg", "+ee", "{src}", "{dst}"],
                      "1.2.840.10008.1.2.4.51"),
    "jpeg-lossless14": (["dcmcjpeg", "+el", "{src}", "{dst}"],
                        "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-sv1": (["dcmcjpeg", "+e1", "{src}", "{dst}"],
                          "1.2.840.10008.1.2.4.70"),
    "rle": (["dcmcrle", "{src}", "{dst}"], "1.2.840.10008.1.2.5"),
    "jpeg-ls": (["dcmcjpls", "+el", "{src}", "{dst}"],
                "1.2.840.10008.1.2.4.80"),
    "jpeg-ls-near": (["dcmcjpls", "+en", "{src}", "{dst}"],
                     "1.2.840.10008.1.2.4.81"),
    "j2k": (["gdcmconv", "--j2k", "{src}", "{dst}"],
            "1.2.840.10008.1.2.4.90"),
}


def _source_path(name: str) -> pathlib.Path:
    p = PYDICOM_DATA / name
    if not p.exists() and name == "SC_rgb.dcm":
        p = PYDICOM_DATA / SC_RGB_FALLBACK
    return p


def _stem(name: str) -> str:
    return name[:-4] if name.endswith(".dcm") else name


def corpus_plan():
    """[(entry name, source file name, tool name, argv, expected TS)]."""
    plan = []
    for src in IMAGE_SOURCES + OTHER_SOURCES:
        tools = dict(NATIVE_TOOLS)
        if src in IMAGE_SOURCES:
            tools.update(COMPRESSED_TOOLS)
        for tool, (argv, ts) in tools.items():
            plan.append(("%s-%s" % (_stem(src), tool), src, tool, argv, ts))
    return plan


@dataclass
class CorpusFile:
    name: str          # e.g. "CT_small-bigendian"
    path: pathlib.Path
    source: pathlib.Path
    tool: str
    ts: str            # transfer syntax UID actually in the file
    native: bool


@dataclass
class CorpusEntryFailure:
    name: str
    reason: str


def _read_ts(path: pathlib.Path) -> str | None:
    import pydicom
    try:
        meta = pydicom.filereader.read_file_meta_info(str(path))
    except Exception:       # noqa: BLE001 - any failure means "unknown"
        return None
    ts = meta.get("TransferSyntaxUID")
    return str(ts) if ts is not None else None


# ---- running things ---------------------------------------------------------

def run(argv, timeout=TIMEOUT, preexec_fn=None, **kw):
    """subprocess.run without a shell; output captured as bytes."""
    return subprocess.run([str(a) for a in argv], capture_output=True,
                          timeout=timeout, preexec_fn=preexec_fn, **kw)


@pytest.fixture(scope="session")
def agora() -> str:
    path = os.environ.get("AGORA_BIN") or str(REPO / "build" / "agora")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("agora binary %r not found or not executable: build it "
                    "(meson setup build && ninja -C build) or set AGORA_BIN"
                    % path, pytrace=False)
    return path


@pytest.fixture(scope="session")
def agora_run(agora):
    def _run(*args, timeout=TIMEOUT, preexec_fn=None, **kw):
        return run([agora, *args], timeout=timeout, preexec_fn=preexec_fn,
                   **kw)
    return _run


@dataclass
class DcmdumpResult:
    ok: bool           # dcmdump read the file
    text: str          # the listing (UTF-8 when utf8)
    utf8: bool         # +U8 worked; False: strings are in the file's charset
    stderr: str


@functools.lru_cache(maxsize=None)
def dcmdump_file(path: str) -> DcmdumpResult:
    """dcmdump +L (whole values) -Un (UID numbers, not names), with +U8
    (UTF-8) when DCMTK can convert the file's character set."""
    base = ["dcmdump", "+L", "-Un"]
    r = run(base + ["+U8", path])
    if r.returncode == 0:
        return DcmdumpResult(True, r.stdout.decode("utf-8", "surrogateescape"),
                             True, r.stderr.decode("utf-8", "replace"))
    r = run(base + [path])
    return DcmdumpResult(r.returncode == 0,
                         r.stdout.decode("utf-8", "surrogateescape"), False,
                         r.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def dcmdump():
    if shutil.which("dcmdump") is None:
        pytest.fail("dcmdump (DCMTK) is not installed", pytrace=False)
    return lambda path: dcmdump_file(str(path))


def warm_dcmdump(paths):
    """Run dcmdump on many files in parallel to fill dcmdump_file's cache
    (dcmdump spends most of its time loading its dictionary)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        list(pool.map(dcmdump_file, [str(p) for p in paths]))


@pytest.fixture(scope="session")
def dcmdump_warm(corpus, dcmdump):
    """All pydicom samples and corpus files already through dcmdump."""
    warm_dcmdump(_pydicom_samples() + [e.path for e in corpus.values()
                                       if isinstance(e, CorpusFile)])
    return dcmdump


@pytest.fixture
def tmp(tmp_path) -> pathlib.Path:
    return tmp_path


NOT_DICOM_SUFFIXES = {".txt", ".json", ".gz", ".dump"}


def _pydicom_samples():
    """Every DICOM sample pydicom ships: *.dcm and the DICOMDIR media tree
    (whose files have no suffix)."""
    return sorted(p for p in PYDICOM_DATA.rglob("*")
                  if p.is_file() and p.suffix not in NOT_DICOM_SUFFIXES)


@pytest.fixture(scope="session")
def pydicom_files():
    files = _pydicom_samples()
    assert len(files) >= 20, "pydicom's sample files are missing"
    return files


# ---- the corpus -------------------------------------------------------------

@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Build every entry of corpus_plan(); refused conversions are recorded
    as CorpusEntryFailure (tests on them skip, the coverage test checks that
    each syntax still has a file)."""
    from concurrent.futures import ThreadPoolExecutor
    out = tmp_path_factory.mktemp("corpus")

    def build(plan_entry):
        name, src, tool, argv, want_ts = plan_entry
        source = _source_path(src)
        if not source.exists():
            return CorpusEntryFailure(name, "%s missing" % source)
        dst = out / (name + ".dcm")
        cmd = [a.format(src=source, dst=dst) for a in argv]
        try:
            r = run(cmd, timeout=60)
        except subprocess.TimeoutExpired:
            return CorpusEntryFailure(name, "%s timed out" % cmd[0])
        ts = _read_ts(dst) if dst.exists() else None
        if r.returncode != 0 or ts is None:
            dst.unlink(missing_ok=True)
            msg = (r.stderr or r.stdout).decode("utf-8", "replace").strip()
            return CorpusEntryFailure(
                name, "%s refused %s: rc=%d %s" % (cmd[0], source.name,
                                                  r.returncode, msg[:200]))
        if ts != want_ts:
            dst.unlink(missing_ok=True)
            return CorpusEntryFailure(
                name, "%s wrote %s, wanted %s" % (cmd[0], ts, want_ts))
        return CorpusFile(name, dst, source, tool, ts, tool in NATIVE_TOOLS)

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        return {e.name: e for e in pool.map(build, corpus_plan())}


@pytest.fixture
def corpus_file(request, corpus) -> CorpusFile:
    entry = corpus[request.param]
    if isinstance(entry, CorpusEntryFailure):
        pytest.skip(entry.reason)
    return entry


@pytest.fixture
def native_corpus_file(request, corpus) -> CorpusFile:
    entry = corpus[request.param]
    if isinstance(entry, CorpusEntryFailure):
        pytest.skip(entry.reason)
    assert entry.native
    return entry


@pytest.fixture
def compressed_corpus_file(request, corpus) -> CorpusFile:
    entry = corpus[request.param]
    if isinstance(entry, CorpusEntryFailure):
        pytest.skip(entry.reason)
    assert not entry.native
    return entry


def pytest_configure(config):
    # pydicom complains about the DICOMDIR samples it ships; not our test
    config.addinivalue_line("filterwarnings",
                            "ignore::UserWarning:pydicom.dicomdir")
    config.addinivalue_line("filterwarnings",
                            "ignore:The 'DicomDir' class is deprecated")


def pytest_generate_tests(metafunc):
    plan = corpus_plan()
    if "corpus_file" in metafunc.fixturenames:
        names = [p[0] for p in plan]
        metafunc.parametrize("corpus_file", names, ids=names, indirect=True)
    if "native_corpus_file" in metafunc.fixturenames:
        names = [p[0] for p in plan if p[2] in NATIVE_TOOLS]
        metafunc.parametrize("native_corpus_file", names, ids=names,
                             indirect=True)
    if "compressed_corpus_file" in metafunc.fixturenames:
        names = [p[0] for p in plan if p[2] not in NATIVE_TOOLS]
        metafunc.parametrize("compressed_corpus_file", names, ids=names,
                             indirect=True)
    if "pydicom_file" in metafunc.fixturenames:
        files = _pydicom_samples()
        metafunc.parametrize("pydicom_file", files,
                             ids=[str(f.relative_to(PYDICOM_DATA))
                                  for f in files])


# ---- agora dump vs dcmdump --------------------------------------------------

def pydicom_element(ds, path):
    """The pydicom DataElement at a tag path, or None."""
    for tag, idx in path[:-1]:
        if tag not in ds:
            return None
        seq = ds[tag].value
        if idx >= len(seq):
            return None
        ds = seq[idx]
    tag = path[-1][0]
    return ds[tag] if tag in ds else None


def pydicom_text(elem) -> str:
    """An element's decoded text as the dump tools print it inside [...]."""
    v = elem.value
    if v is None or v == "":
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v)


def dump_problems(agora_run, path, *, ref_path=None, meta=True):
    """Differences between `agora dump` of path and dcmdump of ref_path
    (default: the same file).  Strings dcmdump cannot convert to UTF-8 and
    (0008,0005) (which dcmdump +U8 rewrites to ISO_IR 192) are checked
    against pydicom instead."""
    import pydicom
    import dcmdump_parse as dp

    ref = dcmdump_file(str(ref_path or path))
    assert ref.ok, "dcmdump cannot read %s: %s" % (ref_path or path,
                                                    ref.stderr)
    r = agora_run("dump", "--max-value", "1000000", path)
    assert r.returncode == 0, "agora dump %s failed: %s" % (
        path, r.stderr.decode("utf-8", "replace"))
    got = dp.parse(r.stdout.decode("utf-8", "surrogateescape"))
    want = dp.parse(ref.text)
    problems = []
    skip = set()
    py = None
    if ref.utf8 or any(not el.value.isascii() for el in want.dataset.values()
                       if el.vr in dp.STRING_VRS):
        py = pydicom.dcmread(str(ref_path or path), force=True)
    if ref.utf8:
        # dcmdump +U8 reports (0008,0005) as "ISO_IR 192" (or adds it).
        skip.add(dp.SPECIFIC_CHARACTER_SET)
        paths = {p for p in list(want.dataset) + list(got.dataset)
                 if p[-1][0] == dp.SPECIFIC_CHARACTER_SET}
        for p in sorted(paths, key=dp.format_path):
            pe = pydicom_element(py, p)
            el = got.dataset.get(p)
            if pe is None:
                if el is not None:
                    problems.append("%s unexpected" % dp.format_path(p))
            elif el is None:
                problems.append("%s missing" % dp.format_path(p))
            elif (dp.string_value(el) or "").strip() != \
                    pydicom_text(pe).strip():
                problems.append("%s: %r, pydicom says %r" % (
                    dp.format_path(p), dp.string_value(el), pydicom_text(pe)))
    else:
        # Raw bytes in the file's charset: use pydicom's decoding as the
        # reference for the non-ASCII strings.
        for p, el in want.dataset.items():
            if el.vr in dp.STRING_VRS and not el.value.isascii():
                pe = pydicom_element(py, p)
                if pe is not None:
                    el.value = "[%s]" % pydicom_text(pe)
    problems += dp.compare(want, got, skip=skip, meta=meta)
    return problems
