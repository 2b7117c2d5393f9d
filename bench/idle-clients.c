/* idle-clients: a lean TLS client for the idle-memory benchmark.
 *
 * Opens N TLS connections to HOST:PORT at a bounded rate (and with a bounded number of
 * connections in flight), sends one HTTP/1.1 GET on each, reads the whole response, then
 * keeps the connection open and idle. When every connection has either finished its request
 * or failed, it prints one line "READY ..." on stdout. It then holds the connections until
 * HOLD seconds have passed or it receives SIGTERM, SIGINT or SIGUSR1, closes them all and
 * prints "DONE ...". Progress goes to stderr once a second.
 *
 * By default the client frees its TLS state after the response (the socket stays open), so
 * 10,000 connections cost the client only file descriptors; -K keeps the SSL objects.
 * Server certificates are not verified (loopback benchmark against a development PKI).
 *
 * Build: cc -O2 idle-clients.c -lssl -lcrypto -o idle-clients
 * Exit status: 0 all N connections answered 200 and were still open at the end, 3 some
 * failed or were closed by the server, 2 bad usage or setup error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

enum state {
    ST_NEW = 0,
    ST_CONNECT,
    ST_HANDSHAKE,
    ST_WRITE,
    ST_READ,
    ST_IDLE,
    ST_FAILED,
    ST_CLOSED
};

enum fail_reason { FR_CONNECT = 0, FR_HANDSHAKE, FR_IO, FR_TIMEOUT, FR_EOF, FR_N };
static const char *fail_names[FR_N] = {"connect", "handshake", "io", "timeout", "eof"};

#define RESP_CAP 8192

struct conn {
    int fd;
    SSL *ssl;
    char *buf; /* response bytes while reading, NULL otherwise */
    uint32_t events;
    uint16_t blen;
    uint16_t woff;
    uint8_t st;
    double deadline;
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* options */
static const char *o_host = "127.0.0.1";
static int o_port = 0;
static long o_n = 100;
static double o_rate = 2000;       /* new connections per second */
static long o_inflight = 256;      /* connections between connect() and the end of the response */
static double o_hold = 60;         /* seconds to hold after READY, at most */
static double o_conn_timeout = 30; /* per connection, connect to response */
static double o_establish = 300;   /* overall, start to READY */
static const char *o_tls = "any";  /* 1.2, 1.3 or any */
static const char *o_path = "/";
static const char *o_sni = NULL;
static int o_keep_ssl = 0;

/* counters */
static long n_opened, n_inflight, n_ok, n_non200, n_failed, n_closed_by_server;
static long n_fail[FR_N];
static long long late_bytes;
static int errors_printed;

static int ep;
static SSL_CTX *ctx;
static struct sockaddr_in dst;
static char req[1024];
static size_t req_len;
static struct conn *conns;

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) != 0) {
        perror("idle-clients: epoll_ctl");
        exit(2);
    }
    c->events = ev;
}

static void release(struct conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    free(c->buf);
    c->buf = NULL;
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->events = 0;
}

static void fail(struct conn *c, enum fail_reason why, const char *detail)
{
    if (errors_printed < 10) {
        unsigned long e = ERR_peek_last_error();
        char eb[256] = "";
        if (e)
            ERR_error_string_n(e, eb, sizeof(eb));
        fprintf(stderr, "idle-clients: connection %ld failed (%s): %s %s\n", (long)(c - conns),
                fail_names[why], detail ? detail : "", eb);
        errors_printed++;
    }
    ERR_clear_error();
    release(c);
    c->st = ST_FAILED;
    n_failed++;
    n_fail[why]++;
    n_inflight--;
}

static void want(struct conn *c, int ret)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ)
        set_events(c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        set_events(c, EPOLLOUT);
    else if (e == SSL_ERROR_ZERO_RETURN)
        fail(c, FR_EOF, "closed by the server");
    else if (e == SSL_ERROR_SYSCALL)
        fail(c, c->st == ST_HANDSHAKE ? FR_HANDSHAKE : FR_IO,
             errno ? strerror(errno) : "unexpected EOF");
    else
        fail(c, c->st == ST_HANDSHAKE ? FR_HANDSHAKE : FR_IO, "TLS error");
}

/* 1 when buf holds a complete response; sets *status. */
static int response_complete(struct conn *c, int *status)
{
    c->buf[c->blen] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    *status = 0;
    if (strncmp(c->buf, "HTTP/1.", 7) == 0 && c->blen > 12)
        *status = atoi(c->buf + 9);
    long clen = 0;
    for (char *p = c->buf; p && p < end; p = strstr(p, "\r\n")) {
        if (*p == '\r')
            p += 2;
        if (strncasecmp(p, "content-length:", 15) == 0) {
            clen = strtol(p + 15, NULL, 10);
            break;
        }
    }
    return c->blen >= head + (size_t)clen;
}

