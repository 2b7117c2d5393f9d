/* ARM without I/O: the long-running operation poller's decisions, the request builders'
 * URLs and bodies, and the parsers of error, sign-in, load balancer and instance answers. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "deploy.h"

/* ---- the poller ---- */

#define OP_URL "https://arm.test/subscriptions/s/resourceGroups/g/x/y?api-version=1"

static struct deploy_req put_req = {.what = "x", .verb = "PUT", .url = OP_URL};
static struct deploy_req del_req = {
    .what = "x", .verb = "DELETE", .url = OP_URL, .missing_ok = true};

static struct deploy_http_resp resp(long status, const char *body)
{
    struct deploy_http_resp r = {.status = status, .body = body, .len = body ? strlen(body) : 0};
    return r;
}

static void op_start(struct deploy_op *op, const struct deploy_req *q)
{
    deploy_op_init(op, q, 1000, 3);
}

Test(poller, async_operation_first_then_status)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(201, "{\"properties\":{\"provisioningState\":\"Creating\"}}");
    r.async_op = "https://arm.test/ops/1";
    r.location = "https://arm.test/loc/1";
    r.retry_after = "7";
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_eq(op.phase, DEPLOY_OP_ASYNC, "Azure-AsyncOperation wins over Location");
    cr_assert_str_eq(op.poll_url, "https://arm.test/ops/1");
    cr_assert_eq(op.delay_ms, 7000);

    r = resp(200, "{\"status\":\"InProgress\"}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_eq(op.delay_ms, 1000, "no Retry-After: the default interval");
    cr_assert_str_eq(op.status, "InProgress");
    r = resp(200, "{}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL, "no status: still going");
    r = resp(200, "{\"status\":\"Succeeded\"}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE);
    cr_assert_eq(op.polls, 3);
}

Test(poller, async_failed_carries_the_error)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(201, NULL);
    r.async_op = "https://arm.test/ops/2";
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    r = resp(200, "{\"status\":\"Failed\",\"error\":{\"code\":\"SkuNotAvailable\",\"message\":"
                  "\"The requested size is not available.\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "SkuNotAvailable");
    cr_assert_str_eq(op.error.message, "The requested size is not available.");
}

Test(poller, async_canceled_without_error_body)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(202, NULL);
    r.async_op = "https://arm.test/ops/3";
    deploy_op_feed(&op, &put_req, &r);
    r = resp(200, "{\"status\":\"Canceled\"}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "Canceled");
}

Test(poller, location_when_no_async_operation)
{
    struct deploy_op op;
    op_start(&op, &del_req);
    struct deploy_http_resp r = resp(202, NULL);
    r.location = "https://arm.test/loc/1";
    r.retry_after = "15";
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_eq(op.phase, DEPLOY_OP_LOCATION);
    cr_assert_str_eq(op.poll_url, "https://arm.test/loc/1");
    cr_assert_eq(op.delay_ms, 15000);
    r = resp(202, NULL);
    r.location = "https://arm.test/loc/2";
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_str_eq(op.poll_url, "https://arm.test/loc/2", "the monitor moved");
    r = resp(200, NULL);
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_DONE);
}

Test(poller, location_204_done_and_404_after_delete)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(202, NULL);
    r.location = "https://arm.test/loc/3";
    deploy_op_feed(&op, &put_req, &r);
    r = resp(204, NULL);
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE);

    op_start(&op, &del_req);
    r = resp(202, NULL);
    r.location = "https://arm.test/loc/4";
    deploy_op_feed(&op, &del_req, &r);
    r = resp(404, NULL);
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_DONE);

    op_start(&op, &put_req);
    r = resp(202, NULL);
    r.location = "https://arm.test/loc/5";
    deploy_op_feed(&op, &put_req, &r);
    r = resp(404, NULL);
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED,
                 "a PUT's monitor that vanished is an error");
}

