/* Azure Blob storage over libcurl's easy interface: blocking calls for cmgctl and for the
 * gateway's fill and content threads. Requests are signed with the account's Shared Key
 * (blob-sign.c), or carry the configured SAS token. Easy handles are kept in a small pool
 * under a lock, so that several threads can call at once and connections get reused. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "blob-sign.h"
#include "store-impl.h"

#define POOL_MAX 8               /* idle easy handles kept */
#define ERROR_BODY_MAX 16384     /* bytes of an error body read for its message */
#define LIST_BODY_MAX (32 << 20) /* bytes of one List Blobs page */
#define LIST_PAGE 1000           /* maxresults per page */
#define BLOCKS_MAX 50000         /* blocks of one block blob */
#define ATTEMPTS 3               /* tries of a request that failed before any byte was used */
#define URL_MAX 4096

struct blob_store {
    char *account;
    uint8_t key[BLOB_KEY_MAX];
    size_t keylen;    /* 0: SAS token auth */
    char *sas;        /* the SAS token without '?', or NULL */
    char *base;       /* "https://host[:port][/path]", no trailing '/' */
    const char *path; /* the path part of base ("" or "/devstoreaccount1"), inside base */
    bool is_https;
    char *container;
    char *version;
    char *ca_file;
    long timeout_ms;
    uint64_t block;      /* upload_block */
    uint64_t single_max; /* upload_single_max */
    char describe[512];
    pthread_mutex_t lock;
    CURL *pool[POOL_MAX];
    size_t npool;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- one request ---- */

struct call {
    /* what to send */
    const char *method;
    const char *name;  /* blob name, or NULL for a container request */
    const char *query; /* encoded query without the SAS, or NULL */
    struct blob_header hdrs[12];
    size_t nhdrs;
    const uint8_t *body; /* the request body (PUT), or NULL */
    size_t body_len;
    bool has_body;
    /* what to do with the answer */
    content_store_sink_cb sink; /* 2xx body (GET) */
    void *sink_ctx;
    struct content_blob_info *info; /* filled from the headers before the first sink call */
    size_t capture_max;             /* keep a 2xx body up to this size (list); 0: no */
    content_store_progress_cb progress;
    void *progress_ctx;
    uint64_t progress_base, progress_total;
    /* the answer */
    long status;
    char error_code[128];
    char *capture; /* 2xx body kept, or the error body */
    size_t capture_len;
    uint64_t content_length;
    bool has_length;
    char etag[80];
    char last_modified[40];
    char md5[32];      /* Content-MD5 */
    char blob_md5[32]; /* x-ms-blob-content-md5 */
    uint64_t received;
    bool sink_started, aborted, too_big, io_failed;
    size_t sent;
};

static void call_reset_answer(struct call *c)
{
    c->status = 0;
    c->error_code[0] = c->etag[0] = c->last_modified[0] = c->md5[0] = c->blob_md5[0] = '\0';
    c->capture_len = 0;
    c->has_length = false;
    c->content_length = c->received = 0;
    c->sent = 0;
}

static void add_header(struct call *c, const char *name, const char *value)
{
    if (c->nhdrs < sizeof(c->hdrs) / sizeof(c->hdrs[0]))
        c->hdrs[c->nhdrs++] = (struct blob_header){name, value};
}

/* Copies header value v (len bytes, trimmed) into dst when it fits. */
static void keep_value(char *dst, size_t cap, const char *v, size_t len)
{
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    if (len < cap) {
        memcpy(dst, v, len);
        dst[len] = '\0';
    }
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = size * n;
    static const struct {
        const char *name;
        size_t off, cap;
    } keep[] = {
        {"etag:", offsetof(struct call, etag), sizeof(((struct call *)0)->etag)},
        {"last-modified:", offsetof(struct call, last_modified),
         sizeof(((struct call *)0)->last_modified)},
        {"content-md5:", offsetof(struct call, md5), sizeof(((struct call *)0)->md5)},
        {"x-ms-blob-content-md5:", offsetof(struct call, blob_md5),
         sizeof(((struct call *)0)->blob_md5)},
        {"x-ms-error-code:", offsetof(struct call, error_code),
         sizeof(((struct call *)0)->error_code)},
    };
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response head (after 100 Continue): forget the previous one */
        c->etag[0] = c->last_modified[0] = c->md5[0] = c->blob_md5[0] = c->error_code[0] = 0;
        c->has_length = false;
        return len;
    }
    if (len > 15 && strncasecmp(data, "content-length:", 15) == 0) {
        char num[32] = "";
        keep_value(num, sizeof(num), data + 15, len - 15);
        char *end;
        errno = 0;
        unsigned long long v = strtoull(num, &end, 10);
        if (num[0] >= '0' && num[0] <= '9' && !*end && !errno) {
            c->content_length = v;
            c->has_length = true;
        }
        return len;
    }
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        size_t nl = strlen(keep[i].name);
        if (len > nl && strncasecmp(data, keep[i].name, nl) == 0)
            keep_value((char *)c + keep[i].off, keep[i].cap, data + nl, len - nl);
    }
    return len;
}

