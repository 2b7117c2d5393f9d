/* HTTP/1.1 request reading on llhttp, built in strict mode, with no lenient flags. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpreq.h"

enum { RS_IDLE = 0, RS_TOKEN, RS_HEAD, RS_BODY, RS_DONE, RS_ERROR };

static const struct {
    const char *name;
    enum httpreq_method method;
    const char *as_seen_by_llhttp; /* what llhttp is fed instead of the verb, or NULL */
} httpreq_custom[] = {
    {"CCM_POST", HTTPREQ_M_CCM_POST, "POST "},
    {"BITS_POST", HTTPREQ_M_BITS_POST, "POST "},
};

static struct httpreq *httpreq_of(llhttp_t *p)
{
    return p->data;
}

static int httpreq_fail(struct httpreq *r, int status, const char *reason)
{
    r->error_status = status;
    r->error_reason = reason;
    return HPE_USER;
}

static int httpreq_append(struct httpreq *r, const char *at, size_t len)
{
    if ((size_t)r->head_len + len > r->limits->max_header_bytes)
        return httpreq_fail(r, 431, "request header fields too large");
    if (r->head_len + len > r->head_cap) {
        uint32_t cap = r->head_cap ? r->head_cap : 512;
        while (cap < r->head_len + len)
            cap *= 2;
        if (cap > r->limits->max_header_bytes)
            cap = (uint32_t)r->limits->max_header_bytes;
        char *p = realloc(r->head, cap);
        if (!p)
            return httpreq_fail(r, 503, "out of memory");
        r->head = p;
        r->head_cap = cap;
    }
    memcpy(r->head + r->head_len, at, len);
    r->head_len += (uint32_t)len;
    return 0;
}

static int httpreq_on_url(llhttp_t *p, const char *at, size_t len)
{
    struct httpreq *r = httpreq_of(p);
    if (r->url_len == 0)
        r->url_off = r->head_len;
    int rc = httpreq_append(r, at, len);
    if (rc == 0)
        r->url_len += (uint32_t)len; /* only what was kept counts */
    return rc;
}

static int httpreq_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct httpreq *r = httpreq_of(p);
    /* Trailer fields after a chunked body would land among the head's fields unchecked; no
     * client of the product sends them, so they are refused. */
    if (r->state == RS_BODY)
        return httpreq_fail(r, 400, "trailer fields after a chunked body");
    struct httpreq_header *h = r->nheaders ? &r->headers[r->nheaders - 1] : NULL;
    if (!h || h->value_off != UINT32_MAX) {
        if (r->nheaders >= r->limits->max_headers)
            return httpreq_fail(r, 431, "too many header fields");
        if (r->nheaders == r->headers_cap) {
            unsigned cap = r->headers_cap ? r->headers_cap * 2 : 16;
            struct httpreq_header *nh = realloc(r->headers, cap * sizeof(*nh));
            if (!nh)
                return httpreq_fail(r, 503, "out of memory");
            r->headers = nh;
            r->headers_cap = cap;
        }
        h = &r->headers[r->nheaders++];
        h->name_off = r->head_len;
        h->name_len = 0;
        h->value_off = UINT32_MAX; /* name still open */
        h->value_len = 0;
    }
    int rc = httpreq_append(r, at, len);
    if (rc == 0)
        h->name_len += (uint32_t)len;
    return rc;
}

/* RFC 9110 5.6.2 token characters. */
static bool httpreq_is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* llhttp 8 lets spaces through in field names ("Bad Name: x"); a proxy must not, since other
 * parsers disagree on what such a line means. */
static int httpreq_on_header_field_complete(llhttp_t *p)
{
    struct httpreq *r = httpreq_of(p);
    const struct httpreq_header *h = &r->headers[r->nheaders - 1];
    if (h->name_len == 0)
        return httpreq_fail(r, 400, "empty header name");
    for (uint32_t i = 0; i < h->name_len; i++)
        if (!httpreq_is_tchar((unsigned char)r->head[h->name_off + i]))
            return httpreq_fail(r, 400, "invalid character in a header name");
    return 0;
}

