/* Outbound HTTP GET for background refreshers (CRLs, OpenID metadata, JWKS): libcurl's easy
 * interface, bounded in time and size, conditional when the caller kept validators. Never
 * called on a worker loop. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core.h"

void core_fetch_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct core_fetch_sink {
    struct core_fetch_result *r;
    size_t max;
    bool too_big;
};

static size_t core_fetch_body(char *data, size_t size, size_t n, void *arg)
{
    struct core_fetch_sink *s = arg;
    size_t len = size * n;
    if (s->r->len + len > s->max) {
        s->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *p = realloc(s->r->body, s->r->len + len + 1);
    if (!p)
        return 0;
    memcpy(p + s->r->len, data, len);
    s->r->body = p;
    s->r->len += len;
    p[s->r->len] = '\0';
    return len;
}

/* Keeps the validators a later conditional request sends back. */
static size_t core_fetch_header(char *data, size_t size, size_t n, void *arg)
{
    struct core_fetch_result *r = ((struct core_fetch_sink *)arg)->r;
    size_t len = size * n;
    static const struct {
        const char *name;
        size_t off, cap;
    } keep[] = {
        {"etag:", offsetof(struct core_fetch_result, etag), sizeof(r->etag)},
        {"last-modified:", offsetof(struct core_fetch_result, last_modified),
         sizeof(r->last_modified)},
    };
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a new response (after a redirect): forget the previous one's validators */
        r->etag[0] = r->last_modified[0] = '\0';
        return len;
    }
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        size_t nl = strlen(keep[i].name);
        if (len <= nl || strncasecmp(data, keep[i].name, nl) != 0)
            continue;
        const char *v = data + nl;
        size_t vl = len - nl;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && isspace((unsigned char)v[vl - 1]))
            vl--;
        if (vl < keep[i].cap) {
            char *dst = (char *)r + keep[i].off;
            memcpy(dst, v, vl);
            dst[vl] = '\0';
        }
    }
    return len;
}

int core_fetch(const char *url, const struct core_fetch_opts *o, struct core_fetch_result *r)
{
    memset(r, 0, sizeof(*r));
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(r->error, sizeof(r->error), "cannot create an HTTP client");
        return -1;
    }
    struct core_fetch_sink sink = {r, o->max_bytes ? o->max_bytes : 4 * 1024 * 1024, false};
    struct curl_slist *hdrs = NULL;
    char line[300];
    if (o->if_none_match && *o->if_none_match) {
        snprintf(line, sizeof(line), "If-None-Match: %s", o->if_none_match);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (o->if_modified_since && *o->if_modified_since) {
        snprintf(line, sizeof(line), "If-Modified-Since: %s", o->if_modified_since);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (o->accept)
        hdrs = curl_slist_append(hdrs, o->accept);
    char ua[64];
    snprintf(ua, sizeof(ua), "cmg-gateway/%s", CMG_VERSION);
    bool https = strncasecmp(url, "https://", 8) == 0;
    /* http and https only; an https source is never redirected to plain http */
    if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https") !=
            CURLE_OK) {
        snprintf(r->error, sizeof(r->error), "this libcurl cannot restrict protocols");
        curl_easy_cleanup(h);
        return -1;
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(o->timeout_ms ? o->timeout_ms : 10000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(o->timeout_ms ? o->timeout_ms : 10000));
    curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, core_fetch_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, core_fetch_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &sink);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    if (o->ca_file && *o->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
    CURLcode rc = curl_easy_perform(h);
    int ret = 0;
    if (rc != CURLE_OK) {
        if (sink.too_big)
            snprintf(r->error, sizeof(r->error), "response larger than %zu bytes", sink.max);
        else
            snprintf(r->error, sizeof(r->error), "%s", curl_easy_strerror(rc));
        free(r->body);
        r->body = NULL;
        r->len = 0;
        ret = -1;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return ret;
}

void core_fetch_result_free(struct core_fetch_result *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
