/*
 * cmd_worklist.c — `agora worklist add|list|show|remove|purge`: the
 * scheduled procedure steps that modalities fetch with C-FIND (Modality
 * Worklist, PS3.4 K), kept in the index (store.h).
 *
 * Items come in as DICOM JSON (PS3.18 F) or as DICOM files, such as the
 * .wl files that DCMTK's dump2dcm makes for wlmscpfs and Orthanc's
 * worklist plugin, so that an existing worklist folder can be moved over
 * as it is.  Changes are recorded in the audit trail like those made
 * through the REST API (api.c): Order Record, PS3.15 A.5.3.10.
 */
#include "audit/audit.h"
#include "cli/cli.h"
#include "dicom/dicom.h"
#include "store/store.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* store_worklist_add refuses JSON over 1 MiB; a DICOM file of that data
 * set is smaller still.  The cap only keeps a wrong file (an image, a
 * device) from being read whole. */
#define INPUT_MAX ((size_t)16 << 20)
/* One item's scratch: the input's data set, the JSON made of it and the
 * values pulled out for a table row or an audit record. */
#define ITEM_BUDGET ((size_t)64 << 20)

#define TAG_PATIENT_NAME 0x00100010u
#define TAG_PATIENT_ID 0x00100020u
#define TAG_ACCESSION 0x00080050u
#define TAG_MODALITY 0x00080060u
#define TAG_SPS_SEQ 0x00400100u
#define TAG_STATION_AET 0x00400001u
#define TAG_SPS_DATE 0x00400002u
#define TAG_SPS_TIME 0x00400003u
#define TAG_SPS_STATUS 0x00400020u

typedef struct Options {
    StoreConfig cfg;
    const char *dept;      /* add --department */
    const char *before;    /* purge --before */
    bool json;             /* list --json */
} Options;

/* What a table row and an audit record show of an item; "" when absent. */
typedef struct Fields {
    const char *patient_id, *patient_name, *accession;
    const char *modality, *station, *date, *time, *status;
} Fields;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: agora worklist add [--data DIR] [--department D] "
            "FILE...\n"
            "       agora worklist list [--data DIR] [--json]\n"
            "       agora worklist show [--data DIR] ID\n"
            "       agora worklist remove [--data DIR] ID...\n"
            "       agora worklist purge [--data DIR] --before YYYYMMDD\n\n"
            "The Modality Worklist (PS3.4 K): the scheduled procedure steps "
            "that modalities\nfetch with C-FIND, so that the technologist "
            "picks the patient from a list.\n\n"
            "add:    each FILE (- for standard input) is one item: a DICOM "
            "JSON object\n"
            "        (PS3.18 F) or a DICOM file, e.g. a .wl file made by "
            "DCMTK's dump2dcm.\n"
            "        Prints \"added ID FILE\" for each; stops at the first "
            "file refused\n"
            "        (the files before it stay added).\n"
            "list:   every item by scheduled date and time, one "
            "tab-separated row each.\n"
            "show:   one item's DICOM JSON.\n"
            "remove: remove items by id.\n"
            "purge:  remove every item scheduled before a date; prints how "
            "many.\n\n"
            "options:\n"
            "  --data DIR         data directory (default ./agora-data)\n"
            "  --department D     add: the items belong to department D "
            "(agora dept add)\n"
            "  --json             list: a JSON array as the REST API gives "
            "it\n"
            "  --before YYYYMMDD  purge: the first date to keep\n\n"
            "Changes are recorded in the audit trail (Order Record).\n");
}

/* ---- reading an item ---------------------------------------------------- */

static int read_stdin(AgBuf *b, AgError *err)
{
    uint8_t chunk[64 * 1024];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n == 0) {
            return AG_OK;
        }
        if (n < 0) {
            return ag_error_errno(err, AG_ERR_IO, "read standard input");
        }
        if (ag_buf_append(b, chunk, (size_t)n) != AG_OK) {
            return ag_error_set(err, AG_ERR_LIMIT, "standard input: over "
                                "the %zu byte limit", INPUT_MAX);
        }
    }
}

/* The bytes of path ("-": standard input) into b. */
static int read_input(const char *path, AgBuf *b, AgError *err)
{
    if (strcmp(path, "-") == 0) {
        return read_stdin(b, err);
    }
    uint8_t *data;
    size_t len;
    int rc = ag_file_read_all(path, INPUT_MAX, &data, &len, err);
    if (rc == AG_OK) {
        rc = ag_buf_append(b, data, len);
        ag_free(data);
    }
    return rc == AG_ERR_NOMEM ? ag_error_set(err, rc, "out of memory") : rc;
}

