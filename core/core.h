/* core: configuration loading, logging, the per-worker message queue, time. */
#ifndef CMG_CORE_H
#define CMG_CORE_H

#include <stdarg.h>
#include <sys/types.h>
#include "core-t.h"

struct event_base;

/* ---- time ---- */
uint64_t core_now_ms(void);  /* monotonic milliseconds */
uint64_t core_wall_ms(void); /* milliseconds since the epoch */

/* ---- logging (log.c) ----
 * One process-wide logger; lines go to stderr (human) and to a CMTrace-format file that
 * rolls over to <file without extension>.lo_ when it would pass max_size. Thread-safe. */
int log_init(const struct log_opts *opts, char *err, size_t errlen);
/* Changes level/size/stderr and reopens the file (SIGHUP). Same return as log_init. */
int log_reconfigure(const struct log_opts *opts, char *err, size_t errlen);
void log_deinit(void);
/* Tag shown for the calling thread ("main", "w0"...); borrowed string must outlive the thread. */
void log_set_thread_tag(const char *tag);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* True when the caller may log now; counts suppressed lines otherwise. */
bool log_ratelimit_pass(struct log_ratelimit *rl, uint64_t interval_ms, unsigned *suppressed);

#define LOG_ERROR(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_VERBOSE(...)                                                                           \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_VERBOSE))                                                        \
            log_msg(LOG_LEVEL_VERBOSE, __VA_ARGS__);                                               \
    } while (0)

/* Formats one CMTrace line into buf (for tests and for the logger). Returns its length. */
size_t log_format_cmtrace(char *buf, size_t len, const char *msg, const char *component,
                          enum log_level level, uint64_t wall_ms, long thread_id);

/* ---- configuration (config.c) ---- */

/* Applies every default of `schema` (n keys) to target. Returns 0, or -1 if a default itself
 * does not parse (a programming error, reported in report). */
int config_apply_defaults(const struct config_key *schema, size_t n, void *target,
                          struct config_report *report);
/* Loads an INI file over the defaults. Unknown sections/keys, bad values and duplicates are
 * errors collected in report (each "path:line: section.key: why"). Returns 0 when no error. */
int config_load_file(const char *path, const struct config_key *schema, size_t n, void *target,
                     struct config_report *report);
/* Like config_load_file, but sections the schema does not know are skipped, not errors: for
 * tools that read their part of another program's file. */
int config_load_file_sections(const char *path, const struct config_key *schema, size_t n,
                              void *target, struct config_report *report);
/* Same, from a string (tests, embedded defaults); `name` is used as the path in messages. */
int config_load_string(const char *name, const char *text, const struct config_key *schema,
                       size_t n, void *target, struct config_report *report);
/* Adds an error for key index `k` (validation after loading); message is printf-style. */
void config_report_error(struct config_report *report, const struct config_key *schema, size_t k,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void config_report_init(struct config_report *report, const char *path, size_t n);
void config_report_deinit(struct config_report *report);
/* Frees the strings the schema put into target. */
void config_free(const struct config_key *schema, size_t n, void *target);
/* Index of section.name in schema, or -1. */
ssize_t config_find(const struct config_key *schema, size_t n, const char *section,
                    const char *name);
/* Value parsers (also used by tests): return 0 or -1 with a reason in why. */
int config_parse_bool(const char *s, bool *out, const char **why);
int config_parse_size(const char *s, uint64_t *out, const char **why);
int config_parse_duration(const char *s, uint64_t *out_ms, const char **why);
int config_parse_uint(const char *s, uint64_t *out, const char **why);
/* Exactly `len` decimal digits (1..20) that fit 64 bits, such as a role id. */
bool core_parse_u64(const char *s, size_t len, uint64_t *out);

/* ---- files (io.c) ---- */
/* Writes all of buf, retrying on EINTR and short writes. Returns 0 or -1 (errno set). */
int core_write_all(int fd, const void *buf, size_t len);
/* The folder of a path ("." when it has none); caller frees. */
char *core_dirname(const char *path);
/* Makes a relative path (heap string, replaced) relative to dir; absolute ones stay. */
void core_path_resolve(char **p, const char *dir);
/* Splits a list separated by commas and/or spaces into at most max entries pointing into
 * *copy (a heap copy the caller frees). Returns the number of entries. */
size_t core_split_list(const char *list, char **copy, const char **out, size_t max);
/* The same for each entry of a comma-separated list (rewritten with ',' separators). */
void core_path_resolve_list(char **list, const char *dir);

/* ---- per-worker message queue (mq.c) ----
 * Other threads post messages; the owner's loop runs `handler` for each, in order, on its own
 * thread. Bounded: posting to a full queue fails. */
struct core_mq;
struct core_mq_msg {
    int type;
    void *arg; /* ownership passes to the handler */
};
typedef void (*core_mq_handler_cb)(struct core_mq_msg *msg, void *ctx);
/* Creates a queue whose handler runs on `base`. Free with core_mq_free from the owner thread. */
struct core_mq *core_mq_new(struct event_base *base, unsigned capacity, core_mq_handler_cb handler,
                            void *ctx);
void core_mq_free(struct core_mq *mq);
/* From any thread. Returns 0, or -1 when the queue is full (the caller still owns arg). */
int core_mq_post(struct core_mq *mq, int type, void *arg);

/* ---- outbound HTTP (fetch.c), for background threads only ---- */
struct core_fetch_opts {
    uint64_t timeout_ms;           /* whole exchange; 0 = 10 s */
    size_t max_bytes;              /* body limit; 0 = 4 MiB */
    const char *if_none_match;     /* ETag from an earlier answer, or NULL */
    const char *if_modified_since; /* Last-Modified from an earlier answer, or NULL */
    const char *accept;            /* a whole "Accept: ..." header line, or NULL */
    const char *ca_file;           /* trust for https instead of the system's, or NULL */
};
struct core_fetch_result {
    long status; /* HTTP status (304 when the validators still hold) */
    char *body;  /* owned, NUL-terminated; NULL when empty */
    size_t len;
    char etag[128];
    char last_modified[64];
    char error[256]; /* why the exchange failed (connection, timeout, size) */
};
/* Once per process, before any thread fetches. */
void core_fetch_global_init(void);
/* GETs url (http or https, up to 3 redirects, certificates verified). Returns 0 when an answer
 * came (any status), -1 with r->error when none did. Free with core_fetch_result_free. */
int core_fetch(const char *url, const struct core_fetch_opts *o, struct core_fetch_result *r);
void core_fetch_result_free(struct core_fetch_result *r);

#endif
