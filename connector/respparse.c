/* HTTP/1.1 response reading for the upstream pool. llhttp does the framing; this file keeps
 * what llhttp leaves to its user: copying the head, the limits, the messages llhttp frames
 * differently from what the request implies (HEAD, 204, 304), interim 1xx responses, and a
 * pull interface so that the caller decides when the next body span is read. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "respparse.h"

enum { RP_HEAD = 0, RP_BODY, RP_DONE, RP_ERROR };

static struct respparse *rp_of(llhttp_t *p)
{
    return p->data;
}

/* Records why the response is refused; the value is what a callback returns to llhttp. */
static int rp_fail(struct respparse *rp, const char *why)
{
    if (!rp->error)
        rp->error = why;
    return HPE_USER;
}

bool respparse_is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool rp_name_is(const char *name, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(name, word, len) == 0;
}

bool respparse_is_hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive",        "proxy-connection", "te",
                                      "upgrade",    "transfer-encoding", "trailer"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (rp_name_is(name, len, hop[i]))
            return true;
    return false;
}

bool respparse_connection_names(const char *value, size_t value_len, const char *name, size_t len)
{
    size_t i = 0;
    while (i < value_len) {
        while (i < value_len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < value_len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end > start && end - start == len && strncasecmp(value + start, name, len) == 0)
            return true;
    }
    return false;
}

static int rp_append(struct respparse *rp, const char *at, size_t len)
{
    if (rp->buf_len + len > RESPPARSE_MAX_HEAD_BYTES)
        return rp_fail(rp, "response head too large");
    if (rp->buf_len + len > rp->buf_cap) {
        size_t cap = rp->buf_cap ? rp->buf_cap : 1024;
        while (cap < rp->buf_len + len)
            cap *= 2;
        if (cap > RESPPARSE_MAX_HEAD_BYTES)
            cap = RESPPARSE_MAX_HEAD_BYTES;
        char *p = realloc(rp->buf, cap);
        if (!p)
            return rp_fail(rp, "out of memory");
        rp->buf = p;
        rp->buf_cap = cap;
    }
    memcpy(rp->buf + rp->buf_len, at, len);
    rp->buf_len += len;
    return 0;
}

/* A new message starts: the final response, or the one after an interim 1xx. */
static int rp_on_message_begin(llhttp_t *p)
{
    struct respparse *rp = rp_of(p);
    rp->buf_len = 0;
    rp->reason_off = rp->reason_len = 0;
    rp->nfields = 0;
    rp->in_value = rp->value_cut = false;
    rp->interim = false;
    return 0;
}

static int rp_on_status(llhttp_t *p, const char *at, size_t len)
{
    struct respparse *rp = rp_of(p);
    if (rp->reason_len == 0)
        rp->reason_off = rp->buf_len;
    int rc = rp_append(rp, at, len);
    if (rc == 0)
        rp->reason_len += len;
    return rc;
}

static int rp_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct respparse *rp = rp_of(p);
    if (rp->state == RP_BODY) {
        /* Trailer fields: read and dropped (the tunnel carries none), but bounded. */
        rp->trailer_bytes += len;
        return rp->trailer_bytes > RESPPARSE_MAX_HEAD_BYTES ? rp_fail(rp, "trailers too large") : 0;
    }
    struct respparse_field *f = rp->nfields ? &rp->fields[rp->nfields - 1] : NULL;
    if (!f || f->value_off != UINT32_MAX) {
        if (rp->nfields >= RESPPARSE_MAX_FIELDS)
            return rp_fail(rp, "too many header fields in the response");
        if (rp->nfields == rp->fields_cap) {
            unsigned cap = rp->fields_cap ? rp->fields_cap * 2 : 32;
            struct respparse_field *nf = realloc(rp->fields, cap * sizeof(*nf));
            if (!nf)
                return rp_fail(rp, "out of memory");
            rp->fields = nf;
            rp->fields_cap = cap;
        }
        f = &rp->fields[rp->nfields++];
        f->name_off = (uint32_t)rp->buf_len;
        f->name_len = 0;
        f->value_off = UINT32_MAX; /* the name is still being read */
        f->value_len = 0;
    }
    int rc = rp_append(rp, at, len);
    if (rc == 0)
        f->name_len += (uint32_t)len;
    return rc;
}

/* llhttp 8 lets some bytes through in field names that other parsers read differently. */
static int rp_on_header_field_complete(llhttp_t *p)
{
    struct respparse *rp = rp_of(p);
    if (rp->state == RP_BODY)
        return 0;
    const struct respparse_field *f = &rp->fields[rp->nfields - 1];
    if (f->name_len == 0)
        return rp_fail(rp, "empty header name in the response");
    for (uint32_t i = 0; i < f->name_len; i++)
        if (!respparse_is_tchar((unsigned char)rp->buf[f->name_off + i]))
            return rp_fail(rp, "invalid character in a response header name");
    return 0;
}