/* DICOM JSON is an object: text whose first non-blank character is '{'
 * ('[' too, so that an array, as DICOMweb sends, is refused as JSON
 * rather than as a DICOM file).  A Part 10 file starts with its preamble
 * (zeros as a rule) and a bare data set with a group number, so neither
 * is taken for JSON. */
static bool looks_like_json(const AgBuf *b)
{
    size_t i = 0;
    while (i < b->len && strchr(" \t\r\n", b->data[i]) != NULL) {
        i++;
    }
    return i < b->len && (b->data[i] == '{' || b->data[i] == '[');
}

/* The item as DICOM JSON text in out: the input itself, or a DICOM file's
 * data set converted (the file meta group, 0002, is left out). */
static int item_json(const AgBuf *in, AgArena *a, AgBuf *out, AgError *err)
{
    if (looks_like_json(in)) {
        int rc = ag_buf_append(out, in->data, in->len);
        return rc == AG_OK ? rc : ag_error_set(err, rc, "out of memory");
    }
    DicomReadOptions opt = {0};
    DicomFile *f;
    int rc = dicom_read_buffer(in->data, in->len, &opt, a, &f, err);
    if (rc != AG_OK) {
        ag_error_prefix(err, "neither DICOM JSON nor a DICOM file: ");
        return rc;
    }
    DicomJsonOptions jo = {0};
    return dicom_json_write(f->dataset, &jo, dicom_sink_buf, out, err);
}

/* ---- an item's values --------------------------------------------------- */

static const char *value(const DicomDataset *ds, uint32_t tag, AgArena *a)
{
    const char *v = ds != NULL ? dicom_get_string(ds, tag, a) : NULL;
    return v != NULL ? v : "";
}

/* The values of an item's DICOM JSON; those of text that does not parse
 * stay "". */
static void fields_of(const char *json, size_t len, AgArena *a, Fields *f)
{
    DicomDataset *ds = NULL, *sps = NULL;
    if (dicom_json_read(json, len, a, &ds, NULL) != AG_OK) {
        ds = NULL;
    }
    const DicomElement *sq = ds ? dicom_dataset_find(ds, TAG_SPS_SEQ) : NULL;
    if (sq != NULL && sq->vr == DICOM_VR_SQ && sq->nitems > 0) {
        sps = sq->items[0];   /* an item has one step (PS3.4 K.6.1.2.2) */
    }
    *f = (Fields){
        .patient_id = value(ds, TAG_PATIENT_ID, a),
        .patient_name = value(ds, TAG_PATIENT_NAME, a),
        .accession = value(ds, TAG_ACCESSION, a),
        .modality = value(sps, TAG_MODALITY, a),
        .station = value(sps, TAG_STATION_AET, a),
        .date = value(sps, TAG_SPS_DATE, a),
        .time = value(sps, TAG_SPS_TIME, a),
        .status = value(sps, TAG_SPS_STATUS, a),
    };
}

/* ---- audit -------------------------------------------------------------- */

/* Like `agora import`, a trail that cannot be opened is reported and the
 * command goes on: a NULL log makes audit_record a no-op. */
static AuditLog *audit_start(const char *dir)
{
    AuditConfig cfg = {.data_dir = dir};
    AuditLog *log = NULL;
    AgError err;
    if (audit_open(&cfg, &log, &err) != AG_OK) {
        fprintf(stderr, "agora worklist: audit trail: %s\n", err.msg);
        return NULL;
    }
    return log;
}

/* One Order Record per change, as api.c records them: the patient named
 * when the item is known, outcome 4 for an item refused, 8 for a failure. */
static void audit_order(AuditLog *log, char action, const Fields *f,
                        int outcome, const char *detail)
{
    const char *who = getenv("USER");
    AuditEvent ev = {.event = AUDIT_ORDER_RECORD, .action = action,
                     .outcome = (AuditOutcome)outcome,
                     .user = who ? who : "(command line)",
                     .source = "localhost",
                     .patient_id = f && f->patient_id[0] ? f->patient_id
                                                         : NULL,
                     .patient_name = f && f->patient_name[0]
                                         ? f->patient_name : NULL,
                     .detail = detail};
    AgError err;
    if (audit_record(log, &ev, &err) != AG_OK) {
        fprintf(stderr, "agora worklist: audit trail: %s\n", err.msg);
    }
}

