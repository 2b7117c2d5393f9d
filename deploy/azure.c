/* The Azure provider: an OAuth2 client-credentials token (client secret, or a certificate
 * assertion) from the environment's login host, then the ARM requests of arm.c over libcurl,
 * each driven to its end by the operation poller. Blocking calls: cmgctl is a command-line
 * tool with nothing else to do meanwhile. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "content.h"
#include "deploy.h"

#define AZ_BODY_MAX (8u << 20)

struct az_resp {
    long status;
    char *body;
    size_t len;
    char async_op[4096], location[4096], retry_after[64], request_id[128];
};

struct az {
    struct deploy_ctx *c;
    CURL *h;
    char *token;
    uint64_t token_exp_ms;
};

static void az_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static size_t az_write_cb(char *p, size_t s, size_t n, void *u)
{
    struct az_resp *r = u;
    size_t add = s * n;
    if (r->len + add > AZ_BODY_MAX)
        return 0;
    char *grown = realloc(r->body, r->len + add + 1);
    if (!grown)
        return 0;
    memcpy(grown + r->len, p, add);
    r->body = grown;
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

static void az_header_copy(char *dst, size_t len, const char *v, size_t vl)
{
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    while (vl && *v == ' ')
        v++, vl--;
    snprintf(dst, len, "%.*s", (int)vl, v);
}

static size_t az_header_cb(char *p, size_t s, size_t n, void *u)
{
    struct az_resp *r = u;
    size_t len = s * n;
    static const struct {
        const char *name;
        size_t off, size;
    } want[] = {
        {"azure-asyncoperation:", offsetof(struct az_resp, async_op), 4096},
        {"location:", offsetof(struct az_resp, location), 4096},
        {"retry-after:", offsetof(struct az_resp, retry_after), 64},
        {"x-ms-request-id:", offsetof(struct az_resp, request_id), 128},
    };
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue or a redirect): forget the last one's */
        r->async_op[0] = r->location[0] = r->retry_after[0] = '\0';
        return len;
    }
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t nl = strlen(want[i].name);
        if (len > nl && strncasecmp(p, want[i].name, nl) == 0)
            az_header_copy((char *)r + want[i].off, want[i].size, p + nl, len - nl);
    }
    return len;
}

