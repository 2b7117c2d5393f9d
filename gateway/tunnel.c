/* Tunnels from connection points: the main thread accepts them and hands each to the worker
 * with the fewest; the worker runs TLS (the connector's certificate is required and judged),
 * then HTTP/2 as the client: the hello first, then one stream per proxied request. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "conn.h"

#define GW_T_OUT_HIGH (1024 * 1024)     /* stop producing frames above this much unsent */
#define GW_T_OUT_LOW (256 * 1024)       /* ... and start again below this */
#define GW_T_STREAM_WINDOW (256 * 1024) /* response bytes in flight per stream */
#define GW_T_CONN_WINDOW (16 * 1024 * 1024)
#define GW_T_HELLO_MAX (256 * 1024)
#define GW_T_HEAD_MAX (64 * 1024) /* response header bytes per stream */

enum gw_tunnel_state { GW_T_HANDSHAKE = 0, GW_T_HELLO, GW_T_READY, GW_T_CLOSING };

/* One stream the gateway opened on a tunnel. */
struct gw_tstream {
    struct gw_tstream *prev, *next;
    struct gw_proxy *p; /* NULL for the hello, or once the client went away */
    int32_t id;
    int status;
    char reason[80];
    char *head; /* response header lines, "name: value\r\n" */
    size_t head_len, head_cap;
    bool has_length;
    bool head_done;
    bool end_stream;
};

struct gw_tunnel {
    struct gw_tunnel *prev, *next;
    struct gw_worker *w;
    struct gw_snapshot *snap; /* ref */
    uint64_t id;
    struct bufferevent *bev;
    nghttp2_session *h2;
    enum gw_tunnel_state state;
    struct gw_tstream *streams; /* open streams */
    unsigned nstreams;
    struct gw_tstream *hello;
    char *hello_body;
    size_t hello_len;
    struct tunnel_hello_reply reply;
    struct event *timer;
    uint64_t started_ms;
    uint64_t ping_sent_ms;
    bool ping_outstanding;
    bool in_recv;  /* inside nghttp2_session_mem_recv: no mem_send, no free */
    bool dead;     /* close once out of the callbacks */
    bool goaway;   /* no new streams */
    bool counted;  /* in the worker's live tunnel count */
    char why[160]; /* why it is being closed */
    char peer[80];
};

/* ---- role ids announced by connectors (any worker) ---- */

static void gw_roles_add(struct gw_server *s, const struct tunnel_hello_reply *r)
{
    pthread_mutex_lock(&s->roles_lock);
    for (unsigned i = 0; i < r->nendpoints; i++) {
        bool seen = false;
        for (size_t j = 0; j < s->nroles && !seen; j++)
            seen = s->roles[j] == r->endpoints[i].role_id;
        if (seen)
            continue;
        uint64_t *grown = realloc(s->roles, (s->nroles + 1) * sizeof(*grown));
        if (!grown)
            break;
        s->roles = grown;
        s->roles[s->nroles++] = r->endpoints[i].role_id;
    }
    pthread_mutex_unlock(&s->roles_lock);
}

void gw_tunnel_served_update(struct gw_worker *w)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    for (struct gw_tunnel *t = w->tunnels; t; t = t->next) {
        if (t->state != GW_T_READY || t->dead || t->goaway)
            continue;
        for (unsigned i = 0; i < t->reply.nendpoints; i++) {
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++)
                seen = ids[j] == t->reply.endpoints[i].role_id;
            if (seen)
                continue;
            uint64_t *grown = realloc(ids, (n + 1) * sizeof(*ids));
            if (!grown)
                break;
            ids = grown;
            ids[n++] = t->reply.endpoints[i].role_id;
        }
    }
    struct gw_server *s = w->server;
    pthread_mutex_lock(&s->roles_lock);
    free(w->served);
    w->served = ids;
    w->nserved = n;
    pthread_mutex_unlock(&s->roles_lock);
}

struct gw_worker *gw_worker_serving(struct gw_server *s, uint64_t role_id,
                                    const struct gw_worker * not )
{
    struct gw_worker *found = NULL;
    pthread_mutex_lock(&s->roles_lock);
    for (unsigned k = 0; k < s->nworkers && !found; k++) {
        struct gw_worker *w = &s->workers[k];
        if (w == not || !w->mq)
            continue;
        for (size_t j = 0; j < w->nserved && !found; j++)
            if (w->served[j] == role_id)
                found = w;
    }
    pthread_mutex_unlock(&s->roles_lock);
    return found;
}

