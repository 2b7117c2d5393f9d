/* cmg-gateway: the internet-facing service of a cloud management gateway instance. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sys/resource.h>

#include "gw.h"

static void gw_usage(FILE *out)
{
    fprintf(out, "usage: cmg-gateway -c FILE [-t]\n"
                 "       cmg-gateway --print-defaults\n"
                 "  -c, --config FILE   configuration file (INI)\n"
                 "  -t, --test          check the configuration and certificates, then exit\n"
                 "      --print-defaults  print every setting with its default\n"
                 "  -V, --version       print the version\n"
                 "Signals: SIGHUP reloads configuration and certificates; SIGTERM drains and "
                 "exits.\n");
}

static void gw_print_report(const struct config_report *r, FILE *out)
{
    for (unsigned i = 0; i < r->nerrors; i++)
        fprintf(out, "%s\n", r->errors[i]);
}

static void gw_log_opts(const struct gw_config *c, struct log_opts *lo)
{
    static const enum log_level map[] = {LOG_LEVEL_ERROR, LOG_LEVEL_INFO, LOG_LEVEL_VERBOSE};
    lo->file = c->log_file;
    lo->component = "CMGService";
    lo->max_size = c->log_max_size;
    lo->level = map[c->log_level < 3 ? c->log_level : 1];
    lo->to_stderr = c->log_stderr;
}

static void gw_warn_restart_keys(const struct gw_config *a, const struct gw_config *b)
{
    for (size_t i = 0; i < gw_config_schema_len; i++) {
        const struct config_key *k = &gw_config_schema[i];
        if (!k->reload_needs_restart)
            continue;
        const char *pa = (const char *)a + k->offset, *pb = (const char *)b + k->offset;
        bool differ;
        if (k->type == CONFIG_STRING) {
            const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
            differ = (sa && sb) ? strcmp(sa, sb) != 0 : sa != sb;
        } else if (k->type == CONFIG_BOOL) {
            differ = *(const bool *)pa != *(const bool *)pb;
        } else if (k->type == CONFIG_ENUM) {
            differ = *(const unsigned *)pa != *(const unsigned *)pb;
        } else {
            differ = *(const uint64_t *)pa != *(const uint64_t *)pb;
        }
        if (differ)
            LOG_WARN("reload: %s.%s changed; it takes effect at the next restart", k->section,
                     k->name);
    }
}

static void gw_reload(struct gw_server *s, const char *why)
{
    struct config_report r;
    struct gw_snapshot *snap =
        gw_snapshot_build(s->config_path, s->generation + 1, &s->process_ticket_keys, &r);
    if (!snap) {
        s->reload_failures++;
        LOG_ERROR("reload (%s) refused, the running configuration stays: %u error(s)", why,
                  r.nerrors);
        for (unsigned i = 0; i < r.nerrors; i++)
            LOG_ERROR("%s", r.errors[i]);
        config_report_deinit(&r);
        return;
    }
    config_report_deinit(&r);
    s->generation++;
    gw_warn_restart_keys(&s->snap->cfg, &snap->cfg);
    struct log_opts lo;
    char err[512];
    gw_log_opts(&snap->cfg, &lo);
    if (log_reconfigure(&lo, err, sizeof(err)) != 0)
        LOG_ERROR("reload: %s", err);
    for (unsigned i = 0; i < s->nworkers; i++)
        if (gw_worker_post(&s->workers[i], GW_MSG_SNAPSHOT, gw_snapshot_ref(snap)) != 0) {
            LOG_ERROR("reload: worker %u queue full; it keeps the old snapshot", i);
            gw_snapshot_unref(snap);
        }
    gw_refresher_configure(s, snap);
    gw_snapshot_unref(s->snap);
    s->snap = snap;
    s->reloads++;
    LOG_INFO("configuration reloaded (%s): generation %llu, service %s", why,
             (unsigned long long)snap->generation, snap->service_name);
}

static void gw_sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct gw_server *s = arg;
    if (atomic_load(&s->draining))
        return;
    gw_reload(s, "SIGHUP");
}

/* Ticket keys are rotated by replacing the shared file; a changed file means a reload. */
static void gw_ticket_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_server *s = arg;
    const struct gw_config *c = &s->snap->cfg;
    if (atomic_load(&s->draining) || !c->session_tickets || !c->ticket_key_file ||
        !*c->ticket_key_file)
        return;
    char sig[128];
    gw_file_signature(c->ticket_key_file, sig, sizeof(sig));
    if (strcmp(sig, s->snap->ticket_file_sig) != 0)
        gw_reload(s, "ticket key file changed");
}

struct gw_drain {
    struct gw_server *s;
    uint64_t started;
    struct event *timer;
};

static void gw_drain_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_drain *d = arg;
    struct gw_server *s = d->s;
    if (atomic_load(&s->workers_drained) >= s->nworkers) {
        LOG_INFO("drained: all in-flight requests finished");
        event_base_loopbreak(s->base);
        return;
    }
    if (core_now_ms() - d->started >= s->snap->cfg.drain_timeout) {
        uint64_t open = 0;
        for (unsigned i = 0; i < s->nworkers; i++)
            open += GW_GET(s->workers[i].metrics.conn_open);
        LOG_WARN("drain timeout (gateway.drain_timeout) reached; closing %llu connection(s)",
                 (unsigned long long)open);
        event_base_loopbreak(s->base);
    }
}

