/* PeerDist Content Information ([MS-PCCRC]): hashes computed while an entity streams past once,
 * and CI bytes written from them for the whole entity or a range. The formulas are those that
 * reproduce Windows output, not the spec's wording: the segment secret is HMAC(Ks, HoD), and C
 * is UTF-16LE "MS_P2P_CACHING" with its NUL (docs/peerdist.md). */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "content.h"
#include "peerdist-int.h"

#define V1_BLOCKS_PER_SEGMENT (CONTENT_PD_V1_SEGMENT / CONTENT_PD_V1_BLOCK) /* 512 */
#define V1_HEADER 18
#define V1_SEGDESC (16 + 2 * HL)
#define V1_HASH_SHA256 0x800Cu
#define V2_HEADER 31
#define V2_CHUNK_HEADER 5
#define V2_SEGDESC (4 + 2 * HL)
#define V2_HASH_TRUNCATED_SHA512 0x04
/* dwChunkDataLength has 32 bits, so a chunk holds at most this many segment descriptions. */
#define V2_CHUNK_MAX (UINT32_MAX / V2_SEGDESC)

/* C of [MS-PCCRC] 2.2 as Windows uses it: UTF-16LE "MS_P2P_CACHING" and the UTF-16 NUL. */
static const uint8_t pd_c[30] = {'M', 0, 'S', 0, '_', 0, 'P', 0, '2', 0, 'P', 0, '_', 0, 'C', 0,
                                 'A', 0, 'C', 0, 'H', 0, 'I', 0, 'N', 0, 'G', 0, 0,   0};

struct content_pd_hasher {
    struct content_pd_hashes *out; /* owned until finish hands it over */
    EVP_MD *sha256, *sha512;
    EVP_MD_CTX *block_ctx; /* v1: the block being filled */
    EVP_MD_CTX *seg_ctx;   /* v2: the segment being filled */
    uint32_t block_fill, seg_fill, v2_segment;
    int error; /* sticky: once a call failed, every later one reports it */
    bool is_finished;
};

/* The two HMACs, digest set once; keyed per use. */
struct pd_macs {
    EVP_MAC *mac;
    EVP_MAC_CTX *v1, *v2;
};

const char *content_pd_strerror(int err)
{
    switch (err) {
    case CONTENT_PD_OK:
        return "success";
    case CONTENT_PD_EINVAL:
        return "invalid argument";
    case CONTENT_PD_ENOMEM:
        return "out of memory";
    case CONTENT_PD_ECRYPTO:
        return "cryptographic library failure";
    case CONTENT_PD_ETOOBIG:
        return "content larger than 1 TiB";
    case CONTENT_PD_ERANGE:
        return "range outside the content";
    case CONTENT_PD_ENOSPC:
        return "output buffer too small";
    case CONTENT_PD_ENOVER:
        return "hashes not computed for that Content Information version";
    }
    return "unknown error";
}

/* ---- little helpers ---- */

static int pd_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    size_t n;
    void *q;

    if (need <= *cap)
        return 0;
    n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    if (n > SIZE_MAX / elem)
        return CONTENT_PD_ENOMEM;
    q = realloc(*p, n * elem);
    if (!q)
        return CONTENT_PD_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Gives back what doubling left unused, once the counts are final. */
static void pd_shrink(void **p, size_t *cap, size_t n, size_t elem)
{
    void *q;

    if (n == 0 || n == *cap)
        return;
    q = realloc(*p, n * elem);
    if (q) {
        *p = q;
        *cap = n;
    }
}

static uint8_t *pd_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *pd_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static uint8_t *pd_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static uint8_t *pd_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
    return p + 4;
}

static uint8_t *pd_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    return p + 8;
}

static int pd_macs_init(struct pd_macs *m)
{
    OSSL_PARAM p1[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                       OSSL_PARAM_construct_end()};
    OSSL_PARAM p2[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA512", 0),
                       OSSL_PARAM_construct_end()};

    memset(m, 0, sizeof(*m));
    m->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!m->mac)
        return CONTENT_PD_ECRYPTO;
    m->v1 = EVP_MAC_CTX_new(m->mac);
    m->v2 = EVP_MAC_CTX_new(m->mac);
    if (!m->v1 || !m->v2 || EVP_MAC_CTX_set_params(m->v1, p1) != 1 ||
        EVP_MAC_CTX_set_params(m->v2, p2) != 1)
        return CONTENT_PD_ECRYPTO;
    return 0;
}

