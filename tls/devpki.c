/* tls: the development PKI that `cmgctl pki init` writes - a root and an issuing CA, gateway,
 * client and connector certificates, CRLs and PKCS#12 bundles - built with OpenSSL's API so a
 * test lab needs no openssl(1) scripts. For labs only: private keys are not encrypted. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core.h"
#include "tls.h"

#define DAY_SECS 86400L
#define CA_DAYS 3650
#define CRL_DAYS 7
/* notBefore and the CRLs' lastUpdate lie this far in the past: lab machines' clocks drift, and
 * a certificate or CRL that is "not yet valid" on the gateway fails every handshake. */
#define CLOCK_SKEW_SECS 3600L
/* The longest CN that X.520 allows (ub-common-name). */
#define CN_MAX 64
#define NAME_MAX_LEN 32 /* longest base name + extension below */

enum key_type { KEY_EC, KEY_RSA };

enum leaf_flags {
    LEAF_SAN = 1,     /* the gateway's names and loopback addresses */
    LEAF_PFX = 2,     /* also write base.pfx */
    LEAF_CHAIN = 4,   /* also write base-chain.pem */
    LEAF_EXPIRED = 8, /* valid from 30 days ago until yesterday */
    LEAF_REVOKED = 16 /* listed in intermediate.crl */
};

/* The certificates the issuing CA signs. */
struct leaf_spec {
    const char *base; /* file name without extension */
    const char *cn;   /* NULL: the service name */
    enum key_type key_type;
    const char *eku;
    unsigned flags;
};

static const struct leaf_spec leaf_specs[] = {
    {"server", NULL, KEY_EC, "serverAuth", LEAF_SAN | LEAF_PFX | LEAF_CHAIN},
    {"server-rsa", NULL, KEY_RSA, "serverAuth", LEAF_SAN | LEAF_PFX},
    {"client-valid", "client-valid", KEY_EC, "clientAuth", LEAF_PFX},
    {"client-revoked", "client-revoked", KEY_EC, "clientAuth", LEAF_REVOKED},
    {"client-expired", "client-expired", KEY_EC, "clientAuth", LEAF_EXPIRED},
    {"connector", "cmg-connector", KEY_EC, "clientAuth,serverAuth", LEAF_PFX},
    {"connector-revoked", "cmg-connector-revoked", KEY_EC, "clientAuth,serverAuth", LEAF_REVOKED},
};
#define LEAF_COUNT (sizeof leaf_specs / sizeof leaf_specs[0])

/* A key and its certificate; both owned by the struct pki that holds it. */
struct pki_cert {
    EVP_PKEY *key;
    X509 *cert;
};

/* One run of tls_devpki_init. dir, opts and err are borrowed for the call. */
struct pki {
    const char *dir;
    const struct tls_devpki_opts *opts;
    char *err;
    size_t errlen;
    struct pki_cert root, inter, token;
    struct pki_cert leaves[LEAF_COUNT];
};

/* What cert_new builds: an X509v3 certificate valid from now + not_before to now + not_after
 * (seconds), signed with SHA-256. Pointers are borrowed. */
struct cert_req {
    const char *cn;
    EVP_PKEY *key;
    const struct pki_cert *issuer; /* NULL: self-signed with key */
    long not_before, not_after;
    const char *basic, *key_usage, *eku; /* extension values, eku may be NULL */
    const char *san_name;                /* NULL: no subjectAltName */
};

/* Sets the message from fmt and the reason of the last OpenSSL error, if any. Returns -1. */
static int pki_fail(struct pki *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pki_fail(struct pki *p, const char *fmt, ...)
{
    char what[256];
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->err && p->errlen)
        snprintf(p->err, p->errlen, "%s%s%s", what, e ? ": " : "",
                 e ? (reason ? reason : "OpenSSL error") : "");
    ERR_clear_error();
    return -1;
}

/* Same with strerror(errno) as the reason. */
static int pki_fail_sys(struct pki *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pki_fail_sys(struct pki *p, const char *fmt, ...)
{
    char what[PATH_MAX + 64];
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->err && p->errlen)
        snprintf(p->err, p->errlen, "%s: %s", what, strerror(saved));
    return -1;
}

