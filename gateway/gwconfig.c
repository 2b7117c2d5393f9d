/* The settings of cmg-gateway, their defaults and their cross-checks. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gwconfig.h"

#define OFF(f) offsetof(struct gw_config, f)

/* TLS 1.2 suites allowed by default: ECDHE key exchange with AEAD ciphers only. */
#define GW_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static const struct config_key gw_own_keys[] = {
    {"gateway", "service_name", CONFIG_STRING, OFF(service_name), NULL, 0, 0, NULL, false},
    {"gateway", "instance_id", CONFIG_UINT, OFF(instance_id), "0", 0, 15, NULL, true},
    {"gateway", "instances", CONFIG_UINT, OFF(instances), "0", 0, 16, NULL, false},
    {"gateway", "workers", CONFIG_UINT, OFF(workers), "0", 0, 256, NULL, true},
    {"gateway", "listen", CONFIG_STRING, OFF(listen), "0.0.0.0:443", 0, 0, NULL, true},
    {"gateway", "max_connections", CONFIG_UINT, OFF(max_connections), "200000", 1, 10000000, NULL,
     false},
    {"gateway", "drain_timeout", CONFIG_DURATION, OFF(drain_timeout), "30s", 0, 3600000, NULL,
     false},
    {"gateway", "listen_backlog", CONFIG_UINT, OFF(listen_backlog), "4096", 16, 65535, NULL, true},
    {"gateway", "await_tunnel", CONFIG_DURATION, OFF(await_tunnel), "0", 0, 3600000, NULL, true},

    {"tls", "pfx_file", CONFIG_STRING, OFF(pfx_file), NULL, 0, 0, NULL, false},
    {"tls", "pfx_password", CONFIG_STRING, OFF(pfx_password), NULL, 0, 0, NULL, false},
    {"tls", "pfx_password_file", CONFIG_STRING, OFF(pfx_password_file), NULL, 0, 0, NULL, false},
    {"tls", "cert_file", CONFIG_STRING, OFF(cert_file), NULL, 0, 0, NULL, false},
    {"tls", "key_file", CONFIG_STRING, OFF(key_file), NULL, 0, 0, NULL, false},
    {"tls", "enforce_tls12", CONFIG_BOOL, OFF(enforce_tls12), "true", 0, 0, NULL, false},
    {"tls", "tls12_ciphers", CONFIG_STRING, OFF(tls12_ciphers), GW_TLS12_CIPHERS, 0, 0, NULL,
     false},
    {"tls", "tls13_ciphersuites", CONFIG_STRING, OFF(tls13_ciphersuites),
     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256", 0, 0, NULL,
     false},
    {"tls", "groups", CONFIG_STRING, OFF(groups), "X25519:P-256:P-384", 0, 0, NULL, false},
    {"tls", "session_tickets", CONFIG_BOOL, OFF(session_tickets), "true", 0, 0, NULL, false},
    {"tls", "ticket_key_file", CONFIG_STRING, OFF(ticket_key_file), NULL, 0, 0, NULL, false},
    {"tls", "ticket_key_check_interval", CONFIG_DURATION, OFF(ticket_key_check_interval), "60s",
     1000, 86400000, NULL, false},
    {"tls", "session_lifetime", CONFIG_DURATION, OFF(session_lifetime), "12h", 1000, 604800000,
     NULL, false},
    {"tls", "handshake_timeout", CONFIG_DURATION, OFF(handshake_timeout), "10s", 100, 600000, NULL,
     false},

    {"http", "max_header_bytes", CONFIG_SIZE, OFF(max_header_bytes), "16k", 1024, 1048576, NULL,
     false},
    {"http", "max_headers", CONFIG_UINT, OFF(max_headers), "100", 8, 1000, NULL, false},
    {"http", "max_body_bytes", CONFIG_SIZE, OFF(max_body_bytes), "64m", 0, 0, NULL, false},
    {"http", "header_timeout", CONFIG_DURATION, OFF(header_timeout), "15s", 100, 600000, NULL,
     false},
    {"http", "idle_timeout", CONFIG_DURATION, OFF(idle_timeout), "120s", 100, 3600000, NULL, false},
    {"http", "body_timeout", CONFIG_DURATION, OFF(body_timeout), "60s", 100, 3600000, NULL, false},
    {"http", "send_timeout", CONFIG_DURATION, OFF(send_timeout), "60s", 100, 3600000, NULL, false},
    {"http", "max_keepalive_requests", CONFIG_UINT, OFF(max_keepalive_requests), "0", 0, 0, NULL,
     false},
    {"http", "max_pipeline_bytes", CONFIG_SIZE, OFF(max_pipeline_bytes), "64k", 4096, 16777216,
     NULL, false},

    {"tunnel", "enabled", CONFIG_BOOL, OFF(tunnel_enabled), "true", 0, 0, NULL, true},
    {"tunnel", "listen", CONFIG_STRING, OFF(tunnel_listen), NULL, 0, 0, NULL, true},
    {"tunnel", "trusted_certs", CONFIG_STRING, OFF(tunnel_trusted_certs), NULL, 0, 0, NULL, false},
    {"tunnel", "crl_files", CONFIG_STRING, OFF(tunnel_crl_files), NULL, 0, 0, NULL, false},
    {"tunnel", "verify_revocation", CONFIG_BOOL, OFF(tunnel_verify_revocation), "true", 0, 0, NULL,
     false},
    {"tunnel", "tunnels_per_worker", CONFIG_UINT, OFF(tunnels_per_worker), "1", 1, 16, NULL, false},
    {"tunnel", "ping_interval", CONFIG_DURATION, OFF(tunnel_ping_interval), "10s", 100, 600000,
     NULL, false},
    {"tunnel", "ping_timeout", CONFIG_DURATION, OFF(tunnel_ping_timeout), "20s", 100, 600000, NULL,
     false},
    {"tunnel", "response_timeout", CONFIG_DURATION, OFF(tunnel_response_timeout), "15m", 1000,
     86400000, NULL, false},

    {"admin", "enabled", CONFIG_BOOL, OFF(admin_enabled), "true", 0, 0, NULL, true},
    {"admin", "listen", CONFIG_STRING, OFF(admin_listen), "127.0.0.1:9180", 0, 0, NULL, true},

    {"log", "file", CONFIG_STRING, OFF(log_file), "CMGService.log", 0, 0, NULL, false},
    {"log", "max_size", CONFIG_SIZE, OFF(log_max_size), "5m", 4096, 0, NULL, false},
    {"log", "level", CONFIG_ENUM, OFF(log_level), "info", 0, 0, "error|info|verbose", false},
    {"log", "stderr", CONFIG_BOOL, OFF(log_stderr), "true", 0, 0, NULL, false},
    {"log", "requests", CONFIG_BOOL, OFF(log_requests), "true", 0, 0, NULL, false},
    {"log", "connections", CONFIG_BOOL, OFF(log_connections), "true", 0, 0, NULL, false},
};
#define GW_OWN_KEYS (sizeof(gw_own_keys) / sizeof(gw_own_keys[0]))
#define GW_MAX_KEYS (GW_OWN_KEYS + 96)

