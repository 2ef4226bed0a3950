"""The browser side of `agora serve` (src/web/static.c): the login UI at /,
the OHIF viewer at /viewer/ and its generated app-config.js.

Static serving is checked with raw HTTP against small directories made
here (types, ETag/304, gzip siblings, caching, HEAD, the single-page-app
fallback, security headers, path traversal in its encodings, symbolic links
out of the root).  Then a real browser: Debian's chromium driven by
playwright-core (tests/browser/viewer.js) opens the installed OHIF build
(tools/install-viewer.sh) on a stored CT study with a native and a JPEG-LS
series and must see its images drawn, with no failed request and no
Content-Security-Policy violation.

The browser signs in through the login page (a user is made with `agora
user add`), tries a wrong password first, and at the end signs out through
/ui/logout.html and checks the session is over; AGORA_VIEWER_LOGIN=0 runs
it with anonymous HTTP access (--http-anonymous) instead, =1 forces login.
"""
import gzip
import http.client
import json
import os
import subprocess
import time

import numpy as np
import pytest
import requests
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from test_dimse import AGORA, ROOT, Server, agora, free_port

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
VIEWER_DIR = os.path.join(ROOT, "third_party", "ohif", "current")
CHROMIUM = os.environ.get("AGORA_CHROMIUM", "/usr/bin/chromium")


def login_wanted():
    """AGORA_VIEWER_LOGIN=1/0 forces it; by default the browser signs in
    when the binary has users (`agora user`), as it has since issue 7."""
    v = os.environ.get("AGORA_VIEWER_LOGIN")
    if v in ("0", "1"):
        return v == "1"
    try:
        r = subprocess.run([AGORA, "user", "--help"], capture_output=True,
                           text=True, timeout=10)
    except OSError:
        return False   # no binary: the tests say so when they start it
    return r.returncode == 0 and "add NAME" in r.stdout + r.stderr


LOGIN = login_wanted()
HASHED = "app.bundle.0f6159c501addfe9.js"
PATIENT = "Viewer^Test"
STUDY = "1.2.826.0.1.3680043.10.1447.77.1"


def start(data, *extra):
    """agora serve with HTTP on a known port (anonymous unless the browser
    test signs in), waiting for HTTP to answer."""
    port = free_port()
    srv = Server(data, "--http-port", str(port), *extra, anonymous=not LOGIN)
    srv.base = f"http://127.0.0.1:{port}"
    srv.http_port = port
    deadline = time.time() + 10
    while True:
        try:
            requests.get(srv.base + "/healthz", timeout=1)
            return srv
        except requests.ConnectionError:
            if time.time() > deadline:
                srv.stop()
                raise
            time.sleep(0.05)


