/* auth: client identity and per-route policy. */
#ifndef CMG_AUTH_H
#define CMG_AUTH_H

#include "auth-t.h"

/* Classifies a request path (no query string; the caller splits it off). Prefixes are matched
 * without regard to case, as clients send both CCM_Proxy_ServerAuth and CCM_PROXY_SERVERAUTH.
 * Always fills *out; returns out->kind. */
enum auth_route_kind auth_route_classify(const char *path, size_t len, struct auth_route *out);

/* Name of a scheme for logs: "none", "client-certificate", "bearer-token". */
const char *auth_scheme_name(enum auth_scheme scheme);

#endif
