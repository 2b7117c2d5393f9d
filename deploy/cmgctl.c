/* cmgctl: the operator's tool. It writes a development PKI, rotates the session-ticket key file
 * that every gateway instance shares, and computes BranchCache Content Information. Exit status:
 * 0 done, 1 the operation failed (the reason on stderr), 2 bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <jansson.h>
#include <openssl/rand.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "content-cmd.h"
#include "content.h"
#include "jwt.h"
#include "core.h"
#include "deploy.h"
#include "tls.h"

#ifndef CMG_VERSION
#define CMG_VERSION "unknown"
#endif

#define EXIT_USAGE 2

#define DEFAULT_SERVICE_NAME "cmg.localtest.me"
#define DEFAULT_PFX_PASSWORD "cmg-dev"
#define DEFAULT_DAYS 825
#define MAX_DAYS 3650 /* the dev CAs' own validity */
#define DEFAULT_KEEP 3

static const char usage_text[] =
    "usage: cmgctl pki init DIR [--service-name NAME] [--pfx-password PW] [--days N]\n"
    "       cmgctl tickets rotate FILE [--keep N]\n"
    "       cmgctl cert verify -c GATEWAY.INI CERT [--chain FILE]\n"
    "       cmgctl token issue site|bulk --key KEY --cert CERT --hierarchy ID [--lifetime T]\n"
    "                  [--unique-id ID]\n"
    "       cmgctl token issue content --key KEY [--cert CERT] --package ID [--content-id ID]\n"
    "                  [--lifetime T] [--issuer FQDN] [--client GUID:ID]\n"
    "       cmgctl token verify -c GATEWAY.INI TOKEN|- [--path /CCM_STS]\n"
    "       cmgctl content peerdist FILE --version 1.0|2.0\n"
    "                  (--secret-hex HEX | --key-file KEYFILE --password PW) [--hex]\n"
    "       cmgctl version\n"
    "       cmgctl create|scale|status|stop|start|delete ... (cmgctl create --help)\n"
    "       cmgctl --help\n"
    "\n"
    "pki init DIR\n"
    "    Writes a development PKI into DIR (created if missing, earlier files replaced):\n"
    "    root and issuing CA, gateway, client and connector certificates, CRLs, PFX files.\n"
    "    --service-name NAME  the gateway's DNS name: CN and SAN of server.crt\n"
    "                         (default " DEFAULT_SERVICE_NAME ")\n"
    "    --pfx-password PW    password of every .pfx, also written to pfx-password.txt\n"
    "                         (default " DEFAULT_PFX_PASSWORD ")\n"
    "    --days N             validity of the leaf certificates, 1 to 3650 (default 825)\n"
    "\n"
    "tickets rotate FILE\n"
    "    Puts a fresh session-ticket key first in FILE (created with mode 0600 if missing)\n"
    "    and keeps the newest N keys. The first key encrypts new tickets, all keys decrypt.\n"
    "    Run it on a schedule, then copy FILE to every gateway instance: each one reloads\n"
    "    the file when it changes, without a restart.\n"
    "    --keep N             keys to keep, 1 to 8 (default 3)\n"
    "\n"
    "cert verify -c GATEWAY.INI CERT\n"
    "    The gateway's own verdict on a client certificate, offline: the trusted certificates,\n"
    "    CRLs and revocation setting of the gateway's [auth] section, and the same checks.\n"
    "    Prints accepted or rejected with the precise cause and the chain it built.\n"
    "    CERT is PEM or DER; further certificates in it count as sent by the client.\n"
    "    --chain FILE         more certificates the client sends (PEM)\n"
    "    Exit status: 0 accepted, 1 rejected, 2 unusable input.\n"
    "\n"
    "token issue site|bulk\n"
    "    Signs a site-issued device token or a bulk-registration token (RS256) with the\n"
    "    site's token-signing key; prints it on standard output. --lifetime: default 90d for\n"
    "    site tokens, 3d for bulk tokens (at most 7d). For tests and lab setups.\n"
    "\n"
    "token issue content\n"
    "    Signs a content access token as a management point hands it to a client with a\n"
    "    content location: prints the query string for\n"
    "    /downloadrestservice.svc/getcontentxmlsecure (docs/content.md). KEY is a signing key\n"
    "    whose certificate is in the gateway's content.token_certs (--cert checks they match).\n"
    "    --lifetime: default 8h. For tests and lab setups.\n"
    "\n"
    "token verify -c GATEWAY.INI TOKEN\n"
    "    The gateway's verdict on a bearer token, offline, from the [auth] section: prints the\n"
    "    header and claims, then accepted or rejected with the cause. TOKEN - reads it from\n"
    "    standard input (keeps it out of shell history). --path: the request path after the\n"
    "    role id (bulk tokens count only on /CCM_STS and registration; default: allowed).\n"
    "    Exit status: 0 accepted, 1 rejected, 2 unusable input.\n"
    "\n"
    "content peerdist FILE\n"
    "    Writes FILE's BranchCache Content Information, the body the gateway sends with\n"
    "    Content-Encoding: peerdist, to standard output: binary, or hex with --hex (32 bytes\n"
    "    a line). The server secret is the BranchCache key, in hex (--secret-hex) or as\n"
    "    `netsh branchcache exportkey` wrote it (--key-file with its --password). Given as\n"
    "    -, HEX or PW is read from standard input (out of shell history and ps). CI 1.0 is\n"
    "    byte for byte what a Windows server with the same key sends; CI 2.0 cuts 64 KiB\n"
    "    segments where Windows uses its own chunker.\n"
    "\n"
    "Exit status: 0 done, 1 failed, 2 bad usage.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("cmgctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'cmgctl --help'.\n", stderr);
    return EXIT_USAGE;
}

