/* auth/identity.c: the X-CMG- header family, the identity headers written for the connection
 * point, and the identity read from a client certificate made here with OpenSSL's API. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static bool is_identity(const char *name)
{
    return auth_is_identity_header(name, strlen(name));
}

Test(identity, header_family)
{
    /* '_' counts as '-': servers that map headers to variables make them the same */
    static const char *const ours[] = {"X-CMG-",          "X-CMG-Auth-Method",
                                       "x-cmg-auth-method", "X-Cmg-Tenant-Id",
                                       "X-CMG-CLIENT-CERT-SUBJECT", "X_CMG_Auth_Method",
                                       "X-CMG_", "x_cmg-tenant-id"};
    static const char *const theirs[] = {"",          "X",           "X-CMG",           "X-CMGx",
                                         "X-CMGAuth", "X-Forwarded-For", "Host",
                                         "CMG-X-",    "XX-CMG-Auth", " X-CMG-Auth", "X.CMG-A"};

    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        cr_expect(is_identity(ours[i]), "\"%s\" is the gateway's", ours[i]);
    for (size_t i = 0; i < sizeof theirs / sizeof theirs[0]; i++)
        cr_expect_not(is_identity(theirs[i]), "\"%s\" is not the gateway's", theirs[i]);
}

/* The length is what counts, not a terminating NUL: a name cut before the prefix ends is not
 * one of ours even when the bytes after it would make it so. */
Test(identity, header_family_is_length_bounded)
{
    const char *name = "X-CMG-Auth-Method";

    cr_expect_not(auth_is_identity_header(name, 5), "\"X-CMG\" (5 bytes)");
    cr_expect(auth_is_identity_header(name, 6), "\"X-CMG-\" (6 bytes)");
    cr_expect_not(auth_is_identity_header("X-CMGxAuth", 10));
}

Test(identity, method_names)
{
    cr_expect_str_eq(auth_method_name(AUTH_METHOD_NONE), "none");
    cr_expect_str_eq(auth_method_name(AUTH_METHOD_CLIENT_CERT), "client-certificate");
    cr_expect_str_eq(auth_method_name(AUTH_METHOD_ENTRA), "entra-token");
    cr_expect_str_eq(auth_method_name(AUTH_METHOD_SITE_TOKEN), "site-token");
    cr_expect_str_eq(auth_method_name(AUTH_METHOD_BULK_TOKEN), "bulk-token");
    cr_expect_str_eq(auth_method_name((enum auth_method)99), "none", "out of range");
    cr_expect_str_eq(auth_method_name((enum auth_method) - 1), "none", "negative");
}

/* Every field set: one line per field, in the documented order. */
static struct auth_identity full_identity(void)
{
    struct auth_identity id;

    memset(&id, 0, sizeof id);
    id.method = AUTH_METHOD_ENTRA;
    snprintf(id.thumbprint, sizeof id.thumbprint, "%s", "0123456789ABCDEF0123456789ABCDEF01234567");
    snprintf(id.subject, sizeof id.subject, "%s", "CN=client-valid,O=Example");
    snprintf(id.issuer, sizeof id.issuer, "%s", "CN=Issuing CA,O=Example");
    snprintf(id.token_subject, sizeof id.token_subject, "%s", "oid-1");
    snprintf(id.token_type, sizeof id.token_type, "%s", "Device");
    snprintf(id.device_id, sizeof id.device_id, "%s", "dev-1");
    snprintf(id.tenant, sizeof id.tenant, "%s", "72f988bf-86f1-41af-91ab-2d7cd011db47");
    snprintf(id.app_id, sizeof id.app_id, "%s", "app-1");
    return id;
}

#define FULL_HEADERS                                                                               \
    "X-CMG-Auth-Method: entra-token\r\n"                                                           \
    "X-CMG-Client-Cert-Thumbprint: 0123456789ABCDEF0123456789ABCDEF01234567\r\n"                   \
    "X-CMG-Client-Cert-Subject: CN=client-valid,O=Example\r\n"                                     \
    "X-CMG-Client-Cert-Issuer: CN=Issuing CA,O=Example\r\n"                                        \
    "X-CMG-Token-Subject: oid-1\r\n"                                                               \
    "X-CMG-Token-Type: Device\r\n"                                                                 \
    "X-CMG-Device-Id: dev-1\r\n"                                                                   \
    "X-CMG-Tenant-Id: 72f988bf-86f1-41af-91ab-2d7cd011db47\r\n"                                    \
    "X-CMG-Client-App-Id: app-1\r\n"

Test(identity, headers_all_fields)
{
    struct auth_identity id = full_identity();
    char buf[2048];
    size_t n = auth_identity_headers(&id, buf, sizeof buf);

    cr_expect_str_eq(buf, FULL_HEADERS);
    cr_expect_eq(n, strlen(FULL_HEADERS));
}

