/* Schema-driven INI loading with inih. Every message names file, line and key. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "core.h"

struct config_load_state {
    const struct config_key *schema;
    size_t n;
    void *target;
    struct config_report *report;
    unsigned line; /* line the reader handed to inih last */
    /* input: either a FILE or a string cursor */
    FILE *fp;
    const char *cursor;
    bool skip_foreign; /* sections not in the schema are someone else's */
};

void config_report_init(struct config_report *report, const char *path, size_t n)
{
    memset(report, 0, sizeof(*report));
    report->path = path;
    report->line_of = calloc(n ? n : 1, sizeof(unsigned));
}

void config_report_deinit(struct config_report *report)
{
    for (unsigned i = 0; i < report->nerrors; i++)
        free(report->errors[i]);
    free(report->line_of);
    memset(report, 0, sizeof(*report));
}

static void config_report_add(struct config_report *report, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void config_report_add(struct config_report *report, const char *fmt, ...)
{
    if (report->nerrors >= CONFIG_ERRORS_MAX)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    report->errors[report->nerrors++] = strdup(buf);
}

void config_report_error(struct config_report *report, const struct config_key *schema, size_t k,
                         const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    unsigned line = report->line_of ? report->line_of[k] : 0;
    if (line)
        config_report_add(report, "%s:%u: %s.%s: %s", report->path, line, schema[k].section,
                          schema[k].name, why);
    else
        config_report_add(report, "%s: %s.%s (default): %s", report->path, schema[k].section,
                          schema[k].name, why);
}

int config_parse_bool(const char *s, bool *out, const char **why)
{
    static const char *yes[] = {"true", "yes", "on", "1"};
    static const char *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    *why = "expected true or false";
    return -1;
}

/* Parses the leading unsigned number; *end gets the rest. */
static int config_parse_number(const char *s, uint64_t *out, const char **end, const char **why)
{
    if (!isdigit((unsigned char)*s)) {
        *why = "expected a number";
        return -1;
    }
    errno = 0;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno == ERANGE) {
        *why = "number too large";
        return -1;
    }
    *out = v;
    *end = e;
    return 0;
}

static int config_scale(uint64_t v, uint64_t mul, uint64_t *out, const char **why)
{
    if (mul && v > UINT64_MAX / mul) {
        *why = "number too large";
        return -1;
    }
    *out = v * mul;
    return 0;
}

bool core_parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

int config_parse_uint(const char *s, uint64_t *out, const char **why)
{
    const char *end;
    if (config_parse_number(s, out, &end, why) != 0)
        return -1;
    if (*end) {
        *why = "expected a whole number";
        return -1;
    }
    return 0;
}

int config_parse_size(const char *s, uint64_t *out, const char **why)
{
    uint64_t v;
    const char *end;
    if (config_parse_number(s, &v, &end, why) != 0)
        return -1;
    uint64_t mul = 1;
    if (*end) {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mul = 1024;
            break;
        case 'm':
            mul = 1024 * 1024;
            break;
        case 'g':
            mul = 1024ull * 1024 * 1024;
            break;
        default:
            *why = "expected a size such as 16384, 16k, 8m or 1g";
            return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end) {
            *why = "expected a size such as 16384, 16k, 8m or 1g";
            return -1;
        }
    }
    return config_scale(v, mul, out, why);
}

int config_parse_duration(const char *s, uint64_t *out_ms, const char **why)
{
    uint64_t v;
    const char *end;
    if (config_parse_number(s, &v, &end, why) != 0)
        return -1;
    uint64_t mul;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mul = 3600 * 1000;
    else {
        *why = "expected a duration such as 500ms, 15s, 2m or 1h";
        return -1;
    }
    return config_scale(v, mul, out_ms, why);
}

/* Stores one value; returns 0 or -1 with why. */
static int config_store(const struct config_key *k, void *target, const char *value,
                        const char **why, char *whybuf, size_t whylen)
{
    char *slot = (char *)target + k->offset;
    uint64_t v = 0;
    switch (k->type) {
    case CONFIG_BOOL:
        return config_parse_bool(value, (bool *)slot, why);
    case CONFIG_STRING: {
        char **sp = (char **)slot;
        free(*sp);
        *sp = strdup(value);
        return 0;
    }
    case CONFIG_ENUM: {
        const char *c = k->choices;
        unsigned idx = 0;
        size_t vl = strlen(value);
        while (c && *c) {
            const char *bar = strchr(c, '|');
            size_t wl = bar ? (size_t)(bar - c) : strlen(c);
            if (wl == vl && strncasecmp(c, value, vl) == 0) {
                *(unsigned *)slot = idx;
                return 0;
            }
            idx++;
            c = bar ? bar + 1 : NULL;
        }
        snprintf(whybuf, whylen, "expected one of %s", k->choices);
        *why = whybuf;
        return -1;
    }
    case CONFIG_UINT:
        if (config_parse_uint(value, &v, why) != 0)
            return -1;
        break;
    case CONFIG_SIZE:
        if (config_parse_size(value, &v, why) != 0)
            return -1;
        break;
    case CONFIG_DURATION:
        if (config_parse_duration(value, &v, why) != 0)
            return -1;
        break;
    }
    if (v < k->min || (k->max && v > k->max)) {
        if (k->max)
            snprintf(whybuf, whylen, "outside the allowed range %llu..%llu",
                     (unsigned long long)k->min, (unsigned long long)k->max);
        else
            snprintf(whybuf, whylen, "below the minimum %llu", (unsigned long long)k->min);
        *why = whybuf;
        return -1;
    }
    *(uint64_t *)slot = v;
    return 0;
}

