/* auth: client identity and per-route policy. */
#ifndef CMG_AUTH_H
#define CMG_AUTH_H

#include "auth-t.h"
#include "core-t.h"

/* Classifies a request path (no query string; the caller splits it off). Prefixes are matched
 * without regard to case, as clients send both CCM_Proxy_ServerAuth and CCM_PROXY_SERVERAUTH.
 * Always fills *out; returns out->kind. */
enum auth_route_kind auth_route_classify(const char *path, size_t len, struct auth_route *out);

/* Name of a scheme for logs: "none", "client-certificate", "bearer-token". */
const char *auth_scheme_name(enum auth_scheme scheme);

/* ---- identity headers (identity.c) ---- */
const char *auth_method_name(enum auth_method m);
/* True for a header name the gateway owns (X-CMG-...), which a client may not send on. */
bool auth_is_identity_header(const char *name, size_t len);
/* Fills id from a client certificate (thumbprint, subject, issuer). */
struct x509_st;
void auth_identity_from_cert(struct auth_identity *id, struct x509_st *cert);
/* Writes the identity as "X-CMG-Name: value\r\n" lines (values made safe for a header line).
 * Returns the bytes written; stops before a line that would not fit. */
size_t auth_identity_headers(const struct auth_identity *id, char *buf, size_t len);

/* ---- settings (settings.c) ---- */
extern const struct config_key auth_settings_keys[]; /* section "auth", offsets in settings */
extern const size_t auth_settings_nkeys;
/* Reads only the [auth] section of a gateway configuration file (other sections are left to
 * their owners), with defaults; relative paths become relative to the file's folder. Returns 0,
 * or -1 with every error in report (initialised here; caller deinits). Free with
 * auth_settings_free either way. */
int auth_settings_load(const char *path, struct auth_settings *out, struct config_report *report);
/* Relative paths of s made relative to dir (used by whoever loaded the section). */
void auth_settings_resolve(struct auth_settings *s, const char *dir);
void auth_settings_free(struct auth_settings *s);

/* ---- content access tokens (ctoken.c) ---- */

struct auth_site_keys;
struct evp_pkey_st;

/* True for a package or content id: 1..AUTH_CONTENT_ID_MAX of [A-Za-z0-9._-]. */
bool auth_content_id_valid(const char *s);
/* Checks the content access token that is the query string (without '?') of a
 * content-location or content request: the parameters, the alg OID, the signature by one of
 * keys (management point signing certificates), then the st..et window with the policy's
 * skew and longest lifetime. Fills out on AUTH_TOKEN_OK (and partly otherwise, for logs). */
enum auth_token_error auth_content_token_verify(const char *query, size_t len,
                                                const struct auth_content_policy *policy,
                                                const struct auth_site_keys *keys, int64_t now,
                                                struct auth_content_token *out);
/* Writes a signed token for t (what a management point hands out) into out: for cmgctl and
 * tests. Returns 0, or -1 when it does not fit or the key is not RSA. */
int auth_content_token_issue(struct evp_pkey_st *key, const struct auth_content_token *t, char *out,
                             size_t cap);

#endif
