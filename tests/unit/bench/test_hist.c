/* cmg-bench's latency histogram (bench/bench-hist.c): exact below 64 µs, log-linear above,
 * percentiles that never understate and never pass the largest sample, merging, JSON. */
#include <criterion/criterion.h>
#include <string.h>

#include "bench.h"

static struct bench_hist h, h2;

static void reset(void)
{
    memset(&h, 0, sizeof(h));
    memset(&h2, 0, sizeof(h2));
}

TestSuite(bench_hist, .init = reset);

Test(bench_hist, empty_is_zero)
{
    cr_expect_eq(bench_hist_pct(&h, 50), 0);
    cr_expect_eq(bench_hist_pct(&h, 99.9), 0);
}

Test(bench_hist, small_values_are_exact)
{
    for (uint64_t v = 1; v <= 50; v++)
        bench_hist_add(&h, v);
    cr_expect_eq(bench_hist_pct(&h, 50), 25);
    cr_expect_eq(bench_hist_pct(&h, 100), 50);
    cr_expect_eq(bench_hist_pct(&h, 2), 1);
    cr_expect_eq(h.count, 50);
    cr_expect_eq(h.sum_us, 50 * 51 / 2);
}

Test(bench_hist, percentiles_bound_the_sample_from_above_within_a_bucket)
{
    /* 1 ms .. 10 s in 1 ms steps: the p-th percentile sample is p * 100 ms */
    for (uint64_t ms = 1; ms <= 10000; ms++)
        bench_hist_add(&h, ms * 1000);
    double pcts[] = {50, 90, 99, 99.9};
    for (unsigned i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
        uint64_t want = (uint64_t)(pcts[i] * 100.0 + 0.5) * 1000;
        uint64_t got = bench_hist_pct(&h, pcts[i]);
        cr_expect_geq(got, want, "p%g: %llu < %llu", pcts[i], (unsigned long long)got,
                      (unsigned long long)want);
        cr_expect_leq((double)got, (double)want * (1.0 + 1.0 / 32.0) + 1,
                      "p%g: %llu is more than a bucket above %llu", pcts[i],
                      (unsigned long long)got, (unsigned long long)want);
    }
}

Test(bench_hist, never_above_the_largest_sample)
{
    bench_hist_add(&h, 1000001);
    cr_expect_eq(bench_hist_pct(&h, 99.9), 1000001);
    cr_expect_eq(h.max_us, 1000001);
}

Test(bench_hist, one_slow_answer_in_a_thousand_shows_at_p99_9_not_p99)
{
    for (int i = 0; i < 999; i++)
        bench_hist_add(&h, 1000);
    bench_hist_add(&h, 5000000);
    cr_expect_leq(bench_hist_pct(&h, 99), 1031);
    cr_expect_eq(bench_hist_pct(&h, 100), 5000000);
    cr_expect_leq(bench_hist_pct(&h, 99.9), 1031);
    bench_hist_add(&h, 5000000);
    cr_expect_geq(bench_hist_pct(&h, 99.9), 4800000);
}

Test(bench_hist, huge_values_are_clamped_not_lost)
{
    bench_hist_add(&h, UINT64_MAX / 2);
    cr_expect_eq(h.count, 1);
    cr_expect_gt(bench_hist_pct(&h, 50), 1ull << 40);
}

Test(bench_hist, merge_adds_counts_and_keeps_the_max)
{
    for (int i = 0; i < 100; i++)
        bench_hist_add(&h, 10);
    for (int i = 0; i < 100; i++)
        bench_hist_add(&h2, 100000);
    bench_hist_merge(&h, &h2);
    cr_expect_eq(h.count, 200);
    cr_expect_eq(h.max_us, 100000);
    cr_expect_eq(bench_hist_pct(&h, 50), 10);
    cr_expect_geq(bench_hist_pct(&h, 51), 100000);
}

Test(bench_hist, json_carries_percentiles_and_buckets_that_sum_to_the_count)
{
    for (uint64_t v = 0; v < 5000; v += 7)
        bench_hist_add(&h, v);
    json_t *j = bench_hist_json(&h);
    cr_assert_not_null(j);
    cr_expect_eq(json_integer_value(json_object_get(j, "count")), (json_int_t)h.count);
    cr_expect_not_null(json_object_get(j, "p99_9_ms"));
    json_t *b = json_object_get(j, "buckets_upper_us");
    cr_assert(json_is_array(b));
    json_int_t sum = 0, prev = -1;
    size_t i;
    json_t *pair;
    json_array_foreach(b, i, pair)
    {
        json_int_t up = json_integer_value(json_array_get(pair, 0));
        cr_expect_gt(up, prev, "bucket edges ascend");
        prev = up;
        sum += json_integer_value(json_array_get(pair, 1));
    }
    cr_expect_eq(sum, (json_int_t)h.count);
    json_decref(j);
}

Test(bench_certs, a_missing_ca_is_an_error_that_names_the_file)
{
    struct bench_cert *certs = NULL;
    char err[300] = "";
    cr_expect_eq(
        bench_certs_make("/nonexistent/ca.crt", "/nonexistent/ca.key", 3, &certs, err, sizeof(err)),
        -1);
    cr_expect_null(certs);
    cr_expect(strstr(err, "/nonexistent/ca.crt") != NULL, "%s", err);
}
