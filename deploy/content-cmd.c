/* cmgctl content distribute | list | remove: put packages into the gateway's content store (the
 * folder store or Azure Blob storage, from the [content] section of gateway.ini), report
 * them against the storage alert threshold, and take them out again. The layout and the
 * manifest are in docs/content.md. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "content-cmd.h"
#include "content.h"
#include "core.h"
#include "deploy.h"

#define EXIT_USAGE 2
#define WALK_DEPTH 64 /* folder levels distribute descends */
#define PROGRESS_MS 200

const char cmgctl_content_usage[] =
    "       cmgctl content distribute STORE PACKAGE FOLDER [--content-id ID] [--json]\n"
    "       cmgctl content list STORE [--json]\n"
    "       cmgctl content remove STORE PACKAGE [--json]\n"
    "       cmgctl content url STORE PACKAGE PATH\n"
    "         STORE: -c GATEWAY.INI, or --deployment STATE_DIR [--settings FILE]\n";

const char cmgctl_content_help[] =
    "content distribute -c GATEWAY.INI PACKAGE FOLDER\n"
    "    Uploads the regular files under FOLDER as package PACKAGE (1-64 of A-Z a-z 0-9 . _ -)\n"
    "    into the store of the [content] section, then its manifest, then deletes the\n"
    "    package's files that are no longer in FOLDER. Files already stored with the same\n"
    "    size and MD5 are skipped, so running it again after a failure finishes the job.\n"
    "    Symbolic links are refused. --content-id ID: the content id (default PACKAGE).\n"
    "\n"
    "content list -c GATEWAY.INI\n"
    "    The packages in the store: files, size, when distributed, and whether complete;\n"
    "    then the storage used against content.storage_alert (ok, warning, critical).\n"
    "\n"
    "content remove -c GATEWAY.INI PACKAGE\n"
    "    Deletes the package's manifest, then its files.\n"
    "\n"
    "content url -c GATEWAY.INI PACKAGE PATH\n"
    "    A read-only SAS URL for one file of a package in Blob storage, valid for\n"
    "    content.sas_lifetime: what the gateway hands clients with locations = sas.\n"
    "    Needs the account key.\n"
    "\n"
    "    The store: -c GATEWAY.INI, the [content] section of a gateway's settings; or\n"
    "    --deployment STATE_DIR, the store of what cmgctl create deployed there: a local\n"
    "    deployment's shared folder, or an Azure deployment's storage account, whose key\n"
    "    is asked of Azure each time (never written anywhere); an Azure deployment also\n"
    "    needs --settings FILE, the settings create was given (the server app's\n"
    "    credentials).\n"
    "    --json: a JSON report on standard output instead of text (all three verbs).\n"
    "    Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 bad usage.\n";

/* ---- arguments ---- */

struct args {
    const char *config;
    const char *deployment; /* a state folder of cmgctl create, instead of config */
    const char *settings;   /* with deployment: the deployment's settings file */
    const char *content_id;
    bool json;
    const char *operand[2];
    int noperands;
};

static int usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage(const char *verb, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cmgctl: content %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'cmgctl --help'.\n", stderr);
    return EXIT_USAGE;
}

