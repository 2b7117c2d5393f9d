/* connector: the upstream side of the connection point. Client requests that arrive as tunnel
 * streams are relayed to a management point (or software update point) over a bounded pool of
 * keep-alive HTTP/1.1 connections, plain or TLS, one request at a time per connection.
 *
 * Threading: a pool and everything it hands out belong to the thread running its event_base;
 * every function here is called on that thread, and every callback runs there.
 *
 * Callbacks never run from inside a call into this API: a failure found while starting a
 * request or taking its body (queue full, connection lost while writing) is reported from the
 * loop a moment later. That lets a caller call in from any of its own callbacks. */
#ifndef CMG_CONNECTOR_UPSTREAM_H
#define CMG_CONNECTOR_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;

/* One header field; the strings are borrowed and need not be NUL-terminated. */
struct up_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* An endpoint's settings. Strings are copied by up_pool_new. Zero means the default for
 * max_connections (64) and the three timeouts (connect 10 s, response 120 s, idle 60 s); for
 * max_idle and max_queue zero means what it says (keep no idle connection, queue nothing). */
struct up_endpoint_cfg {
    const char *base_url; /* "http://mp.contoso.com:80" or "https://mp.contoso.com" (path prefix
                             allowed: "/base") */
    const char *ca_file;  /* trust for https upstreams, NULL = system store */
    const char *cert_file, *key_file; /* client certificate for https upstreams, or NULL */
    unsigned max_connections;         /* bound on open connections to this endpoint */
    unsigned max_idle;                /* idle keep-alive connections kept */
    /* connect_timeout: the TCP connect (through the proxy's CONNECT when one is set) and,
     * again, the TLS handshake.
     * response_timeout: from the moment the request is completely sent until the response head
     * has arrived; also the longest silence allowed while a response body is read (time spent
     * paused by up_req_pause does not count), the longest the upstream may leave request bytes
     * untaken, and the longest a request waits in the queue for a connection.
     * idle_timeout: an idle keep-alive connection is closed after this long. */
    uint64_t connect_timeout_ms, response_timeout_ms, idle_timeout_ms;
    unsigned max_queue; /* requests waiting for a connection beyond max_connections; more are
                           refused 503 */
};

struct up_stats { /* per endpoint, updated on the loop thread only; never reset by the pool */
    /* requests: every up_request that returned a handle; requests_with_bearer: those with an
     * "Authorization: Bearer" field; bytes: as written to and read from the connections (heads
     * and chunk framing included, bytes sent again by a retry too); failures: on_error reports.
     * connections_opened: TCP connections established; connections_reused: requests that went
     * out on a connection that had served one before. */
    uint64_t requests, requests_with_bearer, bytes_to_upstream, bytes_from_upstream, failures;
    uint64_t connections_opened, connections_reused;
    /* concurrent: requests started and not yet finished (queued ones included);
     * open_connections: connections counted against max_connections (those still connecting
     * included); idle_connections: of those, the ones waiting in the pool for a request. */
    unsigned concurrent, max_concurrent, open_connections, idle_connections, queued;
};

struct up_req_cbs {
    /* response head: status, reason phrase as sent, headers minus hop-by-hop ones (Connection
     * and the fields it names, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade,
     * Trailer). Content-Length is kept (for HEAD, 204 and 304 it describes, not frames). All
     * pointers are valid only during the call. */
    void (*on_head)(void *ctx, int status, const char *reason, size_t reason_len,
                    const struct up_header *h, size_t n);
    /* body bytes as they arrive (valid only during the call) */
    void (*on_body)(void *ctx, const char *data, size_t len);
    /* response complete. It can come before the whole request body was given, when the
     * upstream answered early (a 401 or 413 before reading a body): that connection is then
     * closed, and the caller stops sending. */
    void (*on_done)(void *ctx);
    /* no (complete) response: status/reason the connector answers with itself, per
       docs/tunnel.md: 502 "CMGConnector_BadGateway" (connect failure, reset, upstream closed
       early, bad response), 504 "CMGConnector_GatewayTimeout" (response_timeout), 403
       "CMGConnector_Clientcertificaterequired" (an https upstream asked for a client cert and
       none is configured), 503 "CMGConnector_Busy" (queue full, or no connection freed up within
       response_timeout). If on_head was already called, on_error means the body broke off (the
       caller resets the stream). reason is a static string. */
    void (*on_error)(void *ctx, int status, const char *reason);
    /* the request body may take more again after up_req_body returned "full" */
    void (*on_body_drained)(void *ctx);
};

