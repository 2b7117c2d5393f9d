/* cmg-gateway internals shared by its files: snapshots, workers, connections, metrics. */
#ifndef CMG_GW_H
#define CMG_GW_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "core.h"
#include "gwconfig.h"
#include "httpreq.h"
#include "jwt.h"
#include "tls.h"
#include "tunnel.h"
#include "content.h"

/* ---- counters ----
 * Each worker writes only its own counters, with plain loads and stores (no lock prefix); the
 * admin thread reads them with relaxed atomic loads. */
#define GW_INC(field)                                                                              \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)
#define GW_ADD(field, n)                                                                           \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define GW_DEC(field)                                                                              \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) - 1, __ATOMIC_RELAXED)
#define GW_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

enum gw_tls_version { GW_TLS10, GW_TLS11, GW_TLS12, GW_TLS13, GW_TLS_OTHER, GW_TLS_NVERSIONS };

enum gw_hs_fail {
    GW_HSF_PROTOCOL_VERSION, /* client offered only versions below the floor */
    GW_HSF_NO_SHARED_CIPHER,
    GW_HSF_NO_ALPN, /* client offered ALPN without http/1.1 */
    GW_HSF_NOT_TLS, /* plain HTTP or garbage on the TLS port */
    GW_HSF_TIMEOUT,
    GW_HSF_CLOSED, /* peer closed or reset during the handshake */
    GW_HSF_OTHER,
    GW_HSF_N
};

struct gw_metrics {
    uint64_t conn_open;
    uint64_t conn_total;
    uint64_t conn_refused;
    uint64_t hs_ok[GW_TLS_NVERSIONS];
    uint64_t hs_resumed;
    uint64_t hs_fail[GW_HSF_N];
    uint64_t requests;
    uint64_t status[600];
    uint64_t bytes_in;  /* application bytes read (decrypted) */
    uint64_t bytes_out; /* application bytes written */
    uint64_t timeouts_header, timeouts_idle, timeouts_body, timeouts_send;
    uint64_t client_cert[TLS_CLIENT_VERDICT_N]; /* verdicts applied on MutualAuth routes */
    uint64_t token_ok[3];                       /* accepted tokens: site, bulk, entra */
    uint64_t auth_waits[2];                     /* requests that waited: CRL, keys */
    uint64_t revoked_closed; /* connections closed because a new CRL revoked their cert */
    uint64_t tunnels_open;
    uint64_t tunnels_total;   /* tunnels whose hello succeeded */
    uint64_t tunnels_refused; /* TLS, certificate or hello failures */
    uint64_t tunnels_lost;    /* closed by ping timeout, reset or error */
    uint64_t proxied;         /* requests sent on a tunnel */
    uint64_t proxy_retries;   /* re-sent on another tunnel after one died */
    uint64_t proxy_failed;    /* answered 502/504 by the gateway */
    uint64_t no_tunnel;       /* answered 503: role known, no live tunnel here */
    uint64_t unknown_role;    /* answered 404: no connector serves the role id */
    uint64_t handed_over;     /* client connections passed to a worker with a tunnel */
    uint64_t token_fail[AUTH_TOKEN_ERROR_N]; /* refused bearer tokens by cause */
    uint64_t content_locations;              /* content-location answers */
    uint64_t content_requests;               /* content answers started (200, 206, CI) */
    uint64_t content_cache[2];     /* of those: served from a complete entry, from a fill */
    uint64_t content_partial;      /* 206 */
    uint64_t content_not_modified; /* 304 */
    uint64_t content_peerdist;     /* Content Information sent */
    uint64_t content_bytes;        /* content body bytes queued */
    uint64_t content_token_fail;   /* refused content access tokens */
    uint64_t content_errors;       /* storage failures, cut answers */
};

const char *gw_hs_fail_name(enum gw_hs_fail f);
const char *gw_tls_version_label(enum gw_tls_version v);

