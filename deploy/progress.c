/* What a long operation shows while it runs (each step with its elapsed time: a live line on
 * a terminal, plain lines otherwise), the deploy log (CloudMgr.log, CMTrace) and the state
 * file of a deployment. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deploy.h"

void deploy_progress_init(struct deploy_progress *p, bool json, bool quiet)
{
    memset(p, 0, sizeof(*p));
    p->json = json;
    p->quiet = quiet;
    p->tty = !quiet && isatty(STDERR_FILENO);
    p->t0 = core_now_ms();
}

static double secs(uint64_t ms)
{
    return (double)ms / 1000.0;
}

void deploy_progress_step(struct deploy_progress *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->step, sizeof(p->step), fmt, ap);
    va_end(ap);
    p->step_t0 = core_now_ms();
    LOG_INFO("%s", p->step);
    if (p->quiet)
        return;
    if (p->tty) {
        fprintf(stderr, "\r\033[K[%6.1fs] %s ...", secs(p->step_t0 - p->t0), p->step);
        p->line_open = true;
    } else {
        fprintf(stderr, "[%6.1fs] %s ...\n", secs(p->step_t0 - p->t0), p->step);
    }
    fflush(stderr);
}

void deploy_progress_wait(struct deploy_progress *p, const char *status)
{
    if (p->quiet || !p->tty)
        return;
    uint64_t now = core_now_ms();
    fprintf(stderr, "\r\033[K[%6.1fs] %s ... %s (%.0fs)", secs(now - p->t0), p->step, status,
            secs(now - p->step_t0));
    fflush(stderr);
}

void deploy_progress_done(struct deploy_progress *p, const char *result)
{
    uint64_t now = core_now_ms();
    LOG_INFO("%s: %s (%.1fs)", p->step, result, secs(now - p->step_t0));
    if (p->quiet)
        return;
    if (p->tty)
        fprintf(stderr, "\r\033[K[%6.1fs] %s: %s (%.1fs)\n", secs(now - p->t0), p->step, result,
                secs(now - p->step_t0));
    else
        fprintf(stderr, "[%6.1fs] %s: %s (%.1fs)\n", secs(now - p->t0), p->step, result,
                secs(now - p->step_t0));
    p->line_open = false;
    fflush(stderr);
}

void deploy_progress_note(struct deploy_progress *p, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    LOG_INFO("%s", buf);
    if (p->quiet)
        return;
    if (p->line_open)
        fputc('\n', stderr);
    p->line_open = false;
    fprintf(stderr, "%s\n", buf);
    fflush(stderr);
}

int deploy_log_open(const char *state_dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/CloudMgr.log", state_dir);
    struct log_opts o = {.file = path,
                         .component = "CloudMgr",
                         .max_size = 5 * 1024 * 1024,
                         .level = LOG_LEVEL_VERBOSE,
                         .to_stderr = false};
    return log_init(&o, err, errlen);
}

void deploy_log_close(void)
{
    log_deinit();
}

json_t *deploy_state_read(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    json_error_t je;
    snprintf(path, sizeof(path), "%s/state.json", dir);
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "%s: nothing is deployed from this state folder", dir);
        errno = ENOENT;
        return NULL;
    }
    json_t *st = json_load_file(path, 0, &je);
    if (!st || !json_is_object(st)) {
        snprintf(err, errlen, "%s:%d: the state file is not readable: %s", path, je.line, je.text);
        json_decref(st);
        errno = EINVAL;
        return NULL;
    }
    return st;
}

int deploy_state_write(const char *dir, json_t *state, char *err, size_t errlen)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* written whole then renamed: a crash never leaves half a state */
    if (json_dump_file(state, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
        rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write the state file: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
