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

void core_path_resolve_list(char **list, const char *dir)
{
    if (!*list || !**list)
        return;
    size_t cap = strlen(*list) + 64 * (strlen(dir) + 2), used = 0;
    char *out = calloc(1, cap);
    char *copy = strdup(*list), *save = NULL;
    if (!out || !copy) {
        free(out);
        free(copy);
        return;
    }
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *one = strdup(t);
        core_path_resolve(&one, dir);
        int n = snprintf(out + used, cap - used, "%s%s", used ? "," : "", one);
        if (n > 0 && (size_t)n < cap - used)
            used += (size_t)n;
        free(one);
    }
    free(copy);
    free(*list);
    *list = out;
}
