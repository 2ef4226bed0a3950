/*
 * capabilities.c — the Retrieve Capabilities transaction (PS3.18 §8.9): a
 * machine-readable description of the DICOMweb services this origin server
 * implements, as a WADL document (PS3.18 Annex H; WADL, W3C Member
 * Submission 2009, namespace http://wadl.dev.java.net/2009/02).
 *
 *   OPTIONS /dicom-web[/{resource}...]   (not a CORS preflight)
 *   GET     /dicom-web/capabilities      (for tools that cannot send OPTIONS)
 *
 * Content negotiation: application/vnd.sun.wadl+xml, the default, or
 * application/json (PS3.18 §6.8.1.1.2 of the 2017 editions names both);
 * 406 when the Accept header allows neither.
 *
 * Everything comes from one table, RESOURCES[] below, which follows the
 * routers (dicomweb.c, rendered.c): resource paths as URI templates
 * relative to the service base, their methods with the PS3.18 transaction
 * names, query and header parameters, and the media types of requests and
 * responses.  The table becomes one jansson tree, which is sent as JSON or
 * serialised as WADL, so both forms describe the same thing.  The JSON form
 * is the WADL tree itself (docs/api.md): an element is an object, its
 * attributes are string or boolean members, its <doc> is "doc", and
 * repeated child elements are arrays named like the element.
 *
 * OPTIONS on the base (or GET .../capabilities) describes every resource;
 * OPTIONS on a resource below it describes that resource and its children
 * (PS3.18 §6.8.1.2 of the 2017 editions), matched on the path's shape only
 * (no index lookup: a UID in the path reveals nothing); a path that is no
 * resource answers 404.
 */
#include "web_int.h"
#include "codec/codec.h"

#include <jansson.h>
#include <string.h>

#define WADL_MEDIA "application/vnd.sun.wadl+xml"
#define JSON_MEDIA "application/json"
#define WADL_NS "http://wadl.dev.java.net/2009/02"
#define XSD_NS "http://www.w3.org/2001/XMLSchema"
#define DOC_MAX ((size_t)1 << 20)   /* the document: about 80 KB of WADL */
#define HOST_MAX 255                /* RFC 1035 name length */

/* The bulk data template segment takes the rest of the path: an
 * attribute's tag, or tag/item/tag... into sequences (dicomweb.c). */
#define BULK_PATH "{attributePath}"

/* ---- the table ----------------------------------------------------------- */

#define CAP_REQUIRED 1u
#define CAP_REPEATING 2u

typedef struct CapParam {
    const char *name;              /* NULL ends a group */
    const char *style;             /* "query" or "header" */
    const char *type;              /* XML Schema type */
    const char *dflt;              /* NULL: none */
    const char *const *options;    /* NULL-terminated; NULL: any value */
    unsigned flags;                /* CAP_REQUIRED, CAP_REPEATING */
    const char *doc;
} CapParam;

/* Instance retrieval: the transfer syntaxes this build can produce are
 * added to the options of the Accept parameter whose options are these. */
#define MP_DICOM "multipart/related; type=\"application/dicom\""
#define MP_OCTETS "multipart/related; type=\"application/octet-stream\""
static const char *const DICOM_ACCEPT[] = {
    MP_DICOM,
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    NULL,
};

typedef struct CapMethod {
    const char *name;              /* GET, POST */
    const char *id;                /* the PS3.18 transaction (Table H-1) */
    const char *doc;
    const CapParam *params[6];     /* groups, NULL-terminated */
    const char *const *request;    /* body media types, or NULL */
    const char *status;            /* success statuses (a WADL list) */
    const char *const *response;   /* their media types */
    const char *errors;            /* statuses of JSON error bodies */
} CapMethod;

typedef struct CapResource {
    const char *path;              /* template, relative to the base */
    const CapMethod *methods[3];   /* NULL-terminated */
} CapResource;

/* QIDO-RS query parameters (PS3.18 §8.3.4, dicomweb.c web__qido_param). */
static const char *const BOOL_OPTIONS[] = {"true", "false", NULL};
static const char *const QIDO_MEDIA[] = {"application/dicom+json", NULL};

static const CapParam QIDO_COMMON[] = {
    {"includefield", "query", "xsd:string", NULL, NULL, CAP_REPEATING,
     "attribute keywords or tags (ggggeeee), comma-separated, or all: "
     "further attributes to return (PS3.18 §8.3.4.3)"},
    {"fuzzymatching", "query", "xsd:boolean", "false", BOOL_OPTIONS, 0,
     "true: person names match without regard to case"},
    {"limit", "query", "xsd:unsignedInt", NULL, NULL, 0,
     "at most this many results; a response cut short carries a Warning "
     "(299) header"},
    {"offset", "query", "xsd:unsignedInt", "0", NULL, 0,
     "results to skip"},
    {"Accept", "header", "xsd:string", "application/dicom+json", QIDO_MEDIA,
     0, NULL},
    {0},
};