Test(identity, headers_only_nonempty_fields)
{
    struct auth_identity id;
    char buf[1024];
    size_t n;

    memset(&id, 0, sizeof id);
    n = auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: none\r\n", "the method is always told");
    cr_expect_eq(n, strlen(buf));

    id.method = AUTH_METHOD_SITE_TOKEN;
    snprintf(id.token_subject, sizeof id.token_subject, "%s", "GUID:abc");
    snprintf(id.token_type, sizeof id.token_type, "%s", "Device");
    n = auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: site-token\r\n"
                          "X-CMG-Token-Subject: GUID:abc\r\n"
                          "X-CMG-Token-Type: Device\r\n");
    cr_expect_eq(n, strlen(buf));

    memset(&id, 0, sizeof id);
    id.method = AUTH_METHOD_CLIENT_CERT;
    snprintf(id.thumbprint, sizeof id.thumbprint, "%s", "AB");
    snprintf(id.issuer, sizeof id.issuer, "%s", "CN=CA");
    n = auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: client-certificate\r\n"
                          "X-CMG-Client-Cert-Thumbprint: AB\r\n"
                          "X-CMG-Client-Cert-Issuer: CN=CA\r\n");
    cr_expect_eq(n, strlen(buf));
}

/* True when s holds a CR, LF or another control character. */
static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Each line of buf, split on "\r\n", must be free of control characters and start with the
 * family's prefix; returns the number of lines. */
static size_t check_lines(const char *buf)
{
    size_t lines = 0;

    while (*buf) {
        const char *end = strstr(buf, "\r\n");
        char line[512];

        cr_assert_not_null(end, "unterminated line \"%s\"", buf);
        cr_assert_lt((size_t)(end - buf), sizeof line);
        memcpy(line, buf, (size_t)(end - buf));
        line[end - buf] = '\0';
        cr_expect_not(has_control(line), "control character in \"%s\"", line);
        cr_expect_eq(strncmp(line, "X-CMG-", 6), 0, "injected line \"%s\"", line);
        lines++;
        buf = end + 2;
    }
    return lines;
}

/* Token fields come from the token's JSON, which may hold any character. */
Test(identity, token_values_cannot_inject)
{
    struct auth_identity id;
    char buf[2048];

    memset(&id, 0, sizeof id);
    id.method = AUTH_METHOD_ENTRA;
    snprintf(id.token_subject, sizeof id.token_subject, "%s", "oid\r\nX-CMG-Auth-Method: none");
    snprintf(id.token_type, sizeof id.token_type, "%s", "a\nb");
    snprintf(id.device_id, sizeof id.device_id, "%s", "d\te\x01\x1f\x7f");
    snprintf(id.tenant, sizeof id.tenant, "%s", "t\rX");
    snprintf(id.app_id, sizeof id.app_id, "%s", "app\r\n\r\nbody");
    auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: entra-token\r\n"
                          "X-CMG-Token-Subject: oid??X-CMG-Auth-Method: none\r\n"
                          "X-CMG-Token-Type: a?b\r\n"
                          "X-CMG-Device-Id: d?e???\r\n"
                          "X-CMG-Tenant-Id: t?X\r\n"
                          "X-CMG-Client-App-Id: app????body\r\n");
    cr_expect_eq(check_lines(buf), 6);
}

/* Non-ASCII (UTF-8) bytes are not control characters and pass unchanged. */
Test(identity, utf8_values_pass)
{
    struct auth_identity id;
    char buf[512];

    memset(&id, 0, sizeof id);
    id.method = AUTH_METHOD_SITE_TOKEN;
    snprintf(id.token_type, sizeof id.token_type, "%s", "Ger\xc3\xa4t");
    auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: site-token\r\n"
                          "X-CMG-Token-Type: Ger\xc3\xa4t\r\n");
}

/* The certificate fields are public members too: whatever fills them, the header writer
 * promises values made safe for a header line. */
Test(identity, certificate_values_cannot_inject)
{
    struct auth_identity id;
    char buf[2048];

    memset(&id, 0, sizeof id);
    id.method = AUTH_METHOD_CLIENT_CERT;
    snprintf(id.thumbprint, sizeof id.thumbprint, "%s", "AB\r\nX-Evil: 1");
    snprintf(id.subject, sizeof id.subject, "%s", "CN=a\r\nX-Evil: 2");
    snprintf(id.issuer, sizeof id.issuer, "%s", "CN=b\nX-Evil: 3");
    auth_identity_headers(&id, buf, sizeof buf);
    cr_expect_str_eq(buf, "X-CMG-Auth-Method: client-certificate\r\n"
                          "X-CMG-Client-Cert-Thumbprint: AB??X-Evil: 1\r\n"
                          "X-CMG-Client-Cert-Subject: CN=a??X-Evil: 2\r\n"
                          "X-CMG-Client-Cert-Issuer: CN=b?X-Evil: 3\r\n");
    cr_expect_eq(check_lines(buf), 4);
}

/* Whatever the buffer's size, the output is the longest run of whole lines that fits with
 * its NUL, and nothing is written past the buffer. */
