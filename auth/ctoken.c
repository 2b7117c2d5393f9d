/* Content access tokens: what a management point hands a client with a content location, and
 * what the content-location service and the file route check. The token is the query string
 * of the request (docs/content.md):
 *   pid=<package>&cid=<content id>&tid=GUID:<client>&iss=<MP FQDN>
 *   &alg=1.2.840.113549.1.1.11&st=<UTC start>&et=<UTC end>&sig=<base64url signature>
 * sig is RSASSA-PKCS1-v1_5 with SHA-256 (the OID in alg) over the query bytes before "&sig=",
 * exactly as sent, by one of the management points' signing certificates. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "auth.h"
#include "jwt.h"

#define CTOKEN_ALG "1.2.840.113549.1.1.11" /* sha256WithRSAEncryption */
#define CTOKEN_MAX 4096

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes v[0..len) into out (NUL-terminated, at most cap-1 bytes); false on a bad
 * escape, a control byte, or a value that does not fit. '+' is taken literally. */
static bool pct_decode(const char *v, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)v[i];
        if (ch == '%') {
            int a = i + 2 < len ? hexval(v[i + 1]) : -1;
            int b = i + 2 < len ? hexval(v[i + 2]) : -1;
            if (a < 0 || b < 0)
                return false;
            ch = a * 16 + b;
            i += 2;
        }
        if (ch < 0x20 || ch == 0x7f || o + 1 >= cap)
            return false;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return true;
}

/* "YYYY-MM-DDThh:mm:ssZ" (also with a space for T, and without Z) as Unix seconds. */
static bool parse_utc(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    char sep = 0, z = 0;
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%c%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &sep,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z, &n) == 8) {
        if (z != 'Z' || s[n] != '\0')
            return false;
    } else if (sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &sep,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) == 7) {
        if (s[n] != '\0')
            return false;
    } else {
        return false;
    }
    if ((sep != 'T' && sep != ' ') || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12 ||
        tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm);
    return true;
}

bool auth_content_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > AUTH_CONTENT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

