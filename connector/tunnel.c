/* The connector's tunnels: dialled to every gateway instance (through the proxy if one is
 * set), TLS with the connection point's certificate and ALPN cmg-tunnel/1, then HTTP/2 as the
 * server: the gateway's hello is answered here, every other stream goes to its endpoint's
 * pool, with both bodies streamed under HTTP/2 flow control. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "cn.h"

#define CN_OUT_HIGH (1024 * 1024)
#define CN_OUT_LOW (256 * 1024)
#define CN_STREAM_WINDOW (1024 * 1024)
#define CN_CONN_WINDOW (16 * 1024 * 1024)
#define CN_RESP_HIGH (256 * 1024) /* response bytes held for the tunnel before reading stops */
#define CN_RESP_LOW (64 * 1024)
#define CN_HEAD_MAX (64 * 1024)

enum cn_tunnel_state { CN_T_DIALING = 0, CN_T_TLS, CN_T_OPEN, CN_T_READY, CN_T_CLOSING };

struct cn_stream {
    struct cn_stream *prev, *next;
    struct cn_tunnel *t;
    int32_t id;
    char method[24];
    char *path; /* with query */
    uint64_t role_id;
    bool has_role;
    bool is_hello;
    char *hdr; /* other request fields: name\0value\0 pairs */
    size_t hdr_len, hdr_cap;
    struct up_header *fields;
    size_t nfields;
    int64_t body_len; /* content-length, or -1 */
    bool bearer;
    struct up_req *req; /* while the endpoint works on it */
    struct cn_endpoint *ep;
    size_t unconsumed; /* request bytes not acknowledged: the pool is full */
    bool body_ended;
    struct evbuffer *resp; /* response bytes for the tunnel */
    bool resp_started, resp_done, resp_failed, paused;
    char *local_body; /* a body the connector answers itself */
};

struct cn_tunnel {
    struct cn_tunnel *prev, *next;
    struct cn *cn;
    struct cn_instance *in;
    struct dial *dial;
    struct bufferevent *bev;
    nghttp2_session *h2;
    enum cn_tunnel_state state;
    struct cn_stream *streams;
    unsigned nstreams;
    struct event *timer;
    uint64_t ping_sent_ms;
    bool ping_outstanding;
    bool in_recv, dead, goaway;
    char why[200];
};

static uint64_t cn_now_ms(void)
{
    return core_now_ms();
}

struct cn_endpoint *cn_endpoint_find(struct cn *cn, uint64_t role_id)
{
    for (size_t i = 0; i < cn->nendpoints; i++)
        if (cn->endpoints[i].role_id == role_id)
            return &cn->endpoints[i];
    return NULL;
}

/* ---- reconnecting ---- */

static void cn_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cn_instance *in = arg;
    cn_instance_fill(in->cn, in);
}

/* After a failure: the next attempt waits reconnect_min * 2^failures (at most reconnect_max),
 * with a random half of it taken off, so that connectors do not all come back at once. */
static void cn_schedule_retry(struct cn *cn, struct cn_instance *in)
{
    if (cn->stopping || in->retired)
        return;
    uint64_t d = cn->cfg.reconnect_min;
    for (unsigned i = 0; i < in->failures && d < cn->cfg.reconnect_max; i++)
        d *= 2;
    if (d > cn->cfg.reconnect_max)
        d = cn->cfg.reconnect_max;
    uint32_t r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    d = d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
    if (!in->retry)
        in->retry = evtimer_new(cn->base, cn_retry_cb, in);
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
    evtimer_add(in->retry, &tv);
}

/* ---- lifetime ---- */

static void cn_stream_free(struct cn_tunnel *t, struct cn_stream *s)
{
    if (s->req) {
        up_req_cancel(s->req);
        s->req = NULL;
    }
    if (s->ep)
        s->ep = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        t->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    t->nstreams--;
    if (s->resp)
        evbuffer_free(s->resp);
    free(s->path);
    free(s->hdr);
    free(s->fields);
    free(s->local_body);
    free(s);
}

