/* The gateway as cloud distribution point: the content-location service
 * (/downloadrestservice.svc/getcontentxmlsecure) and the content route (/cmgcontent/<package>/
 * <path>), both authorized by the management point's content access token (auth/ctoken.c),
 * served from the disk cache (content/cache.c) with Range, conditional requests and PeerDist.
 * Everything here runs on the connection's worker; store calls run on the cache's fill
 * threads, whose progress comes back as GW_MSG_CONTENT. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "conn.h"

#define GW_CONTENT_WINDOW (256 * 1024) /* response bytes queued ahead of the client */
#define GW_CONTENT_READ (64 * 1024)    /* bytes read from the cache file at a time */

enum gw_content_phase {
    GW_CP_PARKED = 0, /* waiting for a manifest or for the fill's first answer */
    GW_CP_STREAM,     /* the answer is going out */
    GW_CP_DONE,       /* all of it is queued */
};

struct gw_content {
    struct gw_conn *c;                /* the owner */
    struct gw_content *wprev, *wnext; /* the worker's waiters, while is_waiting */
    bool is_waiting;
    uint8_t phase;           /* enum gw_content_phase */
    struct content_entry *e; /* reference, while a file is read or its fill awaited */
    char package[CONTENT_PACKAGE_ID_MAX + 1]; /* PARKED without e: the manifest awaited */
    uint64_t pos, end;                        /* next byte to send, one past the last */
    uint64_t seen_filled, seen_pos;           /* fill and answer at the last stall check */
    uint8_t *ci;                              /* owned: a PeerDist CI being sent as the body */
    size_t ci_len, ci_off;
};

/* ---- the service (main thread) ---- */

static void gw_content_notify_cb(void *arg, uint64_t bits)
{
    struct gw_server *s = arg;
    pthread_mutex_lock(&s->content_notify_lock);
    for (unsigned i = 0; !s->content_notify_off && i < s->nworkers && i < 64; i++) {
        if (!(bits & (1ull << i)))
            continue;
        struct gw_worker *w = &s->workers[i];
        if (!w->mq || atomic_exchange(&w->content_wake, true))
            continue; /* a wake-up is already queued */
        if (gw_worker_post(w, GW_MSG_CONTENT, NULL) != 0)
            atomic_store(&w->content_wake, false);
    }
    pthread_mutex_unlock(&s->content_notify_lock);
}

int gw_content_service_start(struct gw_server *s, char *err, size_t errlen)
{
    const struct content_settings *cs = &s->snap->cfg.content;
    if (!cs->enabled)
        return 0;
    if (s->nworkers > 64) {
        snprintf(err, errlen, "content: at most 64 workers can serve content");
        return -1;
    }
    s->content_store = content_store_new(cs, err, errlen);
    if (!s->content_store)
        return -1;
    struct content_pd_secret secret;
    bool has_secret = false;
    char perr[256];
    if (cs->peerdist && cs->peerdist_secret_hex) {
        if (content_pd_secret_from_hex(&secret, cs->peerdist_secret_hex, perr, sizeof(perr)) != 0) {
            snprintf(err, errlen, "content.peerdist_secret_hex: %s", perr);
            return -1;
        }
        has_secret = true;
    } else if (cs->peerdist && cs->peerdist_key_file) {
        if (content_pd_secret_load_export(&secret, cs->peerdist_key_file, cs->peerdist_key_password,
                                          perr, sizeof(perr)) != 0) {
            snprintf(err, errlen, "content.peerdist_key_file: %s", perr);
            return -1;
        }
        has_secret = true;
    }
    struct content_cache_opts o = {
        .dir = cs->cache_dir,
        .max_bytes = cs->cache_max,
        .fill_threads = (unsigned)cs->fill_threads,
        .manifest_ttl_ms = cs->manifest_ttl,
        .pd_versions = has_secret ? CONTENT_PD_V1 | CONTENT_PD_V2 : 0,
        .pd_secret = has_secret ? &secret : NULL,
        .notify = gw_content_notify_cb,
        .notify_arg = s,
    };
    s->content_cache = content_cache_new(&o, s->content_store, err, errlen);
    if (has_secret) {
        s->content_pd = secret;
        s->content_has_pd = true;
        char id[17];
        for (int i = 0; i < 8; i++)
            snprintf(id + 2 * i, 3, "%02x", secret.id[i]);
        LOG_INFO("content: BranchCache on, key id %s", id);
    } else {
        LOG_INFO("content: BranchCache off (%s)",
                 cs->peerdist ? "no BranchCache key: set peerdist_key_file or the hex key"
                              : "peerdist = false");
    }
    content_pd_secret_clear(&secret);
    if (!s->content_cache)
        return -1;
    struct content_cache_stats st;
    content_cache_stats(s->content_cache, &st);
    LOG_INFO("content: %s, cache %s holds %llu object(s), %llu of %llu bytes",
             content_store_describe(s->content_store), cs->cache_dir,
             (unsigned long long)st.entries, (unsigned long long)st.bytes,
             (unsigned long long)st.max_bytes);
    return 0;
}

