/* Admin listener (plain HTTP, loopback by default): /healthz, /readyz, /metrics. It runs on
 * the main thread and only reads the workers' counters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "gw.h"

const char *gw_hs_fail_name(enum gw_hs_fail f)
{
    static const char *names[GW_HSF_N] = {
        "protocol_version", "no_shared_cipher", "no_alpn", "not_tls", "timeout", "closed", "other"};
    return f < GW_HSF_N ? names[f] : "other";
}

const char *gw_tls_version_label(enum gw_tls_version v)
{
    static const char *names[GW_TLS_NVERSIONS] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
                                                  "other"};
    return v < GW_TLS_NVERSIONS ? names[v] : "other";
}

struct gw_out {
    char *buf;
    size_t len, cap;
};

static void gw_out_printf(struct gw_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void gw_out_printf(struct gw_out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->buf, cap);
        if (!p)
            return;
        o->buf = p;
        o->cap = cap;
    }
}

static void gw_metric_head(struct gw_out *o, const char *name, const char *type, const char *help)
{
    gw_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define GW_FOR_WORKERS(s, w)                                                                       \
    for (struct gw_worker *w = (s)->workers; w < (s)->workers + (s)->nworkers; w++)

static void gw_metric_simple(struct gw_out *o, struct gw_server *s, const char *name,
                             const char *type, const char *help, size_t off)
{
    gw_metric_head(o, name, type, help);
    GW_FOR_WORKERS(s, w)
    {
        uint64_t *v = (uint64_t *)((char *)&w->metrics + off);
        gw_out_printf(o, "%s{worker=\"%u\"} %llu\n", name, w->id, (unsigned long long)GW_GET(*v));
    }
}

#define GW_M(o, s, name, type, help, field)                                                        \
    gw_metric_simple(o, s, name, type, help, offsetof(struct gw_metrics, field))

/* A counter array in struct gw_metrics, one series per worker and per entry [from, n), each
 * labelled `label` with the name the entry's index maps to. */
static void gw_metric_labelled(struct gw_out *o, struct gw_server *s, const char *name,
                               const char *help, const char *label, const char *(*name_of)(int),
                               size_t off, int from, int n)
{
    gw_metric_head(o, name, "counter", help);
    GW_FOR_WORKERS(s, w)
    {
        const uint64_t *arr = (const uint64_t *)((const char *)&w->metrics + off);
        for (int i = from; i < n; i++)
            gw_out_printf(o, "%s{worker=\"%u\",%s=\"%s\"} %llu\n", name, w->id, label, name_of(i),
                          (unsigned long long)GW_GET(arr[i]));
    }
}

static const char *gw_tls_version_of(int i)
{
    return gw_tls_version_label((enum gw_tls_version)i);
}

static const char *gw_hs_fail_of(int i)
{
    return gw_hs_fail_name((enum gw_hs_fail)i);
}

static const char *gw_verdict_of(int i)
{
    return tls_client_verdict_name((enum tls_client_verdict)i);
}

static const char *gw_token_error_of(int i)
{
    return auth_token_error_name((enum auth_token_error)i);
}

#define GW_LABELLED(o, s, name, help, label, fn, field, from, n)                                   \
    gw_metric_labelled(o, s, name, help, label, fn, offsetof(struct gw_metrics, field), from, n)

static const char *gw_content_source_of(int i)
{
    return i == 0 ? "cache" : "fill";
}

