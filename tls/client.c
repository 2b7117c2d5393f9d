/* Client certificates: the trust the operator configured, CRLs, and the verdict per
 * connection. The handshake asks for a certificate but never fails for want of one: routes
 * decide (token clients have none). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tls-int.h"

struct tls_client_trust {
    X509_STORE *store;              /* roots + CRLs, owned */
    STACK_OF(X509) * intermediates; /* owned */
    unsigned nroots;
    bool check_revocation;
};

struct tls_client_result {
    enum tls_client_verdict verdict;
    char detail[200];
};

static int tls_client_ex = -1;
static CRYPTO_ONCE tls_client_once = CRYPTO_ONCE_STATIC_INIT;

static void tls_client_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                               void *argp)
{
    free(ptr);
}

static void tls_client_ex_init(void)
{
    tls_client_ex = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_client_ex_free);
}

const char *tls_client_verdict_name(enum tls_client_verdict v)
{
    static const char *names[TLS_CLIENT_VERDICT_N] = {
        "no_certificate", "ok",          "untrusted",          "expired", "not_yet_valid",
        "revoked",        "wrong_usage", "revocation_unknown", "invalid"};
    return v < TLS_CLIENT_VERDICT_N ? names[v] : "invalid";
}

static bool tls_is_self_signed(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

int tls_read_certs(const char *path, STACK_OF(X509) * out, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "rb");
    if (!b) {
        snprintf(err, errlen, "cannot read %s", path);
        return -1;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        sk_X509_push(out, x);
        n++;
    }
    ERR_clear_error();
    if (n == 0) {
        (void)BIO_reset(b);
        x = d2i_X509_bio(b, NULL);
        if (x) {
            sk_X509_push(out, x);
            n++;
        }
    }
    BIO_free(b);
    ERR_clear_error();
    if (n == 0) {
        snprintf(err, errlen, "%s holds no certificate (PEM or DER)", path);
        return -1;
    }
    return n;
}

static int tls_read_crl(const char *path, X509_STORE *store, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "rb");
    if (!b) {
        snprintf(err, errlen, "cannot read CRL %s", path);
        return -1;
    }
    X509_CRL *crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    if (!crl) {
        (void)BIO_reset(b);
        crl = d2i_X509_CRL_bio(b, NULL);
    }
    BIO_free(b);
    ERR_clear_error();
    if (!crl) {
        snprintf(err, errlen, "%s is not a CRL (PEM or DER)", path);
        return -1;
    }
    X509_STORE_add_crl(store, crl);
    X509_CRL_free(crl);
    return 0;
}

void tls_client_trust_free(struct tls_client_trust *t)
{
    if (!t)
        return;
    X509_STORE_free(t->store);
    sk_X509_pop_free(t->intermediates, X509_free);
    free(t);
}

struct tls_client_trust *tls_client_trust_load(const char *const *cert_files, size_t ncert,
                                               const char *const *crl_files, size_t ncrl,
                                               bool check_revocation, char *err, size_t errlen)
{
    struct tls_client_trust *t = calloc(1, sizeof(*t));
    STACK_OF(X509) *all = sk_X509_new_null();
    if (!t || !all)
        goto fail;
    t->store = X509_STORE_new();
    t->intermediates = sk_X509_new_null();
    t->check_revocation = check_revocation;
    for (size_t i = 0; i < ncert; i++)
        if (tls_read_certs(cert_files[i], all, err, errlen) < 0)
            goto fail;
    for (int i = 0; i < sk_X509_num(all); i++) {
        X509 *x = sk_X509_value(all, i);
        if (tls_is_self_signed(x)) {
            X509_STORE_add_cert(t->store, x);
            t->nroots++;
        } else {
            X509_up_ref(x);
            sk_X509_push(t->intermediates, x);
        }
    }
    if (t->nroots == 0) {
        snprintf(err, errlen, "no root (self-signed) certificate among the trusted certificates");
        goto fail;
    }
    for (size_t i = 0; i < ncrl; i++)
        if (tls_read_crl(crl_files[i], t->store, err, errlen) != 0)
            goto fail;
    sk_X509_pop_free(all, X509_free);
    ERR_clear_error();
    return t;
fail:
    sk_X509_pop_free(all, X509_free);
    tls_client_trust_free(t);
    return NULL;
}

unsigned tls_client_trust_roots(const struct tls_client_trust *t)
{
    return t->nroots;
}

