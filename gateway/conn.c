/* Client connections: TLS handshake, HTTP/1.1 keep-alive and pipelining with responses in
 * order, timeouts, backpressure, lingering close. All on the owning worker's loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "conn.h"
#include "tls.h"

#define GW_LINGER_MS 2000
#define GW_READ_BUDGET 8   /* SSL_read calls per wake-up before yielding to other connections */
#define GW_FLUSH_REFILLS 4 /* content windows written per wake-up (4 x 256 KiB) */

static void gw_conn_event_cb(evutil_socket_t fd, short what, void *arg);
static void gw_conn_log_request(struct gw_conn *c, int status);
static void gw_conn_adopt_here(struct gw_conn *c);
static void gw_conn_resume(struct gw_conn *c);
static int gw_conn_flush(struct gw_conn *c);
static int gw_conn_read(struct gw_conn *c);

static const char *gw_peer_str(const struct gw_conn *c, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (c->peer.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &c->peer.sin.sin_addr, ip, sizeof(ip));
        port = ntohs(c->peer.sin.sin_port);
        snprintf(buf, len, "%s:%u", ip, port);
    } else if (c->peer.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &c->peer.sin6.sin6_addr, ip, sizeof(ip));
        port = ntohs(c->peer.sin6.sin6_port);
        snprintf(buf, len, "[%s]:%u", ip, port);
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

/* The earlier of the state's deadline and the send deadline. */
static uint64_t gw_conn_due(const struct gw_conn *c)
{
    return c->send_deadline && c->send_deadline < c->deadline ? c->send_deadline : c->deadline;
}

/* (Re)registers the connection's event for `what` and arms its deadline. */
static void gw_conn_watch(struct gw_conn *c, short what)
{
    uint64_t now = core_now_ms();
    uint64_t due = gw_conn_due(c);
    uint64_t ms = due > now ? due - now : 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    if (what != c->ev_what) {
        if (c->ev_what)
            event_del(&c->ev);
        event_assign(&c->ev, c->w->base, c->fd, what | EV_PERSIST, gw_conn_event_cb, c);
        c->ev_what = what;
    }
    event_add(&c->ev, &tv);
}

static void gw_conn_free(struct gw_conn *c, const char *why)
{
    struct gw_worker *w = c->w;
    if (c->ev_what)
        event_del(&c->ev);
    if (w->snap->cfg.log_connections && why) {
        char peer[64];
        LOG_INFO("c%u.%llu closed: %s (%u requests, %llu ms, from %s)", c->w->id,
                 (unsigned long long)c->id, why, c->nrequests,
                 (unsigned long long)(core_now_ms() - c->started_ms),
                 gw_peer_str(c, peer, sizeof(peer)));
    }
    gw_proxy_abort(c);
    gw_content_release(c);
    if (c->move_to) { /* still queued for a hand-over: out of the queue */
        struct gw_conn **pp = &w->moving.head;
        while (*pp && *pp != c)
            pp = &(*pp)->move_next;
        if (*pp)
            *pp = c->move_next;
        c->move_to = NULL;
    }
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    httpreq_deinit(&c->req);
    free(c->in);
    free(c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns.head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->conns.count--;
    GW_DEC(w->metrics.conn_open);
    gw_snapshot_unref(c->snap);
    free(c);
    gw_worker_conn_gone(w);
}

/* Sends close_notify, half-closes, and reads (discarding) for a moment, so that a client still
 * sending does not get a reset that would destroy the response it has not read yet. */
static void gw_conn_linger(struct gw_conn *c, const char *why)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = GW_CS_LINGER;
    c->deadline = core_now_ms() + GW_LINGER_MS;
    if (c->w->snap->cfg.log_connections)
        LOG_VERBOSE("c%u.%llu closing: %s", c->w->id, (unsigned long long)c->id, why);
    gw_conn_watch(c, EV_READ);
}

static void gw_conn_out_reserve(struct gw_conn *c, size_t more)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_off && (size_t)c->out_len + more > c->out_cap) {
        /* what was written makes room: a stream that never drains completely must not grow
         * the buffer by all it ever sent (the TLS layer accepts a moved write buffer) */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if ((size_t)c->out_len + more <= c->out_cap)
        return;
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap < (size_t)c->out_len + more)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        abort(); /* allocation failure of a few KiB: the process cannot go on sensibly */
    c->out = p;
    c->out_cap = (uint32_t)cap;
}

