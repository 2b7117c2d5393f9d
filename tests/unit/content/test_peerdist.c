/* content/peerdist*.c: Content Information against an independent computation from the
 * [MS-PCCRC] formulas (plain OpenSSL calls written out here), against real IIS output, fed in
 * any piece sizes; ranges; the server secret and netsh exportkey files; the [MS-PCCRTP]
 * decision as a table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "content.h"

#ifndef CMG_TESTDATA_IIS_PNG
#error "CMG_TESTDATA_IIS_PNG must name tests/data/iis-85.png"
#endif

#define MIB (1024u * 1024u)

/* ---- the independent computation ---- */

/* The server secret key of the IIS captures below. */
static const char *iis_key_hex = "2a3d73eb435e9f2b8a344267e7467a3c7385c6e055e2b4d30dfec7c38b0ed72c";

static void unhex(const char *hex, uint8_t *out, size_t *len)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        cr_assert_eq(sscanf(hex, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
    }
    *len = n;
}

static void sha256(const void *p, size_t n, uint8_t out[32])
{
    cr_assert_eq(EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL), 1);
}

static void sha512_32(const void *p, size_t n, uint8_t out[32])
{
    uint8_t full[64];
    cr_assert_eq(EVP_Digest(p, n, full, NULL, EVP_sha512(), NULL), 1);
    memcpy(out, full, 32);
}

static void hmac(const EVP_MD *md, const uint8_t key[32], const uint8_t *m, size_t n,
                 uint8_t out[32])
{
    uint8_t full[64];
    unsigned len = 0;
    cr_assert_not_null(HMAC(md, key, 32, m, n, full, &len));
    cr_assert_geq(len, 32);
    memcpy(out, full, 32);
}

/* A growable byte string for the expected CIs. */
struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_int(struct bytes *b, uint64_t v, int size, bool big_endian)
{
    uint8_t x[8];
    for (int i = 0; i < size; i++)
        x[big_endian ? size - 1 - i : i] = (uint8_t)(v >> (8 * i));
    put(b, x, (size_t)size);
}

/* v1 of the whole of data ([MS-PCCRC] 2.3 with the 2.2 formulas as Windows applies them). */
static struct bytes ref_v1(const uint8_t *data, size_t len, const uint8_t *key, size_t keylen)
{
    struct bytes b = {0}, blocks = {0};
    uint8_t ks[32], hod[32], kp[32], h[32];
    size_t nseg = (len + 32 * MIB - 1) / (32 * MIB);

    sha256(key, keylen, ks);
    put_int(&b, 0x0100, 2, false);
    put_int(&b, 0x800C, 4, false);
    put_int(&b, 0, 4, false);
    put_int(&b, 0, 4, false);
    put_int(&b, nseg, 4, false);
    for (size_t s = 0; s < nseg; s++) {
        size_t off = s * 32 * MIB, slen = len - off < 32 * MIB ? len - off : 32 * MIB;
        struct bytes list = {0};
        for (size_t o = 0; o < slen; o += 65536) {
            sha256(data + off + o, slen - o < 65536 ? slen - o : 65536, h);
            put(&list, h, 32);
        }
        sha256(list.p, list.n, hod);
        hmac(EVP_sha256(), ks, hod, 32, kp);
        put_int(&b, off, 8, false);
        put_int(&b, slen, 4, false);
        put_int(&b, 65536, 4, false);
        put(&b, hod, 32);
        put(&b, kp, 32);
        put_int(&blocks, list.n / 32, 4, false);
        put(&blocks, list.p, list.n);
        free(list.p);
    }
    put(&b, blocks.p, blocks.n);
    free(blocks.p);
    return b;
}

/* v2 of the whole of data cut into segments of seglen[0], seglen[1], ... ([MS-PCCRC] 2.4). */
static struct bytes ref_v2(const uint8_t *data, size_t len, const size_t *seglen, size_t nseg,
                           const uint8_t *key, size_t keylen)
{
    struct bytes b = {0};
    uint8_t ks[32], hod[32], kp[32];
    size_t off = 0;

    sha512_32(key, keylen, ks);
    put(&b, "\x00\x02\x04", 3);
    put_int(&b, 0, 8, true);
    put_int(&b, 0, 8, true);
    put_int(&b, 0, 4, true);
    put_int(&b, 0, 8, true);
    if (nseg) {
        put(&b, "\x00", 1);
        put_int(&b, 68 * nseg, 4, true);
    }
    for (size_t s = 0; s < nseg; s++) {
        sha512_32(data + off, seglen[s], hod);
        hmac(EVP_sha512(), ks, hod, 32, kp);
        put_int(&b, seglen[s], 4, true);
        put(&b, hod, 32);
        put(&b, kp, 32);
        off += seglen[s];
    }
    cr_assert_eq(off, len);
    return b;
}

/* Our own v2 segmentation: 64 KiB pieces. */
static struct bytes ref_v2_fixed(const uint8_t *data, size_t len, const uint8_t *key, size_t keylen)
{
    size_t n = (len + 65535) / 65536, *seg = calloc(n + 1, sizeof(*seg));
    for (size_t i = 0; i < n; i++)
        seg[i] = len - i * 65536 < 65536 ? len - i * 65536 : 65536;
    struct bytes b = ref_v2(data, len, seg, n, key, keylen);
    free(seg);
    return b;
}

/* ---- the module ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *make_data(size_t len, uint64_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    rng_state = seed;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(rng() >> 24);
    return p;
}

static struct content_pd_secret secret_of(const uint8_t *key, size_t len)
{
    struct content_pd_secret s;
    char err[256];
    cr_assert_eq(content_pd_secret_from_key(&s, key, len, err, sizeof(err)), 0, "%s", err);
    return s;
}

/* Hashes data in pieces: all at once (max_piece 0) or random sizes 1..max_piece. */
static struct content_pd_hashes *hash_pieces(unsigned versions, const uint8_t *data, size_t len,
                                             size_t max_piece, uint64_t seed)
{
    struct content_pd_hasher_opts o = {versions, 0, 0};
    struct content_pd_hasher *h = content_pd_hasher_new(&o);
    struct content_pd_hashes *hs = NULL;

    cr_assert_not_null(h);
    rng_state = seed;
    for (size_t off = 0; off < len;) {
        size_t n = max_piece ? 1 + (size_t)(rng() % max_piece) : len;
        /* now and then a run of tiny pieces, where boundaries fall mid-piece */
        if (max_piece && rng() % 8 == 0)
            n = 1 + (size_t)(rng() % 7);
        if (n > len - off)
            n = len - off;
        cr_assert_eq(content_pd_hasher_update(h, data + off, n), 0);
        off += n;
    }
    cr_assert_eq(content_pd_hasher_finish(h, &hs), 0);
    content_pd_hasher_free(h);
    return hs;
}

