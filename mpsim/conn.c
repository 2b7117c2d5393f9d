/* Connections: reading and parsing requests, writing answers as the socket drains, the hold list
 * of notification requests, and closing.
 *
 * A connection owns one libevent event, re-armed with the flags its state needs, and no read
 * buffer: reads land in the server's buffer and are parsed at once. Only bytes of a pipelined
 * request that arrive while an answer is still in progress are kept (c->in), and while they are
 * kept nothing more is read, so the peer's own socket buffer does the queueing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "mpsim.h"

static void conn_run(struct mpsim_conn *c);
static void conn_event_cb(evutil_socket_t fd, short what, void *arg);

static bool conn_has_out(const struct mpsim_conn *c)
{
    return c->out && evbuffer_get_length(c->out) > 0;
}

static bool conn_out_full(const struct mpsim_conn *c)
{
    return c->out && evbuffer_get_length(c->out) >= MPSIM_OUT_HIGH_WATER;
}

/* ---- the hold list ----
 * Every hold lasts the same --hold, so appending keeps the list in deadline order and one timer
 * for the head serves all of them: nothing per held request but two links and a deadline. */

static void hold_unlink(struct mpsim_conn *c)
{
    struct mpsim_server *s = c->srv;
    if (c->hold_prev)
        c->hold_prev->hold_next = c->hold_next;
    else
        s->hold_head = c->hold_next;
    if (c->hold_next)
        c->hold_next->hold_prev = c->hold_prev;
    else
        s->hold_tail = c->hold_prev;
    c->hold_prev = c->hold_next = NULL;
    s->stats.held--;
}

static void hold_timer_arm(struct mpsim_server *s)
{
    if (!s->hold_head) {
        evtimer_del(s->hold_timer);
        return;
    }
    uint64_t now = core_now_ms(), due = s->hold_head->hold_deadline_ms;
    uint64_t wait = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(s->hold_timer, &tv);
}

void mpsim_hold_start(struct mpsim_conn *c)
{
    struct mpsim_server *s = c->srv;
    c->state = MPSIM_CS_HELD;
    c->held_has_input = false;
    c->hold_deadline_ms = core_now_ms() + s->opts.hold_ms;
    c->hold_next = NULL;
    c->hold_prev = s->hold_tail;
    if (s->hold_tail)
        s->hold_tail->hold_next = c;
    else
        s->hold_head = c;
    s->hold_tail = c;
    s->stats.held++;
    if (s->hold_head == c)
        hold_timer_arm(s);
}

static void conn_hold_answer(struct mpsim_conn *c)
{
    c->state = c->close_after ? MPSIM_CS_FLUSH_CLOSE : MPSIM_CS_READING;
    if (!c->out)
        c->out = evbuffer_new();
    if (!c->out || evbuffer_add(c->out, c->deferred, c->deferred_len) != 0) {
        LOG_ERROR("c%llu: out of memory answering a held request", (unsigned long long)c->id);
        c->state = MPSIM_CS_FLUSH_CLOSE;
    }
    free(c->deferred);
    c->deferred = NULL;
    mpsim_log_end(c, NULL);
    conn_run(c);
}

void mpsim_hold_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mpsim_server *s = arg;
    /* One millisecond of slack: the loop's clock and ours may round apart. */
    uint64_t now = core_now_ms() + 1;
    while (s->hold_head && s->hold_head->hold_deadline_ms <= now) {
        struct mpsim_conn *c = s->hold_head;
        hold_unlink(c);
        conn_hold_answer(c); /* may close c */
    }
    hold_timer_arm(s);
}

/* ---- lifecycle ---- */

static void conn_close(struct mpsim_conn *c, const char *why)
{
    struct mpsim_server *s = c->srv;
    if (c->state == MPSIM_CS_HELD) {
        hold_unlink(c);
        c->log_bytes = 0; /* the answer never went out */
        mpsim_log_end(c, why ? why : "client gone");
    } else if (c->state == MPSIM_CS_STREAMING) {
        mpsim_log_end(c, why ? why : "client gone");
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->ev);
    evutil_closesocket(c->fd);
    httpreq_deinit(&c->req);
    EVP_MD_CTX_free(c->body_md);
    free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    mpsim_gen_deinit(&c->gen);
    free(c->deferred);
    free(c->log_path);
    free(c);
    s->stats.connections--;
}

void mpsim_conn_close_all(struct mpsim_server *s)
{
    while (s->conns)
        conn_close(s->conns, "server stopping");
}