/* Matching keys the index holds (src/store/query.c), by level.  Any other
 * attribute of the data dictionary may be given too; it is matched
 * against the instances' metadata. */
#define KEY(kw, what) \
    {kw, "query", "xsd:string", NULL, NULL, CAP_REPEATING, what}
#define M_TEXT "exact value, or a pattern with * and ?"
#define M_PN "person name: exact, or a pattern with * and ?"
#define M_DATE "date YYYYMMDD, or a range FROM-TO (either end may be empty)"
#define M_TIME "time HHMMSS, or a range FROM-TO"
#define M_UID "UID; repeated (or separated by \\) for a list"
#define M_NUMBER "number: exact value"

static const CapParam PATIENT_KEYS[] = {
    KEY("PatientName", M_PN), KEY("PatientID", M_TEXT),
    KEY("IssuerOfPatientID", M_TEXT), KEY("PatientBirthDate", M_DATE),
    KEY("PatientSex", M_TEXT), {0},
};

static const CapParam STUDY_KEYS[] = {
    KEY("StudyInstanceUID", M_UID), KEY("StudyDate", M_DATE),
    KEY("StudyTime", M_TIME), KEY("AccessionNumber", M_TEXT),
    KEY("StudyID", M_TEXT), KEY("StudyDescription", M_TEXT),
    KEY("ReferringPhysicianName", M_PN),
    KEY("ModalitiesInStudy", "modality: matches a study with a series of "
        "it"), {0},
};

static const CapParam STUDY_COUNTS[] = {
    KEY("NumberOfStudyRelatedSeries", M_NUMBER),
    KEY("NumberOfStudyRelatedInstances", M_NUMBER), {0},
};

static const CapParam SERIES_KEYS[] = {
    KEY("SeriesInstanceUID", M_UID), KEY("Modality", M_TEXT),
    KEY("SeriesNumber", M_NUMBER), KEY("SeriesDescription", M_TEXT),
    KEY("BodyPartExamined", M_TEXT), KEY("SeriesDate", M_DATE),
    KEY("SeriesTime", M_TIME), KEY("StationName", M_TEXT),
    KEY("InstitutionName", M_TEXT), KEY("InstitutionalDepartmentName", M_TEXT),
    KEY("Manufacturer", M_TEXT), {0},
};

static const CapParam SERIES_COUNTS[] = {
    KEY("NumberOfSeriesRelatedInstances", M_NUMBER), {0},
};

static const CapParam INSTANCE_KEYS[] = {
    KEY("SOPInstanceUID", M_UID), KEY("SOPClassUID", M_UID),
    KEY("InstanceNumber", M_NUMBER), KEY("Rows", M_NUMBER),
    KEY("Columns", M_NUMBER), KEY("NumberOfFrames", M_NUMBER),
    KEY("ContentDate", M_DATE), KEY("ContentTime", M_TIME),
    KEY("AvailableTransferSyntaxUID", M_UID), {0},
};

#define QIDO_DOC "Matching keys: the attributes listed, or any other " \
    "attribute keyword or tag (ggggeeee) of the level, matched against " \
    "the instances' metadata (PS3.18 §8.3.4.1)."
#define QIDO_ERRORS "400 401 403"
#define SEARCH(ident, ...) (&(const CapMethod){"GET", ident, QIDO_DOC, \
    {QIDO_COMMON, __VA_ARGS__, NULL}, NULL, "200", QIDO_MEDIA, QIDO_ERRORS})

/* WADO-RS (PS3.18 §10.4; dicomweb.c wado, metadata, frames, bulkdata). */
static const CapParam RETRIEVE_PARAMS[] = {
    {"Accept", "header", "xsd:string", MP_DICOM, DICOM_ACCEPT, 0,
     "Explicit VR Little Endian when no transfer-syntax is named (instances "
     "stored lossy are sent as stored); transfer-syntax=* sends them as "
     "stored; a named syntax is transcoded to when the stored one can be "
     "decoded (PS3.18 §8.7.3)"},
    {0},
};
static const char *const RETRIEVE_MEDIA[] = {MP_DICOM, NULL};
#define WADO_ERRORS "400 401 403 404 406"
#define RETRIEVE(ident) (&(const CapMethod){"GET", ident, NULL, \
    {RETRIEVE_PARAMS, NULL}, NULL, "200", RETRIEVE_MEDIA, WADO_ERRORS})

/* One instance may also come as a single part (dicomweb.c wado_single). */
static const char *const INSTANCE_ACCEPT[] = {
    MP_DICOM,
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    "application/dicom",
    "application/dicom; transfer-syntax=*",
    NULL,
};
static const CapParam INSTANCE_PARAMS[] = {
    {"Accept", "header", "xsd:string", MP_DICOM, INSTANCE_ACCEPT, 0,
     "As for a study or series; application/dicom (no multipart) sends the "
     "instance as a single part (PS3.18 §8.7)"},
    {0},
};
static const char *const INSTANCE_MEDIA[] = {MP_DICOM, "application/dicom",
                                             NULL};

