/* connector/upstream.c, respparse.c and dial.c: the pool against a small HTTP/1.1 server (plain
 * and TLS) and a CONNECT proxy, both running on the test's own event loop on loopback; and the
 * response reader on its own, fed in every split. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw; CMake defines it for the whole tree */
#endif
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "core.h"
#include "respparse.h"
#include "tls.h"
#include "upstream.h"

static struct event_base *base;
static struct event *ticker;

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void loop_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    cr_assert_not_null(base);
    /* wakes the loop often, so that run_until can look at its condition */
    ticker = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = {0, 5000};
    event_add(ticker, &tv);
}

static void loop_teardown(void)
{
    event_free(ticker);
    event_base_free(base);
}

static bool run_until(bool (*pred)(void *), void *arg, unsigned ms)
{
    uint64_t end = core_now_ms() + ms;
    while (!pred(arg)) {
        if (core_now_ms() > end)
            return false;
        event_base_loop(base, EVLOOP_ONCE);
    }
    return true;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_ms(unsigned ms)
{
    run_until(never, NULL, ms);
}

/* ---- the upstream: a small HTTP/1.1 server with one behaviour per path ---- */

struct srv;

struct sconn {
    struct srv *srv;
    struct bufferevent *bev;
    struct sconn *next;
    unsigned served;
    bool close_after;
    bool have_head;
    char head[8192];
    char method[32], path[256];
    bool chunked;
    long long clen, body;
    long long chunk_left; /* -1: size line next; -2: CRLF after data next */
    uint64_t gen_left;    /* body bytes of /big still to produce */
    struct event *timer;
};

struct srv {
    struct evconnlistener *lis;
    SSL_CTX *ssl;
    unsigned port;
    unsigned accepted, open, max_open, requests;
    bool close_on_reuse; /* the keep-alive race: drop a connection when its 2nd request comes */
    char last_head[8192];
    long long last_body;
    uint64_t big_queued; /* /big body bytes handed to the socket layer */
    struct sconn *conns;
};

static void sconn_free(struct sconn *sc)
{
    struct srv *s = sc->srv;
    struct sconn **pp = &s->conns;
    while (*pp && *pp != sc)
        pp = &(*pp)->next;
    if (*pp)
        *pp = sc->next;
    if (sc->timer)
        event_free(sc->timer);
    bufferevent_free(sc->bev);
    s->open--;
    free(sc);
}

static void sconn_reply(struct sconn *sc, const char *raw)
{
    bufferevent_write(sc->bev, raw, strlen(raw));
}

static void sconn_reply_body(struct sconn *sc, const char *status, const char *body)
{
    evbuffer_add_printf(bufferevent_get_output(sc->bev),
                        "HTTP/1.1 %s\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n\r\n%s",
                        status, strlen(body), body);
}

static void sconn_fill(struct sconn *sc)
{
    static char chunk[65536];
    if (!chunk[0])
        memset(chunk, 'b', sizeof(chunk));
    struct evbuffer *out = bufferevent_get_output(sc->bev);
    while (sc->gen_left > 0 && evbuffer_get_length(out) < 256 * 1024) {
        size_t n = sc->gen_left < sizeof(chunk) ? sc->gen_left : sizeof(chunk);
        evbuffer_add(out, chunk, n);
        sc->gen_left -= n;
        sc->srv->big_queued += n;
    }
}

static void sconn_delay_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sconn_reply_body(arg, "200 OK", "delayed");
}

/* Answers the request just read. Returns true when sc was freed. */
static bool sconn_handle(struct sconn *sc)
{
    const char *p = sc->path;
    if (strncmp(p, "/hello", 6) == 0 || strncmp(p, "/base/hello", 11) == 0) {
        sconn_reply_body(sc, "200 OK", "hello world");
    } else if (strcmp(p, "/chunked") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
    } else if (strcmp(p, "/head") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    } else if (strcmp(p, "/size") == 0) {
        char b[64];
        snprintf(b, sizeof(b), "size=%lld", sc->body);
        sconn_reply_body(sc, "200 OK", b);
    } else if (strcmp(p, "/slow") == 0) {
        /* never answers */
    } else if (strncmp(p, "/delay", 6) == 0) {
        if (!sc->timer)
            sc->timer = evtimer_new(bufferevent_get_base(sc->bev), sconn_delay_cb, sc);
        struct timeval tv = {0, 50000};
        evtimer_add(sc->timer, &tv);
    } else if (strncmp(p, "/big?n=", 7) == 0) {
        sc->gen_left = strtoull(p + 7, NULL, 10);
        evbuffer_add_printf(bufferevent_get_output(sc->bev),
                            "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                            (unsigned long long)sc->gen_left);
        sconn_fill(sc);
    } else if (strcmp(p, "/cont") == 0) {
        sconn_reply(sc,
                    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    } else if (strcmp(p, "/204") == 0) {
        sconn_reply(sc, "HTTP/1.1 204 No Content\r\n\r\n");
    } else if (strcmp(p, "/304") == 0) {
        sconn_reply(sc, "HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\nETag: \"x\"\r\n\r\n");
    } else if (strcmp(p, "/eof") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
        sc->close_after = true;
    } else if (strcmp(p, "/hop") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 Fine Thanks\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
                        "Keep-Alive: timeout=5\r\nX-Keep: yes\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(p, "/bad") == 0) {
        sconn_reply(sc, "HTTP/1.1 2x0 Oops\r\n\r\n");
    } else if (strcmp(p, "/fold") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(p, "/truncated") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        sc->close_after = true;
    } else if (strcmp(p, "/http10") == 0) {
        sconn_reply(sc, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    } else if (strcmp(p, "/close") == 0) {
        sconn_reply(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        sc->close_after = true;
    } else {
        sconn_reply_body(sc, "404 Not Found", "no such path");
    }
    return false;
}

static const char *head_value(const char *head, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *f = l + 2;
        if (strncasecmp(f, name, nl) == 0 && f[nl] == ':') {
            const char *v = f + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r");
            snprintf(buf, len, "%.*s", (int)vl, v);
            return buf;
        }
    }
    return NULL;
}

static void sconn_read_cb(struct bufferevent *bev, void *arg)
{
    struct sconn *sc = arg;
    struct srv *s = sc->srv;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (!sc->have_head) {
            struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (pos.pos < 0)
                return;
            size_t hl = (size_t)pos.pos + 4;
            if (hl >= sizeof(sc->head)) {
                sconn_free(sc);
                return;
            }
            evbuffer_remove(in, sc->head, hl);
            sc->head[hl] = '\0';
            if (s->close_on_reuse && sc->served > 0) {
                sconn_free(sc); /* as if it had timed out just before this request came */
                return;
            }
            sscanf(sc->head, "%31s %255s", sc->method, sc->path);
            char v[128];
            sc->clen = head_value(sc->head, "Content-Length", v, sizeof(v)) ? atoll(v) : 0;
            sc->chunked = head_value(sc->head, "Transfer-Encoding", v, sizeof(v)) &&
                          strcasecmp(v, "chunked") == 0;
            sc->body = 0;
            sc->chunk_left = -1;
            sc->have_head = true;
        }
        if (sc->chunked) {
            bool end = false;
            while (!end) {
                if (sc->chunk_left == -1) {
                    struct evbuffer_ptr pos = evbuffer_search(in, "\r\n", 2, NULL);
                    if (pos.pos < 0)
                        return;
                    char line[64] = "";
                    size_t ll = (size_t)pos.pos + 2;
                    if (ll >= sizeof(line)) {
                        sconn_free(sc);
                        return;
                    }
                    evbuffer_remove(in, line, ll);
                    long long size = strtoll(line, NULL, 16);
                    if (size == 0) {
                        sc->chunk_left = -3; /* the final CRLF */
                        continue;
                    }
                    sc->chunk_left = size;
                } else if (sc->chunk_left == -2 || sc->chunk_left == -3) {
                    if (evbuffer_get_length(in) < 2)
                        return;
                    evbuffer_drain(in, 2);
                    end = sc->chunk_left == -3;
                    sc->chunk_left = -1;
                } else {
                    size_t avail = evbuffer_get_length(in);
                    if (avail == 0)
                        return;
                    size_t n = avail < (size_t)sc->chunk_left ? avail : (size_t)sc->chunk_left;
                    evbuffer_drain(in, n);
                    sc->body += (long long)n;
                    sc->chunk_left -= (long long)n;
                    if (sc->chunk_left == 0)
                        sc->chunk_left = -2;
                }
            }
        } else if (sc->body < sc->clen) {
            size_t avail = evbuffer_get_length(in);
            size_t want = (size_t)(sc->clen - sc->body);
            size_t n = avail < want ? avail : want;
            evbuffer_drain(in, n);
            sc->body += (long long)n;
            if (sc->body < sc->clen)
                return;
        }
        sc->have_head = false;
        sc->served++;
        s->requests++;
        snprintf(s->last_head, sizeof(s->last_head), "%s", sc->head);
        s->last_body = sc->body;
        if (sconn_handle(sc))
            return;
        if (evbuffer_get_length(in) == 0)
            return;
    }
}

static void sconn_write_cb(struct bufferevent *bev, void *arg)
{
    struct sconn *sc = arg;
    if (sc->gen_left)
        sconn_fill(sc);
    else if (sc->close_after && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        sconn_free(sc);
}

static void sconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        sconn_free(arg);
}

static void srv_accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    (void)lis;
    (void)sa;
    (void)salen;
    struct srv *s = arg;
    struct sconn *sc = calloc(1, sizeof(*sc));
    sc->srv = s;
    if (s->ssl) {
        sc->bev = bufferevent_openssl_socket_new(base, fd, SSL_new(s->ssl),
                                                 BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_openssl_set_allow_dirty_shutdown(sc->bev, 1);
    } else {
        sc->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    bufferevent_setcb(sc->bev, sconn_read_cb, sconn_write_cb, sconn_event_cb, sc);
    bufferevent_setwatermark(sc->bev, EV_WRITE, 64 * 1024, 0);
    bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
    sc->next = s->conns;
    s->conns = sc;
    s->accepted++;
    s->open++;
    if (s->open > s->max_open)
        s->max_open = s->open;
}

static unsigned listener_port(struct evconnlistener *lis)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&sin, &sl);
    return ntohs(sin.sin_port);
}

static struct evconnlistener *listen_loopback(evconnlistener_cb cb, void *arg)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *lis =
        evconnlistener_new_bind(base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                (struct sockaddr *)&sin, sizeof(sin));
    cr_assert_not_null(lis);
    return lis;
}

