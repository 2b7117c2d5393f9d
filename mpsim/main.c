/* cmg-mpsim: a management point simulator for tests and benchmarks of the gateway and the
 * connection point. Options, listeners, signals, the ready file. */
#include <errno.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "mpsim.h"

struct mpsim_listener {
    struct mpsim_server *srv; /* borrowed */
    evutil_socket_t fd;       /* owned */
    struct event *ev;         /* owned */
    char name[80];            /* the bound address, as printed */
};

struct mpsim_main {
    struct mpsim_server srv;
    struct mpsim_listener listeners[MPSIM_MAX_LISTENERS];
    unsigned nlisteners;
    struct event *accept_resume; /* owned: accepting again after running out of descriptors */
    struct log_ratelimit accept_rl;
};

static void mpsim_usage(FILE *out)
{
    fprintf(out,
            "usage: cmg-mpsim [options]\n"
            "  --listen ADDR:PORT   address to listen on (repeatable or a comma list; port 0\n"
            "                       picks a free one); default 127.0.0.1:8080\n"
            "  --hold DURATION      how long a /bgb/ notification request is held (500ms, 30s,\n"
            "                       2m; a bare number is seconds); default 30s\n"
            "  --policy-size SIZE   bytes of a policy body (4096, 16k, 1m); default 4096\n"
            "  --site CODE          site code, three letters or digits; default PS1\n"
            "  --mp-name FQDN       the management point's name; default mp1.contoso.com\n"
            "  --quiet              no log line per request\n"
            "  --ready-file PATH    written once listening: one bound ADDR:PORT per line\n"
            "  -V, --version        print the version\n"
            "  -h, --help           this text\n"
            "Signals: SIGTERM and SIGINT stop at once.\n");
}

static int mpsim_bad_option(const char *opt, const char *value, const char *why)
{
    fprintf(stderr, "cmg-mpsim: %s \"%s\": %s\n", opt, value, why);
    return 2;
}

static bool mpsim_valid_fqdn(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

/* "1.2.3.4:80" or "[::1]:80", numeric, port 0..65535 (0: any free port). Returns 0 or -1. */
static int mpsim_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == '\0' || strlen(colon + 1) > 5)
        return -1;
    unsigned port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        port = port * 10 + (unsigned)(*p - '0');
    }
    if (port > 65535)
        return -1;
    char host[64];
    size_t hl = (size_t)(colon - s);
    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= sizeof(host))
            return -1;
        memcpy(host, s + 1, hl - 2);
        host[hl - 2] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a);
        return 0;
    }
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof(*a);
    return 0;
}

/* Parses argv into o. Returns -1 to go on, or the exit status (0 for --help). */
static int mpsim_parse_args(int argc, char **argv, struct mpsim_opts *o)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"hold", required_argument, NULL, 'H'},
                                         {"policy-size", required_argument, NULL, 'P'},
                                         {"site", required_argument, NULL, 'S'},
                                         {"mp-name", required_argument, NULL, 'M'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"ready-file", required_argument, NULL, 'R'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *why = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "hVq", opts, NULL)) != -1) {
        switch (ch) {
        case 'l': {
            if (o->ncopies == MPSIM_MAX_LISTENERS)
                return mpsim_bad_option("--listen", optarg, "too many --listen options");
            const char *addrs[MPSIM_MAX_LISTENERS + 1];
            char *copy = NULL;
            size_t n = core_split_list(optarg, &copy, addrs, MPSIM_MAX_LISTENERS + 1);
            o->listen_copies[o->ncopies++] = copy;
            if (n == 0)
                return mpsim_bad_option("--listen", optarg, "no address given");
            if (o->nlisten + n > MPSIM_MAX_LISTENERS)
                return mpsim_bad_option("--listen", optarg, "more than 16 addresses");
            for (size_t i = 0; i < n; i++) {
                struct sockaddr_storage ss;
                socklen_t sl;
                if (mpsim_parse_addr(addrs[i], &ss, &sl) != 0)
                    return mpsim_bad_option("--listen", addrs[i],
                                            "expected a numeric ADDRESS:PORT such as "
                                            "127.0.0.1:8080 or [::1]:8080");
                o->listen[o->nlisten++] = addrs[i];
            }
            break;
        }
        case 'H':
            if (config_parse_duration(optarg, &o->hold_ms, &why) != 0)
                return mpsim_bad_option("--hold", optarg, why);
            if (o->hold_ms > MPSIM_MAX_HOLD_MS)
                return mpsim_bad_option("--hold", optarg, "longer than the most allowed, 24h");
            break;
        case 'P':
            if (config_parse_size(optarg, &o->policy_size, &why) != 0)
                return mpsim_bad_option("--policy-size", optarg, why);
            if (o->policy_size > MPSIM_MAX_POLICY_SIZE)
                return mpsim_bad_option("--policy-size", optarg,
                                        "larger than the most allowed, 64m");
            break;
        case 'S': {
            size_t n = strlen(optarg);
            bool ok = n == 3;
            for (size_t i = 0; ok && i < n; i++) {
                char c = optarg[i];
                ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
                o->site[i] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
            }
            if (!ok)
                return mpsim_bad_option("--site", optarg,
                                        "a site code is three letters or digits, such as PS1");
            o->site[3] = '\0';
            break;
        }
        case 'M':
            if (!mpsim_valid_fqdn(optarg))
                return mpsim_bad_option("--mp-name", optarg,
                                        "expected a host name of letters, digits, '.' and '-'");
            snprintf(o->mp_name, sizeof(o->mp_name), "%s", optarg);
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'R':
            if (!*optarg)
                return mpsim_bad_option("--ready-file", optarg, "empty path");
            o->ready_file = optarg;
            break;
        case 'V':
            printf("cmg-mpsim %s\n", CMG_VERSION);
            return 0;
        case 'h':
            mpsim_usage(stdout);
            return 0;
        default:
            mpsim_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "cmg-mpsim: unexpected argument \"%s\"\n", argv[optind]);
        mpsim_usage(stderr);
        return 2;
    }
    if (o->nlisten == 0) {
        static char dflt[] = "127.0.0.1:8080";
        o->listen[o->nlisten++] = dflt;
    }
    return -1;
}

