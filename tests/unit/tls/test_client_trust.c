/* tls/client.c: client certificates judged against the development PKI (tls_devpki_init) with
 * CRLs from files or handed to the check, fail-open CAs, CRL lookups and the CRL URLs a
 * certificate names. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw; CMake defines it for the whole tree */
#endif
#include <criterion/criterion.h>
#include <ctype.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

static char dir[64];
static char err[512];

static const struct tls_devpki_opts pki_opts = {
    .service_name = "gw.cmg.test",
    .pfx_password = "pw",
    .valid_days = 30,
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void pki_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cmg-trust-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(tls_devpki_init(dir, &pki_opts, err, sizeof err), 0, "devpki: %s", err);
}

static void pki_teardown(void)
{
    if (dir[0])
        nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(client_trust, .init = pki_setup, .fini = pki_teardown);
TestSuite(crl_urls);

/* Paths into the PKI directory; each call has its own buffer (up to 8 live at once). */
static const char *path_of(const char *name)
{
    static char paths[8][128];
    static unsigned next;
    char *p = paths[next++ % 8];

    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

/* Caller frees with X509_free. */
static X509 *load_cert(const char *name)
{
    FILE *f = fopen(path_of(name), "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

    if (f)
        fclose(f);
    cr_assert_not_null(x, "cannot read %s", name);
    return x;
}

/* Caller frees with X509_CRL_free. */
static X509_CRL *load_crl(const char *name)
{
    FILE *f = fopen(path_of(name), "r");
    X509_CRL *crl = f ? PEM_read_X509_CRL(f, NULL, NULL, NULL) : NULL;

    if (f)
        fclose(f);
    cr_assert_not_null(crl, "cannot read %s", name);
    return crl;
}

enum thumb_form { THUMB_UPPER, THUMB_LOWER, THUMB_UPPER_COLONS, THUMB_LOWER_COLONS };

/* The SHA-1 thumbprint of a certificate file, written in one of the accepted forms. */
static void thumbprint(const char *name, enum thumb_form form, char *out, size_t len)
{
    X509 *x = load_cert(name);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool colons = form == THUMB_UPPER_COLONS || form == THUMB_LOWER_COLONS;
    bool lower = form == THUMB_LOWER || form == THUMB_LOWER_COLONS;
    size_t o = 0;

    cr_assert_eq(X509_digest(x, EVP_sha1(), md, &mdlen), 1);
    cr_assert_eq(mdlen, 20);
    cr_assert_geq(len, 60);
    for (unsigned i = 0; i < mdlen; i++)
        o += (size_t)snprintf(out + o, len - o, lower ? "%s%02x" : "%s%02X", colons && i ? ":" : "",
                              md[i]);
    X509_free(x);
}

struct trust_setup {
    bool crl_files;
    bool check_revocation;
    const char *const *fail_open;
    size_t nfail_open;
};

static struct tls_client_trust *new_trust(const struct trust_setup *s)
{
    const char *certs[] = {path_of("root-ca.crt"), path_of("intermediate-ca.crt")};
    const char *crls[] = {path_of("intermediate.crl"), path_of("root.crl")};
    struct tls_client_trust_opts o = {
        .cert_files = certs,
        .ncert = 2,
        .crl_files = s->crl_files ? crls : NULL,
        .ncrl = s->crl_files ? 2 : 0,
        .check_revocation = s->check_revocation,
        .fail_open = s->fail_open,
        .nfail_open = s->nfail_open,
    };
    struct tls_client_trust *t;

    err[0] = '\0';
    t = tls_client_trust_new(&o, err, sizeof err);
    cr_assert_not_null(t, "trust: %s", err);
    cr_assert_eq(tls_client_trust_roots(t), 1);
    cr_assert_eq(tls_client_trust_checks_revocation(t), s->check_revocation);
    return t;
}

/* The verdict for a client certificate of the PKI (no chain sent: the configured
 * intermediate builds it). */
static enum tls_client_verdict judge(const struct tls_client_trust *t, STACK_OF(X509_CRL) * crls,
                                     const char *name, char *detail, size_t len)
{
    X509 *x = load_cert(name);
    enum tls_client_verdict v = tls_client_trust_check(t, crls, x, NULL, detail, len);

    X509_free(x);
    return v;
}

static void expect_verdict(const struct tls_client_trust *t, STACK_OF(X509_CRL) * crls,
                           const char *name, enum tls_client_verdict want, const char *what)
{
    char detail[256];
    enum tls_client_verdict got = judge(t, crls, name, detail, sizeof detail);

    cr_expect_eq(got, want, "%s: %s: got %s, want %s (%s)", what, name,
                 tls_client_verdict_name(got), tls_client_verdict_name(want), detail);
    if (want == TLS_CLIENT_OK && got == TLS_CLIENT_OK)
        cr_expect_str_eq(detail, "", "%s: %s: nothing to note", what, name);
    else if (want != TLS_CLIENT_OK)
        cr_expect_neq(detail[0], '\0', "%s: %s: a detail for the log", what, name);
}

/* (a) both CRL files */
Test(client_trust, crl_files)
{
    struct trust_setup s = {.crl_files = true, .check_revocation = true};
    struct tls_client_trust *t = new_trust(&s);
    char detail[256];

    expect_verdict(t, NULL, "client-valid.crt", TLS_CLIENT_OK, "CRL files");
    expect_verdict(t, NULL, "client-revoked.crt", TLS_CLIENT_REVOKED, "CRL files");
    expect_verdict(t, NULL, "client-expired.crt", TLS_CLIENT_EXPIRED, "CRL files");
    cr_expect_eq(judge(t, NULL, "client-revoked.crt", detail, sizeof detail), TLS_CLIENT_REVOKED);
    cr_expect_not_null(strstr(detail, "revoked"), "detail \"%s\"", detail);
    cr_expect_not_null(strstr(detail, "client-revoked"), "detail \"%s\"", detail);
    tls_client_trust_free(t);
}

/* No certificate at all is "none", whatever the trust. */
Test(client_trust, no_certificate)
{
    struct trust_setup s = {.crl_files = true, .check_revocation = true};
    struct tls_client_trust *t = new_trust(&s);
    char detail[64] = "x";

    cr_expect_eq(tls_client_trust_check(t, NULL, NULL, NULL, detail, sizeof detail),
                 TLS_CLIENT_NONE);
    cr_expect_str_eq(detail, "");
    tls_client_trust_free(t);
}

/* Without revocation checking the CRLs are not consulted; the expiry still counts. */
Test(client_trust, revocation_not_checked)
{
    struct trust_setup s = {.crl_files = true, .check_revocation = false};
    struct tls_client_trust *t = new_trust(&s);

    expect_verdict(t, NULL, "client-valid.crt", TLS_CLIENT_OK, "no revocation check");
    expect_verdict(t, NULL, "client-revoked.crt", TLS_CLIENT_OK, "no revocation check");
    expect_verdict(t, NULL, "client-expired.crt", TLS_CLIENT_EXPIRED, "no revocation check");
    tls_client_trust_free(t);
}

/* (b) revocation checked, no CRL anywhere */
Test(client_trust, no_crl_is_revocation_unknown)
{
    struct trust_setup s = {.crl_files = false, .check_revocation = true};
    struct tls_client_trust *t = new_trust(&s);
    char detail[256];

    cr_expect_eq(judge(t, NULL, "client-valid.crt", detail, sizeof detail),
                 TLS_CLIENT_REVOCATION_UNKNOWN, "detail \"%s\"", detail);
    cr_expect_not_null(strstr(detail, "no CRL from issuer"), "detail \"%s\"", detail);
    cr_expect_not_null(strstr(detail, "CMG Dev Issuing CA"), "detail \"%s\"", detail);
    expect_verdict(t, NULL, "client-revoked.crt", TLS_CLIENT_REVOCATION_UNKNOWN, "no CRL");
    tls_client_trust_free(t);
}

/* (c) both CAs fail-open: accepted, and the detail says why; every written form of the
 * thumbprint is accepted */
Test(client_trust, fail_open_both_cas)
{
    static const enum thumb_form forms[] = {THUMB_UPPER, THUMB_LOWER, THUMB_UPPER_COLONS,
                                            THUMB_LOWER_COLONS};

    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char root[64], inter[64], detail[256];
        const char *open[] = {root, inter};
        struct trust_setup s = {
            .crl_files = false, .check_revocation = true, .fail_open = open, .nfail_open = 2};
        struct tls_client_trust *t;
        enum tls_client_verdict v;

        thumbprint("root-ca.crt", forms[i], root, sizeof root);
        thumbprint("intermediate-ca.crt", forms[(i + 1) % 4], inter, sizeof inter);
        t = new_trust(&s);
        v = judge(t, NULL, "client-valid.crt", detail, sizeof detail);
        cr_expect_eq(v, TLS_CLIENT_OK, "fail-open %s, %s: got %s (%s)", root, inter,
                     tls_client_verdict_name(v), detail);
        cr_expect_str_eq(detail, "accepted without current revocation data (CA is fail-open)",
                         "fail-open %s, %s", root, inter);
        /* fail-open covers missing data only, not the certificate's own validity */
        expect_verdict(t, NULL, "client-expired.crt", TLS_CLIENT_EXPIRED, "fail-open");
        tls_client_trust_free(t);
    }
}

/* Only one of the two CAs fail-open: the other's missing CRL still counts. */
Test(client_trust, fail_open_one_ca_is_not_enough)
{
    char root[64], inter[64];
    const char *open_root[] = {root}, *open_inter[] = {inter};
    struct trust_setup s = {.crl_files = false, .check_revocation = true};
    struct tls_client_trust *t;

    thumbprint("root-ca.crt", THUMB_UPPER_COLONS, root, sizeof root);
    thumbprint("intermediate-ca.crt", THUMB_LOWER, inter, sizeof inter);

    s.fail_open = open_root;
    s.nfail_open = 1;
    t = new_trust(&s);
    expect_verdict(t, NULL, "client-valid.crt", TLS_CLIENT_REVOCATION_UNKNOWN, "root fail-open");
    tls_client_trust_free(t);

    s.fail_open = open_inter;
    t = new_trust(&s);
    expect_verdict(t, NULL, "client-valid.crt", TLS_CLIENT_REVOCATION_UNKNOWN,
                   "intermediate fail-open");
    tls_client_trust_free(t);
}

/* A CRL that is present is used even for a fail-open CA. */
Test(client_trust, fail_open_keeps_present_crls)
{
    char root[64], inter[64];
    const char *open[] = {root, inter};
    struct trust_setup s = {
        .crl_files = true, .check_revocation = true, .fail_open = open, .nfail_open = 2};
    struct tls_client_trust *t;

    thumbprint("root-ca.crt", THUMB_UPPER, root, sizeof root);
    thumbprint("intermediate-ca.crt", THUMB_UPPER, inter, sizeof inter);
    t = new_trust(&s);
    expect_verdict(t, NULL, "client-valid.crt", TLS_CLIENT_OK, "fail-open with CRLs");
    expect_verdict(t, NULL, "client-revoked.crt", TLS_CLIENT_REVOKED, "fail-open with CRLs");
    tls_client_trust_free(t);
}

/* (d) CRLs handed to the check instead of files */
Test(client_trust, crl_stack)
{
    struct trust_setup s = {.crl_files = false, .check_revocation = true};
    struct tls_client_trust *t = new_trust(&s);
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    STACK_OF(X509_CRL) *only_inter = sk_X509_CRL_new_null();

    cr_assert(crls && only_inter);
    sk_X509_CRL_push(crls, load_crl("intermediate.crl"));
    sk_X509_CRL_push(crls, load_crl("root.crl"));
    sk_X509_CRL_push(only_inter, load_crl("intermediate.crl"));

    expect_verdict(t, crls, "client-valid.crt", TLS_CLIENT_OK, "CRL stack");
    expect_verdict(t, crls, "client-revoked.crt", TLS_CLIENT_REVOKED, "CRL stack");
    expect_verdict(t, crls, "client-expired.crt", TLS_CLIENT_EXPIRED, "CRL stack");
    /* the root's CRL (about the intermediate) is needed as well */
    expect_verdict(t, only_inter, "client-valid.crt", TLS_CLIENT_REVOCATION_UNKNOWN,
                   "intermediate CRL only");
    /* and the stack is left to its owner: the same verdicts a second time */
    expect_verdict(t, crls, "client-valid.crt", TLS_CLIENT_OK, "CRL stack again");
    expect_verdict(t, crls, "client-revoked.crt", TLS_CLIENT_REVOKED, "CRL stack again");
    cr_expect_eq(sk_X509_CRL_num(crls), 2);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    sk_X509_CRL_pop_free(only_inter, X509_CRL_free);
    tls_client_trust_free(t);
}

/* (e) fail-open values that are not SHA-1 thumbprints */
Test(client_trust, malformed_fail_open)
{
    char good[64];
    const char *bad[] = {
        "",
        "not a thumbprint",
        "0123456789ABCDEF0123456789ABCDEF0123456",    /* 39 digits */
        "0123456789ABCDEF0123456789ABCDEF012345",     /* 38 */
        "0123456789ABCDEF0123456789ABCDEF0123456789", /* 42 */
        "0123456789ABCDEF0123456789ABCDEF0123456G",   /* not hex */
        "0:123456789ABCDEF0123456789ABCDEF01234567",  /* a digit cut from its pair */
        "0x0123456789ABCDEF0123456789ABCDEF012345",
    };
    const char *certs[] = {path_of("root-ca.crt"), path_of("intermediate-ca.crt")};

    thumbprint("root-ca.crt", THUMB_UPPER, good, sizeof good);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *open[] = {good, bad[i]};
        struct tls_client_trust_opts o = {.cert_files = certs,
                                          .ncert = 2,
                                          .check_revocation = true,
                                          .fail_open = open,
                                          .nfail_open = 2};
        struct tls_client_trust *t;

        err[0] = '\0';
        t = tls_client_trust_new(&o, err, sizeof err);
        cr_expect_null(t, "\"%s\" accepted", bad[i]);
        tls_client_trust_free(t);
        cr_expect_not_null(strstr(err, "is not a SHA-1 thumbprint"), "\"%s\": message \"%s\"",
                           bad[i], err);
        if (bad[i][0])
            cr_expect_not_null(strstr(err, bad[i]), "\"%s\": message \"%s\"", bad[i], err);
    }
}

Test(client_trust, too_many_fail_open)
{
    char good[64];
    const char *open[TLS_FAIL_OPEN_MAX + 1];
    const char *certs[] = {path_of("root-ca.crt")};
    struct tls_client_trust_opts o = {.cert_files = certs,
                                      .ncert = 1,
                                      .check_revocation = true,
                                      .fail_open = open,
                                      .nfail_open = TLS_FAIL_OPEN_MAX};
    struct tls_client_trust *t;

    thumbprint("root-ca.crt", THUMB_UPPER, good, sizeof good);
    for (size_t i = 0; i < TLS_FAIL_OPEN_MAX + 1; i++)
        open[i] = good;
    t = tls_client_trust_new(&o, err, sizeof err);
    cr_expect_not_null(t, "%zu fail-open CAs: %s", (size_t)TLS_FAIL_OPEN_MAX, err);
    tls_client_trust_free(t);
    o.nfail_open = TLS_FAIL_OPEN_MAX + 1;
    err[0] = '\0';
    t = tls_client_trust_new(&o, err, sizeof err);
    cr_expect_null(t);
    tls_client_trust_free(t);
    cr_expect_not_null(strstr(err, "more than 16 fail-open CAs"), "message \"%s\"", err);
}

/* (f) tls_crl_revokes */
Test(client_trust, crl_revokes)
{
    X509_CRL *inter_crl = load_crl("intermediate.crl");
    X509_CRL *root_crl = load_crl("root.crl");
    X509 *revoked = load_cert("client-revoked.crt");
    X509 *valid = load_cert("client-valid.crt");
    X509 *inter = load_cert("intermediate-ca.crt");

    cr_expect(tls_crl_revokes(inter_crl, revoked));
    cr_expect_not(tls_crl_revokes(inter_crl, valid));
    cr_expect_not(tls_crl_revokes(root_crl, revoked), "root.crl is not by the leaf's issuer");
    cr_expect_not(tls_crl_revokes(root_crl, inter), "root.crl lists nothing");
    cr_expect_not(tls_crl_revokes(inter_crl, inter), "intermediate.crl is not about the CA");
    X509_free(inter);
    X509_free(valid);
    X509_free(revoked);
    X509_CRL_free(root_crl);
    X509_CRL_free(inter_crl);
}

/* A CRL made here that lists `serial_of`'s serial, issued under `issuer_of`'s subject and
 * signed with `key`. */
static X509_CRL *make_crl(X509 *issuer_of, X509 *serial_of, EVP_PKEY *key)
{
    X509_CRL *crl = X509_CRL_new();
    X509_REVOKED *r = X509_REVOKED_new();
    ASN1_TIME *now = ASN1_TIME_adj(NULL, time(NULL), 0, 0);
    ASN1_TIME *next = ASN1_TIME_adj(NULL, time(NULL), 7, 0);

    cr_assert(crl && r && now && next);
    cr_assert_eq(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
    cr_assert_eq(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer_of)), 1);
    cr_assert_eq(X509_CRL_set1_lastUpdate(crl, now), 1);
    cr_assert_eq(X509_CRL_set1_nextUpdate(crl, next), 1);
    cr_assert_eq(X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(serial_of)), 1);
    cr_assert_eq(X509_REVOKED_set_revocationDate(r, now), 1);
    cr_assert_eq(X509_CRL_add0_revoked(crl, r), 1);
    cr_assert_eq(X509_CRL_sort(crl), 1);
    cr_assert_gt(X509_CRL_sign(crl, key, EVP_sha256()), 0);
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    return crl;
}

