/* Range evaluation: a table of header values against sizes. */
#include <criterion/criterion.h>
#include <string.h>

#include "content.h"

struct range_case {
    const char *value;
    uint64_t size;
    enum content_range_result result;
    uint64_t first, last;
    const char *header;
};

Test(range, table)
{
    struct range_case cases[] = {
        {"bytes=0-9", 100, CONTENT_RANGE_PARTIAL, 0, 9, "bytes 0-9/100"},
        {"bytes=90-", 100, CONTENT_RANGE_PARTIAL, 90, 99, "bytes 90-99/100"},
        {"bytes=-10", 100, CONTENT_RANGE_PARTIAL, 90, 99, "bytes 90-99/100"},
        {"bytes=-500", 100, CONTENT_RANGE_PARTIAL, 0, 99, "bytes 0-99/100"},
        {"bytes=50-5000", 100, CONTENT_RANGE_PARTIAL, 50, 99, "bytes 50-99/100"},
        {"BYTES=1-1", 100, CONTENT_RANGE_PARTIAL, 1, 1, "bytes 1-1/100"},
        {"bytes = 1-1", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"bytes=99-99", 100, CONTENT_RANGE_PARTIAL, 99, 99, "bytes 99-99/100"},
        {"bytes=100-", 100, CONTENT_RANGE_UNSATISFIABLE, 0, 0, "bytes */100"},
        {"bytes=200-300", 100, CONTENT_RANGE_UNSATISFIABLE, 0, 0, "bytes */100"},
        {"bytes=-0", 100, CONTENT_RANGE_UNSATISFIABLE, 0, 0, "bytes */100"},
        {"bytes=0-", 0, CONTENT_RANGE_UNSATISFIABLE, 0, 0, "bytes */0"},
        {"bytes=9-0", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"bytes=0-1,5-6", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"items=0-1", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"bytes=-", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"bytes=a-b", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"bytes=99999999999999999999-", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
        {"", 100, CONTENT_RANGE_NONE, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct content_range r = {0, 0};
        enum content_range_result res =
            content_range_eval(cases[i].value, strlen(cases[i].value), cases[i].size, &r);
        cr_assert_eq(res, cases[i].result, "\"%s\": result %d", cases[i].value, res);
        char buf[64];
        int n = content_range_format(res, &r, cases[i].size, buf, sizeof(buf));
        if (!cases[i].header) {
            cr_assert_eq(n, -1);
            continue;
        }
        cr_assert_str_eq(buf, cases[i].header, "\"%s\"", cases[i].value);
        if (res == CONTENT_RANGE_PARTIAL) {
            cr_assert_eq(r.first, cases[i].first, "\"%s\"", cases[i].value);
            cr_assert_eq(r.last, cases[i].last, "\"%s\"", cases[i].value);
        }
    }
}