static void pd_macs_deinit(struct pd_macs *m)
{
    EVP_MAC_CTX_free(m->v1);
    EVP_MAC_CTX_free(m->v2);
    EVP_MAC_free(m->mac);
    memset(m, 0, sizeof(*m));
}

/* HMAC(key, m1 + m2), cut to HL bytes: for v2 the full HMAC-SHA-512 is computed and only its
 * output truncated ([MS-PCCRC] 2.4 as Windows applies it). */
static int pd_hmac(EVP_MAC_CTX *c, const uint8_t key[HL], const uint8_t *m1, size_t l1,
                   const uint8_t *m2, size_t l2, uint8_t out[HL])
{
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t n = 0;
    int rc = CONTENT_PD_ECRYPTO;

    if (EVP_MAC_init(c, key, HL, NULL) == 1 && EVP_MAC_update(c, m1, l1) == 1 &&
        (l2 == 0 || EVP_MAC_update(c, m2, l2) == 1) &&
        EVP_MAC_final(c, full, &n, sizeof(full)) == 1 && n >= HL) {
        memcpy(out, full, HL);
        rc = 0;
    }
    OPENSSL_cleanse(full, sizeof(full));
    return rc;
}

/* ---- hashing ---- */

struct content_pd_hasher *content_pd_hasher_new(const struct content_pd_hasher_opts *o)
{
    struct content_pd_hasher_opts def = {CONTENT_PD_V1 | CONTENT_PD_V2, 0, 0};
    struct content_pd_hasher *h;
    struct content_pd_hashes *out;
    uint64_t hint;

    if (!o)
        o = &def;
    if (o->versions == 0 || (o->versions & ~(unsigned)(CONTENT_PD_V1 | CONTENT_PD_V2)) ||
        o->v2_segment > CONTENT_PD_V2_SEGMENT_MAX)
        return NULL;
    h = calloc(1, sizeof(*h));
    out = calloc(1, sizeof(*out));
    if (!h || !out)
        goto fail;
    h->out = out;
    out->versions = o->versions;
    h->v2_segment = o->v2_segment ? o->v2_segment : CONTENT_PD_V2_SEGMENT;
    hint = o->size_hint < CONTENT_PD_MAX_CONTENT ? o->size_hint : CONTENT_PD_MAX_CONTENT;
    if (o->versions & CONTENT_PD_V1) {
        h->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        h->block_ctx = EVP_MD_CTX_new();
        if (!h->sha256 || !h->block_ctx || EVP_DigestInit_ex(h->block_ctx, h->sha256, NULL) != 1)
            goto fail;
        if (hint && (pd_grow((void **)&out->blocks, &out->cap_blocks,
                             (size_t)((hint + CONTENT_PD_V1_BLOCK - 1) / CONTENT_PD_V1_BLOCK),
                             sizeof(*out->blocks)) != 0 ||
                     pd_grow((void **)&out->seg1, &out->cap_seg1,
                             (size_t)((hint + CONTENT_PD_V1_SEGMENT - 1) / CONTENT_PD_V1_SEGMENT),
                             sizeof(*out->seg1)) != 0))
            goto fail;
    }
    if (o->versions & CONTENT_PD_V2) {
        h->sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
        h->seg_ctx = EVP_MD_CTX_new();
        if (!h->sha512 || !h->seg_ctx || EVP_DigestInit_ex(h->seg_ctx, h->sha512, NULL) != 1)
            goto fail;
        if (hint &&
            pd_grow((void **)&out->seg2, &out->cap_seg2,
                    (size_t)((hint + h->v2_segment - 1) / h->v2_segment), sizeof(*out->seg2)) != 0)
            goto fail;
    }
    return h;
fail:
    if (h)
        content_pd_hasher_free(h);
    else
        free(out);
    return NULL;
}

/* The v1 segment in progress is complete (512 blocks, or the last ones): HoD over its block
 * hashes. */