enum auth_token_error auth_content_token_verify(const char *query, size_t len,
                                                const struct auth_content_policy *policy,
                                                const struct auth_site_keys *keys, int64_t now,
                                                struct auth_content_token *out)
{
    memset(out, 0, sizeof(*out));
    if (!query || len == 0)
        return AUTH_TOKEN_MISSING;
    if (len > CTOKEN_MAX)
        return AUTH_TOKEN_TOO_LARGE;
    char alg[32] = "", st[40] = "", et[40] = "";
    const char *sig = NULL;
    size_t sig_len = 0, signed_len = 0;
    unsigned seen = 0;
    const char *p = query, *end = query + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (!eq)
            return AUTH_TOKEN_MALFORMED;
        size_t nl = (size_t)(eq - p);
        const char *v = eq + 1;
        size_t vl = (size_t)(stop - v);
        struct {
            const char *name;
            char *dst;
            size_t cap;
        } fields[] = {
            {"pid", out->package, sizeof(out->package)},
            {"cid", out->content_id, sizeof(out->content_id)},
            {"tid", out->client, sizeof(out->client)},
            {"iss", out->issuer, sizeof(out->issuer)},
            {"alg", alg, sizeof(alg)},
            {"st", st, sizeof(st)},
            {"et", et, sizeof(et)},
        };
        bool known = false;
        if (sig)
            return AUTH_TOKEN_MALFORMED; /* sig comes last: nothing may follow it unsigned */
        if (nl == 3 && strncasecmp(p, "sig", 3) == 0) {
            sig = v;
            sig_len = vl;
            signed_len = p > query ? (size_t)(p - query) - 1 : 0;
            known = true;
        }
        for (size_t i = 0; !known && i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (strlen(fields[i].name) != nl || strncasecmp(p, fields[i].name, nl) != 0)
                continue;
            if (seen & (1u << i))
                return AUTH_TOKEN_MALFORMED; /* a repeated parameter is ambiguous */
            if (!pct_decode(v, vl, fields[i].dst, fields[i].cap))
                return AUTH_TOKEN_MALFORMED;
            seen |= 1u << i;
            known = true;
        }
        p = amp ? amp + 1 : end;
    }
    if (!sig || seen != 0x7f || !out->package[0] || !out->content_id[0] || !out->client[0] ||
        !out->issuer[0])
        return AUTH_TOKEN_MISSING_CLAIM;
    if (strcmp(alg, CTOKEN_ALG) != 0)
        return AUTH_TOKEN_UNSUPPORTED_ALG;
    if (!auth_content_id_valid(out->package) || !auth_content_id_valid(out->content_id) ||
        !parse_utc(st, &out->start) || !parse_utc(et, &out->end))
        return AUTH_TOKEN_MALFORMED;
    unsigned char sigbuf[1024];
    if (sig_len == 0 || sig_len > sizeof(sigbuf) * 4 / 3 - 4)
        return AUTH_TOKEN_BAD_SIGNATURE;
    ssize_t sn = auth_b64url_decode(sig, sig_len, sigbuf);
    if (sn <= 0)
        return AUTH_TOKEN_MALFORMED;
    /* Signature before time: a forged token learns nothing about the clock checks. */
    enum auth_token_error rc = keys->n ? AUTH_TOKEN_BAD_SIGNATURE : AUTH_TOKEN_UNKNOWN_KID;
    for (unsigned i = 0; i < keys->n && rc != AUTH_TOKEN_OK; i++) {
        EVP_PKEY *key = keys->signers[i].key;
        if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || sn != EVP_PKEY_get_size(key))
            continue;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        if (md && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
            EVP_DigestVerify(md, sigbuf, (size_t)sn, (const unsigned char *)query, signed_len) == 1)
            rc = AUTH_TOKEN_OK;
        EVP_MD_CTX_free(md);
    }
    ERR_clear_error();
    if (rc != AUTH_TOKEN_OK)
        return rc;
    if (out->end <= out->start || out->end - out->start > policy->max_lifetime)
        return AUTH_TOKEN_LIFETIME_TOO_LONG;
    if (now < out->start - policy->skew)
        return AUTH_TOKEN_NOT_YET_VALID;
    if (now >= out->end + policy->skew)
        return AUTH_TOKEN_EXPIRED;
    return AUTH_TOKEN_OK;
}

/* Percent-encodes a parameter value (unreserved bytes and ':' kept as they are). */
static size_t pct_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool keep = isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == ':';
        if (o + (keep ? 1 : 3) >= cap)
            return 0;
        if (keep) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return o;
}

int auth_content_token_issue(EVP_PKEY *key, const struct auth_content_token *t, char *out,
                             size_t cap)
{
    char v[7][300];
    const char *raw[4] = {t->package, t->content_id, t->client, t->issuer};
    for (int i = 0; i < 4; i++)
        if (!pct_encode(raw[i], v[i], sizeof(v[i])))
            return -1;
    struct tm tm;
    time_t st = (time_t)t->start, et = (time_t)t->end;
    gmtime_r(&st, &tm);
    strftime(v[5], sizeof(v[5]), "%Y-%m-%dT%H:%M:%SZ", &tm);
    gmtime_r(&et, &tm);
    strftime(v[6], sizeof(v[6]), "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(out, cap, "pid=%s&cid=%s&tid=%s&iss=%s&alg=%s&st=%s&et=%s", v[0], v[1], v[2],
                     v[3], CTOKEN_ALG, v[5], v[6]);
    if (n < 0 || (size_t)n >= cap || !key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        return -1;
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = md && EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
             EVP_DigestSign(md, sig, &siglen, (const unsigned char *)out, (size_t)n) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    if (!ok)
        return -1;
    char b64[1400];
    auth_b64url_encode(sig, siglen, b64, sizeof(b64));
    int m = snprintf(out + n, cap - (size_t)n, "&sig=%s", b64);
    return m < 0 || (size_t)m >= cap - (size_t)n ? -1 : 0;
}