static struct bytes ci_of(const struct content_pd_hashes *hs, enum content_pd_version v,
                          const struct content_range *r, const struct content_pd_secret *s)
{
    ssize_t n = content_pd_ci_size(hs, v, r);
    struct bytes b = {0};
    cr_assert_geq(n, 0, "ci_size: %s", content_pd_strerror((int)n));
    b.p = malloc((size_t)n + 1);
    b.cap = (size_t)n + 1;
    b.n = (size_t)content_pd_ci_write(hs, v, r, s, b.p, b.cap);
    cr_assert_eq((ssize_t)b.n, n);
    return b;
}

static void assert_same(struct bytes got, struct bytes want, const char *what)
{
    cr_assert_eq(got.n, want.n, "%s: %zu bytes, want %zu", what, got.n, want.n);
    for (size_t i = 0; i < got.n; i++)
        cr_assert_eq(got.p[i], want.p[i], "%s: byte %zu is %02x, want %02x", what, i, got.p[i],
                     want.p[i]);
}

static uint8_t key[64];
static size_t keylen;
static struct content_pd_secret secret;

static void setup(void)
{
    unhex(iis_key_hex, key, &keylen);
    secret = secret_of(key, keylen);
}

TestSuite(peerdist, .init = setup);

/* ---- Content Information ---- */

Test(peerdist, small_files_both_versions)
{
    static const size_t sizes[] = {0, 1, 65535, 65536, 65537, 131072, 200000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t len = sizes[i];
        uint8_t *data = make_data(len, 0x1234 + len);
        struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V1 | CONTENT_PD_V2, data, len, 0, 0);
        struct bytes w1 = ref_v1(data, len, key, keylen), w2 = ref_v2_fixed(data, len, key, keylen);
        struct bytes g1 = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
        struct bytes g2 = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
        char what[64];
        snprintf(what, sizeof(what), "v1 of %zu bytes", len);
        assert_same(g1, w1, what);
        snprintf(what, sizeof(what), "v2 of %zu bytes", len);
        assert_same(g2, w2, what);
        /* sizes from the reference: 18 + 84 nseg + 32 nblocks; 36 + 68 nseg (31 when empty) */
        size_t nseg1 = (len + 32 * MIB - 1) / (32 * MIB), nblk = (len + 65535) / 65536;
        cr_assert_eq(g1.n, 18 + 84 * nseg1 + 32 * nblk);
        cr_assert_eq(g2.n, len ? 36 + 68 * nblk : 31);
        cr_assert_eq(content_pd_hashes_size(hs), len);
        /* the same in pieces of 1 to 977 bytes */
        struct content_pd_hashes *hp =
            hash_pieces(CONTENT_PD_V1 | CONTENT_PD_V2, data, len, 977, len);
        struct bytes p1 = ci_of(hp, CONTENT_PD_V1, NULL, &secret);
        struct bytes p2 = ci_of(hp, CONTENT_PD_V2, NULL, &secret);
        assert_same(p1, w1, "v1 in pieces");
        assert_same(p2, w2, "v2 in pieces");
        free(p1.p), free(p2.p);
        content_pd_hashes_free(hp);
        free(w1.p), free(w2.p), free(g1.p), free(g2.p), free(data);
        content_pd_hashes_free(hs);
    }
}

static uint8_t *read_iis_png(size_t *len)
{
    FILE *f = fopen(CMG_TESTDATA_IIS_PNG, "rb");
    if (!f)
        return NULL;
    uint8_t *p = malloc(200000);
    *len = fread(p, 1, 200000, f);
    fclose(f);
    return p;
}

/* What IIS sent for iis-85.png with the key above (captures published with iPXE's tests). */
static const char *iis_v1_hex = "0001"
                                "0c800000"
                                "00000000"
                                "00000000"
                                "01000000"
                                "0000000000000000"
                                "7e850100"
                                "00000100"
                                "d8d976354a4872e925761803f458d9daaa67f8e31c630fb74e6a312ef8a25aba"
                                "11afc0d7949243f94f9c1fab35d9fd1e331fcf7811a2e01d3587b38d770a29e2"
                                "02000000"
                                "73c18ab8549110f8e90e71bbc3ab2aa8c44d13f4929499255b660f24ec77800b"
                                "974bdd65567fdeeccdafe457a9503b4548f66ed3b188dcfda0ac382b09711acc";
static const char *iis_v2_hex = "000204"
                                "0000000000000000"
                                "0000000000000000"
                                "00000000"
                                "0000000000000000"
                                "00"
                                "00000088"
                                "000099de"
                                "e0d0c358e2684b62330d32b5f1978724a0d0a52bdc5e781fae71ff57a8be3dd4"
                                "58037ed404116bb616d9b14116088520c47cdc50abcea3fae188a98ea22df3c0"
                                "0000eba0"
                                "3381d0d0cb74f4b613d8210f37f002a06f3910586096a130d34398c08e66d7bc"
                                "b8b6eb7783e4f807647b63f146b52f4ac89ccc7abf5fa11acafc2acf5028586c";

Test(peerdist, iis_png_v1_matches_formulas_and_iis)
{
    size_t len;
    uint8_t *data = read_iis_png(&len), iis[256], id[32], want_id[32], kp[32], m[62];
    if (!data)
        cr_assert_fail("%s is not here", CMG_TESTDATA_IIS_PNG);
    cr_assert_eq(len, 99710);
    struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V1, data, len, 0, 0);
    struct bytes got = ci_of(hs, CONTENT_PD_V1, NULL, &secret),
                 want = ref_v1(data, len, key, keylen);
    assert_same(got, want, "iis-85.png v1 against the formulas");
    struct bytes cap = {iis, 0, sizeof(iis)};
    unhex(iis_v1_hex, iis, &cap.n);
    assert_same(got, cap, "iis-85.png v1 against IIS");
    /* the segment ID peers announce: HMAC(Kp, HoD + UTF-16LE "MS_P2P_CACHING\0") */
    static const uint8_t c[30] = "M\0S\0_\0P\0002\0P\0_\0C\0A\0C\0H\0I\0N\0G\0\0";
    memcpy(m, got.p + 34, 32); /* HoD of segment 0 */
    memcpy(kp, got.p + 66, 32);
    memcpy(m + 32, c, 30);
    hmac(EVP_sha256(), kp, m, 62, want_id);
    cr_assert_eq(content_pd_segment_id(hs, CONTENT_PD_V1, 0, &secret, id), 0);
    cr_assert_arr_eq(id, want_id, 32);
    size_t n;
    uint8_t iis_id[32];
    unhex("491b217dbee2b5f12ca79b015e06f4bbe64f9745bad7867aef17de59927edce9", iis_id, &n);
    cr_assert_arr_eq(id, iis_id, 32);
    free(got.p), free(want.p), free(data);
    content_pd_hashes_free(hs);
}

