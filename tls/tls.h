/* tls: server SSL_CTX building (PFX or PEM, TLS 1.2 floor, ciphers, ALPN, shared ticket keys),
 * the session-ticket key file, and the development PKI. */
#ifndef CMG_TLS_H
#define CMG_TLS_H

#include <openssl/ssl.h>
#include "tls-t.h"

/* ---- ticket key file (tickets.c) ----
 * File format: text, one key per line as 160 hex digits (name | hmac | aes), '#' comments and
 * blank lines ignored, first key encrypts, at most TLS_TICKET_KEYS_MAX keys. */

/* Parses the key file text. Returns 0, or -1 with a message in err naming the line. */
int tls_ticket_keys_parse(const char *text, size_t len, struct tls_ticket_keys *out, char *err,
                          size_t errlen);
/* Reads and parses a key file. Returns 0 or -1 with a message in err naming the file. */
int tls_ticket_keys_load(const char *path, struct tls_ticket_keys *out, char *err, size_t errlen);
/* Puts a fresh random key at the head of the file (creating it, mode 0600), keeping at most
 * `keep` keys in all (older ones drop off), written atomically (temporary file + rename).
 * Returns 0 or -1 with a message. */
int tls_ticket_keys_rotate_file(const char *path, unsigned keep, char *err, size_t errlen);

/* ---- server context (ctx.c) ---- */

/* Builds a server SSL_CTX. Returns it (caller frees with SSL_CTX_free) or NULL with a message
 * a person can act on in err (e.g. a wrong PFX password says so). */
SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *opts, char *err, size_t errlen);
/* Builds a client SSL_CTX: TLS 1.2 or newer, the peer's certificate verified against ca_files
 * (or the system's store), our certificate from a PFX or PEM when given, ALPN when given. The
 * caller sets the host name to check on each SSL (SSL_set1_host) and SNI. */
SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err, size_t errlen);
/* Name of the protocol version of an established connection: "TLSv1.3" ... */
const char *tls_version_name(const SSL *ssl);
/* Subject CN of the context's certificate into buf (empty if none). */
void tls_ctx_subject_cn(SSL_CTX *ctx, char *buf, size_t len);

/* ---- client certificates (client.c) ---- */

/* Appends every certificate of a PEM file, or the one of a DER file, to out. Returns the
 * number read (> 0), or -1 with a message naming the file. */
int tls_read_certs(const char *path, STACK_OF(X509) * out, char *err, size_t errlen);

/* Loads trusted certificates (PEM bundles or DER files: self-signed ones become roots, the
 * others intermediates) and CRL files (PEM or DER). With check_revocation every certificate
 * of a chain needs a current CRL from its issuer (from the files, or the CRL stack given to a
 * check), except under the grace or for a fail-open CA. Returns a new trust
 * (tls_client_trust_free) or NULL with a message naming the file or value. */
struct tls_client_trust *tls_client_trust_new(const struct tls_client_trust_opts *o, char *err,
                                              size_t errlen);
void tls_client_trust_free(struct tls_client_trust *t);
unsigned tls_client_trust_roots(const struct tls_client_trust *t);
bool tls_client_trust_checks_revocation(const struct tls_client_trust *t);
/* Every configured root and intermediate (the issuers whose CRLs are accepted). */
const STACK_OF(X509) * tls_client_trust_cas(const struct tls_client_trust *t);
/* Judges a certificate and its chain as sent by a client, with CRLs from the files plus
 * `crls` (fetched ones, may be NULL); `detail` gets the precise cause ("certificate revoked",
 * "issuer not found: CN=...") for logs. */
enum tls_client_verdict tls_client_trust_check(const struct tls_client_trust *t,
                                               STACK_OF(X509_CRL) * crls, X509 *cert,
                                               STACK_OF(X509) * sent_chain, char *detail,
                                               size_t len);
/* The same, also handing back the chain it built (as far as it got; caller frees with
 * sk_X509_pop_free(chain, X509_free)), for operators' diagnostics. */
enum tls_client_verdict tls_client_trust_explain(const struct tls_client_trust *t,
                                                 STACK_OF(X509_CRL) * crls, X509 *cert,
                                                 STACK_OF(X509) * sent_chain, char *detail,
                                                 size_t len, STACK_OF(X509) * *chain);
/* The verdict for a finished handshake (TLS_CLIENT_NONE when no certificate came), with its
 * detail (may be NULL). Judged once and remembered on the SSL; `again` judges anew (new CRLs).
 * A resumed session brings no certificate exchange: its certificate (kept in the ticket) is
 * judged here like any other, so revocation applies to it too. */
enum tls_client_verdict tls_client_verdict_of(SSL *ssl, const struct tls_client_trust *t,
                                              STACK_OF(X509_CRL) * crls, bool again,
                                              const char **detail);
const char *tls_client_verdict_name(enum tls_client_verdict v);
/* CRL and delta-CRL URLs (http, https) the chain of `cert` points at, only when that chain
 * verifies (signatures, trust, usage) with revocation left aside. Returns how many. */
