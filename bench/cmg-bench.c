/* cmg-bench: a load generator that behaves like many Configuration Manager clients talking to
 * a cloud management gateway, and reports what it saw as JSON.
 *
 * A run has three phases, all bounded in time:
 *   ramp   clients connect at --rate per second (at most --inflight connecting at once) until
 *          every one is up or --ramp-timeout passes;
 *   hold   for --hold seconds every client keeps its connection and runs its cycle
 *          (bench-client.c); the figures of the report are taken here;
 *   down   clients are closed, evenly over --ramp-down seconds.
 * --deadline ends the run whatever happens. In handshake mode the ramp is the warm-up and each
 * client makes one request per full TLS handshake.
 *
 * The report: clients held (at the start, the least during, and at the end of the hold),
 * requests and handshakes per second, latency percentiles from histograms, errors by kind,
 * answers by status, and the CPU time and resident memory of the --server-pid processes read
 * from /proc at the phase boundaries.
 *
 * Exit status: 0 every client was held through the hold phase without an error, 1 not, 2 bad
 * usage or setup (including a --clients beyond the open-file limit). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/opensslv.h>

#include "bench.h"

#define TICK_S 0.01 /* the phase timer */
#define FD_RESERVE 32

static const char *kind_names[BK_N] = {"location", "policy", "status", "content_location",
                                       "content",  "notify", "get"};
static const char *err_names[BE_N] = {"connect", "handshake", "timeout",         "status",
                                      "closed",  "parse",     "content_location"};

struct proc_sample {
    double t;
    double cpu_s; /* utime + stime of every listed process */
    long rss_kib; /* VmRSS summed over them */
    int alive;    /* how many of them were readable */
};

struct run {
    struct bench b;
    struct event *tick;
    struct event *sig_int, *sig_term;
    double last_progress, last_sample, down_start;
    unsigned down_next; /* the next client the ramp-down closes */
    struct proc_sample s_start, s_hold, s_hold_end, s_end;
    double last_tick;
    struct bench_hist lag; /* how late the phase timer fired: the generator's own delay */
    long rss_max_kib;
    long nofile;
    bool interrupted;
};

/* ---- /proc ---- */

static int proc_read(pid_t pid, double *cpu_s, long *rss_kib)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    *rss_kib = 0;
    while (fgets(buf, sizeof(buf), f))
        if (strncmp(buf, "VmRSS:", 6) == 0) {
            *rss_kib = strtol(buf + 6, NULL, 10);
            break;
        }
    fclose(f);
    return 0;
}

static void sample(struct run *r, struct proc_sample *s)
{
    memset(s, 0, sizeof(*s));
    s->t = bench_now();
    for (unsigned i = 0; i < r->b.o.npids; i++) {
        double cpu;
        long rss;
        if (proc_read(r->b.o.pids[i], &cpu, &rss) == 0) {
            s->cpu_s += cpu;
            s->rss_kib += rss;
            s->alive++;
        }
    }
    if (s->rss_kib > r->rss_max_kib)
        r->rss_max_kib = s->rss_kib;
}

/* ---- phases ---- */

static void progress(struct run *r, double now)
{
    struct bench *b = &r->b;
    static const char *names[] = {"ramp", "hold", "down", "done"};
    uint64_t errs = 0, reqs = 0;
    for (int i = 0; i < BE_N; i++)
        errs += b->errors[0][i];
    for (int i = 0; i < BK_N; i++)
        reqs += b->requests[0][i];
    fprintf(stderr,
            "cmg-bench: %6.1fs %s connected=%u connecting=%u notify_held=%u handshakes=%llu "
            "requests=%llu errors=%llu\n",
            now - b->t0, names[b->phase], b->established, b->connecting, b->notify_held,
            (unsigned long long)b->handshakes[0], (unsigned long long)reqs,
            (unsigned long long)errs);
}

static void enter_hold(struct run *r, double now)
{
    struct bench *b = &r->b;
    b->phase = BP_HOLD;
    b->t_hold = now;
    b->held_hold_start = b->established;
    b->held_hold_min = b->established;
    sample(r, &r->s_hold);
}

