/* Azure Resource Manager without I/O: the requests of each verb (URLs, bodies, order), the
 * error bodies, and the long-running operation poller (Azure-AsyncOperation, then Location,
 * then the resource's provisioningState; Retry-After honoured; 429 and 5xx retried). */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "deploy.h"

void deploy_req_clear(struct deploy_req *r)
{
    free(r->url);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

void deploy_names_init(struct deploy_names *n, const struct deploy_settings *ds)
{
    const char *p = ds->resource_prefix ? ds->resource_prefix : "cmg";
    snprintf(n->rg_id, sizeof(n->rg_id), "/subscriptions/%s/resourceGroups/%s",
             ds->subscription_id ? ds->subscription_id : "", ds->group_name ? ds->group_name : "");
    snprintf(n->nsg, sizeof(n->nsg), "%s-nsg", p);
    snprintf(n->vnet, sizeof(n->vnet), "%s-vnet", p);
    snprintf(n->pip, sizeof(n->pip), "%s-pip", p);
    snprintf(n->lb, sizeof(n->lb), "%s-lb", p);
    snprintf(n->vmss, sizeof(n->vmss), "%s-vmss", p);
    snprintf(n->storage, sizeof(n->storage), "%s", ds->storage_account ? ds->storage_account : p);
}

/* A request; body is taken (decref'd), what is copied into a static per-call buffer pool. */
static void arm_req(struct deploy_req *r, const char *what, const char *verb, json_t *body,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void arm_req(struct deploy_req *r, const char *what, const char *verb, json_t *body,
                    const char *fmt, ...)
{
    va_list ap;
    memset(r, 0, sizeof(*r));
    r->what = what;
    r->verb = verb;
    va_start(ap, fmt);
    if (vasprintf(&r->url, fmt, ap) < 0)
        r->url = NULL;
    va_end(ap);
    if (body) {
        r->body = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(body);
    }
}

static json_t *arm_tags(const struct deploy_settings *ds)
{
    return json_pack("{s:s, s:s}", "cmg-service", ds->service_name ? ds->service_name : "",
                     "cmg-created-by", DEPLOY_TAG_OWNER);
}

/* {"id": "<group>/providers/Microsoft.Network/<kind>/<name><child>"} */
static json_t *arm_id(const struct deploy_names *n, const char *kind, const char *name,
                      const char *child)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s/providers/Microsoft.Network/%s/%s%s", n->rg_id, kind, name,
             child);
    return json_pack("{s:s}", "id", buf);
}

#define NET "/providers/Microsoft.Network/"
#define ARM_RG "%s/subscriptions/%s/resourcegroups/%s"

/* What each step is called in progress lines and the log. */
static char arm_what[18][128];

void deploy_arm_storage_keys(const struct deploy_settings *ds, struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    snprintf(arm_what[16], sizeof(arm_what[16]), "keys of storage account %s", n.storage);
    arm_req(r, arm_what[16], "POST", NULL,
            "%s%s/providers/Microsoft.Storage/storageAccounts/%s/listKeys"
            "?api-version=" DEPLOY_API_STORAGE,
            deploy_settings_arm(ds), n.rg_id, n.storage);
    r->secret_answer = true;
}

size_t deploy_arm_create_plan(const struct deploy_settings *ds, const char *install_script,
                              struct deploy_req *reqs, size_t max)
{
    const char *arm = deploy_settings_arm(ds), *loc = ds->region;
    struct deploy_names n;
    size_t k = 0;
    deploy_names_init(&n, ds);
    if (max < 10)
        return 0;

    if (!ds->is_using_existing_group) {
        snprintf(arm_what[0], sizeof(arm_what[0]), "resource group %s", ds->group_name);
        arm_req(&reqs[k++], arm_what[0], "PUT",
                json_pack("{s:s, s:o}", "location", loc, "tags", arm_tags(ds)),
                ARM_RG "?api-version=" DEPLOY_API_RESOURCES, arm, ds->subscription_id,
                ds->group_name);
    }
    snprintf(arm_what[1], sizeof(arm_what[1]), "storage account %s", n.storage);
    arm_req(&reqs[k++], arm_what[1], "PUT",
            json_pack("{s:s, s:{s:s}, s:s, s:o, s:{s:s, s:b, s:b}}", "location", loc, "sku", "name",
                      "Standard_LRS", "kind", "StorageV2", "tags", arm_tags(ds), "properties",
                      "minimumTlsVersion", ds->enforce_protocol ? "TLS1_2" : "TLS1_0",
                      "supportsHttpsTrafficOnly", 1, "allowBlobPublicAccess", 0),
            "%s%s/providers/Microsoft.Storage/storageAccounts/%s?api-version=" DEPLOY_API_STORAGE,
            arm, n.rg_id, n.storage);
    /* the instances' content store is this account: its key goes into their setup */
    if (ds->enable_cloud_dp_function)
        deploy_arm_storage_keys(ds, &reqs[k++]);
    if (ds->enable_cloud_dp_function) {
        snprintf(arm_what[2], sizeof(arm_what[2]), "blob container %s/content", n.storage);
        arm_req(&reqs[k++], arm_what[2], "PUT",
                json_pack("{s:{s:s}}", "properties", "publicAccess", "None"),
                "%s%s/providers/Microsoft.Storage/storageAccounts/%s/blobServices/default/"
                "containers/content?api-version=" DEPLOY_API_STORAGE,
                arm, n.rg_id, n.storage);
    }
    snprintf(arm_what[3], sizeof(arm_what[3]), "table %s/cmgcounters", n.storage);
    arm_req(&reqs[k++], arm_what[3], "PUT", json_object(),
            "%s%s/providers/Microsoft.Storage/storageAccounts/%s/tableServices/default/tables/"
            "cmgcounters?api-version=" DEPLOY_API_STORAGE,
            arm, n.rg_id, n.storage);

