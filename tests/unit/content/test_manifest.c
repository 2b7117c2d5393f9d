/* Package manifests and names: vectors of good and bad documents, ids and paths. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"

#define GOOD                                                                                       \
    "{\"format\":1,\"package\":\"PS100001\",\"content_id\":\"Content_1.1\",\"distributed\":"       \
    "\"2026-11-27T16:00:00Z\",\"size\":124,\"files\":["                                            \
    "{\"path\":\"sub/x.msi\",\"size\":123,\"md5\":\"1B2M2Y8AsgTpgAmY7PhCfg==\",\"etag\":"          \
    "\"\\\"0x8D1\\\"\",\"last_modified\":1795774569},"                                             \
    "{\"path\":\"a.txt\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"\\\"0x8D2\\\"" \
    "\",\"last_modified\":1795774570,\"future\":true}]}"

static int parse(const char *json, struct content_manifest **m, char *err)
{
    return content_manifest_parse(json, strlen(json), m, err, 256);
}

Test(manifest, good_document)
{
    struct content_manifest *m = NULL;
    char err[256];
    cr_assert_eq(parse(GOOD, &m, err), 0, "%s", err);
    cr_assert_str_eq(m->package, "PS100001");
    cr_assert_str_eq(m->content_id, "Content_1.1");
    cr_assert_eq(m->distributed, 1795795200);
    cr_assert_eq(m->size, 124);
    cr_assert_eq(m->nfiles, 2);
    /* sorted by path */
    cr_assert_str_eq(m->files[0].path, "a.txt");
    cr_assert_str_eq(m->files[1].path, "sub/x.msi");
    const struct content_manifest_file *f = content_manifest_find(m, "sub/x.msi");
    cr_assert_not_null(f);
    cr_assert_eq(f->size, 123);
    cr_assert_str_eq(f->etag, "\"0x8D1\"");
    cr_assert_eq(f->last_modified, 1795774569);
    cr_assert_eq(f->md5[0], 0xd4);
    cr_assert_null(content_manifest_find(m, "sub"));
    cr_assert_null(content_manifest_find(m, "b.txt"));
    content_manifest_free(m);
}

