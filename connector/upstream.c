/* Upstream pools: bounded sets of keep-alive HTTP/1.1 connections to one management point,
 * plain or TLS, one request at a time per connection, with a bounded queue in front. All on
 * the owning loop, raw events on non-blocking sockets (the style of gateway/conn.c).
 *
 * A request is queued (no connection free, none may be opened), bound (its connection is
 * being opened), active (on a connection), dead (failed, on_error on its way from the loop)
 * or done (on_done running). Callbacks run only from loop events, never from an API call, and
 * every API call that can come from inside a callback only records what it wants when the
 * connection under that callback would be touched; the I/O code acts on it when the callback
 * returns. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core.h"
#include "respparse.h"
#include "upstream.h"

#define UP_R_BAD_GATEWAY "CMGConnector_BadGateway"
#define UP_R_TIMEOUT "CMGConnector_GatewayTimeout"
#define UP_R_CERT "CMGConnector_Clientcertificaterequired"
#define UP_R_BUSY "CMGConnector_Busy"

#define UP_FULL_BYTES (256 * 1024)   /* unsent request bytes past which up_req_body says full */
#define UP_DRAINED_BYTES (64 * 1024) /* ... and below which on_body_drained is called */
#define UP_REPLAY_MAX (256 * 1024)   /* request bytes kept for a retry on a reused connection */
#define UP_MAX_REQ_HEAD (64 * 1024)
#define UP_READ_CHUNK (16 * 1024)
#define UP_READ_BUDGET 8 /* reads per wake-up before other connections get their turn */
#define UP_WARN_BURST 20 /* warning lines per second per endpoint before they are counted */

#define UP_DEFAULT_MAX_CONNECTIONS 64
#define UP_DEFAULT_CONNECT_MS 10000
#define UP_DEFAULT_RESPONSE_MS 120000
#define UP_DEFAULT_IDLE_MS 60000

enum up_conn_state { UC_DIAL, UC_HANDSHAKE, UC_ACTIVE, UC_IDLE };
enum up_req_state { RQ_QUEUED, RQ_BOUND, RQ_ACTIVE, RQ_DEAD, RQ_DONE };
enum { UP_IO_AGAIN = -1, UP_IO_EOF = -2, UP_IO_ERR = -3 };
enum { UPI_MORE, UPI_STOP, UPI_GONE }; /* what handling input left: go on, paused, conn gone */

struct up_conn {
    struct up_pool *pool;
    struct up_conn *prev, *next;   /* pool->conns */
    struct up_conn *iprev, *inext; /* pool->idle, most recently used first */
    uint64_t id;
    enum up_conn_state state;
    int fd;
    SSL *ssl;
    struct dial *dial;
    struct event rev, wev, tev; /* read, write, and the handshake or idle deadline */
    bool rev_on, wev_on, has_events;
    bool write_wants_read, read_wants_write; /* TLS: the other direction must come first */
    bool write_failed;   /* the upstream stopped taking bytes: what it said is still read */
    bool cert_requested; /* the server asked for a client certificate */
    bool held;           /* input processing stopped by a pause, to go on from `in` */
    struct up_req *req;  /* the request on this connection (not owned) */
    unsigned served;     /* responses completed on this connection */
    char *in;            /* read but not yet parsed when the request paused (owned) */
    size_t in_off, in_len;
    char why[256]; /* the last I/O error */
};

struct up_req {
    struct up_pool *pool;
    struct up_conn *conn;
    struct up_req *qprev, *qnext; /* pool queue */
    struct up_req *aprev, *anext; /* pool->reqs: every live request */
    uint64_t id;
    enum up_req_state state;
    const struct up_req_cbs *cbs; /* borrowed */
    void *ctx;
    char method[40];
    char path[200]; /* for log lines: the path without its query, cut */
    bool is_head;
    bool chunked;
    int64_t body_len; /* announced, or -1 */
    uint64_t body_given;
    bool body_complete; /* every body byte has been given */
    bool sent;          /* head and complete body written */
    char *out;          /* the request bytes: [0, out_off) written, [out_off, out_len) not */
    size_t out_off, out_len, out_cap;
    bool replay;    /* written bytes are kept for a retry on a fresh connection */
    bool retried;   /* the one retry is used */
    bool full;      /* up_req_body said full: on_body_drained is owed */
    bool paused;    /* the caller's window is closed */
    bool head_seen; /* on_head was called */
    bool got_bytes; /* a response byte arrived */
    bool in_cb;     /* one of this request's callbacks is running */
    bool cancelled; /* up_req_cancel during a callback */
    bool doomed;    /* a failure found during a callback, to act on after it */
    int doom_status;
    const char *doom_reason;
    char doom_why[160];
    struct respparse rp;
    struct event tev; /* deadlines, and the deferred on_error */
    uint64_t queued_at, sent_at;
    uint64_t last_rx; /* the last response bytes */
    uint64_t last_tx; /* the last write progress, or when bytes became pending */
    int err_status;
    const char *err_reason;
};

struct up_pool {
    struct event_base *base;
    struct evdns_base *dns;
    bool own_dns;
    char *name; /* base_url */
    struct up_url url;
    char *host_header;
    char *proxy;
    SSL_CTX *ssl_ctx;
    SSL_SESSION *session; /* the latest one the server gave, for resumption */
    bool has_client_cert;
    unsigned max_connections, max_idle, max_queue;
    uint64_t connect_ms, response_ms, idle_ms;
    struct up_stats *stats;
    struct up_conn *conns, *idle;
    unsigned nconns, nidle, nqueued;
    struct up_req *qhead, *qtail;
    struct up_req *reqs;
    uint64_t next_conn_id, next_req_id;
    uint64_t warn_window;
    unsigned warn_count, warn_suppressed;
    char scratch[UP_READ_CHUNK];
};

static void up_conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void up_conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void up_conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void up_req_timer_cb(evutil_socket_t fd, short what, void *arg);
static void up_conn_close(struct up_conn *c, const char *why);
static void up_conn_release(struct up_conn *c);
static void up_conn_fail(struct up_conn *c, const char *why);
static void up_conn_update(struct up_conn *c);
static void up_pool_service(struct up_pool *p);
static void up_req_arm(struct up_req *r);
static void up_req_free(struct up_req *r);

/* ---- small helpers ---- */

