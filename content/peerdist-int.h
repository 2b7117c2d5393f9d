/* PeerDist internals shared by peerdist.c (hashing, CI writing) and peerdist-save.c (the
 * hashes on disk beside cached content). */
#ifndef CMG_CONTENT_PEERDIST_INT_H
#define CMG_CONTENT_PEERDIST_INT_H

#include "content.h"

#define HL CONTENT_PD_HASH_LEN

struct pd_seg1 {
    uint8_t hod[HL];
    uint8_t kp[HL]; /* valid while the hashes are bound */
};

struct pd_seg2 {
    uint64_t offset;
    uint32_t len;
    uint8_t hod[HL];
    uint8_t kp[HL];
};

struct content_pd_hashes {
    uint64_t size;
    unsigned versions;
    uint8_t (*blocks)[HL]; /* v1 block hashes of every segment, in content order */
    size_t nblocks, cap_blocks;
    struct pd_seg1 *seg1;
    size_t nseg1, cap_seg1;
    struct pd_seg2 *seg2;
    size_t nseg2, cap_seg2;
    bool is_bound;
    uint8_t key_id[8]; /* id of the secret the kp fields were made with */
};

#endif
