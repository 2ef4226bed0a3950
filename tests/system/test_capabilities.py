"""The DICOMweb capabilities document (PS3.18 §8.9 Retrieve Capabilities,
Annex H): WADL (the default) or JSON, by OPTIONS on /dicom-web and the
resources below it, or GET /dicom-web/capabilities; no credentials needed
while everything else stays closed; CORS preflights answered as before.
The document is checked against the server itself: every resource it lists
is requested with its declared defaults and must answer in a declared media
type, and every QIDO-RS query parameter it lists must be taken."""
import re
import xml.etree.ElementTree as ET

import pytest
import requests

from test_dimse import Server, agora, free_port
from test_find import make_corpus

NS = "{http://wadl.dev.java.net/2009/02}"
WADL = "application/vnd.sun.wadl+xml"
ORIGIN = "https://viewer.example.org"
ADMIN = ("admin", "admin-password-1")   # test_dimse.Server's environment
STUDY = "1.2.826.0.1.3680043.10.1447.99.5.1"
FILL = {"study": STUDY, "series": STUDY + ".1", "instance": STUDY + ".1.1",
        "frames": "1", "attributePath": "7fe00010"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    src = root / "src"
    src.mkdir()
    make_corpus(str(src))
    data = str(root / "data")
    agora("import", "--data", data, str(src))
    port = free_port()
    srv = Server(data, "--http-port", str(port), "--http-basic",
                 "--cors-origin", ORIGIN, anonymous=False)
    srv.base = f"http://127.0.0.1:{port}"
    yield srv
    srv.stop()


def options(site, path="", **headers):
    return requests.options(site.base + "/dicom-web" + path, headers=headers, timeout=30)


# ---- reading the WADL -------------------------------------------------------


def wadl_resources(root):
    """[(base, full path, resource element)] in document order."""
    out = []

    def walk(base, prefix, el):
        for r in el.findall(NS + "resource"):
            path = (prefix + "/" if prefix else "") + r.get("path")
            out.append((base, path, r))
            walk(base, path, r)

    for rs in root.findall(NS + "resources"):
        walk(rs.get("base"), "", rs)
    return out


def json_resources(doc):
    out = []

    def walk(base, prefix, obj):
        for r in obj.get("resource", []):
            path = (prefix + "/" if prefix else "") + r["path"]
            out.append((base, path, r))
            walk(base, path, r)

    for rs in doc["resources"]:
        walk(rs["base"], "", rs)
    return out


def methods(resources):
    return {(path, m.get("name"), m.get("id"))
            for _, path, r in resources for m in r.findall(NS + "method")}


def fill(path):
    return re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], path)


def media_of(content_type):
    """Media type and its type= parameter, for comparing with the document."""
    t = content_type.split(";")[0].strip().lower()
    m = re.search(r'type="?([^";]+)"?', content_type.split(";", 1)[1]) \
        if ";" in content_type else None
    return (t, m.group(1).lower() if m and t.startswith("multipart/") else None)


# ---- the document ------------------------------------------------------------


def test_wadl_without_credentials(site):
    r = options(site)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == WADL
    assert "OPTIONS" in r.headers["Allow"] and "GET" in r.headers["Allow"]
    assert "Accept" in r.headers["Vary"]
    root = ET.fromstring(r.content)
    assert root.tag == NS + "application"
    bases = [rs.get("base") for rs in root.findall(NS + "resources")]
    assert bases == [site.base + "/dicom-web/", site.base + "/"]
    res = wadl_resources(root)
    paths = {p for _, p, _ in res}
    for p in ["studies", "studies/{study}", "studies/{study}/metadata",
              "studies/{study}/rendered", "studies/{study}/thumbnail",
              "studies/{study}/series", "studies/{study}/instances",
              "studies/{study}/series/{series}/instances/{instance}",
              "studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
              "studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
              "studies/{study}/series/{series}/instances/{instance}/bulkdata/{attributePath}",
              "series", "instances", "wado"]:
        assert p in paths, p
    ids = {i for _, _, i in methods(res)}
    for i in ["SearchForStudies", "SearchForSeries", "SearchForInstances",
              "SearchForStudySeriesInstances", "StoreInstances", "StoreStudyInstances",
              "RetrieveStudy", "RetrieveSeries", "RetrieveInstance", "RetrieveFrames",
              "RetrieveBulkdata", "RetrieveStudyMetadata", "RetrieveRenderedInstance",
              "RetrieveInstanceThumbnail", "URIRetrieveInstance"]:
        assert i in ids, i
    # nothing Agora does not do (PS3.18 Table H-1 has pixeldata, study bulkdata)
    assert not any("pixeldata" in p for p in paths)
    assert "studies/{study}/bulkdata" not in paths
    # template parameters are declared where they appear
    study = next(r for _, p, r in res if p == "studies/{study}")
    (tp,) = study.findall(NS + "param")
    assert (tp.get("name"), tp.get("style"), tp.get("required")) == ("study", "template", "true")
    # QIDO-RS parameters of the study search
    search = next(m for _, p, r in res if p == "studies"
                  for m in r.findall(NS + "method") if m.get("id") == "SearchForStudies")
    q = {p.get("name"): p for p in search.find(NS + "request").findall(NS + "param")}
    for name in ["includefield", "fuzzymatching", "limit", "offset", "PatientName",
                 "PatientID", "StudyDate", "ModalitiesInStudy", "AccessionNumber"]:
        assert q[name].get("style") == "query", name
    assert q["Accept"].get("style") == "header"
    ok = search.find(NS + "response[@status='200']")
    assert [x.get("mediaType") for x in ok.findall(NS + "representation")] == \
        ["application/dicom+json"]
    # one instance may also come as a single part
    inst = next(m for _, p, r in res for m in r.findall(NS + "method")
                if m.get("id") == "RetrieveInstance")
    ok = inst.find(NS + "response[@status='200']")
    assert [x.get("mediaType") for x in ok.findall(NS + "representation")] == \
        ['multipart/related; type="application/dicom"', "application/dicom"]
    # STOW-RS takes both multipart forms
    stow = next(m for _, p, r in res if p == "studies"
                for m in r.findall(NS + "method") if m.get("name") == "POST")
    body = [x.get("mediaType") for x in stow.find(NS + "request").findall(NS + "representation")]
    assert body == ['multipart/related; type="application/dicom"',
                    'multipart/related; type="application/dicom+json"']
    # the rest stays closed
    assert requests.get(site.base + "/dicom-web/studies", timeout=30).status_code == 401
    assert requests.get(site.base + f"/dicom-web/studies/{STUDY}/metadata",
                        timeout=30).status_code == 401


