/* cmg-connector: the CMG connection point. Dials out to every gateway instance, answers their
 * hellos with the endpoints it publishes, and relays each stream to the endpoint's management
 * point over a bounded pool of keep-alive connections. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <openssl/rand.h>

#include "cn.h"
#include "tls.h"

#define OFF(f) offsetof(struct cn_config, f)

static const struct config_key cn_keys[] = {
    {"connector", "id", CONFIG_STRING, OFF(id), NULL, 0, 0, NULL, false},
    {"connector", "site", CONFIG_STRING, OFF(site), NULL, 0, 0, NULL, false},
    {"connector", "service_name", CONFIG_STRING, OFF(service_name), NULL, 0, 0, NULL, false},
    {"connector", "gateway_host", CONFIG_STRING, OFF(gateway_host), NULL, 0, 0, NULL, false},
    {"connector", "instances", CONFIG_UINT, OFF(instances), "1", 1, 16, NULL, false},
    {"connector", "port_base", CONFIG_UINT, OFF(port_base), "10124", 1, 65535 - 15, NULL, false},
    {"connector", "gateways", CONFIG_STRING, OFF(gateways), NULL, 0, 0, NULL, false},
    {"connector", "endpoints", CONFIG_STRING, OFF(endpoints), NULL, 0, 0, NULL, false},
    {"connector", "max_tunnels_per_instance", CONFIG_UINT, OFF(max_tunnels_per_instance), "16", 1,
     256, NULL, false},
    {"connector", "reconnect_min", CONFIG_DURATION, OFF(reconnect_min), "200ms", 10, 60000, NULL,
     false},
    {"connector", "reconnect_max", CONFIG_DURATION, OFF(reconnect_max), "5s", 10, 600000, NULL,
     false},
    {"connector", "proxy", CONFIG_STRING, OFF(proxy), NULL, 0, 0, NULL, false},
    {"connector", "ping_interval", CONFIG_DURATION, OFF(ping_interval), "10s", 100, 600000, NULL,
     false},
    {"connector", "ping_timeout", CONFIG_DURATION, OFF(ping_timeout), "20s", 100, 600000, NULL,
     false},
    {"connector", "drain_timeout", CONFIG_DURATION, OFF(drain_timeout), "30s", 0, 3600000, NULL,
     false},
    {"tls", "pfx_file", CONFIG_STRING, OFF(pfx_file), NULL, 0, 0, NULL, false},
    {"tls", "pfx_password", CONFIG_STRING, OFF(pfx_password), NULL, 0, 0, NULL, false},
    {"tls", "cert_file", CONFIG_STRING, OFF(cert_file), NULL, 0, 0, NULL, false},
    {"tls", "key_file", CONFIG_STRING, OFF(key_file), NULL, 0, 0, NULL, false},
    {"tls", "trusted_certs", CONFIG_STRING, OFF(trusted_certs), NULL, 0, 0, NULL, false},
    {"upstream", "max_connections", CONFIG_UINT, OFF(up_max_connections), "1024", 1, 100000, NULL,
     false},
    {"upstream", "max_idle", CONFIG_UINT, OFF(up_max_idle), "64", 0, 100000, NULL, false},
    {"upstream", "max_queue", CONFIG_UINT, OFF(up_max_queue), "10000", 0, 1000000, NULL, false},
    {"upstream", "connect_timeout", CONFIG_DURATION, OFF(up_connect_timeout), "10s", 100, 600000,
     NULL, false},
    {"upstream", "response_timeout", CONFIG_DURATION, OFF(up_response_timeout), "15m", 100,
     86400000, NULL, false},
    {"upstream", "idle_timeout", CONFIG_DURATION, OFF(up_idle_timeout), "60s", 100, 3600000, NULL,
     false},
    {"upstream", "ca_file", CONFIG_STRING, OFF(up_ca_file), NULL, 0, 0, NULL, false},
    {"upstream", "cert_file", CONFIG_STRING, OFF(up_cert_file), NULL, 0, 0, NULL, false},
    {"upstream", "key_file", CONFIG_STRING, OFF(up_key_file), NULL, 0, 0, NULL, false},
    {"admin", "enabled", CONFIG_BOOL, OFF(admin_enabled), "true", 0, 0, NULL, false},
    {"admin", "listen", CONFIG_STRING, OFF(admin_listen), "127.0.0.1:9181", 0, 0, NULL, false},
    {"log", "file", CONFIG_STRING, OFF(log_file), "SMS_Cloud_ProxyConnector.log", 0, 0, NULL,
     false},
    {"log", "max_size", CONFIG_SIZE, OFF(log_max_size), "5m", 4096, 0, NULL, false},
    {"log", "level", CONFIG_ENUM, OFF(log_level), "info", 0, 0, "error|info|verbose", false},
    {"log", "stderr", CONFIG_BOOL, OFF(log_stderr), "true", 0, 0, NULL, false},
    {"log", "report_interval", CONFIG_DURATION, OFF(report_interval), "5m", 1000, 86400000, NULL,
     false},
};
#define CN_NKEYS (sizeof(cn_keys) / sizeof(cn_keys[0]))

static size_t cn_key(const char *section, const char *name)
{
    return (size_t)config_find(cn_keys, CN_NKEYS, section, name);
}

static bool cn_set(const char *s)
{
    return s && *s;
}

/* "<role id> <MP|SUP> <base URL>, ..." */
static int cn_parse_endpoints(struct cn *cn, struct config_report *r)
{
    const char *list = cn->cfg.endpoints;
    if (!cn_set(list)) {
        config_report_error(r, cn_keys, cn_key("connector", "endpoints"),
                            "no endpoint: give \"<role id> MP <internal base URL>\" for each "
                            "management point (comma-separated)");
        return -1;
    }
    char *copy = strdup(list);
    int rc = 0;
    for (char *item = strtok(copy, ","); item; item = strtok(NULL, ",")) {
        char role[32], kind[8], url[512];
        if (sscanf(item, " %31s %7s %511s", role, kind, url) != 3) {
            config_report_error(r, cn_keys, cn_key("connector", "endpoints"),
                                "'%s' is not \"<role id> <MP|SUP> <base URL>\"", item);
            rc = -1;
            break;
        }
        uint64_t id;
        enum tunnel_role_kind k = strcasecmp(kind, "MP") == 0    ? TUNNEL_ROLE_MP
                                  : strcasecmp(kind, "SUP") == 0 ? TUNNEL_ROLE_SUP
                                                                 : 0;
        struct up_url u;
        char err[200];
        if (!core_parse_u64(role, strlen(role), &id) || !k ||
            up_url_parse(url, &u, err, sizeof(err)) != 0 || cn_endpoint_find(cn, id) ||
            cn->nendpoints == TUNNEL_MAX_ENDPOINTS) {
            config_report_error(r, cn_keys, cn_key("connector", "endpoints"), "'%s': %s", item,
                                !core_parse_u64(role, strlen(role), &id) ? "role id is not a number"
                                : !k                                     ? "kind is not MP or SUP"
                                : cn_endpoint_find(cn, id)               ? "role id given twice"
                                : cn->nendpoints == TUNNEL_MAX_ENDPOINTS ? "too many endpoints"
                                                                         : err);
            rc = -1;
            break;
        }
        struct cn_endpoint *grown =
            realloc(cn->endpoints, (cn->nendpoints + 1) * sizeof(*cn->endpoints));
        if (!grown) {
            rc = -1;
            break;
        }
        cn->endpoints = grown;
        struct cn_endpoint *e = &cn->endpoints[cn->nendpoints++];
        memset(e, 0, sizeof(*e));
        e->role_id = id;
        e->kind = k;
        e->base_url = strdup(url);
    }
    free(copy);
    return rc;
}