ssize_t config_find(const struct config_key *schema, size_t n, const char *section,
                    const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(schema[i].section, section) == 0 && strcasecmp(schema[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static bool config_section_known(const struct config_key *schema, size_t n, const char *section)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(schema[i].section, section) == 0)
            return true;
    return false;
}

int config_apply_defaults(const struct config_key *schema, size_t n, void *target,
                          struct config_report *report)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!schema[i].default_value)
            continue;
        const char *why = NULL;
        char whybuf[256];
        if (config_store(&schema[i], target, schema[i].default_value, &why, whybuf,
                         sizeof(whybuf)) != 0) {
            config_report_add(report, "built-in default of %s.%s: %s", schema[i].section,
                              schema[i].name, why);
            rc = -1;
        }
    }
    return rc;
}

static int config_ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct config_load_state *st = user;
    struct config_report *r = st->report;
    if (!name) /* new section without keys (inih with call-on-new-section); nothing to do */
        return 1;
    if (!*section) {
        config_report_add(r, "%s:%u: %s: key outside any section", r->path, st->line, name);
        return 1;
    }
    ssize_t k = config_find(st->schema, st->n, section, name);
    if (k < 0) {
        bool known = config_section_known(st->schema, st->n, section);
        if (!known && st->skip_foreign)
            return 1;
        if (!known)
            config_report_add(r, "%s:%u: %s.%s: unknown section [%s]", r->path, st->line, section,
                              name, section);
        else
            config_report_add(r, "%s:%u: %s.%s: unknown key", r->path, st->line, section, name);
        return 1;
    }
    if (r->line_of[k]) {
        config_report_add(r, "%s:%u: %s.%s: set twice (first on line %u)", r->path, st->line,
                          section, name, r->line_of[k]);
        return 1;
    }
    r->line_of[k] = st->line;
    const char *why = NULL;
    char whybuf[256];
    if (config_store(&st->schema[k], st->target, value, &why, whybuf, sizeof(whybuf)) != 0)
        config_report_add(r, "%s:%u: %s.%s: \"%s\": %s", r->path, st->line, section, name, value,
                          why);
    return 1;
}

/* inih reader that counts lines, so the handler knows where it is. */
static char *config_reader(char *str, int num, void *stream)
{
    struct config_load_state *st = stream;
    char *got = NULL;
    if (st->fp) {
        got = fgets(str, num, st->fp);
    } else if (st->cursor && *st->cursor) {
        const char *nl = strchr(st->cursor, '\n');
        size_t len = nl ? (size_t)(nl - st->cursor) + 1 : strlen(st->cursor);
        if (len > (size_t)num - 1)
            len = (size_t)num - 1;
        memcpy(str, st->cursor, len);
        str[len] = '\0';
        st->cursor += len;
        got = str;
    }
    if (got) {
        size_t l = strlen(got);
        /* A line is counted when its end is read (long lines come in several pieces). */
        if (l > 0 && got[l - 1] == '\n')
            st->line++;
        else if (st->fp ? feof(st->fp) : (!st->cursor || !*st->cursor))
            st->line++;
    }
    return got;
}

static int config_load_common(struct config_load_state *st)
{
    ini_allow_multiline = false; /* keeps one key per line, so line numbers are exact */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 8192;
    int rc = ini_parse_stream(config_reader, st, config_ini_cb, st);
    if (rc > 0 && st->report->nerrors == 0)
        config_report_add(st->report, "%s:%d: syntax error (expected [section] or key = value)",
                          st->report->path, rc);
    else if (rc < 0)
        config_report_add(st->report, "%s: cannot read the file", st->report->path);
    return st->report->nerrors ? -1 : 0;
}

static int config_load_path(const char *path, const struct config_key *schema, size_t n,
                            void *target, struct config_report *report, bool skip_foreign)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        config_report_add(report, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct config_load_state st = {.schema = schema,
                                   .n = n,
                                   .target = target,
                                   .report = report,
                                   .fp = fp,
                                   .skip_foreign = skip_foreign};
    int rc = config_load_common(&st);
    fclose(fp);
    return rc;
}

int config_load_file(const char *path, const struct config_key *schema, size_t n, void *target,
                     struct config_report *report)
{
    return config_load_path(path, schema, n, target, report, false);
}

int config_load_file_sections(const char *path, const struct config_key *schema, size_t n,
                              void *target, struct config_report *report)
{
    return config_load_path(path, schema, n, target, report, true);
}

int config_load_string(const char *name, const char *text, const struct config_key *schema,
                       size_t n, void *target, struct config_report *report)
{
    (void)name;
    struct config_load_state st = {
        .schema = schema, .n = n, .target = target, .report = report, .cursor = text};
    return config_load_common(&st);
}

void config_free(const struct config_key *schema, size_t n, void *target)
{
    for (size_t i = 0; i < n; i++) {
        if (schema[i].type != CONFIG_STRING)
            continue;
        char **sp = (char **)((char *)target + schema[i].offset);
        free(*sp);
        *sp = NULL;
    }
}