void gw_content_service_stop(struct gw_server *s)
{
    content_cache_free(s->content_cache);
    s->content_cache = NULL;
    content_store_free(s->content_store);
    s->content_store = NULL;
    content_pd_secret_clear(&s->content_pd);
}

/* ---- per request ---- */

static bool gw_content_token_check(struct gw_conn *c, const char *query, size_t qlen,
                                   struct auth_content_token *t);

uint64_t gw_content_stall_ms(const struct gw_conn *c)
{
    /* longer than the store's own bound, so that a stalled fill usually fails first */
    return c->snap->cfg.content.timeout + 5000;
}

static uint64_t gw_bit(const struct gw_conn *c)
{
    return 1ull << c->w->id;
}

static void gw_content_unwait(struct gw_content *gc)
{
    if (!gc->is_waiting)
        return;
    struct gw_worker *w = gc->c->w;
    if (gc->wprev)
        gc->wprev->wnext = gc->wnext;
    else
        w->content_waiters = gc->wnext;
    if (gc->wnext)
        gc->wnext->wprev = gc->wprev;
    gc->wprev = gc->wnext = NULL;
    gc->is_waiting = false;
}

/* Notices come through the worker's queue; should one be lost (the queue full), waiting
 * requests still look again once a second while there are any. */
static void gw_content_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    gw_content_wake(w);
    if (w->content_waiters) {
        struct timeval tv = {1, 0};
        evtimer_add(w->content_tick, &tv);
    }
}

static void gw_content_wait(struct gw_content *gc)
{
    if (gc->is_waiting)
        return;
    struct gw_worker *w = gc->c->w;
    if (!w->content_tick)
        w->content_tick = evtimer_new(w->base, gw_content_tick_cb, w);
    if (w->content_tick && !evtimer_pending(w->content_tick, NULL)) {
        struct timeval tv = {1, 0};
        evtimer_add(w->content_tick, &tv);
    }
    gc->wprev = NULL;
    gc->wnext = w->content_waiters;
    if (w->content_waiters)
        w->content_waiters->wprev = gc;
    w->content_waiters = gc;
    gc->is_waiting = true;
}

void gw_content_release(struct gw_conn *c)
{
    struct gw_content *gc = c->content;
    if (!gc)
        return;
    gw_content_unwait(gc);
    content_entry_unref(gc->e);
    free(gc->ci);
    free(gc);
    c->content = NULL;
}

bool gw_content_done(const struct gw_conn *c)
{
    return !c->content || c->content->phase == GW_CP_DONE;
}

static struct gw_content *gw_content_new(struct gw_conn *c)
{
    gw_content_release(c);
    struct gw_content *gc = calloc(1, sizeof(*gc));
    if (!gc)
        abort(); /* a few dozen bytes: the process cannot go on sensibly */
    gc->c = c;
    c->content = gc;
    return gc;
}

