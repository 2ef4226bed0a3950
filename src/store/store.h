/*
 * store.h — the archive core (DESIGN.md §4, §6): the index, the blob store
 * and the ingest pipeline.  Every way in (DIMSE C-STORE, STOW-RS, `agora
 * import`, HL7-triggered imports) calls store_ingest_*; it is the one place
 * where an instance becomes stored.
 *
 * Durability (SECURITY.md rule 4): store_ingest_* returns AG_OK only after
 * the blob is written, fsynced, renamed, its directory fsynced and the index
 * rows committed, in that order.  Concurrent ingests are group-committed:
 * callers on many threads share one database transaction and a few
 * flushes (StoreSync).
 *
 * Layout of the data directory:
 *   DIR/index.sqlite          the index (SQLite, WAL)
 *   DIR/blobs/ab/cd/<name>    instances as received (Part 10), named from a
 *                             BLAKE2b hash of the SOP Instance UID
 *   DIR/tmp/                  temporary files; emptied at open
 *
 * Thread-safety: a Store may be used from any number of threads at once,
 * except store_close().
 */
#ifndef AG_STORE_H
#define AG_STORE_H

#include "dicom/dicom.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct Store Store;

/* What to do when an instance arrives whose SOP Instance UID is stored. */
typedef enum StoreDupPolicy {
    STORE_DUP_KEEP_FIRST = 0,  /* keep the stored one; report duplicate */
    STORE_DUP_REPLACE,         /* replace it atomically */
    STORE_DUP_REJECT,          /* refuse the new one with an error */
} StoreDupPolicy;

/*
 * How blobs are made durable before their index rows commit.  Both keep
 * the discipline: bytes written to a temporary name, synced, renamed, the
 * name synced, then the index committed; both group many instances per
 * flush.
 */
typedef enum StoreSync {
    /* Adapts to the load.  Few instances in flight (a few DIMSE
     * associations): each blob is fdatasynced and renamed by its writer and
     * its directory fsynced.  Many (an import, many associations): the
     * blobs wait unsynced and ONE syncfs(2) of the data directory's file
     * system serves a whole cycle — the bytes of the blobs just written,
     * the names of those renamed before, and the index commit before that
     * (SQLite's WAL, when on the same file system) — so a batch costs one
     * flush whatever its size.  Best when the data directory has a file
     * system of its own: on a shared one syncfs also flushes others'
     * writes. */
    STORE_SYNC_FILESYSTEM = 0,
    /* Never syncfs: fdatasync of each blob by its writer, one fsync per
     * touched blob directory per batch, a durable commit per batch.
     * Flushes only Agora's own files. */
    STORE_SYNC_FILES,
} StoreSync;

typedef struct StoreConfig {
    const char *data_dir;          /* required */
    StoreDupPolicy dup_policy;
    StoreSync sync;
    uint32_t commit_batch_max;     /* instances per transaction; 0 = 512 */
    uint32_t max_instance_bytes_mb;/* refuse larger instances; 0 = 4096 */
    bool read_only;                /* open the index without writing */
    /* Storage policy (issue 5): re-encode uncompressed images in this
     * lossless transfer syntax before storing them (JPEG-LS lossless
     * 1.2.840.10008.1.2.4.80, RLE 1.2.840.10008.1.2.5 or JPEG 2000
     * lossless 1.2.840.10008.1.2.4.90), keeping the original when the
     * result does not decode back bit-exactly or is not smaller.  NULL:
     * store as received. */
    const char *compress_ts;
    /* Staging: with few instances in flight, a blob of up to 64 KiB is
     * committed inside the index with its rows (one fsync instead of
     * three) and written out to its file later, when the store is idle
     * (store.c explains).  Readers see no difference.  Only the process
     * that stages writes staged blobs out (one agora serve per data
     * folder); others read them where they are.  Off: every blob is a
     * durable file before its rows commit. */
    bool stage_small;
} StoreConfig;

