/* Fetched CRLs: the URLs learned from certificates, the CRLs got from them (signature and
 * issuer checked against the configured CAs), their disk cache, and when each is due again.
 * Driven by one background thread (never a worker); the admin thread reads its figures. */
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core.h"
#include "tls-int.h"

struct tls_crl_entry {
    char url[TLS_URL_MAX];
    char name[40]; /* file name stem in the cache folder: hex of SHA-256(url) */
    X509_CRL *crl; /* current, verified; NULL until one is had */
    char ca[160];  /* issuer's CN (or whole name) for figures */
    char etag[128];
    char last_modified[64];
    int64_t fetched_at; /* last time the source confirmed the CRL (200 or 304) */
    int64_t next_fetch;
    bool attempted; /* fetched (or tried) by this process */
    int64_t last_wanted; /* last time a certificate named it */
    enum tls_crl_result last_result;
    uint64_t results[TLS_CRL_RESULT_N];
    char last_error[200];
};

struct tls_crl_cache {
    pthread_mutex_t lock; /* guards entries against the figure readers */
    char *dir;            /* NULL: no disk cache */
    struct tls_crl_entry *e;
    size_t n;
    STACK_OF(X509) * issuers; /* configured CAs, up-referenced */
    struct tls_crl_policy policy;
    STACK_OF(X509_CRL) * changed; /* CRLs new or replaced since the last take */
};

const char *tls_crl_result_name(enum tls_crl_result r)
{
    static const char *names[TLS_CRL_RESULT_N] = {"none",       "ok",
                                                  "not_modified", "http_error",
                                                  "transport_error", "invalid"};
    return r < TLS_CRL_RESULT_N ? names[r] : "invalid";
}

static void tls_crl_name_of(X509_CRL *crl, char *buf, size_t len)
{
    const X509_NAME *n = X509_CRL_get_issuer(crl);
    int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    const ASN1_STRING *cn = i >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i)) : NULL;
    if (cn)
        snprintf(buf, len, "%.*s", ASN1_STRING_length(cn), ASN1_STRING_get0_data(cn));
    else
        X509_NAME_oneline(n, buf, (int)len);
}