static void do_read(struct conn *c)
{
    for (;;) {
        if (c->blen >= RESP_CAP - 1) {
            fail(c, FR_IO, "response larger than the buffer");
            return;
        }
        int r = SSL_read(c->ssl, c->buf + c->blen, RESP_CAP - 1 - c->blen);
        if (r <= 0) {
            want(c, r);
            return;
        }
        c->blen += (uint16_t)r;
        int status;
        if (response_complete(c, &status)) {
            if (status == 200)
                n_ok++;
            else
                n_non200++;
            free(c->buf);
            c->buf = NULL;
            if (!o_keep_ssl) {
                SSL_free(c->ssl); /* sends nothing; the socket stays open and idle */
                c->ssl = NULL;
            }
            c->st = ST_IDLE;
            n_inflight--;
            set_events(c, EPOLLIN | EPOLLRDHUP);
            return;
        }
    }
}

static void do_write(struct conn *c)
{
    while (c->woff < req_len) {
        int r = SSL_write(c->ssl, req + c->woff, (int)(req_len - c->woff));
        if (r <= 0) {
            want(c, r);
            return;
        }
        c->woff += (uint16_t)r;
    }
    c->st = ST_READ;
    c->buf = malloc(RESP_CAP);
    if (!c->buf) {
        fail(c, FR_IO, "out of memory");
        return;
    }
    c->blen = 0;
    do_read(c);
}

static void do_handshake(struct conn *c)
{
    int r = SSL_connect(c->ssl);
    if (r != 1) {
        want(c, r);
        return;
    }
    c->st = ST_WRITE;
    c->woff = 0;
    do_write(c);
}

static void open_one(struct conn *c, double now)
{
    n_opened++;
    n_inflight++;
    c->deadline = now + o_conn_timeout;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(c, FR_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->st = ST_CONNECT;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        fail(c, FR_CONNECT, strerror(errno));
        return;
    }
    set_events(c, EPOLLOUT);
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        fail(c, FR_CONNECT, strerror(err));
        return;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        fail(c, FR_HANDSHAKE, "SSL_new");
        return;
    }
    if (o_sni)
        SSL_set_tlsext_host_name(c->ssl, o_sni);
    SSL_set_connect_state(c->ssl);
    c->st = ST_HANDSHAKE;
    do_handshake(c);
}

static void on_idle_event(struct conn *c, uint32_t ev)
{
    char scratch[4096];
    for (;;) {
        ssize_t r = recv(c->fd, scratch, sizeof(scratch), 0);
        if (r > 0) {
            late_bytes += r; /* e.g. a TLS alert or record the server sent later */
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            n_closed_by_server++;
            release(c);
            c->st = ST_CLOSED;
        }
        return;
    }
    (void)ev;
}

static void handle(struct conn *c, uint32_t ev)
{
    switch (c->st) {
    case ST_CONNECT:
        on_connected(c);
        break;
    case ST_HANDSHAKE:
        do_handshake(c);
        break;
    case ST_WRITE:
        do_write(c);
        break;
    case ST_READ:
        do_read(c);
        break;
    case ST_IDLE:
        on_idle_event(c, ev);
        break;
    default:
        break;
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: idle-clients -p PORT [-h HOST] [-n N] [-r RATE] [-c INFLIGHT] [-H HOLD]\n"
                 "                    [-t 1.2|1.3|any] [-u PATH] [-s SNI] [-w CONN_TIMEOUT]\n"
                 "                    [-T ESTABLISH_TIMEOUT] [-K]\n"
                 "  -n N        connections to open (default 100)\n"
                 "  -r RATE     new connections per second at most (default 2000)\n"
                 "  -c INFLIGHT connections in connect/handshake/request at once (default 256)\n"
                 "  -H HOLD     seconds to hold the idle connections after READY (default 60);\n"
                 "              SIGTERM, SIGINT or SIGUSR1 ends the hold early\n"
                 "  -t VER      TLS version: 1.2, 1.3 or any (default any)\n"
                 "  -u PATH     request path (default /)\n"
                 "  -w SECONDS  per-connection deadline, connect to full response (default 30)\n"
                 "  -T SECONDS  overall deadline to reach READY (default 300)\n"
                 "  -K          keep the client's SSL objects while idle (default: free them)\n");
}

