/* Entra ID signing keys: each onboarded tenant's OpenID configuration and JWKS, fetched on a
 * background thread, kept on disk as last-known-good, refreshed on a schedule and (rate
 * limited) when a token names a key that is not held. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth.h"
#include "core.h"
#include "jwt.h"

static const char *const auth_entra_default_authority[] = {
    [AUTH_ENTRA_PUBLIC] = "https://login.microsoftonline.com",
    [AUTH_ENTRA_USGOV] = "https://login.microsoftonline.us",
};

const char *auth_entra_authority(unsigned cloud, const char *override)
{
    if (override && *override)
        return override;
    return auth_entra_default_authority[cloud == AUTH_ENTRA_USGOV ? AUTH_ENTRA_USGOV
                                                                   : AUTH_ENTRA_PUBLIC];
}

bool auth_is_guid(const char *s, size_t len)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    size_t at = 0;
    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, at++)
            if (at >= len || !isxdigit((unsigned char)s[at]))
                return false;
        if (g < 4 && (at >= len || s[at++] != '-'))
            return false;
    }
    return at == len;
}

int auth_entra_tenants_parse(const char *list, struct auth_entra_tenant *out, size_t max,
                             size_t *n, char *err, size_t errlen)
{
    *n = 0;
    if (!list)
        return 0;
    const char *items[AUTH_ENTRA_TENANTS_MAX + 1];
    char *copy;
    size_t k = core_split_list(list, &copy, items, AUTH_ENTRA_TENANTS_MAX + 1);
    int rc = 0;
    if (k > max) {
        snprintf(err, errlen, "more than %zu tenants", max);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < k; i++) {
        const char *colon = strchr(items[i], ':');
        size_t tl = colon ? (size_t)(colon - items[i]) : strlen(items[i]);
        if (!auth_is_guid(items[i], tl) || (colon && !auth_is_guid(colon + 1, strlen(colon + 1)))) {
            snprintf(err, errlen,
                     "'%s' is not <tenant id> or <tenant id>:<client app id> (GUIDs)", items[i]);
            rc = -1;
            break;
        }
        struct auth_entra_tenant *t = &out[(*n)++];
        memset(t, 0, sizeof(*t));
        for (size_t j = 0; j < tl; j++)
            t->tenant[j] = (char)tolower((unsigned char)items[i][j]);
        if (colon)
            for (size_t j = 0; colon[1 + j]; j++)
                t->client_app_id[j] = (char)tolower((unsigned char)colon[1 + j]);
    }
    free(copy);
    return rc;
}

/* ---- the key source ---- */

struct auth_entra_tenant_state {
    char tenant[40];
    struct auth_jwks *jwks; /* last good, owned */
    char v1_issuer[AUTH_ISSUER_MAX];
    char v2_issuer[AUTH_ISSUER_MAX];
    int64_t fetched_at; /* last success */
    int64_t next_fetch;
    enum auth_fetch_result last_result;
    uint64_t results[AUTH_FETCH_RESULT_N];
};

struct auth_entra_source {
    pthread_mutex_t lock;
    char *dir; /* NULL: no disk cache */
    char authority[256];
    struct auth_entra_source_policy policy;
    struct auth_entra_tenant_state *t;
    size_t n;
    int64_t forced_at; /* last refresh caused by an unknown kid */
    bool force_pending;
};

const char *auth_fetch_result_name(enum auth_fetch_result r)
{
    static const char *names[AUTH_FETCH_RESULT_N] = {"none", "ok", "http_error",
                                                     "transport_error", "invalid"};
    return r < AUTH_FETCH_RESULT_N ? names[r] : "invalid";
}

static char *auth_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > 4 * 1024 * 1024)
                break;
            char *p = realloc(buf, cap);
            if (!p)
                break;
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static void auth_write_file(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path); /* cmgctl may write the same cache */
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        LOG_WARN("cannot write the key cache file %s", path);
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return;
    }
    bool ok = fwrite(data, 1, len, f) == len;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        unlink(tmp);
        LOG_WARN("cannot write the key cache file %s", path);
    }
}