static void gw_content_metrics(struct gw_out *o, struct gw_server *s)
{
    GW_LABELLED(o, s, "cmg_content_requests_total",
                "Content answers started, by where the bytes came from: a complete cached file "
                "or a fill in progress.",
                "source", gw_content_source_of, content_cache, 0, 2);
    GW_M(o, s, "cmg_content_locations_total", "counter",
         "Content-location manifests answered (getcontentxmlsecure).", content_locations);
    GW_M(o, s, "cmg_content_partial_total", "counter", "Content answers with 206 (Range).",
         content_partial);
    GW_M(o, s, "cmg_content_not_modified_total", "counter", "Content answers with 304.",
         content_not_modified);
    GW_M(o, s, "cmg_content_peerdist_total", "counter",
         "BranchCache Content Information sent instead of the content.", content_peerdist);
    GW_M(o, s, "cmg_content_bytes_total", "counter", "Content body bytes sent to clients.",
         content_bytes);
    GW_M(o, s, "cmg_content_token_refused_total", "counter",
         "Content access tokens refused (401 CMGService_Invalid_Token).", content_token_fail);
    GW_M(o, s, "cmg_content_errors_total", "counter",
         "Content requests that failed: storage errors, fills that broke off, stalls.",
         content_errors);
    struct content_cache_stats st;
    content_cache_stats(s->content_cache, &st);
    gw_out_printf(o,
                  "# HELP cmg_content_cache_entries Files in the content cache (complete or "
                  "filling).\n# TYPE cmg_content_cache_entries gauge\ncmg_content_cache_entries "
                  "%llu\n"
                  "# HELP cmg_content_cache_bytes Bytes the content cache holds or is filling.\n"
                  "# TYPE cmg_content_cache_bytes gauge\ncmg_content_cache_bytes %llu\n"
                  "# HELP cmg_content_cache_max_bytes The cache's bound (content.cache_max).\n"
                  "# TYPE cmg_content_cache_max_bytes gauge\ncmg_content_cache_max_bytes %llu\n"
                  "# HELP cmg_content_cache_hits_total Lookups that found a complete file.\n"
                  "# TYPE cmg_content_cache_hits_total counter\ncmg_content_cache_hits_total "
                  "%llu\n"
                  "# HELP cmg_content_cache_misses_total Lookups that started a fill.\n"
                  "# TYPE cmg_content_cache_misses_total counter\ncmg_content_cache_misses_total "
                  "%llu\n"
                  "# HELP cmg_content_fills_total Fills from storage that ended, by result.\n"
                  "# TYPE cmg_content_fills_total counter\n"
                  "cmg_content_fills_total{result=\"ok\"} %llu\n"
                  "cmg_content_fills_total{result=\"failed\"} %llu\n"
                  "# HELP cmg_content_fills_active Fills in progress.\n"
                  "# TYPE cmg_content_fills_active gauge\ncmg_content_fills_active %llu\n"
                  "# HELP cmg_content_fill_bytes_total Bytes read from storage into the cache.\n"
                  "# TYPE cmg_content_fill_bytes_total counter\ncmg_content_fill_bytes_total "
                  "%llu\n"
                  "# HELP cmg_content_evictions_total Files evicted to stay within cache_max.\n"
                  "# TYPE cmg_content_evictions_total counter\ncmg_content_evictions_total %llu\n"
                  "# HELP cmg_content_integrity_failures_total Fills refused because the MD5 "
                  "did not match.\n"
                  "# TYPE cmg_content_integrity_failures_total counter\n"
                  "cmg_content_integrity_failures_total %llu\n"
                  "# HELP cmg_content_manifest_fetches_total Package manifests read from "
                  "storage.\n"
                  "# TYPE cmg_content_manifest_fetches_total counter\n"
                  "cmg_content_manifest_fetches_total %llu\n"
                  "# HELP cmg_content_manifest_failures_total Package manifest reads that "
                  "failed.\n"
                  "# TYPE cmg_content_manifest_failures_total counter\n"
                  "cmg_content_manifest_failures_total %llu\n",
                  (unsigned long long)st.entries, (unsigned long long)st.bytes,
                  (unsigned long long)st.max_bytes, (unsigned long long)st.hits,
                  (unsigned long long)st.misses, (unsigned long long)st.fills_ok,
                  (unsigned long long)st.fills_failed, (unsigned long long)st.fills_active,
                  (unsigned long long)st.fill_bytes, (unsigned long long)st.evictions,
                  (unsigned long long)st.integrity_failures,
                  (unsigned long long)st.manifest_fetches,
                  (unsigned long long)st.manifest_failures);
}

