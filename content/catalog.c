/* Package manifests as the content-location service and the file route need them: fetched
 * from the store by the fill threads, parsed once, shared by reference, refreshed after
 * manifest_ttl while the old one keeps serving. Absent packages and failed fetches are
 * remembered briefly so that a burst of requests makes one store call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content-int.h"
#include "core.h"

#define CATALOG_MAX 4096         /* packages remembered */
#define CATALOG_MISSING_MS 10000 /* an absent package is asked for again after this */
#define CATALOG_ERROR_MS 5000    /* a failed fetch is tried again after this */
#define MANIFEST_MAX (64u << 20) /* bytes of a manifest blob */

struct content_package {
    atomic_uint refs;
    struct content_manifest *m; /* owned */
};

struct content_catalog_slot {
    char package[CONTENT_PACKAGE_ID_MAX + 1];
    enum content_lookup state;   /* of the last fetch */
    struct content_package *pkg; /* reference, NULL unless fetched once */
    uint64_t fetched_ms;         /* when state was set */
    bool fetching;               /* a job is under way */
    atomic_uint_fast64_t subscribers;
};

const struct content_manifest *content_package_manifest(const struct content_package *p)
{
    return p->m;
}

void content_package_unref(struct content_package *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        content_manifest_free(p->m);
        free(p);
    }
}

struct fetch_buf {
    char *data;
    size_t len, cap;
};

