/* cmg-bench: log-linear latency histograms (see bench.h). */
#include <string.h>

#include "bench.h"

static unsigned hist_index(uint64_t us)
{
    if (us < 64)
        return (unsigned)us;
    if (us >= (1ull << 41))
        us = (1ull << 41) - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* 6..40 */
    unsigned shift = e - 5;
    unsigned mant = (unsigned)(us >> shift); /* 32..63 */
    return 64 + (e - 6) * 32 + (mant - 32);
}

static uint64_t hist_upper(unsigned idx)
{
    if (idx < 64)
        return idx;
    unsigned e = 6 + (idx - 64) / 32, mant = 32 + (idx - 64) % 32, shift = e - 5;
    return (((uint64_t)mant + 1) << shift) - 1;
}

void bench_hist_add(struct bench_hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->count++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
}

uint64_t bench_hist_pct(const struct bench_hist *h, double pct)
{
    if (!h->count)
        return 0;
    /* the rank of the sample asked for, 1-based, rounded up; the tolerance keeps 99.9 % of
     * 1000 at rank 999 although 0.999 * 1000 is 999.0000000000001 in binary */
    double want = pct / 100.0 * (double)h->count - 1e-9;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t up = hist_upper(i);
            return up < h->max_us ? up : h->max_us;
        }
    }
    return h->max_us;
}

void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from)
{
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum_us += from->sum_us;
    if (from->max_us > into->max_us)
        into->max_us = from->max_us;
}

static json_t *ms(uint64_t us)
{
    return json_real((double)us / 1000.0);
}

json_t *bench_hist_json(const struct bench_hist *h)
{
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)h->count));
    json_object_set_new(o, "mean_ms",
                        json_real(h->count ? (double)h->sum_us / (double)h->count / 1000.0 : 0));
    json_object_set_new(o, "p50_ms", ms(bench_hist_pct(h, 50)));
    json_object_set_new(o, "p90_ms", ms(bench_hist_pct(h, 90)));
    json_object_set_new(o, "p99_ms", ms(bench_hist_pct(h, 99)));
    json_object_set_new(o, "p99_9_ms", ms(bench_hist_pct(h, 99.9)));
    json_object_set_new(o, "max_ms", ms(h->max_us));
    /* the non-empty buckets, so that several generators' histograms can be merged */
    json_t *bk = json_array();
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        json_t *pair = json_array();
        json_array_append_new(pair, json_integer((json_int_t)hist_upper(i)));
        json_array_append_new(pair, json_integer((json_int_t)h->b[i]));
        json_array_append_new(bk, pair);
    }
    json_object_set_new(o, "buckets_upper_us", bk);
    return o;
}