int main(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "h:p:n:r:c:H:t:u:s:w:T:K?")) != -1) {
        switch (ch) {
        case 'h':
            o_host = optarg;
            break;
        case 'p':
            o_port = atoi(optarg);
            break;
        case 'n':
            o_n = atol(optarg);
            break;
        case 'r':
            o_rate = atof(optarg);
            break;
        case 'c':
            o_inflight = atol(optarg);
            break;
        case 'H':
            o_hold = atof(optarg);
            break;
        case 't':
            o_tls = optarg;
            break;
        case 'u':
            o_path = optarg;
            break;
        case 's':
            o_sni = optarg;
            break;
        case 'w':
            o_conn_timeout = atof(optarg);
            break;
        case 'T':
            o_establish = atof(optarg);
            break;
        case 'K':
            o_keep_ssl = 1;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o_port <= 0 || o_port > 65535 || o_n <= 0 || o_n > 1000000 || o_rate <= 0 ||
        o_inflight <= 0 || o_hold < 0 || o_conn_timeout <= 0 || o_establish <= 0) {
        usage(stderr);
        return 2;
    }
    memset(&dst, 0, sizeof(dst));
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)o_port);
    if (inet_pton(AF_INET, o_host, &dst.sin_addr) != 1) {
        fprintf(stderr, "idle-clients: %s: not an IPv4 address\n", o_host);
        return 2;
    }
    req_len = (size_t)snprintf(req, sizeof(req),
                               "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: idle-clients\r\n"
                               "Accept: */*\r\n\r\n",
                               o_path, o_sni ? o_sni : o_host);
    if (req_len >= sizeof(req)) {
        fprintf(stderr, "idle-clients: path too long\n");
        return 2;
    }

    /* One descriptor per connection plus a few: raise the soft limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)o_n + 16 > rl.rlim_cur) {
        fprintf(stderr, "idle-clients: %ld connections need more than the open-file limit %llu\n",
                o_n, (unsigned long long)rl.rlim_cur);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        fprintf(stderr, "idle-clients: SSL_CTX_new failed\n");
        return 2;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* every handshake is full */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (strcmp(o_tls, "1.2") == 0) {
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    } else if (strcmp(o_tls, "1.3") == 0) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    } else if (strcmp(o_tls, "any") != 0) {
        usage(stderr);
        return 2;
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);

    conns = calloc((size_t)o_n, sizeof(*conns));
    if (!conns) {
        fprintf(stderr, "idle-clients: out of memory\n");
        return 2;
    }
    for (long i = 0; i < o_n; i++)
        conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("idle-clients: epoll_create1");
        return 2;
    }

    struct epoll_event evs[512];
    double t0 = now_s(), last_progress = t0, last_sweep = t0, ready_at = 0;
    int ready = 0;
    while (!stop_flag) {
        double now = now_s();
        if (!ready) {
            long allowed = (long)((now - t0) * o_rate) + 1;
            if (allowed > o_n)
                allowed = o_n;
            while (n_opened < allowed && n_inflight < o_inflight)
                open_one(&conns[n_opened], now);
            if (now - last_sweep >= 0.1) {
                last_sweep = now;
                int overall = now - t0 > o_establish;
                for (long i = 0; i < n_opened; i++) {
                    struct conn *c = &conns[i];
                    if (c->st >= ST_CONNECT && c->st <= ST_READ && (overall || now > c->deadline))
                        fail(c, FR_TIMEOUT, "deadline passed");
                }
                if (overall)
                    for (long i = n_opened; i < o_n; i++) {
                        conns[i].st = ST_FAILED;
                        n_failed++;
                        n_fail[FR_TIMEOUT]++;
                        n_opened++;
                    }
            }
            if (n_opened == o_n && n_inflight == 0) {
                ready = 1;
                ready_at = now;
                printf("READY ok=%ld non200=%ld failed=%ld closed_by_server=%ld seconds=%.3f\n",
                       n_ok, n_non200, n_failed, n_closed_by_server, now - t0);
                fflush(stdout);
            }
        } else if (now - ready_at >= o_hold) {
            break;
        }
        if (now - last_progress >= 1.0) {
            last_progress = now;
            fprintf(stderr,
                    "idle-clients: %.0fs opened=%ld inflight=%ld ok=%ld non200=%ld failed=%ld "
                    "closed_by_server=%ld\n",
                    now - t0, n_opened, n_inflight, n_ok, n_non200, n_failed, n_closed_by_server);
        }
        int timeout_ms = ready ? 200 : (n_opened < o_n && n_inflight < o_inflight ? 1 : 20);
        int n = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("idle-clients: epoll_wait");
            return 2;
        }
        for (int i = 0; i < n; i++)
            handle(evs[i].data.ptr, evs[i].events);
    }

    long held = 0;
    for (long i = 0; i < n_opened; i++) {
        if (conns[i].st == ST_IDLE)
            held++;
        release(&conns[i]);
    }
    printf("DONE ok=%ld non200=%ld failed=%ld held=%ld closed_by_server=%ld late_bytes=%lld "
           "ready=%d seconds=%.3f fail_connect=%ld fail_handshake=%ld fail_io=%ld "
           "fail_timeout=%ld fail_eof=%ld\n",
           n_ok, n_non200, n_failed, held, n_closed_by_server, late_bytes, ready, now_s() - t0,
           n_fail[FR_CONNECT], n_fail[FR_HANDSHAKE], n_fail[FR_IO], n_fail[FR_TIMEOUT],
           n_fail[FR_EOF]);
    fflush(stdout);
    free(conns);
    SSL_CTX_free(ctx);
    close(ep);
    return (ready && n_ok == o_n && held == o_n) ? 0 : 3;
}
