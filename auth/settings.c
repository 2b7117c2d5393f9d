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
};
const size_t auth_settings_nkeys = sizeof(auth_settings_keys) / sizeof(auth_settings_keys[0]);

void auth_settings_resolve(struct auth_settings *s, const char *dir)
{
    core_path_resolve_list(&s->trusted_certs, dir);
    core_path_resolve_list(&s->crl_files, dir);
    core_path_resolve_list(&s->site_token_certs, dir);
    core_path_resolve(&s->bulk_token_blocklist, dir);
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