static void gw_conn_out_append(struct gw_conn *c, const char *data, size_t len)
{
    gw_conn_out_reserve(c, len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
}

static bool gw_conn_keep_alive(struct gw_conn *c, int status)
{
    const struct gw_config *cfg = &c->snap->cfg;
    if (c->close_after || c->draining || c->w->draining || !c->req.keep_alive || c->req.upgrade)
        return false;
    if (status == 400 || status == 408 || status == 413 || status == 431 || status == 501 ||
        status == 505 || status == 417)
        return false;
    if (cfg->max_keepalive_requests && c->nrequests + 1 >= cfg->max_keepalive_requests)
        return false;
    return true;
}

void gw_conn_respond(struct gw_conn *c, int status, const char *reason, const char *ctype,
                     const char *body, size_t body_len, const char *extra)
{
    bool keep = gw_conn_keep_alive(c, status);
    bool head = c->req.method == HTTPREQ_M_HEAD;
    char hdr[1024], length[48] = "";
    if (status != 304) /* a 304 says nothing of the length (RFC 9110 8.6) */
        snprintf(length, sizeof(length), "Content-Length: %zu\r\n", body_len);
    int n = snprintf(
        hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nServer: cmg-gateway\r\nDate: %s\r\n%s%s%s%s%s%s\r\n",
        status, reason, gw_worker_date(c->w), ctype ? "Content-Type: " : "", ctype ? ctype : "",
        ctype ? "\r\n" : "", length,
        keep ? (httpreq_version_minor(&c->req) == 0 ? "Connection: keep-alive\r\n" : "")
             : "Connection: close\r\n",
        extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof(hdr))
        n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n");
    gw_conn_out_append(c, hdr, (size_t)n);
    c->req_out = (uint64_t)n;
    if (body && body_len && !head) {
        gw_conn_out_append(c, body, body_len);
        c->req_out += body_len;
    }
    if (!keep)
        c->close_after = true;
    gw_conn_log_request(c, status);
}

/* Counts an answered request and writes its log line. */
static void gw_conn_log_request(struct gw_conn *c, int status)
{
    struct gw_worker *w = c->w;
    GW_INC(w->metrics.requests);
    if (status >= 100 && status < 600)
        GW_INC(w->metrics.status[status]);
    if (w->snap->cfg.log_requests) {
        size_t ulen;
        const char *url = httpreq_url(&c->req, &ulen);
        const char *q = memchr(url, '?', ulen);
        int plen = (int)(q ? (size_t)(q - url) : ulen);
        if (plen > 512)
            plen = 512;
        uint64_t took = core_now_ms() - c->req_started;
        LOG_INFO("c%u.%llu %s %.*s %d in=%llu out=%llu %llums", c->w->id, (unsigned long long)c->id,
                 c->req.method_name ? c->req.method_name : "-", plen, url, status,
                 (unsigned long long)c->req_in, (unsigned long long)c->req_out,
                 (unsigned long long)took);
    }
}

/* A request that could not be read: answer and close. */
static void gw_conn_reject(struct gw_conn *c, int status, const char *reason, const char *why)
{
    if (c->snap->cfg.log_requests || c->snap->cfg.log_connections)
        LOG_WARN("c%u.%llu bad request: %d %s (%s)", c->w->id, (unsigned long long)c->id, status,
                 reason, why);
    char body[256];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    c->close_after = true;
    gw_conn_respond(c, status, reason, "text/plain; charset=utf-8", body, (size_t)n, NULL);
}

static const char *gw_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } phrases[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {207, "Multi-Status"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
        if (phrases[i].status == status)
            return phrases[i].reason;
    return status < 300 ? "OK" : status < 400 ? "Redirect" : "Error";
}

static void gw_conn_on_head(struct gw_conn *c)
{
    c->head_done = true;
    if (c->req.expect_continue && c->req.has_body) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        gw_conn_out_append(c, cont, sizeof(cont) - 1);
    }
}

/* The current request is answered: ready for the next one. */
static void gw_conn_request_done(struct gw_conn *c)
{
    gw_proxy_release(c);
    gw_content_release(c);
    c->nrequests++;
    httpreq_next(&c->req);
    c->head_done = false;
    c->waited = false;
    c->content_parks = 0;
    c->answered = false;
    c->req_read = false;
    c->resp_chunked = false;
    c->close_when_done = false;
    c->wait_kind = GW_WAIT_NONE;
    c->req_in = c->req_out = 0;
    c->state = GW_CS_IDLE;
    c->deadline = core_now_ms() + c->snap->cfg.idle_timeout;
}

void gw_conn_park(struct gw_conn *c, enum gw_wait_kind kind)
{
    c->state = GW_CS_WAIT;
    c->wait_kind = (uint8_t)kind;
    c->waited = true;
    c->deadline = core_now_ms() + c->snap->cfg.auth.auth_wait;
    if (kind == GW_WAIT_CRL || kind == GW_WAIT_KEYS)
        GW_INC(c->w->metrics.auth_waits[kind == GW_WAIT_KEYS ? 1 : 0]);
}

/* Keeps what follows the current request (pipelined input) until the connection goes on. */
static void gw_conn_hold_rest(struct gw_conn *c, const char *data, size_t len, bool from_held)
{
    if (!from_held && len > 0) {
        c->in = malloc(len);
        if (!c->in)
            abort();
        memcpy(c->in, data, len);
        c->in_off = 0;
        c->in_len = (uint32_t)len;
    }
    c->held = c->in && c->in_len > 0;
    if (!c->held) {
        free(c->in);
        c->in = NULL;
        c->in_off = c->in_len = 0;
    }
}

