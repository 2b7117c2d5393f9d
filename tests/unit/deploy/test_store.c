/* The deployment's content store as cmgctl reads it: an Azure deployment's [content] settings
 * filled in memory from the deployment's settings and a listed key, and the store a state
 * folder names (a local deployment's shared folder; an Azure one needs the settings). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "content.h"
#include "deploy.h"

#define GIB (1024ull * 1024 * 1024)
#define KEY "a2V5IG9mIHRoZSB0ZXN0IHN0b3JhZ2UgYWNjb3VudA=="

static struct deploy_settings ds;
static struct deploy_msgs m;

static void settings_setup(void)
{
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    ds.provider = DEPLOY_PROVIDER_AZURE;
    ds.storage_account = strdup("gw1");
    ds.storage_quota_gb = 3;
    ds.storage_warning_pct = 40;
    ds.storage_critical_pct = 80;
}

static void settings_teardown(void)
{
    deploy_settings_free(&ds);
    deploy_msgs_clear(&m);
}

TestSuite(blob, .init = settings_setup, .fini = settings_teardown);

Test(blob, settings_of_the_deployment)
{
    struct content_settings s;
    char err[512] = "";
    cr_assert_eq(deploy_content_settings_blob(&ds, KEY, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert(s.enabled);
    cr_assert_eq(s.store, CONTENT_STORE_BLOB);
    cr_assert_eq(s.environment, CONTENT_AZURE_PUBLIC);
    cr_assert_str_eq(s.account, "gw1");
    cr_assert_str_eq(s.account_key, KEY);
    cr_assert_str_eq(s.container, DEPLOY_CONTENT_CONTAINER, "the container create makes");
    cr_assert_null(s.blob_endpoint, "the account's own endpoint");
    cr_assert_null(s.sas);
    cr_assert_eq(s.storage_alert, 3 * GIB);
    cr_assert_eq(s.storage_warning, 40);
    cr_assert_eq(s.storage_critical, 80);
    content_settings_free(&s);

    ds.environment = 1;
    ds.blob_endpoint = strdup("http://127.0.0.1:10000/gw1");
    ds.enable_cloud_dp_function = false;
    cr_assert_eq(deploy_content_settings_blob(&ds, KEY, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.environment, CONTENT_AZURE_USGOV);
    cr_assert_str_eq(s.blob_endpoint, "http://127.0.0.1:10000/gw1");
    cr_assert_not(s.enabled, "content off: nothing is read");
    content_settings_free(&s);
}

Test(blob, refused_without_a_key_or_account)
{
    struct content_settings s;
    char err[512] = "";
    cr_assert_neq(deploy_content_settings_blob(&ds, NULL, &s, err, sizeof(err)), 0);
    cr_assert(strstr(err, "account_key"), "%s", err);
    cr_assert_null(s.account, "freed on failure");
    content_settings_free(&s); /* the caller's usual cleanup stays harmless */

    free(ds.storage_account);
    ds.storage_account = strdup("Not-An-Account");
    cr_assert_neq(deploy_content_settings_blob(&ds, KEY, &s, err, sizeof(err)), 0);
    cr_assert(strstr(err, "content.account"), "%s", err);
    cr_assert(strstr(err, KEY) == NULL, "the message shows no key: %s", err);
}

/* ---- a state folder ---- */

static char dir[64];

static void dir_setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cmg-test-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void dir_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(state, .init = dir_setup, .fini = dir_teardown);

static void write_text(const char *rel, const char *text)
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
    fputs(text, f);
    fclose(f);
}

Test(state, local_deployment_shares_its_folder)
{
    write_text("state.json", "{\"provider\": \"local\"}");
    write_text("instance-0/gateway.ini", "[gateway]\ninstance_id = 0\n[content]\nfolder = "
                                         "../content-store\nstorage_alert = 5g\n");
    struct content_settings s;
    char err[512] = "", want[128];
    cr_assert_eq(deploy_content_settings(dir, NULL, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.store, CONTENT_STORE_FOLDER);
    snprintf(want, sizeof(want), "%s/instance-0/../content-store", dir);
    cr_assert_str_eq(s.folder, want, "relative to the instance's gateway.ini");
    cr_assert_eq(s.storage_alert, 5 * GIB);
    content_settings_free(&s);
}

Test(state, nothing_deployed_or_no_settings)
{
    struct content_settings s;
    char err[512] = "";
    cr_assert_eq(deploy_content_settings(dir, NULL, &s, err, sizeof(err)), DEPLOY_EXIT_NO_STATE);
    cr_assert(strstr(err, "nothing is deployed"), "%s", err);

    write_text("state.json", "{\"provider\": \"azure\"}");
    cr_assert_eq(deploy_content_settings(dir, NULL, &s, err, sizeof(err)), DEPLOY_EXIT_USAGE);
    cr_assert(strstr(err, "--settings FILE"), "names what to give: %s", err);

    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such.ini", dir);
    cr_assert_eq(deploy_content_settings(dir, missing, &s, err, sizeof(err)), DEPLOY_EXIT_USAGE);
    cr_assert(strstr(err, "no-such.ini"), "%s", err);
    content_settings_free(&s);
}
