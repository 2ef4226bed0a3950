#!/usr/bin/python3
"""Side-by-side server benchmark: Agora vs Orthanc vs DCMTK storescp.

Started by bench/run (which installs the reference systems and, when it can,
puts everything in a private network namespace with only loopback).  See
bench/README.md for what each figure means.

Every server is bound to / reachable on 127.0.0.1 only, every process it
starts is killed on exit, every wait has a timeout and the whole run has a
deadline.
"""

import argparse
import atexit
import datetime
import fcntl
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
CORPUS = os.path.join(BENCH, "corpus")
LOGS = os.path.join(OUT, "logs")
sys.path.insert(0, BENCH)

import requests  # noqa: E402

import dimse  # noqa: E402
import gen_corpus  # noqa: E402

HOST = "127.0.0.1"
SCU_AET = "BENCHSCU"
MOVE_AET = "STORESCP"
DICOMWEB_PLUGIN_PATHS = [
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
]
STOW_BATCH = 50
BOUNDARY = "agora-bench-7d1c5e0b"
STUDY_KEYS = ["StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
              "ModalitiesInStudy", "ReferringPhysicianName", "PatientName",
              "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
              "StudyDescription", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances"]
QUERY_KINDS = [
    ("pid", "by PatientID"),
    ("name", "PatientName wildcard (FAMILY*)"),
    ("date", "StudyDate range (1 month)"),
    ("modality", "ModalitiesInStudy=MR + 1-month StudyDate"),
]

# OHIF 3.13's study list request (issue 6, "What OHIF asks for").
STUDY_LIST = {"limit": 101, "offset": 0, "fuzzymatching": "false",
              "includefield": "00081030,00080060,00080090,00100030"}

T_START = time.time()


def log(msg):
    print("[%6.1fs] %s" % (time.time() - T_START, msg), file=sys.stderr,
          flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# processes

class Procs:
    """Every long-running process we start; all killed on exit."""
    live = []

    @classmethod
    def start(cls, cmd, logname, cwd=None, env=None):
        os.makedirs(LOGS, exist_ok=True)
        f = open(os.path.join(LOGS, logname), "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                             start_new_session=True)
        f.close()
        cls.live.append(p)
        return p

    @classmethod
    def stop(cls, p, timeout=30, kill=False):
        if p.poll() is None and kill:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=timeout)
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log("pid %d did not stop in %d s: SIGKILL" % (p.pid, timeout))
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        if p in cls.live:
            cls.live.remove(p)

    @classmethod
    def kill_all(cls):
        for p in list(cls.live):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        cls.live = []


def run(cmd, timeout, what=None, env=None, check=True):
    """Run a short-lived command; returns (seconds, CompletedProcess)."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError("%s timed out after %d s" % (what or cmd[0], timeout))
    secs = time.perf_counter() - t0
    if check and r.returncode != 0:
        tail = (r.stderr or r.stdout or b"").decode(errors="replace")[-600:]
        raise BenchError("%s failed (exit %d): %s" % (what or cmd[0],
                                                      r.returncode, tail))
    return secs, r


def run_parallel(cmds, timeout, what, raise_errors=True):
    """Start all commands at once, wait for all; returns wall seconds (and
    the list of errors with raise_errors=False)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL,
                              start_new_session=True) for c in cmds]
    errors = []
    try:
        for p in procs:
            left = max(1.0, timeout - (time.perf_counter() - t0))
            try:
                _, err = p.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                errors.append("timed out after %d s" % timeout)
                continue
            if p.returncode != 0:
                errors.append("exit %d: %s" % (
                    p.returncode, err.decode(errors="replace")[-400:]))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
    secs = time.perf_counter() - t0
    if not raise_errors:
        return secs, errors
    if errors:
        raise BenchError("%s: %s" % (what, "; ".join(errors)))
    return secs


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError("%s: process exited with %s" % (what,
                                                             proc.returncode))
        try:
            if pred():
                return
        except (OSError, requests.RequestException, dimse.DimseError):
            pass
        time.sleep(0.1)
    raise BenchError("%s: not ready after %d s" % (what, timeout))


def proc_status(pid, key):
    """kB value of a /proc/PID/status field, or 0."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class RssSampler:
    """Peak memory of a server: max(VmHWM of the main process, sampled sum
    of VmRSS over its process tree) — the latter matters for storescp
    --fork, whose children handle the associations."""

    def __init__(self, pid, tree=False, interval=0.1):
        self.pid, self.tree, self.interval = pid, tree, interval
        self.peak_sum = 0
        self._stop = threading.Event()
        self._t = None

    def start(self):
        if self.tree:
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval):
            pids = [self.pid] + descendants(self.pid)
            s = sum(proc_status(p, "VmRSS") for p in pids)
            self.peak_sum = max(self.peak_sum, s)

    def peak_kb(self):
        self._stop.set()
        if self._t:
            self._t.join(timeout=5)
        return max(proc_status(self.pid, "VmHWM"), self.peak_sum)


# ---------------------------------------------------------------------------
# servers

class Server:
    name = "?"
    aet = "?"
    strict = True             # failures are fatal (reference systems)
    # what the server can do; Agora's are probed at start
    caps = frozenset({"store", "echo", "find", "get", "move", "http"})

    def __init__(self, data_dir, tag, move_dest_port=None):
        self.data_dir = data_dir
        self.tag = tag
        self.move_dest_port = move_dest_port
        self.proc = None
        self.dicom_port = None
        self.http_port = None
        self.sampler = None

    def can(self, cap):
        return cap in self.caps

    @property
    def web(self):
        return "http://%s:%d" % (HOST, self.http_port)

    @property
    def dicomweb_root(self):
        return self.web + "/dicom-web"

    def http_auth(self):
        return {}

    def requests_auth(self):
        return None

    def rss_start(self):
        self.sampler = RssSampler(self.proc.pid,
                                  tree=isinstance(self, Storescp)).start()

    def peak_rss_mb(self):
        return self.sampler.peak_kb() / 1024.0 if self.sampler else None

    def stop(self, kill=False):
        """kill=True: SIGKILL, for throw-away servers (Orthanc takes ~3 s
        to shut down gracefully)."""
        if self.proc is not None:
            Procs.stop(self.proc, kill=kill)
            self.proc = None

    def count_instances(self, expected=None):
        return None

    def _fresh_dir(self, fresh):
        if fresh and os.path.exists(self.data_dir):
            shutil.rmtree(self.data_dir)
        os.makedirs(self.data_dir, exist_ok=True)


class Orthanc(Server):
    name = "Orthanc"
    aet = "ORTHANC"

    def start(self, fresh=True):
        self._fresh_dir(fresh)
        self.dicom_port, self.http_port = free_port(), free_port()
        plugin = next((p for p in DICOMWEB_PLUGIN_PATHS if os.path.exists(p)),
                      None)
        if plugin is None:
            raise BenchError("the Orthanc DICOMweb plugin is not installed "
                             "(apt-get install orthanc-dicomweb)")
        storage = os.path.join(self.data_dir, "storage")
        cfg = {
            "Name": "agora-bench",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "HttpCompressionEnabled": False,
            "TcpNoDelay": True,
            "SaveJobs": False,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                         "Host": "%s:%d" % (HOST, self.http_port),
                         "Ssl": False},
            "DicomModalities": {},
        }
        if self.move_dest_port:
            cfg["DicomModalities"][MOVE_AET] = [MOVE_AET, HOST,
                                                self.move_dest_port]
        cfg_path = os.path.join(self.data_dir, "orthanc.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.proc = Procs.start(["Orthanc", cfg_path],
                                "orthanc-%s.log" % self.tag)
        wait_for(lambda: requests.get(self.web + "/system",
                                      timeout=2).status_code == 200,
                 60, "Orthanc (%s)" % self.tag, self.proc)
        wait_for(lambda: dimse_echo(self), 30, "Orthanc DICOM port",
                 self.proc)
        self.rss_start()
        return self

    def count_instances(self, expected=None):
        r = requests.get(self.web + "/statistics", timeout=30)
        r.raise_for_status()
        return int(r.json()["CountInstances"])

    def versions(self):
        v = {}
        try:
            v["Orthanc"] = requests.get(self.web + "/system",
                                        timeout=5).json()["Version"]
            v["Orthanc DICOMweb plugin"] = requests.get(
                self.web + "/plugins/dicom-web", timeout=5).json()["Version"]
        except (requests.RequestException, KeyError, ValueError):
            pass
        return v


class Storescp(Server):
    name = "storescp"
    aet = MOVE_AET
    caps = frozenset({"store", "echo"})

    def start(self, fresh=True, port=None):
        self._fresh_dir(fresh)
        self.dicom_port = port or free_port()
        # --fork: one child per association, so 4 associations run in
        # parallel; -dhl: no reverse DNS look-up per association.
        self.proc = Procs.start(
            ["storescp", "--fork", "-dhl", "-aet", self.aet, "-od",
             self.data_dir, str(self.dicom_port)],
            "storescp-%s.log" % self.tag)
        wait_for(lambda: dimse_echo(self), 30, "storescp (%s)" % self.tag,
                 self.proc)
        self.rss_start()
        return self

    def ensure_running(self):
        """Restart on the same port if the process has gone (the C-MOVE
        destination must outlive the whole query phase)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        code = self.proc.returncode if self.proc is not None else None
        log("WARNING: storescp (%s) had exited (status %s): restarting it "
            "on port %d" % (self.tag, code, self.dicom_port))
        if self.proc is not None:
            Procs.stop(self.proc)
        self.start(fresh=False, port=self.dicom_port)

    def count_instances(self, expected=None):
        n = 0
        for _dp, _dn, names in os.walk(self.data_dir):
            n += sum(1 for x in names if not x.startswith("."))
        return n