static void cn_tunnel_free(struct cn_tunnel *t)
{
    struct cn *cn = t->cn;
    struct cn_instance *in = t->in;
    while (t->streams)
        cn_stream_free(t, t->streams);
    if (t->dial)
        dial_cancel(t->dial);
    if (t->timer)
        event_free(t->timer);
    if (t->h2)
        nghttp2_session_del(t->h2);
    if (t->bev)
        bufferevent_free(t->bev);
    if (t->prev)
        t->prev->next = t->next;
    else
        in->tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    if (t->state == CN_T_READY || t->state == CN_T_CLOSING)
        in->live--;
    else
        in->pending--;
    free(t);
    (void)cn;
}

static void cn_tunnel_close(struct cn_tunnel *t, bool failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cn_tunnel_close(struct cn_tunnel *t, bool failure, const char *fmt, ...)
{
    if (!t->dead) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->why, sizeof(t->why), fmt, ap);
        va_end(ap);
    }
    t->dead = true;
    if (t->in_recv)
        return;
    struct cn *cn = t->cn;
    struct cn_instance *in = t->in;
    bool was_ready = t->state == CN_T_READY || t->state == CN_T_CLOSING;
    if (failure) {
        cn->tunnel_failures++;
        in->failures++;
    }
    if (was_ready || !in->said_up || in->failures <= 1)
        LOG_WARN("tunnel to instance %u (%s:%u) %s: %s", in->index, in->host, in->port,
                 was_ready ? "closed" : "failed", t->why);
    else
        LOG_VERBOSE("tunnel to instance %u (%s:%u) failed again: %s", in->index, in->host, in->port,
                    t->why);
    if (!failure || was_ready)
        in->said_up = in->said_up && !failure;
    cn_tunnel_free(t);
    cn_schedule_retry(cn, in);
}

/* ---- output ---- */

static void cn_tunnel_flush(struct cn_tunnel *t)
{
    if (t->in_recv || t->dead || !t->h2)
        return;
    bool finished;
    int rc = tunnel_h2_send(t->h2, bufferevent_get_output(t->bev), CN_OUT_HIGH, &finished);
    if (rc != 0)
        cn_tunnel_close(t, true, "HTTP/2: %s", nghttp2_strerror(rc));
    else if (finished)
        cn_tunnel_close(t, false, "%s", t->goaway ? "gateway finished (GOAWAY)" : "session ended");
}

/* ---- answers ---- */

