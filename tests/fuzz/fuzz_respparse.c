/* Upstream responses on arbitrary bytes, fed in pieces whose sizes come from the input: the
 * reader never reads outside its input, reports body bytes inside it, and ends in an error or
 * a complete response, never in a loop. First byte: flags (bit 0: answer to HEAD), second: the
 * piece size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "respparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct respparse rp;
    respparse_init(&rp, data[0] & 1);
    size_t step = data[1] ? data[1] : 1;
    const char *in = (const char *)data + 2;
    size_t len = size - 2, off = 0;
    unsigned calls = 0;
    enum respparse_event ev = RESPPARSE_NEED_MORE;
    /* pieces of `step` bytes; after an event the same piece's rest (maybe nothing) is given
     * again until the reader says NEED_MORE, as its contract asks */
    size_t piece_end = 0;
    while (ev != RESPPARSE_ERROR && ev != RESPPARSE_DONE) {
        if (ev == RESPPARSE_NEED_MORE) {
            if (off >= len)
                break;
            piece_end = off + (len - off < step ? len - off : step);
        }
        size_t n = piece_end - off, used = 0;
        ev = respparse_feed(&rp, in + off, n, &used);
        if (used > n || (ev == RESPPARSE_NEED_MORE && used != n))
            abort(); /* NEED_MORE means every byte given was taken */
        if (ev == RESPPARSE_BODY && (rp.body < in || rp.body + rp.body_len > in + len))
            abort(); /* body bytes point into the input */
        if (ev == RESPPARSE_HEAD) {
            size_t rl;
            const char *reason = respparse_reason(&rp, &rl);
            for (size_t i = 0; i < rl; i++)
                if (reason[i] == '\r' || reason[i] == '\n')
                    abort();
        }
        off += used;
        if (++calls > 4 * size + 16)
            abort(); /* events without progress, for ever */
    }
    if (ev != RESPPARSE_ERROR && ev != RESPPARSE_DONE)
        (void)respparse_eof(&rp);
    respparse_deinit(&rp);
    return 0;
}
