/* JWKS documents: RSA verification keys by key id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include "jwt.h"

/* Builds an RSA public key from base64url n and e. NULL if they do not make one. */
static EVP_PKEY *auth_jwk_rsa(const char *n64, const char *e64)
{
    size_t nl = strlen(n64), el = strlen(e64);
    if (nl > 1400 || el > 16) /* up to 8192-bit moduli */
        return NULL;
    unsigned char n[1100], e[16];
    ssize_t nn = auth_b64url_decode(n64, nl, n), en = auth_b64url_decode(e64, el, e);
    if (nn < 128 || en < 1) /* under 1024 bits is not a key to trust */
        return NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nn, NULL), *be = BN_bin2bn(e, (int)en, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (bn && be && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
        (params = OSSL_PARAM_BLD_to_param(bld)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn);
    BN_free(be);
    ERR_clear_error();
    return pkey;
}

struct auth_jwks *auth_jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "JWKS is not JSON: %s", je.text);
        return NULL;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "JWKS has no \"keys\" list");
        json_decref(root);
        return NULL;
    }
    struct auth_jwks *set = calloc(1, sizeof(*set));
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *use = json_string_value(json_object_get(k, "use"));
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *n = json_string_value(json_object_get(k, "n"));
        const char *e = json_string_value(json_object_get(k, "e"));
        const char *iss = json_string_value(json_object_get(k, "issuer"));
        if (!kty || strcmp(kty, "RSA") != 0 || (use && strcmp(use, "sig") != 0) || !kid || !*kid ||
            strlen(kid) >= sizeof(set->keys[0].kid) || !n || !e ||
            (iss && strlen(iss) >= sizeof(set->keys[0].issuer)) ||
            set->nkeys == AUTH_JWKS_MAX_KEYS || auth_jwks_find(set, kid)) {
            set->skipped++;
            continue;
        }
        EVP_PKEY *pk = auth_jwk_rsa(n, e);
        if (!pk) {
            set->skipped++;
            continue;
        }
        struct auth_jwk *jk = &set->keys[set->nkeys++];
        snprintf(jk->kid, sizeof(jk->kid), "%s", kid);
        snprintf(jk->issuer, sizeof(jk->issuer), "%s", iss ? iss : "");
        jk->key = pk;
    }
    json_decref(root);
    if (set->nkeys == 0) {
        snprintf(err, errlen, "JWKS holds no usable RSA signing key (%u skipped)", set->skipped);
        auth_jwks_free(set);
        return NULL;
    }
    return set;
}

void auth_jwks_free(struct auth_jwks *set)
{
    if (!set)
        return;
    for (unsigned i = 0; i < set->nkeys; i++)
        EVP_PKEY_free(set->keys[i].key);
    free(set);
}

const struct auth_jwk *auth_jwks_find(const struct auth_jwks *set, const char *kid)
{
    if (!kid)
        return NULL;
    for (unsigned i = 0; i < set->nkeys; i++)
        if (strcmp(set->keys[i].kid, kid) == 0)
            return &set->keys[i];
    return NULL;
}