/**
 * Open (creating if needed) the data directory: run schema migrations,
 * remove leftover temporary files, finish interrupted deletions, start the
 * commit thread.  Errors name the path.
 */
int store_open(const StoreConfig *cfg, Store **out, AgError *err);
/** Stop the commit thread (after it drains) and close.  NULL is fine. */
void store_close(Store *s);

/* ---- ingest ------------------------------------------------------------ */

typedef enum StoreOutcome {
    STORE_STORED = 0,       /* new instance stored */
    STORE_DUPLICATE,        /* keep-first: already stored, nothing changed */
    STORE_REPLACED,         /* replace: the new one replaced the old */
} StoreOutcome;

/* Who sent it: recorded with the instance and given to event listeners. */
typedef struct StoreSource {
    const char *calling_ae;    /* DIMSE calling AE title, or NULL */
    const char *remote_addr;   /* peer address, or NULL */
    const char *via;           /* "dimse", "stow", "import", ... */
    /* When set (DIMSE C-STORE), the data set must carry these UIDs or the
     * store fails with AG_ERR_INVALID before anything is written. */
    const char *expect_sop_class;
    const char *expect_sop_instance;
    /* STOW-RS to /studies/{uid}: the instance must belong to that study. */
    const char *expect_study;
    /* The uploading user (users.id, 0 for none): a new study is assigned
     * to the user's departments. */
    int64_t user;
    /* The sending node's department (departments.id, 0 for none), when
     * the node was identified otherwise than by calling_ae (a TLS client
     * certificate). */
    int64_t dept;
} StoreSource;

typedef struct StoreResult {
    StoreOutcome outcome;
    char sop_instance_uid[65];
    char sop_class_uid[65];
    char study_uid[65];
    char series_uid[65];
    char transfer_syntax[65];
    /* The study was already indexed for another patient: the instance is
     * stored under the study's existing patient and the study is flagged
     * for reconciliation (never silently merged). */
    bool patient_conflict;
    uint64_t size;             /* bytes of the stored blob */
} StoreResult;

/*
 * Ingest errors (AgError.code) and what the protocol edges map them to:
 *   AG_ERR_PARSE      not DICOM / corrupt          (C-STORE A900/C000, 400)
 *   AG_ERR_INVALID    missing or malformed UID etc (C-STORE A900, 400)
 *   AG_ERR_EXISTS     duplicate under the reject policy     (C-STORE A700+, 409)
 *   AG_ERR_LIMIT      over a configured limit      (C-STORE A700, 413)
 *   AG_ERR_IO         disk full / I/O error        (C-STORE A700, 503)
 * Nothing partial is left behind on any error.
 */

/**
 * Ingest the Part 10 file at path.  The file is copied into the blob store
 * (or, when take is true and it lies in store_tmp_dir(), renamed there
 * without a copy; the caller must not use it afterwards, whatever the
 * result).  Blocks until durable.  Thread-safe.
 */
int store_ingest_path(Store *s, const char *path, bool take,
                      const StoreSource *src, StoreResult *res, AgError *err);

/**
 * Ingest the Part 10 file open for reading on fd (read from offset 0; fd
 * stays the caller's, e.g. one opened without following symbolic links by
 * media import).  name labels parse errors (may be NULL).  Blocks until
 * durable.  Thread-safe.
 */
int store_ingest_fd(Store *s, int fd, const char *name,
                    const StoreSource *src, StoreResult *res, AgError *err);

/*
 * The verdict of an asynchronous ingest, given exactly once: rc as the
 * synchronous call would return it, res (rc == AG_OK) or err (otherwise);
 * both borrowed for the call.
 */
typedef void (*StoreIngestDone)(void *ctx, int rc, const StoreResult *res,
                                const AgError *err);

/**
 * Like store_ingest_fd and store_ingest_path, without waiting
 * for the group commit: the file is read, parsed and its blob written in
 * the calling thread, then the call returns and done is called once the
 * verdict is durable — on a store thread, in commit order, so it must be
 * quick — or, when the verdict came before anything was queued (a
 * failure, a duplicate), in the calling thread before returning.  With
 * take (store_ingest_path_async only) the file is consumed as by
 * store_ingest_path — renamed into the blob store, not copied — and is
 * gone when the call returns, whatever the verdict.  Lets a
 * few threads keep many instances in flight (`agora import`).  src must
 * stay valid until done.  The return value is for information only.
 */