bool gw_role_known(struct gw_server *s, uint64_t role_id)
{
    bool seen = false;
    pthread_mutex_lock(&s->roles_lock);
    for (size_t j = 0; j < s->nroles && !seen; j++)
        seen = s->roles[j] == role_id;
    pthread_mutex_unlock(&s->roles_lock);
    return seen;
}

/* ---- lifetime ---- */

static void gw_tunnel_free(struct gw_tunnel *t)
{
    struct gw_worker *w = t->w;
    /* every stream still open ends here: its request is retried elsewhere or answered */
    while (t->streams) {
        struct gw_tstream *ts = t->streams;
        t->streams = ts->next;
        struct gw_proxy *p = ts->p;
        free(ts->head);
        free(ts);
        if (p)
            gw_proxy_on_close(p, GW_TUNNEL_LOST, false);
    }
    if (t->timer)
        event_free(t->timer);
    if (t->h2)
        nghttp2_session_del(t->h2);
    if (t->bev)
        bufferevent_free(t->bev); /* closes the socket and frees the SSL */
    if (t->prev)
        t->prev->next = t->next;
    else
        w->tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    if (t->counted)
        GW_DEC(w->metrics.tunnels_open);
    atomic_fetch_sub(&w->ntunnels, 1);
    bool was_serving = t->state == GW_T_READY;
    free(t->hello_body);
    gw_snapshot_unref(t->snap);
    free(t);
    if (was_serving)
        gw_tunnel_served_update(w);
}

static void gw_tunnel_close(struct gw_tunnel *t, const char *why)
{
    if (!t->dead)
        snprintf(t->why, sizeof(t->why), "%s", why);
    t->dead = true;
    if (t->in_recv)
        return; /* the read callback closes it when nghttp2 returns */
    if (t->state == GW_T_READY || t->state == GW_T_CLOSING)
        LOG_WARN("tunnel t%u.%llu from %s (%s) closed: %s", t->w->id, (unsigned long long)t->id,
                 t->reply.connector[0] ? t->reply.connector : "?", t->peer, t->why);
    gw_tunnel_free(t);
}

static void gw_tunnel_refuse(struct gw_tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void gw_tunnel_refuse(struct gw_tunnel *t, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    GW_INC(t->w->metrics.tunnels_refused);
    LOG_WARN("tunnel t%u.%llu from %s refused: %s", t->w->id, (unsigned long long)t->id, t->peer,
             why);
    gw_tunnel_close(t, why);
}

/* ---- output ---- */

void gw_tunnel_flush(struct gw_tunnel *t)
{
    if (!t || t->in_recv || t->dead || !t->h2)
        return;
    bool finished;
    int rc = tunnel_h2_send(t->h2, bufferevent_get_output(t->bev), GW_T_OUT_HIGH, &finished);
    if (rc != 0)
        gw_tunnel_close(t, nghttp2_strerror(rc));
    else if (finished)
        gw_tunnel_close(t, t->goaway ? "connection point finished (GOAWAY)" : "session ended");
}

/* ---- nghttp2 callbacks (client side) ---- */

static struct gw_tstream *gw_tstream_of(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

static bool gw_hop_by_hop(const uint8_t *name, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive",        "proxy-connection",
                                        "te",         "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return true;
    return false;
}

static int gw_t_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                          size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                          void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct gw_tstream *ts = gw_tstream_of(h2, frame->hd.stream_id);
    if (!ts || ts->head_done)
        return 0; /* trailers are dropped */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (value[i] - '0');
        ts->status = valuelen == 3 ? st : 0;
        return 0;
    }
    if (namelen && name[0] == ':')
        return 0;
    if (namelen == 10 && memcmp(name, "cmg-reason", 10) == 0) {
        size_t l = valuelen < sizeof(ts->reason) - 1 ? valuelen : sizeof(ts->reason) - 1;
        for (size_t i = 0; i < l; i++) /* a reason phrase is text: no control bytes */
            ts->reason[i] = value[i] < 0x20 || value[i] == 0x7f ? '?' : (char)value[i];
        ts->reason[l] = '\0';
        return 0;
    }
    if (gw_hop_by_hop(name, namelen))
        return 0;
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
        ts->has_length = true;
    size_t need = namelen + valuelen + 4;
    if (ts->head_len + need > GW_T_HEAD_MAX)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    if (ts->head_len + need > ts->head_cap) {
        size_t cap = ts->head_cap ? ts->head_cap * 2 : 512;
        while (cap < ts->head_len + need)
            cap *= 2;
        char *p = realloc(ts->head, cap);
        if (!p)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        ts->head = p;
        ts->head_cap = cap;
    }
    memcpy(ts->head + ts->head_len, name, namelen);
    ts->head_len += namelen;
    memcpy(ts->head + ts->head_len, ": ", 2);
    ts->head_len += 2;
    memcpy(ts->head + ts->head_len, value, valuelen);
    ts->head_len += valuelen;
    memcpy(ts->head + ts->head_len, "\r\n", 2);
    ts->head_len += 2;
    return 0;
}

