/* content/cache.c over the folder store: single flight under concurrent misses, reading a
 * file while it fills, MD5 and length checks that leave nothing behind, eviction at the
 * bound, the index and the PeerDist hashes rebuilt after a restart, partial files dropped. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "content.h"

static char root[256], store_dir[300], cache_dir[300];
static struct content_store *st;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned notices;

static void notify_cb(void *arg, uint64_t bits)
{
    (void)arg;
    (void)bits;
    pthread_mutex_lock(&mu);
    notices++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/cmg-cache-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    snprintf(store_dir, sizeof(store_dir), "%s/store", root);
    snprintf(cache_dir, sizeof(cache_dir), "%s/cache", root);
    struct content_settings s;
    memset(&s, 0, sizeof(s));
    s.store = CONTENT_STORE_FOLDER;
    s.folder = store_dir;
    char err[256];
    st = content_store_new(&s, err, sizeof(err));
    cr_assert_not_null(st, "%s", err);
    cr_assert_eq(content_store_prepare(st, err, sizeof(err)), 0, "%s", err);
    notices = 0;
}

static void teardown(void)
{
    content_store_free(st);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

static struct content_cache *cache_new(uint64_t max, const struct content_pd_secret *s)
{
    struct content_cache_opts o = {.dir = cache_dir,
                                   .max_bytes = max,
                                   .fill_threads = 2,
                                   .manifest_ttl_ms = 60000,
                                   .pd_versions = s ? CONTENT_PD_V1 | CONTENT_PD_V2 : 0,
                                   .pd_secret = s,
                                   .notify = notify_cb};
    char err[256];
    struct content_cache *c = content_cache_new(&o, st, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    return c;
}

/* Puts len pseudo-random bytes as blob name; want gets what the manifest would say. */
static uint8_t *put_blob(const char *name, size_t len, unsigned seed,
                         struct content_blob_info *want)
{
    uint8_t *data = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) & 0xff);
    char err[256];
    cr_assert_eq(content_store_put_bytes(st, name, data, len, NULL, want, err, sizeof(err)), 0,
                 "%s", err);
    snprintf(want->name, sizeof(want->name), "%s", name);
    return data;
}