static int httpreq_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct httpreq *r = httpreq_of(p);
    struct httpreq_header *h = &r->headers[r->nheaders - 1];
    /* llhttp hands a folded line (obs-fold) over as a second span of the same value. A value
     * continued only because the input was split ended exactly at the end of one input and
     * goes on exactly at the start of the next; a folded one does not. RFC 9112 5.2 lets a server
     * reject obs-fold, and a proxy must not pass it on, so it is refused. */
    if (r->in_value && (at != r->feed_start || !r->value_cut))
        return httpreq_fail(r, 400, "obsolete line folding in a header");
    r->value_cut = at + len == r->feed_end;
    if (!r->in_value) {
        r->in_value = true;
        h->value_off = r->head_len;
    }
    int rc = httpreq_append(r, at, len);
    if (rc == 0)
        h->value_len += (uint32_t)len;
    return rc;
}

static int httpreq_on_header_value_complete(llhttp_t *p)
{
    struct httpreq *r = httpreq_of(p);
    struct httpreq_header *h = &r->headers[r->nheaders - 1];
    if (!r->in_value) /* empty value */
        h->value_off = r->head_len;
    r->in_value = false;
    return 0;
}

static bool httpreq_value_is(const struct httpreq *r, const char *v, size_t len, const char *word)
{
    (void)r;
    return len == strlen(word) && strncasecmp(v, word, len) == 0;
}

static int httpreq_on_headers_complete(llhttp_t *p)
{
    struct httpreq *r = httpreq_of(p);
    if (r->method == HTTPREQ_M_OTHER) {
        switch (llhttp_get_method(p)) {
        case HTTP_GET:
            r->method = HTTPREQ_M_GET, r->method_name = "GET";
            break;
        case HTTP_HEAD:
            r->method = HTTPREQ_M_HEAD, r->method_name = "HEAD";
            break;
        case HTTP_POST:
            r->method = HTTPREQ_M_POST, r->method_name = "POST";
            break;
        case HTTP_PUT:
            r->method = HTTPREQ_M_PUT, r->method_name = "PUT";
            break;
        case HTTP_PROPFIND:
            r->method = HTTPREQ_M_PROPFIND, r->method_name = "PROPFIND";
            break;
        case HTTP_OPTIONS:
            r->method = HTTPREQ_M_OPTIONS, r->method_name = "OPTIONS";
            break;
        default:
            r->method_name = llhttp_method_name(llhttp_get_method(p));
            break;
        }
    }
    if (p->http_major != 1)
        return httpreq_fail(r, 505, "HTTP version not supported");
    /* RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing. */
    if (p->http_minor == 0 && httpreq_header_count(r, "Transfer-Encoding"))
        return httpreq_fail(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0;
    r->has_body = r->chunked || r->content_length > 0;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    r->upgrade = p->upgrade != 0;
    size_t vlen;
    unsigned hosts = httpreq_header_count(r, "Host");
    if (p->http_minor >= 1 && hosts != 1)
        return httpreq_fail(r, 400, hosts ? "more than one Host header" : "missing Host header");
    if (hosts > 1)
        return httpreq_fail(r, 400, "more than one Host header");
    const char *expect = httpreq_header(r, "Expect", &vlen);
    if (expect) {
        if (!httpreq_value_is(r, expect, vlen, "100-continue"))
            return httpreq_fail(r, 417, "unsupported Expect");
        r->expect_continue = p->http_minor >= 1;
    }
    if (!r->chunked && r->content_length > r->limits->max_body_bytes)
        return httpreq_fail(r, 413, "request body larger than max_body_bytes");
    r->state = RS_BODY;
    /* Pause only when a body follows, so the caller can answer 100-continue or refuse it
     * first; a request without a body runs straight on to HTTPREQ_DONE. */
    return r->has_body ? HPE_PAUSED : 0;
}

static int httpreq_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct httpreq *r = httpreq_of(p);
    r->body_bytes += len;
    if (r->body_bytes > r->limits->max_body_bytes)
        return httpreq_fail(r, 413, "request body larger than max_body_bytes");
    if (r->on_body)
        r->on_body(r->ctx, at, len);
    return 0;
}

static int httpreq_on_message_complete(llhttp_t *p)
{
    struct httpreq *r = httpreq_of(p);
    r->state = RS_DONE;
    return HPE_PAUSED;
}