static void gw_sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
    struct gw_drain *d = arg;
    struct gw_server *s = d->s;
    if (atomic_exchange(&s->draining, true)) {
        LOG_WARN("second stop signal: closing now");
        event_base_loopbreak(s->base);
        return;
    }
    LOG_INFO("signal %d: no new connections; draining for up to %llu ms", (int)sig,
             (unsigned long long)s->snap->cfg.drain_timeout);
    d->started = core_now_ms();
    gw_tunnel_listen_stop(s); /* connection points find out at once (connection refused) */
    for (unsigned i = 0; i < s->nworkers; i++)
        gw_worker_post(&s->workers[i], GW_MSG_DRAIN, NULL);
    struct timeval tv = {0, 50 * 1000};
    event_add(d->timer, &tv);
}

/* gateway.await_tunnel passed without a tunnel: clients get the gateway's own answers (404,
 * 503 for requests it cannot route) rather than no answer at all. */
static void gw_await_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_server *s = arg;
    if (atomic_load(&s->clients_open) || atomic_load(&s->draining))
        return;
    LOG_WARN("no tunnel from a connection point within %llu ms (gateway.await_tunnel)",
             (unsigned long long)s->snap->cfg.await_tunnel);
    gw_server_open_clients(s, "gateway.await_tunnel passed without a tunnel");
    if (!atomic_load(&s->clients_open)) {
        struct timeval tv = {1, 0};
        event_add(s->await_timer, &tv);
    }
}

/* Takes the open-file limit up to the hard limit and works out how many connections it
 * leaves each worker, so a full process refuses connections cleanly instead of failing
 * accept() in a loop. */
