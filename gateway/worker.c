/* Worker threads: one event_base each, one SO_REUSEPORT listener per address, and a message
 * queue through which the main thread hands over snapshots and drain/stop orders. */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"

int gw_bind_socket(const char *addr, bool reuseport, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof(host)) {
        snprintf(err, errlen, "%s: address too long", addr);
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    char *h = host;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s: %s", addr, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "%s: socket: %s", addr, strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (res->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", addr, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

int gw_listen_socket(const char *addr, int backlog, bool reuseport, char *err, size_t errlen)
{
    int fd = gw_bind_socket(addr, reuseport, err, errlen);
    if (fd >= 0 && listen(fd, backlog) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

const char *gw_worker_date(struct gw_worker *w)
{
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = now;
    }
    return w->date;
}

/* Out of file descriptors or memory: stop watching the listeners for a moment. */
static void gw_worker_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    if (!w->accepting)
        return;
    for (unsigned i = 0; i < w->nlisteners; i++)
        event_add(w->listeners[i], NULL);
}

static void gw_worker_pause_accepting(struct gw_worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++)
        event_del(w->listeners[i]);
    struct timeval tv = {0, 100 * 1000};
    evtimer_add(w->accept_pause, &tv);
}

/* Accepts at most `batch` connections waiting on lfd. */
static void gw_worker_accept_batch(struct gw_worker *w, int lfd, int batch)
{
    for (int i = 0; i < batch; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            int e = errno;
            unsigned sup;
            if (log_ratelimit_pass(&w->refuse_rl, 1000, &sup))
                LOG_ERROR("accept failed: %s (%u similar lines suppressed)", strerror(e), sup);
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                gw_worker_pause_accepting(w); /* the listener stays readable: do not spin */
            return;
        }
        if (w->conns.count >= w->max_conns) {
            /* Full: refuse at once rather than let the client wait in the backlog. */
            GW_INC(w->metrics.conn_refused);
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fd);
            unsigned sup;
            if (log_ratelimit_pass(&w->refuse_rl, 1000, &sup))
                LOG_WARN("connection refused: worker holds %u connections, the most allowed "
                         "(gateway.max_connections) (%u similar lines suppressed)",
                         w->conns.count, sup);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        gw_conn_accept(w, fd);
    }
}

static void gw_worker_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct gw_worker *w = arg;
    /* A bounded batch per wake-up keeps accepting fair to the connections already open. */
    if (w->accepting)
        gw_worker_accept_batch(w, lfd, 64);
}

/* Closes the client listeners for good. When draining, the connections the kernel already
 * completed are accepted first: closing a listener resets whatever still waits in its queue,
 * and with SO_REUSEPORT those are clients the other instances would have served. The backlog
 * goes to 0 first: a client arriving meanwhile finds the queue full, its SYN is dropped, and
 * the retransmission reaches the port's other listeners. */
static void gw_worker_stop_accepting(struct gw_worker *w, bool take_waiting)
{
    if (w->listeners_closed)
        return;
    w->listeners_closed = true;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (w->accepting && take_waiting) {
            listen(w->listen_fds[i], 0);
            gw_worker_accept_batch(w, w->listen_fds[i], INT_MAX);
        }
        event_free(w->listeners[i]);
        close(w->listen_fds[i]);
        w->listeners[i] = NULL;
        w->listen_fds[i] = -1;
    }
    w->accepting = false;
}

/* Starts taking clients on the bound listeners. */
static void gw_worker_open_clients(struct gw_worker *w)
{
    if (w->accepting || w->listeners_closed)
        return;
    int backlog = (int)w->snap->cfg.listen_backlog;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (listen(w->listen_fds[i], backlog) != 0) {
            LOG_ERROR("worker %u: cannot listen for clients (gateway.listen): %s", w->id,
                      strerror(errno));
            continue;
        }
        event_add(w->listeners[i], NULL);
    }
    w->accepting = true;
}

/* Binds every client address now, so that a bad or taken address stops the start; the
 * listeners take clients once opened. */
static int gw_worker_listen(struct gw_worker *w, bool open_now, char *err, size_t errlen)
{
    const struct gw_config *c = &w->snap->cfg;
    const char *addrs[64];
    char *copy;
    size_t n = core_split_list(c->listen, &copy, addrs, 64);
    w->listeners = calloc(n, sizeof(*w->listeners));
    w->listen_fds = calloc(n, sizeof(*w->listen_fds));
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int fd = gw_bind_socket(addrs[i], true, err, errlen);
        if (fd < 0) {
            rc = -1;
            break;
        }
        w->listen_fds[w->nlisteners] = fd;
        w->listeners[w->nlisteners] =
            event_new(w->base, fd, EV_READ | EV_PERSIST, gw_worker_accept_cb, w);
        w->nlisteners++;
    }
    free(copy);
    if (rc == 0 && open_now)
        gw_worker_open_clients(w);
    return rc;
}