static void gw_content_plain(struct gw_conn *c, int status, const char *reason, const char *extra)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    gw_conn_respond(c, status, reason, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

/* Parks the request until the fill of e (a reference it takes), or else the manifest of
 * package, has news (or auth.auth_wait passes). */
static void gw_content_park(struct gw_conn *c, struct content_entry *e, const char *package)
{
    struct gw_content *gc = c->content ? c->content : gw_content_new(c);
    gc->phase = GW_CP_PARKED;
    gc->e = e;
    if (package)
        snprintf(gc->package, sizeof(gc->package), "%s", package);
    gw_content_wait(gc);
    gw_conn_park(c, GW_WAIT_CONTENT);
}

/* ---- helpers: dates, escaping ---- */

static void gw_http_date(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void gw_iso_date(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool gw_parse_http_date(const char *v, size_t len, int64_t *out)
{
    char buf[64];
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, v, len);
    buf[len] = '\0';
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

/* Appends s to the XML attribute being built, escaped. */
static void gw_xml_attr(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t need = strlen(s) * 6 + 8; /* the escaper's bound: "&apos;" is 6 bytes */
    if (*len + need > *cap) {
        size_t nc = *cap * 2 + need;
        char *p = realloc(*buf, nc);
        if (!p)
            abort();
        *buf = p;
        *cap = nc;
    }
    *len += gw_xml_escape(*buf + *len, *cap - *len, s);
}

static void gw_xml_raw(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void gw_xml_raw(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        size_t nc = *cap * 2 + (n > 0 ? (size_t)n : 0) + 64;
        char *p = realloc(*buf, nc);
        if (!p)
            abort();
        *buf = p;
        *cap = nc;
    }
}

/* Percent-encodes a package-relative path for a URL (keeps '/' and unreserved bytes). */
static void gw_url_path(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '/' || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

/* Percent-decodes a URL path piece; false on a bad escape, NUL or control byte. */
static bool gw_url_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return false;
            char h[3] = {s[i + 1], s[i + 2], 0};
            if (!isxdigit((unsigned char)h[0]) || !isxdigit((unsigned char)h[1]))
                return false;
            ch = (int)strtol(h, NULL, 16);
            i += 2;
        }
        if (ch < 0x20 || ch == 0x7f || o + 1 >= cap)
            return false;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return true;
}

/* The host clients reach this gateway by: their Host header when it is a plain host[:port],
 * else the service name. */
static void gw_public_host(struct gw_conn *c, char *out, size_t cap)
{
    size_t hl = 0;
    const char *h = httpreq_header(&c->req, "Host", &hl);
    bool ok = h && hl > 0 && hl < cap;
    for (size_t i = 0; ok && i < hl; i++)
        ok = isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-' || h[i] == ':' ||
             h[i] == '[' || h[i] == ']';
    if (ok) {
        memcpy(out, h, hl);
        out[hl] = '\0';
    } else {
        snprintf(out, cap, "%s", c->snap->service_name);
    }
}

/* ---- token ----
 * A client sends the same token with every file of a package (it is in each URL): its
 * verdict is kept per worker until the token ends, so the signature is checked once. The
 * whole token is compared, not only its hash; a reload (new snapshot) forgets every verdict. */

struct gw_ctoken_entry {
    uint64_t hash;
    char *tok; /* owned copy of the query */
    uint32_t len;
    uint64_t snap_gen;
    struct auth_content_token t;
};

static uint64_t gw_ctoken_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

void gw_content_tokens_free(struct gw_worker *w)
{
    if (w->content_tick) {
        event_free(w->content_tick);
        w->content_tick = NULL;
    }
    if (!w->ctokens)
        return;
    for (size_t i = 0; i < GW_CTOKEN_CACHE; i++)
        free(w->ctokens[i].tok);
    free(w->ctokens);
    w->ctokens = NULL;
}

static bool gw_content_token(struct gw_conn *c, const char *query, size_t qlen,
                             struct auth_content_token *t)
{
    int64_t now = (int64_t)(core_wall_ms() / 1000);
    int64_t skew = (int64_t)(c->snap->cfg.content.token_skew / 1000);
    uint64_t hash = query ? gw_ctoken_hash(query, qlen) : 0;
    struct gw_worker *w = c->w;
    if (!w->ctokens)
        w->ctokens = calloc(GW_CTOKEN_CACHE, sizeof(*w->ctokens));
    struct gw_ctoken_entry *slot = w->ctokens && query ? &w->ctokens[hash % GW_CTOKEN_CACHE] : NULL;
    if (slot && slot->tok && slot->hash == hash && slot->len == qlen &&
        slot->snap_gen == c->snap->generation && memcmp(slot->tok, query, qlen) == 0 &&
        now >= slot->t.start - skew && now < slot->t.end + skew) {
        *t = slot->t;
        return true;
    }
    if (gw_content_token_check(c, query, qlen, t)) {
        if (slot && c->snap == w->snap) {
            char *copy = malloc(qlen);
            if (copy) {
                memcpy(copy, query, qlen);
                free(slot->tok);
                slot->tok = copy;
                slot->len = (uint32_t)qlen;
                slot->hash = hash;
                slot->snap_gen = c->snap->generation;
                slot->t = *t;
            }
        }
        return true;
    }
    return false;
}

static bool gw_content_token_check(struct gw_conn *c, const char *query, size_t qlen,
                                   struct auth_content_token *t)
{
    struct auth_content_policy policy = {
        .max_lifetime = (int64_t)(c->snap->cfg.content.token_max_lifetime / 1000),
        .skew = (int64_t)(c->snap->cfg.content.token_skew / 1000),
    };
    enum auth_token_error e = auth_content_token_verify(
        query, qlen, &policy, &c->snap->content_keys, (int64_t)(core_wall_ms() / 1000), t);
    if (e == AUTH_TOKEN_OK)
        return true;
    GW_INC(c->w->metrics.content_token_fail);
    LOG_WARN("c%u.%llu content access token refused: %s (package %s, client %s, issuer %s)",
             c->w->id, (unsigned long long)c->id, auth_token_error_name(e),
             t->package[0] ? t->package : "-", t->client[0] ? t->client : "-",
             t->issuer[0] ? t->issuer : "-");
    gw_content_plain(c, 401, "CMGService_Invalid_Token", NULL);
    return false;
}

/* The package's manifest, or an answer (or a park) already given: NULL. */
static struct content_package *gw_content_package(struct gw_conn *c, const char *package)
{
    struct gw_server *s = c->w->server;
    struct content_package *pkg = NULL;
    switch (content_catalog_get(s->content_cache, package, gw_bit(c), &pkg)) {
    case CONTENT_LOOKUP_FOUND:
        return pkg;
    case CONTENT_LOOKUP_PENDING:
        if (!(c->content_parks & 1)) {
            c->content_parks |= 1;
            gw_content_park(c, NULL, package);
            return NULL;
        }
        LOG_WARN("c%u.%llu content: manifest of %s still not read after auth.auth_wait", c->w->id,
                 (unsigned long long)c->id, package);
        gw_content_plain(c, 503, "Service Unavailable", "Retry-After: 5\r\n");
        return NULL;
    case CONTENT_LOOKUP_MISSING:
        LOG_INFO("c%u.%llu content: package %s is not distributed to this gateway", c->w->id,
                 (unsigned long long)c->id, package);
        gw_content_plain(c, 404, "Not Found", NULL);
        return NULL;
    case CONTENT_LOOKUP_ERROR:
    default:
        GW_INC(c->w->metrics.content_errors);
        gw_content_plain(c, 503, "Service Unavailable", "Retry-After: 5\r\n");
        return NULL;
    }
}

/* ---- the content-location service ---- */

static void gw_content_location(struct gw_conn *c, const char *query, size_t qlen)
{
    struct auth_content_token t;
    if (!gw_content_token(c, query, qlen, &t))
        return;
    struct content_package *pkg = gw_content_package(c, t.package);
    if (!pkg)
        return;
    const struct content_manifest *m = content_package_manifest(pkg);
    if (strcmp(m->content_id, t.content_id) != 0) {
        LOG_INFO("c%u.%llu content: %s here is content %s, the token names %s", c->w->id,
                 (unsigned long long)c->id, t.package, m->content_id, t.content_id);
        content_package_unref(pkg);
        gw_content_plain(c, 404, "Not Found", NULL);
        return;
    }
    const struct content_settings *cs = &c->snap->cfg.content;
    bool sas = cs->locations == CONTENT_LOCATIONS_SAS;
    int64_t now = (int64_t)(core_wall_ms() / 1000);
    int64_t expires = t.end;
    if (sas && now + (int64_t)(cs->sas_lifetime / 1000) < expires)
        expires = now + (int64_t)(cs->sas_lifetime / 1000);
    char host[260], when[32];
    gw_public_host(c, host, sizeof(host));
    gw_iso_date(expires, when, sizeof(when));
    size_t cap = 4096, len = 0;
    char *x = malloc(cap);
    if (!x)
        abort();
    x[0] = '\0';
    gw_xml_raw(&x, &len, &cap,
               "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<ContentLocation Version=\"1\" "
               "PackageID=\"");
    gw_xml_attr(&x, &len, &cap, t.package);
    gw_xml_raw(&x, &len, &cap, "\" ContentID=\"");
    gw_xml_attr(&x, &len, &cap, t.content_id);
    gw_xml_raw(&x, &len, &cap, "\" Size=\"%llu\" Files=\"%zu\" Source=\"%s\" Expires=\"%s\">\r\n",
               (unsigned long long)m->size, m->nfiles, sas ? "storage" : "gateway", when);
    bool failed = false;
    for (size_t i = 0; i < m->nfiles && !failed; i++) {
        const struct content_manifest_file *f = &m->files[i];
        char lm[32], md5[32] = "", url[4096], path[3200];
        gw_iso_date(f->last_modified, lm, sizeof(lm));
        EVP_EncodeBlock((unsigned char *)md5, f->md5, 16);
        gw_url_path(f->path, path, sizeof(path));
        if (sas) {
            char blob[1200], err[256];
            snprintf(blob, sizeof(blob), "content/%s/%s", t.package, f->path);
            if (content_store_sas_url(c->w->server->content_store, blob, now, expires, url,
                                      sizeof(url), err, sizeof(err)) != 0) {
                LOG_ERROR("c%u.%llu content: no SAS URL for %s: %s", c->w->id,
                          (unsigned long long)c->id, blob, err);
                failed = true;
                break;
            }
        } else {
            snprintf(url, sizeof(url), "https://%s/cmgcontent/%s/%s?%.*s", host, t.package, path,
                     (int)qlen, query);
        }
        gw_xml_raw(&x, &len, &cap, "  <File Name=\"");
        gw_xml_attr(&x, &len, &cap, f->path);
        gw_xml_raw(&x, &len, &cap, "\" Size=\"%llu\" MD5=\"%s\" ETag=\"",
                   (unsigned long long)f->size, md5);
        gw_xml_attr(&x, &len, &cap, f->etag);
        gw_xml_raw(&x, &len, &cap, "\" LastModified=\"%s\" URL=\"", lm);
        gw_xml_attr(&x, &len, &cap, url);
        gw_xml_raw(&x, &len, &cap, "\"/>\r\n");
    }
    gw_xml_raw(&x, &len, &cap, "</ContentLocation>\r\n");
    content_package_unref(pkg);
    if (failed) {
        GW_INC(c->w->metrics.content_errors);
        gw_content_plain(c, 500, "Internal Server Error", NULL);
    } else {
        GW_INC(c->w->metrics.content_locations);
        gw_conn_respond(c, 200, "OK", "text/xml; charset=utf-8", x, len,
                        "Cache-Control: no-store\r\n");
    }
    free(x);
}

/* ---- content ---- */

/* If-None-Match / If-Modified-Since (RFC 9110 13.1.2, 13.1.3): true when the client's copy
 * is current. */
static bool gw_not_modified(struct gw_conn *c, const struct content_manifest_file *f)
{
    size_t len = 0;
    const char *inm = httpreq_header(&c->req, "If-None-Match", &len);
    if (inm) {
        /* a list of entity tags, compared weakly; * matches any */
        size_t el = strlen(f->etag);
        const char *p = inm, *end = inm + len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e - s == 1 && *s == '*')
                return true;
            if (e - s >= 2 && s[0] == 'W' && s[1] == '/')
                s += 2;
            if ((size_t)(e - s) == el && memcmp(s, f->etag, el) == 0)
                return true;
        }
        return false;
    }
    const char *ims = httpreq_header(&c->req, "If-Modified-Since", &len);
    int64_t t;
    return ims && gw_parse_http_date(ims, len, &t) && f->last_modified <= t;
}