static EVP_PKEY *load_key(const char *name)
{
    FILE *f = fopen(path_of(name), "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

    if (f)
        fclose(f);
    cr_assert_not_null(k, "cannot read %s", name);
    return k;
}

/* The serial alone does not make a revocation: the CRL's issuer must be the certificate's. */
Test(client_trust, crl_revokes_needs_the_issuer)
{
    X509 *root = load_cert("root-ca.crt");
    X509 *inter = load_cert("intermediate-ca.crt");
    X509 *valid = load_cert("client-valid.crt");
    EVP_PKEY *root_key = load_key("root-ca.key");
    EVP_PKEY *inter_key = load_key("intermediate-ca.key");
    X509_CRL *by_inter = make_crl(inter, valid, inter_key);
    X509_CRL *by_root = make_crl(root, valid, root_key);

    cr_expect(tls_crl_revokes(by_inter, valid), "the intermediate lists client-valid");
    cr_expect_not(tls_crl_revokes(by_root, valid), "the root lists client-valid's serial");
    X509_CRL_free(by_root);
    X509_CRL_free(by_inter);
    EVP_PKEY_free(inter_key);
    EVP_PKEY_free(root_key);
    X509_free(valid);
    X509_free(inter);
    X509_free(root);
}

/* (g) tls_cert_crl_urls */

#define CDP_HTTP "http://crl.example.test/issuing.crl"
#define CDP_HTTPS "HTTPS://crl2.example.test/issuing.crl"
#define CDP_LDAP "ldap://ldap.example.test/cn=Issuing%20CA?certificateRevocationList"
#define DELTA_HTTP "http://crl.example.test/issuing+.crl"

static void add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(ext, "%s = %s", OBJ_nid2sn(nid), value);
    cr_assert_eq(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* A self-signed certificate with the given extensions (NULL: none of that kind). */
static X509 *make_cert(const char *cdp, const char *freshest)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();

    cr_assert(key && x && name);
    cr_assert_eq(X509_set_version(x, X509_VERSION_3), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    cr_assert_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                            (const unsigned char *)"cdp-test", -1, -1, 0),
                 1);
    cr_assert_eq(X509_set_subject_name(x, name), 1);
    cr_assert_eq(X509_set_issuer_name(x, name), 1);
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    if (cdp)
        add_ext(x, NID_crl_distribution_points, cdp);
    if (freshest)
        add_ext(x, NID_freshest_crl, freshest);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    X509_NAME_free(name);
    EVP_PKEY_free(key);
    return x;
}

