"""Rendering (PS3.4 Annex N) through `agora render`, WADO-RS rendered and
thumbnail resources (PS3.18 §10.4.1.1.3-4) and WADO-URI (PS3.18 §9),
against a running `agora serve`.

Test images are made here with pydicom and numpy: a signed 12-bit CT with a
rescale and windows in the file, an unsigned MR without a window, a
MONOCHROME1 CR with a SIGMOID VOI LUT function, RGB (planar configuration
1), YBR_FULL, PALETTE COLOR, a 2 MiB multi-frame, a report without pixels,
and compressed copies (RLE, JPEG-LS, JPEG lossless).  The reference is
pydicom's own pipeline (apply_modality_lut, apply_windowing,
apply_color_lut, convert_color_space) scaled to 8 bits; rendered PNGs must
match it within 1.
"""
import copy
import io
import os
import re
import subprocess

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixel_data_handlers.util import (apply_color_lut,
                                              apply_modality_lut,
                                              apply_windowing,
                                              convert_color_space)
from pydicom.uid import ExplicitVRLittleEndian

from test_dimse import AGORA, Server, agora, free_port

UID = "1.2.826.0.1.3680043.10.1447.99.7.{}"
ST_CT, ST_CR, ST_MF, ST_MISSING = (UID.format(n) for n in (1, 2, 3, 99))
RLE = "1.2.840.10008.1.2.5"
JLS = "1.2.840.10008.1.2.4.80"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"


# ---- test images ---------------------------------------------------------------

def base(study, series, inst, modality, sop_class, number=1):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = inst
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = inst
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = "RENDER-1"
    ds.PatientName = "Render^Test"
    ds.Modality = modality
    ds.SeriesNumber = int(series.rsplit(".", 1)[1])
    ds.InstanceNumber = number
    return ds


def mono(ds, arr, stored, signed=False, pi="MONOCHROME2"):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = pi
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.PixelData = arr.astype("<i2" if signed else "<u2").tobytes()


def color(ds, arr, pi, planar=0):
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = pi
    ds.PlanarConfiguration = planar
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    data = arr.transpose(2, 0, 1) if planar else arr
    ds.PixelData = np.ascontiguousarray(data, dtype=np.uint8).tobytes()