static int cn_parse_instances(struct cn *cn, struct config_report *r)
{
    const struct cn_config *c = &cn->cfg;
    if (cn_set(c->gateways)) {
        const char *items[16];
        char *copy;
        size_t n = core_split_list(c->gateways, &copy, items, 16);
        cn->instances = calloc(n ? n : 1, sizeof(*cn->instances));
        for (size_t i = 0; i < n; i++) {
            const char *colon = strrchr(items[i], ':');
            uint64_t port = 0;
            if (!colon || !core_parse_u64(colon + 1, strlen(colon + 1), &port) || !port ||
                port > 65535 || (size_t)(colon - items[i]) >= sizeof(cn->instances[i].host)) {
                config_report_error(r, cn_keys, cn_key("connector", "gateways"),
                                    "'%s' is not host:port", items[i]);
                free(copy);
                return -1;
            }
            struct cn_instance *in = &cn->instances[cn->ninstances++];
            in->cn = cn;
            in->index = (unsigned)i;
            const char *h = items[i];
            size_t hl = (size_t)(colon - h);
            if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                h++;
                hl -= 2;
            }
            snprintf(in->host, sizeof(in->host), "%.*s", (int)hl, h);
            in->port = (unsigned)port;
        }
        free(copy);
        return 0;
    }
    /* All slots up front: tunnels point at their instance, so the array never moves. */
    cn->instances = calloc(TUNNEL_MAX_INSTANCES, sizeof(*cn->instances));
    cn->follows_count = true;
    cn_instances_resize(cn, (unsigned)c->instances);
    return 0;
}