static int op_error(const char *msg)
{
    fprintf(stderr, "cmgctl: %s\n", msg);
    return EXIT_FAILURE;
}

/* An option that takes a value; *value is set to a borrowed argv string. */
struct opt {
    const char *name; /* without the leading "--" */
    const char **value;
    char short_name; /* "-c" for "--config"; 0 for none */
};

/* Finds the option argv[*i] ("--name VALUE" or "--name=VALUE") in opts and stores its value,
 * advancing *i past a separate value. Returns 0 or a usage error's exit code. */
static int take_option(const char *verb, const struct opt *opts, int argc, char **argv, int *i)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const struct opt *o;

    for (o = opts; o->name; o++) {
        bool is_short = o->short_name && arg[0] == '-' && arg[1] == o->short_name && !arg[2];
        if (!is_short && (strncmp(arg, "--", 2) != 0 || len != 2 + strlen(o->name) ||
                          strncmp(arg + 2, o->name, len - 2) != 0))
            continue;
        if (eq) {
            *o->value = eq + 1;
        } else if (*i + 1 < argc) {
            *o->value = argv[++*i];
        } else {
            return usage_error("%s: --%s needs a value", verb, o->name);
        }
        return 0;
    }
    return usage_error("%s: unknown option \"%.*s\"", verb, (int)len, arg);
}

/* Parses the arguments after the verb: options in any order around exactly one operand.
 * Returns 0, -1 when --help was asked for, or a usage error's exit code. */
static int parse_args(const char *verb, const char *operand_name, int argc, char **argv,
                      const struct opt *opts, const char **operand)
{
    bool options_done = false;
    int i, rc;

    *operand = NULL;
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];

        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
        } else if (!options_done && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            return -1;
        } else if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            rc = take_option(verb, opts, argc, argv, &i);
            if (rc)
                return rc;
        } else if (*operand) {
            return usage_error("%s: unexpected argument \"%s\"", verb, arg);
        } else {
            *operand = arg;
        }
    }
    if (!*operand || !**operand)
        return usage_error("%s: missing %s", verb, operand_name);
    return 0;
}

/* Strict decimal in [min, max]: no sign, no spaces, no trailing text. */
static bool parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    unsigned long v;
    char *end;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = (unsigned)v;
    return true;
}

/* What pki init wrote, for the operator. */
static const struct {
    const char *files;
    const char *what;
} pki_files[] = {
    {"root-ca.crt root-ca.key", "root CA: trust root-ca.crt on test clients"},
    {"intermediate-ca.crt intermediate-ca.key", "issuing CA"},
    {"ca-chain.pem", "issuing CA + root"},
    {"intermediate.crl root.crl", "CRLs (client-revoked is listed), valid 7 days"},
    {"server.pfx server.crt server.key", "gateway certificate, ECDSA P-256"},
    {"server-chain.pem", "gateway certificate + issuing CA"},
    {"server-rsa.pfx server-rsa.crt server-rsa.key", "gateway certificate, RSA-2048"},
    {"client-valid.pfx client-valid.crt client-valid.key", "client certificate"},
    {"client-revoked.crt client-revoked.key", "client certificate, revoked"},
    {"client-expired.crt client-expired.key", "client certificate, expired yesterday"},
    {"connector.pfx connector.crt connector.key", "connection point certificate"},
    {"token-signing.crt token-signing.key", "site token-signing certificate, self-signed"},
    {"pfx-password.txt", "password of the .pfx files"},
};

static void print_pki(const char *dir, const struct tls_devpki_opts *o)
{
    size_t i;

    printf("wrote a development PKI for %s to %s (leaf certificates valid %u days):\n",
           o->service_name, dir, o->valid_days);
    for (i = 0; i < sizeof pki_files / sizeof pki_files[0]; i++)
        printf("  %-52s %s\n", pki_files[i].files, pki_files[i].what);
    printf("private keys, .pfx files and pfx-password.txt have mode 0600.\n");
}