/* The head is read: on role paths authentication and the tunnel stream start now, before the
 * body. True when the request was parked (it waits for a fetch). */
static bool gw_conn_head_ready(struct gw_conn *c)
{
    gw_conn_on_head(c);
    c->waited = false;
    gw_router_head(c);
    return c->state == GW_CS_WAIT;
}

/* The whole request has been read. True when the connection now waits for the answer. */
static bool gw_conn_request_read(struct gw_conn *c)
{
    c->req_read = true;
    if (c->proxy) {
        gw_proxy_body_end(c);
        if (!gw_proxy_done(c)) {
            c->state = GW_CS_WAIT;
            c->wait_kind = GW_WAIT_UPSTREAM;
            c->deadline = core_now_ms() + c->snap->cfg.tunnel_response_timeout;
            return true;
        }
    } else if (c->content) {
        if (!gw_content_done(c)) {
            c->state = GW_CS_WAIT;
            c->wait_kind = GW_WAIT_STREAM;
            c->deadline = core_now_ms() + gw_content_stall_ms(c);
            return true;
        }
    } else if (!c->answered) {
        gw_router_handle(c);
        if (c->state == GW_CS_WAIT)
            return true;
    }
    gw_conn_request_done(c);
    return false;
}

/* Parses what it can of data; returns 1 if the connection was freed, else 0. Input it cannot
 * take yet (the output is backed up) is parked in c->in. */
static int gw_conn_process(struct gw_conn *c, const char *data, size_t len, bool from_held)
{
    const struct gw_config *cfg = &c->snap->cfg;
    while (len > 0 && !c->close_after) {
        if (c->out_len - c->out_off > cfg->max_pipeline_bytes) {
            /* The client sends faster than it reads its answers: stop reading until it
             * catches up (bounded buffering, responses stay in order). */
            if (!from_held) {
                c->in = malloc(len);
                if (!c->in)
                    abort();
                memcpy(c->in, data, len);
                c->in_off = 0;
                c->in_len = (uint32_t)len;
            }
            c->held = true;
            return 0;
        }
        bool was_idle = httpreq_is_idle(&c->req);
        size_t used = 0;
        enum httpreq_event ev = httpreq_feed(&c->req, data, len, &used);
        if (from_held) {
            c->in_off += (uint32_t)used;
            c->in_len -= (uint32_t)used;
        }
        data += used;
        len -= used;
        c->req_in += used;
        if (was_idle && !httpreq_is_idle(&c->req)) {
            c->state = GW_CS_HEAD;
            c->req_started = core_now_ms();
            c->deadline = c->req_started + cfg->header_timeout;
        }
        switch (ev) {
        case HTTPREQ_NEED_MORE:
            break;
        case HTTPREQ_HEAD:
            c->state = GW_CS_BODY;
            c->deadline = core_now_ms() + cfg->body_timeout;
            if (gw_conn_head_ready(c)) {
                gw_conn_hold_rest(c, data, len, from_held);
                return 0;
            }
            break;
        case HTTPREQ_DONE:
            if (!c->head_done && gw_conn_head_ready(c)) {
                c->req_read = true; /* parked with the whole request read */
                gw_conn_hold_rest(c, data, len, from_held);
                return 0;
            }
            if (gw_conn_request_read(c)) {
                gw_conn_hold_rest(c, data, len, from_held);
                return 0;
            }
            break;
        case HTTPREQ_ERROR:
            gw_conn_reject(c, c->req.error_status, gw_reason(c->req.error_status),
                           c->req.error_reason ? c->req.error_reason : "malformed");
            break;
        }
        if (c->state == GW_CS_BODY && ev == HTTPREQ_NEED_MORE)
            c->deadline = core_now_ms() + cfg->body_timeout; /* progress on the body */
    }
    if (from_held && c->in_len == 0) {
        free(c->in);
        c->in = NULL;
        c->in_off = 0;
        c->held = false;
    }
    return 0;
}