static X509 *full_cert(void)
{
    return make_cert("URI:" CDP_HTTP ",URI:" CDP_LDAP ",URI:" CDP_HTTP ",URI:" CDP_HTTPS,
                     "URI:" DELTA_HTTP ",URI:" CDP_HTTP);
}

Test(crl_urls, http_only_no_duplicates)
{
    X509 *x = full_cert();
    char urls[8][TLS_URL_MAX];
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    size_t n;

    /* the certificate does carry all four distribution points */
    cr_assert_not_null(dps);
    cr_expect_eq(sk_DIST_POINT_num(dps), 4);
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);

    memset(urls, 0, sizeof urls);
    n = tls_cert_crl_urls(x, urls, 0, 8);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(urls[0], CDP_HTTP);
    cr_expect_str_eq(urls[1], CDP_HTTPS);
    cr_expect_str_eq(urls[2], DELTA_HTTP);
    cr_expect_str_eq(urls[3], "", "nothing past the count");
    X509_free(x);
}

Test(crl_urls, max_respected)
{
    X509 *x = full_cert();
    char urls[4][TLS_URL_MAX];

    memset(urls, 0, sizeof urls);
    cr_expect_eq(tls_cert_crl_urls(x, urls, 0, 0), 0);
    cr_expect_str_eq(urls[0], "");
    cr_expect_eq(tls_cert_crl_urls(x, urls, 0, 1), 1);
    cr_expect_str_eq(urls[0], CDP_HTTP);
    cr_expect_str_eq(urls[1], "");
    memset(urls, 0, sizeof urls);
    cr_expect_eq(tls_cert_crl_urls(x, urls, 0, 2), 2);
    cr_expect_str_eq(urls[1], CDP_HTTPS);
    cr_expect_str_eq(urls[2], "", "the delta URL did not fit");
    X509_free(x);
}

