/* One authenticated client request carried on a tunnel stream: the head rewritten for the
 * management point, the body streamed as it arrives, the answer streamed back as fast as the
 * client takes it (the stream's window opens only when the client's output drains). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "conn.h"

#define GW_P_BODY_HIGH (256 * 1024) /* request body held for the tunnel before reading stops */
#define GW_P_BODY_LOW (64 * 1024)
#define GW_P_OUT_HIGH                                                                              \
    (256 * 1024) /* response bytes waiting for the client before the                               \
                    stream's window stays shut */
#define GW_P_MAX_ATTEMPTS 3

struct gw_proxy {
    struct gw_conn *c;   /* the client; NULL once it went away */
    struct gw_tunnel *t; /* the tunnel carrying the stream; NULL between attempts */
    int32_t stream_id;
    uint64_t role_id;
    char *path; /* internal path with query */
    size_t path_len;
    struct auth_identity id;
    struct evbuffer *body; /* request body not yet taken by the tunnel */
    uint64_t body_in;      /* request body bytes received from the client */
    bool has_body;
    bool body_end;
    bool body_sent; /* some body went on a stream: the request cannot be sent again */
    bool head_seen;
    bool complete;
    bool failed;
    size_t unconsumed; /* response bytes given to the client and not yet acknowledged */
    unsigned attempts;
};

static bool gw_proxy_idempotent(enum httpreq_method m)
{
    return m == HTTPREQ_M_GET || m == HTTPREQ_M_HEAD || m == HTTPREQ_M_PUT ||
           m == HTTPREQ_M_PROPFIND;
}

/* Headers that belong to one HTTP/1.1 hop, plus those the request line or the gateway owns. */
static bool gw_proxy_drop_header(const char *name, size_t len, const char *conn_tokens,
                                 size_t conn_len)
{
    static const char *const drop[] = {
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
        "host",       "expect",     "http2-settings"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (strlen(drop[i]) == len && strncasecmp(drop[i], name, len) == 0)
            return true;
    if (auth_is_identity_header(name, len) ||
        (len == 11 && strncasecmp(name, "cmg-role-id", 11) == 0))
        return true;
    /* and what the Connection header names */
    const char *p = conn_tokens, *end = conn_tokens + conn_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',' || *p == '\t'))
            p++;
        const char *q = p;
        while (q < end && *q != ',' && *q != ' ' && *q != '\t')
            q++;
        if ((size_t)(q - p) == len && strncasecmp(p, name, len) == 0)
            return true;
        p = q;
    }
    return false;
}

/* Builds the stream's header block and submits it on t. Returns the stream id or -1. */
static int gw_proxy_submit(struct gw_proxy *p, struct gw_tunnel *t)
{
    struct gw_conn *c = p->c;
    const struct httpreq *r = &c->req;
    size_t hlen = 0;
    const char *host = httpreq_header(r, "Host", &hlen);
    size_t clen = 0;
    const char *conn_tokens = httpreq_header(r, "Connection", &clen);
    char role[24], addr[80], host_buf[64] = "?";
    snprintf(role, sizeof(role), "%llu", (unsigned long long)p->role_id);
    int port = 0;
    if (c->peer.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &c->peer.sin.sin_addr, host_buf, sizeof(host_buf));
        port = ntohs(c->peer.sin.sin_port);
        snprintf(addr, sizeof(addr), "%s:%d", host_buf, port);
    } else {
        inet_ntop(AF_INET6, &c->peer.sin6.sin6_addr, host_buf, sizeof(host_buf));
        port = ntohs(c->peer.sin6.sin6_port);
        snprintf(addr, sizeof(addr), "[%s]:%d", host_buf, port);
    }
    char idh[1400];
    size_t idlen = auth_identity_headers(&p->id, idh, sizeof(idh));

    unsigned max = r->nheaders + 16;
    nghttp2_nv *nva = calloc(max, sizeof(*nva));
    /* lower-case copies of the names: HTTP/2 field names are lower case */
    size_t names_len = idlen;
    for (unsigned i = 0; i < r->nheaders; i++)
        names_len += r->headers[i].name_len;
    char *names = malloc(names_len + 1);
    if (!nva || !names) {
        free(nva);
        free(names);
        return -1;
    }
    size_t n = 0, no = 0;