/* Writes pending output. Returns 1 if the connection was freed or is closing, else 0. */
static int gw_conn_flush(struct gw_conn *c)
{
    bool progress = false;
    unsigned refills = 0;
again:
    while (c->out_len > c->out_off) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n > 0) {
            c->out_off += (uint32_t)n;
            GW_ADD(c->w->metrics.bytes_out, (uint64_t)n);
            progress = true;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            if (c->proxy && progress)
                gw_proxy_client_drained(c);
            if (c->content && progress)
                gw_content_drained(c);
            /* send_timeout runs from the last byte the client took, not from each attempt */
            if (progress || !c->send_deadline)
                c->send_deadline = core_now_ms() + c->snap->cfg.send_timeout;
            gw_conn_watch(c, e == SSL_ERROR_WANT_WRITE ? EV_WRITE : EV_READ);
            return 0;
        }
        gw_conn_free(c, "write failed (client went away)");
        return 1;
    }
    if (c->proxy && progress)
        gw_proxy_client_drained(c); /* room again: the tunnel may send more */
    if (c->content && gw_content_drained(c) && c->out_len > c->out_off) {
        if (++refills < GW_FLUSH_REFILLS)
            goto again; /* more of the content answer was queued */
        /* enough for one turn: the rest when epoll says so, after the other connections */
        c->send_deadline = core_now_ms() + c->snap->cfg.send_timeout;
        gw_conn_watch(c, EV_WRITE);
        return 0;
    }
    /* Everything written: an idle connection keeps no buffers (one streaming an answer
     * through a tunnel keeps it for the next piece). */
    if (c->proxy || c->content) {
        c->out_off = c->out_len = 0;
    } else {
        free(c->out);
        c->out = NULL;
        c->out_off = c->out_len = c->out_cap = 0;
    }
    c->send_deadline = 0;
    if (c->close_after) {
        gw_conn_linger(c, "response sent, closing");
        return 1;
    }
    /* draining: idle between requests means done; before the first one it means the
     * client has not sent it yet (gw_conn_drain_all) */
    if (c->draining && c->state == GW_CS_IDLE && c->nrequests && !c->held &&
        httpreq_is_idle(&c->req)) {
        gw_conn_linger(c, "gateway draining (SIGTERM)");
        return 1;
    }
    if (c->state == GW_CS_WAIT || c->input_paused)
        gw_conn_watch(c, EV_TIMEOUT); /* nothing is read while the answer waits */
    else if (c->ev_what != EV_READ)
        gw_conn_watch(c, EV_READ);
    return 0;
}

static void gw_conn_count_handshake(struct gw_conn *c)
{
    struct gw_metrics *m = &c->w->metrics;
    int v = SSL_version(c->ssl);
    enum gw_tls_version tv = v == TLS1_3_VERSION   ? GW_TLS13
                             : v == TLS1_2_VERSION ? GW_TLS12
                             : v == TLS1_1_VERSION ? GW_TLS11
                             : v == TLS1_VERSION   ? GW_TLS10
                                                   : GW_TLS_OTHER;
    GW_INC(m->hs_ok[tv]);
    bool resumed = SSL_session_reused(c->ssl);
    if (resumed)
        GW_INC(m->hs_resumed);
    const char *detail = NULL;
    c->cert_verdict = (uint8_t)tls_client_verdict_of(
        c->ssl, c->snap->client_trust, c->w->dyn ? c->w->dyn->crls : NULL, false, &detail);
    c->verdict_gen = c->w->auth_gen;
    if (c->snap->cfg.log_connections) {
        char peer[64], cert[300] = "";
        if (c->cert_verdict != TLS_CLIENT_NONE)
            snprintf(cert, sizeof(cert), ", client certificate %s%s%s",
                     tls_client_verdict_name(c->cert_verdict), detail && *detail ? ": " : "",
                     detail ? detail : "");
        LOG_INFO("c%u.%llu TLS handshake done: %s %s%s from %s%s", c->w->id,
                 (unsigned long long)c->id, SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
                 resumed ? " (resumed)" : "", gw_peer_str(c, peer, sizeof(peer)), cert);
    }
}

static enum gw_hs_fail gw_classify_hs_error(int sslerr, unsigned long e)
{
    if (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN)
        return GW_HSF_CLOSED;
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return GW_HSF_OTHER;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return GW_HSF_PROTOCOL_VERSION;
    case SSL_R_NO_SHARED_CIPHER:
        return GW_HSF_NO_SHARED_CIPHER;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        return GW_HSF_NO_ALPN;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
        return GW_HSF_NOT_TLS;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return GW_HSF_CLOSED;
    default:
        return GW_HSF_OTHER;
    }
}

