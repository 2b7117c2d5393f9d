/* cmg-gateway settings: the schema (names, defaults, bounds) and the loaded values. */
#ifndef CMG_GW_CONFIG_H
#define CMG_GW_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#include "auth.h"
#include "content.h"
#include "core.h"

enum gw_log_level { GW_LOG_ERROR = 0, GW_LOG_INFO = 1, GW_LOG_VERBOSE = 2 };

/* Values after loading. Strings are heap copies freed by gw_config_free; durations are ms. */
struct gw_config {
    /* [gateway] */
    char *service_name;
    uint64_t instance_id;
    uint64_t instances; /* instances of the deployment, told to connectors; 0 = not said */
    uint64_t workers;   /* 0 = one per CPU */
    char *listen;       /* comma-separated host:port list */
    uint64_t max_connections;
    uint64_t drain_timeout;
    uint64_t listen_backlog;
    uint64_t await_tunnel; /* keep the client port closed until a tunnel is up, at most this */
    /* [tls] */
    char *pfx_file;
    char *pfx_password;
    char *pfx_password_file;
    char *cert_file;
    char *key_file;
    bool enforce_tls12;
    char *tls12_ciphers;
    char *tls13_ciphersuites;
    char *groups;
    bool session_tickets;
    char *ticket_key_file;
    uint64_t ticket_key_check_interval;
    uint64_t session_lifetime;
    uint64_t handshake_timeout;
    /* [http] */
    uint64_t max_header_bytes;
    uint64_t max_headers;
    uint64_t max_body_bytes;
    uint64_t header_timeout;
    uint64_t idle_timeout;
    uint64_t body_timeout;
    uint64_t send_timeout;
    uint64_t max_keepalive_requests;
    uint64_t max_pipeline_bytes;
    /* [auth] (schema owned by the auth module) */
    struct auth_settings auth;
    /* [content] (schema owned by the content module) */
    struct content_settings content;
    /* [tunnel] */
    bool tunnel_enabled;
    char *tunnel_listen; /* default 0.0.0.0:<10124 + instance_id> */
    char *tunnel_trusted_certs;
    char *tunnel_crl_files;
    bool tunnel_verify_revocation;
    uint64_t tunnels_per_worker;
    uint64_t tunnel_ping_interval;
    uint64_t tunnel_ping_timeout;
    uint64_t tunnel_response_timeout;
    /* [admin] */
    bool admin_enabled;
    char *admin_listen;
    /* [log] */
    char *log_file;
    uint64_t log_max_size;
    unsigned log_level; /* enum gw_log_level */
    bool log_stderr;
    bool log_requests;
    bool log_connections;

    /* derived, not in the file */
    char *config_path;
    char *pfx_password_resolved; /* from pfx_password or pfx_password_file */
    unsigned workers_effective;
};

/* The whole schema: the gateway's own sections plus the sections of the modules it hosts
 * ([auth], [content]), with offsets into struct gw_config. Built on first use. */
extern const struct config_key *gw_config_schema;
extern size_t gw_config_schema_len;
void gw_config_schema_init(void);

/* Loads and validates FILE. On failure prints every error (file:line: key: why) into report and
 * returns -1; the caller prints them. `cfg` must be freed with gw_config_free either way. */
int gw_config_load(const char *path, struct gw_config *cfg, struct config_report *report);
void gw_config_free(struct gw_config *cfg);
/* Writes the documented defaults as an INI file (cmg-gateway --print-defaults). */
void gw_config_print_defaults(FILE *out);

#endif