static struct timeval up_tv(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static void up_warn(struct up_pool *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Warnings are rate-limited per endpoint: a dead management point fails every request, and
 * the log should say so without one line per client. */
static void up_warn(struct up_pool *p, const char *fmt, ...)
{
    uint64_t now = core_now_ms();
    if (now - p->warn_window >= 1000) {
        p->warn_window = now;
        p->warn_count = 0;
    }
    if (p->warn_count >= UP_WARN_BURST) {
        p->warn_suppressed++;
        return;
    }
    p->warn_count++;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->warn_suppressed) {
        LOG_WARN("%s (%u similar lines suppressed before)", msg, p->warn_suppressed);
        p->warn_suppressed = 0;
    } else {
        LOG_WARN("%s", msg);
    }
}

static void up_stats_sync(struct up_pool *p)
{
    p->stats->open_connections = p->nconns;
    p->stats->idle_connections = p->nidle;
    p->stats->queued = p->nqueued;
}

static bool up_name_is(const char *name, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(name, word, len) == 0;
}

/* ---- the request's output buffer ---- */

static const char up_empty[1] = "";

static size_t up_req_unsent(const struct up_req *r)
{
    return r->out_len - r->out_off;
}

static int up_out_reserve(struct up_req *r, size_t more)
{
    if (r->replay && r->out_len + more > UP_REPLAY_MAX)
        r->replay = false; /* too much to keep: this request will not be retried */
    if (!r->replay && r->out_off > 0 &&
        (r->out_off == r->out_len || r->out_len + more > r->out_cap)) {
        memmove(r->out, r->out + r->out_off, r->out_len - r->out_off);
        r->out_len -= r->out_off;
        r->out_off = 0;
    }
    if (r->out_len + more <= r->out_cap)
        return 0;
    size_t cap = r->out_cap ? r->out_cap : 1024;
    while (cap < r->out_len + more)
        cap *= 2;
    char *n = realloc(r->out, cap);
    if (!n)
        return -1;
    r->out = n;
    r->out_cap = cap;
    return 0;
}

static int up_out_append(struct up_req *r, const void *data, size_t len)
{
    if (up_out_reserve(r, len) != 0)
        return -1;
    memcpy(r->out + r->out_len, data, len);
    r->out_len += len;
    return 0;
}

static int up_out_str(struct up_req *r, const char *s)
{
    return up_out_append(r, s, strlen(s));
}

/* A request that is sent and will not be sent again keeps no buffer (long polls idle for
 * minutes). */
static void up_req_trim(struct up_req *r)
{
    if (r->sent && !r->replay) {
        free(r->out);
        r->out = NULL;
        r->out_off = r->out_len = r->out_cap = 0;
    } else if (!r->replay && r->out_off == r->out_len) {
        r->out_off = r->out_len = 0;
    }
}

/* Written bytes are no longer needed for a retry. */
static void up_req_drop_replay(struct up_req *r)
{
    if (!r->replay)
        return;
    r->replay = false;
    up_req_trim(r);
}

/* ---- building the request head ---- */

static bool up_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!respparse_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static bool up_value_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\r' || ch == '\n' || ch == '\0')
            return false;
    }
    return true;
}

/* Fields the pool sets itself or that belong to the client's own hop. */
static bool up_field_is_ours(const char *name, size_t len)
{
    return respparse_is_hop_by_hop(name, len) || up_name_is(name, len, "host") ||
           up_name_is(name, len, "content-length") || up_name_is(name, len, "expect") ||
           up_name_is(name, len, "proxy-authorization") || up_name_is(name, len, "http2-settings");
}

static bool up_is_bearer(const struct up_header *h)
{
    return up_name_is(h->name, h->name_len, "authorization") && h->value_len > 7 &&
           strncasecmp(h->value, "Bearer ", 7) == 0;
}

/* Writes the request head into r->out. Returns 0, -1 on allocation failure, or 1 when the
 * request cannot be sent (*why says so). */
static int up_req_build_head(struct up_req *r, const char *method, const char *path,
                             const struct up_header *h, size_t n, bool has_body, const char **why)
{
    struct up_pool *p = r->pool;
    size_t mlen = strlen(method), plen = strlen(path);
    if (!up_is_token(method, mlen) || mlen >= sizeof(r->method)) {
        *why = "invalid request method";
        return 1;
    }
    if (plen == 0 || path[0] != '/') {
        *why = "request path does not start with '/'";
        return 1;
    }
    for (size_t i = 0; i < plen; i++) {
        if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f) {
            *why = "invalid character in the request path";
            return 1;
        }
    }
    if (up_out_append(r, method, mlen) || up_out_str(r, " ") || up_out_str(r, p->url.path) ||
        up_out_append(r, path, plen) || up_out_str(r, " HTTP/1.1\r\nHost: ") ||
        up_out_str(r, p->host_header) || up_out_str(r, "\r\n"))
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct up_header *f = &h[i];
        if (f->name_len && f->name[0] == ':')
            continue; /* an HTTP/2 pseudo-header handed on by mistake */
        if (up_field_is_ours(f->name, f->name_len))
            continue;
        bool named = false;
        for (size_t k = 0; k < n && !named; k++)
            if (up_name_is(h[k].name, h[k].name_len, "connection"))
                named =
                    respparse_connection_names(h[k].value, h[k].value_len, f->name, f->name_len);
        if (named)
            continue;
        if (!up_is_token(f->name, f->name_len) || !up_value_ok(f->value, f->value_len)) {
            /* the name only: a value may carry a credential */
            up_warn(p, "upstream %s: %s %s: dropped header field \"%.*s\" (invalid name or value)",
                    p->name, r->method, r->path, (int)(f->name_len < 64 ? f->name_len : 64),
                    f->name);
            continue;
        }
        if (up_out_append(r, f->name, f->name_len) || up_out_str(r, ": ") ||
            up_out_append(r, f->value, f->value_len) || up_out_str(r, "\r\n"))
            return -1;
    }
    char framing[64];
    if (r->body_len >= 0)
        snprintf(framing, sizeof(framing), "Content-Length: %lld\r\n", (long long)r->body_len);
    else if (has_body)
        snprintf(framing, sizeof(framing), "Transfer-Encoding: chunked\r\n");
    else
        framing[0] = '\0';
    if (up_out_str(r, framing) || up_out_str(r, "Connection: keep-alive\r\n\r\n"))
        return -1;
    if (r->out_len > UP_MAX_REQ_HEAD) {
        *why = "request head too large";
        return 1;
    }
    return 0;
}

/* ---- requests: failing, finishing, freeing ---- */

static void up_req_unqueue(struct up_req *r)
{
    struct up_pool *p = r->pool;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        p->qhead = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        p->qtail = r->qprev;
    r->qprev = r->qnext = NULL;
    r->state = RQ_BOUND; /* out of the queue, no connection yet */
    p->nqueued--;
    up_stats_sync(p);
}

static void up_req_enqueue(struct up_req *r)
{
    struct up_pool *p = r->pool;
    r->state = RQ_QUEUED;
    r->queued_at = core_now_ms();
    r->qprev = p->qtail;
    r->qnext = NULL;
    if (p->qtail)
        p->qtail->qnext = r;
    else
        p->qhead = r;
    p->qtail = r;
    p->nqueued++;
    up_stats_sync(p);
    up_req_arm(r);
}

/* The request gets no (complete) response: logs, counts, lets go of its connection (closed
 * when the request was on it, left to finish opening otherwise) and reports from the loop. */
