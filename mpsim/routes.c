/* The management point's endpoints, as a connection point sends them (after the gateway took
 * the /CCM_Proxy_<kind>/<role id> prefix off), and the test endpoints. Paths match without regard
 * to case, as on the IIS that hosts a real management point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "mpsim.h"

#define ROUTE_CCM_BOUNDARY "aAbBcCdDv1234567890VxXyYzZ"
#define ROUTE_BLOB_BYTES 384 /* size of the stand-in certificates */

struct route_req {
    const char *path; /* not NUL-terminated */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
};

static bool route_eq(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(s, lit, len) == 0;
}

static bool route_prefix(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && strncasecmp(s, lit, n) == 0;
}

static bool route_is_get(const struct mpsim_conn *c)
{
    return c->req.method == HTTPREQ_M_GET || c->req.method == HTTPREQ_M_HEAD;
}

static void route_text(struct mpsim_conn *c, int status, const char *extra, const char *text)
{
    mpsim_reply(c, status, "text/plain", extra, text, strlen(text));
}

static void route_not_found(struct mpsim_conn *c)
{
    route_text(c, 404, NULL, "404 Not Found\n");
}

static void route_get_only(struct mpsim_conn *c)
{
    route_text(c, 405, "Allow: GET, HEAD\r\n", "405 Method Not Allowed\n");
}

/* A stand-in certificate: n bytes, block k = SHA-256("<label>:<name>:<k>"). */
static void route_blob(const char *label, const char *name, unsigned char *out, size_t n)
{
    for (size_t k = 0; k * 32 < n; k++) {
        char in[320];
        unsigned char d[32];
        unsigned int dl = 0;
        int len = snprintf(in, sizeof(in), "%s:%s:%zu", label, name, k);
        if (len < 0 || EVP_Digest(in, (size_t)len, d, &dl, EVP_sha256(), NULL) != 1)
            memset(d, 0, sizeof(d));
        size_t take = n - k * 32 < 32 ? n - k * 32 : 32;
        memcpy(out + k * 32, d, take);
    }
}

static void route_blob_base64(const char *label, const char *name, char *out /* 4/3 n + 1 */)
{
    unsigned char blob[ROUTE_BLOB_BYTES];
    route_blob(label, name, blob, sizeof(blob));
    EVP_EncodeBlock((unsigned char *)out, blob, (int)sizeof(blob));
}

static void route_blob_hex(const char *label, const char *name, char *out /* 2n + 1 */)
{
    static const char digits[] = "0123456789ABCDEF";
    unsigned char blob[ROUTE_BLOB_BYTES];
    route_blob(label, name, blob, sizeof(blob));
    for (size_t i = 0; i < sizeof(blob); i++) {
        out[2 * i] = digits[blob[i] >> 4];
        out[2 * i + 1] = digits[blob[i] & 15];
    }
    out[2 * sizeof(blob)] = '\0';
}

/* ---- /SMS_MP/.sms_aut?<what> ---- */

static void route_sms_aut(struct mpsim_conn *c, const struct route_req *r)
{
    const struct mpsim_opts *o = &c->srv->opts;
    if (!route_is_get(c)) {
        route_get_only(c);
        return;
    }
    /* The keyword ends at '&' ("MPLIST2&CM1"). */
    const char *w = r->query ? r->query : "";
    size_t wl = r->query ? r->query_len : 0;
    const char *amp = memchr(w, '&', wl);
    if (amp)
        wl = (size_t)(amp - w);
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        route_text(c, 503, NULL, "out of memory\n");
        return;
    }
    if (route_eq(w, wl, "MPLIST") || route_eq(w, wl, "MPLIST1") || route_eq(w, wl, "MPLIST2")) {
        char name[64];
        size_t i = 0;
        for (; o->mp_name[i] && o->mp_name[i] != '.' && i < sizeof(name) - 1; i++)
            name[i] = (char)(o->mp_name[i] >= 'a' && o->mp_name[i] <= 'z' ? o->mp_name[i] - 32
                                                                          : o->mp_name[i]);
        name[i] = '\0';
        evbuffer_add_printf(b,
                            "<MPList><MP Name=\"%s\" FQDN=\"%s\" SiteCode=\"%s\">"
                            "<Version>9128</Version><Capabilities SchemaVersion=\"1.0\">"
                            "<Property Name=\"SSLState\" Value=\"63\"/></Capabilities></MP>"
                            "</MPList>",
                            name, o->mp_name, o->site);
    } else if (route_eq(w, wl, "SITESIGNCERT")) {
        char b64[ROUTE_BLOB_BYTES * 4 / 3 + 8];
        route_blob_base64("sitesigncert", o->site, b64);
        evbuffer_add_printf(b, "<SiteSignCert SiteCode=\"%s\">%s</SiteSignCert>", o->site, b64);
    } else if (route_eq(w, wl, "MPCERT")) {
        char b64[ROUTE_BLOB_BYTES * 4 / 3 + 8];
        route_blob_base64("mpcert", o->mp_name, b64);
        evbuffer_add_printf(b, "<MPCert FQDN=\"%s\">%s</MPCert>", o->mp_name, b64);
    } else if (route_eq(w, wl, "MPKEYINFORMATIONEX")) {
        char sign[ROUTE_BLOB_BYTES * 2 + 1], enc[ROUTE_BLOB_BYTES * 2 + 1];
        route_blob_hex("mpsign", o->mp_name, sign);
        route_blob_hex("mpencrypt", o->mp_name, enc);
        evbuffer_add_printf(b,
                            "<MPKEYINFORMATION><FQDN>%s</FQDN><SITECODE>%s</SITECODE>"
                            "<SIGNINGCERTIFICATE>%s</SIGNINGCERTIFICATE>"
                            "<ENCRYPTIONCERTIFICATE>%s</ENCRYPTIONCERTIFICATE>"
                            "</MPKEYINFORMATION>",
                            o->mp_name, o->site, sign, enc);
    } else {
        evbuffer_free(b);
        route_not_found(c);
        return;
    }
    mpsim_reply_buf(c, 200, "text/xml", NULL, b);
}

