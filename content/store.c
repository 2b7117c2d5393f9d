/* The content store entry points, and the folder store: blobs as files under one folder, the
 * embedded default and the store of single-host setups.
 *
 * Folder layout: blob "content/p1/a/b.msi" is the file <folder>/content/p1/a/b.msi. The store
 * keeps its own files under <folder>/.cmg (a name no blob may take): tmp/ for uploads in
 * progress, which are renamed into place whole so that a reader never sees half a file, and
 * md5/<blob name> holding the MD5 computed at upload with the ETag it belongs to, so a file
 * changed by hand afterwards is not given a stale MD5. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "blob-sign.h"
#include "core.h"
#include "store-impl.h"

#define META_DIR ".cmg"
#define READ_CHUNK (256u << 10) /* bytes per read() of a get or an upload */
#define WALK_DEPTH 64           /* folder levels a listing descends */

struct content_store {
    enum content_store_kind kind;
    char *root;              /* folder store: its folder, no trailing '/' */
    struct blob_store *blob; /* blob store */
    char describe[PATH_MAX + 16];
};

bool store_name_is_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > STORE_NAME_MAX || name[0] == '/' || name[n - 1] == '/')
        return false;
    const char *seg = name;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c == '\0') {
            size_t sl = (size_t)(name + i - seg);
            if (sl == 0 || (sl == 1 && seg[0] == '.') ||
                (sl == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            seg = name + i + 1;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return false;
    }
    return true;
}

/* A name this store accepts; err says why not. */
static bool check_name(const struct content_store *st, const char *name, char *err, size_t errlen)
{
    if (!name || !store_name_is_valid(name)) {
        snprintf(err, errlen,
                 "\"%s\": not a blob name (1-%zu bytes of '/'-separated segments, none empty, "
                 "\".\" or \"..\", no backslash or control character)",
                 name ? name : "", STORE_NAME_MAX);
        return false;
    }
    if (st->kind == CONTENT_STORE_FOLDER && strncmp(name, META_DIR, strlen(META_DIR)) == 0 &&
        (name[strlen(META_DIR)] == '/' || name[strlen(META_DIR)] == '\0')) {
        snprintf(err, errlen, "\"%s\": names under %s/ are the folder store's own", name, META_DIR);
        return false;
    }
    return true;
}

/* ---- folder store helpers ---- */

static int join(char *out, size_t len, const char *a, const char *b, const char *c)
{
    int w = snprintf(out, len, "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "");
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

/* mkdir -p of the folder part of path (everything before its last '/'). */
static int make_parents(const char *path)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof(tmp))
        return -1;
    memcpy(tmp, path, n + 1);
    char *last = strrchr(tmp, '/');
    if (!last || last == tmp)
        return 0;
    *last = '\0';
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            if (c == '\0')
                break;
            *p = c;
        }
    }
    return 0;
}

/* Removes the empty folders between path's folder and stop (exclusive). */
static void remove_empty_parents(const char *path, const char *stop)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    size_t sl = strlen(stop);
    for (;;) {
        char *last = strrchr(tmp, '/');
        if (!last || (size_t)(last - tmp) <= sl)
            return;
        *last = '\0';
        if (rmdir(tmp) != 0)
            return;
    }
}

static void folder_etag(const struct stat *sb, char *out, size_t len)
{
    snprintf(out, len, "\"%llx-%llx-%llx\"", (unsigned long long)sb->st_size,
             (unsigned long long)sb->st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)sb->st_mtim.tv_nsec,
             (unsigned long long)sb->st_ino);
}

static int md5_path(const struct content_store *st, const char *name, char *out, size_t len)
{
    return join(out, len, st->root, META_DIR "/md5", name);
}

/* The MD5 recorded for name when it was uploaded, if it still belongs to etag. */
static bool read_md5(const struct content_store *st, const char *name, const char *etag,
                     uint8_t md5[16])
{
    char path[PATH_MAX], line[256], tag[128], hex[64];
    if (md5_path(st, name, path, sizeof(path)) != 0)
        return false;
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(line, sizeof(line), f) && sscanf(line, "%127s %63s", tag, hex) == 2 &&
              strcmp(tag, etag) == 0 && strlen(hex) == 32;
    fclose(f);
    for (int i = 0; ok && i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            ok = false;
        md5[i] = (uint8_t)v;
    }
    return ok;
}