static void srv_start(struct srv *s, SSL_CTX *ssl)
{
    memset(s, 0, sizeof(*s));
    s->ssl = ssl;
    s->lis = listen_loopback(srv_accept_cb, s);
    s->port = listener_port(s->lis);
}

static void srv_stop(struct srv *s)
{
    while (s->conns)
        sconn_free(s->conns);
    if (s->lis)
        evconnlistener_free(s->lis);
    s->lis = NULL;
}

/* A port nobody listens on. */
static unsigned closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    socklen_t sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- the client side: what each request saw ---- */

struct res {
    int status;
    char reason[64];
    char headers[2048];
    size_t nheaders;
    size_t body_len;
    char body[4096];
    int heads, dones, errors, drained;
    int err_status;
    char err_reason[64];
    struct up_req *r;
    bool pause_on_body;  /* pause at the first body bytes */
    bool cancel_on_body; /* cancel at the first body bytes */
    bool cancelled;
    int calls_after_cancel;
    /* request body pump */
    size_t to_send, sent;
    bool end_when_sent;
};

static void res_head(void *ctx, int status, const char *reason, size_t rlen,
                     const struct up_header *h, size_t n)
{
    struct res *x = ctx;
    if (x->cancelled)
        x->calls_after_cancel++;
    x->heads++;
    x->status = status;
    snprintf(x->reason, sizeof(x->reason), "%.*s", (int)rlen, reason);
    x->nheaders = n;
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof(x->headers); i++)
        off += (size_t)snprintf(x->headers + off, sizeof(x->headers) - off, "%.*s: %.*s\n",
                                (int)h[i].name_len, h[i].name, (int)h[i].value_len, h[i].value);
}

static void res_body(void *ctx, const char *data, size_t len)
{
    struct res *x = ctx;
    if (x->cancelled)
        x->calls_after_cancel++;
    if (x->body_len < sizeof(x->body)) {
        size_t n = sizeof(x->body) - x->body_len;
        memcpy(x->body + x->body_len, data, len < n ? len : n);
    }
    x->body_len += len;
    if (x->pause_on_body) {
        x->pause_on_body = false;
        up_req_pause(x->r, true);
    }
    if (x->cancel_on_body) {
        x->cancel_on_body = false;
        x->cancelled = true;
        up_req_cancel(x->r);
    }
}

static void res_done(void *ctx)
{
    struct res *x = ctx;
    if (x->cancelled)
        x->calls_after_cancel++;
    x->dones++;
}

static void res_error(void *ctx, int status, const char *reason)
{
    struct res *x = ctx;
    if (x->cancelled)
        x->calls_after_cancel++;
    x->errors++;
    x->err_status = status;
    snprintf(x->err_reason, sizeof(x->err_reason), "%s", reason);
}

static void pump(struct res *x);

static void res_drained(void *ctx)
{
    struct res *x = ctx;
    x->drained++;
    pump(x);
}

static const struct up_req_cbs cbs = {res_head, res_body, res_done, res_error, res_drained};

/* Streams x->to_send body bytes, as much as the request takes at once. */
static void pump(struct res *x)
{
    static char chunk[65536];
    memset(chunk, 'p', sizeof(chunk));
    while (x->sent < x->to_send) {
        size_t n = x->to_send - x->sent < sizeof(chunk) ? x->to_send - x->sent : sizeof(chunk);
        int rc = up_req_body(x->r, chunk, n);
        cr_assert_neq(rc, -1);
        x->sent += n;
        if (rc == 1)
            return; /* full: on_body_drained brings us back */
    }
    if (x->end_when_sent) {
        x->end_when_sent = false;
        up_req_body_end(x->r);
    }
}

static bool res_finished(void *arg)
{
    struct res *x = arg;
    return x->dones + x->errors > 0;
}

struct many {
    struct res *r;
    size_t n;
};

static bool all_finished(void *arg)
{
    struct many *m = arg;
    for (size_t i = 0; i < m->n; i++)
        if (!res_finished(&m->r[i]))
            return false;
    return true;
}

static struct srv srv;
static struct up_stats stats;

/* A pool for http://host:port<path>. */
static struct up_pool *pool_for(const char *host, unsigned port, const char *path,
                                unsigned max_conn, unsigned max_idle, unsigned max_queue,
                                uint64_t response_ms)
{
    char url[256], err[512] = "";
    snprintf(url, sizeof(url), "http://%s:%u%s", host, port, path);
    struct up_endpoint_cfg cfg = {
        .base_url = url,
        .max_connections = max_conn,
        .max_idle = max_idle,
        .max_queue = max_queue,
        .connect_timeout_ms = 2000,
        .response_timeout_ms = response_ms,
        .idle_timeout_ms = 10000,
    };
    memset(&stats, 0, sizeof(stats));
    struct up_pool *p = up_pool_new(base, &cfg, &stats, err, sizeof(err));
    cr_assert_not_null(p, "%s", err);
    return p;
}