static void up_req_fail(struct up_req *r, int status, const char *reason, const char *why)
{
    struct up_pool *p = r->pool;
    if (r->state == RQ_DEAD || r->state == RQ_DONE)
        return;
    if (r->head_seen)
        up_warn(p, "upstream %s: %s %s: response broke off after its head: %s", p->name, r->method,
                r->path, why);
    else
        up_warn(p, "upstream %s: %s %s: %s (answered %d %s)", p->name, r->method, r->path, why,
                status, reason);
    p->stats->failures++;
    if (r->state == RQ_QUEUED)
        up_req_unqueue(r);
    struct up_conn *c = r->conn;
    r->conn = NULL;
    r->state = RQ_DEAD;
    r->err_status = status;
    r->err_reason = reason;
    free(r->out);
    r->out = NULL;
    r->out_off = r->out_len = r->out_cap = 0;
    event_del(&r->tev);
    event_active(&r->tev, EV_TIMEOUT, 1);
    if (c) {
        c->req = NULL;
        if (c->state == UC_ACTIVE) {
            up_conn_close(c, why);
            up_pool_service(p);
        }
    }
}

/* A failure found inside an API call: acted on now, or after the running callback. */
static void up_req_doom(struct up_req *r, int status, const char *reason, const char *why)
{
    if (r->in_cb) {
        if (!r->doomed) {
            r->doomed = true;
            r->doom_status = status;
            r->doom_reason = reason;
            snprintf(r->doom_why, sizeof(r->doom_why), "%s", why);
        }
        return;
    }
    up_req_fail(r, status, reason, why);
}

static void up_req_free(struct up_req *r)
{
    struct up_pool *p = r->pool;
    if (r->state == RQ_QUEUED)
        up_req_unqueue(r);
    if (r->aprev)
        r->aprev->anext = r->anext;
    else
        p->reqs = r->anext;
    if (r->anext)
        r->anext->aprev = r->aprev;
    event_del(&r->tev);
    respparse_deinit(&r->rp);
    free(r->out);
    p->stats->concurrent--;
    free(r);
}

/* Time the next deadline of a request falls due, 0 for none. */
static uint64_t up_req_due(const struct up_req *r)
{
    struct up_pool *p = r->pool;
    if (r->state == RQ_QUEUED)
        return r->queued_at + p->response_ms;
    if (r->state != RQ_ACTIVE)
        return 0;
    const struct up_conn *c = r->conn;
    uint64_t due = 0;
    /* The upstream must keep taking the request, or say something after refusing it. */
    if (up_req_unsent(r) > 0 || (c && c->write_failed))
        due = r->last_tx + p->response_ms;
    uint64_t rx = 0;
    if (r->paused)
        rx = 0;
    else if (r->head_seen)
        rx = r->last_rx + p->response_ms; /* silence within the body */
    else if (r->sent)
        rx = r->sent_at + p->response_ms;
    /* else the client is still sending its body: its side times that */
    if (rx && (!due || rx < due))
        due = rx;
    return due;
}

static void up_req_arm(struct up_req *r)
{
    uint64_t due = up_req_due(r);
    if (!due) {
        event_del(&r->tev);
        return;
    }
    uint64_t now = core_now_ms();
    struct timeval tv = up_tv(due > now ? due - now : 1);
    event_add(&r->tev, &tv);
}

/* ---- connections ---- */

static void up_conn_set(struct up_conn *c, bool want_read, bool want_write)
{
    if (want_read != c->rev_on) {
        if (want_read)
            event_add(&c->rev, NULL);
        else
            event_del(&c->rev);
        c->rev_on = want_read;
    }
    if (want_write != c->wev_on) {
        if (want_write)
            event_add(&c->wev, NULL);
        else
            event_del(&c->wev);
        c->wev_on = want_write;
    }
}

/* Watches what the connection's state needs. */
static void up_conn_update(struct up_conn *c)
{
    if (!c->has_events)
        return;
    struct up_req *r = c->req;
    switch (c->state) {
    case UC_IDLE:
        up_conn_set(c, true, false);
        return;
    case UC_ACTIVE: {
        bool w = !c->write_failed && r && (up_req_unsent(r) > 0 || (r->body_complete && !r->sent));
        bool rd = (r && !r->paused) || c->write_wants_read;
        up_conn_set(c, rd, w || c->read_wants_write);
        return;
    }
    default:
        return; /* the handshake sets its own */
    }
}

static void up_idle_unlink(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        p->idle = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    c->iprev = c->inext = NULL;
    p->nidle--;
}

