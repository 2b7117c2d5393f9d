/* CMTrace line format, rolling over, and the repeat limiter. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

Test(log, cmtrace_format)
{
    char buf[512];
    /* 2026-11-27T11:27:08.515Z */
    size_t n = log_format_cmtrace(buf, sizeof(buf), "hello", "CMGService", LOG_LEVEL_WARNING,
                                  1795778828515ull, 4242);
    cr_assert_eq(n, strlen(buf));
    cr_assert_str_eq(buf, "<![LOG[hello]LOG]!><time=\"11:27:08.515+000\" date=\"11-27-2026\" "
                          "component=\"CMGService\" context=\"\" type=\"2\" thread=\"4242\" "
                          "file=\"\">\n");
    log_format_cmtrace(buf, sizeof(buf), "x", "C", LOG_LEVEL_ERROR, 0, 1);
    cr_assert(strstr(buf, "type=\"3\""));
    log_format_cmtrace(buf, sizeof(buf), "x", "C", LOG_LEVEL_INFO, 0, 1);
    cr_assert(strstr(buf, "type=\"1\""));
}

Test(log, truncated_line_still_ends_with_newline)
{
    char buf[40];
    size_t n = log_format_cmtrace(buf, sizeof(buf), "a long message that does not fit", "C",
                                  LOG_LEVEL_INFO, 0, 1);
    cr_assert_eq(n, sizeof(buf) - 1);
    cr_assert_eq(buf[n - 1], '\n');
}

Test(log, file_rolls_over_to_lo_)
{
    char dir[] = "/tmp/cmg-log-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], rolled[256];
    snprintf(path, sizeof(path), "%s/CMGService.log", dir);
    snprintf(rolled, sizeof(rolled), "%s/CMGService.lo_", dir);
    struct log_opts o = {.file = path,
                         .component = "CMGService",
                         .max_size = 4096,
                         .level = LOG_LEVEL_INFO,
                         .to_stderr = false};
    char err[256];
    cr_assert_eq(log_init(&o, err, sizeof(err)), 0, "%s", err);
    for (int i = 0; i < 100; i++)
        LOG_INFO("line %d with a message ]LOG]!> that tries to end the record early", i);
    LOG_VERBOSE("not written at info level");
    log_deinit();
    struct stat a, b;
    cr_assert_eq(stat(path, &a), 0);
    cr_assert_eq(stat(rolled, &b), 0);
    cr_assert_leq(a.st_size, 4096);
    cr_assert_leq(b.st_size, 4096);
    FILE *fp = fopen(path, "r");
    char line[1024];
    int lines = 0;
    while (fgets(line, sizeof(line), fp)) {
        lines++;
        cr_assert(strncmp(line, "<![LOG[", 7) == 0);
        cr_assert_eq(strstr(line, "]LOG]!>"), strrchr(line, ']') - 4, "one record end: %s", line);
        cr_assert_null(strstr(line, "not written"));
    }
    fclose(fp);
    cr_assert_gt(lines, 0);
    unlink(path);
    unlink(rolled);
    rmdir(dir);
}

Test(log, ratelimit)
{
    struct log_ratelimit rl = {0};
    unsigned sup = 99;
    cr_assert(log_ratelimit_pass(&rl, 60000, &sup));
    cr_assert_eq(sup, 0);
    cr_assert_not(log_ratelimit_pass(&rl, 60000, &sup));
    cr_assert_not(log_ratelimit_pass(&rl, 60000, &sup));
    cr_assert_eq(rl.suppressed, 2);
}
