/* Azure Blob storage signatures (Shared Key, service SAS), URL encoding, base64 and dates.
 * Sans-I/O: strings in, strings out; blob.c does the talking. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "blob-sign.h"

#define QUERY_PARAMS_MAX 32  /* parameters of one signed query */
#define QUERY_VALUE_MAX 2048 /* decoded bytes of one of them */
#define HEADERS_MAX 32       /* x-ms- headers of one request */

/* A bounded string writer: once something did not fit, it stays failed. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed || b->len + n >= b->cap) {
        b->failed = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static ssize_t sb_end(struct sbuf *b)
{
    return b->failed ? -1 : (ssize_t)b->len;
}

static void sb_init(struct sbuf *b, char *out, size_t cap)
{
    b->p = out;
    b->len = 0;
    b->cap = cap;
    b->failed = cap == 0;
    if (cap)
        out[0] = '\0';
}

static const char *find_header(const struct blob_sign_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->nheaders; i++)
        if (strcasecmp(rq->headers[i].name, name) == 0)
            return rq->headers[i].value;
    return NULL;
}

static int cmp_header(const void *a, const void *b)
{
    const struct blob_header *x = a, *y = b;
    return strcasecmp(x->name, y->name);
}

/* name:value with the name lower-cased and the value trimmed, inner white space collapsed. */
static void put_canonical_header(struct sbuf *b, const struct blob_header *h)
{
    for (const char *s = h->name; *s; s++) {
        char c = (char)tolower((unsigned char)*s);
        sb_putn(b, &c, 1);
    }
    sb_putn(b, ":", 1);
    const char *v = h->value;
    while (*v == ' ' || *v == '\t')
        v++;
    bool space = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = true;
            continue;
        }
        if (space)
            sb_putn(b, " ", 1);
        space = false;
        sb_putn(b, v, 1);
    }
    sb_putn(b, "\n", 1);
}

struct query_param {
    char name[64];
    char value[QUERY_VALUE_MAX];
};

static int cmp_param(const void *a, const void *b)
{
    const struct query_param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Appends "\nname:value[,value...]" per parameter, names lower-cased and sorted, values
 * decoded. */
static int put_canonical_query(struct sbuf *b, const char *query)
{
    if (!query || !*query)
        return 0;
    struct query_param *ps = calloc(QUERY_PARAMS_MAX, sizeof(*ps));
    if (!ps)
        return -1;
    size_t n = 0;
    int rc = -1;
    const char *s = query;
    while (*s) {
        const char *end = strchr(s, '&');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len) {
            if (n == QUERY_PARAMS_MAX)
                goto out;
            const char *eq = memchr(s, '=', len);
            size_t nl = eq ? (size_t)(eq - s) : len;
            if (blob_url_decode(s, nl, ps[n].name, sizeof(ps[n].name)) < 0)
                goto out;
            for (char *c = ps[n].name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (eq && blob_url_decode(eq + 1, len - nl - 1, ps[n].value, sizeof(ps[n].value)) < 0)
                goto out;
            n++;
        }
        s += len;
        if (*s == '&')
            s++;
    }
    qsort(ps, n, sizeof(*ps), cmp_param);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(ps[i].name, ps[i - 1].name) == 0) {
            sb_putn(b, ",", 1);
        } else {
            sb_putn(b, "\n", 1);
            sb_puts(b, ps[i].name);
            sb_putn(b, ":", 1);
        }
        sb_puts(b, ps[i].value);
    }
    rc = 0;
out:
    free(ps);
    return rc;
}

