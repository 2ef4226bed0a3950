"""What is acknowledged has been flushed, and what is in flight is never
taken (SECURITY.md: never a lost acknowledged instance).  A crash test cannot tell a flushed write from one
still in the page cache (the kernel survives kill -9), so this test watches
the flushes themselves: `agora serve` runs under strace, instances are sent
one association at a time (one commit each, no group commit to share a
flush), and every store must be followed by an fdatasync of the index's
WAL before storescu gets its answer — for staged small instances (bytes
inside the index) and large ones (their blob file fdatasynced first).
STOW-RS, which leaves its parts to a shared syncfs, answers only after it.
And a failed write point fails the one C-STORE it hits, leaving nothing."""
import contextlib
import os
import re
import subprocess
import time

import pytest

from test_dicomweb import series_files
from test_dimse import Server, dcmtk, free_port


def can_strace():
    try:
        r = subprocess.run(["strace", "-f", "-o", "/dev/null", "true"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_strace = pytest.mark.skipif(
    not can_strace(), reason="strace cannot trace here (ptrace refused)")


def big_files(tmp_path, study, n):
    """n instances of ~300 KB: never staged (STAGE_MAX is 64 KiB)."""
    import pydicom
    out = []
    for i, f in enumerate(series_files(tmp_path, study, n)):
        d = pydicom.dcmread(f)
        d.Rows, d.Columns = 384, 384
        d.PixelData = bytes((i + k) % 251 for k in range(384 * 384 * 2))
        d.save_as(f, write_like_original=False)
        out.append(f)
    return out


@contextlib.contextmanager
def traced(srv, trace, calls, *extra, clock="-tt"):
    """srv (agora serve) under strace -f -y -tt (or clock) for calls, into
    trace; the server is stopped, cleanly, on the way out."""
    tracer = subprocess.Popen(
        ["strace", "-f", "-y", clock, *extra, "-e", "trace=" + calls,
         "-o", trace, "-p", str(srv.proc.pid)],
        stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)        # attached to every thread
        yield
        time.sleep(0.5)
    finally:
        tracer.terminate()
        tracer.wait(10)
        assert srv.stop() == 0


def flushes(trace):
    """[(path, time)] of every fdatasync/fsync started, in the strace -y -tt
    output (a call another thread interrupts is printed "<unfinished ...>",
    its result on a later line; a failed flush fails its store anyway)."""
    out = []
    pat = re.compile(r"^\d+\s+(\S+) f(?:data)?sync\(\d+<([^>]*)>")
    with open(trace) as f:
        for line in f:
            m = pat.match(line)
            if m:
                out.append((m.group(2), m.group(1)))
    return out


def timed_calls(trace):
    """[(start, end, pid, call, args)] from strace -f -y -ttt -T output,
    with calls another thread interrupted joined to their resumption."""
    done = re.compile(r"^(\d+)\s+([\d.]+) (\w+)\((.*)\) += .* <([\d.]+)>$")
    cut = re.compile(r"^(\d+)\s+([\d.]+) (\w+)\((.*) <unfinished \.\.\.>$")
    back = re.compile(r"^(\d+)\s+[\d.]+ <\.\.\. (\w+) resumed>.* <([\d.]+)>$")
    out, open_calls = [], {}
    with open(trace) as f:
        for line in f:
            line = line.rstrip("\n")
            m = done.match(line)
            if m:
                t = float(m.group(2))
                out.append((t, t + float(m.group(5)), m.group(1),
                            m.group(3), m.group(4)))
                continue
            m = cut.match(line)
            if m:
                open_calls[m.group(1)] = (float(m.group(2)), m.group(3),
                                          m.group(4))
                continue
            m = back.match(line)
            if m and m.group(1) in open_calls:
                t, call, args = open_calls.pop(m.group(1))
                out.append((t, t + float(m.group(3)), m.group(1), call,
                            args))
    return sorted(out)


def assert_answers_follow_wal_flushes(calls):
    """Every C-STORE response (a P-DATA-TF PDU the server sends) comes
    after an fdatasync of the WAL that began after the last WAL write
    before it ended: the rows it acknowledges were on stable storage.
    Holds for one association at a time (nothing else commits between an
    instance's rows and its answer but flushes of their own)."""
    wal = "index.sqlite-wal>"
    answers = [t for t, _, _, c, a in calls
               if c in ("sendto", "write", "writev", "sendmsg")
               and "<socket:" in a.split(",")[0] and '"\\4\\0' in a]
    assert answers, "no C-STORE response seen in the trace"
    for t in answers:
        writes = [end for start, end, _, c, a in calls
                  if c == "pwrite64" and wal in a.split(",")[0]
                  and start < t]
        assert writes, "an answer with no row written before it"
        flushed = [1 for start, end, _, c, a in calls
                   if c == "fdatasync" and wal in a and start > writes[-1]
                   and end <= t]
        assert flushed, "an answer at %.6f before its rows were flushed " \
            "(last WAL write %.6f)" % (t, writes[-1])


@needs_strace
@pytest.mark.parametrize("kind", ["staged", "large"])
def test_every_acknowledged_store_is_flushed(tmp_path, kind):
    data = str(tmp_path / "d")
    study = "1.2.826.0.1.3680043.10.1447.99.91.%d" % (kind == "large")
    files = (series_files(tmp_path, study, 3) if kind == "staged"
             else big_files(tmp_path, study, 3))
    srv = Server(data, "--accept-unknown-ae")
    trace = str(tmp_path / "strace.out")
    with traced(srv, trace, "fdatasync,fsync,pwrite64,sendto,write,writev,"
                "sendmsg", "-T", "-s", "8", clock="-ttt"):
        for f in files:        # one association, one commit each
            r = dcmtk("storescu", "-aet", "ONE", "-aec", "AGORA",
                      "127.0.0.1", str(srv.port), f)
            assert r.returncode == 0, r.stderr
    assert_answers_follow_wal_flushes(timed_calls(trace))
    got = flushes(trace)
    wal = [p for p, _ in got if p.endswith("index.sqlite-wal")]
    # blobs are written in D/tmp first (as name.tmp, or as the spool that
    # received the C-STORE), then renamed
    spool = os.path.join(data, "tmp") + "/"
    blobs = [p for p, _ in got if p.startswith(spool)]
    assert len(wal) >= len(files), got
    if kind == "large":
        assert len(blobs) >= len(files), got
    else:
        assert blobs == [], got      # staged: no file of its own yet


@needs_strace
def test_an_admin_change_after_an_ingest_is_flushed(tmp_path):
    """An ingest batch leaves the index writer with commits that the
    settler flushes; the next writer that is not a batch (here a new
    department, over REST) must get its own commit flushed before it is
    answered."""
    import requests
    data = str(tmp_path / "d")
    files = series_files(tmp_path, "1.2.826.0.1.3680043.10.1447.99.94", 2)
    http = free_port()
    srv = Server(data, "--accept-unknown-ae", "--http-port", str(http))
    trace = str(tmp_path / "strace.out")
    with traced(srv, trace, "fdatasync,pwrite64,sendto,write,writev,sendmsg",
                "-T", "-s", "16", clock="-ttt"):
        r = dcmtk("storescu", "-aet", "ONE", "-aec", "AGORA", "127.0.0.1",
                  str(srv.port), *files)
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)     # the spiller's idle pass, if any, is over
        r = requests.post("http://127.0.0.1:%d/api/v1/departments" % http,
                          json={"name": "neurology"}, timeout=30)
        assert r.status_code == 201, r.text
    calls = timed_calls(trace)
    answered = [t for t, _, _, c, a in calls
                if c in ("sendto", "write", "writev", "sendmsg")
                and "HTTP/1.1 201" in a]
    assert len(answered) == 1, "no 201 seen in the trace"
    wal = "index.sqlite-wal>"
    writes = [end for start, end, _, c, a in calls
              if c == "pwrite64" and wal in a.split(",")[0]
              and start < answered[0]]
    assert writes
    assert [1 for start, end, _, c, a in calls
            if c == "fdatasync" and wal in a and start > writes[-1]
            and end <= answered[0]], \
        "the new department was answered before its row was flushed"


def test_a_command_beside_the_server_leaves_its_files(tmp_path):
    """A start cleans up what a crash left half-written (spools and "*.tmp"
    blobs in D/tmp) — but only when no other process has the store open:
    `agora node add` run while `agora serve` writes must not take the
    files the server is writing.  Alone, the next command cleans them."""
    from test_dimse import agora
    data = str(tmp_path / "d")
    srv = Server(data)
    try:
        spool = os.path.join(data, "tmp", "spool-in-flight")
        blob = os.path.join(data, "tmp", "ab00-in-flight.tmp")
        for p in (spool, blob):
            with open(p, "wb") as f:
                f.write(b"being written")
        agora("node", "--data", data, "add", "BESIDE", "127.0.0.1", "104")
        assert os.path.exists(spool) and os.path.exists(blob)
    finally:
        assert srv.stop() == 0
    agora("node", "--data", data, "list")
    assert not os.path.exists(spool) and not os.path.exists(blob)


def trace_lines(trace):
    """[(time, call, rest)] of every call started in strace -f -tt output."""
    pat = re.compile(r"^\d+\s+(\d+):(\d+):([\d.]+) (\w+)\((.*)$")
    out = []
    with open(trace) as f:
        for line in f:
            m = pat.match(line)
            if m:
                t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 \
                    + float(m.group(3))
                out.append((t, m.group(4), m.group(5)))
    return out


@needs_strace
def test_stow_answers_after_a_flush_of_its_blobs_and_rows(tmp_path):
    """STOW-RS streams its parts into the store without waiting for each
    (their flushes are shared: one syncfs serves many); the response still
    comes only after flushes that started after each part's last byte was
    written, after the last blob got its name and after the last row
    reached the WAL."""
    import requests
    from test_dicomweb import multipart_body
    data = str(tmp_path / "d")
    study = "1.2.826.0.1.3680043.10.1447.99.92"
    files = big_files(tmp_path, study, 12)
    body, ct = multipart_body(files)
    http = free_port()
    srv = Server(data, "--http-port", str(http))
    trace = str(tmp_path / "strace.out")
    with traced(srv, trace, "fdatasync,fsync,syncfs,rename,pwrite64,sendto,"
                "sendmsg,writev,write", "-s", "16"):
        r = requests.post("http://127.0.0.1:%d/dicom-web/studies" % http,
                          data=body, timeout=120,
                          headers={"Content-Type": ct,
                                   "Accept": "application/dicom+json"})
        assert r.status_code == 200, r.text
    calls = trace_lines(trace)
    sent = [t for t, c, rest in calls
            if c in ("sendto", "sendmsg", "writev", "write")
            and "HTTP/1.1 200" in rest]
    assert sent, "no response seen"
    answered = sent[0]
    blobs = os.path.join(data, "blobs") + "/"
    named = [t for t, c, rest in calls
             if c == "rename" and ', "' + blobs in rest and t < answered]
    assert len(named) == len(files), named
    wal = [t for t, c, rest in calls if c == "pwrite64"
           and "index.sqlite-wal>" in rest and t < answered]
    assert wal
    last_name, last_row = max(named), max(wal)
    names_flushed = [t for t, c, rest in calls if last_name < t < answered
                     and (c == "syncfs" or (c == "fsync" and blobs in rest))]
    rows_flushed = [t for t, c, rest in calls if last_row < t < answered
                    and (c == "syncfs" or (c == "fdatasync" and
                                           "index.sqlite-wal>" in rest))]
    assert names_flushed, "the blobs' names were not flushed before the answer"
    # Every file written in D/tmp (parts spooled there become the blobs)
    # has its bytes flushed after its last write: by its own fdatasync or
    # a syncfs.
    spool = os.path.join(data, "tmp") + "/"
    fd_path = re.compile(r"^\d+<([^>]*)>")
    last_write = {}
    for t, c, rest in calls:
        m = fd_path.match(rest)
        if c == "write" and m and m.group(1).startswith(spool) \
                and t < answered:
            last_write[m.group(1)] = t
    assert len(last_write) >= len(files), last_write
    syncfs = [t for t, c, _ in calls if c == "syncfs" and t < answered]
    for path, w in last_write.items():
        own = [t for t, c, rest in calls if c == "fdatasync"
               and w < t < answered and "<%s>" % path in rest]
        assert own or [t for t in syncfs if t > w], \
            "%s was not flushed before the answer" % path
    assert rows_flushed, "the rows were not flushed before the answer"


@pytest.mark.parametrize("point", ["spool.write", "blob.fsync", "blob.rename",
                                   "blob.dirsync", "index.commit",
                                   "index.sync"])
def test_a_fault_fails_one_c_store_and_leaves_nothing(tmp_path, point):
    """C-STORE one instance per association (the path where each store
    flushes its own blob), with the second use of a write point failing:
    that instance gets a failure status, the others are stored, and the
    archive is left consistent (no temporary file, agora check clean)."""
    from test_dimse import agora, ls_instances
    from test_store import assert_check_clean, blob_files, tmp_leftovers
    data = str(tmp_path / "d")
    study = "1.2.826.0.1.3680043.10.1447.99.93"
    files = big_files(tmp_path, study, 4)
    agora("check", "--data", data)        # lay out the folder, unfaulted
    srv = Server(data, "--accept-unknown-ae",
                 env={**os.environ, "AGORA_FAULT": point + ":2"})
    outcomes = []
    try:
        for f in files:
            r = dcmtk("storescu", "-v", "-aet", "ONE", "-aec", "AGORA",
                      "127.0.0.1", str(srv.port), f)
            outcomes.append("Received Store Response (Success)" in r.stderr)
    finally:
        assert srv.stop() == 0
    assert outcomes.count(False) == 1, outcomes
    assert len(ls_instances(data)) == 3
    assert len(blob_files(data)) == 3
    assert tmp_leftovers(data) == []
    assert_check_clean(data, 3)


def test_legacy_temporary_blobs_are_removed_by_check_alone(tmp_path):
    """Versions before D/tmp wrote temporary blobs as "*.tmp" in the blob
    folders; a crash could leave them there.  agora check (the one pass
    over every folder) removes them — only when no other process has the
    archive open."""
    from test_dimse import agora
    data = str(tmp_path / "d")
    agora("check", "--data", data)
    legacy = os.path.join(data, "blobs", "ab", "ab00legacy-0001.tmp")
    with open(legacy, "wb") as f:
        f.write(b"half written by an old version")
    srv = Server(data)
    try:
        agora("check", "--data", data)
        assert os.path.exists(legacy)        # not alone: left alone
    finally:
        assert srv.stop() == 0
    r = agora("check", "--data", data)
    assert not os.path.exists(legacy)
    assert "0 orphans" in r.stdout, r.stdout
