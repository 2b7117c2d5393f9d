/* Answers: response heads, queued, streamed and held bodies, the request log, generated bodies
 * and the body digest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mpsim.h"

#define REPLY_HEAD_MAX 2048

static const struct {
    int status;
    const char *reason;
} reply_reasons[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {413, "Content Too Large"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *mpsim_status_reason(int status)
{
    for (size_t i = 0; i < sizeof(reply_reasons) / sizeof(reply_reasons[0]); i++)
        if (reply_reasons[i].status == status)
            return reply_reasons[i].reason;
    return "Status";
}

/* ---- the log ---- */

static void reply_log(struct mpsim_conn *c, const char *method, const char *path, size_t plen,
                      int status, uint64_t bytes, const char *note)
{
    if (c->srv->opts.quiet)
        return;
    if (plen > MPSIM_MAX_LOG_PATH)
        plen = MPSIM_MAX_LOG_PATH;
    LOG_INFO("c%llu %s %.*s %d %llu%s%s", (unsigned long long)c->id, method ? method : "-",
             (int)plen, path, status, (unsigned long long)bytes, note ? " " : "", note ? note : "");
}

/* The path of the current request without its query. */
static const char *reply_path(const struct mpsim_conn *c, size_t *len)
{
    size_t ulen;
    const char *url = httpreq_url(&c->req, &ulen);
    const char *q = memchr(url, '?', ulen);
    *len = q ? (size_t)(q - url) : ulen;
    return url;
}

/* Keeps what the log line of an answer that ends later needs. */
static void reply_log_later(struct mpsim_conn *c, int status)
{
    c->log_method = c->req.method_name;
    c->log_status = status;
    c->log_bytes = 0;
    free(c->log_path);
    c->log_path = NULL;
    if (!c->srv->opts.quiet) {
        size_t plen;
        const char *p = reply_path(c, &plen);
        if (plen > MPSIM_MAX_LOG_PATH)
            plen = MPSIM_MAX_LOG_PATH;
        c->log_path = strndup(p, plen);
    }
}

void mpsim_log_end(struct mpsim_conn *c, const char *note)
{
    const char *p = c->log_path ? c->log_path : "";
    reply_log(c, c->log_method, p, strlen(p), c->log_status, c->log_bytes, note);
    free(c->log_path);
    c->log_path = NULL;
}

/* ---- heads ---- */

static bool reply_has_body(int status)
{
    return status != 204 && status != 304;
}

/* Writes the head into buf (REPLY_HEAD_MAX bytes) and returns its length. */
static size_t reply_head(struct mpsim_conn *c, char *buf, int status, const char *ctype,
                         const char *extra, uint64_t length, bool with_identity)
{
    size_t idlen = 0;
    const char *id = with_identity ? httpreq_header(&c->req, "X-CMG-Auth-Method", &idlen) : NULL;
    if (!id) {
        id = "none";
        idlen = 4;
    }
    if (idlen > MPSIM_MAX_IDENTITY)
        idlen = MPSIM_MAX_IDENTITY;
    char clen[48] = "";
    if (reply_has_body(status))
        snprintf(clen, sizeof(clen), "Content-Length: %llu\r\n", (unsigned long long)length);
    const char *conn = "";
    if (c->close_after)
        conn = "Connection: close\r\n";
    else if (httpreq_version_minor(&c->req) == 0)
        conn = "Connection: keep-alive\r\n";
    int n = snprintf(buf, REPLY_HEAD_MAX,
                     "HTTP/1.1 %d %s\r\nServer: cmg-mpsim/%s\r\n%s%s%s%sX-MPSIM-Identity: %.*s\r\n"
                     "%s%s\r\n",
                     status, mpsim_status_reason(status), CMG_VERSION,
                     ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "", clen,
                     (int)idlen, id, extra ? extra : "", conn);
    if (n < 0 || n >= REPLY_HEAD_MAX) /* only an oversized `extra` could do this: drop it */
        n = snprintf(buf, REPLY_HEAD_MAX, "HTTP/1.1 %d %s\r\n%s%s\r\n", status,
                     mpsim_status_reason(status), clen, conn);
    return (size_t)n;
}

static int reply_out(struct mpsim_conn *c)
{
    if (!c->out)
        c->out = evbuffer_new();
    return c->out ? 0 : -1;
}

/* The request is answered: the reader moves on to the next one. */
static void reply_finish(struct mpsim_conn *c)
{
    EVP_MD_CTX_free(c->body_md);
    c->body_md = NULL;
    c->body_md_failed = false;
    httpreq_next(&c->req);
}