static enum tls_client_verdict tls_verdict_from(int e)
{
    switch (e) {
    case X509_V_OK:
        return TLS_CLIENT_OK;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return TLS_CLIENT_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return TLS_CLIENT_NOT_YET_VALID;
    case X509_V_ERR_CERT_REVOKED:
        return TLS_CLIENT_REVOKED;
    case X509_V_ERR_INVALID_PURPOSE:
        return TLS_CLIENT_WRONG_USAGE;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
        return TLS_CLIENT_REVOCATION_UNKNOWN;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return TLS_CLIENT_UNTRUSTED;
    default:
        return TLS_CLIENT_INVALID;
    }
}

enum tls_client_verdict tls_client_trust_check(const struct tls_client_trust *t, X509 *cert,
                                               STACK_OF(X509) * sent_chain, char *detail,
                                               size_t len)
{
    return tls_client_trust_explain(t, cert, sent_chain, detail, len, NULL);
}

enum tls_client_verdict tls_client_trust_explain(const struct tls_client_trust *t, X509 *cert,
                                                 STACK_OF(X509) * sent_chain, char *detail,
                                                 size_t len, STACK_OF(X509) * *chain)
{
    detail[0] = '\0';
    if (chain)
        *chain = NULL;
    if (!cert)
        return TLS_CLIENT_NONE;
    /* The chain comes from the configured intermediates (plus what the client sent, which
     * can only help build a path to a configured root, never stand in for one). */
    STACK_OF(X509) *untrusted = sk_X509_dup(t->intermediates);
    for (int i = 0; sent_chain && i < sk_X509_num(sent_chain); i++)
        sk_X509_push(untrusted, sk_X509_value(sent_chain, i));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    enum tls_client_verdict v = TLS_CLIENT_INVALID;
    if (ctx && X509_STORE_CTX_init(ctx, t->store, cert, untrusted) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (t->check_revocation)
            X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        int ok = X509_verify_cert(ctx);
        int e = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
        if (chain)
            *chain = X509_STORE_CTX_get1_chain(ctx);
        v = tls_verdict_from(e);
        if (v != TLS_CLIENT_OK) {
            X509 *at = X509_STORE_CTX_get_current_cert(ctx);
            char name[160] = "?";
            if (at)
                X509_NAME_oneline(e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                                          e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
                                          e == X509_V_ERR_UNABLE_TO_GET_CRL
                                      ? X509_get_issuer_name(at)
                                      : X509_get_subject_name(at),
                                  name, sizeof(name));
            const char *what = e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                                       e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
                                   ? "issuer not found among the trusted certificates"
                               : e == X509_V_ERR_UNABLE_TO_GET_CRL ? "no CRL from issuer"
                                                                   : "certificate";
            snprintf(detail, len, "%s (%s: %s)", X509_verify_cert_error_string(e), what, name);
        }
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return v;
}

/* Replaces OpenSSL's own chain check in the handshake: judge once, remember, never abort. */
static int tls_client_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    const struct tls_client_trust *t = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_client_result *r = calloc(1, sizeof(*r));
    if (!r)
        return 0;
    r->verdict =
        tls_client_trust_check(t, X509_STORE_CTX_get0_cert(sctx),
                               X509_STORE_CTX_get0_untrusted(sctx), r->detail, sizeof(r->detail));
    free(SSL_get_ex_data(ssl, tls_client_ex));
    SSL_set_ex_data(ssl, tls_client_ex, r);
    return 1;
}

void tls_client_ctx_setup(SSL_CTX *ctx, const struct tls_client_trust *t)
{
    CRYPTO_THREAD_run_once(&tls_client_once, tls_client_ex_init);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(t->store);
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x)
            sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(x)));
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, tls_client_verify_cb, (void *)t);
}

enum tls_client_verdict tls_client_verdict_of(SSL *ssl, const struct tls_client_trust *t,
                                              const char **detail)
{
    if (detail)
        *detail = NULL;
    if (!t || tls_client_ex < 0)
        return TLS_CLIENT_NONE;
    struct tls_client_result *r = SSL_get_ex_data(ssl, tls_client_ex);
    if (!r) {
        X509 *peer = SSL_get0_peer_certificate(ssl);
        if (!peer)
            return TLS_CLIENT_NONE;
        r = calloc(1, sizeof(*r));
        if (!r)
            return TLS_CLIENT_INVALID;
        r->verdict = tls_client_trust_check(t, peer, SSL_get_peer_cert_chain(ssl), r->detail,
                                            sizeof(r->detail));
        SSL_set_ex_data(ssl, tls_client_ex, r);
    }
    if (detail)
        *detail = r->detail;
    return r->verdict;
}
