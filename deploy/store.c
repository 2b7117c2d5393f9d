/* The deployment's content store as cmgctl reads it (status, content --deployment): a local
 * deployment's shared folder, named by its instances' gateway.ini; an Azure deployment's
 * storage account, whose [content] settings are filled in memory with the key ARM lists. The
 * key is never written to a file here: cmgctl fetches it each time it needs it, so the state
 * folder holds no secret and a rotated key is picked up. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "content.h"
#include "deploy.h"

/* Replaces a string setting (schema defaults are heap copies). */
static int store_set(char **slot, const char *value)
{
    char *copy = value ? strdup(value) : NULL;
    if (value && !copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

int deploy_content_settings_blob(const struct deploy_settings *ds, const char *key,
                                 struct content_settings *s, char *err, size_t errlen)
{
    struct config_report r;
    int rc = -1;
    memset(s, 0, sizeof(*s));
    config_report_init(&r, "deployment", content_settings_nkeys);
    if (config_apply_defaults(content_settings_keys, content_settings_nkeys, s, &r) != 0) {
        snprintf(err, errlen, "content settings: %s", r.nerrors ? r.errors[0] : "no defaults");
        goto out;
    }
    s->enabled = ds->enable_cloud_dp_function;
    s->store = CONTENT_STORE_BLOB;
    s->environment = strcmp(deploy_settings_env(ds)->name, "AzureUSGovernmentCloud") == 0
                         ? CONTENT_AZURE_USGOV
                         : CONTENT_AZURE_PUBLIC;
    s->storage_alert = ds->storage_quota_gb * 1024ull * 1024 * 1024;
    s->storage_warning = ds->storage_warning_pct;
    s->storage_critical = ds->storage_critical_pct;
    if (store_set(&s->account, ds->storage_account) != 0 || store_set(&s->account_key, key) != 0 ||
        store_set(&s->container, DEPLOY_CONTENT_CONTAINER) != 0 ||
        (ds->blob_endpoint && *ds->blob_endpoint &&
         store_set(&s->blob_endpoint, ds->blob_endpoint) != 0)) {
        snprintf(err, errlen, "content settings: out of memory");
        goto out;
    }
    /* nothing of it is a path: the folder is ".", unused by a blob store */
    rc = content_settings_finish(s, ".", err, errlen);
out:
    config_report_deinit(&r);
    if (rc != 0)
        content_settings_free(s);
    return rc;
}

/* A local deployment: the [content] section its instances share (instance 0's gateway.ini). */
static int store_local(const char *state_dir, struct content_settings *s, char *err, size_t errlen)
{
    char ini[PATH_MAX];
    struct config_report r;
    int rc = DEPLOY_EXIT_FAILED;
    snprintf(ini, sizeof(ini), "%s/instance-0/gateway.ini", state_dir);
    if (content_settings_load(ini, s, &r) != 0) {
        snprintf(err, errlen, "%s", r.nerrors ? r.errors[0] : ini);
        goto out;
    }
    char *dir = core_dirname(ini);
    if (content_settings_finish(s, dir ? dir : ".", err, errlen) == 0)
        rc = 0;
    free(dir);
out:
    config_report_deinit(&r);
    if (rc != 0)
        content_settings_free(s);
    return rc;
}

int deploy_content_settings(const char *state_dir, const char *settings_file,
                            struct content_settings *s, char *err, size_t errlen)
{
    struct deploy_settings ds;
    struct deploy_msgs m = {0};
    struct deploy_progress prog;
    struct deploy_ctx c = {0};
    json_t *state = NULL;
    int rc = DEPLOY_EXIT_USAGE;
    memset(s, 0, sizeof(*s));
    if (deploy_settings_load(&ds, settings_file, &m) != 0) {
        snprintf(err, errlen, "%s", m.n ? m.text[0] : "the settings file is not readable");
        goto out;
    }
    /* the state folder given wins over the settings' [deployment] state */
    if (state_dir && store_set(&ds.state, state_dir) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)))
        core_path_resolve(&ds.state, cwd);
    state = deploy_state_read(ds.state, err, errlen);
    if (!state) {
        rc = errno == ENOENT ? DEPLOY_EXIT_NO_STATE : DEPLOY_EXIT_FAILED;
        goto out;
    }
    const char *provider = json_string_value(json_object_get(state, "provider"));
    if (!provider || strcmp(provider, "azure") != 0) {
        rc = store_local(ds.state, s, err, errlen);
        goto out;
    }
    if (!settings_file) {
        snprintf(err, errlen,
                 "%s is an Azure deployment: its storage key is fetched with the server app's "
                 "credentials; give --settings FILE (the settings create was given)",
                 ds.state);
        goto out;
    }
    ds.provider = DEPLOY_PROVIDER_AZURE;
    if (deploy_settings_check(&ds, &m) != 0) {
        snprintf(err, errlen, "%s", m.text[0]);
        goto out;
    }
    /* the ARM calls go to the deployment's log, as those of the deploy verbs do */
    bool logged = access(ds.state, W_OK) == 0 && deploy_log_open(ds.state, err, errlen) == 0;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    deploy_progress_init(&prog, false, true);
    c.ds = &ds;
    c.prog = &prog;
    c.state = state;
    LOG_INFO("cmgctl content: the content store of %s (state %s)", ds.service_name, ds.state);
    rc = deploy_azure_content_settings(&c, s) == 0 ? 0 : DEPLOY_EXIT_FAILED;
    if (rc != 0)
        snprintf(err, errlen, "%s", c.err);
    curl_global_cleanup();
    if (logged)
        deploy_log_close();
out:
    json_decref(state);
    deploy_msgs_clear(&m);
    deploy_settings_free(&ds);
    return rc;
}
