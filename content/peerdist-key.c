/* The PeerDist server secret: from the secret key in hex, or from a `netsh branchcache exportkey`
 * file. [MS-PCCRC] 2.5: the file is AES-256-CBC (PKCS7 padding, all-zero IV) under
 * SHA-256(password as UTF-16LE, no NUL) of SHA-256(secret key) + secret key. Ks is SHA-256 of the
 * key for CI 1.0 and the first half of its SHA-512 for CI 2.0. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "content.h"

/* A password's UTF-16 form: at most this many bytes (512 characters outside the BMP). */
#define PD_PASSWORD_MAX 2048

static int pd_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int pd_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void content_pd_secret_clear(struct content_pd_secret *s)
{
    OPENSSL_cleanse(s, sizeof(*s));
}

int content_pd_secret_from_key(struct content_pd_secret *s, const uint8_t *key, size_t len,
                               char *err, size_t errlen)
{
    uint8_t full[64], id[32];
    int ok;

    if (len == 0 || len > CONTENT_PD_KEY_MAX)
        return pd_fail(err, errlen, "the secret key has %zu bytes; it must have 1 to %d", len,
                       CONTENT_PD_KEY_MAX);
    /* The id is a hash of Ks: it names the key in logs without revealing it. */
    ok = EVP_Digest(key, len, s->_ks_v1, NULL, EVP_sha256(), NULL) == 1 &&
         EVP_Digest(key, len, full, NULL, EVP_sha512(), NULL) == 1 &&
         EVP_Digest(s->_ks_v1, sizeof(s->_ks_v1), id, NULL, EVP_sha256(), NULL) == 1;
    memcpy(s->_ks_v2, full, sizeof(s->_ks_v2));
    memcpy(s->id, id, sizeof(s->id));
    OPENSSL_cleanse(full, sizeof(full));
    if (!ok) {
        content_pd_secret_clear(s);
        return pd_fail(err, errlen, "hashing the secret key failed");
    }
    return 0;
}