static int cn_config_load(struct cn *cn, const char *path, struct config_report *r)
{
    struct cn_config *c = &cn->cfg;
    config_report_init(r, path, CN_NKEYS);
    c->config_path = strdup(path);
    if (config_apply_defaults(cn_keys, CN_NKEYS, c, r) != 0 ||
        config_load_file(path, cn_keys, CN_NKEYS, c, r) != 0)
        return -1;
    char *dir = core_dirname(path);
    core_path_resolve(&c->pfx_file, dir);
    core_path_resolve(&c->cert_file, dir);
    core_path_resolve(&c->key_file, dir);
    core_path_resolve_list(&c->trusted_certs, dir);
    core_path_resolve(&c->up_ca_file, dir);
    core_path_resolve(&c->up_cert_file, dir);
    core_path_resolve(&c->up_key_file, dir);
    core_path_resolve(&c->log_file, dir);
    free(dir);
    if (!cn_set(c->id)) {
        char host[256] = "cmg-connector";
        gethostname(host, sizeof(host) - 1);
        free(c->id);
        c->id = strdup(host);
    }
    if (!cn_set(c->site) || strlen(c->site) != 3)
        config_report_error(r, cn_keys, cn_key("connector", "site"),
                            "the site code is required: 3 letters or digits");
    if (!cn_set(c->service_name))
        config_report_error(r, cn_keys, cn_key("connector", "service_name"),
                            "the gateway's service name is required (its certificate's name)");
    if (!cn_set(c->trusted_certs))
        config_report_error(r, cn_keys, cn_key("tls", "trusted_certs"),
                            "the roots the gateway's certificate chains to are required");
    if (!cn_set(c->pfx_file) && !cn_set(c->cert_file))
        config_report_error(r, cn_keys, cn_key("tls", "cert_file"),
                            "the connection point's certificate is required: pfx_file or "
                            "cert_file + key_file");
    if (cn_set(c->cert_file) != cn_set(c->key_file))
        config_report_error(r, cn_keys,
                            cn_key("tls", cn_set(c->cert_file) ? "key_file" : "cert_file"),
                            "cert_file and key_file go together");
    if (c->reconnect_max < c->reconnect_min)
        config_report_error(r, cn_keys, cn_key("connector", "reconnect_max"),
                            "smaller than reconnect_min");
    if (cn_set(c->proxy)) {
        struct up_url u;
        char err[200];
        if (up_url_parse(c->proxy, &u, err, sizeof(err)) != 0 || u.is_https)
            config_report_error(r, cn_keys, cn_key("connector", "proxy"),
                                "'%s' is not http://[user:pass@]host:port", c->proxy);
    }
    if (r->nerrors == 0) {
        cn_parse_endpoints(cn, r);
        cn_parse_instances(cn, r);
    }
    return r->nerrors ? -1 : 0;
}