/* ---- /SMS_MP/.sms_pol?<policy id> ---- */

static void route_sms_pol(struct mpsim_conn *c, const struct route_req *r)
{
    if (!route_is_get(c)) {
        route_get_only(c);
        return;
    }
    if (!r->query || r->query_len == 0) {
        route_text(c, 404, NULL, "404 Not Found: no policy id\n");
        return;
    }
    struct mpsim_gen g;
    if (mpsim_gen_policy_init(&g, r->query, r->query_len, c->srv->opts.policy_size) != 0) {
        route_text(c, 503, NULL, "out of memory\n");
        return;
    }
    mpsim_reply_stream(c, 200, "application/octet-stream", NULL, &g);
}

/* ---- /ccm_system[_tokenauth]/request ---- */

static void route_ccm(struct mpsim_conn *c)
{
    struct mpsim_server *s = c->srv;
    if (c->req.method != HTTPREQ_M_CCM_POST && c->req.method != HTTPREQ_M_POST) {
        route_text(c, 405, "Allow: CCM_POST, POST\r\n", "405 Method Not Allowed\n");
        return;
    }
    char hex[65];
    uint64_t len = c->req.body_bytes;
    struct evbuffer *b = mpsim_body_digest(c, hex) == 0 ? evbuffer_new() : NULL;
    if (!b) {
        route_text(c, 503, NULL, "out of memory\n");
        return;
    }
    char reply[160];
    int rl = snprintf(reply, sizeof(reply), "{\"length\":%llu,\"sha256\":\"%s\"}",
                      (unsigned long long)len, hex);
    uint64_t id = ++s->next_msg_id;
    evbuffer_add_printf(b,
                        "--" ROUTE_CCM_BOUNDARY "\r\n"
                        "content-type: text/plain; charset=UTF-8\r\n\r\n"
                        "<Msg SchemaVersion=\"1.1\"><ID>{4D505349-4D00-0000-0000-%012llX}</ID>"
                        "<SourceHost>%s</SourceHost><SourceID>%s</SourceID>"
                        "<ReceivedBodyLength>%llu</ReceivedBodyLength>"
                        "<ReceivedBodySHA256>%s</ReceivedBodySHA256>"
                        "<Body Type=\"ByteRange\" Offset=\"0\" Length=\"%d\"/></Msg>\r\n"
                        "--" ROUTE_CCM_BOUNDARY "\r\n"
                        "content-type: application/octet-stream\r\n\r\n"
                        "%s\r\n"
                        "--" ROUTE_CCM_BOUNDARY "--\r\n",
                        (unsigned long long)(id & 0xffffffffffffull), s->opts.mp_name, s->opts.site,
                        (unsigned long long)len, hex, rl, reply);
    mpsim_reply_buf(c, 200, "multipart/mixed; boundary=" ROUTE_CCM_BOUNDARY, NULL, b);
}

/* ---- /CCM_STS ---- */

