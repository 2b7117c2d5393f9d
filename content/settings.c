/* The [content] settings: one schema for the gateway and for cmgctl's content verbs. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"
#include "core.h"

#define OFF(f) offsetof(struct content_settings, f)
#define GIB (1024ull * 1024 * 1024)

const struct config_key content_settings_keys[] = {
    {"content", "enabled", CONFIG_BOOL, OFF(enabled), "true", 0, 0, NULL, false},
    {"content", "store", CONFIG_ENUM, OFF(store), "folder", 0, 0, "folder|blob", true},
    {"content", "folder", CONFIG_STRING, OFF(folder), "content-store", 0, 0, NULL, true},
    {"content", "environment", CONFIG_ENUM, OFF(environment), "AzurePublicCloud", 0, 0,
     "AzurePublicCloud|AzureUSGovernmentCloud", true},
    {"content", "account", CONFIG_STRING, OFF(account), NULL, 0, 0, NULL, true},
    {"content", "account_key", CONFIG_STRING, OFF(account_key), NULL, 0, 0, NULL, true},
    {"content", "account_key_file", CONFIG_STRING, OFF(account_key_file), NULL, 0, 0, NULL, true},
    {"content", "sas", CONFIG_STRING, OFF(sas), NULL, 0, 0, NULL, true},
    {"content", "blob_endpoint", CONFIG_STRING, OFF(blob_endpoint), NULL, 0, 0, NULL, true},
    {"content", "container", CONFIG_STRING, OFF(container), "cmgcontent", 0, 0, NULL, true},
    {"content", "api_version", CONFIG_STRING, OFF(api_version), "2025-01-05", 0, 0, NULL, true},
    {"content", "ca_file", CONFIG_STRING, OFF(ca_file), NULL, 0, 0, NULL, true},
    {"content", "timeout", CONFIG_DURATION, OFF(timeout), "30s", 1000, 600000, NULL, true},
    {"content", "upload_block", CONFIG_SIZE, OFF(upload_block), "8m", 65536, 4000ull << 20, NULL,
     false},
    {"content", "upload_single_max", CONFIG_SIZE, OFF(upload_single_max), "32m", 0, 5000ull << 20,
     NULL, false},
    {"content", "cache_dir", CONFIG_STRING, OFF(cache_dir), "cache/content", 0, 0, NULL, true},
    {"content", "cache_max", CONFIG_SIZE, OFF(cache_max), "10g", 1 << 20, 0, NULL, true},
    {"content", "fill_threads", CONFIG_UINT, OFF(fill_threads), "4", 1, 64, NULL, true},
    {"content", "locations", CONFIG_ENUM, OFF(locations), "gateway", 0, 0, "gateway|sas", false},
    {"content", "sas_lifetime", CONFIG_DURATION, OFF(sas_lifetime), "1h", 60000, 604800000, NULL,
     false},
    {"content", "token_certs", CONFIG_STRING, OFF(token_certs), NULL, 0, 0, NULL, false},
    {"content", "token_max_lifetime", CONFIG_DURATION, OFF(token_max_lifetime), "24h", 60000,
     604800000, NULL, false},
    {"content", "token_skew", CONFIG_DURATION, OFF(token_skew), "5m", 0, 3600000, NULL, false},
    {"content", "storage_alert", CONFIG_SIZE, OFF(storage_alert), "2000g", 1 << 20, 0, NULL, false},
    {"content", "storage_warning", CONFIG_UINT, OFF(storage_warning), "50", 1, 100, NULL, false},
    {"content", "storage_critical", CONFIG_UINT, OFF(storage_critical), "90", 1, 100, NULL, false},
    {"content", "manifest_ttl", CONFIG_DURATION, OFF(manifest_ttl), "60s", 1000, 86400000, NULL,
     false},
    {"content", "peerdist", CONFIG_BOOL, OFF(peerdist), "true", 0, 0, NULL, false},
    {"content", "peerdist_secret_hex", CONFIG_STRING, OFF(peerdist_secret_hex), NULL, 0, 0, NULL,
     false},
    {"content", "peerdist_key_file", CONFIG_STRING, OFF(peerdist_key_file), NULL, 0, 0, NULL,
     false},
    {"content", "peerdist_key_password", CONFIG_STRING, OFF(peerdist_key_password), NULL, 0, 0,
     NULL, false},
};
const size_t content_settings_nkeys =
    sizeof(content_settings_keys) / sizeof(content_settings_keys[0]);

int content_settings_load(const char *path, struct content_settings *out,
                          struct config_report *report)
{
    memset(out, 0, sizeof(*out));
    config_report_init(report, path, content_settings_nkeys);
    if (config_apply_defaults(content_settings_keys, content_settings_nkeys, out, report) != 0 ||
        config_load_file_sections(path, content_settings_keys, content_settings_nkeys, out,
                                  report) != 0)
        return -1;
    return 0;
}

/* Reads a small secret file (a key), without its trailing white space. */
static char *read_secret(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "content.account_key_file: %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        snprintf(err, errlen, "content.account_key_file: %s: longer than a storage key", path);
        return NULL;
    }
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    buf[n] = '\0';
    char *s = strdup(buf);
    explicit_bzero(buf, sizeof(buf));
    return s;
}