static int cmd_pki_init(int argc, char **argv)
{
    const char *dir, *days = NULL;
    struct tls_devpki_opts o = {
        .service_name = DEFAULT_SERVICE_NAME,
        .pfx_password = DEFAULT_PFX_PASSWORD,
        .valid_days = DEFAULT_DAYS,
    };
    const struct opt opts[] = {
        {"service-name", &o.service_name, 0},
        {"pfx-password", &o.pfx_password, 0},
        {"days", &days, 0},
        {NULL, NULL, 0},
    };
    char err[512];
    int rc = parse_args("pki init", "DIR", argc, argv, opts, &dir);

    if (rc < 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (days && !parse_uint(days, 1, MAX_DAYS, &o.valid_days))
        return usage_error("pki init: --days \"%s\": use a number from 1 to %d", days, MAX_DAYS);
    if (!*o.pfx_password)
        return usage_error("pki init: --pfx-password must not be empty");
    if (tls_devpki_init(dir, &o, err, sizeof err) < 0)
        return op_error(err);
    print_pki(dir, &o);
    return 0;
}

static int cmd_tickets_rotate(int argc, char **argv)
{
    const char *file, *keep_arg = NULL;
    const struct opt opts[] = {{"keep", &keep_arg, 0}, {NULL, NULL, 0}};
    struct tls_ticket_keys keys;
    unsigned keep = DEFAULT_KEEP, i;
    char err[512];
    int rc = parse_args("tickets rotate", "FILE", argc, argv, opts, &file);

    if (rc < 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (keep_arg && !parse_uint(keep_arg, 1, TLS_TICKET_KEYS_MAX, &keep))
        return usage_error("tickets rotate: --keep \"%s\": use a number from 1 to %d", keep_arg,
                           TLS_TICKET_KEYS_MAX);
    /* Reading the result back proves the gateways will accept it. */
    if (tls_ticket_keys_rotate_file(file, keep, err, sizeof err) < 0 ||
        tls_ticket_keys_load(file, &keys, err, sizeof err) < 0)
        return op_error(err);
    /* The key name travels in clear inside every ticket, so printing it reveals nothing and
     * lets the operator match a ticket to a key; the secrets are never printed. */
    printf("rotated %s: %u key%s, newest first; new key name ", file, keys.count,
           keys.count == 1 ? "" : "s");
    for (i = 0; i < TLS_TICKET_NAME_LEN; i++)
        printf("%02x", keys.keys[0].name[i]);
    printf("\ncopy %s to every gateway instance.\n", file);
    OPENSSL_cleanse(&keys, sizeof keys);
    return 0;
}

static void print_cert_line(int depth, X509 *x)
{
    char subject[256], issuer[256];
    BIO *mem = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n;

    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    X509_NAME_oneline(X509_get_issuer_name(x), issuer, sizeof issuer);
    ASN1_TIME_print(mem, X509_get0_notBefore(x));
    BIO_puts(mem, " .. ");
    ASN1_TIME_print(mem, X509_get0_notAfter(x));
    n = BIO_get_mem_data(mem, &p);
    printf("  [%d] %s\n      issuer %s\n      valid  %.*s\n", depth, subject, issuer, (int)n, p);
    if (depth == 0)
        printf("      clientAuth usage: %s\n",
               (X509_get_extended_key_usage(x) & XKU_SSL_CLIENT) ? "yes" : "no");
    BIO_free(mem);
}

/* parse_args for the verbs that read a gateway's configuration, where -c is required.
 * Returns 0 to go on, -1 after printing the help, or a usage error's exit code. */
static int parse_config_args(const char *verb, const char *operand_name, int argc, char **argv,
                             const struct opt *opts, const char **operand,
                             const char *const *config)
{
    int rc = parse_args(verb, operand_name, argc, argv, opts, operand);
    if (rc < 0) {
        fputs(usage_text, stdout);
        return -1;
    }
    if (rc)
        return rc;
    if (!*config)
        return usage_error("%s: -c GATEWAY.INI is required", verb);
    return 0;
}

/* The [auth] section of a gateway configuration, every error printed. */
static int load_auth(const char *config, struct auth_settings *st, struct config_report *r)
{
    if (auth_settings_load(config, st, r) == 0)
        return 0;
    for (unsigned i = 0; i < r->nerrors; i++)
        fprintf(stderr, "cmgctl: %s\n", r->errors[i]);
    return -1;
}

static int cmd_cert_verify(int argc, char **argv)
{
    const char *cert_path, *config = NULL, *chain_path = NULL;
    const struct opt opts[] = {
        {"config", &config, 'c'}, {"chain", &chain_path, 0}, {NULL, NULL, 0}};
    struct auth_settings st;
    struct config_report r;
    struct tls_client_trust *trust = NULL;
    STACK_OF(X509) *certs = NULL, *built = NULL;
    X509 *leaf = NULL;
    const char *files[64], *crls[64], *open[TLS_FAIL_OPEN_MAX + 1];
    char *fcopy = NULL, *ccopy = NULL, *ocopy = NULL, err[512], detail[256];
    size_t nf, nc;
    struct tls_crl_cache *cache = NULL;
    STACK_OF(X509_CRL) *fetched = NULL;
    int rc;

    rc = parse_config_args("cert verify", "CERT", argc, argv, opts, &cert_path, &config);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = 2;
    if (load_auth(config, &st, &r) != 0)
        goto out;
    if (!st.trusted_certs || !*st.trusted_certs) {
        fprintf(stderr,
                "cmgctl: %s: auth.trusted_certs is not set: the gateway accepts no client "
                "certificate\n",
                config);
        goto out;
    }
    nf = core_split_list(st.trusted_certs, &fcopy, files, 64);
    nc = core_split_list(st.crl_files, &ccopy, crls, 64);
    struct tls_client_trust_opts to = {
        .cert_files = files,
        .ncert = nf,
        .crl_files = crls,
        .ncrl = nc,
        .check_revocation = st.verify_revocation,
        .crl_grace = (int64_t)(st.crl_grace / 1000),
        .fail_open = open,
        .nfail_open = core_split_list(st.crl_fail_open, &ocopy, open, TLS_FAIL_OPEN_MAX + 1),
    };
    trust = tls_client_trust_new(&to, err, sizeof err);
    if (!trust) {
        fprintf(stderr, "cmgctl: %s: auth: %s\n", config, err);
        goto out;
    }
    certs = sk_X509_new_null();
    if (tls_read_certs(cert_path, certs, err, sizeof err) < 0 ||
        (chain_path && tls_read_certs(chain_path, certs, err, sizeof err) < 0)) {
        fprintf(stderr, "cmgctl: cannot read a certificate: %s\n", err);
        goto out;
    }
    leaf = sk_X509_shift(certs);
    printf("trust: %u root(s) from %zu file(s) in %s; %zu CRL file(s); revocation %s\n",
           tls_client_trust_roots(trust), nf, config, nc,
           st.verify_revocation ? "checked" : "not checked (verify_revocation = false)");
    if (st.verify_revocation && st.crl_fetch) {
        /* The gateway's own CRL cache, and the distribution points it would fetch from. */
        char dir[PATH_MAX];
        struct tls_crl_policy cp = {.refresh_max = st.crl_refresh_max / 1000,
                                    .timeout_ms = st.fetch_timeout};
        snprintf(dir, sizeof dir, "%s/crl", st.cache_dir ? st.cache_dir : "cache");
        core_fetch_global_init();
        cache = tls_crl_cache_new(dir, tls_client_trust_cas(trust), &cp, err, sizeof err);
        if (!cache) {
            fprintf(stderr, "cmgctl: %s (CRLs are fetched without the cache)\n", err);
            cache = tls_crl_cache_new(NULL, tls_client_trust_cas(trust), &cp, err, sizeof err);
        }
        char urls[32][TLS_URL_MAX];
        size_t nu = tls_client_trust_ca_crl_urls(trust, urls, 32);
        nu += tls_client_trust_crl_urls(trust, leaf, certs, urls + nu, 32 - nu);
        for (size_t i = 0; cache && i < nu; i++)
            tls_crl_cache_want(cache, urls[i]);
        if (cache) {
            /* what the cache holds is used; what it lacks or is due is fetched now */
            tls_crl_cache_refresh(cache, (int64_t)time(NULL), NULL);
            fetched = tls_crl_cache_crls(cache);
            char line[TLS_URL_MAX + 300];
            size_t n = tls_crl_cache_describe(cache, 0, line, sizeof line);
            for (size_t i = 0; i < n; i++) {
                tls_crl_cache_describe(cache, i, line, sizeof line);
                printf("CRL source: %s\n", line);
            }
        }
    }
    enum tls_client_verdict v =
        tls_client_trust_explain(trust, fetched, leaf, certs, detail, sizeof detail, &built);
    printf("chain built:\n");
    if (built && sk_X509_num(built) > 0)
        for (int i = 0; i < sk_X509_num(built); i++)
            print_cert_line(i, sk_X509_value(built, i));
    else
        print_cert_line(0, leaf);
    if (v == TLS_CLIENT_OK) {
        printf("accepted%s%s\n", *detail ? ": " : "", detail);
        rc = 0;
    } else {
        printf("rejected: %s%s%s\n", tls_client_verdict_name(v), *detail ? ": " : "", detail);
        rc = 1;
    }
out:
    sk_X509_CRL_pop_free(fetched, X509_CRL_free);
    tls_crl_cache_free(cache);
    free(ocopy);
    X509_free(leaf);
    sk_X509_pop_free(built, X509_free);
    sk_X509_pop_free(certs, X509_free);
    tls_client_trust_free(trust);
    free(fcopy);
    free(ccopy);
    auth_settings_free(&st);
    config_report_deinit(&r);
    return rc;
}

/* ---- tokens ---- */

/* Signs header.payload with RS256; returns the compact token (malloc'd) or NULL. */
static char *sign_jwt(json_t *header, json_t *payload, EVP_PKEY *key)
{
    char *h = json_dumps(header, JSON_COMPACT), *p = json_dumps(payload, JSON_COMPACT);
    size_t hl = strlen(h), pl = strlen(p);
    size_t cap = (hl + pl) * 2 + 1024;
    char *tok = malloc(cap);
    unsigned char sig[1024];
    size_t sl = sizeof sig;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *out = NULL;

    auth_b64url_encode((unsigned char *)h, hl, tok, cap);
    size_t n = strlen(tok);
    tok[n++] = '.';
    auth_b64url_encode((unsigned char *)p, pl, tok + n, cap - n);
    n = strlen(tok);
    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, sig, &sl, (unsigned char *)tok, n) == 1) {
        tok[n++] = '.';
        auth_b64url_encode(sig, sl, tok + n, cap - n);
        out = tok;
        tok = NULL;
    }
    EVP_MD_CTX_free(md);
    free(tok);
    free(h);
    free(p);
    return out;
}