Test(poller, provisioning_state_of_the_resource)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(200, "{\"properties\":{\"provisioningState\":\"Updating\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_eq(op.phase, DEPLOY_OP_RESOURCE);
    cr_assert_str_eq(op.poll_url, OP_URL, "the resource itself is watched");
    r = resp(200, "{\"properties\":{\"provisioningState\":\"Migrating\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    r = resp(200, "{\"properties\":{\"provisioningState\":\"Succeeded\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE);

    op_start(&op, &put_req);
    r = resp(200, "{\"properties\":{\"provisioningState\":\"Creating\"}}");
    deploy_op_feed(&op, &put_req, &r);
    r = resp(200, "{\"properties\":{\"provisioningState\":\"Failed\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "Failed");
}

Test(poller, delete_watched_until_gone)
{
    struct deploy_op op;
    op_start(&op, &del_req);
    struct deploy_http_resp r = resp(200, "{\"properties\":{\"provisioningState\":\"Deleting\"}}");
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_eq(op.phase, DEPLOY_OP_RESOURCE);
    r = resp(404, "{\"error\":{\"code\":\"ResourceNotFound\",\"message\":\"gone\"}}");
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_DONE);
}

Test(poller, synchronous_answers)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(200, "{\"properties\":{\"provisioningState\":\"Succeeded\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE);
    op_start(&op, &put_req);
    r = resp(200, "{\"name\":\"no state\"}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE, "no state = succeeded");
    op_start(&op, &put_req);
    r = resp(201, "{}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_DONE,
                 "201 with nothing to follow: accepted");
    op_start(&op, &put_req);
    r = resp(200, "{\"properties\":{\"provisioningState\":\"Canceled\"}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
}

Test(poller, throttled_then_retried_with_retry_after)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(429, "{\"error\":{\"code\":\"TooManyRequests\"}}");
    r.retry_after = "3";
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_RETRY, "retry %u", i);
        cr_assert_eq(op.delay_ms, 3000);
    }
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED, "max_retries = 3");
    cr_assert_str_eq(op.error.code, "TooManyRequests");
}

Test(poller, server_errors_back_off)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(503, "<html>busy</html>");
    uint64_t want[] = {1000, 2000, 4000};
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_RETRY);
        cr_assert_eq(op.delay_ms, want[i], "retry %u waits %llu", i,
                     (unsigned long long)op.delay_ms);
    }
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "ServerError", "no error body: named by the status");
    cr_assert(strstr(op.error.message, "HTTP 503") != NULL, "%s", op.error.message);

    /* a 5xx while polling repeats the poll, not the request */
    op_start(&op, &put_req);
    r = resp(202, NULL);
    r.location = "https://arm.test/loc/9";
    deploy_op_feed(&op, &put_req, &r);
    r = resp(500, NULL);
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_POLL);
    cr_assert_str_eq(op.poll_url, "https://arm.test/loc/9");
}

Test(poller, retry_after_forms)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r = resp(202, NULL);
    r.location = "https://arm.test/l";
    r.retry_after = "Fri, 27 Nov 2026 16:00:00 GMT";
    deploy_op_feed(&op, &put_req, &r);
    cr_assert_eq(op.delay_ms, 1000, "an HTTP date falls back to the default");
    r = resp(202, NULL);
    r.retry_after = "999999";
    deploy_op_feed(&op, &put_req, &r);
    cr_assert_eq(op.delay_ms, 3600000, "capped at an hour");
    r = resp(202, NULL);
    r.retry_after = " 0";
    deploy_op_feed(&op, &put_req, &r);
    cr_assert_eq(op.delay_ms, 0);
    r = resp(202, NULL);
    r.retry_after = "5x";
    deploy_op_feed(&op, &put_req, &r);
    cr_assert_eq(op.delay_ms, 1000);
}

Test(poller, client_errors_fail_at_once)
{
    struct deploy_op op;
    op_start(&op, &put_req);
    struct deploy_http_resp r =
        resp(400, "{\"error\":{\"code\":\"InvalidParameter\",\"message\":\"Bad name.\","
                  "\"target\":\"name\",\"details\":[{\"code\":\"X\",\"message\":\"Too long.\"}]}}");
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "InvalidParameter");
    cr_assert_str_eq(op.error.message, "Bad name. / Too long.");
    cr_assert_eq(op.retries, 0);

    op_start(&op, &put_req);
    r = resp(404, NULL);
    cr_assert_eq(deploy_op_feed(&op, &put_req, &r), DEPLOY_NEXT_FAILED);
    cr_assert_str_eq(op.error.code, "HttpError");
    op_start(&op, &del_req);
    cr_assert_eq(deploy_op_feed(&op, &del_req, &r), DEPLOY_NEXT_DONE, "already gone");
}

/* ---- request builders ---- */

static struct deploy_settings ds;

static void settings_setup(void)
{
    struct deploy_msgs m = {0};
    cr_assert_eq(deploy_settings_load(&ds, NULL, &m), 0);
    ds.provider = DEPLOY_PROVIDER_AZURE;
    ds.subscription_id = strdup("00000000-1111-2222-3333-444444444444");
    ds.group_name = strdup("cmg-rg");
    ds.region = strdup("westeurope");
    ds.service_name = strdup("GW1.contoso.com");
    ds.resource_prefix = strdup("gw1");
    ds.storage_account = strdup("gw1");
    ds.deployment_name = strdup("gw1.westeurope.cloudapp.azure.com");
    ds.admin_ssh_public_key = strdup("ssh-ed25519 AAAA test");
    ds.vm_instance_count = 3;
}