/* ---- snapshot: everything built from one config, immutable, ref-counted ---- */
struct gw_snapshot {
    atomic_uint refs;
    uint64_t generation;
    struct gw_config cfg;                  /* owned */
    SSL_CTX *ssl_ctx;                      /* owned reference */
    struct tls_client_trust *client_trust; /* owned; NULL when no trusted_certs */
    SSL_CTX *tunnel_ssl_ctx;               /* owned; NULL when tunnels cannot be accepted */
    struct tls_client_trust *tunnel_trust; /* owned; the connector trust list */
    struct auth_site_keys site_keys;       /* owned keys of the site's token signers */
    struct auth_site_keys content_keys;    /* owned: signers of content access tokens */
    char **bulk_blocked;                   /* owned, lower-case ids */
    size_t nbulk_blocked;
    struct auth_entra_tenant entra_tenants[AUTH_ENTRA_TENANTS_MAX];
    const char *entra_tenant_ids[AUTH_ENTRA_TENANTS_MAX]; /* into entra_tenants */
    size_t nentra_tenants;
    const char *entra_audiences[2]; /* into cfg.auth */
    size_t nentra_audiences;
    struct httpreq_limits limits;
    char service_name[256];
    char ticket_file_sig[128]; /* what the ticket key file looked like when loaded */
};

/* Builds a snapshot from the config file. Returns NULL with every error printed in report. */
/* fallback_keys: ticket keys to use when the config names no ticket_key_file (borrowed). */
struct gw_snapshot *gw_snapshot_build(const char *path, uint64_t generation,
                                      const struct tls_ticket_keys *fallback_keys,
                                      struct config_report *report);
struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s);
void gw_snapshot_unref(struct gw_snapshot *s);
/* Signature (inode, size, mtime) of a file, "" if missing. */
void gw_file_signature(const char *path, char *buf, size_t len);

/* ---- dynamic authentication data: fetched CRLs and Entra keys (refresh.c) ----
 * Built by the refresher thread, immutable, ref-counted; each worker holds the newest. */
struct gw_dyn {
    atomic_uint refs;
    uint64_t generation;
    STACK_OF(X509_CRL) * crls;      /* every fetched CRL held, owned */
    STACK_OF(X509_CRL) * changed;   /* new or replaced since the previous generation, owned */
    char (*attempted)[TLS_URL_MAX]; /* CRL URLs this process has fetched or tried, owned */
    size_t nattempted;
    struct auth_entra_keys *entra; /* owned; NULL when no tenant is onboarded */
};
struct gw_dyn *gw_dyn_ref(struct gw_dyn *d);
void gw_dyn_unref(struct gw_dyn *d);
bool gw_dyn_attempted(const struct gw_dyn *d, const char *url);

struct gw_refresher;
struct gw_server;
/* Starts the refresher thread for the server's snapshot: opens the caches under
 * auth.cache_dir, publishes a first generation at once (from the disk caches) and fetches in
 * the background once gw_refresher_run is called. Returns 0 or -1 with err. */
int gw_refresher_start(struct gw_server *s, char *err, size_t errlen);
/* Starts fetching in the background (after the workers exist). */
int gw_refresher_run(struct gw_server *s);
/* A new snapshot (reload): new CAs, tenants and schedule. */
void gw_refresher_configure(struct gw_server *s, const struct gw_snapshot *snap);
void gw_refresher_stop(struct gw_server *s);
/* From a worker: these CRL URLs are wanted now (fetched at once if new). */
void gw_refresher_want_crls(struct gw_server *s, char (*urls)[TLS_URL_MAX], size_t n);
/* From a worker: a token named an unknown kid (refetch, rate-limited). */
void gw_refresher_force_keys(struct gw_server *s);
/* Prometheus text of the CRL and key sources (malloc'd, may be NULL). */
char *gw_refresher_metrics(struct gw_server *s);

/* ---- tunnels (tunnel.c) ---- */
#define GW_TUNNEL_LOST 0x10000 /* stream "error code" when its whole tunnel went away */
struct gw_conn;
struct gw_tunnel;
struct gw_proxy;
struct gw_worker;

