/* What the gateway answers itself, and the authentication every role path passes first. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "auth.h"
#include "conn.h"

bool gw_router_method_allowed(enum httpreq_method m)
{
    switch (m) {
    case HTTPREQ_M_GET:
    case HTTPREQ_M_HEAD:
    case HTTPREQ_M_POST:
    case HTTPREQ_M_PUT:
    case HTTPREQ_M_CCM_POST:
    case HTTPREQ_M_BITS_POST:
    case HTTPREQ_M_PROPFIND:
        return true;
    default:
        return false;
    }
}

/* Escapes &, <, >, " and ' for XML text. Returns bytes written (truncates to fit). */
size_t gw_xml_escape(char *out, size_t len, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < len; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        }
        if (rep) {
            size_t rl = strlen(rep);
            memcpy(out + o, rep, rl);
            o += rl;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return o;
}

static void gw_service_metadata(struct gw_conn *c)
{
    char name[600];
    gw_xml_escape(name, sizeof(name), c->snap->service_name);
    char body[1024];
    int n = snprintf(body, sizeof(body),
                     "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n"
                     "<ServiceMetadata>"
                     "<ServiceName>%s</ServiceName>"
                     "<Version>%s</Version>"
                     "<InstanceId>%llu</InstanceId>"
                     "<InstanceName>ProxyService_IN_%llu</InstanceName>"
                     "</ServiceMetadata>\r\n",
                     name, CMG_VERSION, (unsigned long long)c->snap->cfg.instance_id,
                     (unsigned long long)c->snap->cfg.instance_id);
    gw_conn_respond(c, 200, "OK", "text/xml; charset=utf-8", body, (size_t)n,
                    "Cache-Control: no-store\r\n");
}

static void gw_plain(struct gw_conn *c, int status, const char *reason, const char *extra)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    gw_conn_respond(c, status, reason, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

static void gw_log_identity(struct gw_conn *c, const struct auth_route *route,
                            const struct auth_identity *id)
{
    if (!log_enabled(LOG_LEVEL_VERBOSE))
        return;
    char h[1200];
    size_t n = auth_identity_headers(id, h, sizeof(h));
    for (size_t i = 0; i < n; i++)
        if (h[i] == '\r' || h[i] == '\n')
            h[i] = h[i] == '\r' ? ';' : ' ';
    LOG_VERBOSE("c%u.%llu authenticated for role id %llu: %s", c->w->id, (unsigned long long)c->id,
                (unsigned long long)route->role_id, h);
}

/* CRL URLs the connection's certificate chain needs (only when that chain verifies). */
static size_t gw_cert_crl_urls(struct gw_conn *c, char (*urls)[TLS_URL_MAX], size_t max)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer || !c->w->snap->client_trust)
        return 0;
    return tls_client_trust_crl_urls(c->w->snap->client_trust, peer, NULL, urls, max);
}

bool gw_router_wait_over(struct gw_conn *c)
{
    const struct gw_dyn *d = c->w->dyn;
    if (c->wait_kind == GW_WAIT_UPSTREAM || c->wait_kind == GW_WAIT_MOVE ||
        c->wait_kind == GW_WAIT_CONTENT || c->wait_kind == GW_WAIT_STREAM)
        return false; /* the answer comes from the tunnel (or another worker), or the deadline */
    if (c->wait_kind == GW_WAIT_KEYS)
        return d && d->entra && d->entra->forced_at != c->wait_mark;
    char urls[16][TLS_URL_MAX];
    size_t n = gw_cert_crl_urls(c, urls, 16);
    for (size_t i = 0; i < n; i++)
        if (!gw_dyn_attempted(d, urls[i]))
            return false;
    return true;
}

/* CCM_Proxy_MutualAuth/<role id>/...: the client certificate decides, before anything is
 * forwarded. Reason phrases are the product's: a missing certificate is
 * CMGConnector_Clientcertificaterequired, an unacceptable one CMGConnector_Forbidden. */
