/* Content access tokens (auth/ctoken.c): the query string signed by a management point. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "auth.h"
#include "jwt.h"

static EVP_PKEY *mp_key, *other_key;
static struct auth_site_keys keys;
static const struct auth_content_policy policy = {24 * 3600, 300};
static const int64_t NOW = 1795000000; /* 2026-11-18 */

static void setup(void)
{
    mp_key = EVP_RSA_gen(2048);
    other_key = EVP_RSA_gen(2048);
    cr_assert(mp_key && other_key);
    memset(&keys, 0, sizeof(keys));
    EVP_PKEY_up_ref(mp_key);
    keys.signers[0].key = mp_key;
    keys.n = 1;
}

static void teardown(void)
{
    auth_site_keys_clear(&keys);
    EVP_PKEY_free(mp_key);
    EVP_PKEY_free(other_key);
}

static void iso(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H%%3A%M%%3A%SZ", &tm);
}

/* Signs `q` with key and appends &sig=. */
static void sign(EVP_PKEY *key, char *q, size_t cap)
{
    unsigned char sig[512];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    cr_assert(EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1);
    cr_assert(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1);
    cr_assert(EVP_DigestSign(md, sig, &siglen, (unsigned char *)q, strlen(q)) == 1);
    EVP_MD_CTX_free(md);
    char b64[1024];
    auth_b64url_encode(sig, siglen, b64, sizeof(b64));
    size_t n = strlen(q);
    snprintf(q + n, cap - n, "&sig=%s", b64);
}

static void make(char *q, size_t cap, const char *pid, int64_t st, int64_t et, const char *alg,
                 EVP_PKEY *key)
{
    char a[40], b[40];
    iso(st, a, sizeof(a));
    iso(et, b, sizeof(b));
    snprintf(q, cap,
             "pid=%s&cid=%s.2&tid=GUID%%3A9b1c7a52-2d4e-4f1a-8c3b-5e6f7a8b9c0d"
             "&iss=mp1.contoso.com&alg=%s&st=%s&et=%s",
             pid, pid, alg, a, b);
    if (key)
        sign(key, q, cap);
}

static enum auth_token_error check(const char *q, struct auth_content_token *t)
{
    return auth_content_token_verify(q, strlen(q), &policy, &keys, NOW, t);
}

TestSuite(ctoken, .init = setup, .fini = teardown);

Test(ctoken, valid_token_gives_its_parameters)
{
    char q[2048];
    struct auth_content_token t;
    make(q, sizeof(q), "PS100012", NOW - 3600, NOW + 7 * 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_OK);
    cr_assert_str_eq(t.package, "PS100012");
    cr_assert_str_eq(t.content_id, "PS100012.2");
    cr_assert_str_eq(t.client, "GUID:9b1c7a52-2d4e-4f1a-8c3b-5e6f7a8b9c0d");
    cr_assert_str_eq(t.issuer, "mp1.contoso.com");
    cr_assert_eq(t.start, NOW - 3600);
    cr_assert_eq(t.end, NOW + 7 * 3600);
}

Test(ctoken, times_and_lifetime)
{
    char q[2048];
    struct auth_content_token t;
    make(q, sizeof(q), "PS1", NOW - 9 * 3600, NOW - 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_EXPIRED);
    make(q, sizeof(q), "PS1", NOW - 9 * 3600, NOW - 200, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_OK, "within the skew");
    make(q, sizeof(q), "PS1", NOW + 3600, NOW + 7200, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_NOT_YET_VALID);
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 25 * 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_LIFETIME_TOO_LONG);
    make(q, sizeof(q), "PS1", NOW + 60, NOW - 60, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_LIFETIME_TOO_LONG, "end before start");
}

Test(ctoken, signature_and_algorithm)
{
    char q[2048];
    struct auth_content_token t;
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", other_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_BAD_SIGNATURE, "another key");
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.5", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_UNSUPPORTED_ALG, "sha1WithRSA");
    /* a changed package after signing */
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    q[4] = '2';
    cr_assert_eq(check(q, &t), AUTH_TOKEN_BAD_SIGNATURE, "tampered");
    /* no signer configured */
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    struct auth_site_keys none = {0};
    cr_assert_eq(auth_content_token_verify(q, strlen(q), &policy, &none, NOW, &t),
                 AUTH_TOKEN_UNKNOWN_KID);
}

Test(ctoken, shape)
{
    char q[4096];
    struct auth_content_token t;
    cr_assert_eq(check("", &t), AUTH_TOKEN_MISSING);
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", NULL);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_MISSING_CLAIM, "no sig");
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    strcat(q, "&pid=PS2");
    cr_assert_eq(check(q, &t), AUTH_TOKEN_MALFORMED, "a parameter after sig");
    make(q, sizeof(q), "PS1&pid=PS2", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_MALFORMED, "pid twice");
    make(q, sizeof(q), "PS%2", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_MALFORMED, "bad escape");
    make(q, sizeof(q), "..%2F..", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    cr_assert_eq(check(q, &t), AUTH_TOKEN_MALFORMED, "a package id with a slash");
    make(q, sizeof(q), "PS1", NOW - 60, NOW + 3600, "1.2.840.113549.1.1.11", mp_key);
    char *st = strstr(q, "&st=");
    memcpy(st + 4, "20x6", 4);
    cr_assert(check(q, &t) == AUTH_TOKEN_MALFORMED || check(q, &t) == AUTH_TOKEN_BAD_SIGNATURE);
    static char huge[5000];
    memset(huge, 'a', sizeof(huge) - 1);
    cr_assert_eq(check(huge, &t), AUTH_TOKEN_TOO_LARGE);
}

Test(ctoken, ids)
{
    cr_assert(auth_content_id_valid("PS100012"));
    cr_assert(auth_content_id_valid("Content_9f1c2b3e-1a2b.1"));
    cr_assert_not(auth_content_id_valid(""));
    cr_assert_not(auth_content_id_valid("a/b"));
    cr_assert_not(auth_content_id_valid("a b"));
    char big[80];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_not(auth_content_id_valid(big));
}