int store_ingest_fd_async(Store *s, int fd, const char *name,
                          const StoreSource *src, StoreIngestDone done,
                          void *ctx);
int store_ingest_path_async(Store *s, const char *path, bool take,
                            const StoreSource *src, StoreIngestDone done,
                            void *ctx);

/** Ingest a Part 10 file held in memory (STOW-RS parts, tests). */
int store_ingest_buffer(Store *s, const uint8_t *data, size_t len,
                        const StoreSource *src, StoreResult *res,
                        AgError *err);

/** Directory for callers that spool incoming data before ingesting it. */
const char *store_tmp_dir(const Store *s);

/*
 * A Part 10 file that arrives in pieces (a C-STORE's PDVs, a STOW-RS
 * part), made ready for
 * ingest while it arrives, so that the work overlaps with the sender's and
 * ingest neither copies nor reads the bytes again:
 * - it is hashed (BLAKE2b, the blob checksum) piece by piece;
 * - it is held in memory while it is small (up to 1 MB: parsed from there);
 * - past the size the store keeps inside the index (64 KB), it is also
 *   written to a file in store_tmp_dir(), which becomes its blob by a
 *   rename; past 1 MB only the file remains (memory stays bounded).
 * One writer at a time.
 */
typedef struct StoreSpool StoreSpool;

/** A new, empty spool for s. */
int store_spool_open(Store *s, StoreSpool **out, AgError *err);
/**
 * Append n bytes.  AG_ERR_LIMIT past the store's maximum instance size,
 * AG_ERR_IO when the file cannot be written (fault point spool.write),
 * AG_ERR_NOMEM.  After a failure the spool is spoiled: later writes return
 * the first failure again, and it can only be discarded.
 */
int store_spool_write(StoreSpool *sp, const void *p, size_t n, AgError *err);
/** Bytes written so far. */
uint64_t store_spool_size(const StoreSpool *sp);
/**
 * Ingest what was written, as store_ingest_buffer would (blocks until
 * durable), and free the spool and its file whatever the result.
 */
int store_ingest_spool(Store *s, StoreSpool *sp, const StoreSource *src,
                       StoreResult *res, AgError *err);
/**
 * Like store_ingest_spool, without waiting for the group commit (see
 * store_ingest_path_async): the spool is consumed before this returns,
 * and done is called once with the verdict.
 */
int store_ingest_spool_async(Store *s, StoreSpool *sp, const StoreSource *src,
                             StoreIngestDone done, void *ctx);
/** Free a spool and remove its file, without ingesting.  NULL: nothing. */
void store_spool_discard(StoreSpool *sp);

/* ---- events -------------------------------------------------------------- */

typedef struct StoreEvent {
    enum { STORE_EVENT_INSTANCE_STORED, STORE_EVENT_DELETED } type;
    const StoreResult *result;     /* for INSTANCE_STORED */
    const StoreSource *source;
    const char *level;             /* for DELETED: "study", ... */
    const char *uid;               /* for DELETED */
} StoreEvent;

typedef void (*StoreListener)(void *ctx, const StoreEvent *ev);
/**
 * Call fn after every committed change, once it is durable.  Listeners run
 * on one of the store's commit threads, in commit order, and must not
 * block for long (queue work instead).  Register before ingesting.
 */
int store_subscribe(Store *s, StoreListener fn, void *ctx, AgError *err);

/* ---- delete ---------------------------------------------------------------- */

typedef enum StoreLevel {
    STORE_LEVEL_PATIENT, STORE_LEVEL_STUDY, STORE_LEVEL_SERIES,
    STORE_LEVEL_INSTANCE,
} StoreLevel;

