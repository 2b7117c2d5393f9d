/* Small file helpers shared by modules that write files (PKI, ticket keys). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

int core_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *core_dirname(const char *path)
{
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && slash != dir)
        *slash = '\0';
    else if (slash)
        dir[1] = '\0';
    else if (dir) {
        free(dir);
        dir = strdup(".");
    }
    return dir;
}

void core_path_resolve(char **p, const char *dir)
{
    if (!*p || !**p || (*p)[0] == '/' || !dir)
        return;
    size_t n = strlen(dir) + strlen(*p) + 2;
    char *abs = malloc(n);
    if (!abs)
        return;
    snprintf(abs, n, "%s/%s", dir, *p);
    free(*p);
    *p = abs;
}

size_t core_split_list(const char *list, char **copy, const char **out, size_t max)
{
    *copy = strdup(list ? list : "");
    size_t n = 0;
    char *save = NULL;
    if (!*copy)
        return 0;
    for (char *t = strtok_r(*copy, ", ", &save); t && n < max; t = strtok_r(NULL, ", ", &save))
        out[n++] = t;
    return n;
}

void core_path_resolve_list(char **list, const char *dir)
{
    if (!*list || !**list)
        return;
    const char *items[256];
    char *copy;
    size_t n = core_split_list(*list, &copy, items, 256);
    size_t cap = strlen(*list) + n * (strlen(dir) + 2) + 1, used = 0;
    char *out = calloc(1, cap);
    for (size_t i = 0; out && i < n; i++) {
        char *one = strdup(items[i]);
        core_path_resolve(&one, dir);
        int w = snprintf(out + used, cap - used, "%s%s", used ? "," : "", one);
        if (w > 0 && (size_t)w < cap - used)
            used += (size_t)w;
        free(one);
    }
    free(copy);
    if (out) {
        free(*list);
        *list = out;
    }
}
