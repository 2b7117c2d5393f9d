/* The tunnel hello: the gateway asks, the connector says which role ids it serves. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core.h"
#include "tunnel.h"

const char *tunnel_role_kind_name(enum tunnel_role_kind kind)
{
    return kind == TUNNEL_ROLE_MP ? "MP" : kind == TUNNEL_ROLE_SUP ? "SUP" : "?";
}

int tunnel_gateway_hello_format(const struct tunnel_gateway_hello *h, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s?instance=%u&workers=%u&tunnels=%u", TUNNEL_HELLO_PATH,
                     h->instance_id, h->workers, h->tunnels_wanted);
    if (n >= 0 && (size_t)n < len && h->instances)
        n += snprintf(buf + n, len - (size_t)n, "&instances=%u", h->instances);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

static int tunnel_parse_uint(const char *s, size_t len, unsigned max, unsigned *out)
{
    if (len == 0 || len > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int tunnel_gateway_hello_parse(const char *target, size_t len, struct tunnel_gateway_hello *out,
                               char *err, size_t errlen)
{
    size_t pl = strlen(TUNNEL_HELLO_PATH);
    memset(out, 0, sizeof(*out));
    if (len < pl + 1 || memcmp(target, TUNNEL_HELLO_PATH, pl) != 0 || target[pl] != '?') {
        snprintf(err, errlen, "not a hello request (expected %s?...)", TUNNEL_HELLO_PATH);
        return -1;
    }
    bool seen[4] = {false, false, false, false};
    const char *p = target + pl + 1, *end = target + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (!eq) {
            snprintf(err, errlen, "hello parameter without a value");
            return -1;
        }
        static const struct {
            const char *name;
            unsigned max;
        } keys[4] = {{"instance", TUNNEL_MAX_INSTANCES - 1},
                     {"workers", TUNNEL_MAX_WORKERS},
                     {"tunnels", TUNNEL_MAX_WORKERS * 4},
                     {"instances", TUNNEL_MAX_INSTANCES}};
        unsigned *slots[4] = {&out->instance_id, &out->workers, &out->tunnels_wanted,
                              &out->instances};
        size_t nl = (size_t)(eq - p);
        int k;
        for (k = 0; k < 4; k++)
            if (strlen(keys[k].name) == nl && memcmp(keys[k].name, p, nl) == 0)
                break;
        if (k == 4) {
            snprintf(err, errlen, "unknown hello parameter \"%.*s\"", (int)(nl > 32 ? 32 : nl), p);
            return -1;
        }
        if (seen[k] ||
            tunnel_parse_uint(eq + 1, (size_t)(pe - eq - 1), keys[k].max, slots[k]) != 0) {
            snprintf(err, errlen, "hello parameter %s is repeated or not in 0..%u", keys[k].name,
                     keys[k].max);
            return -1;
        }
        seen[k] = true;
        p = amp ? amp + 1 : end;
    }
    if (!seen[0] || !seen[1] || !seen[2]) {
        snprintf(err, errlen, "hello needs instance, workers and tunnels");
        return -1;
    }
    if (out->workers == 0 || out->tunnels_wanted < out->workers) {
        snprintf(err, errlen, "hello asks for %u tunnels for %u workers (at least one each)",
                 out->tunnels_wanted, out->workers);
        return -1;
    }
    /* optional: older gateways do not say how many instances there are */
    if (seen[3] && out->instances <= out->instance_id) {
        snprintf(err, errlen, "hello says instance %u of %u instances", out->instance_id,
                 out->instances);
        return -1;
    }
    return 0;
}

char *tunnel_hello_reply_encode(const struct tunnel_hello_reply *r)
{
    json_t *eps = json_array();
    for (unsigned i = 0; i < r->nendpoints && i < TUNNEL_MAX_ENDPOINTS; i++) {
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)r->endpoints[i].role_id);
        json_array_append_new(eps, json_pack("{s:s, s:s}", "role_id", id, "kind",
                                             tunnel_role_kind_name(r->endpoints[i].kind)));
    }
    json_t *root = json_pack("{s:i, s:s, s:s, s:o}", "version", (int)r->version, "connector",
                             r->connector, "site", r->site, "endpoints", eps);
    if (!root)
        return NULL;
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static bool tunnel_site_ok(const char *s)
{
    if (strlen(s) != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (!isalnum((unsigned char)s[i]))
            return false;
    return true;
}

int tunnel_hello_reply_parse(const char *json, size_t len, struct tunnel_hello_reply *out,
                             char *err, size_t errlen)
{
    int rc = -1;
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "hello reply is not JSON: %s (at %d)", je.text, je.position);
        return -1;
    }
    json_int_t version = 0;
    const char *connector = NULL, *site = NULL;
    json_t *eps = NULL;
    if (json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s, s:o}", "version", &version,
                       "connector", &connector, "site", &site, "endpoints", &eps) != 0) {
        snprintf(err, errlen, "hello reply: %s", je.text);
        goto out;
    }
    if (version != 1) {
        snprintf(err, errlen, "hello reply: protocol version %lld, this gateway speaks 1",
                 (long long)version);
        goto out;
    }
    if (!*connector || strlen(connector) > TUNNEL_NAME_MAX) {
        snprintf(err, errlen, "hello reply: connector id empty or longer than %d", TUNNEL_NAME_MAX);
        goto out;
    }
    if (!tunnel_site_ok(site)) {
        snprintf(err, errlen, "hello reply: site code \"%.8s\" is not 3 letters or digits", site);
        goto out;
    }
    if (!json_is_array(eps) || json_array_size(eps) > TUNNEL_MAX_ENDPOINTS) {
        snprintf(err, errlen, "hello reply: endpoints must be a list of at most %d",
                 TUNNEL_MAX_ENDPOINTS);
        goto out;
    }
    out->version = (unsigned)version;
    snprintf(out->connector, sizeof(out->connector), "%s", connector);
    snprintf(out->site, sizeof(out->site), "%s", site);
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep)
    {
        const char *id = NULL, *kind = NULL;
        if (json_unpack_ex(ep, &je, JSON_STRICT, "{s:s, s:s}", "role_id", &id, "kind", &kind) !=
            0) {
            snprintf(err, errlen, "hello reply: endpoint %zu: %s", i, je.text);
            goto out;
        }
        struct tunnel_endpoint *e = &out->endpoints[out->nendpoints];
        if (!core_parse_u64(id, strlen(id), &e->role_id)) {
            snprintf(err, errlen,
                     "hello reply: endpoint %zu: role id \"%.24s\" is not a 64-bit "
                     "decimal number",
                     i, id);
            goto out;
        }
        if (strcmp(kind, "MP") == 0)
            e->kind = TUNNEL_ROLE_MP;
        else if (strcmp(kind, "SUP") == 0)
            e->kind = TUNNEL_ROLE_SUP;
        else {
            snprintf(err, errlen, "hello reply: endpoint %zu: kind \"%.8s\" is not MP or SUP", i,
                     kind);
            goto out;
        }
        for (unsigned k = 0; k < out->nendpoints; k++)
            if (out->endpoints[k].role_id == e->role_id) {
                snprintf(err, errlen, "hello reply: role id %s listed twice", id);
                goto out;
            }
        out->nendpoints++;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}
