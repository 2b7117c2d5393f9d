/* One client connection: TLS on a non-blocking socket driven by a single libevent event, an
 * HTTP/1.1 reader, and the output not yet written. Owned by its worker; touched only there. */
#ifndef CMG_GW_CONN_H
#define CMG_GW_CONN_H

#include <netinet/in.h>

#include "gw.h"

enum gw_conn_state {
    GW_CS_HANDSHAKE = 0,
    GW_CS_IDLE,   /* between requests */
    GW_CS_HEAD,   /* reading a request line and headers */
    GW_CS_BODY,   /* reading a request body */
    GW_CS_LINGER, /* response sent, TLS closed, draining what the client still sends */
    GW_CS_WAIT    /* request read; its answer waits for a fetch (CRL, keys) */
};

/* What a parked request waits for. */
enum gw_wait_kind {
    GW_WAIT_NONE = 0,
    GW_WAIT_CRL,
    GW_WAIT_KEYS,
    GW_WAIT_UPSTREAM,
    GW_WAIT_MOVE,
    GW_WAIT_CONTENT, /* a package manifest, or the first answer of a cache fill */
    GW_WAIT_STREAM   /* the rest of a content answer, as the cache fills */
};

struct gw_conn {
    struct gw_conn *prev, *next; /* worker's list */
    struct gw_worker *w;         /* borrowed, outlives the connection */
    struct gw_snapshot *snap;    /* ref held for the connection's life */
    SSL *ssl;                    /* owned; NULL once lingering */
    int fd;                      /* owned */
    uint64_t id;
    struct event ev;  /* the one event: read or write readiness, plus the deadline timer */
    short ev_what;    /* events ev is registered for, 0 when not added */
    uint8_t state;    /* enum gw_conn_state */
    bool close_after; /* close once the output is written */
    bool draining;
    bool head_done;        /* the current request's head has been acted on */
    bool held;             /* input parked in `in` until the output drains */
    uint8_t cert_verdict;  /* enum tls_client_verdict, set when the handshake ends */
    uint32_t verdict_gen;  /* the worker's auth_gen when cert_verdict was made */
    uint8_t wait_kind;     /* enum gw_wait_kind while state is GW_CS_WAIT */
    bool waited;           /* the current request has waited once: it is not parked again */
    uint8_t content_parks; /* content waits of the current request: 1 manifest, 2 fill */
    bool crls_known;       /* every CRL its certificate chain names has been tried */
    bool answered;         /* the current request was answered at its head (error) */
    bool req_read;         /* the current request has been read to its end */
    bool input_paused;     /* the tunnel takes the body slower than the client sends it */
    bool resp_chunked;     /* the proxied answer is re-framed chunked */
    bool close_when_done;  /* close once the proxied answer is out */
    uint16_t resp_status;
    struct gw_proxy *proxy;     /* owned: the request in flight on a tunnel */
    struct gw_content *content; /* owned: a content request (content.c) */
    bool moved;                 /* handed over once already: not again */
    struct gw_worker *move_to;  /* while queued for a hand-over */
    struct gw_conn *move_next;  /* the worker's hand-over queue */
    int64_t wait_mark;          /* GW_WAIT_KEYS: the forced-refresh time seen when parking */
    uint32_t nrequests;
    uint64_t deadline;      /* monotonic ms; what happens then depends on state */
    uint64_t send_deadline; /* monotonic ms; set while output waits on a slow reader, else 0 */
    uint64_t started_ms;    /* connection accepted */
    uint64_t req_started;   /* first byte of the current request */
    uint64_t req_in, req_out;
    struct httpreq req;
    char *in; /* owned: unparsed input held back (pipelining under backpressure) */
    uint32_t in_off, in_len;
    char *out; /* owned: response bytes not yet accepted by SSL_write */
    uint32_t out_off, out_len, out_cap;
    union {
        struct sockaddr sa;
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;
    } peer;
};