static const CapParam METADATA_PARAMS[] = {
    {"Accept", "header", "xsd:string", "application/dicom+json", QIDO_MEDIA,
     0, NULL},
    {"Accept-Encoding", "header", "xsd:string", NULL, NULL, 0,
     "gzip: the response is compressed"},
    {0},
};
#define METADATA(ident) (&(const CapMethod){"GET", ident, NULL, \
    {METADATA_PARAMS, NULL}, NULL, "200", QIDO_MEDIA, "401 403 404"})

static const char *const FRAME_ACCEPT[] = {
    "multipart/related; type=\"application/octet-stream\"",
    "multipart/related; type=\"application/octet-stream\"; "
    "transfer-syntax=*",
    "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/jls\"",
    "multipart/related; type=\"image/jp2\"",
    "multipart/related; type=\"image/jpx\"",
    "multipart/related; type=\"image/jphc\"",
    "multipart/related; type=\"image/dicom-rle\"",
    "multipart/related; type=\"*\"",
    NULL,
};
static const CapParam FRAME_PARAMS[] = {
    {"Accept", "header", "xsd:string", MP_OCTETS, FRAME_ACCEPT, 0,
     "octet-stream: uncompressed little endian (compressed frames decoded); "
     "an image type: its default syntax, or the one named by "
     "transfer-syntax=, re-encoded when the stored one differs and a codec "
     "can; transfer-syntax=* or type=\"*\": as stored (PS3.18 §8.7.3.3)"},
    {0},
};
static const char *const FRAME_MEDIA[] = {
    "multipart/related; type=\"application/octet-stream\"",
    "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/jls\"",
    "multipart/related; type=\"image/jp2\"",
    "multipart/related; type=\"image/jpx\"",
    "multipart/related; type=\"image/jphc\"",
    "multipart/related; type=\"image/dicom-rle\"",
    NULL,
};

static const char *const BULK_MEDIA[] = {MP_OCTETS, NULL};
static const CapParam BULK_PARAMS[] = {
    {"Accept", "header", "xsd:string", MP_OCTETS, BULK_MEDIA, 0,
     "7FE00010 (pixel data) negotiates like frames"},
    {0},
};

/* Rendered and thumbnail (PS3.18 §8.3.5, rendered.c rs_params). */
static const char *const RENDERED_ACCEPT[] = {
    "image/jpeg", "image/png", "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/png\"", NULL,
};
static const CapParam RENDERED_PARAMS[] = {
    {"accept", "query", "xsd:string", "image/jpeg", RENDERED_ACCEPT, 0,
     "overrides the Accept header"},
    {"quality", "query", "xsd:unsignedInt", NULL, NULL, 0,
     "JPEG quality, 1..100"},
    {"window", "query", "xsd:string", NULL, NULL, 0,
     "center,width,function (linear, linear-exact or sigmoid)"},
    {"viewport", "query", "xsd:string", NULL, NULL, 0,
     "vw,vh[,sx,sy,sw,sh]: output size, optionally of a source region"},
    {"Accept", "header", "xsd:string", "image/jpeg", RENDERED_ACCEPT, 0,
     NULL},
    {0},
};
static const char *const RENDERED_MEDIA[] = {
    "image/jpeg", "image/png", "multipart/related; type=\"image/jpeg\"",
    "multipart/related; type=\"image/png\"", NULL,
};
static const char *const THUMBNAIL_MEDIA[] = {"image/jpeg", "image/png",
                                              NULL};
#define RENDER_ERRORS "400 401 403 404 406 501"
#define RENDERED(ident) (&(const CapMethod){"GET", ident, "One image for " \
    "a single frame, else multipart/related of every frame.", \
    {RENDERED_PARAMS, NULL}, NULL, "200", RENDERED_MEDIA, RENDER_ERRORS})
#define THUMBNAIL(ident) (&(const CapMethod){"GET", ident, "A small " \
    "image (128 pixels unless a viewport says) of a representative frame.", \
    {RENDERED_PARAMS, NULL}, NULL, "200", THUMBNAIL_MEDIA, RENDER_ERRORS})

/* STOW-RS (PS3.18 §10.5, dicomweb.c web__stow). */
static const char *const STOW_BODY[] = {
    "multipart/related; type=\"application/dicom\"",
    "multipart/related; type=\"application/dicom+json\"", NULL,
};
#define STOW_DOC "200: all stored, 202: some failed, 409: none stored; the " \
    "body lists each instance (PS3.18 §10.5.3).  dicom+json metadata parts " \
    "take their bulk data from further parts by BulkDataURI."
#define STORE(ident) (&(const CapMethod){"POST", ident, STOW_DOC, \
    {NULL}, STOW_BODY, "200 202 409", QIDO_MEDIA, "400 401 403 413 415"})

#define P_STUDY "studies/{study}"
#define P_SERIES P_STUDY "/series/{series}"
#define P_INSTANCE P_SERIES "/instances/{instance}"
#define P_FRAMES P_INSTANCE "/frames/{frames}"