/* Fills info from the response headers. */
static int fill_info(const struct call *c, const char *name, struct content_blob_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", name ? name : "");
    info->size = c->content_length;
    snprintf(info->etag, sizeof(info->etag), "%s", c->etag);
    if (c->last_modified[0] && blob_parse_http_date(c->last_modified, &info->last_modified) != 0)
        return CONTENT_STORE_EPROTO;
    /* x-ms-blob-content-md5 is the whole blob's; Content-MD5 may be a range's */
    const char *md5 = c->blob_md5[0] ? c->blob_md5 : c->md5;
    if (md5[0]) {
        if (blob_base64_decode(md5, strlen(md5), info->md5, sizeof(info->md5)) != 16)
            return CONTENT_STORE_EPROTO;
        info->has_md5 = true;
    }
    return 0;
}

static bool capture(struct call *c, const char *data, size_t len, size_t max)
{
    if (c->capture_len + len > max) {
        c->too_big = true;
        return false;
    }
    char *p = realloc(c->capture, c->capture_len + len + 1);
    if (!p) {
        c->io_failed = true;
        return false;
    }
    memcpy(p + c->capture_len, data, len);
    c->capture = p;
    c->capture_len += len;
    p[c->capture_len] = '\0';
    return true;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct call *c = ((struct call **)arg)[0];
    CURL *h = ((CURL **)arg)[1];
    size_t len = size * n;
    if (!c->status)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->status < 200 || c->status > 299) {
        /* the start of an error body is enough for its code and message */
        if (c->capture_len < ERROR_BODY_MAX)
            capture(c, data,
                    len < ERROR_BODY_MAX - c->capture_len ? len : ERROR_BODY_MAX - c->capture_len,
                    ERROR_BODY_MAX);
        return len;
    }
    c->received += len;
    if (c->capture_max)
        return capture(c, data, len, c->capture_max) ? len : 0;
    if (!c->sink)
        return len;
    if (!c->sink_started) {
        c->sink_started = true;
        if (c->info && fill_info(c, c->name, c->info) != 0) {
            c->io_failed = true;
            return 0;
        }
    }
    if (c->sink(c->sink_ctx, data, len) != 0) {
        c->aborted = true;
        return 0;
    }
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    size_t want = size * n, left = c->body_len - c->sent;
    if (want > left)
        want = left;
    if (want)
        memcpy(buf, c->body + c->sent, want);
    c->sent += want;
    return want;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct call *c = arg;
    (void)dltotal, (void)dlnow, (void)ultotal;
    if (c->progress &&
        c->progress(c->progress_ctx, c->progress_base + (uint64_t)ulnow, c->progress_total)) {
        c->aborted = true;
        return 1;
    }
    return 0;
}

/* Adds the configured extra roots to the verification store of a new TLS context. */
static CURLcode on_ssl_ctx(CURL *h, void *ssl_ctx, void *arg)
{
    const char *ca_file = arg;
    (void)h;
    X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
    if (!store || X509_STORE_load_file(store, ca_file) != 1)
        return CURLE_SSL_CACERT_BADFILE;
    return CURLE_OK;
}

static CURL *take_handle(struct blob_store *b)
{
    CURL *h = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->npool)
        h = b->pool[--b->npool];
    pthread_mutex_unlock(&b->lock);
    if (h)
        curl_easy_reset(h);
    else
        h = curl_easy_init();
    return h;
}

