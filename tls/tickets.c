/* tls: the shared session-ticket key file. Every gateway instance reads the same file, so a
 * ticket issued by one instance resumes on any other; `cmgctl tickets rotate` writes it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "core.h"
#include "tls.h"

#define KEY_HEX_LEN (2 * TLS_TICKET_KEY_LEN)
/* A full file is a header and TLS_TICKET_KEYS_MAX lines: anything far bigger is not ours. */
#define KEY_FILE_MAX (64 * 1024)
#define KEY_HEADER_MAX 128
#define KEY_TEXT_MAX (KEY_HEADER_MAX + TLS_TICKET_KEYS_MAX * (KEY_HEX_LEN + 1))

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* "tickets.key:3: " when the text came from a file, "line 3: " when it did not. */
static void line_err(const char *src, unsigned line, char *err, size_t errlen, const char *what)
{
    if (src)
        set_err(err, errlen, "%s:%u: %s", src, line, what);
    else
        set_err(err, errlen, "line %u: %s", line, what);
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Decodes one trimmed, non-comment line into key. The message never quotes the line: it is
 * key material. */
static int parse_key_line(const char *s, size_t n, struct tls_ticket_key *key, char *what,
                          size_t whatlen)
{
    unsigned char raw[TLS_TICKET_KEY_LEN];
    size_t i;

    for (i = 0; i < n; i++) {
        if (hex_val((unsigned char)s[i]) < 0) {
            set_err(what, whatlen, "column %zu: not a hex digit (0x%02x)", i + 1,
                    (unsigned char)s[i]);
            return -1;
        }
    }
    if (n != KEY_HEX_LEN) {
        set_err(what, whatlen, "expected %d hex digits, got %zu", KEY_HEX_LEN, n);
        return -1;
    }
    for (i = 0; i < TLS_TICKET_KEY_LEN; i++)
        raw[i] = (unsigned char)(hex_val((unsigned char)s[2 * i]) << 4 |
                                 hex_val((unsigned char)s[2 * i + 1]));
    memcpy(key->name, raw, TLS_TICKET_NAME_LEN);
    memcpy(key->hmac_key, raw + TLS_TICKET_NAME_LEN, TLS_TICKET_SECRET_LEN);
    memcpy(key->aes_key, raw + TLS_TICKET_NAME_LEN + TLS_TICKET_SECRET_LEN, TLS_TICKET_SECRET_LEN);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* Adds the key on `line` to out, refusing a key name seen before: the name is how a ticket
 * finds its key, so two keys with one name would make resumption depend on order. */
static int add_key(struct tls_ticket_keys *out, unsigned *lines, unsigned line, const char *s,
                   size_t n, char *what, size_t whatlen)
{
    struct tls_ticket_key *key;
    unsigned i;

    if (out->count == TLS_TICKET_KEYS_MAX) {
        set_err(what, whatlen, "more than %d keys", TLS_TICKET_KEYS_MAX);
        return -1;
    }
    key = &out->keys[out->count];
    if (parse_key_line(s, n, key, what, whatlen) < 0)
        return -1;
    for (i = 0; i < out->count; i++) {
        if (memcmp(out->keys[i].name, key->name, TLS_TICKET_NAME_LEN) == 0) {
            set_err(what, whatlen, "key name repeats the key on line %u", lines[i]);
            OPENSSL_cleanse(key, sizeof *key);
            return -1;
        }
    }
    lines[out->count++] = line;
    return 0;
}

/* Parses the text; src names it in messages (NULL: "line N"). allow_empty lets rotation start
 * from a file that has no keys yet. */
static int parse_text(const char *src, const char *text, size_t len, bool allow_empty,
                      struct tls_ticket_keys *out, char *err, size_t errlen)
{
    unsigned lines[TLS_TICKET_KEYS_MAX];
    char what[96];
    size_t pos = 0;
    unsigned line = 0;

    memset(out, 0, sizeof *out);
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;

        pos += n + (nl != NULL);
        line++;
        while (n > 0 && is_blank((unsigned char)s[0])) {
            s++;
            n--;
        }
        while (n > 0 && is_blank((unsigned char)s[n - 1]))
            n--;
        if (n == 0 || s[0] == '#')
            continue;
        if (add_key(out, lines, line, s, n, what, sizeof what) < 0) {
            line_err(src, line, err, errlen, what);
            OPENSSL_cleanse(out, sizeof *out);
            return -1;
        }
    }
    if (out->count == 0 && !allow_empty) {
        if (src)
            set_err(err, errlen, "%s: no keys in the file", src);
        else
            set_err(err, errlen, "no keys in the text");
        return -1;
    }
    return 0;
}

int tls_ticket_keys_parse(const char *text, size_t len, struct tls_ticket_keys *out, char *err,
                          size_t errlen)
{
    return parse_text(NULL, text, len, false, out, err, errlen);
}

/* Reads path into buf (at most cap - 1 bytes). Returns the length, or -1 with errno set
 * (EFBIG when the file is too big). */
static ssize_t read_small_file(const char *path, char *buf, size_t cap)
{
    ssize_t total = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    for (;;) {
        ssize_t n = read(fd, buf + total, cap - (size_t)total);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;

            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0)
            break;
        total += n;
        if ((size_t)total == cap) {
            close(fd);
            errno = EFBIG;
            return -1;
        }
    }
    close(fd);
    return total;
}

