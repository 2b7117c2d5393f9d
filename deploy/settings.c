/* The settings model: the wizard's settings under the names of New-CMCloudManagementGateway's
 * parameters, from a settings file and/or flags, checked before any call is made; and the
 * gateway.ini each instance gets from them. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include "deploy.h"

#define OFF(f) offsetof(struct deploy_settings, f)

static const struct config_key ds_keys[] = {
    {"deployment", "provider", CONFIG_ENUM, OFF(provider), "local", 0, 0, "local|azure", false},
    {"deployment", "state", CONFIG_STRING, OFF(state), "cmg-deployment", 0, 0, NULL, false},
    {"deployment", "await_tunnel", CONFIG_DURATION, OFF(await_tunnel), "60s", 0, 3600000, NULL,
     false},

    {"azure", "environment_setting", CONFIG_ENUM, OFF(environment), "AzurePublicCloud", 0, 0,
     "AzurePublicCloud|AzureUSGovernmentCloud", false},
    {"azure", "tenant_id", CONFIG_STRING, OFF(tenant_id), NULL, 0, 0, NULL, false},
    {"azure", "subscription_id", CONFIG_STRING, OFF(subscription_id), NULL, 0, 0, NULL, false},
    {"azure", "server_app_client_id", CONFIG_STRING, OFF(server_app_client_id), NULL, 0, 0, NULL,
     false},
    {"azure", "server_app_secret", CONFIG_STRING, OFF(server_app_secret), NULL, 0, 0, NULL, false},
    {"azure", "server_app_secret_file", CONFIG_STRING, OFF(server_app_secret_file), NULL, 0, 0,
     NULL, false},
    {"azure", "server_app_cert_file", CONFIG_STRING, OFF(server_app_cert_file), NULL, 0, 0, NULL,
     false},
    {"azure", "server_app_key_file", CONFIG_STRING, OFF(server_app_key_file), NULL, 0, 0, NULL,
     false},
    {"azure", "region", CONFIG_STRING, OFF(region), NULL, 0, 0, NULL, false},
    {"azure", "group_name", CONFIG_STRING, OFF(group_name), NULL, 0, 0, NULL, false},
    {"azure", "is_using_existing_group", CONFIG_BOOL, OFF(is_using_existing_group), "false", 0, 0,
     NULL, false},
    {"azure", "arm_endpoint", CONFIG_STRING, OFF(arm_endpoint), NULL, 0, 0, NULL, false},
    {"azure", "login_endpoint", CONFIG_STRING, OFF(login_endpoint), NULL, 0, 0, NULL, false},
    {"azure", "blob_endpoint", CONFIG_STRING, OFF(blob_endpoint), NULL, 0, 0, NULL, false},
    {"azure", "admin_ssh_public_key", CONFIG_STRING, OFF(admin_ssh_public_key), NULL, 0, 0, NULL,
     false},
    {"azure", "gateway_package_url", CONFIG_STRING, OFF(gateway_package_url), NULL, 0, 0, NULL,
     false},
    {"azure", "poll_interval", CONFIG_DURATION, OFF(poll_interval), "10s", 0, 600000, NULL, false},
    {"azure", "max_retries", CONFIG_UINT, OFF(max_retries), "8", 0, 100, NULL, false},

    {"service", "service_cert_path", CONFIG_STRING, OFF(service_cert_path), NULL, 0, 0, NULL,
     false},
    {"service", "service_cert_password", CONFIG_STRING, OFF(service_cert_password), NULL, 0, 0,
     NULL, false},
    {"service", "service_cert_password_file", CONFIG_STRING, OFF(service_cert_password_file), NULL,
     0, 0, NULL, false},
    {"service", "service_name", CONFIG_STRING, OFF(service_name), NULL, 0, 0, NULL, false},
    {"service", "service_name_prefix", CONFIG_STRING, OFF(service_name_prefix), NULL, 0, 0, NULL,
     false},
    {"service", "description", CONFIG_STRING, OFF(description), NULL, 0, 0, NULL, false},
    {"service", "vm_size", CONFIG_ENUM, OFF(vm_size), "Standard", 0, 0, DEPLOY_VM_SIZE_CHOICES,
     false},
    {"service", "vm_instance_count", CONFIG_UINT, OFF(vm_instance_count), "1", 1,
     DEPLOY_MAX_INSTANCES, NULL, false},
    {"service", "ca_root_cert", CONFIG_STRING, OFF(ca_root_certs), NULL, 0, 0, NULL, false},
    {"service", "ca_intermediate_cert", CONFIG_STRING, OFF(ca_intermediate_certs), NULL, 0, 0, NULL,
     false},
    {"service", "check_client_cert_revocation", CONFIG_BOOL, OFF(check_client_cert_revocation),
     "true", 0, 0, NULL, false},
    {"service", "enforce_protocol", CONFIG_BOOL, OFF(enforce_protocol), "true", 0, 0, NULL, false},
    {"service", "enable_cloud_dp_function", CONFIG_BOOL, OFF(enable_cloud_dp_function), "true", 0,
     0, NULL, false},

    {"alerts", "enable_traffic_out", CONFIG_BOOL, OFF(enable_traffic_out), "true", 0, 0, NULL,
     false},
    {"alerts", "traffic_out_gb", CONFIG_UINT, OFF(traffic_out_gb), "10000", 1, 10000000, NULL,
     false},
    {"alerts", "traffic_warning_pct", CONFIG_UINT, OFF(traffic_warning_pct), "50", 1, 100, NULL,
     false},
    {"alerts", "traffic_critical_pct", CONFIG_UINT, OFF(traffic_critical_pct), "90", 1, 100, NULL,
     false},
    {"alerts", "traffic_out_stop_service", CONFIG_BOOL, OFF(traffic_out_stop_service), "false", 0,
     0, NULL, false},
    {"alerts", "enable_storage_quota", CONFIG_BOOL, OFF(enable_storage_quota), "false", 0, 0, NULL,
     false},
    {"alerts", "storage_quota_gb", CONFIG_UINT, OFF(storage_quota_gb), "2000", 1, 10000000, NULL,
     false},
    {"alerts", "storage_warning_pct", CONFIG_UINT, OFF(storage_warning_pct), "50", 1, 100, NULL,
     false},
    {"alerts", "storage_critical_pct", CONFIG_UINT, OFF(storage_critical_pct), "90", 1, 100, NULL,
     false},

    {"local", "listen", CONFIG_STRING, OFF(listen), "127.0.0.1:8443", 0, 0, NULL, false},
    {"local", "tunnel_port_base", CONFIG_UINT, OFF(tunnel_port_base), "10124", 1, 65535 - 15, NULL,
     false},
    {"local", "admin_port_base", CONFIG_UINT, OFF(admin_port_base), "9180", 1, 65535 - 15, NULL,
     false},
    {"local", "workers", CONFIG_UINT, OFF(workers), "1", 0, 256, NULL, false},
    {"local", "gateway_bin", CONFIG_STRING, OFF(gateway_bin), NULL, 0, 0, NULL, false},
};
#define DS_NKEYS (sizeof(ds_keys) / sizeof(ds_keys[0]))

/* Switches: given alone they mean true (the cmdlet's switch parameters). */
static const char *const ds_switches[] = {"is-using-existing-group", "traffic-out-stop-service",
                                          "enable-storage-quota"};

