"""The HTTP server's connection handling (src/web/server.c): a fixed pool of
event-driven workers, so idle keep-alive connections and slow clients cost
no thread and do not keep others from being answered."""
import socket
import time

import pytest
import requests

from test_dimse import Server, free_port


@pytest.fixture
def srv(tmp_path):
    port = free_port()
    s = Server(str(tmp_path / "data"), "--http-port", str(port))
    s.base = f"http://127.0.0.1:{port}"
    s.http_port = port
    yield s
    assert s.stop() == 0


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_idle_and_slow_connections_cost_no_thread(srv):
    assert requests.get(srv.base + "/healthz", timeout=10).status_code == 200
    before = threads(srv.proc.pid)
    idle = []
    try:
        for i in range(120):
            c = socket.create_connection(("127.0.0.1", srv.http_port),
                                         timeout=10)
            if i % 2:
                # a slow client: half a request line, then nothing
                c.sendall(b"GET /dicom-web/stud")
            idle.append(c)
        time.sleep(0.5)
        # Thread per connection would add ~120 threads here.
        assert threads(srv.proc.pid) <= before + 4
        t0 = time.monotonic()
        r = requests.get(srv.base + "/healthz", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        # answered while 120 connections hold on (no timing assert: the
        # request must simply not wait for them to time out, 60 s)
        assert time.monotonic() - t0 < 30
    finally:
        for c in idle:
            c.close()
    assert srv.alive()


def test_keep_alive_reuses_one_connection(srv):
    with requests.Session() as s:
        for _ in range(20):
            r = s.get(srv.base + "/healthz", timeout=10)
            assert r.status_code == 200
        # one TCP connection served all twenty (HTTP/1.1 keep-alive)
        pool = s.adapters["http://"].poolmanager
        conns = [p for p in pool.pools._container.values()]
        assert len(conns) == 1
        assert conns[0].num_connections == 1