static void gw_mutual_auth(struct gw_conn *c, const struct auth_route *route)
{
    /* the worker's newest trust and CRLs: a reload or a new CRL counts for connections
     * already open too */
    const struct gw_snapshot *snap = c->w->snap;
    STACK_OF(X509_CRL) *crls = c->w->dyn ? c->w->dyn->crls : NULL;
    enum tls_client_verdict v = c->cert_verdict;
    const char *detail = NULL;
    if (v == TLS_CLIENT_REVOCATION_UNKNOWN || c->waited || c->verdict_gen != c->w->auth_gen) {
        v = tls_client_verdict_of(c->ssl, snap->client_trust, crls, true, &detail);
        c->cert_verdict = (uint8_t)v;
        c->verdict_gen = c->w->auth_gen;
    }
    bool revocation = snap->client_trust &&
                      tls_client_trust_checks_revocation(snap->client_trust) &&
                      snap->cfg.auth.crl_fetch;
    if ((v == TLS_CLIENT_REVOCATION_UNKNOWN || (v == TLS_CLIENT_OK && !c->crls_known)) &&
        revocation && !c->waited && snap->cfg.auth.auth_wait > 0) {
        /* A CRL (or the delta CRL that completes one) never tried yet: fetch it on the
         * background thread and let the request wait for it. */
        char urls[16][TLS_URL_MAX];
        size_t n = gw_cert_crl_urls(c, urls, 16), fresh = 0;
        for (size_t i = 0; i < n; i++)
            fresh += !gw_dyn_attempted(c->w->dyn, urls[i]);
        if (fresh) {
            gw_refresher_want_crls(c->w->server, urls, n);
            gw_conn_park(c, GW_WAIT_CRL);
            return;
        }
        c->crls_known = true;
    }
    GW_INC(c->w->metrics.client_cert[v < TLS_CLIENT_VERDICT_N ? v : TLS_CLIENT_INVALID]);
    if (v == TLS_CLIENT_OK) {
        struct auth_identity id;
        auth_identity_from_cert(&id, SSL_get0_peer_certificate(c->ssl));
        gw_log_identity(c, route, &id);
        gw_proxy_start(c, route->role_id, route->rest, route->rest_len, &id);
        return;
    }
    if (!detail)
        tls_client_verdict_of(c->ssl, snap->client_trust, crls, false, &detail);
    LOG_WARN("c%u.%llu client certificate refused for role id %llu: %s%s%s", c->w->id,
             (unsigned long long)c->id, (unsigned long long)route->role_id,
             tls_client_verdict_name(v), detail && *detail ? ": " : "", detail ? detail : "");
    if (v == TLS_CLIENT_NONE)
        gw_plain(c, 403, "CMGConnector_Clientcertificaterequired", NULL);
    else
        gw_plain(c, 403, "CMGConnector_Forbidden", NULL);
}

static void gw_token_refused(struct gw_conn *c, const struct auth_route *route,
                             enum auth_token_error e, const char *why)
{
    GW_INC(c->w->metrics.token_fail[e < AUTH_TOKEN_ERROR_N ? e : AUTH_TOKEN_MALFORMED]);
    LOG_WARN("c%u.%llu bearer token refused for role id %llu: %s%s%s", c->w->id,
             (unsigned long long)c->id, (unsigned long long)route->role_id,
             auth_token_error_name(e), why ? ": " : "", why ? why : "");
    gw_plain(c, 401, "CMGService_Invalid_Token",
             e == AUTH_TOKEN_MISSING ? "WWW-Authenticate: Bearer\r\n"
                                     : "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
}

/* An Entra ID access token, against the onboarded tenants' keys. Returns AUTH_TOKEN_OK with
 * the identity filled, an error, or AUTH_TOKEN_ERROR_N when the request was parked to wait
 * for a key refresh. */
static enum auth_token_error gw_entra_auth(struct gw_conn *c, const char *tok, size_t len,
                                           int64_t now, struct auth_identity *out, int64_t *expires)
{
    const struct gw_snapshot *snap = c->snap;
    const struct auth_entra_keys *k = c->w->dyn ? c->w->dyn->entra : NULL;
    struct auth_entra_policy p = {
        .cloud =
            snap->cfg.auth.entra_cloud == AUTH_ENTRA_USGOV ? AUTH_ENTRA_USGOV : AUTH_ENTRA_PUBLIC,
        .tenants = snap->entra_tenant_ids,
        .ntenants = snap->nentra_tenants,
        .audiences = snap->entra_audiences,
        .naudiences = snap->nentra_audiences,
        .skew = AUTH_CLOCK_SKEW,
        .now = now,
        .issuers = k ? k->issuers : NULL,
        .nissuers = k ? k->nissuers : 0,
    };
    struct auth_entra_identity id;
    enum auth_token_error e = auth_entra_verify(tok, len, &p, k ? k->jwks : NULL, &id);
    if (e == AUTH_TOKEN_UNKNOWN_KID && !c->waited && snap->cfg.auth.auth_wait > 0) {
        /* Keys roll over: fetch them again (at most once per entra_unknown_kid_interval) and
         * let this request wait for the answer. */
        int64_t forced = k ? k->forced_at : 0;
        int64_t every = (int64_t)(snap->cfg.auth.entra_unknown_kid_interval / 1000);
        if (forced == 0 || now - forced >= every) {
            c->wait_mark = forced;
            gw_refresher_force_keys(c->w->server);
            gw_conn_park(c, GW_WAIT_KEYS);
            return AUTH_TOKEN_ERROR_N;
        }
    }
    if (e != AUTH_TOKEN_OK)
        return e;
    *expires = id.expires;
    memset(out, 0, sizeof(*out));
    out->method = AUTH_METHOD_ENTRA;
    snprintf(out->token_subject, sizeof(out->token_subject), "%s", id.object_id);
    snprintf(out->device_id, sizeof(out->device_id), "%s", id.device_id);
    snprintf(out->tenant, sizeof(out->tenant), "%s", id.tenant);
    snprintf(out->app_id, sizeof(out->app_id), "%s", id.app_id);
    return AUTH_TOKEN_OK;
}

static uint64_t gw_token_hash(const char *tok, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)tok[i]) * 1099511628211ULL;
    return h;
}