static bool parse_duration_s(const char *s, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    long long mul = 1;

    if (end == s || v <= 0)
        return false;
    if (strcmp(end, "d") == 0)
        mul = 86400;
    else if (strcmp(end, "h") == 0)
        mul = 3600;
    else if (strcmp(end, "m") == 0)
        mul = 60;
    else if (*end && strcmp(end, "s") != 0)
        return false;
    *out = v * mul;
    return true;
}

/* A content access token as a management point hands it out: the query string for
 * /downloadrestservice.svc/getcontentxmlsecure and the content URLs. */
static int content_token_issue(const char *key_path, const char *cert_path, const char *package,
                               const char *content_id, const char *issuer, const char *client,
                               const char *lifetime)
{
    long long life = 8 * 3600;
    if (!key_path || !package)
        return usage_error("token issue content: --key and --package are required");
    if (lifetime && !parse_duration_s(lifetime, &life))
        return usage_error("token issue: --lifetime \"%s\": use e.g. 8h or 1d", lifetime);
    if (!auth_content_id_valid(package) || (content_id && !auth_content_id_valid(content_id)))
        return usage_error("token issue content: package and content ids are 1-64 characters "
                           "of A-Z a-z 0-9 . _ -");
    FILE *fp = fopen(key_path, "r");
    EVP_PKEY *key = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;
    if (fp)
        fclose(fp);
    if (!key)
        return op_error("the key does not load (PEM RSA private key expected)");
    if (cert_path) {
        struct auth_site_keys keys;
        char err[512];
        memset(&keys, 0, sizeof keys);
        if (auth_site_keys_add_file(&keys, cert_path, err, sizeof err) != 0) {
            EVP_PKEY_free(key);
            return op_error(err);
        }
        bool match = EVP_PKEY_eq(key, keys.signers[0].key) == 1;
        auth_site_keys_clear(&keys);
        if (!match) {
            EVP_PKEY_free(key);
            return op_error("the key does not match the certificate");
        }
    }
    struct auth_content_token t;
    memset(&t, 0, sizeof t);
    snprintf(t.package, sizeof t.package, "%s", package);
    snprintf(t.content_id, sizeof t.content_id, "%s", content_id ? content_id : package);
    snprintf(t.issuer, sizeof t.issuer, "%s", issuer ? issuer : "mp.localtest.me");
    if (client) {
        snprintf(t.client, sizeof t.client, "%s", client);
    } else {
        unsigned char r[16];
        RAND_bytes(r, sizeof r);
        snprintf(t.client, sizeof t.client,
                 "GUID:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
                 r[1], r[2], r[3], r[4], r[5], (r[6] & 0x0f) | 0x40, r[7], (r[8] & 0x3f) | 0x80,
                 r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
    }
    t.start = (int64_t)time(NULL) - 60;
    t.end = t.start + 60 + life;
    char out[4096];
    int rc = auth_content_token_issue(key, &t, out, sizeof out);
    EVP_PKEY_free(key);
    if (rc != 0)
        return op_error("signing failed (an RSA key is needed)");
    printf("%s\n", out);
    fprintf(stderr, "cmgctl: content token for %s (%s), valid %lld s from now\n", t.package,
            t.content_id, life);
    return 0;
}

static int cmd_token_issue(int argc, char **argv)
{
    const char *kind, *key_path = NULL, *cert_path = NULL, *hier = NULL, *lifetime = NULL,
                      *uid = NULL, *package = NULL, *content_id = NULL, *issuer = NULL,
                      *client = NULL;
    const struct opt opts[] = {{"key", &key_path, 0},          {"cert", &cert_path, 0},
                               {"hierarchy", &hier, 0},        {"lifetime", &lifetime, 0},
                               {"unique-id", &uid, 0},         {"package", &package, 0},
                               {"content-id", &content_id, 0}, {"issuer", &issuer, 0},
                               {"client", &client, 0},         {NULL, NULL, 0}};
    struct auth_site_keys keys;
    char err[512], uidbuf[40];
    long long life;
    int rc = parse_args("token issue", "KIND (site, bulk or content)", argc, argv, opts, &kind);

    if (rc < 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc)
        return rc;
    bool bulk = strcmp(kind, "bulk") == 0;
    if (strcmp(kind, "content") == 0)
        return content_token_issue(key_path, cert_path, package, content_id, issuer, client,
                                   lifetime);
    if (!bulk && strcmp(kind, "site") != 0)
        return usage_error("token issue: KIND is site, bulk or content, not \"%s\"", kind);
    if (!key_path || !cert_path || !hier)
        return usage_error("token issue: --key, --cert and --hierarchy are required");
    life = bulk ? 3 * 86400 : 90 * 86400;
    if (lifetime && !parse_duration_s(lifetime, &life))
        return usage_error("token issue: --lifetime \"%s\": use e.g. 72h or 3d", lifetime);
    if (bulk && life > AUTH_BULK_MAX_LIFETIME)
        return usage_error("token issue: bulk tokens live at most 7 days");
    memset(&keys, 0, sizeof keys);
    if (auth_site_keys_add_file(&keys, cert_path, err, sizeof err) != 0)
        return op_error(err);
    FILE *fp = fopen(key_path, "r");
    EVP_PKEY *key = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;
    if (fp)
        fclose(fp);
    if (!key || EVP_PKEY_eq(key, keys.signers[0].key) != 1) {
        EVP_PKEY_free(key);
        auth_site_keys_clear(&keys);
        return op_error("the key does not load or does not match the certificate");
    }
    if (!uid) {
        unsigned char r[16];
        RAND_bytes(r, sizeof r);
        r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
        r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
        snprintf(uidbuf, sizeof uidbuf,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
                 r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
                 r[15]);
        uid = uidbuf;
    }
    long long now = (long long)time(NULL);
    char iss[300];
    snprintf(iss, sizeof iss, "urn:sccm:oauth2:%s", hier);
    json_t *h =
        json_pack("{s:s, s:s, s:s}", "typ", "JWT", "alg", "RS256", "x5t", keys.signers[0].x5t);
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "aud", "urn:sccm:service", "iss", iss,
                          "Type", bulk ? "BulkRegistration" : "Device", "UniqueId", uid, "nbf",
                          (json_int_t)now, "exp", (json_int_t)(now + life));
    char *tok = h && p ? sign_jwt(h, p, key) : NULL;
    json_decref(h);
    json_decref(p);
    EVP_PKEY_free(key);
    auth_site_keys_clear(&keys);
    if (!tok)
        return op_error("signing failed");
    printf("%s\n", tok);
    fprintf(stderr, "cmgctl: %s token %s, valid %lld s from now\n", kind, uid, life);
    free(tok);
    return 0;
}