static void gw_conn_handshake(struct gw_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        gw_conn_count_handshake(c);
        c->state = GW_CS_IDLE;
        c->deadline = core_now_ms() + c->snap->cfg.header_timeout;
        gw_conn_read(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        gw_conn_watch(c, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
        return;
    }
    unsigned long err = ERR_peek_error();
    enum gw_hs_fail why = gw_classify_hs_error(e, err);
    GW_INC(c->w->metrics.hs_fail[why]);
    if (why == GW_HSF_NOT_TLS && ERR_GET_REASON(err) == SSL_R_HTTP_REQUEST) {
        /* Plain HTTP on the TLS port: say so in plain HTTP before closing. */
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                   "Content-Length: 41\r\nConnection: close\r\n\r\n"
                                   "This port speaks HTTPS (TLS 1.2 or newer)\n";
        ssize_t wr = write(c->fd, resp, sizeof(resp) - 1);
        (void)wr;
    }
    if (c->snap->cfg.log_connections) {
        char buf[256] = "", peer[64];
        if (err)
            ERR_error_string_n(err, buf, sizeof(buf));
        LOG_WARN("c%u.%llu TLS handshake failed: %s (%s) from %s", c->w->id,
                 (unsigned long long)c->id, gw_hs_fail_name(why), *buf ? buf : "connection closed",
                 gw_peer_str(c, peer, sizeof(peer)));
    }
    ERR_clear_error();
    gw_conn_free(c, NULL);
}

/* Reads and handles what the client sent. Returns 1 if the connection was freed/closing. */
static int gw_conn_read(struct gw_conn *c)
{
    struct gw_worker *w = c->w;
    int i;
    for (i = 0; i < GW_READ_BUDGET; i++) {
        if (c->state == GW_CS_WAIT || c->input_paused)
            return gw_conn_flush(c);
        if (c->held) {
            /* Input parked behind a full output: write, then take up the parked bytes. */
            if (gw_conn_flush(c))
                return 1;
            if (c->out_len > c->out_off)
                return 0; /* still backed up: the write event resumes us */
            gw_conn_process(c, c->in + c->in_off, c->in_len, true);
            if (c->held || c->state == GW_CS_WAIT)
                continue;
        }
        if (c->close_after)
            break;
        ERR_clear_error();
        int n = SSL_read(c->ssl, w->scratch, GW_SCRATCH);
        if (n > 0) {
            GW_ADD(w->metrics.bytes_in, (uint64_t)n);
            gw_conn_process(c, w->scratch, (size_t)n, false);
            if (c->state == GW_CS_WAIT || c->input_paused)
                continue;
            /* A short read with nothing buffered means the socket is empty: skip the recv
             * that would only say EAGAIN (epoll is level-triggered and wakes us for more). */
            if (!c->held && n < GW_SCRATCH && !SSL_has_pending(c->ssl))
                break;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            gw_conn_watch(c, EV_WRITE);
            return 0;
        }
        const char *why = "client closed the connection";
        if (c->state == GW_CS_HEAD || c->state == GW_CS_BODY)
            why = "client closed the connection in the middle of a request";
        else if (e == SSL_ERROR_SSL)
            why = "TLS error";
        ERR_clear_error();
        if (c->out_len > c->out_off) {
            c->close_after = true; /* answer what was asked, then close */
            break;
        }
        gw_conn_free(c, why);
        return 1;
    }
    if (gw_conn_flush(c))
        return 1;
    if (c->out_len > c->out_off)
        return 0; /* waiting to write; the flush armed the write event */
    if ((i == GW_READ_BUDGET || c->held) && !c->close_after)
        event_active(&c->ev, EV_READ, 1); /* budget spent: come back after the others */
    else
        gw_conn_watch(c, EV_READ);
    return 0;
}

static void gw_conn_timeout(struct gw_conn *c)
{
    struct gw_metrics *m = &c->w->metrics;
    uint64_t now = core_now_ms();
    if (c->send_deadline && now >= c->send_deadline) {
        GW_INC(m->timeouts_send);
        gw_conn_free(c, "client did not read its response (http.send_timeout)");
        return;
    }
    if (c->close_after && c->state != GW_CS_LINGER && c->out_len > c->out_off) {
        /* the last answer is on its way out; only send_timeout applies now */
        c->deadline = now + c->snap->cfg.send_timeout;
        gw_conn_watch(c, c->ev_what);
        return;
    }
    switch (c->state) {
    case GW_CS_HANDSHAKE:
        GW_INC(m->hs_fail[GW_HSF_TIMEOUT]);
        gw_conn_free(c, "TLS handshake timed out (tls.handshake_timeout)");
        return;
    case GW_CS_IDLE:
        if (c->out_len > c->out_off) {
            /* answers still going out: send_timeout is the one that applies */
            c->deadline = now + c->snap->cfg.idle_timeout;
            gw_conn_watch(c, c->ev_what);
            return;
        }
        GW_INC(m->timeouts_idle);
        gw_conn_free(c, c->nrequests ? "idle keep-alive timeout (http.idle_timeout)"
                                     : "no request after the handshake (http.header_timeout)");
        return;
    case GW_CS_HEAD:
    case GW_CS_BODY:
        if (c->state == GW_CS_HEAD)
            GW_INC(m->timeouts_header);
        else
            GW_INC(m->timeouts_body);
        gw_conn_reject(c, 408, "Request Timeout",
                       c->state == GW_CS_HEAD ? "headers not complete within http.header_timeout"
                                              : "body stalled longer than http.body_timeout");
        gw_conn_flush(c);
        return;
    case GW_CS_LINGER:
        gw_conn_free(c, "closed after response");
        return;
    case GW_CS_WAIT:
        gw_conn_resume(c); /* the router answers with what it has */
        return;
    }
}

static void gw_conn_linger_read(struct gw_conn *c)
{
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            gw_conn_watch(c, EV_READ); /* the linger deadline is absolute, not per read */
            return;
        }
        gw_conn_free(c, "closed after response");
        return;
    }
    gw_conn_watch(c, EV_READ);
}