static void give_handle(struct blob_store *b, CURL *h)
{
    pthread_mutex_lock(&b->lock);
    if (b->npool < POOL_MAX) {
        b->pool[b->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&b->lock);
    if (h)
        curl_easy_cleanup(h);
}

/* "/<container>[/<encoded name>]" into out. */
static int resource_path(const struct blob_store *b, const char *name, char *out, size_t len)
{
    int w = snprintf(out, len, "%s/%s%s", b->path, b->container, name ? "/" : "");
    if (w < 0 || (size_t)w >= len)
        return -1;
    if (name && blob_url_encode(name, true, out + w, len - (size_t)w) < 0)
        return -1;
    return 0;
}

static const char *what(const struct call *c)
{
    return c->name ? c->name : "container";
}

/* The message of an error response into err: "403 AuthorizationFailure: Server failed ...". */
static void error_message(const struct blob_store *b, const struct call *c, char *err,
                          size_t errlen)
{
    char code[128] = "", msg[512] = "";
    if (c->error_code[0])
        snprintf(code, sizeof(code), "%s", c->error_code);
    else if (c->capture &&
             blob_xml_text(c->capture, c->capture_len, "Code", code, sizeof(code)) < 0)
        code[0] = '\0';
    if (c->capture && blob_xml_text(c->capture, c->capture_len, "Message", msg, sizeof(msg)) < 0)
        msg[0] = '\0';
    msg[strcspn(msg, "\r\n")] = '\0'; /* Azure appends RequestId and Time lines */
    snprintf(err, errlen, "%s %s%s%s: %ld%s%s%s%s", c->method, b->container, c->name ? "/" : "",
             c->name ? c->name : "", c->status, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
}

static int status_error(long status)
{
    if (status == 404)
        return CONTENT_STORE_ENOTFOUND;
    if (status == 412)
        return CONTENT_STORE_ECHANGED;
    if (status == 401 || status == 403)
        return CONTENT_STORE_EAUTH;
    if (status >= 500 || status == 408 || status == 429)
        return CONTENT_STORE_EIO;
    return CONTENT_STORE_EPROTO;
}

static bool is_transient(int rc, const struct call *c)
{
    return rc == CONTENT_STORE_EIO && !c->sink_started && !c->aborted && !c->io_failed &&
           (c->status == 0 || c->status >= 500 || c->status == 408 || c->status == 429);
}

/* One try of c. Returns 0 for a 2xx answer, else a content_store_error with err set. */
static int perform_once(struct blob_store *b, struct call *c, char *err, size_t errlen)
{
    char path[URL_MAX], url[URL_MAX * 2], date[30], auth[256], len[24], curlerr[CURL_ERROR_SIZE];
    struct curl_slist *list = NULL;
    int rc = CONTENT_STORE_EIO;

    call_reset_answer(c);
    c->too_big = c->aborted = c->io_failed = c->sink_started = false;
    if (resource_path(b, c->name, path, sizeof(path)) != 0) {
        snprintf(err, errlen, "%s: the name is too long for a URL", what(c));
        return CONTENT_STORE_EINVAL;
    }
    const char *q = c->query && *c->query ? c->query : NULL;
    int w =
        snprintf(url, sizeof(url), "%s%s%s%s%s%s", b->base, path + strlen(b->path),
                 q || b->sas ? "?" : "", q ? q : "", q && b->sas ? "&" : "", b->sas ? b->sas : "");
    if (w < 0 || (size_t)w >= sizeof(url)) {
        snprintf(err, errlen, "%s: the URL is too long", what(c));
        return CONTENT_STORE_EINVAL;
    }
    size_t nfixed = c->nhdrs;
    blob_http_date((int64_t)time(NULL), date);
    add_header(c, "x-ms-date", date);
    add_header(c, "x-ms-version", b->version);
    if (c->has_body) {
        snprintf(len, sizeof(len), "%zu", c->body_len);
        add_header(c, "Content-Length", len);
    }
    if (b->keylen) {
        struct blob_sign_request rq = {c->method, path, q, c->hdrs, c->nhdrs};
        if (blob_authorization(b->account, b->key, b->keylen, &rq, auth, sizeof(auth)) < 0) {
            c->nhdrs = nfixed;
            snprintf(err, errlen, "%s: cannot sign the request", what(c));
            return CONTENT_STORE_EINVAL;
        }
    }
    for (size_t i = 0; i < c->nhdrs; i++) {
        if (strcasecmp(c->hdrs[i].name, "Content-Length") == 0)
            continue; /* libcurl sends it from the upload size */
        char line[512];
        snprintf(line, sizeof(line), "%s: %s", c->hdrs[i].name, c->hdrs[i].value);
        list = curl_slist_append(list, line);
    }
    c->nhdrs = nfixed;
    if (b->keylen) {
        char line[300];
        snprintf(line, sizeof(line), "Authorization: %s", auth);
        list = curl_slist_append(list, line);
    }
    /* libcurl's own additions that would change what was signed or add a round trip */
    list = curl_slist_append(list, "Expect:");
    if (!c->has_body)
        list = curl_slist_append(list, "Content-Type:");

    CURL *h = take_handle(b);
    if (!h || !list) {
        snprintf(err, errlen, "%s: out of memory", what(c));
        goto out;
    }
    void *body_arg[2] = {c, h};
    curlerr[0] = '\0';
    long secs = (b->timeout_ms + 999) / 1000;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, b->is_https ? "https" : "http");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, b->timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body_arg);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cmg-content/" CMG_VERSION);
    if (b->ca_file) {
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, b->ca_file);
    }
    if (c->has_body) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, c);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->body_len);
        if (c->progress) {
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
        }
    } else if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(c->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
    }

    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->aborted) {
        snprintf(err, errlen, "%s %s: stopped by the caller", c->method, what(c));
        rc = CONTENT_STORE_EABORT;
    } else if (c->io_failed) {
        snprintf(err, errlen, "%s %s: a bad answer header, or out of memory", c->method, what(c));
        rc = CONTENT_STORE_EPROTO;
    } else if (c->too_big) {
        snprintf(err, errlen, "%s %s: the answer is larger than expected", c->method, what(c));
        rc = CONTENT_STORE_EPROTO;
    } else if (c->status >= 300 && (cc == CURLE_OK || c->status)) {
        error_message(b, c, err, errlen);
        rc = status_error(c->status);
    } else if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s%s%s", c->method, what(c), curl_easy_strerror(cc),
                 curlerr[0] ? ": " : "", curlerr);
        rc = CONTENT_STORE_EIO;
    } else if (c->status < 200) {
        snprintf(err, errlen, "%s %s: unexpected status %ld", c->method, what(c), c->status);
        rc = CONTENT_STORE_EPROTO;
    } else if (strcmp(c->method, "GET") == 0 && c->has_length && c->received != c->content_length) {
        snprintf(err, errlen, "%s %s: the body ended after %llu of %llu bytes", c->method, what(c),
                 (unsigned long long)c->received, (unsigned long long)c->content_length);
        rc = CONTENT_STORE_EIO;
    } else {
        rc = 0;
    }
    give_handle(b, h);
