/* Schema-driven INI loading: values, bounds, and messages that name file, line and key. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct conf {
    bool flag;
    uint64_t count, size, timeout;
    char *name;
    unsigned level;
};

#define OFF(f) offsetof(struct conf, f)
static const struct config_key schema[] = {
    {"main", "flag", CONFIG_BOOL, OFF(flag), "true", 0, 0, NULL, false},
    {"main", "count", CONFIG_UINT, OFF(count), "4", 1, 10, NULL, false},
    {"main", "size", CONFIG_SIZE, OFF(size), "16k", 0, 0, NULL, false},
    {"main", "timeout", CONFIG_DURATION, OFF(timeout), "15s", 0, 0, NULL, false},
    {"main", "name", CONFIG_STRING, OFF(name), NULL, 0, 0, NULL, false},
    {"log", "level", CONFIG_ENUM, OFF(level), "info", 0, 0, "error|info|verbose", false},
};
#define N (sizeof(schema) / sizeof(schema[0]))

static int load(const char *text, struct conf *c, struct config_report *r)
{
    memset(c, 0, sizeof(*c));
    config_report_init(r, "test.ini", N);
    cr_assert_eq(config_apply_defaults(schema, N, c, r), 0);
    return config_load_string("test.ini", text, schema, N, c, r);
}

Test(config, defaults_apply)
{
    struct conf c;
    struct config_report r;
    cr_assert_eq(load("", &c, &r), 0);
    cr_assert(c.flag);
    cr_assert_eq(c.count, 4);
    cr_assert_eq(c.size, 16384);
    cr_assert_eq(c.timeout, 15000);
    cr_assert_null(c.name);
    cr_assert_eq(c.level, 1);
    config_report_deinit(&r);
    config_free(schema, N, &c);
}

Test(config, values_parse)
{
    struct conf c;
    struct config_report r;
    const char *text = "; comment\n[main]\nflag = off\ncount = 10\nsize = 2m\n"
                       "timeout = 250ms\nname = cmg.contoso.com\n[log]\nlevel = VERBOSE\n";
    cr_assert_eq(load(text, &c, &r), 0, "%s", r.nerrors ? r.errors[0] : "");
    cr_assert_not(c.flag);
    cr_assert_eq(c.count, 10);
    cr_assert_eq(c.size, 2 * 1024 * 1024);
    cr_assert_eq(c.timeout, 250);
    cr_assert_str_eq(c.name, "cmg.contoso.com");
    cr_assert_eq(c.level, 2);
    cr_assert_eq(r.line_of[1], 4);
    config_report_deinit(&r);
    config_free(schema, N, &c);
}

struct err_case {
    const char *text;
    const char *expect; /* substring of the first error */
};

Test(config, errors_name_file_line_and_key)
{
    struct err_case cases[] = {
        {"[main]\ncount = 11\n", "test.ini:2: main.count: \"11\": outside the allowed range 1..10"},
        {"[main]\ncount = 0\n", "test.ini:2: main.count: \"0\": outside the allowed range 1..10"},
        {"[main]\n\ncount = abc\n", "test.ini:3: main.count: \"abc\": expected a number"},
        {"[main]\nflag = maybe\n", "test.ini:2: main.flag: \"maybe\": expected true or false"},
        {"[main]\ntimeout = 5x\n", "test.ini:2: main.timeout: \"5x\": expected a duration"},
        {"[main]\nsize = 3q\n", "test.ini:2: main.size: \"3q\": expected a size"},
        {"[main]\ncolour = red\n", "test.ini:2: main.colour: unknown key"},
        {"[mian]\ncount = 2\n", "test.ini:2: mian.count: unknown section [mian]"},
        {"[main]\ncount = 2\ncount = 3\n", "test.ini:3: main.count: set twice (first on line 2)"},
        {"[log]\nlevel = loud\n", "test.ini:2: log.level: \"loud\": expected one of"},
        {"[main]\nthis is not ini\n", "test.ini:2: syntax error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c;
        struct config_report r;
        cr_assert_eq(load(cases[i].text, &c, &r), -1, "case %zu", i);
        cr_assert_geq(r.nerrors, 1);
        cr_assert(strstr(r.errors[0], cases[i].expect), "case %zu: got \"%s\"", i, r.errors[0]);
        config_report_deinit(&r);
        config_free(schema, N, &c);
    }
}

Test(config, every_error_is_reported)
{
    struct conf c;
    struct config_report r;
    cr_assert_eq(load("[main]\ncount = 99\nflag = x\nbogus = 1\n", &c, &r), -1);
    cr_assert_eq(r.nerrors, 3);
    config_report_deinit(&r);
    config_free(schema, N, &c);
}

Test(config, validation_errors_point_at_the_line)
{
    struct conf c;
    struct config_report r;
    cr_assert_eq(load("[main]\n\nname = x\n", &c, &r), 0);
    config_report_error(&r, schema, 4, "must be a DNS name, not %s", c.name);
    cr_assert_str_eq(r.errors[0], "test.ini:3: main.name: must be a DNS name, not x");
    config_report_error(&r, schema, 1, "bad default");
    cr_assert_str_eq(r.errors[1], "test.ini: main.count (default): bad default");
    config_report_deinit(&r);
    config_free(schema, N, &c);
}

Test(config, parsers)
{
    uint64_t v;
    const char *why;
    cr_assert_eq(config_parse_size("1g", &v, &why), 0);
    cr_assert_eq(v, 1024ull * 1024 * 1024);
    cr_assert_eq(config_parse_size("64KB", &v, &why), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(config_parse_size("99999999999999999999", &v, &why), -1);
    cr_assert_eq(config_parse_size("18446744073709551615k", &v, &why), -1);
    cr_assert_eq(config_parse_duration("2m", &v, &why), 0);
    cr_assert_eq(v, 120000);
    cr_assert_eq(config_parse_duration("1h", &v, &why), 0);
    cr_assert_eq(v, 3600000);
    cr_assert_eq(config_parse_duration("7", &v, &why), 0);
    cr_assert_eq(v, 7000);
    cr_assert_eq(config_parse_duration("-1", &v, &why), -1);
    cr_assert_eq(config_parse_uint("12 ", &v, &why), -1);
}