static ssize_t cn_read_resp(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)ud;
    struct cn_stream *s = src->ptr;
    int n = evbuffer_remove(s->resp, buf, len);
    if (n < 0)
        n = 0;
    if (s->req && s->paused && evbuffer_get_length(s->resp) < CN_RESP_LOW) {
        s->paused = false;
        up_req_pause(s->req, false);
    }
    if (evbuffer_get_length(s->resp) == 0) {
        if (s->resp_failed)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
        if (s->resp_done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return n;
        }
        if (n == 0)
            return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

static void cn_nv(nghttp2_nv *nv, const char *name, size_t nl, const char *value, size_t vl)
{
    nv->name = (uint8_t *)name;
    nv->namelen = nl;
    nv->value = (uint8_t *)value;
    nv->valuelen = vl;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/* Answers a stream from the connector itself (unknown role, failure before any answer). */
static void cn_answer_local(struct cn_stream *s, int status, const char *reason)
{
    struct cn_tunnel *t = s->t;
    char st[8], len[24];
    snprintf(st, sizeof(st), "%d", status);
    free(s->local_body);
    size_t bl = strlen(reason) + 8;
    s->local_body = malloc(bl);
    if (!s->local_body) {
        nghttp2_submit_rst_stream(t->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    int n = snprintf(s->local_body, bl, "%d %s\n", status, reason);
    snprintf(len, sizeof(len), "%d", n);
    nghttp2_nv nva[4];
    cn_nv(&nva[0], ":status", 7, st, strlen(st));
    cn_nv(&nva[1], "cmg-reason", 10, reason, strlen(reason));
    cn_nv(&nva[2], "content-type", 12, "text/plain; charset=utf-8", 25);
    cn_nv(&nva[3], "content-length", 14, len, strlen(len));
    if (!s->resp)
        s->resp = evbuffer_new();
    evbuffer_drain(s->resp, evbuffer_get_length(s->resp));
    if (strcmp(s->method, "HEAD") != 0)
        evbuffer_add(s->resp, s->local_body, (size_t)n);
    s->resp_done = true;
    s->resp_started = true;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = cn_read_resp};
    nghttp2_submit_response(t->h2, s->id, nva, 4, &dp);
}

static void cn_up_head(void *ctx, int status, const char *reason, size_t reason_len,
                       const struct up_header *h, size_t n)
{
    struct cn_stream *s = ctx;
    struct cn_tunnel *t = s->t;
    nghttp2_nv *nva = calloc(n + 2, sizeof(*nva));
    size_t names_len = 0;
    for (size_t i = 0; i < n; i++)
        names_len += h[i].name_len;
    char *names = malloc(names_len + 1);
    if (!nva || !names) {
        free(nva);
        free(names);
        nghttp2_submit_rst_stream(t->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    size_t k = 0, o = 0;
    cn_nv(&nva[k++], ":status", 7, st, strlen(st));
    if (reason_len)
        cn_nv(&nva[k++], "cmg-reason", 10, reason, reason_len);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < h[i].name_len; j++) {
            char ch = h[i].name[j];
            names[o + j] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        cn_nv(&nva[k++], names + o, h[i].name_len, h[i].value, h[i].value_len);
        o += h[i].name_len;
    }
    s->resp = s->resp ? s->resp : evbuffer_new();
    s->resp_started = true;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = cn_read_resp};
    bool bodyless = strcmp(s->method, "HEAD") == 0 || status == 204 || status == 304;
    if (bodyless)
        s->resp_done = true; /* whatever the length says, no bytes follow */
    nghttp2_submit_response(t->h2, s->id, nva, k, &dp);
    free(nva);
    free(names);
    cn_tunnel_flush(t);
}

static void cn_up_body(void *ctx, const char *data, size_t len)
{
    struct cn_stream *s = ctx;
    evbuffer_add(s->resp, data, len);
    nghttp2_session_resume_data(s->t->h2, s->id);
    if (!s->paused && evbuffer_get_length(s->resp) > CN_RESP_HIGH && s->req) {
        s->paused = true; /* the gateway takes it slower than the endpoint gives it */
        up_req_pause(s->req, true);
    }
    cn_tunnel_flush(s->t);
}

static void cn_up_done(void *ctx)
{
    struct cn_stream *s = ctx;
    s->req = NULL; /* freed by the pool when this returns */
    s->resp_done = true;
    nghttp2_session_resume_data(s->t->h2, s->id);
    cn_tunnel_flush(s->t);
}

static void cn_up_error(void *ctx, int status, const char *reason)
{
    struct cn_stream *s = ctx;
    struct cn_tunnel *t = s->t;
    s->req = NULL;
    LOG_WARN("request %s %s for role id %llu via %s: %d %s", s->method, s->path,
             (unsigned long long)s->role_id, s->ep ? up_pool_name(s->ep->pool) : "?", status,
             reason);
    if (s->resp_started) {
        s->resp_failed = true; /* the body broke off: the stream is reset */
        nghttp2_session_resume_data(t->h2, s->id);
        nghttp2_submit_rst_stream(t->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    } else {
        cn_answer_local(s, status, reason);
    }
    cn_tunnel_flush(t);
}

static void cn_up_drained(void *ctx)
{
    struct cn_stream *s = ctx;
    if (s->unconsumed) {
        nghttp2_session_consume(s->t->h2, s->id, s->unconsumed);
        s->unconsumed = 0;
        cn_tunnel_flush(s->t);
    }
}

static const struct up_req_cbs cn_up_cbs = {
    .on_head = cn_up_head,
    .on_body = cn_up_body,
    .on_done = cn_up_done,
    .on_error = cn_up_error,
    .on_body_drained = cn_up_drained,
};

/* ---- requests ---- */

static void cn_hello(struct cn_stream *s)
{
    struct cn_tunnel *t = s->t;
    struct cn *cn = t->cn;
    struct tunnel_gateway_hello h;
    char err[200];
    if (tunnel_gateway_hello_parse(s->path, strlen(s->path), &h, err, sizeof(err)) != 0) {
        LOG_WARN("hello from instance %u refused: %s", t->in->index, err);
        cn_answer_local(s, 400, "Bad Request");
        return;
    }
    struct tunnel_hello_reply r;
    memset(&r, 0, sizeof(r));
    r.version = 1;
    snprintf(r.connector, sizeof(r.connector), "%s", cn->cfg.id);
    snprintf(r.site, sizeof(r.site), "%s", cn->cfg.site);
    for (size_t i = 0; i < cn->nendpoints && i < TUNNEL_MAX_ENDPOINTS; i++) {
        r.endpoints[r.nendpoints].role_id = cn->endpoints[i].role_id;
        r.endpoints[r.nendpoints].kind = cn->endpoints[i].kind;
        r.nendpoints++;
    }
    char *json = tunnel_hello_reply_encode(&r);
    if (!json) {
        cn_answer_local(s, 500, "Internal Server Error");
        return;
    }
    s->resp = s->resp ? s->resp : evbuffer_new();
    evbuffer_add(s->resp, json, strlen(json));
    char len[24];
    snprintf(len, sizeof(len), "%zu", strlen(json));
    free(json);
    nghttp2_nv nva[3];
    cn_nv(&nva[0], ":status", 7, "200", 3);
    cn_nv(&nva[1], "content-type", 12, "application/json", 16);
    cn_nv(&nva[2], "content-length", 14, len, strlen(len));
    s->resp_done = true;
    s->resp_started = true;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = cn_read_resp};
    nghttp2_submit_response(t->h2, s->id, nva, 3, &dp);

    struct cn_instance *in = t->in;
    unsigned want = h.tunnels_wanted ? h.tunnels_wanted : 1;
    if (want > cn->cfg.max_tunnels_per_instance)
        want = (unsigned)cn->cfg.max_tunnels_per_instance;
    if (t->state == CN_T_OPEN) {
        t->state = CN_T_READY;
        in->pending--;
        in->live++;
        cn->hellos++;
        in->failures = 0;
    }
    if (!in->said_up || in->wanted != want)
        LOG_INFO("instance %u (%s:%u) is up: gateway instance %u with %u workers asks for %u "
                 "tunnel(s)",
                 in->index, in->host, in->port, h.instance_id, h.workers, want);
    in->said_up = true;
    in->wanted = want;
    cn_instance_fill(cn, in);
    if (cn->follows_count && h.instances && h.instances != cn->nactive) {
        LOG_INFO("gateway instance %u says the deployment has %u instance(s) (dialling %u "
                 "until now)",
                 h.instance_id, h.instances, cn->nactive);
        cn_instances_resize(cn, h.instances);
    }
}

static void cn_request(struct cn_stream *s)
{
    struct cn_tunnel *t = s->t;
    struct cn *cn = t->cn;
    cn->streams_total++;
    if (!s->has_role || !s->path || !s->method[0]) {
        cn_answer_local(s, 400, "Bad Request");
        return;
    }
    s->ep = cn_endpoint_find(cn, s->role_id);
    if (!s->ep) {
        cn->streams_unknown_role++;
        LOG_WARN("request for role id %llu, which this connection point does not serve",
                 (unsigned long long)s->role_id);
        cn_answer_local(s, 404, "Not Found");
        return;
    }
    /* the fields as pairs */
    size_t n = 0;
    for (size_t o = 0; o < s->hdr_len;) {
        size_t nl = strlen(s->hdr + o);
        size_t vl = strlen(s->hdr + o + nl + 1);
        o += nl + vl + 2;
        n++;
    }
    s->fields = calloc(n ? n : 1, sizeof(*s->fields));
    if (!s->fields) {
        cn_answer_local(s, 500, "Internal Server Error");
        return;
    }
    for (size_t o = 0, i = 0; o < s->hdr_len; i++) {
        s->fields[i].name = s->hdr + o;
        s->fields[i].name_len = strlen(s->hdr + o);
        o += s->fields[i].name_len + 1;
        s->fields[i].value = s->hdr + o;
        s->fields[i].value_len = strlen(s->hdr + o);
        o += s->fields[i].value_len + 1;
    }
    s->nfields = n;
    s->req = up_request(s->ep->pool, s->method, s->path, s->fields, s->nfields, !s->body_ended,
                        s->body_len, &cn_up_cbs, s);
    if (!s->req) {
        cn_answer_local(s, 502, "CMGConnector_BadGateway");
        return;
    }
    if (s->body_ended)
        up_req_body_end(s->req);
}

/* ---- nghttp2 callbacks (server side) ---- */

static int cn_on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    struct cn_tunnel *t = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct cn_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->t = t;
    s->id = frame->hd.stream_id;
    s->body_len = -1;
    s->next = t->streams;
    if (s->next)
        s->next->prev = s;
    t->streams = s;
    t->nstreams++;
    nghttp2_session_set_stream_user_data(h2, s->id, s);
    return 0;
}

static int cn_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                        size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct cn_stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s || s->req)
        return 0; /* trailers are not passed on */
    if (nl == 7 && memcmp(name, ":method", 7) == 0) {
        snprintf(s->method, sizeof(s->method), "%.*s", (int)vl, (const char *)value);
        return 0;
    }
    if (nl == 5 && memcmp(name, ":path", 5) == 0) {
        free(s->path);
        s->path = strndup((const char *)value, vl);
        s->is_hello = vl >= strlen(TUNNEL_HELLO_PATH) &&
                      memcmp(value, TUNNEL_HELLO_PATH, strlen(TUNNEL_HELLO_PATH)) == 0;
        return 0;
    }
    if (nl == 11 && memcmp(name, "cmg-role-id", 11) == 0) {
        s->has_role = core_parse_u64((const char *)value, vl, &s->role_id);
        return 0;
    }
    if (nl && name[0] == ':')
        return 0; /* :scheme, :authority (the Host comes from the endpoint's URL) */
    if (nl == 14 && memcmp(name, "content-length", 14) == 0) {
        uint64_t v;
        if (core_parse_u64((const char *)value, vl, &v))
            s->body_len = (int64_t)v;
        return 0;
    }
    if (nl == 13 && memcmp(name, "authorization", 13) == 0 && vl >= 7 &&
        strncasecmp((const char *)value, "bearer ", 7) == 0)
        s->bearer = true;
    size_t need = nl + vl + 2;
    if (s->hdr_len + need > CN_HEAD_MAX)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (s->hdr_len + need > s->hdr_cap) {
        size_t cap = s->hdr_cap ? s->hdr_cap * 2 : 1024;
        while (cap < s->hdr_len + need)
            cap *= 2;
        char *p = realloc(s->hdr, cap);
        if (!p)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        s->hdr = p;
        s->hdr_cap = cap;
    }
    memcpy(s->hdr + s->hdr_len, name, nl);
    s->hdr[s->hdr_len + nl] = '\0';
    memcpy(s->hdr + s->hdr_len + nl + 1, value, vl);
    s->hdr[s->hdr_len + nl + 1 + vl] = '\0';
    s->hdr_len += need;
    return 0;
}