static void reply_start(struct mpsim_conn *c)
{
    c->close_after = c->close_after || !c->req.keep_alive || c->req.upgrade;
}

void mpsim_reply_buf(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                     struct evbuffer *body)
{
    reply_start(c);
    size_t len = body ? evbuffer_get_length(body) : 0;
    bool send_body = reply_has_body(status) && c->req.method != HTTPREQ_M_HEAD;
    char head[REPLY_HEAD_MAX];
    size_t hlen = reply_head(c, head, status, ctype, extra, len, true);
    if (reply_out(c) != 0 || evbuffer_add(c->out, head, hlen) != 0 ||
        (send_body && body && evbuffer_add_buffer(c->out, body) != 0)) {
        LOG_ERROR("c%llu: out of memory queueing an answer", (unsigned long long)c->id);
        c->close_after = true;
    }
    if (body)
        evbuffer_free(body);
    size_t plen;
    const char *path = reply_path(c, &plen);
    reply_log(c, c->req.method_name, path, plen, status, send_body ? len : 0, NULL);
    reply_finish(c);
    if (c->close_after)
        c->state = MPSIM_CS_FLUSH_CLOSE;
}

void mpsim_reply(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                 const void *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    if (b && len)
        evbuffer_add(b, body, len);
    mpsim_reply_buf(c, status, ctype, extra, b);
}

void mpsim_reply_stream(struct mpsim_conn *c, int status, const char *ctype, const char *extra,
                        struct mpsim_gen *gen)
{
    reply_start(c);
    char head[REPLY_HEAD_MAX];
    size_t hlen = reply_head(c, head, status, ctype, extra, gen->end - gen->pos, true);
    if (reply_out(c) != 0 || evbuffer_add(c->out, head, hlen) != 0) {
        LOG_ERROR("c%llu: out of memory queueing an answer", (unsigned long long)c->id);
        c->close_after = true;
        mpsim_gen_deinit(gen);
    }
    if (c->req.method == HTTPREQ_M_HEAD || gen->pos == gen->end || gen->kind == MPSIM_GEN_NONE) {
        size_t plen;
        const char *path = reply_path(c, &plen);
        reply_log(c, c->req.method_name, path, plen, status, 0, NULL);
        mpsim_gen_deinit(gen);
        reply_finish(c);
        if (c->close_after)
            c->state = MPSIM_CS_FLUSH_CLOSE;
        return;
    }
    c->gen = *gen;
    memset(gen, 0, sizeof(*gen));
    reply_log_later(c, status);
    reply_finish(c);
    c->state = MPSIM_CS_STREAMING;
}

void mpsim_reply_hold(struct mpsim_conn *c)
{
    static const char body[] = "notify";
    reply_start(c);
    bool send_body = c->req.method != HTTPREQ_M_HEAD;
    char head[REPLY_HEAD_MAX];
    size_t hlen = reply_head(c, head, 200, "text/plain", NULL, sizeof(body) - 1, true);
    size_t len = hlen + (send_body ? sizeof(body) - 1 : 0);
    c->deferred = malloc(len);
    if (!c->deferred) {
        mpsim_reply(c, 503, "text/plain", NULL, "out of memory\n", 14);
        return;
    }
    memcpy(c->deferred, head, hlen);
    if (send_body)
        memcpy(c->deferred + hlen, body, sizeof(body) - 1);
    c->deferred_len = len;
    reply_log_later(c, 200);
    c->log_bytes = send_body ? sizeof(body) - 1 : 0;
    reply_finish(c);
    mpsim_hold_start(c);
}

void mpsim_reply_error(struct mpsim_conn *c, int status, const char *why)
{
    if (status < 400 || status > 599)
        status = 400;
    if (!why)
        why = "bad request";
    c->close_after = true;
    char body[256];
    int blen =
        snprintf(body, sizeof(body), "%d %s: %s\n", status, mpsim_status_reason(status), why);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)strlen(body);
    /* The head may be half-read: none of its fields is trusted, not even for the identity. */
    char head[REPLY_HEAD_MAX];
    size_t hlen = reply_head(c, head, status, "text/plain", NULL, (uint64_t)blen, false);
    if (reply_out(c) == 0) {
        evbuffer_add(c->out, head, hlen);
        evbuffer_add(c->out, body, (size_t)blen);
    }
    if (!c->srv->opts.quiet)
        LOG_INFO("c%llu bad request: %d %s", (unsigned long long)c->id, status, why);
    EVP_MD_CTX_free(c->body_md);
    c->body_md = NULL;
    c->state = MPSIM_CS_FLUSH_CLOSE;
}

