/* content: the gateway as cloud distribution point (stores, cache, content location service,
 * BranchCache). Sans-I/O pieces first: Range handling, PeerDist hashes and decisions. */
#ifndef CMG_CONTENT_H
#define CMG_CONTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "content-t.h"
#include "core-t.h"

/* Evaluates a Range header value against a representation of `size` bytes (RFC 9110 14.2).
 * One range is served; a syntactically invalid value, another unit, or several ranges are
 * ignored (the whole is sent), as the RFC allows. */
enum content_range_result content_range_eval(const char *value, size_t len, uint64_t size,
                                             struct content_range *out);
/* Formats the Content-Range header value for a result ("bytes 0-9/100" or "bytes * /100"
 * without the space). Returns the length or -1. */
int content_range_format(enum content_range_result r, const struct content_range *range,
                         uint64_t size, char *buf, size_t len);

/* ---- PeerDist: Content Information (peerdist.c) ----
 *
 * A hasher is fed the entity's bytes once, in pieces of any size, as a cache fills; finishing
 * it gives the hashes, which do not depend on the server secret. Binding a secret adds the
 * segment secrets; CI bytes for the whole entity or a range are then written from memory. */

struct content_pd_hasher;
struct content_pd_hashes;

/* A hasher for the versions in o (NULL: both CI versions, default v2 segments). Free it with
 * content_pd_hasher_free(). NULL when out of memory or o is invalid. */
struct content_pd_hasher *content_pd_hasher_new(const struct content_pd_hasher_opts *o);
/* The next len bytes of the entity. After a failure the hasher only reports that failure. */
int content_pd_hasher_update(struct content_pd_hasher *h, const void *data, size_t len);
/* Ends the current v2 segment here (no effect on v1): for segment boundaries chosen by
 * someone else, such as a Windows server's chunker. */
int content_pd_hasher_cut(struct content_pd_hasher *h);
/* Ends the entity. On success *out is the caller's, to be released with
 * content_pd_hashes_free(); the hasher can then only be freed. */
int content_pd_hasher_finish(struct content_pd_hasher *h, struct content_pd_hashes **out);
void content_pd_hasher_free(struct content_pd_hasher *h);

/* Computes and keeps every segment secret (Kp) for s, tagged with s->id. Not thread-safe:
 * bind before the hashes are shared. After a key change CIs asked for with the new key are
 * still right, their Kp computed per request, until hashes bound to it replace these. */
int content_pd_hashes_bind(struct content_pd_hashes *h, const struct content_pd_secret *s);
void content_pd_hashes_free(struct content_pd_hashes *h);
uint64_t content_pd_hashes_size(const struct content_pd_hashes *h);
/* Versions computed (CONTENT_PD_V1 | CONTENT_PD_V2 bits) and segment counts. */
unsigned content_pd_hashes_versions(const struct content_pd_hashes *h);
size_t content_pd_hashes_segments(const struct content_pd_hashes *h, enum content_pd_version v);

/* The exact length of the CI of version v for range r (NULL: the whole entity), or a negative
 * content_pd_error. A range is inclusive, as content_range_eval() returns it. */
ssize_t content_pd_ci_size(const struct content_pd_hashes *h, enum content_pd_version v,
                           const struct content_range *r);
/* Writes that CI into buf; returns its length or a negative content_pd_error. Segment secrets
 * come from the binding when it was made with the same key, otherwise they are computed now.
 * Safe to call from several threads on the same hashes. */
ssize_t content_pd_ci_write(const struct content_pd_hashes *h, enum content_pd_version v,
                            const struct content_range *r, const struct content_pd_secret *s,
                            uint8_t *buf, size_t len);
/* The public segment ID (HoHoDk) of segment i, as peers announce it: for logs and for
 * comparing with a Windows server's peers. */
int content_pd_segment_id(const struct content_pd_hashes *h, enum content_pd_version v, size_t i,
                          const struct content_pd_secret *s, uint8_t out[CONTENT_PD_HASH_LEN]);
const char *content_pd_strerror(int err);

/* The PeerDist hashes as bytes for a file beside the cached content (no secrets in them), and
 * back. save: *out is malloc'd, returns its length or a negative content_pd_error. load:
 * checks every count against the size; 0 or CONTENT_PD_EINVAL / CONTENT_PD_ENOMEM. */
ssize_t content_pd_hashes_save(const struct content_pd_hashes *h, uint8_t **out);
int content_pd_hashes_load(const uint8_t *buf, size_t len, struct content_pd_hashes **out);