/* In depth-first order: a resource's children follow it, and nesting is
 * by path prefix (PS3.18 Table H-1, as far as Agora implements it). */
static const CapResource RESOURCES[] = {
    {"studies", {SEARCH("SearchForStudies", PATIENT_KEYS, STUDY_KEYS,
                        STUDY_COUNTS),
                 STORE("StoreInstances")}},
    {P_STUDY, {RETRIEVE("RetrieveStudy"), STORE("StoreStudyInstances")}},
    {P_STUDY "/metadata", {METADATA("RetrieveStudyMetadata")}},
    {P_STUDY "/rendered", {RENDERED("RetrieveRenderedStudy")}},
    {P_STUDY "/thumbnail", {THUMBNAIL("RetrieveStudyThumbnail")}},
    {P_STUDY "/series", {SEARCH("SearchForStudySeries", PATIENT_KEYS,
                              STUDY_KEYS, SERIES_KEYS, SERIES_COUNTS)}},
    {P_SERIES, {RETRIEVE("RetrieveSeries")}},
    {P_SERIES "/metadata", {METADATA("RetrieveSeriesMetadata")}},
    {P_SERIES "/rendered", {RENDERED("RetrieveRenderedSeries")}},
    {P_SERIES "/thumbnail", {THUMBNAIL("RetrieveSeriesThumbnail")}},
    {P_SERIES "/instances", {SEARCH("SearchForStudySeriesInstances",
                                  PATIENT_KEYS, STUDY_KEYS, SERIES_KEYS,
                                  INSTANCE_KEYS)}},
    {P_INSTANCE, {&(const CapMethod){"GET", "RetrieveInstance", NULL,
                  {INSTANCE_PARAMS, NULL}, NULL, "200", INSTANCE_MEDIA,
                  WADO_ERRORS}}},
    {P_INSTANCE "/metadata", {METADATA("RetrieveInstanceMetadata")}},
    {P_INSTANCE "/rendered", {RENDERED("RetrieveRenderedInstance")}},
    {P_INSTANCE "/thumbnail", {THUMBNAIL("RetrieveInstanceThumbnail")}},
    {P_FRAMES, {&(const CapMethod){"GET", "RetrieveFrames", NULL,
                                 {FRAME_PARAMS, NULL}, NULL, "200",
                                 FRAME_MEDIA, WADO_ERRORS}}},
    {P_FRAMES "/rendered", {RENDERED("RetrieveRenderedFrames")}},
    {P_FRAMES "/thumbnail", {THUMBNAIL("RetrieveFramesThumbnail")}},
    {P_INSTANCE "/bulkdata/" BULK_PATH,
     {&(const CapMethod){"GET", "RetrieveBulkdata", "The BulkDataURI "
                         "values of the metadata point here.",
                         {BULK_PARAMS, NULL}, NULL, "200", BULK_MEDIA,
                         WADO_ERRORS}}},
    {P_STUDY "/instances", {SEARCH("SearchForStudyInstances", PATIENT_KEYS,
                                 STUDY_KEYS, SERIES_KEYS, INSTANCE_KEYS)}},
    {"series", {SEARCH("SearchForSeries", PATIENT_KEYS, STUDY_KEYS,
                       SERIES_KEYS, SERIES_COUNTS)}},
    {"instances", {SEARCH("SearchForInstances", PATIENT_KEYS, STUDY_KEYS,
                          SERIES_KEYS, INSTANCE_KEYS)}},
};
#define NRESOURCES (sizeof RESOURCES / sizeof RESOURCES[0])

/* WADO-URI (PS3.18 §9, rendered.c web__wado_uri): its own base, the
 * origin's root. */
static const char *const URI_TYPES[] = {"image/jpeg", "image/png",
                                        "application/dicom", NULL};
static const char *const WADO_OPTIONS[] = {"WADO", NULL};
static const CapParam URI_PARAMS[] = {
    {"requestType", "query", "xsd:string", NULL, WADO_OPTIONS, CAP_REQUIRED,
     NULL},
    {"studyUID", "query", "xsd:string", NULL, NULL, CAP_REQUIRED, NULL},
    {"seriesUID", "query", "xsd:string", NULL, NULL, CAP_REQUIRED, NULL},
    {"objectUID", "query", "xsd:string", NULL, NULL, CAP_REQUIRED, NULL},
    {"contentType", "query", "xsd:string", "image/jpeg", URI_TYPES, 0,
     "a comma-separated list in order of preference"},
    {"transferSyntax", "query", "xsd:string", NULL, NULL, 0,
     "application/dicom only: transcode to this syntax"},
    {"rows", "query", "xsd:unsignedInt", NULL, NULL, 0, NULL},
    {"columns", "query", "xsd:unsignedInt", NULL, NULL, 0, NULL},
    {"region", "query", "xsd:string", NULL, NULL, 0,
     "x1,y1,x2,y2 as fractions of the image"},
    {"windowCenter", "query", "xsd:decimal", NULL, NULL, 0, NULL},
    {"windowWidth", "query", "xsd:decimal", NULL, NULL, 0, NULL},
    {"frameNumber", "query", "xsd:unsignedInt", NULL, NULL, 0, NULL},
    {"imageQuality", "query", "xsd:unsignedInt", NULL, NULL, 0,
     "1..100"},
    {0},
};
static const CapResource URI_RESOURCE = {
    "wado", {&(const CapMethod){"GET", "URIRetrieveInstance", "WADO-URI "
                                "(PS3.18 §9).", {URI_PARAMS, NULL}, NULL,
                                "200", URI_TYPES, WADO_ERRORS}},
};