def raw_get(srv, path, headers=None, method="GET"):
    """One request with the path sent exactly as given (no normalisation,
    no decompression): (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# ---- static serving against directories made here ----------------------------

BUNDLE = b"console.log('agora static test');\n" * 200
INDEX = b"<!doctype html><title>fake viewer</title><p>index</p>\n"
UI_INDEX = b"<!doctype html><title>fake ui</title><p>login</p>\n"
SECRET = b"var secret = 'outside the root';\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    viewer = root / "viewer"
    ui = root / "ui"
    (viewer / "assets").mkdir(parents=True)
    ui.mkdir()
    (viewer / "index.html").write_bytes(INDEX)
    (viewer / HASHED).write_bytes(BUNDLE)
    (viewer / (HASHED + ".gz")).write_bytes(gzip.compress(BUNDLE))
    (viewer / "app.bundle.css").write_bytes(b"body { color: red }\n")
    (viewer / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (viewer / "logo.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    (viewer / "assets" / "icon.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (viewer / "font.woff2").write_bytes(b"wOF2")
    (viewer / "data.bin").write_bytes(b"\1\2\3")
    (viewer / ".agora-install").write_text("secret\n")
    (viewer / "app-config.js").write_text("window.config = {bundle: 1};\n")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.js").write_bytes(SECRET)
    os.symlink(outside / "secret.js", viewer / "link_out.js")
    os.symlink("../outside", viewer / "dir_out")
    os.symlink("/etc/passwd", viewer / "passwd.txt")
    os.symlink("index.html", viewer / "link_in.html")
    os.mkfifo(viewer / "fifo.js")
    (ui / "index.html").write_bytes(UI_INDEX)
    (ui / "login.js").write_bytes(b"'use strict';\n")
    srv = start(str(root / "data"), "--viewer-dir", str(viewer),
                "--ui-dir", str(ui))
    srv.viewer = viewer
    yield srv
    assert srv.stop() == 0


def test_types_and_security_headers(site):
    want = {
        "/viewer/": "text/html; charset=utf-8",
        "/viewer/" + HASHED: "text/javascript; charset=utf-8",
        "/viewer/app.bundle.css": "text/css; charset=utf-8",
        "/viewer/0ddf166f7a343eda.wasm": "application/wasm",
        "/viewer/logo.svg": "image/svg+xml",
        "/viewer/assets/icon.png": "image/png",
        "/viewer/font.woff2": "font/woff2",
        "/viewer/data.bin": "application/octet-stream",
        "/": "text/html; charset=utf-8",
        "/ui/login.js": "text/javascript; charset=utf-8",
    }
    for path, ctype in want.items():
        st, h, body = raw_get(site, path)
        assert st == 200, path
        assert h["content-type"] == ctype, path
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert "default-src 'self'" in csp and "'unsafe-inline'" not in \
            csp.split("script-src")[1].split(";")[0], path
    # The UI's policy is the strict one: no eval, no inline styles.
    ui_csp = raw_get(site, "/")[1]["content-security-policy"]
    assert "unsafe" not in ui_csp
    viewer_csp = raw_get(site, "/viewer/")[1]["content-security-policy"]
    assert "'wasm-unsafe-eval'" in viewer_csp and "blob:" in viewer_csp


def test_bodies_are_the_files(site):
    assert raw_get(site, "/viewer/")[2] == INDEX
    assert raw_get(site, "/viewer/index.html")[2] == INDEX
    assert raw_get(site, "/viewer/" + HASHED)[2] == BUNDLE
    assert raw_get(site, "/")[2] == UI_INDEX
    assert raw_get(site, "/ui/")[2] == UI_INDEX
    assert raw_get(site, "/viewer/link_in.html")[2] == INDEX   # link inside


def test_cache_control(site):
    assert raw_get(site, "/viewer/" + HASHED)[1]["cache-control"] == \
        "public, max-age=31536000, immutable"
    assert "immutable" in raw_get(site, "/viewer/0ddf166f7a343eda.wasm")[1][
        "cache-control"]
    for path in ["/viewer/", "/viewer/index.html", "/viewer/app.bundle.css",
                 "/viewer/app-config.js", "/"]:
        assert raw_get(site, path)[1]["cache-control"] == "no-cache", path


def test_etag_and_304(site):
    st, h, _ = raw_get(site, "/viewer/app.bundle.css")
    etag = h["etag"]
    assert st == 200 and etag.startswith('"') and etag.endswith('"')
    for inm in [etag, "W/" + etag, '"other", ' + etag, "*"]:
        st, h2, body = raw_get(site, "/viewer/app.bundle.css",
                               {"If-None-Match": inm})
        assert st == 304 and body == b"", inm
        assert h2["etag"] == etag and h2["cache-control"] == "no-cache"
    st, _, body = raw_get(site, "/viewer/app.bundle.css",
                          {"If-None-Match": '"other"'})
    assert st == 200 and body == b"body { color: red }\n"
    # HEAD gets the same validators and no body.
    st, h3, body = raw_get(site, "/viewer/app.bundle.css", method="HEAD")
    assert st == 200 and body == b"" and h3["etag"] == etag
    assert h3["content-length"] == str(len(b"body { color: red }\n"))


def test_gzip_sibling(site):
    path = "/viewer/" + HASHED
    st, h, body = raw_get(site, path, {"Accept-Encoding": "gzip, deflate, br"})
    assert st == 200 and h["content-encoding"] == "gzip"
    assert gzip.decompress(body) == BUNDLE
    assert h["vary"] == "Accept-Encoding"
    assert h["content-type"] == "text/javascript; charset=utf-8"
    gz_etag = h["etag"]
    for ae in [None, "identity", "gzip;q=0", "br", "*;q=0"]:
        st, h2, body = raw_get(site, path, {"Accept-Encoding": ae} if ae else {})
        assert st == 200 and "content-encoding" not in h2, ae
        assert body == BUNDLE and h2["etag"] != gz_etag
    st, h, body = raw_get(site, path, {"Accept-Encoding": "*"})
    assert h.get("content-encoding") == "gzip"
    # A 304 for the compressed variant keeps its own tag.
    st, _, _ = raw_get(site, path, {"Accept-Encoding": "gzip",
                                    "If-None-Match": gz_etag})
    assert st == 304
    # No sibling: sent as is.
    st, h, _ = raw_get(site, "/viewer/app.bundle.css", {"Accept-Encoding": "gzip"})
    assert "content-encoding" not in h and h["vary"] == "Accept-Encoding"


def test_spa_fallback_and_redirects(site):
    # OHIF's client-side routes get index.html ...
    for path in ["/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/local",
                 "/viewer/segmentation/x"]:
        st, h, body = raw_get(site, path)
        assert st == 200 and body == INDEX, path
        assert h["cache-control"] == "no-cache"
    # ... a missing asset does not, nor does the UI.
    for path in ["/viewer/missing.js", "/viewer/assets/none.png", "/ui/nothing",
                 "/ui/none.js"]:
        st, h, body = raw_get(site, path)
        assert st == 404 and h["content-type"] == "application/json", path
        assert json.loads(body)["error"] == "not found"
    st, h, _ = raw_get(site, "/viewer")
    assert st == 301 and h["location"] == "/viewer/"
    st, h, _ = raw_get(site, "/ui")
    assert st == 301 and h["location"] == "/ui/"
    # Never a protocol-relative Location ("//viewer/" would leave the site).
    st, h, _ = raw_get(site, "//viewer")
    assert st == 301 and h["location"] == "/viewer/"


def test_traversal_and_links_are_refused(site):
    # Each of these names a file (it has an extension) or is refused before
    # any lookup: 400 (server.c: "..", ".", backslash after decoding) or
    # 404 (static.c: not a plain name, outside the root, not a regular file).
    refused = [
        "/viewer/../../etc/passwd", "/viewer/%2e%2e/%2e%2e/etc/passwd",
        "/viewer/%2E%2E/%2E%2E/etc/passwd", "/viewer/..%2f..%2fetc%2fpasswd",
        "/viewer/..%2F..%2Fetc%2Fpasswd", "/viewer/%252e%252e/etc/passwd",
        "/viewer/..\\..\\etc\\passwd", "/viewer/%5c..%5c..%5cetc%5cpasswd",
        "/ui/../../etc/passwd", "/ui/%2e%2e/%2e%2e/etc/passwd",
        "/viewer/./index.html", "/viewer/link_out.js", "/viewer/passwd.txt",
        "/viewer/dir_out/secret.js", "/viewer/assets/../../outside/secret.js",
        "/viewer/%2e%2e/outside/secret.js", "/viewer/.agora-install",
        "/viewer/fifo.js", "/viewer/..;/outside/secret.js",
        "/viewer/%2e%2e%2foutside%2fsecret.js", "/ui/%2e%2e/viewer/index.html",
    ]
    for path in refused:
        st, _, body = raw_get(site, path)
        assert st in (400, 404), path
        assert b"root:" not in body and SECRET not in body, path
    # Extensionless paths under /viewer/ that lead nowhere get the app's
    # page (client-side routes), never the file they aim at; a NUL ends
    # the decoded path (libmicrohttpd), which is then an ordinary one.
    for path in ["/viewer//etc/passwd", "/viewer/%2fetc%2fpasswd",
                 "/viewer/dir_out", "/viewer/%00/../../etc/passwd",
                 "/viewer/index.html%00.png", "/viewer/%00",
                 "/viewer/dir_out/secret"]:
        st, _, body = raw_get(site, path)
        assert st in (200, 400, 404), path
        assert st != 200 or body == INDEX, path


def test_generated_app_config(site):
    st, h, body = raw_get(site, "/viewer/app-config.js")
    assert st == 200 and h["content-type"] == "text/javascript; charset=utf-8"
    assert b"bundle: 1" not in body   # generated, not the directory's file
    # Evaluate it as the browser would (node is what installs the viewer).
    js = ("const window = {location: {origin: 'http://agora.test'}};\n" +
          body.decode() +
          "\nprocess.stdout.write(JSON.stringify(window.config));")
    r = subprocess.run(["node", "-e", js], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["routerBasename"] == "/viewer"
    assert cfg["defaultDataSourceName"] == "agora"
    (ds,) = cfg["dataSources"]
    assert ds["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    c = ds["configuration"]
    assert c["qidoRoot"] == c["wadoRoot"] == "http://agora.test/dicom-web"
    assert c["wadoUriRoot"] == "http://agora.test/wado"
    for flag in ["qidoSupportsIncludeField", "enableStudyLazyLoad",
                 "supportsFuzzyMatching", "supportsWildcard",
                 "omitQuotationForMultipartRequest"]:
        assert c[flag] is True, flag
    assert c["dicomUploadEnabled"] is False
    assert c["imageRendering"] == c["thumbnailRendering"] == "wadors"
    assert c["requestOptions"] == {}   # no credentials in the file


def test_viewer_not_installed(tmp_path):
    srv = start(str(tmp_path / "data"), "--viewer-dir",
                str(tmp_path / "nowhere"), "--ui-dir", str(tmp_path / "nowhere"))
    try:
        for path in ["/viewer/", "/viewer/app.bundle.js", "/viewer/viewer"]:
            st, h, body = raw_get(srv, path)
            assert st == 404 and h["content-type"] == "application/json"
            err = json.loads(body)
            assert err["error"] == "viewer not installed"
            assert "tools/install-viewer.sh" in err["detail"]
        st, _, body = raw_get(srv, "/")
        assert st == 404 and "--ui-dir" in json.loads(body)["detail"]
        # The rest of the server is unaffected.
        assert raw_get(srv, "/healthz")[0] == 200
    finally:
        assert srv.stop() == 0


# ---- the installed viewer in a real browser ------------------------------------

def require_viewer():
    if not os.path.isfile(os.path.join(VIEWER_DIR, "index.html")):
        pytest.fail("the OHIF viewer is not installed: run "
                    "tools/install-viewer.sh", pytrace=False)


def require_browser():
    require_viewer()
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules",
                                       "playwright-core", "package.json")):
        pytest.fail("playwright-core is missing: run tools/install-viewer.sh "
                    "--test", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(tools/install-deps.sh --test)", pytrace=False)


def ct_slice(series, number, z):
    """A 64x64 CT slice: a water disc with a bone rod that moves with z."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = f"{series}.{number}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    d = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    d.SOPClassUID = meta.MediaStorageSOPClassUID
    d.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    d.SpecificCharacterSet = "ISO_IR 192"
    d.PatientName = PATIENT
    d.PatientID = "VIEW-1"
    d.PatientBirthDate = "19700101"
    d.PatientSex = "O"
    d.StudyInstanceUID = STUDY
    d.StudyDate = "20250301"
    d.StudyTime = "090000"
    d.StudyID = "1"
    d.AccessionNumber = "VIEW1"
    d.ReferringPhysicianName = ""
    d.StudyDescription = "Viewer test"
    d.SeriesInstanceUID = series
    d.SeriesNumber = int(series.rsplit(".", 1)[1])
    d.SeriesDescription = "native" if d.SeriesNumber == 1 else "JPEG-LS"
    d.Modality = "CT"
    d.FrameOfReferenceUID = STUDY + ".9"
    d.InstanceNumber = number
    d.ImagePositionPatient = [-32.0, -32.0, float(z)]
    d.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    d.PixelSpacing = [1.0, 1.0]
    d.SliceThickness = 2.0
    d.SamplesPerPixel = 1
    d.PhotometricInterpretation = "MONOCHROME2"
    d.Rows = d.Columns = 64
    d.BitsAllocated = 16
    d.BitsStored = 16
    d.HighBit = 15
    d.PixelRepresentation = 1
    d.RescaleIntercept = -1024
    d.RescaleSlope = 1
    d.WindowCenter = 40
    d.WindowWidth = 400
    y, x = np.mgrid[0:64, 0:64]
    img = np.zeros((64, 64), np.int16)                     # air: -1024 HU
    img[(x - 32) ** 2 + (y - 32) ** 2 < 28 ** 2] = 1024    # water: 0 HU
    img[(x - 20 - 2 * number) ** 2 + (y - 30) ** 2 < 36] = 1824   # bone
    img += (x // 8).astype(np.int16)                       # a gentle ramp
    d.PixelData = img.tobytes()
    d.is_little_endian = True
    d.is_implicit_VR = False
    return d


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A data folder holding one CT study: series 1 native, series 2 the
    same slices in JPEG-LS (DCMTK's dcmcjpls), so the viewer's codecs run."""
    root = tmp_path_factory.mktemp("viewer")
    src = root / "src"
    src.mkdir()
    for n in range(1, 5):
        ct_slice(f"{STUDY}.1", n, 2 * n).save_as(str(src / f"n{n}.dcm"))
        raw = root / f"raw{n}.dcm"
        ct_slice(f"{STUDY}.2", n, 2 * n).save_as(str(raw))
        r = subprocess.run(["dcmcjpls", str(raw), str(src / f"j{n}.dcm")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    data = str(root / "data")
    out = agora("import", "--data", data, str(src)).stdout
    assert "8 stored" in out, out
    login = None
    if LOGIN:
        password = "viewer-test-" + os.urandom(6).hex()
        r = subprocess.run([AGORA, "user", "--data", data, "add",
                            "viewer-test", "--role", "admin",
                            "--password-stdin"], input=password + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        login = ("viewer-test", password)
    return data, root, login


def test_default_dirs_are_the_installed_ones(archive):
    """Without --viewer-dir/--ui-dir, a binary in a build folder of the
    source tree serves web/ui and third_party/ohif/current."""
    require_viewer()
    data, _, _ = archive
    srv = start(data)
    try:
        st, _, body = raw_get(srv, "/")
        assert st == 200 and b'<form id="login"' in body
        assert raw_get(srv, "/ui/login.js")[0] == 200
        st, h, body = raw_get(srv, "/viewer/")
        assert st == 200 and b"/viewer/app.bundle." in body
        # The bundle was rewritten for /viewer/ at install time, and its
        # inline scripts moved out (the policy has no 'unsafe-inline').
        assert b'window.PUBLIC_URL="/"' not in body and b"<script>" not in body
        assert "'unsafe-eval'" in h["content-security-policy"]
        st, h, _ = raw_get(srv, "/viewer/app-config.js")
        assert st == 200 and h["cache-control"] == "no-cache"
    finally:
        assert srv.stop() == 0


def test_viewer_in_chromium(archive, tmp_path):
    require_browser()
    data, root, login = archive
    srv = start(data)
    shot = str(root / "viewer.png")
    cmd = ["node", os.path.join(BROWSER_DIR, "viewer.js"), "--base", srv.base,
           "--patient", "Viewer, Test", "--series", "2", "--screenshot", shot]
    env = dict(os.environ)
    if login is not None:
        cmd += ["--login", login[0]]
        env["AGORA_BROWSER_PASSWORD"] = login[1]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env=env)
        me = requests.get(srv.base + "/api/v1/me", timeout=10).status_code
    finally:
        assert srv.stop() == 0
    assert r.stdout.strip(), f"viewer.js printed nothing: {r.stderr[-2000:]}"
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["ok"], f"browser run failed after {rep['steps']}: {rep.get('error')}"
    assert rep["login_page"] == {"title": "Agora — sign in", "form": 1}
    if login is not None:
        # A wrong password first: the page shows the server's detail.
        assert rep["login_error_status"] == 401
        assert rep["login_error"] and \
            rep["login_error"] == rep["login_error_detail"]
        # /ui/logout.html ended the session: nothing opens with it now.
        assert rep["steps"][-2:] == ["logged out", "back to the study"]
        assert rep["after_logout"] == {"me": 401, "qido": 401}
        # ... and the viewer's link led to the login page, which led back.
        assert rep["relogin_next"] == rep["viewer_url"]
    else:
        # Anonymous HTTP: the login page sees a valid "session" (GET
        # /api/v1/me is 200) and goes straight on to the viewer.
        assert rep["login_skipped"] == (me == 200)
    assert rep["study_list_url"] == "/viewer/"
    assert rep["viewer_url"].startswith(f"/viewer/viewer?StudyInstanceUIDs={STUDY}")
    assert rep["failed_requests"] == [], rep["failed_requests"]
    assert rep["csp_violations"] == [], rep["csp_violations"]
    assert rep["console_errors"] == [], rep["console_errors"]
    # The viewport shows an image: many grey levels, a lit disc.
    best = max(rep["viewport"], key=lambda v: v["distinct"])
    assert best["distinct"] >= 16 and 0.2 < best["lit"] < 0.95, rep["viewport"]
    # Both series' thumbnails were decoded and drawn (JPEG-LS needs the
    # viewer's wasm codec, and so the policy's eval allowances).
    assert len(rep["thumbnails"]) == 2
    assert all(t["distinct"] >= 8 for t in rep["thumbnails"]), rep["thumbnails"]
    print("browser run: %.1f s, steps at %s s" % (rep["seconds"],
                                                  rep["step_seconds"]))