/* Lines of the settings file where each key was set (0: not in the file). */
static unsigned ds_line_of[DS_NKEYS];

void deploy_msgs_add(struct deploy_msgs *m, const char *fmt, ...)
{
    char buf[DEPLOY_MSG_MAX];
    va_list ap;
    if (m->n >= sizeof(m->text) / sizeof(m->text[0]))
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    m->text[m->n++] = strdup(buf);
}

void deploy_msgs_clear(struct deploy_msgs *m)
{
    for (unsigned i = 0; i < m->n; i++)
        free(m->text[i]);
    m->n = 0;
}

static size_t ds_key(const char *name)
{
    for (size_t i = 0; i < DS_NKEYS; i++)
        if (strcmp(ds_keys[i].name, name) == 0)
            return i;
    abort(); /* only called with names from the table */
}

static bool ds_set(const char *s)
{
    return s && *s;
}

/* One message about key k, naming where its value came from. */
static void ds_error(struct deploy_settings *ds, struct deploy_msgs *m, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void ds_error(struct deploy_settings *ds, struct deploy_msgs *m, const char *key,
                     const char *fmt, ...)
{
    size_t k = ds_key(key);
    char why[768], flag[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(flag, sizeof(flag), "%s", key);
    for (char *p = flag; *p; p++)
        if (*p == '_')
            *p = '-';
    if (ds->flag_of[k])
        deploy_msgs_add(m, "--%s: %s", flag, why);
    else if (ds_line_of[k] && ds->settings_path)
        deploy_msgs_add(m, "%s:%u: %s.%s: %s", ds->settings_path, ds_line_of[k], ds_keys[k].section,
                        key, why);
    else
        deploy_msgs_add(m, "%s (--%s, or %s in [%s] of the settings file)", why, flag, key,
                        ds_keys[k].section);
}

/* ---- loading ---- */

static void ds_report_move(struct config_report *r, struct deploy_msgs *m)
{
    for (unsigned i = 0; i < r->nerrors; i++)
        deploy_msgs_add(m, "%s", r->errors[i]);
}

/* [gateway.<section>] of the settings file: copied into every instance's gateway.ini. */
static int ds_ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct deploy_settings *ds = user;
    if (strncmp(section, "gateway.", 8) != 0 || !name)
        return 1;
    struct deploy_kv *grown =
        realloc(ds->gateway_extra, (ds->ngateway_extra + 1) * sizeof(*ds->gateway_extra));
    if (!grown)
        return 0;
    ds->gateway_extra = grown;
    grown[ds->ngateway_extra].section = strdup(section + 8);
    grown[ds->ngateway_extra].key = strdup(name);
    grown[ds->ngateway_extra].value = strdup(value);
    ds->ngateway_extra++;
    return 1;
}

int deploy_settings_load(struct deploy_settings *ds, const char *path, struct deploy_msgs *m)
{
    struct config_report r;
    int rc = 0;
    memset(ds, 0, sizeof(*ds));
    memset(ds_line_of, 0, sizeof(ds_line_of));
    config_report_init(&r, path ? path : "defaults", DS_NKEYS);
    if (config_apply_defaults(ds_keys, DS_NKEYS, ds, &r) != 0)
        rc = -1;
    if (rc == 0 && path) {
        ds->settings_path = strdup(path);
        if (access(path, R_OK) != 0) {
            deploy_msgs_add(m, "%s: cannot read the settings file: %s", path, strerror(errno));
            rc = -1;
        } else if (config_load_file_sections(path, ds_keys, DS_NKEYS, ds, &r) != 0) {
            rc = -1;
        } else {
            memcpy(ds_line_of, r.line_of, sizeof(ds_line_of));
            if (ini_parse(path, ds_ini_cb, ds) != 0)
                rc = -1;
            /* Relative paths in the file are relative to the file. */
            char *dir = core_dirname(path);
            core_path_resolve(&ds->state, dir);
            core_path_resolve(&ds->server_app_secret_file, dir);
            core_path_resolve(&ds->server_app_cert_file, dir);
            core_path_resolve(&ds->server_app_key_file, dir);
            core_path_resolve(&ds->service_cert_path, dir);
            core_path_resolve(&ds->service_cert_password_file, dir);
            core_path_resolve_list(&ds->ca_root_certs, dir);
            core_path_resolve_list(&ds->ca_intermediate_certs, dir);
            core_path_resolve(&ds->gateway_bin, dir);
            free(dir);
        }
    }
    ds_report_move(&r, m);
    config_report_deinit(&r);
    return rc == 0 && m->n == 0 ? 0 : -1;
}

bool deploy_settings_flag_is_switch(const char *flag)
{
    for (size_t i = 0; i < sizeof(ds_switches) / sizeof(ds_switches[0]); i++)
        if (strcmp(flag, ds_switches[i]) == 0)
            return true;
    return false;
}

int deploy_settings_set_flag(struct deploy_settings *ds, const char *flag, const char *value,
                             struct deploy_msgs *m)
{
    char key[64];
    if (strlen(flag) >= sizeof(key))
        return 0;
    for (size_t i = 0;; i++) {
        key[i] = flag[i] == '-' ? '_' : flag[i];
        if (!flag[i])
            break;
    }
    ssize_t k = -1;
    for (size_t i = 0; i < DS_NKEYS; i++)
        if (strcmp(ds_keys[i].name, key) == 0)
            k = (ssize_t)i;
    if (k < 0)
        return 0;
    /* One INI line through the same parser as the file, so values mean the same. */
    char name[80], *text = NULL;
    snprintf(name, sizeof(name), "--%s", flag);
    if (asprintf(&text, "[%s]\n%s = %s\n", ds_keys[k].section, key, value) < 0)
        return -1;
    struct config_report r;
    config_report_init(&r, name, DS_NKEYS);
    int rc = config_load_string(name, text, ds_keys, DS_NKEYS, ds, &r);
    free(text);
    for (unsigned i = 0; i < r.nerrors; i++) {
        /* "--flag:2: section.key: why" reads better as "--flag: why" */
        const char *why = strstr(r.errors[i], key);
        why = why ? why + strlen(key) : NULL;
        deploy_msgs_add(m, "%s%s", name, why && why[0] == ':' ? why : r.errors[i]);
    }
    config_report_deinit(&r);
    if (rc != 0)
        return -1;
    ds->flag_of[k] = ds_keys[k].name;
    return 1;
}

bool deploy_settings_given(const struct deploy_settings *ds, const char *key)
{
    for (size_t i = 0; i < DS_NKEYS; i++)
        if (strcmp(ds_keys[i].name, key) == 0)
            return ds->flag_of[i] || ds_line_of[i];
    return false;
}

int deploy_settings_add_gateway(struct deploy_settings *ds, const char *spec, const char *origin,
                                struct deploy_msgs *m)
{
    const char *dot = strchr(spec, '.'), *eq = strchr(spec, '=');
    if (!dot || !eq || dot > eq || dot == spec || eq == dot + 1) {
        deploy_msgs_add(m, "%s \"%s\": expected SECTION.KEY=VALUE (e.g. auth.crl_fetch=false)",
                        origin, spec);
        return -1;
    }
    char section[64], key[64];
    snprintf(section, sizeof(section), "%.*s", (int)(dot - spec), spec);
    snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
    char full[80];
    snprintf(full, sizeof(full), "gateway.%s", section);
    return ds_ini_cb(ds, full, key, eq + 1) ? 0 : -1;
}

/* ---- checks ---- */

const char *deploy_check_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n < 3 || n > 24)
        return "must be 3 to 24 characters";
    if (!isalpha((unsigned char)p[0]))
        return "must start with a letter";
    if (!isalnum((unsigned char)p[n - 1]))
        return "must end with a letter or a digit";
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)p[i]) && p[i] != '-')
            return "may hold only letters, digits and hyphens";
        if (p[i] == '-' && p[i + 1] == '-')
            return "must not hold two hyphens in a row";
    }
    return NULL;
}

