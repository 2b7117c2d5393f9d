/* peerdist-speed: how fast the PeerDist hasher runs on one core, next to plain EVP SHA-256 and
 * SHA-512 over the same bytes. Compare the SHA-256 line with the 16384-byte column of
 * `openssl speed -seconds 3 sha256` (kB there are 1000 bytes, as MB are here).
 *
 * usage: peerdist-speed [MIB_PER_RUN [PIECE_BYTES]]   (defaults 1024 and 262144)
 * Built on request only: cmake --build BUILD --target peerdist-speed */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "content.h"

#define BUF_BYTES (64u << 20) /* the data, fed again and again */
#define RUNS 3

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One pass of `total` bytes in `piece`-byte calls; returns CPU seconds (wall in *wall). */
static double run_evp(const EVP_MD *md, const uint8_t *buf, size_t total, size_t piece,
                      double *wall)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    uint8_t out[64];
    double t0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);

    EVP_DigestInit_ex(c, md, NULL);
    for (size_t done = 0; done < total;) {
        size_t off = done % BUF_BYTES, n = piece;
        if (n > BUF_BYTES - off)
            n = BUF_BYTES - off;
        if (n > total - done)
            n = total - done;
        /* a fresh digest per 64 KiB, as the v1 blocks need */
        for (size_t k = 0; k < n; k += 65536) {
            size_t m = n - k < 65536 ? n - k : 65536;
            EVP_DigestUpdate(c, buf + off + k, m);
            EVP_DigestFinal_ex(c, out, NULL);
            EVP_DigestInit_ex(c, md, NULL);
        }
        done += n;
    }
    *wall = now(CLOCK_MONOTONIC) - w0;
    EVP_MD_CTX_free(c);
    return now(CLOCK_PROCESS_CPUTIME_ID) - t0;
}

static double run_hasher(unsigned versions, const uint8_t *buf, size_t total, size_t piece,
                         double *wall)
{
    struct content_pd_hasher_opts o = {versions, total, 0};
    struct content_pd_hashes *hs = NULL;
    double t0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    struct content_pd_hasher *h = content_pd_hasher_new(&o);

    if (!h) {
        fprintf(stderr, "peerdist-speed: hasher_new failed\n");
        exit(1);
    }
    for (size_t done = 0; done < total;) {
        size_t off = done % BUF_BYTES, n = piece;
        if (n > BUF_BYTES - off)
            n = BUF_BYTES - off;
        if (n > total - done)
            n = total - done;
        if (content_pd_hasher_update(h, buf + off, n) != 0) {
            fprintf(stderr, "peerdist-speed: update failed\n");
            exit(1);
        }
        done += n;
    }
    if (content_pd_hasher_finish(h, &hs) != 0) {
        fprintf(stderr, "peerdist-speed: finish failed\n");
        exit(1);
    }
    *wall = now(CLOCK_MONOTONIC) - w0;
    double cpu = now(CLOCK_PROCESS_CPUTIME_ID) - t0;
    content_pd_hashes_free(hs);
    content_pd_hasher_free(h);
    return cpu;
}

struct result {
    double cpu_mbs, wall_mbs;
};

static void report(const char *what, struct result r, const struct result *ref)
{
    printf("%-28s %9.1f MB/s CPU  %9.1f MB/s wall", what, r.cpu_mbs, r.wall_mbs);
    if (ref)
        printf("  (%.1f %% of EVP SHA-256)", 100.0 * r.cpu_mbs / ref->cpu_mbs);
    printf("\n");
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t piece = argc > 2 ? strtoul(argv[2], NULL, 10) : 262144;
    size_t total = mib << 20;
    uint8_t *buf = malloc(BUF_BYTES);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    struct result evp256 = {0, 0}, evp512 = {0, 0}, v1 = {0, 0}, v2 = {0, 0}, both = {0, 0};

    if (!buf || mib == 0 || piece == 0) {
        fprintf(stderr, "usage: peerdist-speed [MIB_PER_RUN [PIECE_BYTES]]\n");
        return 2;
    }
    for (size_t i = 0; i < BUF_BYTES; i += 8) { /* xorshift: incompressible, deterministic */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
    printf("peerdist-speed: %zu MiB per run, pieces of %zu bytes, best of %d runs, one thread\n",
           mib, piece, RUNS);
    for (int r = 0; r < RUNS; r++) {
        struct {
            struct result *res;
            double cpu, wall;
        } m[5];
        m[0].res = &evp256, m[0].cpu = run_evp(EVP_sha256(), buf, total, piece, &m[0].wall);
        m[1].res = &evp512, m[1].cpu = run_evp(EVP_sha512(), buf, total, piece, &m[1].wall);
        m[2].res = &v1, m[2].cpu = run_hasher(CONTENT_PD_V1, buf, total, piece, &m[2].wall);
        m[3].res = &v2, m[3].cpu = run_hasher(CONTENT_PD_V2, buf, total, piece, &m[3].wall);
        m[4].res = &both,
        m[4].cpu = run_hasher(CONTENT_PD_V1 | CONTENT_PD_V2, buf, total, piece, &m[4].wall);
        for (int k = 0; k < 5; k++) {
            double c = (double)total / m[k].cpu / 1e6, w = (double)total / m[k].wall / 1e6;
            if (c > m[k].res->cpu_mbs)
                m[k].res->cpu_mbs = c;
            if (w > m[k].res->wall_mbs)
                m[k].res->wall_mbs = w;
        }
    }
    report("EVP SHA-256, 64 KiB digests", evp256, NULL);
    report("EVP SHA-512, 64 KiB digests", evp512, NULL);
    report("hasher CI 1.0", v1, &evp256);
    report("hasher CI 2.0", v2, &evp256);
    report("hasher CI 1.0 + 2.0", both, &evp256);
    printf("CI 2.0 against EVP SHA-512: %.1f %%\n", 100.0 * v2.cpu_mbs / evp512.cpu_mbs);
    free(buf);
    return 0;
}