/* ---- checks and directory ---- */

static bool is_host_name(const char *s)
{
    size_t i, n = strlen(s);

    if (n == 0 || n > CN_MAX || s[0] == '.' || s[0] == '-' || s[n - 1] == '.')
        return false;
    for (i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';

        if (!ok || (c == '.' && s[i + 1] == '.'))
            return false;
    }
    return true;
}

static int check_opts(struct pki *p)
{
    const struct tls_devpki_opts *o = p->opts;

    if (!o)
        return pki_fail(p, "no options given");
    if (!p->dir || !*p->dir)
        return pki_fail(p, "no directory given");
    if (!o->service_name || !is_host_name(o->service_name))
        return pki_fail(p,
                        "service name \"%.80s\": use a DNS name of letters, digits, '-' and "
                        "'.', at most %d characters",
                        o->service_name ? o->service_name : "", CN_MAX);
    if (!o->pfx_password || !*o->pfx_password)
        return pki_fail(p, "the PFX password must not be empty");
    if (o->valid_days < 1 || o->valid_days > CA_DAYS)
        return pki_fail(p, "validity of %u days: use 1 to %d (the CAs' own validity)",
                        o->valid_days, CA_DAYS);
    return 0;
}

/* mkdir -p: parents and DIR get 0755 (before umask); the private files are 0600 themselves. */
static int make_dir(struct pki *p)
{
    char path[PATH_MAX];
    struct stat st;
    char *s;

    if (snprintf(path, sizeof path, "%s", p->dir) >= (int)sizeof path)
        return pki_fail(p, "%.64s...: path too long", p->dir);
    for (s = path + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return pki_fail_sys(p, "%s", path);
        *s = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return pki_fail_sys(p, "%s", path);
    if (stat(path, &st) < 0)
        return pki_fail_sys(p, "%s", path);
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return pki_fail_sys(p, "%s", path);
    }
    return 0;
}

/* ---- files ---- */

/* Writes what mem holds to DIR/base+ext with exactly `mode`, replacing any earlier file. Takes
 * mem (may be NULL) and frees it; filled says whether producing its content worked. */
static int save_mem(struct pki *p, const char *base, const char *ext, mode_t mode, BIO *mem,
                    bool filled)
{
    char path[PATH_MAX];
    char *data = NULL;
    long len = 0;
    int fd = -1, rc = -1;

    if (!mem || !filled) {
        pki_fail(p, "%s%s: encoding failed", base, ext);
        goto out;
    }
    len = BIO_get_mem_data(mem, &data);
    if (snprintf(path, sizeof path, "%s/%s%s", p->dir, base, ext) >= (int)sizeof path) {
        pki_fail(p, "%s: path too long", p->dir);
        goto out;
    }
    /* fchmod before writing: an earlier file may have had a looser mode. */
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || fchmod(fd, mode) < 0 || core_write_all(fd, data, (size_t)len) < 0) {
        pki_fail_sys(p, "%s", path);
        goto out;
    }
    rc = close(fd);
    fd = -1;
    if (rc < 0)
        pki_fail_sys(p, "%s", path);
out:
    if (fd >= 0)
        close(fd);
    if (data)
        OPENSSL_cleanse(data, (size_t)len);
    BIO_free(mem);
    return rc;
}

/* PEM certificates, in order. */
static int save_certs(struct pki *p, const char *base, const char *ext, X509 *const *certs,
                      size_t n)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = mem != NULL;
    size_t i;

    for (i = 0; ok && i < n; i++)
        ok = PEM_write_bio_X509(mem, certs[i]) == 1;
    return save_mem(p, base, ext, 0644, mem, ok);
}

/* Unencrypted PKCS#8 PEM, mode 0600. */
static int save_key(struct pki *p, const char *base, EVP_PKEY *key)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = mem && PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) == 1;

    return save_mem(p, base, ".key", 0600, mem, ok);
}

