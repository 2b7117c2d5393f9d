/* Blob storage answers: the List Blobs enumeration and error bodies, as arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob-sign.h"
#include "content.h"

static int each(void *ctx, const struct content_blob_info *info)
{
    size_t *n = ctx;
    if (strnlen(info->name, sizeof(info->name)) == sizeof(info->name) ||
        strnlen(info->etag, sizeof(info->etag)) == sizeof(info->etag))
        abort();
    (*n)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char marker[1024], text[512];
    size_t n = 0;
    if (blob_list_parse((const char *)data, size, each, &n, marker, sizeof(marker)) == 0 &&
        strnlen(marker, sizeof(marker)) == sizeof(marker))
        abort();
    ssize_t t = blob_xml_text((const char *)data, size, "Code", text, sizeof(text));
    if (t >= (ssize_t)sizeof(text))
        abort();
    return 0;
}