/* If-Range: the range applies only if the validator names the current version (strong
 * ETag comparison, or the exact Last-Modified date). */
static bool gw_if_range_ok(struct gw_conn *c, const struct content_manifest_file *f)
{
    size_t len = 0;
    const char *v = httpreq_header(&c->req, "If-Range", &len);
    if (!v)
        return true;
    if (len >= 2 && v[0] == '"')
        return len == strlen(f->etag) && memcmp(v, f->etag, len) == 0;
    int64_t t;
    return gw_parse_http_date(v, len, &t) && t == f->last_modified;
}

/* Queues what is readable of the body, up to the window. True when something was queued or
 * the answer ended. Called on the worker only. */
static bool gw_content_pump(struct gw_conn *c)
{
    struct gw_content *gc = c->content;
    if (!gc || gc->phase != GW_CP_STREAM)
        return false;
    bool progress = false;
    if (gc->ci) {
        size_t n = gc->ci_len - gc->ci_off;
        gw_conn_proxy_data(c, (const char *)gc->ci + gc->ci_off, n);
        gc->ci_off = gc->ci_len;
        gc->phase = GW_CP_DONE;
        gw_conn_proxy_end(c, true);
        return true;
    }
    while (gc->pos < gc->end && gw_conn_out_pending(c) < GW_CONTENT_WINDOW) {
        /* Until the fill is checked (length, MD5), the answer's last byte is held back: a
         * fill that fails then cuts the answer, which therefore never looks whole. */
        bool ready = content_entry_state(gc->e) == CONTENT_ENTRY_READY;
        uint64_t limit = ready ? gc->end : gc->end - 1;
        ssize_t n = 0;
        if (gc->pos < limit) {
            uint64_t want = limit - gc->pos;
            if (want > GW_CONTENT_READ)
                want = GW_CONTENT_READ;
            char *dst = gw_conn_out_space(c, (size_t)want);
            n = content_entry_pread(gc->e, dst, (size_t)want, gc->pos);
        }
        if (n < 0) {
            LOG_ERROR("c%u.%llu content: reading the cached %s failed", c->w->id,
                      (unsigned long long)c->id, content_entry_info(gc->e)->name);
            gc->phase = GW_CP_DONE;
            gw_content_unwait(gc);
            GW_INC(c->w->metrics.content_errors);
            gw_conn_proxy_end(c, false);
            return true;
        }
        if (n == 0) {
            enum content_entry_state st = content_entry_state(gc->e);
            if (st == CONTENT_ENTRY_FAILED) {
                const char *why = NULL;
                content_entry_error(gc->e, &why);
                LOG_WARN("c%u.%llu content: %s broke off after %llu bytes: %s", c->w->id,
                         (unsigned long long)c->id, content_entry_info(gc->e)->name,
                         (unsigned long long)gc->pos, why);
                gc->phase = GW_CP_DONE;
                gw_content_unwait(gc);
                GW_INC(c->w->metrics.content_errors);
                gw_conn_proxy_end(c, false); /* a cut answer must not look whole */
                return true;
            }
            /* the fill has not got that far, or is not checked yet: wait for its next notice */
            content_entry_subscribe(gc->e, gw_bit(c));
            gw_content_wait(gc);
            st = content_entry_state(gc->e);
            if (st == CONTENT_ENTRY_READY || st == CONTENT_ENTRY_FAILED ||
                (gc->pos + 1 < gc->end && content_entry_filled(gc->e) > gc->pos))
                continue; /* it moved on while subscribing */
            return progress;
        }
        gw_conn_out_commit(c, (size_t)n);
        GW_ADD(c->w->metrics.content_bytes, (uint64_t)n);
        gc->pos += (uint64_t)n;
        progress = true;
        if (c->state == GW_CS_WAIT)
            c->deadline = core_now_ms() + gw_content_stall_ms(c);
    }
    if (gc->pos >= gc->end) {
        gw_content_unwait(gc);
        gc->phase = GW_CP_DONE;
        gw_conn_proxy_end(c, true);
        return true;
    }
    return progress;
}