void gw_server_open_clients(struct gw_server *s, const char *why)
{
    if (atomic_load(&s->clients_open) || atomic_exchange(&s->clients_open, true))
        return;
    LOG_INFO("taking clients: %s", why); /* (s->snap belongs to the main thread) */
    for (unsigned i = 0; i < s->nworkers; i++)
        if (gw_worker_post(&s->workers[i], GW_MSG_LISTEN, NULL) != 0) {
            /* the await_tunnel timer asks again */
            LOG_ERROR("worker %u: queue full; its client listeners open later", i);
            atomic_store(&s->clients_open, false);
        }
}

static void gw_worker_set_max_conns(struct gw_worker *w)
{
    uint64_t per = (w->snap->cfg.max_connections + w->server->nworkers - 1) / w->server->nworkers;
    if (w->server->fd_budget && per > w->server->fd_budget)
        per = w->server->fd_budget; /* what the open-file limit leaves this worker */
    w->max_conns = (unsigned)per;
}

static void gw_worker_move_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_conn_move_run(arg);
}

static void gw_worker_check_drained(struct gw_worker *w)
{
    if (w->draining && w->conns.count == 0) {
        w->draining = false; /* report once */
        /* no request is left to carry: tell the connection points (GOAWAY) */
        gw_tunnel_close_all(w, true);
        atomic_fetch_add(&w->server->workers_drained, 1);
    }
}

static void gw_worker_msg_cb(struct core_mq_msg *msg, void *ctx)
{
    struct gw_worker *w = ctx;
    switch (msg->type) {
    case GW_MSG_SNAPSHOT: {
        struct gw_snapshot *old = w->snap;
        w->snap = msg->arg;
        w->auth_gen++; /* CRL files or trusted certificates may have changed */
        if (old && w->snap->cfg.instances && w->snap->cfg.instances != old->cfg.instances)
            gw_tunnel_instances_changed(w, (unsigned)w->snap->cfg.instances);
        gw_snapshot_unref(old);
        gw_worker_set_max_conns(w);
        break;
    }
    case GW_MSG_DRAIN:
        gw_worker_stop_accepting(w, true);
        w->draining = true;
        gw_conn_drain_all(w);
        gw_worker_check_drained(w);
        break;
    case GW_MSG_DYN: {
        struct gw_dyn *old = w->dyn;
        w->dyn = msg->arg;
        w->auth_gen++;
        gw_conn_dyn_changed(w);
        gw_tunnel_dyn_changed(w);
        gw_dyn_unref(old);
        break;
    }
    case GW_MSG_CONN:
        gw_conn_adopt(w, msg->arg);
        break;
    case GW_MSG_CONTENT:
        gw_content_wake(w);
        break;
    case GW_MSG_TUNNEL: {
        int *fd = msg->arg;
        gw_tunnel_accept(w, *fd);
        free(fd);
        break;
    }
    case GW_MSG_LISTEN:
        gw_worker_open_clients(w);
        break;
    case GW_MSG_STOP:
        gw_worker_stop_accepting(w, false);
        gw_conn_close_all(w);
        gw_tunnel_close_all(w, false);
        event_base_loopbreak(w->base);
        break;
    }
}

void gw_worker_conn_gone(struct gw_worker *w)
{
    gw_worker_check_drained(w);
}

static void *gw_worker_main(void *arg)
{
    struct gw_worker *w = arg;
    log_set_thread_tag(w->tag);
    event_base_dispatch(w->base);
    return NULL;
}

int gw_worker_start(struct gw_worker *w, bool open_now)
{
    char err[512];
    snprintf(w->tag, sizeof(w->tag), "w%u", w->id);
    struct event_config *ec = event_config_new();
    /* One thread per base: no locking inside libevent on the hot path. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK); /* woken by eventfd, see core_mq */
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base)
        return -1;
    w->mq = core_mq_new(w->base, 64, gw_worker_msg_cb, w);
    w->scratch = malloc(GW_SCRATCH);
    if (!w->mq || !w->scratch)
        return -1;
    w->accept_pause = evtimer_new(w->base, gw_worker_resume_cb, w);
    w->move_ev = event_new(w->base, -1, 0, gw_worker_move_cb, w);
    gw_worker_set_max_conns(w);
    if (gw_worker_listen(w, open_now, err, sizeof(err)) != 0) {
        LOG_ERROR("%s", err);
        return -1;
    }
    if (pthread_create(&w->thread, NULL, gw_worker_main, w) != 0)
        return -1;
    return 0;
}

int gw_worker_post(struct gw_worker *w, enum gw_msg_type type, void *arg)
{
    return core_mq_post(w->mq, type, arg);
}

void gw_worker_join(struct gw_worker *w)
{
    pthread_join(w->thread, NULL);
    gw_worker_stop_accepting(w, false);
    free(w->listeners);
    free(w->listen_fds);
    core_mq_free(w->mq);
    w->mq = NULL;
    if (w->accept_pause)
        event_free(w->accept_pause);
    if (w->move_ev)
        event_free(w->move_ev);
    free(w->served);
    gw_content_tokens_free(w); /* its timer lives on the base */
    event_base_free(w->base);
    free(w->scratch);
    gw_snapshot_unref(w->snap);
    w->snap = NULL;
    gw_dyn_unref(w->dyn);
    w->dyn = NULL;
    gw_token_cache_free(w);
}