ssize_t blob_string_to_sign(const char *account, const struct blob_sign_request *rq, char *out,
                            size_t outlen)
{
    static const char *const standard[] = {
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-MD5",
        "Content-Type",
        "Date",
        "If-Modified-Since",
        "If-Match",
        "If-None-Match",
        "If-Unmodified-Since",
        "Range",
    };
    struct sbuf b;
    sb_init(&b, out, outlen);
    sb_puts(&b, rq->method);
    sb_putn(&b, "\n", 1);
    for (size_t i = 0; i < sizeof(standard) / sizeof(standard[0]); i++) {
        const char *v = find_header(rq, standard[i]);
        /* Content-Length 0 is signed as empty (versions 2015-02-21 and later). */
        if (v && !(i == 2 && strcmp(v, "0") == 0))
            sb_puts(&b, v);
        sb_putn(&b, "\n", 1);
    }
    struct blob_header ms[HEADERS_MAX];
    size_t nms = 0;
    for (size_t i = 0; i < rq->nheaders; i++) {
        if (strncasecmp(rq->headers[i].name, "x-ms-", 5) != 0)
            continue;
        if (nms == HEADERS_MAX)
            return -1;
        ms[nms++] = rq->headers[i];
    }
    qsort(ms, nms, sizeof(ms[0]), cmp_header);
    for (size_t i = 0; i < nms; i++)
        put_canonical_header(&b, &ms[i]);
    sb_putn(&b, "/", 1);
    sb_puts(&b, account);
    sb_puts(&b, rq->path);
    if (put_canonical_query(&b, rq->query) != 0)
        return -1;
    return sb_end(&b);
}

/* base64(HMAC-SHA256(key, msg)) into out (at least 45 bytes). */
static int hmac_b64(const uint8_t *key, size_t keylen, const char *msg, size_t len, char *out)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const uint8_t *)msg, len, mac, &maclen))
        return -1;
    blob_base64_encode(mac, maclen, out);
    return 0;
}

ssize_t blob_authorization(const char *account, const uint8_t *key, size_t keylen,
                           const struct blob_sign_request *rq, char *out, size_t outlen)
{
    size_t cap = 16384;
    char *sts = malloc(cap);
    if (!sts)
        return -1;
    ssize_t n = blob_string_to_sign(account, rq, sts, cap);
    char sig[64];
    ssize_t rc = -1;
    if (n >= 0 && hmac_b64(key, keylen, sts, (size_t)n, sig) == 0) {
        int w = snprintf(out, outlen, "SharedKey %s:%s", account, sig);
        if (w > 0 && (size_t)w < outlen)
            rc = w;
    }
    free(sts);
    return rc;
}

ssize_t blob_sas_string_to_sign(const struct blob_sas_params *p, char *out, size_t outlen)
{
    char st[21], se[21];
    blob_iso_date(p->start, st);
    blob_iso_date(p->expiry, se);
    struct sbuf b;
    sb_init(&b, out, outlen);
    /* sp, st, se, canonical name (account once, blob name not encoded), si, sip, spr, sv,
     * sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct */
    sb_puts(&b, "r\n");
    sb_puts(&b, st);
    sb_putn(&b, "\n", 1);
    sb_puts(&b, se);
    sb_puts(&b, "\n/blob/");
    sb_puts(&b, p->account);
    sb_putn(&b, "/", 1);
    sb_puts(&b, p->container);
    sb_putn(&b, "/", 1);
    sb_puts(&b, p->blob);
    sb_puts(&b, "\n\n\n");
    sb_puts(&b, p->allow_http ? "https,http" : "https");
    sb_putn(&b, "\n", 1);
    sb_puts(&b, p->version);
    sb_puts(&b, "\nb\n\n\n\n\n\n\n");
    return sb_end(&b);
}

ssize_t blob_sas_query(const struct blob_sas_params *p, const uint8_t *key, size_t keylen,
                       char *out, size_t outlen)
{
    char sts[4096], sig[64], esig[200], st[21], se[21], est[64], ese[64], ev[64];
    ssize_t n = blob_sas_string_to_sign(p, sts, sizeof(sts));
    if (n < 0 || hmac_b64(key, keylen, sts, (size_t)n, sig) != 0)
        return -1;
    blob_iso_date(p->start, st);
    blob_iso_date(p->expiry, se);
    if (blob_url_encode(sig, false, esig, sizeof(esig)) < 0 ||
        blob_url_encode(st, false, est, sizeof(est)) < 0 ||
        blob_url_encode(se, false, ese, sizeof(ese)) < 0 ||
        blob_url_encode(p->version, false, ev, sizeof(ev)) < 0)
        return -1;
    int w = snprintf(out, outlen, "sv=%s&sr=b&sp=r&st=%s&se=%s&spr=%s&sig=%s", ev, est, ese,
                     p->allow_http ? "https%2Chttp" : "https", esig);
    return w > 0 && (size_t)w < outlen ? w : -1;
}