static struct gw_token_entry *gw_token_slot(struct gw_worker *w, uint64_t hash)
{
    if (!w->tokens)
        w->tokens = calloc(GW_TOKEN_CACHE, sizeof(*w->tokens));
    return w->tokens ? &w->tokens[hash % GW_TOKEN_CACHE] : NULL;
}

/* The kept verdict for this token, if it still holds. */
static const struct gw_token_entry *gw_token_lookup(struct gw_conn *c, const char *tok, size_t len,
                                                    uint64_t hash, int64_t now)
{
    struct gw_token_entry *e = gw_token_slot(c->w, hash);
    if (!e || !e->token || e->hash != hash || e->len != len || e->auth_gen != c->w->auth_gen ||
        e->snap_gen != c->w->snap->generation || now >= e->until || memcmp(e->token, tok, len) != 0)
        return NULL;
    return e;
}

static void gw_token_keep(struct gw_conn *c, const char *tok, size_t len, uint64_t hash,
                          int64_t expires, int64_t now, bool entra, const struct auth_identity *id)
{
    struct gw_token_entry *e = gw_token_slot(c->w, hash);
    if (!e)
        return;
    char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, tok, len);
    free(e->token);
    e->token = copy;
    e->len = (uint32_t)len;
    e->hash = hash;
    e->auth_gen = c->w->auth_gen;
    e->snap_gen = c->w->snap->generation;
    e->until = expires < now + 600 ? expires : now + 600;
    e->entra = entra;
    e->id = *id;
}

void gw_token_cache_free(struct gw_worker *w)
{
    for (size_t i = 0; w->tokens && i < GW_TOKEN_CACHE; i++)
        free(w->tokens[i].token);
    free(w->tokens);
    w->tokens = NULL;
}

/* CCM_Proxy_ServerAuth/<role id>/...: a bearer token decides; an invalid one never goes
 * further. Site-issued and bulk tokens are recognised by their signer's thumbprint, Entra ID
 * tokens by a key of an onboarded tenant. */