out:
    curl_slist_free_all(list);
    return rc;
}

/* c, tried again after a transport error or a 5xx that reached nothing of the caller's. */
static int perform(struct blob_store *b, struct call *c, char *err, size_t errlen)
{
    int rc = CONTENT_STORE_EIO;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        if (attempt) {
            struct timespec ts = {0, 250000000L * attempt};
            nanosleep(&ts, NULL);
        }
        free(c->capture);
        c->capture = NULL;
        rc = perform_once(b, c, err, errlen);
        if (!is_transient(rc, c))
            break;
    }
    return rc;
}

static void call_done(struct call *c)
{
    free(c->capture);
    c->capture = NULL;
}

/* ---- the store ---- */

struct blob_store *blob_store_new(const struct content_settings *s, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    struct blob_store *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&b->lock, NULL);
    if (!s->account || !s->container || !s->api_version || (!s->account_key && !s->sas)) {
        snprintf(err, errlen,
                 "content: a blob store needs the account, the container and a key or SAS");
        goto fail;
    }
    if (s->account_key) {
        ssize_t n =
            blob_base64_decode(s->account_key, strlen(s->account_key), b->key, sizeof(b->key));
        if (n <= 0) {
            snprintf(err, errlen, "content.account_key: not a base64 storage account key");
            goto fail;
        }
        b->keylen = (size_t)n;
    } else {
        const char *t = s->sas[0] == '?' ? s->sas + 1 : s->sas;
        if (!*t || strpbrk(t, " \t\r\n#")) {
            snprintf(err, errlen, "content.sas: not a SAS token (the query part of a SAS URL)");
            goto fail;
        }
        b->sas = strdup(t);
    }
    if (s->blob_endpoint) {
        b->base = strdup(s->blob_endpoint);
    } else {
        b->base = malloc(128);
        if (b->base)
            snprintf(b->base, 128, "https://%s.blob.%s", s->account,
                     s->environment == CONTENT_AZURE_USGOV ? "core.usgovcloudapi.net"
                                                           : "core.windows.net");
    }
    b->account = strdup(s->account);
    b->container = strdup(s->container);
    b->version = strdup(s->api_version);
    b->ca_file = s->ca_file ? strdup(s->ca_file) : NULL;
    if (!b->base || !b->account || !b->container || !b->version || (s->ca_file && !b->ca_file) ||
        (s->sas && !b->sas)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    size_t bl = strlen(b->base);
    while (bl && b->base[bl - 1] == '/')
        b->base[--bl] = '\0';
    const char *host;
    if (strncasecmp(b->base, "https://", 8) == 0) {
        b->is_https = true;
        host = b->base + 8;
    } else if (strncasecmp(b->base, "http://", 7) == 0) {
        host = b->base + 7;
    } else {
        snprintf(err, errlen, "content.blob_endpoint: \"%s\" is not an http:// or https:// URL",
                 b->base);
        goto fail;
    }
    if (!*host || *host == '/' || strpbrk(b->base, "?#@ ")) {
        snprintf(err, errlen,
                 "content.blob_endpoint: \"%s\" is not of the form http(s)://host[:port][/path]",
                 b->base);
        goto fail;
    }
    const char *slash = strchr(host, '/');
    b->path = slash ? slash : b->base + bl;
    b->timeout_ms = (long)s->timeout;
    b->block = s->upload_block ? s->upload_block : 8u << 20;
    b->single_max = s->upload_single_max;
    snprintf(b->describe, sizeof(b->describe), "blob %s/%s", b->base, b->container);
    return b;
fail:
    blob_store_free(b);
    return NULL;
}