static void enter_down(struct run *r, double now)
{
    struct bench *b = &r->b;
    b->held_hold_end = b->established;
    b->notify_hold_end = b->notify_held;
    sample(r, &r->s_hold_end);
    b->phase = BP_DOWN;
    b->t_down = now;
    r->down_start = now;
    r->down_next = 0;
}

static void finish(struct run *r, double now)
{
    struct bench *b = &r->b;
    for (unsigned i = 0; i < b->o.clients; i++)
        bench_client_stop(b, bench_client_at(b, i));
    b->phase = BP_DONE;
    b->t_done = now;
    sample(r, &r->s_end);
    event_base_loopbreak(b->base);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    struct bench *b = &r->b;
    double now = bench_now(), el = now - b->t0;

    if (r->last_tick > 0) {
        double late = now - r->last_tick - TICK_S;
        bench_hist_add(&r->lag, late > 0 ? (uint64_t)(late * 1e6) : 0);
    }
    r->last_tick = now;
    if (el >= b->o.deadline_s || r->interrupted) {
        if (!r->interrupted)
            b->deadline_hit = true;
        if (b->phase == BP_RAMP)
            enter_hold(r, now);
        if (b->phase == BP_HOLD)
            enter_down(r, now);
        finish(r, now);
        return;
    }
    if (now - r->last_sample >= 1.0) {
        r->last_sample = now;
        struct proc_sample s;
        sample(r, &s);
        if (b->phase == BP_HOLD && b->established < b->held_hold_min)
            b->held_hold_min = b->established;
    }
    if (now - r->last_progress >= 1.0) {
        r->last_progress = now;
        progress(r, now);
    }
    switch (b->phase) {
    case BP_RAMP: {
        double want = el * b->o.rate + 1;
        unsigned allowed = want >= b->o.clients ? b->o.clients : (unsigned)want;
        while (b->started < allowed && b->connecting < b->o.inflight) {
            bench_client_start(b, bench_client_at(b, b->started));
            b->started++;
        }
        bool all_up = b->started == b->o.clients &&
                      (b->o.mode == BM_HANDSHAKE || b->established == b->o.clients);
        if (b->o.mode == BM_HANDSHAKE)
            all_up = all_up && el >= b->o.ramp_timeout; /* the warm-up */
        if (all_up || el >= b->o.ramp_timeout) {
            b->ramp_complete = b->started == b->o.clients &&
                               (b->o.mode == BM_HANDSHAKE || b->established == b->o.clients);
            enter_hold(r, now);
        }
        break;
    }
    case BP_HOLD:
        if (b->established < b->held_hold_min)
            b->held_hold_min = b->established;
        if (now - b->t_hold >= b->o.hold_s)
            enter_down(r, now);
        break;
    case BP_DOWN: {
        double frac = b->o.ramp_down_s > 0 ? (now - r->down_start) / b->o.ramp_down_s : 1;
        unsigned upto = frac >= 1 ? b->o.clients : (unsigned)(frac * b->o.clients);
        for (; r->down_next < upto; r->down_next++) {
            bench_client_stop(b, bench_client_at(b, r->down_next));
            b->closed_down++;
        }
        if (r->down_next >= b->o.clients)
            finish(r, now);
        break;
    }
    default:
        break;
    }
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct run *r = arg;
    r->interrupted = true;
}

/* ---- report ---- */

static json_t *counts(const uint64_t *v, const char **names, int n)
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(o, names[i], json_integer((json_int_t)v[i]));
    return o;
}