/* ---- reports and metrics ---- */

static void cn_report_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cn *cn = arg;
    for (size_t i = 0; i < cn->nendpoints; i++) {
        struct cn_endpoint *e = &cn->endpoints[i];
        struct up_stats d = e->stats;
        d.requests -= e->reported.requests;
        d.requests_with_bearer -= e->reported.requests_with_bearer;
        d.bytes_to_upstream -= e->reported.bytes_to_upstream;
        d.bytes_from_upstream -= e->reported.bytes_from_upstream;
        d.failures -= e->reported.failures;
        char line[512];
        up_stats_format(&d, line, sizeof(line));
        LOG_INFO("EndPoint Name=%llu Kind=%s TargetHost=%s %s", (unsigned long long)e->role_id,
                 tunnel_role_kind_name(e->kind), e->base_url, line);
        e->reported = e->stats;
        e->stats.max_concurrent = e->stats.concurrent; /* the next interval's peak */
    }
}

struct cn_out {
    char *buf;
    size_t len;
    FILE *f;
};

static char *cn_metrics(struct cn *cn)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    unsigned live = 0;
    fputs("# HELP cmg_connector_tunnels Tunnels up, per gateway instance.\n"
          "# TYPE cmg_connector_tunnels gauge\n",
          f);
    for (size_t i = 0; i < cn->ninstances; i++) {
        const struct cn_instance *in = &cn->instances[i];
        if (in->retired && !in->live)
            continue;
        fprintf(f, "cmg_connector_tunnels{instance=\"%u\",address=\"%s:%u\"} %u\n", in->index,
                in->host, in->port, in->live);
        live += in->live;
    }
    fprintf(f, "# HELP cmg_connector_tunnels_wanted Tunnels the gateway instance asked for.\n"
               "# TYPE cmg_connector_tunnels_wanted gauge\n");
    for (size_t i = 0; i < cn->ninstances; i++)
        if (!cn->instances[i].retired)
            fprintf(f, "cmg_connector_tunnels_wanted{instance=\"%u\"} %u\n", cn->instances[i].index,
                    cn->instances[i].wanted ? cn->instances[i].wanted : 1);
    fprintf(f,
            "# HELP cmg_connector_tunnel_connects_total TLS connections to gateways that "
            "opened.\n# TYPE cmg_connector_tunnel_connects_total counter\n"
            "cmg_connector_tunnel_connects_total %llu\n"
            "# HELP cmg_connector_tunnel_failures_total Failed or lost tunnels.\n"
            "# TYPE cmg_connector_tunnel_failures_total counter\n"
            "cmg_connector_tunnel_failures_total %llu\n"
            "# HELP cmg_connector_streams_total Requests received through tunnels.\n"
            "# TYPE cmg_connector_streams_total counter\ncmg_connector_streams_total %llu\n"
            "# HELP cmg_connector_unknown_role_total Requests for a role id not served here.\n"
            "# TYPE cmg_connector_unknown_role_total counter\n"
            "cmg_connector_unknown_role_total %llu\n",
            (unsigned long long)cn->tunnels_opened, (unsigned long long)cn->tunnel_failures,
            (unsigned long long)cn->streams_total, (unsigned long long)cn->streams_unknown_role);
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool narrow;
    } m[] = {
        {"cmg_connector_requests_total", "counter", "Requests sent to the endpoint.",
         offsetof(struct up_stats, requests), false},
        {"cmg_connector_requests_with_bearer_total", "counter",
         "Requests that carried a bearer token.", offsetof(struct up_stats, requests_with_bearer),
         false},
        {"cmg_connector_request_bytes_total", "counter", "Bytes sent to the endpoint.",
         offsetof(struct up_stats, bytes_to_upstream), false},
        {"cmg_connector_response_bytes_total", "counter", "Bytes received from the endpoint.",
         offsetof(struct up_stats, bytes_from_upstream), false},
        {"cmg_connector_failures_total", "counter", "Requests the endpoint did not answer.",
         offsetof(struct up_stats, failures), false},
        {"cmg_connector_connections_opened_total", "counter", "Connections opened to the endpoint.",
         offsetof(struct up_stats, connections_opened), false},
        {"cmg_connector_connections_reused_total", "counter",
         "Requests sent on a kept-alive connection.", offsetof(struct up_stats, connections_reused),
         false},
        {"cmg_connector_concurrent_requests", "gauge", "Requests in progress.",
         offsetof(struct up_stats, concurrent), true},
        {"cmg_connector_max_concurrent_requests", "gauge",
         "Most requests in progress at once in this report interval.",
         offsetof(struct up_stats, max_concurrent), true},
        {"cmg_connector_open_connections", "gauge", "Connections open to the endpoint.",
         offsetof(struct up_stats, open_connections), true},
        {"cmg_connector_idle_connections", "gauge", "Kept-alive connections waiting.",
         offsetof(struct up_stats, idle_connections), true},
        {"cmg_connector_queued_requests", "gauge", "Requests waiting for a connection.",
         offsetof(struct up_stats, queued), true},
    };
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name, m[k].type);
        for (size_t i = 0; i < cn->nendpoints; i++) {
            const struct cn_endpoint *e = &cn->endpoints[i];
            const char *base = (const char *)&e->stats + m[k].off;
            unsigned long long v =
                m[k].narrow ? *(const unsigned *)base : (unsigned long long)*(const uint64_t *)base;
            fprintf(f, "%s{role_id=\"%llu\",kind=\"%s\"} %llu\n", m[k].name,
                    (unsigned long long)e->role_id, tunnel_role_kind_name(e->kind), v);
        }
    }
    (void)live;
    fclose(f);
    return buf;
}

