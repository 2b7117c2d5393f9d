/* Outbound TCP connections: resolve (evdns, never the blocking resolver), connect to each
 * address in turn, and optionally open a tunnel through an HTTP proxy with CONNECT. One timer
 * bounds the whole attempt. Results always reach the caller from the loop. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <openssl/evp.h>

#include "upstream.h"

#define DIAL_MAX_ADDRS 8
#define DIAL_PROXY_ANSWER_MAX 8192 /* bytes of the proxy's answer head */

enum dial_state { DS_RESOLVE, DS_CONNECT, DS_PROXY_SEND, DS_PROXY_RECV, DS_REPORT };

struct dial {
    struct event_base *base;
    enum dial_state state;
    char host[256]; /* the target */
    unsigned port;
    bool via_proxy;
    char proxy_host[256];
    unsigned proxy_port;
    char *auth; /* base64 "user:pass" for Proxy-Authorization, or NULL (owned) */

    struct evdns_getaddrinfo_request *dns_req;
    bool dns_pending; /* the resolver still owes its callback: the struct must wait for it */
    bool cancelled;   /* nobody wants the result any more */
    bool in_cb;       /* the caller's callback is running: dial_cancel is a no-op */
    struct sockaddr_storage addrs[DIAL_MAX_ADDRS];
    socklen_t addr_lens[DIAL_MAX_ADDRS];
    unsigned naddrs, next_addr;

    int fd;
    struct event io;
    bool io_added;
    struct event timer;

    char *out; /* the CONNECT request (owned) */
    size_t out_len, out_off;
    char answer[DIAL_PROXY_ANSWER_MAX];
    size_t answer_len;

    int result_fd;
    char error[1024];
    dial_cb cb;
    void *ctx;
};

/* ---- URLs ---- */

bool up_host_is_numeric(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static int url_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..len) into out (NUL-terminated). Returns 0 or -1. */
static int url_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = url_hex(s[i + 1]), lo = url_hex(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static int url_fail(char *err, size_t errlen, const char *url, const char *why)
{
    snprintf(err, errlen, "\"%.200s\": %s", url, why);
    return -1;
}

int up_url_parse(const char *url, struct up_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        u->is_https = true;
    } else {
        return url_fail(err, errlen, url, "not an http:// or https:// URL");
    }
    size_t alen = strcspn(p, "/?#");
    const char *auth = p, *rest = p + alen;
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@')
            at = auth + i;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        size_t ulen = colon ? (size_t)(colon - auth) : (size_t)(at - auth);
        if (url_decode(auth, ulen, u->user, sizeof(u->user)) != 0)
            return url_fail(err, errlen, url, "bad user name");
        if (colon && url_decode(colon + 1, (size_t)(at - colon - 1), u->pass, sizeof(u->pass)))
            return url_fail(err, errlen, url, "bad password");
        u->has_userinfo = true;
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    const char *host = auth, *port = NULL;
    size_t hlen;
    if (alen > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close)
            return url_fail(err, errlen, url, "unterminated IPv6 address");
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':')
                return url_fail(err, errlen, url, "junk after the IPv6 address");
            port = close + 2;
        }
        char tmp[64];
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof(tmp))
            return url_fail(err, errlen, url, "bad IPv6 address");
        memcpy(tmp, host, hlen);
        tmp[hlen] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return url_fail(err, errlen, url, "bad IPv6 address");
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        if (colon)
            port = colon + 1;
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)host[i]) && !strchr("-._", host[i]))
                return url_fail(err, errlen, url, "invalid character in the host name");
    }
    if (hlen == 0)
        return url_fail(err, errlen, url, "no host");
    if (hlen >= sizeof(u->host))
        return url_fail(err, errlen, url, "host name too long");
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    u->port = u->is_https ? 443 : 80;
    if (port) {
        size_t plen = (size_t)(auth + alen - port);
        unsigned v = 0;
        if (plen == 0 || plen > 5)
            return url_fail(err, errlen, url, "bad port");
        for (size_t i = 0; i < plen; i++) {
            if (!isdigit((unsigned char)port[i]))
                return url_fail(err, errlen, url, "bad port");
            v = v * 10 + (unsigned)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return url_fail(err, errlen, url, "port out of range");
        u->port = v;
        u->has_port = true;
    }
    if (*rest == '?' || *rest == '#' || strpbrk(rest, "?#"))
        return url_fail(err, errlen, url, "a query or fragment is not allowed here");
    size_t plen = strlen(rest);
    while (plen > 0 && rest[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(u->path))
        return url_fail(err, errlen, url, "path too long");
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)rest[i] <= 0x20 || (unsigned char)rest[i] >= 0x7f)
            return url_fail(err, errlen, url, "invalid character in the path");
    memcpy(u->path, rest, plen);
    u->path[plen] = '\0';
    return 0;
}