static int save_crl(struct pki *p, const char *base, X509_CRL *crl)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = mem && PEM_write_bio_X509_CRL(mem, crl) == 1;

    return save_mem(p, base, ".crl", 0644, mem, ok);
}

/* key + certificate + issuing CA, with OpenSSL 3's default PBES2/AES-256 and SHA-256 MAC. */
static int save_pfx(struct pki *p, const char *base, const struct pki_cert *c)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    PKCS12 *p12 = NULL;
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = false;

    /* The stack borrows the intermediate: sk_X509_free, not sk_X509_pop_free. */
    if (chain && sk_X509_push(chain, p->inter.cert) > 0)
        p12 = PKCS12_create(p->opts->pfx_password, base, c->key, c->cert, chain, 0, 0, 0, 0, 0);
    if (p12 && mem)
        ok = i2d_PKCS12_bio(mem, p12) == 1;
    PKCS12_free(p12);
    sk_X509_free(chain);
    return save_mem(p, base, ".pfx", 0600, mem, ok);
}

static int save_text(struct pki *p, const char *base, const char *ext, const char *text)
{
    BIO *mem = BIO_new(BIO_s_mem());
    bool ok = mem && BIO_printf(mem, "%s\n", text) > 0;

    return save_mem(p, base, ext, 0600, mem, ok);
}

/* ---- certificates ---- */

static EVP_PKEY *key_new(enum key_type type)
{
    return type == KEY_RSA ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
}

/* A random positive 63-bit serial: unique enough that reruns never collide in a browser's or
 * Windows' certificate cache. */
static bool set_serial(X509 *x)
{
    unsigned char b[8];
    BIGNUM *bn;
    bool ok;

    if (RAND_bytes(b, sizeof b) != 1)
        return false;
    b[0] &= 0x7f;
    b[7] |= 1;
    bn = BN_bin2bn(b, sizeof b, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static bool add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext;
    bool ok;

    if (!value)
        return true;
    ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* One subjectAltName entry: an IP address when text parses as one, else a DNS name. */
static bool san_push(GENERAL_NAMES *names, const char *text)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(text);
    int type = ip ? GEN_IPADD : GEN_DNS;
    GENERAL_NAME *gn;

    ASN1_OCTET_STRING_free(ip);
    ERR_clear_error(); /* a2i_IPADDRESS leaves an error for names that are not addresses */
    gn = a2i_GENERAL_NAME(NULL, NULL, NULL, type, text, 0);
    if (gn && sk_GENERAL_NAME_push(names, gn) > 0)
        return true;
    GENERAL_NAME_free(gn);
    return false;
}

/* service name, localhost, 127.0.0.1 and ::1, so a lab client reaches the gateway by name
 * or over loopback. */
static bool add_san(X509 *x, const char *service)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    bool ok = names && san_push(names, service);

    if (ok && strcasecmp(service, "localhost") != 0)
        ok = san_push(names, "localhost");
    ok = ok && san_push(names, "127.0.0.1") && san_push(names, "::1");
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(names);
    return ok;
}

static bool set_fields(X509 *x, const struct cert_req *r)
{
    X509_NAME *subject = X509_get_subject_name(x);

    if (X509_set_version(x, X509_VERSION_3) != 1 || !set_serial(x) ||
        X509_set_pubkey(x, r->key) != 1)
        return false;
    if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, r->not_before, NULL) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 0, r->not_after, NULL))
        return false;
    if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                   (const unsigned char *)r->cn, -1, -1, 0) != 1)
        return false;
    return X509_set_issuer_name(x, r->issuer ? X509_get_subject_name(r->issuer->cert) : subject) ==
           1;
}

/* Builds and signs the certificate r describes. Returns it (caller frees with X509_free) or
 * NULL with the message set. */