void blob_store_free(struct blob_store *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->npool; i++)
        curl_easy_cleanup(b->pool[i]);
    pthread_mutex_destroy(&b->lock);
    explicit_bzero(b->key, sizeof(b->key));
    if (b->sas)
        explicit_bzero(b->sas, strlen(b->sas));
    free(b->sas);
    free(b->account);
    free(b->base);
    free(b->container);
    free(b->version);
    free(b->ca_file);
    free(b);
}

const char *blob_store_describe(const struct blob_store *b)
{
    return b->describe;
}

int blob_store_prepare(struct blob_store *b, char *err, size_t errlen)
{
    struct call c = {.method = "PUT", .query = "restype=container", .has_body = true};
    int rc = perform(b, &c, err, errlen);
    if (rc == CONTENT_STORE_EPROTO && c.status == 409 &&
        strcmp(c.error_code, "ContainerAlreadyExists") == 0)
        rc = 0;
    if (rc == CONTENT_STORE_EAUTH && b->sas) {
        /* a container-scoped SAS cannot create the container: enough that it exists */
        struct call p = {.method = "HEAD", .query = "restype=container"};
        char perr[256];
        if (perform(b, &p, perr, sizeof(perr)) == 0)
            rc = 0;
        call_done(&p);
    }
    call_done(&c);
    return rc;
}

int blob_store_head(struct blob_store *b, const char *name, struct content_blob_info *info,
                    char *err, size_t errlen)
{
    struct call c = {.method = "HEAD", .name = name};
    int rc = perform(b, &c, err, errlen);
    if (rc == 0 && !c.has_length) {
        snprintf(err, errlen, "HEAD %s: no Content-Length in the answer", name);
        rc = CONTENT_STORE_EPROTO;
    }
    if (rc == 0 && (rc = fill_info(&c, name, info)) != 0)
        snprintf(err, errlen, "HEAD %s: a malformed Last-Modified or Content-MD5", name);
    call_done(&c);
    return rc;
}