/**
 * Delete a patient (by Patient ID + issuer "ID" or "ID\tISSUER"), study,
 * series or instance (by UID) with everything below it: index rows first
 * (with the blobs recorded in a trash table in the same transaction), then
 * the blobs; an interruption is finished at the next open or by `check`.
 * *count = instances deleted.  AG_ERR_NOTFOUND if nothing matched.
 */
int store_delete(Store *s, StoreLevel level, const char *key,
                 uint64_t *count, AgError *err);

/* ---- listing (quick look; QIDO/C-FIND matching comes with query.h) ----- */

typedef struct StoreRow {
    /* Columns by name, NULL-terminated arrays of equal length. */
    const char *const *names;
    const char *const *values;
} StoreRow;

typedef int (*StoreRowFn)(void *ctx, const StoreRow *row);

/**
 * List rows at a level, filtered by exact key=value pairs on indexed
 * attributes (e.g. "PatientID", "StudyInstanceUID", "Modality"), at most
 * limit rows (0 = 1000).  fn returning non-zero stops the listing.
 */
int store_list(Store *s, StoreLevel level, const char *const *filters,
               uint32_t limit, StoreRowFn fn, void *ctx, AgError *err);

/* ---- the access filter (DESIGN.md §5) ------------------------------------ */

#define STORE_SCOPE_MAX_DEPTS 32

/*
 * Who is asking, as the index sees it.  A study is in scope when it is
 * assigned to one of depts, shared with one of depts, with user or with a
 * list user belongs to (unexpired), or user broke the glass on it
 * (unexpired).  only_study narrows everything to one study (an external
 * share link).  The filter is part of the SQL of every query, so counts,
 * limits and paging only ever see studies in scope.
 */
typedef struct StoreScope {
    bool all;                      /* archive-wide: no filter */
    int64_t user;                  /* users.id, 0 for none */
    int64_t depts[STORE_SCOPE_MAX_DEPTS];
    uint32_t ndepts;
    const char *only_study;        /* Study Instance UID, or NULL */
    /* Leave break-the-glass grants out: they give view only, so checks
     * for download, share and delete use a copy with this set. */
    bool no_glass;
} StoreScope;

/*
 * Tables of the modules that keep their data in the index (src/access/):
 * one statement with text parameters (NULL binds NULL), in the portable
 * SQL subset SQLite and PostgreSQL share.  select runs on a reader and
 * calls fn for each row (values NULL for SQL NULL; non-zero stops); exec
 * runs on the writer, serialised with ingest.  A UNIQUE violation is
 * AG_ERR_EXISTS.
 */
int store_sql_select(Store *s, const char *sql, const char *const *params,
                     int nparams,
                     int (*fn)(void *ctx, int ncol, const char *const *vals),
                     void *ctx, AgError *err);
int store_sql_exec(Store *s, const char *sql, const char *const *params,
                   int nparams, int64_t *changes, int64_t *last_id,
                   AgError *err);

/** The scope that sees everything (internal callers, administrators). */
extern const StoreScope STORE_SCOPE_ALL;

/**
 * Whether study_uid exists and is in scope (false for both "no such study"
 * and "not yours": callers answer the two alike).
 */
bool store_study_visible(Store *s, const StoreScope *scope,
                         const char *study_uid);

/* ---- queries (C-FIND and QIDO-RS share this: PS3.4 C.2.2.2) --------------- */

typedef struct StoreQuery {
    StoreLevel level;
    /* Matching and return keys: a C-FIND identifier or the QIDO-RS query
     * parameters turned into a data set.  Strings in its character set
     * are decoded to UTF-8 before matching. */
    const DicomDataset *keys;
    bool patient_root;         /* hierarchy checks (C.4.1.2.2) */
    bool hierarchical;         /* refuse keys of levels above that are not
                                * single-UID unique keys (C-FIND) */
    bool fuzzy;                /* PN matching ignores case (C.2.2.2.1) */
    uint32_t limit;            /* 0 = the hard cap (10000) */
    uint32_t offset;
    /* Return every indexed attribute of the level, not just the keys
     * asked for (QIDO-RS includefield=all and its default set). */
    bool all_fields;
    /* The access filter; NULL is STORE_SCOPE_ALL (internal callers only:
     * every protocol edge passes the requester's scope). */
    const StoreScope *scope;
} StoreQuery;