static X509 *cert_new(struct pki *p, const struct cert_req *r)
{
    X509 *x = X509_new();
    X509V3_CTX v3;
    bool ok = x && set_fields(x, r);

    /* The SKI goes first: the authorityKeyIdentifier of a self-signed cert is copied from it. */
    if (ok) {
        X509V3_set_ctx(&v3, r->issuer ? r->issuer->cert : x, x, NULL, NULL, 0);
        ok = add_ext(x, &v3, NID_basic_constraints, r->basic) &&
             add_ext(x, &v3, NID_key_usage, r->key_usage) &&
             add_ext(x, &v3, NID_ext_key_usage, r->eku) &&
             add_ext(x, &v3, NID_subject_key_identifier, "hash") &&
             add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
    }
    if (ok && r->san_name)
        ok = add_san(x, r->san_name);
    if (ok)
        ok = X509_sign(x, r->issuer ? r->issuer->key : r->key, EVP_sha256()) > 0;
    if (!ok) {
        pki_fail(p, "certificate \"%s\"", r->cn);
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Generates c's key and certificate and writes base.key and base.crt. */
static int issue(struct pki *p, struct pki_cert *c, const char *base, enum key_type type,
                 struct cert_req *r)
{
    c->key = key_new(type);
    if (!c->key)
        return pki_fail(p, "%s: key generation", base);
    r->key = c->key;
    c->cert = cert_new(p, r);
    if (!c->cert)
        return -1;
    if (save_key(p, base, c->key) < 0)
        return -1;
    return save_certs(p, base, ".crt", &c->cert, 1);
}

static int make_cas(struct pki *p)
{
    struct cert_req root = {
        .cn = "CMG Dev Root CA",
        .not_before = -CLOCK_SKEW_SECS,
        .not_after = CA_DAYS * DAY_SECS,
        .basic = "critical,CA:TRUE",
        .key_usage = "critical,keyCertSign,cRLSign",
    };
    struct cert_req inter = root;
    X509 *chain[2];

    inter.cn = "CMG Dev Issuing CA";
    inter.issuer = &p->root;
    inter.basic = "critical,CA:TRUE,pathlen:0";
    if (issue(p, &p->root, "root-ca", KEY_EC, &root) < 0 ||
        issue(p, &p->inter, "intermediate-ca", KEY_EC, &inter) < 0)
        return -1;
    chain[0] = p->inter.cert;
    chain[1] = p->root.cert;
    return save_certs(p, "ca-chain", ".pem", chain, 2);
}

static int make_leaf(struct pki *p, size_t i)
{
    const struct leaf_spec *s = &leaf_specs[i];
    struct pki_cert *c = &p->leaves[i];
    bool expired = s->flags & LEAF_EXPIRED;
    struct cert_req r = {
        .cn = s->cn ? s->cn : p->opts->service_name,
        .issuer = &p->inter,
        .not_before = expired ? -30 * DAY_SECS : -CLOCK_SKEW_SECS,
        .not_after = expired ? -DAY_SECS : (long)p->opts->valid_days * DAY_SECS,
        .basic = "CA:FALSE",
        /* keyEncipherment only matters for RSA key exchange in TLS 1.2 */
        .key_usage = s->key_type == KEY_RSA ? "critical,digitalSignature,keyEncipherment"
                                            : "critical,digitalSignature",
        .eku = s->eku,
        .san_name = s->flags & LEAF_SAN ? p->opts->service_name : NULL,
    };
    char chain_base[NAME_MAX_LEN];
    X509 *chain[2];

    if (issue(p, c, s->base, s->key_type, &r) < 0)
        return -1;
    if ((s->flags & LEAF_PFX) && save_pfx(p, s->base, c) < 0)
        return -1;
    if (!(s->flags & LEAF_CHAIN))
        return 0;
    chain[0] = c->cert;
    chain[1] = p->inter.cert;
    snprintf(chain_base, sizeof chain_base, "%s-chain", s->base);
    return save_certs(p, chain_base, ".pem", chain, 2);
}

/* Self-signed, as the site's token-signing certificate is in Configuration Manager: the
 * gateway trusts it as a key, not through a CA. */
static int make_token_signing(struct pki *p)
{
    struct cert_req r = {
        .cn = "SMS Token Signing",
        .not_before = -CLOCK_SKEW_SECS,
        .not_after = (long)p->opts->valid_days * DAY_SECS,
        .basic = "CA:FALSE",
        .key_usage = "critical,digitalSignature",
    };

    return issue(p, &p->token, "token-signing", KEY_RSA, &r);
}

/* ---- CRLs ---- */

static bool crl_add_revoked(X509_CRL *crl, X509 *cert, ASN1_TIME *when)
{
    X509_REVOKED *r = X509_REVOKED_new();

    if (r && X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert)) == 1 &&
        X509_REVOKED_set_revocationDate(r, when) == 1 && X509_CRL_add0_revoked(crl, r) == 1)
        return true;
    X509_REVOKED_free(r);
    return false;
}

