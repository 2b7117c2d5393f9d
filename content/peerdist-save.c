/* The PeerDist hashes of a cached entity on disk, so that a restart does not read the content
 * again. Only hashes are kept (no segment secrets): the file is public data, and the secret
 * may change between runs. Format (little-endian):
 *   "CMGPDH1\0" | size u64 | versions u32 | nblocks u64 | nseg1 u64 | nseg2 u64
 *   | nblocks x 32 block hashes | nseg1 x 32 HoD | nseg2 x (offset u64, len u32, 32 HoD)
 * Loading checks that the counts and offsets are what the size implies. */
#include <stdlib.h>
#include <string.h>

#include "peerdist-int.h"

static const uint8_t pd_magic[8] = {'C', 'M', 'G', 'P', 'D', 'H', '1', 0};
#define PD_HEAD (8 + 8 + 4 + 8 + 8 + 8)
#define PD_SEG2 (8 + 4 + HL)

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

ssize_t content_pd_hashes_save(const struct content_pd_hashes *h, uint8_t **out)
{
    size_t len = PD_HEAD + h->nblocks * HL + h->nseg1 * HL + h->nseg2 * PD_SEG2;
    uint8_t *b = malloc(len), *p = b;
    if (!b)
        return CONTENT_PD_ENOMEM;
    memcpy(p, pd_magic, 8);
    put64(p + 8, h->size);
    put32(p + 16, h->versions);
    put64(p + 20, h->nblocks);
    put64(p + 28, h->nseg1);
    put64(p + 36, h->nseg2);
    p += PD_HEAD;
    for (size_t i = 0; i < h->nblocks; i++, p += HL)
        memcpy(p, h->blocks[i], HL);
    for (size_t i = 0; i < h->nseg1; i++, p += HL)
        memcpy(p, h->seg1[i].hod, HL);
    for (size_t i = 0; i < h->nseg2; i++, p += PD_SEG2) {
        put64(p, h->seg2[i].offset);
        put32(p + 8, h->seg2[i].len);
        memcpy(p + 12, h->seg2[i].hod, HL);
    }
    *out = b;
    return (ssize_t)len;
}

int content_pd_hashes_load(const uint8_t *buf, size_t len, struct content_pd_hashes **out)
{
    *out = NULL;
    if (len < PD_HEAD || memcmp(buf, pd_magic, 8) != 0)
        return CONTENT_PD_EINVAL;
    uint64_t size = get64(buf + 8), nblocks = get64(buf + 20), nseg1 = get64(buf + 28),
             nseg2 = get64(buf + 36);
    uint32_t versions = get32(buf + 16);
    if (size > CONTENT_PD_MAX_CONTENT || versions == 0 ||
        (versions & ~(uint32_t)(CONTENT_PD_V1 | CONTENT_PD_V2)))
        return CONTENT_PD_EINVAL;
    uint64_t want_blocks = 0, want_seg1 = 0;
    if (versions & CONTENT_PD_V1) {
        want_blocks = (size + CONTENT_PD_V1_BLOCK - 1) / CONTENT_PD_V1_BLOCK;
        want_seg1 = (size + CONTENT_PD_V1_SEGMENT - 1) / CONTENT_PD_V1_SEGMENT;
    }
    if (nblocks != want_blocks || nseg1 != want_seg1 ||
        ((versions & CONTENT_PD_V2) ? nseg2 > size : nseg2 != 0))
        return CONTENT_PD_EINVAL;
    if (len != PD_HEAD + nblocks * HL + nseg1 * HL + nseg2 * PD_SEG2)
        return CONTENT_PD_EINVAL;
    struct content_pd_hashes *h = calloc(1, sizeof(*h));
    if (!h)
        return CONTENT_PD_ENOMEM;
    h->size = size;
    h->versions = versions;
    h->blocks = nblocks ? malloc(nblocks * HL) : NULL;
    h->seg1 = nseg1 ? calloc(nseg1, sizeof(*h->seg1)) : NULL;
    h->seg2 = nseg2 ? calloc(nseg2, sizeof(*h->seg2)) : NULL;
    if ((nblocks && !h->blocks) || (nseg1 && !h->seg1) || (nseg2 && !h->seg2)) {
        content_pd_hashes_free(h);
        return CONTENT_PD_ENOMEM;
    }
    h->nblocks = h->cap_blocks = nblocks;
    h->nseg1 = h->cap_seg1 = nseg1;
    h->nseg2 = h->cap_seg2 = nseg2;
    const uint8_t *p = buf + PD_HEAD;
    for (size_t i = 0; i < nblocks; i++, p += HL)
        memcpy(h->blocks[i], p, HL);
    for (size_t i = 0; i < nseg1; i++, p += HL)
        memcpy(h->seg1[i].hod, p, HL);
    uint64_t pos = 0;
    for (size_t i = 0; i < nseg2; i++, p += PD_SEG2) {
        h->seg2[i].offset = get64(p);
        h->seg2[i].len = get32(p + 8);
        memcpy(h->seg2[i].hod, p + 12, HL);
        if (h->seg2[i].offset != pos || h->seg2[i].len == 0 ||
            h->seg2[i].len > CONTENT_PD_V2_SEGMENT_MAX) {
            content_pd_hashes_free(h);
            return CONTENT_PD_EINVAL;
        }
        pos += h->seg2[i].len;
    }
    if ((versions & CONTENT_PD_V2) && pos != size) {
        content_pd_hashes_free(h);
        return CONTENT_PD_EINVAL;
    }
    *out = h;
    return 0;
}