/* The cache file: {"fetched":..,"v1_issuer":..,"v2_issuer":..,"jwks":{...}} per tenant. */
static void auth_entra_load_cached(struct auth_entra_source *s, struct auth_entra_tenant_state *t)
{
    if (!s->dir)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.json", s->dir, t->tenant);
    size_t len = 0;
    char *text = auth_read_file(path, &len);
    if (!text)
        return;
    json_t *root = json_loadb(text, len, 0, NULL);
    free(text);
    json_t *jwks = json_object_get(root, "jwks");
    char *jtext = jwks ? json_dumps(jwks, JSON_COMPACT) : NULL;
    char err[200] = "no key set in it";
    struct auth_jwks *set = jtext ? auth_jwks_parse(jtext, strlen(jtext), err, sizeof(err)) : NULL;
    free(jtext);
    if (!set)
        LOG_WARN("Entra key cache %s ignored: %s", path, err);
    if (set) {
        t->jwks = set;
        t->fetched_at = (int64_t)json_integer_value(json_object_get(root, "fetched"));
        const char *v1 = json_string_value(json_object_get(root, "v1_issuer"));
        const char *v2 = json_string_value(json_object_get(root, "v2_issuer"));
        snprintf(t->v1_issuer, sizeof(t->v1_issuer), "%s", v1 ? v1 : "");
        snprintf(t->v2_issuer, sizeof(t->v2_issuer), "%s", v2 ? v2 : "");
    }
    json_decref(root);
}

static void auth_entra_save(const struct auth_entra_source *s,
                            const struct auth_entra_tenant_state *t, json_t *jwks)
{
    if (!s->dir)
        return;
    json_t *root = json_pack("{s:I,s:s,s:s,s:O}", "fetched", (json_int_t)t->fetched_at,
                             "v1_issuer", t->v1_issuer, "v2_issuer", t->v2_issuer, "jwks", jwks);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.json", s->dir, t->tenant);
    if (text)
        auth_write_file(path, text, strlen(text));
    free(text);
    json_decref(root);
}

struct auth_entra_source *auth_entra_source_new(const char *dir, char *err, size_t errlen)
{
    struct auth_entra_source *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    if (dir && *dir) {
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the key cache folder %s: %s", dir,
                     strerror(errno));
            auth_entra_source_free(s);
            return NULL;
        }
        s->dir = strdup(dir);
    }
    return s;
}

