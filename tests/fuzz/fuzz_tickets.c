/* The ticket key file parser on arbitrary bytes. */
#include <stdint.h>

#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tls_ticket_keys keys;
    char err[256];
    tls_ticket_keys_parse((const char *)data, size, &keys, err, sizeof(err));
    return 0;
}
