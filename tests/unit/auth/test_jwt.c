/* JWT decoding, JWKS and Entra ID rules. Tokens and JWKS are made here with OpenSSL's signing
 * API and this file's own base64url encoder: a code path independent of the verifier. */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

#define TENANT "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define OTHER_TENANT "00000000-1111-2222-3333-444444444444"
#define APP_URI "https://ConfigMgrService"
#define CLIENT_ID "11111111-2222-3333-4444-555555555555"
#define NOW 1800000000

static EVP_PKEY *key1, *key2;

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
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

/* header.payload.signature, signed RS256 with key (or not at all when key is NULL). */
static char *make_token(const char *header, const char *payload, EVP_PKEY *key)
{
    char *tok = malloc(16384);
    char h[2048], p[4096];
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    snprintf(tok, 16384, "%s.%s", h, p);
    size_t len = strlen(tok);
    tok[len++] = '.';
    tok[len] = '\0';
    if (key) {
        unsigned char sig[1024];
        size_t sl = sizeof(sig);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        cr_assert(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1);
        cr_assert(EVP_DigestSign(md, sig, &sl, (unsigned char *)tok, len - 1) == 1);
        EVP_MD_CTX_free(md);
        b64url(sig, sl, tok + len);
    }
    return tok;
}

static void jwk_json(EVP_PKEY *k, const char *kid, const char *issuer, char *out, size_t len)
{
    BIGNUM *n = NULL, *e = NULL;
    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e);
    unsigned char nb[512], eb[8];
    int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
    char n64[700], e64[16];
    b64url(nb, (size_t)nl, n64);
    b64url(eb, (size_t)el, e64);
    snprintf(out, len,
             "{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s%s%s}",
             kid, n64, e64, issuer ? ",\"issuer\":\"" : "", issuer ? issuer : "",
             issuer ? "\"" : "");
    BN_free(n);
    BN_free(e);
}

static struct auth_jwks *jwks(const char *issuer1)
{
    char a[2048], b[2048], doc[5000], err[256];
    jwk_json(key1, "key-1", issuer1, a, sizeof(a));
    jwk_json(key2, "key-2", NULL, b, sizeof(b));
    snprintf(
        doc, sizeof(doc),
        "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"},"
        "%s,%s]}",
        a, b);
    struct auth_jwks *s = auth_jwks_parse(doc, strlen(doc), err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    return s;
}

static void setup(void)
{
    key1 = EVP_RSA_gen(2048);
    key2 = EVP_RSA_gen(2048);
}

static void teardown(void)
{
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
}

TestSuite(jwt, .init = setup, .fini = teardown);

static const char *tenants[] = {TENANT};
static const char *audiences[] = {APP_URI, CLIENT_ID};

static struct auth_entra_policy policy(enum auth_entra_cloud cloud)
{
    struct auth_entra_policy p = {cloud, tenants, 1, audiences, 2, 300, NOW, NULL, 0};
    return p;
}

static char *v2_payload(const char *tid, const char *iss_host, const char *aud, long exp, long nbf)
{
    char *p = malloc(1024);
    snprintf(p, 1024,
             "{\"aud\":\"%s\",\"iss\":\"https://%s/%s/v2.0\",\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld,"
             "\"azp\":\"cafe\",\"oid\":\"beef\",\"tid\":\"%s\",\"ver\":\"2.0\"}",
             aud, iss_host, tid, nbf, nbf, exp, tid);
    return p;
}

static enum auth_token_error check(const char *tok, const struct auth_jwks *keys,
                                   const struct auth_entra_policy *p,
                                   struct auth_entra_identity *id)
{
    return auth_entra_verify(tok, strlen(tok), p, keys, id);
}

Test(jwt, b64url_vectors)
{
    unsigned char out[16];
    cr_assert_eq(auth_b64url_decode("", 0, out), 0);
    cr_assert_eq(auth_b64url_decode("Zg", 2, out), 1);
    cr_assert_eq(out[0], 'f');
    cr_assert_eq(auth_b64url_decode("Zm8", 3, out), 2);
    cr_assert_eq(auth_b64url_decode("Zm9v", 4, out), 3);
    cr_assert(memcmp(out, "foo", 3) == 0);
    cr_assert_eq(auth_b64url_decode("_-8", 3, out), 2);
    cr_assert_eq(out[0], 0xff);
    cr_assert_eq(auth_b64url_decode("Zg==", 4, out), -1, "padding");
    cr_assert_eq(auth_b64url_decode("Z", 1, out), -1, "single character");
    cr_assert_eq(auth_b64url_decode("Zh", 2, out), -1, "non-zero leftover bits");
    cr_assert_eq(auth_b64url_decode("Zm+v", 4, out), -1, "base64 (not url) alphabet");
    cr_assert_eq(auth_b64url_decode("Zm 9", 4, out), -1, "space");
}

