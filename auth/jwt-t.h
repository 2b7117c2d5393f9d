/* Types of JSON Web Token handling (auth/jwt.c, auth/jwks.c, auth/entra.c). */
#ifndef CMG_AUTH_JWT_T_H
#define CMG_AUTH_JWT_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#define AUTH_JWT_MAX_LEN 16384 /* a token longer than this is refused unread */
#define AUTH_JWKS_MAX_KEYS 64
#define AUTH_CLOCK_SKEW 300 /* seconds, as Microsoft.IdentityModel allows */

/* Why a token was refused; names (auth_token_error_name) label logs and metrics. */
enum auth_token_error {
    AUTH_TOKEN_OK = 0,
    AUTH_TOKEN_MALFORMED, /* not three base64url parts of JSON objects */
    AUTH_TOKEN_TOO_LARGE,
    AUTH_TOKEN_UNSUPPORTED_ALG, /* anything but RS256, including none and HS* */
    AUTH_TOKEN_UNKNOWN_KID,     /* no key with that id */
    AUTH_TOKEN_KEY_MISMATCH,    /* the key found is not an RSA signing key */
    AUTH_TOKEN_BAD_SIGNATURE,
    AUTH_TOKEN_EXPIRED,
    AUTH_TOKEN_NOT_YET_VALID,
    AUTH_TOKEN_ISSUED_IN_FUTURE,
    AUTH_TOKEN_MISSING_CLAIM,
    AUTH_TOKEN_BAD_AUDIENCE,
    AUTH_TOKEN_BAD_ISSUER,
    AUTH_TOKEN_TENANT_NOT_ALLOWED,
    AUTH_TOKEN_BLOCKED,           /* a bulk token the operator blocked */
    AUTH_TOKEN_LIFETIME_TOO_LONG, /* a bulk token valid for more than 7 days */
    AUTH_TOKEN_WRONG_ENDPOINT,    /* a bulk token outside registration and CCM_STS */
    AUTH_TOKEN_MISSING,           /* no Authorization: Bearer header */
    AUTH_TOKEN_ERROR_N
};

/* A decoded (not yet trusted) token. Owns its JSON and signature. */
struct auth_jwt {
    json_t *header;     /* owned */
    json_t *payload;    /* owned */
    unsigned char *sig; /* owned */
    size_t sig_len;
    const char *signing_input; /* borrowed from the token text given to auth_jwt_decode */
    size_t signing_input_len;
    const char *alg; /* borrowed from header */
    const char *kid; /* borrowed from header; kid, else x5t; NULL if neither */
};

/* One verification key from a JWKS document. */
struct auth_jwk {
    char kid[128];
    char issuer[256]; /* "" when the JWK names none; may hold "{tenantid}" */
    EVP_PKEY *key;    /* owned; RSA public key */
};

/* A parsed JWKS: immutable once built, shared by reference between workers. */
struct auth_jwks {
    unsigned nkeys;
    unsigned skipped; /* keys that were not RSA signing keys */
    struct auth_jwk keys[AUTH_JWKS_MAX_KEYS];
};

enum auth_entra_cloud { AUTH_ENTRA_PUBLIC = 0, AUTH_ENTRA_USGOV = 1 };

#define AUTH_ENTRA_TENANTS_MAX 32
#define AUTH_ISSUER_MAX 200

/* An onboarded tenant, as configured. */
struct auth_entra_tenant {
    char tenant[40];        /* lower case GUID */
    char client_app_id[40]; /* "" when none (AADAuthInfo then refuses the tenant) */
};

/* A tenant's issuers as its OpenID metadata states them ("" = the documented one). */
struct auth_entra_issuer {
    char tenant[40];
    char v1[AUTH_ISSUER_MAX];
    char v2[AUTH_ISSUER_MAX];
};

/* Keys of every onboarded tenant, merged by kid, with the issuers: immutable once built. */
struct auth_entra_keys {
    struct auth_jwks *jwks; /* owned */
    unsigned nissuers;
    struct auth_entra_issuer issuers[AUTH_ENTRA_TENANTS_MAX];
    int64_t forced_at; /* last refresh an unknown kid caused (Unix s), 0 = none */
};

struct auth_entra_source_policy {
    uint64_t refresh;              /* seconds between routine fetches */
    uint64_t unknown_kid_interval; /* seconds between forced fetches */
    uint64_t timeout_ms;
};

enum auth_fetch_result {
    AUTH_FETCH_NONE = 0,
    AUTH_FETCH_OK,
    AUTH_FETCH_HTTP_ERROR,
    AUTH_FETCH_TRANSPORT_ERROR,
    AUTH_FETCH_INVALID,
    AUTH_FETCH_RESULT_N
};

/* What an Entra ID access token must satisfy. Strings are borrowed for the call. */
struct auth_entra_policy {
    enum auth_entra_cloud cloud;
    const char *const *tenants; /* allowed tenant GUIDs (lower case) */
    size_t ntenants;
    const char *const *audiences; /* App ID URI and/or client id */
    size_t naudiences;
    int64_t skew; /* seconds, 300 by default */
    int64_t now;  /* Unix seconds */
    const struct auth_entra_issuer *issuers; /* from metadata, by tenant; may be NULL */
    size_t nissuers;
};

/* Who the token says the caller is (copied out of the token). */
struct auth_entra_identity {
    char tenant[40];
    char object_id[40];
    char app_id[40];
    char device_id[64];
    char version[8];
    int64_t expires;
};

/* Site-issued and bulk-registration tokens. */
#define AUTH_SITE_SIGNERS_MAX 8
#define AUTH_BULK_MAX_LIFETIME (7 * 24 * 3600)

/* The site's token-signing certificates, selected by the token's x5t. */
struct auth_site_signer {
    char x5t[32];  /* base64url SHA-1 thumbprint of the certificate */
    EVP_PKEY *key; /* owned */
};

struct auth_site_keys {
    unsigned n;
    struct auth_site_signer signers[AUTH_SITE_SIGNERS_MAX];
};

struct auth_site_policy {
    const char *hierarchy_id;   /* iss must be urn:sccm:oauth2:<hierarchy id> */
    const char *const *blocked; /* blocked bulk-token UniqueIds (lower case) */
    size_t nblocked;
    bool bulk_allowed; /* the route is a registration or token endpoint */
    int64_t skew;
    int64_t now;
};

enum auth_site_kind { AUTH_SITE_DEVICE = 0, AUTH_SITE_BULK = 1 };

struct auth_site_identity {
    enum auth_site_kind kind;
    char unique_id[64];
    char type[40];
    int64_t expires;
};

#endif
