/* cmg-mpsim internals shared by its files: the server, its connections, replies and routes.
 *
 * cmg-mpsim stands in for a Configuration Manager management point behind a connection point:
 * one thread, one libevent loop, plain HTTP/1.1. Connections carry no read buffer of their own
 * (every read lands in the server's one buffer and is parsed at once), bodies are hashed as they
 * arrive and never stored, and large response bodies are generated as the socket drains. */
#ifndef CMG_MPSIM_H
#define CMG_MPSIM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "core.h"
#include "httpreq.h"

/* ---- bounds ---- */
#define MPSIM_READ_CHUNK (64 * 1024)        /* one read(); the server's only read buffer */
#define MPSIM_MAX_HEADER_BYTES (32 * 1024)  /* request line and header fields */
#define MPSIM_MAX_HEADERS 128               /* header fields per request */
#define MPSIM_MAX_BODY_BYTES (64ull << 20)  /* request body, any framing */
#define MPSIM_OUT_HIGH_WATER (64 * 1024)    /* queued output that stops request reading */
#define MPSIM_WRITE_BUDGET (1024 * 1024)    /* bytes per connection per loop turn */
#define MPSIM_IDLE_TIMEOUT_MS (120 * 1000)  /* no progress reading or writing */
#define MPSIM_LINGER_MS 2000                /* reading after our FIN before closing */
#define MPSIM_MAX_DOWNLOAD (1ull << 40)     /* /download/<n> */
#define MPSIM_MAX_POLICY_SIZE (64ull << 20) /* --policy-size */
#define MPSIM_MAX_HOLD_MS (24ull * 3600000) /* --hold */
#define MPSIM_MAX_LISTENERS 16              /* --listen addresses */
#define MPSIM_LISTEN_BACKLOG 4096
#define MPSIM_ACCEPT_BATCH 64  /* accepts per listener wake-up */
#define MPSIM_MAX_IDENTITY 256 /* bytes of X-CMG-Auth-Method echoed back */
#define MPSIM_MAX_LOG_PATH 512 /* bytes of a path in a log line */

struct mpsim_opts {
    const char *listen[MPSIM_MAX_LISTENERS]; /* point into listen_copies */
    unsigned nlisten;
    char *listen_copies[MPSIM_MAX_LISTENERS]; /* owned: one split copy per --listen */
    unsigned ncopies;
    uint64_t hold_ms;
    uint64_t policy_size;
    char site[4];           /* three characters, upper case */
    char mp_name[256];      /* FQDN */
    bool quiet;             /* no per-request log lines */
    const char *ready_file; /* borrowed from argv, or NULL */
};

struct mpsim_stats {
    uint64_t requests; /* request heads parsed and answered (or held), this one included */
    uint64_t held;     /* requests held now */
    uint64_t connections;
    uint64_t connections_total;
};

struct mpsim_conn;

struct mpsim_server {
    struct event_base *base; /* owned by main */
    struct mpsim_opts opts;
    struct httpreq_limits limits;
    struct mpsim_stats stats;
    char *rbuf;               /* owned: MPSIM_READ_CHUNK bytes, shared by every connection */
    EVP_MD_CTX *scratch_md;   /* owned: for one digest at a time on the loop */
    struct mpsim_conn *conns; /* every open connection (owned through the list) */
    struct mpsim_conn *hold_head, *hold_tail; /* held requests, earliest deadline first */
    struct event *hold_timer;                 /* owned: fires at hold_head's deadline */
    const struct timeval *idle_tv;            /* libevent common timeouts, owned by base */
    const struct timeval *linger_tv;
    uint64_t next_conn_id;
    uint64_t next_msg_id;
};

/* A response body made as the socket drains instead of held in memory. */
enum mpsim_gen_kind {
    MPSIM_GEN_NONE = 0,
    MPSIM_GEN_PATTERN, /* byte i = (i * 131 + 7) & 0xff */
    MPSIM_GEN_POLICY,  /* 32-byte block k = SHA-256("<policy id>:<k in decimal>") */
};

struct mpsim_gen {
    enum mpsim_gen_kind kind;
    uint64_t pos, end;     /* offsets into the generated content still to send: [pos, end) */
    EVP_MD_CTX *policy_md; /* owned (POLICY): SHA-256 state after "<policy id>:" */
};

enum mpsim_method_scan {
    MPSIM_MSCAN_START = 0, /* no byte of the request yet */
    MPSIM_MSCAN_TOKEN,     /* inside the method */
    MPSIM_MSCAN_DONE,      /* the method ended with a space */
};