/* ---- add ---------------------------------------------------------------- */

static int add_converted(Store *s, const char *dept, const char *path,
                         const AgBuf *json, AuditLog *log, AgArena *a,
                         AgError *err)
{
    int64_t id = 0;
    int rc = store_worklist_add(s, (const char *)json->data, json->len,
                                dept, &id, err);
    Fields f;
    fields_of((const char *)json->data, json->len, a, &f);
    if (rc != AG_OK) {
        ag_error_prefix(err, "%s: ", path);
        bool refused = rc == AG_ERR_INVALID || rc == AG_ERR_NOTFOUND;
        audit_order(log, 'C', &f, refused ? 4 : 8, err->msg);
        return rc;
    }
    char detail[512];
    ag_fmt(detail, sizeof detail, "worklist item %" PRId64 "%s%s", id,
           dept ? " in " : "", dept ? dept : "");
    audit_order(log, 'C', &f, 0, detail);
    printf("added %" PRId64 "  %s\n", id, path);
    return AG_OK;
}

static int add_file(Store *s, const char *dept, const char *path,
                    AuditLog *log, AgError *err)
{
    AgArena *a = ag_arena_create(ITEM_BUDGET);
    AgBuf in, json;
    ag_buf_init(&in, INPUT_MAX);
    ag_buf_init(&json, INPUT_MAX);
    int rc = a ? read_input(path, &in, err)
               : ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    if (rc == AG_OK) {
        rc = item_json(&in, a, &json, err);
        if (rc != AG_OK) {
            ag_error_prefix(err, "%s: ", path);
        }
    }
    if (rc == AG_OK) {
        rc = add_converted(s, dept, path, &json, log, a, err);
    }
    ag_buf_deinit(&in);
    ag_buf_deinit(&json);
    ag_arena_destroy(a);
    return rc;
}

static int add(Store *s, const Options *o, char **files, int n,
               AgError *err)
{
    AuditLog *log = audit_start(o->cfg.data_dir);
    int rc = AG_OK;
    for (int i = 0; i < n && rc == AG_OK; i++) {
        rc = add_file(s, o->dept, files[i], log, err);
    }
    audit_close(log);
    return rc;
}

/* ---- list and show ------------------------------------------------------ */

/* Values come from the data: keep one row per line. */
static void put_field(const char *sep, const char *v)
{
    fputs(sep, stdout);
    for (const char *p = v; *p != '\0'; p++) {
        putchar(*p == '\t' || *p == '\n' || *p == '\r' ? ' ' : *p);
    }
}

/* "2026-11-30 10:00" from DA 20261130 and TM 1000[00[.000]]; values of
 * another shape as they are. */
static void put_scheduled(const char *sep, const char *da, const char *tm)
{
    char text[64];
    if (strlen(da) == 8 && strlen(tm) >= 4) {
        ag_fmt(text, sizeof text, "%.4s-%.2s-%.2s %.2s:%.2s", da, da + 4,
               da + 6, tm, tm + 2);
    } else {
        ag_fmt(text, sizeof text, "%.20s %.20s", da, tm);
    }
    put_field(sep, text);
}

typedef struct ListRun {
    bool header;
    json_t *arr;           /* --json */
    int rc;
} ListRun;

static int print_row(void *ctx, const StoreWorklistItem *it)
{
    ListRun *r = ctx;
    AgArena *a = ag_arena_create(ITEM_BUDGET);
    if (a == NULL) {
        r->rc = AG_ERR_NOMEM;
        return 1;
    }
    Fields f;
    fields_of(it->json, strlen(it->json), a, &f);
    if (!r->header) {
        printf("id\tscheduled\tmodality\tstation\tpatient_id\t"
               "patient_name\taccession\tdepartment\tstatus\n");
        r->header = true;
    }
    printf("%" PRId64, it->id);
    put_scheduled("\t", f.date, f.time);
    put_field("\t", f.modality);
    put_field("\t", f.station);
    put_field("\t", f.patient_id);
    put_field("\t", f.patient_name);
    put_field("\t", f.accession);
    put_field("\t", it->department);
    put_field("\t", f.status);
    putchar('\n');
    ag_arena_destroy(a);
    return 0;
}