/* ---- listening ---- */

static void mpsim_accept_pause(struct mpsim_main *m)
{
    for (unsigned i = 0; i < m->nlisteners; i++)
        event_del(m->listeners[i].ev);
    struct timeval tv = {0, 100 * 1000};
    evtimer_add(m->accept_resume, &tv);
}

static void mpsim_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mpsim_main *m = arg;
    for (unsigned i = 0; i < m->nlisteners; i++)
        event_add(m->listeners[i].ev, NULL);
}

static void mpsim_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct mpsim_main *m = arg;
    for (int i = 0; i < MPSIM_ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            int e = errno;
            unsigned sup = 0;
            if (log_ratelimit_pass(&m->accept_rl, 1000, &sup))
                LOG_ERROR("accept failed: %s (%u similar lines suppressed)", strerror(e), sup);
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                mpsim_accept_pause(m); /* the listener stays readable: do not spin on it */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        mpsim_conn_accept(&m->srv, fd);
    }
}

static int mpsim_listen_one(struct mpsim_main *m, const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    mpsim_parse_addr(addr, &ss, &sl); /* checked while parsing the options */
    struct mpsim_listener *l = &m->listeners[m->nlisteners];
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, MPSIM_LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    socklen_t blen = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &blen);
    char host[64] = "?";
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        evutil_inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(l->name, sizeof(l->name), "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(l->name, sizeof(l->name), "%s:%u", host, ntohs(a->sin_port));
    }
    l->srv = &m->srv;
    l->fd = fd;
    l->ev = event_new(m->srv.base, fd, EV_READ | EV_PERSIST, mpsim_accept_cb, m);
    if (!l->ev) {
        snprintf(err, errlen, "cannot listen on %s: out of memory", addr);
        close(fd);
        return -1;
    }
    event_add(l->ev, NULL);
    m->nlisteners++;
    return 0;
}