/* The template parameters of the paths. */
static const struct {
    const char *name, *doc;
} TEMPLATES[] = {
    {"study", "Study Instance UID"},
    {"series", "Series Instance UID"},
    {"instance", "SOP Instance UID"},
    {"frames", "frame numbers from 1, comma-separated (at most 256)"},
    {"attributePath", "an attribute's tag (ggggeeee), or tag/item/tag/... "
     "into sequences, items counted from 0"},
};

/* ---- the tree ------------------------------------------------------------ */

/* A failed allocation anywhere is counted, and the tree is then thrown
 * away whole.  jansson's _new setters take their value even when they
 * fail, and fail for a NULL object or value. */
typedef struct Tree {
    int failed;
} Tree;

static void set(Tree *t, json_t *o, const char *k, json_t *v)
{
    if (json_object_set_new(o, k, v) != 0) {
        t->failed++;
    }
}

static void set_str(Tree *t, json_t *o, const char *k, const char *v)
{
    if (v != NULL) {
        set(t, o, k, json_string(v));
    }
}

static void push(Tree *t, json_t *a, json_t *v)
{
    if (json_array_append_new(a, v) != 0) {
        t->failed++;
    }
}

/* The array member k of o, created empty when absent. */
static json_t *list(Tree *t, json_t *o, const char *k)
{
    json_t *a = json_object_get(o, k);
    if (a == NULL) {
        set(t, o, k, json_array());
        a = json_object_get(o, k);
    }
    return a;
}

static json_t *representation(Tree *t, const char *media)
{
    json_t *r = json_object();
    set_str(t, r, "mediaType", media);
    return r;
}

static void option(Tree *t, json_t *p, const char *value)
{
    json_t *o = json_object();
    set_str(t, o, "value", value);
    push(t, list(t, p, "option"), o);
}

/* The syntaxes an instance can be sent in: the native ones written for
 * the web (PS3.18 §8.7.3 rules out Implicit VR Little Endian and Explicit
 * VR Big Endian; the JPIP syntaxes reference pixels elsewhere) and those
 * a codec here encodes. */
static void producible_syntaxes(Tree *t, json_t *p)
{
    for (size_t i = 0; i < dicom_ts_count(); i++) {
        const DicomTransferSyntax *ts = dicom_ts_at(i);
        bool ok = ts->encapsulated
            ? !ts->retired && codec_can_encode(ts->uid)
            : strcmp(ts->uid, DICOM_TS_EXPLICIT_LE) == 0 ||
              strcmp(ts->uid, DICOM_TS_DEFLATED_LE) == 0;
        if (ok) {
            char v[160];
            ag_fmt(v, sizeof v, MP_DICOM "; transfer-syntax=%s", ts->uid);
            option(t, p, v);
        }
    }
}

static json_t *param(Tree *t, const CapParam *cp)
{
    json_t *p = json_object();
    set_str(t, p, "doc", cp->doc);
    set_str(t, p, "name", cp->name);
    set_str(t, p, "style", cp->style);
    set_str(t, p, "type", cp->type);
    set_str(t, p, "default", cp->dflt);
    set(t, p, "required", json_boolean(cp->flags & CAP_REQUIRED));
    set(t, p, "repeating", json_boolean(cp->flags & CAP_REPEATING));
    for (const char *const *o = cp->options; o != NULL && *o != NULL; o++) {
        option(t, p, *o);
    }
    if (cp->options == DICOM_ACCEPT || cp->options == INSTANCE_ACCEPT) {
        producible_syntaxes(t, p);
    }
    return p;
}

static json_t *response(Tree *t, const char *status,
                        const char *const *media)
{
    json_t *r = json_object();
    set_str(t, r, "status", status);
    json_t *reps = list(t, r, "representation");
    for (const char *const *m = media; *m != NULL; m++) {
        push(t, reps, representation(t, *m));
    }
    return r;
}

static json_t *method(Tree *t, const CapMethod *cm)
{
    json_t *m = json_object();
    set_str(t, m, "doc", cm->doc);
    set_str(t, m, "name", cm->name);
    set_str(t, m, "id", cm->id);
    json_t *req = json_object();
    for (int g = 0; cm->params[g] != NULL; g++) {
        for (const CapParam *cp = cm->params[g]; cp->name != NULL; cp++) {
            push(t, list(t, req, "param"), param(t, cp));
        }
    }
    for (const char *const *b = cm->request; b != NULL && *b != NULL; b++) {
        push(t, list(t, req, "representation"), representation(t, *b));
    }
    if (json_object_size(req) > 0) {
        set(t, m, "request", req);
    } else {
        json_decref(req);
    }
    json_t *resps = list(t, m, "response");
    push(t, resps, response(t, cm->status, cm->response));
    static const char *const ERROR_MEDIA[] = {JSON_MEDIA, NULL};
    push(t, resps, response(t, cm->errors, ERROR_MEDIA));
    return m;
}