int blob_store_get(struct blob_store *b, const char *name, const char *etag,
                   content_store_sink_cb sink, void *ctx, struct content_blob_info *info, char *err,
                   size_t errlen)
{
    struct content_blob_info tmp;
    struct call c = {
        .method = "GET", .name = name, .sink = sink, .sink_ctx = ctx, .info = info ? info : &tmp};
    if (etag)
        add_header(&c, "If-Match", etag);
    int rc = perform(b, &c, err, errlen);
    if (rc == 0 && !c.has_length) {
        snprintf(err, errlen, "GET %s: no Content-Length in the answer", name);
        rc = CONTENT_STORE_EPROTO;
    }
    /* an empty blob gives no body callback: its info is filled here */
    if (rc == 0 && !c.sink_started && (rc = fill_info(&c, name, c.info)) != 0)
        snprintf(err, errlen, "GET %s: a malformed Last-Modified or Content-MD5", name);
    call_done(&c);
    return rc;
}

static void md5_b64(const uint8_t md5[16], char out[32])
{
    blob_base64_encode(md5, 16, out);
}

/* One Put Blob of data[0..len). */
static int put_single(struct blob_store *b, const char *name, const uint8_t *data, size_t len,
                      const uint8_t md5[16], const char *content_type,
                      content_store_progress_cb progress, void *ctx, struct content_blob_info *info,
                      char *err, size_t errlen)
{
    char md5s[32];
    md5_b64(md5, md5s);
    struct call c = {.method = "PUT",
                     .name = name,
                     .body = data,
                     .body_len = len,
                     .has_body = true,
                     .progress = progress,
                     .progress_ctx = ctx,
                     .progress_total = len};
    add_header(&c, "x-ms-blob-type", "BlockBlob");
    add_header(&c, "Content-Type", content_type ? content_type : "application/octet-stream");
    add_header(&c, "Content-MD5", md5s);
    int rc = perform(b, &c, err, errlen);
    if (rc == 0 && info) {
        c.content_length = len;
        c.md5[0] = c.blob_md5[0] = '\0';
        if (fill_info(&c, name, info) != 0) {
            snprintf(err, errlen, "PUT %s: a malformed Last-Modified in the answer", name);
            rc = CONTENT_STORE_EPROTO;
        }
        memcpy(info->md5, md5, 16);
        info->has_md5 = true;
    }
    call_done(&c);
    return rc;
}

static int md5_of(const void *data, size_t len, uint8_t out[16])
{
    unsigned n = 0;
    return EVP_Digest(data, len, out, &n, EVP_md5(), NULL) == 1 ? 0 : -1;
}

int blob_store_put_bytes(struct blob_store *b, const char *name, const void *data, size_t len,
                         const char *content_type, struct content_blob_info *info, char *err,
                         size_t errlen)
{
    uint8_t md5[16];
    if (md5_of(data, len, md5) != 0) {
        snprintf(err, errlen, "%s: MD5 not available", name);
        return CONTENT_STORE_EIO;
    }
    return put_single(b, name, data, len, md5, content_type, NULL, NULL, info, err, errlen);
}

/* Reads exactly len bytes (fewer only at the end of the file). Returns the count or -1. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* The block id of block i: base64 of a fixed-width counter, as every id of a blob must have
 * the same length. */
static void block_id(size_t i, char out[32])
{
    char raw[16];
    snprintf(raw, sizeof(raw), "cmg-%08zu", i);
    blob_base64_encode((const uint8_t *)raw, 12, out);
}

