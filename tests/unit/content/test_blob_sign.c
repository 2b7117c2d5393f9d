/* Azure Blob signing: string-to-sign vectors as the storage service (the emulator's debug log)
 * computed them for the same requests, SAS strings, encodings, dates and the List Blobs XML. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "blob-sign.h"

#define ACCOUNT "devstoreaccount1"
#define KEY_B64                                                                                    \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DATE "Fri, 27 Nov 2026 10:16:09 GMT"
#define T_DATE 1795774569 /* DATE as Unix seconds */

static size_t key(uint8_t *out)
{
    ssize_t n = blob_base64_decode(KEY_B64, strlen(KEY_B64), out, BLOB_KEY_MAX);
    cr_assert_eq(n, 64);
    return (size_t)n;
}

static void expect_sts(const char *method, const char *path, const char *query,
                       const struct blob_header *h, size_t nh, const char *want)
{
    char out[4096];
    struct blob_sign_request rq = {method, path, query, h, nh};
    ssize_t n = blob_string_to_sign(ACCOUNT, &rq, out, sizeof(out));
    cr_assert_geq(n, 0);
    cr_assert_str_eq(out, want);
    cr_assert_eq((size_t)n, strlen(want));
}

Test(blob_sign, ranged_get_path_style)
{
    /* path style: the URL path already starts with the account, so it appears twice */
    struct blob_header h[] = {
        {"x-ms-version", "2025-11-05"}, {"Range", "bytes=100-199"}, {"x-ms-date", DATE}};
    expect_sts("GET", "/" ACCOUNT "/gwcachepath/dir%20one/obj-1.bin", NULL, h, 3,
               "GET\n\n\n\n\n\n\n\n\n\n\nbytes=100-199\nx-ms-date:" DATE
               "\nx-ms-version:2025-11-05\n/devstoreaccount1/devstoreaccount1/gwcachepath/"
               "dir%20one/obj-1.bin");
    uint8_t k[BLOB_KEY_MAX];
    size_t kl = key(k);
    char auth[256];
    struct blob_sign_request rq = {"GET", "/" ACCOUNT "/gwcachepath/dir%20one/obj-1.bin", NULL, h,
                                   3};
    cr_assert_gt(blob_authorization(ACCOUNT, k, kl, &rq, auth, sizeof(auth)), 0);
    cr_assert_str_eq(auth, "SharedKey devstoreaccount1:nYQODGKaIGEmdRscYFQ8xwfpKV6trnuclNs+"
                           "Epvb8CU=");
}

Test(blob_sign, put_with_metadata)
{
    struct blob_header h[] = {
        {"Content-Type", "application/octet-stream"},
        {"x-ms-version", "2025-11-05"},
        {"x-ms-meta-origin", "probe"},
        {"Content-Length", "1024"},
        {"x-ms-date", DATE},
        {"x-ms-blob-type", "BlockBlob"},
    };
    expect_sts("PUT", "/" ACCOUNT "/gwcachepath/dir%20one/obj-1.bin", NULL, h, 6,
               "PUT\n\n\n1024\n\napplication/octet-stream\n\n\n\n\n\n\nx-ms-blob-type:"
               "BlockBlob\nx-ms-date:" DATE "\nx-ms-meta-origin:probe\nx-ms-version:2025-11-05\n"
               "/devstoreaccount1/devstoreaccount1/gwcachepath/dir%20one/obj-1.bin");
}

Test(blob_sign, zero_length_is_empty_and_host_style)
{
    /* host style: the path has no account; Content-Length 0 is signed as an empty line */
    struct blob_header h[] = {
        {"Content-Length", "0"}, {"x-ms-date", DATE}, {"x-ms-version", "2025-01-05"}};
    expect_sts("PUT", "/cmgcontent", "restype=container", h, 3,
               "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:" DATE
               "\nx-ms-version:2025-01-05\n/devstoreaccount1/cmgcontent\nrestype:container");
}

Test(blob_sign, list_query_decoded_and_sorted)
{
    struct blob_header h[] = {{"x-ms-date", DATE}, {"x-ms-version", "2025-11-05"}};
    expect_sts("GET", "/" ACCOUNT "/gwcache", "restype=container&comp=list&prefix=dir%20one%2F", h,
               2,
               "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:" DATE
               "\nx-ms-version:2025-11-05\n/devstoreaccount1/devstoreaccount1/gwcache\ncomp:list\n"
               "prefix:dir one/\nrestype:container");
}