static int fetch_sink(void *ctx, const void *data, size_t len)
{
    struct fetch_buf *b = ctx;
    if (len > MANIFEST_MAX - b->len)
        return 1;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return 1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

static struct content_catalog_slot *slot_find(struct content_cache *c, const char *package)
{
    for (size_t i = 0; i < c->ncatalog; i++)
        if (strcmp(c->catalog[i].package, package) == 0)
            return &c->catalog[i];
    return NULL;
}

static void fetch_run(struct content_cache *c, void *arg)
{
    char *package = arg;
    char name[CONTENT_PACKAGE_ID_MAX + 32], err[512] = "";
    snprintf(name, sizeof(name), "packages/%s.json", package);
    struct fetch_buf b = {0};
    enum content_lookup state = CONTENT_LOOKUP_ERROR;
    struct content_manifest *m = NULL;
    int rc = __atomic_load_n(&c->stopping, __ATOMIC_RELAXED)
                 ? CONTENT_STORE_EIO
                 : content_store_get(c->store, name, NULL, fetch_sink, &b, NULL, err, sizeof(err));
    if (rc == CONTENT_STORE_ENOTFOUND) {
        state = CONTENT_LOOKUP_MISSING;
    } else if (rc != 0) {
        LOG_WARN("content: manifest of package %s could not be read: %s%s%s", package,
                 content_store_strerror(rc), *err ? ": " : "", err);
    } else if (content_manifest_parse(b.data ? b.data : "", b.len, &m, err, sizeof(err)) != 0) {
        LOG_WARN("content: manifest of package %s is not valid: %s", package, err);
    } else if (strcmp(m->package, package) != 0) {
        LOG_WARN("content: manifest %s names package %s", name, m->package);
        content_manifest_free(m);
        m = NULL;
    } else {
        state = CONTENT_LOOKUP_FOUND;
    }
    free(b.data);
    struct content_package *pkg = NULL;
    if (m) {
        pkg = calloc(1, sizeof(*pkg));
        if (pkg) {
            atomic_init(&pkg->refs, 1);
            pkg->m = m;
        } else {
            content_manifest_free(m);
            state = CONTENT_LOOKUP_ERROR;
        }
    }
    uint64_t bits = 0;
    struct content_package *old = NULL;
    pthread_mutex_lock(&c->lock);
    c->stats.manifest_fetches++;
    if (state == CONTENT_LOOKUP_ERROR)
        c->stats.manifest_failures++;
    struct content_catalog_slot *s = slot_find(c, package);
    if (s) {
        s->fetching = false;
        s->fetched_ms = core_now_ms();
        if (state == CONTENT_LOOKUP_FOUND || state == CONTENT_LOOKUP_MISSING) {
            old = s->pkg;
            s->pkg = pkg;
            pkg = NULL;
            s->state = state;
        } else if (!s->pkg) {
            s->state = state; /* a stale manifest keeps serving through a failed refresh */
        }
        bits = atomic_exchange(&s->subscribers, 0);
    }
    pthread_mutex_unlock(&c->lock);
    content_package_unref(old);
    content_package_unref(pkg);
    content_cache_announce(c, bits);
    free(package);
}

enum content_lookup content_catalog_get(struct content_cache *c, const char *package,
                                        uint64_t subscriber, struct content_package **out)
{
    *out = NULL;
    uint64_t now = core_now_ms();
    enum content_lookup r;
    bool start = false;
    pthread_mutex_lock(&c->lock);
    struct content_catalog_slot *s = slot_find(c, package);
    if (!s) {
        if (c->ncatalog == CATALOG_MAX) {
            /* forget the oldest entry that no fetch is using */
            size_t victim = CATALOG_MAX;
            for (size_t i = 0; i < c->ncatalog; i++)
                if (!c->catalog[i].fetching &&
                    (victim == CATALOG_MAX ||
                     c->catalog[i].fetched_ms < c->catalog[victim].fetched_ms))
                    victim = i;
            if (victim == CATALOG_MAX) {
                pthread_mutex_unlock(&c->lock);
                return CONTENT_LOOKUP_ERROR;
            }
            content_package_unref(c->catalog[victim].pkg);
            c->catalog[victim] = c->catalog[--c->ncatalog];
        }
        if (!c->catalog) {
            c->catalog = calloc(CATALOG_MAX, sizeof(*c->catalog));
            if (!c->catalog) {
                pthread_mutex_unlock(&c->lock);
                return CONTENT_LOOKUP_ERROR;
            }
        }
        s = &c->catalog[c->ncatalog++];
        memset(s, 0, sizeof(*s));
        snprintf(s->package, sizeof(s->package), "%s", package);
        s->state = CONTENT_LOOKUP_PENDING;
        start = true;
    } else if (!s->fetching) {
        uint64_t age = now - s->fetched_ms;
        if ((s->state == CONTENT_LOOKUP_FOUND && age >= c->manifest_ttl_ms) ||
            (s->state == CONTENT_LOOKUP_MISSING && age >= CATALOG_MISSING_MS) ||
            (s->state == CONTENT_LOOKUP_ERROR && age >= CATALOG_ERROR_MS))
            start = true;
    }
    if (start) {
        s->fetching = true;
        if (!s->pkg)
            s->state = CONTENT_LOOKUP_PENDING;
    }
    if (s->pkg && s->state == CONTENT_LOOKUP_FOUND) {
        atomic_fetch_add(&s->pkg->refs, 1);
        *out = s->pkg;
        r = CONTENT_LOOKUP_FOUND;
    } else {
        r = s->state;
        if (r == CONTENT_LOOKUP_PENDING && subscriber)
            atomic_fetch_or(&s->subscribers, subscriber);
    }
    pthread_mutex_unlock(&c->lock);
    if (start) {
        char *arg = strdup(package);
        /* ahead of queued fills: a manifest is small and every request of the package waits */
        if (!arg || content_cache_submit_at(c, fetch_run, arg, true) != 0) {
            free(arg);
            pthread_mutex_lock(&c->lock);
            s = slot_find(c, package);
            if (s) {
                s->fetching = false;
                if (!s->pkg)
                    s->state = CONTENT_LOOKUP_ERROR;
                s->fetched_ms = now;
            }
            pthread_mutex_unlock(&c->lock);
            if (r == CONTENT_LOOKUP_PENDING)
                r = CONTENT_LOOKUP_ERROR;
        }
    }
    return r;
}

bool content_catalog_settled(struct content_cache *c, const char *package)
{
    pthread_mutex_lock(&c->lock);
    struct content_catalog_slot *s = slot_find(c, package);
    bool settled = !s || s->state != CONTENT_LOOKUP_PENDING;
    pthread_mutex_unlock(&c->lock);
    return settled;
}

void content_catalog_clear(struct content_cache *c)
{
    for (size_t i = 0; i < c->ncatalog; i++)
        content_package_unref(c->catalog[i].pkg);
    free(c->catalog);
    c->catalog = NULL;
    c->ncatalog = 0;
}