char *gw_metrics_render(struct gw_server *s, size_t *len)
{
    struct gw_out o = {malloc(16384), 0, 16384};
    if (!o.buf)
        return NULL;
    o.buf[0] = '\0';
    gw_metric_head(&o, "cmg_build_info", "gauge", "Version and instance of this gateway.");
    gw_out_printf(&o, "cmg_build_info{version=\"%s\",instance=\"%llu\"} 1\n", CMG_VERSION,
                  (unsigned long long)s->snap->cfg.instance_id);
    gw_metric_head(&o, "cmg_start_time_seconds", "gauge", "Process start, seconds since epoch.");
    gw_out_printf(&o, "cmg_start_time_seconds %llu\n",
                  (unsigned long long)(s->start_wall_ms / 1000));
    gw_metric_head(&o, "cmg_draining", "gauge", "1 while the gateway drains after SIGTERM.");
    gw_out_printf(&o, "cmg_draining %d\n", atomic_load(&s->draining) ? 1 : 0);
    gw_metric_head(&o, "cmg_config_reloads_total", "counter", "Successful reloads.");
    gw_out_printf(&o, "cmg_config_reloads_total %llu\n", (unsigned long long)s->reloads);
    gw_metric_head(&o, "cmg_config_reload_failures_total", "counter",
                   "Reloads refused because the new configuration had errors.");
    gw_out_printf(&o, "cmg_config_reload_failures_total %llu\n",
                  (unsigned long long)s->reload_failures);
    gw_metric_head(&o, "cmg_config_generation", "gauge", "Generation of the active snapshot.");
    gw_out_printf(&o, "cmg_config_generation %llu\n", (unsigned long long)s->snap->generation);

    struct gw_memory_stats ms;
    if (gw_memory_stats(&ms)) {
        gw_metric_head(&o, "cmg_memory_bytes", "gauge",
                       "Allocator figures: allocated (live), active, resident, retained.");
        gw_out_printf(&o, "cmg_memory_bytes{kind=\"allocated\"} %llu\n",
                      (unsigned long long)ms.allocated);
        gw_out_printf(&o, "cmg_memory_bytes{kind=\"active\"} %llu\n",
                      (unsigned long long)ms.active);
        gw_out_printf(&o, "cmg_memory_bytes{kind=\"resident\"} %llu\n",
                      (unsigned long long)ms.resident);
        gw_out_printf(&o, "cmg_memory_bytes{kind=\"retained\"} %llu\n",
                      (unsigned long long)ms.retained);
    }

    GW_M(&o, s, "cmg_connections_open", "gauge", "Client connections open now.", conn_open);
    GW_M(&o, s, "cmg_connections_total", "counter", "Client connections accepted.", conn_total);
    GW_M(&o, s, "cmg_connections_refused_total", "counter",
         "Connections refused because gateway.max_connections was reached.", conn_refused);

    GW_LABELLED(&o, s, "cmg_tls_handshakes_total", "Completed TLS handshakes by protocol version.",
                "version", gw_tls_version_of, hs_ok, 0, GW_TLS_NVERSIONS);
    GW_M(&o, s, "cmg_tls_resumptions_total", "counter", "Handshakes that resumed a session.",
         hs_resumed);
    GW_LABELLED(&o, s, "cmg_tls_handshake_failures_total", "Failed TLS handshakes by reason.",
                "reason", gw_hs_fail_of, hs_fail, 0, GW_HSF_N);

    gw_metric_head(&o, "cmg_http_requests_total", "counter", "Requests answered, by status.");
    GW_FOR_WORKERS(s, w)
    for (int st = 100; st < 600; st++) {
        uint64_t v = GW_GET(w->metrics.status[st]);
        if (v)
            gw_out_printf(&o, "cmg_http_requests_total{worker=\"%u\",code=\"%d\"} %llu\n", w->id,
                          st, (unsigned long long)v);
    }
    GW_M(&o, s, "cmg_http_received_bytes_total", "counter",
         "Application bytes received from clients (after TLS).", bytes_in);
    GW_M(&o, s, "cmg_http_sent_bytes_total", "counter",
         "Application bytes sent to clients (before TLS).", bytes_out);
    gw_metric_head(&o, "cmg_http_timeouts_total", "counter",
                   "Connections ended by a timeout, by kind.");
    GW_FOR_WORKERS(s, w)
    {
        const struct {
            const char *kind;
            uint64_t *v;
        } t[] = {{"header", &w->metrics.timeouts_header},
                 {"idle", &w->metrics.timeouts_idle},
                 {"body", &w->metrics.timeouts_body},
                 {"send", &w->metrics.timeouts_send}};
        for (size_t i = 0; i < 4; i++)
            gw_out_printf(&o, "cmg_http_timeouts_total{worker=\"%u\",kind=\"%s\"} %llu\n", w->id,
                          t[i].kind, (unsigned long long)GW_GET(*t[i].v));
    }
    GW_LABELLED(&o, s, "cmg_auth_client_certificates_total",
                "Client-certificate decisions on CCM_Proxy_MutualAuth routes, by verdict.",
                "verdict", gw_verdict_of, client_cert, 0, TLS_CLIENT_VERDICT_N);
    gw_metric_head(&o, "cmg_auth_tokens_accepted_total", "counter",
                   "Bearer tokens accepted on CCM_Proxy_ServerAuth routes, by kind.");
    GW_FOR_WORKERS(s, w)
    {
        gw_out_printf(&o, "cmg_auth_tokens_accepted_total{worker=\"%u\",kind=\"site\"} %llu\n",
                      w->id, (unsigned long long)GW_GET(w->metrics.token_ok[0]));
        gw_out_printf(&o, "cmg_auth_tokens_accepted_total{worker=\"%u\",kind=\"bulk\"} %llu\n",
                      w->id, (unsigned long long)GW_GET(w->metrics.token_ok[1]));
        gw_out_printf(&o, "cmg_auth_tokens_accepted_total{worker=\"%u\",kind=\"entra\"} %llu\n",
                      w->id, (unsigned long long)GW_GET(w->metrics.token_ok[2]));
    }
    gw_metric_head(&o, "cmg_auth_waits_total", "counter",
                   "Requests that waited for a CRL or key fetch they caused, by what.");
    GW_FOR_WORKERS(s, w)
    {
        gw_out_printf(&o, "cmg_auth_waits_total{worker=\"%u\",for=\"crl\"} %llu\n", w->id,
                      (unsigned long long)GW_GET(w->metrics.auth_waits[0]));
        gw_out_printf(&o, "cmg_auth_waits_total{worker=\"%u\",for=\"keys\"} %llu\n", w->id,
                      (unsigned long long)GW_GET(w->metrics.auth_waits[1]));
    }
    GW_M(&o, s, "cmg_tunnels_open", "gauge", "Tunnels from connection points up (hello done).",
         tunnels_open);
    GW_M(&o, s, "cmg_tunnels_total", "counter", "Tunnels whose hello succeeded.", tunnels_total);
    GW_M(&o, s, "cmg_tunnels_refused_total", "counter",
         "Tunnel connections refused: TLS, certificate, ALPN or hello.", tunnels_refused);
    GW_M(&o, s, "cmg_tunnels_lost_total", "counter",
         "Tunnels closed by a PING timeout, a reset or an error.", tunnels_lost);
    GW_M(&o, s, "cmg_proxy_requests_total", "counter", "Requests sent on a tunnel.", proxied);
    GW_M(&o, s, "cmg_proxy_retries_total", "counter",
         "Requests sent again on another tunnel after theirs went away.", proxy_retries);
    GW_M(&o, s, "cmg_proxy_failures_total", "counter",
         "Requests the gateway answered 502/504 for want of an answer through the tunnel.",
         proxy_failed);
    GW_M(&o, s, "cmg_proxy_no_tunnel_total", "counter",
         "Requests answered 503: the role id is known, no tunnel serves it here now.", no_tunnel);
    GW_M(&o, s, "cmg_proxy_unknown_role_total", "counter",
         "Requests answered 404: no connection point serves the role id.", unknown_role);
    GW_M(&o, s, "cmg_proxy_handovers_total", "counter",
         "Client connections handed to another worker whose tunnels serve the role id.",
         handed_over);
    GW_M(&o, s, "cmg_auth_revoked_connections_closed_total", "counter",
         "Connections closed because a refreshed CRL revoked their client certificate.",
         revoked_closed);
    GW_LABELLED(&o, s, "cmg_auth_token_rejections_total",
                "Bearer tokens refused on CCM_Proxy_ServerAuth routes, by cause.", "cause",
                gw_token_error_of, token_fail, 1, AUTH_TOKEN_ERROR_N);
    if (s->content_cache)
        gw_content_metrics(&o, s);
    char *fetched = gw_refresher_metrics(s);
    if (fetched) {
        gw_out_printf(&o, "%s", fetched);
        free(fetched);
    }
    *len = o.len;
    return o.buf;
}