static int cn_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    struct cn_tunnel *t = ud;
    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            t->ping_outstanding = false;
        return 0;
    case NGHTTP2_GOAWAY:
        t->goaway = true;
        if (t->state == CN_T_READY)
            t->state = CN_T_CLOSING;
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        break;
    default:
        return 0;
    }
    struct cn_stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->body_ended = end;
        /* The gateway's first stream on a tunnel is its hello; later ones without a role id
         * update it (the instance count after a scale). A client's request for a path that
         * looks like one carries a role id and goes to the management point like any other. */
        if (s->is_hello && !s->has_role && (t->state == CN_T_OPEN || t->state == CN_T_READY))
            cn_hello(s);
        else
            cn_request(s);
        return 0;
    }
    if (end) {
        s->body_ended = true;
        if (s->req)
            up_req_body_end(s->req);
    }
    return 0;
}

static int cn_on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct cn_stream *s = nghttp2_session_get_stream_user_data(h2, id);
    if (!s || !s->req) {
        nghttp2_session_consume(h2, id, len);
        return 0;
    }
    int r = up_req_body(s->req, (const char *)data, len);
    if (r == 1)
        s->unconsumed += len; /* the endpoint is slower: the stream's window stays shut */
    else
        nghttp2_session_consume(h2, id, len);
    return 0;
}

