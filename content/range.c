/* Single-range requests, as clients and BITS use them to resume downloads. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <strings.h>

#include "content.h"

/* Reads digits at *p (at most 19, so no overflow); false if there are none. */
static bool content_digits(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    int n = 0;
    while (s < end && isdigit((unsigned char)*s)) {
        if (++n > 19)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        s++;
    }
    if (n == 0)
        return false;
    *p = s;
    *out = v;
    return true;
}

static void content_skip_ows(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t'))
        (*p)++;
}

enum content_range_result content_range_eval(const char *value, size_t len, uint64_t size,
                                             struct content_range *out)
{
    const char *p = value, *end = value + len;
    content_skip_ows(&p, end);
    if ((size_t)(end - p) < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return CONTENT_RANGE_NONE;
    p += 6;
    uint64_t first = 0, last = 0;
    bool has_first = content_digits(&p, end, &first);
    if (p >= end || *p != '-')
        return CONTENT_RANGE_NONE;
    p++;
    bool has_last = content_digits(&p, end, &last);
    content_skip_ows(&p, end);
    if (p != end) /* a second range, or junk: serve the whole */
        return CONTENT_RANGE_NONE;
    if (!has_first && !has_last)
        return CONTENT_RANGE_NONE;
    if (!has_first) { /* suffix: the last `last` bytes */
        if (last == 0 || size == 0)
            return CONTENT_RANGE_UNSATISFIABLE;
        out->first = last >= size ? 0 : size - last;
        out->last = size - 1;
        return CONTENT_RANGE_PARTIAL;
    }
    if (has_last && last < first)
        return CONTENT_RANGE_NONE; /* invalid range-spec: ignored */
    if (first >= size)
        return CONTENT_RANGE_UNSATISFIABLE;
    out->first = first;
    out->last = has_last && last < size ? last : size - 1;
    return CONTENT_RANGE_PARTIAL;
}

int content_range_format(enum content_range_result r, const struct content_range *range,
                         uint64_t size, char *buf, size_t len)
{
    int n;
    if (r == CONTENT_RANGE_PARTIAL)
        n = snprintf(buf, len, "bytes %llu-%llu/%llu", (unsigned long long)range->first,
                     (unsigned long long)range->last, (unsigned long long)size);
    else if (r == CONTENT_RANGE_UNSATISFIABLE)
        n = snprintf(buf, len, "bytes */%llu", (unsigned long long)size);
    else
        return -1;
    return n < 0 || (size_t)n >= len ? -1 : n;
}
