/* Types of the core module shared with other modules. */
#ifndef CMG_CORE_T_H
#define CMG_CORE_T_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum log_level {
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_WARNING = 2,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_VERBOSE = 0,
};

struct log_opts {
    const char *file;      /* CMTrace file path, NULL or "" for none (borrowed, copied) */
    const char *component; /* CMTrace component, e.g. "CMGService" (copied) */
    uint64_t max_size;     /* bytes before the file rolls over to <name>.lo_ */
    enum log_level level;
    bool to_stderr;
};

/* A repeat limiter for noisy log lines: one line per interval, with the count suppressed. */
struct log_ratelimit {
    uint64_t last_ms;
    unsigned suppressed;
};

/* ---- configuration schema ---- */

enum config_type {
    CONFIG_BOOL,
    CONFIG_UINT,     /* unsigned 64-bit integer */
    CONFIG_SIZE,     /* bytes, suffixes k/K, m/M, g/G (binary) */
    CONFIG_DURATION, /* milliseconds; suffixes ms, s, m, h; a bare number is seconds */
    CONFIG_STRING,   /* heap copy, freed by config_free */
    CONFIG_ENUM,     /* one of the '|' separated words in `choices`, stored as index (unsigned) */
};

/* One key of a configuration schema; `offset` is where the value lives in the target struct
 * (bool, uint64_t, or char *; CONFIG_ENUM stores unsigned). */
struct config_key {
    const char *section;
    const char *name;
    enum config_type type;
    size_t offset;
    const char *default_value; /* parsed like a file value; NULL = unset (strings only) */
    uint64_t min, max;         /* numeric bounds, inclusive; max 0 = no bound */
    const char *choices;       /* CONFIG_ENUM only */
    bool reload_needs_restart; /* documented, and warned about on reload */
};

#define CONFIG_ERRORS_MAX 32

/* Where each key was set (0 = default) and what went wrong while loading. */
struct config_report {
    const char *path;  /* borrowed */
    unsigned *line_of; /* per schema index, owned (config_report_deinit) */
    unsigned nerrors;
    char *errors[CONFIG_ERRORS_MAX]; /* owned messages "path:line: section.key: why" */
};

#endif