static void up_conn_close(struct up_conn *c, const char *why)
{
    struct up_pool *p = c->pool;
    LOG_VERBOSE("upstream %s: connection %llu closed after %u requests: %s", p->name,
                (unsigned long long)c->id, c->served, why);
    if (c->state == UC_IDLE)
        up_idle_unlink(c);
    if (c->dial)
        dial_cancel(c->dial);
    if (c->has_events) {
        event_del(&c->rev);
        event_del(&c->wev);
    }
    event_del(&c->tev);
    if (c->ssl) {
        if (c->state == UC_IDLE)
            SSL_shutdown(c->ssl); /* best effort close_notify; nothing waits for the answer */
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->nconns--;
    up_stats_sync(p);
    free(c);
}

static void up_conn_dial_cb(int fd, const char *err, void *ctx);

static struct evdns_base *up_pool_dns(struct up_pool *p)
{
    const char *name = p->proxy ? NULL : p->url.host;
    if (p->proxy) {
        struct up_url pu;
        char err[64];
        if (up_url_parse(p->proxy, &pu, err, sizeof(err)) == 0)
            name = pu.host;
    }
    if (!name || up_host_is_numeric(name) || strcasecmp(name, "localhost") == 0)
        return p->dns;
    if (!p->dns) {
        p->dns = evdns_base_new(p->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        p->own_dns = p->dns != NULL;
    }
    return p->dns;
}

/* Opens a new connection (counted at once against max_connections). NULL when it cannot even
 * start; the caller then fails its request. */
static struct up_conn *up_conn_new(struct up_pool *p, const char **why)
{
    struct up_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        *why = "out of memory";
        return NULL;
    }
    c->pool = p;
    c->fd = -1;
    c->id = ++p->next_conn_id;
    c->state = UC_DIAL;
    evtimer_assign(&c->tev, p->base, up_conn_timer_cb, c);
    struct evdns_base *dns = up_pool_dns(p);
    c->dial = dial_start(p->base, dns, p->url.host, p->url.port, p->proxy, p->connect_ms,
                         up_conn_dial_cb, c);
    if (!c->dial) {
        *why = "cannot start connecting (out of memory, or no DNS resolver for the host name)";
        free(c);
        return NULL;
    }
    c->next = p->conns;
    if (c->next)
        c->next->prev = c;
    p->conns = c;
    p->nconns++;
    up_stats_sync(p);
    return c;
}

/* Puts a request on an established connection. */
static void up_conn_start(struct up_conn *c, struct up_req *r)
{
    struct up_pool *p = c->pool;
    c->req = r;
    c->state = UC_ACTIVE;
    c->write_failed = false;
    r->conn = c;
    r->state = RQ_ACTIVE;
    r->last_rx = r->last_tx = core_now_ms();
    if (c->served > 0) {
        p->stats->connections_reused++;
        /* The upstream may have closed this connection just now; keep what is written until
         * it answers, to send it again on a fresh one. */
        r->replay = !r->retried && r->out_off == 0;
    }
    event_del(&c->tev);
    up_conn_update(c);
    up_req_arm(r);
}

/* The request on a connection that is still opening goes away: the connection opens anyway
 * and then serves the queue or waits idle. */
static void up_req_unbind(struct up_req *r)
{
    if (r->conn)
        r->conn->req = NULL;
    r->conn = NULL;
}

/* Liveness of an idle connection about to be reused: the upstream may have closed it since.
 * Returns false when it had to be closed. */
static bool up_conn_idle_alive(struct up_conn *c);

/* An idle connection that is still open, or NULL. */
static struct up_conn *up_pool_take_idle(struct up_pool *p)
{
    while (p->idle) {
        struct up_conn *c = p->idle;
        if (!up_conn_idle_alive(c))
            continue; /* closed and unlinked */
        up_idle_unlink(c);
        up_stats_sync(p);
        return c;
    }
    return NULL;
}

/* Finds the request a connection: an idle one, a new one, a place in the queue, or 503. */
static void up_pool_dispatch(struct up_pool *p, struct up_req *r)
{
    struct up_conn *c = up_pool_take_idle(p);
    if (c) {
        up_conn_start(c, r);
        return;
    }
    if (p->nconns < p->max_connections) {
        const char *why = NULL;
        c = up_conn_new(p, &why);
        if (!c) {
            up_req_fail(r, 502, UP_R_BAD_GATEWAY, why);
            return;
        }
        c->req = r;
        r->conn = c;
        r->state = RQ_BOUND;
        return;
    }
    if (p->nqueued < p->max_queue) {
        up_req_enqueue(r);
        return;
    }
    char why[160];
    snprintf(why, sizeof(why), "all %u connections busy and %u requests queued (max_queue)",
             p->max_connections, p->nqueued);
    up_req_fail(r, 503, UP_R_BUSY, why);
}

/* Connections freed up or closed: start what waits in the queue. */
static void up_pool_service(struct up_pool *p)
{
    while (p->qhead) {
        struct up_conn *c = up_pool_take_idle(p);
        if (!c && p->nconns >= p->max_connections)
            return;
        struct up_req *r = p->qhead;
        up_req_unqueue(r);
        event_del(&r->tev);
        if (c) {
            up_conn_start(c, r);
            continue;
        }
        const char *why = NULL;
        c = up_conn_new(p, &why);
        if (!c) {
            up_req_fail(r, 502, UP_R_BAD_GATEWAY, why);
            continue;
        }
        c->req = r;
        r->conn = c;
        r->state = RQ_BOUND;
    }
}

/* A connection is free for the next request: the queue's first, or the idle list. */
static void up_conn_release(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    c->req = NULL;
    c->held = false;
    free(c->in);
    c->in = NULL;
    c->in_off = c->in_len = 0;
    c->write_wants_read = c->read_wants_write = false;
    if (p->qhead) {
        struct up_req *r = p->qhead;
        up_req_unqueue(r);
        event_del(&r->tev);
        up_conn_start(c, r);
        return;
    }
    if (p->nidle >= p->max_idle) {
        up_conn_close(c, "max_idle idle connections already kept");
        return;
    }
    c->state = UC_IDLE;
    c->inext = p->idle;
    c->iprev = NULL;
    if (p->idle)
        p->idle->iprev = c;
    p->idle = c;
    p->nidle++;
    up_stats_sync(p);
    up_conn_update(c);
    struct timeval tv = up_tv(p->idle_ms);
    event_add(&c->tev, &tv);
}

/* ---- raw I/O, plain or TLS ---- */

static void up_conn_ssl_why(struct up_conn *c, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[200] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    else if (errno)
        snprintf(buf, sizeof(buf), "%s", strerror(errno));
    else
        snprintf(buf, sizeof(buf), "connection closed");
    snprintf(c->why, sizeof(c->why), "%s: %s", what, buf);
    ERR_clear_error();
}

static ssize_t up_conn_recv(struct up_conn *c, char *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0)
            return n;
        if (n == 0)
            return UP_IO_EOF;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return UP_IO_AGAIN;
        snprintf(c->why, sizeof(c->why), "read: %s", strerror(errno));
        return UP_IO_ERR;
    }
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        return UP_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->read_wants_write = true;
        return UP_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return UP_IO_EOF;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0 && errno == 0)
            return UP_IO_EOF;
        up_conn_ssl_why(c, "TLS read");
        return UP_IO_ERR;
    default:
        up_conn_ssl_why(c, "TLS read");
        return UP_IO_ERR;
    }
}

static ssize_t up_conn_send(struct up_conn *c, const char *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return UP_IO_AGAIN;
        snprintf(c->why, sizeof(c->why), "write: %s", strerror(errno));
        return UP_IO_ERR;
    }
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_WRITE:
        return UP_IO_AGAIN;
    case SSL_ERROR_WANT_READ:
        c->write_wants_read = true;
        return UP_IO_AGAIN;
    default:
        up_conn_ssl_why(c, "TLS write");
        return UP_IO_ERR;
    }
}

/* ---- idle connections ---- */

/* Reads from an idle connection: nothing may come but TLS housekeeping. Returns false when
 * the connection was closed. */
static bool up_conn_idle_read(struct up_conn *c)
{
    char buf[512];
    ssize_t n = up_conn_recv(c, buf, sizeof(buf));
    if (n == UP_IO_AGAIN) {
        c->read_wants_write = false;
        return true;
    }
    up_conn_close(c, n == UP_IO_EOF ? "upstream closed the idle connection"
                     : n > 0        ? "upstream sent bytes on an idle connection"
                                    : c->why);
    return false;
}

static bool up_conn_idle_alive(struct up_conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;
    if (n > 0 && c->ssl)
        return up_conn_idle_read(c); /* a TLS record: maybe only a ticket or close_notify */
    up_conn_close(c, n == 0  ? "upstream closed the idle connection"
                     : n > 0 ? "upstream sent bytes on an idle connection"
                             : strerror(errno));
    return false;
}

/* ---- TLS ---- */

static int up_tls_client_cert_cb(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509;
    (void)pkey;
    struct up_conn *c = SSL_get_app_data(ssl);
    if (c)
        c->cert_requested = true;
    return 0; /* none: the handshake goes on without one, the server decides */
}

static int up_tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct up_pool *p = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!p)
        return 0;
    if (p->session)
        SSL_SESSION_free(p->session);
    p->session = sess;
    return 1; /* the pool keeps the reference */
}

static void up_conn_handshake(struct up_conn *c)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        event_del(&c->tev);
        c->state = UC_ACTIVE;
        LOG_VERBOSE("upstream %s: connection %llu: %s %s%s", c->pool->name,
                    (unsigned long long)c->id, SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
                    SSL_session_reused(c->ssl) ? " (resumed)" : "");
        if (c->req) {
            up_conn_start(c, c->req);
        } else {
            up_conn_release(c);
        }
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        up_conn_set(c, true, false);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        up_conn_set(c, false, true);
        return;
    }
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        snprintf(c->why, sizeof(c->why), "TLS handshake: server certificate not accepted: %s",
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
    } else {
        up_conn_ssl_why(c, "TLS handshake");
    }
    up_conn_fail(c, c->why);
}