static void settings_teardown(void)
{
    deploy_settings_free(&ds);
}

TestSuite(builders, .init = settings_setup, .fini = settings_teardown);

static json_t *body_of(const struct deploy_req *q)
{
    cr_assert_not_null(q->body, "%s has a body", q->what);
    json_error_t e;
    json_t *j = json_loads(q->body, 0, &e);
    cr_assert_not_null(j, "%s: %s", q->what, e.text);
    return j;
}

static const char *jpath_str(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = (*k >= '0' && *k <= '9') ? json_array_get(v, (size_t)atoi(k)) : json_object_get(v, k);
    return json_string_value(v);
}

static json_int_t jpath_int(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = (*k >= '0' && *k <= '9') ? json_array_get(v, (size_t)atoi(k)) : json_object_get(v, k);
    cr_assert(json_is_integer(v) || json_is_boolean(v), "%s is a number", path);
    return json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
}

#define RG "https://management.azure.com/subscriptions/00000000-1111-2222-3333-444444444444/"

Test(builders, create_plan_order_and_bodies)
{
    struct deploy_req q[16];
    size_t n = deploy_arm_create_plan(&ds, "#!/bin/sh\necho setup\n", q, 16);
    cr_assert_eq(n, 10);
    const char *order[] = {"resourcegroups/cmg-rg?",        "storageAccounts/gw1?",
                           "storageAccounts/gw1/listKeys?", "containers/content?",
                           "tables/cmgcounters?",           "networkSecurityGroups/gw1-nsg?",
                           "virtualNetworks/gw1-vnet?",     "publicIPAddresses/gw1-pip?",
                           "loadBalancers/gw1-lb?",         "virtualMachineScaleSets/gw1-vmss?"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(q[i].verb, i == 2 ? "POST" : "PUT");
        cr_assert(strncmp(q[i].url, RG, strlen(RG)) == 0, "%s", q[i].url);
        cr_assert(strstr(q[i].url, order[i]) != NULL, "step %zu: %s", i, q[i].url);
        cr_assert(strstr(q[i].url, "api-version=") != NULL);
    }
    cr_assert(strstr(q[0].url, "api-version=" DEPLOY_API_RESOURCES));
    cr_assert(strstr(q[1].url, "api-version=" DEPLOY_API_STORAGE));
    cr_assert(strstr(q[2].url, "/listKeys?api-version=" DEPLOY_API_STORAGE), "%s", q[2].url);
    cr_assert(q[2].secret_answer, "the answer holds the keys: never printed or logged");
    cr_assert_null(q[2].body);
    cr_assert(strstr(q[5].url, "api-version=" DEPLOY_API_NETWORK));
    cr_assert(strstr(q[9].url, "api-version=" DEPLOY_API_COMPUTE));

    json_t *j = body_of(&q[0]);
    cr_assert_str_eq(jpath_str(j, "location"), "westeurope");
    cr_assert_str_eq(jpath_str(j, "tags.cmg-created-by"), DEPLOY_TAG_OWNER);
    json_decref(j);

    j = body_of(&q[1]);
    cr_assert_str_eq(jpath_str(j, "sku.name"), "Standard_LRS");
    cr_assert_str_eq(jpath_str(j, "kind"), "StorageV2");
    cr_assert_str_eq(jpath_str(j, "properties.minimumTlsVersion"), "TLS1_2");
    cr_assert_eq(jpath_int(j, "properties.allowBlobPublicAccess"), 0);
    json_decref(j);

    j = body_of(&q[3]);
    cr_assert_str_eq(jpath_str(j, "properties.publicAccess"), "None");
    json_decref(j);

    j = body_of(&q[5]);
    cr_assert_str_eq(jpath_str(j, "properties.securityRules.0.properties.destinationPortRange"),
                     "443");
    cr_assert_str_eq(jpath_str(j, "properties.securityRules.1.properties.destinationPortRange"),
                     "10124-10139");
    json_decref(j);

    j = body_of(&q[6]);
    cr_assert_str_eq(jpath_str(j, "properties.subnets.0.properties.networkSecurityGroup.id"),
                     "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/cmg-rg/"
                     "providers/Microsoft.Network/networkSecurityGroups/gw1-nsg");
    json_decref(j);

    j = body_of(&q[7]);
    cr_assert_str_eq(jpath_str(j, "sku.name"), "Standard");
    cr_assert_str_eq(jpath_str(j, "properties.publicIPAllocationMethod"), "Static");
    cr_assert_str_eq(jpath_str(j, "properties.dnsSettings.domainNameLabel"), "gw1");
    json_decref(j);

    j = body_of(&q[8]);
    cr_assert_eq(jpath_int(j, "properties.probes.0.properties.port"), 443);
    cr_assert_eq(jpath_int(j, "properties.loadBalancingRules.0.properties.frontendPort"), 443);
    cr_assert_eq(jpath_int(j, "properties.loadBalancingRules.0.properties.backendPort"), 443);
    cr_assert_eq(jpath_int(j, "properties.inboundNatPools.0.properties.frontendPortRangeStart"),
                 10124);
    cr_assert_eq(jpath_int(j, "properties.inboundNatPools.0.properties.frontendPortRangeEnd"),
                 10139);
    cr_assert_eq(jpath_int(j, "properties.inboundNatPools.0.properties.backendPort"), 10124);
    cr_assert(strstr(jpath_str(j, "properties.outboundRules.0.properties.backendAddressPool.id"),
                     "/loadBalancers/gw1-lb/backendAddressPools/bepool"));
    json_decref(j);

    j = body_of(&q[9]);
    cr_assert(q[9].has_secret, "the scale set carries the certificate: never printed");
    cr_assert_str_eq(jpath_str(j, "sku.name"), "Standard_A2_v2", "the default size: Standard");
    cr_assert_eq(jpath_int(j, "sku.capacity"), 3);
    cr_assert_str_eq(jpath_str(j, "properties.orchestrationMode"), "Uniform");
    cr_assert_eq(jpath_int(j, "properties.overprovision"), 0);
    cr_assert_str_eq(jpath_str(j, "properties.upgradePolicy.mode"), "Manual");
    cr_assert_str_eq(
        jpath_str(j, "properties.virtualMachineProfile.storageProfile.imageReference.sku"),
        "server-gen1", "Av2 sizes boot Generation 1 images only");
    const char *script = jpath_str(j, "properties.virtualMachineProfile.extensionProfile."
                                      "extensions.0.properties.protectedSettings.script");
    cr_assert_not_null(script);
    unsigned char decoded[256];
    int dl = EVP_DecodeBlock(decoded, (const unsigned char *)script, (int)strlen(script));
    cr_assert_gt(dl, 0);
    cr_assert(memcmp(decoded, "#!/bin/sh\necho setup\n", 21) == 0, "the script, base64");
    json_decref(j);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(q[i].missing_ok, false);
        cr_assert(i == 2 || !q[i].secret_answer, "only listKeys answers with secrets");
        cr_assert(i == 9 || !q[i].has_secret, "only the scale set carries secrets");
        deploy_req_clear(&q[i]);
    }
}

