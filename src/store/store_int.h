/*
 * store_int.h — internal to src/store/: the blob store, the index seam and
 * the attributes extracted from an instance.
 */
#ifndef AG_STORE_INT_H
#define AG_STORE_INT_H

#include "store.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>

/* ---- blobs (blob.c) ------------------------------------------------------ */

/* "ab/" + 32 hex + "-" + 16 hex + NUL */
#define STORE_BLOB_NAME_MAX 64

typedef struct StoreBlobs StoreBlobs;

typedef struct StoreBlobInfo {
    uint64_t size;
    char checksum[65];        /* BLAKE2b-256, lowercase hex */
} StoreBlobInfo;

/* Create DIR/blobs and DIR/tmp, remove temporary leftovers. */
int store__blobs_open(const char *data_dir, StoreBlobs **out, AgError *err);
void store__blobs_close(StoreBlobs *b);
const char *store__blobs_tmp_dir(const StoreBlobs *b);

/* A fresh relative name for a blob of uid: fan-out from a hash of the UID
 * (never the UID itself: SECURITY.md rule 2), unique suffix. */
void store__blob_name(const char *uid, char out[STORE_BLOB_NAME_MAX]);

/*
 * Put a blob under name, hashing it as it is written.  publish: bytes
 * written to name.tmp in the blob's directory, fdatasynced, renamed to
 * name; the name becomes durable with store__blob_sync_dir(), which the
 * commit thread runs once per directory per batch, before the index
 * commit.  !publish (pending): name.tmp is written and closed, nothing
 * synced; the commit thread syncs the file system, publishes and syncs
 * again (StoreSync, store.h).
 */
int store__blob_put_buffer(StoreBlobs *b, const char *name,
                           const uint8_t *p, size_t n, bool publish,
                           StoreBlobInfo *info, AgError *err);
/* Copy from fd (read from its current position to EOF). */
int store__blob_put_fd(StoreBlobs *b, const char *name, int fd,
                       uint64_t max_bytes, bool publish, StoreBlobInfo *info,
                       AgError *err);
/* Take a spooled file (same filesystem; consumed whatever the result).
 * known: its size and checksum when the caller has them (hashed as it was
 * received or read), else NULL and the file is read back to hash it. */
int store__blob_put_rename(StoreBlobs *b, const char *name, const char *path,
                           const StoreBlobInfo *known, bool publish,
                           StoreBlobInfo *info, AgError *err);
/* Rename a pending name.tmp to name (fault point blob.rename). */
int store__blob_publish(StoreBlobs *b, const char *name, AgError *err);
/* Remove name.tmp and name (a blob of a failed or duplicate store). */
void store__blob_discard(StoreBlobs *b, const char *name);
/* syncfs(2) of the blob file system. */
int store__blob_sync_fs(StoreBlobs *b, AgError *err);
/* Fault injection for a step of the pipeline's syncfs (AGORA_FAULT):
 * true, with an I/O error in err, when point is to fail now. */
bool store__blob_fault(StoreBlobs *b, const char *point, AgError *err);
int store__blob_sync_dir(StoreBlobs *b, const char *name, AgError *err);
/* Remove a blob (missing is fine). */
int store__blob_remove(StoreBlobs *b, const char *name, AgError *err);
/* Move a blob that is not an instance to DIR/lost+found (check --repair). */
int store__blob_quarantine(StoreBlobs *b, const char *name, AgError *err);
/* Absolute path of a blob into out. */
int store__blob_path(const StoreBlobs *b, const char *name, char *out,
                     size_t cap, AgError *err);
/* A blob's checksum computed piece by piece, for bytes that arrive in
 * pieces (spool.c). */
typedef struct StoreBlobHash {
    crypto_generichash_state h;
    uint64_t size;
} StoreBlobHash;
void store__blob_hash_init(StoreBlobHash *h);
void store__blob_hash_update(StoreBlobHash *h, const void *p, size_t n);
void store__blob_hash_final(StoreBlobHash *h, StoreBlobInfo *info);
/* Checksum and size of bytes in memory, as a blob of them would have. */
void store__blob_hash_buffer(const uint8_t *p, size_t n, StoreBlobInfo *info);
/* Checksum and size of a stored blob. */
int store__blob_hash(StoreBlobs *b, const char *name, StoreBlobInfo *info,
                     AgError *err);