static void gw_conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_conn *c = arg;
    /* Deadlines are absolute: a client trickling bytes does not push them back. */
    if (core_now_ms() >= gw_conn_due(c)) {
        gw_conn_timeout(c);
        return;
    }
    if (!(what & (EV_READ | EV_WRITE))) {
        gw_conn_watch(c, c->ev_what); /* woke early: re-arm for the rest */
        return;
    }
    switch (c->state) {
    case GW_CS_HANDSHAKE:
        gw_conn_handshake(c);
        return;
    case GW_CS_LINGER:
        gw_conn_linger_read(c);
        return;
    case GW_CS_WAIT:
        if (what & EV_WRITE)
            gw_conn_flush(c);
        else
            gw_conn_watch(c, c->out_len > c->out_off ? EV_WRITE : EV_TIMEOUT);
        return;
    default:
        break;
    }
    if (what & EV_WRITE) {
        if (gw_conn_flush(c))
            return;
        if (c->held || c->ev_what == EV_READ || (what & EV_READ))
            gw_conn_read(c);
        return;
    }
    if ((what & EV_READ) && c->out_len > c->out_off && c->ev_what == EV_READ) {
        /* SSL_write wanted to read (a TLS 1.3 key update): retry the write first. */
        if (gw_conn_flush(c))
            return;
    }
    gw_conn_read(c);
}

/* Request body bytes as the reader finds them: on to the tunnel, or dropped. */
static void gw_conn_body_cb(void *ctx, const char *data, size_t len)
{
    struct gw_conn *c = ctx;
    if (c->proxy)
        gw_proxy_body(c, data, len);
}

void gw_conn_accept(struct gw_worker *w, int fd)
{
    struct gw_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    socklen_t sl = sizeof(c->peer);
    getpeername(fd, &c->peer.sa, &sl);
    c->w = w;
    c->fd = fd;
    c->id = ++w->next_conn_id;
    c->snap = gw_snapshot_ref(w->snap);
    c->ssl = SSL_new(c->snap->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
        LOG_ERROR("cannot create TLS state for a new connection");
        if (c->ssl)
            SSL_free(c->ssl);
        gw_snapshot_unref(c->snap);
        close(fd);
        free(c);
        return;
    }
    SSL_set_accept_state(c->ssl);
    httpreq_init(&c->req, &c->snap->limits, gw_conn_body_cb, c);
    c->started_ms = core_now_ms();
    c->deadline = c->started_ms + c->snap->cfg.handshake_timeout;
    c->state = GW_CS_HANDSHAKE;
    c->next = w->conns.head;
    if (c->next)
        c->next->prev = c;
    w->conns.head = c;
    w->conns.count++;
    GW_INC(w->metrics.conn_total);
    GW_INC(w->metrics.conn_open);
    if (w->draining)
        c->draining = true;
    /* Accepted sockets usually have the ClientHello waiting already: try at once. */
    gw_conn_handshake(c);
}

void gw_conn_drain_all(struct gw_worker *w)
{
    struct gw_conn *c = w->conns.head;
    while (c) {
        struct gw_conn *next = c->next;
        c->draining = true;
        /* A connection that has not sent its first request yet was just accepted for one: it
         * gets to send it (http.header_timeout bounds the wait) and is closed after. */
        if (c->state == GW_CS_IDLE && c->nrequests && c->out_len == c->out_off && !c->held)
            gw_conn_free(c, "gateway draining (SIGTERM)");
        c = next;
    }
}

void gw_conn_close_all(struct gw_worker *w)
{
    while (w->conns.head)
        gw_conn_free(w->conns.head, "gateway stopping");
}

/* A parked request goes on: after an authentication wait the router decides its head again
 * (with whatever the fetch brought; it does not park twice), after an upstream wait the
 * answer is overdue. May free c. */
static void gw_conn_resume(struct gw_conn *c)
{
    uint8_t kind = c->wait_kind;
    /* An overdue answer is ended by its producer, which must still see what the request
     * waits for: that is how the request is then finished (and never routed again). */
    if (kind == GW_WAIT_UPSTREAM) {
        gw_proxy_timeout(c);
        return;
    }
    if (kind == GW_WAIT_STREAM) {
        if (!gw_content_timeout(c)) { /* the fill is still moving: not a stall */
            c->deadline = core_now_ms() + gw_content_stall_ms(c);
            gw_conn_watch(c, c->ev_what ? c->ev_what : EV_TIMEOUT);
        }
        return;
    }
    c->wait_kind = GW_WAIT_NONE;
    c->state = GW_CS_BODY;
    c->deadline = core_now_ms() + c->snap->cfg.body_timeout;
    gw_router_head(c);
    if (c->state == GW_CS_WAIT) /* only when an upstream answer is awaited */
        return;
    if (c->req_read && gw_conn_request_read(c)) {
        if (c->out_len > c->out_off)
            gw_conn_flush(c); /* a content answer started streaming: write it (may free c) */
        else
            gw_conn_watch(c, EV_TIMEOUT);
        return;
    }
    gw_conn_read(c);
}

/* ---- answers that come through a tunnel (proxy.c) ----
 * These run inside the tunnel's callbacks: they only queue bytes and wake the connection's
 * own event, which writes and goes on; the connection is never freed from here. */

static void gw_conn_wake(struct gw_conn *c)
{
    /* A content answer is produced on the connection's own turn (or its worker kicks it):
     * activating its own event from there would run it again at once, ahead of every other
     * connection waiting in epoll, and one busy keep-alive client could starve the rest. */
    if (!c->content)
        event_active(&c->ev, EV_WRITE, 1);
}