static void gw_admin_reply(struct evhttp_request *req, int code, const char *reason,
                           const char *ctype, const char *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void gw_admin_cb(struct evhttp_request *req, void *arg)
{
    struct gw_server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        gw_admin_reply(req, 405, "Method Not Allowed", "text/plain", "405 Method Not Allowed\n",
                       23);
        return;
    }
    if (strcmp(uri, "/healthz") == 0) {
        gw_admin_reply(req, 200, "OK", "text/plain", "ok\n", 3);
    } else if (strcmp(uri, "/readyz") == 0) {
        if (atomic_load(&s->draining))
            gw_admin_reply(req, 503, "Service Unavailable", "text/plain", "draining\n", 9);
        else if (!atomic_load(&s->clients_open))
            gw_admin_reply(req, 503, "Service Unavailable", "text/plain", "awaiting tunnel\n", 16);
        else
            gw_admin_reply(req, 200, "OK", "text/plain", "ready\n", 6);
    } else if (strcmp(uri, "/metrics") == 0) {
        size_t len;
        char *text = gw_metrics_render(s, &len);
        if (!text) {
            gw_admin_reply(req, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
            return;
        }
        gw_admin_reply(req, 200, "OK", "text/plain; version=0.0.4", text, len);
        free(text);
    } else {
        gw_admin_reply(req, 404, "Not Found", "text/plain", "404 Not Found\n", 14);
    }
}

int gw_admin_start(struct gw_server *s, char *err, size_t errlen)
{
    const struct gw_config *c = &s->snap->cfg;
    if (!c->admin_enabled)
        return 0;
    int fd = gw_listen_socket(c->admin_listen, 128, false, err, errlen);
    if (fd < 0)
        return -1;
    s->admin = evhttp_new(s->base);
    if (!s->admin || !evhttp_accept_socket_with_handle(s->admin, fd)) {
        snprintf(err, errlen, "admin.listen %s: cannot serve HTTP", c->admin_listen);
        return -1;
    }
    evhttp_set_allowed_methods(s->admin, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_headers_size(s->admin, 8192);
    evhttp_set_max_body_size(s->admin, 0);
    evhttp_set_timeout(s->admin, 10);
    evhttp_set_gencb(s->admin, gw_admin_cb, s);
    return 0;
}

void gw_admin_stop(struct gw_server *s)
{
    if (s->admin)
        evhttp_free(s->admin);
    s->admin = NULL;
}