static json_t *phase_json(struct run *r, int w, double seconds)
{
    struct bench *b = &r->b;
    json_t *o = json_object();
    uint64_t reqs = 0, errs = 0;
    for (int i = 0; i < BK_N; i++)
        reqs += b->requests[w][i];
    for (int i = 0; i < BE_N; i++)
        errs += b->errors[w][i];
    json_object_set_new(o, "seconds", json_real(seconds));
    json_object_set_new(o, "handshakes", json_integer((json_int_t)b->handshakes[w]));
    json_object_set_new(o, "handshakes_per_s",
                        json_real(seconds > 0 ? (double)b->handshakes[w] / seconds : 0));
    json_object_set_new(o, "requests", json_integer((json_int_t)reqs));
    json_object_set_new(o, "requests_per_s", json_real(seconds > 0 ? (double)reqs / seconds : 0));
    json_object_set_new(o, "cycles", json_integer((json_int_t)b->cycles[w]));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t)b->bytes_in[w]));
    json_object_set_new(o, "requests_by_kind", counts(b->requests[w], kind_names, BK_N));
    json_object_set_new(o, "errors", json_integer((json_int_t)errs));
    json_object_set_new(o, "errors_by_kind", counts(b->errors[w], err_names, BE_N));
    json_t *st = json_object();
    for (int i = 0; i < 600; i++)
        if (b->status_count[w][i]) {
            char k[16];
            snprintf(k, sizeof(k), "%d", i);
            json_object_set_new(st, k, json_integer((json_int_t)b->status_count[w][i]));
        }
    json_object_set_new(o, "status", st);
    json_object_set_new(o, "latency_cycle", bench_hist_json(&b->cycle_hist[w]));
    json_object_set_new(o, "latency_handshake", bench_hist_json(&b->hs_hist[w]));
    json_t *lk = json_object();
    for (int i = 0; i < BK_N; i++)
        if (b->kind_hist[w][i].count)
            json_object_set_new(lk, kind_names[i], bench_hist_json(&b->kind_hist[w][i]));
    json_object_set_new(o, "latency_by_kind", lk);
    return o;
}

static json_t *sample_json(const struct proc_sample *s, double t0)
{
    return json_pack("{s:f,s:f,s:I,s:i}", "t", s->t - t0, "cpu_s", s->cpu_s, "rss_kib",
                     (json_int_t)s->rss_kib, "alive", s->alive);
}