static void gw_tunnel_hello_done(struct gw_tunnel *t);

static int gw_t_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
    struct gw_tunnel *t = ud;
    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            t->ping_outstanding = false;
        return 0;
    case NGHTTP2_GOAWAY:
        t->goaway = true; /* open streams finish; new requests go elsewhere */
        if (t->state == GW_T_READY) {
            t->state = GW_T_CLOSING;
            gw_tunnel_served_update(t->w);
        }
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        break;
    default:
        return 0;
    }
    struct gw_tstream *ts = gw_tstream_of(h2, frame->hd.stream_id);
    if (!ts)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && !ts->head_done) {
        if (ts->status >= 100 && ts->status < 200) {
            ts->status = 0; /* interim answer: the real one follows */
            ts->head_len = 0;
            ts->has_length = false;
            ts->reason[0] = '\0';
            return 0;
        }
        ts->head_done = true;
        if (ts->p)
            gw_proxy_on_head(ts->p, ts->status, ts->reason, ts->head ? ts->head : "", ts->head_len,
                             ts->has_length, end);
        free(ts->head);
        ts->head = NULL;
        ts->head_len = ts->head_cap = 0;
    }
    if (end)
        ts->end_stream = true;
    return 0;
}

static int gw_t_on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                        size_t len, void *ud)
{
    (void)flags;
    struct gw_tunnel *t = ud;
    struct gw_tstream *ts = gw_tstream_of(h2, id);
    if (ts && ts == t->hello) {
        nghttp2_session_consume(h2, id, len);
        if (t->hello_len + len > GW_T_HELLO_MAX)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        char *p = realloc(t->hello_body, t->hello_len + len + 1);
        if (!p)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        memcpy(p + t->hello_len, data, len);
        t->hello_body = p;
        t->hello_len += len;
        p[t->hello_len] = '\0';
        return 0;
    }
    if (!ts || !ts->p) {
        nghttp2_session_consume(h2, id, len); /* nobody reads it: let the window open */
        return 0;
    }
    gw_proxy_on_data(ts->p, data, len);
    return 0;
}

static int gw_t_on_stream_close(nghttp2_session *h2, int32_t id, uint32_t error_code, void *ud)
{
    struct gw_tunnel *t = ud;
    struct gw_tstream *ts = gw_tstream_of(h2, id);
    if (!ts)
        return 0;
    nghttp2_session_set_stream_user_data(h2, id, NULL);
    if (ts->prev)
        ts->prev->next = ts->next;
    else
        t->streams = ts->next;
    if (ts->next)
        ts->next->prev = ts->prev;
    t->nstreams--;
    if (ts == t->hello) {
        t->hello = NULL;
        int status = ts->status;
        bool complete = ts->end_stream && error_code == 0;
        free(ts->head);
        free(ts);
        if (!complete || status != 200) {
            gw_tunnel_refuse(t, "hello failed: %s",
                             !complete ? "stream reset"
                             : status  ? "non-200 status"
                                       : "no status");
            return 0;
        }
        gw_tunnel_hello_done(t);
        return 0;
    }
    struct gw_proxy *p = ts->p;
    bool complete = ts->end_stream && ts->head_done && error_code == 0;
    free(ts->head);
    free(ts);
    if (p)
        gw_proxy_on_close(p, error_code, complete);
    if (t->goaway && t->nstreams == 0)
        gw_tunnel_close(t, "connection point drained (GOAWAY)");
    return 0;
}