/* ---- PeerDist: the server secret (peerdist-key.c) ----
 * Setup code: each returns 0, or -1 with a message for the operator in err. */

/* From the secret key's bytes (what netsh exports; 1..CONTENT_PD_KEY_MAX bytes). */
int content_pd_secret_from_key(struct content_pd_secret *s, const uint8_t *key, size_t len,
                               char *err, size_t errlen);
/* From the secret key in hexadecimal (case-insensitive, no separators). */
int content_pd_secret_from_hex(struct content_pd_secret *s, const char *hex, char *err,
                               size_t errlen);
/* From the bytes of a `netsh branchcache exportkey` file and the password given to netsh
 * (UTF-8 here; netsh takes it as UTF-16). */
int content_pd_secret_from_export(struct content_pd_secret *s, const uint8_t *file, size_t len,
                                  const char *password, char *err, size_t errlen);
/* The same, reading the file at path. */
int content_pd_secret_load_export(struct content_pd_secret *s, const char *path,
                                  const char *password, char *err, size_t errlen);
void content_pd_secret_clear(struct content_pd_secret *s);

/* ---- PeerDist: HTTP ([MS-PCCRTP], peerdist-http.c) ---- */

/* Decides how to answer a request (the procedure of docs/peerdist.md): serve the CI, the
 * ordinary response, or the ordinary response with the "make hash" hint. Malformed or
 * unsupported headers give the ordinary response. Returns d->action. */
enum content_pd_action content_pd_decide(const struct content_pd_request *rq,
                                         const struct content_pd_policy *p,
                                         struct content_pd_decision *d);

/* ---- settings (settings.c) ---- */

extern const struct config_key content_settings_keys[];
extern const size_t content_settings_nkeys;
/* Loads the [content] section of an INI file (other sections are skipped). Returns 0, or -1
 * with messages naming file:line:key in report. */
int content_settings_load(const char *path, struct content_settings *out,
                          struct config_report *report);
/* Resolves relative paths against dir, reads account_key_file; then checks what one key
 * alone cannot (a blob store needs an account and a key or a SAS, SAS locations need the key,
 * one PeerDist secret source ...). Returns 0 or -1 with a message naming the key in err. */
int content_settings_finish(struct content_settings *s, const char *dir, char *err, size_t errlen);
void content_settings_free(struct content_settings *s);

/* ---- storage (store.c: the folder store and the common entry points; blob.c: Azure Blob
 * storage over libcurl with Shared Key or SAS) ----
 *
 * Blob names are package-relative paths joined with '/': "content/<package>/<path>" for
 * files, "packages/<package>.json" for package manifests (docs/content.md). Every call blocks:
 * call them from cmgctl or from the gateway's fill and content threads, never from a worker
 * loop. A store may be used from several threads at once. */

struct content_store;

/* A store for s (borrowed during the call; the store copies what it needs). NULL with a
 * message in err when the settings cannot make one. */
struct content_store *content_store_new(const struct content_settings *s, char *err, size_t errlen);
void content_store_free(struct content_store *st);
/* "folder /srv/content" or "blob https://acct.blob.core.windows.net/cmgcontent": for logs. */
const char *content_store_describe(const struct content_store *st);
/* Creates the container (or folder) if missing; 0 when it exists afterwards. */
int content_store_prepare(struct content_store *st, char *err, size_t errlen);

/* Properties of one blob. */
int content_store_head(struct content_store *st, const char *name, struct content_blob_info *info,
                       char *err, size_t errlen);

/* Receives a body's bytes as they arrive; returns 0 to go on, non-zero to abort the read
 * (the read then returns CONTENT_STORE_EABORT). */
typedef int (*content_store_sink_cb)(void *ctx, const void *data, size_t len);
/* Reads a whole blob into sink. When etag is not NULL the read is conditional on it
 * (If-Match) and fails with CONTENT_STORE_ECHANGED if the blob changed. info (may be NULL)
 * is filled from the response headers before the first byte is given to sink. A read that
 * ends short of the announced length fails with CONTENT_STORE_EIO. */
int content_store_get(struct content_store *st, const char *name, const char *etag,
                      content_store_sink_cb sink, void *ctx, struct content_blob_info *info,
                      char *err, size_t errlen);

