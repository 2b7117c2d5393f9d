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
 * of a chain needs a current CRL from its issuer. Returns a new trust (tls_client_trust_free)
 * or NULL with a message naming the file. */
struct tls_client_trust *tls_client_trust_load(const char *const *cert_files, size_t ncert,
                                               const char *const *crl_files, size_t ncrl,
                                               bool check_revocation, char *err, size_t errlen);
void tls_client_trust_free(struct tls_client_trust *t);
unsigned tls_client_trust_roots(const struct tls_client_trust *t);
/* Judges a certificate and its chain as sent by a client; `detail` gets the precise cause
 * ("certificate revoked", "issuer not found: CN=...") for logs. */
enum tls_client_verdict tls_client_trust_check(const struct tls_client_trust *t, X509 *cert,
                                               STACK_OF(X509) * sent_chain, char *detail,
                                               size_t len);
/* The same, also handing back the chain it built (as far as it got; caller frees with
 * sk_X509_pop_free(chain, X509_free)), for operators' diagnostics. */
enum tls_client_verdict tls_client_trust_explain(const struct tls_client_trust *t, X509 *cert,
                                                 STACK_OF(X509) * sent_chain, char *detail,
                                                 size_t len, STACK_OF(X509) * *chain);
/* The verdict for a finished handshake (TLS_CLIENT_NONE when no certificate came), with its
 * detail (may be NULL). A resumed session brings no certificate exchange: its certificate
 * (kept in the ticket) is judged again here against `t`, so revocation applies to it too. */
enum tls_client_verdict tls_client_verdict_of(SSL *ssl, const struct tls_client_trust *t,
                                              const char **detail);
const char *tls_client_verdict_name(enum tls_client_verdict v);

/* ---- development PKI (devpki.c) ---- */

/* Creates DIR (if missing) and writes a complete development PKI into it, using OpenSSL's API:
 *   root-ca.crt/.key, intermediate-ca.crt/.key, ca-chain.pem (intermediate + root),
 *   server.crt/.key (ECDSA P-256; CN = service name, SAN DNS:service name, DNS:localhost,
 *     IP:127.0.0.1, IP:::1; serverAuth), server-chain.pem (server + intermediate),
 *   server.pfx (key + server + intermediate, password opts->pfx_password),
 *   server-rsa.crt/.key/.pfx (same, RSA-2048),
 *   client-valid.crt/.key/.pfx, client-revoked.crt/.key, client-expired.crt/.key
 *     (clientAuth; CN client-valid / client-revoked / client-expired),
 *   intermediate.crl (PEM CRL by the intermediate, lists client-revoked), root.crl,
 *   connector.crt/.key/.pfx (CN cmg-connector, clientAuth + serverAuth),
 *   token-signing.crt/.key (RSA-2048, digitalSignature, CN "SMS Token Signing"),
 *   pfx-password.txt (the password, mode 0600).
 * Private keys are written with mode 0600. Returns 0 or -1 with a message in err. */
int tls_devpki_init(const char *dir, const struct tls_devpki_opts *opts, char *err, size_t errlen);

#endif