def test_json_mirrors_wadl(site):
    w = ET.fromstring(options(site).content)
    r = options(site, Accept="application/json")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    jres = json_resources(doc)
    wres = wadl_resources(w)
    assert [(b, p) for b, p, _ in jres] == [(b, p) for b, p, _ in wres]
    for (_, path, jr), (_, _, wr) in zip(jres, wres):
        jm = [(m["name"], m["id"]) for m in jr.get("method", [])]
        wm = [(m.get("name"), m.get("id")) for m in wr.findall(NS + "method")]
        assert jm == wm, path
        for m, e in zip(jr.get("method", []), wr.findall(NS + "method")):
            jp = [(p["name"], p["style"], p["required"])
                  for p in m.get("request", {}).get("param", [])]
            req = e.find(NS + "request")
            wp = [] if req is None else [
                (p.get("name"), p.get("style"), p.get("required") == "true")
                for p in req.findall(NS + "param")]
            assert jp == wp, (path, m["id"])
            js = [(x["status"], [y["mediaType"] for y in x["representation"]])
                  for x in m["response"]]
            ws = [(x.get("status"), [y.get("mediaType") for y in x.findall(NS + "representation")])
                  for x in e.findall(NS + "response")]
            assert js == ws, (path, m["id"])
    # preference order decides between the two
    r = options(site, Accept="application/json;q=0.5, application/vnd.sun.wadl+xml")
    assert r.headers["Content-Type"] == WADL


def test_get_capabilities(site):
    url = site.base + "/dicom-web/capabilities"
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == WADL
    assert r.content == options(site).content
    j = requests.get(url, headers={"Accept": "application/json"}, timeout=30)
    assert j.json() == options(site, Accept="application/json").json()
    h = requests.head(url, timeout=30)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Content-Type"] == WADL
    # OPTIONS on it is the whole document as well
    assert options(site, "/capabilities").content == r.content
    # no other method
    assert requests.post(url, data=b"x", timeout=30).status_code in (401, 404)
    assert requests.delete(url, timeout=30).status_code in (401, 405)


def test_not_acceptable(site):
    for accept in ["image/png", "application/xml", "application/json;q=0"]:
        for r in [options(site, Accept=accept),
                  requests.get(site.base + "/dicom-web/capabilities",
                               headers={"Accept": accept}, timeout=30)]:
            assert r.status_code == 406, accept
            assert r.headers["Content-Type"] == "application/json"
            assert r.json()["error"] == "not acceptable"
            assert "application/json" in r.json()["detail"]
    r = options(site, Accept="application/json;q=7")
    assert r.status_code == 400 and r.json()["error"] == "bad Accept header"


