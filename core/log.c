/* Process-wide logger: human lines on stderr, CMTrace lines in a size-bounded file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define LOG_LINE_MAX 4096

static struct {
    pthread_mutex_t lock;
    int fd; /* CMTrace file, -1 when none */
    char *path;
    char *component;
    uint64_t size; /* bytes in the current file */
    uint64_t max_size;
    enum log_level level;
    bool to_stderr;
} g_log = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, NULL, 0, 5u << 20, LOG_LEVEL_INFO, true};

static __thread const char *t_tag = "main";
static __thread long t_tid;

uint64_t core_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t core_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void log_set_thread_tag(const char *tag)
{
    t_tag = tag;
}

bool log_enabled(enum log_level level)
{
    return level >= __atomic_load_n(&g_log.level, __ATOMIC_RELAXED);
}

/* The rolled-over name ConfigMgr uses: CMGService.log -> CMGService.lo_ */
static void log_rolled_name(const char *path, char *buf, size_t len)
{
    size_t n = strlen(path);
    if (n >= 4 && strcmp(path + n - 4, ".log") == 0)
        snprintf(buf, len, "%.*s.lo_", (int)(n - 4), path);
    else
        snprintf(buf, len, "%s.lo_", path);
}

static int log_open_file_locked(char *err, size_t errlen)
{
    if (g_log.fd >= 0) {
        close(g_log.fd);
        g_log.fd = -1;
    }
    if (!g_log.path)
        return 0;
    int fd = open(g_log.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open log file %s: %s", g_log.path, strerror(errno));
        return -1;
    }
    struct stat st;
    g_log.size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    g_log.fd = fd;
    return 0;
}

static void log_roll_locked(void)
{
    char rolled[4096];
    log_rolled_name(g_log.path, rolled, sizeof(rolled));
    close(g_log.fd);
    g_log.fd = -1;
    if (rename(g_log.path, rolled) != 0 && g_log.to_stderr)
        fprintf(stderr, "log: cannot roll %s over: %s\n", g_log.path, strerror(errno));
    char err[256];
    if (log_open_file_locked(err, sizeof(err)) != 0 && g_log.to_stderr)
        fprintf(stderr, "log: %s\n", err);
}

static int log_apply(const struct log_opts *opts, char *err, size_t errlen)
{
    pthread_mutex_lock(&g_log.lock);
    free(g_log.path);
    free(g_log.component);
    g_log.path = opts->file && *opts->file ? strdup(opts->file) : NULL;
    g_log.component = strdup(opts->component ? opts->component : "CMGService");
    g_log.max_size = opts->max_size ? opts->max_size : (5u << 20);
    __atomic_store_n(&g_log.level, opts->level, __ATOMIC_RELAXED);
    g_log.to_stderr = opts->to_stderr;
    int rc = log_open_file_locked(err, errlen);
    pthread_mutex_unlock(&g_log.lock);
    return rc;
}

int log_init(const struct log_opts *opts, char *err, size_t errlen)
{
    return log_apply(opts, err, errlen);
}

int log_reconfigure(const struct log_opts *opts, char *err, size_t errlen)
{
    return log_apply(opts, err, errlen);
}

void log_deinit(void)
{
    pthread_mutex_lock(&g_log.lock);
    if (g_log.fd >= 0)
        close(g_log.fd);
    g_log.fd = -1;
    free(g_log.path);
    free(g_log.component);
    g_log.path = NULL;
    g_log.component = NULL;
    pthread_mutex_unlock(&g_log.lock);
}

/* CMTrace escapes nothing, but a "]LOG]!>" inside a message would end it early. */
static void log_sanitize(char *s)
{
    char *p;
    while ((p = strstr(s, "]LOG]!>")) != NULL)
        p[0] = ')';
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

size_t log_format_cmtrace(char *buf, size_t len, const char *msg, const char *component,
                          enum log_level level, uint64_t wall_ms, long thread_id)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int type = level == LOG_LEVEL_ERROR ? 3 : level == LOG_LEVEL_WARNING ? 2 : 1;
    int n = snprintf(buf, len,
                     "<![LOG[%s]LOG]!><time=\"%02d:%02d:%02d.%03u+000\" date=\"%02d-%02d-%04d\" "
                     "component=\"%s\" context=\"\" type=\"%d\" thread=\"%ld\" file=\"\">\n",
                     msg, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(wall_ms % 1000),
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_year + 1900, component, type, thread_id);
    if (n < 0)
        return 0;
    if ((size_t)n >= len) {
        /* Truncated: keep the line well-formed by ending it properly. */
        buf[len - 2] = '\n';
        buf[len - 1] = '\0';
        return len - 1;
    }
    return (size_t)n;
}

static const char *log_level_word(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "ERROR";
    case LOG_LEVEL_WARNING:
        return "WARN ";
    case LOG_LEVEL_INFO:
        return "INFO ";
    default:
        return "VERB ";
    }
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    char msg[LOG_LINE_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    log_sanitize(msg);
    if (!t_tid)
        t_tid = (long)syscall(SYS_gettid);
    uint64_t now = core_wall_ms();

    char human[LOG_LINE_MAX + 64];
    char cm[LOG_LINE_MAX + 256];
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int hn = snprintf(human, sizeof(human), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ %s [%s] %s\n",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, (unsigned)(now % 1000), log_level_word(level), t_tag, msg);
    if (hn < 0)
        return;
    if ((size_t)hn >= sizeof(human))
        hn = sizeof(human) - 1;

    pthread_mutex_lock(&g_log.lock);
    if (g_log.to_stderr) {
        ssize_t w = write(STDERR_FILENO, human, (size_t)hn);
        (void)w;
    }
    if (g_log.fd >= 0) {
        char line[LOG_LINE_MAX + 64];
        snprintf(line, sizeof(line), "[%s] %s", t_tag, msg);
        size_t cn =
            log_format_cmtrace(cm, sizeof(cm), line,
                               g_log.component ? g_log.component : "CMGService", level, now, t_tid);
        if (g_log.size + cn > g_log.max_size && g_log.size > 0)
            log_roll_locked();
        if (g_log.fd >= 0) {
            ssize_t w = write(g_log.fd, cm, cn);
            if (w > 0)
                g_log.size += (uint64_t)w;
        }
    }
    pthread_mutex_unlock(&g_log.lock);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

bool log_ratelimit_pass(struct log_ratelimit *rl, uint64_t interval_ms, unsigned *suppressed)
{
    uint64_t now = core_now_ms();
    if (rl->last_ms && now - rl->last_ms < interval_ms) {
        rl->suppressed++;
        return false;
    }
    rl->last_ms = now;
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return true;
}