Test(identity, small_buffers_get_whole_lines)
{
    struct auth_identity id = full_identity();
    const char *full = FULL_HEADERS;
    size_t full_len = strlen(full);
    char *buf = malloc(full_len + 64);

    cr_assert_not_null(buf);
    for (size_t len = 1; len <= full_len + 2; len++) {
        size_t want = 0, n;

        /* the longest prefix of whole lines shorter than len */
        for (const char *p = full; (p = strstr(p, "\r\n")) != NULL; p += 2) {
            size_t upto = (size_t)(p + 2 - full);
            if (upto < len)
                want = upto;
        }
        memset(buf, '#', full_len + 64);
        n = auth_identity_headers(&id, buf, len);
        cr_assert_eq(n, want, "len %zu: wrote %zu, want %zu", len, n, want);
        cr_assert_eq(buf[n], '\0', "len %zu: NUL-terminated", len);
        cr_assert_eq(memcmp(buf, full, n), 0, "len %zu: a prefix of the full output", len);
        for (size_t i = len; i < full_len + 64; i++)
            cr_assert_eq(buf[i], '#', "len %zu: byte %zu written past the buffer", len, i);
    }
    free(buf);
}

/* A zero-length buffer gets nothing at all, not even a NUL. */
Test(identity, zero_length_buffer_untouched)
{
    struct auth_identity id = full_identity();
    char buf[4] = "###";

    cr_expect_eq(auth_identity_headers(&id, buf, 0), 0);
    cr_expect_eq(buf[0], '#', "byte 0 written with len 0");
}

/* ---- identity from a certificate ---- */

static void add_entry(X509_NAME *n, const char *field, const char *value)
{
    cr_assert_eq(X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, (const unsigned char *)value,
                                            -1, -1, 0),
                 1, "%s=%s", field, value);
}

/* A certificate signed by a key of its own, with subject O=Example, CN=<cn> and issuer
 * O=Example, CN=Example Issuing CA (RFC 2253 lists the last RDN first). */
static X509 *make_cert(const char *cn)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *subject = X509_NAME_new(), *issuer = X509_NAME_new();

    cr_assert(key && x && subject && issuer);
    cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    add_entry(subject, "O", "Example");
    add_entry(subject, "CN", cn);
    add_entry(issuer, "O", "Example");
    add_entry(issuer, "CN", "Example Issuing CA");
    cr_assert_eq(X509_set_subject_name(x, subject), 1);
    cr_assert_eq(X509_set_issuer_name(x, issuer), 1);
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    X509_NAME_free(subject);
    X509_NAME_free(issuer);
    EVP_PKEY_free(key);
    return x;
}

Test(identity, from_certificate)
{
    X509 *x = make_cert("client-valid");
    struct auth_identity id;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char want[41], buf[2048], expected[2048];

    memset(&id, 0x5a, sizeof id); /* everything is overwritten */
    auth_identity_from_cert(&id, x);
    cr_expect_eq(id.method, AUTH_METHOD_CLIENT_CERT);

    cr_assert_eq(X509_digest(x, EVP_sha1(), md, &mdlen), 1);
    cr_assert_eq(mdlen, 20);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(want + 2 * i, 3, "%02X", md[i]);
    cr_expect_eq(strlen(id.thumbprint), 40);
    for (size_t i = 0; i < 40; i++)
        cr_expect(strchr("0123456789ABCDEF", id.thumbprint[i]) && id.thumbprint[i],
                  "thumbprint \"%s\": upper-case hex", id.thumbprint);
    cr_expect_str_eq(id.thumbprint, want);

    cr_expect_str_eq(id.subject, "CN=client-valid,O=Example");
    cr_expect_str_eq(id.issuer, "CN=Example Issuing CA,O=Example");
    cr_expect_str_eq(id.token_subject, "");
    cr_expect_str_eq(id.token_type, "");
    cr_expect_str_eq(id.device_id, "");
    cr_expect_str_eq(id.tenant, "");
    cr_expect_str_eq(id.app_id, "");

    auth_identity_headers(&id, buf, sizeof buf);
    snprintf(expected, sizeof expected,
             "X-CMG-Auth-Method: client-certificate\r\n"
             "X-CMG-Client-Cert-Thumbprint: %s\r\n"
             "X-CMG-Client-Cert-Subject: CN=client-valid,O=Example\r\n"
             "X-CMG-Client-Cert-Issuer: CN=Example Issuing CA,O=Example\r\n",
             want);
    cr_expect_str_eq(buf, expected);
    X509_free(x);
}

/* RFC 2253 escapes: a comma in a value is escaped, control characters become \XX (never a raw
 * CR or LF), UTF-8 passes as it is. */
Test(identity, from_certificate_escapes)
{
    X509 *x = make_cert("Smith, J\r\nX-CMG-Auth-Method: none");
    X509 *y = make_cert("Zo\xc3\xab");
    struct auth_identity id;

    auth_identity_from_cert(&id, x);
    cr_expect_not(has_control(id.subject), "subject \"%s\"", id.subject);
    cr_expect_str_eq(id.subject, "CN=Smith\\, J\\0D\\0AX-CMG-Auth-Method: none,O=Example");
    auth_identity_from_cert(&id, y);
    cr_expect_str_eq(id.subject, "CN=Zo\xc3\xab,O=Example");
    X509_free(y);
    X509_free(x);
}