static void cn_admin_cb(struct evhttp_request *req, void *arg)
{
    struct cn *cn = arg;
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *b = evbuffer_new();
    int code = 200;
    const char *reason = "OK";
    if (strcmp(uri, "/healthz") == 0) {
        evbuffer_add_printf(b, "ok\n");
    } else if (strcmp(uri, "/readyz") == 0) {
        unsigned live = 0;
        for (size_t i = 0; i < cn->ninstances; i++)
            live += cn->instances[i].live;
        if (live && !cn->stopping) {
            evbuffer_add_printf(b, "ready: %u tunnel(s)\n", live);
        } else {
            code = 503;
            reason = "Service Unavailable";
            evbuffer_add_printf(b, cn->stopping ? "stopping\n" : "no tunnel up\n");
        }
    } else if (strcmp(uri, "/metrics") == 0) {
        char *text = cn_metrics(cn);
        if (text)
            evbuffer_add(b, text, strlen(text));
        free(text);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4");
    } else {
        code = 404;
        reason = "Not Found";
        evbuffer_add_printf(b, "404 Not Found\n");
    }
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

/* ---- signals ---- */

static void cn_stop_tick_cb(evutil_socket_t fd, short what, void *arg);

struct cn_stopper {
    struct cn *cn;
    struct event *tick;
    uint64_t until;
};

static void cn_sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct cn_stopper *st = arg;
    struct cn *cn = st->cn;
    if (cn->stopping) {
        event_base_loopbreak(cn->base);
        return;
    }
    cn->stopping = true;
    LOG_INFO("stopping: GOAWAY on every tunnel, waiting up to %llu ms for %u open request(s)",
             (unsigned long long)cn->cfg.drain_timeout, cn_open_streams(cn));
    cn_tunnels_stop(cn);
    st->until = core_now_ms() + cn->cfg.drain_timeout;
    struct timeval tv = {0, 100 * 1000};
    event_add(st->tick, &tv);
}