static int64_t tls_asn1_epoch(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static void tls_url_stem(const char *url, char out[40])
{
    unsigned char md[32];
    unsigned int l = 0;
    EVP_Digest(url, strlen(url), md, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static X509_CRL *tls_crl_parse(const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
    if (!crl) {
        BIO *b = BIO_new_mem_buf(data, (int)len);
        crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    }
    ERR_clear_error();
    return crl;
}

/* The configured CA that issued and signed crl, or a reason why there is none. */
static bool tls_crl_verify(const struct tls_crl_cache *c, X509_CRL *crl, char *why, size_t len)
{
    bool named = false;
    for (int i = 0; i < sk_X509_num(c->issuers); i++) {
        X509 *x = sk_X509_value(c->issuers, i);
        if (X509_NAME_cmp(X509_get_subject_name(x), X509_CRL_get_issuer(crl)) != 0)
            continue;
        named = true;
        if (X509_CRL_verify(crl, X509_get0_pubkey(x)) == 1) {
            ERR_clear_error();
            return true;
        }
    }
    ERR_clear_error();
    char name[160];
    X509_NAME_oneline(X509_CRL_get_issuer(crl), name, sizeof(name));
    snprintf(why, len, "%s %s", named ? "signature does not verify with the CA's key:"
                                      : "issuer is not a configured CA:",
             name);
    return false;
}

static void tls_crl_schedule(const struct tls_crl_cache *c, struct tls_crl_entry *e, int64_t now,
                             bool failed)
{
    int64_t every = (int64_t)c->policy.refresh_max;
    int64_t retry = every < 30 ? every : 30;
    int64_t wait = every;
    if (failed) {
        wait = retry;
    } else if (e->crl) {
        int64_t next = tls_asn1_epoch(X509_CRL_get0_nextUpdate(e->crl));
        int64_t this = tls_asn1_epoch(X509_CRL_get0_lastUpdate(e->crl));
        if (next) {
            int64_t margin = (next - this) / 10;
            if (margin < 60)
                margin = 60;
            int64_t until = next - margin - now; /* fetch well before it runs out */
            if (until < wait)
                wait = until > retry ? until : retry;
        }
    }
    /* jitter: up to a tenth earlier, so that instances do not all ask at the same second */
    uint32_t r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    if (wait >= 10)
        wait -= (int64_t)(r % (uint32_t)(wait / 10 + 1));
    if (wait < 1)
        wait = 1;
    e->next_fetch = now + wait;
}

static void tls_crl_save(const struct tls_crl_cache *c, const struct tls_crl_entry *e)
{
    if (!c->dir || !e->crl)
        return;
    char path[PATH_MAX], tmp[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/%s.crl", c->dir, e->name);
    /* a file of its own to write into (cmgctl may write the same cache), then renamed */
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    BIO *b = fd >= 0 ? BIO_new_fd(fd, BIO_CLOSE) : NULL;
    bool ok = b && i2d_X509_CRL_bio(b, e->crl) == 1 && BIO_flush(b) == 1;
    if (b)
        BIO_free(b);
    else if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, path) != 0) {
        LOG_WARN("cannot write the CRL cache file %s", path);
        if (fd >= 0)
            unlink(tmp);
        ERR_clear_error();
        return;
    }
    snprintf(path, sizeof(path), "%s/%s.meta", c->dir, e->name);
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        LOG_WARN("cannot write the CRL cache file %s", path);
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return;
    }
    fprintf(f, "url=%s\netag=%s\nlast_modified=%s\nfetched=%lld\n", e->url, e->etag,
            e->last_modified, (long long)e->fetched_at);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        LOG_WARN("cannot write the CRL cache file %s", path);
        unlink(tmp);
    }
}

static struct tls_crl_entry *tls_crl_find(struct tls_crl_cache *c, const char *url)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].url, url) == 0)
            return &c->e[i];
    return NULL;
}

static void tls_crl_unlink_files(const struct tls_crl_cache *c, const struct tls_crl_entry *e)
{
    if (!c->dir)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.crl", c->dir, e->name);
    unlink(path);
    snprintf(path, sizeof(path), "%s/%s.meta", c->dir, e->name);
    unlink(path);
}

static struct tls_crl_entry *tls_crl_add(struct tls_crl_cache *c, const char *url)
{
    if (strlen(url) >= TLS_URL_MAX)
        return NULL;
    struct tls_crl_entry *e;
    if (c->n >= c->policy.max_urls) {
        /* full: the source no certificate has named for the longest time makes room (slots
         * are reused in place, so indexes held by a running refresh stay slots) */
        size_t old = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->e[i].last_wanted < c->e[old].last_wanted)
                old = i;
        e = &c->e[old];
        LOG_WARN("CRL sources full (%zu): %s, not named by a certificate for the longest time, "
                 "makes room for %s",
                 c->n, e->url, url);
        tls_crl_unlink_files(c, e);
        X509_CRL_free(e->crl);
    } else {
        struct tls_crl_entry *grown = realloc(c->e, (c->n + 1) * sizeof(*grown));
        if (!grown)
            return NULL;
        c->e = grown;
        e = &c->e[c->n++];
    }
    memset(e, 0, sizeof(*e));
    snprintf(e->url, sizeof(e->url), "%s", url);
    tls_url_stem(url, e->name);
    return e;
}