Test(blob_sign, block_id_and_repeated_params)
{
    /* a block id's '=' arrives encoded; names are lower-cased, repeated values joined */
    struct blob_header h[] = {{"x-ms-date", DATE}};
    expect_sts("PUT", "/c/b", "comp=block&BlockId=Y21nLTAwMDAwMDAx%3D%3D&a=2&a=1", h, 1,
               "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:" DATE
               "\n/devstoreaccount1/c/b\na:1,2\nblockid:Y21nLTAwMDAwMDAx==\ncomp:block");
}

Test(blob_sign, canonical_header_values)
{
    /* names lower-cased and sorted, values trimmed with inner runs collapsed */
    struct blob_header h[] = {{"X-MS-Meta-B", "  two   words\there  "},
                              {"x-ms-date", DATE},
                              {"X-Ms-Meta-A", "x"},
                              {"If-Match", "\"0x8D1\""},
                              {"Accept", "ignored"}};
    expect_sts("GET", "/c/b", NULL, h, 5,
               "GET\n\n\n\n\n\n\n\n\"0x8D1\"\n\n\n\nx-ms-date:" DATE
               "\nx-ms-meta-a:x\nx-ms-meta-b:two words here\n/devstoreaccount1/c/b");
}

Test(blob_sign, malformed_query_and_small_buffer)
{
    struct blob_header h[] = {{"x-ms-date", DATE}};
    struct blob_sign_request rq = {"GET", "/c/b", "prefix=%zz", h, 1};
    char out[4096];
    cr_assert_eq(blob_string_to_sign(ACCOUNT, &rq, out, sizeof(out)), -1);
    rq.query = "prefix=%00";
    cr_assert_eq(blob_string_to_sign(ACCOUNT, &rq, out, sizeof(out)), -1);
    rq.query = NULL;
    cr_assert_eq(blob_string_to_sign(ACCOUNT, &rq, out, 20), -1);
}

Test(blob_sign, sas_string_and_query)
{
    struct blob_sas_params p = {ACCOUNT,      "gwcachepath", "dir one/obj-1.bin",
                                "2025-11-05", T_DATE - 300,  T_DATE + 3600,
                                false};
    char sts[1024];
    ssize_t n = blob_sas_string_to_sign(&p, sts, sizeof(sts));
    /* 16 fields, the account once, the blob name not encoded, no trailing newline after rsct */
    const char *want = "r\n2026-11-27T10:11:09Z\n2026-11-27T11:16:09Z\n/blob/devstoreaccount1/"
                       "gwcachepath/dir one/obj-1.bin\n\n\nhttps\n2025-11-05\nb\n\n\n\n\n\n\n";
    cr_assert_str_eq(sts, want);
    cr_assert_eq((size_t)n, strlen(want));
    size_t fields = 1;
    for (const char *s = sts; *s; s++)
        fields += *s == '\n';
    cr_assert_eq(fields, 16);

    uint8_t k[BLOB_KEY_MAX];
    size_t kl = key(k);
    char q[512];
    cr_assert_gt(blob_sas_query(&p, k, kl, q, sizeof(q)), 0);
    cr_assert_str_eq(q, "sv=2025-11-05&sr=b&sp=r&st=2026-11-27T10%3A11%3A09Z&se=2026-11-27T11%3A16"
                        "%3A09Z&spr=https&sig=ypxfAelCr8n0ppSz0yAk7pAKba5RHIdgQVFjfuos5Oc%3D");

    p.allow_http = true;
    blob_sas_string_to_sign(&p, sts, sizeof(sts));
    cr_assert(strstr(sts, "\n\n\nhttps,http\n2025-11-05\nb\n"));
    blob_sas_query(&p, k, kl, q, sizeof(q));
    cr_assert(strstr(q, "&spr=https%2Chttp&"));
}

Test(blob_sign, url_encoding)
{
    char out[64];
    cr_assert_eq(blob_url_encode("dir one/a+b=c~_.-", true, out, sizeof(out)), 23);
    cr_assert_str_eq(out, "dir%20one/a%2Bb%3Dc~_.-");
    blob_url_encode("dir one/", false, out, sizeof(out));
    cr_assert_str_eq(out, "dir%20one%2F");
    blob_url_encode("\xc3\xa9", false, out, sizeof(out));
    cr_assert_str_eq(out, "%C3%A9");
    cr_assert_eq(blob_url_encode("abc", false, out, 3), -1);
    cr_assert_eq(blob_url_decode("a%2fb%2F", 8, out, sizeof(out)), 4);
    cr_assert_str_eq(out, "a/b/");
    cr_assert_eq(blob_url_decode("a%2", 3, out, sizeof(out)), -1);
    cr_assert_eq(blob_url_decode("a%g0", 4, out, sizeof(out)), -1);
}

