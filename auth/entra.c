/* Microsoft Entra ID access tokens, as the identity platform documents their validation. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jwt.h"

/* Issuer = prefix + tenant id + suffix, per token version and cloud. The US Government v1
 * issuer is the documented authority host; the identity platform advises reading it from the
 * tenant's v1 OpenID configuration, which the key fetcher will compare against. */
static const struct {
    const char *v1_prefix, *v1_suffix, *v2_prefix, *v2_suffix;
} auth_entra_issuers[] = {
    [AUTH_ENTRA_PUBLIC] = {"https://sts.windows.net/", "/", "https://login.microsoftonline.com/",
                           "/v2.0"},
    [AUTH_ENTRA_USGOV] = {"https://login.microsoftonline.us/", "/",
                          "https://login.microsoftonline.us/", "/v2.0"},
};

/* A JWK's issuer may be a template with {tenantid}; it must then match after substitution. */
static bool auth_jwk_issuer_ok(const struct auth_jwk *k, const char *iss, const char *tid)
{
    if (!k->issuer[0])
        return true;
    const char *t = strstr(k->issuer, "{tenantid}");
    if (!t)
        return strcmp(k->issuer, iss) == 0;
    char want[400];
    snprintf(want, sizeof(want), "%.*s%s%s", (int)(t - k->issuer), k->issuer, tid,
             t + strlen("{tenantid}"));
    return strcmp(want, iss) == 0;
}

static void auth_copy_claim(json_t *payload, const char *name, char *buf, size_t len)
{
    const char *v = json_string_value(json_object_get(payload, name));
    snprintf(buf, len, "%s", v ? v : "");
}

static enum auth_token_error auth_entra_claims(const struct auth_jwt *jwt,
                                               const struct auth_jwk *jwk,
                                               const struct auth_entra_policy *p,
                                               struct auth_entra_identity *id)
{
    json_t *pl = jwt->payload;
    const char *tid = json_string_value(json_object_get(pl, "tid"));
    const char *ver = json_string_value(json_object_get(pl, "ver"));
    const char *iss = json_string_value(json_object_get(pl, "iss"));
    json_t *aud = json_object_get(pl, "aud");
    int64_t exp, nbf, iat;
    if (!tid || !ver || !iss || !json_is_string(aud) || !auth_jwt_claim_time(jwt, "exp", &exp))
        return AUTH_TOKEN_MISSING_CLAIM;
    if (!auth_is_guid(tid, strlen(tid)))
        return AUTH_TOKEN_MALFORMED;
    bool allowed = false;
    for (size_t i = 0; i < p->ntenants && !allowed; i++)
        allowed = strcasecmp(p->tenants[i], tid) == 0;
    if (!allowed)
        return AUTH_TOKEN_TENANT_NOT_ALLOWED;

    /* `ver` decides which issuer the token must carry, whichever endpoint issued it. */
    bool v1 = strcmp(ver, "1.0") == 0;
    if (!v1 && strcmp(ver, "2.0") != 0)
        return AUTH_TOKEN_BAD_ISSUER;
    char want[AUTH_ISSUER_MAX + 64];
    snprintf(want, sizeof(want), "%s%s%s",
             v1 ? auth_entra_issuers[p->cloud].v1_prefix : auth_entra_issuers[p->cloud].v2_prefix,
             tid,
             v1 ? auth_entra_issuers[p->cloud].v1_suffix : auth_entra_issuers[p->cloud].v2_suffix);
    /* the tenant's own metadata, when it was read, says which issuer it uses */
    for (size_t i = 0; i < p->nissuers; i++)
        if (strcasecmp(p->issuers[i].tenant, tid) == 0) {
            const char *meta = v1 ? p->issuers[i].v1 : p->issuers[i].v2;
            if (*meta)
                snprintf(want, sizeof(want), "%s", meta);
        }
    /* A key's own issuer (Entra's v2 key list names one for every key, and the same keys
     * sign v1 tokens) must be the token's issuer or the tenant's v2 issuer. */
    char v2[AUTH_ISSUER_MAX + 64];
    snprintf(v2, sizeof(v2), "%s%s%s", auth_entra_issuers[p->cloud].v2_prefix, tid,
             auth_entra_issuers[p->cloud].v2_suffix);
    for (size_t i = 0; i < p->nissuers; i++)
        if (strcasecmp(p->issuers[i].tenant, tid) == 0 && p->issuers[i].v2[0])
            snprintf(v2, sizeof(v2), "%s", p->issuers[i].v2);
    if (strcmp(want, iss) != 0 ||
        (!auth_jwk_issuer_ok(jwk, iss, tid) && !auth_jwk_issuer_ok(jwk, v2, tid)))
        return AUTH_TOKEN_BAD_ISSUER;

    bool aud_ok = false;
    for (size_t i = 0; i < p->naudiences && !aud_ok; i++)
        aud_ok = strcmp(p->audiences[i], json_string_value(aud)) == 0;
    if (!aud_ok)
        return AUTH_TOKEN_BAD_AUDIENCE;

    if (p->now > exp + p->skew)
        return AUTH_TOKEN_EXPIRED;
    if (auth_jwt_claim_time(jwt, "nbf", &nbf) && p->now < nbf - p->skew)
        return AUTH_TOKEN_NOT_YET_VALID;
    if (auth_jwt_claim_time(jwt, "iat", &iat) && iat > p->now + p->skew)
        return AUTH_TOKEN_ISSUED_IN_FUTURE;

    snprintf(id->tenant, sizeof(id->tenant), "%s", tid);
    snprintf(id->version, sizeof(id->version), "%s", ver);
    auth_copy_claim(pl, "oid", id->object_id, sizeof(id->object_id));
    auth_copy_claim(pl, strcmp(ver, "1.0") == 0 ? "appid" : "azp", id->app_id, sizeof(id->app_id));
    auth_copy_claim(pl, "deviceid", id->device_id, sizeof(id->device_id));
    id->expires = exp;
    return AUTH_TOKEN_OK;
}

static EVP_PKEY *auth_entra_key(const void *ctx, const struct auth_jwt *jwt, const void **found)
{
    const struct auth_jwk *k = ctx ? auth_jwks_find(ctx, jwt->kid) : NULL;
    *found = k;
    return k ? k->key : NULL;
}

enum auth_token_error auth_entra_verify(const char *token, size_t len,
                                        const struct auth_entra_policy *policy,
                                        const struct auth_jwks *keys,
                                        struct auth_entra_identity *id)
{
    struct auth_jwt jwt;
    const void *jwk;
    memset(id, 0, sizeof(*id));
    enum auth_token_error rc = auth_jwt_check(token, len, auth_entra_key, keys, &jwt, &jwk);
    if (rc != AUTH_TOKEN_OK)
        return rc;
    rc = auth_entra_claims(&jwt, jwk, policy, id);
    auth_jwt_clear(&jwt);
    return rc;
}