static void route_base64url(const char *in, size_t len, char *out /* 4/3 len + 4 */)
{
    int n = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

static void route_sts(struct mpsim_conn *c)
{
    struct mpsim_server *s = c->srv;
    if (!route_is_get(c) && c->req.method != HTTPREQ_M_POST) {
        route_text(c, 405, "Allow: GET, HEAD, POST\r\n", "405 Method Not Allowed\n");
        return;
    }
    /* An unsigned JWT: enough for a client to carry back, never to be trusted. */
    static const char hdr[] = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char claims[400], h64[64], c64[560];
    int cl = snprintf(claims, sizeof(claims),
                      "{\"iss\":\"cmg-mpsim\",\"mp\":\"%s\",\"site\":\"%s\",\"n\":%llu}",
                      s->opts.mp_name, s->opts.site, (unsigned long long)++s->next_msg_id);
    route_base64url(hdr, sizeof(hdr) - 1, h64);
    route_base64url(claims, (size_t)cl, c64);
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        route_text(c, 503, NULL, "out of memory\n");
        return;
    }
    evbuffer_add_printf(b, "{\"token\":\"%s.%s.\",\"expires_in\":3600}", h64, c64);
    mpsim_reply_buf(c, 200, "application/json", NULL, b);
}

/* ---- /download/<n>[k|m|g] ---- */

/* Parses "<digits>[k|m|g]" (binary multiples). Returns 0, or -1. */
static int route_parse_size(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0, mul = 1;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0)
        return -1;
    if (i + 1 == len) {
        switch (s[i] | 0x20) {
        case 'k':
            mul = 1ull << 10;
            break;
        case 'm':
            mul = 1ull << 20;
            break;
        case 'g':
            mul = 1ull << 30;
            break;
        default:
            return -1;
        }
    } else if (i != len) {
        return -1;
    }
    if (v > MPSIM_MAX_DOWNLOAD / mul)
        return -1;
    *out = v * mul;
    return 0;
}

/* Reads the numbers of "a-b", "a-" or "-n" (whitespace trimmed) from a Range header. Returns 1
 * with [*from, *to] inside size, 0 when unsatisfiable, -1 when there is no single byte range
 * to honour (then the whole body is sent, as RFC 9110 14.2 allows). */
static int route_parse_range(const char *v, size_t len, uint64_t size, uint64_t *from, uint64_t *to)
{
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len < 7 || strncasecmp(v, "bytes=", 6) != 0 || memchr(v, ',', len))
        return -1;
    v += 6;
    len -= 6;
    const char *dash = memchr(v, '-', len);
    if (!dash)
        return -1;
    size_t al = (size_t)(dash - v), bl = len - al - 1;
    uint64_t a = 0, b = 0;
    if (al && !core_parse_u64(v, al, &a))
        return -1;
    if (bl && !core_parse_u64(dash + 1, bl, &b))
        return -1;
    if (!al && !bl)
        return -1;
    if (!al) { /* the last b bytes */
        if (b == 0 || size == 0)
            return 0;
        *from = b >= size ? 0 : size - b;
        *to = size - 1;
        return 1;
    }
    if (bl && b < a)
        return -1;
    if (a >= size)
        return 0;
    *from = a;
    *to = (!bl || b >= size) ? size - 1 : b;
    return 1;
}

static void route_download(struct mpsim_conn *c, const struct route_req *r)
{
    if (!route_is_get(c)) {
        route_get_only(c);
        return;
    }
    static const size_t pl = sizeof("/download/") - 1;
    uint64_t size;
    if (route_parse_size(r->path + pl, r->path_len - pl, &size) != 0) {
        route_text(c, 400, NULL,
                   "400 Bad Request: /download/<n> takes a byte count up to 1099511627776 "
                   "(2^40), with an optional k, m or g\n");
        return;
    }
    struct mpsim_gen g = {.kind = MPSIM_GEN_PATTERN, .pos = 0, .end = size};
    size_t rlen;
    const char *range = httpreq_header(&c->req, "Range", &rlen);
    if (range && httpreq_header_count(&c->req, "Range") == 1) {
        uint64_t from = 0, to = 0;
        int rc = route_parse_range(range, rlen, size, &from, &to);
        char extra[96];
        if (rc == 0) {
            snprintf(extra, sizeof(extra), "Content-Range: bytes */%llu\r\n",
                     (unsigned long long)size);
            route_text(c, 416, extra, "416 Range Not Satisfiable\n");
            return;
        }
        if (rc == 1) {
            snprintf(extra, sizeof(extra), "Content-Range: bytes %llu-%llu/%llu\r\n",
                     (unsigned long long)from, (unsigned long long)to, (unsigned long long)size);
            g.pos = from;
            g.end = to + 1;
            mpsim_reply_stream(c, 206, "application/octet-stream", extra, &g);
            return;
        }
    }
    mpsim_reply_stream(c, 200, "application/octet-stream", "Accept-Ranges: bytes\r\n", &g);
}

/* ---- /echo ---- */