void gw_conn_kick(struct gw_conn *c)
{
    event_active(&c->ev, EV_WRITE, 1);
}

void gw_conn_unpark(struct gw_conn *c)
{
    gw_conn_resume(c);
}

char *gw_conn_out_space(struct gw_conn *c, size_t n)
{
    gw_conn_out_reserve(c, n);
    return c->out + c->out_len;
}

void gw_conn_out_commit(struct gw_conn *c, size_t n)
{
    c->out_len += (uint32_t)n;
    c->req_out += n;
}

size_t gw_conn_out_pending(const struct gw_conn *c)
{
    return c->out_len - c->out_off;
}

void gw_conn_pause_input(struct gw_conn *c, bool pause)
{
    if (c->input_paused == pause)
        return;
    c->input_paused = pause;
    if (!pause) {
        if (c->state == GW_CS_BODY)
            c->deadline = core_now_ms() + c->snap->cfg.body_timeout;
        event_active(&c->ev, EV_READ, 1);
    }
}

void gw_conn_proxy_head(struct gw_conn *c, int status, const char *reason, const char *headers,
                        size_t len, bool has_length, bool end_stream)
{
    bool bodyless = c->req.method == HTTPREQ_M_HEAD || status == 204 || status == 304;
    bool keep = gw_conn_keep_alive(c, status);
    const char *framing = "";
    if (!bodyless && !has_length) {
        if (end_stream)
            framing = "content-length: 0\r\n";
        else if (httpreq_version_minor(&c->req) >= 1) {
            framing = "transfer-encoding: chunked\r\n";
            c->resp_chunked = true;
        } else {
            keep = false; /* an HTTP/1.0 client reads to the end of the connection */
        }
    }
    char line[160];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status,
                     reason && *reason ? reason : gw_reason(status));
    gw_conn_out_append(c, line, (size_t)n);
    gw_conn_out_append(c, headers, len);
    const char *conn =
        keep ? (httpreq_version_minor(&c->req) == 0 ? "connection: keep-alive\r\n" : "")
             : "connection: close\r\n";
    gw_conn_out_append(c, framing, strlen(framing));
    gw_conn_out_append(c, conn, strlen(conn));
    gw_conn_out_append(c, "\r\n", 2);
    c->req_out = (uint64_t)n + len + strlen(framing) + strlen(conn) + 2;
    c->resp_status = (uint16_t)status;
    c->close_when_done = !keep;
    gw_conn_wake(c);
}

void gw_conn_proxy_data(struct gw_conn *c, const char *data, size_t len)
{
    if (c->req.method == HTTPREQ_M_HEAD || !len)
        return;
    if (c->resp_chunked) {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        gw_conn_out_append(c, size, (size_t)n);
        gw_conn_out_append(c, data, len);
        gw_conn_out_append(c, "\r\n", 2);
    } else {
        gw_conn_out_append(c, data, len);
    }
    c->req_out += len;
    gw_conn_wake(c);
}

/* The tunnel's part is over: the answer is whole (ok) or broke off. */
static void gw_conn_proxy_finish(struct gw_conn *c)
{
    bool content = c->content != NULL;
    bool ended = false;
    if (c->state == GW_CS_WAIT &&
        (c->wait_kind == GW_WAIT_UPSTREAM || c->wait_kind == GW_WAIT_STREAM)) {
        gw_conn_request_done(c); /* the request was read: on to the next one */
        ended = true;
    }
    /* else the body is still coming in; gw_conn_request_read ends the request */
    if (!content)
        gw_conn_wake(c);
    else if (ended && c->held)
        event_active(&c->ev, EV_READ, 1); /* a pipelined request waits in c->in: read it */
}

void gw_conn_proxy_end(struct gw_conn *c, bool ok)
{
    if (ok && c->resp_chunked && c->req.method != HTTPREQ_M_HEAD)
        gw_conn_out_append(c, "0\r\n\r\n", 5);
    if (!ok || c->close_when_done)
        c->close_after = true; /* a cut answer must not look whole: close the connection */
    gw_conn_log_request(c, ok ? c->resp_status : 502);
    gw_conn_proxy_finish(c);
}

void gw_conn_proxy_answer(struct gw_conn *c, int status, const char *reason, const char *body,
                          size_t len, const char *extra)
{
    gw_conn_respond(c, status, reason, "text/plain; charset=utf-8", body, len, extra);
    gw_conn_proxy_finish(c);
}

/* True when one of the CRLs that just changed revokes this connection's certificate. Cheap:
 * one lookup per changed CRL, no chain building. */
static bool gw_conn_cert_revoked(struct gw_conn *c, STACK_OF(X509_CRL) * changed)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer)
        return false;
    for (int i = 0; i < sk_X509_CRL_num(changed); i++)
        if (tls_crl_revokes(sk_X509_CRL_value(changed, i), peer))
            return true;
    return false;
}