    char ports[32];
    snprintf(ports, sizeof(ports), "%d-%d", DEPLOY_TUNNEL_PORT_BASE,
             DEPLOY_TUNNEL_PORT_BASE + DEPLOY_MAX_INSTANCES - 1);
    snprintf(arm_what[4], sizeof(arm_what[4]), "network security group %s", n.nsg);
    arm_req(&reqs[k++], arm_what[4], "PUT",
            json_pack("{s:s, s:o, s:{s:[{s:s, s:{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s}}, "
                      "{s:s, s:{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s}}]}}",
                      "location", loc, "tags", arm_tags(ds), "properties", "securityRules", "name",
                      "allow-clients", "properties", "priority", 100, "direction", "Inbound",
                      "access", "Allow", "protocol", "Tcp", "sourceAddressPrefix", "Internet",
                      "sourcePortRange", "*", "destinationAddressPrefix", "*",
                      "destinationPortRange", "443", "name", "allow-connection-points",
                      "properties", "priority", 110, "direction", "Inbound", "access", "Allow",
                      "protocol", "Tcp", "sourceAddressPrefix", "Internet", "sourcePortRange", "*",
                      "destinationAddressPrefix", "*", "destinationPortRange", ports),
            "%s%s" NET "networkSecurityGroups/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id,
            n.nsg);

