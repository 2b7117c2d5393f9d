/* Types of the content module shared with other modules. */
#ifndef CMG_CONTENT_T_H
#define CMG_CONTENT_T_H

#include <stdint.h>

/* What a Range header asks of a representation of known size. */
enum content_range_result {
    CONTENT_RANGE_NONE = 0,      /* no usable single range: send the whole (200) */
    CONTENT_RANGE_PARTIAL,       /* send bytes first..last (206) */
    CONTENT_RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * / size */
};

struct content_range {
    uint64_t first, last; /* inclusive, valid for CONTENT_RANGE_PARTIAL */
};

#endif
