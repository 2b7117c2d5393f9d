/* cmg-bench: one managed client. It connects (TCP from the next source address, then TLS with
 * its own client certificate or none), and then, in cycle mode, runs its policy cycle over that
 * one keep-alive connection, one request at a time:
 *
 *   location request → policy body → status message (CCM_POST) → [content location → content]
 *   → notification request, which the management point holds; its answer starts the next cycle.
 *
 * In handshake mode it makes one GET per connection, closes, and connects again (every
 * handshake is a full one: the client keeps no sessions).
 *
 * Any failure is counted by kind, the connection is dropped, and the client connects again
 * after opts.retry_s unless the run is winding down. Answers are parsed with llhttp. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <llhttp.h>
#include <openssl/err.h>

#include "bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BODY_CAP (64 * 1024) /* a content-location answer kept for its URL */

enum cl_state {
    CL_OFF = 0,
    CL_CONNECT,   /* TCP connect in progress */
    CL_HANDSHAKE, /* TLS handshake in progress */
    CL_REQUEST,   /* a request is out, its answer not complete */
    CL_THINK,     /* connected, pausing between cycles */
    CL_RETRY,     /* disconnected after a failure, waiting to connect again */
    CL_STOPPED,
};

struct bench_client {
    struct bench *b;
    unsigned id;
    uint8_t state;    /* enum cl_state */
    uint8_t kind;     /* enum bench_kind of the request out */
    bool has_content; /* this cycle downloads content */
    bool msg_done;    /* llhttp: the answer is complete */
    bool was_up;      /* completed a handshake at least once */
    int fd;           /* during CL_CONNECT; the bufferevent owns it afterwards */
    uint32_t rng;
    struct event *cev;       /* owned: connect writability, during CL_CONNECT */
    struct event *tmr;       /* owned: deadlines, pauses */
    struct bufferevent *bev; /* owned: the TLS connection (owns the SSL and the socket) */
    double t_op;             /* when the handshake or the request began */
    char *body;              /* owned: content-location answer body */
    size_t body_len;
    char *content_path; /* owned: the content URL's path and query */
    llhttp_t p;
};

static llhttp_settings_t parser_settings;

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ph(const struct bench *b)
{
    return b->phase == BP_HOLD;
}

static uint32_t rnd(struct bench_client *c)
{
    uint32_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return c->rng = x;
}

static void set_timer(struct bench_client *c, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    evtimer_add(c->tmr, &tv);
}

