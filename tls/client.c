/* Client certificates: the trust the operator configured, CRLs, and the verdict per
 * connection. The handshake asks for a certificate but never fails for want of one: routes
 * decide (token clients have none). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tls-int.h"

struct tls_client_trust {
    X509_STORE *store;              /* roots + CRLs from files, owned */
    STACK_OF(X509) * intermediates; /* owned */
    STACK_OF(X509) * all;           /* roots and intermediates (CRL issuers), owned */
    unsigned nroots;
    bool check_revocation;
    int64_t crl_grace; /* seconds a CRL past nextUpdate still counts */
    unsigned nfail_open;
    unsigned char fail_open[TLS_FAIL_OPEN_MAX][20]; /* SHA-1 of CAs whose CRL may be missing */
};

/* What a check noticed besides its verdict, for the log line. */
struct tls_check_note {
    const struct tls_client_trust *t;
    bool grace_used, fail_open_used;
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
    sk_X509_pop_free(t->all, X509_free);
    free(t);
}

/* Hex SHA-1 thumbprint (colons and spaces allowed) into 20 bytes. */
static bool tls_parse_thumbprint(const char *s, unsigned char out[20])
{
    unsigned n = 0;
    for (; *s; s++) {
        if (*s == ':' || *s == ' ')
            continue;
        int hi = OPENSSL_hexchar2int((unsigned char)s[0]);
        int lo = s[1] ? OPENSSL_hexchar2int((unsigned char)s[1]) : -1;
        if (hi < 0 || lo < 0 || n == 20)
            return false;
        out[n++] = (unsigned char)(hi << 4 | lo);
        s++;
    }
    return n == 20;
}