/* Upload progress: bytes of this file sent so far, and its size. Non-zero aborts. */
typedef int (*content_store_progress_cb)(void *ctx, uint64_t done, uint64_t total);
/* Uploads the file at path as blob name: one Put Blob up to upload_single_max, else Put
 * Block of upload_block bytes each and Put Block List; the blob's Content-MD5 is set to the
 * file's MD5 either way. info (may be NULL) gets the new blob's properties (size, ETag,
 * Last-Modified, MD5). */
int content_store_put_file(struct content_store *st, const char *name, const char *path,
                           const char *content_type, content_store_progress_cb progress, void *ctx,
                           struct content_blob_info *info, char *err, size_t errlen);
/* Uploads len bytes from memory as blob name (small blobs: package manifests). */
int content_store_put_bytes(struct content_store *st, const char *name, const void *data,
                            size_t len, const char *content_type, struct content_blob_info *info,
                            char *err, size_t errlen);
/* Calls each(ctx, info) for every blob whose name starts with prefix (NULL: all), in name
 * order, following continuation markers; a non-zero return from each stops the listing and
 * is returned. */
typedef int (*content_store_each_cb)(void *ctx, const struct content_blob_info *info);
int content_store_list(struct content_store *st, const char *prefix, content_store_each_cb each,
                       void *ctx, char *err, size_t errlen);
/* Deletes one blob; a blob that is already gone counts as deleted. */
int content_store_delete(struct content_store *st, const char *name, char *err, size_t errlen);
/* A read-only service SAS URL for one blob, valid from now - 5 min until `expires` (Unix
 * seconds), written into out. Needs a Shared Key store; -1 with a message otherwise. */
int content_store_sas_url(const struct content_store *st, const char *name, int64_t now,
                          int64_t expires, char *out, size_t outlen, char *err, size_t errlen);
const char *content_store_strerror(int err);

/* ---- packages: names and manifests (manifest.c) ---- */

/* 1..CONTENT_PACKAGE_ID_MAX characters of [A-Za-z0-9._-], not "." or "..". */
bool content_package_id_is_valid(const char *id);
/* The same alphabet, 1..CONTENT_ID_MAX characters. */
bool content_id_is_valid(const char *id);
/* A file's path inside a package: 1..CONTENT_PATH_MAX bytes of '/'-separated segments, none
 * empty, "." or "..", no leading '/', no backslash, no control character. */
bool content_path_is_valid(const char *path);
/* "content/<package>/<path>" and "packages/<package>.json" into out; 0, or -1 when an argument
 * is not valid or out is too small. */
int content_file_blob_name(const char *package, const char *path, char *out, size_t len);
int content_manifest_blob_name(const char *package, char *out, size_t len);

/* Parses and checks a manifest (format 1; unknown members are ignored). On success *out is
 * the caller's, to be released with content_manifest_free(). Returns 0, or -1 with the reason
 * in err: JSON that does not parse, a missing or mistyped member, a bad package id, content
 * id or path, a path given twice, a size beyond CONTENT_SIZE_MAX or sizes that do not add up
 * to "size", more than CONTENT_MANIFEST_FILES_MAX files. */
int content_manifest_parse(const char *json, size_t len, struct content_manifest **out, char *err,
                           size_t errlen);
/* A new manifest with nfiles zeroed file entries for the caller to fill (each path a heap
 * string the manifest then owns); NULL when an argument is not valid or out of memory. */
struct content_manifest *content_manifest_new(const char *package, const char *content_id,
                                              int64_t distributed, size_t nfiles);
/* Sorts the files by path, checks them as content_manifest_parse() would, sets m->size and
 * returns the JSON text (NUL-terminated, *len bytes; the caller frees it), or NULL with the
 * reason in err. */
char *content_manifest_write(struct content_manifest *m, size_t *len, char *err, size_t errlen);
/* The entry of path, or NULL. Borrowed from m. */
const struct content_manifest_file *content_manifest_find(const struct content_manifest *m,
                                                          const char *path);
void content_manifest_free(struct content_manifest *m);
/* ---- disk cache with single-flight fills (cache.c) and package manifests (catalog.c) ----
 *
 * Thread-safe. The cache owns a pool of fill threads that read blobs from the store into
 * files under its folder; any number of requests for one blob version share one fill, and
 * read the file as it grows. A fill is checked (length, MD5) before its file is renamed into
 * place; the index is rebuilt from the folder at start. Progress is announced through the
 * notify callback to the "subscribers" (bits, one per event loop) that asked for it. */