Test(builders, create_plan_variants)
{
    struct deploy_req q[16];
    ds.is_using_existing_group = true;
    ds.enable_cloud_dp_function = false;
    ds.enforce_protocol = false;
    ds.vm_size = 0; /* Lab */
    size_t n = deploy_arm_create_plan(&ds, "x", q, 16);
    cr_assert_eq(n, 7, "no group, no content container, no storage keys");
    cr_assert(strstr(q[0].url, "storageAccounts/gw1?"), "%s", q[0].url);
    json_t *j = body_of(&q[0]);
    cr_assert_str_eq(jpath_str(j, "properties.minimumTlsVersion"), "TLS1_0");
    json_decref(j);
    j = body_of(&q[6]);
    cr_assert_str_eq(jpath_str(j, "sku.name"), "Standard_B2s");
    cr_assert_str_eq(
        jpath_str(j, "properties.virtualMachineProfile.storageProfile.imageReference.sku"),
        "server");
    json_decref(j);
    for (size_t i = 0; i < n; i++)
        deploy_req_clear(&q[i]);
    cr_assert_eq(deploy_arm_create_plan(&ds, "x", q, 5), 0, "too small a plan array");

    /* without the script: all but the scale set, made once the storage key is known */
    n = deploy_arm_create_plan(&ds, NULL, q, 16);
    cr_assert_eq(n, 6);
    for (size_t i = 0; i < n; i++) {
        cr_assert(strstr(q[i].url, "virtualMachineScaleSets") == NULL, "%s", q[i].url);
        deploy_req_clear(&q[i]);
    }
    deploy_arm_vmss_put(&ds, "x", &q[0]);
    cr_assert_str_eq(q[0].verb, "PUT");
    cr_assert(
        strstr(q[0].url, "/virtualMachineScaleSets/gw1-vmss?api-version=" DEPLOY_API_COMPUTE));
    cr_assert(q[0].has_secret);
    deploy_req_clear(&q[0]);

    deploy_arm_storage_keys(&ds, &q[0]);
    cr_assert_str_eq(q[0].verb, "POST");
    cr_assert_str_eq(q[0].url, RG "resourceGroups/cmg-rg/providers/Microsoft.Storage/"
                                  "storageAccounts/gw1/listKeys?api-version=" DEPLOY_API_STORAGE);
    cr_assert(q[0].secret_answer);
    deploy_req_clear(&q[0]);
}