static struct up_req *get(struct up_pool *p, const char *method, const char *path, struct res *x)
{
    memset(x, 0, sizeof(*x));
    struct up_header h[] = {{"accept", 6, "*/*", 3}};
    x->r = up_request(p, method, path, h, 1, false, -1, &cbs, x);
    cr_assert_not_null(x->r);
    return x->r;
}

static void srv_setup(void)
{
    loop_setup();
    srv_start(&srv, NULL);
}

static void srv_teardown(void)
{
    srv_stop(&srv);
    loop_teardown();
}

TestSuite(upstream, .init = srv_setup, .fini = srv_teardown, .timeout = 30);

Test(upstream, get_with_content_length)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 4, 4, 4, 5000);
    struct res x;
    get(p, "GET", "/hello?x=1", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.errors, 0);
    cr_assert_eq(x.status, 200);
    cr_assert_str_eq(x.reason, "OK");
    cr_assert_eq(x.body_len, 11);
    cr_assert(memcmp(x.body, "hello world", 11) == 0);
    cr_assert(strstr(x.headers, "Content-Length: 11\n"));
    /* what went out: Host from base_url, keep-alive, the client's own field */
    char v[64];
    cr_assert(strncmp(srv.last_head, "GET /hello?x=1 HTTP/1.1\r\n", 25) == 0, "%s", srv.last_head);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", srv.port);
    cr_assert_str_eq(head_value(srv.last_head, "Host", v, sizeof(v)), want);
    cr_assert_str_eq(head_value(srv.last_head, "Connection", v, sizeof(v)), "keep-alive");
    cr_assert_str_eq(head_value(srv.last_head, "accept", v, sizeof(v)), "*/*");
    cr_assert_null(head_value(srv.last_head, "Content-Length", v, sizeof(v)));
    cr_assert_eq(stats.requests, 1);
    cr_assert_eq(stats.connections_opened, 1);
    cr_assert_eq(stats.concurrent, 0);
    cr_assert_gt(stats.bytes_to_upstream, 0);
    cr_assert_gt(stats.bytes_from_upstream, 11);
    up_pool_free(p);
}

Test(upstream, path_prefix_and_header_filtering)
{
    struct up_pool *p = pool_for("localhost", srv.port, "/base/", 4, 4, 4, 5000);
    struct res x;
    memset(&x, 0, sizeof(x));
    struct up_header h[] = {
        {"Connection", 10, "x-drop", 6},
        {"x-drop", 6, "1", 1},
        {"keep-alive", 10, "300", 3},
        {"TE", 2, "trailers", 8},
        {"host", 4, "client.example", 14},
        {"x-cmg-client-address", 20, "1.2.3.4:5", 9},
        {"authorization", 13, "Bearer abc", 10},
        {"bad name", 8, "x", 1},
        {"x-evil", 6, "a\r\nInjected: 1", 15},
    };
    x.r = up_request(p, "GET", "/hello", h, sizeof(h) / sizeof(h[0]), false, -1, &cbs, &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.status, 200);
    char v[128], want[64];
    cr_assert(strncmp(srv.last_head, "GET /base/hello HTTP/1.1\r\n", 26) == 0, "%s", srv.last_head);
    snprintf(want, sizeof(want), "localhost:%u", srv.port);
    cr_assert_str_eq(head_value(srv.last_head, "Host", v, sizeof(v)), want);
    cr_assert_null(head_value(srv.last_head, "x-drop", v, sizeof(v)));
    cr_assert_null(head_value(srv.last_head, "keep-alive", v, sizeof(v)));
    cr_assert_null(head_value(srv.last_head, "TE", v, sizeof(v)));
    cr_assert_null(head_value(srv.last_head, "Injected", v, sizeof(v)));
    cr_assert_null(head_value(srv.last_head, "x-evil", v, sizeof(v)));
    cr_assert_str_eq(head_value(srv.last_head, "x-cmg-client-address", v, sizeof(v)), "1.2.3.4:5");
    cr_assert_eq(stats.requests_with_bearer, 1);
    up_pool_free(p);
}

Test(upstream, chunked_response)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 4, 4, 4, 5000);
    struct res x;
    get(p, "GET", "/chunked", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.body_len, 11);
    cr_assert(memcmp(x.body, "hello world", 11) == 0);
    cr_assert_null(strstr(x.headers, "Transfer-Encoding"), "%s", x.headers);
    /* and the connection is good for the next one */
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.status, 200);
    cr_assert_eq(stats.connections_opened, 1);
    cr_assert_eq(stats.connections_reused, 1);
    up_pool_free(p);
}

Test(upstream, head_204_304_have_no_body)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 5000);
    struct res x;
    get(p, "HEAD", "/head", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.status, 200);
    cr_assert_eq(x.body_len, 0);
    cr_assert(strstr(x.headers, "Content-Length: 1000\n"));
    get(p, "GET", "/204", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.status, 204);
    get(p, "GET", "/304", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.status, 304);
    cr_assert_eq(x.body_len, 0);
    /* all three framed right: one connection throughout */
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.body_len, 11);
    cr_assert_eq(stats.connections_opened, 1);
    up_pool_free(p);
}

Test(upstream, interim_responses_are_skipped)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 5000);
    struct res x;
    get(p, "GET", "/cont", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.heads, 1);
    cr_assert_eq(x.status, 200);
    cr_assert_eq(x.body_len, 2);
    up_pool_free(p);
}

Test(upstream, hop_by_hop_response_fields_dropped)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 5000);
    struct res x;
    get(p, "GET", "/hop", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.status, 200);
    cr_assert_str_eq(x.reason, "Fine Thanks");
    cr_assert(strstr(x.headers, "X-Keep: yes\n"), "%s", x.headers);
    cr_assert_null(strstr(x.headers, "X-Secret"), "%s", x.headers);
    cr_assert_null(strstr(x.headers, "Keep-Alive"), "%s", x.headers);
    cr_assert_null(strstr(x.headers, "Connection"), "%s", x.headers);
    up_pool_free(p);
}

Test(upstream, response_ending_with_the_connection)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 5000);
    struct res x;
    get(p, "GET", "/eof", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1, "error %d %s", x.err_status, x.err_reason);
    cr_assert_eq(x.body_len, 13);
    cr_assert(memcmp(x.body, "until the end", 13) == 0);
    run_ms(50);
    cr_assert_eq(stats.open_connections, 0);
    up_pool_free(p);
}

Test(upstream, connection_not_reused_without_keep_alive)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/http10", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    get(p, "GET", "/close", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(stats.connections_opened, 3);
    cr_assert_eq(stats.connections_reused, 0);
    up_pool_free(p);
}

Test(upstream, bad_responses_are_502)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/bad", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.heads, 0);
    cr_assert_eq(x.err_status, 502);
    cr_assert_str_eq(x.err_reason, "CMGConnector_BadGateway");
    get(p, "GET", "/fold", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.err_status, 502);
    /* a body that breaks off after the head: on_error after on_head */
    get(p, "GET", "/truncated", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.heads, 1);
    cr_assert_eq(x.dones, 0);
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.body_len, 10);
    cr_assert_eq(stats.failures, 3);
    up_pool_free(p);
}

/* ---- request bodies ---- */