/* True when a changed CRL revokes one of the configured CAs: every chain must be judged. */
static bool gw_ca_revoked(const struct tls_client_trust *t, STACK_OF(X509_CRL) * changed)
{
    const STACK_OF(X509) *cas = tls_client_trust_cas(t);
    for (int i = 0; i < sk_X509_CRL_num(changed); i++)
        for (int k = 0; k < sk_X509_num(cas); k++)
            if (tls_crl_revokes(sk_X509_CRL_value(changed, i), sk_X509_value(cas, k)))
                return true;
    return false;
}

void gw_conn_dyn_changed(struct gw_worker *w)
{
    STACK_OF(X509_CRL) *changed = w->dyn ? w->dyn->changed : NULL;
    const struct tls_client_trust *trust = w->snap->client_trust;
    bool check = changed && sk_X509_CRL_num(changed) > 0 && trust &&
                 tls_client_trust_checks_revocation(trust);
    bool full = check && gw_ca_revoked(trust, changed);
    struct gw_conn *c = w->conns.head;
    while (c) {
        struct gw_conn *next = c->next;
        if (c->state == GW_CS_WAIT) {
            if (gw_router_wait_over(c))
                gw_conn_resume(c);
        } else if (check && c->ssl && c->cert_verdict == TLS_CLIENT_OK &&
                   c->state != GW_CS_HANDSHAKE && c->state != GW_CS_LINGER &&
                   (full ? tls_client_verdict_of(c->ssl, trust, w->dyn->crls, true, NULL) ==
                               TLS_CLIENT_REVOKED
                         : gw_conn_cert_revoked(c, changed))) {
            GW_INC(w->metrics.revoked_closed);
            LOG_WARN("c%u.%llu closed: client certificate revoked by refreshed CRL", w->id,
                     (unsigned long long)c->id);
            c->cert_verdict = TLS_CLIENT_REVOKED;
            gw_conn_free(c, "client certificate revoked by refreshed CRL");
        }
        c = next;
    }
}

/* ---- hand-over to another worker ----
 * A worker without a tunnel for the role id passes the whole connection (socket, TLS state,
 * the request read so far) to one that has, through that worker's queue; it is never touched
 * by two threads at once. */

void gw_conn_move(struct gw_conn *c, struct gw_worker *to)
{
    c->moved = true;
    c->move_to = to;
    c->state = GW_CS_WAIT;
    c->wait_kind = GW_WAIT_MOVE;
    c->deadline = core_now_ms() + c->snap->cfg.body_timeout;
    c->move_next = c->w->moving.head;
    c->w->moving.head = c;
    event_active(c->w->move_ev, EV_TIMEOUT, 1);
}

void gw_conn_move_run(struct gw_worker *w)
{
    while (w->moving.head) {
        struct gw_conn *c = w->moving.head;
        w->moving.head = c->move_next;
        c->move_next = NULL;
        struct gw_worker *to = c->move_to;
        c->move_to = NULL;
        if (c->ev_what)
            event_del(&c->ev);
        c->ev_what = 0;
        if (c->prev)
            c->prev->next = c->next;
        else
            w->conns.head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        w->conns.count--;
        GW_DEC(w->metrics.conn_open);
        GW_INC(w->metrics.handed_over);
        c->w = to;
        if (gw_worker_post(to, GW_MSG_CONN, c) == 0) {
            gw_worker_conn_gone(w);
            continue;
        }
        /* the other worker's queue is full: keep it and answer from here */
        c->w = w;
        c->next = w->conns.head;
        if (c->next)
            c->next->prev = c;
        w->conns.head = c;
        w->conns.count++;
        GW_INC(w->metrics.conn_open);
        LOG_WARN("c%u.%llu worker %u is too busy to take the connection", w->id,
                 (unsigned long long)c->id, to->id);
        gw_conn_adopt_here(c);
    }
}

/* Goes on with a request whose head was decided elsewhere (or has to be decided again). */
static void gw_conn_adopt_here(struct gw_conn *c)
{
    c->state = GW_CS_BODY;
    c->wait_kind = GW_WAIT_NONE;
    c->deadline = core_now_ms() + c->snap->cfg.body_timeout;
    gw_router_head(c); /* `moved` is set: it answers here if no tunnel of this worker can */
    if (c->state == GW_CS_WAIT) {
        gw_conn_watch(c, EV_TIMEOUT);
        return;
    }
    if (c->req_read && gw_conn_request_read(c)) {
        if (c->out_len > c->out_off)
            gw_conn_flush(c); /* a content answer started streaming: write it (may free c) */
        else
            gw_conn_watch(c, EV_TIMEOUT);
        return;
    }
    gw_conn_read(c);
}

void gw_conn_adopt(struct gw_worker *w, struct gw_conn *c)
{
    c->w = w;
    c->next = w->conns.head;
    if (c->next)
        c->next->prev = c;
    w->conns.head = c;
    w->conns.count++;
    GW_INC(w->metrics.conn_open);
    if (w->draining)
        c->draining = true;
    gw_conn_adopt_here(c);
}
