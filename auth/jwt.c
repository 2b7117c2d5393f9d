/* Compact JWS decoding and RS256 verification. */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rsa.h>

#include "jwt.h"

const char *auth_token_error_name(enum auth_token_error e)
{
    static const char *names[AUTH_TOKEN_ERROR_N] = {
        "ok",
        "malformed",
        "too_large",
        "unsupported_alg",
        "unknown_kid",
        "key_mismatch",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "missing_claim",
        "bad_audience",
        "bad_issuer",
        "tenant_not_allowed",
        "blocked",
        "lifetime_too_long",
        "wrong_endpoint",
        "missing",
    };
    return e < AUTH_TOKEN_ERROR_N ? names[e] : "unknown";
}

static int auth_b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

ssize_t auth_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1; /* no encoder leaves a single character */
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = auth_b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1)) != 0)
        return -1; /* leftover bits must be zero in a canonical encoding */
    return (ssize_t)o;
}

/* Decodes one part into a JSON object. */
static json_t *auth_jwt_json_part(const char *p, size_t len)
{
    unsigned char *buf = malloc(len * 3 / 4 + 3);
    if (!buf)
        return NULL;
    ssize_t n = auth_b64url_decode(p, len, buf);
    json_t *j = NULL;
    if (n > 0) {
        j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
        if (j && !json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
    }
    free(buf);
    return j;
}

void auth_jwt_clear(struct auth_jwt *jwt)
{
    json_decref(jwt->header);
    json_decref(jwt->payload);
    free(jwt->sig);
    memset(jwt, 0, sizeof(*jwt));
}

enum auth_token_error auth_jwt_decode(const char *token, size_t len, struct auth_jwt *jwt)
{
    memset(jwt, 0, sizeof(*jwt));
    if (len > AUTH_JWT_MAX_LEN)
        return AUTH_TOKEN_TOO_LARGE;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return AUTH_TOKEN_MALFORMED; /* exactly three parts (a JWE has five) */
    size_t hl = (size_t)(d1 - token), pl = (size_t)(d2 - d1 - 1);
    size_t sl = len - (size_t)(d2 + 1 - token);
    if (!hl || !pl)
        return AUTH_TOKEN_MALFORMED;
    jwt->header = auth_jwt_json_part(token, hl);
    jwt->payload = auth_jwt_json_part(d1 + 1, pl);
    jwt->sig = malloc(sl * 3 / 4 + 3);
    ssize_t sn = jwt->sig ? auth_b64url_decode(d2 + 1, sl, jwt->sig) : -1;
    if (!jwt->header || !jwt->payload || sn < 0) {
        auth_jwt_clear(jwt);
        return AUTH_TOKEN_MALFORMED;
    }
    jwt->sig_len = (size_t)sn;
    jwt->signing_input = token;
    jwt->signing_input_len = (size_t)(d2 - token);
    jwt->alg = json_string_value(json_object_get(jwt->header, "alg"));
    jwt->kid = json_string_value(json_object_get(jwt->header, "kid"));
    if (!jwt->kid)
        jwt->kid = json_string_value(json_object_get(jwt->header, "x5t"));
    if (!jwt->alg) {
        auth_jwt_clear(jwt);
        return AUTH_TOKEN_MALFORMED;
    }
    return AUTH_TOKEN_OK;
}

enum auth_token_error auth_jwt_verify_rs256(const struct auth_jwt *jwt, EVP_PKEY *key)
{
    /* The algorithm is the verifier's, not the token's: RS256 only. */
    if (!jwt->alg || strcmp(jwt->alg, "RS256") != 0)
        return AUTH_TOKEN_UNSUPPORTED_ALG;
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        return AUTH_TOKEN_KEY_MISMATCH;
    if (jwt->sig_len != (size_t)EVP_PKEY_get_size(key))
        return AUTH_TOKEN_BAD_SIGNATURE;
    enum auth_token_error rc = AUTH_TOKEN_BAD_SIGNATURE;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (md && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
        EVP_DigestVerify(md, jwt->sig, jwt->sig_len, (const unsigned char *)jwt->signing_input,
                         jwt->signing_input_len) == 1)
        rc = AUTH_TOKEN_OK;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return rc;
}

enum auth_token_error auth_jwt_check(const char *token, size_t len, auth_jwt_key_cb find,
                                     const void *ctx, struct auth_jwt *jwt, const void **found)
{
    *found = NULL;
    enum auth_token_error rc = auth_jwt_decode(token, len, jwt);
    if (rc != AUTH_TOKEN_OK)
        return rc;
    EVP_PKEY *key = NULL;
    if (strcmp(jwt->alg, "RS256") != 0)
        rc = AUTH_TOKEN_UNSUPPORTED_ALG; /* before any key is looked at */
    else if ((key = find(ctx, jwt, found)) == NULL)
        rc = AUTH_TOKEN_UNKNOWN_KID;
    else
        rc = auth_jwt_verify_rs256(jwt, key);
    if (rc != AUTH_TOKEN_OK)
        auth_jwt_clear(jwt);
    return rc;
}

bool auth_jwt_claim_time(const struct auth_jwt *jwt, const char *name, int64_t *out)
{
    json_t *v = json_object_get(jwt->payload, name);
    if (!json_is_number(v))
        return false;
    *out = (int64_t)json_number_value(v);
    return true;
}
