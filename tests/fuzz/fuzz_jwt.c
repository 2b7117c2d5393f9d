/* JWT decoding and JWKS parsing on arbitrary bytes. */
#include <stdint.h>
#include <string.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_jwt jwt;
    if (auth_jwt_decode((const char *)data, size, &jwt) == AUTH_TOKEN_OK) {
        if (jwt.signing_input_len > size || jwt.sig_len > size)
            __builtin_trap();
        auth_jwt_clear(&jwt);
    }
    char err[256];
    struct auth_jwks *set = auth_jwks_parse((const char *)data, size, err, sizeof(err));
    auth_jwks_free(set);
    return 0;
}