class Agora(Server):
    """`agora serve`, measured when `build/agora serve --help` exits 0.

    What it supports is probed at its first start (C-FIND/C-GET/C-MOVE by
    association negotiation, DICOMweb by GET /healthz); what it does not
    support yet shows as n/a.  Set AGORA_BENCH_CONFIG to pass --config,
    AGORA_BENCH_TOKEN (bearer) or AGORA_BENCH_USER / AGORA_BENCH_PASSWORD
    if its DICOMweb needs authentication."""
    name = "Agora"
    aet = "AGORA"
    strict = False            # n/a with the reason rather than fail the run
    exe = os.path.join(ROOT, "build", "agora")
    probed = None             # caps found at the first start of the run
    HTTP_PROBE_SECONDS = 5

    @classmethod
    def available(cls):
        if not os.access(cls.exe, os.X_OK):
            return False, "not built yet"
        try:
            r = subprocess.run([cls.exe, "serve", "--help"],
                               capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False, "not built yet"
        if r.returncode != 0:
            return False, "not built yet"
        return True, None

    def _help(self):
        try:
            return subprocess.run([self.exe, "serve", "--help"],
                                  capture_output=True, text=True,
                                  timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    @property
    def caps(self):
        return Agora.probed if Agora.probed is not None else \
            frozenset({"store", "echo"})

    def start(self, fresh=True):
        self._fresh_dir(fresh)
        if self.move_dest_port and fresh:
            # the C-MOVE destination is a known remote node
            run([self.exe, "node", "--data", self.data_dir, "add", MOVE_AET,
                 HOST, str(self.move_dest_port)], 30, "agora node add")
        self.dicom_port, self.http_port = free_port(), free_port()
        cmd = [self.exe, "serve", "--data", self.data_dir, "--aet", self.aet,
               "--listen", HOST, "--accept-unknown-ae",
               "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port), "--hl7-port", "0"]
        # Orthanc runs without authentication here too: like for like.
        if "--http-anonymous" in self._help():
            cmd.append("--http-anonymous")
        if os.environ.get("AGORA_BENCH_CONFIG"):
            cmd += ["--config", os.environ["AGORA_BENCH_CONFIG"]]
        self.proc = Procs.start(cmd, "agora-%s.log" % self.tag)
        wait_for(lambda: dimse_echo(self), 60, "Agora (%s)" % self.tag,
                 self.proc)
        if Agora.probed is None or "http" in Agora.probed:
            http = self._wait_http()
            if Agora.probed is None:
                caps = {"store", "echo"} | dimse.probe(
                    HOST, self.dicom_port, self.aet, SCU_AET)
                if http:
                    caps.add("http")
                Agora.probed = frozenset(caps)
                log("Agora supports: %s" % ", ".join(sorted(caps)))
            elif not http:
                raise BenchError("Agora's HTTP listener did not answer")
        self.rss_start()
        return self

    def _wait_http(self):
        deadline = time.time() + self.HTTP_PROBE_SECONDS
        while time.time() < deadline:
            try:
                if requests.get(self.web + "/healthz", timeout=2,
                                headers=self.http_auth()).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def count_instances(self, expected=None):
        limit = max(1000, (expected or 0) + 10)
        _, r = run([self.exe, "ls", "--data", self.data_dir, "--limit",
                    str(limit), "instances"], 120, "agora ls")
        lines = r.stdout.decode(errors="replace").splitlines()
        return max(0, len(lines) - 1)      # minus the header row

    def http_auth(self):
        h = {}
        if os.environ.get("AGORA_BENCH_TOKEN"):
            h["Authorization"] = "Bearer " + os.environ["AGORA_BENCH_TOKEN"]
        return h

    def requests_auth(self):
        if os.environ.get("AGORA_BENCH_USER"):
            return (os.environ["AGORA_BENCH_USER"],
                    os.environ.get("AGORA_BENCH_PASSWORD", ""))
        return None


def dimse_echo(server):
    with dimse.Association(HOST, server.dicom_port, server.aet, SCU_AET,
                           timeout=5) as a:
        a.echo()
    return True


def session_for(server):
    s = requests.Session()
    s.headers["Accept-Encoding"] = "identity"
    s.headers.update(server.http_auth())
    s.auth = server.requests_auth()
    return s


# ---------------------------------------------------------------------------
# corpora and queries

def corpus(preset, quick, list_files=True):
    args = argparse.Namespace(preset=preset, quick=quick, seed=1,
                              patients=None, studies=None, series=None,
                              instances=None, rows=None, cols=None,
                              modality=None, pixels=None)
    p = gen_corpus.resolve_params(args)
    out = os.path.join(CORPUS, p["preset"])
    t0 = time.time()
    m, made = gen_corpus.ensure(p, out, log=True)
    if made:
        log("generated corpus %s: %d instances, %.1f MB in %.1f s" % (
            p["preset"], m["instances_total"], m["bytes_total"] / 1e6,
            time.time() - t0))
    with open(os.path.join(out, "catalog.json")) as f:
        catalog = json.load(f)
    files = []
    for k in range(m["shards"] if list_files else 0):
        for dp, _dn, names in os.walk(os.path.join(out, "s%d" % k)):
            files += [os.path.join(dp, n) for n in names if n.endswith(".dcm")]
    files.sort()
    return {"name": preset, "dir": out, "manifest": m, "catalog": catalog,
            "files": files, "bytes": m["bytes_total"],
            "n": m["instances_total"]}


def month_range(y, mth):
    nxt = datetime.date(y + (mth == 12), mth % 12 + 1, 1)
    last = nxt - datetime.timedelta(days=1)
    return "%04d%02d01-%s" % (y, mth, last.strftime("%Y%m%d"))


def make_queries(cat, n_each):
    """n_each parameter sets per query kind, with the expected match count
    computed from the catalog (checked against every server's answers)."""
    rng = random.Random(7)
    studies = cat["studies"]
    patients = cat["patients"]
    fams = sorted({p["PatientName"].split("^")[0] for p in patients})
    months = sorted({s["StudyDate"][:6] for s in studies})
    out = {}
    qs = []
    for _ in range(n_each):
        pid = rng.choice(patients)["PatientID"]
        qs.append(({"PatientID": pid},
                   sum(1 for s in studies if s["PatientID"] == pid)))
    out["pid"] = qs
    qs = []
    for _ in range(n_each):
        fam = rng.choice(fams)
        qs.append(({"PatientName": fam + "*"},
                   sum(1 for s in studies
                       if s["PatientName"].startswith(fam))))
    out["name"] = qs
    qs = []
    qm = []
    for _ in range(n_each):
        ym = rng.choice(months)
        rngtxt = month_range(int(ym[:4]), int(ym[4:]))
        lo, hi = rngtxt.split("-")
        inmonth = [s for s in studies if lo <= s["StudyDate"] <= hi]
        qs.append(({"StudyDate": rngtxt}, len(inmonth)))
        qm.append(({"ModalitiesInStudy": "MR", "StudyDate": rngtxt},
                   sum(1 for s in inmonth if s["ModalitiesInStudy"] == "MR")))
    out["date"] = qs
    out["modality"] = qm
    return out


def stow_bodies(files):
    bodies = []
    for i in range(0, len(files), STOW_BATCH):
        parts = []
        for fn in files[i:i + STOW_BATCH]:
            with open(fn, "rb") as f:
                data = f.read()
            parts.append(b"--" + BOUNDARY.encode() +
                         b"\r\nContent-Type: application/dicom\r\n\r\n" +
                         data + b"\r\n")
        parts.append(b"--" + BOUNDARY.encode() + b"--\r\n")
        bodies.append((b"".join(parts), len(files[i:i + STOW_BATCH])))
    return bodies


# ---------------------------------------------------------------------------
# measurements

def storescu_cmd(server, paths):
    return ["storescu", "-aet", SCU_AET, "-aec", server.aet, "+sd", "+r",
            "+sp", "*.dcm", HOST, str(server.dicom_port)] + paths


def m_cstore(server, c, nassoc, timeout, res=None, tolerate=0):
    """C-STORE the corpus.  With tolerate > 0 (the index load), storescu
    goes on after a refused instance (-nh) and up to `tolerate` missing
    instances are a warning in the report, not a failure.  Returns the
    seconds (and sets server.loaded to the number stored)."""
    if nassoc == 1:
        cmds = [storescu_cmd(server, [c["dir"]])]
    else:
        cmds = [storescu_cmd(server, [os.path.join(c["dir"], "s%d" % k)])
                for k in range(nassoc)]
    if tolerate:
        cmds = [cmd[:1] + ["-nh"] + cmd[1:] for cmd in cmds]
    what = "storescu to %s" % server.name
    secs, errors = run_parallel(cmds, timeout, what, raise_errors=False)
    server.loaded = c["n"]
    if errors and not tolerate:
        raise BenchError("%s: %s" % (what, "; ".join(errors)))
    try:
        verify_count(server, c["n"])
        return secs
    except BenchError:
        if not tolerate:
            raise
    got = server.count_instances(c["n"])
    if got is None or c["n"] - got > tolerate:
        raise BenchError("%s: %s instances stored of %d: %s" % (
            what, got, c["n"], "; ".join(errors)[:300]))
    server.loaded = got
    first = " ".join(" ".join(errors).split())[:160]
    res.warnings.append(
        "%s refused %d of %d instances while loading the %s corpus (%s …; "
        "see bench/out/logs/): the figures after it use the %d stored" % (
            server.name, c["n"] - got, c["n"], c["name"], first, got))
    log("WARNING " + res.warnings[-1])
    return secs


def verify_count(server, expected):
    got = None
    for _ in range(50):          # storescp --fork children may lag a bit
        got = server.count_instances(expected)
        if got is None or got == expected:
            return
        time.sleep(0.1)
    raise BenchError("%s holds %s instances, expected %d" % (
        server.name, got, expected))


def m_stow(server, bodies, expected, timeout):
    s = session_for(server)
    url = server.dicomweb_root + "/studies"
    headers = {"Content-Type": 'multipart/related; type="application/dicom";'
               ' boundary=%s' % BOUNDARY,
               "Accept": "application/dicom+json"}
    t0 = time.perf_counter()
    for body, _n in bodies:
        r = s.post(url, data=body, headers=headers, timeout=timeout)
        if r.status_code not in (200, 202):
            raise BenchError("STOW-RS to %s: HTTP %d %s" % (
                server.name, r.status_code, r.text[:200]))
    secs = time.perf_counter() - t0
    s.close()
    verify_count(server, expected)
    return secs


def m_findscu(server, params, timeout):
    cmd = ["findscu", "-q", "-S", "-aet", SCU_AET, "-aec", server.aet,
           "-k", "QueryRetrieveLevel=STUDY"]
    for k in STUDY_KEYS:
        cmd += ["-k", "%s=%s" % (k, params[k]) if k in params else k]
    cmd += [HOST, str(server.dicom_port)]
    secs, _ = run(cmd, timeout, "findscu")
    return secs


def find_keys(params):
    keys = {"QueryRetrieveLevel": "STUDY"}
    for k in STUDY_KEYS:
        keys[k] = params.get(k, "")
    return keys


def m_qido(sess, server, params, timeout):
    # Build the query string by hand: '*' stays literal.  Orthanc's DICOMweb
    # plugin 1.7 does not percent-decode query values, so PatientName=A%2A
    # (what requests sends for "A*") matches nothing.
    qs = "&".join("%s=%s" % (k, urllib.parse.quote(str(v), safe="*-.^"))
                  for k, v in params.items())
    t0 = time.perf_counter()
    r = sess.get(server.dicomweb_root + "/studies?" + qs,
                 headers={"Accept": "application/dicom+json"},
                 timeout=timeout)
    secs = time.perf_counter() - t0
    if r.status_code == 204:
        return secs, 0
    if r.status_code != 200:
        raise BenchError("HTTP %d" % r.status_code)
    return secs, len(r.json())


def m_wado_series(sess, server, study, series, timeout):
    url = "%s/studies/%s/series/%s" % (server.dicomweb_root, study, series)
    t0 = time.perf_counter()
    # as stored, like OHIF asks (no transcoding on either side)
    r = sess.get(url, headers={"Accept": 'multipart/related; '
                               'type="application/dicom"; transfer-syntax=*'},
                 stream=True, timeout=timeout)
    if r.status_code != 200:
        raise BenchError("HTTP %d" % r.status_code)
    ttfb = None
    n = 0
    for chunk in r.iter_content(1 << 20):
        if ttfb is None:
            ttfb = time.perf_counter() - t0
        n += len(chunk)
    secs = time.perf_counter() - t0
    r.close()
    return secs, ttfb, n


def m_metadata(sess, server, study, series, timeout):
    url = "%s/studies/%s/series/%s/metadata" % (server.dicomweb_root, study,
                                                series)
    t0 = time.perf_counter()
    r = sess.get(url, headers={"Accept": "application/dicom+json"},
                 timeout=timeout)
    secs = time.perf_counter() - t0
    if r.status_code != 200:
        raise BenchError("HTTP %d" % r.status_code)
    return secs, len(r.json())


def m_rendered(sess, server, study, series, sop, accept, timeout):
    url = "%s/studies/%s/series/%s/instances/%s/frames/1/rendered" % (
        server.dicomweb_root, study, series, sop)
    t0 = time.perf_counter()
    r = sess.get(url, headers={"Accept": accept}, timeout=timeout)
    secs = time.perf_counter() - t0
    if r.status_code != 200 or not r.content:
        raise BenchError("HTTP %d" % r.status_code)
    return secs


def qr_keys(study, series):
    return ["-k", "QueryRetrieveLevel=SERIES",
            "-k", "StudyInstanceUID=%s" % study,
            "-k", "SeriesInstanceUID=%s" % series]


RETRIEVALS = 3      # C-GET and C-MOVE samples per rep (phase_query)


def m_cget(server, study, series, outdir, expected, timeout):
    if os.path.exists(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    cmd = ["getscu", "-S", "-aet", SCU_AET, "-aec", server.aet, "+B",
           "-od", outdir] + qr_keys(study, series) + \
        [HOST, str(server.dicom_port)]
    secs, _ = run(cmd, timeout, "getscu")
    n = len(os.listdir(outdir))
    if n != expected:
        raise BenchError("C-GET from %s: %d files, expected %d" % (
            server.name, n, expected))
    nbytes = sum(os.path.getsize(os.path.join(outdir, f))
                 for f in os.listdir(outdir))
    shutil.rmtree(outdir)
    return secs, nbytes


def m_cmove(server, dest, study, series, expected, timeout):
    dest.ensure_running()
    for f in os.listdir(dest.data_dir):
        os.unlink(os.path.join(dest.data_dir, f))
    cmd = ["movescu", "-S", "-aet", SCU_AET, "-aec", server.aet,
           "-aem", MOVE_AET] + qr_keys(study, series) + \
        [HOST, str(server.dicom_port)]
    secs, _ = run(cmd, timeout, "movescu")
    verify_count(dest, expected)
    nbytes = sum(os.path.getsize(os.path.join(dest.data_dir, f))
                 for f in os.listdir(dest.data_dir))
    return secs, nbytes


# ---------------------------------------------------------------------------
# results

class Results:
    def __init__(self):
        self.vals = {}      # (metric, target) -> list of samples
        self.notes = {}     # (metric, target) -> text (n/a reasons)
        self.extra = {}     # metric -> extra text (matches, sizes)
        self.errors = []
        self.warnings = []

    def add(self, metric, target, value):
        self.vals.setdefault((metric, target), []).append(value)

    def na(self, metric, target, why):
        self.notes.setdefault((metric, target), why)

    def get(self, metric, target):
        return self.vals.get((metric, target))


def pct(samples, p):
    s = sorted(samples)
    if not s:
        return None
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(x, digits=None):
    if x is None:
        return "—"
    if digits is not None:
        return "%.*f" % (digits, x)
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "%.1f" % x
    if x >= 1:
        return "%.2f" % x
    return "%.3f" % x


# Each row: key, label, unit, kind
#   kind "rate": samples are seconds for a fixed workload -> median
#   kind "lat": samples are seconds per operation -> p50 / p95 in ms
#   kind "ms": samples are seconds -> median in ms
#   kind "mb": samples are MB -> max
def build_rows(ctx):
    rows = []
    for cname in ("small", "large"):
        c = ctx["corpora"][cname]
        desc = "%s × %d×%d" % ("{:,}".format(c["n"]), c["manifest"]["rows"],
                               c["manifest"]["cols"])
        for nassoc in (1, 4):
            rows.append(("cstore.%s.%d" % (cname, nassoc),
                         "C-STORE ingest, %s corpus (%s), %d assoc%s" % (
                             cname, desc, nassoc, "s" if nassoc > 1 else ""),
                         "inst/s · MB/s ↑", ("rate", c["n"], c["bytes"])))
        rows.append(("stow.%s" % cname,
                     "STOW-RS ingest, %s corpus, batches of %d" % (
                         cname, STOW_BATCH),
                     "inst/s · MB/s ↑", ("rate", c["n"], c["bytes"])))
    ci = ctx["corpora"]["index"]
    rows.append(("cstore.index", "C-STORE load of the index corpus "
                 "(%s studies, %s instances), 4 assocs, 1 run" % (
                     "{:,}".format(ci["manifest"]["studies_total"]),
                     "{:,}".format(ci["n"])),
                 "inst/s · MB/s ↑", ("rate", ci["n"], ci["bytes"])))
    rows.append(("echo.held", "C-ECHO, one held association",
                 "ms p50 / p95 ↓", ("lat",)))
    for k, label in QUERY_KINDS:
        rows.append(("find.held.%s" % k, "C-FIND %s, held association" %
                     label, "ms p50 / p95 ↓", ("lat",)))
    for k, label in QUERY_KINDS:
        rows.append(("find.proc.%s" % k, "C-FIND %s, findscu per query "
                     "(incl. process start + association)" % label,
                     "ms p50 / p95 ↓", ("lat",)))
    for k, label in QUERY_KINDS:
        rows.append(("qido.%s" % k, "QIDO-RS %s" % label,
                     "ms p50 / p95 ↓", ("lat",)))
    rows.append(("qido.studylist", "QIDO-RS the OHIF study list (limit=101, "
                 "includefield, %s studies)" % "{:,}".format(
                     ci["manifest"]["studies_total"]),
                 "ms p50 / p95 ↓", ("lat",)))
    cl = ctx["corpora"]["large"]
    ldesc = "%d × %d×%d, %.0f MB" % (cl["n"], cl["manifest"]["rows"],
                                    cl["manifest"]["cols"],
                                    cl["bytes"] / 1e6)
    rows += [
        ("wado.series", "WADO-RS series retrieval (%s)" % ldesc, "MB/s ↑",
         ("mbps",)),
        ("wado.ttfb", "WADO-RS series, time to first byte", "ms ↓",
         ("ms",)),
        ("wado.metadata", "WADO-RS series /metadata (%d instances)" %
         cl["n"], "ms ↓", ("ms",)),
        ("wado.rendered.jpeg", "WADO-RS /rendered frame, image/jpeg "
         "(512×512)", "ms ↓", ("ms",)),
        ("wado.rendered.png", "WADO-RS /rendered frame, image/png "
         "(512×512)", "ms ↓", ("ms",)),
        ("cget.series", "C-GET series (getscu, %s)" % ldesc, "MB/s ↑",
         ("mbps",)),
        ("cmove.series", "C-MOVE series to a storescp (%s)" % ldesc,
         "MB/s ↑", ("mbps",)),
        ("rss.ingest", "peak RSS, ingest runs (C-STORE + STOW-RS)",
         "MB ↓", ("mb",)),
        ("rss.index", "peak RSS, loading the index corpus", "MB ↓",
         ("mb",)),
        ("rss.retrieve", "peak RSS, queries + retrievals (after restart)",
         "MB ↓", ("mb",)),
    ]
    return rows


def cell(res, key, target, kind):
    samples = res.get(key, target)
    if not samples:
        why = res.notes.get((key, target))
        return ("n/a (%s)" % why if why else "—"), None
    k = kind[0]
    if k == "rate":
        n, nbytes = kind[1], kind[2]
        secs = statistics.median(samples)
        return "%s · %s" % (fmt(n / secs), fmt(nbytes / 1e6 / secs)), \
            n / secs
    if k == "mbps":
        v = statistics.median(samples)
        return fmt(v), v
    if k == "lat":
        p50, p95 = pct(samples, 50) * 1e3, pct(samples, 95) * 1e3
        return "%s / %s" % (fmt(p50), fmt(p95)), -p50
    if k == "ms":
        v = statistics.median(samples) * 1e3
        return fmt(v), -v
    if k == "mb":
        v = max(samples)
        return fmt(v), -v
    return "?", None


def advantage(a, b):
    """How many times better Agora (a) is than b; values are signed so that
    larger is better (negated for latencies and memory)."""
    if a is None or b is None or a == 0 or b == 0:
        return "—"
    if a > 0:
        return "%.2f×" % (a / b)
    return "%.2f×" % (b / a)


def table(res, ctx):
    targets = ["Agora", "Orthanc", "storescp"]
    lines = [
        "| measurement | unit | Agora | Orthanc | storescp | "
        "Agora vs Orthanc | Agora vs storescp |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label, unit, kind in build_rows(ctx):
        cells = {}
        score = {}
        for t in targets:
            cells[t], score[t] = cell(res, key, t, kind)
        if all(c == "—" for c in cells.values()):
            continue
        extra = res.extra.get(key)
        if extra:
            label += " — " + extra
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, unit, cells["Agora"], cells["Orthanc"], cells["storescp"],
            advantage(score["Agora"], score["Orthanc"]),
            advantage(score["Agora"], score["storescp"])))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the run

def machine_info():
    info = {"nproc": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            info["ram"] = "%.1f GiB" % (kb / 1024 / 1024)
    except (OSError, ValueError):
        pass
    info["kernel"] = platform.release()
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass
    return info


def tool_versions():
    v = {}
    for tool in ("storescu", "dcmdump"):
        try:
            r = subprocess.run([tool, "--version"], capture_output=True,
                               text=True, timeout=10)
            line = r.stdout.splitlines()[0]
            v["DCMTK"] = line.split()[2] if len(line.split()) > 2 else line
            break
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f",
                            "${Package} ${Version}\\n", "orthanc",
                            "orthanc-dicomweb", "dcmtk", "python3-pydicom"],
                           capture_output=True, text=True, timeout=10)
        for line in r.stdout.splitlines():
            name, ver = line.split(None, 1)
            v["deb:" + name] = ver
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    import pydicom
    import numpy
    v["pydicom"] = pydicom.__version__
    v["numpy"] = numpy.__version__
    v["requests"] = requests.__version__
    v["python"] = platform.python_version()
    try:
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short",
                            "HEAD"], capture_output=True, text=True,
                           timeout=10)
        v["agora commit"] = r.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return v


