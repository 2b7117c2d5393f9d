/* Path classification: which gateway endpoint, which authentication. */
#include <criterion/criterion.h>
#include <string.h>

#include "auth.h"

struct route_case {
    const char *path;
    enum auth_route_kind kind;
    enum auth_scheme scheme;
    uint64_t role_id;
    const char *rest;
};

Test(route, table)
{
    struct route_case cases[] = {
        {"/CCM_Proxy_MutualAuth/ServiceMetadata", AUTH_ROUTE_SERVICE_METADATA, AUTH_SCHEME_NONE, 0,
         NULL},
        {"/CCM_Proxy_ServerAuth/ServiceMetadata", AUTH_ROUTE_SERVICE_METADATA, AUTH_SCHEME_NONE, 0,
         NULL},
        {"/ccm_proxy_mutualauth/servicemetadata", AUTH_ROUTE_SERVICE_METADATA, AUTH_SCHEME_NONE, 0,
         NULL},
        {"/CCM_Proxy_ServerAuth/AADAuthInfo", AUTH_ROUTE_AAD_AUTH_INFO, AUTH_SCHEME_NONE, 0, NULL},
        {"/CCM_Proxy_MutualAuth/AADAuthInfo", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
        {"/CCM_Proxy_MutualAuth/72057594037927939/SMS_MP/.sms_aut", AUTH_ROUTE_ROLE,
         AUTH_SCHEME_MUTUAL, 72057594037927939ull, "/SMS_MP/.sms_aut"},
        {"/CCM_PROXY_SERVERAUTH/72057594037937981/CCM_STS", AUTH_ROUTE_ROLE, AUTH_SCHEME_BEARER,
         72057594037937981ull, "/CCM_STS"},
        {"/CCM_Proxy_ServerAuth/981", AUTH_ROUTE_ROLE, AUTH_SCHEME_BEARER, 981, "/"},
        {"/CCM_Proxy_ServerAuth/99999999999999999999/x", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0,
         NULL},
        {"/CCM_Proxy_ServerAuth/12a/x", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
        {"/CCM_Proxy_ServerAuth/", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
        {"/CCM_Proxy_ServerAuthX/1/x", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
        {"/CCM_Proxy_MutualAuth/ServiceMetadata/extra", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0,
         NULL},
        {"/downloadrestservice.svc/getcontentxmlsecure", AUTH_ROUTE_CONTENT_LOCATION,
         AUTH_SCHEME_NONE, 0, NULL},
        {"/", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
        {"", AUTH_ROUTE_UNKNOWN, AUTH_SCHEME_NONE, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct auth_route r;
        enum auth_route_kind k = auth_route_classify(cases[i].path, strlen(cases[i].path), &r);
        cr_assert_eq(k, cases[i].kind, "%s: kind %d", cases[i].path, k);
        cr_assert_eq(r.scheme, cases[i].scheme, "%s: scheme %d", cases[i].path, r.scheme);
        cr_assert_eq(r.role_id, cases[i].role_id, "%s", cases[i].path);
        if (cases[i].rest) {
            cr_assert_eq(r.rest_len, strlen(cases[i].rest), "%s", cases[i].path);
            cr_assert(memcmp(r.rest, cases[i].rest, r.rest_len) == 0, "%s", cases[i].path);
        }
    }
}

Test(route, scheme_names)
{
    cr_assert_str_eq(auth_scheme_name(AUTH_SCHEME_MUTUAL), "client-certificate");
    cr_assert_str_eq(auth_scheme_name(AUTH_SCHEME_BEARER), "bearer-token");
    cr_assert_str_eq(auth_scheme_name(AUTH_SCHEME_NONE), "none");
}