/* Reads the cached CRLs back (they are checked again like fetched ones). */
static void tls_crl_load_dir(struct tls_crl_cache *c)
{
    DIR *d = opendir(c->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".meta") != 0)
            continue;
        char path[PATH_MAX], line[TLS_URL_MAX + 32];
        snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char url[TLS_URL_MAX] = "", etag[128] = "", lm[64] = "";
        long long fetched = 0;
        while (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (strncmp(line, "url=", 4) == 0)
                snprintf(url, sizeof(url), "%.511s", line + 4);
            else if (strncmp(line, "etag=", 5) == 0)
                snprintf(etag, sizeof(etag), "%.127s", line + 5);
            else if (strncmp(line, "last_modified=", 14) == 0)
                snprintf(lm, sizeof(lm), "%.63s", line + 14);
            else if (strncmp(line, "fetched=", 8) == 0)
                fetched = atoll(line + 8);
        }
        fclose(f);
        if (!*url || tls_crl_find(c, url))
            continue;
        struct tls_crl_entry *e = tls_crl_add(c, url);
        if (!e)
            continue;
        snprintf(path, sizeof(path), "%s/%s.crl", c->dir, e->name);
        BIO *b = BIO_new_file(path, "rb");
        X509_CRL *crl = b ? d2i_X509_CRL_bio(b, NULL) : NULL;
        BIO_free(b);
        ERR_clear_error();
        char why[256];
        e->last_wanted = fetched;
        if (crl && tls_crl_verify(c, crl, why, sizeof(why))) {
            e->crl = crl;
            tls_crl_name_of(crl, e->ca, sizeof(e->ca));
            snprintf(e->etag, sizeof(e->etag), "%s", etag);
            snprintf(e->last_modified, sizeof(e->last_modified), "%s", lm);
            e->fetched_at = fetched;
            /* due when it would have been, had this process fetched it */
            tls_crl_schedule(c, e, fetched, false);
        } else {
            LOG_WARN("cached CRL for %s dropped: %s", url,
                     crl ? why : "the cache file is not a CRL");
            X509_CRL_free(crl);
            e->next_fetch = 0;
        }
    }
    closedir(d);
}

static int tls_mkdirs(const char *dir)
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

struct tls_crl_cache *tls_crl_cache_new(const char *dir, const STACK_OF(X509) * cas,
                                        const struct tls_crl_policy *policy, char *err,
                                        size_t errlen)
{
    struct tls_crl_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->policy = *policy;
    if (!c->policy.max_urls)
        c->policy.max_urls = 256;
    if (!c->policy.refresh_max)
        c->policy.refresh_max = 3600;
    c->issuers = sk_X509_new_null();
    c->changed = sk_X509_CRL_new_null();
    for (int i = 0; cas && i < sk_X509_num(cas); i++) {
        X509_up_ref(sk_X509_value(cas, i));
        sk_X509_push(c->issuers, sk_X509_value(cas, i));
    }
    if (dir && *dir) {
        if (tls_mkdirs(dir) != 0) {
            snprintf(err, errlen, "cannot create the CRL cache folder %s: %s", dir,
                     strerror(errno));
            tls_crl_cache_free(c);
            return NULL;
        }
        c->dir = strdup(dir);
        tls_crl_load_dir(c);
    }
    return c;
}