static void fill_folder_info(const struct content_store *st, const char *name,
                             const struct stat *sb, struct content_blob_info *info)
{
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", name);
    info->size = (uint64_t)sb->st_size;
    folder_etag(sb, info->etag, sizeof(info->etag));
    info->last_modified = (int64_t)sb->st_mtim.tv_sec;
    info->has_md5 = read_md5(st, name, info->etag, info->md5);
}

static int errno_error(int e)
{
    return e == ENOENT || e == ENOTDIR ? CONTENT_STORE_ENOTFOUND : CONTENT_STORE_EIO;
}

static int folder_head(struct content_store *st, const char *name, struct content_blob_info *info,
                       char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct stat sb = {0};
    if (join(path, sizeof(path), st->root, name, NULL) != 0) {
        snprintf(err, errlen, "%s: the path is too long", name);
        return CONTENT_STORE_EINVAL;
    }
    errno = 0;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        if (e == 0 || S_ISDIR(sb.st_mode))
            e = ENOENT;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return errno_error(e);
    }
    fill_folder_info(st, name, &sb, info);
    return 0;
}

static int folder_get(struct content_store *st, const char *name, const char *etag,
                      content_store_sink_cb sink, void *ctx, struct content_blob_info *info,
                      char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct stat sb;
    struct content_blob_info tmp;
    if (!info)
        info = &tmp;
    if (join(path, sizeof(path), st->root, name, NULL) != 0) {
        snprintf(err, errlen, "%s: the path is too long", name);
        return CONTENT_STORE_EINVAL;
    }
    memset(&sb, 0, sizeof(sb));
    errno = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno ? errno : ENOENT;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return errno_error(e);
    }
    /* the open file is the one read even if the name is replaced meanwhile */
    fill_folder_info(st, name, &sb, info);
    if (etag && strcmp(etag, info->etag) != 0) {
        close(fd);
        snprintf(err, errlen, "%s: changed (ETag %s, not %s)", name, info->etag, etag);
        return CONTENT_STORE_ECHANGED;
    }
    uint8_t *buf = malloc(READ_CHUNK);
    uint64_t done = 0;
    int rc = 0;
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", name);
        rc = CONTENT_STORE_EIO;
    }
    while (rc == 0 && done < info->size) {
        size_t want = info->size - done < READ_CHUNK ? (size_t)(info->size - done) : READ_CHUNK;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s after %llu of %llu bytes", path,
                     n < 0 ? strerror(errno) : "the file ended", (unsigned long long)done,
                     (unsigned long long)info->size);
            rc = CONTENT_STORE_EIO;
            break;
        }
        done += (uint64_t)n;
        if (sink && sink(ctx, buf, (size_t)n) != 0) {
            snprintf(err, errlen, "%s: stopped by the caller", name);
            rc = CONTENT_STORE_EABORT;
        }
    }
    free(buf);
    close(fd);
    return rc;
}

/* Where an upload's bytes come from: a file descriptor or memory. */
struct source {
    int fd;
    const uint8_t *data;
    size_t len;
};

/* Writes src into a temporary file, records its MD5, then renames it to name. */
static int folder_put(struct content_store *st, const char *name, const struct source *src,
                      uint64_t size, content_store_progress_cb progress, void *ctx,
                      struct content_blob_info *info, char *err, size_t errlen)
{
    char tmp[PATH_MAX], target[PATH_MAX], mpath[PATH_MAX], mtmp[PATH_MAX];
    uint8_t *buf = NULL;
    EVP_MD_CTX *md = NULL;
    int fd = -1, rc = CONTENT_STORE_EIO;
    bool have_tmp = false;