static int pd_v1_segment_end(struct content_pd_hasher *h)
{
    struct content_pd_hashes *o = h->out;
    size_t first = o->nseg1 * V1_BLOCKS_PER_SEGMENT;
    size_t n = o->nblocks - first;

    if (n == 0)
        return 0;
    if (pd_grow((void **)&o->seg1, &o->cap_seg1, o->nseg1 + 1, sizeof(*o->seg1)) != 0)
        return CONTENT_PD_ENOMEM;
    if (EVP_Digest(o->blocks[first], n * HL, o->seg1[o->nseg1].hod, NULL, h->sha256, NULL) != 1)
        return CONTENT_PD_ECRYPTO;
    o->nseg1++;
    return 0;
}

static int pd_v1_block_end(struct content_pd_hasher *h)
{
    struct content_pd_hashes *o = h->out;

    if (pd_grow((void **)&o->blocks, &o->cap_blocks, o->nblocks + 1, sizeof(*o->blocks)) != 0)
        return CONTENT_PD_ENOMEM;
    if (EVP_DigestFinal_ex(h->block_ctx, o->blocks[o->nblocks], NULL) != 1 ||
        EVP_DigestInit_ex(h->block_ctx, h->sha256, NULL) != 1)
        return CONTENT_PD_ECRYPTO;
    o->nblocks++;
    h->block_fill = 0;
    if (o->nblocks % V1_BLOCKS_PER_SEGMENT == 0)
        return pd_v1_segment_end(h);
    return 0;
}

static int pd_v2_segment_end(struct content_pd_hasher *h)
{
    struct content_pd_hashes *o = h->out;
    uint8_t full[EVP_MAX_MD_SIZE];
    struct pd_seg2 *s;

    if (h->seg_fill == 0)
        return 0;
    if (pd_grow((void **)&o->seg2, &o->cap_seg2, o->nseg2 + 1, sizeof(*o->seg2)) != 0)
        return CONTENT_PD_ENOMEM;
    if (EVP_DigestFinal_ex(h->seg_ctx, full, NULL) != 1 ||
        EVP_DigestInit_ex(h->seg_ctx, h->sha512, NULL) != 1)
        return CONTENT_PD_ECRYPTO;
    s = &o->seg2[o->nseg2++];
    s->offset = o->size - h->seg_fill;
    s->len = h->seg_fill;
    memcpy(s->hod, full, HL);
    h->seg_fill = 0;
    return 0;
}

int content_pd_hasher_update(struct content_pd_hasher *h, const void *data, size_t len)
{
    const uint8_t *p = data;
    bool v1 = h->sha256 != NULL, v2 = h->sha512 != NULL;
    int rc = 0;

    if (h->error || h->is_finished)
        return h->error ? h->error : CONTENT_PD_EINVAL;
    if (len > CONTENT_PD_MAX_CONTENT - h->out->size)
        return h->error = CONTENT_PD_ETOOBIG;
    /* Whole runs up to the nearer boundary go to EVP in one call; a run is at most one block,
     * so with both versions the second digest reads it while it is still in cache. */
    while (len > 0) {
        size_t take = len;
        if (v1 && take > CONTENT_PD_V1_BLOCK - h->block_fill)
            take = CONTENT_PD_V1_BLOCK - h->block_fill;
        if (v2 && take > h->v2_segment - h->seg_fill)
            take = h->v2_segment - h->seg_fill;
        if ((v1 && EVP_DigestUpdate(h->block_ctx, p, take) != 1) ||
            (v2 && EVP_DigestUpdate(h->seg_ctx, p, take) != 1))
            return h->error = CONTENT_PD_ECRYPTO;
        h->out->size += take;
        if (v1 && (h->block_fill += (uint32_t)take) == CONTENT_PD_V1_BLOCK)
            rc = pd_v1_block_end(h);
        if (rc == 0 && v2 && (h->seg_fill += (uint32_t)take) == h->v2_segment)
            rc = pd_v2_segment_end(h);
        if (rc)
            return h->error = rc;
        p += take;
        len -= take;
    }
    return 0;
}

int content_pd_hasher_cut(struct content_pd_hasher *h)
{
    int rc;

    if (h->error || h->is_finished)
        return h->error ? h->error : CONTENT_PD_EINVAL;
    if (!h->sha512)
        return 0;
    rc = pd_v2_segment_end(h);
    return rc ? (h->error = rc) : 0;
}