static int rp_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct respparse *rp = rp_of(p);
    if (rp->state == RP_BODY) {
        rp->trailer_bytes += len;
        return rp->trailer_bytes > RESPPARSE_MAX_HEAD_BYTES ? rp_fail(rp, "trailers too large") : 0;
    }
    struct respparse_field *f = &rp->fields[rp->nfields - 1];
    /* A value goes on in a second span either because the input was cut there (the span ended
     * at the end of one input and the next starts at the start of the next) or because of an
     * obsolete line folding, which a proxy must not pass on (RFC 9112 5.2). */
    if (rp->in_value && (at != rp->feed_start || !rp->value_cut))
        return rp_fail(rp, "obsolete line folding in a response header");
    rp->value_cut = at + len == rp->feed_end;
    if (!rp->in_value) {
        rp->in_value = true;
        f->value_off = (uint32_t)rp->buf_len;
    }
    int rc = rp_append(rp, at, len);
    if (rc == 0)
        f->value_len += (uint32_t)len;
    return rc;
}

static int rp_on_header_value_complete(llhttp_t *p)
{
    struct respparse *rp = rp_of(p);
    if (rp->state == RP_BODY)
        return 0;
    struct respparse_field *f = &rp->fields[rp->nfields - 1];
    if (!rp->in_value)
        f->value_off = (uint32_t)rp->buf_len; /* empty value */
    rp->in_value = false;
    /* The value goes into an HTTP/2 header next: no control bytes but HTAB. */
    for (uint32_t i = 0; i < f->value_len; i++) {
        unsigned char ch = (unsigned char)rp->buf[f->value_off + i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return rp_fail(rp, "control character in a response header value");
    }
    return 0;
}

/* The fields minus the hop-by-hop ones, as the caller will forward them. */
static int rp_build_headers(struct respparse *rp)
{
    free(rp->headers);
    rp->headers = NULL;
    rp->nheaders = 0;
    if (rp->nfields == 0)
        return 0;
    rp->headers = calloc(rp->nfields, sizeof(*rp->headers));
    if (!rp->headers)
        return -1;
    for (unsigned i = 0; i < rp->nfields; i++) {
        const struct respparse_field *f = &rp->fields[i];
        const char *name = rp->buf + f->name_off;
        if (respparse_is_hop_by_hop(name, f->name_len))
            continue;
        bool named = false;
        for (unsigned k = 0; k < rp->nfields && !named; k++) {
            const struct respparse_field *c = &rp->fields[k];
            if (rp_name_is(rp->buf + c->name_off, c->name_len, "connection"))
                named = respparse_connection_names(rp->buf + c->value_off, c->value_len, name,
                                                   f->name_len);
        }
        if (named)
            continue;
        struct up_header *h = &rp->headers[rp->nheaders++];
        h->name = name;
        h->name_len = f->name_len;
        h->value = rp->buf + f->value_off;
        h->value_len = f->value_len;
    }
    return 0;
}

/* Return values are llhttp's: 0 a body may follow as framed, 1 no body, -1 refused. */
static int rp_on_headers_complete(llhttp_t *p)
{
    struct respparse *rp = rp_of(p);
    int status = p->status_code;
    if (p->http_major != 1) {
        rp_fail(rp, "response version is not HTTP/1.x");
        return -1;
    }
    if (status < 100 || status > 599) {
        rp_fail(rp, "response status out of range");
        return -1;
    }
    if (status == 101) {
        /* The pool never asks for an upgrade. */
        rp_fail(rp, "unexpected 101 Switching Protocols");
        return -1;
    }
    if (status < 200) {
        rp->interim = true; /* 100 Continue, 102, 103: skipped */
        return 1;
    }
    if (rp_build_headers(rp) != 0) {
        rp_fail(rp, "out of memory");
        return -1;
    }
    rp->status = status;
    rp->http_minor = p->http_minor;
    rp->state = RP_BODY;
    rp->ev_head = true;
    /* A 304 usually carries the Content-Length of the representation it stands for, and a
     * HEAD answer the length a GET would get: llhttp would wait for those bytes. */
    if (rp->is_head_request || status == 204 || status == 304)
        return 1;
    rp->body_until_close = llhttp_message_needs_eof(p) != 0;
    return 0;
}

/* Every body span is reported on its own; llhttp stops right after it. */
static int rp_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct respparse *rp = rp_of(p);
    if (len == 0)
        return 0; /* llhttp closes an open span on an empty input that way */
    rp->body = at;
    rp->body_len = len;
    rp->ev_body = true;
    return HPE_PAUSED;
}