#define GW_NV(nm, nl, v, vl)                                                                       \
    do {                                                                                           \
        nva[n].name = (uint8_t *)(nm);                                                             \
        nva[n].namelen = (nl);                                                                     \
        nva[n].value = (uint8_t *)(v);                                                             \
        nva[n].valuelen = (vl);                                                                    \
        nva[n].flags = NGHTTP2_NV_FLAG_NONE;                                                       \
        n++;                                                                                       \
    } while (0)
    const char *method = r->method_name ? r->method_name : "GET";
    GW_NV(":method", 7, method, strlen(method));
    GW_NV(":scheme", 7, "https", 5);
    GW_NV(":authority", 10, host ? host : "", host ? hlen : 0);
    GW_NV(":path", 5, p->path, p->path_len);
    GW_NV("cmg-role-id", 11, role, strlen(role));
    GW_NV("x-cmg-client-address", 20, addr, strlen(addr));
    /* the identity lines, split into fields */
    const char *line = idh, *end = idh + idlen;
    while (line < end && n + 1 < max) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        const char *colon = memchr(line, ':', (size_t)(end - line));
        if (!eol || !colon || colon > eol)
            break;
        size_t nl = (size_t)(colon - line);
        for (size_t k = 0; k < nl; k++)
            names[no + k] = (char)(line[k] >= 'A' && line[k] <= 'Z' ? line[k] + 32 : line[k]);
        GW_NV(names + no, nl, colon + 2, (size_t)(eol - colon - 2));
        no += nl;
        line = eol + 2;
    }
    for (unsigned i = 0; i < r->nheaders && n < max; i++) {
        const char *nm = r->head + r->headers[i].name_off;
        size_t nl = r->headers[i].name_len;
        if (gw_proxy_drop_header(nm, nl, conn_tokens ? conn_tokens : "", conn_tokens ? clen : 0))
            continue;
        for (size_t k = 0; k < nl; k++)
            names[no + k] = (char)(nm[k] >= 'A' && nm[k] <= 'Z' ? nm[k] + 32 : nm[k]);
        GW_NV(names + no, nl, r->head + r->headers[i].value_off, r->headers[i].value_len);
        no += nl;
    }
#undef GW_NV
    int id = gw_tunnel_submit(t, p, nva, n, p->has_body);
    free(nva);
    free(names);
    return id;
}

/* Sends (or re-sends) the request on a tunnel of this worker. Returns false when none can
 * take it. */
static bool gw_proxy_send(struct gw_proxy *p, const struct gw_tunnel * not )
{
    struct gw_conn *c = p->c;
    struct gw_tunnel *t = gw_tunnel_pick(c->w, p->role_id, not );
    if (!t)
        return false;
    int id = gw_proxy_submit(p, t);
    if (id <= 0) {
        LOG_WARN("c%u.%llu cannot open a stream on a tunnel", c->w->id, (unsigned long long)c->id);
        return false;
    }
    p->t = t;
    p->stream_id = id;
    p->attempts++;
    GW_INC(c->w->metrics.proxied);
    gw_tunnel_flush(t);
    return true;
}

static void gw_proxy_free(struct gw_proxy *p)
{
    if (p->body)
        evbuffer_free(p->body);
    free(p->path);
    free(p);
}

/* Answers the client on behalf of the tunnel (no answer came). */
static void gw_proxy_fail(struct gw_proxy *p, int status, const char *reason, const char *why)
{
    struct gw_conn *c = p->c;
    p->failed = true;
    p->complete = true;
    p->t = NULL;
    GW_INC(c->w->metrics.proxy_failed);
    LOG_WARN("c%u.%llu role id %llu: %d %s: %s", c->w->id, (unsigned long long)c->id,
             (unsigned long long)p->role_id, status, reason, why);
    char body[200];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    gw_conn_proxy_answer(c, status, reason, body, (size_t)n,
                         status == 503 ? "Retry-After: 30\r\n" : NULL);
}

