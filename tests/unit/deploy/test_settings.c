/* The settings model: name rules (tables of good and bad names), flag and file values (counts,
 * VM sizes, alert thresholds), and the cross-checks that read the service certificate (wildcard
 * prefix, service name, derived resource names). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include "deploy.h"

/* ---- name rules ---- */

struct name_case {
    const char *name;
    bool ok;
};

static void check_table(const char *(*check)(const char *), const struct name_case *t, size_t n,
                        const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const char *why = check(t[i].name);
        if (t[i].ok)
            cr_assert_null(why, "%s \"%s\" refused: %s", what, t[i].name, why);
        else
            cr_assert_not_null(why, "%s \"%s\" accepted", what, t[i].name);
    }
}

#define TABLE(check, t) check_table(check, t, sizeof(t) / sizeof(t[0]), #check)

Test(names, prefix)
{
    static const struct name_case t[] = {
        {"cmg", true},
        {"a1-b2", true},
        {"Contoso-CMG1", true},
        {"abcdefghijklmnopqrstuvwx", true}, /* 24 */
        {"ab", false},
        {"abcdefghijklmnopqrstuvwxy", false}, /* 25 */
        {"1abc", false},
        {"-abc", false},
        {"abc-", false},
        {"a--b", false},
        {"ab_c", false},
        {"ab c", false},
        {"", false},
    };
    TABLE(deploy_check_prefix, t);
    cr_assert(strstr(deploy_check_prefix("a--b"), "hyphens"), "the message says why");
}

Test(names, storage_account)
{
    static const struct name_case t[] = {
        {"cmg01", true},   {"abc", true},  {"abcdefghijklmnopqrstuvwx", true},
        {"ab", false},     {"CMG", false}, {"abcdefghijklmnopqrstuvwxy", false},
        {"cmg-01", false}, {"", false},
    };
    TABLE(deploy_check_storage_account, t);
}

Test(names, group)
{
    char long90[91], long91[92];
    memset(long90, 'g', 90);
    long90[90] = '\0';
    memset(long91, 'g', 91);
    long91[91] = '\0';
    const struct name_case t[] = {
        {"rg", true},    {"rg-cmg_(x).1", true}, {long90, true}, {"", false},
        {long91, false}, {"rg.", false},         {"rg!", false}, {"rg cmg", false},
    };
    TABLE(deploy_check_group_name, t);
}

Test(names, region_and_guid)
{
    static const struct name_case regions[] = {
        {"eastus", true}, {"usgovvirginia", true}, {"westeurope2", true}, {"East US", false},
        {"e", false},     {"east-us", false},
    };
    TABLE(deploy_check_region, regions);
    static const struct name_case guids[] = {
        {"00000000-1111-2222-3333-444444444444", true},
        {"ABCDEF01-abcd-ABCD-0123-456789abcdef", true},
        {"00000000-1111-2222-3333-44444444444", false},
        {"00000000111122223333444444444444", false},
        {"0000000g-1111-2222-3333-444444444444", false},
        {"00000000-1111-2222-3333_444444444444", false},
    };
    TABLE(deploy_check_guid, guids);
}

Test(names, certificate_names)
{
    cr_assert(deploy_name_matches("*.contoso.com", "cmg.contoso.com"));
    cr_assert(deploy_name_matches("*.contoso.com", "CMG.Contoso.com"));
    cr_assert_not(deploy_name_matches("*.contoso.com", "a.b.contoso.com"), "one label only");
    cr_assert_not(deploy_name_matches("*.contoso.com", "contoso.com"));
    cr_assert_not(deploy_name_matches("*.contoso.com", ".contoso.com"));
    cr_assert(deploy_name_matches("gw.contoso.com", "GW.contoso.com"));
    cr_assert_not(deploy_name_matches("gw.contoso.com", "gw.contoso.co"));
}

/* ---- values ---- */

static struct deploy_settings ds;
static struct deploy_msgs m;
static char dir[64];

