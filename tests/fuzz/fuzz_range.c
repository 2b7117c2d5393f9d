/* Range evaluation on arbitrary header values and sizes: a partial range stays inside. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t total;
    memcpy(&total, data, 8);
    total %= 1ull << 40;
    struct content_range r;
    if (content_range_eval((const char *)data + 8, size - 8, total, &r) == CONTENT_RANGE_PARTIAL &&
        (r.first > r.last || r.last >= total))
        abort();
    return 0;
}