static int cn_on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    (void)error_code;
    struct cn_tunnel *t = ud;
    struct cn_stream *s = nghttp2_session_get_stream_user_data(h2, id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(h2, id, NULL);
    cn_stream_free(t, s); /* cancels the endpoint's request if it still runs */
    if (t->goaway && t->nstreams == 0)
        cn_tunnel_close(t, false, "gateway drained the tunnel (GOAWAY)");
    return 0;
}

/* ---- I/O ---- */

static void cn_read_cb(struct bufferevent *bev, void *arg)
{
    struct cn_tunnel *t = arg;
    t->in_recv = true;
    int rc = tunnel_h2_recv(t->h2, bufferevent_get_input(bev), &t->dead);
    t->in_recv = false;
    if (rc != 0 && !t->dead)
        snprintf(t->why, sizeof(t->why), "HTTP/2: %s", nghttp2_strerror(rc));
    if (rc != 0 || t->dead) {
        char why[sizeof(t->why)];
        snprintf(why, sizeof(why), "%s", t->why);
        t->dead = false;
        cn_tunnel_close(t, true, "%s", why);
        return;
    }
    cn_tunnel_flush(t);
}

static void cn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    cn_tunnel_flush(arg);
}

static int cn_start_h2(struct cn_tunnel *t)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, cn_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, cn_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cn_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cn_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cn_on_stream_close);
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_server_new2(&t->h2, cb, t, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CN_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CN_HEAD_MAX},
    };
    return tunnel_h2_settings(t->h2, iv, 3, CN_CONN_WINDOW) == 0 ? 0 : -1;
}