/* Queues a complete response. `body` may be NULL; for HEAD only the headers go out.
 * `extra` is "Name: value\r\n" lines or NULL. Sets close_after when the connection must end. */
void gw_conn_respond(struct gw_conn *c, int status, const char *reason, const char *ctype,
                     const char *body, size_t body_len, const char *extra);

/* Parks the current request (called by the router instead of answering): nothing more is
 * read until gw_conn_resume, which the worker calls when new CRLs or keys arrive, or the
 * connection's deadline (auth.auth_wait) passes. */
void gw_conn_park(struct gw_conn *c, enum gw_wait_kind kind);

/* For proxy.c: hands the connection, whose request head has been read and authenticated, to
 * worker `to` (whose tunnels serve the role id); that worker goes on with the request. */
void gw_conn_move(struct gw_conn *c, struct gw_worker *to);

/* Resumes a parked request (the router decides again); may free c. */
void gw_conn_unpark(struct gw_conn *c);
/* Wakes the connection's own event to write what was queued (never frees c). */
void gw_conn_kick(struct gw_conn *c);
/* Room for n more output bytes at the end of the queue, and taking n of them. */
char *gw_conn_out_space(struct gw_conn *c, size_t n);
void gw_conn_out_commit(struct gw_conn *c, size_t n);

/* router.c: s with & < > " ' escaped for XML, into out (NUL-terminated; cut short if out
 * holds less than 6 bytes per character of s plus 7). Returns the length written. */
size_t gw_xml_escape(char *out, size_t len, const char *s);

/* content.c: content requests. */
#define GW_CONTENT_PREFIX "/cmgcontent/"
/* Answers (or parks, or starts streaming) a content-location or content request; false if
 * the path is not one of those. query is without '?' (may be NULL). */
bool gw_content_route(struct gw_conn *c, const char *url, size_t plen, const char *query,
                      size_t qlen);
bool gw_content_done(const struct gw_conn *c);
/* The client's output drained: queue more. True when something was queued or it ended. */
bool gw_content_drained(struct gw_conn *c);
void gw_content_release(struct gw_conn *c);
/* The answer's deadline passed: cuts it and returns true, unless the fill still moves. */
bool gw_content_timeout(struct gw_conn *c);
uint64_t gw_content_stall_ms(const struct gw_conn *c);

/* For proxy.c: answers arriving through a tunnel. */
size_t gw_conn_out_pending(const struct gw_conn *c);
void gw_conn_pause_input(struct gw_conn *c, bool pause);
void gw_conn_proxy_head(struct gw_conn *c, int status, const char *reason, const char *headers,
                        size_t len, bool has_length, bool end_stream);
void gw_conn_proxy_data(struct gw_conn *c, const char *data, size_t len);
void gw_conn_proxy_end(struct gw_conn *c, bool ok);
void gw_conn_proxy_answer(struct gw_conn *c, int status, const char *reason, const char *body,
                          size_t len, const char *extra);
/* proxy.c: the request's stream is over (answered or failed); frees its state. */
void gw_proxy_release(struct gw_conn *c);
bool gw_proxy_done(const struct gw_conn *c);

/* router.c: decides a request from its head: on role paths authentication, then the tunnel
 * stream (or an answer: 401, 403, 404, 503). Other paths are left to gw_router_handle. */
void gw_router_head(struct gw_conn *c);
/* router.c: answers the current request (its head and body have been read), or parks it. */
void gw_router_handle(struct gw_conn *c);
/* router.c: true when what a parked request waits for has happened (its CRLs were tried, or
 * a forced key refresh came back). */
bool gw_router_wait_over(struct gw_conn *c);
/* router.c: true if the method is one the gateway passes on (GET, HEAD, POST, PUT, CCM_POST,
 * BITS_POST, PROPFIND). */
bool gw_router_method_allowed(enum httpreq_method m);

#endif