const char *deploy_check_storage_account(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 24)
        return "must be 3 to 24 characters";
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return "may hold only lowercase letters and digits";
    return NULL;
}

const char *deploy_check_group_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 90)
        return "must be 1 to 90 characters";
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.()", s[i]))
            return "may hold only letters, digits, '-', '_', '.', '(' and ')'";
    if (s[n - 1] == '.')
        return "must not end with a period";
    return NULL;
}

const char *deploy_check_region(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || n > 40)
        return "is not an Azure region name (such as eastus or usgovvirginia)";
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return "must be the region's name in lowercase without spaces (eastus, not \"East "
                   "US\")";
    return NULL;
}

const char *deploy_check_guid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (strlen(s) != sizeof(shape) - 1)
        return "is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)";
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return "is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)";
    return NULL;
}

bool deploy_name_matches(const char *pattern, const char *host)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static char *ds_read_secret(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

/* Reads the PFX: its certificate's CN and DNS names. Returns 0 or -1 with why. */
static int ds_read_cert(struct deploy_settings *ds, char *names, size_t nlen, char *why,
                        size_t wlen)
{
    FILE *f = fopen(ds->service_cert_path, "rb");
    if (!f) {
        snprintf(why, wlen, "cannot read %s: %s", ds->service_cert_path, strerror(errno));
        return -1;
    }
    PKCS12 *p12 = d2i_PKCS12_fp(f, NULL);
    fclose(f);
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;
    int rc = -1;
    if (!p12) {
        snprintf(why, wlen, "%s is not a PFX (PKCS#12) file", ds->service_cert_path);
        goto out;
    }
    if (!PKCS12_parse(p12, ds->password ? ds->password : "", &key, &cert, &ca) || !cert) {
        snprintf(why, wlen, "cannot open %s: wrong password, or no certificate in it",
                 ds->service_cert_path);
        goto out;
    }
    if (!key) {
        snprintf(why, wlen, "%s holds no private key", ds->service_cert_path);
        goto out;
    }
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    if (!*cn) {
        snprintf(why, wlen, "the certificate in %s has no common name (CN)", ds->service_cert_path);
        goto out;
    }
    ds->cert_subject = strdup(cn);
    size_t o = (size_t)snprintf(names, nlen, "%s", cn);
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && o < nlen; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS)
            o += (size_t)snprintf(names + o, nlen - o, ",%.*s", ASN1_STRING_length(g->d.dNSName),
                                  (const char *)ASN1_STRING_get0_data(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    rc = 0;
out:
    PKCS12_free(p12);
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(ca, X509_free);
    return rc;
}

static void ds_check_files(struct deploy_settings *ds, struct deploy_msgs *m, const char *key,
                           const char *list)
{
    const char *items[32];
    char *copy = NULL;
    size_t n = core_split_list(list, &copy, items, 32);
    for (size_t i = 0; i < n; i++)
        if (access(items[i], R_OK) != 0)
            ds_error(ds, m, key, "cannot read %s: %s", items[i], strerror(errno));
    free(copy);
}

static bool ds_addr_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    char *end;
    if (!colon || colon == s)
        return false;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] && !*end && port > 0 && port < 65536;
}