Test(peerdist, iis_png_v2_matches_formulas_and_iis)
{
    size_t len, n;
    uint8_t *data = read_iis_png(&len), iis[256], id[32], iis_id[32];
    if (!data)
        cr_assert_fail("%s is not here", CMG_TESTDATA_IIS_PNG);
    /* our segmentation */
    struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V2, data, len, 0, 0);
    struct bytes got = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
    struct bytes want = ref_v2_fixed(data, len, key, keylen);
    assert_same(got, want, "iis-85.png v2 against the formulas");
    content_pd_hashes_free(hs);
    free(got.p), free(want.p);
    /* Windows' segmentation (39390 + 60320, from its chunker), reproduced with a cut */
    struct content_pd_hasher_opts o = {CONTENT_PD_V2, len, CONTENT_PD_V2_SEGMENT_MAX};
    struct content_pd_hasher *h = content_pd_hasher_new(&o);
    cr_assert_eq(content_pd_hasher_update(h, data, 39390), 0);
    cr_assert_eq(content_pd_hasher_cut(h), 0);
    cr_assert_eq(content_pd_hasher_update(h, data + 39390, len - 39390), 0);
    cr_assert_eq(content_pd_hasher_finish(h, &hs), 0);
    content_pd_hasher_free(h);
    got = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
    size_t segs[2] = {39390, 60320};
    want = ref_v2(data, len, segs, 2, key, keylen);
    assert_same(got, want, "iis-85.png v2, Windows' segments, against the formulas");
    struct bytes cap = {iis, 0, sizeof(iis)};
    unhex(iis_v2_hex, iis, &cap.n);
    assert_same(got, cap, "iis-85.png v2 against IIS");
    cr_assert_eq(content_pd_segment_id(hs, CONTENT_PD_V2, 0, &secret, id), 0);
    unhex("3371bbeaddb62353adcef970a06fdf65001e0421f4c7108276b0c37a9f9ec10f", iis_id, &n);
    cr_assert_arr_eq(id, iis_id, 32);
    cr_assert_eq(content_pd_segment_id(hs, CONTENT_PD_V2, 1, &secret, id), 0);
    unhex("d7e924425e8f4f88f01dc6a9bb1bc37be113ec7917c745d4965c2b55fa163a6e", iis_id, &n);
    cr_assert_arr_eq(id, iis_id, 32);
    cr_assert_eq(content_pd_segment_id(hs, CONTENT_PD_V2, 2, &secret, id), CONTENT_PD_ERANGE);
    free(got.p), free(want.p), free(data);
    content_pd_hashes_free(hs);
}

/* Two v1 segments and a short last block: 32 MiB + 100000 + 7 bytes. */
#define BIG_LEN (32 * MIB + 100007)

Test(peerdist, v1_beyond_one_segment_any_pieces)
{
    uint8_t *data = make_data(BIG_LEN, 42);
    struct bytes want = ref_v1(data, BIG_LEN, key, keylen);
    struct content_pd_hashes *one = hash_pieces(CONTENT_PD_V1, data, BIG_LEN, 0, 0);
    struct bytes got = ci_of(one, CONTENT_PD_V1, NULL, &secret);

    assert_same(got, want, "v1 of 32 MiB + 100007, one piece");
    cr_assert_eq(content_pd_hashes_segments(one, CONTENT_PD_V1), 2);
    cr_assert_eq(got.n, 18 + 84 * 2 + 32 * (512 + 2));
    for (int round = 0; round < 3; round++) {
        size_t maxp[3] = {65536 * 3 + 5, 4096, 1000003};
        struct content_pd_hashes *hs =
            hash_pieces(CONTENT_PD_V1, data, BIG_LEN, maxp[round], 7 + (uint64_t)round);
        struct bytes b = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
        assert_same(b, got, "v1 in random pieces");
        free(b.p);
        content_pd_hashes_free(hs);
    }
    free(got.p), free(want.p), free(data);
    content_pd_hashes_free(one);
}

Test(peerdist, v2_and_both_versions_any_pieces)
{
    size_t len = 3 * MIB + 12345;
    uint8_t *data = make_data(len, 99);
    struct bytes want2 = ref_v2_fixed(data, len, key, keylen),
                 want1 = ref_v1(data, len, key, keylen);

    for (int round = 0; round < 4; round++) {
        unsigned versions = round < 2 ? CONTENT_PD_V2 : CONTENT_PD_V1 | CONTENT_PD_V2;
        struct content_pd_hashes *hs =
            hash_pieces(versions, data, len, round % 2 ? 70001 : 333, 100 + (uint64_t)round);
        struct bytes b = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
        assert_same(b, want2, "v2 in random pieces");
        free(b.p);
        if (versions & CONTENT_PD_V1) {
            b = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
            assert_same(b, want1, "v1 next to v2 in random pieces");
            free(b.p);
        } else {
            cr_assert_eq(content_pd_ci_size(hs, CONTENT_PD_V1, NULL), CONTENT_PD_ENOVER);
        }
        content_pd_hashes_free(hs);
    }
    free(want1.p), free(want2.p), free(data);
}