static const llhttp_settings_t httpreq_settings = {
    .on_url = httpreq_on_url,
    .on_header_field = httpreq_on_header_field,
    .on_header_field_complete = httpreq_on_header_field_complete,
    .on_header_value = httpreq_on_header_value,
    .on_header_value_complete = httpreq_on_header_value_complete,
    .on_headers_complete = httpreq_on_headers_complete,
    .on_body = httpreq_on_body,
    .on_message_complete = httpreq_on_message_complete,
};

void httpreq_init(struct httpreq *r, const struct httpreq_limits *limits, httpreq_body_cb on_body,
                  void *ctx)
{
    memset(r, 0, sizeof(*r));
    llhttp_init(&r->parser, HTTP_REQUEST, &httpreq_settings);
    r->parser.data = r;
    r->limits = limits;
    r->on_body = on_body;
    r->ctx = ctx;
    r->state = RS_IDLE;
}

void httpreq_deinit(struct httpreq *r)
{
    free(r->head);
    free(r->headers);
    r->head = NULL;
    r->headers = NULL;
}

static void httpreq_reset_request(struct httpreq *r)
{
    free(r->head);
    free(r->headers);
    r->head = NULL;
    r->headers = NULL;
    r->head_len = r->head_cap = 0;
    r->url_off = r->url_len = 0;
    r->nheaders = r->headers_cap = 0;
    r->in_value = r->expect_continue = r->has_body = r->chunked = r->keep_alive = false;
    r->value_cut = false;
    r->upgrade = false;
    r->content_length = r->body_bytes = 0;
    r->head_bytes = 0;
    r->method = HTTPREQ_M_OTHER;
    r->method_name = NULL;
    r->token_len = 0;
}

void httpreq_next(struct httpreq *r)
{
    httpreq_reset_request(r);
    r->state = RS_IDLE;
    llhttp_resume(&r->parser);
}

bool httpreq_is_idle(const struct httpreq *r)
{
    return r->state == RS_IDLE;
}

static enum httpreq_event httpreq_error(struct httpreq *r, int status, const char *reason)
{
    r->state = RS_ERROR;
    r->error_status = status;
    r->error_reason = reason;
    return HTTPREQ_ERROR;
}

/* Feeds llhttp and turns its result into an event. */
static enum httpreq_event httpreq_run(struct httpreq *r, const char *data, size_t len, size_t *used)
{
    int prev = r->state;
    r->feed_start = data;
    r->feed_end = data + len;
    llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
    size_t n = len;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)
        n = (size_t)(llhttp_get_error_pos(&r->parser) - data);
    *used = n;
    if (prev == RS_HEAD)
        r->head_bytes += n;
    if (e == HPE_OK) {
        if (r->state == RS_HEAD && r->head_bytes > r->limits->max_header_bytes)
            return httpreq_error(r, 431, "request header fields too large");
        return HTTPREQ_NEED_MORE;
    }
    if (e == HPE_PAUSED) {
        if (prev == RS_HEAD && r->head_bytes > r->limits->max_header_bytes)
            return httpreq_error(r, 431, "request header fields too large");
        if (r->state == RS_BODY && prev == RS_HEAD)
            return HTTPREQ_HEAD;
        return HTTPREQ_DONE;
    }
    if (e == HPE_PAUSED_UPGRADE) {
        /* The request before the upgrade is complete; the connection then ends. */
        r->upgrade = true;
        r->state = RS_DONE;
        return HTTPREQ_DONE;
    }
    /* A callback refused the request (on_headers_complete cannot return HPE_USER, so llhttp
     * reports HPE_CB_HEADERS_COMPLETE there): its status and reason stand. */
    if (e == HPE_USER || r->error_status)
        return httpreq_error(r, r->error_status ? r->error_status : 400,
                             r->error_reason ? r->error_reason : "rejected");
    if (e == HPE_INVALID_METHOD)
        return httpreq_error(r, 501, "unknown method");
    if (e == HPE_INVALID_VERSION)
        return httpreq_error(r, 505, "invalid HTTP version");
    const char *reason = llhttp_get_error_reason(&r->parser);
    return httpreq_error(r, 400, reason ? reason : llhttp_errno_name(e));
}

/* At the start of a request, reads the method token so that verbs llhttp does not know can be
 * recognised and passed to llhttp as the POST they behave like. */