/* Adds ev with the flags and timeout the state needs, touching libevent only on a change. */
static void conn_arm(struct mpsim_conn *c)
{
    short want = 0;
    const struct timeval *tv = c->srv->idle_tv;
    switch (c->state) {
    case MPSIM_CS_READING:
        if (!c->in && !conn_out_full(c))
            want |= EV_READ;
        if (conn_has_out(c))
            want |= EV_WRITE;
        break;
    case MPSIM_CS_HELD:
        /* Reading only to see the peer leave; with its next request already here, the peer
         * is waiting, not gone, and that request stays in the socket until the answer. */
        if (!c->in && !c->held_has_input)
            want |= EV_READ;
        if (conn_has_out(c))
            want |= EV_WRITE;
        tv = NULL; /* the hold list times this state */
        break;
    case MPSIM_CS_STREAMING:
    case MPSIM_CS_FLUSH_CLOSE:
        want = EV_WRITE;
        break;
    case MPSIM_CS_LINGER:
        want = EV_READ;
        tv = c->srv->linger_tv;
        break;
    }
    if (want == c->armed && tv == c->armed_tv)
        return;
    if (c->armed)
        event_del(c->ev);
    c->armed = 0;
    c->armed_tv = NULL;
    if (!want)
        return;
    event_assign(c->ev, c->srv->base, c->fd, want | EV_PERSIST, conn_event_cb, c);
    event_add(c->ev, tv);
    c->armed = want;
    c->armed_tv = tv;
}

/* ---- reading ---- */

static void conn_body_cb(void *ctx, const char *data, size_t len)
{
    struct mpsim_conn *c = ctx;
    if (c->body_md && EVP_DigestUpdate(c->body_md, data, len) != 1) {
        EVP_MD_CTX_free(c->body_md);
        c->body_md = NULL;
        c->body_md_failed = true;
    }
}

/* A head with a body after it: start the body's digest and let the client send it. */
static void conn_on_head(struct mpsim_conn *c)
{
    c->body_md = EVP_MD_CTX_new();
    if (!c->body_md || EVP_DigestInit_ex(c->body_md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->body_md);
        c->body_md = NULL;
        c->body_md_failed = true;
    }
    if (c->req.expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!c->out)
            c->out = evbuffer_new();
        if (c->out)
            evbuffer_add(c->out, cont, sizeof(cont) - 1);
    }
}

/* Keeps bytes that cannot be parsed yet (an answer is in progress). */
static void conn_keep_input(struct mpsim_conn *c, const char *data, size_t len)
{
    char *p = realloc(c->in, c->in_len + len);
    if (!p) {
        LOG_ERROR("c%llu: out of memory keeping pipelined input", (unsigned long long)c->id);
        c->close_after = true;
        return;
    }
    memcpy(p + c->in_len, data, len);
    c->in = p;
    c->in_len += len;
}

/* RFC 9110 5.6.2 token characters. */
static bool conn_is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* The reader judges a method only once it has a space or 15 bytes of it, so a short line of
 * garbage ("hello\r\n") would wait for more until the idle timeout. The method is checked here
 * as its bytes arrive instead. Returns 0, or -1 for a byte no method can hold. */
static int conn_scan_method(struct mpsim_conn *c, const char *data, size_t len)
{
    for (size_t i = 0; i < len && c->method_scan != MPSIM_MSCAN_DONE; i++) {
        unsigned char ch = (unsigned char)data[i];
        if (c->method_scan == MPSIM_MSCAN_START) {
            if (ch == '\r' || ch == '\n')
                continue; /* empty lines before a request are allowed */
            c->method_scan = MPSIM_MSCAN_TOKEN;
        }
        if (ch == ' ')
            c->method_scan = MPSIM_MSCAN_DONE;
        else if (!conn_is_tchar(ch))
            return -1;
    }
    return 0;
}

/* Parses requests out of data and answers them while the state allows; keeps the rest. */
static void conn_feed(struct mpsim_conn *c, const char *data, size_t len)
{
    while (len > 0 && c->state == MPSIM_CS_READING && !conn_out_full(c)) {
        if (conn_scan_method(c, data, len) != 0) {
            mpsim_reply_error(c, 400, "invalid character in the request method");
            return;
        }
        size_t used = 0;
        enum httpreq_event ev = httpreq_feed(&c->req, data, len, &used);
        data += used;
        len -= used;
        if (ev == HTTPREQ_HEAD) {
            conn_on_head(c);
        } else if (ev == HTTPREQ_DONE) {
            c->method_scan = MPSIM_MSCAN_START;
            c->srv->stats.requests++;
            mpsim_route(c);
        } else if (ev == HTTPREQ_ERROR) {
            mpsim_reply_error(c, c->req.error_status, c->req.error_reason);
            return;
        } else if (used == 0) {
            /* The reader neither took bytes nor reported anything: never spin on it. */
            mpsim_reply_error(c, 400, "request could not be read");
            return;
        }
    }
    if (len > 0 && c->state != MPSIM_CS_FLUSH_CLOSE && c->state != MPSIM_CS_LINGER)
        conn_keep_input(c, data, len);
}

static void conn_feed_kept(struct mpsim_conn *c)
{
    char *p = c->in;
    size_t len = c->in_len;
    c->in = NULL;
    c->in_len = 0;
    conn_feed(c, p, len);
    free(p);
}