static void post_5mib(bool chunked)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 10000);
    struct res x;
    memset(&x, 0, sizeof(x));
    const size_t total = 5u << 20;
    struct up_header h[] = {{"content-type", 12, "application/octet-stream", 24}};
    x.r = up_request(p, "CCM_POST", "/size", h, 1, true, chunked ? -1 : (int64_t)total, &cbs, &x);
    cr_assert_not_null(x.r);
    x.to_send = total;
    x.end_when_sent = chunked;
    pump(&x);
    cr_assert_lt(x.sent, total, "the body should not all fit before the connection is up");
    cr_assert(run_until(res_finished, &x, 10000));
    cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
    cr_assert_eq(x.status, 200);
    char want[64];
    snprintf(want, sizeof(want), "size=%zu", total);
    cr_assert_eq(x.body_len, strlen(want));
    cr_assert(memcmp(x.body, want, x.body_len) == 0, "%.*s", (int)x.body_len, x.body);
    cr_assert_eq(srv.last_body, (long long)total);
    cr_assert(strncmp(srv.last_head, "CCM_POST /size HTTP/1.1\r\n", 25) == 0);
    char v[64];
    if (chunked)
        cr_assert_str_eq(head_value(srv.last_head, "Transfer-Encoding", v, sizeof(v)), "chunked");
    else
        cr_assert_str_eq(head_value(srv.last_head, "Content-Length", v, sizeof(v)), "5242880");
    cr_assert_gt(x.drained, 0);
    cr_assert_gt(stats.bytes_to_upstream, total);
    up_pool_free(p);
}

Test(upstream, post_streamed_5mib_chunked)
{
    post_5mib(true);
}

Test(upstream, post_streamed_5mib_content_length)
{
    post_5mib(false);
}

Test(upstream, body_longer_than_content_length_fails)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    memset(&x, 0, sizeof(x));
    x.r = up_request(p, "POST", "/size", NULL, 0, true, 4, &cbs, &x);
    cr_assert_eq(up_req_body(x.r, "abcdef", 6), -1);
    cr_assert_eq(x.errors, 0, "callbacks come from the loop, not from the call");
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.err_status, 502);
    up_pool_free(p);
}

/* ---- the pool ---- */

Test(upstream, keep_alive_reuse)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 4, 4, 4, 5000);
    for (int i = 0; i < 10; i++) {
        struct res x;
        get(p, "GET", "/hello", &x);
        cr_assert(run_until(res_finished, &x, 3000));
        cr_assert_eq(x.status, 200);
    }
    cr_assert_eq(stats.connections_opened, 1);
    cr_assert_eq(stats.connections_reused, 9);
    cr_assert_eq(srv.accepted, 1);
    cr_assert_eq(stats.idle_connections, 1);
    cr_assert_eq(stats.requests, 10);
    up_pool_free(p);
}

struct bound {
    struct many m;
    unsigned max_open;
};

static bool all_finished_watch(void *arg)
{
    struct bound *b = arg;
    if (stats.open_connections > b->max_open)
        b->max_open = stats.open_connections;
    return all_finished(&b->m);
}

Test(upstream, max_connections_with_queue)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 20, 5000);
    struct res x[10];
    for (int i = 0; i < 10; i++)
        get(p, "GET", "/delay", &x[i]);
    cr_assert_eq(stats.open_connections, 2);
    cr_assert_eq(stats.queued, 8);
    cr_assert_eq(stats.concurrent, 10);
    struct bound b = {{x, 10}, 0};
    cr_assert(run_until(all_finished_watch, &b, 5000));
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(x[i].dones, 1, "request %d: %d %s", i, x[i].err_status, x[i].err_reason);
        cr_assert_eq(x[i].body_len, 7);
    }
    cr_assert_leq(b.max_open, 2);
    cr_assert_leq(srv.max_open, 2);
    cr_assert_eq(stats.connections_opened, 2);
    cr_assert_eq(stats.max_concurrent, 10);
    cr_assert_eq(stats.queued, 0);
    up_pool_free(p);
}

Test(upstream, queue_overflow_is_503)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 1, 5000);
    struct res x[3];
    for (int i = 0; i < 3; i++)
        get(p, "GET", "/delay", &x[i]);
    cr_assert_eq(x[2].errors, 0, "reported from the loop");
    struct many m = {x, 3};
    cr_assert(run_until(all_finished, &m, 5000));
    cr_assert_eq(x[0].status, 200);
    cr_assert_eq(x[1].status, 200);
    cr_assert_eq(x[2].errors, 1);
    cr_assert_eq(x[2].err_status, 503);
    cr_assert_str_eq(x[2].err_reason, "CMGConnector_Busy");
    cr_assert_eq(stats.failures, 1);
    up_pool_free(p);
}

Test(upstream, queue_wait_is_bounded)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 200);
    struct res x[2];
    /* a paused response holds the only connection (no timeout runs while paused) */
    get(p, "GET", "/big?n=100000000", &x[0]);
    x[0].pause_on_body = true;
    get(p, "GET", "/hello", &x[1]);
    cr_assert(run_until(res_finished, &x[1], 3000));
    cr_assert_eq(x[1].err_status, 503);
    cr_assert_str_eq(x[1].err_reason, "CMGConnector_Busy");
    cr_assert_eq(x[0].dones + x[0].errors, 0);
    up_req_cancel(x[0].r);
    up_pool_free(p);
}

Test(upstream, idle_connections_expire_and_max_idle)
{
    char url[128], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", srv.port);
    struct up_endpoint_cfg cfg = {.base_url = url,
                                  .max_connections = 2,
                                  .max_idle = 1,
                                  .max_queue = 2,
                                  .idle_timeout_ms = 100};
    struct up_pool *p = up_pool_new(base, &cfg, &stats, err, sizeof(err));
    cr_assert_not_null(p, "%s", err);
    struct res x[2];
    get(p, "GET", "/delay", &x[0]);
    get(p, "GET", "/delay", &x[1]);
    struct many m = {x, 2};
    cr_assert(run_until(all_finished, &m, 3000));
    cr_assert_eq(stats.connections_opened, 2);
    run_ms(20);
    cr_assert_eq(stats.idle_connections, 1, "max_idle 1: the second one is closed");
    cr_assert_eq(stats.open_connections, 1);
    run_ms(250);
    cr_assert_eq(stats.idle_connections, 0, "idle_timeout");
    cr_assert_eq(stats.open_connections, 0);
    run_ms(50);
    cr_assert_eq(srv.open, 0);
    up_pool_free(p);

    /* max_idle 0: nothing is kept */
    cfg.max_idle = 0;
    p = up_pool_new(base, &cfg, &stats, err, sizeof(err));
    get(p, "GET", "/hello", &x[0]);
    cr_assert(run_until(res_finished, &x[0], 3000));
    get(p, "GET", "/hello", &x[0]);
    cr_assert(run_until(res_finished, &x[0], 3000));
    cr_assert_eq(x[0].status, 200);
    cr_assert_eq(stats.connections_reused, 0);
    up_pool_free(p);
}

Test(upstream, connect_refused_is_502)
{
    struct up_pool *p = pool_for("127.0.0.1", closed_port(), "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.err_status, 502);
    cr_assert_str_eq(x.err_reason, "CMGConnector_BadGateway");
    cr_assert_eq(stats.open_connections, 0);
    cr_assert_eq(stats.failures, 1);
    up_pool_free(p);
}

Test(upstream, response_timeout_is_504)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 200);
    struct res x;
    uint64_t t0 = core_now_ms();
    get(p, "GET", "/slow", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.err_status, 504);
    cr_assert_str_eq(x.err_reason, "CMGConnector_GatewayTimeout");
    uint64_t took = core_now_ms() - t0;
    cr_assert(took >= 190 && took < 1500, "took %llu ms", (unsigned long long)took);
    run_ms(20);
    cr_assert_eq(stats.open_connections, 0, "a timed-out connection is not reused");
    up_pool_free(p);
}

Test(upstream, keep_alive_race_is_retried)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(stats.idle_connections, 1);
    /* the server drops the kept connection as the next request arrives on it */
    srv.close_on_reuse = true;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
    cr_assert_eq(x.status, 200);
    cr_assert_eq(stats.connections_opened, 2);
    cr_assert_eq(stats.failures, 0);
    /* the same with a body, which must go out again in full */
    memset(&x, 0, sizeof(x));
    x.r = up_request(p, "POST", "/size", NULL, 0, true, 100000, &cbs, &x);
    x.to_send = 100000;
    pump(&x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
    cr_assert(memcmp(x.body, "size=100000", 11) == 0, "%.*s", (int)x.body_len, x.body);
    cr_assert_eq(stats.connections_opened, 3);
    cr_assert_eq(stats.failures, 0);
    up_pool_free(p);
}

