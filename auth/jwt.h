/* JSON Web Tokens: decoding, RS256 verification, JWKS key sets, Entra ID access-token rules.
 * Sans-I/O: keys arrive as JWKS text fetched elsewhere, time arrives as an argument. The
 * algorithm is pinned to RS256 by the verifier, never taken from the token. */
#ifndef CMG_AUTH_JWT_H
#define CMG_AUTH_JWT_H

#include <stdbool.h>
#include <sys/types.h>

#include "jwt-t.h"

const char *auth_token_error_name(enum auth_token_error e);

/* Decodes base64url without padding (RFC 7515 2). Returns the length written to out (which
 * must hold len * 3 / 4 + 3 bytes), or -1 on any character outside the alphabet, on padding,
 * or on a length no encoder produces. */
ssize_t auth_b64url_decode(const char *in, size_t len, unsigned char *out);
/* Encodes base64url without padding into out (NUL-terminated; truncated to fit cap). */
void auth_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap);

/* Splits and decodes a compact JWS. On success fills jwt (free with auth_jwt_clear) and
 * returns AUTH_TOKEN_OK; `token` must outlive jwt. Duplicate JSON keys are refused. */
enum auth_token_error auth_jwt_decode(const char *token, size_t len, struct auth_jwt *jwt);
void auth_jwt_clear(struct auth_jwt *jwt);
/* Finds the verification key for a decoded token (by kid, x5t ...); may set *found to the
 * caller's own record of the key. NULL when there is none. */
typedef EVP_PKEY *(*auth_jwt_key_cb)(const void *ctx, const struct auth_jwt *jwt,
                                     const void **found);
/* Decodes, pins RS256, looks the key up with find and verifies the signature. On
 * AUTH_TOKEN_OK jwt holds the token (auth_jwt_clear it); otherwise it is already cleared. */
enum auth_token_error auth_jwt_check(const char *token, size_t len, auth_jwt_key_cb find,
                                     const void *ctx, struct auth_jwt *jwt, const void **found);
/* A numeric date claim (exp, nbf, iat) in Unix seconds; false if absent or not a number. */
bool auth_jwt_claim_time(const struct auth_jwt *jwt, const char *name, int64_t *out);
/* Verifies an RS256 signature with `key` (must be an RSA key). */
enum auth_token_error auth_jwt_verify_rs256(const struct auth_jwt *jwt, EVP_PKEY *key);

/* Parses a JWKS document ({"keys":[{"kty":"RSA","kid":...,"n":...,"e":...}]}). Returns a new
 * set (free with auth_jwks_free) or NULL with a reason in err. Non-RSA or non-signing keys are
 * skipped and counted. */
struct auth_jwks *auth_jwks_parse(const char *json, size_t len, char *err, size_t errlen);
void auth_jwks_free(struct auth_jwks *set);
const struct auth_jwk *auth_jwks_find(const struct auth_jwks *set, const char *kid);

/* Validates an Entra ID access token against the policy and the tenant's keys, in the order of
 * the identity platform's rules: alg, key, signature, tenant, issuer (v1 or v2 by `ver`),
 * audience, lifetime with skew. Fills id on success. */
enum auth_token_error auth_entra_verify(const char *token, size_t len,
                                        const struct auth_entra_policy *policy,
                                        const struct auth_jwks *keys,
                                        struct auth_entra_identity *id);

/* ---- Entra ID keys (keys.c) ---- */

/* The login host of a cloud, or the override when one is set. */
const char *auth_entra_authority(unsigned cloud, const char *override);
/* True if s[0..len) is a GUID (8-4-4-4-12 hex digits). */
bool auth_is_guid(const char *s, size_t len);
/* Parses "<tenant id>[:<client app id>], ..." into out (lower case). Returns 0, or -1 with err. */
int auth_entra_tenants_parse(const char *list, struct auth_entra_tenant *out, size_t max,
                             size_t *n, char *err, size_t errlen);
const char *auth_fetch_result_name(enum auth_fetch_result r);

/* A source of Entra keys: per tenant, {authority}/{tid}/v2.0/.well-known/openid-configuration
 * gives jwks_uri (and the v2 issuer), the JWKS gives the keys, and the v1 metadata the v1
 * issuer. Last good keys are kept in memory and in `dir` (may be NULL). Driven by one
 * background thread; figures and snapshots may be taken from any thread. */
struct auth_entra_source;
struct auth_entra_source *auth_entra_source_new(const char *dir, char *err, size_t errlen);
void auth_entra_source_free(struct auth_entra_source *s);
/* Sets (or, after a reload, replaces) the authority, tenants and schedule. Tenants kept keep
 * their keys; new ones start from the disk cache and are due at once. */
void auth_entra_source_configure(struct auth_entra_source *s, const char *authority,
                                 const struct auth_entra_tenant *tenants, size_t ntenants,
                                 const struct auth_entra_source_policy *policy);
/* Makes every tenant due now because a token named an unknown kid, unless the last such
 * refresh is more recent than unknown_kid_interval. Returns whether it did. */
bool auth_entra_source_force(struct auth_entra_source *s, int64_t now);
int64_t auth_entra_source_forced_at(struct auth_entra_source *s);
int64_t auth_entra_source_next_due(struct auth_entra_source *s);
/* Fetches every tenant due at `now` (blocking), stopping early once *stop (may be NULL) is
 * set. True when keys or issuers changed. */
bool auth_entra_source_refresh(struct auth_entra_source *s, int64_t now,
                               const volatile bool *stop);
/* An immutable copy of what is held (free with auth_entra_keys_free). */
struct auth_entra_keys *auth_entra_source_keys(struct auth_entra_source *s);
void auth_entra_keys_free(struct auth_entra_keys *k);
/* Prometheus text of the source's figures (malloc'd). */
char *auth_entra_source_metrics(struct auth_entra_source *s, int64_t now);

/* ---- site-issued and bulk-registration tokens (site.c) ---- */

/* Adds a token-signing certificate (PEM or DER file) to keys. Returns 0 or -1 with err. */
int auth_site_keys_add_file(struct auth_site_keys *keys, const char *path, char *err,
                            size_t errlen);
void auth_site_keys_clear(struct auth_site_keys *keys);
/* Validates a site-issued or bulk-registration token: RS256 by a configured signer chosen by
 * x5t, aud urn:sccm:service, iss urn:sccm:oauth2:<hierarchy id>, Type and UniqueId present,
 * nbf/exp with skew; bulk tokens only where bulk_allowed, at most 7 days, not blocked. */
enum auth_token_error auth_site_verify(const char *token, size_t len,
                                       const struct auth_site_policy *policy,
                                       const struct auth_site_keys *keys,
                                       struct auth_site_identity *id);
/* True when a bulk-registration token may be used on this internal path (after the role id):
 * the token service and registration requests, the doors a new client needs. */
bool auth_bulk_token_allowed(const char *path, size_t len);

#endif