static void gw_bearer_auth(struct gw_conn *c, const struct auth_route *route)
{
    size_t len;
    const char *h = httpreq_header(&c->req, "Authorization", &len);
    if (!h || len < 8 || strncasecmp(h, "Bearer ", 7) != 0) {
        gw_token_refused(c, route, AUTH_TOKEN_MISSING, NULL);
        return;
    }
    const char *tok = h + 7;
    len -= 7;
    while (len && *tok == ' ')
        tok++, len--;
    while (len && tok[len - 1] == ' ')
        len--;
    const struct gw_snapshot *snap = c->snap;
    int64_t now = (int64_t)(core_wall_ms() / 1000);
    uint64_t hash = gw_token_hash(tok, len);
    const struct gw_token_entry *kept =
        c->snap == c->w->snap ? gw_token_lookup(c, tok, len, hash, now) : NULL;
    if (kept) {
        GW_INC(c->w->metrics.token_ok[kept->entra ? 2 : 0]);
        struct auth_identity id = kept->id;
        gw_log_identity(c, route, &id);
        gw_proxy_start(c, route->role_id, route->rest, route->rest_len, &id);
        return;
    }
    struct auth_site_policy policy = {
        .hierarchy_id = snap->cfg.auth.hierarchy_id,
        .blocked = (const char *const *)snap->bulk_blocked,
        .nblocked = snap->nbulk_blocked,
        .bulk_allowed = auth_bulk_token_allowed(route->rest, route->rest_len),
        .skew = AUTH_CLOCK_SKEW,
        .now = now,
    };
    struct auth_site_identity sid;
    struct auth_identity id;
    enum auth_token_error e = auth_site_verify(tok, len, &policy, &snap->site_keys, &sid);
    if (e == AUTH_TOKEN_OK) {
        GW_INC(c->w->metrics.token_ok[sid.kind == AUTH_SITE_BULK ? 1 : 0]);
        memset(&id, 0, sizeof(id));
        id.method = sid.kind == AUTH_SITE_BULK ? AUTH_METHOD_BULK_TOKEN : AUTH_METHOD_SITE_TOKEN;
        snprintf(id.token_subject, sizeof(id.token_subject), "%s", sid.unique_id);
        snprintf(id.token_type, sizeof(id.token_type), "%s", sid.type);
        if (sid.kind == AUTH_SITE_DEVICE) {
            snprintf(id.device_id, sizeof(id.device_id), "%s", sid.unique_id);
            if (c->snap == c->w->snap)
                gw_token_keep(c, tok, len, hash, sid.expires, now, false, &id);
        }
        gw_log_identity(c, route, &id);
        gw_proxy_start(c, route->role_id, route->rest, route->rest_len, &id);
        return;
    }
    if (e == AUTH_TOKEN_UNKNOWN_KID && snap->nentra_tenants) {
        int64_t expires = 0;
        e = gw_entra_auth(c, tok, len, now, &id, &expires);
        if (e == AUTH_TOKEN_ERROR_N)
            return; /* parked */
        if (e == AUTH_TOKEN_OK) {
            GW_INC(c->w->metrics.token_ok[2]);
            if (c->snap == c->w->snap)
                gw_token_keep(c, tok, len, hash, expires, now, true, &id);
            gw_log_identity(c, route, &id);
            gw_proxy_start(c, route->role_id, route->rest, route->rest_len, &id);
            return;
        }
    }
    gw_token_refused(c, route, e,
                     e == AUTH_TOKEN_UNKNOWN_KID
                         ? snap->nentra_tenants
                               ? "signed by neither a site token-signing certificate nor a key "
                                 "of an onboarded Entra ID tenant"
                               : "not signed by a configured site token-signing certificate "
                                 "(no Entra ID tenant is onboarded)"
                         : NULL);
}

/* The value of query parameter `name` (case-insensitive name) into out. */
static bool gw_query_param(const char *q, size_t qlen, const char *name, char *out, size_t len)
{
    size_t nl = strlen(name);
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) > nl && q[nl] == '=' && strncasecmp(q, name, nl) == 0) {
            size_t vl = (size_t)(stop - q) - nl - 1;
            if (vl >= len)
                return false;
            memcpy(out, q + nl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        q = amp ? amp + 1 : end;
    }
    return false;
}

/* /CCM_Proxy_ServerAuth/AADAuthInfo?TenantID=<guid>: what a client needs to ask Entra ID for
 * a token to this gateway, for onboarded tenants only. Anonymous. */
