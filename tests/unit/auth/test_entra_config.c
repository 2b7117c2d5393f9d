/* Entra ID configuration (auth/keys.c): the tenant list, GUIDs, the login authority, and the
 * issuers a tenant's metadata names, as auth_entra_verify applies them. Tokens and JWKS are
 * made here with OpenSSL's signing API and this file's own base64url encoder, as in
 * test_jwt.c: a code path independent of the verifier. */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

#define TENANT "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define TENANT_UC "72F988BF-86F1-41AF-91AB-2D7CD011DB47"
#define OTHER_TENANT "00000000-1111-2222-3333-444444444444"
#define APP_ID "11111111-2222-3333-4444-555555555555"
#define APP_ID_UC "11111111-2222-3333-4444-5555555555AA"
#define APP_URI "https://ConfigMgrService"
#define NOW 1800000000

/* ---- tenant list ---- */

static struct auth_entra_tenant parsed[AUTH_ENTRA_TENANTS_MAX + 8];
static char err[256];

static int parse(const char *list, size_t max, size_t *n)
{
    err[0] = '\0';
    memset(parsed, 0x5a, sizeof parsed);
    return auth_entra_tenants_parse(list, parsed, max, n, err, sizeof err);
}

Test(entra_tenants, one_tenant)
{
    size_t n = 99;

    cr_assert_eq(parse(TENANT, AUTH_ENTRA_TENANTS_MAX, &n), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_expect_str_eq(parsed[0].tenant, TENANT);
    cr_expect_str_eq(parsed[0].client_app_id, "", "no client app id");
}

Test(entra_tenants, several_lower_cased)
{
    size_t n = 0;

    cr_assert_eq(parse(TENANT_UC ":" APP_ID_UC ", " OTHER_TENANT "  " APP_ID ":" TENANT ",,",
                       AUTH_ENTRA_TENANTS_MAX, &n),
                 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(parsed[0].tenant, TENANT);
    cr_expect_str_eq(parsed[0].client_app_id, "11111111-2222-3333-4444-5555555555aa");
    cr_expect_str_eq(parsed[1].tenant, OTHER_TENANT);
    cr_expect_str_eq(parsed[1].client_app_id, "");
    cr_expect_str_eq(parsed[2].tenant, APP_ID);
    cr_expect_str_eq(parsed[2].client_app_id, TENANT);
}

Test(entra_tenants, empty_lists)
{
    size_t n = 99;

    cr_expect_eq(parse(NULL, AUTH_ENTRA_TENANTS_MAX, &n), 0);
    cr_expect_eq(n, 0);
    n = 99;
    cr_expect_eq(parse("", AUTH_ENTRA_TENANTS_MAX, &n), 0);
    cr_expect_eq(n, 0);
    n = 99;
    cr_expect_eq(parse(" , ", AUTH_ENTRA_TENANTS_MAX, &n), 0);
    cr_expect_eq(n, 0);
}

Test(entra_tenants, bad_entries)
{
    static const struct {
        const char *list, *named;
    } bad[] = {
        {"contoso.onmicrosoft.com", "contoso.onmicrosoft.com"},
        {"72f988bf86f141af91ab2d7cd011db47", "72f988bf86f141af91ab2d7cd011db47"},
        {"{" TENANT "}", "{" TENANT "}"},
        {TENANT "0", TENANT "0"},
        {"72f988bf-86f1-41af-91ab-2d7cd011db4g", "db4g"},
        {TENANT ":", TENANT ":"},
        {TENANT ":not-an-app", ":not-an-app"},
        {TENANT ":" APP_ID "0", APP_ID "0"},
        {TENANT ":" APP_ID ":" APP_ID, APP_ID ":" APP_ID},
        {":" APP_ID, ":" APP_ID},
        {OTHER_TENANT ", " TENANT ";" APP_ID, TENANT ";"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n;

        cr_expect_eq(parse(bad[i].list, AUTH_ENTRA_TENANTS_MAX, &n), -1, "\"%s\"", bad[i].list);
        cr_expect_not_null(strstr(err, bad[i].named), "\"%s\": message \"%s\"", bad[i].list, err);
        cr_expect_not_null(strstr(err, "GUID"), "\"%s\": message \"%s\"", bad[i].list, err);
    }
}

/* "<guid>" n times, comma separated, each tenant different. */
static char *tenant_list(size_t count)
{
    char *s = calloc(count, 40);
    size_t o = 0;

    cr_assert_not_null(s);
    for (size_t i = 0; i < count; i++)
        o += (size_t)sprintf(s + o, "%s%08zx-0000-0000-0000-000000000000", i ? "," : "", i);
    return s;
}

Test(entra_tenants, at_most_max)
{
    char *three = tenant_list(3), *full = tenant_list(AUTH_ENTRA_TENANTS_MAX);
    char *over = tenant_list(AUTH_ENTRA_TENANTS_MAX + 1), *far = tenant_list(40);
    size_t n = 99;

    cr_expect_eq(parse(three, 3, &n), 0, "%s", err);
    cr_expect_eq(n, 3);
    cr_expect_str_eq(parsed[2].tenant, "00000002-0000-0000-0000-000000000000");
    cr_expect_eq(parse(three, 2, &n), -1, "3 tenants, max 2");
    cr_expect_str_eq(err, "more than 2 tenants");
    cr_expect_eq(parse(full, AUTH_ENTRA_TENANTS_MAX, &n), 0, "%s", err);
    cr_expect_eq(n, AUTH_ENTRA_TENANTS_MAX);
    cr_expect_eq(parse(over, AUTH_ENTRA_TENANTS_MAX, &n), -1, "one over the maximum");
    cr_expect_not_null(strstr(err, "more than 32 tenants"), "message \"%s\"", err);
    cr_expect_eq(parse(far, AUTH_ENTRA_TENANTS_MAX, &n), -1, "40 tenants");
    free(three);
    free(full);
    free(over);
    free(far);
}

/* ---- GUIDs ---- */

Test(entra_guid, shapes)
{
    static const char *const good[] = {TENANT, TENANT_UC, "00000000-0000-0000-0000-000000000000",
                                       "aBcDeF01-2345-6789-abcd-EF0123456789"};
    static const char *const bad[] = {
        "",
        "72f988bf-86f1-41af-91ab-2d7cd011db4",   /* 11 digits last */
        "72f988bf-86f1-41af-91ab-2d7cd011db477", /* 13 */
        "72f988bf86f1-41af-91ab-2d7cd011db47-",  /* hyphen moved */
        "72f988bf-86f1-41af-91ab_2d7cd011db47",
        "72f988bf-86f1-41af-91ag-2d7cd011db47",
        "{72f988bf-86f1-41af-91ab-2d7cd011db4}",
        " 2f988bf-86f1-41af-91ab-2d7cd011db47",
        "72f988bf-86f1-41af-91ab-2d7cd011db4 ",
        "72f988bf--86f1-41af-91ab-2d7cd011db4",
        "0x2f988b-86f1-41af-91ab-2d7cd011db47",
    };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_expect(auth_is_guid(good[i], strlen(good[i])), "\"%s\"", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_not(auth_is_guid(bad[i], strlen(bad[i])), "\"%s\"", bad[i]);
}

Test(entra_guid, length_bounded)
{
    const char *longer = TENANT "0";
    const char *suffixed = TENANT ":" APP_ID;

    cr_expect_not(auth_is_guid(longer, strlen(longer)), "a GUID and one digit more");
    cr_expect(auth_is_guid(longer, 36), "its first 36 bytes");
    cr_expect_not(auth_is_guid(suffixed, strlen(suffixed)));
    cr_expect_not(auth_is_guid(suffixed, 37), "GUID and ':'");
    cr_expect(auth_is_guid(suffixed, 36));
    cr_expect(auth_is_guid(suffixed + 37, 36));
    cr_expect_not(auth_is_guid(TENANT, 35), "short by one");
    cr_expect_not(auth_is_guid(TENANT, 0));
}

/* ---- authority ---- */

Test(entra_authority, defaults_and_override)
{
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_PUBLIC, NULL),
                     "https://login.microsoftonline.com");
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_USGOV, NULL),
                     "https://login.microsoftonline.us");
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_PUBLIC, ""),
                     "https://login.microsoftonline.com", "an empty override is none");
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_USGOV, ""),
                     "https://login.microsoftonline.us");
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_PUBLIC, "https://login.test:8443"),
                     "https://login.test:8443");
    cr_expect_str_eq(auth_entra_authority(AUTH_ENTRA_USGOV, "http://127.0.0.1:9000"),
                     "http://127.0.0.1:9000");
    cr_expect_str_eq(auth_entra_authority(7, NULL), "https://login.microsoftonline.com",
                     "an unknown cloud is the public one");
}