/* CRL number 1 and the issuer's key identifier. */
static bool crl_add_exts(X509_CRL *crl, const struct pki_cert *ca)
{
    ASN1_INTEGER *number = ASN1_INTEGER_new();
    X509_EXTENSION *aki = NULL;
    X509V3_CTX v3;
    bool ok = number && ASN1_INTEGER_set(number, 1) == 1 &&
              X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, X509V3_ADD_DEFAULT) == 1;

    if (ok) {
        X509V3_set_ctx(&v3, ca->cert, NULL, NULL, crl, 0);
        aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
        ok = aki && X509_CRL_add_ext(crl, aki, -1) == 1;
    }
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(number);
    return ok;
}

/* A v2 CRL by ca, valid for CRL_DAYS, listing the leaves marked LEAF_REVOKED when `leaves`
 * is set; written to base.crl. */
static int save_new_crl(struct pki *p, const char *base, const struct pki_cert *ca, bool leaves)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *last = X509_time_adj_ex(NULL, 0, -CLOCK_SKEW_SECS, NULL);
    ASN1_TIME *next = X509_time_adj_ex(NULL, CRL_DAYS, 0, NULL);
    bool ok = crl && last && next && X509_CRL_set_version(crl, X509_CRL_VERSION_2) == 1 &&
              X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) == 1 &&
              X509_CRL_set1_lastUpdate(crl, last) == 1 && X509_CRL_set1_nextUpdate(crl, next) == 1;
    int rc = -1;

    for (size_t i = 0; ok && leaves && i < LEAF_COUNT; i++)
        if (leaf_specs[i].flags & LEAF_REVOKED)
            ok = crl_add_revoked(crl, p->leaves[i].cert, last);
    ok = ok && crl_add_exts(crl, ca) && X509_CRL_sort(crl) == 1 &&
         X509_CRL_sign(crl, ca->key, EVP_sha256()) > 0;
    if (!ok)
        pki_fail(p, "%s.crl", base);
    else
        rc = save_crl(p, base, crl);
    ASN1_TIME_free(next);
    ASN1_TIME_free(last);
    X509_CRL_free(crl);
    return rc;
}

/* ---- the whole set ---- */

static void pki_cert_free(struct pki_cert *c)
{
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
}

static void pki_free(struct pki *p)
{
    size_t i;

    for (i = LEAF_COUNT; i-- > 0;)
        pki_cert_free(&p->leaves[i]);
    pki_cert_free(&p->token);
    pki_cert_free(&p->inter);
    pki_cert_free(&p->root);
}

int tls_devpki_init(const char *dir, const struct tls_devpki_opts *opts, char *err, size_t errlen)
{
    struct pki p = {.dir = dir, .opts = opts, .err = err, .errlen = errlen};
    size_t i;
    int rc = -1;

    if (err && errlen)
        err[0] = '\0';
    ERR_clear_error();
    if (check_opts(&p) < 0 || make_dir(&p) < 0 || make_cas(&p) < 0)
        goto out;
    for (i = 0; i < LEAF_COUNT; i++)
        if (make_leaf(&p, i) < 0)
            goto out;
    if (make_token_signing(&p) < 0 ||
        save_new_crl(&p, "intermediate", &p.inter, true) < 0 ||
        save_new_crl(&p, "root", &p.root, false) < 0 ||
        save_text(&p, "pfx-password", ".txt", opts->pfx_password) < 0)
        goto out;
    rc = 0;
out:
    pki_free(&p);
    return rc;
}