Test(peerdist, binding_and_other_keys)
{
    size_t len = 300000;
    uint8_t *data = make_data(len, 5), other_key[3] = {1, 2, 3};
    struct content_pd_secret other = secret_of(other_key, sizeof(other_key));
    struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V1 | CONTENT_PD_V2, data, len, 0, 0);
    struct bytes w1 = ref_v1(data, len, key, keylen), w2 = ref_v2_fixed(data, len, key, keylen);
    struct bytes o1 = ref_v1(data, len, other_key, 3), o2 = ref_v2_fixed(data, len, other_key, 3);

    cr_assert_eq(content_pd_hashes_bind(hs, &secret), 0);
    struct bytes b = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
    assert_same(b, w1, "v1, bound");
    free(b.p);
    b = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
    assert_same(b, w2, "v2, bound");
    free(b.p);
    /* bound to one key, asked with another: the other key's segment secrets */
    b = ci_of(hs, CONTENT_PD_V1, NULL, &other);
    assert_same(b, o1, "v1, other key");
    free(b.p);
    b = ci_of(hs, CONTENT_PD_V2, NULL, &other);
    assert_same(b, o2, "v2, other key");
    free(b.p);
    cr_assert(memcmp(secret.id, other.id, sizeof(secret.id)) != 0);
    free(w1.p), free(w2.p), free(o1.p), free(o2.p), free(data);
    content_pd_hashes_free(hs);
}

Test(peerdist, errors)
{
    uint8_t data[100] = {0}, buf[512];
    struct content_pd_hasher_opts bad = {0, 0, 0}, badseg = {CONTENT_PD_V2, 0, 131073};
    struct content_pd_hasher *h;
    struct content_pd_hashes *hs;
    struct content_range r = {0, 100};

    cr_assert_null(content_pd_hasher_new(&bad));
    cr_assert_null(content_pd_hasher_new(&badseg));
    h = content_pd_hasher_new(NULL);
    cr_assert_eq(content_pd_hasher_update(h, data, sizeof(data)), 0);
    cr_assert_eq(content_pd_hasher_finish(h, &hs), 0);
    cr_assert_eq(content_pd_hasher_update(h, data, 1), CONTENT_PD_EINVAL);
    content_pd_hasher_free(h);
    cr_assert_eq(content_pd_ci_size(hs, CONTENT_PD_V1, &r), CONTENT_PD_ERANGE); /* last = 100 */
    r.first = 50, r.last = 49;
    cr_assert_eq(content_pd_ci_size(hs, CONTENT_PD_V2, &r), CONTENT_PD_ERANGE);
    cr_assert_eq(content_pd_ci_size(hs, (enum content_pd_version)3, NULL), CONTENT_PD_ENOVER);
    ssize_t n = content_pd_ci_size(hs, CONTENT_PD_V1, NULL);
    cr_assert_eq(content_pd_ci_write(hs, CONTENT_PD_V1, NULL, &secret, buf, (size_t)n - 1),
                 CONTENT_PD_ENOSPC);
    cr_assert_eq(content_pd_ci_write(hs, CONTENT_PD_V1, NULL, &secret, buf, sizeof(buf)), n);
    content_pd_hashes_free(hs);
    cr_assert_str_eq(content_pd_strerror(CONTENT_PD_ERANGE), "range outside the content");
}

/* ---- ranges ([MS-PCCRC] 2.3, 2.4 and the examples of section 3) ---- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Decodes a v1 CI's range the way a client does and checks the layout against the whole CI. */
static void check_v1_range(const struct bytes *whole, const struct bytes *ci, uint64_t size,
                           uint64_t start, uint64_t end)
{
    uint32_t off = le32(ci->p + 6), readb = le32(ci->p + 10), nseg = le32(ci->p + 14);
    uint32_t wseg = le32(whole->p + 14);
    const uint8_t *d = ci->p + 18, *blocks = ci->p + 18 + 80 * nseg;
    uint64_t f = le64(d), l = le64(d + 80 * (nseg - 1)), lend = l + le32(d + 80 * (nseg - 1) + 8);
    uint64_t dstart = f + off;
    uint64_t dend = readb == 0 ? lend : nseg == 1 ? dstart + readb : l + readb;

    cr_assert_eq(dstart, start, "range start %llu decodes as %llu", (unsigned long long)start,
                 (unsigned long long)dstart);
    cr_assert_eq(dend, end, "range end %llu decodes as %llu", (unsigned long long)end,
                 (unsigned long long)dend);
    (void)size;
    /* descriptions are the whole CI's, blocks listed from block 0 of each segment */
    size_t first = (size_t)(f / (32 * MIB));
    cr_assert_arr_eq(d, whole->p + 18 + 80 * first, 80 * nseg);
    const uint8_t *wb = whole->p + 18 + 80 * wseg;
    for (size_t i = 0; i < first; i++)
        wb += 4 + 32 * le32(wb);
    for (uint32_t s = 0; s < nseg; s++) {
        uint32_t n = le32(blocks), wn = le32(wb);
        uint64_t seg_start = le64(d + 80 * s);
        uint64_t upto = s + 1 < nseg ? le32(d + 80 * s + 8) : end - seg_start;
        cr_assert_eq(n, (upto + 65535) / 65536, "segment %u lists %u blocks", s, n);
        cr_assert_leq(n, wn);
        cr_assert_arr_eq(blocks + 4, wb + 4, 32 * (size_t)n);
        blocks += 4 + 32 * n;
        wb += 4 + 32 * wn;
    }
    cr_assert_eq((size_t)(blocks - ci->p), ci->n);
}