static struct config_key gw_all_keys[GW_MAX_KEYS];
const struct config_key *gw_config_schema = gw_all_keys;
size_t gw_config_schema_len;
static pthread_once_t gw_schema_once = PTHREAD_ONCE_INIT;

static void gw_schema_build(void)
{
    size_t n = 0;
    for (size_t i = 0; i < GW_OWN_KEYS; i++)
        gw_all_keys[n++] = gw_own_keys[i];
    /* The [auth] keys, moved to where struct gw_config keeps them. */
    for (size_t i = 0; i < auth_settings_nkeys && n < GW_MAX_KEYS; i++) {
        gw_all_keys[n] = auth_settings_keys[i];
        gw_all_keys[n].offset += offsetof(struct gw_config, auth);
        n++;
    }
    for (size_t i = 0; i < content_settings_nkeys && n < GW_MAX_KEYS; i++) {
        gw_all_keys[n] = content_settings_keys[i];
        gw_all_keys[n].offset += offsetof(struct gw_config, content);
        n++;
    }
    gw_config_schema_len = n;
}

void gw_config_schema_init(void)
{
    pthread_once(&gw_schema_once, gw_schema_build);
}

static size_t gw_key(const char *section, const char *name)
{
    ssize_t k = config_find(gw_config_schema, gw_config_schema_len, section, name);
    return (size_t)k; /* only called with names from the table above */
}

