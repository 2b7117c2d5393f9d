/* Types of the tls module that other modules may embed or pass around. */
#ifndef CMG_TLS_T_H
#define CMG_TLS_T_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* One session-ticket key: 16-byte name, 32-byte HMAC key, 32-byte AES-256 key. */
#define TLS_TICKET_NAME_LEN 16
#define TLS_TICKET_SECRET_LEN 32
#define TLS_TICKET_KEY_LEN (TLS_TICKET_NAME_LEN + 2 * TLS_TICKET_SECRET_LEN)
#define TLS_TICKET_KEYS_MAX 8

struct tls_ticket_key {
    unsigned char name[TLS_TICKET_NAME_LEN];
    unsigned char hmac_key[TLS_TICKET_SECRET_LEN];
    unsigned char aes_key[TLS_TICKET_SECRET_LEN];
};

/* An immutable set of ticket keys as read from the shared key file. keys[0] encrypts new
 * tickets; every key decrypts. */
struct tls_ticket_keys {
    unsigned count;
    struct tls_ticket_key keys[TLS_TICKET_KEYS_MAX];
};

/* What `cmgctl pki init` makes. Strings are borrowed from the caller for the call. */
struct tls_devpki_opts {
    const char *service_name; /* CN and DNS SAN of the gateway certificate */
    const char *pfx_password; /* password of every .pfx written */
    unsigned valid_days;      /* validity of the certificates that are meant to be valid */
};

/* What the gateway concluded about the client certificate of a connection. */
enum tls_client_verdict {
    TLS_CLIENT_NONE = 0,  /* no certificate offered */
    TLS_CLIENT_OK,        /* chains to a trusted root, clientAuth, valid, not revoked */
    TLS_CLIENT_UNTRUSTED, /* unknown root, or an intermediate that is not configured */
    TLS_CLIENT_EXPIRED,
    TLS_CLIENT_NOT_YET_VALID,
    TLS_CLIENT_REVOKED,
    TLS_CLIENT_WRONG_USAGE,        /* no clientAuth extended key usage */
    TLS_CLIENT_REVOCATION_UNKNOWN, /* no CRL for an issuer, or its CRL is out of date */
    TLS_CLIENT_INVALID,            /* bad signature or anything else */
    TLS_CLIENT_VERDICT_N
};

/* The trusted roots and intermediates for client certificates (the product's "Certificates"
 * list) and the CRLs, immutable once built. */
struct tls_client_trust;

#define TLS_URL_MAX 512     /* longest CRL URL taken from a certificate */
#define TLS_FAIL_OPEN_MAX 16 /* CAs the operator may exempt from revocation data */

/* How client certificates are judged (borrowed for the call). */
struct tls_client_trust_opts {
    const char *const *cert_files; /* roots and intermediates, PEM bundles or DER */
    size_t ncert;
    const char *const *crl_files;
    size_t ncrl;
    bool check_revocation;
    int64_t crl_grace;            /* seconds a CRL past its nextUpdate is still good */
    const char *const *fail_open; /* SHA-1 thumbprints (hex) of CAs for which missing or
                                     out-of-date revocation data is accepted */
    size_t nfail_open;
};

/* How fetched CRLs are kept fresh. */
struct tls_crl_policy {
    uint64_t refresh_max; /* seconds: longest time between two fetches of one CRL */
    uint64_t timeout_ms;  /* one fetch */
    size_t max_urls;      /* sources kept at most (0 = 256) */
};

enum tls_crl_result {
    TLS_CRL_NONE = 0,
    TLS_CRL_OK,
    TLS_CRL_NOT_MODIFIED,
    TLS_CRL_HTTP_ERROR,
    TLS_CRL_TRANSPORT_ERROR,
    TLS_CRL_INVALID, /* not a CRL, not from a configured CA, bad signature, older than held */
    TLS_CRL_RESULT_N
};

/* Settings of a client context (borrowed for the call). */
struct tls_client_opts {
    const char *pfx_file, *pfx_password; /* our certificate: PFX ... */
    const char *cert_file, *key_file;    /* ... or PEM (or none) */
    const char *ca_files;                /* comma-separated roots the peer must chain to;
                                            NULL = the system's */
    const char *alpn;                    /* the one protocol offered, or NULL */
};

/* Settings the server context is built from (borrowed for the call). */
struct tls_server_opts {
    const char *pfx_file;      /* PKCS#12 with key + chain, or NULL */
    const char *pfx_password;  /* may be NULL or "" */
    const char *cert_file;     /* PEM chain (leaf first), used when pfx_file is NULL */
    const char *key_file;      /* PEM private key */
    bool enforce_tls12;        /* TLS 1.2 floor (true) or TLS 1.0 allowed (false) */
    const char *tls12_ciphers; /* OpenSSL cipher list for TLS <= 1.2 */
    const char *tls13_ciphersuites;
    const char *groups; /* key-exchange groups, "X25519:P-256:P-384" */
    bool session_tickets;
    const struct tls_ticket_keys *ticket_keys;   /* copied; NULL = random per process */
    unsigned session_timeout;                    /* seconds a ticket stays valid */
    const struct tls_client_trust *client_trust; /* NULL: no client certificate is requested;
                                                    else requested (not required) and judged,
                                                    borrowed for the context's life */
    const char *alpn; /* the one ALPN protocol spoken, e.g. "http/1.1"; clients that offer ALPN
                         without it fail the handshake with no_application_protocol */
};

#endif