/* ---- the body digest ---- */

static void reply_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

int mpsim_body_digest(struct mpsim_conn *c, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (c->body_md_failed)
        return -1;
    if (!c->body_md) {
        /* No body: the digest of nothing. */
        strcpy(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        return 0;
    }
    int ok = EVP_DigestFinal_ex(c->body_md, d, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c->body_md);
    c->body_md = NULL;
    if (!ok) {
        c->body_md_failed = true;
        return -1;
    }
    reply_hex(d, 32, hex);
    return 0;
}

/* ---- generated bodies ---- */

/* The download pattern repeats every 256 bytes, so one chunk plus a period serves any offset
 * without copying: offset i starts at pattern[i % 256]. */
static unsigned char gen_pattern[MPSIM_READ_CHUNK + 256];
static bool gen_pattern_ready;

static void gen_pattern_init(void)
{
    for (size_t i = 0; i < sizeof(gen_pattern); i++)
        gen_pattern[i] = (unsigned char)((i * 131 + 7) & 0xff);
    gen_pattern_ready = true;
}

int mpsim_gen_policy_init(struct mpsim_gen *g, const char *id, size_t len, uint64_t size)
{
    memset(g, 0, sizeof(*g));
    g->kind = MPSIM_GEN_POLICY;
    g->end = size;
    g->policy_md = EVP_MD_CTX_new();
    if (!g->policy_md || EVP_DigestInit_ex(g->policy_md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(g->policy_md, id, len) != 1 ||
        EVP_DigestUpdate(g->policy_md, ":", 1) != 1) {
        mpsim_gen_deinit(g);
        return -1;
    }
    return 0;
}

void mpsim_gen_deinit(struct mpsim_gen *g)
{
    EVP_MD_CTX_free(g->policy_md);
    memset(g, 0, sizeof(*g));
}

/* Block k of a policy body into out (32 bytes). */
static int gen_policy_block(struct mpsim_gen *g, EVP_MD_CTX *tmp, uint64_t k, unsigned char *out)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)k);
    unsigned int dl = 0;
    if (EVP_MD_CTX_copy_ex(tmp, g->policy_md) != 1 || EVP_DigestUpdate(tmp, num, (size_t)n) != 1 ||
        EVP_DigestFinal_ex(tmp, out, &dl) != 1 || dl != 32)
        return -1;
    return 0;
}

size_t mpsim_gen_fill(struct mpsim_gen *g, struct mpsim_server *s, char *buf, size_t cap,
                      const char **out)
{
    uint64_t left = g->end - g->pos;
    size_t n = left < cap ? (size_t)left : cap;
    if (n > MPSIM_READ_CHUNK)
        n = MPSIM_READ_CHUNK;
    switch (g->kind) {
    case MPSIM_GEN_PATTERN:
        if (!gen_pattern_ready)
            gen_pattern_init();
        *out = (const char *)gen_pattern + (g->pos & 255);
        return n;
    case MPSIM_GEN_POLICY: {
        size_t done = 0;
        while (done < n) {
            uint64_t at = g->pos + done;
            unsigned char block[32];
            if (gen_policy_block(g, s->scratch_md, at / 32, block) != 0)
                return 0;
            size_t off = (size_t)(at % 32), take = 32 - off;
            if (take > n - done)
                take = n - done;
            memcpy(buf + done, block + off, take);
            done += take;
        }
        *out = buf;
        return n;
    }
    default:
        return 0;
    }
}

/* ---- JSON ---- */

void mpsim_json_str(struct evbuffer *b, const char *s, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[256];
    size_t t = 0;
    tmp[t++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (t > sizeof(tmp) - 8) {
            evbuffer_add(b, tmp, t);
            t = 0;
        }
        if (ch == '"' || ch == '\\') {
            tmp[t++] = '\\';
            tmp[t++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            tmp[t++] = '\\';
            tmp[t++] = 'u';
            tmp[t++] = '0';
            tmp[t++] = '0';
            tmp[t++] = digits[ch >> 4];
            tmp[t++] = digits[ch & 15];
        } else {
            tmp[t++] = (char)ch;
        }
    }
    tmp[t++] = '"';
    evbuffer_add(b, tmp, t);
}