void tls_crl_cache_free(struct tls_crl_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        X509_CRL_free(c->e[i].crl);
    free(c->e);
    sk_X509_pop_free(c->issuers, X509_free);
    sk_X509_CRL_pop_free(c->changed, X509_CRL_free);
    free(c->dir);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool tls_same_certs(const STACK_OF(X509) * a, const STACK_OF(X509) * b)
{
    if (sk_X509_num(a) != sk_X509_num(b))
        return false;
    for (int i = 0; i < sk_X509_num(a); i++)
        if (X509_cmp(sk_X509_value(a, i), sk_X509_value(b, i)) != 0)
            return false;
    return true;
}

void tls_crl_cache_set_trust(struct tls_crl_cache *c, const STACK_OF(X509) * cas,
                             const struct tls_crl_policy *policy)
{
    pthread_mutex_lock(&c->lock);
    if (cas && tls_same_certs(c->issuers, cas)) {
        /* the same CAs (a reload for something else): only the schedule may change */
        size_t max = c->policy.max_urls;
        c->policy = *policy;
        if (!c->policy.max_urls)
            c->policy.max_urls = max;
        if (!c->policy.refresh_max)
            c->policy.refresh_max = 3600;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    sk_X509_pop_free(c->issuers, X509_free);
    c->issuers = sk_X509_new_null();
    for (int i = 0; cas && i < sk_X509_num(cas); i++) {
        X509_up_ref(sk_X509_value(cas, i));
        sk_X509_push(c->issuers, sk_X509_value(cas, i));
    }
    size_t max = c->policy.max_urls;
    c->policy = *policy;
    if (!c->policy.max_urls)
        c->policy.max_urls = max;
    if (!c->policy.refresh_max)
        c->policy.refresh_max = 3600;
    /* CRLs of CAs no longer configured go; the others stay */
    char why[256];
    for (size_t i = 0; i < c->n; i++) {
        struct tls_crl_entry *e = &c->e[i];
        if (e->crl && !tls_crl_verify(c, e->crl, why, sizeof(why))) {
            X509_CRL_free(e->crl);
            e->crl = NULL;
        }
        e->next_fetch = 0;
    }
    pthread_mutex_unlock(&c->lock);
}

bool tls_crl_cache_want(struct tls_crl_cache *c, const char *url)
{
    pthread_mutex_lock(&c->lock);
    struct tls_crl_entry *e = tls_crl_find(c, url);
    bool added = false;
    if (!e) {
        e = tls_crl_add(c, url);
        added = e != NULL;
        if (!e)
            LOG_WARN("CRL source %s not kept (URL too long or out of memory)", url);
    }
    if (e)
        e->last_wanted = (int64_t)time(NULL);
    pthread_mutex_unlock(&c->lock);
    return added;
}

int64_t tls_crl_cache_next_due(struct tls_crl_cache *c)
{
    int64_t due = INT64_MAX;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].next_fetch < due)
            due = c->e[i].next_fetch;
    pthread_mutex_unlock(&c->lock);
    return due;
}