ssize_t blob_url_encode(const char *s, bool keep_slash, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep =
            isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
        if (n + (keep ? 1 : 3) >= outlen)
            return -1;
        if (keep) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (n >= outlen)
        return -1;
    out[n] = '\0';
    return (ssize_t)n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

ssize_t blob_url_decode(const char *s, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval(s[i + 1]);
            int lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0' || n + 1 >= outlen)
            return -1;
        out[n++] = c;
    }
    if (n >= outlen)
        return -1;
    out[n] = '\0';
    return (ssize_t)n;
}

size_t blob_base64_encode(const uint8_t *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

ssize_t blob_base64_decode(const char *in, size_t len, uint8_t *out, size_t outlen)
{
    if (len == 0)
        return 0;
    if (len % 4 != 0 || len / 4 * 3 > outlen + 2)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        bool pad = c == '=' && i >= len - 2 && (i == len - 1 || in[len - 1] == '=');
        if (!isalnum(c) && c != '+' && c != '/' && !pad)
            return -1;
    }
    uint8_t *tmp = malloc(len / 4 * 3 + 1);
    if (!tmp)
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    if (n >= 0) {
        /* EVP_DecodeBlock counts the padding as zero bytes */
        if (in[len - 1] == '=')
            n--;
        if (in[len - 2] == '=')
            n--;
    }
    if (n < 0 || (size_t)n > outlen) {
        free(tmp);
        return -1;
    }
    memcpy(out, tmp, (size_t)n);
    free(tmp);
    return n;
}

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void blob_http_date(int64_t t, char buf[30])
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday % 7],
             tm.tm_mday, months[tm.tm_mon % 12], (tm.tm_year + 1900) % 10000, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    memcpy(buf, tmp, 29);
    buf[29] = '\0';
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), without the C library's time zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool valid_time(int y, int mon, int d, int h, int mi, int s)
{
    return y >= 1970 && y <= 9999 && mon >= 1 && mon <= 12 && d >= 1 && d <= 31 && h >= 0 &&
           h <= 23 && mi >= 0 && mi <= 59 && s >= 0 && s <= 60;
}

/* Two or four digits at s into *out; false when one is not a digit. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int blob_parse_http_date(const char *s, int64_t *out)
{
    /* "Fri, 27 Nov 2026 10:16:09 GMT": the fixed layout RFC 9110 asks senders to use */
    int d, y, h, mi, sec, m = -1;
    if (strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' || strcmp(s + 25, " GMT") != 0 ||
        !digits(s + 5, 2, &d) || !digits(s + 12, 4, &y) || !digits(s + 17, 2, &h) ||
        !digits(s + 20, 2, &mi) || !digits(s + 23, 2, &sec))
        return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(s + 8, months[i], 3) == 0)
            m = i + 1;
    if (m < 0 || !valid_time(y, m, d, h, mi, sec))
        return -1;
    *out = days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}

void blob_iso_date(int64_t t, char buf[21])
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02dZ", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(buf, tmp, 20);
    buf[20] = '\0';
}

int blob_parse_iso_date(const char *s, int64_t *out)
{
    int y, mon, d, h, mi, sec;
    if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != 'Z' || !digits(s, 4, &y) || !digits(s + 5, 2, &mon) ||
        !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) ||
        !digits(s + 17, 2, &sec) || !valid_time(y, mon, d, h, mi, sec))
        return -1;
    *out = days_from_civil(y, (unsigned)mon, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}