def make_images(folder):
    rng = np.random.default_rng(7)
    files = {}

    def save(name, ds):
        p = os.path.join(folder, name + ".dcm")
        ds.save_as(p, write_like_original=False)
        files[name] = p

    # CT: signed 12 bits, HU = stored - 1024, two windows (the first wins),
    # the LINEAR window's edges (-160/-159, 239/240) in the first row.
    hu = rng.integers(-1100, 1000, size=(48, 64)).astype(np.int16)
    hu[0, :8] = [-160, -159, 39, 40, 238, 239, 240, -2000]
    ct = base(ST_CT, ST_CT + ".1", ST_CT + ".1.1", "CT", CT_CLASS)
    mono(ct, hu + 1024, 12, signed=True)
    ct.RescaleIntercept = -1024
    ct.RescaleSlope = 1
    ct.WindowCenter = [40, 300]
    ct.WindowWidth = [400, 1500]
    save("ct", ct)
    # MR: unsigned 12 bits, no window: the frame's range.
    mr = base(ST_CT, ST_CT + ".2", ST_CT + ".2.1", "MR", MR_CLASS)
    mono(mr, rng.integers(100, 3000, size=(40, 40)), 12)
    save("mr", mr)
    # CR: MONOCHROME1, 10 bits, SIGMOID.
    cr = base(ST_CR, ST_CR + ".1", ST_CR + ".1.1", "CR", CR_CLASS)
    mono(cr, rng.integers(0, 1024, size=(50, 30)), 10, pi="MONOCHROME1")
    cr.WindowCenter = 500
    cr.WindowWidth = 300
    cr.VOILUTFunction = "SIGMOID"
    save("cr", cr)
    # Colour: RGB by plane, the same as YBR_FULL, a palette.
    rgb = rng.integers(0, 256, size=(30, 40, 3)).astype(np.uint8)
    rgb[:15, :20] = (200, 30, 90)
    sc = base(ST_CR, ST_CR + ".2", ST_CR + ".2.1", "OT", SC_CLASS)
    color(sc, rgb, "RGB", planar=1)
    save("rgb", sc)
    ybr = base(ST_CR, ST_CR + ".2", ST_CR + ".2.2", "OT", SC_CLASS, 2)
    color(ybr, convert_color_space(rgb, "RGB", "YBR_FULL"), "YBR_FULL")
    save("ybr", ybr)
    pal = base(ST_CR, ST_CR + ".2", ST_CR + ".2.3", "OT", SC_CLASS, 3)
    pal.SamplesPerPixel = 1
    pal.PhotometricInterpretation = "PALETTE COLOR"
    pal.Rows, pal.Columns = 20, 24
    pal.BitsAllocated = pal.BitsStored = 8
    pal.HighBit = 7
    pal.PixelRepresentation = 0
    pal.PixelData = rng.integers(0, 256, size=(20, 24)).astype(np.uint8).tobytes()
    i = np.arange(256)
    luts = [(i * 257), ((255 - i) * 257), (np.full(256, 0x8000))]
    for k, c in enumerate("Red Green Blue".split()):
        setattr(pal, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(pal, f"{c}PaletteColorLookupTableData",
                luts[k].astype("<u2").tobytes())
    save("palette", pal)
    # A report: no pixel data.
    sr = base(ST_CR, ST_CR + ".3", ST_CR + ".3.1", "SR", SR_CLASS)
    sr.ValueType = "CONTAINER"
    save("sr", sr)
    # Multi-frame: 4 frames of 512 x 512 x 16 bits (2 MiB, left in the
    # blob by the server and read one frame at a time); noisy enough that
    # each compressed frame is left there too.
    y, x = np.mgrid[0:512, 0:512]
    frames = np.stack([(x * 4 + y + f * 700) % 3840 +
                       rng.integers(0, 256, size=(512, 512)) for f in range(4)])
    mf = base(ST_MF, ST_MF + ".1", ST_MF + ".1.1", "XA", SC_CLASS)
    mono(mf, frames, 12)
    mf.WindowCenter = 2048
    mf.WindowWidth = 4096
    save("mf", mf)
    return files


def compressed_copy(src, dst, ts, uid, tool=None):
    """Re-encode losslessly (agora transcode, or a DCMTK tool) under a new
    SOP Instance UID, so that both can be stored."""
    tmp = dst + ".tmp"
    argv = tool + [src, tmp] if tool else [AGORA, "transcode", "--ts", ts, src, tmp]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ds = pydicom.dcmread(tmp)
    assert ds.file_meta.TransferSyntaxUID == ts
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(dst)
    os.unlink(tmp)
    return dst


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("rendered")
    src = root / "src"
    src.mkdir()
    files = make_images(str(src))
    files["ct_rle"] = compressed_copy(files["ct"], str(src / "ct_rle.dcm"), RLE,
                                      ST_CT + ".1.2")
    files["mf_jls"] = compressed_copy(files["mf"], str(src / "mf_jls.dcm"), JLS,
                                      ST_MF + ".1.2")
    # The server reads values over 64 KiB from the blob when it needs
    # them: these frames must be such fragments.
    jls = pydicom.dcmread(files["mf_jls"])
    frags = list(pydicom.encaps.generate_pixel_data_frame(jls.PixelData, 4))
    assert len(frags) == 4 and min(len(f) for f in frags) > 64 * 1024
    files["mr_jpegll"] = compressed_copy(
        files["mr"], str(src / "mr_jpegll.dcm"), "1.2.840.10008.1.2.4.70",
        ST_CT + ".2.2", tool=["dcmcjpeg", "+e1"])
    return root, files


@pytest.fixture(scope="module")
def web(images):
    root, files = images
    data = str(root / "data")
    agora("import", "--data", data, str(root / "src"))
    port = free_port()
    srv = Server(data, "--http-port", str(port))
    srv.base = f"http://127.0.0.1:{port}"
    srv.files = files
    yield srv
    srv.stop()


# ---- the reference: pydicom's pipeline scaled to 8 bits ---------------------------

def reference(path, frame=0, window=None):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if getattr(ds, "NumberOfFrames", 1) > 1:
        arr = arr[frame]
    pi = ds.PhotometricInterpretation
    if pi == "RGB":
        return arr.astype(np.uint8)
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        # pydicom leaves YBR as it is (4:2:2 widened) for these syntaxes
        return convert_color_space(arr, "YBR_FULL", "RGB")
    if pi == "PALETTE COLOR":
        lut = apply_color_lut(arr, ds).astype(np.float64)
        return np.floor(lut * 255 / 65535 + 0.5).astype(np.uint8)
    m = apply_modality_lut(arr, ds).astype(np.float64)
    if window is not None:
        ds = copy.deepcopy(ds)
        ds.WindowCenter, ds.WindowWidth = window[0], window[1]
        ds.VOILUTFunction = window[2] if len(window) > 2 else "LINEAR"
    if "WindowCenter" in ds:
        # apply_windowing's output range is that of the modality output:
        # bring it to 0..1.
        ymin, ymax = window_range(ds)
        v = (apply_windowing(m, ds) - ymin) / (ymax - ymin)
    else:
        v = (m - m.min()) / (m.max() - m.min())
    out = np.floor(np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8)
    return 255 - out if pi == "MONOCHROME1" else out


def window_range(ds):
    bs = ds.BitsStored
    lo, hi = (-2 ** (bs - 1), 2 ** (bs - 1) - 1) if ds.PixelRepresentation else (0, 2 ** bs - 1)
    if "RescaleSlope" in ds:
        lo = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        hi = hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return lo, hi


def decode(body):
    return np.asarray(Image.open(io.BytesIO(body)))


def assert_close(got, want, tol=1, what=""):
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= tol, f"{what}: off by {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"


def cli_render(path, out, *args):
    r = subprocess.run([AGORA, "render", *args, str(path), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    return r


def parse_multipart(r):
    ct = r.headers["Content-Type"]
    assert ct.startswith("multipart/related"), ct
    boundary = re.search(r"boundary=\"?([^\";]+)", ct).group(1).encode()
    parts = []
    for chunk in r.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        parts.append((head.decode(), body[:-2] if body.endswith(b"\r\n") else body))
    return parts


def get(web, path, **kw):
    kw.setdefault("timeout", 60)
    return requests.get(web.base + path, **kw)


def instance_path(name):
    st, se, i = {"ct": (ST_CT, 1, 1), "ct_rle": (ST_CT, 1, 2), "mr": (ST_CT, 2, 1),
                 "mr_jpegll": (ST_CT, 2, 2), "cr": (ST_CR, 1, 1), "rgb": (ST_CR, 2, 1),
                 "ybr": (ST_CR, 2, 2), "palette": (ST_CR, 2, 3), "sr": (ST_CR, 3, 1),
                 "mf": (ST_MF, 1, 1), "mf_jls": (ST_MF, 1, 2)}[name]
    return f"/dicom-web/studies/{st}/series/{st}.{se}/instances/{st}.{se}.{i}"


def assert_json_error(r, status):
    assert r.status_code == status, (r.status_code, r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json")
    assert "error" in r.json()


# ---- agora render --------------------------------------------------------------

@pytest.mark.parametrize("name", ["ct", "mr", "cr", "rgb", "ybr", "palette"])
def test_cli_matches_reference(images, tmp_path, name):
    _, files = images
    out = tmp_path / "out.png"
    r = cli_render(files[name], out)
    assert r.returncode == 0, r.stderr
    assert_close(decode(out.read_bytes()), reference(files[name]), what=name)


def test_cli_ct_window_edges(images, tmp_path):
    """The first row holds the LINEAR window's edges (PS3.3 C.11.2.1.2.1):
    -160 HU and below black, above 239 white."""
    _, files = images
    out = tmp_path / "ct.png"
    assert cli_render(files["ct"], out).returncode == 0
    row = decode(out.read_bytes())[0, :8]
    assert list(row) == [0, 1, 127, 128, 254, 255, 255, 0]


def test_cli_options(images, tmp_path):
    _, files = images
    out = tmp_path / "w.png"
    r = cli_render(files["ct"], out, "--window", "-600,1500,linear-exact")
    assert r.returncode == 0, r.stderr
    assert_close(decode(out.read_bytes()),
                 reference(files["ct"], window=(-600, 1500, "LINEAR_EXACT")))
    r = cli_render(files["mf"], out, "--frame", "3")
    assert r.returncode == 0, r.stderr
    assert_close(decode(out.read_bytes()), reference(files["mf"], frame=2))
    jpg = tmp_path / "s.jpg"
    r = cli_render(files["ct"], jpg, "--size", "32x32", "--quality", "80")
    assert r.returncode == 0, r.stderr
    im = Image.open(jpg)
    assert im.format == "JPEG" and im.size == (32, 24)
    for bad in (["--frame", "5"], ["--window", "40,0"], ["--size", "0x0"],
                ["--quality", "101"]):
        r = cli_render(files["mf"], tmp_path / "x.png", *bad)
        assert r.returncode in (1, 2) and "agora render" in r.stderr, bad
    r = cli_render(files["sr"], tmp_path / "x.png")
    assert r.returncode == 1 and "pixel data" in r.stderr


# pydicom's samples whose pixels pydicom itself decodes here: every syntax
# and colour model Agora renders, big endian and deflated included.
PYDICOM_SAMPLES = [
    "693_J2KI.dcm", "CT_small.dcm", "ExplVR_BigEnd.dcm", "JPEG2000.dcm",
    "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_padded.dcm",
    "SC_jpeg_no_color_transform.dcm", "SC_rgb_dcmtk_+eb+cr.dcm",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_jpeg_app14_dcmd.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit_2frame.dcm",
    "SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm",
    "SC_ybr_full_422_uncompressed.dcm", "image_dfl.dcm", "liver_expb_1frame.dcm",
    "rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm",
]


@pytest.mark.filterwarnings("ignore::UserWarning")   # pydicom on its samples
@pytest.mark.parametrize("name", PYDICOM_SAMPLES)
def test_cli_pydicom_samples(tmp_path, name):
    path = os.path.join("/usr/lib/python3/dist-packages/pydicom/data/test_files", name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not shipped with this pydicom")
    out = tmp_path / "out.png"
    r = cli_render(path, out)
    assert r.returncode == 0, r.stderr
    assert_close(decode(out.read_bytes()), reference(path), what=name)


@pytest.mark.parametrize("name,orig", [("ct_rle", "ct"), ("mr_jpegll", "mr"),
                                       ("mf_jls", "mf")])
def test_cli_compressed_renders_like_original(images, tmp_path, name, orig):
    _, files = images
    for frame in (["--frame", "2"] if orig == "mf" else []), []:
        a, b = tmp_path / "a.png", tmp_path / "b.png"
        assert cli_render(files[name], a, *frame).returncode == 0
        assert cli_render(files[orig], b, *frame).returncode == 0
        assert np.array_equal(decode(a.read_bytes()), decode(b.read_bytes()))


# ---- WADO-RS rendered -------------------------------------------------------------

@pytest.mark.parametrize("name", ["ct", "mr", "cr", "rgb", "ybr", "palette",
                                  "ct_rle", "mr_jpegll"])
def test_rendered_png_matches_reference(web, name):
    r = get(web, instance_path(name) + "/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    src = name.split("_")[0]
    assert_close(decode(r.content), reference(web.files[src]), what=name)


def test_rendered_jpeg_by_default(web):
    r = get(web, instance_path("ct") + "/rendered")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    got = decode(r.content)
    want = reference(web.files["ct"])
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 4
    # accept query parameter (PS3.18 §8.3.3.1) wins over the header
    r = get(web, instance_path("ct") + "/rendered", params={"accept": "image/png"},
            headers={"Accept": "image/jpeg"})
    assert r.headers["Content-Type"] == "image/png"


def test_rendered_parameters(web):
    p = instance_path("ct") + "/rendered"
    r = get(web, p, params={"window": "300,1500,sigmoid"}, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert_close(decode(r.content), reference(web.files["ct"], window=(300, 1500, "SIGMOID")))
    r = get(web, p, params={"viewport": "32,32"}, headers={"Accept": "image/png"})
    assert decode(r.content).shape == (24, 32)
    r = get(web, p, params={"viewport": "256,256"}, headers={"Accept": "image/png"})
    assert decode(r.content).shape == (192, 256)       # rendered may enlarge
    # a source region: columns 10..29, rows 5..14, at its own size
    r = get(web, p, params={"viewport": "20,10,10,5,20,10"}, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert_close(decode(r.content), reference(web.files["ct"])[5:15, 10:30])
    sizes = [len(get(web, p, params={"quality": q}).content) for q in (95, 10)]
    assert sizes[1] < sizes[0]


def test_rendered_frames_multipart(web):
    r = get(web, instance_path("mf") + "/frames/1,3/rendered",
            headers={"Accept": 'multipart/related; type="image/png"'})
    assert r.status_code == 200, r.text
    assert 'type="image/png"' in r.headers["Content-Type"]
    parts = parse_multipart(r)
    assert len(parts) == 2
    for (head, body), frame in zip(parts, (0, 2)):
        assert "image/png" in head
        assert_close(decode(body), reference(web.files["mf"], frame=frame))
    # one frame: one image, not a multipart
    r = get(web, instance_path("mf_jls") + "/frames/4/rendered",
            headers={"Accept": "image/png"})
    assert r.headers["Content-Type"] == "image/png"
    assert_close(decode(r.content), reference(web.files["mf"], frame=3))


def test_rendered_instance_series_study(web):
    r = get(web, instance_path("mf") + "/rendered")
    assert len(parse_multipart(r)) == 4            # every frame
    r = get(web, f"/dicom-web/studies/{ST_MF}/series/{ST_MF}.1/rendered",
            headers={"Accept": "image/png"})
    parts = parse_multipart(r)
    assert len(parts) == 8                         # two instances of 4 frames
    assert_close(decode(parts[5][1]), reference(web.files["mf"], frame=1))
    # the report is left out; the images are all there
    r = get(web, f"/dicom-web/studies/{ST_CR}/rendered")
    assert r.status_code == 200
    assert len(parse_multipart(r)) == 4


def test_thumbnails(web):
    for path in (f"/dicom-web/studies/{ST_CT}", f"/dicom-web/studies/{ST_CT}/series/{ST_CT}.1",
                 instance_path("ct"), instance_path("mf") + "/frames/2"):
        r = get(web, path + "/thumbnail")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["Content-Type"] == "image/jpeg"
        im = Image.open(io.BytesIO(r.content))
        assert max(im.size) <= 128
    # never enlarged: the 64 x 48 CT stays 64 x 48; the 512 x 512 frame is 128
    assert Image.open(io.BytesIO(get(web, instance_path("ct") + "/thumbnail").content)).size == (64, 48)
    r = get(web, instance_path("mf") + "/thumbnail", headers={"Accept": "image/png"})
    assert decode(r.content).shape == (128, 128)
    # a viewport sets the size; the series of reports and images finds an image
    r = get(web, instance_path("ct") + "/thumbnail", params={"viewport": "200,200"})
    assert Image.open(io.BytesIO(r.content)).size == (200, 150)
    r = get(web, f"/dicom-web/studies/{ST_CR}/thumbnail")
    assert r.status_code == 200


def test_rendered_errors(web):
    p = instance_path("ct") + "/rendered"
    for params in ({"window": "40"}, {"window": "40,0"}, {"window": "40,400,cubic"},
                   {"viewport": "9000,9000"}, {"viewport": "0,0"}, {"viewport": "a,b"},
                   {"viewport": "10,10,100,0,5,5"}, {"quality": "0"}, {"quality": "x"}):
        assert_json_error(get(web, p, params=params), 400)
    assert_json_error(get(web, instance_path("mf") + "/frames/5/rendered"), 404)
    assert_json_error(get(web, instance_path("mf") + "/frames/0/rendered"), 400)
    assert_json_error(get(web, instance_path("mf") + "/frames/1,x/rendered"), 400)
    assert_json_error(get(web, p, headers={"Accept": "image/gif"}), 406)
    assert_json_error(get(web, instance_path("sr") + "/rendered"), 406)
    missing = f"/dicom-web/studies/{ST_MISSING}"
    for path in (missing + "/rendered", missing + "/thumbnail",
                 f"{missing}/series/{ST_MISSING}.1/instances/{ST_MISSING}.1.1/rendered",
                 f"/dicom-web/studies/{ST_CT}/series/{ST_CT}.1/instances/{ST_MISSING}/rendered"):
        assert_json_error(get(web, path), 404)


# ---- WADO-URI ----------------------------------------------------------------------

def wado(web, name, **params):
    st, se, i = instance_path(name).split("/")[3::2]
    q = {"requestType": "WADO", "studyUID": st, "seriesUID": se, "objectUID": i}
    q.update(params)
    return get(web, "/wado", params=q)


def test_wado_uri_images(web):
    r = wado(web, "ct")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    r = wado(web, "ct", contentType="image/png", windowCenter="-600", windowWidth="1500")
    assert r.headers["Content-Type"] == "image/png"
    assert_close(decode(r.content), reference(web.files["ct"], window=(-600, 1500)))
    r = wado(web, "ct", columns="32")
    assert Image.open(io.BytesIO(r.content)).size == (32, 24)
    r = wado(web, "ct", rows="96", columns="400")
    assert Image.open(io.BytesIO(r.content)).size == (128, 96)
    r = wado(web, "mf_jls", contentType="image/png", frameNumber="2")
    assert_close(decode(r.content), reference(web.files["mf"], frame=1))
    r = wado(web, "ct", contentType="image/png", region="0.5,0,1,0.5")
    assert_close(decode(r.content), reference(web.files["ct"])[:24, 32:])


def test_wado_uri_dicom(web):
    r = wado(web, "ct_rle", contentType="application/dicom")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/dicom"
    assert r.content == open(web.files["ct_rle"], "rb").read()
    r = wado(web, "ct_rle", contentType="application/dicom",
             transferSyntax="1.2.840.10008.1.2.1")
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, pydicom.dcmread(web.files["ct"]).pixel_array)


def test_wado_uri_errors(web):
    assert_json_error(wado(web, "ct", requestType="XYZ"), 400)
    assert_json_error(wado(web, "ct", objectUID="not-a-uid"), 400)
    assert_json_error(wado(web, "ct", windowCenter="40"), 400)
    assert_json_error(wado(web, "ct", windowCenter="40", windowWidth="0"), 400)
    # WADO-URI has no window function: a third field smuggled in is refused
    assert_json_error(wado(web, "ct", windowCenter="40",
                           windowWidth="400,sigmoid"), 400)
    assert_json_error(wado(web, "ct", windowCenter="40,400",
                           windowWidth="400"), 400)
    assert_json_error(wado(web, "ct", rows="0"), 400)
    assert_json_error(wado(web, "ct", region="0.5,0.5,0.2,0.9"), 400)
    assert_json_error(wado(web, "ct", contentType="image/gif"), 406)
    assert_json_error(wado(web, "ct", contentType="application/dicom", rows="10"), 400)
    assert_json_error(wado(web, "mf", frameNumber="9"), 404)
    assert_json_error(wado(web, "sr"), 406)
    assert_json_error(wado(web, "ct", studyUID=ST_MISSING), 404)
    assert_json_error(wado(web, "ct", objectUID=ST_CT + ".1.99"), 404)
    # an object of another study is not found under this one
    assert_json_error(wado(web, "ct", studyUID=ST_CR), 404)
    r = get(web, "/wado", params={"requestType": "WADO"})
    assert_json_error(r, 400)


# ---- access: another department's study answers like a missing one -------------

def test_out_of_scope_study_is_not_found(images, tmp_path):
    root, files = images
    data = str(tmp_path / "data")
    agora("dept", "--data", data, "add", "radiology")
    agora("dept", "--data", data, "add", "oncology")
    agora("import", "--data", data, files["ct"], files["cr"])
    r = subprocess.run([AGORA, "user", "--data", data, "add", "rad", "--role", "radiologist",
                        "--department", "radiology", "--password-stdin"],
                       input="rad-password-1\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    srv = Server(data, "--http-port", str(port), anonymous=False)
    try:
        s = requests.Session()
        base = f"http://127.0.0.1:{port}"
        assert s.post(base + "/api/v1/login", json={"username": "rad", "password": "rad-password-1"},
                      timeout=30).status_code == 200
        # Neither study is assigned to radiology: both answer like ST_MISSING.
        q = {"requestType": "WADO", "studyUID": ST_CT, "seriesUID": ST_CT + ".1",
             "objectUID": ST_CT + ".1.1"}
        for params in (q, dict(q, studyUID=ST_MISSING)):
            r = s.get(base + "/wado", params=params, timeout=30)
            assert r.status_code == 404 and r.json() == {"error": "not found",
                                                         "detail": "no such study"}
        for study in (ST_CT, ST_MISSING):
            for res in ("rendered", "thumbnail"):
                r = s.get(f"{base}/dicom-web/studies/{study}/{res}", timeout=30)
                assert r.status_code == 404, r.text
        # Not logged in: 401, whatever the study.
        assert requests.get(base + "/wado", params=q, timeout=30).status_code == 401
    finally:
        srv.stop()
