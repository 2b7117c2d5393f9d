/* The tunnel hello in both directions: vectors, round trips, refusals. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel.h"

Test(hello, gateway_hello_round_trip)
{
    struct tunnel_gateway_hello h = {.instance_id = 15, .workers = 2, .tunnels_wanted = 4}, back;
    char buf[128], err[256];
    int n = tunnel_gateway_hello_format(&h, buf, sizeof(buf));
    cr_assert_str_eq(buf, "/cmg/v1/hello?instance=15&workers=2&tunnels=4");
    cr_assert_eq(tunnel_gateway_hello_parse(buf, (size_t)n, &back, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(back.instance_id, 15);
    cr_assert_eq(back.workers, 2);
    cr_assert_eq(back.tunnels_wanted, 4);
    cr_assert_eq(tunnel_gateway_hello_format(&h, buf, 10), -1);
}

Test(hello, gateway_hello_instances)
{
    struct tunnel_gateway_hello h = {
        .instance_id = 3, .workers = 2, .tunnels_wanted = 2, .instances = 4};
    struct tunnel_gateway_hello back;
    char buf[128], err[256];
    int n = tunnel_gateway_hello_format(&h, buf, sizeof(buf));
    cr_assert_str_eq(buf, "/cmg/v1/hello?instance=3&workers=2&tunnels=2&instances=4");
    cr_assert_eq(tunnel_gateway_hello_parse(buf, (size_t)n, &back, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(back.instances, 4);
    cr_assert_eq(back.instance_id, 3);
    /* without the count (older gateways): 0, the connector keeps its own */
    const char *old = "/cmg/v1/hello?instance=0&workers=1&tunnels=1";
    cr_assert_eq(tunnel_gateway_hello_parse(old, strlen(old), &back, err, sizeof(err)), 0);
    cr_assert_eq(back.instances, 0);
}

Test(hello, gateway_hello_refusals)
{
    const char *bad[] = {
        "/cmg/v1/hello",
        "/cmg/v1/other?instance=0&workers=1&tunnels=1",
        "/cmg/v1/hello?instance=16&workers=1&tunnels=1",
        "/cmg/v1/hello?instance=0&workers=0&tunnels=1",
        "/cmg/v1/hello?instance=0&workers=2&tunnels=1",
        "/cmg/v1/hello?instance=0&workers=1",
        "/cmg/v1/hello?instance=0&instance=1&workers=1&tunnels=1",
        "/cmg/v1/hello?instance=0&workers=1&tunnels=1&extra=2",
        "/cmg/v1/hello?instance=x&workers=1&tunnels=1",
        "/cmg/v1/hello?instance&workers=1&tunnels=1",
        "/cmg/v1/hello?instance=-1&workers=1&tunnels=1",
        "/cmg/v1/hello?instance=0&workers=1&tunnels=1&instances=0",
        "/cmg/v1/hello?instance=4&workers=1&tunnels=1&instances=4",
        "/cmg/v1/hello?instance=0&workers=1&tunnels=1&instances=17",
        "/cmg/v1/hello?instance=0&workers=1&tunnels=1&instances=2&instances=2",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tunnel_gateway_hello h;
        char err[256] = "";
        cr_assert_eq(tunnel_gateway_hello_parse(bad[i], strlen(bad[i]), &h, err, sizeof(err)), -1,
                     "%s", bad[i]);
        cr_assert_neq(err[0], '\0');
    }
}

Test(hello, reply_round_trip)
{
    struct tunnel_hello_reply r = {.version = 1, .nendpoints = 2};
    strcpy(r.connector, "cp1.contoso.com");
    strcpy(r.site, "PS1");
    r.endpoints[0] = (struct tunnel_endpoint){18446744073709551615ull, TUNNEL_ROLE_MP};
    r.endpoints[1] = (struct tunnel_endpoint){72057594037927939ull, TUNNEL_ROLE_SUP};
    char *json = tunnel_hello_reply_encode(&r);
    cr_assert_not_null(json);
    cr_assert(strstr(json, "\"role_id\":\"18446744073709551615\""), "%s", json);
    struct tunnel_hello_reply back;
    char err[256];
    cr_assert_eq(tunnel_hello_reply_parse(json, strlen(json), &back, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(back.connector, "cp1.contoso.com");
    cr_assert_str_eq(back.site, "PS1");
    cr_assert_eq(back.nendpoints, 2);
    cr_assert_eq(back.endpoints[0].role_id, 18446744073709551615ull);
    cr_assert_eq(back.endpoints[0].kind, TUNNEL_ROLE_MP);
    cr_assert_eq(back.endpoints[1].kind, TUNNEL_ROLE_SUP);
    free(json);
}

struct bad_reply {
    const char *json;
    const char *why;
};

Test(hello, reply_refusals)
{
    struct bad_reply bad[] = {
        {"not json", "not JSON"},
        {"{\"version\":2,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":[]}", "version 2"},
        {"{\"version\":1,\"connector\":\"\",\"site\":\"PS1\",\"endpoints\":[]}", "connector id"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS\",\"endpoints\":[]}", "site code"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":{}}", "endpoints"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":[],\"x\":1}", ""},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":"
         "[{\"role_id\":\"12a\",\"kind\":\"MP\"}]}",
         "role id"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":"
         "[{\"role_id\":\"18446744073709551616\",\"kind\":\"MP\"}]}",
         "role id"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":"
         "[{\"role_id\":\"1\",\"kind\":\"DP\"}]}",
         "kind"},
        {"{\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":"
         "[{\"role_id\":\"1\",\"kind\":\"MP\"},{\"role_id\":\"1\",\"kind\":\"SUP\"}]}",
         "twice"},
        {"{\"version\":1,\"version\":1,\"connector\":\"c\",\"site\":\"PS1\",\"endpoints\":[]}",
         "not JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tunnel_hello_reply r;
        char err[256] = "";
        cr_assert_eq(tunnel_hello_reply_parse(bad[i].json, strlen(bad[i].json), &r, err,
                                              sizeof(err)),
                     -1, "case %zu", i);
        cr_assert(strstr(err, bad[i].why), "case %zu: \"%s\"", i, err);
    }
}