static void ds_check_names(struct deploy_settings *ds, struct deploy_msgs *m)
{
    char names[2048] = "", why[512];
    if (!ds_set(ds->service_cert_path)) {
        ds_error(ds, m, "service_cert_path",
                 "the service certificate (PFX) is required: its name is the service name");
        return;
    }
    if (ds_set(ds->service_cert_password) && ds_set(ds->service_cert_password_file))
        ds_error(ds, m, "service_cert_password_file",
                 "give the PFX password or a file holding it, not both");
    if (ds_set(ds->service_cert_password_file)) {
        ds->password = ds_read_secret(ds->service_cert_password_file, why, sizeof(why));
        if (!ds->password) {
            ds_error(ds, m, "service_cert_password_file", "%s", why);
            return;
        }
    } else if (ds->service_cert_password) {
        ds->password = strdup(ds->service_cert_password);
    }
    if (ds_read_cert(ds, names, sizeof(names), why, sizeof(why)) != 0) {
        ds_error(ds, m, "service_cert_path", "%s", why);
        return;
    }
    const char *cn = ds->cert_subject;
    bool wildcard = strncmp(cn, "*.", 2) == 0;
    char *name = NULL;
    if (ds_set(ds->service_name)) {
        /* must be a name the certificate holds (CN or a DNS name), case as in the CN */
        bool ok = false;
        char *copy = strdup(names), *save = NULL;
        for (char *p = strtok_r(copy, ",", &save); p && !ok; p = strtok_r(NULL, ",", &save))
            ok = deploy_name_matches(p, ds->service_name);
        free(copy);
        if (!ok) {
            ds_error(ds, m, "service_name", "\"%s\" is not a name of the certificate (%s)",
                     ds->service_name, names);
            return;
        }
        if (ds_set(ds->service_name_prefix))
            ds_error(ds, m, "service_name_prefix",
                     "give the service name or the prefix for the wildcard, not both");
        name = strdup(ds->service_name);
    } else if (wildcard) {
        if (!ds_set(ds->service_name_prefix)) {
            ds_error(ds, m, "service_name_prefix",
                     "the certificate is a wildcard (%s): give the prefix that replaces the *", cn);
            return;
        }
        if (asprintf(&name, "%s%s", ds->service_name_prefix, cn + 1) < 0)
            return;
    } else {
        if (ds_set(ds->service_name_prefix))
            ds_error(ds, m, "service_name_prefix",
                     "only for a wildcard certificate; this one is for %s", cn);
        name = strdup(cn);
    }
    free(ds->service_name);
    ds->service_name = name;
    size_t plen = strcspn(name, ".");
    ds->prefix = strndup(name, plen);
    const char *bad = deploy_check_prefix(ds->prefix);
    if (bad) {
        ds_error(ds, m, wildcard ? "service_name_prefix" : "service_name",
                 "the service name's first label \"%s\" %s", ds->prefix, bad);
        return;
    }
    ds->resource_prefix = strdup(ds->prefix);
    char sa[32];
    size_t o = 0;
    for (const char *p = ds->prefix; *p && o + 1 < sizeof(sa); p++) {
        ds->resource_prefix[p - ds->prefix] = (char)tolower((unsigned char)*p);
        if (*p != '-')
            sa[o++] = (char)tolower((unsigned char)*p);
    }
    sa[o] = '\0';
    ds->storage_account = strdup(sa);
    if ((bad = deploy_check_storage_account(sa)))
        ds_error(ds, m, wildcard ? "service_name_prefix" : "service_name",
                 "the storage account name \"%s\" made from the service name %s", sa, bad);
}