    snprintf(arm_what[5], sizeof(arm_what[5]), "virtual network %s", n.vnet);
    arm_req(&reqs[k++], arm_what[5], "PUT",
            json_pack("{s:s, s:o, s:{s:{s:[s]}, s:[{s:s, s:{s:s, s:o}}]}}", "location", loc, "tags",
                      arm_tags(ds), "properties", "addressSpace", "addressPrefixes", "10.10.0.0/16",
                      "subnets", "name", "default", "properties", "addressPrefix", "10.10.1.0/24",
                      "networkSecurityGroup", arm_id(&n, "networkSecurityGroups", n.nsg, "")),
            "%s%s" NET "virtualNetworks/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.vnet);

    snprintf(arm_what[6], sizeof(arm_what[6]), "public IP address %s (%s)", n.pip,
             ds->deployment_name ? ds->deployment_name : "");
    arm_req(&reqs[k++], arm_what[6], "PUT",
            json_pack("{s:s, s:o, s:{s:s, s:s}, s:{s:s, s:s, s:{s:s}}}", "location", loc, "tags",
                      arm_tags(ds), "sku", "name", "Standard", "tier", "Regional", "properties",
                      "publicIPAllocationMethod", "Static", "publicIPAddressVersion", "IPv4",
                      "dnsSettings", "domainNameLabel", ds->resource_prefix),
            "%s%s" NET "publicIPAddresses/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.pip);

    json_t *fe = arm_id(&n, "loadBalancers", n.lb, "/frontendIPConfigurations/fe");
    json_t *pool = arm_id(&n, "loadBalancers", n.lb, "/backendAddressPools/bepool");
    snprintf(arm_what[7], sizeof(arm_what[7]), "load balancer %s", n.lb);
    arm_req(
        &reqs[k++], arm_what[7], "PUT",
        json_pack(
            "{s:s, s:o, s:{s:s, s:s}, s:{s:[{s:s, s:{s:o}}], s:[{s:s}], s:[{s:s, s:{s:s, s:i, "
            "s:i, s:i}}], s:[{s:s, s:{s:O, s:O, s:o, s:s, s:i, s:i, s:b}}], s:[{s:s, s:{s:O, "
            "s:s, s:i, s:i, s:i}}], s:[{s:s, s:{s:[O], s:O, s:s}}]}}",
            "location", loc, "tags", arm_tags(ds), "sku", "name", "Standard", "tier", "Regional",
            "properties", "frontendIPConfigurations", "name", "fe", "properties", "publicIPAddress",
            arm_id(&n, "publicIPAddresses", n.pip, ""), "backendAddressPools", "name", "bepool",
            "probes", "name", "p443", "properties", "protocol", "Tcp", "port", 443,
            "intervalInSeconds", 5, "probeThreshold", 2, "loadBalancingRules", "name", "clients",
            "properties", "frontendIPConfiguration", fe, "backendAddressPool", pool, "probe",
            arm_id(&n, "loadBalancers", n.lb, "/probes/p443"), "protocol", "Tcp", "frontendPort",
            443, "backendPort", 443, "disableOutboundSnat", 1, "inboundNatPools", "name", "tunnels",
            "properties", "frontendIPConfiguration", fe, "protocol", "Tcp",
            "frontendPortRangeStart", DEPLOY_TUNNEL_PORT_BASE, "frontendPortRangeEnd",
            DEPLOY_TUNNEL_PORT_BASE + DEPLOY_MAX_INSTANCES - 1, "backendPort",
            DEPLOY_TUNNEL_PORT_BASE, "outboundRules", "name", "egress", "properties",
            "frontendIPConfigurations", fe, "backendAddressPool", pool, "protocol", "All"),
        "%s%s" NET "loadBalancers/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.lb);
    json_decref(fe);
    json_decref(pool);

    if (install_script)
        deploy_arm_vmss_put(ds, install_script, &reqs[k++]);
    return k;
}

void deploy_arm_vmss_put(const struct deploy_settings *ds, const char *install_script,
                         struct deploy_req *r)
{
    const char *arm = deploy_settings_arm(ds), *loc = ds->region;
    const struct deploy_vm_size *vm = &deploy_vm_sizes[ds->vm_size % deploy_nvm_sizes];
    struct deploy_names n;
    deploy_names_init(&n, ds);
    /* The instances' setup travels in the extension's protected settings (encrypted, never
     * returned by ARM): it holds the service certificate, its password and the storage
     * account's key. */
    size_t slen = strlen(install_script);
    char *b64 = malloc(4 * ((slen + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)install_script, (int)slen);
    snprintf(arm_what[8], sizeof(arm_what[8]), "scale set %s (%s x %llu)", n.vmss, vm->sku,
             (unsigned long long)ds->vm_instance_count);
    json_t *prof = json_pack(
        "{s:{s:s, s:s, s:{s:b, s:{s:[{s:s, s:s}]}}}, s:{s:{s:s, s:s, s:s, s:s}, s:{s:s, s:s, "
        "s:{s:s}}}, s:{s:[{s:s, s:{s:b, s:o, s:[{s:s, s:{s:o, s:[o], s:[o]}}]}}]}, s:{s:[{s:s, "
        "s:{s:s, s:s, s:s, s:b, s:{s:s}}}]}}",
        "osProfile", "computerNamePrefix", "cmg", "adminUsername", "cmgadmin", "linuxConfiguration",
        "disablePasswordAuthentication", 1, "ssh", "publicKeys", "path",
        "/home/cmgadmin/.ssh/authorized_keys", "keyData",
        ds->admin_ssh_public_key ? ds->admin_ssh_public_key : "", "storageProfile",
        "imageReference", "publisher", "Canonical", "offer", "ubuntu-24_04-lts", "sku",
        vm->gen1_only ? "server-gen1" : "server", "version", "latest", "osDisk", "createOption",
        "FromImage", "caching", "ReadWrite", "managedDisk", "storageAccountType", "Standard_LRS",
        "networkProfile", "networkInterfaceConfigurations", "name", "nic", "properties", "primary",
        1, "networkSecurityGroup", arm_id(&n, "networkSecurityGroups", n.nsg, ""),
        "ipConfigurations", "name", "ipcfg", "properties", "subnet",
        arm_id(&n, "virtualNetworks", n.vnet, "/subnets/default"),
        "loadBalancerBackendAddressPools",
        arm_id(&n, "loadBalancers", n.lb, "/backendAddressPools/bepool"),
        "loadBalancerInboundNatPools",
        arm_id(&n, "loadBalancers", n.lb, "/inboundNatPools/tunnels"), "extensionProfile",
        "extensions", "name", "cmg-gateway", "properties", "publisher",
        "Microsoft.Azure.Extensions", "type", "CustomScript", "typeHandlerVersion", "2.1",
        "autoUpgradeMinorVersion", 1, "protectedSettings", "script", b64);
    free(b64);
    arm_req(r, arm_what[8], "PUT",
            json_pack("{s:s, s:o, s:{s:s, s:s, s:I}, s:{s:s, s:b, s:b, s:{s:s}, s:o}}", "location",
                      loc, "tags", arm_tags(ds), "sku", "name", vm->sku, "tier", "Standard",
                      "capacity", (json_int_t)ds->vm_instance_count, "properties",
                      "orchestrationMode", "Uniform", "overprovision", 0, "singlePlacementGroup", 1,
                      "upgradePolicy", "mode", "Manual", "virtualMachineProfile", prof),
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/"
            "%s?api-version=" DEPLOY_API_COMPUTE,
            arm, n.rg_id, n.vmss);
    r->has_secret = true;
}

size_t deploy_arm_delete_plan(const struct deploy_settings *ds, bool rg_created,
                              struct deploy_req *reqs, size_t max)
{
    const char *arm = deploy_settings_arm(ds);
    struct deploy_names n;
    size_t k = 0;
    deploy_names_init(&n, ds);
    if (max < 7)
        return 0;
    snprintf(arm_what[9], sizeof(arm_what[9]), "scale set %s", n.vmss);
    arm_req(&reqs[k++], arm_what[9], "DELETE", NULL,
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/"
            "%s?api-version=" DEPLOY_API_COMPUTE,
            arm, n.rg_id, n.vmss);
    snprintf(arm_what[10], sizeof(arm_what[10]), "load balancer %s", n.lb);
    arm_req(&reqs[k++], arm_what[10], "DELETE", NULL,
            "%s%s" NET "loadBalancers/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.lb);
    snprintf(arm_what[11], sizeof(arm_what[11]), "public IP address %s", n.pip);
    arm_req(&reqs[k++], arm_what[11], "DELETE", NULL,
            "%s%s" NET "publicIPAddresses/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.pip);
    snprintf(arm_what[12], sizeof(arm_what[12]), "virtual network %s", n.vnet);
    arm_req(&reqs[k++], arm_what[12], "DELETE", NULL,
            "%s%s" NET "virtualNetworks/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id, n.vnet);
    snprintf(arm_what[13], sizeof(arm_what[13]), "network security group %s", n.nsg);
    arm_req(&reqs[k++], arm_what[13], "DELETE", NULL,
            "%s%s" NET "networkSecurityGroups/%s?api-version=" DEPLOY_API_NETWORK, arm, n.rg_id,
            n.nsg);
    snprintf(arm_what[14], sizeof(arm_what[14]), "storage account %s", n.storage);
    arm_req(&reqs[k++], arm_what[14], "DELETE", NULL,
            "%s%s/providers/Microsoft.Storage/storageAccounts/%s?api-version=" DEPLOY_API_STORAGE,
            arm, n.rg_id, n.storage);
    if (rg_created) {
        snprintf(arm_what[15], sizeof(arm_what[15]), "resource group %s", ds->group_name);
        arm_req(&reqs[k++], arm_what[15], "DELETE", NULL,
                ARM_RG "?api-version=" DEPLOY_API_RESOURCES, arm, ds->subscription_id,
                ds->group_name);
    }
    for (size_t i = 0; i < k; i++)
        reqs[i].missing_ok = true;
    return k;
}

void deploy_arm_rg_get(const struct deploy_settings *ds, struct deploy_req *r)
{
    arm_req(r, "resource group", "GET", NULL, ARM_RG "?api-version=" DEPLOY_API_RESOURCES,
            deploy_settings_arm(ds), ds->subscription_id, ds->group_name);
    r->missing_ok = true;
}

void deploy_arm_rg_resources(const struct deploy_settings *ds, struct deploy_req *r)
{
    arm_req(r, "resources left in the group", "GET", NULL,
            ARM_RG "/resources?api-version=" DEPLOY_API_RESOURCES, deploy_settings_arm(ds),
            ds->subscription_id, ds->group_name);
}

void deploy_arm_scale(const struct deploy_settings *ds, unsigned count, struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    arm_req(r, "scale set capacity", "PATCH", json_pack("{s:{s:i}}", "sku", "capacity", count),
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/"
            "%s?api-version=" DEPLOY_API_COMPUTE,
            deploy_settings_arm(ds), n.rg_id, n.vmss);
}

void deploy_arm_vmss_action(const struct deploy_settings *ds, const char *action,
                            struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    arm_req(r, strcmp(action, "start") == 0 ? "starting the instances" : "stopping the instances",
            "POST", NULL,
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/"
            "%s?api-version=" DEPLOY_API_COMPUTE,
            deploy_settings_arm(ds), n.rg_id, n.vmss, action);
}

void deploy_arm_vmss_get(const struct deploy_settings *ds, struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    arm_req(r, "scale set", "GET", NULL,
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/"
            "%s?api-version=" DEPLOY_API_COMPUTE,
            deploy_settings_arm(ds), n.rg_id, n.vmss);
}

void deploy_arm_vms_list(const struct deploy_settings *ds, struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    arm_req(r, "scale set instances", "GET", NULL,
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines"
            "?$expand=instanceView&api-version=" DEPLOY_API_COMPUTE,
            deploy_settings_arm(ds), n.rg_id, n.vmss);
}

void deploy_arm_lb_get(const struct deploy_settings *ds, struct deploy_req *r)
{
    struct deploy_names n;
    deploy_names_init(&n, ds);
    arm_req(r, "load balancer NAT rules", "GET", NULL,
            "%s%s" NET "loadBalancers/%s?api-version=" DEPLOY_API_NETWORK, deploy_settings_arm(ds),
            n.rg_id, n.lb);
}

void deploy_arm_push(const struct deploy_settings *ds, const char *vm_id, unsigned instance_id,
                     unsigned instances, struct deploy_req *r)
{
    struct deploy_names n;
    char l1[160], l2[160];
    deploy_names_init(&n, ds);
    snprintf(l1, sizeof(l1),
             "sed -i -e 's/^instance_id = .*/instance_id = %u/' -e 's/^instances = "
             ".*/instances = %u/' \"$f\"",
             instance_id, instances);
    snprintf(l2, sizeof(l2),
             "if [ \"$old\" = %u ]; then systemctl reload cmg-gateway; else systemctl restart "
             "cmg-gateway; fi",
             instance_id);
    static char what[64];
    snprintf(what, sizeof(what), "settings of instance %u (VM %s)", instance_id, vm_id);
    arm_req(r, what, "POST",
            json_pack("{s:s, s:[s, s, s, s, s]}", "commandId", "RunShellScript", "script", "set -e",
                      "f=/etc/cmg/gateway.ini", "old=$(sed -n 's/^instance_id = //p' \"$f\")", l1,
                      l2),
            "%s%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s/"
            "runCommand?api-version=" DEPLOY_API_COMPUTE,
            deploy_settings_arm(ds), n.rg_id, n.vmss, vm_id);
}

char *deploy_install_script(const struct deploy_settings *ds, const unsigned char *pfx,
                            size_t pfx_len, const char *storage_key)
{
    struct deploy_gw_place pl = {
        .instance_id = 0,
        .instances = (unsigned)ds->vm_instance_count,
        /* Every VM of the scale set runs this: the first ones, those a scale-out adds and
         * those Azure rebuilds. Until the VM listens on 443 the load balancer's probe keeps
         * clients away, so a VM joining a running deployment takes none before a connection
         * point's tunnel is up. */
        .await_tunnel = ds->await_tunnel,
        .listen = "0.0.0.0:443",
        .tunnel_listen = "0.0.0.0:10124", /* the NAT pool's backend port on every instance */
        .admin_listen = "127.0.0.1:9180",
        .pfx_file = "/etc/cmg/service.pfx",
        .pfx_password_file = "/etc/cmg/pfx-password.txt",
        .log_file = "/var/log/cmg/CMGService.log",
        /* the scale set's instances share the deployment's storage account */
        .content_account = storage_key ? ds->storage_account : NULL,
        .content_key_file = "/etc/cmg/storage-key.txt",
    };
    char *ini = NULL, *out = NULL;
    size_t ini_len = 0, out_len = 0;
    FILE *f = open_memstream(&ini, &ini_len);
    if (!f)
        return NULL;
    struct deploy_settings copy = *ds;
    copy.workers = 0; /* one worker per CPU of the VM size */
    copy.ca_root_certs = ds->ca_root_certs ? "/etc/cmg/trusted-roots.pem" : NULL;
    copy.ca_intermediate_certs = ds->ca_intermediate_certs ? "/etc/cmg/intermediates.pem" : NULL;
    deploy_gateway_ini(&copy, &pl, f);
    fclose(f);
    char *pfx64 = malloc(4 * ((pfx_len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)pfx64, pfx, (int)pfx_len);
    FILE *o = open_memstream(&out, &out_len);
    if (!o || !pfx64) {
        free(ini);
        free(pfx64);
        if (o)
            fclose(o);
        return NULL;
    }
    fprintf(o,
            "#!/bin/sh\n# cmg-gateway instance setup, written by cmgctl create\nset -eu\n"
            "install -d -m 0755 /etc/cmg /var/log/cmg /opt/cmg\n"
            "umask 077\n"
            "echo '%s' | base64 -d > /etc/cmg/service.pfx\n"
            "cat > /etc/cmg/pfx-password.txt <<'CMG_EOF'\n%s\nCMG_EOF\n",
            pfx64, ds->password ? ds->password : "");
    /* like the PFX password: a file only root reads, named by the world-readable gateway.ini;
     * rewritten on every run (gateway.ini is kept when present), so a VM rebuilt from a model
     * with a newer key uses that one */
    if (storage_key)
        fprintf(o, "cat > /etc/cmg/storage-key.txt <<'CMG_EOF'\n%s\nCMG_EOF\n", storage_key);
    /* Trusted roots and intermediates are copied in as PEM. */
    for (int pass = 0; pass < 2; pass++) {
        const char *list = pass ? ds->ca_intermediate_certs : ds->ca_root_certs;
        const char *items[32];
        char *copy_list = NULL;
        size_t n = core_split_list(list, &copy_list, items, 32);
        if (n)
            fprintf(o, "cat > %s <<'CMG_EOF'\n",
                    pass ? "/etc/cmg/intermediates.pem" : "/etc/cmg/trusted-roots.pem");
        for (size_t i = 0; i < n; i++) {
            FILE *pf = fopen(items[i], "r");
            char line[512];
            while (pf && fgets(line, sizeof(line), pf))
                fputs(line, o);
            if (pf)
                fclose(pf);
        }
        if (n)
            fprintf(o, "CMG_EOF\n");
        free(copy_list);
    }
    fprintf(o,
            "umask 022\n"
            "if [ ! -f /etc/cmg/gateway.ini ]; then cat > /etc/cmg/gateway.ini <<'CMG_EOF'\n%s"
            "CMG_EOF\nfi\n"
            "curl -fsSL --retry 5 '%s' -o /opt/cmg/cmg-gateway.tar.gz\n"
            "tar -xzf /opt/cmg/cmg-gateway.tar.gz -C /opt/cmg\n"
            "cat > /etc/systemd/system/cmg-gateway.service <<'CMG_EOF'\n"
            "[Unit]\nDescription=cmg-gateway (cloud management gateway instance)\n"
            "After=network-online.target\n\n[Service]\n"
            "ExecStart=/opt/cmg/bin/cmg-gateway -c /etc/cmg/gateway.ini\n"
            "ExecReload=/bin/kill -HUP $MAINPID\nRestart=on-failure\nLimitNOFILE=1048576\n\n"
            "[Install]\nWantedBy=multi-user.target\nCMG_EOF\n"
            "systemctl daemon-reload\nsystemctl enable --now cmg-gateway\n",
            ini, ds->gateway_package_url ? ds->gateway_package_url : "");
    fclose(o);
    free(ini);
    free(pfx64);
    return out;
}

/* ---- errors ---- */

static void arm_copy(char *dst, size_t len, json_t *v)
{
    if (json_is_string(v))
        snprintf(dst, len, "%s", json_string_value(v));
}

int deploy_arm_error_parse(const char *body, size_t len, struct deploy_arm_error *e)
{
    memset(e, 0, sizeof(*e));
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    if (!root)
        return -1;
    json_t *err = json_object_get(root, "error");
    if (json_is_object(err)) {
        /* {"error":{"code","message","details":[...]}} (ARM) */
        arm_copy(e->code, sizeof(e->code), json_object_get(err, "code"));
        arm_copy(e->message, sizeof(e->message), json_object_get(err, "message"));
        json_t *details = json_object_get(err, "details"), *d;
        size_t i;
        json_array_foreach(details, i, d)
        {
            const char *dm = json_string_value(json_object_get(d, "message"));
            size_t o = strlen(e->message);
            if (dm && o + 4 < sizeof(e->message))
                snprintf(e->message + o, sizeof(e->message) - o, "%s%s", o ? " / " : "", dm);
        }
    } else if (json_is_string(err)) {
        /* {"error":"invalid_client","error_description":"AADSTS...: ..."} (login host) */
        arm_copy(e->code, sizeof(e->code), err);
        arm_copy(e->message, sizeof(e->message), json_object_get(root, "error_description"));
    } else {
        /* Compute's own 429 and some others: code and message at the top */
        arm_copy(e->code, sizeof(e->code), json_object_get(root, "code"));
        arm_copy(e->message, sizeof(e->message), json_object_get(root, "message"));
    }
    json_decref(root);
    return e->code[0] ? 0 : -1;
}

const char *deploy_arm_hint(const char *code)
{
    static const struct {
        const char *code, *hint;
    } hints[] = {
        {"AuthorizationFailed", "give the server app the Owner (or Contributor) role on the "
                                "subscription, then run the command again"},
        {"InvalidAuthenticationToken", "check the tenant and the environment setting: the token "
                                       "is not for this cloud"},
        {"invalid_client", "check the server app's client id and its secret or certificate"},
        {"unauthorized_client", "the server app is not in this tenant: check tenant_id"},
        {"SubscriptionNotFound", "check subscription_id and that the server app can see it"},
        {"SkuNotAvailable", "the VM size is not offered in this region for the subscription: "
                            "choose another vm_size or region"},
        {"InvalidResourceGroupLocation", "the resource group exists in another region: use that "
                                         "region, or another group"},
        {"StorageAccountAlreadyTaken", "the storage account name (from the service name) is "
                                       "taken: choose another service name"},
        {"DnsRecordInUse", "the DNS label (the service name's prefix) is taken in this region: "
                           "choose another service name"},
        {"OperationNotAllowed", "a quota is too small: ask for more cores for this VM family in "
                                "the region, or choose fewer or smaller instances"},
        {"QuotaExceeded", "a quota is too small: ask for more, or choose fewer or smaller "
                          "instances"},
        {"ResourceGroupNotFound", "the resource group does not exist: create it, or leave out "
                                  "is_using_existing_group"},
        {"TooManyRequests", "Azure is throttling the calls: wait a few minutes and run the "
                            "command again (it picks up where it stopped)"},
        {"RetryableErrorDueToAnotherOperation", "another operation holds the resource: run "
                                                "the command again in a minute"},
    };
    for (size_t i = 0; code && i < sizeof(hints) / sizeof(hints[0]); i++)
        if (strcasecmp(code, hints[i].code) == 0)
            return hints[i].hint;
    return NULL;
}

/* ---- answers ---- */

char *deploy_login_parse(long status, const char *body, size_t len, uint64_t *expires_s,
                         struct deploy_arm_error *e)
{
    char *token = NULL;
    memset(e, 0, sizeof(*e));
    *expires_s = 0;
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *tok = json_string_value(json_object_get(root, "access_token"));
    json_t *exp = json_object_get(root, "expires_in");
    json_int_t secs = json_is_integer(exp)  ? json_integer_value(exp)
                      : json_is_string(exp) ? strtoll(json_string_value(exp), NULL, 10)
                                            : 0;
    if (status == 200 && tok && *tok) {
        token = strdup(tok);
        /* the lifetime is 60-90 min; an absent or odd value counts as the shortest */
        *expires_s = secs > 0 && secs <= 86400 ? (uint64_t)secs : 3599;
    } else if (deploy_arm_error_parse(body, len, e) != 0) {
        snprintf(e->code, sizeof(e->code), "HTTP %ld", status);
        snprintf(e->message, sizeof(e->message), "%s",
                 status == 200 ? "the answer holds no access_token"
                               : "the sign-in answer holds no error code");
    }
    json_decref(root);
    return token;
}

size_t deploy_arm_nat_parse(const char *body, size_t len, struct deploy_nat *out, size_t max)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *rules = json_object_get(json_object_get(root, "properties"), "inboundNatRules");
    json_t *rule;
    size_t i, n = 0;
    json_array_foreach(rules, i, rule)
    {
        json_t *p = json_object_get(rule, "properties");
        json_t *port_j = json_object_get(p, "frontendPort");
        json_int_t port = json_is_integer(port_j) ? json_integer_value(port_j) : 0;
        const char *ip =
            json_string_value(json_object_get(json_object_get(p, "backendIPConfiguration"), "id"));
        const char *vm = ip ? strstr(ip, "/virtualMachines/") : NULL;
        if (!vm || port < DEPLOY_TUNNEL_PORT_BASE ||
            port >= DEPLOY_TUNNEL_PORT_BASE + DEPLOY_MAX_INSTANCES || n >= max)
            continue;
        vm += strlen("/virtualMachines/");
        size_t vl = strcspn(vm, "/");
        if (vl == 0 || vl >= sizeof(out[n].vm_id))
            continue;
        memcpy(out[n].vm_id, vm, vl);
        out[n].vm_id[vl] = '\0';
        out[n].instance = (unsigned)(port - DEPLOY_TUNNEL_PORT_BASE);
        n++;
    }
    json_decref(root);
    return n;
}

const char *deploy_arm_vm_state(json_t *statuses, const char **detail)
{
    const char *prov = "", *power = "";
    size_t i;
    json_t *s;
    *detail = NULL;
    json_array_foreach(statuses, i, s)
    {
        const char *code = json_string_value(json_object_get(s, "code"));
        if (code && strncmp(code, "ProvisioningState/", 18) == 0) {
            prov = code + 18;
            const char *m = json_string_value(json_object_get(s, "message"));
            if (m)
                *detail = m;
        } else if (code && strncmp(code, "PowerState/", 11) == 0) {
            power = code + 11;
        }
    }
    if (strncasecmp(prov, "failed", 6) == 0)
        return "Error";
    if (strcasecmp(prov, "deleting") == 0)
        return "Deleting";
    if (strcasecmp(power, "deallocated") == 0 || strcasecmp(power, "stopped") == 0)
        return "Stopped";
    if (strcasecmp(power, "deallocating") == 0 || strcasecmp(power, "stopping") == 0)
        return "Stopping";
    if (strcasecmp(power, "starting") == 0)
        return "Starting";
    if (strcasecmp(prov, "succeeded") == 0 && strcasecmp(power, "running") == 0)
        return "Ready";
    return "Provisioning";
}

int deploy_storage_key_parse(const char *body, size_t len, char *key, size_t keylen, char *why,
                             size_t whylen)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *keys = json_object_get(root, "keys"), *k;
    const char *found = NULL;
    size_t i;
    int rc = -1;
    key[0] = '\0';
    if (!json_is_array(keys)) {
        snprintf(why, whylen, "the listKeys answer holds no \"keys\" list");
        goto out;
    }
    json_array_foreach(keys, i, k)
    {
        const char *name = json_string_value(json_object_get(k, "keyName"));
        const char *value = json_string_value(json_object_get(k, "value"));
        const char *perm = json_string_value(json_object_get(k, "permissions"));
        if (!value || !*value || !perm || strcasecmp(perm, "FULL") != 0)
            continue;
        if (!found || (name && strcmp(name, "key1") == 0))
            found = value;
    }
    if (!found) {
        snprintf(why, whylen, "the listKeys answer holds no key with full permissions");
        goto out;
    }
    /* a Shared Key is base64 (of 64 bytes today): anything else would not sign a request */
    size_t n = strlen(found), pad = strchr(found, '=') ? strlen(strchr(found, '=')) : 0;
    bool b64 = n > 0 && n <= DEPLOY_STORAGE_KEY_MAX && n % 4 == 0 && pad <= 2 &&
               strspn(found + n - pad, "=") == pad;
    for (size_t j = 0; b64 && j < n - pad; j++)
        b64 = isalnum((unsigned char)found[j]) || found[j] == '+' || found[j] == '/';
    if (!b64 || n + 1 > keylen) {
        snprintf(why, whylen, "the listKeys answer's key is not a storage key (%zu characters)", n);
        goto out;
    }
    memcpy(key, found, n + 1);
    rc = 0;
out:
    if (root) {
        /* the parsed copy of the keys goes away with the document: wipe it first (jansson
         * owns the buffers; in place is the only way) */
        json_array_foreach(keys, i, k)
        {
            json_t *v = json_object_get(k, "value");
            if (json_is_string(v) && json_string_length(v))
                OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
        }
        json_decref(root);
    }
    return rc;
}

/* ---- the operation poller ---- */

void deploy_op_init(struct deploy_op *op, const struct deploy_req *req, uint64_t default_delay_ms,
                    unsigned max_retries)
{
    memset(op, 0, sizeof(*op));
    op->phase = DEPLOY_OP_START;
    op->default_delay_ms = default_delay_ms;
    op->max_retries = max_retries;
    op->missing_ok = req->missing_ok;
}

/* Retry-After in seconds (the HTTP-date form falls back to the default). */
static uint64_t op_delay(const struct deploy_op *op, const char *retry_after)
{
    if (retry_after) {
        char *end;
        while (isspace((unsigned char)*retry_after))
            retry_after++;
        unsigned long v = strtoul(retry_after, &end, 10);
        if (end != retry_after && (*end == '\0' || isspace((unsigned char)*end)))
            return (uint64_t)(v > 3600 ? 3600 : v) * 1000;
    }
    return op->default_delay_ms;
}

static bool op_terminal(const char *state)
{
    return strcasecmp(state, "Succeeded") == 0 || strcasecmp(state, "Failed") == 0 ||
           strcasecmp(state, "Canceled") == 0;
}

/* provisioningState of a resource body ("" when none: treated as succeeded). */
static void op_prov_state(const struct deploy_http_resp *r, char *out, size_t len)
{
    json_t *root = r->body && r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    json_t *props = json_object_get(root, "properties");
    const char *s = json_string_value(json_object_get(props, "provisioningState"));
    snprintf(out, len, "%s", s ? s : "");
    json_decref(root);
}

static enum deploy_op_next op_fail(struct deploy_op *op, const struct deploy_http_resp *r,
                                   const char *fallback_code)
{
    if (deploy_arm_error_parse(r->body, r->len, &op->error) != 0) {
        snprintf(op->error.code, sizeof(op->error.code), "%s", fallback_code);
        snprintf(op->error.message, sizeof(op->error.message), "HTTP %ld%s%.*s", r->status,
                 r->len ? ": " : "", (int)(r->len > 300 ? 300 : r->len), r->body ? r->body : "");
    }
    return DEPLOY_NEXT_FAILED;
}

static enum deploy_op_next op_retry(struct deploy_op *op, const struct deploy_http_resp *r,
                                    enum deploy_op_next again)
{
    if (op->retries >= op->max_retries)
        return op_fail(op, r, r->status == 429 ? "TooManyRequests" : "ServerError");
    op->retries++;
    uint64_t backoff = op->default_delay_ms << (op->retries > 5 ? 5 : op->retries - 1);
    op->delay_ms = r->retry_after ? op_delay(op, r->retry_after) : backoff;
    return again;
}

enum deploy_op_next deploy_op_feed(struct deploy_op *op, const struct deploy_req *req,
                                   const struct deploy_http_resp *r)
{
    long st = r->status;
    bool transient = st == 429 || st == 500 || st == 502 || st == 503 || st == 504;

    if (op->phase == DEPLOY_OP_START) {
        if (transient)
            return op_retry(op, r, DEPLOY_NEXT_RETRY);
        if (st == 404 && op->missing_ok)
            return DEPLOY_NEXT_DONE;
        if (st < 200 || st >= 300)
            return op_fail(op, r, "HttpError");
        op_prov_state(r, op->status, sizeof(op->status));
        bool pending = st == 201 || st == 202 || (*op->status && !op_terminal(op->status));
        if (!pending) {
            if (strcasecmp(op->status, "Failed") == 0 || strcasecmp(op->status, "Canceled") == 0)
                return op_fail(op, r, op->status);
            return DEPLOY_NEXT_DONE;
        }
        const char *url = r->async_op ? r->async_op : r->location;
        if (url) {
            op->phase = r->async_op ? DEPLOY_OP_ASYNC : DEPLOY_OP_LOCATION;
            snprintf(op->poll_url, sizeof(op->poll_url), "%s", url);
        } else if (*op->status && !op_terminal(op->status)) {
            op->phase = DEPLOY_OP_RESOURCE; /* 200/201 with Creating: watch the resource */
            snprintf(op->poll_url, sizeof(op->poll_url), "%s", req->url);
        } else {
            return DEPLOY_NEXT_DONE; /* 201/202 with nothing to follow: accepted */
        }
        op->delay_ms = op_delay(op, r->retry_after);
        return DEPLOY_NEXT_POLL;
    }

    op->polls++;
    if (transient)
        return op_retry(op, r, DEPLOY_NEXT_POLL);
    switch (op->phase) {
    case DEPLOY_OP_ASYNC: {
        if (st < 200 || st >= 300)
            return op_fail(op, r, "HttpError");
        json_t *root = r->body && r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
        const char *s = json_string_value(json_object_get(root, "status"));
        snprintf(op->status, sizeof(op->status), "%s", s ? s : "InProgress");
        json_decref(root);
        if (strcasecmp(op->status, "Succeeded") == 0)
            return DEPLOY_NEXT_DONE;
        if (op_terminal(op->status)) {
            enum deploy_op_next n = op_fail(op, r, op->status);
            if (!op->error.code[0])
                snprintf(op->error.code, sizeof(op->error.code), "%s", op->status);
            return n;
        }
        break;
    }
    case DEPLOY_OP_LOCATION:
        if (st == 202) {
            snprintf(op->status, sizeof(op->status), "InProgress");
            if (r->location) /* the service may move the monitor */
                snprintf(op->poll_url, sizeof(op->poll_url), "%s", r->location);
            break;
        }
        if (st == 404 && op->missing_ok && strcmp(req->verb, "DELETE") == 0)
            return DEPLOY_NEXT_DONE;
        if (st >= 200 && st < 300)
            return DEPLOY_NEXT_DONE;
        return op_fail(op, r, "HttpError");
    case DEPLOY_OP_RESOURCE:
        /* a DELETE answered 200 "Deleting": the resource is gone when it no longer answers */
        if (st == 404 && op->missing_ok && strcmp(req->verb, "DELETE") == 0)
            return DEPLOY_NEXT_DONE;
        if (st < 200 || st >= 300)
            return op_fail(op, r, "HttpError");
        op_prov_state(r, op->status, sizeof(op->status));
        if (!*op->status || strcasecmp(op->status, "Succeeded") == 0)
            return DEPLOY_NEXT_DONE;
        if (op_terminal(op->status))
            return op_fail(op, r, op->status);
        break;
    default:
        return op_fail(op, r, "InternalError");
    }
    op->delay_ms = op_delay(op, r->retry_after);
    return DEPLOY_NEXT_POLL;
}
