/* content: the gateway as cloud distribution point (stores, cache, content location service,
 * BranchCache). Sans-I/O pieces first: Range handling. */
#ifndef CMG_CONTENT_H
#define CMG_CONTENT_H

#include <stddef.h>

#include "content-t.h"

/* Evaluates a Range header value against a representation of `size` bytes (RFC 9110 14.2).
 * One range is served; a syntactically invalid value, another unit, or several ranges are
 * ignored (the whole is sent), as the RFC allows. */
enum content_range_result content_range_eval(const char *value, size_t len, uint64_t size,
                                             struct content_range *out);
/* Formats the Content-Range header value for a result ("bytes 0-9/100" or "bytes * /100"
 * without the space). Returns the length or -1. */
int content_range_format(enum content_range_result r, const struct content_range *range,
                         uint64_t size, char *buf, size_t len);

#endif