/* Writes the bound addresses to the ready file, replacing it in one step. */
static int mpsim_write_ready(const struct mpsim_main *m, const char *path)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp)
        return -1;
    snprintf(tmp, plen + 16, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (!f)
        goto out;
    for (unsigned i = 0; i < m->nlisteners; i++)
        fprintf(f, "%s\n", m->listeners[i].name);
    if (fclose(f) != 0)
        goto out;
    if (rename(tmp, path) != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* Takes the open-file limit up to the hard limit: each held request is a descriptor. */
static void mpsim_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void mpsim_stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct mpsim_main *m = arg;
    LOG_INFO("signal %d: stopping", (int)sig);
    event_base_loopbreak(m->srv.base);
}

static struct timeval mpsim_tv(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

int main(int argc, char **argv)
{
    static struct mpsim_main m; /* large, and alive for the whole run */
    struct mpsim_server *s = &m.srv;
    struct mpsim_opts *o = &s->opts;
    o->hold_ms = 30000;
    o->policy_size = 4096;
    strcpy(o->site, "PS1");
    strcpy(o->mp_name, "mp1.contoso.com");
    int rc = mpsim_parse_args(argc, argv, o);
    if (rc >= 0) {
        for (unsigned i = 0; i < o->ncopies; i++)
            free(o->listen_copies[i]);
        return rc;
    }
    rc = 1;

    signal(SIGPIPE, SIG_IGN);
    char err[512];
    struct log_opts lo = {.component = "cmg-mpsim", .level = LOG_LEVEL_INFO, .to_stderr = true};
    if (log_init(&lo, err, sizeof(err)) != 0) {
        fprintf(stderr, "cmg-mpsim: %s\n", err);
        return 1;
    }
    mpsim_raise_fd_limit();
    if (o->ready_file)
        unlink(o->ready_file); /* a stale one must not tell a script we are up */

    struct event *ev_term = NULL, *ev_int = NULL;
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        s->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    s->rbuf = malloc(MPSIM_READ_CHUNK);
    s->scratch_md = EVP_MD_CTX_new();
    if (!s->base || !s->rbuf || !s->scratch_md) {
        fprintf(stderr, "cmg-mpsim: out of memory\n");
        goto out;
    }
    s->limits = (struct httpreq_limits){.max_header_bytes = MPSIM_MAX_HEADER_BYTES,
                                        .max_headers = MPSIM_MAX_HEADERS,
                                        .max_body_bytes = MPSIM_MAX_BODY_BYTES};
    struct timeval idle = mpsim_tv(MPSIM_IDLE_TIMEOUT_MS), linger = mpsim_tv(MPSIM_LINGER_MS);
    s->idle_tv = event_base_init_common_timeout(s->base, &idle);
    s->linger_tv = event_base_init_common_timeout(s->base, &linger);
    s->hold_timer = evtimer_new(s->base, mpsim_hold_timer_cb, s);
    m.accept_resume = evtimer_new(s->base, mpsim_accept_resume_cb, &m);
    ev_term = evsignal_new(s->base, SIGTERM, mpsim_stop_cb, &m);
    ev_int = evsignal_new(s->base, SIGINT, mpsim_stop_cb, &m);
    if (!s->idle_tv || !s->linger_tv || !s->hold_timer || !m.accept_resume || !ev_term || !ev_int) {
        fprintf(stderr, "cmg-mpsim: out of memory\n");
        goto out;
    }
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);

    for (unsigned i = 0; i < o->nlisten; i++) {
        if (mpsim_listen_one(&m, o->listen[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "cmg-mpsim: %s\n", err);
            goto out;
        }
    }
    char names[MPSIM_MAX_LISTENERS * 82] = "";
    for (unsigned i = 0; i < m.nlisteners; i++) {
        if (i)
            strcat(names, ", ");
        strcat(names, m.listeners[i].name);
    }
    LOG_INFO("cmg-mpsim listening on %s (site %s, mp %s, hold %llu ms, policy %llu bytes)", names,
             o->site, o->mp_name, (unsigned long long)o->hold_ms,
             (unsigned long long)o->policy_size);
    if (o->ready_file && mpsim_write_ready(&m, o->ready_file) != 0) {
        fprintf(stderr, "cmg-mpsim: --ready-file %s: %s\n", o->ready_file, strerror(errno));
        goto out;
    }

    event_base_dispatch(s->base);
    rc = 0;
    if (o->ready_file)
        unlink(o->ready_file);
    LOG_INFO("cmg-mpsim stopped: %llu requests on %llu connections",
             (unsigned long long)s->stats.requests, (unsigned long long)s->stats.connections_total);

out:
    mpsim_conn_close_all(s);
    for (unsigned i = 0; i < m.nlisteners; i++) {
        event_free(m.listeners[i].ev);
        close(m.listeners[i].fd);
    }
    if (ev_term)
        event_free(ev_term);
    if (ev_int)
        event_free(ev_int);
    if (m.accept_resume)
        event_free(m.accept_resume);
    if (s->hold_timer)
        event_free(s->hold_timer);
    EVP_MD_CTX_free(s->scratch_md);
    free(s->rbuf);
    if (s->base)
        event_base_free(s->base);
    for (unsigned i = 0; i < o->ncopies; i++)
        free(o->listen_copies[i]);
    log_deinit();
    return rc;
}