/* ---- dialing ---- */

static void dial_free(struct dial *d)
{
    if (d->io_added)
        event_del(&d->io);
    event_del(&d->timer);
    if (d->fd >= 0)
        close(d->fd);
    free(d->out);
    free(d->auth);
    free(d);
}

/* Ends the dial: frees it now, or leaves it for the resolver's callback to free. */
static void dial_destroy(struct dial *d)
{
    if (d->dns_pending) {
        d->cancelled = true;
        if (d->io_added)
            event_del(&d->io);
        d->io_added = false;
        event_del(&d->timer);
        if (d->fd >= 0)
            close(d->fd);
        d->fd = -1;
        if (d->dns_req)
            evdns_getaddrinfo_cancel(d->dns_req); /* its callback frees d, later */
        return;
    }
    dial_free(d);
}

/* The outcome is known: hand it over from the loop, not from the current call stack. */
static void dial_report(struct dial *d, int fd, const char *why)
{
    if (d->io_added)
        event_del(&d->io);
    d->io_added = false;
    d->state = DS_REPORT;
    d->result_fd = fd;
    if (fd >= 0)
        d->fd = -1; /* the callee's now */
    else if (why && why != d->error)
        snprintf(d->error, sizeof(d->error), "%s", why);
    event_active(&d->timer, EV_TIMEOUT, 1);
}

static const char *dial_peer(const struct dial *d, char *buf, size_t len)
{
    const char *h = d->via_proxy ? d->proxy_host : d->host;
    unsigned port = d->via_proxy ? d->proxy_port : d->port;
    snprintf(buf, len, strchr(h, ':') ? "[%s]:%u" : "%s:%u", h, port);
    return buf;
}

static void dial_io_cb(evutil_socket_t fd, short what, void *arg);

static void dial_watch(struct dial *d, short what)
{
    if (d->io_added)
        event_del(&d->io);
    event_assign(&d->io, d->base, d->fd, what | EV_PERSIST, dial_io_cb, d);
    event_add(&d->io, NULL);
    d->io_added = true;
}

static void dial_send_connect(struct dial *d);

static void dial_connected(struct dial *d)
{
    if (!d->via_proxy) {
        dial_report(d, d->fd, NULL);
        return;
    }
    char target[300];
    snprintf(target, sizeof(target), strchr(d->host, ':') ? "[%s]:%u" : "%s:%u", d->host, d->port);
    size_t cap = 2 * strlen(target) + (d->auth ? strlen(d->auth) : 0) + 128;
    d->out = malloc(cap);
    if (!d->out) {
        dial_report(d, -1, "out of memory");
        return;
    }
    int n = snprintf(d->out, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", target, target,
                     d->auth ? "Proxy-Authorization: Basic " : "", d->auth ? d->auth : "",
                     d->auth ? "\r\n" : "");
    d->out_len = (size_t)n;
    d->out_off = 0;
    d->state = DS_PROXY_SEND;
    dial_send_connect(d);
}