int content_pd_hasher_finish(struct content_pd_hasher *h, struct content_pd_hashes **out)
{
    struct content_pd_hashes *o = h->out;
    int rc = 0;

    *out = NULL;
    if (h->error || h->is_finished)
        return h->error ? h->error : CONTENT_PD_EINVAL;
    if (h->sha256) {
        if (h->block_fill)
            rc = pd_v1_block_end(h);
        if (rc == 0)
            rc = pd_v1_segment_end(h);
    }
    if (rc == 0 && h->sha512)
        rc = pd_v2_segment_end(h);
    if (rc)
        return h->error = rc;
    pd_shrink((void **)&o->blocks, &o->cap_blocks, o->nblocks, sizeof(*o->blocks));
    pd_shrink((void **)&o->seg1, &o->cap_seg1, o->nseg1, sizeof(*o->seg1));
    pd_shrink((void **)&o->seg2, &o->cap_seg2, o->nseg2, sizeof(*o->seg2));
    h->is_finished = true;
    h->out = NULL;
    *out = o;
    return 0;
}

void content_pd_hasher_free(struct content_pd_hasher *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->block_ctx);
    EVP_MD_CTX_free(h->seg_ctx);
    EVP_MD_free(h->sha256);
    EVP_MD_free(h->sha512);
    content_pd_hashes_free(h->out);
    free(h);
}

/* ---- the hashes ---- */

void content_pd_hashes_free(struct content_pd_hashes *h)
{
    if (!h)
        return;
    /* Segment secrets are keys for peer traffic. */
    if (h->seg1)
        OPENSSL_cleanse(h->seg1, h->cap_seg1 * sizeof(*h->seg1));
    if (h->seg2)
        OPENSSL_cleanse(h->seg2, h->cap_seg2 * sizeof(*h->seg2));
    free(h->blocks);
    free(h->seg1);
    free(h->seg2);
    free(h);
}

uint64_t content_pd_hashes_size(const struct content_pd_hashes *h)
{
    return h->size;
}

unsigned content_pd_hashes_versions(const struct content_pd_hashes *h)
{
    return h->versions;
}

size_t content_pd_hashes_segments(const struct content_pd_hashes *h, enum content_pd_version v)
{
    return v == CONTENT_PD_V1 ? h->nseg1 : v == CONTENT_PD_V2 ? h->nseg2 : 0;
}

int content_pd_hashes_bind(struct content_pd_hashes *h, const struct content_pd_secret *s)
{
    struct pd_macs m;
    size_t i;
    int rc = pd_macs_init(&m);

    h->is_bound = false;
    for (i = 0; rc == 0 && i < h->nseg1; i++)
        rc = pd_hmac(m.v1, s->_ks_v1, h->seg1[i].hod, HL, NULL, 0, h->seg1[i].kp);
    for (i = 0; rc == 0 && i < h->nseg2; i++)
        rc = pd_hmac(m.v2, s->_ks_v2, h->seg2[i].hod, HL, NULL, 0, h->seg2[i].kp);
    if (rc == 0) {
        memcpy(h->key_id, s->id, sizeof(h->key_id));
        h->is_bound = true;
    }
    pd_macs_deinit(&m);
    return rc;
}

static bool pd_is_bound_to(const struct content_pd_hashes *h, const struct content_pd_secret *s)
{
    return h->is_bound && CRYPTO_memcmp(h->key_id, s->id, sizeof(h->key_id)) == 0;
}

/* Segment i's HoD and Kp: Kp from the binding, or computed with m (set up on first use). */
static int pd_segment_keys(const struct content_pd_hashes *h, enum content_pd_version v, size_t i,
                           const struct content_pd_secret *s, struct pd_macs *m,
                           const uint8_t **hod, uint8_t kp[HL])
{
    const uint8_t *bound_kp;
    int rc;

    if (v == CONTENT_PD_V1) {
        *hod = h->seg1[i].hod;
        bound_kp = h->seg1[i].kp;
    } else {
        *hod = h->seg2[i].hod;
        bound_kp = h->seg2[i].kp;
    }
    if (pd_is_bound_to(h, s)) {
        memcpy(kp, bound_kp, HL);
        return 0;
    }
    if (!m->mac && (rc = pd_macs_init(m)) != 0)
        return rc;
    return v == CONTENT_PD_V1 ? pd_hmac(m->v1, s->_ks_v1, *hod, HL, NULL, 0, kp)
                              : pd_hmac(m->v2, s->_ks_v2, *hod, HL, NULL, 0, kp);
}

