/* The content disk cache: one file per blob version, filled once from the store by a pool of
 * threads while any number of readers follow the growing file (single flight). Files:
 *   <key>.part  a fill in progress (deleted at start: never taken for content)
 *   <key>.data  complete content, renamed into place only after its length and MD5 checked
 *   <key>.meta  JSON: name, etag, size, last_modified, md5 (written before the rename)
 *   <key>.pd    PeerDist hashes (peerdist-save.c), when computed
 *   lru         keys, most recent first, written at a clean stop
 * key = hex SHA-256 of "<blob name>\n<etag>". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "content-int.h"
#include "core.h"

#define KEY_LEN 64
#define NOTIFY_STEP (256 * 1024) /* bytes between progress notices while filling */

struct content_entry {
    atomic_uint refs;
    struct content_cache *cache;
    struct content_entry *hnext;               /* hash chain, under cache lock */
    struct content_entry *lru_prev, *lru_next; /* complete entries, under cache lock */
    bool indexed;                              /* in the table, under cache lock */
    bool in_lru;
    bool counted; /* its size counts against max_bytes (not when larger than the cache) */
    char key[KEY_LEN + 1];
    struct content_blob_info info; /* what is wanted; md5 completed from the store */
    atomic_int state;              /* enum content_entry_state */
    atomic_uint_fast64_t filled;
    atomic_uint_fast64_t subscribers;
    int error;
    const char *why;
    int fd;                           /* -1 until opened; under cache lock when opening */
    struct content_pd_hashes *hashes; /* set before READY */
};

/* ---- small helpers ---- */

static void cache_key(const char *name, const char *etag, char out[KEY_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, name, strlen(name)) != 1 || EVP_DigestUpdate(ctx, "\n", 1) != 1 ||
        EVP_DigestUpdate(ctx, etag, strlen(etag)) != 1 || EVP_DigestFinal_ex(ctx, md, &n) != 1)
        memset(md, 0, sizeof(md)); /* cannot happen with the default provider */
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[KEY_LEN] = '\0';
}

static size_t key_slot(const struct content_cache *c, const char *key)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++)
        h = h << 4 | (uint64_t)(key[i] <= '9' ? key[i] - '0' : key[i] - 'a' + 10);
    return (size_t)(h % c->table_size);
}

static void cache_path(const struct content_cache *c, const char *key, const char *ext, char *out,
                       size_t len)
{
    snprintf(out, len, "%s/%s.%s", c->dir, key, ext);
}

static void unlink_files(const struct content_cache *c, const char *key)
{
    static const char *const exts[] = {"data", "meta", "pd", "part"};
    char p[4096];
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        cache_path(c, key, exts[i], p, sizeof(p));
        unlink(p);
    }
}

