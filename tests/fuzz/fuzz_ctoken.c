/* Content access tokens (the query string of content requests): any bytes, no key accepts a
 * forgery, and what is parsed stays inside its fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "auth.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct auth_site_keys keys;
    if (!keys.n) {
        keys.signers[0].key = EVP_RSA_gen(1024);
        keys.n = keys.signers[0].key ? 1 : 0;
    }
    const struct auth_content_policy policy = {86400, 300};
    struct auth_content_token t;
    enum auth_token_error e =
        auth_content_token_verify((const char *)data, size, &policy, &keys, 1795000000, &t);
    if (e == AUTH_TOKEN_OK)
        abort(); /* nobody here holds the key */
    if (strnlen(t.package, sizeof(t.package)) == sizeof(t.package) ||
        strnlen(t.client, sizeof(t.client)) == sizeof(t.client) ||
        strnlen(t.issuer, sizeof(t.issuer)) == sizeof(t.issuer))
        abort();
    return 0;
}