/* An Entra ID token, with the keys the gateway keeps in auth.cache_dir (fetched now when they
 * are missing or due). Returns the verdict, or -1 (printed) when the settings are unusable. */
static enum auth_token_error entra_verify(const char *config, const struct auth_settings *st,
                                          const char *tok)
{
    struct auth_entra_tenant tenants[AUTH_ENTRA_TENANTS_MAX];
    const char *tids[AUTH_ENTRA_TENANTS_MAX];
    size_t nt = 0;
    char err[512], dir[PATH_MAX];
    if (auth_entra_tenants_parse(st->entra_tenants, tenants, AUTH_ENTRA_TENANTS_MAX, &nt, err,
                                 sizeof err) != 0) {
        fprintf(stderr, "cmgctl: %s: auth.entra_tenants: %s\n", config, err);
        return (enum auth_token_error) - 1;
    }
    for (size_t i = 0; i < nt; i++)
        tids[i] = tenants[i].tenant;
    snprintf(dir, sizeof dir, "%s/entra", st->cache_dir ? st->cache_dir : "cache");
    core_fetch_global_init();
    struct auth_entra_source *src = auth_entra_source_new(dir, err, sizeof err);
    if (!src) {
        fprintf(stderr, "cmgctl: %s (keys are fetched without the cache)\n", err);
        src = auth_entra_source_new(NULL, err, sizeof err);
    }
    if (!src)
        return (enum auth_token_error) - 1;
    struct auth_entra_source_policy sp = {.refresh = st->entra_keys_refresh / 1000,
                                          .unknown_kid_interval = 0,
                                          .timeout_ms = st->fetch_timeout};
    const char *authority = auth_entra_authority(st->entra_cloud, st->entra_authority);
    auth_entra_source_configure(src, authority, tenants, nt, &sp);
    int64_t now = (int64_t)time(NULL);
    auth_entra_source_refresh(src, now, NULL);
    struct auth_entra_keys *k = auth_entra_source_keys(src);
    const char *aud[2];
    size_t na = 0;
    if (st->entra_app_id_uri && *st->entra_app_id_uri)
        aud[na++] = st->entra_app_id_uri;
    if (st->entra_server_app_id && *st->entra_server_app_id)
        aud[na++] = st->entra_server_app_id;
    struct auth_entra_policy p = {
        .cloud = st->entra_cloud == AUTH_ENTRA_USGOV ? AUTH_ENTRA_USGOV : AUTH_ENTRA_PUBLIC,
        .tenants = tids,
        .ntenants = nt,
        .audiences = aud,
        .naudiences = na,
        .skew = AUTH_CLOCK_SKEW,
        .now = now,
        .issuers = k ? k->issuers : NULL,
        .nissuers = k ? k->nissuers : 0,
    };
    struct auth_entra_identity id;
    enum auth_token_error e = auth_entra_verify(tok, strlen(tok), &p, k ? k->jwks : NULL, &id);
    printf("Entra ID keys: %u from %s for %zu tenant(s)\n", k && k->jwks ? k->jwks->nkeys : 0,
           authority, nt);
    if (e == AUTH_TOKEN_OK)
        printf("identity: tenant %s, object %s, app %s, token version %s\n", id.tenant,
               id.object_id, id.app_id, id.version);
    auth_entra_keys_free(k);
    auth_entra_source_free(src);
    return e;
}