static ssize_t gw_t_read_body(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)ud;
    struct gw_tstream *ts = src->ptr;
    if (!ts->p) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    bool eof = false;
    ssize_t n = gw_proxy_read_body(ts->p, buf, len, &eof);
    if (n == 0 && !eof)
        return NGHTTP2_ERR_DEFERRED;
    if (eof)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return n;
}

/* ---- streams for proxy.c ---- */

static struct gw_tstream *gw_tstream_new(struct gw_tunnel *t, struct gw_proxy *p)
{
    struct gw_tstream *ts = calloc(1, sizeof(*ts));
    if (!ts)
        return NULL;
    ts->p = p;
    ts->next = t->streams;
    if (ts->next)
        ts->next->prev = ts;
    t->streams = ts;
    t->nstreams++;
    return ts;
}

static void gw_tstream_unlink(struct gw_tunnel *t, struct gw_tstream *ts)
{
    if (ts->prev)
        ts->prev->next = ts->next;
    else
        t->streams = ts->next;
    if (ts->next)
        ts->next->prev = ts->prev;
    t->nstreams--;
    free(ts->head);
    free(ts);
}

int gw_tunnel_submit(struct gw_tunnel *t, struct gw_proxy *p, const void *nva, size_t nnv,
                     bool has_body)
{
    struct gw_tstream *ts = gw_tstream_new(t, p);
    if (!ts)
        return -1;
    nghttp2_data_provider dp = {.source.ptr = ts, .read_callback = gw_t_read_body};
    int32_t id = nghttp2_submit_request(t->h2, NULL, nva, nnv, has_body ? &dp : NULL, ts);
    if (id < 0) {
        gw_tstream_unlink(t, ts);
        return -1;
    }
    ts->id = id;
    return id;
}

void gw_tunnel_resume_body(struct gw_tunnel *t, int32_t stream_id)
{
    if (t && t->h2)
        nghttp2_session_resume_data(t->h2, stream_id);
}

void gw_tunnel_consume(struct gw_tunnel *t, int32_t stream_id, size_t n)
{
    if (t && t->h2 && n)
        nghttp2_session_consume(t->h2, stream_id, n);
}

void gw_tunnel_reset(struct gw_tunnel *t, int32_t stream_id)
{
    if (!t || !t->h2)
        return;
    struct gw_tstream *ts = gw_tstream_of(t->h2, stream_id);
    if (ts)
        ts->p = NULL; /* no more callbacks to the proxy */
    nghttp2_submit_rst_stream(t->h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
}

struct gw_tunnel *gw_tunnel_pick(struct gw_worker *w, uint64_t role_id,
                                 const struct gw_tunnel * not )
{
    struct gw_tunnel *found[64];
    unsigned n = 0;
    for (struct gw_tunnel *t = w->tunnels; t && n < 64; t = t->next) {
        if (t->state != GW_T_READY || t->dead || t->goaway || t == not )
            continue;
        for (unsigned i = 0; i < t->reply.nendpoints; i++)
            if (t->reply.endpoints[i].role_id == role_id) {
                found[n++] = t;
                break;
            }
    }
    if (!n)
        return NULL;
    return found[w->rr++ % n];
}

/* ---- hello ---- */

/* Submits a hello request on t with the settings c; returns its stream, or NULL. */
static struct gw_tstream *gw_tunnel_submit_hello(struct gw_tunnel *t, const struct gw_config *c)
{
    struct tunnel_gateway_hello h = {
        .instance_id = (unsigned)c->instance_id,
        .workers = t->w->server->nworkers,
        .tunnels_wanted = t->w->server->nworkers * (unsigned)c->tunnels_per_worker,
        .instances = (unsigned)c->instances,
    };
    char target[160];
    tunnel_gateway_hello_format(&h, target, sizeof(target));
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)"cmg-connector", 10, 13, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)target, 5, strlen(target), NGHTTP2_NV_FLAG_NONE},
    };
    struct gw_tstream *ts = gw_tstream_new(t, NULL);
    if (!ts)
        return NULL;
    int32_t id = nghttp2_submit_request(t->h2, NULL, nva, 4, NULL, ts);
    if (id < 0) {
        gw_tstream_unlink(t, ts); /* frees it */
        return NULL;
    }
    ts->id = id;
    return ts;
}