static bool gw_set(const char *s)
{
    return s && *s;
}

static void gw_check_readable(struct config_report *r, const char *section, const char *name,
                              const char *path)
{
    if (gw_set(path) && access(path, R_OK) != 0)
        config_report_error(r, gw_config_schema, gw_key(section, name), "cannot read %s: %s", path,
                            strerror(errno));
}

/* Checks "host:port" or "[v6]:port" shapes. */
static bool gw_addr_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return *end == '\0' && port > 0 && port < 65536;
}

static void gw_check_addrs(struct config_report *r, const char *section, const char *name,
                           const char *list)
{
    const char *addrs[64];
    char *copy;
    size_t n = core_split_list(list, &copy, addrs, 64);
    for (size_t i = 0; i < n; i++)
        if (!gw_addr_ok(addrs[i]))
            config_report_error(r, gw_config_schema, gw_key(section, name),
                                "\"%s\" is not host:port (e.g. 0.0.0.0:443 or [::]:443)", addrs[i]);
    if (!n)
        config_report_error(r, gw_config_schema, gw_key(section, name), "no address given");
    free(copy);
}

static char *gw_read_secret_file(const char *path, struct config_report *r)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        config_report_error(r, gw_config_schema, gw_key("tls", "pfx_password_file"),
                            "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    return strdup(buf);
}