/*
 * Receives each match as a data set holding the return keys (values as
 * UTF-8, Specific Character Set ISO_IR 192), allocated in an arena that is
 * reset after the call.  Returning non-zero stops the query.
 */
typedef int (*StoreMatchFn)(void *ctx, const DicomDataset *match);

/**
 * Run a query: one SQL statement, parameterised, capped.  *more (may be
 * NULL) tells whether results were cut by the limit.  Errors:
 * AG_ERR_INVALID for an identifier the standard refuses (the message names
 * the key), AG_ERR_UNSUPPORTED for a key Agora cannot match on.
 */
int store_query(Store *s, const StoreQuery *q, StoreMatchFn fn, void *ctx,
                bool *more, AgError *err);

/* ---- reading stored instances -------------------------------------------- */

typedef struct StoreInstance {
    int fd;                        /* the blob, open for reading; close it */
    uint64_t size;                 /* of the whole Part 10 blob */
    uint64_t dataset_offset;       /* where the data set starts */
    char sop_class_uid[65];
    char sop_instance_uid[65];
    char transfer_syntax[65];
} StoreInstance;

/**
 * Open a stored instance by SOP Instance UID for zero-copy serving.
 * AG_ERR_NOTFOUND if not indexed; AG_ERR_IO if its blob is gone.
 */
int store_instance_open(Store *s, const char *sop_uid, StoreInstance *out,
                        AgError *err);

/**
 * Storage commitment's question (PS3.4 J.3.3): is this instance durably
 * stored, of this SOP class, with its bytes matching their checksum?
 * AG_OK, AG_ERR_NOTFOUND (not stored), AG_ERR_INVALID (class differs) or
 * AG_ERR_IO (blob missing or corrupt).
 */
int store_instance_verify(Store *s, const char *sop_uid, const char *sop_class,
                          AgError *err);

/**
 * The stored DICOM JSON document of each instance of a study, a series or
 * one instance (series and instance may be NULL), series by series in
 * instance-number order: WADO-RS metadata is a read, not a parse of every
 * file (DESIGN.md §6).  fn returning non-zero stops.  AG_ERR_NOTFOUND when
 * nothing matches.
 */
int store_metadata(Store *s, const char *study, const char *series,
                   const char *instance,
                   int (*fn)(void *ctx, const char *json, size_t len),
                   void *ctx, AgError *err);

/** Counts for statistics. */
typedef struct StoreStats {
    uint64_t patients, studies, series, instances, bytes;
} StoreStats;
int store_stats(Store *s, StoreStats *out, AgError *err);

/** The group commit (for /metrics): instances waiting for the commit
 * thread now, transactions committed and the instances in them (their
 * ratio is the mean batch size), the largest batch.  Thread-safe. */
typedef struct StoreCommitStats {
    uint64_t queued, batches, batched, max_batch;
} StoreCommitStats;
void store_commit_stats(Store *s, StoreCommitStats *out);

/* What the compression policy did: instances re-encoded, their bytes as
 * received and as stored. */
typedef struct StoreCompressStats {
    uint64_t instances, bytes_in, bytes_out;
} StoreCompressStats;
void store_compress_stats(Store *s, StoreCompressStats *out);

/* ---- remote DICOM nodes (`agora node`, C-MOVE destinations) -------------- */

typedef struct StoreNode {
    char aet[17];              /* AE title, the key */
    char host[256];
    uint16_t port;
    bool tls;
    char description[129];
    /* The department the node belongs to ("" for none: an archive-wide,
     * trusted node).  Its studies are assigned to it at ingest, and its
     * queries and retrievals see that department's scope. */
    char department[65];
    int64_t department_id;     /* filled in by get/list; 0 for none */
} StoreNode;