/* Call fn for every blob name (relative); fn != 0 stops. */
int store__blob_walk(StoreBlobs *b, int (*fn)(void *ctx, const char *name),
                     void *ctx, AgError *err);

/* ---- spools (spool.c) ---------------------------------------------------- */

struct StoreSpool {
    AgBuf mem;                 /* every byte so far, while in_mem */
    bool in_mem;
    int fd;                    /* the file, -1 until started */
    char path[AG_PATH_MAX];    /* "" when there is no file */
    const char *dir;           /* store_tmp_dir() */
    uint64_t limit;            /* the store's maximum instance size */
    uint64_t filed;            /* bytes in the file */
    uint64_t kicked;           /* bytes whose write-back was started */
    StoreBlobHash hash;
    int rc;                    /* the first failure, AG_OK if none */
    AgError err;
};

/* Finish the spool for ingest: its file (if any) closed, its checksum in
 * *sum.  A spoiled spool returns its first failure. */
int store__spool_finish(StoreSpool *sp, StoreBlobInfo *sum, AgError *err);
/* The store's maximum instance size in bytes (store.c). */
uint64_t store__max_bytes(const Store *s);

/* ---- what the index holds of an instance (attrs.c) ---------------------- */

typedef struct StoreAttrs {
    /* patient */
    const char *patient_id, *issuer, *patient_name, *patient_name_norm,
        *birth_date, *sex;
    /* study */
    const char *study_uid, *study_date, *study_time, *accession, *study_id,
        *study_description, *referring_name, *referring_name_norm;
    /* series */
    const char *series_uid, *modality, *series_description, *body_part,
        *series_date, *series_time, *station, *institution, *department,
        *manufacturer, *requesting_service;
    int64_t series_number;     /* INT64_MIN when absent */
    /* instance */
    const char *sop_uid, *sop_class_uid, *transfer_syntax, *content_date,
        *content_time;
    int64_t instance_number, rows, columns, frames;
} StoreAttrs;

/*
 * Extract the indexed attributes (strings as UTF-8, arena-owned) and
 * validate identifiers: SOP Class/Instance, Study and Series UIDs present
 * and well-formed (PS3.5 §9.1).  AG_ERR_INVALID naming the attribute.
 */
int store__attrs_extract(const DicomFile *f, AgArena *a, StoreAttrs *out,
                         AgError *err);

/* Upper-case ASCII, trailing '^' and spaces removed: the form person names
 * are matched in (case-insensitive matching, PS3.4 C.2.2.2.1). */
char *store__pn_normalize(const char *pn, AgArena *a);

/* ---- the index seam (index_sqlite.c now; PostgreSQL later) ------------- */

typedef struct StoreIndex StoreIndex;

typedef struct StoreIndexInsert {
    const StoreAttrs *attrs;
    const char *blob_name;
    const StoreBlobInfo *blob;
    const char *metadata_json;     /* instance's DICOM JSON, or NULL */
    size_t metadata_len;
    const StoreSource *source;
    /* The blob's bytes when it is staged in the index (no file yet), or
     * NULL: kept with the rows, in the same transaction. */
    const uint8_t *staged;
    size_t staged_len;
} StoreIndexInsert;

