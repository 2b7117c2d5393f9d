/* Server SSL_CTX: certificate from PFX or PEM, TLS 1.2 floor, AEAD suites, ALPN, shared
 * ticket keys, small idle footprint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tls-int.h"

/* CBC suites that TLS 1.0/1.1 clients need; only added when the TLS 1.2 floor is off. */
#define TLS_LEGACY_CIPHERS                                                                         \
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"

struct tls_ctx_data {
    struct tls_ticket_keys keys; /* count 0: OpenSSL's own per-process keys */
    char alpn[32];
    unsigned char alpn_len;
};

static int tls_ex_index = -1;
static CRYPTO_ONCE tls_ex_once = CRYPTO_ONCE_STATIC_INIT;

static void tls_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    if (ptr) {
        OPENSSL_cleanse(ptr, sizeof(struct tls_ctx_data));
        free(ptr);
    }
}

static void tls_ex_init(void)
{
    tls_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_ex_free);
}

static struct tls_ctx_data *tls_ctx_data_of(SSL_CTX *ctx)
{
    return SSL_CTX_get_ex_data(ctx, tls_ex_index);
}

static void tls_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
    ERR_clear_error();
}

/* RFC 5077 ticket keys from the shared file: encrypt with keys[0], decrypt with any. */
static int tls_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_ctx_data *d = tls_ctx_data_of(SSL_get_SSL_CTX(ssl));
    const struct tls_ticket_key *k = NULL;
    OSSL_PARAM params[2];
    if (enc) {
        k = &d->keys.keys[0];
        if (RAND_bytes(iv, 16) <= 0)
            return -1;
        memcpy(key_name, k->name, TLS_TICKET_NAME_LEN);
    } else {
        for (unsigned i = 0; i < d->keys.count; i++)
            if (memcmp(key_name, d->keys.keys[i].name, TLS_TICKET_NAME_LEN) == 0)
                k = &d->keys.keys[i];
        if (!k)
            return 0; /* unknown key: full handshake, new ticket */
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(hctx, k->hmac_key, TLS_TICKET_SECRET_LEN, params))
        return -1;
    if (enc) {
        if (!EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv))
            return -1;
        return 1;
    }
    if (!EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv))
        return -1;
    /* 2 = valid, but encrypted with an older key: issue a fresh ticket under the current one */
    return k == &d->keys.keys[0] ? 1 : 2;
}

static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tls_ctx_data *d = tls_ctx_data_of(SSL_get_SSL_CTX(ssl));
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == d->alpn_len && memcmp(in + i + 1, d->alpn, l) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int tls_load_pfx(SSL_CTX *ctx, const struct tls_server_opts *o, char *err, size_t errlen)
{
    int rc = -1;
    PKCS12 *p12 = NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *chain = NULL;
    const char *pw = o->pfx_password ? o->pfx_password : "";
    FILE *fp = fopen(o->pfx_file, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open PFX %s", o->pfx_file);
        return -1;
    }
    p12 = d2i_PKCS12_fp(fp, NULL);
    fclose(fp);
    if (!p12) {
        tls_err(err, errlen, "not a PKCS#12 (PFX) file");
        goto out;
    }
    if (PKCS12_mac_present(p12) && !PKCS12_verify_mac(p12, pw, -1)) {
        ERR_clear_error();
        snprintf(err, errlen, "cannot open PFX %s: wrong password (PKCS#12 integrity check failed)",
                 o->pfx_file);
        goto out;
    }
    if (!PKCS12_parse(p12, pw, &key, &cert, &chain)) {
        tls_err(err, errlen, "cannot decode the PFX contents");
        goto out;
    }
    if (!key || !cert) {
        snprintf(err, errlen, "PFX %s holds no %s", o->pfx_file,
                 !cert ? "certificate" : "private key");
        goto out;
    }
    if (SSL_CTX_use_cert_and_key(ctx, cert, key, chain, 1) != 1) {
        tls_err(err, errlen, "PFX certificate and key do not go together");
        goto out;
    }
    rc = 0;
out:
    sk_X509_pop_free(chain, X509_free);
    X509_free(cert);
    EVP_PKEY_free(key);
    PKCS12_free(p12);
    return rc;
}

static int tls_load_pem(SSL_CTX *ctx, const struct tls_server_opts *o, char *err, size_t errlen)
{
    char what[512];
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
        snprintf(what, sizeof(what), "cannot load certificate chain %s", o->cert_file);
        tls_err(err, errlen, what);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof(what), "cannot load private key %s", o->key_file);
        tls_err(err, errlen, what);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "private key %s does not match certificate %s", o->key_file,
                 o->cert_file);
        tls_err(err, errlen, what);
        return -1;
    }
    return 0;
}

SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *o, char *err, size_t errlen)
{
    CRYPTO_THREAD_run_once(&tls_ex_once, tls_ex_init);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    struct tls_ctx_data *d = calloc(1, sizeof(*d));
    if (!ctx || !d) {
        tls_err(err, errlen, "cannot create TLS context");
        goto fail;
    }
    SSL_CTX_set_ex_data(ctx, tls_ex_index, d);

    const char *alpn = o->alpn ? o->alpn : "http/1.1";
    d->alpn_len = (unsigned char)strlen(alpn);
    memcpy(d->alpn, alpn, d->alpn_len < sizeof(d->alpn) ? d->alpn_len : sizeof(d->alpn) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);

    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    if (o->enforce_tls12) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    } else {
        /* OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 handshake signatures) above security level 0. */
        SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
        SSL_CTX_set_security_level(ctx, 0);
    }
    char ciphers[2048];
    snprintf(ciphers, sizeof(ciphers), "%s%s%s", o->tls12_ciphers, o->enforce_tls12 ? "" : ":",
             o->enforce_tls12 ? "" : TLS_LEGACY_CIPHERS);
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        tls_err(err, errlen, "tls12_ciphers names no usable cipher");
        goto fail;
    }
    if (SSL_CTX_set_ciphersuites(ctx, o->tls13_ciphersuites) != 1) {
        tls_err(err, errlen, "tls13_ciphersuites is not valid");
        goto fail;
    }
    if (o->groups && *o->groups && SSL_CTX_set1_groups_list(ctx, o->groups) != 1) {
        tls_err(err, errlen, "groups names an unknown group");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their record buffers back; writes may be partial. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read whole socket buffers, not record header then record body: half the recv calls. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* Resumption is by tickets only: stateless, so it works on any instance. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Sessions carry the client certificate when one was requested; OpenSSL resumes those only
     * within a named context. The same name on every instance keeps tickets portable. */
    static const unsigned char sid_ctx[] = "cmg-gateway";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_timeout(ctx, o->session_timeout ? o->session_timeout : 7200);
    if (!o->session_tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    } else {
        SSL_CTX_set_num_tickets(ctx, 1);
        if (o->ticket_keys && o->ticket_keys->count) {
            d->keys = *o->ticket_keys;
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
        }
    }

    if (o->client_trust)
        tls_client_ctx_setup(ctx, o->client_trust);

    if (o->pfx_file && *o->pfx_file) {
        if (tls_load_pfx(ctx, o, err, errlen) != 0)
            goto fail;
    } else if (tls_load_pem(ctx, o, err, errlen) != 0) {
        goto fail;
    }
    return ctx;
fail:
    if (ctx)
        SSL_CTX_free(ctx); /* frees d through ex_data */
    else
        free(d);
    return NULL;
}

const char *tls_version_name(const SSL *ssl)
{
    return SSL_get_version(ssl);
}

void tls_ctx_subject_cn(SSL_CTX *ctx, char *buf, size_t len)
{
    buf[0] = '\0';
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert)
        return;
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)len);
}

SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_err(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* the certificate this end presents (PFX or PEM), loaded as for a server */
    struct tls_server_opts so = {.pfx_file = o->pfx_file,
                                 .pfx_password = o->pfx_password,
                                 .cert_file = o->cert_file,
                                 .key_file = o->key_file};
    if (o->pfx_file && *o->pfx_file) {
        if (tls_load_pfx(ctx, &so, err, errlen) != 0)
            goto fail;
    } else if (o->cert_file && *o->cert_file) {
        if (tls_load_pem(ctx, &so, err, errlen) != 0)
            goto fail;
    }
    /* the peer's certificate: chains to the given roots, names the expected host */
    if (o->ca_files && *o->ca_files) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        STACK_OF(X509) *certs = sk_X509_new_null();
        char *copy = strdup(o->ca_files);
        int n = 0;
        for (char *tok = strtok(copy, ", "); tok; tok = strtok(NULL, ", ")) {
            if (tls_read_certs(tok, certs, err, errlen) < 0) {
                free(copy);
                sk_X509_pop_free(certs, X509_free);
                goto fail;
            }
        }
        for (int i = 0; i < sk_X509_num(certs); i++, n++)
            X509_STORE_add_cert(store, sk_X509_value(certs, i));
        sk_X509_pop_free(certs, X509_free);
        free(copy);
        ERR_clear_error();
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls_err(err, errlen, "cannot load the system's trusted certificates");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (o->alpn && *o->alpn) {
        unsigned char wire[64];
        size_t l = strlen(o->alpn);
        if (l >= sizeof(wire)) {
            snprintf(err, errlen, "ALPN protocol name too long");
            goto fail;
        }
        wire[0] = (unsigned char)l;
        memcpy(wire + 1, o->alpn, l);
        SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)(l + 1));
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