/** Add or update a node.  AE title, host and port are validated. */
int store_node_put(Store *s, const StoreNode *n, AgError *err);
/** AG_ERR_NOTFOUND if absent. */
int store_node_remove(Store *s, const char *aet, AgError *err);
int store_node_get(Store *s, const char *aet, StoreNode *out, AgError *err);
/** fn != 0 stops. */
int store_node_list(Store *s, int (*fn)(void *ctx, const StoreNode *n),
                    void *ctx, AgError *err);

/* ---- Modality Worklist (worklist.c; PS3.4 K) ------------------------------ */

/*
 * The scheduled procedure steps modalities fetch with C-FIND on the
 * Modality Worklist Information Model (PS3.4 K.6), so that the technologist
 * picks the patient from a list instead of typing names and IDs.  Each item
 * is ONE Scheduled Procedure Step, kept as a DICOM JSON object (PS3.18 F,
 * UTF-8): patient, visit, imaging service request and requested procedure
 * attributes, and a Scheduled Procedure Step Sequence (0040,0100) of exactly
 * one item (K.6.1.2.2: a response carries one step).  Items come from the
 * REST API and `agora worklist`; an item may belong to a department.
 *
 * Scope: an archive-wide caller sees every item; a caller limited to
 * departments sees the items of those departments only (an item without a
 * department is the imaging team's own).
 */
typedef struct StoreWorklistItem {
    int64_t id;
    const char *json;          /* the item, DICOM JSON */
    const char *department;    /* its department's name, "" for none */
    int64_t created_at;        /* seconds since the epoch */
} StoreWorklistItem;

/**
 * Check and add one item given as DICOM JSON; *id (may be NULL) gets its
 * id.  Required (PS3.4 K.6-1 Type 1, AG_ERR_INVALID naming the attribute
 * otherwise): Patient's Name and Patient ID, and in the one Scheduled
 * Procedure Step item Modality, Scheduled Station AE Title and the
 * step's start date and time (valid DA and TM).  Study Instance UID,
 * Scheduled Procedure Step ID and Requested Procedure ID are made up
 * when absent.  department: a department's name, or NULL/"" for none
 * (AG_ERR_NOTFOUND if there is no such department).
 */
int store_worklist_add(Store *s, const char *json, size_t len,
                       const char *department, int64_t *id, AgError *err);
/** One item in scope; AG_ERR_NOTFOUND if absent or out of scope.  The
 *  item passed to fn lives only during the call. */
int store_worklist_get(Store *s, const StoreScope *scope, int64_t id,
                       int (*fn)(void *ctx, const StoreWorklistItem *it),
                       void *ctx, AgError *err);
/** The items in scope, by scheduled date and time; fn != 0 stops. */
int store_worklist_list(Store *s, const StoreScope *scope,
                        int (*fn)(void *ctx, const StoreWorklistItem *it),
                        void *ctx, AgError *err);
/** Remove one item in scope; AG_ERR_NOTFOUND if absent or out of scope. */
int store_worklist_remove(Store *s, const StoreScope *scope, int64_t id,
                          AgError *err);
/** Remove every item scheduled before date (YYYYMMDD); *n (may be NULL)
 *  gets how many. */
int store_worklist_purge(Store *s, const char *date, uint64_t *n,
                         AgError *err);
/**
 * C-FIND on the worklist: every item in scope whose attributes match keys
 * (PS3.4 K.2.2.1: the C.2.2.2 rules, sequence matching on the Scheduled
 * Procedure Step Sequence; person names case-insensitive when fuzzy) is
 * passed to fn as the response identifier: Specific Character Set ISO_IR
 * 192 and every key of keys, with the item's value or empty (a sequence
 * key with an empty item returns the whole sequence).  At most 1,000
 * matches, by scheduled date and time.  fn != 0 stops.
 */
int store_worklist_find(Store *s, const DicomDataset *keys,
                        const StoreScope *scope, bool fuzzy,
                        StoreMatchFn fn, void *ctx, AgError *err);