static void gw_tunnel_send_hello(struct gw_tunnel *t)
{
    t->hello = gw_tunnel_submit_hello(t, &t->snap->cfg);
    if (!t->hello) {
        gw_tunnel_close(t, "cannot send the hello");
        return;
    }
    t->state = GW_T_HELLO;
}

void gw_tunnel_instances_changed(struct gw_worker *w, unsigned instances)
{
    /* A hello on a live tunnel only updates what the connection point knows (how many
     * instances to dial); its answer is read and dropped like any stream without a client. */
    struct gw_tunnel *next;
    for (struct gw_tunnel *t = w->tunnels; t; t = next) {
        next = t->next; /* a failed flush may free t */
        if (t->state != GW_T_READY || t->goaway || t->dead)
            continue;
        struct gw_config c = t->snap->cfg;
        c.instances = instances;
        if (gw_tunnel_submit_hello(t, &c))
            gw_tunnel_flush(t);
    }
    LOG_INFO("worker %u: the deployment has %u instance(s) now; told the connection points", w->id,
             instances);
}

static void gw_tunnel_hello_done(struct gw_tunnel *t)
{
    char err[200];
    if (tunnel_hello_reply_parse(t->hello_body ? t->hello_body : "", t->hello_len, &t->reply, err,
                                 sizeof(err)) != 0) {
        gw_tunnel_refuse(t, "hello reply refused: %s", err);
        return;
    }
    free(t->hello_body);
    t->hello_body = NULL;
    t->state = GW_T_READY;
    t->counted = true;
    GW_INC(t->w->metrics.tunnels_open);
    GW_INC(t->w->metrics.tunnels_total);
    gw_roles_add(t->w->server, &t->reply);
    gw_tunnel_served_update(t->w);
    gw_server_open_clients(t->w->server, "a connection point's tunnel is up");
    char roles[200] = "";
    size_t o = 0;
    for (unsigned i = 0; i < t->reply.nendpoints && o + 32 < sizeof(roles); i++)
        o += (size_t)snprintf(roles + o, sizeof(roles) - o, "%s%llu (%s)", i ? ", " : "",
                              (unsigned long long)t->reply.endpoints[i].role_id,
                              tunnel_role_kind_name(t->reply.endpoints[i].kind));
    LOG_INFO("tunnel t%u.%llu up: connection point %s, site %s, from %s, serves %s", t->w->id,
             (unsigned long long)t->id, t->reply.connector, t->reply.site, t->peer, roles);
}

/* ---- I/O events ---- */

static void gw_tunnel_read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_tunnel *t = arg;
    t->in_recv = true;
    int rc = tunnel_h2_recv(t->h2, bufferevent_get_input(bev), &t->dead);
    t->in_recv = false;
    if (rc != 0 && !t->dead)
        snprintf(t->why, sizeof(t->why), "HTTP/2 error: %s", nghttp2_strerror(rc));
    if (rc != 0 || t->dead) {
        char why[160];
        snprintf(why, sizeof(why), "%s", t->why);
        t->dead = false;
        gw_tunnel_close(t, why);
        return;
    }
    gw_tunnel_flush(t);
}

static void gw_tunnel_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    gw_tunnel_flush(arg);
}

static int gw_tunnel_start_h2(struct gw_tunnel *t)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cb, gw_t_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, gw_t_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, gw_t_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, gw_t_on_stream_close);
    nghttp2_option_new(&opt);
    /* the gateway opens the window only as fast as each client takes the response */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100000);
    int rc = nghttp2_session_client_new2(&t->h2, cb, t, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, GW_T_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, GW_T_HEAD_MAX},
    };
    return tunnel_h2_settings(t->h2, iv, 3, GW_T_CONN_WINDOW) == 0 ? 0 : -1;
}

