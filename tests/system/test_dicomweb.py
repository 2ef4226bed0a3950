"""DICOMweb (PS3.18) with `requests` against the running binary: QIDO-RS,
WADO-RS, STOW-RS, plus /healthz, /metrics and hostile requests."""
import email.parser
import io
import json
import os
import re
import time

import pydicom
import pytest
import requests

from test_dimse import Server, agora, free_port
from test_find import make_corpus

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
STUDY = "1.2.826.0.1.3680043.10.1447.99.5.{}"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    src = root / "src"
    src.mkdir()
    make_corpus(str(src))
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    port = free_port()
    srv = Server(data, "--http-port", str(port))
    srv.base = f"http://127.0.0.1:{port}"
    srv.src = str(src)
    yield srv
    srv.stop()


def qido(web, path, **params):
    r = requests.get(web.base + "/dicom-web" + path, params=params, timeout=30)
    return r


def values(results, tag):
    return [m.get(tag, {}).get("Value", [None])[0] for m in results]


def parse_multipart(r):
    ct = r.headers["Content-Type"]
    boundary = re.search(r"boundary=\"?([^\";]+)", ct).group(1).encode()
    parts = []
    for chunk in r.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        parts.append((head.decode(), body[:-2] if body.endswith(b"\r\n") else body))
    return parts


def test_health_and_metrics(web):
    assert requests.get(web.base + "/healthz", timeout=10).json() == {"status": "ok"}
    m = requests.get(web.base + "/metrics", timeout=10).text
    assert re.search(r"^agora_instances 10$", m, re.M), m


def test_qido_studies(web):
    r = qido(web, "/studies")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/dicom+json")
    res = r.json()
    assert len(res) == 4
    ds = pydicom.Dataset.from_json(res[0])
    assert ds.StudyInstanceUID.startswith("1.2.826.0.1.3680043.10.1447.99.5.")


def test_qido_filters(web):
    assert len(qido(web, "/studies", PatientID="P1").json()) == 2
    assert len(qido(web, "/studies", **{"00100020": "P1"}).json()) == 2
    assert len(qido(web, "/studies", PatientName="Smith*").json()) == 3
    assert len(qido(web, "/studies", PatientName="smith*", fuzzymatching="true").json()) == 3
    assert len(qido(web, "/studies", StudyDate="20210101-20211231").json()) == 2
    assert len(qido(web, "/studies", ModalitiesInStudy="CT").json()) == 2
    both = f"{STUDY.format(1)}\\{STUDY.format(4)}"
    assert len(qido(web, "/studies", StudyInstanceUID=both).json()) == 2
    r = qido(web, "/studies", PatientName="Müller*")
    assert values(r.json(), "00100010")[0] == {"Alphabetic": "Müller^Jürgen"}


def test_qido_nested_and_levels(web):
    st = STUDY.format(3)
    assert len(qido(web, f"/studies/{st}/series").json()) == 2
    assert len(qido(web, f"/studies/{st}/instances").json()) == 4
    assert len(qido(web, f"/studies/{st}/series/{st}.1/instances").json()) == 2
    assert len(qido(web, "/series", Modality="CT").json()) == 3
    assert len(qido(web, "/instances", PatientID="P3").json()) == 1


def test_qido_limit_offset_warning(web):
    r = qido(web, "/studies", limit=2)
    assert len(r.json()) == 2 and "Warning" in r.headers
    r2 = qido(web, "/studies", limit=2, offset=2)
    assert len(r2.json()) == 2 and "Warning" not in r2.headers
    ids = values(r.json(), "0020000D") + values(r2.json(), "0020000D")
    assert len(set(ids)) == 4
    assert "Warning" not in qido(web, "/studies").headers


def test_qido_bad_requests(web):
    r = qido(web, "/studies", NoSuchKeyword="x")
    assert r.status_code == 400 and "error" in r.json()
    assert qido(web, "/studies", limit="many").status_code == 400
    assert qido(web, "/studies", StudyDate="2021x").status_code == 400
    for v in ["' OR 1=1 --", "%", "_", "\\"]:
        r = qido(web, "/studies", PatientID=v)
        assert r.status_code in (200, 400) and (r.status_code == 400 or r.json() == [])