static int up_conn_tls_start(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    c->ssl = SSL_new(p->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    SSL_set_app_data(c->ssl, c);
    SSL_set_connect_state(c->ssl);
    const char *host = p->url.host;
    if (up_host_is_numeric(host)) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
            return -1;
    } else {
        if (SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1)
            return -1;
    }
    if (p->session)
        SSL_set_session(c->ssl, p->session);
    c->state = UC_HANDSHAKE;
    struct timeval tv = up_tv(p->connect_ms);
    event_add(&c->tev, &tv);
    up_conn_handshake(c);
    return 0;
}

static void up_conn_dial_cb(int fd, const char *err, void *ctx)
{
    struct up_conn *c = ctx;
    struct up_pool *p = c->pool;
    c->dial = NULL;
    if (fd < 0) {
        snprintf(c->why, sizeof(c->why), "%s", err ? err : "cannot connect");
        up_conn_fail(c, c->why);
        return;
    }
    c->fd = fd;
    p->stats->connections_opened++;
    event_assign(&c->rev, p->base, fd, EV_READ | EV_PERSIST, up_conn_read_cb, c);
    event_assign(&c->wev, p->base, fd, EV_WRITE | EV_PERSIST, up_conn_write_cb, c);
    c->has_events = true;
    LOG_VERBOSE("upstream %s: connection %llu open", p->name, (unsigned long long)c->id);
    if (p->ssl_ctx) {
        if (up_conn_tls_start(c) != 0) {
            up_conn_ssl_why(c, "TLS setup");
            up_conn_fail(c, c->why);
        }
        return;
    }
    c->state = UC_ACTIVE;
    if (c->req)
        up_conn_start(c, c->req);
    else
        up_conn_release(c);
}

/* ---- failures and retries ---- */

/* The connection broke (closed, reset, TLS failure, or it could not be opened). */
static void up_conn_fail(struct up_conn *c, const char *why_in)
{
    struct up_pool *p = c->pool;
    struct up_req *r = c->req;
    char why[512];
    snprintf(why, sizeof(why), "%s", why_in);
    if (!r) {
        if (c->state == UC_DIAL || c->state == UC_HANDSHAKE)
            up_warn(p, "upstream %s: connection %llu could not be opened: %s", p->name,
                    (unsigned long long)c->id, why);
        up_conn_close(c, why);
        up_pool_service(p);
        return;
    }
    /* The keep-alive race: the upstream closed a connection that idled while this request
     * went out on it. Nothing of the response came and every byte written is still here:
     * once more, on a fresh connection. */
    if (c->served > 0 && r->state == RQ_ACTIVE && !r->got_bytes && r->replay && !r->retried) {
        LOG_INFO("upstream %s: %s %s: reused connection %llu failed before any answer (%s); "
                 "retrying on a new connection",
                 p->name, r->method, r->path, (unsigned long long)c->id, why);
        c->req = NULL;
        r->conn = NULL;
        up_conn_close(c, why);
        r->retried = true;
        r->replay = false;
        r->out_off = 0;
        r->sent = false;
        respparse_deinit(&r->rp);
        respparse_init(&r->rp, r->is_head);
        const char *nwhy = NULL;
        struct up_conn *nc = up_conn_new(p, &nwhy); /* the slot just freed */
        if (!nc) {
            up_req_fail(r, 502, UP_R_BAD_GATEWAY, nwhy);
            return;
        }
        nc->req = r;
        r->conn = nc;
        r->state = RQ_BOUND;
        event_del(&r->tev);
        return;
    }
    bool cert = c->cert_requested && !p->has_client_cert && !r->got_bytes;
    if (cert) {
        char w2[600];
        snprintf(w2, sizeof(w2),
                 "server asked for a client certificate and none is configured (%.400s)", why);
        snprintf(why, sizeof(why), "%.500s", w2);
    }
    if (c->state != UC_ACTIVE) {
        /* still opening: fail the request and close here */
        up_req_unbind(r);
        up_req_fail(r, cert ? 403 : 502, cert ? UP_R_CERT : UP_R_BAD_GATEWAY, why);
        up_conn_close(c, why);
        up_pool_service(p);
        return;
    }
    up_req_fail(r, cert ? 403 : 502, cert ? UP_R_CERT : UP_R_BAD_GATEWAY, why);
}

/* ---- the response ---- */

static void up_req_call_done(struct up_req *r)
{
    r->state = RQ_DONE;
    event_del(&r->tev);
    r->in_cb = true;
    if (r->cbs->on_done && !r->cancelled)
        r->cbs->on_done(r->ctx);
    r->in_cb = false;
    up_req_free(r);
}

/* The response is complete: the connection is reused if both sides allow it, then the
 * caller hears of it. `extra` bytes followed the response (not allowed). */
static void up_req_complete(struct up_conn *c, struct up_req *r, size_t extra, bool at_eof)
{
    bool reuse = r->rp.keep_alive && r->sent && extra == 0 && !at_eof && !c->write_failed &&
                 !(c->ssl && SSL_pending(c->ssl) > 0);
    c->req = NULL;
    r->conn = NULL;
    c->served++;
    if (reuse) {
        up_conn_release(c);
    } else {
        up_conn_close(c, !r->sent    ? "answered before the request was sent completely"
                         : at_eof    ? "response ended with the connection"
                         : extra > 0 ? "bytes after the response"
                                     : "upstream does not keep the connection");
        up_pool_service(r->pool);
    }
    up_req_call_done(r);
}

/* Feeds the rest of a response without callbacks, to see whether the connection can be
 * reused for someone else. */
static void up_conn_abandon(struct up_conn *c, struct up_req *r, const char *data, size_t len)
{
    struct up_pool *p = c->pool;
    bool reuse = false;
    if (r->sent && !c->write_failed) {
        for (;;) {
            size_t used;
            enum respparse_event ev = respparse_feed(&r->rp, data, len, &used);
            data += used;
            len -= used;
            if (ev == RESPPARSE_DONE) {
                reuse = r->rp.keep_alive && len == 0 && !(c->ssl && SSL_pending(c->ssl) > 0);
                break;
            }
            if (ev == RESPPARSE_NEED_MORE || ev == RESPPARSE_ERROR)
                break;
        }
    }
    c->req = NULL;
    r->conn = NULL;
    if (reuse) {
        c->served++;
        up_conn_release(c);
    } else {
        up_conn_close(c, "request cancelled before its response was complete");
        up_pool_service(p);
    }
    up_req_free(r);
}

/* After one of the request's callbacks: acts on a cancel or failure asked for inside it.
 * True when the request left the connection (the caller must stop). */
