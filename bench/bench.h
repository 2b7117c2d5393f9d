/* cmg-bench: declarations shared by the load generator's files (cmg-bench.c: options, phases,
 * report; bench-client.c: one managed client's connection and request cycle; bench-hist.c:
 * latency histograms; bench-certs.c: the generated client certificate set).
 *
 * Everything runs on one thread and one event_base; nothing here is thread-safe. */
#ifndef CMG_BENCH_H
#define CMG_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

/* ---- latency histogram (bench-hist.c) ----
 * Log-linear buckets over microseconds: exact below 64 µs, then 32 buckets per power of two
 * (at most 1/32 = 3 % wide), up to 2^41 µs. Percentiles are read as the upper edge of the
 * bucket that holds them, so they never understate. */
#define BENCH_HIST_BUCKETS (64 + 35 * 32)

struct bench_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
    uint64_t b[BENCH_HIST_BUCKETS];
};

void bench_hist_add(struct bench_hist *h, uint64_t us);
/* The value (µs, upper bucket edge) at or below which pct percent of the samples lie. */
uint64_t bench_hist_pct(const struct bench_hist *h, double pct);
void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from);
/* {"count","mean_ms","p50_ms","p90_ms","p99_ms","p99_9_ms","max_ms","buckets":[[upper_us,n]..]}
 * New reference; the caller owns it. */
json_t *bench_hist_json(const struct bench_hist *h);

/* ---- client certificates (bench-certs.c) ---- */
struct bench_cert {
    X509 *x;     /* owned */
    EVP_PKEY *k; /* owned */
};

/* Makes n ECDSA P-256 client certificates (clientAuth) signed by the CA in ca_cert/ca_key
 * (PEM). On success *out is a calloc'd array the caller frees with bench_certs_free(). */
int bench_certs_make(const char *ca_cert, const char *ca_key, unsigned n, struct bench_cert **out,
                     char *err, size_t errlen);
void bench_certs_free(struct bench_cert *certs, unsigned n);

/* ---- the run ---- */

enum bench_kind {
    BK_LOCATION = 0, /* GET .../SMS_MP/.sms_aut?MPLIST */
    BK_POLICY,       /* GET .../SMS_MP/.sms_pol?<policy id> */
    BK_STATUS,       /* CCM_POST .../ccm_system/request (a status message) */
    BK_CONTENT_LOC,  /* GET /downloadrestservice.svc/getcontentxmlsecure?<content token> */
    BK_CONTENT,      /* GET /cmgcontent/<package>/<file>?<content token> */
    BK_NOTIFY,       /* GET .../bgb/handler.ashx: held by the management point */
    BK_GET,          /* handshake mode: one GET per connection */
    BK_N
};

enum bench_err {
    BE_CONNECT = 0, /* TCP connect failed */
    BE_HANDSHAKE,   /* TLS handshake failed */
    BE_TIMEOUT,     /* no answer (or no handshake) in time */
    BE_STATUS,      /* an answer with an unexpected status */
    BE_CLOSED,      /* the server closed the connection (EOF, reset, Connection: close) */
    BE_PARSE,       /* an answer that does not parse as HTTP/1.1 */
    BE_CONTENT,     /* a content-location answer without a content URL */
    BE_N
};

enum bench_phase { BP_RAMP = 0, BP_HOLD, BP_DOWN, BP_DONE };
enum bench_mode { BM_CYCLE = 0, BM_HANDSHAKE };

#define BENCH_MAX_SOURCES 64
#define BENCH_MAX_PIDS 16

struct bench_opts {
    enum bench_mode mode;
    struct sockaddr_in dst;
    struct sockaddr_in src[BENCH_MAX_SOURCES]; /* local addresses, used in turn */
    unsigned nsrc;
    const char *sni;
    unsigned clients;
    double rate;         /* new connections per second during the ramp */
    unsigned inflight;   /* connections in TCP connect or TLS handshake at once */
    double ramp_timeout; /* seconds to get every client connected */
    double hold_s;       /* the hold phase */
    double ramp_down_s;  /* closing every client takes this long */
    double deadline_s;   /* the whole run, whatever happens */
    double request_timeout;
    double notify_timeout;
    double retry_s; /* a failed client reconnects after this */
    double think_s; /* pause between two cycles of one client */
    const char *role;
    const char *token; /* bearer site token: ServerAuth paths; NULL: client certificates */
    const char *content_token;
    unsigned content_every; /* a cycle downloads content with probability 1/this; 0 never */
    bool notify;            /* cycles end with a held notification request */
    const char *path;       /* handshake mode's request path */
    int tls_min, tls_max;   /* protocol versions */
    unsigned ncerts;
    pid_t pids[BENCH_MAX_PIDS];
    unsigned npids;
    const char *label;
    unsigned seed;
};

struct bench_client;

struct bench {
    struct bench_opts o;
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct bench_cert *certs;
    unsigned ncerts;
    struct bench_client *clients;
    char *req[BK_N]; /* prepared request texts (for BK_CONTENT, the head up to the path) */
    size_t req_len[BK_N];
    const char *auth_prefix; /* "/CCM_Proxy_MutualAuth/" or "/CCM_Proxy_ServerAuth/" */

    enum bench_phase phase;
    double t0, t_hold, t_down, t_done; /* CLOCK_MONOTONIC seconds */
    unsigned started;                  /* clients started at least once */
    unsigned connecting;               /* in TCP connect or TLS handshake */
    unsigned established;              /* TLS up, now */
    unsigned established_max;
    unsigned ever_established; /* clients that completed a first handshake */
    unsigned notify_held;      /* notification requests in flight, now */
    unsigned closed_down;      /* clients closed by the ramp-down */
    unsigned held_hold_start, held_hold_min, held_hold_end, notify_hold_end;
    bool ramp_complete, deadline_hit;

    /* counters: [0] the whole run, [1] the hold phase only */
    uint64_t handshakes[2];
    uint64_t requests[2][BK_N];
    uint64_t bytes_in[2];
    uint64_t errors[2][BE_N];
    uint64_t status_count[2][600];
    uint64_t cycles[2];
    struct bench_hist hs_hist[2];
    struct bench_hist kind_hist[2][BK_N];
    struct bench_hist cycle_hist[2]; /* location + policy + status together */
    char first_error[BE_N][200];
};

double bench_now(void);
/* Starts (or restarts) client i: TCP connect from the next source address, then TLS. */
void bench_client_start(struct bench *b, struct bench_client *c);
/* Closes the client's connection for good (ramp-down or the end). */
void bench_client_stop(struct bench *b, struct bench_client *c);
bool bench_client_is_up(const struct bench_client *c);
struct bench_client *bench_client_at(struct bench *b, unsigned i);
/* Allocates the client array (n zeroed clients with their ids); NULL when out of memory. */
struct bench_client *bench_clients_new(struct bench *b, unsigned n);
void bench_clients_free(struct bench *b);
int bench_requests_prepare(struct bench *b, char *err, size_t errlen);

#endif