/* Writes a whole file through a temporary name and a rename. */
static int write_file_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *read_small_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size <= max) {
        buf = malloc((size_t)st.st_size + 1);
        if (buf && fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size) {
            buf[st.st_size] = '\0';
            *len = (size_t)st.st_size;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* ---- entries ---- */

static struct content_entry *entry_new(struct content_cache *c,
                                       const struct content_blob_info *info, const char *key)
{
    struct content_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    atomic_init(&e->refs, 1);
    e->cache = c;
    e->info = *info;
    memcpy(e->key, key, KEY_LEN + 1);
    e->fd = -1;
    return e;
}

static void entry_destroy(struct content_entry *e)
{
    if (e->fd >= 0)
        close(e->fd);
    content_pd_hashes_free(e->hashes);
    free(e);
}

void content_entry_unref(struct content_entry *e)
{
    if (e && atomic_fetch_sub(&e->refs, 1) == 1)
        entry_destroy(e);
}

enum content_entry_state content_entry_state(const struct content_entry *e)
{
    return (enum content_entry_state)atomic_load_explicit(&e->state, memory_order_acquire);
}

uint64_t content_entry_filled(const struct content_entry *e)
{
    /* seq_cst, like the fill's store: a reader that subscribed and then finds nothing new is
     * sure to be notified of what comes next */
    return atomic_load(&e->filled);
}

const struct content_blob_info *content_entry_info(const struct content_entry *e)
{
    return &e->info;
}

int content_entry_error(const struct content_entry *e, const char **why)
{
    if (why)
        *why = e->why ? e->why : "";
    return e->error;
}

const struct content_pd_hashes *content_entry_hashes(const struct content_entry *e)
{
    return content_entry_state(e) == CONTENT_ENTRY_READY ? e->hashes : NULL;
}

void content_entry_subscribe(struct content_entry *e, uint64_t bit)
{
    atomic_fetch_or(&e->subscribers, bit);
}

ssize_t content_entry_pread(struct content_entry *e, void *buf, size_t len, uint64_t off)
{
    uint64_t filled = content_entry_filled(e);
    if (off >= filled)
        return 0;
    if (len > filled - off)
        len = (size_t)(filled - off);
    if (e->fd < 0) {
        /* a complete entry from an earlier run: opened on first use */
        struct content_cache *c = e->cache;
        pthread_mutex_lock(&c->lock);
        if (e->fd < 0) {
            char p[4096];
            cache_path(c, e->key, "data", p, sizeof(p));
            e->fd = open(p, O_RDONLY | O_CLOEXEC);
        }
        pthread_mutex_unlock(&c->lock);
        if (e->fd < 0)
            return -1;
    }
    ssize_t n;
    do
        n = pread(e->fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n;
}

/* ---- index and LRU (cache lock held) ---- */

static void lru_unlink(struct content_cache *c, struct content_entry *e)
{
    if (!e->in_lru)
        return;
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
    e->in_lru = false;
}

static void lru_push_front(struct content_cache *c, struct content_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    else
        c->lru_tail = e;
    c->lru_head = e;
    e->in_lru = true;
}

static void lru_push_back(struct content_cache *c, struct content_entry *e)
{
    e->lru_next = NULL;
    e->lru_prev = c->lru_tail;
    if (c->lru_tail)
        c->lru_tail->lru_next = e;
    else
        c->lru_head = e;
    c->lru_tail = e;
    e->in_lru = true;
}

static struct content_entry *index_find(struct content_cache *c, const char *key)
{
    for (struct content_entry *e = c->table[key_slot(c, key)]; e; e = e->hnext)
        if (memcmp(e->key, key, KEY_LEN) == 0)
            return e;
    return NULL;
}

static void index_add(struct content_cache *c, struct content_entry *e)
{
    size_t s = key_slot(c, e->key);
    e->hnext = c->table[s];
    c->table[s] = e;
    e->indexed = true;
    /* a file larger than the whole cache is served and dropped: counting it would only
     * evict everything else for nothing */
    e->counted = e->info.size <= c->max_bytes;
    if (e->counted)
        c->used += e->info.size;
    c->entries++;
}

/* Takes e out of the index and the LRU; the cache's reference goes with it (the caller
 * drops it after unlocking). */
static void index_remove(struct content_cache *c, struct content_entry *e)
{
    if (!e->indexed)
        return;
    struct content_entry **pp = &c->table[key_slot(c, e->key)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
    e->indexed = false;
    lru_unlink(c, e);
    if (e->counted)
        c->used -= e->info.size;
    c->entries--;
}

/* Takes an evicted entry's files out of the way at once (small files unlinked, the content
 * renamed: both quick), so that a new fill of the same key starts clean; the content itself,
 * possibly gigabytes whose unlink takes a while, is removed later on a fill thread. Cache
 * lock held. */
static void trash_files(struct content_cache *c, const char *key)
{
    char p[4096], gone[4200];
    cache_path(c, key, "meta", p, sizeof(p));
    unlink(p);
    cache_path(c, key, "pd", p, sizeof(p));
    unlink(p);
    cache_path(c, key, "data", p, sizeof(p));
    snprintf(gone, sizeof(gone), "%s/gone-%s-%llu", c->dir, key,
             (unsigned long long)++c->trash_seq);
    if (rename(p, gone) != 0) {
        unlink(p);
        return;
    }
    char **grown = realloc(c->trash, (c->ntrash + 1) * sizeof(*c->trash));
    char *copy = strdup(gone);
    if (!grown || !copy) {
        free(copy);
        if (grown)
            c->trash = grown;
        unlink(gone); /* no memory to defer it: now */
        return;
    }
    c->trash = grown;
    c->trash[c->ntrash++] = copy;
}

static void trash_run(struct content_cache *c, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&c->lock);
    char **list = c->trash;
    size_t n = c->ntrash;
    c->trash = NULL;
    c->ntrash = 0;
    c->trash_queued = false;
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        unlink(list[i]);
        free(list[i]);
    }
    free(list);
}

/* After unlocking: hands the trash to a fill thread (once). */
static void trash_later(struct content_cache *c)
{
    pthread_mutex_lock(&c->lock);
    bool go = c->ntrash && !c->trash_queued && !c->stopping;
    if (go)
        c->trash_queued = true;
    pthread_mutex_unlock(&c->lock);
    if (go && content_cache_submit(c, trash_run, NULL) != 0) {
        pthread_mutex_lock(&c->lock);
        c->trash_queued = false;
        pthread_mutex_unlock(&c->lock);
    }
}

/* Evicts the least recently used complete entries until the bytes fit (or none is left to
 * evict). Readers of an evicted entry keep their open file. Returns the evicted entries in a
 * list through hnext, for the caller to unref after unlocking. */
static struct content_entry *evict_locked(struct content_cache *c)
{
    struct content_entry *gone = NULL;
    while (c->used > c->max_bytes && c->lru_tail) {
        struct content_entry *e = c->lru_tail;
        index_remove(c, e);
        trash_files(c, e->key);
        c->stats.evictions++;
        e->hnext = gone;
        gone = e;
    }
    return gone;
}

static void unref_list(struct content_entry *list)
{
    while (list) {
        struct content_entry *next = list->hnext;
        list->hnext = NULL;
        content_entry_unref(list);
        list = next;
    }
}

/* ---- jobs ---- */

int content_cache_submit(struct content_cache *c, void (*run)(struct content_cache *, void *),
                         void *arg)
{
    return content_cache_submit_at(c, run, arg, false);
}

int content_cache_submit_at(struct content_cache *c, void (*run)(struct content_cache *, void *),
                            void *arg, bool first)
{
    struct content_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -1;
    j->run = run;
    j->arg = arg;
    pthread_mutex_lock(&c->lock);
    if (c->stopping) {
        pthread_mutex_unlock(&c->lock);
        free(j);
        return -1;
    }
    if (first) {
        j->next = c->jobs;
        if (!c->jobs)
            c->jobs_tail = &j->next;
        c->jobs = j;
    } else {
        *c->jobs_tail = j;
        c->jobs_tail = &j->next;
    }
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

void content_cache_announce(struct content_cache *c, uint64_t bits)
{
    if (bits && c->notify)
        c->notify(c->notify_arg, bits);
}

static void *fill_thread(void *arg)
{
    struct content_cache *c = arg;
    pthread_setname_np(pthread_self(), "cmg-fill");
    log_set_thread_tag("fill");
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->jobs && !c->stopping)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->stopping)
            break;
        struct content_job *j = c->jobs;
        c->jobs = j->next;
        if (!c->jobs)
            c->jobs_tail = &c->jobs;
        pthread_mutex_unlock(&c->lock);
        j->run(c, j->arg);
        free(j);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- a fill ---- */

struct fill {
    struct content_entry *e; /* reference held by the job */
    int fd;
    EVP_MD_CTX *md5;
    struct content_pd_hasher *pd;
    uint64_t notified;
};

static void entry_notify(struct content_entry *e)
{
    content_cache_announce(e->cache, atomic_load(&e->subscribers));
}

static int fill_sink(void *ctx, const void *data, size_t len)
{
    struct fill *f = ctx;
    struct content_entry *e = f->e;
    struct content_cache *c = e->cache;
    if (__atomic_load_n(&c->stopping, __ATOMIC_RELAXED))
        return 1;
    uint64_t have = content_entry_filled(e);
    if (len > e->info.size - have) {
        e->why = "the store sent more bytes than the manifest names";
        e->error = CONTENT_STORE_ECHANGED;
        return 1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(f->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            e->why = "the cache folder could not be written";
            e->error = CONTENT_STORE_EIO;
            return 1;
        }
        p += n;
        left -= (size_t)n;
    }
    EVP_DigestUpdate(f->md5, data, len);
    if (f->pd && content_pd_hasher_update(f->pd, data, len) != 0) {
        content_pd_hasher_free(f->pd); /* CI cannot be offered; the content still can */
        f->pd = NULL;
    }
    atomic_store(&e->filled, have + len); /* seq_cst: ordered before the subscribers load below */
    bool first = content_entry_state(e) == CONTENT_ENTRY_WAITING;
    if (first)
        atomic_store_explicit(&e->state, CONTENT_ENTRY_STREAMING, memory_order_release);
    pthread_mutex_lock(&c->lock);
    c->stats.fill_bytes += len;
    pthread_mutex_unlock(&c->lock);
    if (first || have + len - f->notified >= NOTIFY_STEP) {
        f->notified = have + len;
        entry_notify(e);
    }
    return 0;
}

static int write_meta(struct content_cache *c, const struct content_entry *e)
{
    char md5[32] = "";
    if (e->info.has_md5)
        EVP_EncodeBlock((unsigned char *)md5, e->info.md5, 16);
    json_t *j = json_pack("{s:i,s:s,s:s,s:I,s:I,s:s,s:b}", "format", 1, "name", e->info.name,
                          "etag", e->info.etag, "size", (json_int_t)e->info.size, "last_modified",
                          (json_int_t)e->info.last_modified, "md5", md5, "pd", e->hashes != NULL);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return -1;
    char p[4096];
    cache_path(c, e->key, "meta", p, sizeof(p));
    int rc = write_file_atomic(p, text, strlen(text));
    free(text);
    return rc;
}

static void fill_fail(struct content_cache *c, struct content_entry *e, int err, const char *why)
{
    char p[4096];
    cache_path(c, e->key, "part", p, sizeof(p));
    unlink(p);
    if (!e->error)
        e->error = err;
    if (!e->why)
        e->why = why;
    pthread_mutex_lock(&c->lock);
    bool was_indexed = e->indexed;
    index_remove(c, e); /* nothing poisoned: the next request starts a new fill */
    c->stats.fills_failed++;
    c->stats.fills_active--;
    if (err == CONTENT_STORE_EPROTO && why && strstr(why, "MD5"))
        c->stats.integrity_failures++;
    pthread_mutex_unlock(&c->lock);
    atomic_store_explicit(&e->state, CONTENT_ENTRY_FAILED, memory_order_release);
    LOG_WARN("content: fill of %s (%s) failed: %s%s%s", e->info.name, e->info.etag,
             content_store_strerror(e->error), e->why && *e->why ? ": " : "", e->why ? e->why : "");
    entry_notify(e);
    if (was_indexed)
        content_entry_unref(e); /* the index's reference */
}

static void fill_run(struct content_cache *c, void *arg)
{
    struct fill f = {.e = arg, .fd = -1};
    struct content_entry *e = f.e;
    char part[4096], data[4096], err[512] = "";
    if (__atomic_load_n(&c->stopping, __ATOMIC_RELAXED)) {
        fill_fail(c, e, CONTENT_STORE_EIO, "the gateway is stopping");
        goto out;
    }
    cache_path(c, e->key, "part", part, sizeof(part));
    cache_path(c, e->key, "data", data, sizeof(data));
    f.fd = open(part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    f.md5 = EVP_MD_CTX_new();
    if (f.fd < 0 || !f.md5 || EVP_DigestInit_ex(f.md5, EVP_md5(), NULL) != 1) {
        fill_fail(c, e, CONTENT_STORE_EIO, "the cache folder could not be written");
        goto out;
    }
    if (c->pd_versions) {
        struct content_pd_hasher_opts o = {c->pd_versions, e->info.size, 0};
        f.pd = content_pd_hasher_new(&o);
    }
    /* readers use a descriptor of their own on the same file, which stays valid across the
     * rename into place */
    e->fd = open(part, O_RDONLY | O_CLOEXEC);
    if (e->fd < 0) {
        fill_fail(c, e, CONTENT_STORE_EIO, "the cache folder could not be read");
        goto out;
    }
    struct content_blob_info got;
    memset(&got, 0, sizeof(got));
    int rc = content_store_get(c->store, e->info.name, e->info.etag, fill_sink, &f, &got, err,
                               sizeof(err));
    if (rc != 0) {
        if (rc == CONTENT_STORE_EABORT && e->error)
            rc = e->error;
        fill_fail(c, e, rc, e->why ? e->why : err);
        goto out;
    }
    uint64_t filled = content_entry_filled(e);
    if (filled != e->info.size || (got.size && got.size != e->info.size)) {
        fill_fail(c, e, CONTENT_STORE_ECHANGED, "the blob's length differs from the manifest's");
        goto out;
    }
    unsigned char md5[16];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(f.md5, md5, &mdlen);
    const uint8_t *want = e->info.has_md5 ? e->info.md5 : got.has_md5 ? got.md5 : NULL;
    if (want && memcmp(want, md5, 16) != 0) {
        fill_fail(c, e, CONTENT_STORE_EPROTO, "the content does not match the blob's MD5");
        goto out;
    }
    memcpy(e->info.md5, md5, 16);
    e->info.has_md5 = true;
    if (f.pd) {
        struct content_pd_hashes *h = NULL;
        if (content_pd_hasher_finish(f.pd, &h) == 0 &&
            (!c->has_secret || content_pd_hashes_bind(h, &c->pd_secret) == 0)) {
            uint8_t *bytes = NULL;
            ssize_t n = content_pd_hashes_save(h, &bytes);
            char pd[4096];
            cache_path(c, e->key, "pd", pd, sizeof(pd));
            if (n > 0 && write_file_atomic(pd, bytes, (size_t)n) == 0)
                e->hashes = h;
            else
                content_pd_hashes_free(h);
            free(bytes);
        } else {
            content_pd_hashes_free(h);
        }
    }
    bool keep = e->info.size <= c->max_bytes;
    if (keep && (write_meta(c, e) != 0 || rename(part, data) != 0)) {
        LOG_WARN("content: %s could not be kept in the cache folder: %s", e->info.name,
                 strerror(errno));
        keep = false;
    }
    if (!keep)
        unlink_files(c, e->key);
    pthread_mutex_lock(&c->lock);
    c->stats.fills_ok++;
    c->stats.fills_active--;
    struct content_entry *gone = NULL;
    bool drop_index_ref = false;
    if (e->indexed) {
        if (keep) {
            lru_push_front(c, e);
            gone = evict_locked(c);
        } else {
            index_remove(c, e); /* larger than the whole cache: served, not kept */
            drop_index_ref = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    atomic_store_explicit(&e->state, CONTENT_ENTRY_READY, memory_order_release);
    LOG_VERBOSE("content: filled %s (%llu bytes)%s", e->info.name, (unsigned long long)e->info.size,
                keep ? "" : ", not kept (larger than the cache)");
    entry_notify(e);
    unref_list(gone);
    trash_later(c);
    if (drop_index_ref)
        content_entry_unref(e);
out:
    if (f.fd >= 0)
        close(f.fd);
    EVP_MD_CTX_free(f.md5);
    content_pd_hasher_free(f.pd);
    content_entry_unref(e); /* the job's reference */
}

struct content_entry *content_cache_get(struct content_cache *c,
                                        const struct content_blob_info *want, uint64_t subscriber,
                                        bool *hit)
{
    char key[KEY_LEN + 1];
    cache_key(want->name, want->etag, key);
    *hit = false;
    pthread_mutex_lock(&c->lock);
    struct content_entry *e = index_find(c, key);
    if (e) {
        if (e->fd < 0 && content_entry_state(e) == CONTENT_ENTRY_READY) {
            /* a file from an earlier run: opened now, so that an eviction before the first
             * read cannot take it away from this request */
            char p[4096];
            cache_path(c, e->key, "data", p, sizeof(p));
            e->fd = open(p, O_RDONLY | O_CLOEXEC);
        }
        atomic_fetch_add(&e->refs, 1);
        if (subscriber)
            atomic_fetch_or(&e->subscribers, subscriber);
        if (e->in_lru && c->lru_head != e) {
            lru_unlink(c, e);
            lru_push_front(c, e);
        }
        *hit = content_entry_state(e) == CONTENT_ENTRY_READY;
        if (*hit)
            c->stats.hits++;
        pthread_mutex_unlock(&c->lock);
        return e;
    }
    e = entry_new(c, want, key);
    if (!e) {
        pthread_mutex_unlock(&c->lock);
        return NULL;
    }
    if (subscriber)
        atomic_store(&e->subscribers, subscriber);
    c->stats.misses++;
    c->stats.fills_active++;
    index_add(c, e);               /* the index's reference: the one entry_new made */
    atomic_fetch_add(&e->refs, 2); /* the job's and the caller's */
    struct content_entry *gone = evict_locked(c); /* room for what comes */
    pthread_mutex_unlock(&c->lock);
    unref_list(gone);
    trash_later(c);
    if (content_cache_submit(c, fill_run, e) != 0) {
        content_entry_unref(e); /* the job's */
        fill_fail(c, e, CONTENT_STORE_EIO, "the gateway is stopping");
    }
    return e;
}

/* ---- start: the index from the folder ---- */

static int load_entry(struct content_cache *c, const char *key)
{
    char p[4096];
    size_t len = 0;
    cache_path(c, key, "meta", p, sizeof(p));
    char *text = read_small_file(p, 16384, &len);
    json_t *j = text ? json_loadb(text, len, 0, NULL) : NULL;
    free(text);
    const char *name = NULL, *etag = NULL, *md5 = NULL;
    json_int_t size = -1, lm = 0;
    int pd = 0;
    if (!j ||
        json_unpack(j, "{s:s,s:s,s:I,s:I,s:s,s:b}", "name", &name, "etag", &etag, "size", &size,
                    "last_modified", &lm, "md5", &md5, "pd", &pd) != 0 ||
        size < 0 || strlen(name) >= sizeof(((struct content_blob_info *)0)->name) ||
        strlen(etag) >= sizeof(((struct content_blob_info *)0)->etag)) {
        json_decref(j);
        return -1;
    }
    char k2[KEY_LEN + 1];
    cache_key(name, etag, k2);
    struct stat st;
    cache_path(c, key, "data", p, sizeof(p));
    if (strcmp(k2, key) != 0 || stat(p, &st) != 0 || (uint64_t)st.st_size != (uint64_t)size) {
        json_decref(j);
        return -1;
    }
    struct content_blob_info info;
    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", name);
    snprintf(info.etag, sizeof(info.etag), "%s", etag);
    info.size = (uint64_t)size;
    info.last_modified = (int64_t)lm;
    unsigned char raw[20];
    if (strlen(md5) == 24 && EVP_DecodeBlock(raw, (const unsigned char *)md5, 24) == 18) {
        memcpy(info.md5, raw, 16);
        info.has_md5 = true;
    }
    json_decref(j);
    struct content_entry *e = entry_new(c, &info, key);
    if (!e)
        return -1;
    if (pd) {
        cache_path(c, key, "pd", p, sizeof(p));
        char *bytes = read_small_file(p, (uint64_t)1 << 30, &len);
        if (bytes && content_pd_hashes_load((uint8_t *)bytes, len, &e->hashes) == 0 &&
            content_pd_hashes_size(e->hashes) != info.size) {
            content_pd_hashes_free(
                e->hashes); /* not this content's: no CI rather than a wrong one */
            e->hashes = NULL;
        }
        if (e->hashes && c->has_secret)
            content_pd_hashes_bind(e->hashes, &c->pd_secret);
        free(bytes);
    }
    atomic_store(&e->filled, info.size);
    atomic_store(&e->state, CONTENT_ENTRY_READY);
    index_add(c, e);
    lru_push_back(c, e);
    return 0;
}

static bool is_key(const char *s, size_t len)
{
    if (len != KEY_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Rebuilds the index: first the keys of the saved LRU order, then the other complete
 * entries; partial and orphaned files are removed. */
static void cache_scan(struct content_cache *c)
{
    char p[4096];
    size_t len = 0;
    snprintf(p, sizeof(p), "%s/lru", c->dir);
    char *order = read_small_file(p, 64u << 20, &len);
    if (order) {
        for (char *line = strtok(order, "\n"); line; line = strtok(NULL, "\n")) {
            if (is_key(line, strlen(line)) && !index_find(c, line))
                load_entry(c, line);
        }
        free(order);
    }
    DIR *d = opendir(c->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "gone-", 5) == 0) { /* evicted, not yet removed */
            snprintf(p, sizeof(p), "%s/%s", c->dir, de->d_name);
            unlink(p);
            continue;
        }
        const char *dot = strchr(de->d_name, '.');
        if (!dot || !is_key(de->d_name, (size_t)(dot - de->d_name)))
            continue;
        char key[KEY_LEN + 1];
        memcpy(key, de->d_name, KEY_LEN);
        key[KEY_LEN] = '\0';
        if (strcmp(dot, ".meta") == 0 && !index_find(c, key)) {
            if (load_entry(c, key) != 0)
                unlink_files(c, key);
        } else if (strcmp(dot, ".part") == 0 || strstr(dot, ".tmp")) {
            cache_path(c, key, dot + 1, p, sizeof(p));
            unlink(p);
        }
    }
    closedir(d);
    /* data without meta: not ours to serve */
    d = opendir(c->dir);
    while (d && (de = readdir(d))) {
        const char *dot = strchr(de->d_name, '.');
        if (dot && strcmp(dot, ".data") == 0 && is_key(de->d_name, (size_t)(dot - de->d_name))) {
            char key[KEY_LEN + 1];
            memcpy(key, de->d_name, KEY_LEN);
            key[KEY_LEN] = '\0';
            if (!index_find(c, key))
                unlink_files(c, key);
        }
    }
    if (d)
        closedir(d);
    struct content_entry *gone = evict_locked(c); /* the bound may have shrunk */
    unref_list(gone);
    trash_run(c, NULL); /* at start: no workers yet */
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(tmp, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

struct content_cache *content_cache_new(const struct content_cache_opts *o,
                                        struct content_store *store, char *err, size_t errlen)
{
    if (mkdirs(o->dir) != 0) {
        snprintf(err, errlen, "content.cache_dir: %s: %s", o->dir, strerror(errno));
        return NULL;
    }
    struct content_cache *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->store = store;
    c->dir = strdup(o->dir);
    c->max_bytes = o->max_bytes;
    c->manifest_ttl_ms = o->manifest_ttl_ms ? o->manifest_ttl_ms : 60000;
    c->pd_versions = o->pd_versions;
    if (o->pd_secret) {
        c->pd_secret = *o->pd_secret;
        c->has_secret = true;
    }
    c->notify = o->notify;
    c->notify_arg = o->notify_arg;
    c->jobs_tail = &c->jobs;
    c->table_size = 4093;
    c->table = calloc(c->table_size, sizeof(*c->table));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (!c->dir || !c->table) {
        snprintf(err, errlen, "out of memory");
        content_cache_free(c);
        return NULL;
    }
    cache_scan(c);
    unsigned n = o->fill_threads ? o->fill_threads : 1;
    c->threads = calloc(n, sizeof(*c->threads));
    for (unsigned i = 0; c->threads && i < n; i++) {
        if (pthread_create(&c->threads[i], NULL, fill_thread, c) != 0)
            break;
        c->nthreads++;
    }
    if (c->nthreads == 0) {
        snprintf(err, errlen, "content: fill threads could not be started");
        content_cache_free(c);
        return NULL;
    }
    return c;
}

static void save_lru(struct content_cache *c)
{
    size_t cap = (c->entries + 1) * (KEY_LEN + 1), len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return;
    for (struct content_entry *e = c->lru_head; e && len + KEY_LEN + 1 <= cap; e = e->lru_next) {
        memcpy(buf + len, e->key, KEY_LEN);
        buf[len + KEY_LEN] = '\n';
        len += KEY_LEN + 1;
    }
    char p[4096];
    snprintf(p, sizeof(p), "%s/lru", c->dir);
    write_file_atomic(p, buf, len);
    free(buf);
}

void content_cache_free(struct content_cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    free(c->threads);
    for (struct content_job *j = c->jobs, *next; j; j = next) {
        next = j->next;
        j->run(c, j->arg); /* each job sees `stopping` and ends at once */
        free(j);
    }
    if (c->table) {
        save_lru(c);
        for (size_t i = 0; i < c->table_size; i++) {
            struct content_entry *e = c->table[i];
            while (e) {
                struct content_entry *next = e->hnext;
                e->hnext = NULL;
                e->indexed = false;
                content_entry_unref(e);
                e = next;
            }
        }
    }
    content_catalog_clear(c);
    trash_run(c, NULL);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    explicit_bzero(&c->pd_secret, sizeof(c->pd_secret));
    free(c->table);
    free(c->dir);
    free(c);
}

void content_cache_stats(struct content_cache *c, struct content_cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    out->entries = c->entries;
    out->bytes = c->used;
    out->max_bytes = c->max_bytes;
    out->manifests = c->ncatalog;
    pthread_mutex_unlock(&c->lock);
}