static void cn_stop_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cn_stopper *st = arg;
    if (cn_open_streams(st->cn) == 0 || core_now_ms() >= st->until)
        event_base_loopbreak(st->cn->base);
}

static void cn_usage(FILE *out)
{
    fprintf(out, "usage: cmg-connector -c FILE [-t]\n"
                 "  -c, --config FILE  settings (INI)\n"
                 "  -t, --test         check the settings and exit\n"
                 "  -V, --version      print the version and exit\n"
                 "  -h, --help\n"
                 "Signals: SIGTERM/SIGINT finish open requests (GOAWAY) and stop.\n");
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool test_only = false;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"test", no_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (ch) {
        case 'V':
            printf("cmg-connector %s\n", CMG_VERSION);
            return 0;
        case 'c':
            config = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'h':
            cn_usage(stdout);
            return 0;
        default:
            cn_usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc) {
        cn_usage(stderr);
        return 2;
    }
    static struct cn cn;
    struct config_report r;
    if (cn_config_load(&cn, config, &r) != 0) {
        for (unsigned i = 0; i < r.nerrors; i++)
            fprintf(stderr, "%s\n", r.errors[i]);
        fprintf(stderr, "cmg-connector: %s: %u error(s); not started\n", config, r.nerrors);
        config_report_deinit(&r);
        return 1;
    }
    config_report_deinit(&r);
    char err[512];
    struct tls_client_opts to = {.pfx_file = cn.cfg.pfx_file,
                                 .pfx_password = cn.cfg.pfx_password,
                                 .cert_file = cn.cfg.cert_file,
                                 .key_file = cn.cfg.key_file,
                                 .ca_files = cn.cfg.trusted_certs,
                                 .alpn = TUNNEL_ALPN};
    cn.ssl_ctx = tls_client_ctx_new(&to, err, sizeof(err));
    if (!cn.ssl_ctx) {
        fprintf(stderr, "cmg-connector: %s: [tls]: %s\n", config, err);
        return 1;
    }
    if (test_only) {
        printf("cmg-connector: configuration %s is valid (%zu endpoint(s), %zu gateway "
               "instance(s))\n",
               config, cn.nendpoints, cn.ninstances);
        return 0;
    }
    static const enum log_level map[] = {LOG_LEVEL_ERROR, LOG_LEVEL_INFO, LOG_LEVEL_VERBOSE};
    struct log_opts lo = {.file = cn.cfg.log_file,
                          .component = "SMS_Cloud_ProxyConnector",
                          .max_size = cn.cfg.log_max_size,
                          .level = map[cn.cfg.log_level < 3 ? cn.cfg.log_level : 1],
                          .to_stderr = cn.cfg.log_stderr};
    if (log_init(&lo, err, sizeof(err)) != 0) {
        fprintf(stderr, "cmg-connector: %s:log.file: %s\n", config, err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* add and remove of the same event within one loop turn cost no system call */
    struct event_config *evc = event_config_new();
    event_config_set_flag(evc, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    cn.base = event_base_new_with_config(evc);
    event_config_free(evc);
    cn.dns = evdns_base_new(cn.base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!cn.dns)
        cn.dns = evdns_base_new(cn.base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    for (size_t i = 0; i < cn.nendpoints; i++) {
        struct cn_endpoint *e = &cn.endpoints[i];
        struct up_endpoint_cfg ec = {
            .base_url = e->base_url,
            .ca_file = cn.cfg.up_ca_file,
            .cert_file = cn.cfg.up_cert_file,
            .key_file = cn.cfg.up_key_file,
            .max_connections = (unsigned)cn.cfg.up_max_connections,
            .max_idle = (unsigned)cn.cfg.up_max_idle,
            .connect_timeout_ms = cn.cfg.up_connect_timeout,
            .response_timeout_ms = cn.cfg.up_response_timeout,
            .idle_timeout_ms = cn.cfg.up_idle_timeout,
            .max_queue = (unsigned)cn.cfg.up_max_queue,
        };
        e->pool = up_pool_new(cn.base, &ec, &e->stats, err, sizeof(err));
        if (!e->pool) {
            fprintf(stderr, "cmg-connector: %s: connector.endpoints: %s\n", config, err);
            return 1;
        }
        up_pool_set_dns(e->pool, cn.dns);
    }
    if (cn.cfg.admin_enabled) {
        char host[256];
        const char *colon = strrchr(cn.cfg.admin_listen, ':');
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - cn.cfg.admin_listen) : 0,
                 cn.cfg.admin_listen);
        cn.admin = evhttp_new(cn.base);
        if (!colon || !cn.admin ||
            evhttp_bind_socket(cn.admin, host, (ev_uint16_t)atoi(colon + 1)) != 0) {
            fprintf(stderr, "cmg-connector: %s:admin.listen: cannot listen on %s\n", config,
                    cn.cfg.admin_listen);
            return 1;
        }
        evhttp_set_allowed_methods(cn.admin, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
        evhttp_set_gencb(cn.admin, cn_admin_cb, &cn);
    }
    struct cn_stopper st = {.cn = &cn};
    st.tick = event_new(cn.base, -1, EV_PERSIST, cn_stop_tick_cb, &st);
    struct event *ev_term = evsignal_new(cn.base, SIGTERM, cn_sigterm_cb, &st);
    struct event *ev_int = evsignal_new(cn.base, SIGINT, cn_sigterm_cb, &st);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    cn.report_timer = event_new(cn.base, -1, EV_PERSIST, cn_report_cb, &cn);
    uint64_t iv = cn.cfg.report_interval;
    struct timeval tv = {(time_t)(iv / 1000), (suseconds_t)((iv % 1000) * 1000)};
    event_add(cn.report_timer, &tv);

    LOG_INFO("cmg-connector %s started: connection point %s, site %s, %zu endpoint(s), %zu "
             "gateway instance(s) of %s%s%s",
             CMG_VERSION, cn.cfg.id, cn.cfg.site, cn.nendpoints, cn.ninstances, cn.cfg.service_name,
             cn_set(cn.cfg.proxy) ? ", through proxy " : "",
             cn_set(cn.cfg.proxy) ? cn.cfg.proxy : "");
    for (size_t i = 0; i < cn.ninstances; i++)
        cn_instance_fill(&cn, &cn.instances[i]);
    event_base_dispatch(cn.base);

    cn_report_cb(-1, 0, &cn); /* the last figures */
    cn_tunnels_free(&cn);
    for (size_t i = 0; i < cn.nendpoints; i++) {
        up_pool_free(cn.endpoints[i].pool);
        free(cn.endpoints[i].base_url);
    }
    free(cn.endpoints);
    free(cn.instances);
    if (cn.admin)
        evhttp_free(cn.admin);
    event_free(ev_term);
    event_free(ev_int);
    event_free(st.tick);
    event_free(cn.report_timer);
    evdns_base_free(cn.dns, 0);
    SSL_CTX_free(cn.ssl_ctx);
    event_base_free(cn.base);
    config_free(cn_keys, CN_NKEYS, &cn.cfg);
    free(cn.cfg.config_path);
    LOG_INFO("cmg-connector stopped");
    log_deinit();
    return 0;
}