/* One fetch of entry i; the network part runs without the lock. */
static bool tls_crl_fetch_one(struct tls_crl_cache *c, size_t i, int64_t now)
{
    char url[TLS_URL_MAX], etag[128], lm[64];
    pthread_mutex_lock(&c->lock);
    struct tls_crl_entry *e = &c->e[i];
    snprintf(url, sizeof(url), "%s", e->url);
    snprintf(etag, sizeof(etag), "%s", e->crl ? e->etag : "");
    snprintf(lm, sizeof(lm), "%s", e->crl ? e->last_modified : "");
    uint64_t timeout_ms = c->policy.timeout_ms;
    pthread_mutex_unlock(&c->lock);

    struct core_fetch_opts o = {.timeout_ms = timeout_ms,
                                .max_bytes = 64 * 1024 * 1024,
                                .if_none_match = etag,
                                .if_modified_since = lm};
    struct core_fetch_result r;
    enum tls_crl_result res;
    char why[256] = "";
    X509_CRL *crl = NULL;
    if (core_fetch(url, &o, &r) != 0) {
        res = TLS_CRL_TRANSPORT_ERROR;
        snprintf(why, sizeof(why), "%s", r.error);
    } else if (r.status == 304) {
        res = TLS_CRL_NOT_MODIFIED;
    } else if (r.status != 200) {
        res = TLS_CRL_HTTP_ERROR;
        snprintf(why, sizeof(why), "HTTP %ld", r.status);
    } else if (!(crl = tls_crl_parse(r.body ? r.body : "", r.len))) {
        res = TLS_CRL_INVALID;
        snprintf(why, sizeof(why), "the answer is not a CRL (DER or PEM)");
    } else {
        res = TLS_CRL_OK;
    }

    bool changed = false;
    pthread_mutex_lock(&c->lock);
    e = &c->e[i];
    if (strcmp(e->url, url) != 0) {
        /* the slot went to another source meanwhile: this answer is nobody's */
        pthread_mutex_unlock(&c->lock);
        X509_CRL_free(crl);
        core_fetch_result_free(&r);
        return false;
    }
    if (res == TLS_CRL_OK && !tls_crl_verify(c, crl, why, sizeof(why)))
        res = TLS_CRL_INVALID;
    if (res == TLS_CRL_OK && e->crl &&
        ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl), X509_CRL_get0_lastUpdate(e->crl)) < 0) {
        res = TLS_CRL_INVALID;
        snprintf(why, sizeof(why), "older than the CRL already held (a stale mirror?)");
    }
    if (!e->attempted)
        changed = true; /* waiting requests learn that the attempt was made */
    e->attempted = true;
    e->last_result = res;
    e->results[res]++;
    snprintf(e->last_error, sizeof(e->last_error), "%.199s", why);
    char deltas[8][TLS_URL_MAX];
    size_t ndeltas = 0;
    if (res == TLS_CRL_OK) {
        bool same = e->crl && X509_CRL_cmp(e->crl, crl) == 0 &&
                    ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl),
                                      X509_CRL_get0_lastUpdate(e->crl)) == 0;
        if (!same) {
            X509_CRL_free(e->crl);
            e->crl = crl;
            crl = NULL;
            X509_CRL_up_ref(e->crl);
            sk_X509_CRL_push(c->changed, e->crl);
            tls_crl_name_of(e->crl, e->ca, sizeof(e->ca));
            changed = true;
        }
        snprintf(e->etag, sizeof(e->etag), "%s", r.etag);
        snprintf(e->last_modified, sizeof(e->last_modified), "%s", r.last_modified);
        e->fetched_at = now;
        tls_crl_save(c, e);
        ndeltas = tls_crl_delta_urls(e->crl, deltas, 0, 8);
    } else if (res == TLS_CRL_NOT_MODIFIED) {
        e->fetched_at = now;
    }
    tls_crl_schedule(c, e, now, res != TLS_CRL_OK && res != TLS_CRL_NOT_MODIFIED);
    char ca[160];
    snprintf(ca, sizeof(ca), "%s", e->ca);
    pthread_mutex_unlock(&c->lock);
    X509_CRL_free(crl);
    core_fetch_result_free(&r);

    for (size_t k = 0; k < ndeltas; k++)
        if (tls_crl_cache_want(c, deltas[k]))
            changed = true;
    if (res == TLS_CRL_OK || res == TLS_CRL_NOT_MODIFIED)
        LOG_VERBOSE("CRL %s from %s: %s", *ca ? ca : "?", url, tls_crl_result_name(res));
    else
        LOG_WARN("CRL fetch from %s failed: %s: %s", url, tls_crl_result_name(res), why);
    return changed;
}

bool tls_crl_cache_refresh(struct tls_crl_cache *c, int64_t now, const volatile bool *stop)
{
    bool changed = false;
    /* slots are appended or reused in place, never moved: an index stays a valid slot */
    for (size_t i = 0; !(stop && *stop); i++) {
        pthread_mutex_lock(&c->lock);
        bool more = i < c->n;
        bool due = more && c->e[i].next_fetch <= now;
        pthread_mutex_unlock(&c->lock);
        if (!more)
            break;
        if (due && tls_crl_fetch_one(c, i, now))
            changed = true;
    }
    return changed;
}

STACK_OF(X509_CRL) * tls_crl_cache_crls(struct tls_crl_cache *c)
{
    STACK_OF(X509_CRL) *out = sk_X509_CRL_new_null();
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; out && i < c->n; i++)
        if (c->e[i].crl) {
            X509_CRL_up_ref(c->e[i].crl);
            sk_X509_CRL_push(out, c->e[i].crl);
        }
    pthread_mutex_unlock(&c->lock);
    return out;
}

STACK_OF(X509_CRL) * tls_crl_cache_take_changed(struct tls_crl_cache *c)
{
    pthread_mutex_lock(&c->lock);
    STACK_OF(X509_CRL) *out = c->changed;
    c->changed = sk_X509_CRL_new_null();
    pthread_mutex_unlock(&c->lock);
    return out;
}