static void gw_tunnel_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct gw_tunnel *t = arg;
    if (what & BEV_EVENT_CONNECTED) {
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (!tunnel_alpn_ok(ssl)) {
            gw_tunnel_refuse(t, "no ALPN %s (not a connection point)", TUNNEL_ALPN);
            return;
        }
        const char *detail = NULL;
        STACK_OF(X509_CRL) *crls = t->w->dyn ? t->w->dyn->crls : NULL;
        enum tls_client_verdict v =
            tls_client_verdict_of(ssl, t->snap->tunnel_trust, crls, false, &detail);
        if (v != TLS_CLIENT_OK) {
            gw_tunnel_refuse(t, "connection point certificate %s%s%s", tls_client_verdict_name(v),
                             detail && *detail ? ": " : "", detail ? detail : "");
            return;
        }
        if (gw_tunnel_start_h2(t) != 0) {
            gw_tunnel_close(t, "cannot start HTTP/2");
            return;
        }
        bufferevent_setwatermark(bev, EV_WRITE, GW_T_OUT_LOW, 0);
        gw_tunnel_send_hello(t);
        gw_tunnel_flush(t);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char buf[160] = "";
        if (e)
            ERR_error_string_n(e, buf, sizeof(buf));
        if (t->state == GW_T_HANDSHAKE) {
            gw_tunnel_refuse(t, "TLS handshake failed%s%s", *buf ? ": " : "", buf);
            return;
        }
        GW_INC(t->w->metrics.tunnels_lost);
        gw_tunnel_close(t, (what & BEV_EVENT_EOF) ? "connection point closed the tunnel"
                           : *buf                 ? buf
                                                  : "connection error");
    }
}

static void gw_tunnel_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_tunnel *t = arg;
    const struct gw_config *c = &t->snap->cfg;
    uint64_t now = core_now_ms();
    if (t->state == GW_T_HANDSHAKE || t->state == GW_T_HELLO) {
        if (now - t->started_ms >= c->handshake_timeout + c->tunnel_ping_timeout) {
            gw_tunnel_refuse(t, "%s not finished in time",
                             t->state == GW_T_HANDSHAKE ? "TLS handshake" : "hello");
            return;
        }
    } else if (t->ping_outstanding) {
        if (now - t->ping_sent_ms >= c->tunnel_ping_timeout) {
            GW_INC(t->w->metrics.tunnels_lost);
            gw_tunnel_close(t, "no answer to PING within tunnel.ping_timeout");
            return;
        }
    } else if (t->h2) {
        nghttp2_submit_ping(t->h2, NGHTTP2_FLAG_NONE, NULL);
        t->ping_sent_ms = now;
        t->ping_outstanding = true;
        gw_tunnel_flush(t);
    }
}

void gw_tunnel_accept(struct gw_worker *w, int fd)
{
    struct gw_snapshot *snap = w->snap;
    struct gw_tunnel *t = calloc(1, sizeof(*t));
    SSL *ssl = snap->tunnel_ssl_ctx ? SSL_new(snap->tunnel_ssl_ctx) : NULL;
    if (!t || !ssl) {
        LOG_ERROR("cannot take a tunnel: %s", !t ? "out of memory" : "no tunnel TLS context");
        free(t);
        SSL_free(ssl);
        close(fd);
        atomic_fetch_sub(&w->ntunnels, 1);
        return;
    }
    /* No read-ahead on tunnels: libevent's TLS reader stops while only SSL_pending() says
     * more is there, so a second record read ahead would wait for the next packet. */
    SSL_set_read_ahead(ssl, 0);
    static uint64_t next_id; /* per process is enough: only for log lines */
    t->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    t->w = w;
    t->snap = gw_snapshot_ref(snap);
    t->started_ms = core_now_ms();
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[64] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        int port = 0;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(t->peer, sizeof(t->peer), "%s:%d", host, port);
    }
    t->next = w->tunnels;
    if (t->next)
        t->next->prev = t;
    w->tunnels = t;
    t->bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!t->bev) {
        SSL_free(ssl);
        close(fd);
        gw_tunnel_close(t, "cannot create the tunnel's buffers");
        return;
    }
    bufferevent_setcb(t->bev, gw_tunnel_read_cb, gw_tunnel_write_cb, gw_tunnel_event_cb, t);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    t->timer = event_new(w->base, -1, EV_PERSIST, gw_tunnel_timer_cb, t);
    uint64_t iv = snap->cfg.tunnel_ping_interval;
    struct timeval tv = {(time_t)(iv / 1000), (suseconds_t)((iv % 1000) * 1000)};
    event_add(t->timer, &tv);
}