static enum httpreq_event httpreq_take_token(struct httpreq *r, const char *data, size_t len,
                                             size_t *used)
{
    size_t i = 0;
    if (r->state == RS_IDLE) {
        /* RFC 9112 2.2: ignore at least one empty line before the request line. */
        while (i < len && (data[i] == '\r' || data[i] == '\n') && r->head_bytes < 4) {
            i++;
            r->head_bytes++;
        }
        if (i == len) {
            *used = i;
            return HTTPREQ_NEED_MORE;
        }
        r->state = RS_TOKEN;
    }
    /* a byte that cannot be in a method ends it too: "garbage\r\n" is refused at once
     * instead of waiting for a space that never comes */
    while (i < len && data[i] != ' ' && httpreq_is_tchar((unsigned char)data[i]) &&
           r->token_len < sizeof(r->token) - 1)
        r->token[r->token_len++] = data[i++];
    *used = i;
    r->head_bytes += i;
    if (i == len && r->token_len < sizeof(r->token) - 1)
        return HTTPREQ_NEED_MORE; /* token not finished yet */

    /* Token complete (space seen) or too long for any verb we know: hand it to llhttp. */
    r->state = RS_HEAD;
    const char *feed = r->token;
    size_t feed_len = r->token_len;
    for (size_t k = 0; k < sizeof(httpreq_custom) / sizeof(httpreq_custom[0]); k++) {
        if (i < len && strlen(httpreq_custom[k].name) == r->token_len &&
            memcmp(httpreq_custom[k].name, r->token, r->token_len) == 0) {
            r->method = httpreq_custom[k].method;
            r->method_name = httpreq_custom[k].name;
            feed = httpreq_custom[k].as_seen_by_llhttp;
            feed_len = strlen(feed) - 1; /* the space itself comes from data */
        }
    }
    size_t fed;
    enum httpreq_event ev = httpreq_run(r, feed, feed_len, &fed);
    r->head_bytes -= fed; /* counted above already, as the client's own bytes */
    return ev;
}

enum httpreq_event httpreq_feed(struct httpreq *r, const char *data, size_t len, size_t *used)
{
    size_t off = 0;
    *used = 0;
    if (r->state == RS_ERROR)
        return HTTPREQ_ERROR;
    if (r->state == RS_DONE)
        return HTTPREQ_DONE;
    while (off < len) {
        size_t n = 0;
        enum httpreq_event ev;
        if (r->state == RS_IDLE || r->state == RS_TOKEN) {
            ev = httpreq_take_token(r, data + off, len - off, &n);
        } else {
            if (r->state == RS_BODY && llhttp_get_errno(&r->parser) == HPE_PAUSED)
                llhttp_resume(&r->parser);
            ev = httpreq_run(r, data + off, len - off, &n);
        }
        off += n;
        if (ev != HTTPREQ_NEED_MORE) {
            *used = off;
            return ev;
        }
        if (n == 0 && off < len) /* no progress: should not happen, never spin */
            break;
    }
    *used = off;
    return HTTPREQ_NEED_MORE;
}

const char *httpreq_url(const struct httpreq *r, size_t *len)
{
    if (!r->head) {
        *len = 0;
        return "";
    }
    *len = r->url_len;
    return r->head + r->url_off;
}

const char *httpreq_header(const struct httpreq *r, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct httpreq_header *h = &r->headers[i];
        if (h->name_len == nl && strncasecmp(r->head + h->name_off, name, nl) == 0) {
            *len = h->value_len;
            return r->head + h->value_off;
        }
    }
    *len = 0;
    return NULL;
}

unsigned httpreq_header_count(const struct httpreq *r, const char *name)
{
    size_t nl = strlen(name);
    unsigned c = 0;
    for (unsigned i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == nl &&
            strncasecmp(r->head + r->headers[i].name_off, name, nl) == 0)
            c++;
    return c;
}

unsigned httpreq_remove_headers(struct httpreq *r, bool (*drop)(const char *name, size_t len))
{
    unsigned kept = 0, removed = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (drop(r->head + r->headers[i].name_off, r->headers[i].name_len)) {
            removed++;
            continue;
        }
        r->headers[kept++] = r->headers[i];
    }
    r->nheaders = kept;
    return removed;
}

int httpreq_version_minor(const struct httpreq *r)
{
    return r->parser.http_minor;
}
