/* cmg-connector internals: settings, endpoints, gateway instances and their tunnels. One
 * event loop runs everything. */
#ifndef CMG_CN_H
#define CMG_CN_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "core.h"
#include "tunnel.h"
#include "upstream.h"

struct cn_config {
    /* [connector] */
    char *id;           /* connection point id (its FQDN) */
    char *site;         /* site code */
    char *service_name; /* the gateway's name: SNI and the certificate check */
    char *gateway_host; /* where instance i is dialled (port 10124 + i); default service_name */
    uint64_t instances; /* how many to dial until a gateway's hello says otherwise */
    uint64_t port_base; /* instance i on port_base + i */
    char *gateways;     /* explicit host:port list instead (never resized) */
    char *endpoints; /* "<role id> <MP|SUP> <base URL>, ..." */
    uint64_t max_tunnels_per_instance;
    uint64_t reconnect_min, reconnect_max; /* ms */
    char *proxy;                           /* http://[user:pass@]host:port for CONNECT */
    uint64_t ping_interval, ping_timeout;  /* ms */
    uint64_t drain_timeout;                /* ms */
    /* [tls] */
    char *pfx_file, *pfx_password, *cert_file, *key_file;
    char *trusted_certs; /* roots for the gateway's certificate */
    /* [upstream] */
    uint64_t up_max_connections, up_max_idle, up_max_queue;
    uint64_t up_connect_timeout, up_response_timeout, up_idle_timeout; /* ms */
    char *up_ca_file, *up_cert_file, *up_key_file;
    /* [admin] */
    bool admin_enabled;
    char *admin_listen;
    /* [log] */
    char *log_file;
    uint64_t log_max_size;
    unsigned log_level;
    bool log_stderr;
    uint64_t report_interval; /* ms */
    char *config_path;        /* derived */
};

struct cn_endpoint {
    uint64_t role_id;
    enum tunnel_role_kind kind;
    char *base_url;
    struct up_pool *pool;
    struct up_stats stats;
    struct up_stats reported; /* figures at the last report line */
};

struct cn_tunnel;

/* One gateway instance: dialled at host:port, as many tunnels as its hello asks for. */
struct cn_instance {
    struct cn *cn;
    unsigned index;
    char host[256];
    unsigned port;
    unsigned wanted;     /* tunnels to hold (from the gateway's hello; 1 until one came) */
    unsigned live;       /* tunnels up (hello answered) */
    unsigned pending;    /* tunnels being dialled or set up */
    unsigned failures;   /* consecutive failed attempts: backoff */
    struct event *retry; /* reconnect timer */
    struct cn_tunnel *tunnels;
    bool said_up; /* logged as reachable */
    bool retired; /* beyond the deployment's instance count: not dialled again */
};

struct cn {
    struct cn_config cfg;
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl_ctx;
    struct cn_endpoint *endpoints;
    size_t nendpoints;
    struct cn_instance *instances; /* count mode: TUNNEL_MAX_INSTANCES slots */
    size_t ninstances;             /* slots set up (retired ones included) */
    bool follows_count;            /* count mode: the gateways' hellos resize the set */
    unsigned nactive;              /* count mode: instances dialled now */
    struct event *report_timer;
    struct evhttp *admin;
    bool stopping;
    uint64_t tunnels_opened, tunnel_failures, hellos;
    uint64_t streams_total, streams_unknown_role;
};

/* tunnel.c */
void cn_instance_fill(struct cn *cn, struct cn_instance *in); /* opens what is missing */
/* Count mode: dial instances 0..n-1 from now on (a gateway's hello said so). */
void cn_instances_resize(struct cn *cn, unsigned n);
void cn_tunnels_stop(struct cn *cn);                          /* GOAWAY on every tunnel */
unsigned cn_open_streams(const struct cn *cn);
void cn_tunnels_free(struct cn *cn);
struct cn_endpoint *cn_endpoint_find(struct cn *cn, uint64_t role_id);

#endif