/* Appending after URLs already held: those are not repeated, and n counts them. */
Test(crl_urls, appends_without_duplicates)
{
    X509 *x = full_cert();
    char urls[8][TLS_URL_MAX];
    size_t n;

    memset(urls, 0, sizeof urls);
    snprintf(urls[0], TLS_URL_MAX, "%s", "http://other.example.test/a.crl");
    snprintf(urls[1], TLS_URL_MAX, "%s", DELTA_HTTP);
    n = tls_cert_crl_urls(x, urls, 2, 8);
    cr_assert_eq(n, 4);
    cr_expect_str_eq(urls[0], "http://other.example.test/a.crl");
    cr_expect_str_eq(urls[1], DELTA_HTTP);
    cr_expect_str_eq(urls[2], CDP_HTTP);
    cr_expect_str_eq(urls[3], CDP_HTTPS);
    cr_expect_eq(tls_cert_crl_urls(x, urls, n, 8), n, "a second pass adds nothing");
    X509_free(x);
}

Test(crl_urls, certificates_without_http_points)
{
    X509 *none = make_cert(NULL, NULL);
    X509 *ldap = make_cert("URI:" CDP_LDAP ",URI:file:///etc/crl.pem", NULL);
    X509 *delta_only = make_cert(NULL, "URI:" DELTA_HTTP);
    char urls[4][TLS_URL_MAX];

    memset(urls, 0, sizeof urls);
    cr_expect_eq(tls_cert_crl_urls(none, urls, 0, 4), 0);
    cr_expect_eq(tls_cert_crl_urls(ldap, urls, 0, 4), 0);
    cr_expect_str_eq(urls[0], "");
    cr_expect_eq(tls_cert_crl_urls(delta_only, urls, 0, 4), 1);
    cr_expect_str_eq(urls[0], DELTA_HTTP);
    X509_free(delta_only);
    X509_free(ldap);
    X509_free(none);
}
