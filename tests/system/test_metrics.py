"""/metrics (Prometheus text format 0.0.4): HTTP requests by status class and
their latency histogram, DIMSE associations and stores, the group commit, the
archive's counts and the jobs; scraped before and after real traffic."""
import os
import re
import socket
import time

import pytest
import requests

from test_dimse import Server, agora, dcmtk, free_port, unique_copies

LINE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def scrape(base):
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    values, types = {}, {}
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, f"not exposition format: {line!r}"
        values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    # every sample belongs to a declared family
    for key in values:
        name = key.split("{")[0]
        assert any(name == t or name.startswith(t + "_") for t in types), key
    return values, types


@pytest.fixture
def srv(tmp_path):
    data = str(tmp_path / "data")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    port = free_port()
    s = Server(data, "--http-port", str(port))
    s.base = f"http://127.0.0.1:{port}"
    yield s
    assert s.stop() == 0


def settled(base):
    """A scrape once every connection has been handled: the counters of an
    association are final only when its thread is done with it."""
    deadline = time.time() + 10
    while True:
        values, types = scrape(base)
        if values["agora_dicom_associations_active"] == 0 or time.time() > deadline:
            return values, types
        time.sleep(0.05)


def histogram_ok(v, name):
    buckets = sorted(((float(k.split('le="')[1].rstrip('"}')), val)
                      for k, val in v.items()
                      if k.startswith(name + "_bucket") and "+Inf" not in k))
    counts = [c for _, c in buckets]
    assert len(buckets) >= 5
    assert counts == sorted(counts), "buckets are cumulative"
    inf = v[name + '_bucket{le="+Inf"}']
    assert counts[-1] <= inf == v[name + "_count"]
    return inf


def test_metrics_move_with_traffic(srv, tmp_path):
    before, types = settled(srv.base)   # the fixture's port check is done
    assert types["agora_http_request_duration_seconds"] == "histogram"
    assert types["agora_http_responses_total"] == "counter"
    assert types["agora_dicom_associations_active"] == "gauge"
    assert before["agora_instances"] == 0
    assert before['agora_jobs{state="queued"}'] == 0
    assert before['agora_jobs{state="running"}'] == 0
    n0 = histogram_ok(before, "agora_http_request_duration_seconds")

    # HTTP: three answered requests (200, 404, 401-free anonymous 200)
    assert requests.get(srv.base + "/healthz", timeout=10).status_code == 200
    assert requests.get(srv.base + "/nosuchthing", timeout=10).status_code == 404
    assert requests.get(srv.base + "/dicom-web/studies", timeout=10).status_code in (200, 204)
    # DIMSE: one store association with two instances, one refused AE
    files = unique_copies(tmp_path)[:2]
    r = dcmtk("storescu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1", str(srv.port), *files)
    assert r.returncode == 0, r.stderr
    r = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "AGORA", "127.0.0.1", str(srv.port))
    assert r.returncode != 0
    # a port check (connect, close) is no association; bytes that are not
    # an A-ASSOCIATE-RQ are a refused one
    socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        c.recv(64)

    after, _ = settled(srv.base)
    n1 = histogram_ok(after, "agora_http_request_duration_seconds")
    assert n1 - n0 >= 4    # the three above and the first scrape
    assert after["agora_http_request_duration_seconds_sum"] > \
        before["agora_http_request_duration_seconds_sum"]
    assert after['agora_http_responses_total{code="4xx"}'] == \
        before['agora_http_responses_total{code="4xx"}'] + 1
    assert after['agora_http_responses_total{code="2xx"}'] >= \
        before['agora_http_responses_total{code="2xx"}'] + 3
    assert after["agora_http_requests_total"] >= before["agora_http_requests_total"] + 4

    assert after['agora_dicom_associations_total{result="accepted"}'] == \
        before['agora_dicom_associations_total{result="accepted"}'] + 1
    assert after['agora_dicom_associations_total{result="rejected"}'] == \
        before['agora_dicom_associations_total{result="rejected"}'] + 2
    assert after["agora_dicom_instances_stored_total"] == \
        before["agora_dicom_instances_stored_total"] + 2
    assert after["agora_dicom_store_failures_total"] == 0
    assert after["agora_dicom_associations_active"] == 0

    assert after["agora_instances"] == 2
    assert after["agora_stored_bytes"] >= sum(os.path.getsize(f) for f in files) * 0.9
    assert after["agora_store_commit_batched_instances_total"] == \
        before["agora_store_commit_batched_instances_total"] + 2
    assert 1 <= after["agora_store_commit_batches_total"] - \
        before["agora_store_commit_batches_total"] <= 2
    assert after["agora_store_commit_batch_size_max"] >= 1
    assert after["agora_store_commit_queue_depth"] == 0