static int fail(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(const char *verb, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cmgctl: content %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

/* Options in any order around the operands: -c/--config FILE, --content-id ID (when
 * has_content_id), --json, --help. Returns 0, -1 after printing the help, or 2. */
static int parse_args(const char *verb, int argc, char **argv, int nwant, const char *const *names,
                      bool has_content_id, struct args *a)
{
    bool done = false;
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char **slot = NULL;
        const char *value = NULL;
        if (!done && strcmp(arg, "--") == 0) {
            done = true;
            continue;
        }
        if (!done && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            fputs(cmgctl_content_help, stdout);
            return -1;
        }
        if (!done && strcmp(arg, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (!done && arg[0] == '-' && arg[1]) {
            const char *eq = strchr(arg, '=');
            size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
            if (strcmp(arg, "-c") == 0 || (nl == 8 && strncmp(arg, "--config", 8) == 0))
                slot = &a->config;
            else if (nl == 12 && strncmp(arg, "--deployment", 12) == 0)
                slot = &a->deployment;
            else if (nl == 10 && strncmp(arg, "--settings", 10) == 0)
                slot = &a->settings;
            else if (has_content_id && nl == 12 && strncmp(arg, "--content-id", 12) == 0)
                slot = &a->content_id;
            else
                return usage(verb, "unknown option \"%.*s\"", (int)nl, arg);
            if (eq && arg[1] == '-')
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return usage(verb, "%.*s needs a value", (int)nl, arg);
            *slot = value;
            continue;
        }
        if (a->noperands == nwant)
            return usage(verb, "unexpected argument \"%s\"", arg);
        a->operand[a->noperands++] = arg;
    }
    if (a->noperands < nwant)
        return usage(verb, "missing %s", names[a->noperands]);
    if (!a->config == !a->deployment)
        return usage(verb,
                     "give the store: -c GATEWAY.INI or --deployment STATE_DIR (one of them)");
    if (a->settings && !a->deployment)
        return usage(verb, "--settings goes with --deployment");
    return 0;
}

/* ---- settings and store ---- */

/* The store of a deployment: its settings in memory (an Azure one's with a key listed now). */
static struct content_store *open_deployment_store(const struct args *a, struct content_settings *s)
{
    char err[DEPLOY_MSG_MAX];
    struct content_store *st = NULL;
    if (deploy_content_settings(a->deployment, a->settings, s, err, sizeof(err)) != 0)
        fprintf(stderr, "cmgctl: %s\n", err);
    else if (!(st = content_store_new(s, err, sizeof(err))))
        fprintf(stderr, "cmgctl: %s: %s\n", a->deployment, err);
    return st;
}

/* Loads [content] from the gateway.ini of -c, or the deployment's, and opens its store; every
 * error printed. */
static struct content_store *open_store(const char *verb, const struct args *a,
                                        struct content_settings *s)
{
    struct config_report r;
    struct content_store *st = NULL;
    char err[1024];
    const char *config = a->config;
    if (a->deployment)
        return open_deployment_store(a, s);
    if (content_settings_load(config, s, &r) != 0) {
        for (unsigned i = 0; i < r.nerrors; i++)
            fprintf(stderr, "cmgctl: %s\n", r.errors[i]);
        goto out;
    }
    char *dir = core_dirname(config);
    int rc = content_settings_finish(s, dir ? dir : ".", err, sizeof(err));
    free(dir);
    if (rc != 0) {
        /* "content.key: why": name the line that set the key, as the loader does */
        char key[64] = "";
        unsigned line = 0;
        if (sscanf(err, "content.%63[a-z_]:", key) == 1) {
            ssize_t k = config_find(content_settings_keys, content_settings_nkeys, "content", key);
            if (k >= 0)
                line = r.line_of[k];
        }
        if (line)
            fprintf(stderr, "cmgctl: %s:%u: %s\n", config, line, err);
        else
            fprintf(stderr, "cmgctl: %s: %s\n", config, err);
        goto out;
    }
    if (!(st = content_store_new(s, err, sizeof(err))))
        fprintf(stderr, "cmgctl: %s: %s\n", config, err);
    (void)verb;
out:
    config_report_deinit(&r);
    return st;
}

/* ---- reporting ---- */

static const char *human(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5)
        v /= 1024, u++;
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

struct usage_report {
    uint64_t used, alert;
    double percent;
    const char *state;
};

static void storage_state(const struct content_settings *s, uint64_t used, struct usage_report *u)
{
    unsigned __int128 scaled = (unsigned __int128)used * 100;
    u->used = used;
    u->alert = s->storage_alert;
    u->percent = s->storage_alert ? (double)used * 100.0 / (double)s->storage_alert : 0;
    if (scaled >= (unsigned __int128)s->storage_critical * s->storage_alert)
        u->state = "critical";
    else if (scaled >= (unsigned __int128)s->storage_warning * s->storage_alert)
        u->state = "warning";
    else
        u->state = "ok";
}

static void print_storage_line(const struct content_settings *s, const struct usage_report *u)
{
    char a[32], b[32];
    printf("storage used: %s of %s alert threshold (%.1f %%): %s (warning at %llu %%, critical "
           "at %llu %%)\n",
           human(u->used, a, sizeof(a)), human(u->alert, b, sizeof(b)), u->percent, u->state,
           (unsigned long long)s->storage_warning, (unsigned long long)s->storage_critical);
}

static json_t *storage_json(const struct content_settings *s, const struct usage_report *u)
{
    return json_pack("{s:I, s:I, s:f, s:s, s:I, s:I}", "used", (json_int_t)u->used, "alert",
                     (json_int_t)u->alert, "percent", u->percent, "state", u->state,
                     "warning_percent", (json_int_t)s->storage_warning, "critical_percent",
                     (json_int_t)s->storage_critical);
}

static void print_json(json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(j);
}

/* ---- listings ---- */

struct blobs {
    struct content_blob_info *v;
    size_t n, cap;
};

static int blobs_add(void *ctx, const struct content_blob_info *info)
{
    struct blobs *b = ctx;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct content_blob_info *v = realloc(b->v, cap * sizeof(*v));
        if (!v)
            return CONTENT_STORE_EIO;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = *info;
    return 0;
}

static int cmp_blob_name(const void *key, const void *elem)
{
    return strcmp(key, ((const struct content_blob_info *)elem)->name);
}

/* The blob called name in a listing (which is in name order), or NULL. */
static const struct content_blob_info *blobs_find(const struct blobs *b, const char *name)
{
    return b->n ? bsearch(name, b->v, b->n, sizeof(*b->v), cmp_blob_name) : NULL;
}

static int sum_size(void *ctx, const struct content_blob_info *info)
{
    *(uint64_t *)ctx += info->size;
    return 0;
}

/* ---- distribute ---- */

struct lfile {
    char *rel;  /* path inside the package */
    char *path; /* path on disk */
    uint64_t size;
};

struct lfiles {
    struct lfile *v;
    size_t n, cap;
};

static void lfiles_free(struct lfiles *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].rel);
        free(l->v[i].path);
    }
    free(l->v);
}