bool gw_content_drained(struct gw_conn *c)
{
    return gw_content_pump(c);
}

static void gw_content_file(struct gw_conn *c, const char *path, size_t plen, const char *query,
                            size_t qlen)
{
    /* /cmgcontent/<package>/<path> */
    const char *p = path + strlen(GW_CONTENT_PREFIX);
    size_t rest = plen - strlen(GW_CONTENT_PREFIX);
    const char *slash = memchr(p, '/', rest);
    char package[AUTH_CONTENT_ID_MAX + 1], file[1024];
    if (!slash || (size_t)(slash - p) > AUTH_CONTENT_ID_MAX ||
        !gw_url_decode(p, (size_t)(slash - p), package, sizeof(package)) ||
        !gw_url_decode(slash + 1, rest - (size_t)(slash - p) - 1, file, sizeof(file)) || !file[0]) {
        gw_content_plain(c, 404, "Not Found", NULL);
        return;
    }
    struct auth_content_token t;
    if (!gw_content_token(c, query, qlen, &t))
        return;
    if (strcmp(t.package, package) != 0) {
        GW_INC(c->w->metrics.content_token_fail);
        LOG_WARN("c%u.%llu content access token for %s used on package %s", c->w->id,
                 (unsigned long long)c->id, t.package, package);
        gw_content_plain(c, 401, "CMGService_Invalid_Token", NULL);
        return;
    }
    struct content_package *pkg = gw_content_package(c, package);
    if (!pkg)
        return;
    const struct content_manifest *m = content_package_manifest(pkg);
    const struct content_manifest_file *f = content_manifest_find(m, file);
    if (strcmp(m->content_id, t.content_id) != 0 || !f) {
        content_package_unref(pkg);
        gw_content_plain(c, 404, "Not Found", NULL);
        return;
    }
    struct content_blob_info want;
    memset(&want, 0, sizeof(want));
    snprintf(want.name, sizeof(want.name), "content/%s/%s", package, f->path);
    snprintf(want.etag, sizeof(want.etag), "%s", f->etag);
    want.size = f->size;
    want.last_modified = f->last_modified;
    memcpy(want.md5, f->md5, 16);
    want.has_md5 = true;
    char validators[256], lm[40];
    gw_http_date(f->last_modified, lm, sizeof(lm));
    snprintf(validators, sizeof(validators), "etag: %s\r\nlast-modified: %s\r\n", f->etag, lm);
    bool not_modified = gw_not_modified(c, f);
    bool if_range_ok = gw_if_range_ok(c, f);
    content_package_unref(pkg);
    f = NULL; /* the manifest may go with the reference */

    if (not_modified) {
        GW_INC(c->w->metrics.content_not_modified);
        char extra[360];
        snprintf(extra, sizeof(extra),
                 "ETag: %s\r\nLast-Modified: %s\r\nCache-Control: private\r\n", want.etag, lm);
        gw_conn_respond(c, 304, "Not Modified", NULL, NULL, 0, extra);
        return;
    }
    struct content_range range = {0, 0};
    enum content_range_result rr = CONTENT_RANGE_NONE;
    size_t rlen = 0;
    const char *rv = httpreq_header(&c->req, "Range", &rlen);
    if (rv && if_range_ok && c->req.method == HTTPREQ_M_GET)
        rr = content_range_eval(rv, rlen, want.size, &range);
    if (rr == CONTENT_RANGE_UNSATISFIABLE) {
        char cr[64], extra[400];
        content_range_format(rr, &range, want.size, cr, sizeof(cr));
        snprintf(extra, sizeof(extra), "Content-Range: %s\r\nETag: %s\r\nLast-Modified: %s\r\n", cr,
                 want.etag, lm);
        gw_content_plain(c, 416, "Range Not Satisfiable", extra);
        return;
    }

    bool hit = false;
    struct content_entry *e =
        content_cache_get(c->w->server->content_cache, &want, gw_bit(c), &hit);
    if (!e) {
        gw_content_plain(c, 503, "Service Unavailable", NULL);
        return;
    }
    enum content_entry_state st = content_entry_state(e);
    if (st == CONTENT_ENTRY_WAITING && want.size > 0) {
        if (!(c->content_parks & 2)) {
            c->content_parks |= 2;
            gw_content_park(c, e, NULL);
            return;
        }
        content_entry_unref(e);
        GW_INC(c->w->metrics.content_errors);
        gw_content_plain(c, 504, "Gateway Timeout", NULL);
        return;
    }
    if (st == CONTENT_ENTRY_FAILED) {
        const char *why = NULL;
        int err = content_entry_error(e, &why);
        content_entry_unref(e);
        GW_INC(c->w->metrics.content_errors);
        LOG_WARN("c%u.%llu content: %s could not be read from storage: %s", c->w->id,
                 (unsigned long long)c->id, want.name, why);
        if (err == CONTENT_STORE_ENOTFOUND || err == CONTENT_STORE_ECHANGED)
            gw_content_plain(c, 404, "Not Found", NULL);
        else
            gw_content_plain(c, 502, "Bad Gateway", NULL);
        return;
    }
    GW_INC(c->w->metrics.content_requests);
    GW_INC(c->w->metrics.content_cache[hit ? 0 : 1]);

    /* BranchCache */
    struct content_pd_decision d;
    memset(&d, 0, sizeof(d));
    const struct content_pd_hashes *hashes = content_entry_hashes(e);
    if (c->w->server->content_has_pd) {
        struct content_pd_request pr;
        memset(&pr, 0, sizeof(pr));
        pr.accept_encoding = httpreq_header(&c->req, "Accept-Encoding", &pr.accept_encoding_len);
        pr.peerdist = httpreq_header(&c->req, "X-P2P-PeerDist", &pr.peerdist_len);
        pr.peerdist_ex = httpreq_header(&c->req, "X-P2P-PeerDistEx", &pr.peerdist_ex_len);
        pr.entity_length = want.size;
        pr.is_get = c->req.method == HTTPREQ_M_GET;
        pr.is_full_entity = true;
        pr.has_validator = true;
        pr.has_range = rr == CONTENT_RANGE_PARTIAL;
        pr.has_hashes = hashes != NULL;
        struct content_pd_policy pol = {CONTENT_PD_V1 | CONTENT_PD_V2, false};
        content_pd_decide(&pr, &pol, &d);
    }

    struct gw_content *gc = gw_content_new(c);
    gc->e = e;
    char hdr[1024];
    int hn;
    int status = 200;
    if (d.action == CONTENT_PD_SERVE) {
        ssize_t n = content_pd_ci_size(hashes, d.ci_version, NULL);
        gc->ci = n > 0 ? malloc((size_t)n) : NULL;
        if (!gc->ci || content_pd_ci_write(hashes, d.ci_version, NULL, &c->w->server->content_pd,
                                           gc->ci, (size_t)n) != n) {
            gw_content_release(c);
            GW_INC(c->w->metrics.content_errors);
            gw_content_plain(c, 500, "Internal Server Error", NULL);
            return;
        }
        gc->ci_len = (size_t)n;
        GW_INC(c->w->metrics.content_peerdist);
        hn =
            snprintf(hdr, sizeof(hdr),
                     "server: cmg-gateway\r\ndate: %s\r\ncontent-type: application/octet-stream\r\n"
                     "content-encoding: peerdist\r\nx-p2p-peerdist: %s\r\ncontent-length: %zu\r\n"
                     "%saccept-ranges: bytes\r\ncache-control: private\r\nvary: "
                     "Accept-Encoding\r\n",
                     gw_worker_date(c->w), d.peerdist, gc->ci_len, validators);
    } else {
        char cr[96] = "";
        gc->pos = 0;
        gc->end = want.size;
        if (rr == CONTENT_RANGE_PARTIAL) {
            status = 206;
            gc->pos = range.first;
            gc->end = range.last + 1;
            char v[64];
            content_range_format(rr, &range, want.size, v, sizeof(v));
            snprintf(cr, sizeof(cr), "content-range: %s\r\n", v);
            GW_INC(c->w->metrics.content_partial);
        }
        hn = snprintf(
            hdr, sizeof(hdr),
            "server: cmg-gateway\r\ndate: %s\r\ncontent-type: application/octet-stream\r\n"
            "content-length: %llu\r\n%s%saccept-ranges: bytes\r\ncache-control: "
            "private\r\n%s%s%s%s",
            gw_worker_date(c->w), (unsigned long long)(gc->end - gc->pos), cr, validators,
            d.vary ? "vary: Accept-Encoding\r\n" : "",
            d.action == CONTENT_PD_IDENTITY_MAKE_HASH ? "x-p2p-peerdistex: " : "",
            d.action == CONTENT_PD_IDENTITY_MAKE_HASH && d.peerdist_ex ? d.peerdist_ex : "",
            d.action == CONTENT_PD_IDENTITY_MAKE_HASH ? "\r\n" : "");
    }
    if (hn < 0 || (size_t)hn >= sizeof(hdr)) {
        gw_content_release(c);
        gw_content_plain(c, 500, "Internal Server Error", NULL);
        return;
    }
    gw_conn_proxy_head(c, status, NULL, hdr, (size_t)hn, true, false);
    if (c->req.method == HTTPREQ_M_HEAD) {
        gc->phase = GW_CP_DONE;
        gw_conn_proxy_end(c, true);
        return;
    }
    gc->phase = GW_CP_STREAM;
    gw_content_pump(c);
}

