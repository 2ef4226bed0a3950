#!/usr/bin/python3
"""Deterministic synthetic DICOM corpus for Agora's benchmarks.

Writes Part 10 files (Explicit VR Little Endian) with realistic CT/MR
attributes and a patient > study > series > instance hierarchy.  The same
preset and seed always give byte-identical files and the same UIDs.

Speed: one template per series is encoded once (every element that does not
change between instances, already in its Part 10 byte form); for each
instance only the SOP Instance UID, Instance Number, Image Position, Slice
Location, Content Time and the pixel bytes are encoded and the pieces are
joined.  pydicom is used for the data dictionary (VRs) and to verify samples.

Layout: OUT/s<k>/<series>/<n>.dcm with k = instance index mod 4, so that any
corpus (even one series) splits into four equal shards for four parallel
associations.  OUT/manifest.json describes the corpus; OUT/catalog.json lists
patients, studies and series (what queries and retrievals need).

Usage:
  gen_corpus.py --preset small|large|index|parse [--quick] --out DIR
  gen_corpus.py --patients 2 --studies 1 --series 1 --instances 10 \
                --rows 256 --cols 256 --modality CT --out DIR
Run with /usr/bin/python3 (Debian's python3-pydicom and python3-numpy).
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import time

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword

GENERATOR_VERSION = 3
UID_ROOT = "1.2.826.0.1.3680043.10.1447.99."
IMPL_CLASS_UID = "1.2.826.0.1.3680043.10.1447.99.0.1"
IMPL_VERSION = "AGORA_BENCH"
TS_EXPLICIT_LE = "1.2.840.10008.1.2.1"
SOP_CT = "1.2.840.10008.5.1.4.1.1.2"
SOP_MR = "1.2.840.10008.5.1.4.1.1.4"
SHARDS = 4

# name, patients, studies/patient, series/study, instances/series, rows,
# cols, modality ("CT", "MR" or "mix"), pixels ("phantom" or "flat")
PRESETS = {
    "small": dict(code=1, patients=100, studies=2, series=2, instances=10,
                  rows=64, cols=64, modality="mix", pixels="phantom"),
    "large": dict(code=2, patients=1, studies=1, series=1, instances=300,
                  rows=512, cols=512, modality="CT", pixels="phantom"),
    "index": dict(code=3, patients=5000, studies=2, series=2, instances=5,
                  rows=8, cols=8, modality="mix", pixels="flat"),
    "parse": dict(code=4, patients=4, studies=1, series=1, instances=250,
                  rows=512, cols=512, modality="CT", pixels="phantom"),
}
QUICK = {
    "small": dict(patients=10, studies=2, series=2, instances=5),    # 200
    "large": dict(instances=20),
    "index": dict(patients=250, studies=2, series=1, instances=2),   # 1000
    "parse": dict(patients=1, instances=100),
}

FAMILY = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA",
          "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ",
          "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE",
          "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE",
          "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON",
          "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES",
          "NGUYEN", "HILL", "FLORES", "MUELLER", "SCHMIDT", "DUBOIS",
          "ROSSI", "JANSSEN", "NOWAK", "SILVA", "KOWALSKI", "PETERS",
          "FISCHER"]
GIVEN_M = ["JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID",
           "RICHARD", "JOSEPH", "THOMAS", "CHARLES", "PIERRE", "LUCA",
           "JAN", "PAUL", "MARK", "KARL"]
GIVEN_F = ["MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA",
           "SUSAN", "JESSICA", "SARAH", "KAREN", "ANNA", "MARIE", "SOPHIE",
           "EVA", "LAURA", "JULIA"]
PHYSICIANS = ["HOUSE^GREGORY^^DR", "GREY^MEREDITH^^DR", "ROSS^DOUG^^DR",
              "CARTER^JOHN^^DR", "YANG^CRISTINA^^DR", "SHEPHERD^DEREK^^DR",
              "WEBBER^RICHARD^^DR", "BAILEY^MIRANDA^^DR"]
CT_PROTOCOLS = [  # body part, study description, series descriptions
    ("CHEST", "CT CHEST W/O CONTRAST", ["AX 1.25mm LUNG", "AX 5mm MEDIAST"]),
    ("ABDOMEN", "CT ABDOMEN PELVIS W CONTRAST",
     ["AX 2.5mm PORTAL", "COR 3mm MPR"]),
    ("HEAD", "CT HEAD W/O CONTRAST", ["AX 5mm BRAIN", "AX 0.625mm BONE"]),
    ("SPINE", "CT LUMBAR SPINE", ["AX 2mm BONE", "SAG 2mm MPR"]),
]
MR_PROTOCOLS = [
    ("BRAIN", "MR BRAIN W/WO CONTRAST", ["AX T2 FLAIR", "SAG T1 MPRAGE"]),
    ("KNEE", "MR KNEE LEFT W/O CONTRAST", ["COR PD FS", "SAG T2 FS"]),
    ("SPINE", "MR LUMBAR SPINE", ["SAG T2 TSE", "AX T1 TSE"]),
    ("ABDOMEN", "MR LIVER DYNAMIC", ["AX T1 VIBE", "AX T2 HASTE"]),
]
INSTITUTIONS = [("GENERAL HOSPITAL", "HOSP_A"), ("ST MARY CLINIC", "HOSP_B")]

# ---------------------------------------------------------------------------
# Explicit VR little endian encoding

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
VR_OVERRIDE = {0x7FE00010: "OW", 0x00280106: "US", 0x00280107: "US"}


def tag_of(keyword):
    t = tag_for_keyword(keyword)
    if t is None:
        raise KeyError(keyword)
    return t


def vr_of(tag):
    return VR_OVERRIDE.get(tag) or dictionary_VR(tag)


def encode_value(vr, value):
    if isinstance(value, (bytes, bytearray)):
        b = bytes(value)
    elif vr in ("US", "SS", "UL", "SL", "FL", "FD"):
        fmt = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f",
               "FD": "<d"}[vr]
        vals = value if isinstance(value, (list, tuple)) else [value]
        b = b"".join(struct.pack(fmt, v) for v in vals)
    else:
        if isinstance(value, (list, tuple)):
            value = "\\".join(str(v) for v in value)
        b = str(value).encode("ascii")
    if len(b) % 2:
        b += b"\0" if vr in ("UI", "OB") else b" "
    return b


def encode_element(tag, value, vr=None):
    vr = vr or vr_of(tag)
    b = encode_value(vr, value)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in LONG_VRS:
        head += struct.pack("<HI", 0, len(b))
    else:
        if len(b) > 0xFFFF:
            raise ValueError("value too long for %s" % vr)
        head += struct.pack("<H", len(b))
    return head + b


def ds_num(x):
    """DS text: at most 16 characters."""
    s = ("%.6f" % x).rstrip("0").rstrip(".")
    if s == "-0":
        s = "0"
    return s[:16]


class SeriesTemplate:
    """Pre-encoded static elements of one series; variable ones per call."""

    VARIABLE = [tag_of(k) for k in ("SOPInstanceUID", "ContentTime",
                                    "InstanceNumber", "ImagePositionPatient",
                                    "SliceLocation", "PixelData")]

    def __init__(self, static, sop_class):
        # static: {tag: (value, vr or None)}
        for t in self.VARIABLE:
            static.pop(t, None)
        tags = sorted(set(static) | set(self.VARIABLE))
        self.pieces = []   # bytes (a static run) or int (a variable tag)
        run = []
        for t in tags:
            if t in static:
                value, vr = static[t]
                run.append(encode_element(t, value, vr))
            else:
                if run:
                    self.pieces.append(b"".join(run))
                    run = []
                self.pieces.append(t)
        if run:
            self.pieces.append(b"".join(run))
        self.sop_class = sop_class
        self.meta_static_1 = encode_element(0x00020001, b"\x00\x01", "OB") + \
            encode_element(0x00020002, sop_class)
        self.meta_static_2 = encode_element(0x00020010, TS_EXPLICIT_LE) + \
            encode_element(0x00020012, IMPL_CLASS_UID) + \
            encode_element(0x00020013, IMPL_VERSION)

    def instance_bytes(self, variable):
        """variable: {tag: encoded element bytes}.  Returns the whole file."""
        sop_uid_el = encode_element(0x00020003, variable["_uid"])
        meta_body = self.meta_static_1 + sop_uid_el + self.meta_static_2
        parts = [b"\0" * 128, b"DICM",
                 encode_element(0x00020000, len(meta_body), "UL"), meta_body]
        for p in self.pieces:
            parts.append(p if isinstance(p, bytes) else variable[p])
        return b"".join(parts)


# ---------------------------------------------------------------------------
# Pixels

class PhantomMaker:
    """A simple CT/MR-like phantom: body ellipse, two 'lungs' or 'ventricles'
    that change size along z, a bone ring, noise.  uint16 stored values."""

    def __init__(self, rows, cols, modality, rng):
        self.rows, self.cols, self.modality = rows, cols, modality
        self.rng = np.random.default_rng(rng.randrange(1 << 30))
        y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
        self.yn = (y - rows / 2) / (rows / 2)
        self.xn = (x - cols / 2) / (cols / 2)
        self.body = (self.xn / 0.85) ** 2 + (self.yn / 0.65) ** 2 <= 1.0
        self.ring = ((self.xn / 0.80) ** 2 + (self.yn / 0.60) ** 2 >= 0.90) & \
            self.body

    def image(self, frac):
        """frac in [0,1): position of the slice in the series."""
        r = 0.15 + 0.15 * np.sin(np.pi * frac)
        left = ((self.xn + 0.4) ** 2 + self.yn ** 2) <= r * r
        right = ((self.xn - 0.4) ** 2 + self.yn ** 2) <= r * r
        if self.modality == "CT":   # stored = HU + 1024, 12 bits
            img = np.full((self.rows, self.cols), 0.0, np.float32)   # air
            img[self.body] = 1024 + 40
            img[self.ring] = 1024 + 700
            img[left | right] = 1024 - 800
            noise = 12.0
        else:
            img = np.full((self.rows, self.cols), 0.0, np.float32)
            img[self.body] = 600
            img[self.ring] = 250
            img[left | right] = 1400
            noise = 20.0
        img += self.rng.normal(0.0, noise, img.shape).astype(np.float32)
        np.clip(img, 0, 4095, out=img)
        return img.astype("<u2").tobytes()


# ---------------------------------------------------------------------------

def uid(parts):
    s = UID_ROOT + ".".join(str(int(p)) for p in parts)
    assert len(s) <= 64, s
    return s


def resolve_params(args):
    if args.preset:
        p = dict(PRESETS[args.preset])
        if args.quick:
            p.update(QUICK[args.preset])
        p["preset"] = args.preset + ("-quick" if args.quick else "")
    else:
        p = dict(code=9, patients=1, studies=1, series=1, instances=10,
                 rows=64, cols=64, modality="CT", pixels="phantom",
                 preset="custom")
    for k in ("patients", "studies", "series", "instances", "rows", "cols",
              "modality", "pixels"):
        v = getattr(args, k, None)
        if v is not None:
            p[k] = v
    p["seed"] = args.seed
    p["generator_version"] = GENERATOR_VERSION
    return p


def generate(p, out, log=True):
    rng = random.Random("agora-bench/%d/%d" % (p["seed"], p["code"]))
    seed, code = p["seed"], p["code"]
    rows, cols = p["rows"], p["cols"]
    flat_pixels = None
    if p["pixels"] == "flat":
        flat_pixels = encode_element(
            0x7FE00010,
            np.full(rows * cols, 1024, "<u2").tobytes(), "OW")
    for k in range(SHARDS):
        os.makedirs(os.path.join(out, "s%d" % k), exist_ok=True)

    catalog = {"patients": [], "studies": []}
    total_bytes = 0
    n_inst = 0
    n_series = 0
    t0 = time.time()
    base_date = datetime.date(2015, 1, 1)
    for pi in range(p["patients"]):
        sex = "F" if rng.random() < 0.5 else "M"
        given = rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
        family = rng.choice(FAMILY)
        pname = "%s^%s" % (family, given)
        pid = "PID%07d" % (code * 1000000 + pi)
        inst_name, issuer = INSTITUTIONS[pi % 2]
        birth = datetime.date(1930, 1, 1) + \
            datetime.timedelta(days=rng.randrange(0, 365 * 75))
        catalog["patients"].append({"PatientID": pid, "PatientName": pname,
                                    "IssuerOfPatientID": issuer})
        for si in range(p["studies"]):
            if p["modality"] == "mix":
                modality = "CT" if rng.random() < 0.55 else "MR"
            else:
                modality = p["modality"]
            body, sdesc, series_descs = rng.choice(
                CT_PROTOCOLS if modality == "CT" else MR_PROTOCOLS)
            sdate = base_date + datetime.timedelta(days=rng.randrange(0, 3650))
            stime = "%02d%02d%02d" % (rng.randrange(7, 20), rng.randrange(60),
                                      rng.randrange(60))
            age = max(0, (sdate - birth).days // 365)
            study_uid = uid([seed, code, 1, pi, si])
            frame_uid = uid([seed, code, 4, pi, si])
            accession = "A%d%08d" % (code, pi * 10 + si)
            study = {"StudyInstanceUID": study_uid, "PatientID": pid,
                     "PatientName": pname, "StudyDate": sdate.strftime("%Y%m%d"),
                     "ModalitiesInStudy": modality, "AccessionNumber": accession,
                     "series": []}
            catalog["studies"].append(study)
            for ri in range(p["series"]):
                series_uid = uid([seed, code, 2, pi, si, ri])
                n_series += 1
                sop = SOP_CT if modality == "CT" else SOP_MR
                spacing = round(0.5 + 0.3 * rng.random(), 4) * (512 / cols)
                thick = rng.choice([0.625, 1.25, 2.5, 5.0]) \
                    if modality == "CT" else rng.choice([1.0, 3.0, 4.0])
                fov_x = -spacing * cols / 2
                fov_y = -spacing * rows / 2
                z0 = -100.0 + rng.randrange(0, 200)
                st = {}

                def put(kw, value, vr=None):
                    st[tag_of(kw)] = (value, vr)
                put("SpecificCharacterSet", "ISO_IR 100")
                put("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"])
                put("InstanceCreationDate", sdate.strftime("%Y%m%d"))
                put("SOPClassUID", sop)
                put("StudyDate", sdate.strftime("%Y%m%d"))
                put("SeriesDate", sdate.strftime("%Y%m%d"))
                put("ContentDate", sdate.strftime("%Y%m%d"))
                put("StudyTime", stime)
                put("SeriesTime", stime)
                put("AccessionNumber", accession)
                put("Modality", modality)
                put("Manufacturer", "AGORA BENCH")
                put("InstitutionName", inst_name)
                put("ReferringPhysicianName", rng.choice(PHYSICIANS))
                put("StationName", "%s%02d" % (modality, 1 + pi % 3))
                put("StudyDescription", sdesc)
                put("SeriesDescription", series_descs[ri % len(series_descs)])
                put("ManufacturerModelName", "SYNTH-%s" % modality)
                put("PatientName", pname)
                put("PatientID", pid)
                put("IssuerOfPatientID", issuer)
                put("PatientBirthDate", birth.strftime("%Y%m%d"))
                put("PatientSex", sex)
                put("PatientAge", "%03dY" % min(age, 999))
                put("PatientWeight", ds_num(50 + rng.randrange(50)))
                put("BodyPartExamined", body)
                put("SliceThickness", ds_num(thick))
                put("PatientPosition", "HFS")
                if modality == "CT":
                    put("KVP", rng.choice(["100", "120", "140"]))
                    put("DataCollectionDiameter", "500")
                    put("ReconstructionDiameter", ds_num(spacing * cols))
                    put("GantryDetectorTilt", "0")
                    put("XRayTubeCurrent", str(rng.randrange(100, 400)))
                    put("ConvolutionKernel", rng.choice(["B30f", "B70f",
                                                         "STANDARD"]))
                    put("CTDIvol", round(5 + 10 * rng.random(), 2), "FD")
                else:
                    put("ScanningSequence", "SE")
                    put("SequenceVariant", "SK")
                    put("MRAcquisitionType", "2D")
                    put("RepetitionTime", ds_num(rng.choice([500, 2000, 9000])))
                    put("EchoTime", ds_num(rng.choice([12, 90, 120])))
                    put("MagneticFieldStrength", rng.choice(["1.5", "3"]))
                    put("ImagingFrequency", "123.2")
                    put("EchoTrainLength", "16")
                    put("FlipAngle", "90")
                put("StudyInstanceUID", study_uid)
                put("SeriesInstanceUID", series_uid)
                put("StudyID", str(1000 + si))
                put("SeriesNumber", str(ri + 1))
                put("AcquisitionNumber", "1")
                put("ImageOrientationPatient", ["1", "0", "0", "0", "1", "0"])
                put("FrameOfReferenceUID", frame_uid)
                put("PositionReferenceIndicator", "")
                put("SamplesPerPixel", 1)
                put("PhotometricInterpretation", "MONOCHROME2")
                put("Rows", rows)
                put("Columns", cols)
                put("PixelSpacing", [ds_num(spacing), ds_num(spacing)])
                put("BitsAllocated", 16)
                put("BitsStored", 12)
                put("HighBit", 11)
                put("PixelRepresentation", 0)
                if modality == "CT":
                    put("WindowCenter", ["40", "-600"])
                    put("WindowWidth", ["400", "1500"])
                    put("RescaleIntercept", "-1024")
                    put("RescaleSlope", "1")
                    put("RescaleType", "HU")
                else:
                    put("WindowCenter", "700")
                    put("WindowWidth", "1400")
                tmpl = SeriesTemplate(st, sop)
                phantom = None
                if flat_pixels is None:
                    phantom = PhantomMaker(rows, cols, modality, rng)
                series_dir = "%d-%d-%d" % (pi, si, ri)
                made_dirs = set()
                n = p["instances"]
                h, m, s = int(stime[0:2]), int(stime[2:4]), int(stime[4:6])
                for ii in range(n):
                    shard = n_inst % SHARDS
                    d = os.path.join(out, "s%d" % shard, series_dir)
                    if shard not in made_dirs:
                        os.makedirs(d, exist_ok=True)
                        made_dirs.add(shard)
                    z = z0 + ii * thick
                    secs = h * 3600 + m * 60 + s + ii
                    var = {
                        "_uid": uid([seed, code, 3, pi, si, ri, ii + 1]),
                        0x00080033: encode_element(
                            0x00080033, "%02d%02d%02d" % (
                                (secs // 3600) % 24, (secs // 60) % 60,
                                secs % 60)),
                        0x00200013: encode_element(0x00200013, str(ii + 1)),
                        0x00200032: encode_element(
                            0x00200032, [ds_num(fov_x), ds_num(fov_y),
                                         ds_num(z)]),
                        0x00201041: encode_element(0x00201041, ds_num(z)),
                        0x7FE00010: flat_pixels if phantom is None else
                        encode_element(0x7FE00010,
                                       phantom.image(ii / max(1, n)), "OW"),
                    }
                    var[0x00080018] = encode_element(0x00080018, var["_uid"])
                    data = tmpl.instance_bytes(var)
                    with open(os.path.join(d, "%d.dcm" % (ii + 1)), "wb") as f:
                        f.write(data)
                    total_bytes += len(data)
                    n_inst += 1
                study["series"].append({"SeriesInstanceUID": series_uid,
                                        "Modality": modality,
                                        "instances": n,
                                        "first_sop_instance_uid":
                                        uid([seed, code, 3, pi, si, ri, 1])})
        if log and pi and pi % 1000 == 0:
            print("  %s: %d instances, %.0f/s" % (
                p["preset"], n_inst, n_inst / (time.time() - t0)),
                file=sys.stderr)
    manifest = dict(p)
    manifest.update(instances_total=n_inst, series_total=n_series,
                    studies_total=len(catalog["studies"]),
                    patients_total=len(catalog["patients"]),
                    bytes_total=total_bytes, shards=SHARDS,
                    seconds=round(time.time() - t0, 2))
    with open(os.path.join(out, "catalog.json"), "w") as f:
        json.dump(catalog, f)
    # manifest last: its presence means the corpus is complete
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def params_key(p):
    keys = ("code", "patients", "studies", "series", "instances", "rows",
            "cols", "modality", "pixels", "seed", "generator_version")
    return hashlib.sha256(json.dumps([p[k] for k in keys]).encode()).hexdigest()


def ensure(p, out, log=True):
    """Generate unless out/ already holds exactly this corpus."""
    mpath = os.path.join(out, "manifest.json")
    if os.path.exists(mpath):
        try:
            with open(mpath) as f:
                m = json.load(f)
            if params_key(m) == params_key(p):
                return m, False
        except (ValueError, KeyError):
            pass
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    return generate(p, out, log), True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--quick", action="store_true",
                    help="the tiny CI-sized variant of the preset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--patients", type=int)
    ap.add_argument("--studies", type=int, help="studies per patient")
    ap.add_argument("--series", type=int, help="series per study")
    ap.add_argument("--instances", type=int, help="instances per series")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--cols", type=int)
    ap.add_argument("--modality", choices=["CT", "MR", "mix"])
    ap.add_argument("--pixels", choices=["phantom", "flat"])
    ap.add_argument("--force", action="store_true",
                    help="regenerate even if the manifest matches")
    args = ap.parse_args()
    p = resolve_params(args)
    if args.force and os.path.exists(args.out):
        shutil.rmtree(args.out)
    m, made = ensure(p, args.out)
    print("%s %s: %d instances, %d series, %d studies, %d patients, "
          "%.1f MB%s" % ("generated" if made else "up to date", args.out,
                         m["instances_total"], m["series_total"],
                         m["studies_total"], m["patients_total"],
                         m["bytes_total"] / 1e6,
                         " in %.1f s" % m["seconds"] if made else ""))


if __name__ == "__main__":
    main()