def test_one_resource_and_its_children(site):
    r = options(site, f"/studies/{STUDY}/series")
    assert r.status_code == 200, r.text
    root = ET.fromstring(r.content)
    (rs,) = root.findall(NS + "resources")   # no WADO-URI here
    assert rs.get("base") == site.base + "/dicom-web/"
    paths = [p for _, p, _ in wadl_resources(root)]
    assert paths[0] == "studies/{study}/series"
    assert all(p.startswith("studies/{study}/series") for p in paths)
    assert "studies/{study}/series/{series}/instances/{instance}/frames/{frames}" in paths
    assert "studies/{study}/metadata" not in paths
    # the shape of the path decides, never the index: a study that does
    # not exist gets the same answer as one that does
    other = options(site, "/studies/1.2.3.4.5/series")
    assert other.content == r.content
    # bulk data takes the rest of the path
    deep = options(site, f"/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.1"
                   "/bulkdata/00540016/0/00181072")
    assert deep.status_code == 200
    assert wadl_resources(ET.fromstring(deep.content))[0][1].endswith("bulkdata/{attributePath}")
    for bad in ["/nope", f"/studies/{STUDY}/nope", f"/studies/{STUDY}/frames/1"]:
        r = options(site, bad)
        assert r.status_code == 404, bad
        assert r.json()["error"] == "not found"


def test_preflight_unchanged(site):
    r = options(site, "/studies", Origin=ORIGIN, **{
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "OPTIONS" in r.headers["Allow"]
    # a preflight for the capabilities themselves, too
    r = options(site, "/capabilities", Origin=ORIGIN, **{"Access-Control-Request-Method": "GET"})
    assert r.status_code == 204 and r.content == b""
    # the document itself can be read from the allowed origin
    r = options(site, Origin=ORIGIN)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = options(site, Origin="https://evil.example")
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_host_header_is_checked(site):
    def base_for(host):
        r = requests.options(site.base + "/dicom-web", headers={"Host": host}, timeout=30)
        assert r.status_code == 200
        return ET.fromstring(r.content).find(NS + "resources").get("base")

    assert base_for("pacs.example.org:8443") == "http://pacs.example.org:8443/dicom-web/"
    assert base_for("[::1]:80") == "http://[::1]:80/dicom-web/"
    # anything else is not repeated back: bases relative to the origin
    for host in ['evil.example"><x', "a b", "host:99999999", "host/path"]:
        assert base_for(host) == "/dicom-web/", host


# ---- the document against the server ----------------------------------------


def declared(method):
    """Default Accept header (None when not declared) and the media types of
    the success response."""
    accept = None
    req = method.find(NS + "request")
    if req is not None:
        for p in req.findall(NS + "param"):
            if p.get("name") == "Accept" and p.get("style") == "header":
                accept = p.get("default")
    ok = next(r for r in method.findall(NS + "response") if "200" in r.get("status").split())
    return accept, {media_of(x.get("mediaType")) for x in ok.findall(NS + "representation")}


def test_every_listed_retrieval_answers(site):
    root = ET.fromstring(options(site).content)
    checked = 0
    for base, path, res in wadl_resources(root):
        for m in res.findall(NS + "method"):
            if m.get("name") != "GET" or m.get("id").startswith("SearchFor"):
                continue
            accept, media = declared(m)
            url = base + fill(path)
            params = {}
            if path == "wado":
                params = {"requestType": "WADO", "studyUID": FILL["study"],
                          "seriesUID": FILL["series"], "objectUID": FILL["instance"]}
            headers = {"Accept": accept} if accept else {}
            r = requests.get(url, params=params, headers=headers, auth=ADMIN, timeout=60)
            assert r.status_code == 200, (m.get("id"), r.status_code, r.text[:200])
            assert media_of(r.headers["Content-Type"]) in media, \
                (m.get("id"), r.headers["Content-Type"], media)
            checked += 1
    assert checked == 17   # 4 study, 4 series, 4 instance, 3 frames, bulk data, WADO-URI


def test_every_listed_search_parameter_is_taken(site):
    root = ET.fromstring(options(site).content)
    checked = 0
    for base, path, res in wadl_resources(root):
        for m in res.findall(NS + "method"):
            if not m.get("id").startswith("SearchFor"):
                continue
            url = base + fill(path)
            for p in m.find(NS + "request").findall(NS + "param"):
                if p.get("style") != "query":
                    continue
                name = p.get("name")
                value = {"includefield": "all", "fuzzymatching": "true", "limit": "5",
                         "offset": "0"}.get(name, "")   # "": universal matching
                r = requests.get(url, params={name: value}, auth=ADMIN, timeout=60)
                assert r.status_code == 200, (m.get("id"), name, r.text[:200])
                assert r.headers["Content-Type"].startswith("application/dicom+json")
                checked += 1
    assert checked > 100
    # and a search with a listed key does match
    r = requests.get(site.base + "/dicom-web/studies", params={"PatientID": "P1"},
                     auth=ADMIN, timeout=30)
    assert len(r.json()) == 2


def test_listed_store_answers(site):
    root = ET.fromstring(options(site).content)
    posts = [(base, path) for base, path, res in wadl_resources(root)
             for m in res.findall(NS + "method") if m.get("name") == "POST"]
    assert [p for _, p in posts] == ["studies", "studies/{study}"]
    for base, path in posts:
        # an empty multipart body: the route exists and says what is wrong
        r = requests.post(base + fill(path), data=b"--b--\r\n", auth=ADMIN, timeout=30,
                          headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
        assert r.status_code not in (404, 405), (path, r.status_code, r.text)
