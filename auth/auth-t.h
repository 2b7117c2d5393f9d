/* Types of the auth module shared with other modules. */
#ifndef CMG_AUTH_T_H
#define CMG_AUTH_T_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

/* What a request path addresses, before any authentication is decided. */
enum auth_route_kind {
    AUTH_ROUTE_UNKNOWN = 0,      /* not a gateway path: 404 */
    AUTH_ROUTE_SERVICE_METADATA, /* /CCM_Proxy_{MutualAuth,ServerAuth}/ServiceMetadata */
    AUTH_ROUTE_AAD_AUTH_INFO,    /* /CCM_Proxy_ServerAuth/AADAuthInfo */
    AUTH_ROUTE_ROLE,             /* /CCM_Proxy_{MutualAuth,ServerAuth}/<role id>/<path> */
    AUTH_ROUTE_CONTENT_LOCATION, /* /downloadrestservice.svc/getcontentxmlsecure */
};

/* How the client must prove who it is on that path. */
enum auth_scheme {
    AUTH_SCHEME_NONE = 0,   /* anonymous (server TLS only) */
    AUTH_SCHEME_MUTUAL = 1, /* PKI client certificate (CCM_Proxy_MutualAuth) */
    AUTH_SCHEME_BEARER = 2, /* bearer token (CCM_Proxy_ServerAuth) */
};

/* The classification of one path. `rest` borrows from the path given to auth_route_classify. */
struct auth_route {
    enum auth_route_kind kind;
    enum auth_scheme scheme;
    uint64_t role_id;
    const char *rest; /* internal path after the role id, starting with '/' ("/" if empty) */
    size_t rest_len;
};

/* The [auth] section of the gateway's configuration, shared with cmgctl's diagnostics.
 * Strings are heap copies (config_free with auth_settings_keys). */
struct auth_settings {
    char *trusted_certs; /* comma-separated PEM/DER files: roots and intermediates */
    char *crl_files;     /* comma-separated CRL files */
    bool verify_revocation;
    char *site_token_certs;     /* comma-separated token-signing certificates of the site */
    char *hierarchy_id;         /* site tokens' issuer: urn:sccm:oauth2:<hierarchy id> */
    char *bulk_token_blocklist; /* file of blocked bulk-token ids, one per line */
};

#endif