def fail(res, metric, server, exc):
    """Record a failure the way try_measure does."""
    def boom():
        raise exc
    return try_measure(res, metric, server, boom)


def try_measure(res, metric, server, fn):
    """Run fn(); on failure, reference systems fail the run, Agora gets
    n/a with the reason."""
    try:
        return fn()
    except (BenchError, dimse.DimseError, requests.RequestException,
            OSError, ValueError) as e:
        msg = "%s: %s" % (metric, e)
        if server.strict:
            res.errors.append("%s %s" % (server.name, msg))
            log("ERROR %s %s" % (server.name, msg))
        else:
            log("%s %s (n/a)" % (server.name, msg))
        res.na(metric, server.name, "failed: %s" % str(e)[:60])
        return None


NOT_YET = {"find": "no C-FIND yet", "get": "no C-GET yet",
           "move": "no C-MOVE yet", "http": "no DICOMweb yet"}


def phase_ingest(res, ctx, targets, reps, timeout):
    bodies = {}
    for cname in ("small", "large"):
        bodies[cname] = stow_bodies(ctx["corpora"][cname]["files"])
    for rep in range(reps):
        for cname in ("small", "large"):
            c = ctx["corpora"][cname]
            for factory in targets:
                for mode, nassoc in (("cstore", 1), ("cstore", 4),
                                     ("stow", None)):
                    metric = "cstore.%s.%d" % (cname, nassoc) \
                        if mode == "cstore" else "stow.%s" % cname
                    server = factory("ingest")
                    if factory.failed:
                        res.na(metric, server.name, factory.failed)
                        continue
                    if mode == "stow" and not server.can("http"):
                        if server.name != "storescp":
                            res.na(metric, server.name, NOT_YET["http"])
                        continue
                    if not factory.start(server, res, metric):
                        continue
                    if mode == "stow" and not server.can("http"):
                        res.na(metric, server.name, NOT_YET["http"])
                        server.stop(kill=True)
                        continue
                    if mode == "cstore":
                        secs = try_measure(
                            res, metric, server,
                            lambda: m_cstore(server, c, nassoc, timeout))
                    else:
                        secs = try_measure(
                            res, metric, server,
                            lambda: m_stow(server, bodies[cname], c["n"],
                                           timeout))
                    rss = server.peak_rss_mb()
                    server.stop(kill=True)
                    # Untimed: what a run left unflushed (storescp never
                    # syncs) is written back now, not during the next
                    # server's run.
                    os.sync()
                    if secs is not None:
                        res.add(metric, server.name, secs)
                        res.add("rss.ingest", server.name, rss)
                        log("rep %d %-8s %-16s %7.2f s  %6.0f inst/s  "
                            "peak RSS %.0f MB" % (rep + 1, server.name,
                                                  metric, secs,
                                                  c["n"] / secs, rss))


