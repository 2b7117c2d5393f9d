/* respparse: reading one HTTP/1.1 response on llhttp (strict mode, no lenient flags), streaming
 * and without I/O: the caller feeds bytes and gets one event at a time back, so it can stop
 * between any two events (backpressure, cancellation) and go on later from where it stopped.
 * Private to the connector. */
#ifndef CMG_CONNECTOR_RESPPARSE_H
#define CMG_CONNECTOR_RESPPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "upstream.h"

/* Bounds on what an upstream may send before the body: the raw bytes of the head (interim 1xx
 * responses included) and the number of fields; and on the trailer section, which is read and
 * dropped. */
#define RESPPARSE_MAX_HEAD_BYTES (64 * 1024)
#define RESPPARSE_MAX_FIELDS 256

enum respparse_event {
    RESPPARSE_NEED_MORE = 0, /* every byte given was taken and nothing is to be reported */
    RESPPARSE_HEAD,          /* the final response head: status, reason, headers */
    RESPPARSE_BODY,          /* body bytes: body/body_len, pointing into the caller's input */
    RESPPARSE_DONE,          /* the response is complete */
    RESPPARSE_ERROR,         /* not a valid response: `error` says why (a static string) */
};

struct respparse_field {
    uint32_t name_off, name_len, value_off, value_len;
};

struct respparse {
    llhttp_t parser;
    bool is_head_request;           /* answers to HEAD have no body whatever their framing says */
    uint8_t state;                  /* RP_* in respparse.c */
    bool ev_head, ev_body, ev_done; /* events found and not yet reported, in this order */
    bool interim;                   /* the message being read is a 1xx */
    bool in_value, value_cut;
    bool keep_alive;       /* after DONE: the connection may carry another request */
    bool body_until_close; /* after HEAD: the body ends when the connection does */
    uint8_t http_minor;
    int status;
    unsigned interim_count; /* 1xx responses skipped */

    /* The reason phrase and every field, copied as they arrive (owned). */
    char *buf;
    size_t buf_len, buf_cap;
    size_t reason_off, reason_len;
    struct respparse_field *fields;
    unsigned nfields, fields_cap;
    size_t head_bytes;    /* raw bytes before the final head ended */
    size_t trailer_bytes; /* raw field bytes after a chunked body (dropped) */

    /* After HEAD: the fields minus hop-by-hop ones, pointing into buf (owned array). */
    struct up_header *headers;
    size_t nheaders;

    /* After BODY: valid until the next call. */
    const char *body;
    size_t body_len;

    const char *error;
    const char *feed_start, *feed_end; /* the input of the llhttp_execute running */
};

/* `is_head_request`: the request was HEAD. */
void respparse_init(struct respparse *rp, bool is_head_request);
void respparse_deinit(struct respparse *rp);

/* Takes bytes from data[0..len) (*used says how many) until there is an event to report.
 * Call again with the rest, even when nothing is left (len 0), until it says NEED_MORE: events
 * found together are reported one per call. After DONE or ERROR nothing more is taken. */
enum respparse_event respparse_feed(struct respparse *rp, const char *data, size_t len,
                                    size_t *used);
/* The upstream closed the connection (after every event of the input was taken): DONE when
 * that ends a body delimited by the close, otherwise ERROR with the reason. */
enum respparse_event respparse_eof(struct respparse *rp);

const char *respparse_reason(const struct respparse *rp, size_t *len);

/* True for the fields that belong to one connection and are never forwarded: Connection,
 * Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade, Trailer. (Fields named in a
 * Connection header are hop-by-hop too; see respparse_connection_names.) */
bool respparse_is_hop_by_hop(const char *name, size_t len);
/* True when `name` is one of the comma-separated tokens of a Connection header value. */
bool respparse_connection_names(const char *value, size_t value_len, const char *name, size_t len);
/* RFC 9110 token character. */
bool respparse_is_tchar(unsigned char ch);

#endif