Test(upstream, retry_only_once)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    /* the kept connection is dropped as the request arrives, and nothing listens any more:
     * the one retry fails to connect, and that is the answer */
    srv.close_on_reuse = true;
    evconnlistener_free(srv.lis);
    srv.lis = NULL;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.err_status, 502);
    cr_assert_eq(stats.connections_opened, 1);
    cr_assert_eq(stats.open_connections, 0);
    up_pool_free(p);
}

Test(upstream, pause_stalls_the_upstream)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    const uint64_t total = 64u << 20;
    char path[64];
    snprintf(path, sizeof(path), "/big?n=%llu", (unsigned long long)total);
    get(p, "GET", path, &x);
    x.pause_on_body = true;
    run_ms(300); /* the first body bytes come, the pause stops reading, buffers fill */
    cr_assert_eq(x.heads, 1);
    size_t got = x.body_len;
    uint64_t queued = srv.big_queued;
    cr_assert_gt(got, 0);
    run_ms(300);
    cr_assert_eq(x.body_len, got, "no body while paused");
    cr_assert_eq(srv.big_queued, queued, "the server's writes stall while paused");
    cr_assert_lt(queued, total);
    cr_assert_eq(x.dones + x.errors, 0, "a pause is not a timeout");
    up_req_pause(x.r, false);
    cr_assert(run_until(res_finished, &x, 20000));
    cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
    cr_assert_eq(x.body_len, total);
    up_pool_free(p);
}

Test(upstream, pause_longer_than_response_timeout)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 150);
    struct res x;
    get(p, "GET", "/big?n=4000000", &x);
    x.pause_on_body = true;
    run_ms(400);
    cr_assert_eq(x.dones + x.errors, 0);
    up_req_pause(x.r, false);
    cr_assert(run_until(res_finished, &x, 5000));
    cr_assert_eq(x.dones, 1);
    cr_assert_eq(x.body_len, 4000000);
    up_pool_free(p);
}

Test(upstream, cancel_mid_response)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/big?n=8000000", &x);
    x.cancel_on_body = true;
    run_ms(200);
    cr_assert(x.cancelled);
    cr_assert_eq(x.calls_after_cancel, 0);
    cr_assert_eq(stats.open_connections, 0, "a half-read response means closing");
    cr_assert_eq(stats.concurrent, 0);
    run_ms(100);
    cr_assert_eq(srv.open, 0, "the server saw the close");
    cr_assert_eq(x.calls_after_cancel, 0);

    /* cancelled from outside a callback, while paused */
    get(p, "GET", "/big?n=8000000", &x);
    x.pause_on_body = true;
    run_ms(100);
    cr_assert_eq(x.heads, 1);
    x.cancelled = true;
    up_req_cancel(x.r);
    run_ms(100);
    cr_assert_eq(x.calls_after_cancel, 0);
    cr_assert_eq(stats.open_connections, 0);

    /* cancelled while queued and while connecting: nothing more is heard */
    struct res q[3];
    for (int i = 0; i < 3; i++)
        get(p, "GET", "/delay", &q[i]);
    up_req_cancel(q[0].r); /* connecting */
    up_req_cancel(q[2].r); /* queued behind max_connections 2 */
    struct many m = {&q[1], 1};
    cr_assert(run_until(all_finished, &m, 3000));
    run_ms(100);
    cr_assert_eq(q[0].heads + q[0].dones + q[0].errors, 0);
    cr_assert_eq(q[2].heads + q[2].dones + q[2].errors, 0);
    cr_assert_eq(stats.concurrent, 0);
    up_pool_free(p);
}

Test(upstream, cancel_after_complete_response_keeps_connection)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    struct res x;
    get(p, "GET", "/hello", &x);
    x.pause_on_body = true; /* the whole response is read; on_done waits for the resume */
    run_ms(200);
    cr_assert_eq(x.body_len, 11);
    cr_assert_eq(x.dones, 0);
    up_req_cancel(x.r);
    cr_assert_eq(stats.idle_connections, 1, "the response was complete: kept");
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(stats.connections_opened, 1);
    up_pool_free(p);
}

Test(upstream, pool_free_with_everything_in_flight)
{
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 1, 1, 4, 5000);
    struct res x[3];
    get(p, "GET", "/slow", &x[0]);
    get(p, "GET", "/slow", &x[1]);
    run_ms(50);
    get(p, "GET", "/hello", &x[2]);
    up_pool_free(p);
    run_ms(100);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(x[i].heads + x[i].dones + x[i].errors, 0);
}

Test(upstream, stats_line)
{
    struct up_stats s = {.requests = 10,
                         .requests_with_bearer = 3,
                         .bytes_to_upstream = 100,
                         .bytes_from_upstream = 2000,
                         .failures = 1,
                         .max_concurrent = 4};
    char buf[256];
    up_stats_format(&s, buf, sizeof(buf));
    cr_assert_str_eq(buf, "TotalRequests=10 TotalRequestsWithBearerToken=3 "
                          "MaxConcurrentRequests=4 TotalRequestBytes=100 "
                          "TotalResponseBytes=2000 Failures=1");
}

Test(upstream, bad_configuration)
{
    char err[512];
    struct up_endpoint_cfg cfg = {.base_url = "ftp://mp"};
    cr_assert_null(up_pool_new(base, &cfg, &stats, err, sizeof(err)));
    cr_assert(strstr(err, "ftp://mp"), "%s", err);
    cfg.base_url = "https://mp.contoso.com";
    cfg.ca_file = "/nonexistent/ca.pem";
    cr_assert_null(up_pool_new(base, &cfg, &stats, err, sizeof(err)));
    cr_assert(strstr(err, "/nonexistent/ca.pem"), "%s", err);
    cfg.base_url = "http://mp.contoso.com?x";
    cfg.ca_file = NULL;
    cr_assert_null(up_pool_new(base, &cfg, &stats, err, sizeof(err)));
}

/* ---- an HTTP CONNECT proxy ---- */

struct proxy {
    struct evconnlistener *lis;
    unsigned port;
    char last_request[2048];
    unsigned connects;
    const char *require_auth; /* the Proxy-Authorization value wanted, or NULL */
    struct pconn *conns;
};

struct pconn {
    struct proxy *px;
    struct pconn *next;
    struct bufferevent *client, *target;
    bool tunneled;
};

static void pconn_free(struct pconn *pc)
{
    struct pconn **pp = &pc->px->conns;
    while (*pp && *pp != pc)
        pp = &(*pp)->next;
    if (*pp)
        *pp = pc->next;
    if (pc->client)
        bufferevent_free(pc->client);
    if (pc->target)
        bufferevent_free(pc->target);
    free(pc);
}

static void pconn_relay_cb(struct bufferevent *bev, void *arg)
{
    struct pconn *pc = arg;
    struct bufferevent *other = bev == pc->client ? pc->target : pc->client;
    evbuffer_add_buffer(bufferevent_get_output(other), bufferevent_get_input(bev));
}

static void pconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct pconn *pc = arg;
    if (bev == pc->target && (what & BEV_EVENT_CONNECTED)) {
        const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        bufferevent_write(pc->client, ok, sizeof(ok) - 1);
        pc->tunneled = true;
        bufferevent_setcb(pc->client, pconn_relay_cb, NULL, pconn_event_cb, pc);
        bufferevent_setcb(pc->target, pconn_relay_cb, NULL, pconn_event_cb, pc);
        bufferevent_enable(pc->target, EV_READ | EV_WRITE);
        pconn_relay_cb(pc->client, pc); /* anything that came early */
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        pconn_free(pc);
}