Test(jwt, valid_v2_and_v1_tokens)
{
    struct auth_jwks *keys = jwks(NULL);
    struct auth_entra_policy p = policy(AUTH_ENTRA_PUBLIC);
    struct auth_entra_identity id;
    char *pl = v2_payload(TENANT, "login.microsoftonline.com", CLIENT_ID, NOW + 3600, NOW - 60);
    char *tok = make_token("{\"typ\":\"JWT\",\"alg\":\"RS256\",\"kid\":\"key-1\"}", pl, key1);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_OK);
    cr_assert_str_eq(id.tenant, TENANT);
    cr_assert_str_eq(id.app_id, "cafe");
    cr_assert_str_eq(id.object_id, "beef");
    cr_assert_str_eq(id.version, "2.0");
    free(tok);
    free(pl);

    char v1[1024];
    snprintf(v1, sizeof(v1),
             "{\"aud\":\"%s\",\"iss\":\"https://sts.windows.net/%s/\",\"iat\":%d,\"nbf\":%d,"
             "\"exp\":%d,\"appid\":\"a1\",\"oid\":\"o1\",\"tid\":\"%s\",\"ver\":\"1.0\"}",
             APP_URI, TENANT, NOW, NOW, NOW + 60, TENANT);
    tok = make_token("{\"typ\":\"JWT\",\"alg\":\"RS256\",\"x5t\":\"key-2\"}", v1, key2);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_OK);
    cr_assert_str_eq(id.app_id, "a1");
    free(tok);
    auth_jwks_free(keys);
}

struct claim_case {
    const char *name;
    const char *tid;
    const char *host;
    const char *aud;
    long exp, nbf;
    enum auth_entra_cloud cloud;
    enum auth_token_error want;
};

Test(jwt, claim_rules)
{
    struct auth_jwks *keys = jwks(NULL);
    const char *pub = "login.microsoftonline.com", *gov = "login.microsoftonline.us";
    struct claim_case cases[] = {
        {"expired 6 min", TENANT, pub, CLIENT_ID, NOW - 360, NOW - 4000, AUTH_ENTRA_PUBLIC,
         AUTH_TOKEN_EXPIRED},
        {"expired 4 min (skew)", TENANT, pub, CLIENT_ID, NOW - 240, NOW - 4000, AUTH_ENTRA_PUBLIC,
         AUTH_TOKEN_OK},
        {"nbf +10 min", TENANT, pub, CLIENT_ID, NOW + 4000, NOW + 600, AUTH_ENTRA_PUBLIC,
         AUTH_TOKEN_NOT_YET_VALID},
        {"wrong audience", TENANT, pub, "https://management.azure.com/", NOW + 60, NOW,
         AUTH_ENTRA_PUBLIC, AUTH_TOKEN_BAD_AUDIENCE},
        {"tenant not allowed", OTHER_TENANT, pub, CLIENT_ID, NOW + 60, NOW, AUTH_ENTRA_PUBLIC,
         AUTH_TOKEN_TENANT_NOT_ALLOWED},
        {"gov token, public policy", TENANT, gov, CLIENT_ID, NOW + 60, NOW, AUTH_ENTRA_PUBLIC,
         AUTH_TOKEN_BAD_ISSUER},
        {"gov token, gov policy", TENANT, gov, CLIENT_ID, NOW + 60, NOW, AUTH_ENTRA_USGOV,
         AUTH_TOKEN_OK},
        {"v2 token with v1 issuer host", TENANT, "sts.windows.net", CLIENT_ID, NOW + 60, NOW,
         AUTH_ENTRA_PUBLIC, AUTH_TOKEN_BAD_ISSUER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct auth_entra_policy p = policy(cases[i].cloud);
        struct auth_entra_identity id;
        char *pl =
            v2_payload(cases[i].tid, cases[i].host, cases[i].aud, cases[i].exp, cases[i].nbf);
        char *tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-1\"}", pl, key1);
        enum auth_token_error got = check(tok, keys, &p, &id);
        cr_assert_eq(got, cases[i].want, "%s: got %s", cases[i].name, auth_token_error_name(got));
        free(tok);
        free(pl);
    }
    auth_jwks_free(keys);
}