/* ---- Modality Performed Procedure Step (mpps.c; PS3.4 F.7) ------------------ */

/*
 * What a modality reports of a step it performs: N-CREATE when it starts
 * (Performed Procedure Step Status (0040,0252) IN PROGRESS), N-SET as it
 * goes and when it ends (COMPLETED or DISCONTINUED; then the step is
 * final, F.7.2.2).  Each step is kept whole as DICOM JSON in the index.
 * The worklist follows (store__worklist_follow): the items the step names
 * in its Scheduled Step Attributes Sequence (0040,0270: Study Instance UID
 * and Scheduled Procedure Step ID), in the caller's scope, become STARTED,
 * then COMPLETED or DISCONTINUED, and done ones leave the modalities'
 * worklist.
 */
typedef struct StoreMpps {
    const char *uid;           /* Affected SOP Instance UID */
    const char *status;        /* IN PROGRESS, COMPLETED, DISCONTINUED */
    const char *study_uid;     /* of the first scheduled step, or "" */
    const char *calling_ae;    /* who created it */
    const char *json;          /* the step, DICOM JSON */
    int64_t created_at, updated_at;
} StoreMpps;

/**
 * N-CREATE (F.7.2.1) of step uid; an empty uid is made up (F.7.2.1.1: the
 * SCP assigns one when the SCU does not) and returned in uid.  *bad_tag
 * (may be NULL) names the attribute at fault.  AG_ERR_EXISTS: a step with
 * this UID; AG_ERR_INVALID: uid not a UID, the status not IN PROGRESS, the
 * Scheduled Step Attributes Sequence missing or an item of it without a
 * valid Study Instance UID, a date or time that is not a DA or TM.
 */
int store_mpps_create(Store *s, char uid[65], const DicomDataset *ds,
                      const StoreScope *scope, const char *calling_ae,
                      uint32_t *bad_tag, AgError *err);
/**
 * N-SET (F.7.2.2): the attributes of mods replace the step's.
 * AG_ERR_NOTFOUND: no such step; AG_ERR_DENIED: the step is final and may
 * no longer be updated; AG_ERR_INVALID: a status that is not IN PROGRESS,
 * COMPLETED or DISCONTINUED (*bad_tag set).
 */
int store_mpps_set(Store *s, const char *uid, const DicomDataset *mods,
                   const StoreScope *scope, uint32_t *bad_tag,
                   AgError *err);
/** Every step, newest first, for archive-wide callers (none for others);
 *  fn != 0 stops. */
int store_mpps_list(Store *s, const StoreScope *scope,
                    int (*fn)(void *ctx, const StoreMpps *m), void *ctx,
                    AgError *err);

/* ---- run-time settings (settings.c) ------------------------------------ */

/*
 * The few settings an administrator changes while `agora serve` runs (PUT
 * /api/v1/settings), kept in the index (table settings: key, value,
 * changed_at, changed_by) so that they survive a restart:
 *
 *   duplicates         keep | replace | reject   the duplicate policy
 *   accept_unknown_ae  false | true   DIMSE: admit calling AE titles that
 *                                     are not known nodes
 *   fuzzy_names        false | true   C-FIND person names match ignoring
 *                                     case (PS3.4 C.2.2.2.1)
 *   compress           "" | jpeg-ls | rle | j2k   the compression policy
 *                                     ("" or "none": store as received)
 *
 * Values are text ("true"/"false" for the booleans).  Precedence at start
 * (store_settings_load): a value given on the command line applies for
 * that run; otherwise the stored one; otherwise the default (for
 * duplicates and compress, the StoreConfig's).  A change through
 * store_settings_update applies at once, whatever the source before, and
 * is stored.  Only `agora serve` loads stored settings; store_open alone
 * runs with its StoreConfig.
 *
 * Thread-safety: every function may be called from any thread at any
 * time; readers never block on a change in progress.
 */

typedef enum StoreSettingSource {
    STORE_SETTING_DEFAULT = 0,     /* built in, or the StoreConfig's */
    STORE_SETTING_COMMAND_LINE,    /* given for this run */
    STORE_SETTING_STORED,          /* kept in the index */
} StoreSettingSource;

