/* tls/devpki.c: the generated PKI is checked with OpenSSL's own chain verifier, the way the
 * gateway and Windows clients will use it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw; CMake defines it for the whole tree */
#endif
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define SERVICE "gw.cmg.test"
#define PASSWORD "s3cret pfx"

static char dir[64];
static char err[512];

static const struct tls_devpki_opts opts = {
    .service_name = SERVICE,
    .pfx_password = PASSWORD,
    .valid_days = 30,
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void dir_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cmg-devpki-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void pki_setup(void)
{
    dir_setup();
    cr_assert_eq(tls_devpki_init(dir, &opts, err, sizeof err), 0, "devpki: %s", err);
}

static void pki_teardown(void)
{
    if (dir[0])
        nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static char *path_of(const char *name)
{
    static char path[128];

    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* Caller frees with X509_free. */
static X509 *load_cert(const char *name)
{
    BIO *bio = BIO_new_file(path_of(name), "r");
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    cr_assert_not_null(x, "cannot read %s", name);
    return x;
}

/* Caller frees with X509_CRL_free. */
static X509_CRL *load_crl(const char *name)
{
    BIO *bio = BIO_new_file(path_of(name), "r");
    X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    cr_assert_not_null(crl, "cannot read %s", name);
    return crl;
}

/* Verifies leaf for purpose against the root, with the intermediate as untrusted chain.
 * crl_flags: 0, X509_V_FLAG_CRL_CHECK or ..._CHECK_ALL (then both CRLs are loaded).
 * Returns X509_V_OK or the verifier's error. */
static int verify(const char *leaf_name, int purpose, unsigned long crl_flags)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509 *root = load_cert("root-ca.crt");
    X509 *inter = load_cert("intermediate-ca.crt");
    X509 *leaf = load_cert(leaf_name);
    int rc;

    cr_assert(store && ctx && untrusted);
    cr_assert_eq(X509_STORE_add_cert(store, root), 1);
    cr_assert(sk_X509_push(untrusted, inter) > 0);
    if (crl_flags) {
        X509_CRL *ic = load_crl("intermediate.crl");
        X509_CRL *rc_ = load_crl("root.crl");

        cr_assert_eq(X509_STORE_add_crl(store, ic), 1);
        cr_assert_eq(X509_STORE_add_crl(store, rc_), 1);
        X509_CRL_free(ic);
        X509_CRL_free(rc_);
        X509_STORE_set_flags(store, crl_flags);
    }
    cr_assert_eq(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
    cr_assert_eq(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
    X509_verify_cert(ctx);
    rc = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_free(leaf);
    X509_free(inter);
    X509_free(root);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}

static void expect_verify(const char *leaf, int purpose, unsigned long flags, int want)
{
    int got = verify(leaf, purpose, flags);

    cr_expect_eq(got, want, "%s: got \"%s\", want \"%s\"", leaf, X509_verify_cert_error_string(got),
                 X509_verify_cert_error_string(want));
}

TestSuite(devpki, .init = pki_setup, .fini = pki_teardown);
/* Tests that make their own PKI, or none. */
TestSuite(devpki_opts, .init = dir_setup, .fini = pki_teardown);

Test(devpki, server_and_valid_client_verify)
{
    expect_verify("server.crt", X509_PURPOSE_SSL_SERVER, 0, X509_V_OK);
    expect_verify("server-rsa.crt", X509_PURPOSE_SSL_SERVER, 0, X509_V_OK);
    expect_verify("client-valid.crt", X509_PURPOSE_SSL_CLIENT, 0, X509_V_OK);
    expect_verify("connector.crt", X509_PURPOSE_SSL_CLIENT, 0, X509_V_OK);
    expect_verify("connector.crt", X509_PURPOSE_SSL_SERVER, 0, X509_V_OK);
}

Test(devpki, key_usage_limits_purpose)
{
    expect_verify("client-valid.crt", X509_PURPOSE_SSL_SERVER, 0, X509_V_ERR_INVALID_PURPOSE);
    expect_verify("server.crt", X509_PURPOSE_SSL_CLIENT, 0, X509_V_ERR_INVALID_PURPOSE);
}

Test(devpki, expired_client_fails)
{
    expect_verify("client-expired.crt", X509_PURPOSE_SSL_CLIENT, 0, X509_V_ERR_CERT_HAS_EXPIRED);
}

Test(devpki, crl_revokes_only_the_revoked_client)
{
    /* Without the CRL the revoked client is a perfectly good certificate. */
    expect_verify("client-revoked.crt", X509_PURPOSE_SSL_CLIENT, 0, X509_V_OK);
    expect_verify("client-revoked.crt", X509_PURPOSE_SSL_CLIENT, X509_V_FLAG_CRL_CHECK,
                  X509_V_ERR_CERT_REVOKED);
    expect_verify("client-valid.crt", X509_PURPOSE_SSL_CLIENT, X509_V_FLAG_CRL_CHECK, X509_V_OK);
    /* CHECK_ALL also needs root.crl for the intermediate: proves root.crl is valid. */
    expect_verify("client-valid.crt", X509_PURPOSE_SSL_CLIENT,
                  X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL, X509_V_OK);
    expect_verify("client-revoked.crt", X509_PURPOSE_SSL_CLIENT,
                  X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL, X509_V_ERR_CERT_REVOKED);
}

Test(devpki, crl_fields)
{
    X509_CRL *crl = load_crl("intermediate.crl");
    X509 *inter = load_cert("intermediate-ca.crt");
    X509 *revoked = load_cert("client-revoked.crt");
    X509_REVOKED *entry = NULL;
    ASN1_INTEGER *number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    AUTHORITY_KEYID *aki = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL, NULL);
    int days = 0, secs = 0;

    cr_expect_eq(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
    cr_expect_eq(X509_CRL_verify(crl, X509_get0_pubkey(inter)), 1);
    X509 *connector_revoked = load_cert("connector-revoked.crt");
    cr_expect_eq(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
    cr_expect_eq(X509_CRL_get0_by_cert(crl, &entry, revoked), 1);
    cr_expect_eq(X509_CRL_get0_by_cert(crl, &entry, connector_revoked), 1);
    X509_free(connector_revoked);
    cr_assert_not_null(number);
    cr_expect_eq(ASN1_INTEGER_get(number), 1);
    cr_assert(aki && aki->keyid);
    cr_expect_eq(ASN1_OCTET_STRING_cmp(aki->keyid, X509_get0_subject_key_id(inter)), 0);
    cr_expect_eq(X509_cmp_time(X509_CRL_get0_lastUpdate(crl), NULL), -1, "lastUpdate is past");
    cr_assert_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_CRL_get0_nextUpdate(crl)), 1);
    cr_expect(days >= 6 && days <= 7, "nextUpdate in %d days", days);
    AUTHORITY_KEYID_free(aki);
    ASN1_INTEGER_free(number);
    X509_free(revoked);
    X509_free(inter);
    X509_CRL_free(crl);
}

Test(devpki, server_names)
{
    X509 *x = load_cert("server.crt");

    cr_expect_eq(X509_check_host(x, SERVICE, 0, 0, NULL), 1);
    cr_expect_eq(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    cr_expect_eq(X509_check_host(x, "other.cmg.test", 0, 0, NULL), 0);
    cr_expect_eq(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    cr_expect_eq(X509_check_ip_asc(x, "::1", 0), 1);
    cr_expect_eq(X509_check_ip_asc(x, "10.0.0.1", 0), 0);
    X509_free(x);
}

Test(devpki, ca_constraints)
{
    X509 *root = load_cert("root-ca.crt");
    X509 *inter = load_cert("intermediate-ca.crt");
    X509 *leaf = load_cert("server.crt");
    X509_NAME *n = X509_get_subject_name(inter);
    char cn[64] = "";
    int64_t serial = 0;

    cr_expect_eq(X509_check_ca(root), 1);
    cr_expect_eq(X509_check_ca(inter), 1);
    cr_expect_eq(X509_check_ca(leaf), 0);
    cr_expect_eq(X509_get_pathlen(inter), 0);
    cr_expect_eq(X509_get_pathlen(root), -1);
    X509_NAME_get_text_by_NID(n, NID_commonName, cn, sizeof cn);
    cr_expect_str_eq(cn, "CMG Dev Issuing CA");
    /* the leaf names the intermediate's key, the intermediate the root's */
    cr_expect_eq(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(inter)),
        0);
    cr_expect_eq(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(inter), X509_get0_subject_key_id(root)),
        0);
    /* a positive serial that fits 63 bits, different per certificate */
    cr_expect_eq(ASN1_INTEGER_get_int64(&serial, X509_get0_serialNumber(leaf)), 1);
    cr_expect_gt(serial, 0);
    cr_expect_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(inter)), 0);
    X509_free(leaf);
    X509_free(inter);
    X509_free(root);
}

static void check_pfx(const char *name, int key_type)
{
    BIO *bio = BIO_new_file(path_of(name), "rb");
    PKCS12 *p12 = bio ? d2i_PKCS12_bio(bio, NULL) : NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;

    cr_assert_not_null(p12, "cannot read %s", name);
    cr_expect_eq(PKCS12_verify_mac(p12, "wrong password", -1), 0, "%s", name);
    cr_expect_eq(PKCS12_parse(p12, "wrong password", &key, &cert, &ca), 0, "%s", name);
    cr_assert_eq(PKCS12_parse(p12, PASSWORD, &key, &cert, &ca), 1, "%s", name);
    cr_expect_eq(X509_check_private_key(cert, key), 1, "%s", name);
    cr_expect_eq(EVP_PKEY_get_base_id(key), key_type, "%s", name);
    cr_assert_eq(sk_X509_num(ca), 1, "%s: chain", name);
    cr_expect_eq(X509_check_issued(sk_X509_value(ca, 0), cert), X509_V_OK, "%s", name);
    sk_X509_pop_free(ca, X509_free);
    X509_free(cert);
    EVP_PKEY_free(key);
    PKCS12_free(p12);
    BIO_free(bio);
    ERR_clear_error();
}

Test(devpki, pfx_opens_with_the_password_only)
{
    check_pfx("server.pfx", EVP_PKEY_EC);
    check_pfx("server-rsa.pfx", EVP_PKEY_RSA);
    check_pfx("client-valid.pfx", EVP_PKEY_EC);
    check_pfx("connector.pfx", EVP_PKEY_EC);
}

Test(devpki, private_files_are_0600)
{
    static const char *const secret[] = {
        "root-ca.key",    "intermediate-ca.key", "server.key",        "server.pfx",
        "server-rsa.key", "server-rsa.pfx",      "client-valid.key",  "client-valid.pfx",
        "connector.key",  "connector.pfx",       "token-signing.key", "pfx-password.txt",
    };
    struct stat st;
    size_t i;

    for (i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        cr_assert_eq(stat(path_of(secret[i]), &st), 0, "%s missing", secret[i]);
        cr_expect_eq(st.st_mode & 07777, 0600, "%s: mode %o", secret[i], st.st_mode & 07777);
    }
    cr_assert_eq(stat(path_of("server.crt"), &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0644, "server.crt: mode %o", st.st_mode & 07777);
}

/* The key files are PKCS#8 and match their certificates. */
Test(devpki, keys_match_certificates)
{
    static const char *const base[] = {"root-ca",        "intermediate-ca", "server",
                                       "server-rsa",     "client-valid",    "client-revoked",
                                       "client-expired", "connector",       "token-signing"};
    char name[64], line[64];
    size_t i;

    for (i = 0; i < sizeof base / sizeof base[0]; i++) {
        FILE *f;
        EVP_PKEY *key;
        X509 *x;

        snprintf(name, sizeof name, "%s.key", base[i]);
        f = fopen(path_of(name), "r");
        cr_assert_not_null(f, "%s", name);
        cr_expect_not_null(fgets(line, sizeof line, f));
        cr_expect_str_eq(line, "-----BEGIN PRIVATE KEY-----\n", "%s", name);
        rewind(f);
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        cr_assert_not_null(key, "%s", name);
        snprintf(name, sizeof name, "%s.crt", base[i]);
        x = load_cert(name);
        cr_expect_eq(X509_check_private_key(x, key), 1, "%s", name);
        X509_free(x);
        EVP_PKEY_free(key);
    }
}

Test(devpki, chains_and_token_signing)
{
    BIO *bio = BIO_new_file(path_of("server-chain.pem"), "r");
    X509 *a = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    X509 *b = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    X509 *token = load_cert("token-signing.crt");
    char cn[64] = "";
    FILE *f;

    cr_assert(a && b);
    cr_expect_eq(X509_check_issued(b, a), X509_V_OK, "server-chain.pem: server, intermediate");
    X509_NAME_get_text_by_NID(X509_get_subject_name(token), NID_commonName, cn, sizeof cn);
    cr_expect_str_eq(cn, "SMS Token Signing");
    cr_expect_eq(EVP_PKEY_get_base_id(X509_get0_pubkey(token)), EVP_PKEY_RSA);
    cr_expect_eq(EVP_PKEY_get_bits(X509_get0_pubkey(token)), 2048);
    cr_expect(X509_get_key_usage(token) & KU_DIGITAL_SIGNATURE);
    f = fopen(path_of("pfx-password.txt"), "r");
    cr_assert_not_null(f);
    cr_expect_not_null(fgets(cn, sizeof cn, f));
    cr_expect_str_eq(cn, PASSWORD "\n");
    fclose(f);
    X509_free(token);
    X509_free(b);
    X509_free(a);
    BIO_free(bio);
}

/* Rerunning overwrites everything with a new PKI that still verifies. */
Test(devpki, rerun_replaces)
{
    X509 *before = load_cert("root-ca.crt");
    X509 *after;
    struct stat st;

    cr_assert_eq(chmod(path_of("server.key"), 0644), 0);
    cr_assert_eq(tls_devpki_init(dir, &opts, err, sizeof err), 0, "%s", err);
    after = load_cert("root-ca.crt");
    cr_expect_neq(X509_cmp(before, after), 0);
    expect_verify("server.crt", X509_PURPOSE_SSL_SERVER, 0, X509_V_OK);
    cr_assert_eq(stat(path_of("server.key"), &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0600, "a looser mode is tightened on rewrite");
    X509_free(after);
    X509_free(before);
}

/* Nested directories are created. */
Test(devpki_opts, creates_missing_directories)
{
    char sub[128];

    snprintf(sub, sizeof sub, "%s/a/b", dir);
    cr_assert_eq(tls_devpki_init(sub, &opts, err, sizeof err), 0, "%s", err);
    cr_expect_eq(access(path_of("a/b/server.pfx"), R_OK), 0);
    cr_expect_eq(access(path_of("server.pfx"), R_OK), -1, "nothing written beside a/");
}

struct bad_opts {
    const char *what;
    struct tls_devpki_opts opts;
    const char *want; /* substring of the message */
};

Test(devpki_opts, rejects_bad_options)
{
    static const struct bad_opts cases[] = {
        {"no service", {NULL, "pw", 30}, "service name"},
        {"space", {"a b.test", "pw", 30}, "service name \"a b.test\""},
        {"comma", {"a.test,DNS:evil", "pw", 30}, "service name"},
        {"too long",
         {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", "pw", 30},
         "at most 64"},
        {"empty password", {"gw.test", "", 30}, "password"},
        {"zero days", {"gw.test", "pw", 0}, "validity of 0 days"},
        {"past the CA", {"gw.test", "pw", 3651}, "validity of 3651 days"},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        cr_expect_eq(tls_devpki_init(dir, &cases[i].opts, err, sizeof err), -1, "%s",
                     cases[i].what);
        cr_expect_not_null(strstr(err, cases[i].want), "%s: message \"%s\"", cases[i].what, err);
    }
}

Test(devpki_opts, unwritable_directory_is_named)
{
    char file[128];
    FILE *f;

    snprintf(file, sizeof file, "%s/plain-file", dir);
    f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_expect_eq(tls_devpki_init(file, &opts, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "plain-file"), "message \"%s\"", err);
}

/* A service name that is an address goes into the SAN as an address. */
Test(devpki_opts, ip_service_name)
{
    struct tls_devpki_opts ip = opts;
    X509 *x;

    ip.service_name = "10.1.2.3";
    cr_assert_eq(tls_devpki_init(dir, &ip, err, sizeof err), 0, "%s", err);
    x = load_cert("server.crt");
    cr_expect_eq(X509_check_ip_asc(x, "10.1.2.3", 0), 1);
    X509_free(x);
}