static int rp_on_message_complete(llhttp_t *p)
{
    struct respparse *rp = rp_of(p);
    if (rp->interim) {
        rp->interim = false;
        rp->interim_count++;
        return 0; /* the final response follows on the same bytes */
    }
    /* Flags are still those of this message here (llhttp clears them afterwards). */
    rp->keep_alive = llhttp_should_keep_alive(p) != 0;
    rp->ev_done = true;
    return HPE_PAUSED; /* whatever follows is not part of this exchange */
}

static const llhttp_settings_t rp_settings = {
    .on_message_begin = rp_on_message_begin,
    .on_status = rp_on_status,
    .on_header_field = rp_on_header_field,
    .on_header_field_complete = rp_on_header_field_complete,
    .on_header_value = rp_on_header_value,
    .on_header_value_complete = rp_on_header_value_complete,
    .on_headers_complete = rp_on_headers_complete,
    .on_body = rp_on_body,
    .on_message_complete = rp_on_message_complete,
};

void respparse_init(struct respparse *rp, bool is_head_request)
{
    memset(rp, 0, sizeof(*rp));
    llhttp_init(&rp->parser, HTTP_RESPONSE, &rp_settings);
    rp->parser.data = rp;
    rp->is_head_request = is_head_request;
    rp->state = RP_HEAD;
}

void respparse_deinit(struct respparse *rp)
{
    free(rp->buf);
    free(rp->fields);
    free(rp->headers);
    rp->buf = NULL;
    rp->fields = NULL;
    rp->headers = NULL;
}

const char *respparse_reason(const struct respparse *rp, size_t *len)
{
    *len = rp->reason_len;
    return rp->reason_len ? rp->buf + rp->reason_off : "";
}

/* The next event found but not yet reported. */
static enum respparse_event rp_take_event(struct respparse *rp)
{
    if (rp->ev_head) {
        rp->ev_head = false;
        return RESPPARSE_HEAD;
    }
    if (rp->ev_body) {
        rp->ev_body = false;
        return RESPPARSE_BODY;
    }
    if (rp->ev_done) {
        rp->ev_done = false;
        rp->state = RP_DONE;
        return RESPPARSE_DONE;
    }
    return RESPPARSE_NEED_MORE;
}

static enum respparse_event rp_error(struct respparse *rp, const char *why)
{
    rp->state = RP_ERROR;
    if (!rp->error)
        rp->error = why;
    return RESPPARSE_ERROR;
}

enum respparse_event respparse_feed(struct respparse *rp, const char *data, size_t len,
                                    size_t *used)
{
    *used = 0;
    enum respparse_event ev = rp_take_event(rp);
    if (ev != RESPPARSE_NEED_MORE)
        return ev;
    if (rp->state == RP_ERROR)
        return RESPPARSE_ERROR;
    if (rp->state == RP_DONE)
        return len ? rp_error(rp, "bytes after the end of the response") : RESPPARSE_DONE;

    if (!data)
        data = "";
    bool in_head = rp->state == RP_HEAD;
    if (llhttp_get_errno(&rp->parser) == HPE_PAUSED)
        llhttp_resume(&rp->parser);
    rp->feed_start = data;
    rp->feed_end = data + len;
    llhttp_errno_t e = llhttp_execute(&rp->parser, data, len);
    size_t n = len;
    if (e == HPE_PAUSED)
        n = (size_t)(llhttp_get_error_pos(&rp->parser) - data);
    *used = n;
    if (e != HPE_OK && e != HPE_PAUSED) {
        const char *why = llhttp_get_error_reason(&rp->parser);
        return rp_error(rp, why && *why ? why : llhttp_errno_name(e));
    }
    if (in_head) {
        /* The final head may end inside this input: count only up to there, roughly; the
         * bound is about a head that never ends, not about its exact size. */
        rp->head_bytes += rp->state == RP_HEAD ? n : 0;
        if (rp->head_bytes > RESPPARSE_MAX_HEAD_BYTES)
            return rp_error(rp, "response head too large");
    }
    return rp_take_event(rp);
}

enum respparse_event respparse_eof(struct respparse *rp)
{
    if (rp->state == RP_DONE)
        return RESPPARSE_DONE;
    if (rp->state == RP_ERROR)
        return RESPPARSE_ERROR;
    if (llhttp_get_errno(&rp->parser) == HPE_PAUSED)
        llhttp_resume(&rp->parser);
    llhttp_errno_t e = llhttp_finish(&rp->parser);
    if (rp->ev_done)
        return rp_take_event(rp);
    if (e != HPE_OK && e != HPE_PAUSED && rp->error)
        return rp_error(rp, rp->error);
    if (rp->state == RP_BODY)
        return rp_error(rp, "upstream closed the connection in the response body");
    return rp_error(rp, "upstream closed the connection before the response head ended");
}