static void cn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct cn_tunnel *t = arg;
    if (what & BEV_EVENT_CONNECTED) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (!tunnel_alpn_ok(ssl)) {
            cn_tunnel_close(t, true, "the gateway did not agree to ALPN %s", TUNNEL_ALPN);
            return;
        }
        if (cn_start_h2(t) != 0) {
            cn_tunnel_close(t, true, "cannot start HTTP/2");
            return;
        }
        t->state = CN_T_OPEN;
        t->cn->tunnels_opened++;
        bufferevent_setwatermark(bev, EV_WRITE, CN_OUT_LOW, 0);
        cn_tunnel_flush(t);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char buf[200] = "";
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        if (t->state == CN_T_TLS && vr != X509_V_OK)
            cn_tunnel_close(t, true, "the gateway's certificate is not trusted: %s",
                            X509_verify_cert_error_string(vr));
        else if (t->state == CN_T_TLS)
            cn_tunnel_close(t, true,
                            "TLS handshake failed%s%s (a gateway refusing the "
                            "connection point's certificate closes here)",
                            *buf ? ": " : "", buf);
        else
            cn_tunnel_close(t, t->state != CN_T_READY || !t->goaway, "%s",
                            (what & BEV_EVENT_EOF) ? "the gateway closed the tunnel"
                            : *buf                 ? buf
                                                   : "connection error");
    }
}

static void cn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cn_tunnel *t = arg;
    const struct cn_config *c = &t->cn->cfg;
    uint64_t now = cn_now_ms();
    if (t->state != CN_T_READY && t->state != CN_T_CLOSING) {
        cn_tunnel_close(t, true, "no hello from the gateway in time");
        return;
    }
    if (t->ping_outstanding) {
        if (now - t->ping_sent_ms >= c->ping_timeout)
            cn_tunnel_close(t, true, "no answer to PING within ping_timeout");
        return;
    }
    nghttp2_submit_ping(t->h2, NGHTTP2_FLAG_NONE, NULL);
    t->ping_sent_ms = now;
    t->ping_outstanding = true;
    cn_tunnel_flush(t);
}

static void cn_dialed(int fd, const char *err, void *ctx)
{
    struct cn_tunnel *t = ctx;
    struct cn *cn = t->cn;
    t->dial = NULL;
    if (fd < 0) {
        cn_tunnel_close(t, true, "cannot connect: %s", err ? err : "?");
        return;
    }
    SSL *ssl = SSL_new(cn->ssl_ctx);
    if (!ssl) {
        close(fd);
        cn_tunnel_close(t, true, "cannot create TLS state");
        return;
    }
    SSL_set_tlsext_host_name(ssl, cn->cfg.service_name);
    SSL_set1_host(ssl, cn->cfg.service_name);
    t->bev = bufferevent_openssl_socket_new(cn->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!t->bev) {
        SSL_free(ssl);
        close(fd);
        cn_tunnel_close(t, true, "cannot create the tunnel's buffers");
        return;
    }
    t->state = CN_T_TLS;
    bufferevent_setcb(t->bev, cn_read_cb, cn_write_cb, cn_event_cb, t);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
}

