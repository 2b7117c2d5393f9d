/* Types of the tunnel protocol (cmg-tunnel/1) shared by the gateway and the connector. */
#ifndef CMG_TUNNEL_T_H
#define CMG_TUNNEL_T_H

#include <stdint.h>

#define TUNNEL_ALPN "cmg-tunnel/1"
#define TUNNEL_HELLO_PATH "/cmg/v1/hello"
#define TUNNEL_PORT_BASE 10124 /* instance i listens for connectors on 10124 + i */
#define TUNNEL_MAX_INSTANCES 16
#define TUNNEL_MAX_WORKERS 256
#define TUNNEL_MAX_ENDPOINTS 256
#define TUNNEL_NAME_MAX 255

enum tunnel_role_kind {
    TUNNEL_ROLE_MP = 1,  /* management point */
    TUNNEL_ROLE_SUP = 2, /* software update point */
};

/* What the gateway says about itself in its hello request (query of TUNNEL_HELLO_PATH). */
struct tunnel_gateway_hello {
    unsigned instance_id;    /* 0..15 */
    unsigned workers;        /* worker threads of that instance */
    unsigned tunnels_wanted; /* tunnels the connector should hold to it, >= workers */
    unsigned instances;      /* instances the deployment has now (1..16); 0 = not said */
};

struct tunnel_endpoint {
    uint64_t role_id;
    enum tunnel_role_kind kind;
};

/* The connector's answer to the hello (JSON body). */
struct tunnel_hello_reply {
    unsigned version; /* protocol version, 1 */
    char connector[TUNNEL_NAME_MAX + 1]; /* connection point id, e.g. its FQDN */
    char site[4];                        /* site code, 3 characters */
    unsigned nendpoints;
    struct tunnel_endpoint endpoints[TUNNEL_MAX_ENDPOINTS];
};

#endif