# ---------------------------------------------------------------------------
# import: files already on disk into the archive

IMPORT_CLIENTS = 4            # parallel REST clients for Orthanc


def m_agora_import(c, data_dir, timeout):
    """`agora import --data DIR CORPUS`: the whole process, collection of
    the files and opening the store included.  Every instance must be
    reported stored (the corpus folder's two JSON files are skipped).
    The archive is made first, untimed: its 256 blob folders and schema
    are made once per archive, not once per import."""
    empty = data_dir + ".empty"
    os.makedirs(empty, exist_ok=True)
    run([Agora.exe, "import", "--data", data_dir, empty], timeout,
        "agora import (making the archive)")
    os.sync()
    secs, r = run([Agora.exe, "import", "--data", data_dir, c["dir"]],
                  timeout, "agora import")
    out = r.stdout.decode(errors="replace")
    m = re.search(r"^summary: (\d+) stored, (\d+) duplicates, (\d+) "
                  r"rejected", out, re.M)
    if m is None or int(m.group(1)) != c["n"]:
        raise BenchError("agora import stored %s of %d: %s" % (
            m.group(1) if m else "?", c["n"], out[-300:]))
    return secs


def m_orthanc_import(server, c, timeout, res):
    """Orthanc's own way to import files: POST /instances, one file per
    request (as its ImportDicomFiles.py does), IMPORT_CLIENTS clients at
    once with kept-alive connections.  A refused file is posted once more
    (Orthanc rarely answers 500 to parallel stores, see the index load)
    and the retry is reported as a warning."""
    files = c["files"]
    errors = []

    def client(k):
        s = session_for(server)
        for fn in files[k::IMPORT_CLIENTS]:
            with open(fn, "rb") as f:
                data = f.read()
            for attempt in (1, 2):
                r = s.post(server.web + "/instances", data=data,
                           timeout=timeout,
                           headers={"Content-Type": "application/dicom"})
                if r.status_code == 200:
                    break
                if attempt == 1:
                    res.warnings.append(
                        "Orthanc refused %s (HTTP %d) during the REST "
                        "import; posted again" % (fn, r.status_code))
                else:
                    errors.append("%s: HTTP %d" % (fn, r.status_code))
                    return
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,))
               for k in range(IMPORT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    secs = time.perf_counter() - t0
    if errors:
        raise BenchError("Orthanc REST import: %s" % "; ".join(errors[:3]))
    verify_count(server, c["n"])
    return secs


def m_copy_sync(c, dest, timeout):
    """The floor: `cp -r` of the corpus folder, then `sync -f` (syncfs of
    the destination's file system) so that the bytes are durable too.  No
    parse, no index, no per-file fsync."""
    secs1, _ = run(["cp", "-r", c["dir"], dest], timeout, "cp -r")
    secs2, _ = run(["sync", "-f", dest], timeout, "sync -f")
    return secs1 + secs2


def phase_import(res, ctx, factories, scratch_root, reps, timeout):
    """agora import vs Orthanc's REST import vs cp -r + sync, fresh
    destination each run, on the same scratch file system."""
    orthanc = next((f for f in factories if f.cls is Orthanc), None)
    agora_ok = any(f.cls is Agora for f in factories)
    n = 0
    for rep in range(reps):
        for cname in ("small", "large"):
            c = ctx["corpora"][cname]
            metric = "import.%s" % cname
            n += 1
            if agora_ok:
                d = os.path.join(scratch_root, "agora-import-%d" % n)
                secs = try_measure(res, metric, Agora(d, "import"),
                                   lambda: m_agora_import(c, d, timeout))
                if secs is not None:
                    res.add(metric, "Agora", secs)
                    log("rep %d Agora    %-16s %7.2f s  %6.0f inst/s" % (
                        rep + 1, metric, secs, c["n"] / secs))
            if orthanc is not None and not orthanc.failed:
                server = orthanc("import")
                if orthanc.start(server, res, metric):
                    secs = try_measure(
                        res, metric, server,
                        lambda: m_orthanc_import(server, c, timeout, res))
                    server.stop(kill=True)
                    if secs is not None:
                        res.add(metric, "Orthanc", secs)
                        log("rep %d Orthanc  %-16s %7.2f s  %6.0f inst/s" % (
                            rep + 1, metric, secs, c["n"] / secs))
            d = os.path.join(scratch_root, "cp-import-%d" % n)
            secs = try_measure(res, metric, CopySync(),
                               lambda: m_copy_sync(c, d, timeout))
            if secs is not None:
                res.add(metric, "cp", secs)
                log("rep %d cp+sync  %-16s %7.2f s  %6.0f inst/s" % (
                    rep + 1, metric, secs, c["n"] / secs))
            d = os.path.join(scratch_root, "dd-import-%d" % n)
            secs = try_measure(res, metric, DdFsync(),
                               lambda: m_dd_fsync(c, d, timeout))
            if secs is not None:
                res.add(metric, "dd", secs)


def m_dd_fsync(c, dest, timeout):
    """The issue's reference for large files: one sequential write of the
    corpus's byte count with `dd conv=fsync` (one file, one fsync)."""
    mb = max(1, int(round(c["bytes"] / (1 << 20))))
    secs, _ = run(["dd", "if=/dev/zero", "of=" + dest, "bs=1M",
                   "count=%d" % mb, "conv=fsync", "status=none"], timeout,
                  "dd conv=fsync")
    os.unlink(dest)
    return secs * c["bytes"] / (mb << 20)   # per the corpus's bytes


class DdFsync:
    """Stands for `dd conv=fsync` in the results (a reference)."""
    name = "dd"
    strict = True


class CopySync:
    """Stands for `cp -r` + `sync -f` in the results (a reference)."""
    name = "cp"
    strict = True


def import_rows(ctx):
    rows = []
    for cname in ("small", "large"):
        c = ctx["corpora"][cname]
        desc = "%s × %d×%d, %.0f MB" % ("{:,}".format(c["n"]),
                                        c["manifest"]["rows"],
                                        c["manifest"]["cols"],
                                        c["bytes"] / 1e6)
        rows.append(("import.%s" % cname, "import of the %s corpus (%s) "
                     "from files on disk" % (cname, desc),
                     "inst/s · MB/s ↑", ("rate", c["n"], c["bytes"])))
    return rows


def import_table(res, ctx):
    lines = [
        "| measurement | unit | Agora `import` | Orthanc REST import "
        "(%d clients) | `cp -r` + `sync -f` | `dd conv=fsync` of as many "
        "bytes | Agora vs Orthanc | Agora vs cp | Agora vs dd |"
        % IMPORT_CLIENTS,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label, unit, kind in import_rows(ctx):
        cells, score = {}, {}
        for t in ("Agora", "Orthanc", "cp", "dd"):
            cells[t], score[t] = cell(res, key, t, kind)
        if all(v == "—" for v in cells.values()):
            continue
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, unit, cells["Agora"], cells["Orthanc"], cells["cp"],
            cells["dd"], advantage(score["Agora"], score["Orthanc"]),
            advantage(score["Agora"], score["cp"]),
            advantage(score["Agora"], score["dd"])))
    return "\n".join(lines)


