/* What the gateway answers itself. Role paths answer 404 until tunnel routing exists. */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "conn.h"

bool gw_router_method_allowed(enum httpreq_method m)
{
    switch (m) {
    case HTTPREQ_M_GET:
    case HTTPREQ_M_HEAD:
    case HTTPREQ_M_POST:
    case HTTPREQ_M_PUT:
    case HTTPREQ_M_CCM_POST:
    case HTTPREQ_M_BITS_POST:
    case HTTPREQ_M_PROPFIND:
        return true;
    default:
        return false;
    }
}

/* Escapes &, <, >, " and ' for XML text. Returns bytes written (truncates to fit). */
static size_t gw_xml_escape(char *out, size_t len, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < len; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        }
        if (rep) {
            size_t rl = strlen(rep);
            memcpy(out + o, rep, rl);
            o += rl;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return o;
}

static void gw_service_metadata(struct gw_conn *c)
{
    char name[600];
    gw_xml_escape(name, sizeof(name), c->snap->service_name);
    char body[1024];
    int n = snprintf(body, sizeof(body),
                     "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n"
                     "<ServiceMetadata>"
                     "<ServiceName>%s</ServiceName>"
                     "<Version>%s</Version>"
                     "<InstanceId>%llu</InstanceId>"
                     "<InstanceName>ProxyService_IN_%llu</InstanceName>"
                     "</ServiceMetadata>\r\n",
                     name, CMG_VERSION, (unsigned long long)c->snap->cfg.instance_id,
                     (unsigned long long)c->snap->cfg.instance_id);
    gw_conn_respond(c, 200, "OK", "text/xml; charset=utf-8", body, (size_t)n,
                    "Cache-Control: no-store\r\n");
}

static void gw_plain(struct gw_conn *c, int status, const char *reason, const char *extra)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    gw_conn_respond(c, status, reason, "text/plain; charset=utf-8", body, (size_t)n, extra);
}

void gw_router_handle(struct gw_conn *c)
{
    static const char allow[] = "Allow: GET, HEAD, POST, PUT, CCM_POST, BITS_POST, PROPFIND\r\n";
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *q = memchr(url, '?', ulen);
    size_t plen = q ? (size_t)(q - url) : ulen;
    if (plen == 0 || url[0] != '/') {
        /* absolute-form and asterisk-form targets are for proxies and OPTIONS, not for us */
        gw_plain(c, 400, "Bad Request", NULL);
        return;
    }
    if (!gw_router_method_allowed(c->req.method)) {
        gw_plain(c, 405, "Method Not Allowed", allow);
        return;
    }
    struct auth_route route;
    switch (auth_route_classify(url, plen, &route)) {
    case AUTH_ROUTE_SERVICE_METADATA:
        if (c->req.method == HTTPREQ_M_GET || c->req.method == HTTPREQ_M_HEAD)
            gw_service_metadata(c);
        else
            gw_plain(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
        return;
    default:
        /* Role ids, AADAuthInfo and content answer once routing, auth and content exist. */
        gw_plain(c, 404, "Not Found", NULL);
        return;
    }
}
