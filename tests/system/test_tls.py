"""DICOM over TLS (PS3.15 B.1, BCP 195): DCMTK's echoscu/storescu with
certificates against `agora serve --tls-*`; plain clients and untrusted
certificates are refused."""
import os
import subprocess

import pytest

from test_dimse import ENV, Server, agora, dcmtk, free_port, ls_instances

SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    c = str(d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=c)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=Agora Test CA",
            "-days", "2", "-out", "ca.crt", cwd=c)
    for name in ("server", "client", "rogue"):
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout",
                "-out", f"{name}.key", cwd=c)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name.upper()}",
                "-out", f"{name}.csr", cwd=c)
    with open(os.path.join(c, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                "-out", f"{name}.crt", cwd=c)
    # a certificate signed by nobody Agora trusts
    openssl("x509", "-req", "-in", "rogue.csr", "-signkey", "rogue.key", "-days", "2",
            "-out", "rogue.crt", cwd=c)
    return c


@pytest.fixture
def tls_server(tmp_path, pki):
    data = str(tmp_path / "d")
    agora("node", "--data", data, "add", "SCU", "127.0.0.1", "11113")
    port = free_port()
    srv = Server(data, "--tls-port", str(port),
                 "--tls-cert", os.path.join(pki, "server.crt"),
                 "--tls-key", os.path.join(pki, "server.key"),
                 "--tls-ca", os.path.join(pki, "ca.crt"), "--tls-verify-client")
    srv.tls_port = port
    yield srv
    srv.stop()


def tls_args(pki, who="client"):
    return ["+tls", os.path.join(pki, f"{who}.key"), os.path.join(pki, f"{who}.crt"),
            "+cf", os.path.join(pki, "ca.crt")]


def test_echo_and_store_over_tls(tls_server, pki):
    r = dcmtk("echoscu", *tls_args(pki), "-aet", "SCU", "-aec", "AGORA",
              "127.0.0.1", str(tls_server.tls_port))
    assert r.returncode == 0, r.stderr
    f = os.path.join(SAMPLES, "CT_small.dcm")
    r = dcmtk("storescu", *tls_args(pki), "-aet", "SCU", "-aec", "AGORA",
              "127.0.0.1", str(tls_server.tls_port), f)
    assert r.returncode == 0, r.stderr
    assert "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322" in ls_instances(tls_server.data)


def test_untrusted_client_certificate_refused(tls_server, pki):
    r = dcmtk("echoscu", *tls_args(pki, "rogue"), "-aet", "SCU", "-aec", "AGORA",
              "127.0.0.1", str(tls_server.tls_port))
    assert r.returncode != 0


def test_plain_dicom_on_tls_port_refused(tls_server):
    r = dcmtk("echoscu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
              str(tls_server.tls_port), timeout=60)
    assert r.returncode != 0


def test_plain_port_still_serves(tls_server):
    r = dcmtk("echoscu", "-aet", "SCU", "-aec", "AGORA", "127.0.0.1",
              str(tls_server.port))
    assert r.returncode == 0, r.stderr


def test_old_tls_versions_refused(tls_server):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_server.tls_port}",
                        "-tls1_1"], input=b"", capture_output=True, timeout=30)
    # No session: the handshake fails and no cipher is agreed.
    assert r.returncode != 0
    assert b"Cipher is (NONE)" in r.stdout or b"Cipher    : 0000" in r.stdout, r.stdout


def test_client_certificate_names_the_node_and_its_department(tmp_path, pki):
    """A verified certificate's CN is a node's AE title: the association gets
    that node's department whatever calling AE it asserts (issue 7)."""
    data = str(tmp_path / "d")
    agora("dept", "--data", data, "add", "cardiology")
    agora("node", "--data", data, "--department", "cardiology", "add", "CLIENT",
          "127.0.0.1", "11113")
    port = free_port()
    srv = Server(data, "--tls-port", str(port),
                 "--tls-cert", os.path.join(pki, "server.crt"),
                 "--tls-key", os.path.join(pki, "server.key"),
                 "--tls-ca", os.path.join(pki, "ca.crt"), "--tls-verify-client")
    try:
        f = os.path.join(SAMPLES, "CT_small.dcm")
        r = dcmtk("storescu", *tls_args(pki), "-aet", "NOTANODE", "-aec", "AGORA",
                  "127.0.0.1", str(port), f)
        assert r.returncode == 0, r.stderr
        # the same calling AE without TLS is unknown, so refused
        r = dcmtk("storescu", "-aet", "NOTANODE", "-aec", "AGORA", "127.0.0.1",
                  str(srv.port), f)
        assert r.returncode != 0
    finally:
        srv.stop()
    r = agora("dept", "--data", data, "list", "--json")
    import sqlite3
    db = sqlite3.connect(os.path.join(data, "index.sqlite"))
    rows = db.execute("SELECT d.name, x.how FROM study_depts x JOIN departments d"
                      " ON x.dept_pk = d.id").fetchall()
    db.close()
    assert rows == [("cardiology", "node")]


def test_https_with_the_certificate(tmp_path, pki):
    """HTTPS when a certificate is configured (issue 6): TLS 1.2+ only, the
    session cookie marked Secure; plain HTTP on that port gets nothing."""
    import requests
    data = str(tmp_path / "d")
    port = free_port()
    srv = Server(data, "--http-port", str(port),
                 "--tls-cert", os.path.join(pki, "server.crt"),
                 "--tls-key", os.path.join(pki, "server.key"), anonymous=False)
    try:
        base = f"https://127.0.0.1:{port}"
        ca = os.path.join(pki, "ca.crt")
        assert requests.get(base + "/healthz", verify=ca, timeout=10).json() == {"status": "ok"}
        r = requests.post(base + "/api/v1/login", verify=ca, timeout=30,
                          json={"username": "admin", "password": "admin-password-1"})
        assert r.status_code == 200
        assert "Secure" in r.headers["Set-Cookie"]
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # TLS 1.1 is refused
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-tls1_1"], input="", capture_output=True, text=True,
                           timeout=30)
        assert "Cipher is (NONE)" in r.stdout or r.returncode != 0
    finally:
        srv.stop()
