/* A snapshot is everything built from one reading of the config: immutable, ref-counted.
 * Connections keep the snapshot they started with; reloads make a new one. */
#include <ctype.h>
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

static int gw_snapshot_client_trust(struct gw_snapshot *s, struct config_report *r)
{
    struct gw_config *c = &s->cfg;
    if (!c->auth.trusted_certs || !*c->auth.trusted_certs)
        return 0;
    const char *certs[64], *crls[64], *open[TLS_FAIL_OPEN_MAX + 1];
    char *cc, *cl, *co, err[512];
    struct tls_client_trust_opts o = {
        .cert_files = certs,
        .ncert = core_split_list(c->auth.trusted_certs, &cc, certs, 64),
        .crl_files = crls,
        .ncrl = core_split_list(c->auth.crl_files, &cl, crls, 64),
        .check_revocation = c->auth.verify_revocation,
        .crl_grace = (int64_t)(c->auth.crl_grace / 1000),
        .fail_open = open,
        .nfail_open = core_split_list(c->auth.crl_fail_open, &co, open, TLS_FAIL_OPEN_MAX + 1),
    };
    s->client_trust = tls_client_trust_new(&o, err, sizeof(err));
    free(cc);
    free(cl);
    free(co);
    if (!s->client_trust) {
        const char *key = strstr(err, "thumbprint") || strstr(err, "fail-open") ? "crl_fail_open"
                          : strstr(err, "CRL")                                  ? "crl_files"
                                                                                : "trusted_certs";
        config_report_error(r, gw_config_schema, gw_key("auth", key), "%s", err);
        return -1;
    }
    return 0;
}

/* Onboarded Entra ID tenants and the audiences their tokens must carry. */
static int gw_snapshot_entra(struct gw_snapshot *s, struct config_report *r)
{
    struct auth_settings *a = &s->cfg.auth;
    char err[300];
    if (auth_entra_tenants_parse(a->entra_tenants, s->entra_tenants, AUTH_ENTRA_TENANTS_MAX,
                                 &s->nentra_tenants, err, sizeof(err)) != 0) {
        config_report_error(r, gw_config_schema, gw_key("auth", "entra_tenants"), "%s", err);
        return -1;
    }
    for (size_t i = 0; i < s->nentra_tenants; i++)
        s->entra_tenant_ids[i] = s->entra_tenants[i].tenant;
    if (a->entra_server_app_id && *a->entra_server_app_id &&
        !auth_is_guid(a->entra_server_app_id, strlen(a->entra_server_app_id))) {
        config_report_error(r, gw_config_schema, gw_key("auth", "entra_server_app_id"),
                            "'%s' is not a GUID (the server app's client id)",
                            a->entra_server_app_id);
        return -1;
    }
    if (a->entra_authority) { /* one spelling: no trailing '/' */
        size_t l = strlen(a->entra_authority);
        while (l && a->entra_authority[l - 1] == '/')
            a->entra_authority[--l] = '\0';
    }
    if (a->entra_authority && *a->entra_authority &&
        strncmp(a->entra_authority, "https://", 8) != 0 &&
        strncmp(a->entra_authority, "http://", 7) != 0) {
        config_report_error(r, gw_config_schema, gw_key("auth", "entra_authority"),
                            "'%s' is not an http(s) URL", a->entra_authority);
        return -1;
    }
    if (a->entra_app_id_uri && *a->entra_app_id_uri)
        s->entra_audiences[s->nentra_audiences++] = a->entra_app_id_uri;
    if (a->entra_server_app_id && *a->entra_server_app_id)
        s->entra_audiences[s->nentra_audiences++] = a->entra_server_app_id;
    if (s->nentra_tenants && !s->nentra_audiences) {
        config_report_error(r, gw_config_schema, gw_key("auth", "entra_app_id_uri"),
                            "Entra tenants need an audience: entra_app_id_uri or "
                            "entra_server_app_id");
        return -1;
    }
    return 0;
}

/* The site's token signers and the bulk-token block list ([auth]). */
static int gw_snapshot_site_tokens(struct gw_snapshot *s, struct config_report *r)
{
    struct auth_settings *a = &s->cfg.auth;
    char err[512];
    if (a->site_token_certs && *a->site_token_certs) {
        const char *files[AUTH_SITE_SIGNERS_MAX + 1];
        char *copy;
        size_t n = core_split_list(a->site_token_certs, &copy, files, AUTH_SITE_SIGNERS_MAX + 1);
        for (size_t i = 0; i < n; i++)
            if (auth_site_keys_add_file(&s->site_keys, files[i], err, sizeof(err)) != 0) {
                config_report_error(r, gw_config_schema, gw_key("auth", "site_token_certs"), "%s",
                                    err);
                free(copy);
                return -1;
            }
        free(copy);
        if (!a->hierarchy_id || !*a->hierarchy_id) {
            config_report_error(r, gw_config_schema, gw_key("auth", "site_token_certs"),
                                "site tokens need auth.hierarchy_id (their issuer is "
                                "urn:sccm:oauth2:<hierarchy id>)");
            return -1;
        }
    }
    if (a->bulk_token_blocklist && *a->bulk_token_blocklist) {
        FILE *fp = fopen(a->bulk_token_blocklist, "r");
        if (!fp) {
            config_report_error(r, gw_config_schema, gw_key("auth", "bulk_token_blocklist"),
                                "cannot read %s", a->bulk_token_blocklist);
            return -1;
        }
        char line[256];
        while (fgets(line, sizeof(line), fp) && s->nbulk_blocked < 100000) {
            char *t = line + strspn(line, " \t");
            t[strcspn(t, " \t\r\n#")] = '\0';
            if (!*t)
                continue;
            for (char *q = t; *q; q++)
                *q = (char)tolower((unsigned char)*q);
            char **grown = realloc(s->bulk_blocked, (s->nbulk_blocked + 1) * sizeof(char *));
            if (!grown)
                break;
            s->bulk_blocked = grown;
            s->bulk_blocked[s->nbulk_blocked++] = strdup(t);
        }
        fclose(fp);
    }
    return 0;
}