struct tls_client_trust *tls_client_trust_new(const struct tls_client_trust_opts *o, char *err,
                                              size_t errlen)
{
    struct tls_client_trust *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->store = X509_STORE_new();
    t->intermediates = sk_X509_new_null();
    t->all = sk_X509_new_null();
    t->check_revocation = o->check_revocation;
    t->crl_grace = o->crl_grace;
    if (!t->store || !t->intermediates || !t->all)
        goto fail;
    for (size_t i = 0; i < o->nfail_open; i++) {
        if (t->nfail_open == TLS_FAIL_OPEN_MAX) {
            snprintf(err, errlen, "more than %d fail-open CAs", TLS_FAIL_OPEN_MAX);
            goto fail;
        }
        if (!tls_parse_thumbprint(o->fail_open[i], t->fail_open[t->nfail_open++])) {
            snprintf(err, errlen, "'%s' is not a SHA-1 thumbprint (40 hex digits)",
                     o->fail_open[i]);
            goto fail;
        }
    }
    for (size_t i = 0; i < o->ncert; i++)
        if (tls_read_certs(o->cert_files[i], t->all, err, errlen) < 0)
            goto fail;
    for (int i = 0; i < sk_X509_num(t->all); i++) {
        X509 *x = sk_X509_value(t->all, i);
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
    for (size_t i = 0; i < o->ncrl; i++)
        if (tls_read_crl(o->crl_files[i], t->store, err, errlen) != 0)
            goto fail;
    ERR_clear_error();
    return t;
fail:
    ERR_clear_error();
    tls_client_trust_free(t);
    return NULL;
}

const STACK_OF(X509) * tls_client_trust_cas(const struct tls_client_trust *t)
{
    return t->all;
}

bool tls_client_trust_checks_revocation(const struct tls_client_trust *t)
{
    return t->check_revocation;
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

static bool tls_is_fail_open(const struct tls_client_trust *t, X509 *ca)
{
    unsigned char md[20];
    unsigned int mdlen = 0;
    if (!ca || t->nfail_open == 0 || !X509_digest(ca, EVP_sha1(), md, &mdlen) || mdlen != 20)
        return false;
    for (unsigned i = 0; i < t->nfail_open; i++)
        if (memcmp(md, t->fail_open[i], 20) == 0)
            return true;
    return false;
}

/* Revocation data that is out of date within the grace, or missing for a CA the operator
 * chose fail-open for, does not fail the chain. Everything else keeps OpenSSL's verdict. */
static int tls_check_cb(int ok, X509_STORE_CTX *ctx)
{
    if (ok)
        return 1;
    struct tls_check_note *note = X509_STORE_CTX_get_app_data(ctx);
    /* OpenSSL checks a CRL's signer in a nested context of its own (extended CRL support):
     * the note belongs to the outermost one */
    for (X509_STORE_CTX *up = ctx; !note && (up = X509_STORE_CTX_get0_parent_ctx(up)) != NULL;)
        note = X509_STORE_CTX_get_app_data(up);
    if (!note)
        return ok;
    const struct tls_client_trust *t = note->t;
    int e = X509_STORE_CTX_get_error(ctx);
    if (e == X509_V_ERR_CRL_HAS_EXPIRED && t->crl_grace > 0) {
        X509_CRL *crl = X509_STORE_CTX_get0_current_crl(ctx);
        const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
        time_t limit = time(NULL) - (time_t)t->crl_grace;
        if (next && X509_cmp_time(next, &limit) > 0) {
            note->grace_used = true;
            return 1;
        }
    }
    if (e == X509_V_ERR_UNABLE_TO_GET_CRL || e == X509_V_ERR_CRL_HAS_EXPIRED ||
        e == X509_V_ERR_CRL_NOT_YET_VALID) {
        /* the CA whose CRL is wanted issued the certificate at the error depth */
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        X509 *x = X509_STORE_CTX_get_current_cert(ctx);
        X509 *ca = chain && depth + 1 < sk_X509_num(chain) ? sk_X509_value(chain, depth + 1)
                   : x && tls_is_self_signed(x)             ? x
                                                            : NULL;
        if (tls_is_fail_open(t, ca)) {
            note->fail_open_used = true;
            return 1;
        }
    }
    return 0;
}

enum tls_client_verdict tls_client_trust_check(const struct tls_client_trust *t,
                                               STACK_OF(X509_CRL) * crls, X509 *cert,
                                               STACK_OF(X509) * sent_chain, char *detail,
                                               size_t len)
{
    return tls_client_trust_explain(t, crls, cert, sent_chain, detail, len, NULL);
}

enum tls_client_verdict tls_client_trust_explain(const struct tls_client_trust *t,
                                                 STACK_OF(X509_CRL) * crls, X509 *cert,
                                                 STACK_OF(X509) * sent_chain, char *detail,
                                                 size_t len, STACK_OF(X509) * *chain)
{
    detail[0] = '\0';
    if (chain)
        *chain = NULL;
    if (!cert)
        return TLS_CLIENT_NONE;
    /* The chain is built from the configured intermediates only: what a client sends with
     * its certificate is ignored, so that no path the operator did not list can lead to a
     * root, and no certificate of the client's making takes part in a CRL check. */
    (void)sent_chain;
    STACK_OF(X509) *untrusted = sk_X509_dup(t->intermediates);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    enum tls_client_verdict v = TLS_CLIENT_INVALID;
    struct tls_check_note note = {t, false, false};
    if (ctx && X509_STORE_CTX_init(ctx, t->store, cert, untrusted) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        X509_STORE_CTX_set_app_data(ctx, &note);
        X509_STORE_CTX_set_verify_cb(ctx, tls_check_cb);
        if (t->check_revocation) {
            /* Extended CRL support is what keeps OpenSSL from taking a delta CRL for a
             * complete one (its delta check sits behind that flag). */
            X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL |
                                              X509_V_FLAG_USE_DELTAS |
                                              X509_V_FLAG_EXTENDED_CRL_SUPPORT);
            if (crls)
                X509_STORE_CTX_set0_crls(ctx, crls);
        }
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
        } else if (note.fail_open_used || note.grace_used) {
            snprintf(detail, len, "%s",
                     note.fail_open_used
                         ? "accepted without current revocation data (CA is fail-open)"
                         : "accepted on a CRL past its nextUpdate (within auth.crl_grace)");
        }
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return v;
}

/* Replaces OpenSSL's own chain check in the handshake: never abort; the verdict is made
 * once the handshake is over (tls_client_verdict_of), with the worker's current CRLs. */
static int tls_client_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    (void)sctx;
    (void)arg;
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
                                              STACK_OF(X509_CRL) * crls, bool again,
                                              const char **detail)
{
    if (detail)
        *detail = NULL;
    if (!t)
        return TLS_CLIENT_NONE;
    CRYPTO_THREAD_run_once(&tls_client_once, tls_client_ex_init);
    struct tls_client_result *r = SSL_get_ex_data(ssl, tls_client_ex);
    if (!r || again) {
        X509 *peer = SSL_get0_peer_certificate(ssl);
        if (!peer)
            return TLS_CLIENT_NONE;
        if (!r) {
            r = calloc(1, sizeof(*r));
            if (!r)
                return TLS_CLIENT_INVALID;
            SSL_set_ex_data(ssl, tls_client_ex, r);
        }
        /* A resumed session has no chain from the client: the configured intermediates
         * build it. */
        r->verdict = tls_client_trust_check(t, crls, peer, SSL_get_peer_cert_chain(ssl),
                                            r->detail, sizeof(r->detail));
    }
    if (detail)
        *detail = r->detail;
    return r->verdict;
}