bool gw_content_route(struct gw_conn *c, const char *url, size_t plen, const char *query,
                      size_t qlen)
{
    bool location = false;
    static const char loc[] = "/downloadrestservice.svc/getcontentxmlsecure";
    if (plen == sizeof(loc) - 1 && strncasecmp(url, loc, plen) == 0)
        location = true;
    else if (plen <= strlen(GW_CONTENT_PREFIX) ||
             strncasecmp(url, GW_CONTENT_PREFIX, strlen(GW_CONTENT_PREFIX)) != 0)
        return false;
    /* What an earlier pass of this request left (a park): a fill that failed meanwhile is
     * the answer, not a reason to start another one. */
    int prev_err = 0;
    const char *prev_why = NULL;
    if (c->content && c->content->e && content_entry_state(c->content->e) == CONTENT_ENTRY_FAILED)
        prev_err = content_entry_error(c->content->e, &prev_why);
    if (prev_err) {
        LOG_WARN("c%u.%llu content: %s could not be read from storage: %s", c->w->id,
                 (unsigned long long)c->id, content_entry_info(c->content->e)->name, prev_why);
        GW_INC(c->w->metrics.content_errors);
        gw_content_release(c);
        if (prev_err == CONTENT_STORE_ENOTFOUND || prev_err == CONTENT_STORE_ECHANGED)
            gw_content_plain(c, 404, "Not Found", NULL);
        else
            gw_content_plain(c, 502, "Bad Gateway", NULL);
        return true;
    }
    gw_content_release(c);
    if (c->req.method != HTTPREQ_M_GET && c->req.method != HTTPREQ_M_HEAD) {
        gw_content_plain(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
        return true;
    }
    if (!c->w->server->content_cache) {
        gw_content_plain(c, 404, "Not Found", NULL);
        return true;
    }
    if (location)
        gw_content_location(c, query, qlen);
    else
        gw_content_file(c, url, plen, query, qlen);
    return true;
}

bool gw_content_timeout(struct gw_conn *c)
{
    struct gw_content *gc = c->content;
    if (!gc || gc->phase != GW_CP_STREAM)
        return true;
    /* A slow fill is not a stalled one: as long as the file grows, the answer goes on (and
     * takes what arrived, in case no notice came for it). */
    uint64_t filled = content_entry_filled(gc->e);
    if (content_entry_state(gc->e) != CONTENT_ENTRY_FAILED &&
        (filled != gc->seen_filled || gc->pos != gc->seen_pos)) {
        gc->seen_filled = filled;
        gc->seen_pos = gc->pos;
        if (gw_content_pump(c))
            gw_conn_kick(c);
        return false;
    }
    LOG_WARN("c%u.%llu content: %s made no progress for %llu ms: answer cut", c->w->id,
             (unsigned long long)c->id, content_entry_info(gc->e)->name,
             (unsigned long long)gw_content_stall_ms(c));
    gc->phase = GW_CP_DONE;
    gw_content_unwait(gc);
    GW_INC(c->w->metrics.content_errors);
    gw_conn_proxy_end(c, false); /* ends the request: gc is gone */
    gw_conn_kick(c);             /* write what is queued, then close */
    return true;
}

void gw_content_wake(struct gw_worker *w)
{
    atomic_store(&w->content_wake, false);
    struct gw_content *gc = w->content_waiters;
    while (gc) {
        struct gw_content *next = gc->wnext;
        struct gw_conn *c = gc->c;
        if (gc->phase == GW_CP_PARKED) {
            bool ready = gc->e ? content_entry_state(gc->e) != CONTENT_ENTRY_WAITING
                               : content_catalog_settled(w->server->content_cache, gc->package);
            if (ready) {
                gw_content_unwait(gc);
                gw_conn_unpark(c); /* the router decides again with what arrived */
            }
        } else if (gc->phase == GW_CP_STREAM) {
            gw_content_unwait(gc);
            bool moved = gw_content_pump(c); /* may end the request and free gc */
            if (moved || !c->content || !c->content->is_waiting)
                gw_conn_kick(c);
        }
        gc = next;
    }
}
