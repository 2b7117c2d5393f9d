/* Who a client proved to be, as headers for the connection point. The gateway alone sets
 * them: any header of the same family that a client sends is removed first. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "auth.h"

const char *auth_method_name(enum auth_method m)
{
    static const char *names[] = {"none", "client-certificate", "entra-token", "site-token",
                                  "bulk-token"};
    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "none";
}

bool auth_is_identity_header(const char *name, size_t len)
{
    /* "X_CMG_..." too: servers that map headers to variables (HTTP_X_CMG_...) make '_' and
     * '-' the same */
    static const char prefix[] = AUTH_IDENTITY_PREFIX;
    if (len < sizeof(prefix) - 1)
        return false;
    for (size_t i = 0; i < sizeof(prefix) - 1; i++) {
        char a = name[i] == '_' ? '-' : name[i], b = prefix[i];
        if ((a | 0x20) != (b | 0x20) || (a == '-') != (b == '-'))
            return false;
    }
    return true;
}

/* Copies s into out with anything that could end or bend a header line replaced by '?'. */
static void auth_header_safe(char *out, size_t len, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 1 < len; s++)
        out[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    out[o] = '\0';
}

void auth_identity_from_cert(struct auth_identity *id, X509 *cert)
{
    memset(id, 0, sizeof(*id));
    id->method = AUTH_METHOD_CLIENT_CERT;
    unsigned char md[20];
    unsigned int l = 0;
    if (X509_digest(cert, EVP_sha1(), md, &l) && l == 20)
        for (int i = 0; i < 20; i++)
            snprintf(id->thumbprint + 2 * i, 3, "%02X", md[i]);
    char buf[sizeof(id->subject)];
    BIO *b = BIO_new(BIO_s_mem());
    for (int k = 0; b && k < 2; k++) {
        (void)BIO_reset(b);
        X509_NAME_print_ex(b, k ? X509_get_issuer_name(cert) : X509_get_subject_name(cert), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
        int n = BIO_read(b, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        auth_header_safe(k ? id->issuer : id->subject, sizeof(id->subject), buf);
    }
    BIO_free(b);
}

size_t auth_identity_headers(const struct auth_identity *id, char *buf, size_t len)
{
    /* every value is made safe here, whoever filled the struct */
    char v[8][sizeof(id->subject)];
    auth_header_safe(v[0], sizeof(v[0]), id->thumbprint);
    auth_header_safe(v[1], sizeof(v[1]), id->subject);
    auth_header_safe(v[2], sizeof(v[2]), id->issuer);
    auth_header_safe(v[3], sizeof(v[3]), id->token_subject);
    auth_header_safe(v[4], sizeof(v[4]), id->token_type);
    auth_header_safe(v[5], sizeof(v[5]), id->device_id);
    auth_header_safe(v[6], sizeof(v[6]), id->tenant);
    auth_header_safe(v[7], sizeof(v[7]), id->app_id);
    struct {
        const char *name, *value;
    } h[] = {
        {"Auth-Method", auth_method_name(id->method)},
        {"Client-Cert-Thumbprint", v[0]},
        {"Client-Cert-Subject", v[1]},
        {"Client-Cert-Issuer", v[2]},
        {"Token-Subject", v[3]},
        {"Token-Type", v[4]},
        {"Device-Id", v[5]},
        {"Tenant-Id", v[6]},
        {"Client-App-Id", v[7]},
    };
    size_t o = 0;
    if (!buf || len == 0)
        return 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        if (!h[i].value[0])
            continue;
        int n =
            snprintf(buf + o, len - o, "%s%s: %s\r\n", AUTH_IDENTITY_PREFIX, h[i].name, h[i].value);
        if (n < 0 || (size_t)n >= len - o) {
            buf[o] = '\0'; /* never a cut line */
            break;
        }
        o += (size_t)n;
    }
    return o;
}