static void setup(void)
{
    memset(&m, 0, sizeof(m));
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    snprintf(dir, sizeof(dir), "/tmp/cmg-test-settings-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    deploy_settings_free(&ds);
    deploy_msgs_clear(&m);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(values, .init = setup, .fini = teardown);
TestSuite(check, .init = setup, .fini = teardown);

static bool msgs_have(const char *needle)
{
    for (unsigned i = 0; i < m.n; i++)
        if (strstr(m.text[i], needle))
            return true;
    return false;
}

static char *msgs_all(void)
{
    static char buf[8192];
    size_t o = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < m.n && o < sizeof(buf); i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "[%s] ", m.text[i]);
    return buf;
}

Test(values, defaults)
{
    cr_assert_eq(ds.provider, DEPLOY_PROVIDER_LOCAL);
    cr_assert_eq(ds.vm_instance_count, 1);
    cr_assert_str_eq(deploy_vm_sizes[ds.vm_size].sku, "Standard_A2_v2");
    cr_assert(ds.check_client_cert_revocation);
    cr_assert(ds.enforce_protocol);
    cr_assert(ds.enable_cloud_dp_function);
    cr_assert_eq(ds.traffic_out_gb, 10000);
    cr_assert_eq(ds.traffic_warning_pct, 50);
    cr_assert_eq(ds.traffic_critical_pct, 90);
    cr_assert_eq(ds.storage_quota_gb, 2000);
    cr_assert_eq(ds.await_tunnel, 60000);
    cr_assert_str_eq(deploy_settings_env(&ds)->name, "AzurePublicCloud");
    cr_assert_str_eq(deploy_settings_arm(&ds), "https://management.azure.com");
}

Test(values, instance_counts)
{
    const struct {
        const char *v;
        int rc;
        unsigned long long want;
    } t[] = {{"0", -1, 0},  {"1", 1, 1},   {"16", 1, 16}, {"17", -1, 0},
             {"-1", -1, 0}, {"4x", -1, 0}, {"", -1, 0}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        deploy_msgs_clear(&m);
        ds.vm_instance_count = 1;
        int rc = deploy_settings_set_flag(&ds, "vm-instance-count", t[i].v, &m);
        cr_assert_eq(rc, t[i].rc, "count \"%s\": %d", t[i].v, rc);
        if (rc == 1) {
            cr_assert_eq(ds.vm_instance_count, t[i].want);
        } else {
            cr_assert_gt(m.n, 0);
            cr_assert(strncmp(m.text[0], "--vm-instance-count", 19) == 0, "%s", m.text[0]);
        }
    }
}

Test(values, vm_sizes)
{
    const struct {
        const char *v, *sku;
    } t[] = {{"Lab", "Standard_B2s"},
             {"Standard", "Standard_A2_v2"},
             {"Large", "Standard_A4_v2"},
             {"Small_v6", "Standard_D2ads_v6"},
             {"Medium_v6", "Standard_D4ads_v6"},
             {"Large_v6", "Standard_D8ads_v6"}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cr_assert_eq(deploy_settings_set_flag(&ds, "vm-size", t[i].v, &m), 1, "%s", t[i].v);
        cr_assert_str_eq(deploy_vm_sizes[ds.vm_size].sku, t[i].sku);
    }
    cr_assert_eq(deploy_settings_set_flag(&ds, "vm-size", "Huge", &m), -1);
    cr_assert(msgs_have("--vm-size"), "%s", msgs_all());
    cr_assert_eq(deploy_settings_set_flag(&ds, "no-such-flag", "1", &m), 0, "not a setting");
}

Test(values, settings_file_errors_name_file_line_key)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/settings.ini", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("[service]\nvm_size = Standard\nvm_instance_count = 17\n[alerts]\nbogus = 1\n", f);
    fclose(f);
    deploy_settings_free(&ds);
    cr_assert_neq(deploy_settings_load(&ds, path, &m), 0);
    char want[200];
    snprintf(want, sizeof(want), "%s:3: service.vm_instance_count", path);
    cr_assert(msgs_have(want), "%s", msgs_all());
    snprintf(want, sizeof(want), "%s:5:", path);
    cr_assert(msgs_have(want), "%s", msgs_all());
}

Test(values, gateway_settings)
{
    cr_assert_eq(deploy_settings_add_gateway(&ds, "auth.crl_fetch=false", "--gateway-setting", &m),
                 0);
    cr_assert_eq(ds.ngateway_extra, 1);
    cr_assert_str_eq(ds.gateway_extra[0].section, "auth");
    const char *bad[] = {"nodot=1", ".key=1", "section.=1", "section.key", "a=b.c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(deploy_settings_add_gateway(&ds, bad[i], "--gateway-setting", &m), -1, "%s",
                     bad[i]);
}

/* ---- cross-checks with a certificate ---- */

/* Writes a self-signed PFX for cn (and one DNS name, or none) protected by "pw". */
static void make_pfx(const char *path, const char *cn, const char *san)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    cr_assert(key && x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, key);
    if (san) {
        char v[256];
        snprintf(v, sizeof(v), "DNS:%s", san);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, v);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    PKCS12 *p12 = PKCS12_create("pw", NULL, key, x, NULL, 0, 0, 0, 0, 0);
    cr_assert_not_null(p12);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(i2d_PKCS12_fp(f, p12), 1);
    fclose(f);
    PKCS12_free(p12);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void use_cert(const char *cn, const char *san)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/service.pfx", dir);
    make_pfx(path, cn, san);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-cert-path", path, &m), 1);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-cert-password", "pw", &m), 1);
}