QUERY_METRICS = ["echo.held"] + \
    ["%s.%s" % (p, k) for p in ("find.held", "find.proc", "qido")
     for k, _ in QUERY_KINDS] + \
    ["wado.series", "wado.ttfb", "wado.metadata", "wado.rendered.jpeg",
     "wado.rendered.png", "cget.series", "cmove.series", "rss.retrieve"]


def phase_query(res, ctx, factory, reps, n_queries, timeout, move_dest):
    """Load the index corpus + the large series, restart, then measure
    queries and retrievals."""
    ci, cl = ctx["corpora"]["index"], ctx["corpora"]["large"]
    server = factory("index", move_dest_port=move_dest.dicom_port)
    name = server.name

    def skip_all(why):
        for m in ["cstore.index", "rss.index"] + QUERY_METRICS:
            res.na(m, name, why)

    if factory.failed:
        skip_all(factory.failed)
        return
    if not factory.start(server, res, "cstore.index"):
        skip_all(factory.failed or "failed to start")
        return
    log("%s: loading the index corpus (%d instances, 4 associations)" % (
        name, ci["n"]))
    secs = try_measure(res, "cstore.index", server,
                       lambda: m_cstore(server, ci, 4, timeout * 4, res,
                                        tolerate=max(1, ci["n"] // 1000)))
    if secs is None:
        server.stop()
        skip_all("index corpus not loaded")
        return
    res.add("cstore.index", name, secs)
    loaded_index = server.loaded
    log("%s: index corpus loaded in %.1f s (%.0f inst/s)" % (
        name, secs, ci["n"] / secs))
    ok = try_measure(res, "load large", server, lambda: run_parallel(
        [storescu_cmd(server, [os.path.join(cl["dir"], "s%d" % k)])
         for k in range(4)], timeout, "storescu (large series)"))
    res.add("rss.index", name, server.peak_rss_mb())
    server.stop()
    if ok is None:
        skip_all("large series not loaded")
        return
    # restart on the same data: retrieval memory measured on its own
    if not factory.start(server, res, "restart", fresh=False):
        skip_all("restart failed")
        return
    if isinstance(server, Orthanc):
        ctx["versions"].update(server.versions())
    expected_total = loaded_index + cl["n"]
    try_measure(res, "count after restart", server,
                lambda: verify_count(server, expected_total))
    queries = ctx["queries"]
    study = cl["catalog"]["studies"][0]
    st_uid = study["StudyInstanceUID"]
    se_uid = study["series"][0]["SeriesInstanceUID"]
    sops = [gen_corpus.uid([1, cl["manifest"]["code"], 3, 0, 0, 0, i + 1])
            for i in range(cl["n"])]
    sess = session_for(server)
    for cap, metrics in (
            ("find", ["find.held.%s" % k for k, _ in QUERY_KINDS] +
             ["find.proc.%s" % k for k, _ in QUERY_KINDS]),
            ("http", ["qido.%s" % k for k, _ in QUERY_KINDS] +
             ["qido.studylist", "wado.series", "wado.ttfb", "wado.metadata",
              "wado.rendered.jpeg", "wado.rendered.png"]),
            ("get", ["cget.series"]), ("move", ["cmove.series"])):
        if not server.can(cap):
            for m in metrics:
                res.na(m, name, NOT_YET[cap])
    measured_retrieval = False

    def held_echo():
        with dimse.Association(HOST, server.dicom_port, server.aet,
                               SCU_AET, timeout=timeout) as a:
            a.echo()            # warm-up
            for _ in range(n_queries * 5):
                t0 = time.perf_counter()
                a.echo()
                res.add("echo.held", name, time.perf_counter() - t0)
        return True

    def held_find(kind):
        with dimse.Association(HOST, server.dicom_port, server.aet,
                               SCU_AET, timeout=timeout) as a:
            for params, expected in queries[kind]:
                t0 = time.perf_counter()
                got = a.find(find_keys(params))
                res.add("find.held.%s" % kind, name,
                        time.perf_counter() - t0)
                if got != expected:
                    raise BenchError("%s: %d matches, expected %d" % (
                        params, got, expected))
        return True

    for rep in range(reps):
        try_measure(res, "echo.held", server, held_echo)
        if server.can("find"):
            for kind, _label in QUERY_KINDS:
                if try_measure(res, "find.held.%s" % kind, server,
                               lambda: held_find(kind)):
                    measured_retrieval = True
                for params, _expected in queries[kind]:
                    s = try_measure(res, "find.proc.%s" % kind, server,
                                    lambda: m_findscu(server, params,
                                                      timeout))
                    if s is None:
                        break
                    res.add("find.proc.%s" % kind, name, s)
        if server.can("http"):
            for kind, _label in QUERY_KINDS:
                for params, expected in queries[kind]:
                    r = try_measure(res, "qido.%s" % kind, server,
                                    lambda: m_qido(sess, server, params,
                                                   timeout))
                    if r is None:
                        break
                    measured_retrieval = True
                    res.add("qido.%s" % kind, name, r[0])
                    if r[1] != expected:
                        fail(res, "qido.%s" % kind, server, BenchError(
                            "%s: %d matches, expected %d" % (
                                params, r[1], expected)))
            # What OHIF 3.13 asks first (issue 6): the first page of
            # every study, four extra fields.
            for _ in range(5):
                r = try_measure(res, "qido.studylist", server,
                                lambda: m_qido(sess, server, STUDY_LIST,
                                               timeout))
                if r is None:
                    break
                res.add("qido.studylist", name, r[0])
                if r[1] == 0:
                    fail(res, "qido.studylist", server,
                         BenchError("the study list is empty"))
                    break
            r = try_measure(res, "wado.series", server,
                            lambda: m_wado_series(sess, server, st_uid,
                                                  se_uid, timeout))
            if r:
                secs, ttfb, nbytes = r
                if nbytes < cl["bytes"]:
                    fail(res, "wado.series", server, BenchError(
                        "only %d bytes" % nbytes))
                res.add("wado.series", name, nbytes / 1e6 / secs)
                res.add("wado.ttfb", name, ttfb)
            r = try_measure(res, "wado.metadata", server,
                            lambda: m_metadata(sess, server, st_uid, se_uid,
                                               timeout))
            if r:
                res.add("wado.metadata", name, r[0])
                if r[1] != cl["n"]:
                    fail(res, "wado.metadata", server, BenchError(
                        "%d instances in metadata" % r[1]))
            for accept, key in (("image/jpeg", "wado.rendered.jpeg"),
                                ("image/png", "wado.rendered.png")):
                for i in range(3):
                    sop = sops[(rep * 7 + i * 5 + len(sops) // 2) % len(sops)]
                    s = try_measure(res, key, server,
                                    lambda: m_rendered(sess, server, st_uid,
                                                       se_uid, sop, accept,
                                                       timeout))
                    if s is None:
                        break
                    res.add(key, name, s)
        # A series retrieval takes ~0.2-0.3 s, and one sample per rep
        # left C-GET's ratio at 1.27x in one full run and 1.50x in the
        # next: RETRIEVALS per rep, the median of all of them reported.
        for _ in range(RETRIEVALS if server.can("get") else 0):
            outdir = os.path.join(OUT, "cget-%s" % name.lower())
            r = try_measure(res, "cget.series", server,
                            lambda: m_cget(server, st_uid, se_uid, outdir,
                                           cl["n"], timeout))
            if not r:
                break
            measured_retrieval = True
            res.add("cget.series", name, r[1] / 1e6 / r[0])
        for _ in range(RETRIEVALS if server.can("move") else 0):
            r = try_measure(res, "cmove.series", server,
                            lambda: m_cmove(server, move_dest, st_uid,
                                            se_uid, cl["n"], timeout))
            if not r:
                break
            measured_retrieval = True
            res.add("cmove.series", name, r[1] / 1e6 / r[0])
        log("%s: query/retrieve rep %d done" % (name, rep + 1))
    sess.close()
    if measured_retrieval:
        res.add("rss.retrieve", name, server.peak_rss_mb())
    else:
        res.na("rss.retrieve", name, "nothing to retrieve with yet")
    server.stop()


class Factory:
    """Makes servers with a data folder of their own: deleting a finished
    server's folder (thousands of files) would take seconds between runs,
    so all of them are deleted at the end of the run.  Remembers a failure
    to start, so that a server that cannot start is not retried (and
    waited for) for every figure."""

    def __init__(self, cls, root):
        self.cls, self.root = cls, root
        self.count = 0
        self.failed = None

    def __call__(self, tag, **kw):
        self.count += 1
        return self.cls(os.path.join(self.root, "%s-%s-%d" % (
            self.cls.name.lower(), tag, self.count)), tag, **kw)

    def start(self, server, res, metric, fresh=True):
        try:
            server.start(fresh=fresh)
            return True
        except (BenchError, dimse.DimseError, OSError) as e:
            fail(res, metric, server, BenchError("start: %s" % e))
            server.stop(kill=True)
            self.failed = "failed to start"
            return False


class LoadSampler:
    """1-minute load average every 10 s: the machine may be shared."""

    def __init__(self):
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self._stop.wait(10):
            self.samples.append(os.getloadavg()[0])

    def summary(self):
        self._stop.set()
        self.samples.append(os.getloadavg()[0])
        return "mean %.1f, max %.1f" % (statistics.mean(self.samples),
                                       max(self.samples))


class Scratch:
    """The servers' data folder (bench/out/servers).  As root, a fresh ext4
    filesystem in a sparse loop file (bench/out/servers.img): every run
    starts on the same clean filesystem, and cleaning up 100,000+ stored
    files is an unmount instead of minutes of unlink() on a busy disk.
    fsync still reaches the disk (the loop driver flushes its backing
    file).  Otherwise a plain folder."""

    def __init__(self, root, use_loop=True):
        self.root = root
        self.img = root + ".img"
        self.use_loop = use_loop
        self.mounted = False

    def setup(self):
        self.teardown(keep=False)
        os.makedirs(self.root)
        if not (self.use_loop and os.geteuid() == 0 and
                shutil.which("mkfs.ext4") and shutil.which("mount")):
            return self
        try:
            with open(self.img, "wb") as f:
                f.truncate(64 << 30)
            run(["mkfs.ext4", "-q", "-F", "-E",
                 "lazy_itable_init=1,lazy_journal_init=1", self.img], 120,
                "mkfs.ext4")
            run(["mount", "-o", "loop,noinit_itable", self.img, self.root],
                60, "mount -o loop")
            self.mounted = True
        except (OSError, BenchError) as e:
            log("no loop filesystem for the servers' data (%s): using a "
                "plain folder" % e)
            if os.path.exists(self.img):
                os.unlink(self.img)
        return self

    def teardown(self, keep=False):
        if os.path.ismount(self.root):
            if keep:
                log("kept: %s (mounted; `umount %s && rm %s` to free)" % (
                    self.root, self.root, self.img))
                return
            try:
                run(["umount", self.root], 60, "umount")
            except BenchError:
                run(["umount", "-l", self.root], 60, "umount -l",
                    check=False)
        self.mounted = False
        if os.path.exists(self.img) and not os.path.ismount(self.root):
            os.unlink(self.img)
        if os.path.exists(self.root) and not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def bring_up_loopback():
    """In a fresh network namespace (bench/run uses `unshare -n`) lo is
    down; set IFF_UP with SIOCGIFFLAGS/SIOCSIFFLAGS."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny corpora, 1 run: a smoke test (CI)")
    ap.add_argument("--reps", type=int, help="runs per figure (default 3, "
                    "1 with --quick)")
    ap.add_argument("--no-parse", action="store_true",
                    help="skip the data-layer (bench/parse) section")
    ap.add_argument("--deadline", type=int,
                    help="abort after this many seconds (default 600 with "
                    "--quick, 3600 otherwise)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the servers' data folders in bench/out")
    ap.add_argument("--no-loop-fs", action="store_true",
                    help="keep the servers' data in a plain folder, not on "
                    "a loop-mounted scratch filesystem")
    ap.add_argument("--write-results", action="store_true",
                    help="also write bench/RESULTS.md")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    n_queries = 5 if args.quick else 10
    timeout = 120 if args.quick else 600
    deadline = args.deadline or (600 if args.quick else 3600)

    def on_signal(signum, _frame):
        raise SystemExit("bench: %s" % ("deadline of %d s reached" % deadline
                                        if signum == signal.SIGALRM else
                                        "signal %d" % signum))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                signal.SIGALRM):
        signal.signal(sig, on_signal)
    scratch = Scratch(os.path.join(OUT, "servers"),
                      use_loop=not args.no_loop_fs)

    def cleanup():
        Procs.kill_all()
        try:
            scratch.teardown(keep=args.keep)
        except (OSError, BenchError) as e:
            log("cleanup: %s" % e)
    atexit.register(cleanup)
    signal.alarm(deadline)

    if os.environ.get("AGORA_BENCH_NETNS") == "1":
        bring_up_loopback()
    # Debian's DCMTK (storescu, storescp, findscu, getscu, movescu, and the
    # DCMTK inside Orthanc) leaves Nagle on unless TCP_NODELAY=1: every
    # C-STORE then waits ~40 ms for a delayed ACK.
    os.environ["TCP_NODELAY"] = "1"

    for tool in ("Orthanc", "storescp", "storescu", "findscu", "getscu",
                 "movescu"):
        if shutil.which(tool) is None:
            sys.exit("bench: %s is not installed (bench/run installs orthanc,"
                     " orthanc-dicomweb and dcmtk with apt-get)" % tool)

    os.makedirs(OUT, exist_ok=True)
    servers_root = scratch.root
    scratch.setup()
    if os.path.exists(LOGS):
        shutil.rmtree(LOGS)
    os.makedirs(LOGS)

    log("mode: %s, %d run%s per figure, TCP_NODELAY=1, network namespace: "
        "%s" % ("quick" if args.quick else "full", reps,
                "s" if reps > 1 else "",
                "yes" if os.environ.get("AGORA_BENCH_NETNS") == "1" else
                "no"))
    ctx = {"corpora": {}, "versions": {}, "load": LoadSampler()}
    for name in ("small", "large", "index"):
        # the index corpus goes by folder (storescu +sd): no file list
        ctx["corpora"][name] = corpus(name, args.quick, name != "index")
    ctx["queries"] = make_queries(ctx["corpora"]["index"]["catalog"],
                                  n_queries)

    agora_ok, agora_why = Agora.available()
    ctx["versions"].update(tool_versions())    # commit of the tree measured
    factories = [Factory(Orthanc, servers_root),
                 Factory(Storescp, servers_root)]
    if agora_ok:
        factories.insert(0, Factory(Agora, servers_root))
        log("Agora: `agora serve` found, measuring it")
    else:
        log("Agora: %s (`build/agora serve --help` failed): column n/a" %
            agora_why)

    res = Results()
    phase_ingest(res, ctx, factories, reps, timeout)
    phase_import(res, ctx, factories, servers_root, reps, timeout)

    move_dest = Storescp(os.path.join(servers_root, "move-dest"), "movedest")
    move_dest.start()
    for f in factories:
        if f.cls is not Storescp:
            phase_query(res, ctx, f, reps, n_queries, timeout, move_dest)
    move_dest.stop()

    # matches per query kind (expected, checked against every server)
    for kind, _ in QUERY_KINDS:
        counts = [e for _p, e in ctx["queries"][kind]]
        txt = "%s–%s matches" % (min(counts), max(counts)) \
            if min(counts) != max(counts) else "%d matches" % counts[0]
        for prefix in ("find.held.", "find.proc.", "qido."):
            res.extra[prefix + kind] = txt

    if not agora_ok:
        for key, _l, _u, _k in build_rows(ctx) + import_rows(ctx):
            res.na(key, "Agora", "not built yet")

    parse_md = ""
    if not args.no_parse:
        import parse_bench
        try:
            parse_md = parse_bench.run_parse(args.quick, reps)["markdown"]
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            res.errors.append("parse benchmark: %s" % e)

    versions = ctx["versions"]

    md = report(res, ctx, args, reps, versions, parse_md, agora_ok,
                agora_why)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"samples": {"%s|%s" % k: v for k, v in res.vals.items()},
                   "notes": {"%s|%s" % k: v for k, v in res.notes.items()},
                   "errors": res.errors, "versions": versions,
                   "machine": machine_info()}, f, indent=1)
    if args.write_results:
        with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
            f.write(md)
    print(md)
    if res.errors:
        print("bench: %d measurement(s) FAILED:" % len(res.errors),
              file=sys.stderr)
        for e in res.errors:
            print("  " + e, file=sys.stderr)
        sys.exit(1)
    log("done: bench/out/results.md")


def report(res, ctx, args, reps, versions, parse_md, agora_ok, agora_why):
    mi = machine_info()
    cs = ctx["corpora"]
    lines = [
        "# Agora benchmark results",
        "",
        "%s run, %s, %d run%s per figure (medians; latencies are p50 / p95 "
        "over all queries of all runs)." % (
            "Quick (smoke test)" if args.quick else "Full",
            datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), reps,
            "s" if reps > 1 else ""),
        "",
        "**Machine:** %s cores, %s, %s RAM, Linux %s, Debian %s; 1-minute "
        "load average during the run: %s (anything above ~0.5 is other work "
        "on the machine and makes the figures noisy). Run time %.1f min." % (
            mi.get("nproc"), mi.get("cpu", "?"), mi.get("ram", "?"),
            mi.get("kernel", "?"), mi.get("debian", "?"),
            ctx["load"].summary(), (time.time() - T_START) / 60),
        "",
        "**Versions:** " + ", ".join("%s %s" % (k, v) for k, v in
                                     sorted(versions.items())) + ".",
        "",
        "**Corpora** (bench/gen_corpus.py, seed 1, Explicit VR Little "
        "Endian): small = {:,} instances in {:,} studies (%.0f MB); large = "
        "one CT series of {:,} instances (%.0f MB); index = {:,} studies, "
        "{:,} instances (%.0f MB).".format(
            cs["small"]["n"], cs["small"]["manifest"]["studies_total"],
            cs["large"]["n"], cs["index"]["manifest"]["studies_total"],
            cs["index"]["n"]) % (
            cs["small"]["bytes"] / 1e6, cs["large"]["bytes"] / 1e6,
            cs["index"]["bytes"] / 1e6),
        "",
        "**Network:** every server on 127.0.0.1%s; `TCP_NODELAY=1` exported "
        "to every DCMTK client, storescp and Orthanc (Debian's DCMTK "
        "otherwise waits for a delayed ACK: ~45 ms per C-STORE with one "
        "side set, ~90 ms with neither)." % (
            " inside a private network namespace (only loopback exists)"
            if os.environ.get("AGORA_BENCH_NETNS") == "1" else ""),
        "",
        "\"Agora vs X\": how many times better Agora is (>1× better, <1× "
        "worse): Agora/X for throughput, X/Agora for latency and memory. "
        "storescp only stores files (no index, no fsync), the floor for "
        "C-STORE ingest.",
        "",
        "## Servers",
        "",
        table(res, ctx),
        "",
    ]
    if not agora_ok:
        lines += ["Agora: n/a — `build/agora serve --help` does not exit 0 "
                  "(%s)." % agora_why, ""]
    elif Agora.probed is not None:
        lines += ["Agora (commit %s) answered: %s; not yet: %s." % (
            versions.get("agora commit", "?"),
            ", ".join(sorted(Agora.probed)),
            ", ".join(sorted(set(Server.caps) - Agora.probed)) or "—"), ""]
    lines += [
        "TODO: DIMSE latency without process start is measured with "
        "bench/dimse.py, a minimal Python SCU holding one association "
        "(Debian 12 has no pynetdicom); its own overhead is part of the "
        "figure (~0.1-0.2 ms per round trip). Agora's own DIMSE load client "
        "will come with its network layer (src/net) and replace it for all "
        "servers.",
        "",
    ]
    lines += [
        "## Import",
        "",
        import_table(res, ctx),
        "",
        "Files already on disk into the archive, fresh destination each run, "
        "on the servers' scratch file system: `agora import --data DIR "
        "CORPUS` (the whole process; every instance durable and indexed "
        "before it is reported stored; into an archive made just before, "
        "untimed, as its blob folders and schema are made once per "
        "archive); Orthanc's REST import (`POST /instances`, one file per "
        "request, %d clients at once; Orthanc fsyncs each file, "
        "SyncStorageArea); `cp -r` + `sync -f`, the floor (bytes copied and "
        "flushed, nothing parsed or indexed); `dd if=/dev/zero bs=1M "
        "conv=fsync` of the corpus's byte count, the disk's durable "
        "sequential write bandwidth." % IMPORT_CLIENTS,
        "",
    ]
    if parse_md:
        lines += ["## Data layer", "", parse_md]
    if res.warnings:
        lines += ["## Warnings", ""] + ["- " + w for w in res.warnings] + \
            [""]
    if res.errors:
        lines += ["## Failures", ""] + ["- " + e for e in res.errors] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
