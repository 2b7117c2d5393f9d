/* The request reader on arbitrary bytes, fed whole and split, pipelining through. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "httpreq.h"

static void on_body(void *ctx, const char *data, size_t len)
{
    size_t *total = ctx;
    *total += len;
    if (len)
        (void)((volatile const char *)data)[len - 1];
}

static void run(const uint8_t *data, size_t size, size_t step)
{
    static const struct httpreq_limits limits = {
        .max_header_bytes = 2048, .max_headers = 20, .max_body_bytes = 4096};
    size_t total = 0;
    struct httpreq r;
    httpreq_init(&r, &limits, on_body, &total);
    size_t off = 0;
    for (int guard = 0; off < size && guard < 100000; guard++) {
        size_t n = size - off < step ? size - off : step, used;
        enum httpreq_event ev = httpreq_feed(&r, (const char *)data + off, n, &used);
        off += used;
        if (ev == HTTPREQ_ERROR)
            break;
        if (ev == HTTPREQ_DONE) {
            size_t ulen, vlen;
            const char *url = httpreq_url(&r, &ulen);
            if (ulen)
                (void)((volatile const char *)url)[ulen - 1];
            const char *host = httpreq_header(&r, "Host", &vlen);
            if (host && vlen)
                (void)((volatile const char *)host)[vlen - 1];
            httpreq_next(&r);
        } else if (ev == HTTPREQ_NEED_MORE && used == 0 && n > 0) {
            break;
        }
    }
    httpreq_deinit(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size, size ? size : 1);
    run(data, size, 7);
    run(data, size, 1);
    return 0;
}