    if (join(target, sizeof(target), st->root, name, NULL) != 0 ||
        md5_path(st, name, mpath, sizeof(mpath)) != 0 ||
        join(tmp, sizeof(tmp), st->root, META_DIR "/tmp", "put-XXXXXX") != 0) {
        snprintf(err, errlen, "%s: the path is too long", name);
        return CONTENT_STORE_EINVAL;
    }
    if (make_parents(tmp) != 0 || (fd = mkstemp(tmp)) < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    have_tmp = true;
    md = EVP_MD_CTX_new();
    buf = src->data ? NULL : malloc(READ_CHUNK);
    if (!md || (!src->data && !buf) || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto out;
    }
    uint64_t done = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n;
        if (src->data) {
            n = (ssize_t)(src->len - done);
            p = src->data + done;
        } else {
            n = read(src->fd, buf, READ_CHUNK);
            p = buf;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                snprintf(err, errlen, "%s: reading: %s", name, strerror(errno));
                goto out;
            }
        }
        if (n == 0)
            break;
        if (done + (uint64_t)n > size) {
            snprintf(err, errlen, "%s: the file grew while it was read", name);
            goto out;
        }
        if (core_write_all(fd, p, (size_t)n) != 0) {
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            goto out;
        }
        EVP_DigestUpdate(md, p, (size_t)n);
        done += (uint64_t)n;
        if (progress && progress(ctx, done, size)) {
            snprintf(err, errlen, "%s: stopped by the caller", name);
            rc = CONTENT_STORE_EABORT;
            goto out;
        }
        if (src->data)
            break;
    }
    if (done != size) {
        snprintf(err, errlen, "%s: the file became shorter while it was read", name);
        goto out;
    }
    if (size == 0 && progress && progress(ctx, 0, 0)) {
        snprintf(err, errlen, "%s: stopped by the caller", name);
        rc = CONTENT_STORE_EABORT;
        goto out;
    }
    uint8_t md5[16];
    unsigned mdlen;
    struct stat sb;
    EVP_DigestFinal_ex(md, md5, &mdlen);
    if (fchmod(fd, 0644) != 0 || fdatasync(fd) != 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    /* rename keeps size, mtime and inode: the ETag is known before the file is in place, so
     * its MD5 record is written first and a reader never finds the file without it */
    char etag[80], line[160];
    folder_etag(&sb, etag, sizeof(etag));
    int ll = snprintf(line, sizeof(line), "%s ", etag);
    for (int i = 0; i < 16; i++)
        ll += snprintf(line + ll, sizeof(line) - (size_t)ll, "%02x", md5[i]);
    line[ll++] = '\n';
    int mfd = -1;
    if (snprintf(mtmp, sizeof(mtmp), "%s.md5", tmp) >= (int)sizeof(mtmp) ||
        (mfd = open(mtmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0 ||
        core_write_all(mfd, line, (size_t)ll) != 0 || close(mfd) != 0 || make_parents(mpath) != 0 ||
        rename(mtmp, mpath) != 0) {
        snprintf(err, errlen, "%s: recording the MD5: %s", name, strerror(errno));
        if (mfd >= 0)
            unlink(mtmp);
        goto out;
    }
    if (make_parents(target) != 0 || rename(tmp, target) != 0) {
        snprintf(err, errlen, "%s: %s", target, strerror(errno));
        goto out;
    }
    have_tmp = false;
    if (info) {
        fill_folder_info(st, name, &sb, info);
        memcpy(info->md5, md5, 16);
        info->has_md5 = true;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (have_tmp)
        unlink(tmp);
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

static int folder_delete(struct content_store *st, const char *name, char *err, size_t errlen)
{
    char path[PATH_MAX], mpath[PATH_MAX], mroot[PATH_MAX];
    if (join(path, sizeof(path), st->root, name, NULL) != 0 ||
        md5_path(st, name, mpath, sizeof(mpath)) != 0 ||
        join(mroot, sizeof(mroot), st->root, META_DIR "/md5", NULL) != 0) {
        snprintf(err, errlen, "%s: the path is too long", name);
        return CONTENT_STORE_EINVAL;
    }
    if (unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return CONTENT_STORE_EIO;
    }
    unlink(mpath);
    remove_empty_parents(path, st->root);
    remove_empty_parents(mpath, mroot);
    return 0;
}

struct names {
    char **v;
    size_t n, cap;
};

static int names_add(struct names *ns, const char *name)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        char **v = realloc(ns->v, cap * sizeof(*v));
        if (!v)
            return -1;
        ns->v = v;
        ns->cap = cap;
    }
    if (!(ns->v[ns->n] = strdup(name)))
        return -1;
    ns->n++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the names of the regular files under dir (rel: its name under the root, "" for
 * the root) that start with prefix. */
static int walk(const struct content_store *st, const char *rel, const char *prefix,
                struct names *ns, unsigned depth, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    if (depth > WALK_DEPTH) {
        snprintf(err, errlen, "%s: folders nested deeper than %d levels", rel, WALK_DEPTH);
        return CONTENT_STORE_EIO;
    }
    if (join(dir, sizeof(dir), st->root, rel, NULL) != 0) {
        snprintf(err, errlen, "%s: the path is too long", rel);
        return CONTENT_STORE_EIO;
    }
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return CONTENT_STORE_EIO;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (!*rel && strcmp(e->d_name, META_DIR) == 0)
            continue;
        char name[PATH_MAX], path[PATH_MAX];
        int w = snprintf(name, sizeof(name), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        if (w < 0 || (size_t)w >= sizeof(name) || join(path, sizeof(path), st->root, name, NULL))
            continue;
        struct stat sb;
        if (lstat(path, &sb) != 0)
            continue; /* gone meanwhile */
        size_t pl = strlen(prefix), nl = strlen(name);
        if (S_ISDIR(sb.st_mode)) {
            /* descend only where names can still start with prefix */
            if (strncmp(name, prefix, nl < pl ? nl : pl) == 0)
                rc = walk(st, name, prefix, ns, depth + 1, err, errlen);
        } else if (S_ISREG(sb.st_mode) && strncmp(name, prefix, pl) == 0 &&
                   store_name_is_valid(name)) {
            if (names_add(ns, name) != 0) {
                snprintf(err, errlen, "listing: out of memory");
                rc = CONTENT_STORE_EIO;
            }
        }
    }
    closedir(d);
    return rc;
}

static int folder_list(struct content_store *st, const char *prefix, content_store_each_cb each,
                       void *ctx, char *err, size_t errlen)
{
    struct names ns = {NULL, 0, 0};
    char start[PATH_MAX] = "";
    if (!prefix)
        prefix = "";
    /* start at the deepest folder the prefix names */
    const char *slash = strrchr(prefix, '/');
    if (slash && (size_t)(slash - prefix) < sizeof(start)) {
        memcpy(start, prefix, (size_t)(slash - prefix));
        start[slash - prefix] = '\0';
    }
    if (start[0] && !store_name_is_valid(start))
        return 0; /* no blob can have such a prefix */
    int rc = walk(st, start, prefix, &ns, 0, err, errlen);
    if (rc == 0 && ns.n)
        qsort(ns.v, ns.n, sizeof(*ns.v), cmp_names);
    struct content_blob_info *info = malloc(sizeof(*info));
    if (!info && rc == 0) {
        snprintf(err, errlen, "listing: out of memory");
        rc = CONTENT_STORE_EIO;
    }
    for (size_t i = 0; rc == 0 && i < ns.n; i++) {
        char path[PATH_MAX];
        struct stat sb;
        if (join(path, sizeof(path), st->root, ns.v[i], NULL) != 0 || stat(path, &sb) != 0 ||
            !S_ISREG(sb.st_mode))
            continue; /* deleted since the walk */
        fill_folder_info(st, ns.v[i], &sb, info);
        rc = each(ctx, info);
    }
    free(info);
    for (size_t i = 0; i < ns.n; i++)
        free(ns.v[i]);
    free(ns.v);
    return rc;
}

static int folder_prepare(struct content_store *st, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (join(path, sizeof(path), st->root, META_DIR "/tmp", "x") != 0 || make_parents(path) != 0) {
        snprintf(err, errlen, "%s: %s", st->root, strerror(errno));
        return CONTENT_STORE_EIO;
    }
    return 0;
}

/* ---- entry points ---- */

struct content_store *content_store_new(const struct content_settings *s, char *err, size_t errlen)
{
    struct content_store *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->kind = s->store == CONTENT_STORE_BLOB ? CONTENT_STORE_BLOB : CONTENT_STORE_FOLDER;
    if (st->kind == CONTENT_STORE_BLOB) {
        if (!(st->blob = blob_store_new(s, err, errlen))) {
            free(st);
            return NULL;
        }
        snprintf(st->describe, sizeof(st->describe), "%s", blob_store_describe(st->blob));
        return st;
    }
    if (!s->folder || !*s->folder) {
        snprintf(err, errlen, "content.folder: a folder store needs its folder");
        free(st);
        return NULL;
    }
    size_t n = strlen(s->folder);
    while (n > 1 && s->folder[n - 1] == '/')
        n--;
    if (n + 64 >= PATH_MAX || !(st->root = strndup(s->folder, n))) {
        snprintf(err, errlen, "content.folder: \"%s\": too long", s->folder);
        free(st);
        return NULL;
    }
    snprintf(st->describe, sizeof(st->describe), "folder %s", st->root);
    return st;
}

void content_store_free(struct content_store *st)
{
    if (!st)
        return;
    blob_store_free(st->blob);
    free(st->root);
    free(st);
}

const char *content_store_describe(const struct content_store *st)
{
    return st->describe;
}

int content_store_prepare(struct content_store *st, char *err, size_t errlen)
{
    return st->blob ? blob_store_prepare(st->blob, err, errlen) : folder_prepare(st, err, errlen);
}

int content_store_head(struct content_store *st, const char *name, struct content_blob_info *info,
                       char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    return st->blob ? blob_store_head(st->blob, name, info, err, errlen)
                    : folder_head(st, name, info, err, errlen);
}

int content_store_get(struct content_store *st, const char *name, const char *etag,
                      content_store_sink_cb sink, void *ctx, struct content_blob_info *info,
                      char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    return st->blob ? blob_store_get(st->blob, name, etag, sink, ctx, info, err, errlen)
                    : folder_get(st, name, etag, sink, ctx, info, err, errlen);
}

int content_store_put_file(struct content_store *st, const char *name, const char *path,
                           const char *content_type, content_store_progress_cb progress, void *ctx,
                           struct content_blob_info *info, char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    if (st->blob)
        return blob_store_put_file(st->blob, name, path, content_type, progress, ctx, info, err,
                                   errlen);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return errno_error(e);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: not a regular file", path);
        return CONTENT_STORE_EINVAL;
    }
    struct source src = {fd, NULL, 0};
    int rc = folder_put(st, name, &src, (uint64_t)sb.st_size, progress, ctx, info, err, errlen);
    close(fd);
    return rc;
}

int content_store_put_bytes(struct content_store *st, const char *name, const void *data,
                            size_t len, const char *content_type, struct content_blob_info *info,
                            char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    if (st->blob)
        return blob_store_put_bytes(st->blob, name, data, len, content_type, info, err, errlen);
    struct source src = {-1, data ? data : (const uint8_t *)"", len};
    return folder_put(st, name, &src, len, NULL, NULL, info, err, errlen);
}

int content_store_list(struct content_store *st, const char *prefix, content_store_each_cb each,
                       void *ctx, char *err, size_t errlen)
{
    if (prefix && (strlen(prefix) > STORE_NAME_MAX || strpbrk(prefix, "\\"))) {
        snprintf(err, errlen, "\"%s\": not a blob name prefix", prefix);
        return CONTENT_STORE_EINVAL;
    }
    return st->blob ? blob_store_list(st->blob, prefix, each, ctx, err, errlen)
                    : folder_list(st, prefix, each, ctx, err, errlen);
}

int content_store_delete(struct content_store *st, const char *name, char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    return st->blob ? blob_store_delete(st->blob, name, err, errlen)
                    : folder_delete(st, name, err, errlen);
}

int content_store_sas_url(const struct content_store *st, const char *name, int64_t now,
                          int64_t expires, char *out, size_t outlen, char *err, size_t errlen)
{
    if (!check_name(st, name, err, errlen))
        return CONTENT_STORE_EINVAL;
    if (!st->blob) {
        snprintf(err, errlen, "SAS URLs need a blob store (content.store = blob)");
        return CONTENT_STORE_EINVAL;
    }
    return blob_store_sas_url(st->blob, name, now, expires, out, outlen, err, errlen);
}

const char *content_store_strerror(int err)
{
    switch (err) {
    case CONTENT_STORE_OK:
        return "ok";
    case CONTENT_STORE_ENOTFOUND:
        return "not found";
    case CONTENT_STORE_ECHANGED:
        return "changed";
    case CONTENT_STORE_EAUTH:
        return "refused (credentials)";
    case CONTENT_STORE_EIO:
        return "I/O error";
    case CONTENT_STORE_EPROTO:
        return "unexpected answer";
    case CONTENT_STORE_EABORT:
        return "stopped";
    case CONTENT_STORE_EINVAL:
        return "invalid argument";
    }
    return "unknown error";
}