/* An item as the REST API shows it (api.c): {"id", "created", "item"},
 * and "department" when it has one. */
static json_t *item_object(const StoreWorklistItem *it)
{
    json_t *item = json_loads(it->json, 0, NULL);
    json_t *o = item ? json_pack("{s:I, s:I, s:o}", "id",
                                 (json_int_t)it->id, "created",
                                 (json_int_t)it->created_at, "item", item)
                     : NULL;
    if (o != NULL && it->department[0] != '\0' &&
        json_object_set_new(o, "department",
                            json_string(it->department)) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static int append_object(void *ctx, const StoreWorklistItem *it)
{
    ListRun *r = ctx;
    json_t *o = item_object(it);
    if (o == NULL || json_array_append_new(r->arr, o) != 0) {
        r->rc = AG_ERR_NOMEM;
        return 1;
    }
    return 0;
}

static int print_json(json_t *j)
{
    if (json_dumpf(j, stdout, JSON_INDENT(2)) != 0) {
        return AG_ERR_NOMEM;
    }
    putchar('\n');
    return AG_OK;
}

static int list(Store *s, const Options *o, AgError *err)
{
    ListRun r = {.rc = AG_OK};
    if (o->json && (r.arr = json_array()) == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    int rc = store_worklist_list(s, &STORE_SCOPE_ALL,
                                 o->json ? append_object : print_row, &r,
                                 err);
    if (rc == AG_OK && r.rc == AG_OK && o->json) {
        r.rc = print_json(r.arr);
    }
    json_decref(r.arr);
    if (rc == AG_OK && r.rc != AG_OK) {
        rc = ag_error_set(err, r.rc, "out of memory");
    }
    return rc;
}

/* The stored text is compact; reindented when it parses, as it does. */
static int print_item(void *ctx, const StoreWorklistItem *it)
{
    int *rc = ctx;
    json_t *item = json_loads(it->json, 0, NULL);
    if (item == NULL) {
        printf("%s\n", it->json);
        return 0;
    }
    *rc = print_json(item);
    json_decref(item);
    return 0;
}

static int show(Store *s, int64_t id, AgError *err)
{
    int out = AG_OK;
    int rc = store_worklist_get(s, &STORE_SCOPE_ALL, id, print_item, &out,
                                err);
    if (rc == AG_OK && out != AG_OK) {
        rc = ag_error_set(err, out, "out of memory");
    }
    return rc;
}

/* ---- remove and purge --------------------------------------------------- */

typedef struct Got {
    AgArena *a;
    Fields f;
} Got;

static int keep_fields(void *ctx, const StoreWorklistItem *it)
{
    Got *g = ctx;
    fields_of(it->json, strlen(it->json), g->a, &g->f);
    return 0;
}

/* Looked up first so that the audit record names the patient whose
 * order went (as api.c does). */
static int remove_one(Store *s, int64_t id, AuditLog *log, AgError *err)
{
    Got g = {.a = ag_arena_create(ITEM_BUDGET)};
    if (g.a == NULL) {
        return ag_error_set(err, AG_ERR_NOMEM, "out of memory");
    }
    int rc = store_worklist_get(s, &STORE_SCOPE_ALL, id, keep_fields, &g,
                                err);
    if (rc == AG_OK) {
        rc = store_worklist_remove(s, &STORE_SCOPE_ALL, id, err);
        char detail[64];
        ag_fmt(detail, sizeof detail, "worklist item %" PRId64, id);
        audit_order(log, 'D', &g.f, rc == AG_OK ? 0 : 8,
                    rc == AG_OK ? detail : err->msg);
    }
    if (rc == AG_OK) {
        printf("removed %" PRId64 "\n", id);
    }
    ag_arena_destroy(g.a);
    return rc;
}

static int remove_items(Store *s, const Options *o, const int64_t *ids,
                        int n, AgError *err)
{
    AuditLog *log = audit_start(o->cfg.data_dir);
    int rc = AG_OK;
    for (int i = 0; i < n && rc == AG_OK; i++) {
        rc = remove_one(s, ids[i], log, err);
    }
    audit_close(log);
    return rc;
}

static int purge(Store *s, const Options *o, AgError *err)
{
    uint64_t n = 0;
    int rc = store_worklist_purge(s, o->before, &n, err);
    if (rc == AG_ERR_INVALID) {
        ag_error_prefix(err, "--before %s: ", o->before);
        return rc;   /* nothing was tried: nothing to audit */
    }
    char detail[128];
    ag_fmt(detail, sizeof detail, "worklist purge before %.8s: %" PRIu64
           " items", o->before, n);
    AuditLog *log = audit_start(o->cfg.data_dir);
    audit_order(log, 'D', NULL, rc == AG_OK ? 0 : 8,
                rc == AG_OK ? detail : err->msg);
    audit_close(log);
    if (rc == AG_OK) {
        printf("removed %" PRIu64 " items scheduled before %s\n", n,
               o->before);
    }
    return rc;
}

/* ---- the command -------------------------------------------------------- */

/* Whether the arguments and options suit the verb. */
static bool args_fit(const char *verb, int n, const Options *o)
{
    bool is_add = strcmp(verb, "add") == 0;
    bool is_list = strcmp(verb, "list") == 0;
    bool is_purge = strcmp(verb, "purge") == 0;
    if ((o->dept != NULL && !is_add) || (o->json && !is_list) ||
        ((o->before != NULL) != is_purge)) {
        return false;
    }
    return (is_add && n >= 1) || (is_list && n == 0) ||
           (is_purge && n == 0) ||
           (strcmp(verb, "show") == 0 && n == 1) ||
           (strcmp(verb, "remove") == 0 && n >= 1);
}

/* Item ids: positive integers, all checked before anything is done. */
static int parse_ids(char **args, int n, int64_t *ids)
{
    for (int i = 0; i < n; i++) {
        size_t len = strlen(args[i]);
        if (len == 0 || len > 18 || strspn(args[i], "0123456789") != len ||
            (ids[i] = strtoll(args[i], NULL, 10)) <= 0) {
            fprintf(stderr, "agora worklist: '%s' is not an item id\n",
                    args[i]);
            return -1;
        }
    }
    return 0;
}

static int run(Store *s, const Options *o, const char *verb, char **args,
               int n, const int64_t *ids, AgError *err)
{
    if (strcmp(verb, "add") == 0) {
        return add(s, o, args, n, err);
    }
    if (strcmp(verb, "list") == 0) {
        return list(s, o, err);
    }
    if (strcmp(verb, "show") == 0) {
        return show(s, ids[0], err);
    }
    if (strcmp(verb, "remove") == 0) {
        return remove_items(s, o, ids, n, err);
    }
    return purge(s, o, err);
}

static int open_and_run(Options *o, const char *verb, char **args, int n,
                        const int64_t *ids)
{
    /* Reading never creates a data directory or migrates an index. */
    o->cfg.read_only = strcmp(verb, "list") == 0 ||
                       strcmp(verb, "show") == 0;
    Store *s;
    AgError err;
    ag_error_clear(&err);
    if (store_open(&o->cfg, &s, &err) != AG_OK) {
        fprintf(stderr, "agora worklist: %s\n", err.msg);
        return 1;
    }
    int rc = run(s, o, verb, args, n, ids, &err);
    store_close(s);
    if (rc != AG_OK) {
        fprintf(stderr, "agora worklist: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int cmd_worklist(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"department", required_argument, NULL, 'D'},
        {"json", no_argument, NULL, 'j'},
        {"before", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    Options o = {.cfg = {.data_dir = "./agora-data"}};
    int c;
    optind = 1;
    /* getopt permutes: options go before or after the verb. */
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o.cfg.data_dir = optarg; break;
        case 'D': o.dept = optarg; break;
        case 'j': o.json = true; break;
        case 'b': o.before = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc || !args_fit(argv[optind], argc - optind - 1, &o)) {
        usage(stderr);
        return 2;
    }
    const char *verb = argv[optind];
    char **args = argv + optind + 1;
    int n = argc - optind - 1;
    bool by_id = strcmp(verb, "show") == 0 || strcmp(verb, "remove") == 0;
    int64_t *ids = ag_calloc(n > 0 ? (size_t)n : 1, sizeof *ids);
    if (ids == NULL) {
        fprintf(stderr, "agora worklist: out of memory\n");
        return 1;
    }
    int status = by_id && parse_ids(args, n, ids) != 0
                     ? 2 : open_and_run(&o, verb, args, n, ids);
    ag_free(ids);
    return status;
}