Test(manifest, round_trip)
{
    struct content_manifest *m = content_manifest_new("pkg-1", "pkg-1", 1795795200, 3);
    cr_assert_not_null(m);
    const char *paths[] = {"z/last.bin", "empty", "a b/é.txt"};
    uint64_t sizes[] = {1ull << 40, 0, 5};
    for (int i = 0; i < 3; i++) {
        m->files[i].path = strdup(paths[i]);
        m->files[i].size = sizes[i];
        memset(m->files[i].md5, i + 1, 16);
        snprintf(m->files[i].etag, sizeof(m->files[i].etag), "\"0x%d\"", i);
        m->files[i].last_modified = 1000 + i;
    }
    char err[256];
    size_t len = 0;
    char *json = content_manifest_write(m, &len, err, sizeof(err));
    cr_assert_not_null(json, "%s", err);
    cr_assert_eq(len, strlen(json));
    cr_assert(strstr(json, "\"distributed\":\"2026-11-27T16:00:00Z\""));
    /* files in path order in the document */
    const char *a = strstr(json, "a b/"), *e = strstr(json, "\"empty\""), *z = strstr(json, "z/");
    cr_assert(a && e && z && a < e && e < z);
    struct content_manifest *back = NULL;
    cr_assert_eq(content_manifest_parse(json, len, &back, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(back->size, (1ull << 40) + 5);
    cr_assert_eq(back->nfiles, 3);
    const struct content_manifest_file *f = content_manifest_find(back, "a b/é.txt");
    cr_assert_not_null(f);
    cr_assert_eq(f->md5[15], 3);
    cr_assert_eq(f->last_modified, 1002);
    cr_assert_str_eq(f->etag, "\"0x2\"");
    free(json);
    content_manifest_free(back);
    content_manifest_free(m);
}

Test(manifest, write_refuses_duplicates)
{
    struct content_manifest *m = content_manifest_new("p", "p", 0, 2);
    m->files[0].path = strdup("a");
    m->files[1].path = strdup("a");
    char err[256];
    size_t len;
    cr_assert_null(content_manifest_write(m, &len, err, sizeof(err)));
    cr_assert(strstr(err, "twice"), "%s", err);
    content_manifest_free(m);
    cr_assert_null(content_manifest_new("bad/id", "x", 0, 0));
    cr_assert_null(content_manifest_new("ok", "bad id", 0, 0));
}

struct bad_case {
    const char *json;
    const char *why; /* a word the error must contain */
};

Test(manifest, bad_documents)
{
    static const char *file_ok = "{\"path\":\"a\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\","
                                 "\"etag\":\"\\\"e\\\"\",\"last_modified\":1}";
    char buf[1024];
    struct bad_case cases[] = {
        {"{", "JSON"},
        {"[]", "object"},
        {"{\"format\":2}", "format"},
        {"{\"format\":1,\"package\":\"a/b\"}", "package"},
        {"{\"format\":1,\"package\":\"..\"}", "package"},
        {"{\"format\":1,\"package\":\"p\",\"content_id\":\"\"}", "content_id"},
        {"{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":\"yesterday\"}",
         "distributed"},
        {"{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
         "\"2026-11-27T16:00:00Z\",\"size\":-1,\"files\":[]}",
         "size"},
        {"{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
         "\"2026-11-27T16:00:00Z\",\"size\":0}",
         "files"},
        {"{\"format\":1,\"format\":1}", "JSON"}, /* duplicate member */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct content_manifest *m = (struct content_manifest *)1;
        char err[256] = "";
        cr_assert_eq(parse(cases[i].json, &m, err), -1, "case %zu", i);
        cr_assert_null(m);
        cr_assert(strstr(err, cases[i].why), "case %zu: %s", i, err);
    }
    /* bad file entries, each in an otherwise good document */
    struct bad_case files[] = {
        {"{\"path\":\"../x\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\","
         "\"last_modified\":1}",
         "path"},
        {"{\"path\":\"/abs\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\","
         "\"last_modified\":1}",
         "path"},
        {"{\"path\":\"a//b\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\","
         "\"last_modified\":1}",
         "path"},
        {"{\"path\":\"a\\\\b\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\","
         "\"last_modified\":1}",
         "path"},
        {"{\"path\":\"a\\u0001\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\","
         "\"last_modified\":1}",
         "path"},
        {"{\"path\":\"a\",\"size\":9007199254740992,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\","
         "\"etag\":\"e\",\"last_modified\":1}",
         "size"},
        {"{\"path\":\"a\",\"size\":1,\"md5\":\"abc\",\"etag\":\"e\",\"last_modified\":1}", "md5"},
        {"{\"path\":\"a\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"last_modified\":1}",
         "etag"},
        {"{\"path\":\"a\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\",\"etag\":\"e\"}",
         "last_modified"},
        {"7", "object"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(buf, sizeof(buf),
                 "{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
                 "\"2026-11-27T16:00:00Z\",\"size\":1,\"files\":[%s]}",
                 files[i].json);
        struct content_manifest *m = NULL;
        char err[256] = "";
        cr_assert_eq(parse(buf, &m, err), -1, "file case %zu", i);
        cr_assert(strstr(err, files[i].why), "file case %zu: %s", i, err);
    }
    /* the same path twice; sizes that do not add up; a sum beyond the limit */
    snprintf(buf, sizeof(buf),
             "{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
             "\"2026-11-27T16:00:00Z\",\"size\":2,\"files\":[%s,%s]}",
             file_ok, file_ok);
    struct content_manifest *m = NULL;
    char err[256] = "";
    cr_assert_eq(parse(buf, &m, err), -1);
    cr_assert(strstr(err, "twice"), "%s", err);
    snprintf(buf, sizeof(buf),
             "{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
             "\"2026-11-27T16:00:00Z\",\"size\":5,\"files\":[%s]}",
             file_ok);
    cr_assert_eq(parse(buf, &m, err), -1);
    cr_assert(strstr(err, "add up"), "%s", err);
    snprintf(buf, sizeof(buf),
             "{\"format\":1,\"package\":\"p\",\"content_id\":\"c\",\"distributed\":"
             "\"2026-11-27T16:00:00Z\",\"size\":0,\"files\":["
             "{\"path\":\"a\",\"size\":9007199254740991,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\","
             "\"etag\":\"e\",\"last_modified\":1},"
             "{\"path\":\"b\",\"size\":1,\"md5\":\"DMF1ucDxtqgxw5niaXcmYQ==\","
             "\"etag\":\"e\",\"last_modified\":1}]}");
    cr_assert_eq(parse(buf, &m, err), -1);
    cr_assert(strstr(err, "beyond"), "%s", err);
}

Test(manifest, too_large)
{
    size_t len = CONTENT_MANIFEST_MAX + 1;
    char *big = malloc(len);
    memset(big, ' ', len);
    struct content_manifest *m = NULL;
    char err[256];
    cr_assert_eq(content_manifest_parse(big, len, &m, err, sizeof(err)), -1);
    cr_assert(strstr(err, "larger"), "%s", err);
    free(big);
}

Test(names, package_ids)
{
    cr_assert(content_package_id_is_valid("PS100001"));
    cr_assert(content_package_id_is_valid("a.b_c-d"));
    char id64[65], id65[66];
    memset(id64, 'a', 64), id64[64] = 0;
    memset(id65, 'a', 65), id65[65] = 0;
    cr_assert(content_package_id_is_valid(id64));
    cr_assert_not(content_package_id_is_valid(id65));
    const char *bad[] = {"", ".", "..", "a/b", "a b", "a\\b", "é", "a\n", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(content_package_id_is_valid(bad[i]), "\"%s\"", bad[i]);
    cr_assert_not(content_package_id_is_valid(NULL));
    char name[128];
    cr_assert_eq(content_manifest_blob_name("p1", name, sizeof(name)), 0);
    cr_assert_str_eq(name, "packages/p1.json");
    cr_assert_eq(content_file_blob_name("p1", "a/b.msi", name, sizeof(name)), 0);
    cr_assert_str_eq(name, "content/p1/a/b.msi");
    cr_assert_eq(content_file_blob_name("p1", "../b", name, sizeof(name)), -1);
    cr_assert_eq(content_file_blob_name("p/1", "b", name, sizeof(name)), -1);
    cr_assert_eq(content_file_blob_name("p1", "b", name, 5), -1);
}

Test(names, paths)
{
    const char *good[] = {"a", "a/b/c.msi", "a b/é", ".hidden", "a..b", "...", NULL};
    for (int i = 0; good[i]; i++)
        cr_assert(content_path_is_valid(good[i]), "\"%s\"", good[i]);
    const char *bad[] = {"",     "/a",   "a/",   "a//b", "./a",   "a/./b",
                         "../a", "a/..", "a\\b", "a\tb", "a\x7f", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(content_path_is_valid(bad[i]), "\"%s\"", bad[i]);
    char *long_path = malloc(CONTENT_PATH_MAX + 2);
    memset(long_path, 'a', CONTENT_PATH_MAX + 1);
    long_path[CONTENT_PATH_MAX + 1] = 0;
    cr_assert_not(content_path_is_valid(long_path));
    long_path[CONTENT_PATH_MAX] = 0;
    cr_assert(content_path_is_valid(long_path));
    free(long_path);
}