static bool up_req_after_cb(struct up_conn *c, struct up_req *r, const char *rest, size_t len)
{
    if (r->cancelled) {
        up_conn_abandon(c, r, rest, len);
        return true;
    }
    if (r->doomed) {
        up_req_fail(r, r->doom_status, r->doom_reason, r->doom_why);
        return true;
    }
    return false;
}

/* Keeps unparsed input for when the request resumes. */
static void up_conn_hold(struct up_conn *c, const char *data, size_t len, bool from_held)
{
    c->held = true;
    if (from_held) {
        c->in_off = (size_t)(data - c->in);
        c->in_len = len;
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_off = c->in_len = 0;
    if (len == 0)
        return;
    c->in = malloc(len);
    if (!c->in)
        abort(); /* at most one read's worth; the process cannot go on sensibly */
    memcpy(c->in, data, len);
    c->in_len = len;
}

/* Hands response bytes to the parser and the caller, one event at a time. */
static int up_conn_process(struct up_conn *c, const char *data, size_t len, bool from_held)
{
    struct up_req *r = c->req;
    if (len > 0) {
        if (!r->got_bytes) {
            r->got_bytes = true;
            up_req_drop_replay(r);
        }
        r->last_rx = core_now_ms();
    }
    for (;;) {
        size_t used;
        enum respparse_event ev = respparse_feed(&r->rp, data, len, &used);
        data += used;
        len -= used;
        switch (ev) {
        case RESPPARSE_NEED_MORE:
            if (from_held) {
                free(c->in);
                c->in = NULL;
                c->in_off = c->in_len = 0;
            }
            return UPI_MORE;
        case RESPPARSE_HEAD: {
            size_t rlen;
            const char *reason = respparse_reason(&r->rp, &rlen);
            r->head_seen = true;
            r->in_cb = true;
            if (r->cbs->on_head)
                r->cbs->on_head(r->ctx, r->rp.status, reason, rlen, r->rp.headers, r->rp.nheaders);
            r->in_cb = false;
            up_req_arm(r);
            break;
        }
        case RESPPARSE_BODY:
            r->in_cb = true;
            if (r->cbs->on_body)
                r->cbs->on_body(r->ctx, r->rp.body, r->rp.body_len);
            r->in_cb = false;
            break;
        case RESPPARSE_DONE:
            if (r->cancelled) {
                up_conn_abandon(c, r, data, len);
                return UPI_GONE;
            }
            /* `data` may point into c->in, which release frees: only its length counts */
            up_req_complete(c, r, len, false);
            return UPI_GONE;
        case RESPPARSE_ERROR: {
            char why[256];
            snprintf(why, sizeof(why), "bad response: %s", r->rp.error);
            up_req_fail(r, 502, UP_R_BAD_GATEWAY, why);
            return UPI_GONE;
        }
        }
        if (up_req_after_cb(c, r, data, len))
            return UPI_GONE;
        if (r->paused) {
            up_conn_hold(c, data, len, from_held);
            up_conn_update(c);
            return UPI_STOP;
        }
    }
}

/* The upstream closed its side while a request is on the connection. */
static void up_conn_eof(struct up_conn *c)
{
    struct up_req *r = c->req;
    if (!r->got_bytes) {
        up_conn_fail(c,
                     c->write_failed ? c->why : "upstream closed the connection before answering");
        return;
    }
    enum respparse_event ev = respparse_eof(&r->rp);
    if (ev == RESPPARSE_DONE) {
        up_req_complete(c, r, 0, true);
        return;
    }
    up_req_fail(r, 502, UP_R_BAD_GATEWAY, r->rp.error ? r->rp.error : "upstream closed early");
}

/* Reads what the upstream sent for the active request. */
static void up_conn_read(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    struct up_req *r = c->req;
    if (c->held) {
        if (r->paused)
            return;
        c->held = false;
        int rc = up_conn_process(c, c->in ? c->in + c->in_off : up_empty, c->in_len, true);
        if (rc != UPI_MORE)
            return;
    }
    for (int i = 0; i < UP_READ_BUDGET; i++) {
        if (r->paused) {
            up_conn_update(c);
            return;
        }
        ssize_t n = up_conn_recv(c, p->scratch, sizeof(p->scratch));
        if (n > 0) {
            p->stats->bytes_from_upstream += (uint64_t)n;
            if (up_conn_process(c, p->scratch, (size_t)n, false) != UPI_MORE)
                return;
            continue;
        }
        if (n == UP_IO_AGAIN) {
            up_conn_update(c);
            return;
        }
        if (n == UP_IO_EOF) {
            up_conn_eof(c);
            return;
        }
        /* A reset after a complete answer in the same read is handled above; this one cut
         * the exchange. */
        if (!r->got_bytes) {
            up_conn_fail(c, c->why);
            return;
        }
        up_req_fail(r, 502, UP_R_BAD_GATEWAY, c->why);
        return;
    }
    event_active(&c->rev, EV_READ, 1); /* budget spent: come back after the others */
}

/* Writes what the request has pending. True when the request left the connection (a
 * cancel or failure asked for in on_body_drained), which may then be gone. */
static bool up_conn_flush(struct up_conn *c)
{
    struct up_pool *p = c->pool;
    struct up_req *r = c->req;
    bool progress = false;
    while (up_req_unsent(r) > 0 && !c->write_failed) {
        ssize_t n = up_conn_send(c, r->out + r->out_off, up_req_unsent(r));
        if (n > 0) {
            r->out_off += (size_t)n;
            p->stats->bytes_to_upstream += (uint64_t)n;
            progress = true;
            continue;
        }
        if (n == UP_IO_AGAIN)
            break;
        /* The upstream stopped reading: it may have answered already (413, 401...) and
         * closed; the read side finds out, and treats a close as it would anyway. */
        c->write_failed = true;
        r->last_tx = core_now_ms();
        event_active(&c->rev, EV_READ, 1);
    }
    if (progress)
        r->last_tx = core_now_ms();
    if (up_req_unsent(r) == 0 && r->body_complete && !r->sent && !c->write_failed) {
        r->sent = true;
        r->sent_at = core_now_ms();
        up_req_arm(r);
    } else if (progress) {
        up_req_arm(r);
    }
    up_req_trim(r);
    up_conn_update(c);
    if (r->full && up_req_unsent(r) < UP_DRAINED_BYTES) {
        r->full = false;
        r->in_cb = true;
        if (r->cbs->on_body_drained)
            r->cbs->on_body_drained(r->ctx);
        r->in_cb = false;
        return up_req_after_cb(c, r, c->in ? c->in + c->in_off : up_empty, c->in_len);
    }
    return false;
}

/* ---- event callbacks ---- */

static void up_conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)fd;
    (void)what;
    switch (c->state) {
    case UC_HANDSHAKE:
        up_conn_handshake(c);
        return;
    case UC_IDLE:
        up_conn_idle_read(c);
        return;
    case UC_ACTIVE:
        if (c->write_wants_read) {
            c->write_wants_read = false;
            if (up_conn_flush(c))
                return;
        }
        if (c->req)
            up_conn_read(c);
        return;
    default:
        return;
    }
}

