/* The [auth] settings: one schema for the gateway and for cmgctl's offline verdicts. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "core.h"

#define OFF(f) offsetof(struct auth_settings, f)

const struct config_key auth_settings_keys[] = {
    {"auth", "trusted_certs", CONFIG_STRING, OFF(trusted_certs), NULL, 0, 0, NULL, false},
    {"auth", "crl_files", CONFIG_STRING, OFF(crl_files), NULL, 0, 0, NULL, false},
    {"auth", "verify_revocation", CONFIG_BOOL, OFF(verify_revocation), "true", 0, 0, NULL, false},
    {"auth", "site_token_certs", CONFIG_STRING, OFF(site_token_certs), NULL, 0, 0, NULL, false},
    {"auth", "hierarchy_id", CONFIG_STRING, OFF(hierarchy_id), NULL, 0, 0, NULL, false},
    {"auth", "bulk_token_blocklist", CONFIG_STRING, OFF(bulk_token_blocklist), NULL, 0, 0, NULL,
     false},
    {"auth", "crl_fetch", CONFIG_BOOL, OFF(crl_fetch), "true", 0, 0, NULL, false},
    {"auth", "crl_refresh_max", CONFIG_DURATION, OFF(crl_refresh_max), "1h", 1000, 604800000, NULL,
     false},
    {"auth", "crl_grace", CONFIG_DURATION, OFF(crl_grace), "0s", 0, 2592000000, NULL, false},
    {"auth", "crl_fail_open", CONFIG_STRING, OFF(crl_fail_open), NULL, 0, 0, NULL, false},
    {"auth", "cache_dir", CONFIG_STRING, OFF(cache_dir), "cache", 0, 0, NULL, true},
    {"auth", "fetch_timeout", CONFIG_DURATION, OFF(fetch_timeout), "10s", 100, 300000, NULL,
     false},
    {"auth", "auth_wait", CONFIG_DURATION, OFF(auth_wait), "10s", 0, 120000, NULL, false},
    {"auth", "entra_tenants", CONFIG_STRING, OFF(entra_tenants), NULL, 0, 0, NULL, false},
    {"auth", "entra_app_id_uri", CONFIG_STRING, OFF(entra_app_id_uri), "https://ConfigMgrService",
     0, 0, NULL, false},
    {"auth", "entra_server_app_id", CONFIG_STRING, OFF(entra_server_app_id), NULL, 0, 0, NULL,
     false},
    {"auth", "entra_cloud", CONFIG_ENUM, OFF(entra_cloud), "public", 0, 0, "public|usgov", false},
    {"auth", "entra_authority", CONFIG_STRING, OFF(entra_authority), NULL, 0, 0, NULL, false},
    {"auth", "entra_keys_refresh", CONFIG_DURATION, OFF(entra_keys_refresh), "12h", 60000,
     604800000, NULL, false},
    {"auth", "entra_unknown_kid_interval", CONFIG_DURATION, OFF(entra_unknown_kid_interval), "5m",
     0, 86400000, NULL, false},
};
const size_t auth_settings_nkeys = sizeof(auth_settings_keys) / sizeof(auth_settings_keys[0]);

void auth_settings_resolve(struct auth_settings *s, const char *dir)
{
    core_path_resolve_list(&s->trusted_certs, dir);
    core_path_resolve_list(&s->crl_files, dir);
    core_path_resolve_list(&s->site_token_certs, dir);
    core_path_resolve(&s->bulk_token_blocklist, dir);
    core_path_resolve(&s->cache_dir, dir);
}

int auth_settings_load(const char *path, struct auth_settings *out, struct config_report *report)
{
    memset(out, 0, sizeof(*out));
    config_report_init(report, path, auth_settings_nkeys);
    if (config_apply_defaults(auth_settings_keys, auth_settings_nkeys, out, report) != 0 ||
        config_load_file_sections(path, auth_settings_keys, auth_settings_nkeys, out, report) != 0)
        return -1;
    char *dir = core_dirname(path);
    auth_settings_resolve(out, dir);
    free(dir);
    return 0;
}

void auth_settings_free(struct auth_settings *s)
{
    config_free(auth_settings_keys, auth_settings_nkeys, s);
}
