/* Package manifests: the JSON document "packages/<id>.json" that says a package is complete and
 * what it holds (docs/content.md). Written by cmgctl content distribute, read by the gateway's
 * content service and by cmgctl content list. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "blob-sign.h"
#include "content.h"
#include "store-impl.h"

static bool id_chars(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

bool content_package_id_is_valid(const char *id)
{
    return id && id_chars(id, CONTENT_PACKAGE_ID_MAX);
}

bool content_id_is_valid(const char *id)
{
    return id && id_chars(id, CONTENT_ID_MAX);
}

bool content_path_is_valid(const char *path)
{
    return path && strlen(path) <= CONTENT_PATH_MAX && store_name_is_valid(path);
}

int content_file_blob_name(const char *package, const char *path, char *out, size_t len)
{
    if (!content_package_id_is_valid(package) || !content_path_is_valid(path))
        return -1;
    int w = snprintf(out, len, "content/%s/%s", package, path);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

int content_manifest_blob_name(const char *package, char *out, size_t len)
{
    if (!content_package_id_is_valid(package))
        return -1;
    int w = snprintf(out, len, "packages/%s.json", package);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

void content_manifest_free(struct content_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i].path);
    free(m->files);
    free(m);
}

struct content_manifest *content_manifest_new(const char *package, const char *content_id,
                                              int64_t distributed, size_t nfiles)
{
    if (!content_package_id_is_valid(package) || !content_id_is_valid(content_id) ||
        nfiles > CONTENT_MANIFEST_FILES_MAX || distributed < 0)
        return NULL;
    struct content_manifest *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->files = calloc(nfiles ? nfiles : 1, sizeof(*m->files));
    if (!m->files) {
        free(m);
        return NULL;
    }
    m->nfiles = nfiles;
    snprintf(m->package, sizeof(m->package), "%s", package);
    snprintf(m->content_id, sizeof(m->content_id), "%s", content_id);
    m->distributed = distributed;
    return m;
}

static int cmp_file(const void *a, const void *b)
{
    const struct content_manifest_file *x = a, *y = b;
    return strcmp(x->path, y->path);
}

/* Sorts the files, then checks paths, uniqueness and sizes; sets *total. */
static int check_files(struct content_manifest *m, uint64_t *total, char *err, size_t errlen)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (!m->files[i].path || !content_path_is_valid(m->files[i].path)) {
            snprintf(err, errlen, "files[%zu]: \"%.200s\" is not a path inside a package", i,
                     m->files[i].path ? m->files[i].path : "");
            return -1;
        }
    qsort(m->files, m->nfiles, sizeof(*m->files), cmp_file);
    uint64_t sum = 0;
    for (size_t i = 0; i < m->nfiles; i++) {
        const struct content_manifest_file *f = &m->files[i];
        if (i > 0 && strcmp(f->path, m->files[i - 1].path) == 0) {
            snprintf(err, errlen, "\"%.200s\" is listed twice", f->path);
            return -1;
        }
        if (f->size > CONTENT_SIZE_MAX || sum + f->size > CONTENT_SIZE_MAX) {
            snprintf(err, errlen, "\"%.200s\": sizes beyond %llu bytes", f->path,
                     (unsigned long long)CONTENT_SIZE_MAX);
            return -1;
        }
        sum += f->size;
    }
    *total = sum;
    return 0;
}

char *content_manifest_write(struct content_manifest *m, size_t *len, char *err, size_t errlen)
{
    uint64_t total;
    if (check_files(m, &total, err, errlen) != 0)
        return NULL;
    m->size = total;
    char date[21];
    blob_iso_date(m->distributed, date);
    json_t *files = json_array();
    json_t *root = json_pack("{s:i, s:s, s:s, s:s, s:I, s:o}", "format", CONTENT_MANIFEST_FORMAT,
                             "package", m->package, "content_id", m->content_id, "distributed",
                             date, "size", (json_int_t)m->size, "files", files);
    char *text = NULL;
    if (!root || !files)
        goto out;
    for (size_t i = 0; i < m->nfiles; i++) {
        const struct content_manifest_file *f = &m->files[i];
        char md5[32];
        blob_base64_encode(f->md5, 16, md5);
        if (json_array_append_new(files,
                                  json_pack("{s:s, s:I, s:s, s:s, s:I}", "path", f->path, "size",
                                            (json_int_t)f->size, "md5", md5, "etag", f->etag,
                                            "last_modified", (json_int_t)f->last_modified)) != 0)
            goto out;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text)
        *len = strlen(text);
out:
    if (!text)
        snprintf(err, errlen, "out of memory writing the manifest");
    json_decref(root);
    return text;
}