/* ---- endpoint pools (upstream.c) ----
 *
 * A request takes an idle connection (most recently used first, checked for a close by the
 * upstream first), or opens one while fewer than max_connections are open, or waits in a FIFO
 * queue of max_queue (503 when that is full, or when no connection frees up within
 * response_timeout). One request at a time per connection; a connection goes back to the pool
 * after a complete response that allows keep-alive (HTTP/1.1 without "Connection: close",
 * HTTP/1.0 only with "Connection: keep-alive") to a completely sent request, with no byte
 * after it. At most max_idle are kept; each for idle_timeout.
 * Retry: when a reused connection fails (closed, reset) before any response byte arrived and
 * every request byte written to it is still held (the head plus at most ~256 KiB of body:
 * kept for exactly this), the request is sent once more on a new connection. Only once, and
 * never for a connection that was new: that upstream really did fail. */

/* Creates the pool for one endpoint on `base` (borrowed, must outlive the pool). `stats` is
 * borrowed too: the pool writes its figures there until up_pool_free. Returns NULL with a
 * message a person can act on in err ("upstream https://mp: ca_file /x: No such file...").
 * Connections are opened on demand, none at creation.
 * A process using pools should ignore SIGPIPE (cmg-connector does); if SIGPIPE is still at its
 * default, the first pool sets it to be ignored, since a write to a connection the upstream
 * reset would otherwise kill the process. */
struct up_pool *up_pool_new(struct event_base *base, const struct up_endpoint_cfg *cfg,
                            struct up_stats *stats, char *err, size_t errlen);
/* Cancels everything (no callbacks after) and closes every connection. Not from inside one of
 * the pool's own callbacks. */
void up_pool_free(struct up_pool *p);

/* Optional, before the first request: the DNS resolver for endpoint names (borrowed, must
 * outlive the pool). Without one, a pool whose host is a name (not an IP literal or
 * "localhost") makes its own from /etc/resolv.conf when it first needs it. */
void up_pool_set_dns(struct up_pool *p, struct evdns_base *dns);
/* Optional: reach the endpoint through an HTTP proxy with CONNECT ("http://[user:pass@]host:port",
 * copied; NULL or "" = direct). Applies to connections opened afterwards. Returns 0, or -1 with
 * a message in err when the URL is not usable. */
int up_pool_set_proxy(struct up_pool *p, const char *proxy_url, char *err, size_t errlen);
/* The endpoint's base URL as configured (for log lines and reports); owned by the pool. */
const char *up_pool_name(const struct up_pool *p);

/* Starts a request; method is the verb exactly (GET, HEAD, POST, PUT, CCM_POST, BITS_POST,
   PROPFIND...), path with query (the endpoint's path prefix is prepended), headers as the client
   sent them (the pool drops hop-by-hop ones and sets Host from base_url, Connection: keep-alive,
   and Content-Length when body_len >= 0, else Transfer-Encoding: chunked when has_body). Returns
   a handle, or NULL with on_error never called (allocation failure).
   All arguments are copied; `cbs` must outlive the request (a static table, typically).
   Handle lifetime: the handle belongs to the pool and is freed right after on_done or on_error
   returns, or inside up_req_cancel; it must not be used after either.
   Fields the pool sets itself or that belong to the client's own hop are dropped (Host,
   Content-Length, Transfer-Encoding, Expect, Proxy-Authorization, the hop-by-hop ones and those
   a Connection field names, HTTP/2 pseudo-headers); a field with an invalid name or a CR, LF or
   NUL in its value is dropped with a warning. An unusable method or path fails the request
   (502). */