Test(check, plain_certificate_names_everything)
{
    use_cert("My-GW1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "%s", msgs_all());
    cr_assert_str_eq(ds.service_name, "My-GW1.contoso.com");
    cr_assert_str_eq(ds.prefix, "My-GW1");
    cr_assert_str_eq(ds.resource_prefix, "my-gw1");
    cr_assert_str_eq(ds.storage_account, "mygw1");
}

Test(check, wildcard_needs_its_prefix)
{
    use_cert("*.contoso.com", NULL);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("wildcard"), "%s", msgs_all());
    cr_assert(msgs_have("--service-name-prefix") || msgs_have("service_name_prefix"), "%s",
              msgs_all());
}

Test(check, wildcard_with_prefix)
{
    use_cert("*.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-name-prefix", "cmg7", &m), 1);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "%s", msgs_all());
    cr_assert_str_eq(ds.service_name, "cmg7.contoso.com");
    cr_assert_str_eq(ds.storage_account, "cmg7");
}

Test(check, wildcard_with_bad_prefixes)
{
    const char *bad[] = {"x", "a--b", "9gw", "gw-", "way-too-long-a-prefix-for-it"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        deploy_settings_free(&ds);
        deploy_msgs_clear(&m);
        cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
        use_cert("*.contoso.com", NULL);
        cr_assert_eq(deploy_settings_set_flag(&ds, "service-name-prefix", bad[i], &m), 1);
        cr_assert_neq(deploy_settings_check(&ds, &m), 0, "prefix \"%s\" accepted", bad[i]);
        cr_assert(msgs_have("--service-name-prefix: the service name's first label"), "%s: %s",
                  bad[i], msgs_all());
    }
}

Test(check, prefix_only_for_wildcards)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-name-prefix", "cmg", &m), 1);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("only for a wildcard"), "%s", msgs_all());
}

Test(check, service_name_must_be_the_certificates)
{
    use_cert("gw1.contoso.com", "gw2.contoso.com");
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-name", "gw2.contoso.com", &m), 1);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "a DNS name of the certificate: %s",
                 msgs_all());
    deploy_settings_free(&ds);
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-name", "other.contoso.com", &m), 1);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("is not a name of the certificate"), "%s", msgs_all());
}

Test(check, wrong_password_and_missing_file)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "service-cert-password", "nope", &m), 1);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("wrong password"), "%s", msgs_all());
    deploy_settings_free(&ds);
    deploy_msgs_clear(&m);
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("the service certificate (PFX) is required"), "%s", msgs_all());
}

Test(check, alert_thresholds)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "storage-warning-pct", "90", &m), 1);
    cr_assert_eq(deploy_settings_set_flag(&ds, "traffic-critical-pct", "40", &m), 1);
    cr_assert_eq(deploy_settings_set_flag(&ds, "enable-traffic-out", "false", &m), 1);
    cr_assert_eq(deploy_settings_set_flag(&ds, "traffic-out-stop-service", "true", &m), 1);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    cr_assert(msgs_have("--storage-warning-pct: the warning threshold (90 %) must be below the "
                        "critical one (90 %)"),
              "%s", msgs_all());
    cr_assert(msgs_have("--traffic-warning-pct"), "%s", msgs_all());
    cr_assert(msgs_have("--traffic-out-stop-service"), "%s", msgs_all());
    cr_assert_eq(deploy_settings_set_flag(&ds, "storage-critical-pct", "101", &m), -1);
    cr_assert_eq(deploy_settings_set_flag(&ds, "storage-quota-gb", "0", &m), -1);
}

Test(check, azure_requirements)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_set_flag(&ds, "provider", "azure", &m), 1);
    cr_assert_neq(deploy_settings_check(&ds, &m), 0);
    const char *required[] = {
        "tenant-id",  "subscription-id",      "server-app-client-id", "region",
        "group-name", "admin-ssh-public-key", "gateway-package-url"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        cr_assert(msgs_have(required[i]), "%s is named: %s", required[i], msgs_all());
    cr_assert(msgs_have("client secret or with a certificate"), "%s", msgs_all());
}

static const char *azure_flags[][2] = {
    {"provider", "azure"},
    {"tenant-id", "contoso.onmicrosoft.com"},
    {"subscription-id", "00000000-1111-2222-3333-444444444444"},
    {"server-app-client-id", "00000000-1111-2222-3333-555555555555"},
    {"server-app-secret", "s"},
    {"region", "westeurope"},
    {"group-name", "cmg-rg"},
    {"admin-ssh-public-key", "ssh-ed25519 AAAA"},
    {"gateway-package-url", "https://example.test/cmg.tgz"},
    {"arm-endpoint", "http://127.0.0.1:8080"},
    {"blob-endpoint", "http://127.0.0.1:10000/gw1"}};

