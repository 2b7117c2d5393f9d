/* Which gateway path is this, and which authentication does it call for. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "core.h"

static const struct {
    const char *prefix;
    enum auth_scheme scheme;
} auth_prefixes[] = {
    {"/CCM_Proxy_MutualAuth", AUTH_SCHEME_MUTUAL},
    {"/CCM_Proxy_ServerAuth", AUTH_SCHEME_BEARER},
};

static bool auth_segment_is(const char *seg, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(seg, word, len) == 0;
}

enum auth_route_kind auth_route_classify(const char *path, size_t len, struct auth_route *out)
{
    memset(out, 0, sizeof(*out));
    static const char content[] = "/downloadrestservice.svc/getcontentxmlsecure";
    if (len == sizeof(content) - 1 && strncasecmp(path, content, len) == 0) {
        out->kind = AUTH_ROUTE_CONTENT_LOCATION;
        return out->kind;
    }
    for (size_t i = 0; i < sizeof(auth_prefixes) / sizeof(auth_prefixes[0]); i++) {
        size_t pl = strlen(auth_prefixes[i].prefix);
        if (len <= pl || strncasecmp(path, auth_prefixes[i].prefix, pl) != 0 || path[pl] != '/')
            continue;
        const char *seg = path + pl + 1;
        const char *end = path + len;
        const char *slash = memchr(seg, '/', (size_t)(end - seg));
        size_t seglen = (size_t)((slash ? slash : end) - seg);
        out->scheme = auth_prefixes[i].scheme;
        if (!slash && auth_segment_is(seg, seglen, "ServiceMetadata")) {
            out->kind = AUTH_ROUTE_SERVICE_METADATA;
            out->scheme = AUTH_SCHEME_NONE;
        } else if (!slash && out->scheme == AUTH_SCHEME_BEARER &&
                   auth_segment_is(seg, seglen, "AADAuthInfo")) {
            out->kind = AUTH_ROUTE_AAD_AUTH_INFO;
            out->scheme = AUTH_SCHEME_NONE;
        } else if (core_parse_u64(seg, seglen, &out->role_id) /* decimal role id */) {
            out->kind = AUTH_ROUTE_ROLE;
            out->rest = slash ? slash : "/";
            out->rest_len = slash ? (size_t)(end - slash) : 1;
        } else {
            out->scheme = AUTH_SCHEME_NONE;
        }
        return out->kind;
    }
    return out->kind;
}

const char *auth_scheme_name(enum auth_scheme scheme)
{
    switch (scheme) {
    case AUTH_SCHEME_MUTUAL:
        return "client-certificate";
    case AUTH_SCHEME_BEARER:
        return "bearer-token";
    default:
        return "none";
    }
}