static int pd_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int content_pd_secret_from_hex(struct content_pd_secret *s, const char *hex, char *err,
                               size_t errlen)
{
    uint8_t key[CONTENT_PD_KEY_MAX];
    size_t n = strlen(hex), i;
    int rc;

    if (n == 0 || n % 2 || n / 2 > CONTENT_PD_KEY_MAX)
        return pd_fail(err, errlen,
                       "the secret key is %zu hex digits; it must be an even number from 2 to %d",
                       n, 2 * CONTENT_PD_KEY_MAX);
    for (i = 0; i < n; i += 2) {
        int hi = pd_hexval(hex[i]), lo = pd_hexval(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(key, sizeof(key));
            return pd_fail(err, errlen,
                           "the secret key is not hexadecimal (character %zu); give its bytes "
                           "as 0-9a-f without separators",
                           i + (hi < 0 ? 1 : 2));
        }
        key[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    rc = content_pd_secret_from_key(s, key, n / 2, err, errlen);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* UTF-8 to UTF-16LE, without a terminator, as Windows hands netsh its arguments. Returns the
 * byte count, or -1 for invalid UTF-8 (overlong forms, surrogates) or a result over cap. */
static ssize_t pd_utf16le(const char *in, uint8_t *out, size_t cap)
{
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
    const unsigned char *p = (const unsigned char *)in;
    size_t n = 0;

    while (*p) {
        uint32_t cp;
        int extra;
        if (*p < 0x80) {
            cp = *p, extra = 0;
        } else if ((*p & 0xE0) == 0xC0) {
            cp = *p & 0x1Fu, extra = 1;
        } else if ((*p & 0xF0) == 0xE0) {
            cp = *p & 0x0Fu, extra = 2;
        } else if ((*p & 0xF8) == 0xF0) {
            cp = *p & 0x07u, extra = 3;
        } else {
            return -1;
        }
        p++;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xC0) != 0x80) /* also stops at the terminating NUL */
                return -1;
            cp = cp << 6 | (*p & 0x3Fu);
        }
        if (cp < least[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000, hi = 0xD800 + (v >> 10), lo = 0xDC00 + (v & 0x3FF);
            if (cap - n < 4)
                return -1;
            out[n++] = (uint8_t)hi;
            out[n++] = (uint8_t)(hi >> 8);
            out[n++] = (uint8_t)lo;
            out[n++] = (uint8_t)(lo >> 8);
        } else {
            if (cap - n < 2)
                return -1;
            out[n++] = (uint8_t)cp;
            out[n++] = (uint8_t)(cp >> 8);
        }
    }
    return (ssize_t)n;
}

int content_pd_secret_from_export(struct content_pd_secret *s, const uint8_t *file, size_t len,
                                  const char *password, char *err, size_t errlen)
{
    static const uint8_t iv[16]; /* all zero, [MS-PCCRC] 2.5 */
    uint8_t pw[PD_PASSWORD_MAX], aes_key[32], plain[CONTENT_PD_EXPORT_MAX + 16], check[32];
    EVP_CIPHER_CTX *c = NULL;
    ssize_t pwlen;
    int n1 = 0, n2 = 0, rc = -1;

    /* SHA-256 of the key, at least one key byte, padding: three AES blocks at least. */
    if (len < 48 || len % 16 || len > CONTENT_PD_EXPORT_MAX)
        return pd_fail(err, errlen,
                       "%zu bytes is not the size of a netsh branchcache exportkey file (a "
                       "multiple of 16 from 48 to %d)",
                       len, CONTENT_PD_EXPORT_MAX);
    pwlen = pd_utf16le(password, pw, sizeof(pw));
    if (pwlen < 0)
        return pd_fail(err, errlen, "the password is not valid UTF-8 or is longer than %d bytes",
                       PD_PASSWORD_MAX / 2);
    if (EVP_Digest(pw, (size_t)pwlen, aes_key, NULL, EVP_sha256(), NULL) != 1) {
        pd_fail(err, errlen, "hashing the password failed");
        goto out;
    }
    c = EVP_CIPHER_CTX_new();
    if (!c || EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, aes_key, iv) != 1 ||
        EVP_DecryptUpdate(c, plain, &n1, file, (int)len) != 1) {
        pd_fail(err, errlen, "AES-256-CBC is not available");
        goto out;
    }
    /* A wrong password shows as bad padding, or (1 time in ~256) as a hash that differs. */
    if (EVP_DecryptFinal_ex(c, plain + n1, &n2) != 1 || n1 + n2 <= 32 ||
        EVP_Digest(plain + 32, (size_t)(n1 + n2 - 32), check, NULL, EVP_sha256(), NULL) != 1 ||
        CRYPTO_memcmp(check, plain, 32) != 0) {
        pd_fail(err, errlen, "wrong password, or not a netsh branchcache exportkey file");
        goto out;
    }
    rc = content_pd_secret_from_key(s, plain + 32, (size_t)(n1 + n2 - 32), err, errlen);
out:
    EVP_CIPHER_CTX_free(c);
    OPENSSL_cleanse(pw, sizeof(pw));
    OPENSSL_cleanse(aes_key, sizeof(aes_key));
    OPENSSL_cleanse(plain, sizeof(plain));
    OPENSSL_cleanse(check, sizeof(check));
    return rc;
}

int content_pd_secret_load_export(struct content_pd_secret *s, const char *path,
                                  const char *password, char *err, size_t errlen)
{
    uint8_t buf[CONTENT_PD_EXPORT_MAX + 1];
    size_t len = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;
    char why[256];

    if (fd < 0)
        return pd_fail(err, errlen, "%s: %s", path, strerror(errno));
    /* One byte more than the limit tells a file that is too big from one at the limit. */
    while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pd_fail(err, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            return rc;
        }
        len += (size_t)n;
    }
    close(fd);
    rc = content_pd_secret_from_export(s, buf, len, password, why, sizeof(why));
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rc)
        pd_fail(err, errlen, "%s: %s", path, why);
    return rc;
}
