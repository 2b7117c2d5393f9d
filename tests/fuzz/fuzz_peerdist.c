/* The PeerDist decision on arbitrary header values: it never reads outside them, and what it
 * decides is consistent with the request (a CI only for a GET of a whole entity with hashes,
 * peerdist accepted, a version the gateway offers). Input: byte 0 request flags, byte 1 policy
 * and which headers are present, then Accept-Encoding, X-P2P-PeerDist and X-P2P-PeerDistEx
 * separated by '\n' (each copied to a buffer of its exact size, so that ASan sees over-reads). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"

static char *field(const uint8_t **p, const uint8_t *end, size_t *len)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    const uint8_t *stop = nl ? nl : end;
    char *v;

    *len = (size_t)(stop - *p);
    v = malloc(*len ? *len : 1);
    if (!v)
        abort();
    memcpy(v, *p, *len);
    *p = nl ? nl + 1 : end;
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const uint8_t *p = data + 2, *end = data + size;
    uint8_t f = data[0], g = data[1];
    size_t ae_len, pd_len, ex_len;
    char *ae = field(&p, end, &ae_len), *pd = field(&p, end, &pd_len);
    char *ex = field(&p, end, &ex_len);
    struct content_pd_request rq = {
        .accept_encoding = g & 4 ? ae : NULL,
        .accept_encoding_len = ae_len,
        .peerdist = g & 8 ? pd : NULL,
        .peerdist_len = pd_len,
        .peerdist_ex = g & 16 ? ex : NULL,
        .peerdist_ex_len = ex_len,
        .entity_length = f & 128 ? 0 : 1000,
        .is_get = f & 1,
        .is_full_entity = f & 2,
        .has_validator = f & 4,
        .has_range = f & 8,
        .has_hashes = f & 16,
    };
    struct content_pd_policy pol = {g & 3, f & 32};
    struct content_pd_decision d;
    enum content_pd_action a = content_pd_decide(&rq, &pol, &d);

    if (a != d.action || !d.reason)
        abort();
    if (a == CONTENT_PD_SERVE) {
        if (!rq.is_get || !rq.is_full_entity || !rq.has_validator || !rq.has_hashes ||
            rq.entity_length == 0 || !rq.accept_encoding || !rq.peerdist ||
            (rq.has_range && !pol.range_ci) || d.is_range != rq.has_range ||
            !(d.ci_version & pol.versions) || !d.vary || d.peerdist_ex ||
            (strcmp(d.peerdist, "Version=1.0, ContentLength=1000") != 0 &&
             strcmp(d.peerdist, "Version=1.1, ContentLength=1000") != 0))
            abort();
    } else if (a == CONTENT_PD_IDENTITY_MAKE_HASH) {
        if (rq.has_hashes || !d.peerdist_ex || strcmp(d.peerdist_ex, "MakeHashRequest=true"))
            abort();
    } else if (a != CONTENT_PD_IDENTITY || d.peerdist_ex) {
        abort();
    }
    free(ae);
    free(pd);
    free(ex);
    return 0;
}