size_t tls_crl_cache_attempted(struct tls_crl_cache *c, char (*urls)[TLS_URL_MAX], size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n && n < max; i++)
        if (c->e[i].attempted)
            snprintf(urls[n++], TLS_URL_MAX, "%s", c->e[i].url);
    pthread_mutex_unlock(&c->lock);
    return n;
}

static void tls_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

char *tls_crl_cache_metrics(struct tls_crl_cache *c, int64_t now)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    pthread_mutex_lock(&c->lock);
    fputs("# HELP cmg_crl_age_seconds Seconds since the thisUpdate of the CRL held, per source.\n"
          "# TYPE cmg_crl_age_seconds gauge\n",
          f);
    for (size_t i = 0; i < c->n; i++) {
        struct tls_crl_entry *e = &c->e[i];
        if (!e->crl)
            continue;
        fputs("cmg_crl_age_seconds{ca=\"", f);
        tls_label(f, e->ca);
        fputs("\",url=\"", f);
        tls_label(f, e->url);
        fprintf(f, "\"} %lld\n",
                (long long)(now - tls_asn1_epoch(X509_CRL_get0_lastUpdate(e->crl))));
    }
    fputs("# HELP cmg_crl_next_update_seconds Seconds until the CRL held passes its nextUpdate "
          "(negative: already past).\n# TYPE cmg_crl_next_update_seconds gauge\n",
          f);
    for (size_t i = 0; i < c->n; i++) {
        struct tls_crl_entry *e = &c->e[i];
        const ASN1_TIME *next = e->crl ? X509_CRL_get0_nextUpdate(e->crl) : NULL;
        if (!next)
            continue;
        fputs("cmg_crl_next_update_seconds{ca=\"", f);
        tls_label(f, e->ca);
        fputs("\",url=\"", f);
        tls_label(f, e->url);
        fprintf(f, "\"} %lld\n", (long long)(tls_asn1_epoch(next) - now));
    }
    fputs("# HELP cmg_crl_last_fetch_ok 1 when the last fetch of the source gave a usable "
          "answer.\n# TYPE cmg_crl_last_fetch_ok gauge\n",
          f);
    for (size_t i = 0; i < c->n; i++) {
        struct tls_crl_entry *e = &c->e[i];
        if (!e->attempted)
            continue;
        fputs("cmg_crl_last_fetch_ok{ca=\"", f);
        tls_label(f, e->ca);
        fputs("\",url=\"", f);
        tls_label(f, e->url);
        fprintf(f, "\"} %d\n",
                e->last_result == TLS_CRL_OK || e->last_result == TLS_CRL_NOT_MODIFIED);
    }
    fputs("# HELP cmg_crl_fetches_total CRL fetches by source and result.\n"
          "# TYPE cmg_crl_fetches_total counter\n",
          f);
    for (size_t i = 0; i < c->n; i++)
        for (int r = TLS_CRL_OK; r < TLS_CRL_RESULT_N; r++) {
            fputs("cmg_crl_fetches_total{url=\"", f);
            tls_label(f, c->e[i].url);
            fprintf(f, "\",result=\"%s\"} %llu\n", tls_crl_result_name((enum tls_crl_result)r),
                    (unsigned long long)c->e[i].results[r]);
        }
    pthread_mutex_unlock(&c->lock);
    fclose(f);
    return buf;
}

size_t tls_crl_cache_describe(struct tls_crl_cache *c, size_t i, char *buf, size_t len)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->n;
    if (i < n) {
        struct tls_crl_entry *e = &c->e[i];
        snprintf(buf, len, "%s: %s%s%s", e->url,
                 e->crl ? "CRL held" : "no CRL",
                 e->attempted ? ", last fetch " : "",
                 e->attempted ? tls_crl_result_name(e->last_result) : "");
        if (e->attempted && e->last_error[0]) {
            size_t l = strlen(buf);
            snprintf(buf + l, len - l, " (%s)", e->last_error);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}