static SSL_CTX *gw_snapshot_tls(struct gw_snapshot *s, const struct tls_ticket_keys *fallback,
                                struct config_report *r)
{
    struct gw_config *c = &s->cfg;
    struct tls_ticket_keys keys;
    char err[512];
    memset(&keys, 0, sizeof(keys));
    if (fallback)
        keys = *fallback;
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
        .client_trust = s->client_trust,
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

/* The tunnel listener's context: connection points only (ALPN cmg-tunnel/1), their
 * certificates judged against the connector trust list. */
static int gw_snapshot_tunnel(struct gw_snapshot *s, struct config_report *r)
{
    struct gw_config *c = &s->cfg;
    if (!c->tunnel_enabled || !c->tunnel_trusted_certs || !*c->tunnel_trusted_certs)
        return 0;
    const char *certs[64], *crls[64];
    char *cc, *cl, err[512];
    struct tls_client_trust_opts o = {
        .cert_files = certs,
        .ncert = core_split_list(c->tunnel_trusted_certs, &cc, certs, 64),
        .crl_files = crls,
        .ncrl = core_split_list(c->tunnel_crl_files, &cl, crls, 64),
        .check_revocation = c->tunnel_verify_revocation,
        .crl_grace = (int64_t)(c->auth.crl_grace / 1000),
    };
    s->tunnel_trust = tls_client_trust_new(&o, err, sizeof(err));
    free(cc);
    free(cl);
    if (!s->tunnel_trust) {
        config_report_error(r, gw_config_schema,
                            gw_key("tunnel", strstr(err, "CRL") ? "crl_files" : "trusted_certs"),
                            "%s", err);
        return -1;
    }
    struct tls_server_opts o2 = {
        .pfx_file = c->pfx_file,
        .pfx_password = c->pfx_password_resolved,
        .cert_file = c->cert_file,
        .key_file = c->key_file,
        .enforce_tls12 = true,
        .tls12_ciphers = c->tls12_ciphers,
        .tls13_ciphersuites = c->tls13_ciphersuites,
        .groups = c->groups,
        .session_tickets = false,
        .session_timeout = 300,
        .alpn = "cmg-tunnel/1",
        .client_trust = s->tunnel_trust,
    };
    s->tunnel_ssl_ctx = tls_server_ctx_new(&o2, err, sizeof(err));
    if (!s->tunnel_ssl_ctx) {
        config_report_error(r, gw_config_schema, gw_key("tunnel", "trusted_certs"), "%s", err);
        return -1;
    }
    return 0;
}

/* The management points' certificates that sign content access tokens ([content]). */
static int gw_snapshot_content(struct gw_snapshot *s, struct config_report *r)
{
    const struct content_settings *cs = &s->cfg.content;
    char err[512];
    if (!cs->enabled || !cs->token_certs || !*cs->token_certs)
        return 0;
    const char *files[AUTH_SITE_SIGNERS_MAX + 1];
    char *copy;
    size_t n = core_split_list(cs->token_certs, &copy, files, AUTH_SITE_SIGNERS_MAX + 1);
    for (size_t i = 0; i < n; i++)
        if (auth_site_keys_add_file(&s->content_keys, files[i], err, sizeof(err)) != 0) {
            config_report_error(r, gw_config_schema, gw_key("content", "token_certs"), "%s", err);
            free(copy);
            return -1;
        }
    free(copy);
    return 0;
}

struct gw_snapshot *gw_snapshot_build(const char *path, uint64_t generation,
                                      const struct tls_ticket_keys *fallback_keys,
                                      struct config_report *report)
{
    struct gw_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->generation = generation;
    if (gw_config_load(path, &s->cfg, report) != 0)
        goto fail;
    if (gw_snapshot_client_trust(s, report) != 0 || gw_snapshot_site_tokens(s, report) != 0 ||
        gw_snapshot_entra(s, report) != 0 || gw_snapshot_content(s, report) != 0)
        goto fail;
    s->ssl_ctx = gw_snapshot_tls(s, fallback_keys, report);
    if (!s->ssl_ctx || gw_snapshot_tunnel(s, report) != 0)
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
    tls_client_trust_free(s->client_trust); /* after the context that borrowed it */
    if (s->tunnel_ssl_ctx)
        SSL_CTX_free(s->tunnel_ssl_ctx);
    tls_client_trust_free(s->tunnel_trust);
    auth_site_keys_clear(&s->site_keys);
    auth_site_keys_clear(&s->content_keys);
    for (size_t i = 0; i < s->nbulk_blocked; i++)
        free(s->bulk_blocked[i]);
    free(s->bulk_blocked);
    gw_config_free(&s->cfg);
    free(s);
}
