/* The allocator: jemalloc in the server build, tuned so that memory freed by connections that
 * closed (or by handshakes that finished) goes back to the system even while the gateway is
 * idle, and its figures exported as metrics. */
#include <stddef.h>
#include <stdint.h>

#include "gw.h"

#ifdef CMG_WITH_JEMALLOC
#include <jemalloc/jemalloc.h>

/* background_thread: purging does not wait for the next allocation; short decays: a burst of
 * handshakes does not leave its temporary buffers counted against the idle connections. */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

static uint64_t gw_mallctl_u64(const char *name)
{
    size_t v = 0, len = sizeof(v);
    if (mallctl(name, &v, &len, NULL, 0) != 0)
        return 0;
    return (uint64_t)v;
}

bool gw_memory_stats(struct gw_memory_stats *out)
{
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    mallctl("epoch", &epoch, &len, &epoch, len); /* refresh the cached statistics */
    out->allocated = gw_mallctl_u64("stats.allocated");
    out->active = gw_mallctl_u64("stats.active");
    out->resident = gw_mallctl_u64("stats.resident");
    out->retained = gw_mallctl_u64("stats.retained");
    return true;
}
#else
bool gw_memory_stats(struct gw_memory_stats *out)
{
    (void)out;
    return false;
}
#endif