int deploy_settings_check(struct deploy_settings *ds, struct deploy_msgs *m)
{
    const char *bad;
    unsigned before = m->n;
    ds_check_names(ds, m);
    ds_check_files(ds, m, "ca_root_cert", ds->ca_root_certs);
    ds_check_files(ds, m, "ca_intermediate_cert", ds->ca_intermediate_certs);
    if (ds->traffic_warning_pct >= ds->traffic_critical_pct)
        ds_error(ds, m, "traffic_warning_pct",
                 "the warning threshold (%llu %%) must be below the critical one (%llu %%)",
                 (unsigned long long)ds->traffic_warning_pct,
                 (unsigned long long)ds->traffic_critical_pct);
    if (ds->storage_warning_pct >= ds->storage_critical_pct)
        ds_error(ds, m, "storage_warning_pct",
                 "the warning threshold (%llu %%) must be below the critical one (%llu %%)",
                 (unsigned long long)ds->storage_warning_pct,
                 (unsigned long long)ds->storage_critical_pct);
    if (ds->traffic_out_stop_service && !ds->enable_traffic_out)
        ds_error(ds, m, "traffic_out_stop_service",
                 "stopping at the critical threshold needs the traffic alert "
                 "(enable_traffic_out)");

    if (ds->provider == DEPLOY_PROVIDER_LOCAL) {
        if (!ds_addr_ok(ds->listen))
            ds_error(ds, m, "listen", "\"%s\" is not host:port", ds->listen);
    } else {
        static const char *const required[] = {
            "tenant_id",  "subscription_id",      "server_app_client_id", "region",
            "group_name", "admin_ssh_public_key", "gateway_package_url"};
        for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
            char **v = (char **)((char *)ds + ds_keys[ds_key(required[i])].offset);
            if (!ds_set(*v))
                ds_error(ds, m, required[i], "%s is required for an Azure deployment", required[i]);
        }
        if (ds_set(ds->subscription_id) && (bad = deploy_check_guid(ds->subscription_id)))
            ds_error(ds, m, "subscription_id", "\"%s\" %s", ds->subscription_id, bad);
        if (ds_set(ds->server_app_client_id) && (bad = deploy_check_guid(ds->server_app_client_id)))
            ds_error(ds, m, "server_app_client_id", "\"%s\" %s", ds->server_app_client_id, bad);
        if (ds_set(ds->tenant_id) && deploy_check_guid(ds->tenant_id) &&
            !strchr(ds->tenant_id, '.'))
            ds_error(ds, m, "tenant_id", "\"%s\" is neither a tenant id (GUID) nor a domain name",
                     ds->tenant_id);
        if (ds_set(ds->region) && (bad = deploy_check_region(ds->region)))
            ds_error(ds, m, "region", "\"%s\" %s", ds->region, bad);
        if (ds_set(ds->group_name) && (bad = deploy_check_group_name(ds->group_name)))
            ds_error(ds, m, "group_name", "\"%s\" %s", ds->group_name, bad);
        bool secret = ds_set(ds->server_app_secret) || ds_set(ds->server_app_secret_file);
        bool cert = ds_set(ds->server_app_cert_file) || ds_set(ds->server_app_key_file);
        char why[512];
        if (secret == cert)
            ds_error(ds, m, "server_app_secret",
                     "the server app signs in with a client secret or with a certificate "
                     "(server_app_cert_file + server_app_key_file): give exactly one");
        else if (ds_set(ds->server_app_secret) && ds_set(ds->server_app_secret_file))
            ds_error(ds, m, "server_app_secret_file", "give the secret or a file, not both");
        else if (ds_set(ds->server_app_secret_file) &&
                 !(ds->app_secret = ds_read_secret(ds->server_app_secret_file, why, sizeof(why))))
            ds_error(ds, m, "server_app_secret_file", "%s", why);
        else if (ds_set(ds->server_app_secret))
            ds->app_secret = strdup(ds->server_app_secret);
        if (cert && (!ds_set(ds->server_app_cert_file) || !ds_set(ds->server_app_key_file)))
            ds_error(ds, m, "server_app_cert_file",
                     "server_app_cert_file and server_app_key_file go together");
        for (int i = 0; i < 3; i++) {
            const char *k = i == 2 ? "blob_endpoint" : i ? "arm_endpoint" : "login_endpoint";
            const char *v = i == 2 ? ds->blob_endpoint : i ? ds->arm_endpoint : ds->login_endpoint;
            if (ds_set(v) && strncmp(v, "https://", 8) != 0 && strncmp(v, "http://127.", 11) &&
                strncmp(v, "http://[::1]", 12) && strncmp(v, "http://localhost", 16))
                ds_error(ds, m, k,
                         "\"%s\": use https:// (plain http only to a test endpoint on loopback)",
                         v);
        }
        if (ds_set(ds->gateway_package_url) && strncmp(ds->gateway_package_url, "https://", 8))
            ds_error(ds, m, "gateway_package_url", "\"%s\": the instances download it over https",
                     ds->gateway_package_url);
        if (ds_set(ds->region) && ds->prefix && !deploy_check_region(ds->region)) {
            const struct deploy_env *e = deploy_settings_env(ds);
            free(ds->deployment_name);
            if (asprintf(&ds->deployment_name, "%s.%s.%s", ds->resource_prefix, ds->region,
                         e->dns_suffix) < 0)
                ds->deployment_name = NULL;
        }
    }
    return m->n == before ? 0 : -1;
}