Test(peerdist, v1_ranges)
{
    /* 125 MiB, as [MS-PCCRC] 3.4 and 3.5 (zeros hash as fast as anything and keep it cheap) */
    size_t len = 125 * MIB;
    uint8_t *data = calloc(1, len);
    struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V1, data, len, 0, 0);
    struct bytes whole = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
    struct {
        uint64_t first, last;
        uint32_t off, readb, nseg;
    } cases[] = {
        /* 3.5: 100 KB .. 124 MB; dwReadBytesInLastSegment 0x1C00000, 448 blocks in the last */
        {102400, 124 * MIB - 1, 102400, 0x1C00000, 4},
        {0, 125 * MIB - 1, 0, 0, 4},                  /* the whole: 0, as IIS sends */
        {0, 32 * MIB - 1, 0, 0, 1},                   /* one full segment */
        {10, 19, 10, 10, 1},                          /* inside one block */
        {32 * MIB - 1, 32 * MIB, 32 * MIB - 1, 1, 2}, /* across a boundary: E - start(L) */
        {96 * MIB + 5, 125 * MIB - 1, 5, 0, 1},       /* the short last segment to its end */
        {70000, 40 * MIB, 70000, 8 * MIB + 1, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct content_range r = {cases[i].first, cases[i].last};
        struct bytes ci = ci_of(hs, CONTENT_PD_V1, &r, &secret);
        cr_assert_eq(le32(ci.p + 6), cases[i].off, "case %zu", i);
        cr_assert_eq(le32(ci.p + 10), cases[i].readb, "case %zu: %u", i, le32(ci.p + 10));
        cr_assert_eq(le32(ci.p + 14), cases[i].nseg, "case %zu", i);
        check_v1_range(&whole, &ci, len, r.first, r.last + 1);
        if (i == 1)
            assert_same(ci, whole, "a range of everything is the whole CI");
        if (i == 0)
            cr_assert_eq(le32(ci.p + 18 + 80 * 4 + 3 * (4 + 32 * 512)), 448);
        free(ci.p);
    }
    free(whole.p), free(data);
    content_pd_hashes_free(hs);

    /* 3.3: a 125 KB (128000-byte) file, bytes 100 KB to the end: offset 102400, 0, 2 blocks */
    data = make_data(128000, 3);
    hs = hash_pieces(CONTENT_PD_V1, data, 128000, 0, 0);
    whole = ci_of(hs, CONTENT_PD_V1, NULL, &secret);
    struct content_range r = {102400, 127999};
    struct bytes ci = ci_of(hs, CONTENT_PD_V1, &r, &secret);
    cr_assert_eq(le32(ci.p + 6), 102400);
    cr_assert_eq(le32(ci.p + 10), 0);
    cr_assert_eq(le32(ci.p + 98), 2);
    check_v1_range(&whole, &ci, 128000, 102400, 128000);
    free(ci.p), free(whole.p), free(data);
    content_pd_hashes_free(hs);
}

Test(peerdist, v2_ranges)
{
    size_t len = 200000;
    uint8_t *data = make_data(len, 8);
    struct content_pd_hashes *hs = hash_pieces(CONTENT_PD_V2, data, len, 0, 0);
    struct bytes whole = ci_of(hs, CONTENT_PD_V2, NULL, &secret);
    struct {
        uint64_t first, last, seg_start, index;
        uint32_t off, nseg;
        uint64_t length;
    } cases[] = {
        {70000, 149999, 65536, 1, 4464, 2, 80000},
        {0, 199999, 0, 0, 0, 4, 0}, /* everything: length 0 */
        {0, 0, 0, 0, 0, 1, 1},
        {196608, 199999, 196608, 3, 0, 1, 3392},
        {65535, 65536, 0, 0, 65535, 2, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct content_range r = {cases[i].first, cases[i].last};
        struct bytes ci = ci_of(hs, CONTENT_PD_V2, &r, &secret);
        cr_assert_eq(ci.n, 36 + 68 * cases[i].nseg, "case %zu", i);
        cr_assert_eq(be(ci.p + 3, 8), cases[i].seg_start, "case %zu", i);
        cr_assert_eq(be(ci.p + 11, 8), cases[i].index, "case %zu", i);
        cr_assert_eq(be(ci.p + 19, 4), cases[i].off, "case %zu", i);
        cr_assert_eq(be(ci.p + 23, 8), cases[i].length, "case %zu", i);
        cr_assert_eq(be(ci.p + 32, 4), 68 * cases[i].nseg, "case %zu", i);
        cr_assert_arr_eq(ci.p + 36, whole.p + 36 + 68 * cases[i].index, 68 * cases[i].nseg);
        free(ci.p);
    }
    free(whole.p), free(data);
    content_pd_hashes_free(hs);
}

/* ---- the server secret ---- */

Test(peerdist, secret_from_hex)
{
    struct content_pd_secret s;
    char err[256];
    uint8_t ks[32], id[32];

    cr_assert_eq(content_pd_secret_from_hex(&s, iis_key_hex, err, sizeof(err)), 0);
    cr_assert_arr_eq(s.id, secret.id, 8);
    /* the id is SHA-256(Ks of CI 1.0) cut to 8 bytes: Ks never leaves the process */
    sha256(key, keylen, ks);
    sha256(ks, 32, id);
    cr_assert_arr_eq(s.id, id, 8);
    cr_assert_eq(content_pd_secret_from_hex(&s, "2A3D", err, sizeof(err)), 0);
    static const char *bad[] = {"", "a", "abc", "0x12", "zz", "12 34", "12:34"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(content_pd_secret_from_hex(&s, bad[i], err, sizeof(err)), -1, "\"%s\"",
                     bad[i]);
        cr_assert(err[0], "\"%s\" gives a message", bad[i]);
    }
    char *longhex = malloc(2 * CONTENT_PD_KEY_MAX + 3);
    memset(longhex, 'a', 2 * CONTENT_PD_KEY_MAX + 2);
    longhex[2 * CONTENT_PD_KEY_MAX + 2] = '\0';
    cr_assert_eq(content_pd_secret_from_hex(&s, longhex, err, sizeof(err)), -1);
    longhex[2 * CONTENT_PD_KEY_MAX] = '\0';
    cr_assert_eq(content_pd_secret_from_hex(&s, longhex, err, sizeof(err)), 0);
    free(longhex);
}

/* An export file made as [MS-PCCRC] 2.5 describes it: AES-256-CBC, PKCS7, zero IV, key
 * SHA-256(password in UTF-16LE without NUL), plaintext SHA-256(secret key) + secret key. */
static size_t make_export(const uint8_t *pw16, size_t pwlen, const uint8_t *k, size_t klen,
                          bool good_hash, uint8_t *out)
{
    uint8_t aes[32], iv[16] = {0}, plain[1100];
    int n1 = 0, n2 = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

    sha256(pw16, pwlen, aes);
    sha256(k, klen, plain);
    if (!good_hash)
        plain[5] ^= 1;
    memcpy(plain + 32, k, klen);
    cr_assert_eq(EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, aes, iv), 1);
    cr_assert_eq(EVP_EncryptUpdate(c, out, &n1, plain, (int)(32 + klen)), 1);
    cr_assert_eq(EVP_EncryptFinal_ex(c, out + n1, &n2), 1);
    EVP_CIPHER_CTX_free(c);
    return (size_t)(n1 + n2);
}

static void ascii16(const char *s, uint8_t *out, size_t *len)
{
    for (*len = 0; *s; s++) {
        out[(*len)++] = (uint8_t)*s;
        out[(*len)++] = 0;
    }
}