static json_t *report(struct run *r)
{
    struct bench *b = &r->b;
    const struct bench_opts *o = &b->o;
    json_t *j = json_object();
    char addr[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &o->dst.sin_addr, addr, sizeof(addr));
    json_object_set_new(j, "tool", json_string("cmg-bench"));
    json_object_set_new(j, "version", json_string(CMG_VERSION));
    json_object_set_new(j, "openssl", json_string(OPENSSL_VERSION_TEXT));
    json_object_set_new(j, "mode", json_string(o->mode == BM_CYCLE ? "cycle" : "handshake"));
    if (o->label)
        json_object_set_new(j, "label", json_string(o->label));
    json_t *set = json_object();
    json_object_set_new(set, "target", json_sprintf("%s:%d", addr, ntohs(o->dst.sin_port)));
    json_object_set_new(set, "sources", json_integer(o->nsrc));
    json_object_set_new(set, "clients", json_integer(o->clients));
    json_object_set_new(set, "rate", json_real(o->rate));
    json_object_set_new(set, "inflight", json_integer(o->inflight));
    json_object_set_new(set, "ramp_timeout_s", json_real(o->ramp_timeout));
    json_object_set_new(set, "hold_s", json_real(o->hold_s));
    json_object_set_new(set, "ramp_down_s", json_real(o->ramp_down_s));
    json_object_set_new(set, "deadline_s", json_real(o->deadline_s));
    json_object_set_new(set, "auth", json_string(o->token ? "site token" : "client certificate"));
    json_object_set_new(set, "client_certificates", json_integer(b->ncerts));
    json_object_set_new(set, "notify", json_boolean(o->notify));
    json_object_set_new(set, "content_every", json_integer(o->content_every));
    json_object_set_new(set, "think_s", json_real(o->think_s));
    json_object_set_new(set, "tls",
                        json_string(o->tls_min == TLS1_3_VERSION   ? "1.3"
                                    : o->tls_max == TLS1_2_VERSION ? "1.2"
                                                                   : "any"));
    json_object_set_new(set, "nofile_limit", json_integer(r->nofile));
    json_t *pids = json_array();
    for (unsigned i = 0; i < o->npids; i++)
        json_array_append_new(pids, json_integer(o->pids[i]));
    json_object_set_new(set, "server_pids", pids);
    json_object_set_new(j, "settings", set);

    double ramp_s = (b->t_hold ? b->t_hold : b->t_done) - b->t0;
    double hold_s = b->t_down && b->t_hold ? b->t_down - b->t_hold : 0;
    json_t *res = json_object();
    json_object_set_new(res, "requested", json_integer(o->clients));
    json_object_set_new(res, "started", json_integer(b->started));
    json_object_set_new(res, "ever_connected", json_integer(b->ever_established));
    json_object_set_new(res, "connected_max", json_integer(b->established_max));
    json_object_set_new(res, "held_at_hold_start", json_integer(b->held_hold_start));
    json_object_set_new(res, "held_min_during_hold", json_integer(b->held_hold_min));
    json_object_set_new(res, "held_at_hold_end", json_integer(b->held_hold_end));
    json_object_set_new(res, "held", json_integer(b->held_hold_min));
    json_object_set_new(res, "notify_held_at_hold_end", json_integer(b->notify_hold_end));
    json_object_set_new(res, "ramp_complete", json_boolean(b->ramp_complete));
    json_object_set_new(res, "deadline_hit", json_boolean(b->deadline_hit));
    json_object_set_new(res, "interrupted", json_boolean(r->interrupted));
    json_object_set_new(res, "ramp_s", json_real(ramp_s));
    json_object_set_new(res, "hold_s", json_real(hold_s));
    json_object_set_new(res, "run_s", json_real(b->t_done - b->t0));
    json_object_set_new(j, "result", res);

    json_object_set_new(j, "hold", phase_json(r, 1, hold_s));
    json_object_set_new(j, "all", phase_json(r, 0, b->t_done - b->t0));
    json_t *fe = json_object();
    for (int i = 0; i < BE_N; i++)
        if (b->first_error[i][0])
            json_object_set_new(fe, err_names[i], json_string(b->first_error[i]));
    json_object_set_new(j, "first_errors", fe);

    if (o->npids) {
        json_t *sv = json_object();
        json_object_set_new(sv, "start", sample_json(&r->s_start, b->t0));
        json_object_set_new(sv, "hold_start", sample_json(&r->s_hold, b->t0));
        json_object_set_new(sv, "hold_end", sample_json(&r->s_hold_end, b->t0));
        json_object_set_new(sv, "end", sample_json(&r->s_end, b->t0));
        json_object_set_new(sv, "rss_max_kib", json_integer(r->rss_max_kib));
        double cpu_ramp = r->s_hold.cpu_s - r->s_start.cpu_s;
        double cpu_hold = r->s_hold_end.cpu_s - r->s_hold.cpu_s;
        json_object_set_new(sv, "cpu_s_ramp", json_real(cpu_ramp));
        json_object_set_new(sv, "cpu_s_hold", json_real(cpu_hold));
        json_object_set_new(sv, "cpu_cores_hold", json_real(hold_s > 0 ? cpu_hold / hold_s : 0));
        uint64_t hreq = 0;
        for (int i = 0; i < BK_N; i++)
            hreq += b->requests[1][i];
        json_object_set_new(sv, "cpu_us_per_request_hold",
                            json_real(hreq ? cpu_hold * 1e6 / (double)hreq : 0));
        json_object_set_new(
            sv, "cpu_us_per_handshake_hold",
            json_real(b->handshakes[1] ? cpu_hold * 1e6 / (double)b->handshakes[1] : 0));
        json_object_set_new(
            sv, "cpu_us_per_handshake_ramp",
            json_real(b->handshakes[0] > b->handshakes[1]
                          ? cpu_ramp * 1e6 / (double)(b->handshakes[0] - b->handshakes[1])
                          : 0));
        long held = (long)b->held_hold_end;
        json_object_set_new(sv, "rss_delta_kib_hold_end",
                            json_integer(r->s_hold_end.rss_kib - r->s_start.rss_kib));
        json_object_set_new(
            sv, "kib_per_held_client",
            json_real(held > 0 ? (double)(r->s_hold_end.rss_kib - r->s_start.rss_kib) / (double)held
                               : 0));
        json_object_set_new(
            sv, "cpu_us_per_held_client_per_s",
            json_real(held > 0 && hold_s > 0 ? cpu_hold * 1e6 / hold_s / (double)held : 0));
        json_object_set_new(sv, "alive_at_end", json_integer(r->s_end.alive));
        json_object_set_new(j, "server", sv);
    }
    /* the generator's own load: its CPU time and how late its timer ran, so that a starved
     * generator is not mistaken for a slow server */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double self_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    json_t *gen = json_object();
    json_object_set_new(gen, "cpu_s", json_real(self_cpu));
    json_object_set_new(gen, "cores",
                        json_real(b->t_done > b->t0 ? self_cpu / (b->t_done - b->t0) : 0));
    json_object_set_new(gen, "max_rss_kib", json_integer(ru.ru_maxrss));
    json_object_set_new(gen, "timer_lateness", bench_hist_json(&r->lag));
    json_object_set_new(j, "generator", gen);
    uint64_t herr = 0;
    for (int i = 0; i < BE_N; i++)
        herr += b->errors[0][i];
    bool ok = !r->interrupted && b->ramp_complete &&
              (o->mode == BM_HANDSHAKE || b->held_hold_min == o->clients) && herr == 0 &&
              (o->npids == 0 || r->s_end.alive == (int)o->npids);
    json_object_set_new(j, "ok", json_boolean(ok));
    return j;
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fputs("usage: cmg-bench --connect HOST:PORT [options]\n"
          "  --mode cycle|handshake  managed clients (default) or one request per full handshake\n"
          "  --clients N             clients (connections) to hold (default 100)\n"
          "  --rate R                new connections per second during the ramp (default 500)\n"
          "  --inflight N            connections in TCP/TLS setup at once (default 200)\n"
          "  --ramp-timeout S        longest ramp; handshake mode: the warm-up (default 120)\n"
          "  --hold S                the hold phase (default 30)\n"
          "  --ramp-down S           closing every client takes this long (default 5)\n"
          "  --deadline S            the whole run at most (default ramp+hold+down+60)\n"
          "  --source A[,A...]       local addresses, used in turn (127.x.y.z: more ports)\n"
          "  --sni NAME              TLS server name and Host (default cmg.localtest.me)\n"
          "  --tls 1.2|1.3|any       protocol version (default any)\n"
          "  --ca-cert F --ca-key F  make client certificates signed by this CA (PEM)\n"
          "  --certs K               how many distinct certificates (default min(clients,2000))\n"
          "  --token-file F          a bearer site token instead (CCM_Proxy_ServerAuth paths)\n"
          "  --role ID               the management point's role id (default 72057594037927939)\n"
          "  --content-token-file F  content access token (query string) for content downloads\n"
          "  --content-every K       a cycle downloads content with probability 1/K (default 0)\n"
          "  --no-notify             cycles hold no notification request (then --think > 0)\n"
          "  --think S               pause between two cycles of a client (default 0)\n"
          "  --request-timeout S     per request and per handshake (default 30)\n"
          "  --notify-timeout S      for the held notification request (default 300)\n"
          "  --retry S               a failed client connects again after this (default 1)\n"
          "  --path P                handshake mode's request path\n"
          "  --server-pid PID        read this process's CPU and memory from /proc (repeatable)\n"
          "  --label TEXT            copied into the report\n"
          "  --seed N                random seed (content choice)\n"
          "  --json FILE             write the report here (default: standard output)\n",
          f);
}

