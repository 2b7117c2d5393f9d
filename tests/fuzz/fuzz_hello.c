/* Both tunnel hello parsers on arbitrary bytes; what parses must encode and parse again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct tunnel_gateway_hello h;
    tunnel_gateway_hello_parse((const char *)data, size, &h, err, sizeof(err));
    struct tunnel_hello_reply *r = malloc(sizeof(*r));
    if (tunnel_hello_reply_parse((const char *)data, size, r, err, sizeof(err)) == 0) {
        char *json = tunnel_hello_reply_encode(r);
        struct tunnel_hello_reply *back = malloc(sizeof(*back));
        if (!json || tunnel_hello_reply_parse(json, strlen(json), back, err, sizeof(err)) != 0 ||
            back->nendpoints != r->nendpoints)
            abort();
        free(back);
        free(json);
    }
    free(r);
    return 0;
}