static void gw_aad_auth_info(struct gw_conn *c, const char *query, size_t qlen)
{
    if (c->req.method != HTTPREQ_M_GET && c->req.method != HTTPREQ_M_HEAD) {
        gw_plain(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
        return;
    }
    char tid[64];
    if (!query || !gw_query_param(query, qlen, "TenantID", tid, sizeof(tid)) ||
        !auth_is_guid(tid, strlen(tid))) {
        gw_plain(c, 400, "Bad Request", NULL);
        return;
    }
    const struct gw_snapshot *snap = c->snap;
    const struct auth_entra_tenant *t = NULL;
    for (size_t i = 0; i < snap->nentra_tenants && !t; i++)
        if (strcasecmp(snap->entra_tenants[i].tenant, tid) == 0)
            t = &snap->entra_tenants[i];
    if (!t || !t->client_app_id[0]) {
        LOG_INFO("c%u.%llu AADAuthInfo for tenant %s refused: not onboarded", c->w->id,
                 (unsigned long long)c->id, tid);
        gw_plain(c, 404, "Not Found", NULL);
        return;
    }
    const char *authority =
        auth_entra_authority(snap->cfg.auth.entra_cloud, snap->cfg.auth.entra_authority);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s+++}", "TenantId", t->tenant, "ClientAppId",
                          t->client_app_id, "ResourceUri",
                          snap->cfg.auth.entra_app_id_uri ? snap->cfg.auth.entra_app_id_uri : "",
                          "Authority", authority, "/", t->tenant, "");
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) {
        gw_plain(c, 500, "Internal Server Error", NULL);
        return;
    }
    gw_conn_respond(c, 200, "OK", "application/json; charset=utf-8", body, strlen(body),
                    "Cache-Control: no-store\r\n");
    free(body);
}

void gw_router_head(struct gw_conn *c)
{
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *q = memchr(url, '?', ulen);
    size_t plen = q ? (size_t)(q - url) : ulen;
    if (plen == 0 || url[0] != '/' || !gw_router_method_allowed(c->req.method))
        return;
    if (gw_content_route(c, url, plen, q ? q + 1 : NULL, q ? ulen - plen - 1 : 0)) {
        if (c->state != GW_CS_WAIT && !c->content)
            c->answered = true;
        return;
    }
    struct auth_route route;
    if (auth_route_classify(url, plen, &route) != AUTH_ROUTE_ROLE)
        return; /* answered once the whole request is read */
    /* Identity headers are the gateway's alone: whatever a client sent of them goes before
     * anything else looks at the request. */
    if (!c->waited) {
        unsigned n = httpreq_remove_headers(&c->req, auth_is_identity_header);
        if (n)
            LOG_WARN("c%u.%llu removed %u %s* header(s) the client sent", c->w->id,
                     (unsigned long long)c->id, n, AUTH_IDENTITY_PREFIX);
    }
    if (route.scheme == AUTH_SCHEME_MUTUAL)
        gw_mutual_auth(c, &route);
    else
        gw_bearer_auth(c, &route);
    if (c->state != GW_CS_WAIT && !c->proxy)
        c->answered = true; /* refused: the body, if any, is read and dropped */
}

void gw_router_handle(struct gw_conn *c)
{
    static const char allow[] = "Allow: GET, HEAD, POST, PUT, CCM_POST, BITS_POST, PROPFIND\r\n";
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *q = memchr(url, '?', ulen);
    size_t plen = q ? (size_t)(q - url) : ulen;
    if (plen == 0 || url[0] != '/') {
        /* absolute-form and asterisk-form targets are for proxies and OPTIONS, not for us */
        gw_plain(c, 400, "Bad Request", NULL);
        return;
    }
    if (!gw_router_method_allowed(c->req.method)) {
        gw_plain(c, 405, "Method Not Allowed", allow);
        return;
    }
    struct auth_route route;
    switch (auth_route_classify(url, plen, &route)) {
    case AUTH_ROUTE_SERVICE_METADATA:
        if (c->req.method == HTTPREQ_M_GET || c->req.method == HTTPREQ_M_HEAD)
            gw_service_metadata(c);
        else
            gw_plain(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
        return;
    case AUTH_ROUTE_ROLE:
        /* decided at the head (gw_router_head); only a method outside the list comes here */
        gw_plain(c, 405, "Method Not Allowed", allow);
        return;
    case AUTH_ROUTE_AAD_AUTH_INFO:
        gw_aad_auth_info(c, q ? q + 1 : NULL, q ? ulen - plen - 1 : 0);
        return;
    default:
        /* the content-location service answers once content is served */
        gw_plain(c, 404, "Not Found", NULL);
        return;
    }
}