Test(blob_sign, base64)
{
    uint8_t out[16];
    char enc[32];
    cr_assert_eq(blob_base64_decode("1B2M2Y8AsgTpgAmY7PhCfg==", 24, out, sizeof(out)), 16);
    cr_assert_eq(out[0], 0xd4);
    cr_assert_eq(out[15], 0x7e);
    blob_base64_encode(out, 16, enc);
    cr_assert_str_eq(enc, "1B2M2Y8AsgTpgAmY7PhCfg==");
    cr_assert_eq(blob_base64_decode("YWI=", 4, out, sizeof(out)), 2);
    cr_assert_eq(blob_base64_decode("YWI", 3, out, sizeof(out)), -1);
    cr_assert_eq(blob_base64_decode("Y=I=", 4, out, sizeof(out)), -1);
    cr_assert_eq(blob_base64_decode("YW*=", 4, out, sizeof(out)), -1);
    /* more bytes than room */
    cr_assert_eq(blob_base64_decode("1B2M2Y8AsgTpgAmY7PhCfg==", 24, out, 15), -1);
}

Test(blob_sign, dates)
{
    char buf[30], iso[21];
    blob_http_date(T_DATE, buf);
    cr_assert_str_eq(buf, DATE);
    int64_t t = 0;
    cr_assert_eq(blob_parse_http_date(DATE, &t), 0);
    cr_assert_eq(t, T_DATE);
    cr_assert_eq(blob_parse_http_date("Fri, 27 Nov 2026 10:16:09 UTC", &t), -1);
    cr_assert_eq(blob_parse_http_date("Fri, 27 Foo 2026 10:16:09 GMT", &t), -1);
    cr_assert_eq(blob_parse_http_date("Fri, 27 Nov 2026 25:16:09 GMT", &t), -1);
    cr_assert_eq(blob_parse_http_date("", &t), -1);
    blob_iso_date(T_DATE, iso);
    cr_assert_str_eq(iso, "2026-11-27T10:16:09Z");
    cr_assert_eq(blob_parse_iso_date("2026-11-27T10:16:09Z", &t), 0);
    cr_assert_eq(t, T_DATE);
    cr_assert_eq(blob_parse_iso_date("2026-11-27 10:16:09Z", &t), -1);
    cr_assert_eq(blob_parse_iso_date("2026-13-27T10:16:09Z", &t), -1);
    cr_assert_eq(blob_parse_iso_date("2026-11-27T10:16:09", &t), -1);
    cr_assert_eq(blob_parse_iso_date("+026-11-27T10:16:09Z", &t), -1);
    cr_assert_eq(blob_parse_iso_date("1970-01-01T00:00:00Z", &t), 0);
    cr_assert_eq(t, 0);
}

struct collected {
    struct content_blob_info v[4];
    int n;
};

static int collect(void *ctx, const struct content_blob_info *info)
{
    struct collected *c = ctx;
    if (c->n < 4)
        c->v[c->n] = *info;
    c->n++;
    return 0;
}

Test(blob_list, page_with_marker)
{
    const char *xml =
        "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults "
        "ServiceEndpoint=\"http://127.0.0.1:10000/devstoreaccount1\" "
        "ContainerName=\"c\"><Prefix>content/</Prefix><MaxResults>2</MaxResults><Blobs>"
        "<Blob><Name>content/p1/a &amp; b.txt</Name><Properties><Creation-Time>Fri, 27 Nov 2026 "
        "10:16:09 GMT</Creation-Time><Last-Modified>Fri, 27 Nov 2026 10:16:09 "
        "GMT</Last-Modified><Etag>0x8D1A2B3C</Etag><Content-Length>1024</Content-Length>"
        "<Content-Type>application/octet-stream</Content-Type><Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg"
        "==</Content-MD5><BlobType>BlockBlob</BlobType></Properties><Metadata><Name>x</Name>"
        "</Metadata></Blob>"
        "<Blob><Name>content/p1/&#233;&#x4e2d;</Name><Properties><Last-Modified>Fri, 27 Nov 2026 "
        "10:16:10 GMT</Last-Modified><Etag>\"0x8D1\"</Etag><Content-Length>0</Content-Length>"
        "<Content-MD5 /></Properties></Blob>"
        "</Blobs><NextMarker>2!80!MDAwMDE3IWNvbnRlbnQ-</NextMarker></EnumerationResults>";
    struct collected c = {.n = 0};
    char marker[128];
    cr_assert_eq(blob_list_parse(xml, strlen(xml), collect, &c, marker, sizeof(marker)), 0);
    cr_assert_eq(c.n, 2);
    cr_assert_str_eq(c.v[0].name, "content/p1/a & b.txt");
    cr_assert_eq(c.v[0].size, 1024);
    cr_assert_str_eq(c.v[0].etag, "\"0x8D1A2B3C\"");
    cr_assert_eq(c.v[0].last_modified, T_DATE);
    cr_assert(c.v[0].has_md5);
    cr_assert_eq(c.v[0].md5[0], 0xd4);
    cr_assert_str_eq(c.v[1].name, "content/p1/\xc3\xa9\xe4\xb8\xad");
    cr_assert_eq(c.v[1].size, 0);
    cr_assert_str_eq(c.v[1].etag, "\"0x8D1\"");
    cr_assert_not(c.v[1].has_md5);
    cr_assert_str_eq(marker, "2!80!MDAwMDE3IWNvbnRlbnQ-");
}

