/* Site token signers: which certificates load, and the thumbprint that selects them. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jwt.h"

static char dir[64];

static void write_cert(const char *name, EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"SMS Token Signing", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, key, EVP_sha256());
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    PEM_write_X509(fp, x);
    fclose(fp);
    X509_free(x);
}

Test(site, signers_load_rsa_only)
{
    strcpy(dir, "/tmp/cmg-site-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
    write_cert("rsa.pem", rsa);
    write_cert("ec.pem", ec);
    struct auth_site_keys keys;
    memset(&keys, 0, sizeof(keys));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/rsa.pem", dir);
    cr_assert_eq(auth_site_keys_add_file(&keys, path, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(keys.n, 1);
    cr_assert_eq(strlen(keys.signers[0].x5t), 27, "SHA-1 in base64url: %s", keys.signers[0].x5t);
    snprintf(path, sizeof(path), "%s/ec.pem", dir);
    cr_assert_eq(auth_site_keys_add_file(&keys, path, err, sizeof(err)), -1);
    cr_assert(strstr(err, "RSA"), "%s", err);
    snprintf(path, sizeof(path), "%s/missing.pem", dir);
    cr_assert_eq(auth_site_keys_add_file(&keys, path, err, sizeof(err)), -1);
    cr_assert_eq(keys.n, 1);
    cr_assert(auth_bulk_token_allowed("/CCM_STS", 8));
    cr_assert(auth_bulk_token_allowed("/ccm_system/request", 19));
    cr_assert_not(auth_bulk_token_allowed("/SMS_MP/.sms_aut", 16));
    cr_assert_not(auth_bulk_token_allowed("/CCM_S", 6));
    auth_site_keys_clear(&keys);
    cr_assert_eq(keys.n, 0);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    snprintf(path, sizeof(path), "%s/rsa.pem", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ec.pem", dir);
    unlink(path);
    rmdir(dir);
}