static int cmp_lfile(const void *a, const void *b)
{
    return strcmp(((const struct lfile *)a)->rel, ((const struct lfile *)b)->rel);
}

/* Collects the regular files under root/rel; refuses links and other kinds of file. */
static int walk(const char *root, const char *rel, unsigned depth, struct lfiles *out)
{
    char dir[PATH_MAX];
    if (depth > WALK_DEPTH)
        return fail("distribute", "%s/%s: folders nested deeper than %d levels", root, rel,
                    WALK_DEPTH);
    snprintf(dir, sizeof(dir), "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d)
        return fail("distribute", "%s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char r[PATH_MAX], path[PATH_MAX];
        int w1 = snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        int w2 = snprintf(path, sizeof(path), "%s/%s", root, r);
        if (w1 < 0 || w2 < 0 || (size_t)w1 >= sizeof(r) || (size_t)w2 >= sizeof(path)) {
            rc = fail("distribute", "%s/%s: path too long", dir, e->d_name);
            break;
        }
        struct stat sb;
        if (lstat(path, &sb) != 0) {
            rc = fail("distribute", "%s: %s", path, strerror(errno));
        } else if (S_ISLNK(sb.st_mode)) {
            rc = fail("distribute",
                      "%s: a symbolic link; a package is made of regular files only (copy "
                      "the file it points to into the folder instead)",
                      path);
        } else if (S_ISDIR(sb.st_mode)) {
            rc = walk(root, r, depth + 1, out);
        } else if (!S_ISREG(sb.st_mode)) {
            rc = fail("distribute", "%s: not a regular file or folder", path);
        } else if (!content_path_is_valid(r)) {
            rc = fail("distribute",
                      "%s: \"%s\" cannot be a path in a package (at most %d bytes, no "
                      "backslash or control character)",
                      path, r, CONTENT_PATH_MAX);
        } else if (out->n == CONTENT_MANIFEST_FILES_MAX) {
            rc = fail("distribute", "%s: more than %d files", root, CONTENT_MANIFEST_FILES_MAX);
        } else {
            if (out->n == out->cap) {
                size_t cap = out->cap ? out->cap * 2 : 64;
                struct lfile *v = realloc(out->v, cap * sizeof(*v));
                if (!v) {
                    rc = fail("distribute", "out of memory");
                    break;
                }
                out->v = v;
                out->cap = cap;
            }
            struct lfile *f = &out->v[out->n];
            f->rel = strdup(r);
            f->path = strdup(path);
            f->size = (uint64_t)sb.st_size;
            out->n++;
            if (!f->rel || !f->path)
                rc = fail("distribute", "out of memory");
        }
    }
    closedir(d);
    return rc;
}

static int file_md5(const char *path, uint8_t md5[16], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *buf = malloc(1 << 20);
    int rc = -1;
    if (!md || !buf || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(md, buf, (size_t)n);
    }
    unsigned len;
    EVP_DigestFinal_ex(md, md5, &len);
    rc = 0;
out:
    free(buf);
    EVP_MD_CTX_free(md);
    close(fd);
    return rc;
}

struct progress {
    bool tty;
    const char *rel;
    uint64_t start_ms, last_ms;
};

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct progress *p = ctx;
    if (!p->tty)
        return 0;
    uint64_t now = core_now_ms();
    if (done < total && now - p->last_ms < PROGRESS_MS)
        return 0;
    p->last_ms = now;
    double secs = (double)(now - p->start_ms) / 1000.0;
    char a[32], b[32], r[32];
    human(done, a, sizeof(a));
    human(total, b, sizeof(b));
    human(secs > 0.05 ? (uint64_t)((double)done / secs) : 0, r, sizeof(r));
    fprintf(stderr, "\r\033[K  %s  %s / %s  %3.0f %%  %s/s", p->rel, a, b,
            total ? (double)done * 100.0 / (double)total : 100.0, r);
    fflush(stderr);
    return 0;
}

