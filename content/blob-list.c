/* The List Blobs enumeration and error bodies: a small reader for the few elements Blob
 * storage sends, not a general XML parser. Every element is looked up inside the bounds of its
 * parent; text is copied with entities decoded into fixed buffers, and anything that does not
 * fit or does not parse fails the page. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob-sign.h"

static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    if (p >= end || (size_t)(end - p) < n)
        return NULL;
    return memmem(p, (size_t)(end - p), needle, n);
}

static size_t put_utf8(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Copies text p..end into out with the five named and the numeric entities decoded. Returns
 * the length, or -2 when it does not fit or has a bad entity or a NUL. */
static ssize_t decode_text(const char *p, const char *end, char *out, size_t outlen)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    size_t n = 0;
    while (p < end) {
        char tmp[4];
        size_t tl = 1;
        tmp[0] = *p;
        if (*p == '&') {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi || semi - p > 12)
                return -2;
            tl = 0;
            if (p[1] == '#') {
                bool hex = p[2] == 'x';
                const char *d = p + (hex ? 3 : 2);
                unsigned long cp = 0;
                if (d == semi)
                    return -2;
                for (; d < semi; d++) {
                    int v = isdigit((unsigned char)*d)           ? *d - '0'
                            : hex && isxdigit((unsigned char)*d) ? (tolower(*d) - 'a' + 10)
                                                                 : -1;
                    if (v < 0)
                        return -2;
                    cp = cp * (hex ? 16 : 10) + (unsigned long)v;
                    if (cp > 0x10ffff)
                        return -2;
                }
                if (cp == 0)
                    return -2;
                tl = put_utf8(cp, tmp);
            } else {
                for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
                    size_t nl = strlen(named[i].name);
                    if ((size_t)(semi + 1 - (p + 1)) == nl &&
                        memcmp(p + 1, named[i].name, nl) == 0) {
                        tmp[0] = named[i].c;
                        tl = 1;
                    }
                }
                if (!tl)
                    return -2;
            }
            p = semi + 1;
        } else {
            if (*p == '\0')
                return -2;
            p++;
        }
        if (n + tl >= outlen)
            return -2;
        memcpy(out + n, tmp, tl);
        n += tl;
    }
    if (outlen == 0)
        return -2;
    out[n] = '\0';
    return (ssize_t)n;
}

/* The text of the first <tag> element in p..end: -1 absent, -2 malformed or too long. An
 * empty element may be written <tag/> or <tag />. */
static ssize_t element_text(const char *p, const char *end, const char *tag, char *out,
                            size_t outlen)
{
    char open[72], close[72], empty1[72], empty2[72];
    size_t tl = strlen(tag);
    if (tl > 64 || outlen == 0)
        return -2;
    memcpy(open, "<", 1), memcpy(open + 1, tag, tl), memcpy(open + 1 + tl, ">", 2);
    memcpy(close, "</", 2), memcpy(close + 2, tag, tl), memcpy(close + 2 + tl, ">", 2);
    memcpy(empty1, "<", 1), memcpy(empty1 + 1, tag, tl), memcpy(empty1 + 1 + tl, "/>", 3);
    memcpy(empty2, "<", 1), memcpy(empty2 + 1, tag, tl), memcpy(empty2 + 1 + tl, " />", 4);
    const char *o = find(p, end, open);
    const char *e1 = find(p, end, empty1), *e2 = find(p, end, empty2);
    const char *e = e1 && (!e2 || e1 < e2) ? e1 : e2;
    if (e && (!o || e < o)) {
        out[0] = '\0';
        return 0;
    }
    if (!o)
        return -1;
    o += strlen(open);
    const char *c = find(o, end, close);
    if (!c)
        return -2;
    return decode_text(o, c, out, outlen);
}

ssize_t blob_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen)
{
    return element_text(xml, xml + len, tag, out, outlen);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s || strlen(s) > 19)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* One <Blob> element, p..end being its content. */
static int parse_blob(const char *p, const char *end, struct content_blob_info *info)
{
    char num[32], date[40], md5[64], etag[sizeof(info->etag)];
    memset(info, 0, sizeof(*info));
    /* Name comes before Properties; look for it before the properties so that metadata can
     * never be taken for it */
    const char *props = find(p, end, "<Properties>");
    const char *pend = props ? find(props, end, "</Properties>") : NULL;
    if (!props || !pend)
        return CONTENT_STORE_EPROTO;
    if (element_text(p, props, "Name", info->name, sizeof(info->name)) <= 0)
        return CONTENT_STORE_EPROTO;
    if (element_text(props, pend, "Content-Length", num, sizeof(num)) <= 0 ||
        !parse_u64(num, &info->size))
        return CONTENT_STORE_EPROTO;
    ssize_t n = element_text(props, pend, "Etag", etag, sizeof(etag) - 2);
    if (n == -2)
        return CONTENT_STORE_EPROTO;
    if (n > 0) {
        /* the enumeration may leave out the quotes the ETag header has */
        if (etag[0] == '"')
            memcpy(info->etag, etag, (size_t)n + 1);
        else {
            info->etag[0] = '"';
            memcpy(info->etag + 1, etag, (size_t)n);
            memcpy(info->etag + 1 + n, "\"", 2);
        }
    }
    n = element_text(props, pend, "Last-Modified", date, sizeof(date));
    if (n == -2 || (n > 0 && blob_parse_http_date(date, &info->last_modified) != 0))
        return CONTENT_STORE_EPROTO;
    n = element_text(props, pend, "Content-MD5", md5, sizeof(md5));
    if (n == -2)
        return CONTENT_STORE_EPROTO;
    if (n > 0) {
        if (blob_base64_decode(md5, (size_t)n, info->md5, sizeof(info->md5)) != 16)
            return CONTENT_STORE_EPROTO;
        info->has_md5 = true;
    }
    return 0;
}

int blob_list_parse(const char *xml, size_t len,
                    int (*each)(void *ctx, const struct content_blob_info *info), void *ctx,
                    char *marker, size_t markerlen)
{
    const char *end = xml + len;
    if (!find(xml, end, "<EnumerationResults"))
        return CONTENT_STORE_EPROTO;
    const char *blobs = find(xml, end, "<Blobs>");
    const char *bend = blobs ? find(blobs, end, "</Blobs>") : NULL;
    if (blobs && !bend)
        return CONTENT_STORE_EPROTO;
    struct content_blob_info *info = malloc(sizeof(*info));
    if (!info)
        return CONTENT_STORE_EIO;
    int rc = 0;
    for (const char *p = blobs; p && rc == 0;) {
        const char *b = find(p, bend, "<Blob>");
        if (!b)
            break;
        b += strlen("<Blob>");
        const char *e = find(b, bend, "</Blob>");
        if (!e) {
            rc = CONTENT_STORE_EPROTO;
            break;
        }
        rc = parse_blob(b, e, info);
        if (rc == 0)
            rc = each(ctx, info);
        p = e + strlen("</Blob>");
    }
    free(info);
    if (rc)
        return rc;
    /* NextMarker follows </Blobs>; no blob name can contain it, '<' being escaped */
    ssize_t n = element_text(bend ? bend : xml, end, "NextMarker", marker, markerlen);
    if (n == -2)
        return CONTENT_STORE_EPROTO;
    if (n == -1)
        marker[0] = '\0';
    return 0;
}