int content_pd_segment_id(const struct content_pd_hashes *h, enum content_pd_version v, size_t i,
                          const struct content_pd_secret *s, uint8_t out[CONTENT_PD_HASH_LEN])
{
    struct pd_macs m = {0};
    const uint8_t *hod;
    uint8_t kp[HL];
    int rc;

    if (!(h->versions & v) || (v != CONTENT_PD_V1 && v != CONTENT_PD_V2))
        return CONTENT_PD_ENOVER;
    if (i >= content_pd_hashes_segments(h, v))
        return CONTENT_PD_ERANGE;
    rc = pd_segment_keys(h, v, i, s, &m, &hod, kp);
    if (rc == 0 && !m.mac)
        rc = pd_macs_init(&m);
    if (rc == 0)
        rc = pd_hmac(v == CONTENT_PD_V1 ? m.v1 : m.v2, kp, hod, HL, pd_c, sizeof(pd_c), out);
    OPENSSL_cleanse(kp, sizeof(kp));
    pd_macs_deinit(&m);
    return rc;
}

/* ---- Content Information ---- */

/* Which segments a CI lists: those intersecting [start, end). */
struct pd_plan {
    uint64_t start, end;
    size_t first, last, nseg; /* nseg 0 only for an empty entity */
    bool is_whole;
};