/* A resource element: path, one template param per {name} in it, the
 * methods (children are added by the caller). */
static json_t *resource(Tree *t, const CapResource *cr, const char *path)
{
    json_t *r = json_object();
    set_str(t, r, "path", path);
    for (const char *p = strchr(path, '{'); p != NULL;
         p = strchr(p + 1, '{')) {
        size_t n = strcspn(p + 1, "}");
        for (size_t i = 0; i < sizeof TEMPLATES / sizeof TEMPLATES[0]; i++) {
            if (strlen(TEMPLATES[i].name) == n &&
                strncmp(TEMPLATES[i].name, p + 1, n) == 0) {
                json_t *tp = json_object();
                set_str(t, tp, "doc", TEMPLATES[i].doc);
                set_str(t, tp, "name", TEMPLATES[i].name);
                set_str(t, tp, "style", "template");
                set_str(t, tp, "type", "xsd:string");
                set(t, tp, "required", json_true());
                push(t, list(t, r, "param"), tp);
            }
        }
    }
    for (int i = 0; cr->methods[i] != NULL; i++) {
        push(t, list(t, r, "method"), method(t, cr->methods[i]));
    }
    return r;
}

/* Is parent's path a proper prefix of child's, at a segment boundary? */
static bool under(const char *parent, const char *child)
{
    size_t n = strlen(parent);
    return strncmp(parent, child, n) == 0 && child[n] == '/';
}

/* Does a request path (segments after /dicom-web) have the shape of a
 * table path?  {name} takes one segment, the bulk data path the rest. */
static bool path_matches(const char *tmpl, char **seg, int nseg)
{
    int i = 0;
    for (const char *p = tmpl; *p != '\0'; i++) {
        size_t n = strcspn(p, "/");
        if (strncmp(p, BULK_PATH, n) == 0 && n == strlen(BULK_PATH)) {
            return i < nseg;
        }
        if (i == nseg || (p[0] != '{' && (strlen(seg[i]) != n ||
                                          strncmp(p, seg[i], n) != 0))) {
            return false;
        }
        p += n + (p[n] == '/');
    }
    return i == nseg;
}

/*
 * Resources first..end of RESOURCES[] nested by path prefix: a stack of
 * the open resources, each child's path relative to its parent's (the
 * first one's relative to the base).
 */
static void add_resources(Tree *t, json_t *into, size_t first, size_t end)
{
    json_t *obj[NRESOURCES];   /* references held while open */
    size_t idx[NRESOURCES];
    int top = -1;
    for (size_t i = first; i < end; i++) {
        const char *path = RESOURCES[i].path;
        while (top >= 0 && !under(RESOURCES[idx[top]].path, path)) {
            json_decref(obj[top--]);
        }
        const char *rel = top < 0 ? path
            : path + strlen(RESOURCES[idx[top]].path) + 1;
        json_t *r = resource(t, &RESOURCES[i], rel);
        push(t, list(t, top < 0 ? into : obj[top], "resource"),
             json_incref(r));
        if (r != NULL) {
            idx[++top] = i;
            obj[top] = r;
        }
    }
    while (top >= 0) {
        json_decref(obj[top--]);
    }
}

/* A resources element added to app; the caller holds a reference to it
 * too (it outlives a failed push) and drops it. */
static json_t *resources_element(Tree *t, json_t *app, const char *base)
{
    json_t *rs = json_object();
    set_str(t, rs, "base", base);
    push(t, list(t, app, "resources"), json_incref(rs));
    return rs;
}

/*
 * The document's tree for seg[0..nseg) after /dicom-web (nseg 0: every
 * resource, WADO-URI included).  origin: "http://host:port", or "" for
 * bases relative to the origin.  *out is the caller's to json_decref.
 */
