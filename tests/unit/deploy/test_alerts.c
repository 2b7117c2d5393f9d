/* The alerts cmgctl status reports: the storage state against its threshold (a table of
 * vectors around the edges), the storage a folder store holds, and the report of both alerts. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "content.h"
#include "deploy.h"

#define GIB (1024ull * 1024 * 1024)

Test(alerts, storage_state_edges)
{
    const struct {
        uint64_t used, threshold, warn, crit;
        const char *want;
    } t[] = {
        {0, 2000 * GIB, 50, 90, "ok"},
        {1000 * GIB - 1, 2000 * GIB, 50, 90, "ok"},
        {1000 * GIB, 2000 * GIB, 50, 90, "warning"},
        {1800 * GIB - 1, 2000 * GIB, 50, 90, "warning"},
        {1800 * GIB, 2000 * GIB, 50, 90, "critical"},
        {5000 * GIB, 2000 * GIB, 50, 90, "critical"},
        {UINT64_MAX, UINT64_MAX, 50, 90, "critical"},
        {UINT64_MAX / 2, UINT64_MAX, 50, 90, "ok"},
        {1, GIB, 1, 2, "ok"},
        {GIB / 100, GIB, 1, 2, "ok"},
        {GIB / 100 + 1, GIB, 1, 2, "warning"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        cr_assert_str_eq(deploy_alert_state(t[i].used, t[i].threshold, t[i].warn, t[i].crit),
                         t[i].want, "case %zu", i);
}

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cmg-test-alerts-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(store, .init = setup, .fini = teardown);

static void write_file(const char *rel, size_t size)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    for (size_t i = 0; i < size; i++)
        fputc('x', f);
    fclose(f);
}

static const char *ini(const char *content)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/gateway.ini", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "[gateway]\ninstance_id = 0\n[content]\n%s", content);
    fclose(f);
    return path;
}

Test(store, used_counts_every_file)
{
    write_file("store/content/PS1/a.bin", 1000);
    write_file("store/content/PS1/sub/b.bin", 24);
    write_file("store/packages/PS1.json", 76);
    bool on;
    uint64_t used;
    char err[512];
    cr_assert_eq(deploy_storage_used(ini("folder = store\n"), &on, &used, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert(on);
    cr_assert_eq(used, 1100);

    cr_assert_eq(deploy_storage_used(ini("enabled = false\n"), &on, &used, err, sizeof(err)), 0);
    cr_assert_not(on);
    cr_assert_eq(used, 0);

    cr_assert_eq(deploy_storage_used(ini("folder = nowhere\n"), &on, &used, err, sizeof(err)), 0,
                 "an empty store: %s", err);
    cr_assert_eq(used, 0);

    cr_assert_neq(deploy_storage_used(ini("bogus = 1\n"), &on, &used, err, sizeof(err)), 0);
    cr_assert(strstr(err, "gateway.ini:4"), "names file and line: %s", err);
}

Test(store, report)
{
    write_file("store/content/PS1/a.bin", 700);
    json_t *settings = json_pack(
        "{s:{s:b, s:i, s:i, s:i}, s:{s:b, s:i, s:i, s:i, s:b}}", "storage_alert", "enabled", 1,
        "threshold_gb", 1, "warning_pct", 50, "critical_pct", 90, "traffic_alert", "enabled", 1,
        "threshold_gb", 10000, "warning_pct", 50, "critical_pct", 90, "stop_service", 0);
    json_t *a = deploy_alerts_json(settings, ini("folder = store\n"));
    json_t *s = json_object_get(a, "storage");
    cr_assert_eq(json_integer_value(json_object_get(s, "used")), 700);
    cr_assert_eq(json_integer_value(json_object_get(s, "threshold")), (json_int_t)GIB);
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "ok");
    json_t *t = json_object_get(a, "traffic");
    cr_assert(json_is_false(json_object_get(t, "measured")), "the traffic alert is not measured");
    json_decref(a);

    a = deploy_alerts_json(settings, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a, "storage"), "state")),
                     "unknown");
    json_decref(a);
    a = deploy_alerts_json(settings, ini("enabled = false\n"));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a, "storage"), "state")),
                     "off");
    json_decref(a);

    /* settings in memory (an Azure deployment's): the same report */
    struct content_settings cs = {.enabled = true, .store = CONTENT_STORE_FOLDER};
    char folder[128];
    snprintf(folder, sizeof(folder), "%s/store", dir);
    cs.folder = folder;
    a = deploy_alerts_json_of(settings, &cs, NULL);
    s = json_object_get(a, "storage");
    cr_assert_eq(json_integer_value(json_object_get(s, "used")), 700);
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "ok");
    json_decref(a);
    cs.enabled = false;
    a = deploy_alerts_json_of(settings, &cs, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a, "storage"), "state")),
                     "off");
    json_decref(a);
    a = deploy_alerts_json_of(settings, NULL, "keys of storage account gw1: AuthorizationFailed");
    s = json_object_get(a, "storage");
    cr_assert_str_eq(json_string_value(json_object_get(s, "state")), "unknown");
    cr_assert_str_eq(json_string_value(json_object_get(s, "detail")),
                     "keys of storage account gw1: AuthorizationFailed", "says why");
    json_decref(a);
    json_decref(settings);
}
