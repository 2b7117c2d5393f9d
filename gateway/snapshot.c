/* A snapshot is everything built from one reading of the config: immutable, ref-counted.
 * Connections keep the snapshot they started with; reloads make a new one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gw.h"
#include "tls.h"

void gw_file_signature(const char *path, char *buf, size_t len)
{
    struct stat st;
    if (!path || !*path || stat(path, &st) != 0) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, len, "%lu:%lld:%lld.%09ld", (unsigned long)st.st_ino, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

static size_t gw_key(const char *section, const char *name)
{
    return (size_t)config_find(gw_config_schema, gw_config_schema_len, section, name);
}

static SSL_CTX *gw_snapshot_tls(struct gw_snapshot *s, struct config_report *r)
{
    struct gw_config *c = &s->cfg;
    struct tls_ticket_keys keys;
    char err[512];
    memset(&keys, 0, sizeof(keys));
    if (c->session_tickets && c->ticket_key_file && *c->ticket_key_file) {
        gw_file_signature(c->ticket_key_file, s->ticket_file_sig, sizeof(s->ticket_file_sig));
        if (tls_ticket_keys_load(c->ticket_key_file, &keys, err, sizeof(err)) != 0) {
            config_report_error(r, gw_config_schema, gw_key("tls", "ticket_key_file"), "%s", err);
            return NULL;
        }
    }
    struct tls_server_opts o = {
        .pfx_file = c->pfx_file,
        .pfx_password = c->pfx_password_resolved,
        .cert_file = c->cert_file,
        .key_file = c->key_file,
        .enforce_tls12 = c->enforce_tls12,
        .tls12_ciphers = c->tls12_ciphers,
        .tls13_ciphersuites = c->tls13_ciphersuites,
        .groups = c->groups,
        .session_tickets = c->session_tickets,
        .ticket_keys = &keys,
        .session_timeout = (unsigned)(c->session_lifetime / 1000),
        .alpn = "http/1.1",
    };
    SSL_CTX *ctx = tls_server_ctx_new(&o, err, sizeof(err));
    memset(&keys, 0, sizeof(keys));
    if (!ctx) {
        const char *key = c->pfx_file && *c->pfx_file ? "pfx_file" : "cert_file";
        if (strstr(err, "password"))
            key = c->pfx_password_file && *c->pfx_password_file ? "pfx_password_file"
                                                                : "pfx_password";
        else if (strstr(err, "tls12_ciphers"))
            key = "tls12_ciphers";
        else if (strstr(err, "tls13_ciphersuites"))
            key = "tls13_ciphersuites";
        else if (strstr(err, "groups"))
            key = "groups";
        else if (strstr(err, "private key"))
            key = "key_file";
        config_report_error(r, gw_config_schema, gw_key("tls", key), "%s", err);
    }
    return ctx;
}

struct gw_snapshot *gw_snapshot_build(const char *path, uint64_t generation,
                                      struct config_report *report)
{
    struct gw_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->generation = generation;
    if (gw_config_load(path, &s->cfg, report) != 0)
        goto fail;
    s->ssl_ctx = gw_snapshot_tls(s, report);
    if (!s->ssl_ctx)
        goto fail;
    s->limits.max_header_bytes = s->cfg.max_header_bytes;
    s->limits.max_headers = (unsigned)s->cfg.max_headers;
    s->limits.max_body_bytes = s->cfg.max_body_bytes ? s->cfg.max_body_bytes : UINT64_MAX;
    if (s->cfg.service_name && *s->cfg.service_name)
        snprintf(s->service_name, sizeof(s->service_name), "%s", s->cfg.service_name);
    else
        tls_ctx_subject_cn(s->ssl_ctx, s->service_name, sizeof(s->service_name));
    return s;
fail:
    gw_snapshot_unref(s);
    return NULL;
}

struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void gw_snapshot_unref(struct gw_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->ssl_ctx)
        SSL_CTX_free(s->ssl_ctx);
    gw_config_free(&s->cfg);
    free(s);
}