/* A run-time setting as it is now.  Strings are static. */
typedef struct StoreSetting {
    const char *key;
    const char *value;             /* "keep", "true", "jpeg-ls", "" ... */
    bool boolean;                  /* value is "true" or "false" */
    StoreSettingSource source;
} StoreSetting;

/** "default", "command line" or "stored". */
const char *store_setting_source_name(StoreSettingSource source);

/**
 * Whether key names a run-time setting; *boolean (may be NULL) tells
 * whether its values are "true"/"false".
 */
bool store_setting_known(const char *key, bool *boolean);

/**
 * Check a value without applying it: AG_ERR_INVALID naming the key for an
 * unknown key or a value it does not take (a compression syntax this
 * build cannot encode included).
 */
int store_setting_check(const char *key, const char *value, AgError *err);

/**
 * At start, before any listener: apply the stored settings, except those
 * in keys[0..n), whose values[] (the command line) apply for this run
 * (not stored).  A stored row that is unknown or no longer valid is
 * logged and ignored.  Errors: AG_ERR_INVALID (a given key or value,
 * named; nothing applied), or the index's error.
 */
int store_settings_load(Store *s, const char *const *keys,
                        const char *const *values, size_t n, AgError *err);

/** The current value and source of key; AG_ERR_NOTFOUND if unknown. */
int store_setting_get(Store *s, const char *key, StoreSetting *out,
                      AgError *err);

/**
 * Every run-time setting as one consistent snapshot (none changes in
 * between), in a fixed order, at most cap; returns how many there are.
 */
size_t store_settings_list(Store *s, StoreSetting *out, size_t cap);

/* One change of store_settings_update. */
typedef struct StoreSettingChange {
    const char *key;               /* in */
    const char *value;             /* in */
    const char *old;               /* out: the value it replaced (static) */
} StoreSettingChange;

/**
 * Change some settings at once: every key and value is checked first
 * (AG_ERR_INVALID naming the first bad one, or a key given twice: then
 * nothing changes), then all are stored in one statement (changed_by =
 * by, may be NULL) and applied; if storing fails nothing is applied.
 * Concurrent updates are serialised.  At most 16 changes.
 */
int store_settings_update(Store *s, StoreSettingChange *changes, size_t n,
                          const char *by, AgError *err);

/** store_settings_update of one setting. */
int store_setting_set(Store *s, const char *key, const char *value,
                      const char *by, AgError *err);

/**
 * The current value of a boolean setting, lock-free (false for a key that
 * is not a boolean setting): what the DIMSE services read at each use.
 */
bool store_setting_bool(Store *s, const char *key);

/* ---- integrity ------------------------------------------------------------- */

typedef struct StoreCheckReport {
    uint64_t instances_checked;
    uint64_t blobs_seen;
    uint64_t missing_blobs;     /* index rows whose blob is gone */
    uint64_t bad_checksums;     /* blob bytes differ from the index */
    uint64_t orphan_blobs;      /* blobs no row points to */
    uint64_t reindexed;         /* orphans re-indexed by repair */
    uint64_t removed_rows;      /* rows of missing blobs removed by repair */
    uint64_t unreadable;        /* orphans that are not DICOM */
    uint64_t quarantined;       /* of those, moved to DIR/lost+found */
    uint64_t removed_duplicates;/* orphan copies of indexed instances */
} StoreCheckReport;

typedef void (*StoreCheckLog)(void *ctx, const char *what, const char *path,
                              const char *detail);

/**
 * Verify every index row has its blob with the right checksum and every
 * blob is indexed.  With repair: orphan blobs are re-indexed (so a lost
 * index is rebuilt from the blobs), rows whose blob is missing are removed
 * and reported.  log (may be NULL) is told about each problem.
 */
int store_check(Store *s, bool repair, StoreCheckLog log, void *ctx,
                StoreCheckReport *out, AgError *err);

#endif