typedef struct StoreIndexOps {
    void (*close)(StoreIndex *ix);
    int (*begin)(StoreIndex *ix, AgError *err);
    int (*commit)(StoreIndex *ix, AgError *err);
    /* Whether commits wait for stable storage (on, the default) or leave
     * it to the caller, who makes the index's files durable itself
     * (syncfs) before anyone relies on the rows; an unsynced commit is
     * still atomic after a crash (lost whole or kept whole).  Outside a
     * transaction.  NULL when the backend cannot. */
    int (*set_commit_sync)(StoreIndex *ix, bool on, AgError *err);
    /* Make every commit returned so far durable (what a commit with sync
     * on would have flushed, and no more: the log, not the blobs).  Safe
     * on another thread while the writer goes on committing, so that one
     * batch's flush overlaps the next batch's work.  NULL when the
     * backend cannot. */
    int (*sync_log)(StoreIndex *ix, AgError *err);
    void (*rollback)(StoreIndex *ix);
    /* Blob name of a stored instance; AG_ERR_NOTFOUND if absent. */
    int (*find_instance)(StoreIndex *ix, const char *sop_uid,
                         char blob_name[STORE_BLOB_NAME_MAX], AgError *err);
    /* Insert (or, replace=true, overwrite) one instance with its series,
     * study and patient rows; *conflict when the study belongs to
     * another patient. */
    int (*put_instance)(StoreIndex *ix, const StoreIndexInsert *in,
                        bool replace, bool *conflict, AgError *err);
    /* Delete rows at a level; blob names go to the trash table. */
    int (*delete_level)(StoreIndex *ix, StoreLevel level, const char *key,
                        uint64_t *count, AgError *err);
    /* Trash: blob names whose rows are gone; remove after unlinking. */
    int (*trash_list)(StoreIndex *ix,
                      int (*fn)(void *ctx, const char *name), void *ctx,
                      AgError *err);
    int (*trash_clear)(StoreIndex *ix, const char *name, AgError *err);
    int (*list)(StoreIndex *ix, StoreLevel level, const char *const *filters,
                uint32_t limit, StoreRowFn fn, void *ctx, AgError *err);
    int (*stats)(StoreIndex *ix, StoreStats *out, AgError *err);
    /* Every instance's (sop uid, blob name, checksum, size). */
    int (*walk_instances)(StoreIndex *ix,
                          int (*fn)(void *ctx, const char *sop_uid,
                                    const char *blob, const char *checksum,
                                    uint64_t size),
                          void *ctx, AgError *err);
    int (*has_blob)(StoreIndex *ix, const char *blob, bool *out,
                    AgError *err);
    /* Staged blobs (store.c): small blobs kept in the index until their
     * files are written.  get appends the bytes of name to out
     * (AG_ERR_NOTFOUND: not staged); list calls fn for up to max, oldest
     * first (fn != 0 stops); count sums them; drop, in the writer's
     * transaction, forgets name and says whether an instance row still
     * names it. */
    int (*staged_get)(StoreIndex *ix, const char *name, AgBuf *out,
                      AgError *err);
    int (*staged_list)(StoreIndex *ix, uint32_t max,
                       int (*fn)(void *ctx, const char *name,
                                 const uint8_t *data, size_t len),
                       void *ctx, AgError *err);
    int (*staged_count)(StoreIndex *ix, uint64_t *n, uint64_t *bytes,
                        AgError *err);
    int (*staged_drop)(StoreIndex *ix, const char *name, bool *indexed,
                       AgError *err);
    /* Run a read-only SELECT with text parameters; fn gets each row. */
    int (*select)(StoreIndex *ix, const char *sql,
                  const char *const *params, int nparams,
                  int (*fn)(void *ctx, int ncol, const char *const *vals),
                  void *ctx, AgError *err);
    /* Run one writing statement with text parameters (NULL binds NULL);
     * *changes and *last_id may be NULL. */
    int (*exec)(StoreIndex *ix, const char *sql, const char *const *params,
                int nparams, int64_t *changes, int64_t *last_id,
                AgError *err);
    int (*node_put)(StoreIndex *ix, const StoreNode *n, AgError *err);
    int (*node_remove)(StoreIndex *ix, const char *aet, AgError *err);
    int (*node_get)(StoreIndex *ix, const char *aet, StoreNode *out,
                    AgError *err);
    int (*node_list)(StoreIndex *ix,
                     int (*fn)(void *ctx, const StoreNode *n), void *ctx,
                     AgError *err);
} StoreIndexOps;

struct StoreIndex {
    const StoreIndexOps *ops;
};

