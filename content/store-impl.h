/* The stores behind content_store_*: what store.c dispatches to. Private to the module. */
#ifndef CMG_CONTENT_STORE_IMPL_H
#define CMG_CONTENT_STORE_IMPL_H

#include <stdbool.h>

#include "content.h"

/* Longest blob name a store accepts (bytes), as content_blob_info.name can hold it. */
#define STORE_NAME_MAX (sizeof(((struct content_blob_info *)0)->name) - 1)

/* A blob name both stores accept: 1..STORE_NAME_MAX bytes, '/'-separated segments that are
 * neither empty, "." nor "..", no leading '/', no backslash and no control character. */
bool store_name_is_valid(const char *name);

/* ---- Azure Blob storage (blob.c) ----
 * The same contracts as the content_store_ functions of the same verb (content.h); the name
 * was checked by the caller. */
struct blob_store;

struct blob_store *blob_store_new(const struct content_settings *s, char *err, size_t errlen);
void blob_store_free(struct blob_store *b);
const char *blob_store_describe(const struct blob_store *b);
int blob_store_prepare(struct blob_store *b, char *err, size_t errlen);
int blob_store_head(struct blob_store *b, const char *name, struct content_blob_info *info,
                    char *err, size_t errlen);
int blob_store_get(struct blob_store *b, const char *name, const char *etag,
                   content_store_sink_cb sink, void *ctx, struct content_blob_info *info, char *err,
                   size_t errlen);
int blob_store_put_file(struct blob_store *b, const char *name, const char *path,
                        const char *content_type, content_store_progress_cb progress, void *ctx,
                        struct content_blob_info *info, char *err, size_t errlen);
int blob_store_put_bytes(struct blob_store *b, const char *name, const void *data, size_t len,
                         const char *content_type, struct content_blob_info *info, char *err,
                         size_t errlen);
int blob_store_list(struct blob_store *b, const char *prefix, content_store_each_cb each, void *ctx,
                    char *err, size_t errlen);
int blob_store_delete(struct blob_store *b, const char *name, char *err, size_t errlen);
int blob_store_sas_url(const struct blob_store *b, const char *name, int64_t now, int64_t expires,
                       char *out, size_t outlen, char *err, size_t errlen);

#endif