void deploy_settings_free(struct deploy_settings *ds)
{
    config_free(ds_keys, DS_NKEYS, ds);
    free(ds->settings_path);
    if (ds->password)
        OPENSSL_cleanse(ds->password, strlen(ds->password));
    free(ds->password);
    if (ds->app_secret)
        OPENSSL_cleanse(ds->app_secret, strlen(ds->app_secret));
    free(ds->app_secret);
    free(ds->cert_subject);
    free(ds->prefix);
    free(ds->resource_prefix);
    free(ds->storage_account);
    free(ds->deployment_name);
    for (size_t i = 0; i < ds->ngateway_extra; i++) {
        free(ds->gateway_extra[i].section);
        free(ds->gateway_extra[i].key);
        free(ds->gateway_extra[i].value);
    }
    free(ds->gateway_extra);
    memset(ds, 0, sizeof(*ds));
}

const struct deploy_env *deploy_settings_env(const struct deploy_settings *ds)
{
    return &deploy_envs[ds->environment < deploy_nenvs ? ds->environment : 0];
}

const char *deploy_settings_arm(const struct deploy_settings *ds)
{
    return ds_set(ds->arm_endpoint) ? ds->arm_endpoint : deploy_settings_env(ds)->arm;
}

const char *deploy_settings_login(const struct deploy_settings *ds)
{
    return ds_set(ds->login_endpoint) ? ds->login_endpoint : deploy_settings_env(ds)->login;
}