void gw_proxy_start(struct gw_conn *c, uint64_t role_id, const char *path, size_t path_len,
                    const struct auth_identity *id)
{
    struct gw_proxy *p = calloc(1, sizeof(*p));
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *q = memchr(url, '?', ulen);
    size_t qlen = q ? ulen - (size_t)(q - url) : 0;
    if (p)
        p->path = malloc(path_len + qlen + 1);
    if (!p || !p->path || !(p->body = evbuffer_new())) {
        if (p)
            gw_proxy_free(p);
        c->answered = true;
        gw_conn_respond(c, 500, "Internal Server Error", "text/plain", "500\n", 4, NULL);
        return;
    }
    memcpy(p->path, path, path_len);
    if (qlen)
        memcpy(p->path + path_len, q, qlen);
    p->path_len = path_len + qlen;
    p->path[p->path_len] = '\0';
    p->c = c;
    p->role_id = role_id;
    p->id = *id;
    p->has_body = c->req.has_body;
    c->proxy = p;
    if (gw_proxy_send(p, NULL))
        return;
    c->proxy = NULL;
    /* no tunnel here serves it: a worker whose tunnels do takes the connection over */
    struct gw_worker *other = c->moved ? NULL : gw_worker_serving(c->w->server, role_id, c->w);
    if (other) {
        gw_proxy_free(p);
        gw_conn_move(c, other);
        return;
    }
    bool known = gw_role_known(c->w->server, role_id);
    if (known)
        GW_INC(c->w->metrics.no_tunnel);
    else
        GW_INC(c->w->metrics.unknown_role);
    char body[200];
    int n = known ? snprintf(body, sizeof(body),
                             "503 no connection point serves role id %llu on this instance "
                             "right now\n",
                             (unsigned long long)role_id)
                  : snprintf(body, sizeof(body), "404 no connection point serves role id %llu\n",
                             (unsigned long long)role_id);
    LOG_WARN("c%u.%llu role id %llu: %s", c->w->id, (unsigned long long)c->id,
             (unsigned long long)role_id,
             known ? "no live tunnel on this worker (503)" : "unknown role id (404)");
    gw_proxy_free(p);
    c->answered = true;
    if (known)
        gw_conn_respond(c, 503, "Service Unavailable", "text/plain; charset=utf-8", body, (size_t)n,
                        "Retry-After: 30\r\n");
    else
        gw_conn_respond(c, 404, "Not Found", "text/plain; charset=utf-8", body, (size_t)n, NULL);
}

void gw_proxy_body(struct gw_conn *c, const char *data, size_t len)
{
    struct gw_proxy *p = c->proxy;
    if (!p || p->complete)
        return; /* answered already: the rest of the body is dropped */
    evbuffer_add(p->body, data, len);
    p->body_in += len;
    if (p->t)
        gw_tunnel_resume_body(p->t, p->stream_id);
    if (evbuffer_get_length(p->body) > GW_P_BODY_HIGH)
        gw_conn_pause_input(c, true); /* the tunnel is slower than the client: stop reading */
}

void gw_proxy_body_end(struct gw_conn *c)
{
    struct gw_proxy *p = c->proxy;
    if (!p)
        return;
    p->body_end = true;
    if (p->t && !p->complete) {
        gw_tunnel_resume_body(p->t, p->stream_id);
        gw_tunnel_flush(p->t);
    }
}

ssize_t gw_proxy_read_body(struct gw_proxy *p, uint8_t *buf, size_t len, bool *eof)
{
    int n = evbuffer_remove(p->body, buf, len);
    if (n > 0)
        p->body_sent = true;
    *eof = p->body_end && evbuffer_get_length(p->body) == 0;
    if (p->c && evbuffer_get_length(p->body) < GW_P_BODY_LOW)
        gw_conn_pause_input(p->c, false);
    return n > 0 ? n : 0;
}

void gw_proxy_on_head(struct gw_proxy *p, int status, const char *reason, const char *headers,
                      size_t len, bool has_length, bool end_stream)
{
    struct gw_conn *c = p->c;
    if (!c)
        return;
    if (status < 200 || status > 599) {
        gw_tunnel_reset(p->t, p->stream_id);
        gw_proxy_fail(p, 502, "CMGConnector_BadGateway", "the connection point sent no status");
        return;
    }
    p->head_seen = true;
    gw_conn_proxy_head(c, status, reason, headers, len, has_length, end_stream);
}