struct up_req *up_request(struct up_pool *p, const char *method, const char *path,
                          const struct up_header *h, size_t n, bool has_body, int64_t body_len,
                          const struct up_req_cbs *cbs, void *ctx);
/* Request body bytes (copied). Returns 0 when more can be given at once, 1 when the per-request
   output buffer is past ~256 KiB ("full": wait for on_body_drained), -1 if the request is
   already dead (failed, with on_error still to come, or given more bytes than body_len: the
   request then fails with 502). A body given to a request that is still waiting for its
   connection is buffered until then, within the same bound. */
int up_req_body(struct up_req *r, const char *data, size_t len);
/* The request body is complete. A body shorter than the body_len announced fails the request
   (502). Not needed when body_len bytes were given, nor without a body. */
void up_req_body_end(struct up_req *r);
/* Response backpressure: stop/resume reading the upstream socket for this request (the tunnel
   stream's window is closed). A pause asked for inside on_head or on_body takes effect before
   the next callback: no on_body and no on_done while paused, and response_timeout does not run
   (the tunnel side's own stream timeouts bound a reader that never resumes). */
void up_req_pause(struct up_req *r, bool pause);
/* The client side went away: no more callbacks; the connection is closed unless it can be
   safely reused (response already complete). Frees the handle. Allowed inside the request's
   own callbacks. A request whose connection is still being opened lets it open anyway: the
   connection then serves the queue or waits idle. */
void up_req_cancel(struct up_req *r);
/* One-line "TotalRequests=… TotalRequestsWithBearerToken=… MaxConcurrentRequests=…
   TotalRequestBytes=… TotalResponseBytes=… Failures=…" summary. */
void up_stats_format(const struct up_stats *s, char *buf, size_t len);

/* ---- outbound connections (dial.c) ---- */

/* connector/dial.c: asynchronous TCP connect to host:port, directly or through an HTTP proxy
   with CONNECT (proxy_url "http://[user:pass@]host:port", Basic auth if credentials given). cb
   gets a connected non-blocking fd, or -1 and a reason.
   host is an IP literal, "localhost" (127.0.0.1, then ::1), or a name resolved with `dns`
   (borrowed; required for names). Every address is tried in turn within timeout_ms, which
   covers resolving, connecting and the proxy's answer. The callback runs exactly once, always
   from the loop (never inside dial_start); the fd then belongs to the callee, and the dial
   is freed after the callback returns. Returns NULL (and never calls cb) when the arguments
   are unusable (bad proxy URL, a name without `dns`) or memory runs out. */
typedef void (*dial_cb)(int fd, const char *err, void *ctx);
struct dial *dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                        unsigned port, const char *proxy_url, uint64_t timeout_ms, dial_cb cb,
                        void *ctx);
/* Stops a dial whose callback has not run yet; the callback will not run. Not from inside
 * the callback (the dial is freed when it returns). */
void dial_cancel(struct dial *d);
/* True while the dial waits for the resolver: the evdns_base must then outlive the dial's
 * cancellation until the loop has run the resolver's callback. */
bool dial_is_resolving(const struct dial *d);

/* A URL split into its parts, for base_url and proxy_url. */
struct up_url {
    bool is_https;
    bool has_port; /* the port was written in the URL */
    bool has_userinfo;
    unsigned port;   /* as written, else 80 or 443 */
    char host[256];  /* without the brackets of an IPv6 literal */
    char user[128];  /* percent-decoded */
    char pass[128];  /* percent-decoded */
    char path[1024]; /* "" or "/prefix", without a trailing '/' */
};
/* Splits "http[s]://[user:pass@]host[:port][/path]". Queries and fragments are refused.
 * Returns 0, or -1 with a reason in err. */
int up_url_parse(const char *url, struct up_url *u, char *err, size_t errlen);
/* True when host is an IPv4 or IPv6 literal. */
bool up_host_is_numeric(const char *host);

#endif