static int cmd_token_verify(int argc, char **argv)
{
    const char *token_arg, *config = NULL, *path = NULL;
    const struct opt opts[] = {{"config", &config, 'c'}, {"path", &path, 0}, {NULL, NULL, 0}};
    struct auth_settings st;
    struct config_report r;
    struct auth_site_keys keys;
    char buf[16384], err[512];
    int rc;

    rc = parse_config_args("token verify", "TOKEN (or - for standard input)", argc, argv, opts,
                           &token_arg, &config);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *tok = token_arg;
    if (strcmp(token_arg, "-") == 0) {
        size_t n = fread(buf, 1, sizeof buf - 1, stdin);
        buf[n] = '\0';
        buf[strcspn(buf, " \r\n")] = '\0';
        tok = buf;
    }
    memset(&keys, 0, sizeof keys);
    rc = 2;
    if (load_auth(config, &st, &r) != 0)
        goto out;
    const char *files[AUTH_SITE_SIGNERS_MAX];
    char *copy = NULL;
    size_t nf = core_split_list(st.site_token_certs, &copy, files, AUTH_SITE_SIGNERS_MAX);
    for (size_t i = 0; i < nf; i++)
        if (auth_site_keys_add_file(&keys, files[i], err, sizeof err) != 0) {
            fprintf(stderr, "cmgctl: %s: auth.site_token_certs: %s\n", config, err);
            free(copy);
            goto out;
        }
    free(copy);

    struct auth_jwt jwt;
    enum auth_token_error e = auth_jwt_decode(tok, strlen(tok), &jwt);
    if (e == AUTH_TOKEN_OK) {
        /* What it says, minus the signature: claims are not secrets, the token is. */
        char *hd = json_dumps(jwt.header, JSON_INDENT(2) | JSON_SORT_KEYS);
        char *pd = json_dumps(jwt.payload, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("header: %s\nclaims: %s\n", hd, pd);
        free(hd);
        free(pd);
        auth_jwt_clear(&jwt);
    }
    if (e == AUTH_TOKEN_OK) {
        struct auth_site_policy p = {
            .hierarchy_id = st.hierarchy_id,
            .bulk_allowed = !path || auth_bulk_token_allowed(path, strlen(path)),
            .skew = AUTH_CLOCK_SKEW,
            .now = (int64_t)time(NULL),
        };
        struct auth_site_identity id;
        e = auth_site_verify(tok, strlen(tok), &p, &keys, &id);
    }
    bool entra = false;
    if (e == AUTH_TOKEN_UNKNOWN_KID && st.entra_tenants && *st.entra_tenants) {
        e = entra_verify(config, &st, tok);
        entra = true;
        if (e == (enum auth_token_error) - 1)
            goto out;
    }
    if (e == AUTH_TOKEN_UNKNOWN_KID) {
        printf("rejected: unknown_kid: not signed by a certificate in auth.site_token_certs "
               "(%u configured)%s\n",
               keys.n,
               entra ? " nor by a key of an onboarded Entra ID tenant"
                     : "; no Entra ID tenant is onboarded (auth.entra_tenants)");
        rc = 1;
        goto out;
    }
    if (e == AUTH_TOKEN_OK) {
        printf("accepted%s\n", entra ? " (Entra ID token)" : "");
        rc = 0;
    } else {
        printf("rejected: %s\n", auth_token_error_name(e));
        rc = 1;
    }
out:
    auth_site_keys_clear(&keys);
    auth_settings_free(&st);
    config_report_deinit(&r);
    return rc;
}

/* ---- content ---- */

/* A secret given as "-": the first line of standard input, without its line end. */
static const char *stdin_line(char *buf, size_t len)
{
    if (!fgets(buf, (int)len, stdin))
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf;
}

/* Takes the option `flag`, which has no value and so is unknown to parse_args, out of argv:
 * not where it is the value of one of opts, nor after "--". Returns the new argc. */
static int take_flag(const char *flag, int argc, char **argv, const struct opt *opts, bool *set)
{
    int n = 0, i;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], flag) == 0) {
            *set = true;
            continue;
        }
        argv[n++] = argv[i];
        for (const struct opt *o = opts; o->name && i + 1 < argc; o++)
            if (strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i] + 2, o->name) == 0) {
                argv[n++] = argv[++i];
                break;
            }
    }
    while (i < argc)
        argv[n++] = argv[i++];
    return n;
}

