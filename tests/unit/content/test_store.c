/* The folder store: name checks, atomic writes with MD5, conditional reads, listing order,
 * deletion, on a temporary folder. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "content.h"

static char root[256];
static struct content_store *st;

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/cmg-store-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    struct content_settings s;
    memset(&s, 0, sizeof(s));
    s.store = CONTENT_STORE_FOLDER;
    char folder[300];
    snprintf(folder, sizeof(folder), "%s/store/", root);
    s.folder = folder;
    char err[256];
    st = content_store_new(&s, err, sizeof(err));
    cr_assert_not_null(st, "%s", err);
    cr_assert_eq(content_store_prepare(st, err, sizeof(err)), 0, "%s", err);
}

static void teardown(void)
{
    content_store_free(st);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(folder_store, .init = setup, .fini = teardown);

Test(folder_store, describe)
{
    char want[300];
    snprintf(want, sizeof(want), "folder %s/store", root);
    cr_assert_str_eq(content_store_describe(st), want);
}

Test(folder_store, bad_names)
{
    const char *bad[] = {"",     "/etc/passwd", "../x",  "content/../x", "a//b", "a/", "./a",
                         "a\\b", "a\nb",        "a\x01", ".cmg/md5/x",   ".cmg", NULL};
    char err[256];
    struct content_blob_info info;
    for (int i = 0; bad[i]; i++) {
        cr_assert_eq(content_store_head(st, bad[i], &info, err, sizeof(err)), CONTENT_STORE_EINVAL,
                     "\"%s\"", bad[i]);
        cr_assert_eq(content_store_put_bytes(st, bad[i], "x", 1, NULL, NULL, err, sizeof(err)),
                     CONTENT_STORE_EINVAL, "\"%s\"", bad[i]);
        cr_assert_eq(content_store_delete(st, bad[i], err, sizeof(err)), CONTENT_STORE_EINVAL);
        cr_assert_eq(content_store_get(st, bad[i], NULL, NULL, NULL, NULL, err, sizeof(err)),
                     CONTENT_STORE_EINVAL);
    }
    cr_assert_eq(content_store_head(st, NULL, &info, err, sizeof(err)), CONTENT_STORE_EINVAL);
    char sas[512];
    cr_assert_eq(content_store_sas_url(st, "a", 0, 10, sas, sizeof(sas), err, sizeof(err)),
                 CONTENT_STORE_EINVAL);
    cr_assert(strstr(err, "blob"), "%s", err);
}

struct buf {
    char data[256];
    size_t len;
    int calls;
};

static int sink(void *ctx, const void *data, size_t len)
{
    struct buf *b = ctx;
    cr_assert_leq(b->len + len, sizeof(b->data));
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->calls++;
    return 0;
}

Test(folder_store, put_get_head)
{
    char err[256];
    struct content_blob_info put, head, got;
    cr_assert_eq(content_store_put_bytes(st, "content/p1/a b/x.txt", "hello", 5, "text/plain", &put,
                                         err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(put.size, 5);
    cr_assert(put.has_md5);
    /* MD5("hello") = 5d41402abc4b2a76b9719d911017c592 */
    cr_assert_eq(put.md5[0], 0x5d);
    cr_assert_eq(put.md5[15], 0x92);
    cr_assert_eq(put.etag[0], '"');
    cr_assert_eq(put.etag[strlen(put.etag) - 1], '"');
    cr_assert_eq(content_store_head(st, "content/p1/a b/x.txt", &head, err, sizeof(err)), 0);
    cr_assert_str_eq(head.etag, put.etag);
    cr_assert(head.has_md5);
    cr_assert_eq(memcmp(head.md5, put.md5, 16), 0);
    cr_assert_gt(head.last_modified, 1700000000);
    struct buf b = {.len = 0};
    cr_assert_eq(
        content_store_get(st, "content/p1/a b/x.txt", put.etag, sink, &b, &got, err, sizeof(err)),
        0, "%s", err);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(memcmp(b.data, "hello", 5), 0);
    cr_assert_str_eq(got.name, "content/p1/a b/x.txt");
    /* the file is where the layout says, and nothing is left in the temporary folder */
    char path[512];
    snprintf(path, sizeof(path), "%s/store/content/p1/a b/x.txt", root);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_size, 5);

    /* a replaced file has a new ETag: the old one no longer reads */
    cr_assert_eq(content_store_put_bytes(st, "content/p1/a b/x.txt", "world!", 6, NULL, &put, err,
                                         sizeof(err)),
                 0);
    cr_assert_str_neq(put.etag, head.etag);
    b.len = 0;
    cr_assert_eq(
        content_store_get(st, "content/p1/a b/x.txt", head.etag, sink, &b, NULL, err, sizeof(err)),
        CONTENT_STORE_ECHANGED);
    cr_assert_eq(b.len, 0);

    /* a file changed by hand keeps no stale MD5 */
    int fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "changed", 7), 7);
    close(fd);
    cr_assert_eq(content_store_head(st, "content/p1/a b/x.txt", &head, err, sizeof(err)), 0);
    cr_assert_eq(head.size, 7);
    cr_assert_not(head.has_md5);

    cr_assert_eq(content_store_head(st, "content/p1/none", &head, err, sizeof(err)),
                 CONTENT_STORE_ENOTFOUND);
    cr_assert_eq(content_store_head(st, "content/p1", &head, err, sizeof(err)),
                 CONTENT_STORE_ENOTFOUND);
    cr_assert_eq(content_store_get(st, "content/p1/none", NULL, sink, &b, NULL, err, sizeof(err)),
                 CONTENT_STORE_ENOTFOUND);
}