void deploy_settings_usage(FILE *f)
{
    const char *section = "";
    for (size_t i = 0; i < DS_NKEYS; i++) {
        const struct config_key *k = &ds_keys[i];
        char flag[64];
        snprintf(flag, sizeof(flag), "%s", k->name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        if (strcmp(section, k->section) != 0)
            fprintf(f, "    [%s]\n", section = k->section);
        if (deploy_settings_flag_is_switch(flag))
            fprintf(f, "      --%s\n", flag);
        else
            fprintf(f, "      --%s %s%s%s%s\n", flag,
                    k->type == CONFIG_ENUM   ? k->choices
                    : k->type == CONFIG_BOOL ? "true|false"
                    : k->type == CONFIG_UINT ? "N"
                                             : "VALUE",
                    k->default_value ? "  (default " : "", k->default_value ? k->default_value : "",
                    k->default_value ? ")" : "");
    }
}

/* ---- gateway.ini ---- */

struct ds_ini {
    struct deploy_kv kv[96];
    size_t n;
};

static void ds_ini_set(struct ds_ini *ini, const char *section, const char *key, const char *value)
{
    for (size_t i = 0; i < ini->n; i++)
        if (strcmp(ini->kv[i].section, section) == 0 && strcmp(ini->kv[i].key, key) == 0) {
            ini->kv[i].value = (char *)value;
            return;
        }
    if (ini->n < sizeof(ini->kv) / sizeof(ini->kv[0]))
        ini->kv[ini->n++] = (struct deploy_kv){(char *)section, (char *)key, (char *)value};
}

int deploy_gateway_ini(const struct deploy_settings *ds, const struct deploy_gw_place *pl, FILE *f)
{
    struct ds_ini ini = {.n = 0};
    char id[16], count[16], workers[16], await[32], trust[4096] = "";
    char quota[32], warn[16], crit[16];
    snprintf(id, sizeof(id), "%u", pl->instance_id);
    snprintf(count, sizeof(count), "%u", pl->instances);
    snprintf(workers, sizeof(workers), "%llu", (unsigned long long)ds->workers);
    snprintf(await, sizeof(await), "%llums", (unsigned long long)pl->await_tunnel);
    snprintf(quota, sizeof(quota), "%llug", (unsigned long long)ds->storage_quota_gb);
    snprintf(warn, sizeof(warn), "%llu", (unsigned long long)ds->storage_warning_pct);
    snprintf(crit, sizeof(crit), "%llu", (unsigned long long)ds->storage_critical_pct);
    snprintf(trust, sizeof(trust), "%s%s%s", ds_set(ds->ca_root_certs) ? ds->ca_root_certs : "",
             ds_set(ds->ca_root_certs) && ds_set(ds->ca_intermediate_certs) ? ", " : "",
             ds_set(ds->ca_intermediate_certs) ? ds->ca_intermediate_certs : "");
    const char *yes = "true", *no = "false";

    ds_ini_set(&ini, "gateway", "service_name", ds->service_name);
    ds_ini_set(&ini, "gateway", "instance_id", id);
    ds_ini_set(&ini, "gateway", "instances", count);
    ds_ini_set(&ini, "gateway", "await_tunnel", await);
    ds_ini_set(&ini, "gateway", "listen", pl->listen);
    ds_ini_set(&ini, "gateway", "workers", workers);
    ds_ini_set(&ini, "tls", "pfx_file", pl->pfx_file);
    ds_ini_set(&ini, "tls", "pfx_password_file", pl->pfx_password_file);
    ds_ini_set(&ini, "tls", "enforce_tls12", ds->enforce_protocol ? yes : no);
    if (*trust) {
        ds_ini_set(&ini, "auth", "trusted_certs", trust);
        ds_ini_set(&ini, "tunnel", "trusted_certs", trust);
    }
    ds_ini_set(&ini, "auth", "verify_revocation", ds->check_client_cert_revocation ? yes : no);
    /* the storage alert of `cmgctl content list` is the deployment's */
    ds_ini_set(&ini, "content", "enabled", ds->enable_cloud_dp_function ? yes : no);
    if (pl->content_folder)
        ds_ini_set(&ini, "content", "folder", pl->content_folder);
    if (pl->content_account) {
        /* the instances share the deployment's storage account; the key stays in its own file */
        ds_ini_set(&ini, "content", "store", "blob");
        ds_ini_set(&ini, "content", "environment", deploy_settings_env(ds)->name);
        ds_ini_set(&ini, "content", "account", pl->content_account);
        ds_ini_set(&ini, "content", "account_key_file", pl->content_key_file);
        ds_ini_set(&ini, "content", "container", DEPLOY_CONTENT_CONTAINER);
        if (ds_set(ds->blob_endpoint))
            ds_ini_set(&ini, "content", "blob_endpoint", ds->blob_endpoint);
    }
    ds_ini_set(&ini, "content", "storage_alert", quota);
    ds_ini_set(&ini, "content", "storage_warning", warn);
    ds_ini_set(&ini, "content", "storage_critical", crit);
    ds_ini_set(&ini, "tunnel", "listen", pl->tunnel_listen);
    ds_ini_set(&ini, "admin", "listen", pl->admin_listen);
    ds_ini_set(&ini, "log", "file", pl->log_file);
    for (size_t i = 0; i < ds->ngateway_extra; i++)
        ds_ini_set(&ini, ds->gateway_extra[i].section, ds->gateway_extra[i].key,
                   ds->gateway_extra[i].value);

    fprintf(f, "; %s instance %u of %u, written by cmgctl from the deployment's settings.\n",
            ds->service_name, pl->instance_id, pl->instances);
    for (size_t i = 0; i < ini.n; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ini.kv[j].section, ini.kv[i].section) == 0)
                first = false;
        if (!first)
            continue;
        fprintf(f, "\n[%s]\n", ini.kv[i].section);
        for (size_t j = i; j < ini.n; j++)
            if (strcmp(ini.kv[j].section, ini.kv[i].section) == 0)
                fprintf(f, "%s = %s\n", ini.kv[j].key, ini.kv[j].value);
    }
    return ferror(f) ? -1 : 0;
}