static void cn_tunnel_open(struct cn *cn, struct cn_instance *in)
{
    struct cn_tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        return;
    t->cn = cn;
    t->in = in;
    t->next = in->tunnels;
    if (t->next)
        t->next->prev = t;
    in->tunnels = t;
    in->pending++;
    t->timer = event_new(cn->base, -1, EV_PERSIST, cn_timer_cb, t);
    uint64_t iv = cn->cfg.ping_interval;
    struct timeval tv = {(time_t)(iv / 1000), (suseconds_t)((iv % 1000) * 1000)};
    event_add(t->timer, &tv);
    t->dial = dial_start(cn->base, cn->dns, in->host, in->port, cn->cfg.proxy,
                         cn->cfg.up_connect_timeout, cn_dialed, t);
    if (!t->dial)
        cn_tunnel_close(t, true, "cannot start connecting (address or proxy URL unusable)");
}

void cn_instance_fill(struct cn *cn, struct cn_instance *in)
{
    if (cn->stopping || in->retired)
        return;
    unsigned want = in->wanted ? in->wanted : 1;
    /* one at a time until a tunnel is up (no burst at an instance that is down) */
    if (!in->live && in->pending)
        return;
    while (in->live + in->pending < want)
        cn_tunnel_open(cn, in);
}

void cn_instances_resize(struct cn *cn, unsigned n)
{
    const struct cn_config *c = &cn->cfg;
    const char *host = c->gateway_host && *c->gateway_host ? c->gateway_host : c->service_name;
    if (n > TUNNEL_MAX_INSTANCES)
        n = TUNNEL_MAX_INSTANCES;
    for (unsigned i = 0; i < TUNNEL_MAX_INSTANCES; i++) {
        struct cn_instance *in = &cn->instances[i];
        if (i < n && i >= cn->ninstances) {
            in->cn = cn;
            in->index = i;
            snprintf(in->host, sizeof(in->host), "%s", host);
            in->port = (unsigned)c->port_base + i;
            cn->ninstances = i + 1;
        } else if (i < n && in->retired) {
            in->retired = false;
            in->failures = 0;
        } else if (i >= n && i < cn->ninstances && !in->retired) {
            /* Its tunnels stay until the instance itself ends them (it drains with GOAWAY
             * when it is stopped); only the redialling stops. */
            in->retired = true;
            if (in->retry)
                evtimer_del(in->retry);
            LOG_INFO("instance %u (%s:%u) is no longer part of the deployment", in->index, in->host,
                     in->port);
        } else {
            continue;
        }
        if (i < n && cn->base)
            cn_instance_fill(cn, in);
    }
    cn->nactive = n;
}

void cn_tunnels_stop(struct cn *cn)
{
    for (size_t i = 0; i < cn->ninstances; i++) {
        struct cn_instance *in = &cn->instances[i];
        if (in->retry)
            evtimer_del(in->retry);
        for (struct cn_tunnel *t = in->tunnels; t; t = t->next)
            if (t->h2 && !t->dead) {
                nghttp2_submit_goaway(t->h2, NGHTTP2_FLAG_NONE,
                                      nghttp2_session_get_last_proc_stream_id(t->h2),
                                      NGHTTP2_NO_ERROR, NULL, 0);
                t->goaway = true;
                cn_tunnel_flush(t);
            }
    }
}

unsigned cn_open_streams(const struct cn *cn)
{
    unsigned n = 0;
    for (size_t i = 0; i < cn->ninstances; i++)
        for (struct cn_tunnel *t = cn->instances[i].tunnels; t; t = t->next)
            n += t->nstreams;
    return n;
}

void cn_tunnels_free(struct cn *cn)
{
    for (size_t i = 0; i < cn->ninstances; i++) {
        struct cn_instance *in = &cn->instances[i];
        while (in->tunnels)
            cn_tunnel_free(in->tunnels);
        if (in->retry)
            event_free(in->retry);
        in->retry = NULL;
    }
}