/* One HTTP exchange. Returns 0 when an answer came, -1 with c->err when none did. */
static int az_http(struct az *az, const char *verb, const char *url, const char *ctype,
                   const char *body, const char *bearer, struct az_resp *r)
{
    struct curl_slist *hs = NULL;
    char auth[8300];
    free(r->body);
    memset(r, 0, sizeof(*r));
    curl_easy_reset(az->h);
    curl_easy_setopt(az->h, CURLOPT_URL, url);
    curl_easy_setopt(az->h, CURLOPT_CUSTOMREQUEST, verb);
    curl_easy_setopt(az->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(az->h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(az->h, CURLOPT_CONNECTTIMEOUT, 30L);
    /* TLS is always verified (libcurl's default); only loopback test endpoints are http */
    curl_easy_setopt(az->h, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(az->h, CURLOPT_USERAGENT, "cmgctl/" CMG_VERSION);
    curl_easy_setopt(az->h, CURLOPT_WRITEFUNCTION, az_write_cb);
    curl_easy_setopt(az->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(az->h, CURLOPT_HEADERFUNCTION, az_header_cb);
    curl_easy_setopt(az->h, CURLOPT_HEADERDATA, r);
    if (bearer) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
        hs = curl_slist_append(hs, auth);
    }
    if (ctype) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        hs = curl_slist_append(hs, ct);
    }
    hs = curl_slist_append(hs, "Accept: application/json");
    curl_easy_setopt(az->h, CURLOPT_HTTPHEADER, hs);
    if (body)
        curl_easy_setopt(az->h, CURLOPT_POSTFIELDS, body);
    else if (strcmp(verb, "POST") == 0 || strcmp(verb, "PUT") == 0 || strcmp(verb, "PATCH") == 0)
        curl_easy_setopt(az->h, CURLOPT_POSTFIELDS, "");
    CURLcode cc = curl_easy_perform(az->h);
    curl_slist_free_all(hs);
    OPENSSL_cleanse(auth, sizeof(auth));
    if (cc != CURLE_OK) {
        snprintf(az->c->err, sizeof(az->c->err), "%s %s: %s", verb, url, curl_easy_strerror(cc));
        LOG_ERROR("%s", az->c->err);
        return -1;
    }
    curl_easy_getinfo(az->h, CURLINFO_RESPONSE_CODE, &r->status);
    LOG_VERBOSE("%s %s -> %ld%s%s", verb, url, r->status, r->request_id[0] ? " request id " : "",
                r->request_id);
    return 0;
}

/* ---- token ---- */

static char *az_b64url(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        return NULL;
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (len && out[len - 1] == '=')
        out[--len] = '\0';
    return out;
}

/* The client assertion (RFC 7523): PS256, x5t#S256 of the certificate, aud = token URL. */
static char *az_assertion(struct az *az, const char *token_url)
{
    struct deploy_settings *ds = az->c->ds;
    char *out = NULL, *h64 = NULL, *p64 = NULL, *s64 = NULL, *x5t = NULL, *input = NULL;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = NULL;
    unsigned char sig[1024], der_hash[32], jti[16];
    size_t siglen = sizeof(sig);
    FILE *f = fopen(ds->server_app_cert_file, "r");
    if (f) {
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    f = fopen(ds->server_app_key_file, "r");
    if (f) {
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!cert || !key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        snprintf(az->c->err, sizeof(az->c->err),
                 "server app certificate: cannot read an RSA certificate from %s and its key "
                 "from %s",
                 ds->server_app_cert_file, ds->server_app_key_file);
        goto out;
    }
    unsigned int hl = sizeof(der_hash);
    X509_digest(cert, EVP_sha256(), der_hash, &hl);
    x5t = az_b64url(der_hash, hl);
    RAND_bytes(jti, sizeof(jti));
    char jtis[40];
    snprintf(jtis, sizeof(jtis),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", jti[0], jti[1],
             jti[2], jti[3], jti[4], jti[5], jti[6], jti[7], jti[8], jti[9], jti[10], jti[11],
             jti[12], jti[13], jti[14], jti[15]);
    json_int_t now = (json_int_t)time(NULL);
    json_t *hd = json_pack("{s:s, s:s, s:s}", "alg", "PS256", "typ", "JWT", "x5t#S256", x5t);
    json_t *cl = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", token_url, "iss",
                           ds->server_app_client_id, "sub", ds->server_app_client_id, "jti", jtis,
                           "nbf", now, "iat", now, "exp", now + 600);
    char *hj = json_dumps(hd, JSON_COMPACT), *pj = json_dumps(cl, JSON_COMPACT);
    json_decref(hd);
    json_decref(cl);
    h64 = az_b64url((unsigned char *)hj, strlen(hj));
    p64 = az_b64url((unsigned char *)pj, strlen(pj));
    free(hj);
    free(pj);
    if (asprintf(&input, "%s.%s", h64, p64) < 0) {
        input = NULL;
        goto out;
    }
    EVP_PKEY_CTX *pctx = NULL;
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
        EVP_DigestSign(md, sig, &siglen, (unsigned char *)input, strlen(input)) != 1) {
        snprintf(az->c->err, sizeof(az->c->err), "server app certificate: signing failed");
        goto out;
    }
    s64 = az_b64url(sig, siglen);
    if (asprintf(&out, "%s.%s", input, s64) < 0)
        out = NULL;
out:
    EVP_MD_CTX_free(md);
    X509_free(cert);
    EVP_PKEY_free(key);
    free(h64);
    free(p64);
    free(s64);
    free(x5t);
    free(input);
    return out;
}

static void az_fail(struct az *az, const char *what, const struct deploy_arm_error *e)
{
    const char *hint = deploy_arm_hint(e->code);
    snprintf(az->c->err, sizeof(az->c->err), "%s: %s: %s%s%s", what, e->code, e->message,
             hint ? "\n  what to do: " : "", hint ? hint : "");
    LOG_ERROR("%s", az->c->err);
}

static int az_token(struct az *az)
{
    struct deploy_settings *ds = az->c->ds;
    if (az->token && core_now_ms() + 300000 < az->token_exp_ms)
        return 0;
    char url[1024];
    snprintf(url, sizeof(url), "%s/%s/oauth2/v2.0/token", deploy_settings_login(ds), ds->tenant_id);
    char *client = curl_easy_escape(az->h, ds->server_app_client_id, 0);
    char *scope = curl_easy_escape(az->h, deploy_settings_env(ds)->scope, 0);
    char *form = NULL, *cred = NULL;
    if (ds->app_secret) {
        char *s = curl_easy_escape(az->h, ds->app_secret, 0);
        if (asprintf(&cred, "client_secret=%s", s) < 0)
            cred = NULL;
        curl_free(s);
    } else {
        /* the real host's URL is the assertion's audience, also against an overridden host */
        char aud[1024];
        snprintf(aud, sizeof(aud), "%s/%s/oauth2/v2.0/token", deploy_settings_env(ds)->login,
                 ds->tenant_id);
        char *a = az_assertion(az, ds->login_endpoint ? url : aud);
        if (a && asprintf(&cred,
                          "client_assertion_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-"
                          "assertion-type%%3Ajwt-bearer&client_assertion=%s",
                          a) < 0)
            cred = NULL;
        free(a);
    }
    int rc = -1;
    if (cred && asprintf(&form, "grant_type=client_credentials&client_id=%s&scope=%s&%s", client,
                         scope, cred) < 0)
        form = NULL;
    curl_free(client);
    curl_free(scope);
    if (cred)
        OPENSSL_cleanse(cred, strlen(cred));
    free(cred);
    if (!form)
        return -1;
    deploy_progress_step(az->c->prog, "signing in to %s as app %s", deploy_settings_login(ds),
                         ds->server_app_client_id);
    struct az_resp r = {0};
    if (az_http(az, "POST", url, "application/x-www-form-urlencoded", form, NULL, &r) == 0) {
        struct deploy_arm_error e;
        uint64_t secs;
        char *tok = deploy_login_parse(r.status, r.body, r.len, &secs, &e);
        if (tok) {
            free(az->token);
            az->token = tok;
            az->token_exp_ms = core_now_ms() + secs * 1000;
            deploy_progress_done(az->c->prog, "token received");
            rc = 0;
        } else {
            az_fail(az, "signing in", &e);
        }
    }
    OPENSSL_cleanse(form, strlen(form));
    free(form);
    free(r.body);
    return rc;
}

/* ---- running requests ---- */

static void az_print_req(const struct deploy_req *q)
{
    printf("%s %s\n", q->verb, q->url);
    if (!q->body)
        return;
    json_t *b = json_loads(q->body, 0, NULL);
    if (q->has_secret && b) {
        /* the extension's protected settings carry the certificate and its password */
        json_t *ext = json_object_get(
            json_object_get(json_object_get(json_object_get(json_object_get(b, "properties"),
                                                            "virtualMachineProfile"),
                                            "extensionProfile"),
                            "extensions"),
            "0");
        (void)ext;
        json_t *exts =
            json_object_get(json_object_get(json_object_get(json_object_get(b, "properties"),
                                                            "virtualMachineProfile"),
                                            "extensionProfile"),
                            "extensions");
        size_t i;
        json_t *e;
        json_array_foreach(exts, i, e)
        {
            json_t *ps = json_object_get(json_object_get(e, "properties"), "protectedSettings");
            if (json_is_object(ps))
                json_object_set_new(ps, "script",
                                    json_string("<redacted: instance setup "
                                                "with the service certificate>"));
        }
    }
    char *text = b ? json_dumps(b, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    printf("%s\n\n", text ? text : q->body);
    free(text);
    json_decref(b);
}

static void az_print_answer_redacted(const struct deploy_req *q)
{
    if (q->secret_answer)
        printf("# answer: {\"keys\": [<redacted: the storage account's keys>]}\n\n");
}

/* Sends q and follows it to its end. Returns 0 (resp holds the last answer), or -1 with
 * c->err set. */
static int az_run(struct az *az, const struct deploy_req *q, struct az_resp *resp)
{
    struct deploy_ctx *c = az->c;
    struct deploy_op op;
    if (c->dry_run) {
        az_print_req(q);
        az_print_answer_redacted(q);
        return 0;
    }
    if (az_token(az) != 0)
        return -1;
    deploy_op_init(&op, q, c->ds->poll_interval, (unsigned)c->ds->max_retries);
    deploy_progress_step(c->prog, "%s %s",
                         strcmp(q->verb, "DELETE") == 0 ? "deleting"
                         : strcmp(q->verb, "GET") == 0  ? "reading"
                                                        : "writing",
                         q->what);
    LOG_INFO("%s %s%s%s", q->verb, q->url, q->body && !q->has_secret ? " " : "",
             q->body && !q->has_secret ? q->body : "");
    const char *verb = q->verb, *url = q->url, *body = q->body;
    for (;;) {
        if (az_http(az, verb, url, body ? "application/json" : NULL, body, az->token, resp) != 0)
            return -1;
        struct deploy_http_resp hr = {
            .status = resp->status,
            .async_op = resp->async_op[0] ? resp->async_op : NULL,
            .location = resp->location[0] ? resp->location : NULL,
            .retry_after = resp->retry_after[0] ? resp->retry_after : NULL,
            .body = resp->body,
            .len = resp->len,
        };
        enum deploy_op_next next = deploy_op_feed(&op, q, &hr);
        switch (next) {
        case DEPLOY_NEXT_DONE:
            deploy_progress_done(c->prog, op.polls ? "Succeeded" : "done");
            if (op.phase == DEPLOY_OP_ASYNC && strcmp(q->verb, "DELETE") != 0 &&
                strcmp(q->verb, "POST") != 0) {
                /* the operation's body is a status: the resource itself is the result */
                return az_http(az, "GET", q->url, NULL, NULL, az->token, resp);
            }
            return 0;
        case DEPLOY_NEXT_FAILED:
            deploy_progress_done(c->prog, "failed");
            az_fail(az, q->what, &op.error);
            return -1;
        case DEPLOY_NEXT_RETRY:
            LOG_WARN("%s: HTTP %ld, retry %u after %llu ms", q->what, resp->status, op.retries,
                     (unsigned long long)op.delay_ms);
            deploy_progress_wait(c->prog, resp->status == 429 ? "throttled" : "retrying");
            az_sleep_ms(op.delay_ms);
            verb = q->verb, url = q->url, body = q->body;
            break;
        case DEPLOY_NEXT_POLL:
            deploy_progress_wait(c->prog, op.status[0] ? op.status : "InProgress");
            az_sleep_ms(op.delay_ms);
            if (az_token(az) != 0)
                return -1;
            verb = "GET", url = op.poll_url, body = NULL;
            break;
        }
    }
}

/* Runs q, a listKeys request, and copies the account's key into key (keylen > the longest
 * key). The answer is wiped, never logged. In a dry run key is a placeholder. Returns 0, or -1
 * with c->err. */
static int az_key_of(struct az *az, const struct deploy_req *q, char *key, size_t keylen)
{
    struct az_resp r = {0};
    char why[256];
    int rc = -1;
    if (az_run(az, q, &r) != 0)
        goto out;
    if (az->c->dry_run) {
        snprintf(key, keylen, "<the key listKeys returns>");
        rc = 0;
        goto out;
    }
    if (deploy_storage_key_parse(r.body, r.len, key, keylen, why, sizeof(why)) != 0) {
        snprintf(az->c->err, sizeof(az->c->err), "%s: %s", q->what, why);
        LOG_ERROR("%s", az->c->err);
        goto out;
    }
    rc = 0;
out:
    if (r.body)
        OPENSSL_cleanse(r.body, r.len);
    free(r.body);
    return rc;
}

/* The key of the deployment's storage account, asked of ARM now. */
static int az_storage_key(struct az *az, char *key, size_t keylen)
{
    struct deploy_req q;
    deploy_arm_storage_keys(az->c->ds, &q);
    int rc = az_key_of(az, &q, key, keylen);
    deploy_req_clear(&q);
    return rc;
}

static int az_init(struct az *az, struct deploy_ctx *c)
{
    memset(az, 0, sizeof(*az));
    az->c = c;
    az->h = curl_easy_init();
    if (!az->h) {
        snprintf(c->err, sizeof(c->err), "cannot start libcurl");
        return -1;
    }
    return 0;
}

static void az_deinit(struct az *az)
{
    curl_easy_cleanup(az->h);
    if (az->token)
        OPENSSL_cleanse(az->token, strlen(az->token));
    free(az->token);
}

static bool az_same_region(const char *a, const char *b)
{
    /* "East US" and "eastus" are the same region */
    while (*a || *b) {
        while (*a == ' ')
            a++;
        while (*b == ' ')
            b++;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        if (*a)
            a++;
        if (*b)
            b++;
    }
    return true;
}

/* The resource group exists in the chosen region (or is ours to create). Before any write. */
static int az_check_group(struct az *az, bool *create)
{
    struct deploy_settings *ds = az->c->ds;
    struct deploy_req q;
    struct az_resp r = {0};
    int rc = -1;
    deploy_arm_rg_get(ds, &q);
    if (az_run(az, &q, &r) != 0)
        goto out;
    if (az->c->dry_run) {
        *create = !ds->is_using_existing_group;
        rc = 0;
        goto out;
    }
    json_t *root = r.status == 200 && r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    const char *loc = json_string_value(json_object_get(root, "location"));
    json_t *tags = json_object_get(root, "tags");
    const char *by = json_string_value(json_object_get(tags, "cmg-created-by"));
    const char *svc = json_string_value(json_object_get(tags, "cmg-service"));
    if (r.status == 404 && ds->is_using_existing_group) {
        snprintf(az->c->err, sizeof(az->c->err),
                 "resource group %s does not exist in subscription %s\n  what to do: create it "
                 "in %s, or leave out --is-using-existing-group to have it created",
                 ds->group_name, ds->subscription_id, ds->region);
    } else if (root && loc && !az_same_region(loc, ds->region)) {
        snprintf(az->c->err, sizeof(az->c->err),
                 "resource group %s is in %s, not in %s: a gateway must be in its group's "
                 "region\n  what to do: give --region %s, or another group; nothing was changed",
                 ds->group_name, loc, ds->region, loc);
    } else if (root && !ds->is_using_existing_group &&
               !(by && strcmp(by, DEPLOY_TAG_OWNER) == 0 && svc &&
                 strcmp(svc, ds->service_name) == 0)) {
        snprintf(az->c->err, sizeof(az->c->err),
                 "resource group %s already exists (not made for %s by cmgctl)\n  what to do: "
                 "give --is-using-existing-group to deploy into it, or another --group-name",
                 ds->group_name, ds->service_name);
    } else {
        *create = !ds->is_using_existing_group;
        rc = 0;
    }
    json_decref(root);
out:
    deploy_req_clear(&q);
    free(r.body);
    return rc;
}

/* Reads which NAT port reaches which VM and pushes instance id and count to each. */
static int az_push(struct az *az, unsigned count)
{
    struct deploy_settings *ds = az->c->ds;
    struct deploy_req q;
    struct az_resp r = {0};
    int rc = 0;
    deploy_arm_lb_get(ds, &q);
    if (az->c->dry_run) {
        az_print_req(&q);
        printf("# then, for each VM behind NAT port 10124+i:\n");
        deploy_req_clear(&q);
        deploy_arm_push(ds, "{instanceId}", 0, count, &q);
        az_print_req(&q);
        deploy_req_clear(&q);
        return 0;
    }
    if (az_run(az, &q, &r) != 0) {
        deploy_req_clear(&q);
        free(r.body);
        return -1;
    }
    deploy_req_clear(&q);
    struct deploy_nat nat[DEPLOY_MAX_INSTANCES];
    size_t n = deploy_arm_nat_parse(r.body, r.len, nat, DEPLOY_MAX_INSTANCES);
    unsigned pushed = 0;
    for (size_t i = 0; i < n; i++) {
        deploy_arm_push(ds, nat[i].vm_id, nat[i].instance, count, &q);
        struct az_resp pr = {0};
        rc = az_run(az, &q, &pr);
        free(pr.body);
        deploy_req_clear(&q);
        if (rc != 0)
            break;
        pushed++;
    }
    free(r.body);
    if (rc == 0)
        deploy_progress_note(az->c->prog, "pushed the settings to %u instance(s)", pushed);
    return rc;
}

static int az_save(struct deploy_ctx *c)
{
    return c->dry_run ? 0 : deploy_state_write(c->ds->state, c->state, c->err, sizeof(c->err));
}

/* One step of create: runs q (a listKeys request into key) and records it done. */
static int az_create_step(struct az *az, const struct deploy_req *q, char *key, size_t keylen)
{
    struct az_resp r = {0};
    int rc = q->secret_answer ? az_key_of(az, q, key, keylen) : az_run(az, q, &r);
    free(r.body);
    if (rc != 0) {
        az_save(az->c);
        return -1;
    }
    json_array_append_new(json_object_get(az->c->state, "done"), json_string(q->what));
    return az_save(az->c);
}

int deploy_azure_create(struct deploy_ctx *c)
{
    struct deploy_settings *ds = c->ds;
    struct az az;
    struct deploy_req reqs[12];
    size_t n = 0;
    int rc = -1;
    bool create_rg = false;
    unsigned char *pfx = NULL;
    char *script = NULL;
    char key[DEPLOY_STORAGE_KEY_MAX + 1] = "";
    if (az_init(&az, c) != 0)
        return -1;
    json_object_set_new(c->state, "provider", json_string("azure"));
    json_object_set_new(c->state, "state", json_string(ds->state));
    json_object_set_new(c->state, "settings", deploy_settings_json(ds));
    if (az_check_group(&az, &create_rg) != 0)
        goto out;
    /* A group made by an earlier, failed run is still ours to delete. */
    if (!json_is_true(json_object_get(c->state, "rg_created")))
        json_object_set_new(c->state, "rg_created", json_boolean(create_rg));
    json_object_set_new(c->state, "instances", json_integer((json_int_t)ds->vm_instance_count));
    json_object_set_new(c->state, "complete", json_false());
    if (az_save(c) != 0)
        goto out;

    FILE *f = fopen(ds->service_cert_path, "rb");
    long size = -1;
    bool pfx_read = f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 &&
                    fseek(f, 0, SEEK_SET) == 0 && (pfx = malloc((size_t)size)) &&
                    fread(pfx, 1, (size_t)size, f) == (size_t)size;
    if (f)
        fclose(f);
    if (!pfx_read) {
        snprintf(c->err, sizeof(c->err), "%s: cannot read the service certificate",
                 ds->service_cert_path);
        goto out;
    }
    /* everything but the scale set, whose setup needs the storage key listed on the way */
    n = deploy_arm_create_plan(ds, NULL, reqs, 11);
    json_object_set_new(c->state, "done", json_array());
    for (size_t i = 0; i < n; i++)
        if (az_create_step(&az, &reqs[i], key, sizeof(key)) != 0)
            goto out;
    script =
        deploy_install_script(ds, pfx, (size_t)size, ds->enable_cloud_dp_function ? key : NULL);
    if (!script) {
        snprintf(c->err, sizeof(c->err), "cannot write the instances' setup script");
        goto out;
    }
    deploy_arm_vmss_put(ds, script, &reqs[n]);
    if (az_create_step(&az, &reqs[n++], key, sizeof(key)) != 0)
        goto out;
    if (az_push(&az, (unsigned)ds->vm_instance_count) != 0)
        goto out;
    json_object_set_new(c->state, "complete", json_true());
    if (az_save(c) != 0)
        goto out;
    c->result = json_pack("{s:s, s:s, s:s?, s:i, s:b}", "provider", "azure", "service_name",
                          ds->service_name, "deployment_name", ds->deployment_name, "instances",
                          (int)ds->vm_instance_count, "dry_run", c->dry_run);
    if (!c->dry_run)
        deploy_progress_note(c->prog,
                             "%s is deployed as %s: point a DNS CNAME for %s at it (unless they "
                             "are the same); connection points dial %s:10124..%u",
                             ds->service_name, ds->deployment_name, ds->service_name,
                             ds->deployment_name,
                             DEPLOY_TUNNEL_PORT_BASE + (unsigned)ds->vm_instance_count - 1);
    rc = 0;
out:
    for (size_t i = 0; i < n; i++)
        deploy_req_clear(&reqs[i]);
    if (script)
        OPENSSL_cleanse(script, strlen(script));
    free(script);
    OPENSSL_cleanse(key, sizeof(key));
    free(pfx);
    az_deinit(&az);
    return rc;
}

int deploy_azure_scale(struct deploy_ctx *c, unsigned count)
{
    struct az az;
    struct deploy_req q;
    struct az_resp r = {0};
    int rc = -1;
    if (az_init(&az, c) != 0)
        return -1;
    unsigned old = (unsigned)json_integer_value(json_object_get(c->state, "instances"));
    deploy_arm_scale(c->ds, count, &q);
    if (az_run(&az, &q, &r) == 0) {
        json_object_set_new(c->state, "instances", json_integer(count));
        if (az_save(c) == 0 && az_push(&az, count) == 0) {
            c->result = json_pack("{s:i, s:i, s:b}", "previous", (int)old, "instances", (int)count,
                                  "dry_run", c->dry_run);
            rc = 0;
        }
    }
    deploy_req_clear(&q);
    free(r.body);
    az_deinit(&az);
    return rc;
}

int deploy_azure_content_settings(struct deploy_ctx *c, struct content_settings *s)
{
    struct az az;
    char key[DEPLOY_STORAGE_KEY_MAX + 1] = "";
    int rc = -1;
    memset(s, 0, sizeof(*s));
    if (az_init(&az, c) != 0)
        return -1;
    if (az_storage_key(&az, key, sizeof(key)) == 0 &&
        deploy_content_settings_blob(c->ds, key, s, c->err, sizeof(c->err)) == 0)
        rc = 0;
    OPENSSL_cleanse(key, sizeof(key));
    az_deinit(&az);
    return rc;
}

/* The alerts of status: the storage the deployment's account holds, read with a key listed
 * now; when that fails the storage state is unknown and says why (status still answers). */
static json_t *az_alerts(struct az *az)
{
    struct deploy_ctx *c = az->c;
    json_t *settings = json_object_get(c->state, "settings");
    struct content_settings s;
    char key[DEPLOY_STORAGE_KEY_MAX + 1] = "";
    json_t *out;
    /* what was deployed, whatever the settings given to status say */
    json_t *dp = json_object_get(settings, "enable_cloud_dp_function");
    if (json_is_boolean(dp) ? json_is_false(dp) : !c->ds->enable_cloud_dp_function) {
        struct content_settings off = {.enabled = false};
        return deploy_alerts_json_of(settings, &off, NULL); /* "off", and why */
    }
    if (az_storage_key(az, key, sizeof(key)) != 0) {
        out = deploy_alerts_json_of(settings, NULL, c->err);
        c->err[0] = '\0';
    } else if (c->dry_run) {
        out = deploy_alerts_json_of(settings, NULL, "not read in a dry run");
    } else if (deploy_content_settings_blob(c->ds, key, &s, c->err, sizeof(c->err)) != 0) {
        out = deploy_alerts_json_of(settings, NULL, c->err);
        c->err[0] = '\0';
    } else {
        out = deploy_alerts_json_of(settings, &s, NULL);
        content_settings_free(&s);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return out;
}

/* The product's words for a VM's provisioning and power state. */
int deploy_azure_status(struct deploy_ctx *c)
{
    struct az az;
    struct deploy_req q;
    struct az_resp r = {0};
    int rc = -1;
    if (az_init(&az, c) != 0)
        return -1;
    c->prog->quiet = true;
    deploy_arm_vmss_get(c->ds, &q);
    if (az_run(&az, &q, &r) != 0)
        goto out;
    json_t *vmss = c->dry_run ? NULL : json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    const char *prov = json_string_value(
        json_object_get(json_object_get(vmss, "properties"), "provisioningState"));
    json_int_t capacity =
        json_integer_value(json_object_get(json_object_get(vmss, "sku"), "capacity"));
    deploy_req_clear(&q);
    deploy_arm_vms_list(c->ds, &q);
    if (az_run(&az, &q, &r) != 0) {
        json_decref(vmss);
        goto out;
    }
    json_t *list = c->dry_run ? NULL : json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    json_t *inst = json_array(), *vm;
    size_t i;
    const char *overall = prov && strcasecmp(prov, "Succeeded") != 0
                              ? (strcasecmp(prov, "Failed") == 0 ? "Error" : "Provisioning")
                              : "Ready";
    json_array_foreach(json_object_get(list, "value"), i, vm)
    {
        const char *detail;
        const char *st = deploy_arm_vm_state(
            json_object_get(json_object_get(json_object_get(vm, "properties"), "instanceView"),
                            "statuses"),
            &detail);
        json_t *o = json_pack("{s:s?, s:s}", "vm",
                              json_string_value(json_object_get(vm, "instanceId")), "state", st);
        if (detail && strcmp(st, "Error") == 0)
            json_object_set_new(o, "detail", json_string(detail));
        json_array_append_new(inst, o);
        if (strcmp(st, "Ready") != 0 && strcmp(overall, "Error") != 0)
            overall = st;
    }
    c->result =
        json_pack("{s:s, s:s?, s:s, s:s?, s:I, s:O, s:o, s:o}", "provider", "azure", "service_name",
                  c->ds->service_name, "state", overall, "provisioning_state", prov, "instances",
                  capacity, "settings", json_object_get(c->state, "settings"), "instance_states",
                  inst, "alerts", az_alerts(&az));
    json_decref(vmss);
    json_decref(list);
    rc = 0;
out:
    deploy_req_clear(&q);
    free(r.body);
    az_deinit(&az);
    return rc;
}

static int az_action(struct deploy_ctx *c, const char *action)
{
    struct az az;
    struct deploy_req q;
    struct az_resp r = {0};
    if (az_init(&az, c) != 0)
        return -1;
    deploy_arm_vmss_action(c->ds, action, &q);
    int rc = az_run(&az, &q, &r);
    deploy_req_clear(&q);
    free(r.body);
    az_deinit(&az);
    return rc;
}

int deploy_azure_stop(struct deploy_ctx *c)
{
    return az_action(c, "deallocate");
}

int deploy_azure_start(struct deploy_ctx *c)
{
    return az_action(c, "start");
}

int deploy_azure_delete(struct deploy_ctx *c)
{
    struct az az;
    struct deploy_req reqs[8];
    int rc = 0;
    if (az_init(&az, c) != 0)
        return -1;
    bool rg_created = json_is_true(json_object_get(c->state, "rg_created"));
    size_t n = deploy_arm_delete_plan(c->ds, false, reqs, 8);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct az_resp r = {0};
        rc = az_run(&az, &reqs[i], &r);
        free(r.body);
    }
    for (size_t i = 0; i < n; i++)
        deploy_req_clear(&reqs[i]);
    bool rg_left = false;
    if (rc == 0 && rg_created) {
        /* the group goes only if create made it and nothing else is in it now */
        struct deploy_req q;
        struct az_resp r = {0};
        deploy_arm_rg_resources(c->ds, &q);
        rc = az_run(&az, &q, &r);
        deploy_req_clear(&q);
        json_t *root = rc == 0 && r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        size_t left = json_array_size(json_object_get(root, "value"));
        json_decref(root);
        free(r.body);
        if (rc == 0 && (left == 0 || c->dry_run)) {
            n = deploy_arm_delete_plan(c->ds, true, reqs, 8);
            struct az_resp rr = {0};
            rc = az_run(&az, &reqs[n - 1], &rr);
            free(rr.body);
            for (size_t i = 0; i < n; i++)
                deploy_req_clear(&reqs[i]);
        } else if (rc == 0) {
            rg_left = true;
            deploy_progress_note(c->prog,
                                 "resource group %s kept: it holds %zu resource(s) cmgctl did "
                                 "not make",
                                 c->ds->group_name, left);
        }
    }
    if (rc == 0 && !c->dry_run) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/state.json", c->ds->state);
        unlink(path);
        c->result =
            json_pack("{s:s, s:b, s:b}", "deleted", c->ds->service_name, "resource_group_deleted",
                      rg_created && !rg_left, "dry_run", c->dry_run);
    }
    az_deinit(&az);
    return rc;
}