/* Main thread: starts listening for connection points (tunnel.listen). */
int gw_tunnel_listen_start(struct gw_server *s, char *err, size_t errlen);
void gw_tunnel_listen_stop(struct gw_server *s);
/* Worker: takes over an accepted tunnel socket (TLS handshake, HTTP/2, hello). */
void gw_tunnel_accept(struct gw_worker *w, int fd);
void gw_tunnel_close_all(struct gw_worker *w, bool graceful);
/* Worker: the deployment's instance count changed (reload); a hello on each live tunnel tells
 * the connection points, so that they dial the instances there are now. */
void gw_tunnel_instances_changed(struct gw_worker *w, unsigned instances);
/* Worker: new CRLs arrived; tunnels whose connection point they revoke are closed. */
void gw_tunnel_dyn_changed(struct gw_worker *w);
/* A live tunnel of this worker that serves role_id (round robin), NULL if none. */
struct gw_tunnel *gw_tunnel_pick(struct gw_worker *w, uint64_t role_id,
                                 const struct gw_tunnel * not );
/* True when some connector (on any worker) has said it serves role_id. */
bool gw_role_known(struct gw_server *s, uint64_t role_id);
/* Worker: recomputes which role ids its live tunnels serve (for other workers' hand-overs). */
void gw_tunnel_served_update(struct gw_worker *w);
/* Another worker whose tunnels serve role_id, or NULL. */
struct gw_worker *gw_worker_serving(struct gw_server *s, uint64_t role_id,
                                    const struct gw_worker * not );

/* ---- proxying one request on a tunnel (proxy.c) ---- */
/* Starts the request of c (its head has been read and authenticated) as a stream. The body,
 * if any, follows with gw_proxy_body / gw_proxy_body_end. Answers the client itself (404, 503)
 * when no tunnel can take it. */
void gw_proxy_start(struct gw_conn *c, uint64_t role_id, const char *path, size_t path_len,
                    const struct auth_identity *id);
void gw_proxy_body(struct gw_conn *c, const char *data, size_t len);
void gw_proxy_body_end(struct gw_conn *c);
/* The client's output drained: let the tunnel send more of the response. */
void gw_proxy_client_drained(struct gw_conn *c);
/* The client connection goes away: reset the stream. */
void gw_proxy_abort(struct gw_conn *c);
/* The response deadline passed. */
void gw_proxy_timeout(struct gw_conn *c);
/* tunnel.c → proxy.c: stream events. */
void gw_proxy_on_head(struct gw_proxy *p, int status, const char *reason, const char *headers,
                      size_t len, bool has_length, bool end_stream);
void gw_proxy_on_data(struct gw_proxy *p, const uint8_t *data, size_t len);
void gw_proxy_on_close(struct gw_proxy *p, uint32_t error_code, bool complete);
/* proxy.c → tunnel.c */
int gw_tunnel_submit(struct gw_tunnel *t, struct gw_proxy *p, const void *nva, size_t nnv,
                     bool has_body);
void gw_tunnel_resume_body(struct gw_tunnel *t, int32_t stream_id);
void gw_tunnel_consume(struct gw_tunnel *t, int32_t stream_id, size_t n);
void gw_tunnel_reset(struct gw_tunnel *t, int32_t stream_id);
void gw_tunnel_flush(struct gw_tunnel *t);
/* proxy.c: the data provider reads request body bytes for a stream. */
ssize_t gw_proxy_read_body(struct gw_proxy *p, uint8_t *buf, size_t len, bool *eof);

/* ---- accepted bearer tokens, per worker (router.c) ----
 * A client sends the same token on every request of its session: its verdict is kept until
 * the token expires (or keys, block list or configuration change), so the signature is
 * checked once, not per request. Bulk tokens are not kept (their verdict depends on the path). */
#define GW_TOKEN_CACHE 1024
struct gw_token_entry {
    uint64_t hash;
    char *token; /* owned copy */
    uint32_t len;
    uint32_t auth_gen; /* the worker's auth_gen when judged */
    uint64_t snap_gen; /* the snapshot generation when judged */
    int64_t until;     /* Unix s: the verdict holds until then */
    bool entra;        /* counted as an Entra token */
    struct auth_identity id;
};
void gw_token_cache_free(struct gw_worker *w);