/* Connects to the next address; reports failure when none is left. */
static void dial_next_addr(struct dial *d)
{
    char peer[300];
    while (d->next_addr < d->naddrs) {
        unsigned i = d->next_addr++;
        const struct sockaddr *sa = (const struct sockaddr *)&d->addrs[i];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(d->error, sizeof(d->error), "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        d->fd = fd;
        if (connect(fd, sa, d->addr_lens[i]) == 0) {
            dial_connected(d);
            return;
        }
        if (errno == EINPROGRESS) {
            d->state = DS_CONNECT;
            dial_watch(d, EV_WRITE);
            return;
        }
        snprintf(d->error, sizeof(d->error), "connect to %s%s: %s", d->via_proxy ? "proxy " : "",
                 dial_peer(d, peer, sizeof(peer)), strerror(errno));
        close(fd);
        d->fd = -1;
    }
    if (!d->error[0])
        snprintf(d->error, sizeof(d->error), "no address to connect to for %s",
                 dial_peer(d, peer, sizeof(peer)));
    dial_report(d, -1, d->error);
}

static void dial_send_connect(struct dial *d)
{
    while (d->out_off < d->out_len) {
        ssize_t n = send(d->fd, d->out + d->out_off, d->out_len - d->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            d->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            dial_watch(d, EV_WRITE);
            return;
        }
        char peer[300];
        snprintf(d->error, sizeof(d->error), "proxy %s: sending CONNECT failed: %s",
                 dial_peer(d, peer, sizeof(peer)), n < 0 ? strerror(errno) : "closed");
        dial_report(d, -1, d->error);
        return;
    }
    d->state = DS_PROXY_RECV;
    dial_watch(d, EV_READ);
}

/* Judges the proxy's answer head (complete in d->answer). */
static void dial_proxy_answered(struct dial *d)
{
    char peer[300], line[128];
    size_t l = 0;
    while (l < d->answer_len && d->answer[l] != '\r' && l < sizeof(line) - 1) {
        unsigned char ch = (unsigned char)d->answer[l];
        line[l] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
        l++;
    }
    line[l] = '\0';
    dial_peer(d, peer, sizeof(peer));
    int status = 0;
    if (d->answer_len >= 12 && memcmp(d->answer, "HTTP/1.", 7) == 0 &&
        isdigit((unsigned char)d->answer[7]) && d->answer[8] == ' ' &&
        isdigit((unsigned char)d->answer[9]) && isdigit((unsigned char)d->answer[10]) &&
        isdigit((unsigned char)d->answer[11]))
        status = (d->answer[9] - '0') * 100 + (d->answer[10] - '0') * 10 + (d->answer[11] - '0');
    if (status >= 200 && status < 300) {
        dial_report(d, d->fd, NULL);
        return;
    }
    if (status == 407)
        snprintf(d->error, sizeof(d->error), "proxy %s %s (407)", peer,
                 d->auth ? "refused the credentials" : "requires authentication");
    else if (status)
        snprintf(d->error, sizeof(d->error), "proxy %s refused CONNECT %s:%u: %s", peer, d->host,
                 d->port, line);
    else
        snprintf(d->error, sizeof(d->error), "proxy %s: not an HTTP answer to CONNECT", peer);
    dial_report(d, -1, d->error);
}

/* Reads the proxy's answer without taking a byte past its head: whatever follows belongs to
 * the tunnel. Peeks, then takes exactly what is head. */
static void dial_proxy_read(struct dial *d)
{
    char peer[300];
    size_t room = sizeof(d->answer) - d->answer_len;
    if (room == 0) {
        snprintf(d->error, sizeof(d->error), "proxy %s: answer head too large",
                 dial_peer(d, peer, sizeof(peer)));
        dial_report(d, -1, d->error);
        return;
    }
    ssize_t n = recv(d->fd, d->answer + d->answer_len, room, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        snprintf(d->error, sizeof(d->error), "proxy %s closed the connection before answering",
                 dial_peer(d, peer, sizeof(peer)));
        dial_report(d, -1, d->error);
        return;
    }
    size_t from = d->answer_len > 3 ? d->answer_len - 3 : 0, end = 0;
    size_t total = d->answer_len + (size_t)n;
    for (size_t i = from; i + 4 <= total; i++) {
        if (memcmp(d->answer + i, "\r\n\r\n", 4) == 0) {
            end = i + 4;
            break;
        }
    }
    size_t take = end ? end - d->answer_len : (size_t)n;
    ssize_t got = recv(d->fd, d->answer + d->answer_len, take, 0);
    if (got != (ssize_t)take) {
        snprintf(d->error, sizeof(d->error), "proxy %s: reading the answer failed",
                 dial_peer(d, peer, sizeof(peer)));
        dial_report(d, -1, d->error);
        return;
    }
    d->answer_len += take;
    if (end)
        dial_proxy_answered(d);
}

static void dial_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;
    (void)what;
    switch (d->state) {
    case DS_CONNECT: {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
            e = errno;
        if (e == 0) {
            event_del(&d->io);
            d->io_added = false;
            dial_connected(d);
            return;
        }
        char peer[300];
        snprintf(d->error, sizeof(d->error), "connect to %s%s: %s", d->via_proxy ? "proxy " : "",
                 dial_peer(d, peer, sizeof(peer)), strerror(e));
        event_del(&d->io);
        d->io_added = false;
        close(d->fd);
        d->fd = -1;
        dial_next_addr(d);
        return;
    }
    case DS_PROXY_SEND:
        dial_send_connect(d);
        return;
    case DS_PROXY_RECV:
        dial_proxy_read(d);
        return;
    default:
        return;
    }
}