/* Feeds the file at path to a hasher; returns the hashes or NULL (printed). */
static struct content_pd_hashes *hash_file(const char *path, enum content_pd_version v)
{
    const size_t chunk = 1u << 20;
    struct content_pd_hasher_opts o = {v, 0, 0};
    struct content_pd_hasher *h = NULL;
    struct content_pd_hashes *hs = NULL;
    uint8_t *buf = malloc(chunk);
    struct stat st;
    ssize_t n;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "cmgctl: %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "cmgctl: %s: not a regular file\n", path);
        goto out;
    }
    o.size_hint = (uint64_t)st.st_size;
    h = content_pd_hasher_new(&o);
    if (!buf || !h) {
        fprintf(stderr, "cmgctl: out of memory\n");
        goto out;
    }
    while ((n = read(fd, buf, chunk)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "cmgctl: %s: %s\n", path, strerror(errno));
            goto out;
        }
        if ((rc = content_pd_hasher_update(h, buf, (size_t)n)) != 0)
            break;
    }
    if (rc == 0)
        rc = content_pd_hasher_finish(h, &hs);
    if (rc)
        fprintf(stderr, "cmgctl: %s: %s\n", path, content_pd_strerror(rc));
out:
    if (fd >= 0)
        close(fd);
    content_pd_hasher_free(h);
    free(buf);
    return hs;
}

/* 32 bytes a line, like `xxd -p -c 32`. */
static void write_hex(const uint8_t *p, size_t len)
{
    char line[66];

    for (size_t i = 0; i < len; i += 32) {
        size_t n = len - i < 32 ? len - i : 32, k;
        for (k = 0; k < n; k++)
            snprintf(line + 2 * k, 3, "%02x", p[i + k]);
        line[2 * k] = '\n';
        fwrite(line, 1, 2 * k + 1, stdout);
    }
}

