/* The refresher: one background thread that fetches CRLs and Entra keys (blocking libcurl,
 * never on a worker loop), and hands each new generation to every worker's queue. */
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"

#define GW_WANT_MAX 64

struct gw_refresher {
    struct gw_server *s;
    pthread_t thread;
    pthread_mutex_t lock; /* guards the fields below and the pointers' creation */
    pthread_cond_t cond;
    volatile bool stop; /* read by the fetch loops between fetches */
    bool running;
    bool republish; /* a reload changed what the workers should see */
    bool force_keys;
    char want[GW_WANT_MAX][TLS_URL_MAX];
    size_t nwant;
    char *dir;                       /* auth.cache_dir */
    struct tls_crl_cache *crl;       /* created when fetching is on */
    struct auth_entra_source *entra; /* created when tenants are onboarded */
    bool fetch_crls;
    uint64_t generation;
};

struct gw_dyn *gw_dyn_ref(struct gw_dyn *d)
{
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    return d;
}

void gw_dyn_unref(struct gw_dyn *d)
{
    if (!d || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
        return;
    sk_X509_CRL_pop_free(d->crls, X509_CRL_free);
    sk_X509_CRL_pop_free(d->changed, X509_CRL_free);
    free(d->attempted);
    auth_entra_keys_free(d->entra);
    free(d);
}

bool gw_dyn_attempted(const struct gw_dyn *d, const char *url)
{
    for (size_t i = 0; d && i < d->nattempted; i++)
        if (strcmp(d->attempted[i], url) == 0)
            return true;
    return false;
}

/* Builds and hands out a new generation (refresher thread, or main thread at start). */
static void gw_refresher_publish(struct gw_refresher *r)
{
    struct gw_server *s = r->s;
    struct gw_dyn *d = calloc(1, sizeof(*d));
    if (!d) {
        LOG_ERROR("out of memory: new CRLs and keys not handed to the workers");
        return;
    }
    atomic_init(&d->refs, 1);
    d->generation = ++r->generation;
    if (r->crl) {
        d->crls = tls_crl_cache_crls(r->crl);
        d->changed = tls_crl_cache_take_changed(r->crl);
        d->attempted = calloc(256, TLS_URL_MAX);
        if (d->attempted)
            d->nattempted = tls_crl_cache_attempted(r->crl, d->attempted, 256);
    }
    if (r->entra)
        d->entra = auth_entra_source_keys(r->entra);
    pthread_mutex_lock(&s->snap_lock);
    struct gw_dyn *old = s->dyn;
    s->dyn = d;
    pthread_mutex_unlock(&s->snap_lock);
    gw_dyn_unref(old);
    for (unsigned i = 0; i < s->nworkers; i++) {
        if (!s->workers[i].mq)
            continue;
        if (gw_worker_post(&s->workers[i], GW_MSG_DYN, gw_dyn_ref(d)) != 0) {
            LOG_ERROR("worker %u queue full: it keeps older CRLs and keys for now", i);
            gw_dyn_unref(d);
        }
    }
}

static void *gw_refresher_main(void *arg)
{
    struct gw_refresher *r = arg;
    log_set_thread_tag("refresh");
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        char want[GW_WANT_MAX][TLS_URL_MAX];
        size_t nwant = r->nwant;
        memcpy(want, r->want, nwant * TLS_URL_MAX);
        r->nwant = 0;
        bool force = r->force_keys;
        r->force_keys = false;
        struct tls_crl_cache *crl = r->fetch_crls ? r->crl : NULL;
        struct auth_entra_source *entra = r->entra;
        pthread_mutex_unlock(&r->lock);

        int64_t now = (int64_t)time(NULL);
        bool changed = false;
        for (size_t i = 0; crl && i < nwant; i++)
            tls_crl_cache_want(crl, want[i]);
        if (force && entra)
            auth_entra_source_force(entra, now);
        if (crl && tls_crl_cache_refresh(crl, now, &r->stop))
            changed = true;
        if (entra && auth_entra_source_refresh(entra, now, &r->stop))
            changed = true;
        pthread_mutex_lock(&r->lock);
        bool republish = r->republish;
        r->republish = false;
        pthread_mutex_unlock(&r->lock);
        /* a forced key fetch is answered even when nothing changed: requests waiting on it
         * must learn that the kid is still unknown */
        if ((changed || force || nwant || republish) && !r->stop)
            gw_refresher_publish(r);

        now = (int64_t)time(NULL);
        int64_t due = now + 60;
        if (crl) {
            int64_t d = tls_crl_cache_next_due(crl);
            if (d < due)
                due = d;
        }
        if (entra) {
            int64_t d = auth_entra_source_next_due(entra);
            if (d < due)
                due = d;
        }
        pthread_mutex_lock(&r->lock);
        if (r->stop || r->nwant || r->force_keys || r->republish)
            continue;
        if (due > now) {
            struct timespec ts = {(time_t)due, 0};
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* Creates what the snapshot needs and hands the caches their CAs, tenants and schedule.
 * Called with r->lock held. */
static int gw_refresher_apply(struct gw_refresher *r, const struct gw_snapshot *snap, char *err,
                              size_t errlen)
{
    const struct auth_settings *a = &snap->cfg.auth;
    /* CRLs are fetched for the CAs of client certificates and of connection points alike */
    bool client = snap->client_trust && a->verify_revocation;
    bool tunnel = snap->tunnel_trust && snap->cfg.tunnel_verify_revocation;
    bool crls = (client || tunnel) && a->crl_fetch;
    STACK_OF(X509) *cas = sk_X509_new_null();
    const struct tls_client_trust *trusts[2] = {client ? snap->client_trust : NULL,
                                                tunnel ? snap->tunnel_trust : NULL};
    for (int k = 0; k < 2 && cas; k++)
        for (int i = 0; trusts[k] && i < sk_X509_num(tls_client_trust_cas(trusts[k])); i++)
            sk_X509_push(cas, sk_X509_value(tls_client_trust_cas(trusts[k]), i));
    struct tls_crl_policy cp = {.refresh_max = a->crl_refresh_max / 1000,
                                .timeout_ms = a->fetch_timeout};
    if (crls && !r->crl) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/crl", r->dir);
        r->crl = tls_crl_cache_new(dir, cas, &cp, err, errlen);
        if (!r->crl) {
            sk_X509_free(cas);
            return -1;
        }
    } else if (r->crl && crls) {
        tls_crl_cache_set_trust(r->crl, cas, &cp);
    }
    sk_X509_free(cas); /* the cache took its own references */
    r->fetch_crls = crls;
    for (int k = 0; crls && k < 2; k++) {
        if (!trusts[k])
            continue;
        char urls[32][TLS_URL_MAX];
        size_t n = tls_client_trust_ca_crl_urls(trusts[k], urls, 32);
        for (size_t i = 0; i < n; i++)
            tls_crl_cache_want(r->crl, urls[i]);
    }
    if (snap->nentra_tenants && !r->entra) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/entra", r->dir);
        r->entra = auth_entra_source_new(dir, err, errlen);
        if (!r->entra)
            return -1;
    }
    if (r->entra) {
        struct auth_entra_source_policy ep = {
            .refresh = a->entra_keys_refresh / 1000,
            .unknown_kid_interval = a->entra_unknown_kid_interval / 1000,
            .timeout_ms = a->fetch_timeout,
        };
        auth_entra_source_configure(r->entra,
                                    auth_entra_authority(a->entra_cloud, a->entra_authority),
                                    snap->entra_tenants, snap->nentra_tenants, &ep);
    }
    return 0;
}

static int gw_mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

int gw_refresher_start(struct gw_server *s, char *err, size_t errlen)
{
    struct gw_refresher *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->s = s;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&r->cond, &ca); /* CLOCK_REALTIME: waits are until wall-clock due times */
    pthread_condattr_destroy(&ca);
    const char *dir = s->snap->cfg.auth.cache_dir;
    r->dir = strdup(dir && *dir ? dir : "cache");
    s->refresher = r;
    bool needed = ((s->snap->client_trust && s->snap->cfg.auth.verify_revocation) ||
                   (s->snap->tunnel_trust && s->snap->cfg.tunnel_verify_revocation))
                      ? s->snap->cfg.auth.crl_fetch || s->snap->nentra_tenants
                      : s->snap->nentra_tenants > 0;
    if (needed && gw_mkdir_p(r->dir) != 0) {
        snprintf(err, errlen, "%s: auth.cache_dir: cannot create %s: %s", s->config_path, r->dir,
                 strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&r->lock);
    int rc = gw_refresher_apply(r, s->snap, err, errlen);
    pthread_mutex_unlock(&r->lock);
    if (rc != 0)
        return -1;
    gw_refresher_publish(r); /* what the disk caches hold, before any fetch */
    return 0;
}

int gw_refresher_run(struct gw_server *s)
{
    struct gw_refresher *r = s->refresher;
    if (pthread_create(&r->thread, NULL, gw_refresher_main, r) != 0)
        return -1;
    r->running = true;
    return 0;
}

void gw_refresher_configure(struct gw_server *s, const struct gw_snapshot *snap)
{
    struct gw_refresher *r = s->refresher;
    if (!r)
        return;
    char err[512];
    pthread_mutex_lock(&r->lock);
    if ((snap->client_trust || snap->nentra_tenants) && gw_mkdir_p(r->dir) != 0)
        LOG_ERROR("reload: cannot create auth.cache_dir %s", r->dir);
    else if (gw_refresher_apply(r, snap, err, sizeof(err)) != 0)
        LOG_ERROR("reload: %s", err);
    r->republish = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void gw_refresher_stop(struct gw_server *s)
{
    struct gw_refresher *r = s->refresher;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (r->running)
        pthread_join(r->thread, NULL);
    tls_crl_cache_free(r->crl);
    auth_entra_source_free(r->entra);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r->dir);
    free(r);
    s->refresher = NULL;
    pthread_mutex_lock(&s->snap_lock);
    gw_dyn_unref(s->dyn);
    s->dyn = NULL;
    pthread_mutex_unlock(&s->snap_lock);
}

void gw_refresher_want_crls(struct gw_server *s, char (*urls)[TLS_URL_MAX], size_t n)
{
    struct gw_refresher *r = s->refresher;
    if (!r || !n)
        return;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < n; i++) {
        if (r->nwant == GW_WANT_MAX) {
            LOG_WARN("%zu CRL URL(s) not queued: %d are already waiting to be fetched", n - i,
                     GW_WANT_MAX);
            break;
        }
        bool dup = false;
        for (size_t j = 0; j < r->nwant && !dup; j++)
            dup = strcmp(r->want[j], urls[i]) == 0;
        if (!dup)
            snprintf(r->want[r->nwant++], TLS_URL_MAX, "%s", urls[i]);
    }
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void gw_refresher_force_keys(struct gw_server *s)
{
    struct gw_refresher *r = s->refresher;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->force_keys = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

char *gw_refresher_metrics(struct gw_server *s)
{
    struct gw_refresher *r = s->refresher;
    if (!r)
        return NULL;
    pthread_mutex_lock(&r->lock);
    struct tls_crl_cache *crl = r->crl;
    struct auth_entra_source *entra = r->entra;
    pthread_mutex_unlock(&r->lock);
    int64_t now = (int64_t)time(NULL);
    char *a = crl ? tls_crl_cache_metrics(crl, now) : NULL;
    char *b = entra ? auth_entra_source_metrics(entra, now) : NULL;
    if (!a)
        return b;
    if (!b)
        return a;
    size_t la = strlen(a), lb = strlen(b);
    char *out = realloc(a, la + lb + 1);
    if (!out) {
        free(a);
        return b;
    }
    memcpy(out + la, b, lb + 1);
    free(b);
    return out;
}