/* Fresh settings for a good Azure deployment, but flag = value when flag is given. */
static void azure_settings(const char *flag, const char *value)
{
    deploy_settings_free(&ds);
    deploy_msgs_clear(&m);
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    use_cert("gw1.contoso.com", NULL);
    for (size_t i = 0; i < sizeof(azure_flags) / sizeof(azure_flags[0]); i++) {
        bool mine = flag && strcmp(flag, azure_flags[i][0]) == 0;
        cr_assert_eq(
            deploy_settings_set_flag(&ds, azure_flags[i][0], mine ? value : azure_flags[i][1], &m),
            1, "%s", azure_flags[i][0]);
    }
}

Test(check, azure_values)
{
    azure_settings(NULL, NULL);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "%s", msgs_all());
    cr_assert_str_eq(ds.deployment_name, "gw1.westeurope.cloudapp.azure.com");
    cr_assert_str_eq(deploy_settings_arm(&ds), "http://127.0.0.1:8080");

    const char *bad[][3] = {{"subscription-id", "not-a-guid", "is not a GUID"},
                            {"region", "West Europe", "lowercase"},
                            {"group-name", "rg.", "must not end with a period"},
                            {"arm-endpoint", "http://arm.example.test", "use https://"},
                            {"blob-endpoint", "http://blob.example.test/gw1", "use https://"},
                            {"gateway-package-url", "http://example.test/x", "over https"},
                            {"tenant-id", "contoso", "neither a tenant id"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        azure_settings(bad[i][0], bad[i][1]);
        cr_assert_neq(deploy_settings_check(&ds, &m), 0, "%s %s accepted", bad[i][0], bad[i][1]);
        cr_assert(msgs_have(bad[i][2]), "%s: %s", bad[i][0], msgs_all());
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s: ", bad[i][0]);
        cr_assert(msgs_have(flag), "the message names the flag: %s", msgs_all());
    }
}

Test(check, gateway_ini_of_an_instance)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "%s", msgs_all());
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct deploy_gw_place pl = {.instance_id = 2,
                                 .instances = 4,
                                 .await_tunnel = 1500,
                                 .listen = "127.0.0.1:8443",
                                 .tunnel_listen = "127.0.0.1:10126",
                                 .admin_listen = "127.0.0.1:9182",
                                 .pfx_file = "service.pfx",
                                 .pfx_password_file = "pw.txt",
                                 .log_file = "gw.log"};
    cr_assert_eq(deploy_gateway_ini(&ds, &pl, f), 0);
    fclose(f);
    const char *want[] = {"[gateway]\n",     "instance_id = 2\n",
                          "instances = 4\n", "await_tunnel = 1500ms\n",
                          "[tunnel]\n",      "listen = 127.0.0.1:10126\n"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert(strstr(text, want[i]), "%s missing in:\n%s", want[i], text);
    free(text);
}

Test(check, gateway_ini_blob_store)
{
    use_cert("gw1.contoso.com", NULL);
    cr_assert_eq(deploy_settings_check(&ds, &m), 0, "%s", msgs_all());
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct deploy_gw_place pl = {.instance_id = 0,
                                 .instances = 2,
                                 .listen = "0.0.0.0:443",
                                 .tunnel_listen = "0.0.0.0:10124",
                                 .admin_listen = "127.0.0.1:9180",
                                 .pfx_file = "service.pfx",
                                 .pfx_password_file = "pw.txt",
                                 .log_file = "gw.log",
                                 .content_account = "gw1",
                                 .content_key_file = "storage-key.txt"};
    cr_assert_eq(deploy_gateway_ini(&ds, &pl, f), 0);
    fclose(f);
    const char *content = strstr(text, "[content]\n");
    cr_assert_not_null(content, "%s", text);
    const char *want[] = {"store = blob\n",        "environment = AzurePublicCloud\n",
                          "account = gw1\n",       "account_key_file = storage-key.txt\n",
                          "container = content\n", "storage_alert = 2000g\n"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert(strstr(content, want[i]), "%s missing in:\n%s", want[i], text);
    cr_assert(strstr(content, "folder =") == NULL, "%s", text);
    free(text);

    /* a [gateway.content] setting of the operator's still wins */
    struct deploy_msgs m2 = {0};
    cr_assert_eq(deploy_settings_add_gateway(&ds, "content.container=other", "test", &m2), 0);
    text = NULL;
    f = open_memstream(&text, &len);
    cr_assert_eq(deploy_gateway_ini(&ds, &pl, f), 0);
    fclose(f);
    cr_assert(strstr(text, "container = other\n"), "%s", text);
    cr_assert(strstr(text, "container = content\n") == NULL, "%s", text);
    free(text);
}
