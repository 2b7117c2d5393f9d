/* Tokens the site issues: device tokens after internal registration, and bulk-registration
 * tokens for first contact. Both are RS256 JWTs signed by the site's token-signing
 * certificate, named in the header by its SHA-1 thumbprint (x5t). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jwt.h"
#include "tls.h"

#define AUTH_SITE_AUDIENCE "urn:sccm:service"
#define AUTH_SITE_ISSUER_PREFIX "urn:sccm:oauth2:"

void auth_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = al[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = al[v & 63];
    }
    out[o] = '\0';
}

int auth_site_keys_add_file(struct auth_site_keys *keys, const char *path, char *err, size_t errlen)
{
    if (keys->n == AUTH_SITE_SIGNERS_MAX) {
        snprintf(err, errlen, "more than %d token-signing certificates", AUTH_SITE_SIGNERS_MAX);
        return -1;
    }
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (!certs || tls_read_certs(path, certs, err, errlen) < 0) {
        sk_X509_free(certs);
        return -1;
    }
    X509 *x = sk_X509_shift(certs); /* the signer is the first certificate of the file */
    sk_X509_pop_free(certs, X509_free);
    EVP_PKEY *pk = X509_get_pubkey(x);
    if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
        snprintf(err, errlen, "%s: the token-signing certificate must hold an RSA key", path);
        EVP_PKEY_free(pk);
        X509_free(x);
        return -1;
    }
    unsigned char sha1[20];
    unsigned int n = sizeof(sha1);
    X509_digest(x, EVP_sha1(), sha1, &n);
    X509_free(x);
    struct auth_site_signer *s = &keys->signers[keys->n++];
    auth_b64url_encode(sha1, n, s->x5t, sizeof(s->x5t));
    s->key = pk;
    return 0;
}

void auth_site_keys_clear(struct auth_site_keys *keys)
{
    for (unsigned i = 0; i < keys->n; i++)
        EVP_PKEY_free(keys->signers[i].key);
    memset(keys, 0, sizeof(*keys));
}

static const struct auth_site_signer *auth_site_find(const struct auth_site_keys *keys,
                                                     const char *x5t)
{
    for (unsigned i = 0; x5t && i < keys->n; i++)
        if (strcmp(keys->signers[i].x5t, x5t) == 0)
            return &keys->signers[i];
    return NULL;
}

bool auth_bulk_token_allowed(const char *path, size_t len)
{
    static const char *doors[] = {"/CCM_STS", "/ccm_system/request", "/ccm_system_tokenauth/",
                                  "/ccm_system_altauth/"};
    for (size_t i = 0; i < sizeof(doors) / sizeof(doors[0]); i++) {
        size_t n = strlen(doors[i]);
        if (len >= n && strncasecmp(path, doors[i], n) == 0)
            return true;
    }
    return false;
}

static enum auth_token_error auth_site_claims(const struct auth_jwt *jwt,
                                              const struct auth_site_policy *p,
                                              struct auth_site_identity *id)
{
    json_t *pl = jwt->payload;
    const char *aud = json_string_value(json_object_get(pl, "aud"));
    const char *iss = json_string_value(json_object_get(pl, "iss"));
    const char *type = json_string_value(json_object_get(pl, "Type"));
    const char *uid = json_string_value(json_object_get(pl, "UniqueId"));
    int64_t nbf, exp;
    if (!aud || !iss || !type || !uid || !*uid || !auth_jwt_claim_time(jwt, "nbf", &nbf) ||
        !auth_jwt_claim_time(jwt, "exp", &exp))
        return AUTH_TOKEN_MISSING_CLAIM;
    if (strcmp(aud, AUTH_SITE_AUDIENCE) != 0)
        return AUTH_TOKEN_BAD_AUDIENCE;
    size_t pl_len = strlen(AUTH_SITE_ISSUER_PREFIX);
    if (strncmp(iss, AUTH_SITE_ISSUER_PREFIX, pl_len) != 0 || !p->hierarchy_id ||
        strcasecmp(iss + pl_len, p->hierarchy_id) != 0)
        return AUTH_TOKEN_BAD_ISSUER;
    if (p->now > exp + p->skew)
        return AUTH_TOKEN_EXPIRED;
    if (p->now < nbf - p->skew)
        return AUTH_TOKEN_NOT_YET_VALID;
    id->kind = strcmp(type, "BulkRegistration") == 0 ? AUTH_SITE_BULK : AUTH_SITE_DEVICE;
    if (id->kind == AUTH_SITE_BULK) {
        if (!p->bulk_allowed)
            return AUTH_TOKEN_WRONG_ENDPOINT;
        if (exp - nbf > AUTH_BULK_MAX_LIFETIME)
            return AUTH_TOKEN_LIFETIME_TOO_LONG;
        for (size_t i = 0; i < p->nblocked; i++)
            if (strcasecmp(p->blocked[i], uid) == 0)
                return AUTH_TOKEN_BLOCKED;
    }
    snprintf(id->unique_id, sizeof(id->unique_id), "%s", uid);
    snprintf(id->type, sizeof(id->type), "%s", type);
    id->expires = exp;
    return AUTH_TOKEN_OK;
}

static EVP_PKEY *auth_site_key(const void *ctx, const struct auth_jwt *jwt, const void **found)
{
    const struct auth_site_signer *sg =
        auth_site_find(ctx, json_string_value(json_object_get(jwt->header, "x5t")));
    *found = sg;
    return sg ? sg->key : NULL;
}

enum auth_token_error auth_site_verify(const char *token, size_t len,
                                       const struct auth_site_policy *policy,
                                       const struct auth_site_keys *keys,
                                       struct auth_site_identity *id)
{
    struct auth_jwt jwt;
    const void *signer;
    memset(id, 0, sizeof(*id));
    enum auth_token_error rc = auth_jwt_check(token, len, auth_site_key, keys, &jwt, &signer);
    if (rc != AUTH_TOKEN_OK)
        return rc;
    rc = auth_site_claims(&jwt, policy, id);
    auth_jwt_clear(&jwt);
    return rc;
}
