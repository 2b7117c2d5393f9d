/* The request reader: verbs llhttp lacks, limits, smuggling shapes, pipelining, bodies. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "httpreq.h"

static struct httpreq_limits limits = {
    .max_header_bytes = 1024, .max_headers = 10, .max_body_bytes = 100};
static char body[4096];
static size_t body_len;

static void on_body(void *ctx, const char *data, size_t len)
{
    (void)ctx;
    memcpy(body + body_len, data, len);
    body_len += len;
}

/* Feeds `in` in pieces of `step` bytes; returns the final event. */
static enum httpreq_event feed_all(struct httpreq *r, const char *in, size_t len, size_t step,
                                   size_t *consumed)
{
    size_t off = 0;
    enum httpreq_event ev = HTTPREQ_NEED_MORE;
    while (off < len) {
        size_t n = len - off < step ? len - off : step, used;
        ev = httpreq_feed(r, in + off, n, &used);
        off += used;
        if (ev == HTTPREQ_HEAD)
            continue;
        if (ev != HTTPREQ_NEED_MORE)
            break;
    }
    *consumed = off;
    return ev;
}

static void setup(void)
{
    body_len = 0;
    memset(body, 0, sizeof(body));
}

TestSuite(httpreq, .init = setup);

struct verb_case {
    const char *req;
    enum httpreq_method method;
    const char *name;
};

Test(httpreq, verbs_are_kept_exactly)
{
    struct verb_case cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTPREQ_M_GET, "GET"},
        {"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", HTTPREQ_M_HEAD, "HEAD"},
        {"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", HTTPREQ_M_PROPFIND, "PROPFIND"},
        {"CCM_POST /ccm_system/request HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
         HTTPREQ_M_CCM_POST, "CCM_POST"},
        {"BITS_POST /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTPREQ_M_BITS_POST, "BITS_POST"},
        {"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", HTTPREQ_M_PUT, "PUT"},
    };
    for (size_t step = 1; step <= 64; step *= 4) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct httpreq r;
            httpreq_init(&r, &limits, on_body, NULL);
            size_t used;
            enum httpreq_event ev = feed_all(&r, cases[i].req, strlen(cases[i].req), step, &used);
            cr_assert_eq(ev, HTTPREQ_DONE, "case %zu step %zu: event %d", i, step, ev);
            cr_assert_eq(r.method, cases[i].method);
            cr_assert_str_eq(r.method_name, cases[i].name);
            httpreq_deinit(&r);
        }
    }
}

Test(httpreq, ccm_post_chunked_body_streams)
{
    const char *req = "CCM_POST /ccm_system/request HTTP/1.1\r\nHost: cmg\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for (size_t step = 1; step <= 128; step *= 2) {
        setup();
        struct httpreq r;
        httpreq_init(&r, &limits, on_body, NULL);
        size_t used;
        enum httpreq_event ev = feed_all(&r, req, strlen(req), step, &used);
        cr_assert_eq(ev, HTTPREQ_DONE, "step %zu", step);
        cr_assert_eq(used, strlen(req));
        cr_assert(r.chunked);
        cr_assert_str_eq(r.method_name, "CCM_POST");
        cr_assert_eq(body_len, 11);
        cr_assert_str_eq(body, "hello world");
        size_t ulen;
        const char *url = httpreq_url(&r, &ulen);
        cr_assert_eq(ulen, strlen("/ccm_system/request"));
        cr_assert(memcmp(url, "/ccm_system/request", ulen) == 0);
        httpreq_deinit(&r);
    }
}

Test(httpreq, head_event_before_body_then_done)
{
    const char *req = "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      "Content-Length: 4\r\n\r\nabcd";
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    enum httpreq_event ev = httpreq_feed(&r, req, strlen(req), &used);
    cr_assert_eq(ev, HTTPREQ_HEAD);
    cr_assert(r.expect_continue);
    cr_assert_eq(r.content_length, 4);
    cr_assert_eq(body_len, 0);
    ev = httpreq_feed(&r, req + used, strlen(req) - used, &used);
    cr_assert_eq(ev, HTTPREQ_DONE);
    cr_assert_eq(body_len, 4);
    httpreq_deinit(&r);
}