static void pconn_close_after_write_cb(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        pconn_free(arg);
}

static void pconn_head_cb(struct bufferevent *bev, void *arg)
{
    struct pconn *pc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (pos.pos < 0)
        return;
    size_t hl = (size_t)pos.pos + 4;
    char head[2048];
    if (hl >= sizeof(head)) {
        pconn_free(pc);
        return;
    }
    evbuffer_remove(in, head, hl);
    head[hl] = '\0';
    snprintf(pc->px->last_request, sizeof(pc->px->last_request), "%s", head);
    pc->px->connects++;
    char v[256];
    if (pc->px->require_auth && (!head_value(head, "Proxy-Authorization", v, sizeof(v)) ||
                                 strcmp(v, pc->px->require_auth) != 0)) {
        const char no[] = "HTTP/1.1 407 Proxy Authentication Required\r\n"
                          "Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
        bufferevent_write(bev, no, sizeof(no) - 1);
        bufferevent_setcb(bev, NULL, pconn_close_after_write_cb, pconn_event_cb, pc);
        return;
    }
    unsigned port = 0;
    char host[128];
    if (sscanf(head, "CONNECT %127[^:]:%u HTTP/1.1", host, &port) != 2) {
        pconn_free(pc);
        return;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sin.sin_addr);
    pc->target = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(pc->target, NULL, NULL, pconn_event_cb, pc);
    bufferevent_setcb(pc->client, NULL, NULL, pconn_event_cb, pc);
    if (bufferevent_socket_connect(pc->target, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        pconn_free(pc);
}

static void proxy_accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                            int salen, void *arg)
{
    (void)lis;
    (void)sa;
    (void)salen;
    struct pconn *pc = calloc(1, sizeof(*pc));
    pc->px = arg;
    pc->next = pc->px->conns;
    pc->px->conns = pc;
    pc->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(pc->client, pconn_head_cb, NULL, pconn_event_cb, pc);
    bufferevent_enable(pc->client, EV_READ | EV_WRITE);
}

static struct proxy px;

static void proxy_setup(void)
{
    srv_setup();
    memset(&px, 0, sizeof(px));
    px.lis = listen_loopback(proxy_accept_cb, &px);
    px.port = listener_port(px.lis);
}

static void proxy_teardown(void)
{
    while (px.conns)
        pconn_free(px.conns);
    evconnlistener_free(px.lis);
    srv_teardown();
}

struct dial_res {
    bool called;
    int fd;
    char err[512];
};

static void dial_done(int fd, const char *err, void *ctx)
{
    struct dial_res *d = ctx;
    d->called = true;
    d->fd = fd;
    snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
}

static bool dial_finished(void *arg)
{
    return ((struct dial_res *)arg)->called;
}

TestSuite(dial, .init = proxy_setup, .fini = proxy_teardown, .timeout = 30);

Test(dial, direct_and_localhost)
{
    struct dial_res d = {0};
    struct dial *dl = dial_start(base, NULL, "localhost", srv.port, NULL, 2000, dial_done, &d);
    cr_assert_not_null(dl);
    cr_assert_not(d.called, "never from inside dial_start");
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_geq(d.fd, 0, "%s", d.err);
    close(d.fd);

    memset(&d, 0, sizeof(d));
    dial_start(base, NULL, "127.0.0.1", closed_port(), NULL, 2000, dial_done, &d);
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_eq(d.fd, -1);
    cr_assert(strstr(d.err, "refused"), "%s", d.err);

    /* a name needs a resolver; a bad proxy URL is refused at once */
    cr_assert_null(dial_start(base, NULL, "mp.contoso.com", 80, NULL, 2000, dial_done, &d));
    cr_assert_null(dial_start(base, NULL, "127.0.0.1", 80, "socks5://x:1", 2000, dial_done, &d));

    /* cancelled: never called */
    memset(&d, 0, sizeof(d));
    dl = dial_start(base, NULL, "127.0.0.1", srv.port, NULL, 2000, dial_done, &d);
    dial_cancel(dl);
    run_ms(50);
    cr_assert_not(d.called);
}

/* Names go through evdns; a hosts file of the test's own keeps it off the network. */
static struct evdns_base *test_dns(char *path, size_t len)
{
    snprintf(path, len, "/tmp/cmg-hosts-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char hosts[] = "127.0.0.1 mp.cmg.test\n";
    cr_assert_eq(write(fd, hosts, sizeof(hosts) - 1), (ssize_t)(sizeof(hosts) - 1));
    close(fd);
    struct evdns_base *dns = evdns_base_new(base, 0);
    cr_assert_not_null(dns);
    cr_assert_eq(evdns_base_load_hosts(dns, path), 0);
    return dns;
}

Test(dial, names_through_evdns)
{
    char hosts[64];
    struct evdns_base *dns = test_dns(hosts, sizeof(hosts));
    struct dial_res d = {0};
    cr_assert_not_null(dial_start(base, dns, "mp.cmg.test", srv.port, NULL, 2000, dial_done, &d));
    cr_assert_not(d.called);
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_geq(d.fd, 0, "%s", d.err);
    close(d.fd);

    /* a pool on a name, with the caller's resolver */
    char url[128], err[256];
    snprintf(url, sizeof(url), "http://mp.cmg.test:%u", srv.port);
    struct up_endpoint_cfg cfg = {.base_url = url, .max_connections = 1, .max_idle = 1};
    struct up_pool *p = up_pool_new(base, &cfg, &stats, err, sizeof(err));
    cr_assert_not_null(p, "%s", err);
    up_pool_set_dns(p, dns);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.status, 200, "%d %s", x.err_status, x.err_reason);
    char v[64], want[64];
    snprintf(want, sizeof(want), "mp.cmg.test:%u", srv.port);
    cr_assert_str_eq(head_value(srv.last_head, "Host", v, sizeof(v)), want);
    up_pool_free(p);

    /* a name nobody knows (no name servers here): an error, from the loop */
    memset(&d, 0, sizeof(d));
    struct dial *dl = dial_start(base, dns, "nowhere.cmg.test", 80, NULL, 2000, dial_done, &d);
    cr_assert_not_null(dl);
    cr_assert_not(d.called);
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_eq(d.fd, -1);
    cr_assert(strstr(d.err, "nowhere.cmg.test"), "%s", d.err);
    evdns_base_free(dns, 0);
    unlink(hosts);
}

Test(dial, through_connect_proxy)
{
    char proxy[128];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%u", px.port);
    struct dial_res d = {0};
    cr_assert_not_null(dial_start(base, NULL, "127.0.0.1", srv.port, proxy, 2000, dial_done, &d));
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_geq(d.fd, 0, "%s", d.err);
    char want[128];
    snprintf(want, sizeof(want), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n", srv.port);
    cr_assert(strncmp(px.last_request, want, strlen(want)) == 0, "%s", px.last_request);
    char v[64];
    cr_assert_null(head_value(px.last_request, "Proxy-Authorization", v, sizeof(v)));
    /* the fd is the tunnel: an HTTP exchange goes through */
    const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(send(d.fd, req, sizeof(req) - 1, 0), (ssize_t)(sizeof(req) - 1));
    char buf[256] = "";
    size_t got = 0;
    uint64_t end = core_now_ms() + 2000;
    while (!strstr(buf, "hello world") && core_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE);
        ssize_t n = recv(d.fd, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
    }
    cr_assert(strstr(buf, "hello world"), "%s", buf);
    close(d.fd);
}

Test(dial, proxy_basic_auth)
{
    /* base64("user:p@ss w") */
    px.require_auth = "Basic dXNlcjpwQHNzIHc=";
    char proxy[128];
    snprintf(proxy, sizeof(proxy), "http://user:p%%40ss%%20w@127.0.0.1:%u", px.port);
    struct dial_res d = {0};
    dial_start(base, NULL, "127.0.0.1", srv.port, proxy, 2000, dial_done, &d);
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_geq(d.fd, 0, "%s", d.err);
    char v[128];
    cr_assert_str_eq(head_value(px.last_request, "Proxy-Authorization", v, sizeof(v)),
                     "Basic dXNlcjpwQHNzIHc=");
    close(d.fd);

    /* wrong credentials: 407, said so */
    snprintf(proxy, sizeof(proxy), "http://user:wrong@127.0.0.1:%u", px.port);
    memset(&d, 0, sizeof(d));
    dial_start(base, NULL, "127.0.0.1", srv.port, proxy, 2000, dial_done, &d);
    cr_assert(run_until(dial_finished, &d, 3000));
    cr_assert_eq(d.fd, -1);
    cr_assert(strstr(d.err, "407"), "%s", d.err);
}

Test(dial, pool_through_proxy)
{
    px.require_auth = "Basic dXNlcjpwdw=="; /* user:pw */
    struct up_pool *p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    char proxy[128], err[256];
    snprintf(proxy, sizeof(proxy), "http://user:pw@127.0.0.1:%u", px.port);
    cr_assert_eq(up_pool_set_proxy(p, proxy, err, sizeof(err)), 0, "%s", err);
    struct res x;
    for (int i = 0; i < 3; i++) {
        get(p, "GET", "/hello", &x);
        cr_assert(run_until(res_finished, &x, 3000));
        cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
        cr_assert_eq(x.body_len, 11);
    }
    cr_assert_eq(px.connects, 1, "one tunnel, kept alive");
    cr_assert_eq(stats.connections_opened, 1);
    char want[128];
    snprintf(want, sizeof(want), "CONNECT 127.0.0.1:%u HTTP/1.1\r\n", srv.port);
    cr_assert(strncmp(px.last_request, want, strlen(want)) == 0, "%s", px.last_request);

    /* a proxy that refuses: 502 */
    up_pool_free(p);
    p = pool_for("127.0.0.1", srv.port, "", 2, 2, 4, 5000);
    snprintf(proxy, sizeof(proxy), "http://user:nope@127.0.0.1:%u", px.port);
    cr_assert_eq(up_pool_set_proxy(p, proxy, err, sizeof(err)), 0);
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 3000));
    cr_assert_eq(x.err_status, 502);
    cr_assert_eq(up_pool_set_proxy(p, "https://proxy:1", err, sizeof(err)), -1);
    up_pool_free(p);
}