Test(blob_list, last_and_empty_pages)
{
    const char *xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs /><NextMarker />"
                      "</EnumerationResults>";
    struct collected c = {.n = 0};
    char marker[64] = "x";
    cr_assert_eq(blob_list_parse(xml, strlen(xml), collect, &c, marker, sizeof(marker)), 0);
    cr_assert_eq(c.n, 0);
    cr_assert_str_eq(marker, "");
    xml = "<EnumerationResults><Blobs></Blobs></EnumerationResults>";
    cr_assert_eq(blob_list_parse(xml, strlen(xml), collect, &c, marker, sizeof(marker)), 0);
    cr_assert_str_eq(marker, "");
}

Test(blob_list, malformed)
{
    const char *bad[] = {
        "not xml at all",
        "<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs></EnumerationResults>",
        "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>12a"
        "</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
        "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>1"
        "</Content-Length><Content-MD5>abc</Content-MD5></Properties></Blob></Blobs>"
        "</EnumerationResults>",
        "<EnumerationResults><Blobs><Blob><Name>a&bogus;</Name><Properties><Content-Length>1"
        "</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
        "<EnumerationResults><Blobs><Blob><Name>a&#0;</Name><Properties><Content-Length>1"
        "</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
        "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>1"
        "</Content-Length></Properties></Blob>",
        "<EnumerationResults><Blobs><Blob><Name>x</Name><Properties><Content-Length>"
        "99999999999999999999</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct collected c = {.n = 0};
        char marker[64];
        cr_assert_eq(blob_list_parse(bad[i], strlen(bad[i]), collect, &c, marker, sizeof(marker)),
                     CONTENT_STORE_EPROTO, "case %zu", i);
    }
    /* a name longer than content_blob_info can hold */
    char big[4096];
    int n = snprintf(big, sizeof(big), "<EnumerationResults><Blobs><Blob><Name>");
    memset(big + n, 'a', 1100);
    snprintf(big + n + 1100, sizeof(big) - (size_t)n - 1100,
             "</Name><Properties><Content-Length>1</Content-Length></Properties></Blob></Blobs>"
             "</EnumerationResults>");
    struct collected c = {.n = 0};
    char marker[64];
    cr_assert_eq(blob_list_parse(big, strlen(big), collect, &c, marker, sizeof(marker)),
                 CONTENT_STORE_EPROTO);
}

static int stop_at_first(void *ctx, const struct content_blob_info *info)
{
    (void)info;
    ++*(int *)ctx;
    return 7;
}

Test(blob_list, callback_stops)
{
    const char *xml = "<EnumerationResults><Blobs><Blob><Name>a</Name><Properties><Content-Length>"
                      "1</Content-Length></Properties></Blob><Blob><Name>b</Name><Properties>"
                      "<Content-Length>1</Content-Length></Properties></Blob></Blobs>"
                      "</EnumerationResults>";
    int calls = 0;
    char marker[16];
    cr_assert_eq(blob_list_parse(xml, strlen(xml), stop_at_first, &calls, marker, sizeof(marker)),
                 7);
    cr_assert_eq(calls, 1);
}

Test(blob_xml, error_body)
{
    const char *xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationFailure"
                      "</Code><Message>Server failed to authenticate the request. Make sure the "
                      "value of the Authorization header is formed correctly.\nRequestId:1"
                      "</Message></Error>";
    char code[64], msg[256];
    cr_assert_eq(blob_xml_text(xml, strlen(xml), "Code", code, sizeof(code)), 20);
    cr_assert_str_eq(code, "AuthorizationFailure");
    cr_assert_gt(blob_xml_text(xml, strlen(xml), "Message", msg, sizeof(msg)), 0);
    cr_assert(strncmp(msg, "Server failed", 13) == 0);
    cr_assert_eq(blob_xml_text(xml, strlen(xml), "Missing", msg, sizeof(msg)), -1);
    cr_assert_eq(blob_xml_text(xml, strlen(xml), "Message", msg, 10), -2);
}