void gw_tunnel_dyn_changed(struct gw_worker *w)
{
    STACK_OF(X509_CRL) *changed = w->dyn ? w->dyn->changed : NULL;
    if (!changed || sk_X509_CRL_num(changed) == 0)
        return;
    struct gw_tunnel *t = w->tunnels;
    while (t) {
        struct gw_tunnel *next = t->next;
        SSL *ssl = t->bev ? bufferevent_openssl_get_ssl(t->bev) : NULL;
        X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
        bool revoked = false;
        for (int i = 0; peer && !revoked && i < sk_X509_CRL_num(changed); i++)
            revoked = tls_crl_revokes(sk_X509_CRL_value(changed, i), peer);
        if (revoked && t->snap->cfg.tunnel_verify_revocation) {
            GW_INC(w->metrics.tunnels_lost);
            gw_tunnel_close(t, "connection point certificate revoked by refreshed CRL");
        }
        t = next;
    }
}

void gw_tunnel_close_all(struct gw_worker *w, bool graceful)
{
    if (graceful) {
        for (struct gw_tunnel *t = w->tunnels; t; t = t->next)
            if (t->h2 && !t->dead) {
                nghttp2_submit_goaway(t->h2, NGHTTP2_FLAG_NONE,
                                      nghttp2_session_get_last_proc_stream_id(t->h2),
                                      NGHTTP2_NO_ERROR, NULL, 0);
                gw_tunnel_flush(t);
            }
        return;
    }
    while (w->tunnels)
        gw_tunnel_close(w->tunnels, "gateway stopping");
}

/* ---- the listener (main thread) ---- */

static void gw_tunnel_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct gw_server *s = arg;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (atomic_load(&s->draining)) {
            close(fd);
            continue;
        }
        /* HEADERS and DATA of one request often leave in two writes: without this the second
         * waits for the connector's delayed ACK (up to 40 ms per request with a body). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* to the worker holding the fewest tunnels, so that each gets its own */
        unsigned best = 0, least = UINT32_MAX;
        for (unsigned k = 0; k < s->nworkers; k++) {
            unsigned n = atomic_load(&s->workers[k].ntunnels);
            if (n < least) {
                least = n;
                best = k;
            }
        }
        int *arg_fd = malloc(sizeof(int));
        if (!arg_fd) {
            close(fd);
            continue;
        }
        *arg_fd = fd;
        atomic_fetch_add(&s->workers[best].ntunnels, 1);
        if (gw_worker_post(&s->workers[best], GW_MSG_TUNNEL, arg_fd) != 0) {
            atomic_fetch_sub(&s->workers[best].ntunnels, 1);
            LOG_ERROR("worker %u queue full: tunnel connection dropped", best);
            close(fd);
            free(arg_fd);
        }
    }
}

int gw_tunnel_listen_start(struct gw_server *s, char *err, size_t errlen)
{
    const struct gw_config *c = &s->snap->cfg;
    s->tunnel_fd = -1;
    if (!c->tunnel_enabled)
        return 0;
    if (!s->snap->tunnel_ssl_ctx) {
        LOG_WARN("tunnel.trusted_certs is not set: no connection point can connect (tunnel "
                 "listener off)");
        return 0;
    }
    s->tunnel_fd = gw_listen_socket(c->tunnel_listen, 128, false, err, errlen);
    if (s->tunnel_fd < 0)
        return -1;
    s->tunnel_listener =
        event_new(s->base, s->tunnel_fd, EV_READ | EV_PERSIST, gw_tunnel_accept_cb, s);
    event_add(s->tunnel_listener, NULL);
    return 0;
}

void gw_tunnel_listen_stop(struct gw_server *s)
{
    if (s->tunnel_listener) {
        event_free(s->tunnel_listener);
        s->tunnel_listener = NULL;
    }
    if (s->tunnel_fd >= 0) {
        close(s->tunnel_fd);
        s->tunnel_fd = -1;
    }
}
