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

/* How a client authenticated. */
enum auth_method {
    AUTH_METHOD_NONE = 0,
    AUTH_METHOD_CLIENT_CERT,
    AUTH_METHOD_ENTRA,
    AUTH_METHOD_SITE_TOKEN,
    AUTH_METHOD_BULK_TOKEN,
};

/* Headers of this family are the gateway's alone: stripped from client requests. */
#define AUTH_IDENTITY_PREFIX "X-CMG-"

/* Who the client is, as the gateway tells the connection point. Empty strings are omitted. */
struct auth_identity {
    enum auth_method method;
    char thumbprint[41];    /* SHA-1 of the client certificate, upper-case hex */
    char subject[256];      /* certificate subject, RFC 2253 */
    char issuer[256];       /* certificate issuer, RFC 2253 */
    char token_subject[64]; /* Entra oid, or the site token's UniqueId */
    char token_type[40];    /* site token Type ("Device" ...) */
    char device_id[64];     /* Entra deviceid claim, or a site device token's UniqueId */
    char tenant[40];
    char app_id[40]; /* Entra appid/azp */
};

/* The [auth] section of the gateway's configuration, shared with cmgctl's diagnostics.
 * Strings are heap copies (config_free with auth_settings_keys). */
struct auth_settings {
    char *trusted_certs; /* comma-separated PEM/DER files: roots and intermediates */
    char *crl_files;     /* comma-separated CRL files */
    bool verify_revocation;
    char *site_token_certs;      /* comma-separated token-signing certificates of the site */
    char *hierarchy_id;          /* site tokens' issuer: urn:sccm:oauth2:<hierarchy id> */
    char *bulk_token_blocklist;  /* file of blocked bulk-token ids, one per line */
    bool crl_fetch;              /* fetch CRLs from the distribution points in certificates */
    uint64_t crl_refresh_max;    /* ms: longest time between two fetches of one CRL */
    uint64_t crl_grace;          /* ms a CRL past its nextUpdate still counts */
    char *crl_fail_open;         /* SHA-1 thumbprints of CAs whose missing CRL means accept */
    char *cache_dir;             /* fetched CRLs and Entra keys */
    uint64_t fetch_timeout;      /* ms, one outbound fetch */
    uint64_t auth_wait;          /* ms a request may wait for a fetch it caused */
    char *entra_tenants;         /* "<tenant id>[:<client app id>]" list */
    char *entra_app_id_uri;      /* accepted audience; AADAuthInfo's resource URI */
    char *entra_server_app_id;   /* accepted audience (client id of the server app) */
    unsigned entra_cloud;        /* enum auth_entra_cloud */
    char *entra_authority;       /* login host override, e.g. for a private test authority */
    uint64_t entra_keys_refresh; /* ms between two routine key fetches */
    uint64_t entra_unknown_kid_interval; /* ms between two fetches forced by unknown kids */
};

/* A content access token's parameters (ctoken.c). */
#define AUTH_CONTENT_ID_MAX 64
struct auth_content_token {
    char package[AUTH_CONTENT_ID_MAX + 1];    /* pid */
    char content_id[AUTH_CONTENT_ID_MAX + 1]; /* cid */
    char client[80];                          /* tid: "GUID:<client id>" */
    char issuer[256];                         /* iss: the management point's FQDN */
    int64_t start, end;                       /* st, et: Unix seconds */
};

struct auth_content_policy {
    int64_t max_lifetime; /* s: longest st..et */
    int64_t skew;         /* s */
};

#endif