static void gw_raise_fd_limit(struct gw_server *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    const uint64_t reserve = 64; /* listeners, log, eventfds, admin, CRL and key files */
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur <= reserve)
        return;
    s->fd_budget = (rl.rlim_cur - reserve) / s->nworkers;
    uint64_t want = s->snap->cfg.max_connections;
    if (want > s->fd_budget * s->nworkers)
        LOG_WARN("gateway.max_connections = %llu, but the open-file limit (%llu) allows about "
                 "%llu; raise LimitNOFILE / ulimit -n to hold more",
                 (unsigned long long)want, (unsigned long long)rl.rlim_cur,
                 (unsigned long long)(s->fd_budget * s->nworkers));
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool test_only = false;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"test", no_argument, NULL, 't'},
        {"print-defaults", no_argument, NULL, 'D'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'D':
            gw_config_print_defaults(stdout);
            return 0;
        case 'V':
            printf("cmg-gateway %s\n", CMG_VERSION);
            return 0;
        case 'h':
            gw_usage(stdout);
            return 0;
        default:
            gw_usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc) {
        gw_usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    OPENSSL_init_ssl(0, NULL);
    struct gw_server s;
    memset(&s, 0, sizeof(s));
    s.config_path = config;
    pthread_mutex_init(&s.snap_lock, NULL);
    pthread_mutex_init(&s.roles_lock, NULL);
    s.tunnel_fd = -1;
    s.start_wall_ms = core_wall_ms();
    struct config_report r;
    /* Ticket keys for when no shared key file is configured: made once, so that a reload
     * does not invalidate every ticket handed out so far. */
    s.process_ticket_keys.count = 1;
    if (RAND_bytes((unsigned char *)&s.process_ticket_keys.keys[0],
                   sizeof(s.process_ticket_keys.keys[0])) != 1) {
        fprintf(stderr, "cmg-gateway: no randomness for session ticket keys\n");
        return 1;
    }
    s.snap = gw_snapshot_build(config, 1, &s.process_ticket_keys, &r);
    if (!s.snap) {
        gw_print_report(&r, stderr);
        fprintf(stderr, "cmg-gateway: %s: %u error(s); not started\n", config, r.nerrors);
        config_report_deinit(&r);
        return 1;
    }
    config_report_deinit(&r);
    s.generation = 1;
    if (test_only) {
        printf("cmg-gateway: configuration %s is valid (service %s, %u workers)\n", config,
               s.snap->service_name, s.snap->cfg.workers_effective);
        gw_snapshot_unref(s.snap);
        return 0;
    }

    char err[512];
    struct log_opts lo;
    gw_log_opts(&s.snap->cfg, &lo);
    if (log_init(&lo, err, sizeof(err)) != 0) {
        fprintf(stderr, "cmg-gateway: %s:log.file: %s\n", config, err);
        gw_snapshot_unref(s.snap);
        return 1;
    }
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    s.base = event_base_new_with_config(ec);
    event_config_free(ec);

    s.nworkers = s.snap->cfg.workers_effective;
    gw_raise_fd_limit(&s);
    s.workers = calloc(s.nworkers, sizeof(*s.workers));
    int rc = 1;
    unsigned started = 0;
    uint64_t await_ms = s.snap->cfg.await_tunnel;
    atomic_store(&s.clients_open, await_ms == 0);
    core_fetch_global_init();
    if (gw_refresher_start(&s, err, sizeof(err)) != 0) {
        LOG_ERROR("%s", err);
        fprintf(stderr, "cmg-gateway: %s\n", err);
        goto out;
    }
    pthread_mutex_init(&s.content_notify_lock, NULL);
    if (gw_content_service_start(&s, err, sizeof(err)) != 0) {
        LOG_ERROR("%s", err);
        fprintf(stderr, "cmg-gateway: %s: %s\n", config, err);
        goto out;
    }
    for (unsigned i = 0; i < s.nworkers; i++) {
        struct gw_worker *w = &s.workers[i];
        w->id = i;
        w->server = &s;
        w->snap = gw_snapshot_ref(s.snap);
        w->dyn = s.dyn ? gw_dyn_ref(s.dyn) : NULL;
        if (gw_worker_start(w, await_ms == 0) != 0) {
            fprintf(stderr, "cmg-gateway: worker %u could not start (see the log above)\n", i);
            goto out;
        }
        started++;
    }
    if (gw_admin_start(&s, err, sizeof(err)) != 0) {
        LOG_ERROR("%s", err);
        goto out;
    }
    if (gw_refresher_run(&s) != 0) {
        LOG_ERROR("cannot start the refresher thread");
        goto out;
    }
    if (gw_tunnel_listen_start(&s, err, sizeof(err)) != 0) {
        LOG_ERROR("tunnel.listen: %s", err);
        fprintf(stderr, "cmg-gateway: %s:tunnel.listen: %s\n", config, err);
        goto out;
    }
    if (await_ms && s.tunnel_fd < 0) {
        LOG_WARN("gateway.await_tunnel: no tunnel can come (tunnel listener off)");
        gw_server_open_clients(&s, "no tunnel listener to wait for");
        await_ms = 0;
    }

    struct gw_drain drain = {.s = &s};
    drain.timer = event_new(s.base, -1, EV_PERSIST, gw_drain_tick_cb, &drain);
    struct event *ev_hup = evsignal_new(s.base, SIGHUP, gw_sighup_cb, &s);
    struct event *ev_term = evsignal_new(s.base, SIGTERM, gw_sigterm_cb, &drain);
    struct event *ev_int = evsignal_new(s.base, SIGINT, gw_sigterm_cb, &drain);
    struct event *ev_tick = event_new(s.base, -1, EV_PERSIST, gw_ticket_watch_cb, &s);
    event_add(ev_hup, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    uint64_t iv = s.snap->cfg.ticket_key_check_interval;
    struct timeval tv = {(time_t)(iv / 1000), (suseconds_t)((iv % 1000) * 1000)};
    event_add(ev_tick, &tv);
    s.await_timer = evtimer_new(s.base, gw_await_cb, &s);
    if (await_ms) {
        struct timeval atv = {(time_t)(await_ms / 1000), (suseconds_t)((await_ms % 1000) * 1000)};
        event_add(s.await_timer, &atv);
        LOG_INFO("clients wait for the first tunnel from a connection point, at most %llu ms "
                 "(gateway.await_tunnel)",
                 (unsigned long long)await_ms);
    }

    LOG_INFO("cmg-gateway %s started: service %s, instance %llu, %u workers, listening on %s, "
             "admin %s, TLS floor %s",
             CMG_VERSION, s.snap->service_name, (unsigned long long)s.snap->cfg.instance_id,
             s.nworkers, s.snap->cfg.listen,
             s.snap->cfg.admin_enabled ? s.snap->cfg.admin_listen : "off",
             s.snap->cfg.enforce_tls12 ? "TLS 1.2" : "TLS 1.0 (enforce_tls12 = false)");
    event_base_dispatch(s.base);
    rc = 0;

    event_free(ev_hup);
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_tick);
    event_free(s.await_timer);
    event_free(drain.timer);
out:
    /* the refresher first: it posts to the workers' queues */
    gw_refresher_stop(&s);
    gw_tunnel_listen_stop(&s);
    /* fill threads post to the workers' queues: not any more */
    pthread_mutex_lock(&s.content_notify_lock);
    s.content_notify_off = true;
    pthread_mutex_unlock(&s.content_notify_lock);
    for (unsigned i = 0; i < started; i++)
        gw_worker_post(&s.workers[i], GW_MSG_STOP, NULL);
    for (unsigned i = 0; i < started; i++)
        gw_worker_join(&s.workers[i]);
    for (unsigned i = started; i < s.nworkers; i++) {
        gw_snapshot_unref(s.workers[i].snap);
        gw_dyn_unref(s.workers[i].dyn);
    }
    gw_content_service_stop(&s); /* no connection holds an entry any more */
    pthread_mutex_destroy(&s.content_notify_lock);
    gw_admin_stop(&s);
    free(s.roles);
    free(s.workers);
    if (rc == 0)
        LOG_INFO("cmg-gateway stopped");
    gw_snapshot_unref(s.snap);
    event_base_free(s.base);
    log_deinit();
    return rc;
}
