/* Sans-I/O HTTP/1.1 request reader on llhttp: feed bytes, get events. Adds what llhttp lacks
 * for this gateway: the CCM_POST and BITS_POST verbs, header size/count and body limits, and a
 * copy of the request head that outlives the caller's read buffer. */
#ifndef CMG_GW_HTTPREQ_H
#define CMG_GW_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

enum httpreq_method {
    HTTPREQ_M_OTHER = 0,
    HTTPREQ_M_GET,
    HTTPREQ_M_HEAD,
    HTTPREQ_M_POST,
    HTTPREQ_M_PUT,
    HTTPREQ_M_CCM_POST,
    HTTPREQ_M_BITS_POST,
    HTTPREQ_M_PROPFIND,
    HTTPREQ_M_OPTIONS,
};

enum httpreq_event {
    HTTPREQ_NEED_MORE = 0, /* all input consumed, nothing else happened */
    HTTPREQ_HEAD,          /* head complete and a body follows (no-body requests go to DONE) */
    HTTPREQ_DONE,          /* request complete (body delivered through on_body) */
    HTTPREQ_ERROR,         /* bad request: answer error_status and close */
};

struct httpreq_limits {
    size_t max_header_bytes; /* request line + headers, bytes */
    unsigned max_headers;
    uint64_t max_body_bytes;
};

struct httpreq_header {
    uint32_t name_off, name_len, value_off, value_len; /* into head */
};

/* Body bytes as they arrive; `data` is valid only during the call. */
typedef void (*httpreq_body_cb)(void *ctx, const char *data, size_t len);

struct httpreq {
    llhttp_t parser;
    const struct httpreq_limits *limits; /* borrowed; must outlive the reader */
    httpreq_body_cb on_body;
    void *ctx;

    /* current request; valid from HTTPREQ_HEAD until httpreq_next */
    enum httpreq_method method;
    const char *method_name; /* static string, exact verb as sent */
    char *head;              /* owned: url and header bytes, bounded by max_header_bytes */
    uint32_t head_len, head_cap;
    uint32_t url_off, url_len;
    struct httpreq_header *headers; /* owned */
    unsigned nheaders, headers_cap;
    bool in_value; /* llhttp is inside a header value */
    bool expect_continue;
    bool has_body;
    bool chunked;
    bool keep_alive;
    bool upgrade;
    uint64_t content_length; /* when !chunked */
    uint64_t body_bytes;
    size_t head_bytes; /* bytes of request line + headers consumed so far */

    /* reader state */
    int state;              /* private */
    const char *feed_start; /* private: start of the input llhttp is running on */
    const char *feed_end;   /* private: its end */
    bool value_cut;         /* private: the last value span ended at the end of an input */
    char token[16];
    unsigned token_len;
    int error_status;         /* 400, 413, 431 ... when HTTPREQ_ERROR */
    const char *error_reason; /* static text for logs */
};

void httpreq_init(struct httpreq *r, const struct httpreq_limits *limits, httpreq_body_cb on_body,
                  void *ctx);
void httpreq_deinit(struct httpreq *r);
/* Consumes up to len bytes and stops at the first event. *used gets the bytes consumed.
 * After HTTPREQ_HEAD, keep feeding for the body; after HTTPREQ_DONE call httpreq_next before
 * feeding the next request. After HTTPREQ_ERROR the reader is dead. */
enum httpreq_event httpreq_feed(struct httpreq *r, const char *data, size_t len, size_t *used);
/* Readies the reader for the next request on the connection and frees the previous head. */
void httpreq_next(struct httpreq *r);
/* True between requests (no byte of the next request seen yet). */
bool httpreq_is_idle(const struct httpreq *r);

/* Accessors for the current request. Strings are not NUL-terminated. */
const char *httpreq_url(const struct httpreq *r, size_t *len);
/* First header with that name (case-insensitive), or NULL. */
const char *httpreq_header(const struct httpreq *r, const char *name, size_t *len);
unsigned httpreq_header_count(const struct httpreq *r, const char *name);
/* Forgets every header whose name `drop` accepts (e.g. identity headers a client may not
 * send on). Returns how many went. */
unsigned httpreq_remove_headers(struct httpreq *r, bool (*drop)(const char *name, size_t len));
int httpreq_version_minor(const struct httpreq *r);

#endif