static int abort_sink(void *ctx, const void *data, size_t len)
{
    (void)ctx, (void)data, (void)len;
    return 1;
}

Test(folder_store, empty_file_and_abort)
{
    char err[256];
    struct content_blob_info info;
    cr_assert_eq(
        content_store_put_bytes(st, "content/p/empty", NULL, 0, NULL, &info, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(info.size, 0);
    cr_assert(info.has_md5);
    cr_assert_eq(info.md5[0], 0xd4); /* MD5 of nothing: d41d8cd9... */
    struct buf b = {.len = 0};
    cr_assert_eq(content_store_get(st, "content/p/empty", NULL, sink, &b, &info, err, sizeof(err)),
                 0);
    cr_assert_eq(b.calls, 0);
    content_store_put_bytes(st, "content/p/x", "abc", 3, NULL, NULL, err, sizeof(err));
    cr_assert_eq(
        content_store_get(st, "content/p/x", NULL, abort_sink, NULL, NULL, err, sizeof(err)),
        CONTENT_STORE_EABORT);
}

struct names {
    char v[8][64];
    int n;
};

static int collect(void *ctx, const struct content_blob_info *info)
{
    struct names *ns = ctx;
    if (ns->n < 8)
        snprintf(ns->v[ns->n], sizeof(ns->v[0]), "%.60s", info->name);
    ns->n++;
    return 0;
}

static int stop(void *ctx, const struct content_blob_info *info)
{
    (void)info;
    ++*(int *)ctx;
    return 42;
}

Test(folder_store, list_in_name_order_and_delete)
{
    char err[256];
    const char *names[] = {"packages/p2.json", "content/p2/b",   "content/p10/a",
                           "content/p2/a/z",   "content/p2/a-b", "content/p1/x"};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(content_store_put_bytes(st, names[i], "1", 1, NULL, NULL, err, sizeof(err)), 0,
                     "%s", err);
    struct names ns = {.n = 0};
    cr_assert_eq(content_store_list(st, NULL, collect, &ns, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ns.n, 6);
    const char *order[] = {"content/p1/x",   "content/p10/a", "content/p2/a-b",
                           "content/p2/a/z", "content/p2/b",  "packages/p2.json"};
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(ns.v[i], order[i]);
    ns.n = 0;
    cr_assert_eq(content_store_list(st, "content/p2/", collect, &ns, err, sizeof(err)), 0);
    cr_assert_eq(ns.n, 3);
    cr_assert_str_eq(ns.v[0], "content/p2/a-b");
    ns.n = 0;
    cr_assert_eq(content_store_list(st, "content/p1", collect, &ns, err, sizeof(err)), 0);
    cr_assert_eq(ns.n, 2); /* p1/x and p10/a: a prefix, not a folder */
    ns.n = 0;
    cr_assert_eq(content_store_list(st, "nothing/", collect, &ns, err, sizeof(err)), 0);
    cr_assert_eq(ns.n, 0);
    int calls = 0;
    cr_assert_eq(content_store_list(st, NULL, stop, &calls, err, sizeof(err)), 42);
    cr_assert_eq(calls, 1);

    for (int i = 0; i < 6; i++)
        cr_assert_eq(content_store_delete(st, names[i], err, sizeof(err)), 0, "%s", err);
    /* already gone counts as deleted */
    cr_assert_eq(content_store_delete(st, names[0], err, sizeof(err)), 0);
    ns.n = 0;
    cr_assert_eq(content_store_list(st, NULL, collect, &ns, err, sizeof(err)), 0);
    cr_assert_eq(ns.n, 0);
    /* empty folders went with the files */
    char path[512];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/store/content", root);
    cr_assert_neq(stat(path, &sb), 0);
}

static int count_progress(void *ctx, uint64_t done, uint64_t total)
{
    uint64_t *last = ctx;
    cr_assert_leq(done, total);
    *last = done;
    return 0;
}

Test(folder_store, put_file)
{
    char err[256], src[512];
    snprintf(src, sizeof(src), "%s/src.bin", root);
    FILE *f = fopen(src, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 700000; i++)
        fputc(i * 7 & 0xff, f);
    fclose(f);
    uint64_t last = 0;
    struct content_blob_info info;
    cr_assert_eq(content_store_put_file(st, "content/p/big.bin", src, NULL, count_progress, &last,
                                        &info, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(last, 700000);
    cr_assert_eq(info.size, 700000);
    cr_assert(info.has_md5);
    snprintf(src, sizeof(src), "%s/missing", root);
    cr_assert_eq(
        content_store_put_file(st, "content/p/m", src, NULL, NULL, NULL, NULL, err, sizeof(err)),
        CONTENT_STORE_ENOTFOUND);
    cr_assert_eq(
        content_store_put_file(st, "content/p/m", root, NULL, NULL, NULL, NULL, err, sizeof(err)),
        CONTENT_STORE_EINVAL);
}