Test(dial, url_parsing)
{
    struct up_url u;
    char err[256];
    cr_assert_eq(up_url_parse("http://mp.contoso.com:8080/base/", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.host, "mp.contoso.com");
    cr_assert_eq(u.port, 8080);
    cr_assert(u.has_port);
    cr_assert_str_eq(u.path, "/base");
    cr_assert_eq(up_url_parse("HTTPS://[2001:db8::1]", &u, err, sizeof(err)), 0);
    cr_assert(u.is_https);
    cr_assert_str_eq(u.host, "2001:db8::1");
    cr_assert_eq(u.port, 443);
    cr_assert_not(u.has_port);
    cr_assert_eq(up_url_parse("http://a%3Ab:c%40d@proxy:3128", &u, err, sizeof(err)), 0);
    cr_assert_str_eq(u.user, "a:b");
    cr_assert_str_eq(u.pass, "c@d");
    cr_assert_str_eq(u.host, "proxy");
    const char *bad[] = {"mp.contoso.com",    "http://",          "http://mp:0",
                         "http://mp:99999",   "http://mp:8a",     "http://mp/x?y",
                         "http://[::1",       "http://m p",       "http://mp/a b",
                         "http://u:%zz@mp:1", "http://[nothex]:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(up_url_parse(bad[i], &u, err, sizeof(err)), -1, "%s", bad[i]);
}

/* ---- HTTPS upstreams ---- */

static char pki[64];

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static SSL_CTX *server_ctx(bool require_client_cert)
{
    char a[128], b[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    snprintf(a, sizeof(a), "%s/server-chain.pem", pki);
    snprintf(b, sizeof(b), "%s/server.key", pki);
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, a), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, b, SSL_FILETYPE_PEM), 1);
    if (require_client_cert) {
        snprintf(a, sizeof(a), "%s/ca-chain.pem", pki);
        cr_assert_eq(SSL_CTX_load_verify_locations(ctx, a, NULL), 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

static void tls_setup(void)
{
    loop_setup();
    snprintf(pki, sizeof(pki), "/tmp/cmg-upstream-XXXXXX");
    cr_assert_not_null(mkdtemp(pki));
    struct tls_devpki_opts o = {
        .service_name = "mp.cmg.test", .pfx_password = "x", .valid_days = 5};
    char err[512];
    cr_assert_eq(tls_devpki_init(pki, &o, err, sizeof(err)), 0, "%s", err);
}

static void tls_teardown(void)
{
    nftw(pki, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    loop_teardown();
}

static struct up_pool *tls_pool(const char *host, unsigned port, const char *ca, bool with_cert)
{
    char url[128], caf[128], cert[128], key[128], err[512] = "";
    snprintf(url, sizeof(url), "https://%s:%u", host, port);
    snprintf(caf, sizeof(caf), "%s/%s", pki, ca);
    snprintf(cert, sizeof(cert), "%s/client-valid.crt", pki);
    snprintf(key, sizeof(key), "%s/client-valid.key", pki);
    struct up_endpoint_cfg cfg = {
        .base_url = url,
        .ca_file = caf,
        .cert_file = with_cert ? cert : NULL,
        .key_file = with_cert ? key : NULL,
        .max_connections = 2,
        .max_idle = 2,
        .max_queue = 4,
        .connect_timeout_ms = 3000,
        .response_timeout_ms = 3000,
    };
    memset(&stats, 0, sizeof(stats));
    struct up_pool *p = up_pool_new(base, &cfg, &stats, err, sizeof(err));
    cr_assert_not_null(p, "%s", err);
    return p;
}

TestSuite(tls, .init = tls_setup, .fini = tls_teardown, .timeout = 60);

Test(tls, https_get_and_reuse)
{
    SSL_CTX *sctx = server_ctx(false);
    srv_start(&srv, sctx);
    const char *hosts[] = {"127.0.0.1", "localhost"};
    for (int h = 0; h < 2; h++) {
        struct up_pool *p = tls_pool(hosts[h], srv.port, "root-ca.crt", false);
        struct res x;
        for (int i = 0; i < 3; i++) {
            get(p, "GET", "/chunked", &x);
            cr_assert(run_until(res_finished, &x, 5000));
            cr_assert_eq(x.dones, 1, "%s: %d %s", hosts[h], x.err_status, x.err_reason);
            cr_assert_eq(x.body_len, 11);
        }
        cr_assert_eq(stats.connections_opened, 1);
        /* a streamed body over TLS */
        memset(&x, 0, sizeof(x));
        x.r = up_request(p, "POST", "/size", NULL, 0, true, -1, &cbs, &x);
        x.to_send = 1u << 20;
        x.end_when_sent = true;
        pump(&x);
        cr_assert(run_until(res_finished, &x, 5000));
        cr_assert(memcmp(x.body, "size=1048576", 12) == 0, "%.*s", (int)x.body_len, x.body);
        up_pool_free(p);
    }
    srv_stop(&srv);
    SSL_CTX_free(sctx);
}

Test(tls, untrusted_server_is_502)
{
    SSL_CTX *sctx = server_ctx(false);
    srv_start(&srv, sctx);
    /* a trust list without the server's root */
    struct up_pool *p = tls_pool("127.0.0.1", srv.port, "token-signing.crt", false);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 5000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.err_status, 502);
    up_pool_free(p);
    srv_stop(&srv);
    SSL_CTX_free(sctx);
}

Test(tls, client_certificate_required)
{
    SSL_CTX *sctx = server_ctx(true);
    srv_start(&srv, sctx);
    struct up_pool *p = tls_pool("localhost", srv.port, "root-ca.crt", false);
    struct res x;
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 5000));
    cr_assert_eq(x.errors, 1);
    cr_assert_eq(x.err_status, 403);
    cr_assert_str_eq(x.err_reason, "CMGConnector_Clientcertificaterequired");
    up_pool_free(p);

    /* with the certificate configured, it goes through */
    p = tls_pool("localhost", srv.port, "root-ca.crt", true);
    get(p, "GET", "/hello", &x);
    cr_assert(run_until(res_finished, &x, 5000));
    cr_assert_eq(x.dones, 1, "%d %s", x.err_status, x.err_reason);
    cr_assert_eq(x.status, 200);
    up_pool_free(p);
    srv_stop(&srv);
    SSL_CTX_free(sctx);
}

/* ---- the response reader on its own ---- */

struct rp_out {
    int status;
    char reason[64];
    char headers[1024];
    char body[1024];
    size_t body_len;
    int heads;
    bool done, error, keep_alive;
    const char *why;
    size_t extra; /* bytes left after DONE */
};

/* Feeds `in` in pieces of `step` bytes (0: all at once), then EOF if asked. */
static void rp_run(const char *in, size_t step, bool head_req, bool eof, struct rp_out *o)
{
    struct respparse rp;
    respparse_init(&rp, head_req);
    memset(o, 0, sizeof(*o));
    size_t len = strlen(in), off = 0;
    while (!o->done && !o->error) {
        size_t n = step && len - off > step ? step : len - off;
        const char *data = in + off;
        size_t left = n;
        for (;;) {
            size_t used;
            enum respparse_event ev = respparse_feed(&rp, data, left, &used);
            data += used;
            left -= used;
            if (ev == RESPPARSE_NEED_MORE)
                break;
            if (ev == RESPPARSE_HEAD) {
                o->heads++;
                o->status = rp.status;
                size_t rl;
                const char *r = respparse_reason(&rp, &rl);
                snprintf(o->reason, sizeof(o->reason), "%.*s", (int)rl, r);
                size_t ho = 0;
                for (size_t i = 0; i < rp.nheaders; i++)
                    ho += (size_t)snprintf(o->headers + ho, sizeof(o->headers) - ho, "%.*s=%.*s;",
                                           (int)rp.headers[i].name_len, rp.headers[i].name,
                                           (int)rp.headers[i].value_len, rp.headers[i].value);
            } else if (ev == RESPPARSE_BODY) {
                memcpy(o->body + o->body_len, rp.body, rp.body_len);
                o->body_len += rp.body_len;
            } else if (ev == RESPPARSE_DONE) {
                o->done = true;
                o->keep_alive = rp.keep_alive;
                o->extra = left + (len - off - n);
                break;
            } else {
                o->error = true;
                o->why = rp.error;
                break;
            }
        }
        off += n;
        if (off >= len && !o->done && !o->error) {
            if (eof) {
                enum respparse_event ev = respparse_eof(&rp);
                if (ev == RESPPARSE_DONE) {
                    o->done = true;
                    o->keep_alive = rp.keep_alive;
                } else {
                    o->error = true;
                    o->why = rp.error;
                }
            }
            break;
        }
    }
    respparse_deinit(&rp);
}

struct rp_case {
    const char *in;
    bool head_req, eof;
    int status; /* 0: an error is expected */
    const char *body;
    bool keep_alive;
    const char *headers; /* expected filtered fields, or NULL to skip */
};

static const struct rp_case rp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, false, 200, "hello", true,
     "Content-Length=5;"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n"
     "Trailer-A: 1\r\n\r\n",
     false, false, 200, "abcde", true, ""},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false, 200, "", true, NULL},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", false, false,
     201, "", true, "Content-Length=0;"},
    {"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", false, false, 204, "", true, NULL},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", false, false, 304, "", true, NULL},
    {"HTTP/1.1 200 OK\r\n\r\nto the end", false, true, 200, "to the end", false, ""},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, false, 200, "x", false, NULL},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", false, false, 200,
     "x", true, "Content-Length=1;"},
    {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", false, false, 200, "x",
     false, "Content-Length=1;"},
    {"HTTP/1.1 200 OK\r\nConnection: x-a, x-b\r\nX-A: 1\r\nx-b: 2\r\nX-C: 3\r\nTE: t\r\n"
     "Upgrade: h2\r\nProxy-Connection: k\r\nContent-Length: 0\r\n\r\n",
     false, false, 200, "", true, "X-C=3;Content-Length=0;"},
    {"HTTP/1.1 403 Forbidden: no\r\nContent-Length: 0\r\n\r\n", false, false, 403, "", true, NULL},
    /* refused */
    {"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false, false, 0, NULL, false,
     NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", false, false, 0, NULL,
     false, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false,
     false, 0, NULL, false, NULL},
    {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", false,
     false, 0, NULL, false, NULL},
    {"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, false, 0, NULL, false, NULL},
    {"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n", false, false, 0, NULL, false,
     NULL},
    {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false, true, 0, NULL, false, NULL},
    {"HTTP/1.1 200 OK\r\nContent-Le", false, true, 0, NULL, false, NULL},
    {"", false, true, 0, NULL, false, NULL},
    {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", false, false, 0, NULL, false, NULL},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, false, 0, NULL, false,
     NULL},
};