enum mpsim_conn_state {
    MPSIM_CS_READING,     /* parsing requests; answers go out as they are made */
    MPSIM_CS_HELD,        /* a notification request waits for its hold to end */
    MPSIM_CS_STREAMING,   /* a generated body is being written */
    MPSIM_CS_FLUSH_CLOSE, /* no more requests: write what is queued, then close */
    MPSIM_CS_LINGER,      /* our side is shut; reading until the peer closes or a timeout */
};

struct mpsim_conn {
    struct mpsim_server *srv;                 /* borrowed; outlives every connection */
    struct mpsim_conn *prev, *next;           /* srv->conns */
    struct mpsim_conn *hold_prev, *hold_next; /* srv->hold_head list while HELD */
    uint64_t hold_deadline_ms;
    uint64_t id;
    evutil_socket_t fd; /* owned */
    struct event *ev;   /* owned: reads, writes and timeouts of fd */
    short armed;        /* EV_READ / EV_WRITE flags ev is added with; 0 = not added */
    const struct timeval *armed_tv;
    enum mpsim_conn_state state;
    bool close_after;    /* the response being made ends the connection */
    bool held_has_input; /* HELD: the peer sent more; stop polling for its close */
    uint8_t method_scan; /* enum mpsim_method_scan, for the request being read */
    struct httpreq req;
    EVP_MD_CTX *body_md; /* owned while a request body is being hashed */
    bool body_md_failed; /* out of memory: the body's digest is unknown */
    char *in;            /* owned: pipelined bytes not parsed yet, or NULL */
    size_t in_len;
    struct evbuffer *out; /* owned: response bytes queued, or NULL */
    struct mpsim_gen gen; /* STREAMING */
    char *deferred;       /* owned (HELD): the whole response to send when the hold ends */
    size_t deferred_len;
    /* the log line of a streamed or held response, written when it ends */
    const char *log_method; /* static */
    char *log_path;         /* owned, or NULL when not logging */
    int log_status;
    uint64_t log_bytes;
};

/* ---- conn.c ---- */
/* Takes ownership of fd (non-blocking, connected). Returns 0, or -1 with fd closed. */
int mpsim_conn_accept(struct mpsim_server *s, evutil_socket_t fd);
/* Closes every connection (at shutdown). */
void mpsim_conn_close_all(struct mpsim_server *s);
/* Puts c, whose answer is in c->deferred, on the hold list. */
void mpsim_hold_start(struct mpsim_conn *c);
/* Runs the hold list: answers every request whose hold has ended. */
void mpsim_hold_timer_cb(evutil_socket_t fd, short what, void *arg);

/* ---- reply.c: answers for the request just read (c->req is valid until they return) ----
 * Each queues or schedules the whole response, logs it and readies the reader for the next
 * request; a route calls exactly one of them. `extra` is NULL or header lines each ending in
 * CRLF; strings are borrowed for the call. */
void mpsim_reply(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                 const void *body, size_t len);
/* Takes ownership of body (an evbuffer, freed or moved). */
void mpsim_reply_buf(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                     struct evbuffer *body);
/* A body of gen->end - gen->pos generated bytes; takes ownership of gen's contents. */
void mpsim_reply_stream(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                        struct mpsim_gen *gen);
/* Holds the request for --hold, then answers 200 "notify". */
void mpsim_reply_hold(struct mpsim_conn *c);
/* Logs the end of a streamed or held answer (note: why it ended early, or NULL). */
void mpsim_log_end(struct mpsim_conn *c, const char *note);
/* A request that could not be read: answers status with the reason (static text) and ends
 * the connection. None of the request's fields is used. */
void mpsim_reply_error(struct mpsim_conn *c, int status, const char *why);
/* Lowercase hex SHA-256 of the request body (of nothing when there was none); ends the body's
 * digest. Returns 0, or -1 when it is unknown (out of memory). */
int mpsim_body_digest(struct mpsim_conn *c, char hex[65]);
const char *mpsim_status_reason(int status);

/* Fills up to cap bytes of the generated body from g->pos, without advancing it. Returns the
 * count and points *out at them: into buf, or into static memory. */
size_t mpsim_gen_fill(struct mpsim_gen *g, struct mpsim_server *s, char *buf, size_t cap,
                      const char **out);
/* Starts a POLICY generator for the given id. Returns 0 or -1 (out of memory). */
int mpsim_gen_policy_init(struct mpsim_gen *g, const char *id, size_t len, uint64_t size);
void mpsim_gen_deinit(struct mpsim_gen *g);

/* ---- routes.c ---- */
/* Answers the request that just completed on c (exactly one reply call). */
void mpsim_route(struct mpsim_conn *c);

/* ---- text helpers (reply.c) ---- */
/* Appends s as a JSON string with quotes; bytes of 0x80 and above become \u00XX (Latin-1). */
void mpsim_json_str(struct evbuffer *b, const char *s, size_t len);

#endif