/* Loads path. With for_rotate, a missing or key-less file reads as zero keys. */
static int load_file(const char *path, bool for_rotate, struct tls_ticket_keys *out, char *err,
                     size_t errlen)
{
    char *buf = malloc(KEY_FILE_MAX);
    ssize_t n = buf ? read_small_file(path, buf, KEY_FILE_MAX) : -1;
    int rc;

    if (n < 0) {
        free(buf);
        memset(out, 0, sizeof *out);
        if (for_rotate && errno == ENOENT)
            return 0;
        if (errno == EFBIG)
            set_err(err, errlen, "%s: larger than %d bytes, not a ticket key file", path,
                    KEY_FILE_MAX);
        else
            set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    rc = parse_text(path, buf, (size_t)n, for_rotate, out, err, errlen);
    OPENSSL_cleanse(buf, (size_t)n);
    free(buf);
    return rc;
}

int tls_ticket_keys_load(const char *path, struct tls_ticket_keys *out, char *err, size_t errlen)
{
    return load_file(path, false, out, err, errlen);
}

static void hex_put(char *dst, const unsigned char *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
}

/* Formats the file: one header comment line, then one key per line. Returns the length. */
static size_t format_keys(const struct tls_ticket_keys *keys, char buf[KEY_TEXT_MAX])
{
    char stamp[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    size_t len;
    unsigned i;

    if (gmtime_r(&now, &tm))
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* Fixed text and a 20-character stamp: always well inside KEY_HEADER_MAX. */
    len = (size_t)snprintf(buf, KEY_HEADER_MAX,
                           "# cmg session-ticket keys, newest first: the first encrypts, all "
                           "decrypt. Rotated %s\n",
                           stamp);
    for (i = 0; i < keys->count; i++) {
        const struct tls_ticket_key *k = &keys->keys[i];
        char *p = buf + len;

        hex_put(p, k->name, TLS_TICKET_NAME_LEN);
        hex_put(p + 2 * TLS_TICKET_NAME_LEN, k->hmac_key, TLS_TICKET_SECRET_LEN);
        hex_put(p + 2 * (TLS_TICKET_NAME_LEN + TLS_TICKET_SECRET_LEN), k->aes_key,
                TLS_TICKET_SECRET_LEN);
        p[KEY_HEX_LEN] = '\n';
        len += KEY_HEX_LEN + 1;
    }
    return len;
}

/* "dir/.base.XXXXXX" beside path, so rename() stays within one file system. */
static int temp_name(const char *path, char *tmp, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int n;

    if (slash)
        n = snprintf(tmp, cap, "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
    else
        n = snprintf(tmp, cap, ".%s.XXXXXX", path);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* The directory entry is what readers see, so make the rename durable too. Best effort: some
 * file systems refuse fsync on a directory, and the data itself is already on disk. */
static void sync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;

    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Writes the text to a mode-0600 temporary file beside path and renames it over path, so a
 * gateway reloading the file sees the old or the new content, never a mix. */
static int write_atomic(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    int fd;

    if (temp_name(path, tmp, sizeof tmp) < 0) {
        set_err(err, errlen, "%s: path too long", path);
        return -1;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600) < 0 || core_write_all(fd, text, len) < 0 || fsync(fd) < 0) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    if (close(fd) < 0) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        set_err(err, errlen, "%s: cannot replace: %s", path, strerror(errno));
        goto fail;
    }
    sync_parent(path);
    return 0;
fail:
    unlink(tmp);
    return -1;
}

/* A fresh random key whose name differs from every key in old. */
static int new_key(const struct tls_ticket_keys *old, struct tls_ticket_key *key, char *err,
                   size_t errlen)
{
    unsigned i;

    for (;;) {
        if (RAND_bytes((unsigned char *)key, sizeof *key) != 1) {
            const char *reason = ERR_reason_error_string(ERR_get_error());

            set_err(err, errlen, "random generator failed: %s", reason ? reason : "no reason");
            ERR_clear_error();
            return -1;
        }
        for (i = 0; i < old->count; i++)
            if (memcmp(old->keys[i].name, key->name, TLS_TICKET_NAME_LEN) == 0)
                break;
        if (i == old->count)
            return 0;
    }
}

int tls_ticket_keys_rotate_file(const char *path, unsigned keep, char *err, size_t errlen)
{
    char text[KEY_TEXT_MAX];
    struct tls_ticket_keys old, next;
    size_t len = 0;
    unsigned i;
    int rc = -1;

    memset(&old, 0, sizeof old);
    memset(&next, 0, sizeof next);
    if (keep < 1 || keep > TLS_TICKET_KEYS_MAX) {
        set_err(err, errlen, "%s: keep must be between 1 and %d, got %u", path, TLS_TICKET_KEYS_MAX,
                keep);
        goto out;
    }
    /* An unreadable or malformed file stops rotation: overwriting it would silently drop the
     * keys that the running gateways still decrypt with. */
    if (load_file(path, true, &old, err, errlen) < 0)
        goto out;
    if (new_key(&old, &next.keys[0], err, errlen) < 0)
        goto out;
    next.count = 1;
    for (i = 0; i < old.count && next.count < keep; i++)
        next.keys[next.count++] = old.keys[i];
    len = format_keys(&next, text);
    rc = write_atomic(path, text, len, err, errlen);
out:
    OPENSSL_cleanse(text, len);
    OPENSSL_cleanse(&old, sizeof old);
    OPENSSL_cleanse(&next, sizeof next);
    return rc;
}