static int put_blocks(struct blob_store *b, const char *name, int fd, uint64_t size,
                      const char *content_type, content_store_progress_cb progress, void *ctx,
                      struct content_blob_info *info, char *err, size_t errlen)
{
    uint64_t nblocks = (size + b->block - 1) / b->block;
    if (nblocks > BLOCKS_MAX) {
        snprintf(err, errlen,
                 "%s: %llu bytes would take %llu blocks of upload_block = %llu bytes; a blob "
                 "has at most %d",
                 name, (unsigned long long)size, (unsigned long long)nblocks,
                 (unsigned long long)b->block, BLOCKS_MAX);
        return CONTENT_STORE_EINVAL;
    }
    uint8_t *buf = malloc(b->block);
    /* <Latest>id</Latest> per block, ids 16 characters */
    size_t xml_cap = 128 + (size_t)nblocks * 40;
    char *xml = malloc(xml_cap);
    EVP_MD_CTX *whole = EVP_MD_CTX_new();
    int rc = CONTENT_STORE_EIO;
    size_t xl = 0;
    if (!buf || !xml || !whole || EVP_DigestInit_ex(whole, EVP_md5(), NULL) != 1) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto out;
    }
    xl = (size_t)snprintf(xml, xml_cap, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for (uint64_t i = 0; i < nblocks; i++) {
        size_t want = (size_t)(i + 1 < nblocks ? b->block : size - i * b->block);
        ssize_t got = read_full(fd, buf, want);
        if (got < 0) {
            snprintf(err, errlen, "%s: reading: %s", name, strerror(errno));
            goto out;
        }
        if ((size_t)got != want) {
            snprintf(err, errlen, "%s: the file became shorter while it was read", name);
            goto out;
        }
        uint8_t bmd5[16];
        char id[32], eid[64], query[128], bmd5s[32];
        EVP_DigestUpdate(whole, buf, want);
        md5_of(buf, want, bmd5);
        md5_b64(bmd5, bmd5s);
        block_id((size_t)i, id);
        blob_url_encode(id, false, eid, sizeof(eid));
        snprintf(query, sizeof(query), "comp=block&blockid=%s", eid);
        struct call c = {.method = "PUT",
                         .name = name,
                         .query = query,
                         .body = buf,
                         .body_len = want,
                         .has_body = true,
                         .progress = progress,
                         .progress_ctx = ctx,
                         .progress_base = i * b->block,
                         .progress_total = size};
        add_header(&c, "Content-MD5", bmd5s);
        rc = perform(b, &c, err, errlen);
        call_done(&c);
        if (rc)
            goto out;
        xl += (size_t)snprintf(xml + xl, xml_cap - xl, "<Latest>%s</Latest>", id);
    }
    uint8_t extra;
    if (read_full(fd, &extra, 1) != 0) {
        snprintf(err, errlen, "%s: the file grew while it was read", name);
        rc = CONTENT_STORE_EIO;
        goto out;
    }
    xl += (size_t)snprintf(xml + xl, xml_cap - xl, "</BlockList>");
    uint8_t md5[16];
    unsigned mdlen = 0;
    char md5s[32];
    EVP_DigestFinal_ex(whole, md5, &mdlen);
    md5_b64(md5, md5s);
    struct call c = {.method = "PUT",
                     .name = name,
                     .query = "comp=blocklist",
                     .body = (const uint8_t *)xml,
                     .body_len = xl,
                     .has_body = true};
    add_header(&c, "Content-Type", "application/xml");
    add_header(&c, "x-ms-blob-content-md5", md5s);
    add_header(&c, "x-ms-blob-content-type",
               content_type ? content_type : "application/octet-stream");
    rc = perform(b, &c, err, errlen);
    if (rc == 0 && info) {
        c.content_length = size;
        c.md5[0] = c.blob_md5[0] = '\0';
        if (fill_info(&c, name, info) != 0) {
            snprintf(err, errlen, "PUT %s: a malformed Last-Modified in the answer", name);
            rc = CONTENT_STORE_EPROTO;
        }
        memcpy(info->md5, md5, 16);
        info->has_md5 = true;
    }
    call_done(&c);
    if (rc == 0 && progress && progress(ctx, size, size)) {
        snprintf(err, errlen, "PUT %s: stopped by the caller", name);
        rc = CONTENT_STORE_EABORT;
    }
out:
    EVP_MD_CTX_free(whole);
    free(xml);
    free(buf);
    return rc;
}

int blob_store_put_file(struct blob_store *b, const char *name, const char *path,
                        const char *content_type, content_store_progress_cb progress, void *ctx,
                        struct content_blob_info *info, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return errno == ENOENT ? CONTENT_STORE_ENOTFOUND : CONTENT_STORE_EIO;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: not a regular file", path);
        return CONTENT_STORE_EINVAL;
    }
    uint64_t size = (uint64_t)sb.st_size;
    int rc;
    if (size > b->single_max) {
        rc = put_blocks(b, name, fd, size, content_type, progress, ctx, info, err, errlen);
        close(fd);
        return rc;
    }
    /* one Put Blob: the file is held in memory (at most upload_single_max bytes) so that its
     * MD5 goes in the request's Content-MD5 and the file is read once */
    uint8_t *buf = malloc(size ? size : 1), extra;
    ssize_t got = buf ? read_full(fd, buf, size) : -1;
    int saved = errno;
    ssize_t more = got >= 0 ? read_full(fd, &extra, 1) : 0;
    close(fd);
    uint8_t md5[16];
    if (!buf || got < 0) {
        snprintf(err, errlen, "%s: %s", path, buf ? strerror(saved) : "out of memory");
        rc = CONTENT_STORE_EIO;
    } else if ((uint64_t)got != size || more != 0) {
        snprintf(err, errlen, "%s: the file changed size while it was read", path);
        rc = CONTENT_STORE_EIO;
    } else if (md5_of(buf, size, md5) != 0) {
        snprintf(err, errlen, "%s: MD5 not available", path);
        rc = CONTENT_STORE_EIO;
    } else {
        rc = put_single(b, name, buf, size, md5, content_type, progress, ctx, info, err, errlen);
        if (rc == 0 && progress && progress(ctx, size, size)) {
            snprintf(err, errlen, "PUT %s: stopped by the caller", name);
            rc = CONTENT_STORE_EABORT;
        }
    }
    free(buf);
    return rc;
}