TestSuite(respparse);

Test(respparse, vectors_in_every_split)
{
    for (size_t i = 0; i < sizeof(rp_cases) / sizeof(rp_cases[0]); i++) {
        const struct rp_case *c = &rp_cases[i];
        size_t steps[] = {0, 1, 2, 3, 7, 16};
        for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
            struct rp_out o;
            rp_run(c->in, steps[s], c->head_req, c->eof, &o);
            if (!c->status) {
                cr_assert(o.error, "case %zu step %zu: expected an error", i, steps[s]);
                continue;
            }
            cr_assert(o.done, "case %zu step %zu: %s", i, steps[s], o.why ? o.why : "not done");
            cr_assert_eq(o.heads, 1, "case %zu", i);
            cr_assert_eq(o.status, c->status, "case %zu", i);
            cr_assert_eq(o.body_len, strlen(c->body), "case %zu step %zu", i, steps[s]);
            cr_assert(memcmp(o.body, c->body, o.body_len) == 0, "case %zu", i);
            cr_assert_eq(o.keep_alive, c->keep_alive, "case %zu", i);
            if (c->headers)
                cr_assert_str_eq(o.headers, c->headers, "case %zu", i);
        }
    }
}

Test(respparse, reason_phrase_kept_as_sent)
{
    struct rp_out o;
    rp_run("HTTP/1.1 403 Forbidden: no\r\nContent-Length: 0\r\n\r\n", 0, false, false, &o);
    cr_assert_str_eq(o.reason, "Forbidden: no");
    rp_run("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 0, false, false, &o);
    cr_assert(o.done);
    cr_assert_str_eq(o.reason, "");
}

Test(respparse, bytes_after_the_response_are_left)
{
    struct rp_out o;
    rp_run("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1", 0, false, false, &o);
    cr_assert(o.done);
    cr_assert_eq(o.extra, 8);
}

Test(respparse, head_size_is_bounded)
{
    size_t n = RESPPARSE_MAX_HEAD_BYTES + 1000;
    char *in = malloc(n + 64);
    strcpy(in, "HTTP/1.1 200 OK\r\nX-Big: ");
    size_t l = strlen(in);
    memset(in + l, 'a', n);
    in[l + n] = '\0';
    struct rp_out o;
    rp_run(in, 4096, false, false, &o);
    cr_assert(o.error);
    free(in);
}