static void up_conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)fd;
    (void)what;
    switch (c->state) {
    case UC_HANDSHAKE:
        up_conn_handshake(c);
        return;
    case UC_ACTIVE:
        if (c->read_wants_write) {
            c->read_wants_write = false;
            event_active(&c->rev, EV_READ, 1);
        }
        if (c->req)
            up_conn_flush(c);
        return;
    default:
        up_conn_set(c, c->rev_on, false);
        return;
    }
}

static void up_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state == UC_IDLE) {
        up_conn_close(c, "idle_timeout");
        return;
    }
    if (c->state == UC_HANDSHAKE) {
        snprintf(c->why, sizeof(c->why), "TLS handshake timed out (connect_timeout)");
        up_conn_fail(c, c->why);
    }
}

static void up_req_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct up_req *r = arg;
    (void)fd;
    (void)what;
    if (r->state == RQ_DEAD) {
        r->in_cb = true;
        if (r->cbs->on_error && !r->cancelled)
            r->cbs->on_error(r->ctx, r->err_status, r->err_reason);
        r->in_cb = false;
        up_req_free(r);
        return;
    }
    uint64_t due = up_req_due(r), now = core_now_ms();
    if (!due)
        return;
    if (now < due) {
        struct timeval tv = up_tv(due - now);
        event_add(&r->tev, &tv);
        return;
    }
    if (r->state == RQ_QUEUED) {
        up_req_fail(r, 503, UP_R_BUSY, "no connection became free within response_timeout");
        return;
    }
    const char *why = up_req_unsent(r) > 0
                          ? "upstream stopped taking the request (response_timeout)"
                      : r->head_seen ? "response body stalled (response_timeout)"
                                     : "no response within response_timeout";
    up_req_fail(r, 504, UP_R_TIMEOUT, why);
}

/* ---- pools ---- */

static SSL_CTX *up_tls_ctx_new(struct up_pool *p, const struct up_endpoint_cfg *cfg, char *err,
                               size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char buf[256] = "";
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Servers that close without close_notify are common; framing tells truncation anyway. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (cfg->ca_file && *cfg->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
            ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
            snprintf(err, errlen, "upstream %s: ca_file %s: %s", cfg->base_url, cfg->ca_file, buf);
            goto out;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "upstream %s: cannot load the system trust store", cfg->base_url);
        goto out;
    }
    if (cfg->cert_file && *cfg->cert_file) {
        const char *key = cfg->key_file && *cfg->key_file ? cfg->key_file : cfg->cert_file;
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
            ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
            snprintf(err, errlen, "upstream %s: cert_file %s: %s", cfg->base_url, cfg->cert_file,
                     buf);
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ERR_error_string_n(ERR_peek_last_error(), buf, sizeof(buf));
            snprintf(err, errlen, "upstream %s: key_file %s: %s", cfg->base_url, key, buf);
            goto out;
        }
        p->has_client_cert = true;
    } else {
        SSL_CTX_set_client_cert_cb(ctx, up_tls_client_cert_cb);
    }
    /* Management points may ask for the certificate after the handshake (per path). */
    SSL_CTX_set_post_handshake_auth(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, up_tls_new_session_cb);
    SSL_CTX_set_app_data(ctx, p);
    ERR_clear_error();
    return ctx;
fail:
    snprintf(err, errlen, "upstream %s: cannot create a TLS context", cfg->base_url);
out:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

struct up_pool *up_pool_new(struct event_base *base, const struct up_endpoint_cfg *cfg,
                            struct up_stats *stats, char *err, size_t errlen)
{
    if (!base || !cfg || !stats || !cfg->base_url) {
        snprintf(err, errlen, "upstream: missing base_url");
        return NULL;
    }
    struct up_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "upstream %s: out of memory", cfg->base_url);
        return NULL;
    }
    char why[300];
    if (up_url_parse(cfg->base_url, &p->url, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "upstream base_url %s", why);
        goto fail;
    }
    if (p->url.has_userinfo) {
        snprintf(err, errlen, "upstream %s: credentials in base_url are not supported",
                 cfg->base_url);
        goto fail;
    }
    p->base = base;
    p->stats = stats;
    p->name = strdup(cfg->base_url);
    char hh[300];
    bool v6 = strchr(p->url.host, ':') != NULL;
    if (p->url.has_port)
        snprintf(hh, sizeof(hh), v6 ? "[%s]:%u" : "%s:%u", p->url.host, p->url.port);
    else
        snprintf(hh, sizeof(hh), v6 ? "[%s]" : "%s", p->url.host);
    p->host_header = strdup(hh);
    if (!p->name || !p->host_header) {
        snprintf(err, errlen, "upstream %s: out of memory", cfg->base_url);
        goto fail;
    }
    if (p->url.is_https) {
        p->ssl_ctx = up_tls_ctx_new(p, cfg, err, errlen);
        if (!p->ssl_ctx)
            goto fail;
    }
    p->max_connections = cfg->max_connections ? cfg->max_connections : UP_DEFAULT_MAX_CONNECTIONS;
    p->max_idle = cfg->max_idle < p->max_connections ? cfg->max_idle : p->max_connections;
    p->max_queue = cfg->max_queue;
    p->connect_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : UP_DEFAULT_CONNECT_MS;
    p->response_ms = cfg->response_timeout_ms ? cfg->response_timeout_ms : UP_DEFAULT_RESPONSE_MS;
    p->idle_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : UP_DEFAULT_IDLE_MS;

    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    up_stats_sync(p);
    return p;
fail:
    if (p->ssl_ctx)
        SSL_CTX_free(p->ssl_ctx);
    free(p->name);
    free(p->host_header);
    free(p);
    return NULL;
}

void up_pool_free(struct up_pool *p)
{
    if (!p)
        return;
    while (p->reqs) {
        struct up_req *r = p->reqs;
        if (r->conn) {
            r->conn->req = NULL;
            r->conn = NULL;
        }
        up_req_free(r);
    }
    bool resolving = false;
    while (p->conns) {
        struct up_conn *c = p->conns;
        if (c->dial && dial_is_resolving(c->dial))
            resolving = true;
        up_conn_close(c, "pool freed");
    }
    if (p->own_dns && !resolving)
        evdns_base_free(p->dns, 0);
    /* With a lookup in flight the resolver must outlive its callback, which comes from the
     * loop later; the few bytes are left rather than freed under it. */
    if (p->session)
        SSL_SESSION_free(p->session);
    if (p->ssl_ctx) {
        SSL_CTX_set_app_data(p->ssl_ctx, NULL);
        SSL_CTX_free(p->ssl_ctx);
    }
    free(p->proxy);
    free(p->name);
    free(p->host_header);
    free(p);
}

void up_pool_set_dns(struct up_pool *p, struct evdns_base *dns)
{
    if (p->own_dns && p->dns)
        evdns_base_free(p->dns, 0);
    p->dns = dns;
    p->own_dns = false;
}