struct list_ctx {
    content_store_each_cb each;
    void *ctx;
};

static int list_each(void *arg, const struct content_blob_info *info)
{
    struct list_ctx *l = arg;
    return l->each(l->ctx, info);
}

int blob_store_list(struct blob_store *b, const char *prefix, content_store_each_cb each, void *ctx,
                    char *err, size_t errlen)
{
    char eprefix[3 * 1024 + 1] = "", marker[1024] = "", emarker[3 * 1024 + 1], query[8192];
    if (prefix && blob_url_encode(prefix, false, eprefix, sizeof(eprefix)) < 0) {
        snprintf(err, errlen, "list: the prefix is too long");
        return CONTENT_STORE_EINVAL;
    }
    struct list_ctx l = {each, ctx};
    for (unsigned page = 0;; page++) {
        if (blob_url_encode(marker, false, emarker, sizeof(emarker)) < 0) {
            snprintf(err, errlen, "list: a continuation marker too long");
            return CONTENT_STORE_EPROTO;
        }
        snprintf(query, sizeof(query), "restype=container&comp=list&maxresults=%d%s%s%s%s",
                 LIST_PAGE, prefix ? "&prefix=" : "", eprefix, marker[0] ? "&marker=" : "",
                 emarker);
        struct call c = {.method = "GET", .query = query, .capture_max = LIST_BODY_MAX};
        int rc = perform(b, &c, err, errlen);
        if (rc == 0) {
            rc = blob_list_parse(c.capture ? c.capture : "", c.capture_len, list_each, &l, marker,
                                 sizeof(marker));
            if (rc == CONTENT_STORE_EPROTO)
                snprintf(err, errlen, "list %s: page %u of the enumeration does not parse",
                         b->container, page + 1);
        }
        call_done(&c);
        if (rc || !marker[0])
            return rc;
    }
}

int blob_store_delete(struct blob_store *b, const char *name, char *err, size_t errlen)
{
    struct call c = {.method = "DELETE", .name = name};
    int rc = perform(b, &c, err, errlen);
    if (rc == CONTENT_STORE_ENOTFOUND)
        rc = 0;
    call_done(&c);
    return rc;
}

int blob_store_sas_url(const struct blob_store *b, const char *name, int64_t now, int64_t expires,
                       char *out, size_t outlen, char *err, size_t errlen)
{
    if (!b->keylen) {
        snprintf(err, errlen, "SAS URLs are signed with the account key; this store has a SAS");
        return CONTENT_STORE_EINVAL;
    }
    if (expires <= now) {
        snprintf(err, errlen, "SAS URL for %s: the expiry is not in the future", name);
        return CONTENT_STORE_EINVAL;
    }
    struct blob_sas_params p = {b->account, b->container, name,        b->version,
                                now - 300,  expires,      !b->is_https};
    char path[URL_MAX], query[1024];
    if (resource_path(b, name, path, sizeof(path)) != 0 ||
        blob_sas_query(&p, b->key, b->keylen, query, sizeof(query)) < 0) {
        snprintf(err, errlen, "SAS URL for %s: the name is too long", name);
        return CONTENT_STORE_EINVAL;
    }
    int w = snprintf(out, outlen, "%s%s?%s", b->base, path + strlen(b->path), query);
    if (w < 0 || (size_t)w >= outlen) {
        snprintf(err, errlen, "SAS URL for %s: longer than the buffer", name);
        return CONTENT_STORE_EINVAL;
    }
    return 0;
}