static int parse_addr(const char *s, struct sockaddr_in *a, bool need_port)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (hl >= sizeof(host) || (need_port && !colon))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return -1;
    if (colon) {
        long p = strtol(colon + 1, NULL, 10);
        if (p < 0 || p > 65535)
            return -1;
        a->sin_port = htons((uint16_t)p);
    }
    return 0;
}

static char *read_file_trim(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, f);
    fclose(f);
    if (n <= 0) {
        free(buf);
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

static int parse_opts(struct run *r, int argc, char **argv, const char **json_path,
                      const char **ca_cert, const char **ca_key, char **owned[2])
{
    struct bench_opts *o = &r->b.o;
    enum {
        O_CONNECT = 256,
        O_MODE,
        O_CLIENTS,
        O_RATE,
        O_INFLIGHT,
        O_RAMP,
        O_HOLD,
        O_DOWN,
        O_DEADLINE,
        O_SOURCE,
        O_SNI,
        O_TLS,
        O_CACERT,
        O_CAKEY,
        O_CERTS,
        O_TOKEN,
        O_ROLE,
        O_CTOKEN,
        O_CEVERY,
        O_NONOTIFY,
        O_THINK,
        O_RTIMEOUT,
        O_NTIMEOUT,
        O_RETRY,
        O_PATH,
        O_PID,
        O_LABEL,
        O_SEED,
        O_JSON,
        O_HELP
    };
    static const struct option lo[] = {{"connect", 1, 0, O_CONNECT},
                                       {"mode", 1, 0, O_MODE},
                                       {"clients", 1, 0, O_CLIENTS},
                                       {"rate", 1, 0, O_RATE},
                                       {"inflight", 1, 0, O_INFLIGHT},
                                       {"ramp-timeout", 1, 0, O_RAMP},
                                       {"hold", 1, 0, O_HOLD},
                                       {"ramp-down", 1, 0, O_DOWN},
                                       {"deadline", 1, 0, O_DEADLINE},
                                       {"source", 1, 0, O_SOURCE},
                                       {"sni", 1, 0, O_SNI},
                                       {"tls", 1, 0, O_TLS},
                                       {"ca-cert", 1, 0, O_CACERT},
                                       {"ca-key", 1, 0, O_CAKEY},
                                       {"certs", 1, 0, O_CERTS},
                                       {"token-file", 1, 0, O_TOKEN},
                                       {"role", 1, 0, O_ROLE},
                                       {"content-token-file", 1, 0, O_CTOKEN},
                                       {"content-every", 1, 0, O_CEVERY},
                                       {"no-notify", 0, 0, O_NONOTIFY},
                                       {"think", 1, 0, O_THINK},
                                       {"request-timeout", 1, 0, O_RTIMEOUT},
                                       {"notify-timeout", 1, 0, O_NTIMEOUT},
                                       {"retry", 1, 0, O_RETRY},
                                       {"path", 1, 0, O_PATH},
                                       {"server-pid", 1, 0, O_PID},
                                       {"label", 1, 0, O_LABEL},
                                       {"seed", 1, 0, O_SEED},
                                       {"json", 1, 0, O_JSON},
                                       {"help", 0, 0, O_HELP},
                                       {0, 0, 0, 0}};
    bool have_dst = false;
    int ch;
    o->mode = BM_CYCLE;
    o->sni = "cmg.localtest.me";
    o->clients = 100;
    o->rate = 500;
    o->inflight = 200;
    o->ramp_timeout = 120;
    o->hold_s = 30;
    o->ramp_down_s = 5;
    o->deadline_s = -1;
    o->request_timeout = 30;
    o->notify_timeout = 300;
    o->retry_s = 1;
    o->role = "72057594037927939";
    o->notify = true;
    o->path = "/CCM_Proxy_MutualAuth/ServiceMetadata";
    o->tls_min = TLS1_2_VERSION;
    o->seed = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case O_CONNECT:
            if (parse_addr(optarg, &o->dst, true) != 0) {
                fprintf(stderr, "cmg-bench: --connect %s: IPv4:PORT expected\n", optarg);
                return -1;
            }
            have_dst = true;
            break;
        case O_MODE:
            if (strcmp(optarg, "cycle") == 0)
                o->mode = BM_CYCLE;
            else if (strcmp(optarg, "handshake") == 0)
                o->mode = BM_HANDSHAKE;
            else
                return -1;
            break;
        case O_CLIENTS:
            o->clients = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_RATE:
            o->rate = atof(optarg);
            break;
        case O_INFLIGHT:
            o->inflight = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_RAMP:
            o->ramp_timeout = atof(optarg);
            break;
        case O_HOLD:
            o->hold_s = atof(optarg);
            break;
        case O_DOWN:
            o->ramp_down_s = atof(optarg);
            break;
        case O_DEADLINE:
            o->deadline_s = atof(optarg);
            break;
        case O_SOURCE: {
            char *dup = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->nsrc >= BENCH_MAX_SOURCES || parse_addr(t, &o->src[o->nsrc], false)) {
                    fprintf(stderr, "cmg-bench: --source: %s: bad address (or > %d)\n", t,
                            BENCH_MAX_SOURCES);
                    free(dup);
                    return -1;
                }
                o->src[o->nsrc++].sin_port = 0;
            }
            free(dup);
            break;
        }
        case O_SNI:
            o->sni = optarg;
            break;
        case O_TLS:
            if (strcmp(optarg, "1.2") == 0)
                o->tls_max = TLS1_2_VERSION;
            else if (strcmp(optarg, "1.3") == 0)
                o->tls_min = TLS1_3_VERSION;
            else if (strcmp(optarg, "any") != 0)
                return -1;
            break;
        case O_CACERT:
            *ca_cert = optarg;
            break;
        case O_CAKEY:
            *ca_key = optarg;
            break;
        case O_CERTS:
            o->ncerts = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_TOKEN:
            owned[0][0] = read_file_trim(optarg);
            if (!owned[0][0]) {
                fprintf(stderr, "cmg-bench: --token-file %s: cannot read a token\n", optarg);
                return -1;
            }
            o->token = owned[0][0];
            break;
        case O_ROLE:
            o->role = optarg;
            break;
        case O_CTOKEN:
            owned[1][0] = read_file_trim(optarg);
            if (!owned[1][0]) {
                fprintf(stderr, "cmg-bench: --content-token-file %s: cannot read it\n", optarg);
                return -1;
            }
            o->content_token = owned[1][0];
            break;
        case O_CEVERY:
            o->content_every = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_NONOTIFY:
            o->notify = false;
            break;
        case O_THINK:
            o->think_s = atof(optarg);
            break;
        case O_RTIMEOUT:
            o->request_timeout = atof(optarg);
            break;
        case O_NTIMEOUT:
            o->notify_timeout = atof(optarg);
            break;
        case O_RETRY:
            o->retry_s = atof(optarg);
            break;
        case O_PATH:
            o->path = optarg;
            break;
        case O_PID:
            if (o->npids >= BENCH_MAX_PIDS)
                return -1;
            o->pids[o->npids++] = (pid_t)strtol(optarg, NULL, 10);
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_SEED:
            o->seed = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_JSON:
            *json_path = optarg;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind < argc || !have_dst) {
        fprintf(stderr, "cmg-bench: --connect is required\n");
        return -1;
    }
    if (o->clients < 1 || o->rate <= 0 || o->inflight < 1 || o->hold_s < 0 || o->ramp_down_s < 0 ||
        o->request_timeout <= 0 || o->notify_timeout <= 0 || o->retry_s <= 0 || o->think_s < 0 ||
        o->ramp_timeout <= 0) {
        fprintf(stderr, "cmg-bench: a count, rate or time is out of range\n");
        return -1;
    }
    if (o->mode == BM_CYCLE && !o->notify && o->think_s <= 0) {
        fprintf(stderr, "cmg-bench: --no-notify needs --think > 0 (or clients would spin)\n");
        return -1;
    }
    if (o->mode == BM_CYCLE && !o->token && !(*ca_cert && *ca_key)) {
        fprintf(stderr, "cmg-bench: cycle mode needs --ca-cert + --ca-key or --token-file\n");
        return -1;
    }
    if (o->content_every && !o->content_token) {
        fprintf(stderr, "cmg-bench: --content-every needs --content-token-file\n");
        return -1;
    }
    if (o->deadline_s < 0)
        o->deadline_s = o->ramp_timeout + o->hold_s + o->ramp_down_s + 60;
    return 0;
}