/* ---- issuers from metadata ---- */

static EVP_PKEY *key1;

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

/* header.payload.signature, signed RS256 with key. Caller frees. */
static char *make_token(const char *header, const char *payload, EVP_PKEY *key)
{
    char *tok = malloc(16384);
    char h[2048], p[4096];
    unsigned char sig[1024];
    size_t sl = sizeof sig, len;
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    cr_assert(tok && md);
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    snprintf(tok, 16384, "%s.%s", h, p);
    len = strlen(tok);
    cr_assert_eq(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    cr_assert_eq(EVP_DigestSign(md, sig, &sl, (unsigned char *)tok, len), 1);
    EVP_MD_CTX_free(md);
    tok[len++] = '.';
    b64url(sig, sl, tok + len);
    return tok;
}

/* A JWKS with key1 as "key-1", naming `issuer` when not NULL. */
static struct auth_jwks *jwks(const char *issuer)
{
    BIGNUM *n = NULL, *e = NULL;
    unsigned char nb[512], eb[8];
    char n64[700], e64[16], doc[2048], why[256];
    struct auth_jwks *s;
    int nl, el;

    cr_assert_eq(EVP_PKEY_get_bn_param(key1, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    cr_assert_eq(EVP_PKEY_get_bn_param(key1, OSSL_PKEY_PARAM_RSA_E, &e), 1);
    nl = BN_bn2bin(n, nb);
    el = BN_bn2bin(e, eb);
    b64url(nb, (size_t)nl, n64);
    b64url(eb, (size_t)el, e64);
    snprintf(doc, sizeof doc,
             "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":\"key-1\",\"n\":\"%s\","
             "\"e\":\"%s\"%s%s%s}]}",
             n64, e64, issuer ? ",\"issuer\":\"" : "", issuer ? issuer : "", issuer ? "\"" : "");
    BN_free(n);
    BN_free(e);
    s = auth_jwks_parse(doc, strlen(doc), why, sizeof why);
    cr_assert_not_null(s, "%s", why);
    return s;
}

static void keys_setup(void)
{
    key1 = EVP_RSA_gen(2048);
    cr_assert_not_null(key1);
}

static void keys_teardown(void)
{
    EVP_PKEY_free(key1);
}

TestSuite(entra_issuers, .init = keys_setup, .fini = keys_teardown);

/* A tenant-specific v1 issuer its v1 metadata states, unlike the documented one. */
#define META_V1 "https://sts.contoso.test/" TENANT "/"
#define DOC_V1 "https://sts.windows.net/" TENANT "/"
#define DOC_V2 "https://login.microsoftonline.com/" TENANT "/v2.0"

static const char *tenants[] = {TENANT};
static const char *audiences[] = {APP_URI, APP_ID};

static char *token(const char *ver, const char *iss)
{
    char payload[1024];

    snprintf(payload, sizeof payload,
             "{\"aud\":\"%s\",\"iss\":\"%s\",\"iat\":%d,\"nbf\":%d,\"exp\":%d,"
             "\"appid\":\"a1\",\"azp\":\"a2\",\"oid\":\"o1\",\"tid\":\"%s\",\"ver\":\"%s\"}",
             APP_URI, iss, NOW, NOW, NOW + 600, TENANT, ver);
    return make_token("{\"typ\":\"JWT\",\"alg\":\"RS256\",\"kid\":\"key-1\"}", payload, key1);
}

static enum auth_token_error verify(const char *tok, const struct auth_jwks *keys,
                                    const struct auth_entra_issuer *issuers, size_t nissuers,
                                    struct auth_entra_identity *id)
{
    struct auth_entra_policy p = {AUTH_ENTRA_PUBLIC, tenants, 1,       audiences, 2,
                                  AUTH_CLOCK_SKEW,   NOW,     issuers, nissuers};

    return auth_entra_verify(tok, strlen(tok), &p, keys, id);
}

static void expect_verdict(const char *ver, const char *iss, const struct auth_jwks *keys,
                           const struct auth_entra_issuer *issuers, size_t nissuers,
                           enum auth_token_error want, const char *what)
{
    struct auth_entra_identity id;
    char *tok = token(ver, iss);
    enum auth_token_error got = verify(tok, keys, issuers, nissuers, &id);

    cr_expect_eq(got, want, "%s: got %s, want %s", what, auth_token_error_name(got),
                 auth_token_error_name(want));
    if (want == AUTH_TOKEN_OK && got == AUTH_TOKEN_OK) {
        cr_expect_str_eq(id.tenant, TENANT, "%s", what);
        cr_expect_str_eq(id.version, ver, "%s", what);
        cr_expect_str_eq(id.object_id, "o1", "%s", what);
        cr_expect_str_eq(id.app_id, strcmp(ver, "1.0") == 0 ? "a1" : "a2", "%s", what);
        cr_expect_eq(id.expires, NOW + 600, "%s", what);
    }
    free(tok);
}

/* Without metadata the documented issuers hold: the baseline the next tests change. */
Test(entra_issuers, documented_without_metadata)
{
    struct auth_jwks *keys = jwks(NULL);

    expect_verdict("1.0", DOC_V1, keys, NULL, 0, AUTH_TOKEN_OK, "v1, documented issuer");
    expect_verdict("1.0", META_V1, keys, NULL, 0, AUTH_TOKEN_BAD_ISSUER, "v1, other issuer");
    expect_verdict("2.0", DOC_V2, keys, NULL, 0, AUTH_TOKEN_OK, "v2, documented issuer");
    auth_jwks_free(keys);
}

Test(entra_issuers, metadata_v1_issuer_wins)
{
    struct auth_jwks *keys = jwks(NULL);
    struct auth_entra_issuer issuers[2] = {{OTHER_TENANT, "https://elsewhere.test/", ""},
                                           {TENANT, META_V1, ""}};

    expect_verdict("1.0", META_V1, keys, issuers, 2, AUTH_TOKEN_OK, "v1, metadata's issuer");
    expect_verdict("1.0", DOC_V1, keys, issuers, 2, AUTH_TOKEN_BAD_ISSUER,
                   "v1, documented issuer the metadata replaced");
    expect_verdict("1.0", "https://elsewhere.test/", keys, issuers, 2, AUTH_TOKEN_BAD_ISSUER,
                   "v1, another tenant's issuer");
    /* the metadata names no v2 issuer: the documented one stays */
    expect_verdict("2.0", DOC_V2, keys, issuers, 2, AUTH_TOKEN_OK, "v2, documented issuer");
    expect_verdict("2.0", META_V1, keys, issuers, 2, AUTH_TOKEN_BAD_ISSUER,
                   "v2 token with the v1 issuer");
    auth_jwks_free(keys);
}

/* Tenant ids in the metadata table match without regard to case. */
Test(entra_issuers, metadata_tenant_case)
{
    struct auth_jwks *keys = jwks(NULL);
    struct auth_entra_issuer issuers[1] = {{TENANT_UC, META_V1, ""}};

    expect_verdict("1.0", META_V1, keys, issuers, 1, AUTH_TOKEN_OK, "upper-case tenant entry");
    expect_verdict("1.0", DOC_V1, keys, issuers, 1, AUTH_TOKEN_BAD_ISSUER,
                   "upper-case tenant entry, documented issuer");
    auth_jwks_free(keys);
}

/* Entra's v2 key list names the tenant's v2 issuer for every key, and the same keys sign v1
 * tokens: such a key verifies a v1 token carrying the metadata's v1 issuer. */
Test(entra_issuers, v2_keys_sign_v1_tokens)
{
    struct auth_entra_issuer issuers[1] = {{TENANT, META_V1, ""}};
    struct auth_jwks *keys = jwks("https://login.microsoftonline.com/{tenantid}/v2.0");

    expect_verdict("1.0", META_V1, keys, issuers, 1, AUTH_TOKEN_OK, "template issuer on the key");
    expect_verdict("1.0", DOC_V1, keys, issuers, 1, AUTH_TOKEN_BAD_ISSUER,
                   "template issuer on the key, documented v1 issuer");
    auth_jwks_free(keys);

    keys = jwks("https://login.microsoftonline.com/" OTHER_TENANT "/v2.0");
    expect_verdict("1.0", META_V1, keys, issuers, 1, AUTH_TOKEN_BAD_ISSUER,
                   "key bound to another tenant");
    auth_jwks_free(keys);
}