static void file_done(const struct progress *p, const char *what, uint64_t size)
{
    char a[32];
    if (p->tty)
        fputs("\r\033[K", stderr);
    fprintf(stderr, "  %s %s (%s)\n", what, p->rel, human(size, a, sizeof(a)));
}

int cmgctl_content_distribute(int argc, char **argv)
{
    static const char *const names[] = {"PACKAGE", "FOLDER"};
    struct args a;
    int rc = parse_args("distribute", argc, argv, 2, names, true, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *pid = a.operand[0], *folder = a.operand[1];
    const char *cid = a.content_id ? a.content_id : pid;
    if (!content_package_id_is_valid(pid))
        return fail("distribute",
                    "\"%s\" is not a package id (1-%d characters of A-Z a-z 0-9 . _ -)", pid,
                    CONTENT_PACKAGE_ID_MAX);
    if (!content_id_is_valid(cid))
        return fail("distribute",
                    "--content-id \"%s\" is not a content id (1-%d characters of A-Z a-z 0-9 . "
                    "_ -)",
                    cid, CONTENT_ID_MAX);
    struct stat sb;
    if (stat(folder, &sb) != 0)
        return fail("distribute", "%s: %s", folder, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return fail("distribute", "%s: not a folder", folder);

    struct content_settings s;
    struct content_store *st = NULL;
    struct lfiles files = {NULL, 0, 0};
    struct blobs old = {NULL, 0, 0};
    struct content_manifest *m = NULL;
    char *json = NULL, err[1024], name[1200], prefix[128];
    size_t uploaded = 0, unchanged = 0, removed = 0;
    uint64_t sent = 0;
    rc = EXIT_FAILURE;
    memset(&s, 0, sizeof(s));

    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s", folder);
    for (size_t n = strlen(root); n > 1 && root[n - 1] == '/'; n--)
        root[n - 1] = '\0';
    if (walk(root, "", 0, &files) != 0)
        goto out;
    if (files.n == 0) {
        fail("distribute", "%s: no files to distribute", folder);
        goto out;
    }
    qsort(files.v, files.n, sizeof(*files.v), cmp_lfile);
    if (!(st = open_store("distribute", &a, &s)))
        goto out;
    if (content_store_prepare(st, err, sizeof(err)) != 0) {
        fail("distribute", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    snprintf(prefix, sizeof(prefix), "content/%s/", pid);
    if (content_store_list(st, prefix, blobs_add, &old, err, sizeof(err)) != 0) {
        fail("distribute", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    if (!(m = content_manifest_new(pid, cid, (int64_t)time(NULL), files.n))) {
        fail("distribute", "out of memory");
        goto out;
    }
    if (!a.json)
        printf("distributing %s to %s: %zu files\n", pid, content_store_describe(st), files.n);
    fflush(stdout);
    struct progress p = {isatty(STDERR_FILENO) == 1, NULL, 0, 0};
    for (size_t i = 0; i < files.n; i++) {
        const struct lfile *f = &files.v[i];
        struct content_manifest_file *mf = &m->files[i];
        struct content_blob_info info;
        content_file_blob_name(pid, f->rel, name, sizeof(name));
        p.rel = f->rel;
        p.start_ms = p.last_ms = core_now_ms();
        const struct content_blob_info *have = blobs_find(&old, name);
        uint8_t md5[16];
        if (have && have->size == f->size && have->has_md5) {
            if (file_md5(f->path, md5, err, sizeof(err)) != 0) {
                fail("distribute", "%s", err);
                goto out;
            }
            if (memcmp(md5, have->md5, 16) == 0) {
                info = *have;
                unchanged++;
                file_done(&p, "unchanged", f->size);
                goto record;
            }
        }
        if (content_store_put_file(st, name, f->path, "application/octet-stream", on_progress, &p,
                                   &info, err, sizeof(err)) != 0) {
            if (p.tty)
                fputs("\n", stderr);
            fail("distribute", "uploading %s: %s", f->rel, err);
            goto out;
        }
        uploaded++;
        sent += info.size;
        file_done(&p, "uploaded", info.size);
    record:
        if (!(mf->path = strdup(f->rel))) {
            fail("distribute", "out of memory");
            goto out;
        }
        mf->size = info.size;
        memcpy(mf->md5, info.md5, 16);
        snprintf(mf->etag, sizeof(mf->etag), "%s", info.etag);
        mf->last_modified = info.last_modified;
    }
    size_t len = 0;
    if (!(json = content_manifest_write(m, &len, err, sizeof(err)))) {
        fail("distribute", "the manifest: %s", err);
        goto out;
    }
    content_manifest_blob_name(pid, name, sizeof(name));
    if (content_store_put_bytes(st, name, json, len, "application/json", NULL, err, sizeof(err)) !=
        0) {
        fail("distribute", "uploading the manifest %s: %s", name, err);
        goto out;
    }
    /* the new manifest is in place: files it does not name can go */
    for (size_t i = 0; i < old.n; i++) {
        const char *rel = old.v[i].name + strlen(prefix);
        if (content_manifest_find(m, rel))
            continue;
        if (content_store_delete(st, old.v[i].name, err, sizeof(err)) != 0) {
            fail("distribute", "removing %s, no longer in %s: %s", old.v[i].name, folder, err);
            goto out;
        }
        fprintf(stderr, "  removed %s (no longer in the folder)\n", rel);
        removed++;
    }
    uint64_t used = 0;
    if (content_store_list(st, NULL, sum_size, &used, err, sizeof(err)) != 0) {
        fail("distribute", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    struct usage_report u;
    storage_state(&s, used, &u);
    if (a.json) {
        print_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "package", pid,
                             "content_id", cid, "store", content_store_describe(st), "files",
                             (json_int_t)files.n, "size", (json_int_t)m->size, "uploaded",
                             (json_int_t)uploaded, "unchanged", (json_int_t)unchanged, "removed",
                             (json_int_t)removed, "bytes_uploaded", (json_int_t)sent, "storage",
                             storage_json(&s, &u)));
    } else {
        char h[32];
        printf("distributed %s (content id %s): %zu files, %s; %zu uploaded, %zu unchanged, %zu "
               "removed\n",
               pid, cid, files.n, human(m->size, h, sizeof(h)), uploaded, unchanged, removed);
        print_storage_line(&s, &u);
    }
    rc = 0;
out:
    free(json);
    content_manifest_free(m);
    free(old.v);
    lfiles_free(&files);
    content_store_free(st);
    content_settings_free(&s);
    return rc;
}

/* ---- list ---- */

struct buffer {
    char *p;
    size_t len;
};

static int buffer_sink(void *ctx, const void *data, size_t len)
{
    struct buffer *b = ctx;
    if (b->len + len > CONTENT_MANIFEST_MAX)
        return 1;
    char *p = realloc(b->p, b->len + len + 1);
    if (!p)
        return 1;
    memcpy(p + b->len, data, len);
    b->p = p;
    b->len += len;
    return 0;
}

struct package {
    char id[CONTENT_PACKAGE_ID_MAX + 1];
    struct content_manifest *m; /* NULL: no manifest, or one that does not parse */
    char problem[300];          /* why the manifest is not usable */
    bool has_manifest;
    size_t stored_files;  /* blobs under content/<id>/ */
    uint64_t stored_size; /* their bytes */
    size_t missing;       /* manifest files not in storage (or of another size) */
};

struct packages {
    struct package *v;
    size_t n, cap;
};

static struct package *package_get(struct packages *ps, const char *id, size_t idlen)
{
    if (idlen == 0 || idlen > CONTENT_PACKAGE_ID_MAX)
        return NULL;
    for (size_t i = ps->n; i > 0; i--)
        if (strlen(ps->v[i - 1].id) == idlen && memcmp(ps->v[i - 1].id, id, idlen) == 0)
            return &ps->v[i - 1];
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        struct package *v = realloc(ps->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        ps->v = v;
        ps->cap = cap;
    }
    struct package *p = &ps->v[ps->n++];
    memset(p, 0, sizeof(*p));
    memcpy(p->id, id, idlen);
    if (!content_package_id_is_valid(p->id)) {
        ps->n--;
        return NULL;
    }
    return p;
}

static int cmp_package(const void *a, const void *b)
{
    return strcmp(((const struct package *)a)->id, ((const struct package *)b)->id);
}

static const char *package_state(const struct package *p)
{
    if (!p->has_manifest)
        return "incomplete";
    if (!p->m)
        return "bad manifest";
    if (p->missing)
        return "damaged";
    return "complete";
}

int cmgctl_content_list(int argc, char **argv)
{
    static const char *const names[] = {""};
    struct args a;
    int rc = parse_args("list", argc, argv, 0, names, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct content_settings s;
    struct blobs all = {NULL, 0, 0};
    struct packages ps = {NULL, 0, 0};
    char err[1024];
    uint64_t used = 0;
    rc = EXIT_FAILURE;
    memset(&s, 0, sizeof(s));
    struct content_store *st = open_store("list", &a, &s);
    if (!st)
        goto out;
    rc = content_store_list(st, NULL, blobs_add, &all, err, sizeof(err));
    if (rc == CONTENT_STORE_ENOTFOUND) {
        rc = 0; /* no container yet: nothing distributed */
    } else if (rc != 0) {
        rc = fail("list", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    rc = EXIT_FAILURE;
    for (size_t i = 0; i < all.n; i++) {
        const char *n = all.v[i].name;
        used += all.v[i].size;
        struct package *p = NULL;
        if (strncmp(n, "content/", 8) == 0) {
            const char *slash = strchr(n + 8, '/');
            if (slash && (p = package_get(&ps, n + 8, (size_t)(slash - n - 8)))) {
                p->stored_files++;
                p->stored_size += all.v[i].size;
            }
        } else if (strncmp(n, "packages/", 9) == 0 && strlen(n) > 14 &&
                   strcmp(n + strlen(n) - 5, ".json") == 0) {
            p = package_get(&ps, n + 9, strlen(n) - 14);
            if (p)
                p->has_manifest = true;
        }
    }
    for (size_t i = 0; i < ps.n; i++) {
        struct package *p = &ps.v[i];
        if (!p->has_manifest)
            continue;
        char mname[128];
        struct buffer b = {NULL, 0};
        content_manifest_blob_name(p->id, mname, sizeof(mname));
        int grc = content_store_get(st, mname, NULL, buffer_sink, &b, NULL, err, sizeof(err));
        if (grc == 0) {
            if (content_manifest_parse(b.p ? b.p : "", b.len, &p->m, err, sizeof(err)) != 0)
                snprintf(p->problem, sizeof(p->problem), "%.290s", err);
            else if (strcmp(p->m->package, p->id) != 0)
                snprintf(p->problem, sizeof(p->problem), "names package \"%s\"", p->m->package);
        } else if (grc == CONTENT_STORE_ENOTFOUND) {
            p->has_manifest = false; /* removed since the listing */
        } else {
            free(b.p);
            rc = fail("list", "reading %s: %s", mname, err);
            goto out;
        }
        free(b.p);
        if (p->problem[0]) {
            content_manifest_free(p->m);
            p->m = NULL;
        }
        for (size_t f = 0; p->m && f < p->m->nfiles; f++) {
            char bname[1200];
            content_file_blob_name(p->id, p->m->files[f].path, bname, sizeof(bname));
            const struct content_blob_info *have = blobs_find(&all, bname);
            if (!have || have->size != p->m->files[f].size)
                p->missing++;
        }
    }
    if (ps.n)
        qsort(ps.v, ps.n, sizeof(*ps.v), cmp_package);
    struct usage_report u;
    storage_state(&s, used, &u);
    if (a.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ps.n; i++) {
            const struct package *p = &ps.v[i];
            char date[32] = "";
            if (p->m) {
                struct tm tm;
                time_t t = (time_t)p->m->distributed;
                gmtime_r(&t, &tm);
                strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
            }
            json_t *o = json_pack(
                "{s:s, s:s, s:I, s:I, s:I, s:I}", "package", p->id, "state", package_state(p),
                "files", (json_int_t)(p->m ? p->m->nfiles : p->stored_files), "size",
                (json_int_t)(p->m ? p->m->size : p->stored_size), "stored_files",
                (json_int_t)p->stored_files, "stored_size", (json_int_t)p->stored_size);
            if (p->m) {
                json_object_set_new(o, "content_id", json_string(p->m->content_id));
                json_object_set_new(o, "distributed", json_string(date));
                json_object_set_new(o, "missing_files", json_integer((json_int_t)p->missing));
            }
            if (p->problem[0])
                json_object_set_new(o, "problem", json_string(p->problem));
            json_array_append_new(arr, o);
        }
        print_json(json_pack("{s:s, s:o, s:o}", "store", content_store_describe(st), "packages",
                             arr, "storage", storage_json(&s, &u)));
    } else {
        printf("%s: %zu package%s\n", content_store_describe(st), ps.n, ps.n == 1 ? "" : "s");
        if (ps.n)
            printf("%-24s %8s %12s  %-20s  %s\n", "PACKAGE", "FILES", "SIZE", "DISTRIBUTED",
                   "STATE");
        for (size_t i = 0; i < ps.n; i++) {
            const struct package *p = &ps.v[i];
            char h[32], date[32] = "-", state[400];
            if (p->m) {
                struct tm tm;
                time_t t = (time_t)p->m->distributed;
                gmtime_r(&t, &tm);
                strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
            }
            if (!p->has_manifest)
                snprintf(state, sizeof(state), "incomplete: no manifest");
            else if (!p->m)
                snprintf(state, sizeof(state), "bad manifest: %s", p->problem);
            else if (p->missing)
                snprintf(state, sizeof(state), "damaged: %zu file%s missing or changed", p->missing,
                         p->missing == 1 ? "" : "s");
            else
                snprintf(state, sizeof(state), "complete");
            printf("%-24s %8zu %12s  %-20s  %s\n", p->id, p->m ? p->m->nfiles : p->stored_files,
                   human(p->m ? p->m->size : p->stored_size, h, sizeof(h)), date, state);
        }
        print_storage_line(&s, &u);
    }
    rc = 0;
out:
    for (size_t i = 0; i < ps.n; i++)
        content_manifest_free(ps.v[i].m);
    free(ps.v);
    free(all.v);
    content_store_free(st);
    content_settings_free(&s);
    return rc;
}

/* ---- remove ---- */

int cmgctl_content_remove(int argc, char **argv)
{
    static const char *const names[] = {"PACKAGE"};
    struct args a;
    int rc = parse_args("remove", argc, argv, 1, names, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *pid = a.operand[0];
    if (!content_package_id_is_valid(pid))
        return fail("remove", "\"%s\" is not a package id (1-%d characters of A-Z a-z 0-9 . _ -)",
                    pid, CONTENT_PACKAGE_ID_MAX);
    struct content_settings s;
    struct blobs files = {NULL, 0, 0};
    char err[1024], mname[128], prefix[128];
    rc = EXIT_FAILURE;
    memset(&s, 0, sizeof(s));
    struct content_store *st = open_store("remove", &a, &s);
    if (!st)
        goto out;
    content_manifest_blob_name(pid, mname, sizeof(mname));
    snprintf(prefix, sizeof(prefix), "content/%s/", pid);
    struct content_blob_info info;
    int hrc = content_store_head(st, mname, &info, err, sizeof(err));
    if (hrc != 0 && hrc != CONTENT_STORE_ENOTFOUND) {
        fail("remove", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    int lrc = content_store_list(st, prefix, blobs_add, &files, err, sizeof(err));
    if (lrc != 0 && lrc != CONTENT_STORE_ENOTFOUND) {
        fail("remove", "%s: %s", content_store_describe(st), err);
        goto out;
    }
    if (hrc == CONTENT_STORE_ENOTFOUND && files.n == 0) {
        fail("remove", "package %s is not in %s", pid, content_store_describe(st));
        goto out;
    }
    /* the manifest first: from then on the package is incomplete, never half there */
    if (hrc == 0 && content_store_delete(st, mname, err, sizeof(err)) != 0) {
        fail("remove", "deleting %s: %s", mname, err);
        goto out;
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < files.n; i++) {
        if (content_store_delete(st, files.v[i].name, err, sizeof(err)) != 0) {
            fail("remove", "deleting %s: %s (run remove again to finish)", files.v[i].name, err);
            goto out;
        }
        bytes += files.v[i].size;
    }
    if (a.json) {
        print_json(json_pack("{s:s, s:s, s:b, s:I, s:I}", "package", pid, "store",
                             content_store_describe(st), "had_manifest", hrc == 0, "files",
                             (json_int_t)files.n, "size", (json_int_t)bytes));
    } else {
        char h[32];
        printf("removed %s from %s: %zu files, %s%s\n", pid, content_store_describe(st), files.n,
               human(bytes, h, sizeof(h)), hrc == 0 ? "" : " (it had no manifest)");
    }
    rc = 0;
out:
    free(files.v);
    content_store_free(st);
    content_settings_free(&s);
    return rc;
}

/* ---- url ---- */

int cmgctl_content_url(int argc, char **argv)
{
    static const char *const names[] = {"PACKAGE", "PATH"};
    struct args a;
    int rc = parse_args("url", argc, argv, 2, names, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    char name[1200], err[1024], url[8192];
    if (content_file_blob_name(a.operand[0], a.operand[1], name, sizeof(name)) != 0)
        return fail("url", "\"%s\" \"%s\": not a package id and a path inside a package",
                    a.operand[0], a.operand[1]);
    struct content_settings s;
    memset(&s, 0, sizeof(s));
    rc = EXIT_FAILURE;
    struct content_store *st = open_store("url", &a, &s);
    if (!st)
        goto out;
    int64_t now = (int64_t)time(NULL);
    if (content_store_sas_url(st, name, now, now + (int64_t)(s.sas_lifetime / 1000), url,
                              sizeof(url), err, sizeof(err)) != 0) {
        fail("url", "%s", err);
        goto out;
    }
    printf("%s\n", url);
    rc = 0;
out:
    content_store_free(st);
    content_settings_free(&s);
    return rc;
}