Test(builders, delete_plan_reverse_and_tolerant)
{
    struct deploy_req q[16];
    size_t n = deploy_arm_delete_plan(&ds, true, q, 16);
    cr_assert_eq(n, 7);
    const char *order[] = {"virtualMachineScaleSets/gw1-vmss?",
                           "loadBalancers/gw1-lb?",
                           "publicIPAddresses/gw1-pip?",
                           "virtualNetworks/gw1-vnet?",
                           "networkSecurityGroups/gw1-nsg?",
                           "storageAccounts/gw1?",
                           "resourcegroups/cmg-rg?"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(q[i].verb, "DELETE");
        cr_assert(q[i].missing_ok, "a re-run after a partial delete converges");
        cr_assert_null(q[i].body);
        cr_assert(strstr(q[i].url, order[i]), "step %zu: %s", i, q[i].url);
        deploy_req_clear(&q[i]);
    }
    n = deploy_arm_delete_plan(&ds, false, q, 16);
    cr_assert_eq(n, 6, "a group create did not make stays");
    for (size_t i = 0; i < n; i++) {
        cr_assert(strstr(q[i].url, "resourcegroups/cmg-rg?") == NULL);
        deploy_req_clear(&q[i]);
    }
}

Test(builders, scale_action_status_and_push)
{
    struct deploy_req q;
    deploy_arm_scale(&ds, 5, &q);
    cr_assert_str_eq(q.verb, "PATCH");
    json_t *j = body_of(&q);
    cr_assert_eq(jpath_int(j, "sku.capacity"), 5);
    cr_assert_eq(json_object_size(j), 1, "only what changes");
    json_decref(j);
    deploy_req_clear(&q);

    deploy_arm_vmss_action(&ds, "deallocate", &q);
    cr_assert_str_eq(q.verb, "POST");
    cr_assert(strstr(q.url, "/virtualMachineScaleSets/gw1-vmss/deallocate?api-version="));
    deploy_req_clear(&q);

    deploy_arm_vms_list(&ds, &q);
    cr_assert_str_eq(q.verb, "GET");
    cr_assert(strstr(q.url, "/gw1-vmss/virtualMachines?$expand=instanceView&api-version="));
    deploy_req_clear(&q);

    deploy_arm_rg_get(&ds, &q);
    cr_assert(q.missing_ok, "a missing group is an answer, not an error");
    deploy_req_clear(&q);

    deploy_arm_push(&ds, "7", 3, 4, &q);
    cr_assert_str_eq(q.verb, "POST");
    cr_assert(strstr(q.url, "/gw1-vmss/virtualMachines/7/runCommand?api-version="), "%s", q.url);
    j = body_of(&q);
    cr_assert_str_eq(jpath_str(j, "commandId"), "RunShellScript");
    char *script = json_dumps(json_object_get(j, "script"), 0);
    cr_assert(strstr(script, "instance_id = 3"), "%s", script);
    cr_assert(strstr(script, "instances = 4"), "%s", script);
    free(script);
    json_decref(j);
    deploy_req_clear(&q);
}

Test(builders, install_script_gateway_ini)
{
    ds.password = strdup("pfx-secret");
    ds.gateway_package_url = strdup("https://example.test/cmg.tar.gz");
    unsigned char pfx[] = {0x30, 0x82, 0x01};
    char *s = deploy_install_script(&ds, pfx, sizeof(pfx), NULL);
    cr_assert_not_null(s);
    cr_assert(strstr(s, "instances = 3\n"), "%s", s);
    cr_assert(strstr(s, "await_tunnel = 60000ms\n"), "every VM waits for a tunnel");
    cr_assert(strstr(s, "listen = 0.0.0.0:443\n"));
    cr_assert(strstr(s, "pfx-secret"));
    cr_assert(strstr(s, "curl -fsSL --retry 5 'https://example.test/cmg.tar.gz'"));
    cr_assert(strstr(s, "store = blob") == NULL, "no key: the folder store stays");
    cr_assert(strstr(s, "storage-key") == NULL);
    free(s);
}