/* The v2 segment holding byte pos (pos < size). */
static size_t pd_v2_find(const struct content_pd_hashes *h, uint64_t pos)
{
    size_t lo = 0, hi = h->nseg2 - 1;

    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (h->seg2[mid].offset <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int pd_plan(const struct content_pd_hashes *h, enum content_pd_version v,
                   const struct content_range *r, struct pd_plan *p)
{
    memset(p, 0, sizeof(*p));
    if ((v != CONTENT_PD_V1 && v != CONTENT_PD_V2) || !(h->versions & v))
        return CONTENT_PD_ENOVER;
    if (r) {
        if (r->first > r->last || r->last >= h->size)
            return CONTENT_PD_ERANGE;
        p->start = r->first;
        p->end = r->last + 1;
    } else {
        p->end = h->size;
    }
    p->is_whole = p->start == 0 && p->end == h->size;
    if (p->end == 0)
        return 0;
    if (v == CONTENT_PD_V1) {
        p->first = (size_t)(p->start / CONTENT_PD_V1_SEGMENT);
        p->last = (size_t)((p->end - 1) / CONTENT_PD_V1_SEGMENT);
    } else {
        p->first = pd_v2_find(h, p->start);
        p->last = pd_v2_find(h, p->end - 1);
    }
    p->nseg = p->last - p->first + 1;
    return 0;
}

static uint64_t pd_v1_seg_start(size_t i)
{
    return (uint64_t)i * CONTENT_PD_V1_SEGMENT;
}

static uint32_t pd_v1_seg_len(const struct content_pd_hashes *h, size_t i)
{
    uint64_t left = h->size - pd_v1_seg_start(i);
    return left < CONTENT_PD_V1_SEGMENT ? (uint32_t)left : CONTENT_PD_V1_SEGMENT;
}

/* Blocks listed for segment i: all of them, except in the last segment of the range, which
 * lists block 0 up to the one holding the range's last byte ([MS-PCCRC] 3.3, 3.5). */
static size_t pd_v1_listed(const struct content_pd_hashes *h, const struct pd_plan *p, size_t i)
{
    uint64_t upto = i < p->last ? pd_v1_seg_len(h, i) : p->end - pd_v1_seg_start(i);
    return (size_t)((upto + CONTENT_PD_V1_BLOCK - 1) / CONTENT_PD_V1_BLOCK);
}

static size_t pd_v1_size(const struct content_pd_hashes *h, const struct pd_plan *p)
{
    size_t n = V1_HEADER + p->nseg * V1_SEGDESC;

    for (size_t i = p->first; i < p->first + p->nseg; i++)
        n += 4 + pd_v1_listed(h, p, i) * HL;
    return n;
}

static size_t pd_v2_size(const struct pd_plan *p)
{
    size_t chunks = (p->nseg + V2_CHUNK_MAX - 1) / V2_CHUNK_MAX;
    return V2_HEADER + chunks * V2_CHUNK_HEADER + p->nseg * V2_SEGDESC;
}

ssize_t content_pd_ci_size(const struct content_pd_hashes *h, enum content_pd_version v,
                           const struct content_range *r)
{
    struct pd_plan p;
    int rc = pd_plan(h, v, r, &p);

    if (rc)
        return rc;
    return (ssize_t)(v == CONTENT_PD_V1 ? pd_v1_size(h, &p) : pd_v2_size(&p));
}

static int pd_v1_write(const struct content_pd_hashes *h, const struct pd_plan *p,
                       const struct content_pd_secret *s, struct pd_macs *m, uint8_t *w)
{
    uint64_t last_start = pd_v1_seg_start(p->last), last_end = last_start;
    uint32_t read_last = 0;
    const uint8_t *hod;
    size_t i;
    int rc;

    if (p->nseg) {
        last_end += pd_v1_seg_len(h, p->last);
        /* 0 means "to the end of the last segment", which is what IIS sends for whole files. */
        if (p->end != last_end)
            read_last = (uint32_t)(p->end - (p->first == p->last ? p->start : last_start));
    }
    w = pd_le16(w, 0x0100);
    w = pd_le32(w, V1_HASH_SHA256);
    w = pd_le32(w, (uint32_t)(p->start - pd_v1_seg_start(p->first)));
    w = pd_le32(w, read_last);
    w = pd_le32(w, (uint32_t)p->nseg);
    for (i = p->first; i < p->first + p->nseg; i++) {
        w = pd_le64(w, pd_v1_seg_start(i));
        w = pd_le32(w, pd_v1_seg_len(h, i));
        w = pd_le32(w, CONTENT_PD_V1_BLOCK);
        if ((rc = pd_segment_keys(h, CONTENT_PD_V1, i, s, m, &hod, w + HL)) != 0)
            return rc;
        memcpy(w, hod, HL);
        w += 2 * HL;
    }
    for (i = p->first; i < p->first + p->nseg; i++) {
        size_t n = pd_v1_listed(h, p, i);
        w = pd_le32(w, (uint32_t)n);
        memcpy(w, h->blocks[i * V1_BLOCKS_PER_SEGMENT], n * HL);
        w += n * HL;
    }
    return 0;
}

static int pd_v2_write(const struct content_pd_hashes *h, const struct pd_plan *p,
                       const struct content_pd_secret *s, struct pd_macs *m, uint8_t *w)
{
    uint64_t first_start = p->nseg ? h->seg2[p->first].offset : 0;
    const uint8_t *hod;
    size_t i, left;
    int rc;

    *w++ = 0x00; /* minor, then major: the same order as v1's little-endian 0x0100 */
    *w++ = 0x02;
    *w++ = V2_HASH_TRUNCATED_SHA512;
    w = pd_be64(w, first_start);
    w = pd_be64(w, p->first);
    w = pd_be32(w, (uint32_t)(p->start - first_start));
    w = pd_be64(w, p->is_whole ? 0 : p->end - p->start); /* 0 = the whole entity, as IIS */
    for (i = p->first, left = p->nseg; left > 0;) {
        size_t n = left < V2_CHUNK_MAX ? left : V2_CHUNK_MAX;
        *w++ = 0x00;
        w = pd_be32(w, (uint32_t)(n * V2_SEGDESC));
        for (left -= n; n > 0; n--, i++) {
            w = pd_be32(w, h->seg2[i].len);
            if ((rc = pd_segment_keys(h, CONTENT_PD_V2, i, s, m, &hod, w + HL)) != 0)
                return rc;
            memcpy(w, hod, HL);
            w += 2 * HL;
        }
    }
    return 0;
}

ssize_t content_pd_ci_write(const struct content_pd_hashes *h, enum content_pd_version v,
                            const struct content_range *r, const struct content_pd_secret *s,
                            uint8_t *buf, size_t len)
{
    struct pd_macs m = {0};
    struct pd_plan p;
    size_t need;
    int rc = pd_plan(h, v, r, &p);

    if (rc)
        return rc;
    need = v == CONTENT_PD_V1 ? pd_v1_size(h, &p) : pd_v2_size(&p);
    if (len < need)
        return CONTENT_PD_ENOSPC;
    rc = v == CONTENT_PD_V1 ? pd_v1_write(h, &p, s, &m, buf) : pd_v2_write(h, &p, s, &m, buf);
    if (m.mac)
        pd_macs_deinit(&m);
    if (rc) {
        OPENSSL_cleanse(buf, need);
        return rc;
    }
    return (ssize_t)need;
}