static void gw_config_validate(struct gw_config *c, struct config_report *r)
{
    /* Relative paths in the file are relative to the file's folder, so a config works from
     * anywhere. */
    char *dir = core_dirname(c->config_path);
    char *dir_again = strdup(dir);
    core_path_resolve(&c->pfx_file, dir);
    core_path_resolve(&c->pfx_password_file, dir);
    core_path_resolve(&c->cert_file, dir);
    core_path_resolve(&c->key_file, dir);
    core_path_resolve(&c->ticket_key_file, dir);
    core_path_resolve(&c->log_file, dir);
    auth_settings_resolve(&c->auth, dir);
    char err[512];
    if (content_settings_finish(&c->content, dir, err, sizeof(err)) != 0) {
        /* the message is "content.<key>: why" */
        char key[64] = "enabled";
        const char *why = err;
        const char *colon = strchr(err, ':');
        if (strncmp(err, "content.", 8) == 0 && colon && (size_t)(colon - err - 8) < sizeof(key)) {
            memcpy(key, err + 8, (size_t)(colon - err - 8));
            key[colon - err - 8] = '\0';
            why = colon[1] == ' ' ? colon + 2 : colon + 1;
        }
        ssize_t k = config_find(gw_config_schema, gw_config_schema_len, "content", key);
        config_report_error(r, gw_config_schema, k >= 0 ? (size_t)k : gw_key("content", "enabled"),
                            "%s", why);
    }
    free(dir);

    if (c->instances && c->instance_id >= c->instances)
        config_report_error(r, gw_config_schema, gw_key("gateway", "instances"),
                            "%llu instance(s) cannot include instance_id %llu (ids are 0..%llu)",
                            (unsigned long long)c->instances, (unsigned long long)c->instance_id,
                            (unsigned long long)c->instances - 1);

    bool pfx = gw_set(c->pfx_file), pem = gw_set(c->cert_file) || gw_set(c->key_file);
    if (pfx && pem)
        config_report_error(r, gw_config_schema, gw_key("tls", "cert_file"),
                            "give either pfx_file or cert_file + key_file, not both");
    else if (!pfx && !pem)
        config_report_error(r, gw_config_schema, gw_key("tls", "pfx_file"),
                            "a server certificate is required: set pfx_file (with pfx_password) "
                            "or cert_file + key_file");
    else if (pem && !(gw_set(c->cert_file) && gw_set(c->key_file)))
        config_report_error(r, gw_config_schema,
                            gw_key("tls", gw_set(c->cert_file) ? "key_file" : "cert_file"),
                            "cert_file and key_file go together");
    if (gw_set(c->pfx_password) && gw_set(c->pfx_password_file))
        config_report_error(r, gw_config_schema, gw_key("tls", "pfx_password_file"),
                            "give either pfx_password or pfx_password_file, not both");
    gw_check_readable(r, "tls", "pfx_file", c->pfx_file);
    gw_check_readable(r, "tls", "cert_file", c->cert_file);
    gw_check_readable(r, "tls", "key_file", c->key_file);
    if (gw_set(c->pfx_password_file))
        c->pfx_password_resolved = gw_read_secret_file(c->pfx_password_file, r);
    else
        c->pfx_password_resolved = strdup(c->pfx_password ? c->pfx_password : "");
    if (c->session_tickets && gw_set(c->ticket_key_file))
        gw_check_readable(r, "tls", "ticket_key_file", c->ticket_key_file);

    gw_check_addrs(r, "gateway", "listen", c->listen);
    core_path_resolve_list(&c->tunnel_trusted_certs, dir_again);
    core_path_resolve_list(&c->tunnel_crl_files, dir_again);
    free(dir_again);
    if (!gw_set(c->tunnel_listen)) {
        char addr[64];
        snprintf(addr, sizeof(addr), "0.0.0.0:%llu", 10124ULL + c->instance_id);
        free(c->tunnel_listen);
        c->tunnel_listen = strdup(addr);
    }
    if (c->tunnel_enabled)
        gw_check_addrs(r, "tunnel", "listen", c->tunnel_listen);
    if (c->admin_enabled)
        gw_check_addrs(r, "admin", "listen", c->admin_listen);
    if (c->service_name && strlen(c->service_name) > 253)
        config_report_error(r, gw_config_schema, gw_key("gateway", "service_name"),
                            "longer than 253 characters");

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers_effective = c->workers ? (unsigned)c->workers : (unsigned)(cpus > 0 ? cpus : 1);
}

int gw_config_load(const char *path, struct gw_config *cfg, struct config_report *report)
{
    gw_config_schema_init();
    memset(cfg, 0, sizeof(*cfg));
    config_report_init(report, path, gw_config_schema_len);
    cfg->config_path = strdup(path);
    if (config_apply_defaults(gw_config_schema, gw_config_schema_len, cfg, report) != 0)
        return -1;
    if (config_load_file(path, gw_config_schema, gw_config_schema_len, cfg, report) != 0)
        return -1;
    gw_config_validate(cfg, report);
    return report->nerrors ? -1 : 0;
}

void gw_config_free(struct gw_config *cfg)
{
    if (cfg->content.account_key)
        explicit_bzero(cfg->content.account_key, strlen(cfg->content.account_key));
    config_free(gw_config_schema, gw_config_schema_len, cfg);
    free(cfg->config_path);
    if (cfg->pfx_password_resolved) {
        memset(cfg->pfx_password_resolved, 0, strlen(cfg->pfx_password_resolved));
        free(cfg->pfx_password_resolved);
    }
    memset(cfg, 0, sizeof(*cfg));
}

void gw_config_print_defaults(FILE *out)
{
    gw_config_schema_init();
    const char *section = "";
    for (size_t i = 0; i < gw_config_schema_len; i++) {
        const struct config_key *k = &gw_config_schema[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        if (k->default_value)
            fprintf(out, "%s = %s\n", k->name, k->default_value);
        else
            fprintf(out, "; %s =\n", k->name);
    }
}