int up_pool_set_proxy(struct up_pool *p, const char *proxy_url, char *err, size_t errlen)
{
    char *copy = NULL;
    if (proxy_url && *proxy_url) {
        struct up_url u;
        char why[300];
        if (up_url_parse(proxy_url, &u, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "upstream %s: proxy %s", p->name, why);
            return -1;
        }
        if (u.is_https || u.path[0]) {
            snprintf(err, errlen, "upstream %s: proxy must be http://[user:pass@]host:port",
                     p->name);
            return -1;
        }
        copy = strdup(proxy_url);
        if (!copy) {
            snprintf(err, errlen, "upstream %s: out of memory", p->name);
            return -1;
        }
    }
    free(p->proxy);
    p->proxy = copy;
    return 0;
}

const char *up_pool_name(const struct up_pool *p)
{
    return p->name;
}

/* ---- requests ---- */

struct up_req *up_request(struct up_pool *p, const char *method, const char *path,
                          const struct up_header *h, size_t n, bool has_body, int64_t body_len,
                          const struct up_req_cbs *cbs, void *ctx)
{
    if (!p || !method || !path || !cbs)
        return NULL;
    struct up_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->pool = p;
    r->id = ++p->next_req_id;
    r->cbs = cbs;
    r->ctx = ctx;
    snprintf(r->method, sizeof(r->method), "%s", method);
    size_t pl = strcspn(path, "?");
    snprintf(r->path, sizeof(r->path), "%.*s", (int)(pl < 190 ? pl : 190), path);
    r->is_head = strcmp(method, "HEAD") == 0;
    r->body_len = body_len >= 0 ? body_len : -1;
    r->chunked = body_len < 0 && has_body;
    r->body_complete = r->body_len == 0 || (r->body_len < 0 && !has_body);
    respparse_init(&r->rp, r->is_head);
    evtimer_assign(&r->tev, p->base, up_req_timer_cb, r);
    const char *why = NULL;
    int rc = up_req_build_head(r, method, path, h, n, has_body, &why);
    if (rc < 0) {
        respparse_deinit(&r->rp);
        free(r->out);
        free(r);
        return NULL;
    }
    r->anext = p->reqs;
    if (r->anext)
        r->anext->aprev = r;
    p->reqs = r;
    p->stats->requests++;
    for (size_t i = 0; i < n; i++)
        if (up_is_bearer(&h[i])) {
            p->stats->requests_with_bearer++;
            break;
        }
    p->stats->concurrent++;
    if (p->stats->concurrent > p->stats->max_concurrent)
        p->stats->max_concurrent = p->stats->concurrent;
    r->state = RQ_BOUND; /* until dispatched; nothing is bound yet */
    if (rc > 0) {
        up_req_fail(r, 502, UP_R_BAD_GATEWAY, why);
        return r;
    }
    up_pool_dispatch(p, r);
    return r;
}

int up_req_body(struct up_req *r, const char *data, size_t len)
{
    if (!r || r->state == RQ_DEAD || r->state == RQ_DONE || r->cancelled || r->doomed)
        return -1;
    if (len == 0)
        return up_req_unsent(r) > UP_FULL_BYTES ? 1 : 0;
    if (r->body_complete) {
        up_req_doom(r, 502, UP_R_BAD_GATEWAY,
                    r->body_len >= 0 ? "request body longer than its Content-Length"
                                     : "request body after its end");
        return -1;
    }
    if (r->body_len >= 0 && r->body_given + len > (uint64_t)r->body_len) {
        up_req_doom(r, 502, UP_R_BAD_GATEWAY, "request body longer than its Content-Length");
        return -1;
    }
    if (up_req_unsent(r) == 0)
        r->last_tx = core_now_ms(); /* the write-stall clock starts with something to write */
    int rc = 0;
    if (r->chunked) {
        char size[32];
        snprintf(size, sizeof(size), "%zx\r\n", len);
        rc = up_out_str(r, size) || up_out_append(r, data, len) || up_out_str(r, "\r\n");
    } else {
        rc = up_out_append(r, data, len);
    }
    if (rc) {
        up_req_doom(r, 502, UP_R_BAD_GATEWAY, "out of memory for the request body");
        return -1;
    }
    r->body_given += len;
    if (r->body_len >= 0 && r->body_given == (uint64_t)r->body_len)
        r->body_complete = true;
    if (r->state == RQ_ACTIVE && r->conn) {
        up_conn_update(r->conn);
        up_req_arm(r);
    }
    if (up_req_unsent(r) > UP_FULL_BYTES) {
        r->full = true;
        return 1;
    }
    return 0;
}

void up_req_body_end(struct up_req *r)
{
    if (!r || r->state == RQ_DEAD || r->state == RQ_DONE || r->cancelled || r->doomed ||
        r->body_complete)
        return;
    if (r->body_len >= 0 && r->body_given < (uint64_t)r->body_len) {
        up_req_doom(r, 502, UP_R_BAD_GATEWAY, "request body shorter than its Content-Length");
        return;
    }
    if (up_req_unsent(r) == 0)
        r->last_tx = core_now_ms();
    if (r->chunked && up_out_str(r, "0\r\n\r\n") != 0) {
        up_req_doom(r, 502, UP_R_BAD_GATEWAY, "out of memory for the request body");
        return;
    }
    r->body_complete = true;
    if (r->state == RQ_ACTIVE && r->conn) {
        up_conn_update(r->conn);
        up_req_arm(r);
    }
}

void up_req_pause(struct up_req *r, bool pause)
{
    if (!r || r->paused == pause || r->state == RQ_DEAD || r->state == RQ_DONE)
        return;
    r->paused = pause;
    if (r->state != RQ_ACTIVE || !r->conn)
        return;
    struct up_conn *c = r->conn;
    up_conn_update(c);
    if (!pause)
        event_active(&c->rev, EV_READ, 1); /* held input, or TLS bytes already decrypted */
    up_req_arm(r);
}

void up_req_cancel(struct up_req *r)
{
    if (!r)
        return;
    if (r->in_cb) {
        r->cancelled = true; /* the code running the callback finishes the job */
        return;
    }
    switch (r->state) {
    case RQ_ACTIVE: {
        struct up_conn *c = r->conn;
        up_conn_abandon(c, r, c->in ? c->in + c->in_off : up_empty, c->in_len);
        return;
    }
    case RQ_BOUND:
        up_req_unbind(r);
        up_req_free(r);
        return;
    default:
        up_req_free(r);
        return;
    }
}

void up_stats_format(const struct up_stats *s, char *buf, size_t len)
{
    snprintf(buf, len,
             "TotalRequests=%llu TotalRequestsWithBearerToken=%llu MaxConcurrentRequests=%u "
             "TotalRequestBytes=%llu TotalResponseBytes=%llu Failures=%llu",
             (unsigned long long)s->requests, (unsigned long long)s->requests_with_bearer,
             s->max_concurrent, (unsigned long long)s->bytes_to_upstream,
             (unsigned long long)s->bytes_from_upstream, (unsigned long long)s->failures);
}
