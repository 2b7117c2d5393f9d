/* Azure Blob storage, the sans-I/O half: Shared Key and SAS signatures, URL encoding, dates,
 * and the List Blobs XML. Private to the content module (blob.c and its tests). */
#ifndef CMG_CONTENT_BLOB_SIGN_H
#define CMG_CONTENT_BLOB_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "content-t.h"

#define BLOB_KEY_MAX 128 /* bytes of a decoded storage account key */

/* One request header as it is sent. */
struct blob_header {
    const char *name;
    const char *value;
};

/* A request as the Shared Key signature sees it. All pointers are borrowed for the call. */
struct blob_sign_request {
    const char *method;                /* "GET", "PUT", ... */
    const char *path;                  /* the URL path exactly as sent ("/acct/c/dir%20one/x") */
    const char *query;                 /* the URL query as sent, without '?'; NULL: none */
    const struct blob_header *headers; /* every header that is sent (others do not matter) */
    size_t nheaders;
};

/* Writes the Blob service Shared Key string-to-sign of rq for account into out. Returns its
 * length, or -1 when out is too small or the query is malformed. */
ssize_t blob_string_to_sign(const char *account, const struct blob_sign_request *rq, char *out,
                            size_t outlen);
/* The Authorization header value "SharedKey <account>:<signature>" for rq, signed with the
 * decoded key. Returns its length or -1. */
ssize_t blob_authorization(const char *account, const uint8_t *key, size_t keylen,
                           const struct blob_sign_request *rq, char *out, size_t outlen);

/* A read-only service SAS for one blob (sr=b, sp=r). */
struct blob_sas_params {
    const char *account;
    const char *container;
    const char *blob;    /* the blob's name, not URL-encoded */
    const char *version; /* sv */
    int64_t start;       /* st, Unix seconds */
    int64_t expiry;      /* se, Unix seconds */
    bool allow_http;     /* spr=https,http instead of spr=https */
};
/* The 16-line service SAS string-to-sign of p. Returns its length or -1. */
ssize_t blob_sas_string_to_sign(const struct blob_sas_params *p, char *out, size_t outlen);
/* The SAS query string (without '?'): sv, sr, sp, st, se, spr, sig, each value URL-encoded.
 * Returns its length or -1. */
ssize_t blob_sas_query(const struct blob_sas_params *p, const uint8_t *key, size_t keylen,
                       char *out, size_t outlen);

/* Percent-encodes s into out: unreserved characters stay, and '/' too when keep_slash.
 * Returns the length or -1 when out is too small. */
ssize_t blob_url_encode(const char *s, bool keep_slash, char *out, size_t outlen);
/* Decodes %XX escapes of s[0..len) into out (NUL-terminated). -1 on a bad escape or no room. */
ssize_t blob_url_decode(const char *s, size_t len, char *out, size_t outlen);

/* Base64 (standard alphabet, padded). encode returns the length (out must hold 4*ceil(n/3)+1
 * bytes); decode returns the byte count, or -1 on bad input or no room. */
size_t blob_base64_encode(const uint8_t *in, size_t n, char *out);
ssize_t blob_base64_decode(const char *in, size_t len, uint8_t *out, size_t outlen);

/* "Fri, 27 Nov 2026 10:16:09 GMT" (RFC 1123) into buf[30]; and back (-1 when malformed). */
void blob_http_date(int64_t t, char buf[30]);
int blob_parse_http_date(const char *s, int64_t *out);
/* "2026-11-27T10:16:09Z" into buf[21]; and back (-1 when malformed). */
void blob_iso_date(int64_t t, char buf[21]);
int blob_parse_iso_date(const char *s, int64_t *out);

/* ---- List Blobs (the XML enumeration) ---- */

/* Calls each(ctx, info) for every <Blob> of one List Blobs response page, in document order,
 * and copies the page's NextMarker (empty when it is the last page) into marker. Returns 0,
 * a non-zero value returned by each, or CONTENT_STORE_EPROTO when the document does not
 * parse (a name or a marker too long, a missing field, a bad number). */
int blob_list_parse(const char *xml, size_t len,
                    int (*each)(void *ctx, const struct content_blob_info *info), void *ctx,
                    char *marker, size_t markerlen);

/* The text of the first <tag>...</tag> inside xml[0..len), entities decoded, into out. Returns
 * its length, -1 when absent, -2 when it does not fit or is malformed. For error bodies. */
ssize_t blob_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

#endif