static bool is_account_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 24)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool is_container_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '-' && s[i + 1] == '-')
            return false;
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
            return false;
    }
    return true;
}

int content_settings_finish(struct content_settings *s, const char *dir, char *err, size_t errlen)
{
    core_path_resolve(&s->folder, dir);
    core_path_resolve(&s->account_key_file, dir);
    core_path_resolve(&s->ca_file, dir);
    core_path_resolve(&s->cache_dir, dir);
    core_path_resolve_list(&s->token_certs, dir);
    core_path_resolve(&s->peerdist_key_file, dir);
    if (s->account_key_file) {
        if (s->account_key) {
            snprintf(err, errlen,
                     "content.account_key_file: give account_key or "
                     "account_key_file, not both");
            return -1;
        }
        if (!(s->account_key = read_secret(s->account_key_file, err, errlen)))
            return -1;
    }
    if (!is_container_name(s->container)) {
        snprintf(err, errlen,
                 "content.container: \"%s\" is not a container name (3-63 lower-case letters, "
                 "digits and single hyphens, starting and ending with a letter or digit)",
                 s->container);
        return -1;
    }
    if (s->store == CONTENT_STORE_BLOB) {
        if (!s->account || !is_account_name(s->account)) {
            snprintf(err, errlen,
                     "content.account: a blob store needs the storage account's name "
                     "(3-24 lower-case letters and digits)%s%s%s",
                     s->account ? ", not \"" : "", s->account ? s->account : "",
                     s->account ? "\"" : "");
            return -1;
        }
        if (!s->account_key == !s->sas) {
            snprintf(err, errlen,
                     "content.account_key: a blob store needs account_key (or "
                     "account_key_file) or sas, exactly one of them");
            return -1;
        }
        if (s->locations == CONTENT_LOCATIONS_SAS && !s->account_key) {
            snprintf(err, errlen,
                     "content.locations: \"sas\" needs the account key to sign the "
                     "URLs; set account_key or use locations = gateway");
            return -1;
        }
    } else if (s->locations == CONTENT_LOCATIONS_SAS) {
        snprintf(err, errlen, "content.locations: \"sas\" needs store = blob");
        return -1;
    }
    if (s->storage_warning >= s->storage_critical) {
        snprintf(err, errlen,
                 "content.storage_warning: %llu %% is not below storage_critical "
                 "(%llu %%)",
                 (unsigned long long)s->storage_warning, (unsigned long long)s->storage_critical);
        return -1;
    }
    if (s->peerdist_secret_hex && s->peerdist_key_file) {
        snprintf(err, errlen,
                 "content.peerdist_key_file: give peerdist_secret_hex or "
                 "peerdist_key_file, not both");
        return -1;
    }
    if (s->peerdist_key_file && !s->peerdist_key_password) {
        snprintf(err, errlen,
                 "content.peerdist_key_password: peerdist_key_file needs the "
                 "password it was exported with");
        return -1;
    }
    return 0;
}

void content_settings_free(struct content_settings *s)
{
    if (s->account_key)
        explicit_bzero(s->account_key, strlen(s->account_key));
    if (s->peerdist_key_password)
        explicit_bzero(s->peerdist_key_password, strlen(s->peerdist_key_password));
    config_free(content_settings_keys, content_settings_nkeys, s);
}