/* ---- workers ---- */

struct gw_conn_list {
    struct gw_conn *head;
    unsigned count;
};

struct gw_server;

struct gw_worker {
    unsigned id;
    char tag[16];
    struct gw_server *server; /* borrowed, outlives the worker */
    pthread_t thread;
    struct event_base *base;       /* owned */
    struct core_mq *mq;            /* owned */
    struct gw_snapshot *snap;      /* ref; new connections take theirs from here */
    struct gw_dyn *dyn;            /* ref; the newest CRLs and keys */
    uint32_t auth_gen;             /* bumped when CRLs, keys or the trust change */
    struct gw_token_entry *tokens; /* owned, GW_TOKEN_CACHE slots, made on first use */
    struct event **listeners;      /* owned; one per listen address */
    struct event *accept_pause;    /* owned; resumes accepting after EMFILE */
    int *listen_fds;
    unsigned nlisteners;
    bool accepting;        /* the client listeners are open (listen() done, watched) */
    bool listeners_closed; /* closed for good (drain, stop): never opened again */
    bool draining;
    struct gw_conn_list conns;
    struct gw_tunnel *tunnels; /* owned list */
    atomic_uint ntunnels;      /* live tunnels, read by the main thread to balance */
    unsigned rr;               /* round-robin position for tunnel choice */
    uint64_t *served;          /* role ids its live tunnels serve; under server roles_lock */
    size_t nserved;
    struct gw_conn_list moving; /* connections to hand to another worker, next loop turn */
    struct event *move_ev;      /* owned: runs the hand-over */
    unsigned max_conns;
    uint64_t next_conn_id;
    struct gw_metrics metrics;
    struct log_ratelimit refuse_rl;
    struct gw_content *content_waiters; /* content requests waiting for a fill or manifest */
    struct gw_ctoken_entry *ctokens;    /* owned, GW_CTOKEN_CACHE kept content-token verdicts */
    struct event *content_tick;         /* owned: looks at content waiters once a second */
    atomic_bool content_wake;           /* a GW_MSG_CONTENT is queued */
    char *scratch; /* owned, GW_SCRATCH bytes: reads land here before parsing */
    char date[64]; /* cached Date header value */
    time_t date_sec;
};

#define GW_SCRATCH (16 * 1024 + 512)

enum gw_msg_type {
    GW_MSG_SNAPSHOT = 1,
    GW_MSG_DRAIN,
    GW_MSG_STOP,
    GW_MSG_DYN,
    GW_MSG_TUNNEL,
    GW_MSG_CONN,    /* a client connection handed over by a worker without a suitable tunnel */
    GW_MSG_CONTENT, /* a cache fill or manifest fetch has news for this worker */
    GW_MSG_LISTEN   /* open the client listeners (gateway.await_tunnel is over) */
};

struct gw_server {
    const char *config_path;
    struct event_base *base; /* main thread: admin, signals, timers */
    struct gw_worker *workers;
    unsigned nworkers;
    struct gw_snapshot *snap; /* current, ref */
    pthread_mutex_t snap_lock;
    uint64_t generation;
    atomic_bool draining;
    atomic_bool clients_open;  /* the workers were told to open their client listeners */
    struct event *await_timer; /* owned; main thread: the end of gateway.await_tunnel */
    atomic_uint workers_drained;
    uint64_t reloads, reload_failures;
    uint64_t start_wall_ms;
    uint64_t fd_budget; /* connections per worker the open-file limit allows, 0 = unknown */
    struct tls_ticket_keys process_ticket_keys; /* used when no ticket_key_file is set, so
                                                   that reloads keep tickets valid */
    struct evhttp *admin;                       /* owned */
    struct gw_dyn *dyn;                         /* newest, ref, under snap_lock */
    struct event *tunnel_listener;              /* owned; main thread */
    int tunnel_fd;
    pthread_mutex_t roles_lock; /* guards the role ids connectors have announced */
    uint64_t *roles;
    size_t nroles;
    struct gw_refresher *refresher;      /* owned */
    struct content_store *content_store; /* owned; NULL when content is off */
    struct content_cache *content_cache; /* owned; NULL when content is off */
    struct content_pd_secret content_pd; /* BranchCache server secret */
    bool content_has_pd;
    pthread_mutex_t content_notify_lock; /* fill threads post under it ... */
    bool content_notify_off;             /* ... unless the workers are stopping */
};