void gw_proxy_on_data(struct gw_proxy *p, const uint8_t *data, size_t len)
{
    struct gw_conn *c = p->c;
    if (!c || !p->head_seen)
        return;
    gw_conn_proxy_data(c, (const char *)data, len);
    /* Acknowledge what the client has room for; the rest when its output drains. */
    if (gw_conn_out_pending(c) <= GW_P_OUT_HIGH)
        gw_tunnel_consume(p->t, p->stream_id, len);
    else
        p->unconsumed += len;
}

void gw_proxy_client_drained(struct gw_conn *c)
{
    struct gw_proxy *p = c->proxy;
    if (!p || !p->t || !p->unconsumed)
        return;
    gw_tunnel_consume(p->t, p->stream_id, p->unconsumed);
    p->unconsumed = 0;
    gw_tunnel_flush(p->t);
}

void gw_proxy_on_close(struct gw_proxy *p, uint32_t error_code, bool complete)
{
    struct gw_conn *c = p->c;
    struct gw_tunnel *was = p->t;
    p->t = NULL;
    if (!c) {
        gw_proxy_free(p); /* the client left earlier and the stream is done with it */
        return;
    }
    if (complete) {
        p->complete = true;
        gw_conn_proxy_end(c, true);
        return;
    }
    if (p->head_seen) {
        /* the answer broke off half way: the client must not take it for whole */
        p->complete = true;
        p->failed = true;
        GW_INC(c->w->metrics.proxy_failed);
        LOG_WARN("c%u.%llu role id %llu: the answer broke off (%s)", c->w->id,
                 (unsigned long long)c->id, (unsigned long long)p->role_id,
                 error_code == GW_TUNNEL_LOST ? "tunnel lost" : nghttp2_http2_strerror(error_code));
        gw_conn_proxy_end(c, false);
        return;
    }
    /* No answer yet. A request the connection point never processed (refused stream, or a
     * tunnel that died) goes again on another tunnel when repeating it is harmless. */
    bool unprocessed = error_code == NGHTTP2_REFUSED_STREAM;
    bool lost = error_code == GW_TUNNEL_LOST;
    if ((unprocessed || (lost && gw_proxy_idempotent(c->req.method) && !p->body_sent)) &&
        p->attempts < GW_P_MAX_ATTEMPTS) {
        if (!p->body_sent) {
            GW_INC(c->w->metrics.proxy_retries);
            LOG_INFO("c%u.%llu role id %llu: %s; sending again on another tunnel", c->w->id,
                     (unsigned long long)c->id, (unsigned long long)p->role_id,
                     lost ? "tunnel lost" : "refused by the connection point");
            if (gw_proxy_send(p, was))
                return;
        }
    }
    gw_proxy_fail(p, 502, "CMGConnector_BadGateway",
                  lost         ? "the tunnel went away before the answer"
                  : error_code ? nghttp2_http2_strerror(error_code)
                               : "the stream ended without an answer");
}

void gw_proxy_abort(struct gw_conn *c)
{
    struct gw_proxy *p = c->proxy;
    if (!p)
        return;
    c->proxy = NULL;
    p->c = NULL;
    if (p->t && !p->complete) {
        struct gw_tunnel *t = p->t;
        gw_tunnel_reset(t, p->stream_id); /* the tunnel forgets p */
        gw_tunnel_flush(t);
    }
    gw_proxy_free(p);
}

void gw_proxy_release(struct gw_conn *c)
{
    struct gw_proxy *p = c->proxy;
    if (!p)
        return;
    c->proxy = NULL;
    if (p->t && !p->complete) {
        /* finished early (answered before the body was all read): stop the stream */
        gw_tunnel_reset(p->t, p->stream_id);
        gw_tunnel_flush(p->t);
    }
    gw_proxy_free(p);
}

bool gw_proxy_done(const struct gw_conn *c)
{
    return !c->proxy || c->proxy->complete;
}

void gw_proxy_timeout(struct gw_conn *c)
{
    struct gw_proxy *p = c->proxy;
    if (!p)
        return;
    if (p->t)
        gw_tunnel_reset(p->t, p->stream_id);
    struct gw_tunnel *t = p->t;
    p->t = NULL;
    if (t)
        gw_tunnel_flush(t);
    if (p->head_seen) {
        p->complete = true;
        p->failed = true;
        gw_conn_proxy_end(c, false);
        return;
    }
    gw_proxy_fail(p, 504, "CMGConnector_GatewayTimeout",
                  "no answer within tunnel.response_timeout");
}
