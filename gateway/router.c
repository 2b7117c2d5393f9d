/* What the gateway answers itself. Role paths answer 404 until tunnel routing exists. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
static size_t gw_xml_escape(char *out, size_t len, const char *s)
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

/* An authenticated request for a role id that no connection point serves (yet): the client
 * should come back, so 503 with Retry-After rather than 404. */
static void gw_no_connection_point(struct gw_conn *c, const struct auth_route *route)
{
    char body[160];
    int n = snprintf(body, sizeof(body),
                     "503 no connection point serves role id %llu on this instance\n",
                     (unsigned long long)route->role_id);
    gw_conn_respond(c, 503, "Service Unavailable", "text/plain; charset=utf-8", body, (size_t)n,
                    "Retry-After: 30\r\n");
}

/* CCM_Proxy_MutualAuth/<role id>/...: the client certificate decides, before anything is
 * forwarded. Reason phrases are the product's: a missing certificate is
 * CMGConnector_Clientcertificaterequired, an unacceptable one CMGConnector_Forbidden. */
static void gw_mutual_auth(struct gw_conn *c, const struct auth_route *route)
{
    enum tls_client_verdict v = c->cert_verdict;
    GW_INC(c->w->metrics.client_cert[v < TLS_CLIENT_VERDICT_N ? v : TLS_CLIENT_INVALID]);
    if (v == TLS_CLIENT_OK) {
        gw_no_connection_point(c, route);
        return;
    }
    const char *detail = NULL;
    tls_client_verdict_of(c->ssl, c->snap->client_trust, &detail);
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

/* CCM_Proxy_ServerAuth/<role id>/...: a bearer token decides; an invalid one never goes
 * further. Site-issued and bulk tokens are recognised by their signer's thumbprint. */
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
    struct auth_site_policy policy = {
        .hierarchy_id = snap->cfg.auth.hierarchy_id,
        .blocked = (const char *const *)snap->bulk_blocked,
        .nblocked = snap->nbulk_blocked,
        .bulk_allowed = auth_bulk_token_allowed(route->rest, route->rest_len),
        .skew = AUTH_CLOCK_SKEW,
        .now = (int64_t)(core_wall_ms() / 1000),
    };
    struct auth_site_identity id;
    enum auth_token_error e = auth_site_verify(tok, len, &policy, &snap->site_keys, &id);
    if (e != AUTH_TOKEN_OK) {
        /* Entra ID tokens would need the tenant's keys, which this release does not fetch. */
        gw_token_refused(c, route, e,
                         e == AUTH_TOKEN_UNKNOWN_KID
                             ? "not signed by a configured site token-signing certificate, and "
                               "no Entra ID keys are available"
                             : NULL);
        return;
    }
    GW_INC(c->w->metrics.token_ok[id.kind == AUTH_SITE_BULK ? 1 : 0]);
    gw_no_connection_point(c, route);
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
        if (route.scheme == AUTH_SCHEME_MUTUAL) {
            gw_mutual_auth(c, &route);
            return;
        }
        gw_bearer_auth(c, &route);
        return;
    default:
        /* AADAuthInfo and content answer once their issues land. */
        gw_plain(c, 404, "Not Found", NULL);
        return;
    }
}