Test(peerdist, export_file)
{
    uint8_t pw16[64], file[1200];
    size_t pwlen, n;
    struct content_pd_secret s;
    char err[256];

    /* the password of the netsh documentation's example */
    ascii16("Key file password", pw16, &pwlen);
    n = make_export(pw16, pwlen, key, keylen, true, file);
    cr_assert_eq(n, 80); /* 32 + 32 bytes and a block of padding, as a real export */
    cr_assert_eq(content_pd_secret_from_export(&s, file, n, "Key file password", err, sizeof(err)),
                 0, "%s", err);
    cr_assert_arr_eq(&s, &secret, sizeof(s));
    /* the same through a file */
    char path[] = "/tmp/test_peerdist_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, file, n), (ssize_t)n);
    close(fd);
    memset(&s, 0, sizeof(s));
    cr_assert_eq(content_pd_secret_load_export(&s, path, "Key file password", err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_arr_eq(&s, &secret, sizeof(s));
    /* wrong password */
    cr_assert_eq(content_pd_secret_load_export(&s, path, "key file password", err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, path) && strstr(err, "wrong password"), "%s", err);
    unlink(path);
    cr_assert_eq(content_pd_secret_load_export(&s, path, "x", err, sizeof(err)), -1);
    cr_assert(strstr(err, "No such file"), "%s", err);
    /* sizes that no export has */
    cr_assert_eq(content_pd_secret_from_export(&s, file, 79, "Key file password", err, sizeof(err)),
                 -1);
    cr_assert_eq(content_pd_secret_from_export(&s, file, 32, "Key file password", err, sizeof(err)),
                 -1);
    /* padding right but the hash wrong: tampered, or the 1-in-256 wrong password */
    n = make_export(pw16, pwlen, key, keylen, false, file);
    cr_assert_eq(content_pd_secret_from_export(&s, file, n, "Key file password", err, sizeof(err)),
                 -1);
    /* a password outside ASCII, and one outside the BMP (a surrogate pair in UTF-16) */
    static const uint8_t pw2[] = {'p', 0, 0xe4, 0, 0xdf, 0, 0xac, 0x20, 0x34, 0xd8, 0x1e, 0xdd};
    uint8_t longkey[100];
    for (size_t i = 0; i < sizeof(longkey); i++)
        longkey[i] = (uint8_t)(i * 7);
    n = make_export(pw2, sizeof(pw2), longkey, sizeof(longkey), true, file);
    cr_assert_eq(content_pd_secret_from_export(&s, file, n,
                                               "p\xc3\xa4\xc3\x9f\xe2\x82\xac\xf0\x9d\x84\x9e", err,
                                               sizeof(err)),
                 0, "%s", err);
    struct content_pd_secret want = secret_of(longkey, sizeof(longkey));
    cr_assert_arr_eq(&s, &want, sizeof(s));
    /* invalid UTF-8: a lone continuation byte, an overlong '/', a UTF-8-encoded surrogate */
    static const char *bad[] = {"a\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(content_pd_secret_from_export(&s, file, n, bad[i], err, sizeof(err)), -1);
}

/* ---- the HTTP decision ---- */

struct decide_case {
    const char *what;
    const char *ae, *pd, *pdex; /* NULL: absent */
    unsigned flags;             /* the request flags that are off, see below */
    unsigned versions;          /* policy; 0 = both */
    bool range_ci;
    enum content_pd_action action;
    enum content_pd_version ci;
    const char *peerdist; /* the X-P2P-PeerDist to send, for SERVE */
};

#define NOT_GET 1u
#define NOT_FULL 2u
#define NO_VALIDATOR 4u
#define RANGE 8u
#define NO_HASHES 16u
#define EMPTY 32u
#define OFF 64u

#define AE "gzip, deflate, peerdist"
#define W7 "Version=1.0"
#define W8 "Version=1.1"
#define W8EX "MinContentInformation=1.0, MaxContentInformation=2.0"
#define S1 CONTENT_PD_SERVE, CONTENT_PD_V1
#define S2 CONTENT_PD_SERVE, CONTENT_PD_V2
#define ID CONTENT_PD_IDENTITY, 0, NULL
#define MH CONTENT_PD_IDENTITY_MAKE_HASH, 0, NULL
#define H10 "Version=1.0, ContentLength=99710"
#define H11 "Version=1.1, ContentLength=99710"

static const struct decide_case decide_cases[] = {
    /* the clients */
    {"Windows 7", AE, W7, NULL, 0, 0, false, S1, H10},
    {"Windows 8+", AE, W8, W8EX, 0, 0, false, S2, H11},
    {"Windows 8+, gateway CI 1.0 only", AE, W8, W8EX, 0, CONTENT_PD_V1, false, S1, H11},
    {"Windows 8+, gateway CI 2.0 only", AE, W8, W8EX, 0, CONTENT_PD_V2, false, S2, H11},
    {"iPXE", "peerdist", W8, W8EX, 0, 0, false, S2, H11},
    {"iPXE block fallback", NULL, "Version=1.1, MissingDataRequest=true", NULL, RANGE, 0, false,
     ID},
    /* 1. method, entity */
    {"HEAD", AE, W7, NULL, NOT_GET, 0, false, ID},
    {"304 or error", AE, W7, NULL, NOT_FULL, 0, false, ID},
    {"empty entity", AE, W7, NULL, EMPTY, 0, false, ID},
    {"peerdist off", AE, W7, NULL, OFF, 0, false, ID},
    /* 2. Accept-Encoding */
    {"no Accept-Encoding", NULL, W7, NULL, 0, 0, false, ID},
    {"gzip only", "gzip, deflate", W7, NULL, 0, 0, false, ID},
    {"q=0", "gzip, peerdist;q=0", W7, NULL, 0, 0, false, ID},
    {"q=0.000", "peerdist;q=0.000", W7, NULL, 0, 0, false, ID},
    {"q=0.001", "peerdist;q=0.001", W7, NULL, 0, 0, false, S1, H10},
    {"Q=1.0 with spaces", "peerdist ; Q=1.0", W7, NULL, 0, 0, false, S1, H10},
    {"mixed case", "PeerDist", W7, NULL, 0, 0, false, S1, H10},
    {"empty elements", " , ,peerdist,", W7, NULL, 0, 0, false, S1, H10},
    {"tab", "gzip,\tpeerdist", W7, NULL, 0, 0, false, S1, H10},
    {"q=1.5", "peerdist;q=1.5", W7, NULL, 0, 0, false, ID},
    {"q=0.1234", "peerdist;q=0.1234", W7, NULL, 0, 0, false, ID},
    {"q empty", "peerdist;q=", W7, NULL, 0, 0, false, ID},
    {"other parameter", "peerdist;level=1", W7, NULL, 0, 0, false, ID},
    {"broken other coding", "gzip;;q=1, peerdist", W7, NULL, 0, 0, false, ID},
    {"peerdist twice", "peerdist, peerdist;q=0", W7, NULL, 0, 0, false, ID},
    {"wildcard is not enough", "*", W7, NULL, 0, 0, false, ID},
    {"a longer token", "peerdistx", W7, NULL, 0, 0, false, ID},
    {"empty Accept-Encoding", "", W7, NULL, 0, 0, false, ID},
    /* 3. X-P2P-PeerDist Version */
    {"no X-P2P-PeerDist", AE, NULL, NULL, 0, 0, false, ID},
    {"empty X-P2P-PeerDist", AE, "", NULL, 0, 0, false, ID},
    {"Version=999.999", AE, "Version=999.999", NULL, 0, 0, false, ID},
    {"Version=1.2", AE, "Version=1.2", NULL, 0, 0, false, ID},
    {"Version=2.0", AE, "Version=2.0", NULL, 0, 0, false, ID},
    {"Version=1.01 is 1.1", AE, "Version=1.01", NULL, 0, 0, false, S1, H11},
    {"Version=1.10 is not 1.1", AE, "Version=1.10", NULL, 0, 0, false, ID},
    {"huge numbers", AE, "Version=99999999999999999999.0", NULL, 0, 0, false, ID},
    {"Version=1", AE, "Version=1", NULL, 0, 0, false, ID},
    {"Version=1.0.0", AE, "Version=1.0.0", NULL, 0, 0, false, ID},
    {"Version=.1", AE, "Version=.1", NULL, 0, 0, false, ID},
    {"spaces around =", AE, "Version = 1.0", NULL, 0, 0, false, ID},
    {"lower-case name", AE, "version=1.0", NULL, 0, 0, false, S1, H10},
    {"OWS around the value", AE, " \tVersion=1.0 ", NULL, 0, 0, false, S1, H10},
    {"no OWS after comma", AE, "Version=1.1,MissingDataRequest=false", NULL, 0, 0, false, S1, H11},
    {"OWS before comma", AE, "Version=1.1 ,MissingDataRequest=false", NULL, 0, 0, false, ID},
    {"trailing comma", AE, "Version=1.1,", NULL, 0, 0, false, ID},
    {"empty parameter", AE, "Version=1.1,, ContentLength=5", NULL, 0, 0, false, ID},
    {"Version twice", AE, "Version=1.1, Version=1.0", NULL, 0, 0, false, ID},
    {"no Version", AE, "MissingDataRequest=false", NULL, 0, 0, false, ID},
    {"unknown parameter ignored", AE, "Version=1.1, Foo=bar", NULL, 0, 0, false, S1, H11},
    {"quoted value", AE, "Version=\"1.1\"", NULL, 0, 0, false, ID},
    {"ContentLength in a request", AE, "Version=1.0, ContentLength=12", NULL, 0, 0, false, S1, H10},
    {"bad ContentLength", AE, "Version=1.0, ContentLength=x", NULL, 0, 0, false, ID},
    /* 4. MissingDataRequest */
    {"MissingDataRequest=true", AE, "Version=1.1, MissingDataRequest=true", NULL, 0, 0, false, ID},
    {"MissingDataRequest=TRUE", AE, "Version=1.1, MissingDataRequest=TRUE", NULL, 0, 0, false, ID},
    {"MissingDataRequest=false", AE, "Version=1.1, MissingDataRequest=false", W8EX, 0, 0, false, S2,
     H11},
    {"MissingDataRequest=maybe", AE, "Version=1.1, MissingDataRequest=maybe", NULL, 0, 0, false,
     ID},
    {"missing data before hashes", AE, "Version=1.1, MissingDataRequest=true", NULL, NO_HASHES, 0,
     false, ID},
    /* 5. X-P2P-PeerDistEx */
    {"CI 900.0-999.0", AE, W8, "MinContentInformation=900.0, MaxContentInformation=999.0", 0, 0,
     false, ID},
    {"CI 2.0 only", AE, W8, "MinContentInformation=2.0, MaxContentInformation=2.0", 0, 0, false, S2,
     H11},
    {"CI 2.0 only, gateway 1.0 only", AE, W8,
     "MinContentInformation=2.0, MaxContentInformation=2.0", 0, CONTENT_PD_V1, false, ID},
    {"CI 1.0 only", AE, W8, "MinContentInformation=1.0, MaxContentInformation=1.0", 0, 0, false, S1,
     H11},
    {"CI 1.0-3.0", AE, W8, "MinContentInformation=1.0, MaxContentInformation=3.0", 0, 0, false, S2,
     H11},
    {"CI 1.5-2.5", AE, W8, "MinContentInformation=1.5, MaxContentInformation=2.5", 0, 0, false, S2,
     H11},
    {"Max only", AE, W8, "MaxContentInformation=2.0", 0, 0, false, S2, H11},
    {"Min only", AE, W8, "MinContentInformation=2.0", 0, 0, false, S2, H11},
    {"Min above Max", AE, W8, "MinContentInformation=2.0, MaxContentInformation=1.0", 0, 0, false,
     ID},
    {"HashRequest only", AE, W8, "HashRequest=true", 0, 0, false, S1, H11},
    {"HashRequest follow-up", AE, W8, W8EX ", HashRequest=true", 0, 0, false, S2, H11},
    {"case-insensitive names", AE, W8, "mincontentinformation=1.0, MAXCONTENTINFORMATION=2.0", 0, 0,
     false, S2, H11},
    {"malformed Min", AE, W8, "MinContentInformation=1, MaxContentInformation=2.0", 0, 0, false,
     ID},
    {"Max twice", AE, W8, "MaxContentInformation=2.0, MaxContentInformation=1.0", 0, 0, false, ID},
    {"empty X-P2P-PeerDistEx", AE, W8, "", 0, 0, false, ID},
    {"no PeerDistEx, gateway 2.0 only", AE, W8, NULL, 0, CONTENT_PD_V2, false, ID},
    {"Windows 7 with PeerDistEx", AE, W7, W8EX, 0, 0, false, S2, H10},
    /* 6. validator */
    {"no ETag or Last-Modified", AE, W8, W8EX, NO_VALIDATOR, 0, false, ID},
    /* 7. hashes not ready */
    {"no hashes, 1.1 client", AE, W8, W8EX, NO_HASHES, 0, false, MH},
    {"no hashes, 1.0 client", AE, W7, NULL, NO_HASHES, 0, false, ID},
    /* 8. Range */
    {"Range, default", AE, W8, W8EX, RANGE, 0, false, ID},
    {"Range, range CI on", AE, W8, W8EX, RANGE, 0, true, S2, H11},
};

Test(peerdist, decide_table)
{
    for (size_t i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
        const struct decide_case *c = &decide_cases[i];
        struct content_pd_request rq = {
            .accept_encoding = c->ae,
            .accept_encoding_len = c->ae ? strlen(c->ae) : 0,
            .peerdist = c->pd,
            .peerdist_len = c->pd ? strlen(c->pd) : 0,
            .peerdist_ex = c->pdex,
            .peerdist_ex_len = c->pdex ? strlen(c->pdex) : 0,
            .entity_length = c->flags & EMPTY ? 0 : 99710,
            .is_get = !(c->flags & NOT_GET),
            .is_full_entity = !(c->flags & NOT_FULL),
            .has_validator = !(c->flags & NO_VALIDATOR),
            .has_range = c->flags & RANGE,
            .has_hashes = !(c->flags & NO_HASHES),
        };
        struct content_pd_policy p = {c->flags & OFF ? 0
                                      : c->versions  ? c->versions
                                                     : CONTENT_PD_V1 | CONTENT_PD_V2,
                                      c->range_ci};
        struct content_pd_decision d;
        enum content_pd_action a = content_pd_decide(&rq, &p, &d);

        cr_assert_eq(a, c->action, "%s: action %d (%s), want %d", c->what, a, d.reason, c->action);
        cr_assert_eq(d.action, a);
        cr_assert_not_null(d.reason, "%s", c->what);
        if (a == CONTENT_PD_SERVE) {
            cr_assert_eq(d.ci_version, c->ci, "%s: CI version %d", c->what, d.ci_version);
            cr_assert_str_eq(d.peerdist, c->peerdist, "%s", c->what);
            cr_assert(d.vary, "%s", c->what);
            cr_assert_eq(d.is_range, rq.has_range, "%s", c->what);
            cr_assert_null(d.peerdist_ex, "%s", c->what);
        } else if (a == CONTENT_PD_IDENTITY_MAKE_HASH) {
            cr_assert_str_eq(d.peerdist_ex, "MakeHashRequest=true", "%s", c->what);
        } else {
            cr_assert_null(d.peerdist_ex, "%s", c->what);
        }
        /* Vary whenever the choice looked at Accept-Encoding */
        if (c->flags & (NOT_GET | NOT_FULL | EMPTY | OFF))
            cr_assert_not(d.vary, "%s", c->what);
        else
            cr_assert(d.vary, "%s", c->what);
    }
}

Test(peerdist, decide_reads_only_the_given_lengths)
{
    /* header values need not be NUL-terminated: the bytes past len must not count */
    const char ae[] = "peerdist;q=0", pd[] = "Version=1.1, MissingDataRequest=true";
    struct content_pd_request rq = {
        .accept_encoding = ae,
        .accept_encoding_len = 8, /* "peerdist" */
        .peerdist = pd,
        .peerdist_len = 11, /* "Version=1.1" */
        .entity_length = 10,
        .is_get = true,
        .is_full_entity = true,
        .has_validator = true,
        .has_hashes = true,
    };
    struct content_pd_policy p = {CONTENT_PD_V1, false};
    struct content_pd_decision d;

    cr_assert_eq(content_pd_decide(&rq, &p, &d), CONTENT_PD_SERVE, "%s", d.reason);
    cr_assert_str_eq(d.peerdist, "Version=1.1, ContentLength=10");
}

/* ---- the hashes on disk (peerdist-save.c) ---- */

static struct content_pd_hashes *hash_bytes(const uint8_t *data, size_t len, unsigned versions)
{
    struct content_pd_hasher_opts o = {versions, len, 0};
    struct content_pd_hasher *h = content_pd_hasher_new(&o);
    struct content_pd_hashes *out = NULL;
    cr_assert_not_null(h);
    cr_assert_eq(content_pd_hasher_update(h, data, len), 0);
    cr_assert_eq(content_pd_hasher_finish(h, &out), 0);
    content_pd_hasher_free(h);
    return out;
}

Test(peerdist, saved_hashes_give_the_same_cis)
{
    size_t sizes[] = {0, 1, 65536, 65537, 200000, 33u * MIB + 5};
    struct content_pd_secret s;
    char err[128];
    cr_assert_eq(content_pd_secret_from_hex(&s, iis_key_hex, err, sizeof(err)), 0);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = sizes[k];
        uint8_t *data = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)(i * 7 + i / 65536);
        struct content_pd_hashes *h = hash_bytes(data, len, CONTENT_PD_V1 | CONTENT_PD_V2), *back;
        uint8_t *saved = NULL;
        ssize_t n = content_pd_hashes_save(h, &saved);
        cr_assert_gt(n, 0);
        cr_assert_eq(content_pd_hashes_load(saved, (size_t)n, &back), 0, "size %zu", len);
        cr_assert_eq(content_pd_hashes_size(back), len);
        for (unsigned v = CONTENT_PD_V1; v <= CONTENT_PD_V2; v <<= 1) {
            ssize_t a = content_pd_ci_size(h, v, NULL), b = content_pd_ci_size(back, v, NULL);
            cr_assert_eq(a, b);
            uint8_t *ca = malloc((size_t)a + 1), *cb = malloc((size_t)b + 1);
            cr_assert_eq(content_pd_ci_write(h, v, NULL, &s, ca, (size_t)a), a);
            cr_assert_eq(content_pd_ci_write(back, v, NULL, &s, cb, (size_t)b), b);
            cr_assert_eq(memcmp(ca, cb, (size_t)a), 0, "CI v%u of %zu bytes", v, len);
            free(ca);
            free(cb);
        }
        content_pd_hashes_free(back);
        /* every truncation and a flipped count are refused */
        for (ssize_t cut = 0; cut < n; cut += n / 7 + 1)
            cr_assert_neq(content_pd_hashes_load(saved, (size_t)cut, &back), 0);
        saved[20] ^= 1; /* nblocks */
        cr_assert_neq(content_pd_hashes_load(saved, (size_t)n, &back), 0);
        free(saved);
        content_pd_hashes_free(h);
        free(data);
    }
}