def stored_blob_bytes(web, uid):
    for dp, _, fs in os.walk(os.path.join(web.data, "blobs")):
        for f in fs:
            p = os.path.join(dp, f)
            if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == uid:
                return open(p, "rb").read()
    return None


def test_wado_study_series_instance(web):
    st = STUDY.format(1)
    r = requests.get(f"{web.base}/dicom-web/studies/{st}", timeout=30,
                     headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    parts = parse_multipart(r)
    assert len(parts) == 3
    for head, body in parts:
        assert "application/dicom" in head
        d = pydicom.dcmread(io.BytesIO(body))
        assert body == stored_blob_bytes(web, d.SOPInstanceUID)
    r = requests.get(f"{web.base}/dicom-web/studies/{st}/series/{st}.1/instances/{st}.1.2",
                     timeout=30)
    assert len(parse_multipart(r)) == 1


def test_wado_unknown_and_bad_uids(web):
    assert requests.get(f"{web.base}/dicom-web/studies/1.2.3.4.5", timeout=10).status_code == 404
    assert requests.get(f"{web.base}/dicom-web/studies/not-a-uid", timeout=10).status_code == 400
    r = requests.get(f"{web.base}/dicom-web/studies/{STUDY.format(1)}", timeout=10,
                     headers={"Accept": "image/png"})
    assert r.status_code == 406


def test_metadata(web):
    st = STUDY.format(3)
    r = requests.get(f"{web.base}/dicom-web/studies/{st}/series/{st}.2/metadata", timeout=30)
    assert r.status_code == 200
    docs = r.json()
    assert len(docs) == 2
    ds = pydicom.Dataset.from_json(docs[0], bulk_data_uri_handler=lambda *a: b"")
    assert ds.SeriesInstanceUID == f"{st}.2"
    assert "BulkDataURI" in docs[0]["7FE00010"]
    assert docs[0]["7FE00010"]["BulkDataURI"].startswith(f"/dicom-web/studies/{st}/series/")
    assert len(requests.get(f"{web.base}/dicom-web/studies/{st}/metadata", timeout=30).json()) == 4
    assert requests.get(f"{web.base}/dicom-web/studies/1.2.3/metadata", timeout=10).status_code == 404


def multipart_body(files, boundary="XbX9bX"):
    out = b""
    for f in files:
        out += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        out += open(f, "rb").read() + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_then_wado_identical(web, tmp_path):
    files = [os.path.join(SAMPLES, n) for n in ("CT_small.dcm", "MR_small.dcm")]
    body, ct = multipart_body(files)
    r = requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                      headers={"Content-Type": ct, "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    res = pydicom.Dataset.from_json(r.json())
    assert len(res.ReferencedSOPSequence) == 2
    for f in files:
        d = pydicom.dcmread(f)
        w = requests.get(f"{web.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
                         f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}", timeout=30)
        (_, got), = parse_multipart(w)
        assert got == open(f, "rb").read()


def test_stow_partial_failure_and_study_mismatch(web):
    bad = os.path.join(SAMPLES, "MR_truncated.dcm")
    good = os.path.join(SAMPLES, "rtplan.dcm")
    body, ct = multipart_body([good, bad])
    r = requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                      headers={"Content-Type": ct})
    assert r.status_code == 202, r.text
    res = pydicom.Dataset.from_json(r.json())
    assert len(res.FailedSOPSequence) == 1 and res.FailedSOPSequence[0].FailureReason == 0xC000
    body, ct = multipart_body([os.path.join(SAMPLES, "rtstruct.dcm")])
    r = requests.post(web.base + "/dicom-web/studies/1.2.3.4", data=body, timeout=60,
                      headers={"Content-Type": ct})
    assert r.status_code == 409, r.text


def series_files(tmp_path, study, n):
    """n copies of CT_small as instances 1..n of series {study}.1."""
    base = pydicom.dcmread(os.path.join(SAMPLES, "CT_small.dcm"))
    files = []
    for i in range(n):
        base.StudyInstanceUID = study
        base.SeriesInstanceUID = study + ".1"
        base.SOPInstanceUID = f"{study}.1.{i + 1}"
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.InstanceNumber = i + 1
        f = tmp_path / f"{study}-{i}.dcm"
        base.save_as(str(f), write_like_original=False)
        files.append(str(f))
    return files


def tmp_empties(data, seconds=20):
    """D/tmp as it is once the spiller is done: small parts are committed
    inside the index and written out to their files after an idle moment,
    through D/tmp, so a file may pass there just after the response (a
    slow machine, ASan).  What must not happen is that one stays."""
    deadline = time.time() + seconds
    left = os.listdir(os.path.join(data, "tmp"))
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = os.listdir(os.path.join(data, "tmp"))
    return left


def test_stow_many_parts_share_commits(web, tmp_path):
    """More parts than the server keeps in flight per request (32): each
    gets its own verdict, a repeat inside the request is a duplicate (kept
    first: success), a broken part fails alone, and all are retrievable."""
    study = "1.2.826.0.1.3680043.10.1447.99.77.1"
    files = series_files(tmp_path, study, 80)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(open(files[0], "rb").read()[:400])
    body, ct = multipart_body(files[:40] + [str(broken)] + files[40:] + [files[3]])
    r = requests.post(web.base + "/dicom-web/studies", data=body, timeout=120,
                      headers={"Content-Type": ct, "Accept": "application/dicom+json"})
    assert r.status_code == 202, r.text
    res = pydicom.Dataset.from_json(r.json())
    got = sorted(x.ReferencedSOPInstanceUID for x in res.ReferencedSOPSequence)
    assert got == sorted([f"{study}.1.{i + 1}" for i in range(80)] + [f"{study}.1.4"])
    assert len(res.FailedSOPSequence) == 1
    # every spooled part was consumed: renamed into the blob store, or
    # removed (the broken part, the duplicate)
    assert tmp_empties(web.data) == []
    q = requests.get(f"{web.base}/dicom-web/studies/{study}/instances", timeout=30)
    assert q.status_code == 200 and len(q.json()) == 80
    w = requests.get(f"{web.base}/dicom-web/studies/{study}/series/{study}.1/"
                     f"instances/{study}.1.80", timeout=30)
    (_, data), = parse_multipart(w)
    assert data == open(files[79], "rb").read()


def test_stow_parts_of_every_size(web, tmp_path):
    """Parts kept in memory and staged (~40 KB), written beside memory
    (~600 KB) and written only to their file (~2.5 MB): each is stored
    byte for byte, and nothing stays in D/tmp."""
    study = "1.2.826.0.1.3680043.10.1447.99.79.1"
    files = series_files(tmp_path, study, 3)
    for f, side in zip(files[1:], (384, 1100)):
        d = pydicom.dcmread(f)
        d.Rows = d.Columns = side
        d.PixelData = bytes(k % 253 for k in range(side * side * 2))
        d.save_as(f, write_like_original=False)
    sizes = [os.path.getsize(f) for f in files]
    assert sizes[0] < 64 << 10 < sizes[1] < 1 << 20 < sizes[2]
    body, ct = multipart_body(files)
    r = requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                      headers={"Content-Type": ct, "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    assert tmp_empties(web.data) == []
    for i, f in enumerate(files):
        w = requests.get(f"{web.base}/dicom-web/studies/{study}/series/"
                         f"{study}.1/instances/{study}.1.{i + 1}", timeout=30)
        (_, data), = parse_multipart(w)
        assert data == open(f, "rb").read()


def test_stow_client_gone_mid_request(web, tmp_path):
    """A client that goes away after some parts: the server stays up, what
    it acknowledged internally is whole, and the next request works."""
    import socket
    study = "1.2.826.0.1.3680043.10.1447.99.78.1"
    files = series_files(tmp_path, study, 20)
    body, ct = multipart_body(files)
    port = int(web.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: {ct}\r\nContent-Length: {len(body)}\r\n\r\n")
        c.sendall(head.encode() + body[:len(body) * 2 // 3])
    # whatever got in is whole (the abort's parts finish in the background)
    q = requests.get(f"{web.base}/dicom-web/studies/{study}/instances", timeout=30)
    assert q.status_code in (200, 204, 404)   # 404: none of its study yet
    for m in (q.json() if q.status_code == 200 else []):
        uid = m["00080018"]["Value"][0]
        w = requests.get(f"{web.base}/dicom-web/studies/{study}/series/"
                         f"{study}.1/instances/{uid}", timeout=30)
        (_, data), = parse_multipart(w)
        assert data == open(files[int(uid.rsplit(".", 1)[1]) - 1], "rb").read()
    assert web.alive()
    body, ct = multipart_body(files[:2])
    r = requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                      headers={"Content-Type": ct})
    assert r.status_code == 200, r.text


def test_stow_malformed_bodies(web):
    url = web.base + "/dicom-web/studies"
    r = requests.post(url, data=b"hello", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    r = requests.post(url, data=b"--b\r\nContent-Type: application/dicom\r\n\r\nabc",
                      headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
                      timeout=10)
    assert r.status_code in (400, 409)
    r = requests.post(url, data=b"x", headers={"Content-Type":
                      'multipart/related; type="image/jpeg"; boundary=b'}, timeout=10)
    assert r.status_code == 415


def test_hostile_paths(web):
    for p in ["/dicom-web/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
              "/dicom-web/studies/..%2f..%2fetc", "/dicom-web/studies/1.2\\3"]:
        r = requests.get(web.base + p, timeout=10)
        assert r.status_code in (400, 404), p
        assert "root:" not in r.text
    r = requests.request("DELETE", web.base + "/dicom-web/studies", timeout=10)
    assert r.status_code == 405
    # OPTIONS without CORS preflight headers: the capabilities (PS3.18 §8.9)
    r = requests.options(web.base + "/dicom-web/studies", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.sun.wadl+xml"


def test_frames_native(web):
    st = STUDY.format(1)
    inst = f"{st}.1.1"
    url = f"{web.base}/dicom-web/studies/{st}/series/{st}.1/instances/{inst}/frames/1"
    r = requests.get(url, timeout=30, headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    assert r.status_code == 200, r.text
    (head, body), = parse_multipart(r)
    assert "application/octet-stream" in head
    d = pydicom.dcmread(io.BytesIO(stored_blob_bytes(web, inst)))
    assert body == d.PixelData
    assert requests.get(url[:-1] + "2", timeout=10).status_code == 404
    assert requests.get(url[:-1] + "x", timeout=10).status_code == 400
    assert requests.get(url[:-1] + "0", timeout=10).status_code == 400


def test_frames_of_encapsulated_instance(web):
    f = os.path.join(SAMPLES, "JPEG2000.dcm")
    body, ct = multipart_body([f])
    assert requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                         headers={"Content-Type": ct}).status_code == 200
    d = pydicom.dcmread(f)
    url = (f"{web.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}/frames/1")
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    (head, got), = parse_multipart(r)
    assert "image/jp2" in head
    frag = next(pydicom.encaps.generate_pixel_data_frame(d.PixelData))
    assert got.rstrip(b"\0") == frag.rstrip(b"\0")


def test_frames_list_of_a_multiframe_instance(web):
    f = os.path.join(SAMPLES, "rtdose.dcm")
    body, ct = multipart_body([f])
    assert requests.post(web.base + "/dicom-web/studies", data=body, timeout=60,
                         headers={"Content-Type": ct}).status_code == 200
    d = pydicom.dcmread(f)
    url = (f"{web.base}/dicom-web/studies/{d.StudyInstanceUID}/series/"
           f"{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}/frames/2,5,15")
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    parts = parse_multipart(r)
    fs = d.Rows * d.Columns * d.BitsAllocated // 8
    assert [b for _, b in parts] == [d.PixelData[(n - 1) * fs:n * fs] for n in (2, 5, 15)]
    assert requests.get(url.replace("2,5,15", "2,16"), timeout=10).status_code == 404