void auth_entra_source_free(struct auth_entra_source *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        auth_jwks_free(s->t[i].jwks);
    free(s->t);
    free(s->dir);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void auth_entra_source_configure(struct auth_entra_source *s, const char *authority,
                                 const struct auth_entra_tenant *tenants, size_t ntenants,
                                 const struct auth_entra_source_policy *policy)
{
    char norm[sizeof(s->authority)];
    snprintf(norm, sizeof(norm), "%s", authority);
    size_t alen = strlen(norm);
    while (alen && norm[alen - 1] == '/')
        norm[--alen] = '\0';
    pthread_mutex_lock(&s->lock);
    /* a different authority (not the first configuration) makes every key suspect */
    bool same_authority = !s->authority[0] || strcmp(s->authority, norm) == 0;
    snprintf(s->authority, sizeof(s->authority), "%s", norm);
    s->policy = *policy;
    struct auth_entra_tenant_state *nt = calloc(ntenants ? ntenants : 1, sizeof(*nt));
    for (size_t i = 0; nt && i < ntenants; i++) {
        snprintf(nt[i].tenant, sizeof(nt[i].tenant), "%s", tenants[i].tenant);
        for (size_t j = 0; j < s->n; j++)
            if (same_authority && strcmp(s->t[j].tenant, nt[i].tenant) == 0) {
                nt[i] = s->t[j]; /* keeps its keys and schedule */
                s->t[j].jwks = NULL;
            }
        if (!nt[i].jwks && same_authority) {
            auth_entra_load_cached(s, &nt[i]);
            /* keys from the disk cache count from when they were fetched */
            nt[i].next_fetch = nt[i].jwks ? nt[i].fetched_at + (int64_t)policy->refresh : 0;
        }
        if (!nt[i].jwks || !same_authority)
            nt[i].next_fetch = 0;
    }
    for (size_t j = 0; j < s->n; j++)
        auth_jwks_free(s->t[j].jwks);
    free(s->t);
    s->t = nt;
    s->n = nt ? ntenants : 0;
    pthread_mutex_unlock(&s->lock);
}

bool auth_entra_source_force(struct auth_entra_source *s, int64_t now)
{
    pthread_mutex_lock(&s->lock);
    bool ok = s->n > 0 && (s->forced_at == 0 ||
                           now - s->forced_at >= (int64_t)s->policy.unknown_kid_interval);
    if (ok) {
        s->forced_at = now;
        s->force_pending = true;
        for (size_t i = 0; i < s->n; i++)
            s->t[i].next_fetch = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

int64_t auth_entra_source_forced_at(struct auth_entra_source *s)
{
    pthread_mutex_lock(&s->lock);
    int64_t t = s->forced_at;
    pthread_mutex_unlock(&s->lock);
    return t;
}

int64_t auth_entra_source_next_due(struct auth_entra_source *s)
{
    int64_t due = INT64_MAX;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i].next_fetch < due)
            due = s->t[i].next_fetch;
    pthread_mutex_unlock(&s->lock);
    return due;
}

/* GETs url and parses it as a JSON object. Returns the result kind; *out owned by caller. */
static enum auth_fetch_result auth_fetch_json(const char *url, uint64_t timeout_ms, json_t **out,
                                              char *raw_why, size_t whylen)
{
    struct core_fetch_opts o = {.timeout_ms = timeout_ms,
                                .max_bytes = 1024 * 1024,
                                .accept = "Accept: application/json"};
    struct core_fetch_result r;
    *out = NULL;
    if (core_fetch(url, &o, &r) != 0) {
        snprintf(raw_why, whylen, "%s: %s", url, r.error);
        return AUTH_FETCH_TRANSPORT_ERROR;
    }
    enum auth_fetch_result res = AUTH_FETCH_OK;
    if (r.status != 200) {
        snprintf(raw_why, whylen, "%s: HTTP %ld", url, r.status);
        res = AUTH_FETCH_HTTP_ERROR;
    } else {
        json_error_t je;
        *out = json_loadb(r.body ? r.body : "", r.len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(*out)) {
            snprintf(raw_why, whylen, "%s: not a JSON object (%s)", url, je.text);
            json_decref(*out);
            *out = NULL;
            res = AUTH_FETCH_INVALID;
        }
    }
    core_fetch_result_free(&r);
    return res;
}

/* The issuer of a metadata document, with a {tenantid} template filled in. */
static void auth_issuer_of(json_t *meta, const char *tid, char *out, size_t len)
{
    const char *iss = json_string_value(json_object_get(meta, "issuer"));
    out[0] = '\0';
    if (!iss)
        return;
    const char *t = strstr(iss, "{tenantid}");
    if (t)
        snprintf(out, len, "%.*s%s%s", (int)(t - iss), iss, tid, t + strlen("{tenantid}"));
    else
        snprintf(out, len, "%s", iss);
}

/* Fetches one tenant's metadata and keys (no lock held). */
static enum auth_fetch_result auth_entra_fetch_tenant(const char *authority, const char *tid,
                                                      uint64_t timeout_ms, struct auth_jwks **set,
                                                      json_t **jwks_json, char *v1, char *v2,
                                                      char *why, size_t whylen)
{
    char url[600];
    json_t *meta = NULL, *keys = NULL;
    *set = NULL;
    *jwks_json = NULL;
    snprintf(url, sizeof(url), "%s/%s/v2.0/.well-known/openid-configuration", authority, tid);
    enum auth_fetch_result res = auth_fetch_json(url, timeout_ms, &meta, why, whylen);
    if (res != AUTH_FETCH_OK)
        return res;
    const char *jwks_uri = json_string_value(json_object_get(meta, "jwks_uri"));
    if (!jwks_uri || (strncmp(jwks_uri, "https://", 8) != 0 && strncmp(jwks_uri, "http://", 7))) {
        snprintf(why, whylen, "%.300s names no http(s) jwks_uri", url);
        json_decref(meta);
        return AUTH_FETCH_INVALID;
    }
    auth_issuer_of(meta, tid, v2, AUTH_ISSUER_MAX);
    char juri[600];
    snprintf(juri, sizeof(juri), "%s", jwks_uri);
    json_decref(meta);
    res = auth_fetch_json(juri, timeout_ms, &keys, why, whylen);
    if (res != AUTH_FETCH_OK)
        return res;
    char *text = json_dumps(keys, JSON_COMPACT);
    char err[200];
    *set = text ? auth_jwks_parse(text, strlen(text), err, sizeof(err)) : NULL;
    free(text);
    if (!*set) {
        snprintf(why, whylen, "%.200s: %.190s", juri, err);
        json_decref(keys);
        return AUTH_FETCH_INVALID;
    }
    *jwks_json = keys;
    /* v1 tokens carry the v1 metadata's issuer (sts.windows.net in the public cloud); if that
     * document cannot be had, the documented issuer stands in. */
    snprintf(url, sizeof(url), "%s/%s/.well-known/openid-configuration", authority, tid);
    char why1[300];
    if (auth_fetch_json(url, timeout_ms, &meta, why1, sizeof(why1)) == AUTH_FETCH_OK) {
        auth_issuer_of(meta, tid, v1, AUTH_ISSUER_MAX);
        json_decref(meta);
    } else {
        v1[0] = '\0';
        LOG_WARN("Entra v1 metadata not available (%s); v1 tokens are checked against the "
                 "documented issuer",
                 why1);
    }
    return AUTH_FETCH_OK;
}

static bool auth_jwks_same(const struct auth_jwks *a, const struct auth_jwks *b)
{
    if (!a || !b || a->nkeys != b->nkeys)
        return false;
    for (unsigned i = 0; i < a->nkeys; i++)
        if (strcmp(a->keys[i].kid, b->keys[i].kid) != 0 ||
            EVP_PKEY_eq(a->keys[i].key, b->keys[i].key) != 1)
            return false;
    return true;
}

bool auth_entra_source_refresh(struct auth_entra_source *s, int64_t now,
                               const volatile bool *stop)
{
    bool changed = false;
    for (size_t i = 0; !(stop && *stop); i++) {
        pthread_mutex_lock(&s->lock);
        if (i >= s->n) {
            s->force_pending = false;
            pthread_mutex_unlock(&s->lock);
            break;
        }
        bool due = s->t[i].next_fetch <= now;
        char tid[40], authority[256];
        snprintf(tid, sizeof(tid), "%s", s->t[i].tenant);
        snprintf(authority, sizeof(authority), "%s", s->authority);
        uint64_t timeout = s->policy.timeout_ms;
        pthread_mutex_unlock(&s->lock);
        if (!due)
            continue;

        struct auth_jwks *set;
        json_t *jwks_json;
        char v1[AUTH_ISSUER_MAX] = "", v2[AUTH_ISSUER_MAX] = "", why[400] = "";
        enum auth_fetch_result res = auth_entra_fetch_tenant(authority, tid, timeout, &set,
                                                             &jwks_json, v1, v2, why, sizeof(why));
        pthread_mutex_lock(&s->lock);
        /* the tenant list may have been replaced while fetching: find it again */
        struct auth_entra_tenant_state *t = NULL;
        for (size_t j = 0; j < s->n && !t; j++)
            if (strcmp(s->t[j].tenant, tid) == 0)
                t = &s->t[j];
        if (t) {
            t->last_result = res;
            t->results[res]++;
            if (res == AUTH_FETCH_OK) {
                if (!auth_jwks_same(t->jwks, set) || strcmp(t->v1_issuer, v1) != 0 ||
                    strcmp(t->v2_issuer, v2) != 0)
                    changed = true;
                auth_jwks_free(t->jwks);
                t->jwks = set;
                set = NULL;
                snprintf(t->v1_issuer, sizeof(t->v1_issuer), "%s", v1);
                snprintf(t->v2_issuer, sizeof(t->v2_issuer), "%s", v2);
                t->fetched_at = now;
                t->next_fetch = now + (int64_t)s->policy.refresh;
                auth_entra_save(s, t, jwks_json);
            } else {
                /* keep the last good keys; try again soon */
                int64_t retry = (int64_t)s->policy.refresh < 60 ? (int64_t)s->policy.refresh : 60;
                t->next_fetch = now + retry;
            }
        }
        pthread_mutex_unlock(&s->lock);
        auth_jwks_free(set);
        json_decref(jwks_json);
        if (res == AUTH_FETCH_OK)
            LOG_VERBOSE("Entra keys for tenant %s fetched", tid);
        else
            LOG_WARN("Entra keys for tenant %s not refreshed: %s: %s", tid,
                     auth_fetch_result_name(res), why);
    }
    return changed;
}

struct auth_entra_keys *auth_entra_source_keys(struct auth_entra_source *s)
{
    struct auth_entra_keys *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->jwks = calloc(1, sizeof(*k->jwks));
    if (!k->jwks) {
        free(k);
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n && k->nissuers < AUTH_ENTRA_TENANTS_MAX; i++) {
        struct auth_entra_tenant_state *t = &s->t[i];
        struct auth_entra_issuer *is = &k->issuers[k->nissuers++];
        snprintf(is->tenant, sizeof(is->tenant), "%s", t->tenant);
        snprintf(is->v1, sizeof(is->v1), "%s", t->v1_issuer);
        snprintf(is->v2, sizeof(is->v2), "%s", t->v2_issuer);
        for (unsigned j = 0; t->jwks && j < t->jwks->nkeys; j++) {
            if (k->jwks->nkeys == AUTH_JWKS_MAX_KEYS ||
                auth_jwks_find(k->jwks, t->jwks->keys[j].kid))
                continue;
            struct auth_jwk *dst = &k->jwks->keys[k->jwks->nkeys++];
            *dst = t->jwks->keys[j];
            EVP_PKEY_up_ref(dst->key);
        }
    }
    k->forced_at = s->forced_at;
    pthread_mutex_unlock(&s->lock);
    return k;
}

void auth_entra_keys_free(struct auth_entra_keys *k)
{
    if (!k)
        return;
    auth_jwks_free(k->jwks);
    free(k);
}

char *auth_entra_source_metrics(struct auth_entra_source *s, int64_t now)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    pthread_mutex_lock(&s->lock);
    unsigned keys = 0;
    for (size_t i = 0; i < s->n; i++)
        keys += s->t[i].jwks ? s->t[i].jwks->nkeys : 0;
    fprintf(f, "# HELP cmg_entra_keys Entra ID signing keys held, all tenants.\n"
               "# TYPE cmg_entra_keys gauge\ncmg_entra_keys %u\n",
            keys);
    fputs("# HELP cmg_entra_keys_age_seconds Seconds since the tenant's keys were last fetched "
          "successfully.\n# TYPE cmg_entra_keys_age_seconds gauge\n",
          f);
    for (size_t i = 0; i < s->n; i++)
        if (s->t[i].jwks)
            fprintf(f, "cmg_entra_keys_age_seconds{tenant=\"%s\"} %lld\n", s->t[i].tenant,
                    (long long)(now - s->t[i].fetched_at));
    fputs("# HELP cmg_entra_key_fetches_total Fetches of a tenant's metadata and keys, by "
          "result.\n# TYPE cmg_entra_key_fetches_total counter\n",
          f);
    for (size_t i = 0; i < s->n; i++)
        for (int r = AUTH_FETCH_OK; r < AUTH_FETCH_RESULT_N; r++)
            fprintf(f, "cmg_entra_key_fetches_total{tenant=\"%s\",result=\"%s\"} %llu\n",
                    s->t[i].tenant, auth_fetch_result_name((enum auth_fetch_result)r),
                    (unsigned long long)s->t[i].results[r]);
    pthread_mutex_unlock(&s->lock);
    fclose(f);
    return buf;
}