Test(httpreq, pipelined_requests_one_at_a_time)
{
    const char *req = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "CCM_POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
                      "GET /3 HTTP/1.1\r\nHost: a\r\nHeader: v\r\n\r\n";
    const char *urls[] = {"/1", "/2", "/3"};
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t off = 0, len = strlen(req);
    for (int i = 0; i < 3; i++) {
        size_t used;
        enum httpreq_event ev = httpreq_feed(&r, req + off, len - off, &used);
        off += used;
        if (ev == HTTPREQ_HEAD) {
            ev = httpreq_feed(&r, req + off, len - off, &used);
            off += used;
        }
        cr_assert_eq(ev, HTTPREQ_DONE, "request %d", i);
        size_t ulen;
        const char *url = httpreq_url(&r, &ulen);
        cr_assert(ulen == 2 && memcmp(url, urls[i], 2) == 0, "request %d url %.*s", i, (int)ulen,
                  url);
        httpreq_next(&r);
    }
    cr_assert_eq(off, len);
    cr_assert_eq(body_len, 3);
    httpreq_deinit(&r);
}

struct bad_case {
    const char *name;
    const char *req;
    int status;
};

Test(httpreq, malformed_and_smuggling_shapes_are_refused)
{
    struct bad_case cases[] = {
        {"CL and TE",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"two CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
         400},
        {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n", 400},
        {"bare CR", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400},
        {"bad chunk size",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "zz\r\n",
         400},
        {"TE not chunked last",
         "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: chunked, gzip\r\n\r\n",
         400},
        {"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"unknown verb", "FOO_BAR / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},
        {"space in header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400},
        {"body too large", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413},
        {"chunked too large",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "65\r\n",
         413},
        {"bad Expect", "GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417},
        {"CR then junk ends the head",
         "GET / HTTP/1.1\r\nHost: a\r\n\rXGET /two HTTP/1.1\r\n"
         "Host: a\r\n\r\n",
         400},
        {"CR in empty value", "GET / HTTP/1.1\r\nX:\rHost: b\r\n\r\n", 400},
        {"junk after chunk data",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "\r\n5\r\nhelloXY0\r\n\r\n",
         400},
        {"tab in URL", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"trailer fields",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\nHost: evil\r\n\r\n",
         400},
        {"HTTP/1.0 with TE",
         "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
         "Connection: keep-alive\r\n\r\n0\r\n\r\n",
         400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct httpreq r;
        httpreq_init(&r, &limits, on_body, NULL);
        size_t used;
        enum httpreq_event ev = feed_all(&r, cases[i].req, strlen(cases[i].req), 7, &used);
        if (ev != HTTPREQ_ERROR && strstr(cases[i].name, "chunked too large")) {
            /* 0x65 = 101 bytes announced: the limit trips as the data arrives */
            char data[120];
            memset(data, 'a', sizeof(data));
            ev = httpreq_feed(&r, data, sizeof(data), &used);
        }
        cr_assert_eq(ev, HTTPREQ_ERROR, "%s: event %d", cases[i].name, ev);
        cr_assert_eq(r.error_status, cases[i].status, "%s: status %d", cases[i].name,
                     r.error_status);
        httpreq_deinit(&r);
    }
}

Test(httpreq, header_bytes_limit_gives_431)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(req + n, 'x', 1100);
    strcpy(req + n + 1100, "\r\n\r\n");
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    enum httpreq_event ev = feed_all(&r, req, strlen(req), 100, &used);
    cr_assert_eq(ev, HTTPREQ_ERROR);
    cr_assert_eq(r.error_status, 431);
    httpreq_deinit(&r);
}

Test(httpreq, long_request_line_gives_431)
{
    char req[4096] = "GET /";
    memset(req + 5, 'a', 1200);
    strcpy(req + 1205, " HTTP/1.1\r\nHost: a\r\n\r\n");
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    enum httpreq_event ev = feed_all(&r, req, strlen(req), 4096, &used);
    cr_assert_eq(ev, HTTPREQ_ERROR);
    cr_assert_eq(r.error_status, 431);
    httpreq_deinit(&r);
}

Test(httpreq, header_count_limit_gives_431)
{
    char req[2048] = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 12; i++)
        sprintf(req + strlen(req), "X-%d: v\r\n", i);
    strcat(req, "\r\n");
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    enum httpreq_event ev = feed_all(&r, req, strlen(req), 4096, &used);
    cr_assert_eq(ev, HTTPREQ_ERROR);
    cr_assert_eq(r.error_status, 431);
    httpreq_deinit(&r);
}

Test(httpreq, headers_survive_split_reads)
{
    const char *req = "GET /p?q=1 HTTP/1.1\r\nHost: cmg.example\r\nCCMClientID: GUID:1234\r\n"
                      "Range: bytes=0-9\r\nEmpty:\r\n\r\n";
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    enum httpreq_event ev = feed_all(&r, req, strlen(req), 3, &used);
    cr_assert_eq(ev, HTTPREQ_DONE);
    size_t l;
    const char *v = httpreq_header(&r, "ccmclientid", &l);
    cr_assert(v && l == 9 && memcmp(v, "GUID:1234", 9) == 0);
    v = httpreq_header(&r, "Range", &l);
    cr_assert(v && l == 9 && memcmp(v, "bytes=0-9", 9) == 0);
    v = httpreq_header(&r, "Empty", &l);
    cr_assert(v && l == 0);
    cr_assert_null(httpreq_header(&r, "Missing", &l));
    cr_assert(r.keep_alive);
    httpreq_deinit(&r);
}

Test(httpreq, http10_without_keepalive_closes)
{
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    cr_assert_eq(httpreq_feed(&r, req, strlen(req), &used), HTTPREQ_DONE);
    cr_assert_not(r.keep_alive);
    httpreq_deinit(&r);
}

Test(httpreq, obs_fold_split_across_reads_is_refused)
{
    /* the fold's CRLF ends one read, its leading space starts the next */
    const char *parts[] = {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n", " b\r\n\r\n"};
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    cr_assert_eq(httpreq_feed(&r, parts[0], strlen(parts[0]), &used), HTTPREQ_NEED_MORE);
    cr_assert_eq(httpreq_feed(&r, parts[1], strlen(parts[1]), &used), HTTPREQ_ERROR);
    cr_assert_eq(r.error_status, 400);
    httpreq_deinit(&r);

    /* a value split in the middle is not a fold */
    const char *split[] = {"GET / HTTP/1.1\r\nHost: a\r\nX: a", " b\r\n\r\n"};
    httpreq_init(&r, &limits, on_body, NULL);
    cr_assert_eq(httpreq_feed(&r, split[0], strlen(split[0]), &used), HTTPREQ_NEED_MORE);
    cr_assert_eq(httpreq_feed(&r, split[1], strlen(split[1]), &used), HTTPREQ_DONE);
    size_t l;
    const char *v = httpreq_header(&r, "X", &l);
    cr_assert(v && l == 3 && memcmp(v, "a b", 3) == 0);
    httpreq_deinit(&r);
}

static bool drop_x_cmg(const char *name, size_t len)
{
    return len >= 6 && strncasecmp(name, "X-CMG-", 6) == 0;
}

Test(httpreq, identity_headers_removed)
{
    const char *req = "GET /p HTTP/1.1\r\nHost: h\r\nx-cmg-auth-method: client-certificate\r\n"
                      "CCMClientID: GUID:1\r\nX-CMG-Tenant-Id: evil\r\nX-CMGx: kept\r\n\r\n";
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, NULL);
    size_t used;
    cr_assert_eq(httpreq_feed(&r, req, strlen(req), &used), HTTPREQ_DONE);
    cr_assert_eq(httpreq_remove_headers(&r, drop_x_cmg), 2);
    size_t l;
    cr_assert_null(httpreq_header(&r, "X-CMG-Auth-Method", &l));
    cr_assert_null(httpreq_header(&r, "X-CMG-Tenant-Id", &l));
    const char *v = httpreq_header(&r, "CCMClientID", &l);
    cr_assert(v && l == 6 && memcmp(v, "GUID:1", 6) == 0);
    v = httpreq_header(&r, "X-CMGx", &l);
    cr_assert(v && l == 4 && memcmp(v, "kept", 4) == 0);
    cr_assert(httpreq_header(&r, "Host", &l) != NULL);
    cr_assert_eq(httpreq_remove_headers(&r, drop_x_cmg), 0);
    httpreq_deinit(&r);
}

Test(httpreq, garbage_line_refused_at_once)
{
    static const char *const inputs[] = {"garbage\r\n\r\n", "\x16\x03\x01\x02\x00\x01", "GE\tT /"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct httpreq r;
        httpreq_init(&r, &limits, on_body, NULL);
        size_t used;
        enum httpreq_event ev = feed_all(&r, inputs[i], strlen(inputs[i]), 4096, &used);
        cr_expect_eq(ev, HTTPREQ_ERROR, "input %zu", i);
        cr_expect(r.error_status == 400 || r.error_status == 501, "input %zu: %d", i,
                  r.error_status);
        httpreq_deinit(&r);
    }
}
