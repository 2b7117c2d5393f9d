/* cmg-bench: a set of client certificates made at start, signed by the issuing CA of the
 * development PKI (cmgctl pki init writes intermediate-ca.crt and intermediate-ca.key), so that
 * thousands of clients present distinct certificates without thousands of files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "bench.h"

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static X509 *make_one(X509 *ca, EVP_PKEY *ca_key, EVP_PKEY *key, unsigned i)
{
    X509 *x = X509_new();
    unsigned char serial[16];
    char cn[64];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *sn = NULL;
    if (!x || RAND_bytes(serial, sizeof(serial)) != 1)
        goto fail;
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    sn = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    if (!sn || X509_set_version(x, 2) != 1 || X509_set_serialNumber(x, sn) != 1)
        goto fail;
    /* valid from an hour ago, for a week, but never past the CA */
    time_t now = time(NULL);
    if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 7, 0, &now))
        goto fail;
    if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
        !X509_set1_notAfter(x, X509_get0_notAfter(ca)))
        goto fail;
    snprintf(cn, sizeof(cn), "bench-client-%05u", i);
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cmg-bench", -1,
                                    -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1 || X509_set_pubkey(x, key) != 1)
        goto fail;
    if (add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
        add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
        add_ext(x, ca, NID_ext_key_usage, "clientAuth") ||
        add_ext(x, ca, NID_subject_key_identifier, "hash") ||
        add_ext(x, ca, NID_authority_key_identifier, "keyid"))
        goto fail;
    if (X509_sign(x, ca_key, EVP_sha256()) <= 0)
        goto fail;
    ASN1_INTEGER_free(sn);
    BN_free(bn);
    return x;
fail:
    ASN1_INTEGER_free(sn);
    BN_free(bn);
    X509_free(x);
    return NULL;
}

int bench_certs_make(const char *ca_cert, const char *ca_key, unsigned n, struct bench_cert **out,
                     char *err, size_t errlen)
{
    X509 *ca = NULL;
    EVP_PKEY *cakey = NULL;
    struct bench_cert *certs = NULL;
    unsigned made = 0;
    FILE *f = fopen(ca_cert, "r");
    if (f) {
        ca = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!ca) {
        snprintf(err, errlen, "%s: not a PEM certificate", ca_cert);
        goto fail;
    }
    f = fopen(ca_key, "r");
    if (f) {
        cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!cakey || X509_check_private_key(ca, cakey) != 1) {
        snprintf(err, errlen, "%s: not the PEM private key of %s", ca_key, ca_cert);
        goto fail;
    }
    certs = calloc(n, sizeof(*certs));
    if (!certs) {
        snprintf(err, errlen, "out of memory for %u certificates", n);
        goto fail;
    }
    for (made = 0; made < n; made++) {
        certs[made].k = EVP_EC_gen("P-256");
        if (!certs[made].k) {
            snprintf(err, errlen, "EC key generation failed");
            goto fail;
        }
        certs[made].x = make_one(ca, cakey, certs[made].k, made);
        if (!certs[made].x) {
            unsigned long e = ERR_get_error();
            snprintf(err, errlen, "signing client certificate %u failed: %s", made,
                     e ? ERR_reason_error_string(e) : "?");
            made++;
            goto fail;
        }
    }
    X509_free(ca);
    EVP_PKEY_free(cakey);
    *out = certs;
    return 0;
fail:
    bench_certs_free(certs, made);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    return -1;
}

void bench_certs_free(struct bench_cert *certs, unsigned n)
{
    if (!certs)
        return;
    for (unsigned i = 0; i < n; i++) {
        X509_free(certs[i].x);
        EVP_PKEY_free(certs[i].k);
    }
    free(certs);
}