/* Waits (bounded) until e leaves WAITING/STREAMING. */
static enum content_entry_state wait_done(struct content_entry *e)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (content_entry_state(e) == CONTENT_ENTRY_WAITING ||
           content_entry_state(e) == CONTENT_ENTRY_STREAMING) {
        if (pthread_cond_timedwait(&cv, &mu, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&mu);
    return content_entry_state(e);
}

static void assert_reads(struct content_entry *e, const uint8_t *data, size_t len)
{
    uint8_t *got = malloc(len + 1);
    size_t off = 0;
    while (off < len) {
        ssize_t n = content_entry_pread(e, got + off, len - off > 7777 ? 7777 : len - off, off);
        cr_assert_gt(n, 0, "pread at %zu", off);
        off += (size_t)n;
    }
    cr_assert_eq(memcmp(got, data, len), 0);
    cr_assert_eq(content_entry_pread(e, got, 1, len), 0, "nothing beyond the end");
    free(got);
}

static size_t count_files(const char *suffix)
{
    DIR *d = opendir(cache_dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (l > s && strcmp(de->d_name + l - s, suffix) == 0)
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

TestSuite(cache, .init = setup, .fini = teardown, .timeout = 120);

struct racer {
    struct content_cache *c;
    const struct content_blob_info *want;
    struct content_entry *e;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    bool hit;
    r->e = content_cache_get(r->c, r->want, 1, &hit);
    return NULL;
}

Test(cache, concurrent_misses_share_one_fill)
{
    struct content_blob_info want;
    size_t len = 3u << 20;
    uint8_t *data = put_blob("content/P1/big.bin", len, 1, &want);
    struct content_cache *c = cache_new(64u << 20, NULL);
    enum { N = 24 };
    pthread_t th[N];
    struct racer r[N];
    for (int i = 0; i < N; i++) {
        r[i] = (struct racer){c, &want, NULL};
        cr_assert_eq(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 1; i < N; i++)
        cr_assert_eq(r[i].e, r[0].e, "one entry for every caller");
    cr_assert_eq(wait_done(r[0].e), CONTENT_ENTRY_READY);
    assert_reads(r[0].e, data, len);
    struct content_cache_stats s;
    content_cache_stats(c, &s);
    cr_assert_eq(s.misses, 1);
    cr_assert_eq(s.fills_ok, 1);
    cr_assert_eq(s.fill_bytes, len);
    cr_assert_geq(notices, 1);
    bool hit = false;
    struct content_entry *again = content_cache_get(c, &want, 0, &hit);
    cr_assert(hit);
    content_entry_unref(again);
    for (int i = 0; i < N; i++)
        content_entry_unref(r[i].e);
    content_cache_free(c);
    free(data);
}

Test(cache, wrong_md5_or_length_leaves_nothing_and_refills)
{
    struct content_blob_info want;
    uint8_t *data = put_blob("content/P1/x.bin", 100000, 2, &want);
    struct content_cache *c = cache_new(64u << 20, NULL);
    struct content_blob_info bad = want;
    bad.md5[3] ^= 0x40;
    bool hit;
    struct content_entry *e = content_cache_get(c, &bad, 1, &hit);
    cr_assert_eq(wait_done(e), CONTENT_ENTRY_FAILED);
    const char *why = NULL;
    cr_assert_eq(content_entry_error(e, &why), CONTENT_STORE_EPROTO);
    cr_assert(strstr(why, "MD5"), "%s", why);
    content_entry_unref(e);
    cr_assert_eq(count_files(".part") + count_files(".data"), 0);
    struct content_blob_info longer = want;
    longer.size += 10;
    e = content_cache_get(c, &longer, 1, &hit);
    cr_assert_eq(wait_done(e), CONTENT_ENTRY_FAILED);
    content_entry_unref(e);
    /* a changed blob (another ETag): the conditional read refuses it */
    struct content_blob_info stale = want;
    snprintf(stale.etag, sizeof(stale.etag), "\"not-the-etag\"");
    e = content_cache_get(c, &stale, 1, &hit);
    cr_assert_eq(wait_done(e), CONTENT_ENTRY_FAILED);
    cr_assert_eq(content_entry_error(e, NULL), CONTENT_STORE_ECHANGED);
    content_entry_unref(e);
    /* the right description fills anew: failures were not remembered */
    e = content_cache_get(c, &want, 1, &hit);
    cr_assert_not(hit);
    cr_assert_eq(wait_done(e), CONTENT_ENTRY_READY);
    assert_reads(e, data, want.size);
    content_entry_unref(e);
    struct content_cache_stats s;
    content_cache_stats(c, &s);
    cr_assert_eq(s.fills_failed, 3);
    cr_assert_eq(s.integrity_failures, 1);
    cr_assert_eq(s.fills_ok, 1);
    cr_assert_eq(s.entries, 1);
    content_cache_free(c);
    free(data);
}

Test(cache, eviction_restart_and_hashes)
{
    struct content_pd_secret secret;
    char err[128];
    cr_assert_eq(
        content_pd_secret_from_hex(&secret, "00112233445566778899aabbccddeeff", err, sizeof(err)),
        0);
    struct content_blob_info w[4];
    uint8_t *d[4];
    char name[64];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "content/P2/f%d.bin", i);
        d[i] = put_blob(name, 1u << 20, 10 + (unsigned)i, &w[i]);
    }
    struct content_cache *c = cache_new((5u << 20) / 2, &secret); /* room for two */
    bool hit;
    for (int i = 0; i < 4; i++) {
        struct content_entry *e = content_cache_get(c, &w[i], 1, &hit);
        cr_assert_eq(wait_done(e), CONTENT_ENTRY_READY);
        cr_assert_not_null(content_entry_hashes(e));
        content_entry_unref(e);
    }
    struct content_cache_stats s;
    content_cache_stats(c, &s);
    cr_assert_eq(s.evictions, 2);
    cr_assert_eq(s.entries, 2);
    cr_assert_leq(s.bytes, (5u << 20) / 2);
    cr_assert_eq(count_files(".data"), 2);
    cr_assert_eq(count_files(".pd"), 2);
    content_cache_free(c);

    /* a partial file of an interrupted fill is not taken at start */
    char part[512];
    snprintf(part, sizeof(part), "%s/%064d.part", cache_dir, 7);
    FILE *f = fopen(part, "w");
    cr_assert_not_null(f);
    fputs("partial", f);
    fclose(f);

    c = cache_new((5u << 20) / 2, &secret);
    content_cache_stats(c, &s);
    cr_assert_eq(s.entries, 2);
    cr_assert_eq(access(part, F_OK), -1, "the partial file is gone");
    for (int i = 2; i < 4; i++) {
        struct content_entry *e = content_cache_get(c, &w[i], 0, &hit);
        cr_assert(hit, "f%d survives the restart", i);
        assert_reads(e, d[i], w[i].size);
        const struct content_pd_hashes *h = content_entry_hashes(e);
        cr_assert_not_null(h, "hashes read back from disk");
        cr_assert_eq(content_pd_hashes_size(h), w[i].size);
        cr_assert_eq(content_pd_hashes_segments(h, CONTENT_PD_V2), 16);
        content_entry_unref(e);
    }
    content_cache_stats(c, &s);
    cr_assert_eq(s.misses, 0);
    cr_assert_eq(s.fill_bytes, 0);
    content_cache_free(c);
    for (int i = 0; i < 4; i++)
        free(d[i]);
}

Test(cache, manifests_through_the_catalog)
{
    struct content_cache *c = cache_new(1u << 20, NULL);
    const char *m = "{\"format\":1,\"package\":\"PS1\",\"content_id\":\"PS1\",\"distributed\":"
                    "\"2026-11-27T16:00:00Z\",\"size\":5,\"files\":[{\"path\":\"a.txt\",\"size\":5,"
                    "\"md5\":\"XUFAKrxLKna5cZ2REBfFkg==\",\"etag\":\"\\\"e\\\"\",\"last_modified\":"
                    "1795000000}]}";
    char err[256];
    cr_assert_eq(content_store_put_bytes(st, "packages/PS1.json", m, strlen(m), NULL, NULL, err,
                                         sizeof(err)),
                 0, "%s", err);
    struct content_package *p = NULL;
    enum content_lookup r = content_catalog_get(c, "PS1", 1, &p);
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; r == CONTENT_LOOKUP_PENDING && i < 3000; i++) {
        nanosleep(&ts, NULL);
        r = content_catalog_get(c, "PS1", 1, &p);
    }
    cr_assert_eq(r, CONTENT_LOOKUP_FOUND);
    cr_assert_str_eq(content_package_manifest(p)->content_id, "PS1");
    cr_assert_not_null(content_manifest_find(content_package_manifest(p), "a.txt"));
    content_package_unref(p);
    r = content_catalog_get(c, "PS404", 1, &p);
    for (int i = 0; r == CONTENT_LOOKUP_PENDING && i < 3000; i++) {
        nanosleep(&ts, NULL);
        r = content_catalog_get(c, "PS404", 1, &p);
    }
    cr_assert_eq(r, CONTENT_LOOKUP_MISSING);
    cr_assert(content_catalog_settled(c, "PS404"));
    content_cache_free(c);
}