static int build_tree(const char *origin, char **seg, int nseg, json_t **out,
                      AgError *err)
{
    size_t first = 0, end = NRESOURCES;
    if (nseg > 0) {
        while (first < NRESOURCES &&
               !path_matches(RESOURCES[first].path, seg, nseg)) {
            first++;
        }
        if (first == NRESOURCES) {
            return ag_error_set(err, AG_ERR_NOTFOUND, "no such DICOMweb "
                                "resource");
        }
        end = first + 1;
        while (end < NRESOURCES &&
               under(RESOURCES[first].path, RESOURCES[end].path)) {
            end++;
        }
    }
    Tree t = {0};
    json_t *app = json_object();
    set_str(&t, app, "doc", "Agora DICOMweb services (PS3.18): QIDO-RS, "
            "WADO-RS and STOW-RS under the first base, WADO-URI under the "
            "second.  Requests need a session, a bearer token or HTTP Basic "
            "credentials unless the server is anonymous; errors have JSON "
            "bodies {\"error\", \"detail\"}.");
    char base[HOST_MAX + 32];
    ag_fmt(base, sizeof base, "%s/dicom-web/", origin);
    json_t *rs = resources_element(&t, app, base);
    add_resources(&t, rs, first, end);
    json_decref(rs);
    if (nseg == 0) {
        ag_fmt(base, sizeof base, "%s/", origin);
        rs = resources_element(&t, app, base);
        push(&t, list(&t, rs, "resource"),
             resource(&t, &URI_RESOURCE, URI_RESOURCE.path));
        json_decref(rs);
    }
    if (t.failed > 0 || app == NULL) {
        json_decref(app);
        return ag_error_set(err, AG_ERR_NOMEM, "capabilities: out of "
                            "memory");
    }
    *out = app;
    return AG_OK;
}

/* ---- WADL ---------------------------------------------------------------- */

/* The document being written, WADL or JSON; rc keeps the first failure
 * (AgBuf does not). */
typedef struct Xml {
    AgBuf *b;
    int rc;
} Xml;

static void put(Xml *x, const char *s, size_t n)
{
    if (x->rc == AG_OK) {
        x->rc = ag_buf_append(x->b, s, n);
    }
}

static void puts_(Xml *x, const char *s)
{
    put(x, s, strlen(s));
}

/* XML character data or an attribute value (quot escaped too).  Control
 * characters XML 1.0 does not allow become U+FFFD. */
static void xml_text(Xml *x, const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '&') {
            puts_(x, "&amp;");
        } else if (c == '<') {
            puts_(x, "&lt;");
        } else if (c == '>') {
            puts_(x, "&gt;");
        } else if (c == '"') {
            puts_(x, "&quot;");
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            puts_(x, "&#xFFFD;");
        } else {
            put(x, p, 1);
        }
    }
}

static void indent(Xml *x, int depth)
{
    for (int i = 0; i < depth; i++) {
        put(x, "  ", 2);
    }
}

/* One element from its object: scalar members are attributes, "doc" is
 * a <doc> child, objects and arrays of objects are child elements named
 * by their member, in the tree's order (built in the order the WADL
 * schema wants: doc, param, method, resource; request, response). */
static void xml_element(Xml *x, const char *name, json_t *o, int depth,
                        const char *extra)
{
    indent(x, depth);
    puts_(x, "<");
    puts_(x, name);
    puts_(x, extra);
    const char *k;
    json_t *v;
    bool children = false;
    json_object_foreach(o, k, v) {
        if (strcmp(k, "doc") == 0 || json_is_object(v) || json_is_array(v)) {
            children = true;
        } else if (json_is_string(v) || json_is_boolean(v)) {
            puts_(x, " ");
            puts_(x, k);
            puts_(x, "=\"");
            xml_text(x, json_is_string(v) ? json_string_value(v)
                        : json_is_true(v) ? "true" : "false");
            puts_(x, "\"");
        }
    }
    if (!children) {
        puts_(x, "/>\n");
        return;
    }
    puts_(x, ">\n");
    json_object_foreach(o, k, v) {
        if (strcmp(k, "doc") == 0 && json_is_string(v)) {
            indent(x, depth + 1);
            puts_(x, "<doc>");
            xml_text(x, json_string_value(v));
            puts_(x, "</doc>\n");
        } else if (json_is_object(v)) {
            xml_element(x, k, v, depth + 1, "");
        } else if (json_is_array(v)) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item) {
                if (json_is_object(item)) {
                    xml_element(x, k, item, depth + 1, "");
                }
            }
        }
    }
    indent(x, depth);
    puts_(x, "</");
    puts_(x, name);
    puts_(x, ">\n");
}

/* json_dump_callback's sink: the JSON form into the same buffer. */
static int json_sink(const char *buffer, size_t size, void *data)
{
    Xml *x = data;
    put(x, buffer, size);
    return x->rc == AG_OK ? 0 : -1;
}

/* ---- negotiation and the document ---------------------------------------- */

int web__caps_negotiate(const char *accept, WebCapsFormat *out,
                        AgError *err)
{
    WebAccept acc;
    if (web_accept_parse(accept, &acc, err) != AG_OK) {
        return AG_ERR_PARSE;
    }
    if (acc.n == 0 && acc.excluded == 0) {
        *out = WEB_CAPS_WADL;   /* PS3.18 §8.9: WADL is the default */
        return AG_OK;
    }
    for (int i = 0; i < acc.n; i++) {
        if (web_media_match(acc.range[i].type, WADL_MEDIA)) {
            *out = WEB_CAPS_WADL;
            return AG_OK;
        }
        if (web_media_match(acc.range[i].type, JSON_MEDIA)) {
            *out = WEB_CAPS_JSON;
            return AG_OK;
        }
    }
    return ag_error_set(err, AG_ERR_UNSUPPORTED, "the capabilities are "
                        WADL_MEDIA " or " JSON_MEDIA);
}