Test(builders, install_script_blob_store)
{
    static const char key[] = "a2V5IG9mIHRoZSB0ZXN0IHN0b3JhZ2UgYWNjb3VudA==";
    ds.password = strdup("pfx-secret");
    ds.gateway_package_url = strdup("https://example.test/cmg.tar.gz");
    ds.environment = 1; /* AzureUSGovernmentCloud */
    unsigned char pfx[] = {0x30, 0x82, 0x01};
    char *s = deploy_install_script(&ds, pfx, sizeof(pfx), key);
    cr_assert_not_null(s);
    /* the key in a file only root reads, written while umask 077 holds, like the password */
    const char *umask_077 = strstr(s, "umask 077\n"), *umask_022 = strstr(s, "umask 022\n");
    const char *keyfile = strstr(s, "cat > /etc/cmg/storage-key.txt <<'CMG_EOF'\n");
    cr_assert(umask_077 && umask_022 && keyfile, "%s", s);
    cr_assert(umask_077 < keyfile && keyfile < umask_022, "the key file is written with umask 077");
    cr_assert(strstr(keyfile, key) == keyfile + strlen("cat > /etc/cmg/storage-key.txt "
                                                       "<<'CMG_EOF'\n"));
    const char *ini = strstr(s, "[content]\n");
    cr_assert_not_null(ini, "%s", s);
    const char *want[] = {"store = blob\n", "environment = AzureUSGovernmentCloud\n",
                          "account = gw1\n", "account_key_file = /etc/cmg/storage-key.txt\n",
                          "container = " DEPLOY_CONTENT_CONTAINER "\n"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert(strstr(ini, want[i]), "%s missing in:\n%s", want[i], ini);
    cr_assert(strstr(ini, key) == NULL, "gateway.ini is world-readable: it only names the file");
    cr_assert(strstr(ini, "blob_endpoint") == NULL, "no override: the account's own endpoint");
    free(s);

    ds.blob_endpoint = strdup("http://127.0.0.1:10000/gw1");
    s = deploy_install_script(&ds, pfx, sizeof(pfx), key);
    cr_assert(strstr(s, "blob_endpoint = http://127.0.0.1:10000/gw1\n"), "%s", s);
    free(s);
}

/* ---- answers ---- */

#define KEY1 "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMQ=="
#define KEY2 "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMg=="

Test(answers, storage_keys)
{
    static const struct {
        const char *body, *want; /* want NULL: refused, why containing err */
        const char *err;
    } cases[] = {
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"" KEY1 "\",\"permissions\":\"FULL\"},"
         "{\"keyName\":\"key2\",\"value\":\"" KEY2 "\",\"permissions\":\"FULL\"}]}",
         KEY1, NULL},
        /* key1 wins wherever it is; permissions are matched without case */
        {"{\"keys\":[{\"keyName\":\"key2\",\"value\":\"" KEY2 "\",\"permissions\":\"FULL\"},"
         "{\"keyName\":\"key1\",\"value\":\"" KEY1 "\",\"permissions\":\"Full\"}]}",
         KEY1, NULL},
        /* a read-only key1 cannot write content: the full one is taken */
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"" KEY1 "\",\"permissions\":\"READ\"},"
         "{\"keyName\":\"key2\",\"value\":\"" KEY2 "\",\"permissions\":\"FULL\"}]}",
         KEY2, NULL},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"" KEY1 "\",\"permissions\":\"READ\"}]}",
         NULL, "full permissions"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"" KEY1 "\"}]}", NULL, "full permissions"},
        {"{\"keys\":[]}", NULL, "full permissions"},
        {"{\"keys\":{}}", NULL, "no \"keys\""},
        {"{}", NULL, "no \"keys\""},
        {"not json", NULL, "no \"keys\""},
        {"", NULL, "no \"keys\""},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"\",\"permissions\":\"FULL\"}]}", NULL,
         "full permissions"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"not base64!\",\"permissions\":\"FULL\"}]}",
         NULL, "not a storage key"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"abc=defg\",\"permissions\":\"FULL\"}]}",
         NULL, "not a storage key"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"ab=c\",\"permissions\":\"FULL\"}]}", NULL,
         "not a storage key"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"a===\",\"permissions\":\"FULL\"}]}", NULL,
         "not a storage key"},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":\"ab==\",\"permissions\":\"FULL\"}]}",
         "ab==", NULL},
        {"{\"keys\":[{\"keyName\":\"key1\",\"value\":42,\"permissions\":\"FULL\"}]}", NULL,
         "full permissions"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char key[DEPLOY_STORAGE_KEY_MAX + 1], why[256] = "";
        int rc = deploy_storage_key_parse(cases[i].body, strlen(cases[i].body), key, sizeof(key),
                                          why, sizeof(why));
        if (cases[i].want) {
            cr_assert_eq(rc, 0, "case %zu: %s", i, why);
            cr_assert_str_eq(key, cases[i].want, "case %zu", i);
        } else {
            cr_assert_neq(rc, 0, "case %zu accepted", i);
            cr_assert_str_eq(key, "", "case %zu: nothing copied", i);
            cr_assert(strstr(why, cases[i].err), "case %zu: %s", i, why);
            cr_assert(strstr(why, KEY1) == NULL, "case %zu: the reason shows no key", i);
        }
    }
    char key[DEPLOY_STORAGE_KEY_MAX + 1], why[256];
    cr_assert_neq(deploy_storage_key_parse(NULL, 0, key, sizeof(key), why, sizeof(why)), 0);

    /* longer than a storage key, or than the caller's buffer */
    char big[600], body[800];
    memset(big, 'A', 200);
    big[200] = '\0';
    snprintf(body, sizeof(body),
             "{\"keys\":[{\"keyName\":\"key1\",\"value\":\"%s\",\"permissions\":\"FULL\"}]}", big);
    cr_assert_neq(deploy_storage_key_parse(body, strlen(body), key, sizeof(key), why, sizeof(why)),
                  0);
    const char *ok = "{\"keys\":[{\"keyName\":\"key1\",\"value\":\"" KEY1 "\",\"permissions\":"
                     "\"FULL\"}]}";
    cr_assert_neq(deploy_storage_key_parse(ok, strlen(ok), key, 16, why, sizeof(why)), 0,
                  "a buffer too small is refused, not cut");
}

