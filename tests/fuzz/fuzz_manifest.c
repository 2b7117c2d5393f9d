/* Package manifests as the gateway reads them from storage: parse, and what parses must write
 * back and parse again to the same files. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct content_manifest *m = NULL;
    char err[256];
    if (content_manifest_parse((const char *)data, size, &m, err, sizeof(err)) != 0)
        return 0;
    for (size_t i = 0; i < m->nfiles; i++)
        if (content_manifest_find(m, m->files[i].path) != &m->files[i])
            abort();
    size_t len = 0;
    char *text = content_manifest_write(m, &len, err, sizeof(err));
    if (!text)
        abort(); /* a manifest that parsed is one that can be written */
    struct content_manifest *again = NULL;
    if (content_manifest_parse(text, len, &again, err, sizeof(err)) != 0 ||
        again->nfiles != m->nfiles || again->size != m->size)
        abort();
    content_manifest_free(again);
    free(text);
    content_manifest_free(m);
    return 0;
}