json_t *deploy_settings_json(const struct deploy_settings *ds)
{
    const struct deploy_vm_size *vm = &deploy_vm_sizes[ds->vm_size % deploy_nvm_sizes];
    json_t *o = json_pack(
        "{s:s, s:s?, s:s?, s:s, s:s, s:I, s:b, s:b, s:b, s:{s:b, s:I, s:I, s:I, s:b}, s:{s:b, "
        "s:I, s:I, s:I}}",
        "provider", ds->provider == DEPLOY_PROVIDER_AZURE ? "azure" : "local", "service_name",
        ds->service_name, "description", ds->description, "vm_size", vm->label, "vm_sku", vm->sku,
        "vm_instance_count", (json_int_t)ds->vm_instance_count, "check_client_cert_revocation",
        ds->check_client_cert_revocation, "enforce_protocol", ds->enforce_protocol,
        "enable_cloud_dp_function", ds->enable_cloud_dp_function, "traffic_alert", "enabled",
        ds->enable_traffic_out, "threshold_gb", (json_int_t)ds->traffic_out_gb, "warning_pct",
        (json_int_t)ds->traffic_warning_pct, "critical_pct", (json_int_t)ds->traffic_critical_pct,
        "stop_service", ds->traffic_out_stop_service, "storage_alert", "enabled",
        ds->enable_storage_quota, "threshold_gb", (json_int_t)ds->storage_quota_gb, "warning_pct",
        (json_int_t)ds->storage_warning_pct, "critical_pct", (json_int_t)ds->storage_critical_pct);
    if (o && ds->provider == DEPLOY_PROVIDER_AZURE) {
        json_object_set_new(o, "environment", json_string(deploy_settings_env(ds)->name));
        json_object_set_new(o, "subscription_id", json_string(ds->subscription_id));
        json_object_set_new(o, "region", json_string(ds->region));
        json_object_set_new(o, "group_name", json_string(ds->group_name));
        if (ds->deployment_name)
            json_object_set_new(o, "deployment_name", json_string(ds->deployment_name));
    }
    return o;
}