struct content_cache;
struct content_entry;
struct content_package;

/* Called from fill threads (never with a cache lock held) when an entry or a package that
 * the subscribers in `bits` wait for has progressed. */
typedef void (*content_notify_cb)(void *arg, uint64_t bits);

struct content_cache_opts {
    const char *dir;                           /* the cache folder (created) */
    uint64_t max_bytes;                        /* bound of the cached bytes */
    unsigned fill_threads;                     /* 1..64 */
    uint64_t manifest_ttl_ms;                  /* manifests older than this are fetched again */
    unsigned pd_versions;                      /* CI versions hashed while filling; 0: none */
    const struct content_pd_secret *pd_secret; /* borrowed during _new; NULL: hashes unbound */
    content_notify_cb notify;
    void *notify_arg;
};

/* A cache over store (borrowed: it must outlive the cache). NULL with a message in err. */
struct content_cache *content_cache_new(const struct content_cache_opts *o,
                                        struct content_store *store, char *err, size_t errlen);
/* Stops the fill threads (fills in progress are abandoned, their clients see failures),
 * saves the LRU order, frees what no entry reference holds. Entries still referenced stay
 * valid until unreferenced. */
void content_cache_free(struct content_cache *c);

enum content_entry_state {
    CONTENT_ENTRY_WAITING = 0, /* the fill has not had an answer from the store yet */
    CONTENT_ENTRY_STREAMING,   /* bytes arrive: 0..filled can be read */
    CONTENT_ENTRY_READY,       /* complete and checked */
    CONTENT_ENTRY_FAILED,      /* the fill failed (content_entry_error) */
};

/* The entry for blob want->name at version want->etag (size, last_modified and md5 from
 * want are what the fill checks against). Starts a fill on a miss. A new reference (release
 * with content_entry_unref), or NULL when out of memory. *hit says whether the entry was
 * already complete. subscriber: the bit to notify (0: none). */
struct content_entry *content_cache_get(struct content_cache *c,
                                        const struct content_blob_info *want, uint64_t subscriber,
                                        bool *hit);
void content_entry_unref(struct content_entry *e);
enum content_entry_state content_entry_state(const struct content_entry *e);
/* Bytes readable now (all of them once READY). */
uint64_t content_entry_filled(const struct content_entry *e);
const struct content_blob_info *content_entry_info(const struct content_entry *e);
/* The store error of a FAILED entry, and a static description. */
int content_entry_error(const struct content_entry *e, const char **why);
/* Reads up to len bytes at off from the entry (partial or complete), never beyond filled.
 * Returns bytes read, 0 when nothing is readable yet, -1 on an I/O error. */
ssize_t content_entry_pread(struct content_entry *e, void *buf, size_t len, uint64_t off);
/* The PeerDist hashes once READY (NULL before, or when not computed); owned by the entry. */
const struct content_pd_hashes *content_entry_hashes(const struct content_entry *e);
/* Asks to be notified with `bit` when the entry progresses. */
void content_entry_subscribe(struct content_entry *e, uint64_t bit);

struct content_cache_stats {
    uint64_t entries, bytes, max_bytes;
    uint64_t hits, misses, fills_ok, fills_failed, evictions, integrity_failures;
    uint64_t fill_bytes; /* bytes read from the store */
    uint64_t fills_active;
    uint64_t manifests, manifest_fetches, manifest_failures;
};
void content_cache_stats(struct content_cache *c, struct content_cache_stats *out);

/* Package manifests. FOUND: *out is a reference (content_package_unref); a manifest older
 * than manifest_ttl is still given while a fresh one is fetched. PENDING: a fetch is under
 * way, subscriber will be notified. MISSING: the store has no such package (remembered for a
 * short while). ERROR: the last fetch failed (remembered for a short while). */
enum content_lookup {
    CONTENT_LOOKUP_FOUND = 0,
    CONTENT_LOOKUP_PENDING,
    CONTENT_LOOKUP_MISSING,
    CONTENT_LOOKUP_ERROR,
};
enum content_lookup content_catalog_get(struct content_cache *c, const char *package,
                                        uint64_t subscriber, struct content_package **out);
/* True when no first fetch of package is under way any more (what a PENDING lookup waits
 * for has happened). */
bool content_catalog_settled(struct content_cache *c, const char *package);
const struct content_manifest *content_package_manifest(const struct content_package *p);
void content_package_unref(struct content_package *p);

#endif