const char *web__caps_media(WebCapsFormat f)
{
    return f == WEB_CAPS_JSON ? JSON_MEDIA : WADL_MEDIA;
}

int web__caps_build(WebCapsFormat f, const char *origin, char **seg,
                    int nseg, AgBuf *out, AgError *err)
{
    if (strlen(origin) > HOST_MAX + 8) {
        return ag_error_set(err, AG_ERR_INVALID, "capabilities: origin too "
                            "long");
    }
    json_t *app = NULL;
    int rc = build_tree(origin, seg, nseg, &app, err);
    if (rc != AG_OK) {
        return rc;
    }
    size_t len0 = out->len;
    if (f == WEB_CAPS_JSON) {
        Xml x = {out, AG_OK};
        if (json_dump_callback(app, json_sink, &x,
                               JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0 &&
            x.rc == AG_OK) {
            x.rc = AG_ERR_NOMEM;
        }
        rc = x.rc;
    } else {
        Xml x = {out, AG_OK};
        puts_(&x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml_element(&x, "application", app, 0,
                    " xmlns=\"" WADL_NS "\" xmlns:xsd=\"" XSD_NS "\"");
        rc = x.rc;
    }
    json_decref(app);
    if (rc != AG_OK) {
        out->len = len0;
        return ag_error_set(err, rc, "capabilities: no room for the "
                            "document");
    }
    return AG_OK;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* A Host header fit to name this server in the document: reg-name or
 * IPv4 or [IPv6], then an optional :port (RFC 9110 §7.2, RFC 3986
 * §3.2.2).  It is the client's own value, checked strictly and escaped. */
static bool host_ok(const char *h)
{
    size_t n = h != NULL ? strlen(h) : 0;
    if (n == 0 || n > HOST_MAX) {
        return false;
    }
    const char *p = h;
    if (*p == '[') {
        p += 1 + strspn(p + 1, "0123456789abcdefABCDEF:.");
        if (*p != ']' || p == h + 1) {
            return false;
        }
        p++;
    } else {
        size_t name = strspn(p, "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (name == 0) {
            return false;
        }
        p += name;
    }
    if (*p == ':') {
        size_t digits = strspn(p + 1, "0123456789");
        if (digits == 0 || digits > 5) {
            return false;
        }
        p += 1 + digits;
    }
    return *p == '\0';
}

bool web__capabilities_wanted(WebRequest *r, char **seg, int nseg)
{
    if (strcmp(r->method, "OPTIONS") == 0) {
        /* A CORS preflight (Fetch standard) names the method it is for;
         * it keeps its own answer (dicomweb.c web__dicomweb_options). */
        return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                   "Access-Control-Request-Method") == NULL;
    }
    return (strcmp(r->method, "GET") == 0 ||
            strcmp(r->method, "HEAD") == 0) &&
           nseg == 1 && strcmp(seg[0], "capabilities") == 0;
}

/*
 * No credentials are asked for: the document describes the service (as a
 * DICOM Conformance Statement does), not its data.  It says nothing of
 * any study, and the path is matched on its shape only, never looked up,
 * so it cannot tell whether a UID exists.  Nothing else is answered here.
 */
enum MHD_Result web__capabilities(WebRequest *r, char **seg, int nseg)
{
    if (nseg == 1 && strcmp(seg[0], "capabilities") == 0) {
        nseg = 0;
    }
    WebCapsFormat f;
    AgError err;
    ag_error_clear(&err);
    int rc = web__caps_negotiate(
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept"), &f,
        &err);
    if (rc == AG_ERR_PARSE) {
        return web__json_error(r, 400, "bad Accept header", err.msg);
    }
    if (rc != AG_OK) {
        return web__json_error(r, 406, "not acceptable", err.msg);
    }
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                   "Host");
    const WebConfig *c = web__config(r);
    bool tls = c->tls_cert_file != NULL && c->tls_key_file != NULL;
    char origin[HOST_MAX + 16] = "";
    if (host_ok(host)) {
        ag_fmt(origin, sizeof origin, "%s://%s", tls ? "https" : "http",
               host);
    }
    AgBuf b;
    ag_buf_init(&b, DOC_MAX);
    rc = web__caps_build(f, origin, seg, nseg, &b, &err);
    enum MHD_Result ret;
    if (rc == AG_ERR_NOTFOUND) {
        ret = web__json_error(r, 404, "not found", err.msg);
    } else if (rc != AG_OK) {
        ret = web__json_error(r, 500, "capabilities failed", err.msg);
    } else {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            b.len, b.data, MHD_RESPMEM_MUST_COPY);
        if (resp != NULL) {
            MHD_add_response_header(resp, "Content-Type", web__caps_media(f));
            MHD_add_response_header(resp, "Allow",
                                    "GET, HEAD, POST, OPTIONS");
            MHD_add_response_header(resp, "Vary", "Accept");
        }
        ret = web__send_response(r, 200, resp);
    }
    ag_buf_deinit(&b);
    return ret;
}