Test(jwt, algorithm_key_and_signature_attacks)
{
    struct auth_jwks *keys = jwks(NULL);
    struct auth_entra_policy p = policy(AUTH_ENTRA_PUBLIC);
    struct auth_entra_identity id;
    char *pl = v2_payload(TENANT, "login.microsoftonline.com", CLIENT_ID, NOW + 60, NOW);

    char *tok = make_token("{\"alg\":\"none\",\"kid\":\"key-1\"}", pl, NULL);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_UNSUPPORTED_ALG, "alg none");
    free(tok);

    /* HS256 "signed" with the public key's bytes as the HMAC secret: the classic confusion */
    unsigned char *der = NULL;
    int dl = i2d_PUBKEY(key1, &der);
    tok = make_token("{\"alg\":\"HS256\",\"kid\":\"key-1\"}", pl, NULL);
    unsigned char mac[32];
    unsigned int ml = 32;
    HMAC(EVP_sha256(), der, dl, (unsigned char *)tok, strlen(tok) - 1, mac, &ml);
    b64url(mac, ml, tok + strlen(tok));
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_UNSUPPORTED_ALG, "HS256");
    OPENSSL_free(der);
    free(tok);

    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-9\"}", pl, key1);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_UNKNOWN_KID);
    free(tok);

    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-2\"}", pl, key1);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_BAD_SIGNATURE, "signed by another key");
    free(tok);

    /* tampered payload: a valid token whose payload is swapped for another tenant's */
    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-1\"}", pl, key1);
    char *pl2 = v2_payload(TENANT, "login.microsoftonline.com", CLIENT_ID, NOW + 99999, NOW);
    char p64[2048];
    b64url((unsigned char *)pl2, strlen(pl2), p64);
    char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    char forged[16384];
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - tok), tok, p64, d2);
    cr_assert_eq(check(forged, keys, &p, &id), AUTH_TOKEN_BAD_SIGNATURE, "tampered");
    free(tok);
    free(pl2);
    free(pl);
    auth_jwks_free(keys);
}

Test(jwt, jwk_issuer_template)
{
    struct auth_entra_policy p = policy(AUTH_ENTRA_PUBLIC);
    struct auth_entra_identity id;
    char *pl = v2_payload(TENANT, "login.microsoftonline.com", CLIENT_ID, NOW + 60, NOW);
    char *tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-1\"}", pl, key1);
    struct auth_jwks *keys = jwks("https://login.microsoftonline.com/{tenantid}/v2.0");
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_OK);
    auth_jwks_free(keys);
    keys = jwks("https://login.microsoftonline.com/" OTHER_TENANT "/v2.0");
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_BAD_ISSUER, "key bound to another tenant");
    auth_jwks_free(keys);
    free(tok);
    free(pl);
}

Test(jwt, malformed_tokens)
{
    struct auth_jwks *keys = jwks(NULL);
    struct auth_entra_policy p = policy(AUTH_ENTRA_PUBLIC);
    struct auth_entra_identity id;
    const char *bad[] = {"",           "abc",       "a.b",     "a.b.c.d.e", "..",
                         "eyJ9.eyJ9.", "!!!.eyJ9.", "W10.W10." /* [] as header and payload */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(check(bad[i], keys, &p, &id), AUTH_TOKEN_MALFORMED, "\"%s\"", bad[i]);

    char *tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-1\"}",
                           "{\"tid\":\"" TENANT "\",\"tid\":\"" OTHER_TENANT "\"}", key1);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_MALFORMED, "duplicate claim");
    free(tok);
    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"key-1\"}", "{\"ver\":\"2.0\"}", key1);
    cr_assert_eq(check(tok, keys, &p, &id), AUTH_TOKEN_MISSING_CLAIM);
    free(tok);

    char *huge = malloc(AUTH_JWT_MAX_LEN + 10);
    memset(huge, 'A', AUTH_JWT_MAX_LEN + 9);
    huge[AUTH_JWT_MAX_LEN + 9] = '\0';
    cr_assert_eq(check(huge, keys, &p, &id), AUTH_TOKEN_TOO_LARGE);
    free(huge);
    auth_jwks_free(keys);
}

Test(jwt, jwks_documents)
{
    char err[256];
    const char *bad[] = {
        "nope", "{}", "{\"keys\":{}}", "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_null(auth_jwks_parse(bad[i], strlen(bad[i]), err, sizeof(err)), "%s", bad[i]);
        cr_assert_neq(err[0], '\0');
    }
    struct auth_jwks *s = jwks(NULL);
    cr_assert_eq(s->nkeys, 2);
    cr_assert_eq(s->skipped, 1, "the EC key is skipped");
    cr_assert_not_null(auth_jwks_find(s, "key-2"));
    cr_assert_null(auth_jwks_find(s, "key-3"));
    auth_jwks_free(s);
}