size_t tls_client_trust_crl_urls(const struct tls_client_trust *t, X509 *cert,
                                 STACK_OF(X509) * sent_chain, char (*urls)[TLS_URL_MAX],
                                 size_t max);
/* CRL URLs named by the configured CAs themselves (CRLs about intermediates). */
size_t tls_client_trust_ca_crl_urls(const struct tls_client_trust *t, char (*urls)[TLS_URL_MAX],
                                    size_t max);
/* Appends the CRL and delta-CRL URLs in x (or the delta-CRL URLs a base CRL names) to urls[n..],
 * without duplicates; returns the new count. */
size_t tls_cert_crl_urls(X509 *x, char (*urls)[TLS_URL_MAX], size_t n, size_t max);
size_t tls_crl_delta_urls(X509_CRL *crl, char (*urls)[TLS_URL_MAX], size_t n, size_t max);
/* True when crl (by cert's issuer) lists cert as revoked. */
bool tls_crl_revokes(X509_CRL *crl, X509 *cert);

/* ---- fetched CRLs (crl.c) ----
 * One cache per process, driven by a background thread; figures may be read from any thread. */
struct tls_crl_cache;
const char *tls_crl_result_name(enum tls_crl_result r);
/* Opens the cache: `dir` (created if missing; NULL for none) holds CRLs fetched before, which
 * come back if they still verify against `cas` (the CRL issuers accepted). */
struct tls_crl_cache *tls_crl_cache_new(const char *dir, const STACK_OF(X509) * cas,
                                        const struct tls_crl_policy *policy, char *err,
                                        size_t errlen);
void tls_crl_cache_free(struct tls_crl_cache *c);
/* New CAs or policy (after a reload): CRLs no longer issued by a configured CA are dropped and
 * every source is due again. */
void tls_crl_cache_set_trust(struct tls_crl_cache *c, const STACK_OF(X509) * cas,
                             const struct tls_crl_policy *policy);
/* Adds a source URL; true if it was new (it is then due at once). */
bool tls_crl_cache_want(struct tls_crl_cache *c, const char *url);
/* Earliest time (Unix s) a source is due; INT64_MAX when there is none. */
int64_t tls_crl_cache_next_due(struct tls_crl_cache *c);
/* Fetches every source due at `now` (blocking), stopping early once *stop (may be NULL) is
 * set. True when the CRLs held, or the set of sources tried, changed. */
bool tls_crl_cache_refresh(struct tls_crl_cache *c, int64_t now, const volatile bool *stop);
/* The CRLs held (a new stack of up-referenced CRLs; sk_X509_CRL_pop_free it). */
STACK_OF(X509_CRL) * tls_crl_cache_crls(struct tls_crl_cache *c);
/* The CRLs that are new or replaced since the last call (caller owns the stack). */
STACK_OF(X509_CRL) * tls_crl_cache_take_changed(struct tls_crl_cache *c);
/* URLs fetched or tried by this process; returns how many were written. */
size_t tls_crl_cache_attempted(struct tls_crl_cache *c, char (*urls)[TLS_URL_MAX], size_t max);
/* Prometheus text of every source's figures (malloc'd). */
char *tls_crl_cache_metrics(struct tls_crl_cache *c, int64_t now);
/* One line about source i into buf; returns the number of sources. */
size_t tls_crl_cache_describe(struct tls_crl_cache *c, size_t i, char *buf, size_t len);

/* ---- development PKI (devpki.c) ---- */

/* Creates DIR (if missing) and writes a complete development PKI into it, using OpenSSL's API:
 *   root-ca.crt/.key, intermediate-ca.crt/.key, ca-chain.pem (intermediate + root),
 *   server.crt/.key (ECDSA P-256; CN = service name, SAN DNS:service name, DNS:localhost,
 *     IP:127.0.0.1, IP:::1; serverAuth), server-chain.pem (server + intermediate),
 *   server.pfx (key + server + intermediate, password opts->pfx_password),
 *   server-rsa.crt/.key/.pfx (same, RSA-2048),
 *   client-valid.crt/.key/.pfx, client-revoked.crt/.key, client-expired.crt/.key
 *     (clientAuth; CN client-valid / client-revoked / client-expired),
 *   intermediate.crl (PEM CRL by the intermediate, lists client-revoked and connector-revoked), root.crl,
 *   connector.crt/.key/.pfx (CN cmg-connector, clientAuth + serverAuth),
 *   connector-revoked.crt/.key (CN cmg-connector-revoked, listed in intermediate.crl),
 *   token-signing.crt/.key (RSA-2048, digitalSignature, CN "SMS Token Signing"),
 *   pfx-password.txt (the password, mode 0600).
 * Private keys are written with mode 0600. Returns 0 or -1 with a message in err. */
int tls_devpki_init(const char *dir, const struct tls_devpki_opts *opts, char *err, size_t errlen);

#endif