static int cmd_content_peerdist(int argc, char **argv)
{
    const char *path, *version = NULL, *secret_hex = NULL, *key_file = NULL, *password = NULL;
    bool hex = false;
    const struct opt opts[] = {{"version", &version, 0},
                               {"secret-hex", &secret_hex, 0},
                               {"key-file", &key_file, 0},
                               {"password", &password, 0},
                               {NULL, NULL, 0}};
    struct content_pd_secret secret;
    struct content_pd_hashes *hs = NULL;
    enum content_pd_version v;
    char err[512], line[2 * CONTENT_PD_KEY_MAX + 4];
    uint8_t *ci = NULL;
    ssize_t n;
    int rc;

    argc = take_flag("--hex", argc, argv, opts, &hex);
    rc = parse_args("content peerdist", "FILE", argc, argv, opts, &path);

    if (rc < 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (!version)
        return usage_error("content peerdist: --version 1.0 or 2.0 is required");
    if (strcmp(version, "1.0") == 0)
        v = CONTENT_PD_V1;
    else if (strcmp(version, "2.0") == 0)
        v = CONTENT_PD_V2;
    else
        return usage_error("content peerdist: --version \"%s\": use 1.0 or 2.0", version);
    if (!secret_hex == !key_file)
        return usage_error("content peerdist: give the server secret key with --secret-hex HEX, "
                           "or --key-file FILE with --password PW");
    if (key_file && !password)
        return usage_error("content peerdist: --key-file needs the --password given to netsh");
    if (secret_hex && password)
        return usage_error("content peerdist: --password goes with --key-file");
    if (!hex && isatty(STDOUT_FILENO))
        return usage_error("content peerdist: the Content Information is binary; redirect "
                           "standard output or add --hex");
    if (secret_hex && strcmp(secret_hex, "-") == 0 && !(secret_hex = stdin_line(line, sizeof line)))
        return usage_error("content peerdist: --secret-hex -: nothing on standard input");
    if (password && strcmp(password, "-") == 0 && !(password = stdin_line(line, sizeof line)))
        return usage_error("content peerdist: --password -: nothing on standard input");
    if (secret_hex) {
        rc = content_pd_secret_from_hex(&secret, secret_hex, err, sizeof err);
        OPENSSL_cleanse(line, sizeof line);
        if (rc)
            return usage_error("content peerdist: --secret-hex: %s", err);
    } else {
        rc = content_pd_secret_load_export(&secret, key_file, password, err, sizeof err);
        OPENSSL_cleanse(line, sizeof line);
        if (rc)
            return op_error(err);
    }
    rc = EXIT_FAILURE;
    hs = hash_file(path, v);
    if (!hs)
        goto out;
    n = content_pd_ci_size(hs, v, NULL);
    ci = n > 0 ? malloc((size_t)n) : NULL;
    if (!ci) {
        fprintf(stderr, "cmgctl: out of memory\n");
        goto out;
    }
    n = content_pd_ci_write(hs, v, NULL, &secret, ci, (size_t)n);
    if (n < 0) {
        fprintf(stderr, "cmgctl: %s: %s\n", path, content_pd_strerror((int)n));
        goto out;
    }
    if (hex)
        write_hex(ci, (size_t)n);
    else
        fwrite(ci, 1, (size_t)n, stdout);
    fprintf(stderr,
            "cmgctl: %s: %llu bytes, Content Information %s: %zu segment%s, %zd bytes, key id "
            "%02x%02x%02x%02x%02x%02x%02x%02x%s\n",
            path, (unsigned long long)content_pd_hashes_size(hs), version,
            content_pd_hashes_segments(hs, v), content_pd_hashes_segments(hs, v) == 1 ? "" : "s", n,
            secret.id[0], secret.id[1], secret.id[2], secret.id[3], secret.id[4], secret.id[5],
            secret.id[6], secret.id[7],
            content_pd_hashes_size(hs) ? "" : " (empty content: servers send it without peerdist)");
    rc = 0;
out:
    free(ci);
    content_pd_hashes_free(hs);
    content_pd_secret_clear(&secret);
    return rc;
}

static int cmd_version(int argc, char **argv)
{
    (void)argv;
    if (argc > 0)
        return usage_error("version takes no arguments");
    printf("cmgctl %s (%s)\n", CMG_VERSION, OpenSSL_version(OPENSSL_VERSION));
    return 0;
}

static bool is(const char *arg, const char *word)
{
    return arg && strcmp(arg, word) == 0;
}

static int run(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;
    const char *sub = argc > 2 ? argv[2] : NULL;

    if (!cmd)
        return usage_error("missing command");
    if (is(cmd, "--help") || is(cmd, "-h") || is(cmd, "help")) {
        fputs(usage_text, stdout);
        printf("\n%s\n%s", cmgctl_content_usage, cmgctl_content_help);
        return 0;
    }
    if (is(cmd, "version") || is(cmd, "--version"))
        return cmd_version(argc - 2, argv + 2);
    if (is(cmd, "pki"))
        return is(sub, "init") ? cmd_pki_init(argc - 3, argv + 3)
                               : usage_error("pki: expected \"init\"");
    if (is(cmd, "cert"))
        return is(sub, "verify") ? cmd_cert_verify(argc - 3, argv + 3)
                                 : usage_error("cert: expected \"verify\"");
    if (is(cmd, "token"))
        return is(sub, "issue")    ? cmd_token_issue(argc - 3, argv + 3)
               : is(sub, "verify") ? cmd_token_verify(argc - 3, argv + 3)
                                   : usage_error("token: expected \"issue\" or \"verify\"");
    if (is(cmd, "content"))
        return is(sub, "peerdist")     ? cmd_content_peerdist(argc - 3, argv + 3)
               : is(sub, "distribute") ? cmgctl_content_distribute(argc - 3, argv + 3)
               : is(sub, "list")       ? cmgctl_content_list(argc - 3, argv + 3)
               : is(sub, "remove")     ? cmgctl_content_remove(argc - 3, argv + 3)
               : is(sub, "url")        ? cmgctl_content_url(argc - 3, argv + 3)
                                       : usage_error("content: expected \"distribute\", \"list\", "
                                                         "\"remove\", \"url\" or \"peerdist\"");
    if (deploy_cmd_is_verb(cmd))
        return deploy_cmd_run(cmd, argc - 2, argv + 2);
    if (is(cmd, "tickets"))
        return is(sub, "rotate") ? cmd_tickets_rotate(argc - 3, argv + 3)
                                 : usage_error("tickets: expected \"rotate\"");
    return usage_error("unknown command \"%s\"", cmd);
}

int main(int argc, char **argv)
{
    int rc = run(argc, argv);

    /* A report that never reached the terminal or the log is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cmgctl: writing the output: %s\n", strerror(errno));
        return rc ? rc : EXIT_FAILURE;
    }
    return rc;
}