static void route_echo(struct mpsim_conn *c)
{
    char hex[65];
    uint64_t blen = c->req.body_bytes;
    struct evbuffer *b = mpsim_body_digest(c, hex) == 0 ? evbuffer_new() : NULL;
    if (!b) {
        route_text(c, 503, NULL, "out of memory\n");
        return;
    }
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *m = c->req.method_name ? c->req.method_name : "";
    evbuffer_add(b, "{\"method\":", 10);
    mpsim_json_str(b, m, strlen(m));
    evbuffer_add(b, ",\"path\":", 8);
    mpsim_json_str(b, url, ulen);
    evbuffer_add_printf(b, ",\"version\":\"HTTP/1.%d\",\"headers\":[",
                        httpreq_version_minor(&c->req));
    for (unsigned i = 0; i < c->req.nheaders; i++) {
        const struct httpreq_header *h = &c->req.headers[i];
        evbuffer_add(b, i ? ",[" : "[", i ? 2 : 1);
        mpsim_json_str(b, c->req.head + h->name_off, h->name_len);
        evbuffer_add(b, ",", 1);
        mpsim_json_str(b, c->req.head + h->value_off, h->value_len);
        evbuffer_add(b, "]", 1);
    }
    evbuffer_add_printf(b, "],\"body_length\":%llu,\"body_sha256\":\"%s\"}",
                        (unsigned long long)blen, hex);
    mpsim_reply_buf(c, 200, "application/json", NULL, b);
}

/* ---- /status/<code> ---- */

static void route_status(struct mpsim_conn *c, const struct route_req *r)
{
    static const size_t pl = sizeof("/status/") - 1;
    uint64_t code = 0;
    if (!core_parse_u64(r->path + pl, r->path_len - pl, &code) || code < 200 || code > 599) {
        route_text(c, 400, NULL, "400 Bad Request: /status/<code> takes a code from 200 to 599\n");
        return;
    }
    char body[64];
    snprintf(body, sizeof(body), "status %d\n", (int)code);
    route_text(c, (int)code, NULL, body);
}

/* ---- /mpsim/stats ---- */

static void route_stats(struct mpsim_conn *c)
{
    const struct mpsim_stats *st = &c->srv->stats;
    if (!route_is_get(c)) {
        route_get_only(c);
        return;
    }
    char body[256];
    int n =
        snprintf(body, sizeof(body),
                 "{\"requests\":%llu,\"held\":%llu,\"connections\":%llu,"
                 "\"connections_total\":%llu}",
                 (unsigned long long)st->requests, (unsigned long long)st->held,
                 (unsigned long long)st->connections, (unsigned long long)st->connections_total);
    mpsim_reply(c, 200, "application/json", NULL, body, (size_t)n);
}

/* Splits the request target into path and query; an absolute-form target loses its scheme
 * and authority. Returns 0, or -1 when the target is not a path. */
static int route_split(const struct mpsim_conn *c, struct route_req *r)
{
    size_t len;
    const char *t = httpreq_url(&c->req, &len);
    if (route_prefix(t, len, "http://") || route_prefix(t, len, "https://")) {
        const char *auth = (const char *)memchr(t, ':', len) + 3;
        size_t left = len - (size_t)(auth - t);
        const char *p = memchr(auth, '/', left);
        if (!p) {
            t = "/";
            len = 1;
        } else {
            len = left - (size_t)(p - auth);
            t = p;
        }
    }
    if (len == 0 || t[0] != '/')
        return -1;
    const char *q = memchr(t, '?', len);
    r->path = t;
    r->path_len = q ? (size_t)(q - t) : len;
    r->query = q ? q + 1 : NULL;
    r->query_len = q ? len - r->path_len - 1 : 0;
    return 0;
}

void mpsim_route(struct mpsim_conn *c)
{
    struct route_req r;
    if (route_split(c, &r) != 0) {
        route_text(c, 400, NULL, "400 Bad Request: the request target must be a path\n");
        return;
    }
    const char *p = r.path;
    size_t n = r.path_len;
    if (route_prefix(p, n, "/bgb/"))
        mpsim_reply_hold(c);
    else if (route_eq(p, n, "/SMS_MP/.sms_aut"))
        route_sms_aut(c, &r);
    else if (route_eq(p, n, "/SMS_MP/.sms_pol"))
        route_sms_pol(c, &r);
    else if (route_eq(p, n, "/ccm_system/request") ||
             route_eq(p, n, "/ccm_system_tokenauth/request"))
        route_ccm(c);
    else if (route_eq(p, n, "/CCM_STS"))
        route_sts(c);
    else if (route_prefix(p, n, "/download/"))
        route_download(c, &r);
    else if (route_prefix(p, n, "/echo"))
        route_echo(c);
    else if (route_prefix(p, n, "/status/"))
        route_status(c, &r);
    else if (route_eq(p, n, "/mpsim/stats"))
        route_stats(c);
    else
        route_not_found(c);
}