/* Drops the connection and fixes the gauges for the state it was in. */
static void teardown(struct bench_client *c)
{
    struct bench *b = c->b;
    if (c->state == CL_CONNECT || c->state == CL_HANDSHAKE)
        b->connecting--;
    else if (c->state == CL_REQUEST || c->state == CL_THINK)
        b->established--;
    if (c->state == CL_REQUEST && c->kind == BK_NOTIFY)
        b->notify_held--;
    if (c->cev) {
        event_free(c->cev);
        c->cev = NULL;
    }
    if (c->bev) {
        bufferevent_free(c->bev); /* frees the SSL, closes the socket */
        c->bev = NULL;
        c->fd = -1;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    evtimer_del(c->tmr);
    free(c->body);
    c->body = NULL;
    c->body_len = 0;
    c->state = CL_OFF;
}

static void client_fail(struct bench_client *c, enum bench_err e, const char *detail)
{
    struct bench *b = c->b;
    if (b->phase < BP_DOWN) {
        b->errors[0][e]++;
        if (ph(b))
            b->errors[1][e]++;
        if (!b->first_error[e][0])
            snprintf(b->first_error[e], sizeof(b->first_error[e]), "client %u: %s", c->id,
                     detail ? detail : "");
    }
    teardown(c);
    if (b->phase < BP_DOWN) {
        c->state = CL_RETRY;
        set_timer(c, b->o.retry_s);
    } else {
        c->state = CL_STOPPED;
    }
}

/* ---- requests ---- */

static void send_request(struct bench_client *c, enum bench_kind k)
{
    struct bench *b = c->b;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->kind = (uint8_t)k;
    c->state = CL_REQUEST;
    c->msg_done = false;
    llhttp_init(&c->p, HTTP_RESPONSE, &parser_settings);
    c->p.data = c;
    if (k == BK_CONTENT)
        evbuffer_add_printf(out, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cmg-bench\r\n\r\n",
                            c->content_path, b->o.sni);
    else
        evbuffer_add(out, b->req[k], b->req_len[k]);
    if (k == BK_NOTIFY)
        b->notify_held++;
    c->t_op = bench_now();
    set_timer(c, k == BK_NOTIFY ? b->o.notify_timeout : b->o.request_timeout);
}

static void cycle_start(struct bench_client *c)
{
    struct bench *b = c->b;
    c->has_content = b->o.content_every && b->o.content_token && rnd(c) % b->o.content_every == 0;
    send_request(c, BK_LOCATION);
}

static void cycle_end(struct bench_client *c)
{
    struct bench *b = c->b;
    b->cycles[0]++;
    if (ph(b))
        b->cycles[1]++;
    if (b->o.think_s > 0) {
        c->state = CL_THINK;
        set_timer(c, b->o.think_s);
        return;
    }
    cycle_start(c);
}

/* The path and query of the first URL="https://host/..." in a content-location answer. */
static char *content_url_path(const char *xml, size_t len)
{
    const char *end = xml + len;
    const char *u = memmem(xml, len, "URL=\"", 5);
    if (!u)
        return NULL;
    u += 5;
    const char *q = memchr(u, '"', (size_t)(end - u));
    if (!q)
        return NULL;
    const char *s = memmem(u, (size_t)(q - u), "://", 3);
    if (!s)
        return NULL;
    s = memchr(s + 3, '/', (size_t)(q - s - 3));
    if (!s)
        return NULL;
    char *out = malloc((size_t)(q - s) + 1), *o = out;
    if (!out)
        return NULL;
    while (s < q) { /* XML attribute escapes: &amp; is the one a URL carries */
        if (*s == '&' && q - s >= 5 && memcmp(s, "&amp;", 5) == 0) {
            *o++ = '&';
            s += 5;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

static void request_done(struct bench_client *c)
{
    struct bench *b = c->b;
    enum bench_kind k = c->kind;
    int status = c->p.status_code;
    uint64_t us = (uint64_t)((bench_now() - c->t_op) * 1e6);
    bool keep = llhttp_should_keep_alive(&c->p);
    int h = ph(b);

    evtimer_del(c->tmr);
    if (k == BK_NOTIFY) {
        b->notify_held--;
        c->kind = BK_N; /* not held any more, whatever happens next */
    }
    b->requests[0][k]++;
    bench_hist_add(&b->kind_hist[0][k], us);
    if (k <= BK_STATUS)
        bench_hist_add(&b->cycle_hist[0], us);
    if (h) {
        b->requests[1][k]++;
        bench_hist_add(&b->kind_hist[1][k], us);
        if (k <= BK_STATUS)
            bench_hist_add(&b->cycle_hist[1], us);
    }
    if (status >= 0 && status < 600) {
        b->status_count[0][status]++;
        if (h)
            b->status_count[1][status]++;
    }
    bool ok = status == 200 || (k == BK_CONTENT && status == 206);
    if (!ok) {
        char d[120];
        snprintf(d, sizeof(d), "status %d to request kind %d", status, (int)k);
        client_fail(c, BE_STATUS, d);
        return;
    }
    if (b->o.mode == BM_HANDSHAKE) {
        /* one request per connection: close, and connect again while the run goes on */
        c->state = CL_THINK; /* counted as established until the teardown */
        teardown(c);
        if (b->phase < BP_DOWN)
            bench_client_start(b, c);
        else
            c->state = CL_STOPPED;
        return;
    }
    if (!keep) {
        client_fail(c, BE_CLOSED, "the server answered Connection: close");
        return;
    }
    if (k == BK_CONTENT_LOC) {
        free(c->content_path);
        c->content_path = c->body ? content_url_path(c->body, c->body_len) : NULL;
        free(c->body);
        c->body = NULL;
        c->body_len = 0;
        if (!c->content_path) {
            client_fail(c, BE_CONTENT, "content-location answer without a content URL");
            return;
        }
        send_request(c, BK_CONTENT);
        return;
    }
    switch (k) {
    case BK_LOCATION:
        send_request(c, BK_POLICY);
        return;
    case BK_POLICY:
        send_request(c, BK_STATUS);
        return;
    case BK_STATUS:
    case BK_CONTENT:
        if (k == BK_STATUS && c->has_content) {
            send_request(c, BK_CONTENT_LOC);
            return;
        }
        if (b->o.notify) {
            send_request(c, BK_NOTIFY);
            return;
        }
        cycle_end(c);
        return;
    default: /* the notification answer: the next cycle */
        cycle_end(c);
        return;
    }
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct bench_client *c = p->data;
    c->b->bytes_in[0] += len;
    if (ph(c->b))
        c->b->bytes_in[1] += len;
    if (c->kind == BK_CONTENT_LOC && c->body_len + len <= BODY_CAP) {
        char *nb = realloc(c->body, c->body_len + len + 1);
        if (!nb)
            return -1;
        memcpy(nb + c->body_len, at, len);
        c->body = nb;
        c->body_len += len;
        c->body[c->body_len] = '\0';
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct bench_client *c = p->data;
    c->msg_done = true;
    return HPE_PAUSED;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct bench_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (evbuffer_get_length(in) > 0) {
        if (c->state != CL_REQUEST) {
            client_fail(c, BE_PARSE, "bytes from the server with no request out");
            return;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        enum llhttp_errno e = llhttp_execute(&c->p, v.iov_base, v.iov_len);
        size_t used = v.iov_len;
        if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->p) - (const char *)v.iov_base);
        } else if (e != HPE_OK) {
            char d[160];
            snprintf(d, sizeof(d), "HTTP parse error: %s", llhttp_errno_name(e));
            client_fail(c, BE_PARSE, d);
            return;
        }
        evbuffer_drain(in, used);
        if (c->msg_done) {
            request_done(c);
            if (!c->bev || bufferevent_get_input(c->bev) != in)
                return; /* the connection was closed or replaced */
        }
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct bench_client *c = arg;
    struct bench *b = c->b;
    if (what & BEV_EVENT_CONNECTED) {
        double t = bench_now();
        b->connecting--;
        b->established++;
        if (b->established > b->established_max)
            b->established_max = b->established;
        if (!c->was_up) {
            c->was_up = true;
            b->ever_established++;
        }
        uint64_t us = (uint64_t)((t - c->t_op) * 1e6);
        b->handshakes[0]++;
        bench_hist_add(&b->hs_hist[0], us);
        if (ph(b)) {
            b->handshakes[1]++;
            bench_hist_add(&b->hs_hist[1], us);
        }
        evtimer_del(c->tmr);
        c->state = CL_THINK; /* connected; the request below moves it on */
        if (b->phase >= BP_DOWN) {
            bench_client_stop(b, c);
            return;
        }
        if (b->o.mode == BM_HANDSHAKE)
            send_request(c, BK_GET);
        else
            cycle_start(c);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        char d[200];
        unsigned long e = bufferevent_get_openssl_error(bev);
        int serr = EVUTIL_SOCKET_ERROR();
        if (e)
            snprintf(d, sizeof(d), "%s: %s", c->state == CL_HANDSHAKE ? "handshake" : "TLS",
                     ERR_reason_error_string(e));
        else if (what & BEV_EVENT_EOF)
            snprintf(d, sizeof(d), "connection closed by the server (state %d, request kind %d)",
                     c->state, c->kind);
        else
            snprintf(d, sizeof(d), "socket error: %s", strerror(serr));
        if (c->state == CL_REQUEST && (what & BEV_EVENT_EOF) && llhttp_finish(&c->p) == HPE_OK &&
            c->msg_done) {
            request_done(c); /* an answer delimited by the end of the connection */
            return;
        }
        client_fail(c, c->state == CL_HANDSHAKE ? BE_HANDSHAKE : BE_CLOSED, d);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bench_client *c = arg;
    struct bench *b = c->b;
    switch (c->state) {
    case CL_HANDSHAKE:
        client_fail(c, BE_TIMEOUT, "no TLS handshake in time");
        break;
    case CL_REQUEST: {
        char d[80];
        snprintf(d, sizeof(d), "no answer in time to request kind %d", c->kind);
        client_fail(c, BE_TIMEOUT, d);
        break;
    }
    case CL_RETRY:
        if (b->phase < BP_DOWN)
            bench_client_start(b, c);
        else
            c->state = CL_STOPPED;
        break;
    case CL_THINK:
        if (b->phase < BP_DOWN)
            cycle_start(c);
        break;
    default:
        break;
    }
}

static void tls_begin(struct bench_client *c)
{
    struct bench *b = c->b;
    SSL *ssl = SSL_new(b->ssl_ctx);
    if (!ssl) {
        client_fail(c, BE_HANDSHAKE, "SSL_new failed");
        return;
    }
    SSL_set_tlsext_host_name(ssl, b->o.sni);
    if (b->certs) {
        struct bench_cert *ct = &b->certs[c->id % b->ncerts];
        if (SSL_use_certificate(ssl, ct->x) != 1 || SSL_use_PrivateKey(ssl, ct->k) != 1) {
            SSL_free(ssl);
            client_fail(c, BE_HANDSHAKE, "client certificate not usable");
            return;
        }
    }
    c->bev = bufferevent_openssl_socket_new(b->base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        SSL_free(ssl);
        client_fail(c, BE_HANDSHAKE, "bufferevent_openssl_socket_new failed");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CL_HANDSHAKE;
    set_timer(c, b->o.request_timeout);
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bench_client *c = arg;
    event_free(c->cev);
    c->cev = NULL;
    if (what & EV_TIMEOUT) {
        client_fail(c, BE_TIMEOUT, "TCP connect timed out");
        return;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        client_fail(c, BE_CONNECT, strerror(err));
        return;
    }
    tls_begin(c);
}

void bench_client_start(struct bench *b, struct bench_client *c)
{
    const struct sockaddr_in *src = b->o.nsrc ? &b->o.src[(b->started + c->id) % b->o.nsrc] : NULL;
    if (c->state == CL_OFF && !c->was_up && c->rng == 0)
        c->rng = (b->o.seed * 2654435761u) ^ (c->id * 40503u + 1u);
    if (!c->rng)
        c->rng = 1;
    c->state = CL_CONNECT;
    b->connecting++;
    c->t_op = bench_now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        client_fail(c, BE_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (src) {
        /* the port is chosen at connect(), per destination: each source address gives its own
         * range of ephemeral ports */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(c->fd, (const struct sockaddr *)src, sizeof(*src)) != 0) {
            client_fail(c, BE_CONNECT, strerror(errno));
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&b->o.dst, sizeof(b->o.dst)) != 0 &&
        errno != EINPROGRESS) {
        client_fail(c, BE_CONNECT, strerror(errno));
        return;
    }
    c->cev = event_new(b->base, c->fd, EV_WRITE, connect_cb, c);
    if (!c->cev) {
        client_fail(c, BE_CONNECT, "event_new failed");
        return;
    }
    struct timeval tv = {(time_t)b->o.request_timeout, 0};
    event_add(c->cev, &tv);
}

void bench_client_stop(struct bench *b, struct bench_client *c)
{
    (void)b;
    teardown(c);
    c->state = CL_STOPPED;
}

bool bench_client_is_up(const struct bench_client *c)
{
    return c->state == CL_REQUEST || c->state == CL_THINK;
}

struct bench_client *bench_client_at(struct bench *b, unsigned i)
{
    return &b->clients[i];
}

struct bench_client *bench_clients_new(struct bench *b, unsigned n)
{
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    struct bench_client *cs = calloc(n, sizeof(*cs));
    if (!cs)
        return NULL;
    for (unsigned i = 0; i < n; i++) {
        cs[i].b = b;
        cs[i].id = i;
        cs[i].fd = -1;
        cs[i].kind = BK_N;
        cs[i].tmr = evtimer_new(b->base, timer_cb, &cs[i]);
        if (!cs[i].tmr) {
            for (unsigned j = 0; j < i; j++)
                event_free(cs[j].tmr);
            free(cs);
            return NULL;
        }
    }
    return cs;
}

void bench_clients_free(struct bench *b)
{
    if (!b->clients)
        return;
    for (unsigned i = 0; i < b->o.clients; i++) {
        struct bench_client *c = &b->clients[i];
        if (c->state != CL_OFF && c->state != CL_STOPPED && c->state != CL_RETRY)
            teardown(c);
        event_free(c->tmr);
        free(c->content_path);
        free(c->body);
    }
    free(b->clients);
    b->clients = NULL;
}

/* ---- the request texts, made once ---- */

#define POLICY_ID "{6F3C1B52-9A1D-4C1E-8E5B-2D7A4B0C9E11}"
#define BOUNDARY "aAbBcCdDv1234567890VxXyYzZ"

static char *status_body(size_t *len)
{
    /* A status message as a client posts it: a multipart body with an XML header part and
     * a payload part (the gateway only relays it; mpsim answers with its length and hash). */
    static const char xml[] =
        "<Msg SchemaVersion=\"1.1\"><ID>{00000000-0000-0000-0000-000000000000}</ID>"
        "<SourceHost>bench-client</SourceHost><TargetAddress>mp:[http]MP_StatusManager"
        "</TargetAddress><ReplyMode>Sync</ReplyMode><Priority>3</Priority>"
        "<Timeout>600</Timeout><TargetEndpoint>MP_StatusManager</TargetEndpoint></Msg>";
    char payload[768];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i % 26);
    size_t cap = sizeof(xml) + sizeof(payload) + 512;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int n = snprintf(out, cap,
                     "--" BOUNDARY "\r\ncontent-type: text/plain; charset=UTF-16\r\n\r\n%s\r\n"
                     "--" BOUNDARY "\r\ncontent-type: application/octet-stream\r\n\r\n%.*s\r\n"
                     "--" BOUNDARY "--\r\n",
                     xml, (int)sizeof(payload), payload);
    *len = (size_t)n;
    return out;
}

static int put(struct bench *b, enum bench_kind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int put(struct bench *b, enum bench_kind k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&b->req[k], fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->req[k] = NULL;
        return -1;
    }
    b->req_len[k] = (size_t)n;
    return 0;
}

int bench_requests_prepare(struct bench *b, char *err, size_t errlen)
{
    const struct bench_opts *o = &b->o;
    char *auth = NULL;
    size_t blen = 0;
    char *body = status_body(&blen);
    int rc = -1;
    if (!body)
        goto out;
    if (o->token) {
        if (asprintf(&auth, "Authorization: Bearer %s\r\n", o->token) < 0) {
            auth = NULL;
            goto out;
        }
    } else {
        auth = strdup("");
        if (!auth)
            goto out;
    }
    const char *pre = b->auth_prefix;
    if (put(b, BK_LOCATION,
            "GET %s%s/SMS_MP/.sms_aut?MPLIST HTTP/1.1\r\nHost: %s\r\nUser-Agent: SMS CCM 5.0\r\n"
            "%s\r\n",
            pre, o->role, o->sni, auth) ||
        put(b, BK_POLICY,
            "GET %s%s/SMS_MP/.sms_pol?" POLICY_ID " HTTP/1.1\r\nHost: %s\r\n"
            "User-Agent: SMS CCM 5.0\r\n%s\r\n",
            pre, o->role, o->sni, auth) ||
        put(b, BK_STATUS,
            "CCM_POST %s%s/ccm_system/request HTTP/1.1\r\nHost: %s\r\n"
            "User-Agent: ConfigMgr Messaging HTTP Sender\r\n"
            "Content-Type: multipart/mixed; boundary=\"" BOUNDARY "\"\r\n"
            "Content-Length: %zu\r\n%s\r\n%s",
            pre, o->role, o->sni, blen, auth, body) ||
        put(b, BK_NOTIFY,
            "GET %s%s/bgb/handler.ashx?RequestType=Wait HTTP/1.1\r\nHost: %s\r\n"
            "User-Agent: SMS CCM 5.0\r\n%s\r\n",
            pre, o->role, o->sni, auth) ||
        put(b, BK_CONTENT_LOC,
            "GET /downloadrestservice.svc/getcontentxmlsecure?%s HTTP/1.1\r\nHost: %s\r\n"
            "User-Agent: SMS CCM 5.0\r\n\r\n",
            o->content_token ? o->content_token : "", o->sni) ||
        put(b, BK_GET, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cmg-bench\r\n\r\n", o->path,
            o->sni))
        goto out;
    rc = 0;
out:
    if (rc)
        snprintf(err, errlen, "out of memory preparing the requests");
    free(auth);
    free(body);
    return rc;
}