/* ---- content (content.c) ---- */
struct gw_content;
/* Opens the store and the cache ([content], restart-only settings). 0 or -1 with err. */
int gw_content_service_start(struct gw_server *s, char *err, size_t errlen);
/* After the workers are gone. */
void gw_content_service_stop(struct gw_server *s);
/* Worker: GW_MSG_CONTENT arrived. */
void gw_content_wake(struct gw_worker *w);
#define GW_CTOKEN_CACHE 256
struct gw_ctoken_entry;
/* Worker, at its end: the kept content-token verdicts. */
void gw_content_tokens_free(struct gw_worker *w);

/* Binds the worker's client listeners; they take clients at once when open_now, else once
 * GW_MSG_LISTEN arrives (gateway.await_tunnel). */
int gw_worker_start(struct gw_worker *w, bool open_now);
/* Any thread: tells every worker to open its client listeners (once; why is logged). */
void gw_server_open_clients(struct gw_server *s, const char *why);
/* Sends a message to a worker (any thread). Takes ownership of arg on success. */
int gw_worker_post(struct gw_worker *w, enum gw_msg_type type, void *arg);
void gw_worker_join(struct gw_worker *w);
/* Tells the worker one of its connections went away (drain accounting). */
void gw_worker_conn_gone(struct gw_worker *w);
/* Refreshes w->date when the second changed; returns it. */
const char *gw_worker_date(struct gw_worker *w);

/* ---- connections ---- */
/* Takes ownership of fd. */
void gw_conn_accept(struct gw_worker *w, int fd);
/* Closes idle connections and marks busy ones to close after their response (drain). */
void gw_conn_drain_all(struct gw_worker *w);
void gw_conn_close_all(struct gw_worker *w);
/* New CRLs or keys arrived: requests waiting for them go on, and connections whose client
 * certificate a new CRL revokes are closed. */
void gw_conn_dyn_changed(struct gw_worker *w);
/* Worker: runs the hand-overs queued by gw_conn_move (its move_ev). */
void gw_conn_move_run(struct gw_worker *w);
/* Worker: adopts a connection another worker handed over, and goes on with its request. */
void gw_conn_adopt(struct gw_worker *w, struct gw_conn *c);

/* ---- allocator (memory.c) ---- */
struct gw_memory_stats {
    uint64_t allocated; /* bytes in live allocations */
    uint64_t active;    /* bytes in pages holding live allocations */
    uint64_t resident;  /* bytes the allocator holds in RAM, including its metadata */
    uint64_t retained;  /* virtual memory kept for reuse, not in RAM */
};
/* Fills out and returns true when the allocator reports figures (jemalloc builds). */
bool gw_memory_stats(struct gw_memory_stats *out);

/* ---- admin ---- */
int gw_admin_start(struct gw_server *s, char *err, size_t errlen);
void gw_admin_stop(struct gw_server *s);
/* Prometheus text for all workers into a malloc'd string. */
char *gw_metrics_render(struct gw_server *s, size_t *len);

/* ---- listeners ---- */
/* Opens a non-blocking SO_REUSEPORT listening socket on "host:port". Returns fd or -1. */
int gw_listen_socket(const char *addr, int backlog, bool reuseport, char *err, size_t errlen);
/* The same, bound but not listening yet (no connection reaches it until listen()). */
int gw_bind_socket(const char *addr, bool reuseport, char *err, size_t errlen);

#endif