/* One descriptor per client plus a few: the soft limit goes up to the hard limit. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 30 : (long)rl.rlim_cur;
}

int main(int argc, char **argv)
{
    static struct run r; /* large: histograms */
    struct bench *b = &r.b;
    const char *json_path = NULL, *ca_cert = NULL, *ca_key = NULL;
    char *token = NULL, *ctoken = NULL;
    char **owned[2] = {&token, &ctoken};
    char err[300];
    int rc = 2;

    if (parse_opts(&r, argc, argv, &json_path, &ca_cert, &ca_key, owned) != 0) {
        usage(stderr);
        goto out;
    }
    r.nofile = raise_nofile();
    if (r.nofile > 0 && (long)b->o.clients + FD_RESERVE > r.nofile) {
        fprintf(stderr,
                "cmg-bench: %u clients need %u open files, beyond this process's limit of %ld "
                "(the hard limit); run several cmg-bench processes with fewer clients each\n",
                b->o.clients, b->o.clients + FD_RESERVE, r.nofile);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    b->base = event_base_new();
    b->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!b->base || !b->ssl_ctx) {
        fprintf(stderr, "cmg-bench: event base or TLS context failed\n");
        goto out;
    }
    SSL_CTX_set_verify(b->ssl_ctx, SSL_VERIFY_NONE, NULL);          /* loopback, development PKI */
    SSL_CTX_set_session_cache_mode(b->ssl_ctx, SSL_SESS_CACHE_OFF); /* every handshake full */
    SSL_CTX_set_options(b->ssl_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(b->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version(b->ssl_ctx, b->o.tls_min);
    if (b->o.tls_max)
        SSL_CTX_set_max_proto_version(b->ssl_ctx, b->o.tls_max);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(b->ssl_ctx, alpn, sizeof(alpn) - 1);
    if (ca_cert && ca_key && !b->o.token) {
        unsigned n = b->o.ncerts ? b->o.ncerts : (b->o.clients < 2000 ? b->o.clients : 2000);
        double t = bench_now();
        if (bench_certs_make(ca_cert, ca_key, n, &b->certs, err, sizeof(err)) != 0) {
            fprintf(stderr, "cmg-bench: %s\n", err);
            goto out;
        }
        b->ncerts = n;
        fprintf(stderr, "cmg-bench: %u client certificates made in %.2f s\n", n, bench_now() - t);
    }
    b->auth_prefix = b->o.token ? "/CCM_Proxy_ServerAuth/" : "/CCM_Proxy_MutualAuth/";
    if (bench_requests_prepare(b, err, sizeof(err)) != 0) {
        fprintf(stderr, "cmg-bench: %s\n", err);
        goto out;
    }
    b->clients = bench_clients_new(b, b->o.clients);
    if (!b->clients) {
        fprintf(stderr, "cmg-bench: out of memory for %u clients\n", b->o.clients);
        goto out;
    }
    r.tick = event_new(b->base, -1, EV_PERSIST, tick_cb, &r);
    r.sig_int = evsignal_new(b->base, SIGINT, signal_cb, &r);
    r.sig_term = evsignal_new(b->base, SIGTERM, signal_cb, &r);
    struct timeval tv = {0, (suseconds_t)(TICK_S * 1e6)};
    event_add(r.tick, &tv);
    event_add(r.sig_int, NULL);
    event_add(r.sig_term, NULL);

    b->t0 = bench_now();
    r.last_sample = r.last_progress = b->t0;
    sample(&r, &r.s_start);
    event_base_dispatch(b->base);
    progress(&r, bench_now());

    json_t *j = report(&r);
    bool ok = json_is_true(json_object_get(j, "ok"));
    if (json_path) {
        if (json_dump_file(j, json_path, JSON_INDENT(1)) != 0) {
            fprintf(stderr, "cmg-bench: cannot write %s\n", json_path);
            json_decref(j);
            goto out;
        }
    } else {
        json_dumpf(j, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
    }
    json_decref(j);
    rc = ok ? 0 : 1;
out:
    bench_clients_free(b);
    if (r.tick)
        event_free(r.tick);
    if (r.sig_int)
        event_free(r.sig_int);
    if (r.sig_term)
        event_free(r.sig_term);
    for (int i = 0; i < BK_N; i++)
        free(b->req[i]);
    bench_certs_free(b->certs, b->ncerts);
    if (b->ssl_ctx)
        SSL_CTX_free(b->ssl_ctx);
    if (b->base)
        event_base_free(b->base);
    free(token);
    free(ctoken);
    return rc;
}