/* ---- compression on ingest (compress.c) -------------------------------- */

/* A lossless syntax the policy may use, with an encoder here. */
bool store__compress_syntax_ok(const char *ts_uid);
/* Re-encode the Part 10 instance in data to ts_uid, appending the new file
 * to out and setting *changed, when it is a native image that the codec
 * encodes, that shrinks, and whose frames decode back bit-exactly; else
 * *changed is false and nothing is appended.  Never fails the ingest. */
int store__compress(const char *ts_uid, const uint8_t *data, size_t len,
                    AgBuf *out, bool *changed);

/* ---- run-time settings (settings.c) ------------------------------------ */

#define STORE__NSETTINGS 4

/* Each setting's current value is an index into its choices, atomic so
 * that ingest, associations and queries read it without a lock and never
 * see it torn; lock serialises changes (persist, then apply) and guards
 * source. */
typedef struct StoreSettings {
    pthread_mutex_t lock;
    atomic_int value[STORE__NSETTINGS];
    StoreSettingSource source[STORE__NSETTINGS];
} StoreSettings;

/* Defaults, with the duplicate and compression policies of cfg (its
 * compress_ts already validated); every source STORE_SETTING_DEFAULT. */
void store__settings_init(StoreSettings *t, const StoreConfig *cfg);
void store__settings_deinit(StoreSettings *t);
/* The policies now in force (each read once per use: they may change). */
StoreDupPolicy store__dup_policy(Store *s);
const char *store__compress_ts(Store *s);   /* NULL: store as received */

/* Accessors for the other files of the store. */
StoreSettings *store__settings(Store *s);
StoreBlobs *store__blobs(Store *s);
StoreIndex *store__index(Store *s);
/* A blob for reading, from its file or, while it is staged in the index,
 * from a memfd holding its bytes.  AG_ERR_NOTFOUND when it is neither. */
int store__blob_fd(Store *s, const char *name, int *fd, AgError *err);
/* store__blob_hash of a blob wherever it is (file or staged). */
int store__blob_hash_any(Store *s, const char *name, StoreBlobInfo *info,
                         AgError *err);
/* Index a blob already in place (check --repair); AG_ERR_EXISTS when its
 * SOP Instance UID is indexed with another blob. */
int store__reindex_blob(Store *s, const char *name, AgError *err);

/* ---- the worklist following performed steps (worklist.c, mpps.c) -------- */

/* The worklist items in scope whose Study Instance UID is study_uid and
 * whose step's ID is sps_id get Scheduled Procedure Step Status status
 * (0040,0020; a done step leaves the modalities' list).  *n (may be NULL)
 * gets how many. */
int store__worklist_follow(Store *s, const StoreScope *scope,
                           const char *study_uid, const char *sps_id,
                           const char *status, uint64_t *n, AgError *err);
/* AE titles (PS3.5 §6.2 AE): 1-16 characters, no backslash or control
 * characters, not all spaces (store.c). */
bool store__valid_aet(const char *s);
/* DA (YYYYMMDD) and TM (HH[MM[SS[.F{1,6}]]]) values, PS3.5 §6.2. */
bool store__valid_da(const char *s);
bool store__valid_tm(const char *s);
/* A new UID under 2.25 from 128 random bits (PS3.5 §B.2). */
void store__new_uid(char out[64]);

/* ---- matching a data set (query.c; the worklist shares it) -------------- */

/* Whether every non-empty key of keys matches ds (PS3.4 C.2.2.2, sequence
 * matching included; person names case-insensitive when fuzzy). */
bool store__match_keys(const DicomDataset *keys, const DicomDataset *ds,
                       bool fuzzy, AgArena *a);
/* Put ds's value of key k into out (for a sequence key, each stored item
 * reduced to the keys of k's item); nothing when ds lacks it. */
int store__copy_return(DicomDataset *out, const DicomElement *k,
                       const DicomDataset *ds, AgArena *a);

/* Open the SQLite index at path (migrations applied). */
int store__index_sqlite_open(const char *path, bool read_only,
                             StoreIndex **out, AgError *err);

#endif