static void dial_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;
    (void)fd;
    (void)what;
    if (d->state != DS_REPORT) {
        char peer[300];
        const char *phase = d->state == DS_RESOLVE   ? "resolving"
                            : d->state == DS_CONNECT ? "connecting to"
                                                     : "waiting for the proxy at";
        snprintf(d->error, sizeof(d->error), "timed out %s %s", phase,
                 d->state == DS_RESOLVE && !d->via_proxy ? d->host
                                                         : dial_peer(d, peer, sizeof(peer)));
        d->result_fd = -1;
    }
    int rfd = d->result_fd;
    if (rfd < 0 && d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }
    d->in_cb = true;
    d->cb(rfd, rfd >= 0 ? NULL : d->error, d->ctx);
    dial_destroy(d);
}

static void dial_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dial *d = arg;
    d->dns_pending = false;
    d->dns_req = NULL;
    if (d->cancelled) {
        if (res)
            evutil_freeaddrinfo(res);
        dial_free(d);
        return;
    }
    if (result != 0) {
        snprintf(d->error, sizeof(d->error), "cannot resolve %s: %s",
                 d->via_proxy ? d->proxy_host : d->host, evutil_gai_strerror(result));
        if (res)
            evutil_freeaddrinfo(res);
        dial_report(d, -1, d->error);
        return;
    }
    unsigned port = d->via_proxy ? d->proxy_port : d->port;
    for (struct evutil_addrinfo *ai = res; ai && d->naddrs < DIAL_MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(d->addrs[0]))
            continue;
        memcpy(&d->addrs[d->naddrs], ai->ai_addr, ai->ai_addrlen);
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&d->addrs[d->naddrs])->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)&d->addrs[d->naddrs])->sin6_port = htons((uint16_t)port);
        d->addr_lens[d->naddrs++] = (socklen_t)ai->ai_addrlen;
    }
    if (res)
        evutil_freeaddrinfo(res);
    d->state = DS_CONNECT;
    dial_next_addr(d);
}

static bool dial_add_literal(struct dial *d, const char *host, unsigned port)
{
    struct sockaddr_storage *ss = &d->addrs[d->naddrs];
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        d->addr_lens[d->naddrs++] = sizeof(*s4);
        return true;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        d->addr_lens[d->naddrs++] = sizeof(*s6);
        return true;
    }
    return false;
}

struct dial *dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                        unsigned port, const char *proxy_url, uint64_t timeout_ms, dial_cb cb,
                        void *ctx)
{
    if (!base || !host || !*host || strlen(host) >= 256 || port == 0 || port > 65535 || !cb)
        return NULL;
    struct dial *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->base = base;
    d->fd = -1;
    d->result_fd = -1;
    d->cb = cb;
    d->ctx = ctx;
    snprintf(d->host, sizeof(d->host), "%s", host);
    d->port = port;
    if (proxy_url && *proxy_url) {
        struct up_url u;
        char err[300];
        if (up_url_parse(proxy_url, &u, err, sizeof(err)) != 0 || u.is_https || u.path[0]) {
            free(d);
            return NULL;
        }
        d->via_proxy = true;
        snprintf(d->proxy_host, sizeof(d->proxy_host), "%s", u.host);
        d->proxy_port = u.port;
        if (u.has_userinfo) {
            char cred[260];
            int n = snprintf(cred, sizeof(cred), "%s:%s", u.user, u.pass);
            d->auth = malloc(4 * ((size_t)n + 2) / 3 + 4);
            if (!d->auth) {
                free(d);
                return NULL;
            }
            EVP_EncodeBlock((unsigned char *)d->auth, (const unsigned char *)cred, n);
            OPENSSL_cleanse(cred, sizeof(cred));
        }
    }
    const char *name = d->via_proxy ? d->proxy_host : d->host;
    unsigned nport = d->via_proxy ? d->proxy_port : d->port;
    bool literal = up_host_is_numeric(name) || strcasecmp(name, "localhost") == 0;
    if (!literal && !dns) {
        free(d->auth);
        free(d);
        return NULL;
    }
    evtimer_assign(&d->timer, base, dial_timer_cb, d);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    event_add(&d->timer, &tv);
    if (literal) {
        if (strcasecmp(name, "localhost") == 0) {
            dial_add_literal(d, "127.0.0.1", nport);
            dial_add_literal(d, "::1", nport);
        } else {
            dial_add_literal(d, name, nport);
        }
        d->state = DS_CONNECT;
        dial_next_addr(d);
        return d;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    d->state = DS_RESOLVE;
    d->dns_pending = true;
    /* The callback may run at once (answers from the hosts file): then it returns NULL. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(dns, name, NULL, &hints, dial_dns_cb, d);
    if (d->dns_pending)
        d->dns_req = req;
    return d;
}

bool dial_is_resolving(const struct dial *d)
{
    return d->dns_pending;
}

void dial_cancel(struct dial *d)
{
    if (!d || d->in_cb)
        return;
    dial_destroy(d);
}