/* Returns -1 when c was closed. */
static int conn_read(struct mpsim_conn *c)
{
    ssize_t n = recv(c->fd, c->srv->rbuf, MPSIM_READ_CHUNK, 0);
    if (n > 0) {
        conn_feed(c, c->srv->rbuf, (size_t)n);
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n == 0 && conn_has_out(c)) {
        /* The peer finished sending (a half-close): it still gets what is queued. */
        c->state = MPSIM_CS_FLUSH_CLOSE;
        return 0;
    }
    conn_close(c, NULL);
    return -1;
}

/* HELD: peeks to tell a peer that left from one that pipelined. Returns -1 when c was closed. */
static int conn_held_peek(struct mpsim_conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
    if (n > 0) {
        c->held_has_input = true;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    conn_close(c, "client gone");
    return -1;
}

/* LINGER: drops what the peer still sends. Returns -1 when c was closed. */
static int conn_linger_read(struct mpsim_conn *c)
{
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(c->fd, c->srv->rbuf, MPSIM_READ_CHUNK, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        conn_close(c, NULL);
        return -1;
    }
    return 0;
}

/* ---- writing ---- */

/* Writes queued bytes, then the generated body, until the socket is full or the budget is
 * spent. Returns 1 when nothing is left to write, 0 when something is, -1 on a failure. */
static int conn_write(struct mpsim_conn *c, size_t *budget)
{
    for (;;) {
        if (*budget == 0)
            return 0;
        if (conn_has_out(c)) {
            int n = evbuffer_write_atmost(c->out, c->fd, (ev_ssize_t)*budget);
            if (n < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            if (n == 0)
                return 0;
            *budget -= (size_t)n;
            continue;
        }
        if (c->state == MPSIM_CS_STREAMING && c->gen.pos < c->gen.end) {
            const char *p;
            size_t cap = *budget < MPSIM_READ_CHUNK ? *budget : MPSIM_READ_CHUNK;
            size_t len = mpsim_gen_fill(&c->gen, c->srv, c->srv->rbuf, cap, &p);
            if (len == 0)
                return -1;
            ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0)
                return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
            c->gen.pos += (uint64_t)n;
            c->log_bytes += (uint64_t)n;
            *budget -= (size_t)n;
            if ((size_t)n < len)
                return 0; /* the socket is full */
            continue;
        }
        /* Drained: an idle connection keeps no output buffer. */
        if (c->out) {
            evbuffer_free(c->out);
            c->out = NULL;
        }
        return 1;
    }
}

/* Our answers are all out: shut our side and wait a little for the peer's close, so that
 * unread request bytes do not turn our FIN into a reset that destroys the answer. */
static int conn_linger_start(struct mpsim_conn *c)
{
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    if (shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c, NULL);
        return -1;
    }
    c->state = MPSIM_CS_LINGER;
    return 0;
}

/* Moves c on as far as it can go now: writes, finishes answers, parses kept requests. */
static void conn_run(struct mpsim_conn *c)
{
    size_t budget = MPSIM_WRITE_BUDGET;
    for (;;) {
        int w = conn_write(c, &budget);
        if (w < 0) {
            conn_close(c, "write failed");
            return;
        }
        if (w == 0)
            break;
        if (c->state == MPSIM_CS_STREAMING) {
            mpsim_log_end(c, NULL);
            mpsim_gen_deinit(&c->gen);
            c->state = c->close_after ? MPSIM_CS_FLUSH_CLOSE : MPSIM_CS_READING;
            continue;
        }
        if (c->state == MPSIM_CS_FLUSH_CLOSE) {
            if (conn_linger_start(c) != 0)
                return;
            break;
        }
        if (c->state == MPSIM_CS_READING && c->in) {
            conn_feed_kept(c);
            continue;
        }
        break;
    }
    conn_arm(c);
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mpsim_conn *c = arg;
    if (what & EV_TIMEOUT) {
        conn_close(c, c->state == MPSIM_CS_LINGER ? NULL : "idle timeout");
        return;
    }
    if (what & EV_READ) {
        int rc = 0;
        if (c->state == MPSIM_CS_READING)
            rc = conn_read(c);
        else if (c->state == MPSIM_CS_HELD)
            rc = conn_held_peek(c);
        else if (c->state == MPSIM_CS_LINGER)
            rc = conn_linger_read(c);
        if (rc < 0)
            return;
    }
    conn_run(c);
}

int mpsim_conn_accept(struct mpsim_server *s, evutil_socket_t fd)
{
    struct mpsim_conn *c = calloc(1, sizeof(*c));
    if (c)
        c->ev = event_new(s->base, -1, 0, NULL, NULL);
    if (!c || !c->ev) {
        free(c);
        evutil_closesocket(fd);
        return -1;
    }
    c->srv = s;
    c->fd = fd;
    c->id = ++s->next_conn_id;
    c->state = MPSIM_CS_READING;
    httpreq_init(&c->req, &s->limits, conn_body_cb, c);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->stats.connections++;
    s->stats.connections_total++;
    conn_arm(c);
    return 0;
}