/* A non-negative JSON integer member that fits CONTENT_SIZE_MAX. */
static int get_size(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > CONTENT_SIZE_MAX)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_file(json_t *f, size_t i, struct content_manifest_file *out, char *err,
                      size_t errlen)
{
    const char *path = json_string_value(json_object_get(f, "path"));
    const char *md5 = json_string_value(json_object_get(f, "md5"));
    const char *etag = json_string_value(json_object_get(f, "etag"));
    json_t *lm = json_object_get(f, "last_modified");
    if (!json_is_object(f)) {
        snprintf(err, errlen, "files[%zu]: not an object", i);
        return -1;
    }
    if (!path || !content_path_is_valid(path)) {
        snprintf(err, errlen, "files[%zu].path: %s%.200s%s", i, path ? "\"" : "missing",
                 path ? path : "", path ? "\" is not a path inside a package" : "");
        return -1;
    }
    if (get_size(f, "size", &out->size) != 0) {
        snprintf(err, errlen, "files[%zu].size: missing, negative or beyond %llu", i,
                 (unsigned long long)CONTENT_SIZE_MAX);
        return -1;
    }
    if (!md5 || blob_base64_decode(md5, strlen(md5), out->md5, sizeof(out->md5)) != 16) {
        snprintf(err, errlen, "files[%zu].md5: missing or not the base64 of 16 bytes", i);
        return -1;
    }
    if (!etag || !*etag || strlen(etag) >= sizeof(out->etag)) {
        snprintf(err, errlen, "files[%zu].etag: missing, empty or too long", i);
        return -1;
    }
    if (!json_is_integer(lm) || json_integer_value(lm) < 0) {
        snprintf(err, errlen, "files[%zu].last_modified: missing or not Unix seconds", i);
        return -1;
    }
    snprintf(out->etag, sizeof(out->etag), "%s", etag);
    out->last_modified = (int64_t)json_integer_value(lm);
    if (!(out->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int content_manifest_parse(const char *json, size_t len, struct content_manifest **out, char *err,
                           size_t errlen)
{
    json_error_t je;
    struct content_manifest *m = NULL;
    *out = NULL;
    if (len > CONTENT_MANIFEST_MAX) {
        snprintf(err, errlen, "larger than %u bytes", CONTENT_MANIFEST_MAX);
        return -1;
    }
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "not JSON: line %d: %s", je.line, je.text);
        return -1;
    }
    json_t *format = json_object_get(root, "format");
    const char *package = json_string_value(json_object_get(root, "package"));
    const char *cid = json_string_value(json_object_get(root, "content_id"));
    const char *dist = json_string_value(json_object_get(root, "distributed"));
    json_t *files = json_object_get(root, "files");
    int64_t when;
    uint64_t size, total;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "not a JSON object");
    } else if (!json_is_integer(format) || json_integer_value(format) != CONTENT_MANIFEST_FORMAT) {
        snprintf(err, errlen, "format: missing, or not %d", CONTENT_MANIFEST_FORMAT);
    } else if (!content_package_id_is_valid(package)) {
        snprintf(err, errlen, "package: missing or not a package id (1-%d of A-Z a-z 0-9 . _ -)",
                 CONTENT_PACKAGE_ID_MAX);
    } else if (!content_id_is_valid(cid)) {
        snprintf(err, errlen, "content_id: missing or not a content id");
    } else if (!dist || blob_parse_iso_date(dist, &when) != 0) {
        snprintf(err, errlen, "distributed: missing or not YYYY-MM-DDThh:mm:ssZ");
    } else if (get_size(root, "size", &size) != 0) {
        snprintf(err, errlen, "size: missing, negative or beyond %llu",
                 (unsigned long long)CONTENT_SIZE_MAX);
    } else if (!json_is_array(files)) {
        snprintf(err, errlen, "files: missing or not an array");
    } else if (json_array_size(files) > CONTENT_MANIFEST_FILES_MAX) {
        snprintf(err, errlen, "files: more than %d", CONTENT_MANIFEST_FILES_MAX);
    } else if (!(m = content_manifest_new(package, cid, when, json_array_size(files)))) {
        snprintf(err, errlen, "out of memory");
    } else {
        size_t i;
        for (i = 0; i < m->nfiles; i++)
            if (parse_file(json_array_get(files, i), i, &m->files[i], err, errlen) != 0)
                break;
        if (i == m->nfiles && check_files(m, &total, err, errlen) == 0) {
            if (total == size) {
                m->size = size;
                json_decref(root);
                *out = m;
                return 0;
            }
            snprintf(err, errlen, "size: %llu, but the files add up to %llu",
                     (unsigned long long)size, (unsigned long long)total);
        }
    }
    content_manifest_free(m);
    json_decref(root);
    return -1;
}

const struct content_manifest_file *content_manifest_find(const struct content_manifest *m,
                                                          const char *path)
{
    size_t lo = 0, hi = m->nfiles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(path, m->files[mid].path);
        if (c == 0)
            return &m->files[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