Test(answers, arm_error_shapes)
{
    struct deploy_arm_error e;
    const char *arm = "{\"error\":{\"code\":\"AuthorizationFailed\",\"message\":\"No access.\"}}";
    cr_assert_eq(deploy_arm_error_parse(arm, strlen(arm), &e), 0);
    cr_assert_str_eq(e.code, "AuthorizationFailed");
    cr_assert_str_eq(e.message, "No access.");

    const char *top = "{\"code\":\"TooManyRequests\",\"message\":\"Slow down.\",\"details\":[]}";
    cr_assert_eq(deploy_arm_error_parse(top, strlen(top), &e), 0);
    cr_assert_str_eq(e.code, "TooManyRequests");
    cr_assert_str_eq(e.message, "Slow down.");

    const char *login = "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: "
                        "Invalid client secret provided.\",\"error_codes\":[7000215]}";
    cr_assert_eq(deploy_arm_error_parse(login, strlen(login), &e), 0);
    cr_assert_str_eq(e.code, "invalid_client");
    cr_assert(strncmp(e.message, "AADSTS7000215", 13) == 0);

    const char *bad[] = {"",
                         "not json",
                         "[]",
                         "{\"error\":{}}",
                         "{\"error\":42}",
                         "{\"code\":7}",
                         "{\"error\":{\"code\":\"\"}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_neq(deploy_arm_error_parse(bad[i], strlen(bad[i]), &e), 0, "%s", bad[i]);
    cr_assert_neq(deploy_arm_error_parse(NULL, 0, &e), 0);
}

Test(answers, arm_error_long_fields_are_cut)
{
    char body[8192], msg[4000];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    snprintf(body, sizeof(body),
             "{\"error\":{\"code\":\"C\",\"message\":\"%s\",\"details\":[{\"message\":\"%s\"}]}}",
             msg, msg);
    struct deploy_arm_error e;
    cr_assert_eq(deploy_arm_error_parse(body, strlen(body), &e), 0);
    cr_assert_eq(strlen(e.message), sizeof(e.message) - 1);
}

Test(answers, hints)
{
    cr_assert_not_null(deploy_arm_hint("AuthorizationFailed"));
    cr_assert_not_null(deploy_arm_hint("skunotavailable"), "codes compare without case");
    cr_assert_not_null(deploy_arm_hint("invalid_client"));
    cr_assert_null(deploy_arm_hint("SomethingElse"));
    cr_assert_null(deploy_arm_hint(NULL));
}

Test(answers, login)
{
    struct deploy_arm_error e;
    uint64_t secs;
    const char *ok = "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"eyJ.a.b\"}";
    char *t = deploy_login_parse(200, ok, strlen(ok), &secs, &e);
    cr_assert_str_eq(t, "eyJ.a.b");
    cr_assert_eq(secs, 3599);
    free(t);

    const char *str = "{\"expires_in\":\"4000\",\"access_token\":\"x\"}";
    t = deploy_login_parse(200, str, strlen(str), &secs, &e);
    cr_assert_str_eq(t, "x");
    cr_assert_eq(secs, 4000, "the v1 endpoint sends the lifetime as a string");
    free(t);

    const char *odd = "{\"expires_in\":-5,\"access_token\":\"x\"}";
    t = deploy_login_parse(200, odd, strlen(odd), &secs, &e);
    cr_assert_eq(secs, 3599);
    free(t);

    const char *none = "{\"token_type\":\"Bearer\"}";
    cr_assert_null(deploy_login_parse(200, none, strlen(none), &secs, &e));
    cr_assert_str_eq(e.code, "HTTP 200");

    const char *refused =
        "{\"error\":\"unauthorized_client\",\"error_description\":\"AADSTS700016: "
        "Application not found in the directory.\"}";
    cr_assert_null(deploy_login_parse(400, refused, strlen(refused), &secs, &e));
    cr_assert_str_eq(e.code, "unauthorized_client");
    cr_assert(strstr(e.message, "AADSTS700016"));

    const char *token_but_error = "{\"access_token\":\"x\"}";
    cr_assert_null(deploy_login_parse(401, token_but_error, strlen(token_but_error), &secs, &e),
                   "only a 200 carries a token");
    cr_assert_str_eq(e.code, "HTTP 401");

    cr_assert_null(deploy_login_parse(502, "<html>", 6, &secs, &e));
    cr_assert_str_eq(e.code, "HTTP 502");
}

Test(answers, nat_rules)
{
    const char *lb =
        "{\"properties\":{\"inboundNatRules\":["
        "{\"name\":\"tunnels.0\",\"properties\":{\"frontendPort\":10124,\"backendIPConfiguration\":"
        "{\"id\":\"/x/virtualMachineScaleSets/gw1-vmss/virtualMachines/0/networkInterfaces/nic/"
        "ipConfigurations/ipcfg\"}}},"
        "{\"name\":\"tunnels.1\",\"properties\":{\"frontendPort\":10127,\"backendIPConfiguration\":"
        "{\"id\":\"/x/virtualMachines/5/networkInterfaces/nic\"}}},"
        "{\"name\":\"ssh\",\"properties\":{\"frontendPort\":50000,\"backendIPConfiguration\":"
        "{\"id\":\"/x/virtualMachines/6/networkInterfaces/nic\"}}},"
        "{\"name\":\"bad\",\"properties\":{\"frontendPort\":\"10125\"}},"
        "{\"name\":\"noid\",\"properties\":{\"frontendPort\":10126,\"backendIPConfiguration\":"
        "{\"id\":\"/x/virtualMachines/\"}}},"
        "{\"name\":\"last\",\"properties\":{\"frontendPort\":10139,\"backendIPConfiguration\":"
        "{\"id\":\"/x/virtualMachines/12\"}}}]}}";
    struct deploy_nat nat[16];
    size_t n = deploy_arm_nat_parse(lb, strlen(lb), nat, 16);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(nat[0].vm_id, "0");
    cr_assert_eq(nat[0].instance, 0);
    cr_assert_str_eq(nat[1].vm_id, "5");
    cr_assert_eq(nat[1].instance, 3);
    cr_assert_str_eq(nat[2].vm_id, "12");
    cr_assert_eq(nat[2].instance, 15);
    cr_assert_eq(deploy_arm_nat_parse(lb, strlen(lb), nat, 1), 1, "bounded by max");
    cr_assert_eq(deploy_arm_nat_parse("{}", 2, nat, 16), 0);
    cr_assert_eq(deploy_arm_nat_parse("oops", 4, nat, 16), 0);
}

static const char *vm_state(const char *json)
{
    static char out[32];
    json_t *s = json_loads(json, 0, NULL);
    cr_assert_not_null(s);
    const char *detail;
    snprintf(out, sizeof(out), "%s", deploy_arm_vm_state(s, &detail));
    json_decref(s);
    return out;
}

Test(answers, vm_states)
{
    cr_assert_str_eq(vm_state("[{\"code\":\"ProvisioningState/succeeded\"},"
                              "{\"code\":\"PowerState/running\"}]"),
                     "Ready");
    cr_assert_str_eq(vm_state("[{\"code\":\"ProvisioningState/creating\"}]"), "Provisioning");
    cr_assert_str_eq(vm_state("[{\"code\":\"ProvisioningState/failed/AllocationFailed\"}]"),
                     "Error");
    cr_assert_str_eq(vm_state("[{\"code\":\"ProvisioningState/succeeded\"},"
                              "{\"code\":\"PowerState/deallocated\"}]"),
                     "Stopped");
    cr_assert_str_eq(vm_state("[{\"code\":\"PowerState/deallocating\"}]"), "Stopping");
    cr_assert_str_eq(vm_state("[{\"code\":\"PowerState/starting\"}]"), "Starting");
    cr_assert_str_eq(vm_state("[{\"code\":\"ProvisioningState/deleting\"}]"), "Deleting");
    cr_assert_str_eq(vm_state("[]"), "Provisioning");
    cr_assert_str_eq(vm_state("[1, {\"code\":5}]"), "Provisioning");

    json_t *s =
        json_loads("[{\"code\":\"ProvisioningState/failed\",\"message\":\"disk\"}]", 0, NULL);
    const char *detail;
    cr_assert_str_eq(deploy_arm_vm_state(s, &detail), "Error");
    cr_assert_str_eq(detail, "disk");
    json_decref(s);
}