/* Appends the http(s) URIs of x's CRL distribution points (or of its Freshest CRL extension,
 * the delta CRLs) to urls, skipping ones already there. Returns the new count. */
static size_t tls_cdp_urls(const void *ext_owner, bool is_crl, int nid, char (*urls)[TLS_URL_MAX],
                           size_t n, size_t max)
{
    STACK_OF(DIST_POINT) *dps =
        is_crl ? X509_CRL_get_ext_d2i(ext_owner, nid, NULL, NULL)
               : X509_get_ext_d2i(ext_owner, nid, NULL, NULL);
    for (int i = 0; dps && i < sk_DIST_POINT_num(dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (!dp->distpoint || dp->distpoint->type != 0)
            continue;
        GENERAL_NAMES *names = dp->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names); j++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, j);
            if (gn->type != GEN_URI)
                continue;
            const char *u = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
            int ul = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            if (ul <= 0 || ul >= TLS_URL_MAX || memchr(u, '\0', (size_t)ul) ||
                (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0))
                continue;
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = strlen(urls[k]) == (size_t)ul && memcmp(urls[k], u, (size_t)ul) == 0;
            if (seen || n == max)
                continue;
            memcpy(urls[n], u, (size_t)ul);
            urls[n][ul] = '\0';
            n++;
        }
    }
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
    ERR_clear_error();
    return n;
}

size_t tls_cert_crl_urls(X509 *x, char (*urls)[TLS_URL_MAX], size_t n, size_t max)
{
    n = tls_cdp_urls(x, false, NID_crl_distribution_points, urls, n, max);
    return tls_cdp_urls(x, false, NID_freshest_crl, urls, n, max);
}

size_t tls_crl_delta_urls(X509_CRL *crl, char (*urls)[TLS_URL_MAX], size_t n, size_t max)
{
    return tls_cdp_urls(crl, true, NID_freshest_crl, urls, n, max);
}

size_t tls_client_trust_crl_urls(const struct tls_client_trust *t, X509 *cert,
                                 STACK_OF(X509) * sent_chain, char (*urls)[TLS_URL_MAX],
                                 size_t max)
{
    /* Only a certificate whose chain verifies may make the gateway fetch anything: the URLs
     * inside a forged certificate must never be visited. */
    (void)sent_chain;
    STACK_OF(X509) *untrusted = sk_X509_dup(t->intermediates);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    size_t n = 0;
    if (ctx && X509_STORE_CTX_init(ctx, t->store, cert, untrusted) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (X509_verify_cert(ctx) == 1) {
            STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
            for (int i = 0; i < sk_X509_num(chain); i++)
                n = tls_cert_crl_urls(sk_X509_value(chain, i), urls, n, max);
        }
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    ERR_clear_error();
    return n;
}

size_t tls_client_trust_ca_crl_urls(const struct tls_client_trust *t, char (*urls)[TLS_URL_MAX],
                                    size_t max)
{
    size_t n = 0;
    for (int i = 0; i < sk_X509_num(t->all); i++)
        n = tls_cert_crl_urls(sk_X509_value(t->all, i), urls, n, max);
    return n;
}

bool tls_crl_revokes(X509_CRL *crl, X509 *cert)
{
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0)
        return false;
    X509_REVOKED *rev = NULL;
    int r = X509_CRL_get0_by_cert(crl, &rev, cert);
    /* 2 is an entry with reason removeFromCRL (a delta CRL lifting a hold) */
    return r == 1;
}
