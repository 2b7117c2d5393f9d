/* cmgctl create | scale | status | stop | start | delete: the verbs of the
 * *-CMCloudManagementGateway cmdlets, for the local and the Azure provider. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "deploy.h"

static const char *const deploy_verbs[] = {"create", "scale", "status", "stop", "start", "delete"};

bool deploy_cmd_is_verb(const char *verb)
{
    for (size_t i = 0; verb && i < sizeof(deploy_verbs) / sizeof(deploy_verbs[0]); i++)
        if (strcmp(verb, deploy_verbs[i]) == 0)
            return true;
    return false;
}

void deploy_cmd_usage(FILE *f)
{
    fputs("       cmgctl create [--settings FILE] [--provider local|azure] [SETTINGS FLAGS]\n"
          "                  [--dry-run] [--json] [--quiet]\n"
          "       cmgctl scale N [--settings FILE] [--state DIR] [--dry-run] [--json]\n"
          "       cmgctl status|stop|start|delete [--settings FILE] [--state DIR] [--json]\n"
          "\n"
          "create, scale, status, stop, start, delete\n"
          "    Deploy the gateway as 1 to 16 instances: on this host (--provider local, the\n"
          "    default: one cmg-gateway process per instance) or in an Azure VM scale set\n"
          "    (--provider azure). Settings come from a settings file and/or flags named after\n"
          "    New-CMCloudManagementGateway's parameters; the state folder (--state) records what\n"
          "    was made. --gateway-setting SECTION.KEY=VALUE adds a line to every instance's\n"
          "    gateway.ini. Exit status: 0 done, 1 failed, 2 bad usage or settings (nothing\n"
          "    changed), 3 nothing deployed in the state folder. Full guide: docs/deploy.md.\n"
          "    Settings flags ([section] of the settings file):\n",
          f);
    deploy_settings_usage(f);
}

struct cmd_opts {
    const char *settings;
    bool json, dry_run, quiet, help;
    const char *count; /* scale N */
};

static int cmd_fail(const struct cmd_opts *o, int code, const char *msg)
{
    if (o->json) {
        json_t *e = json_pack("{s:s, s:i}", "error", msg, "exit", code);
        char *t = json_dumps(e, JSON_INDENT(2));
        printf("%s\n", t);
        free(t);
        json_decref(e);
    }
    fprintf(stderr, "cmgctl: %s\n", msg);
    return code;
}

static int cmd_msgs(const struct cmd_opts *o, const char *verb, struct deploy_msgs *m)
{
    char all[8192] = "";
    size_t off = 0;
    for (unsigned i = 0; i < m->n; i++) {
        if (!o->json)
            fprintf(stderr, "cmgctl: %s: %s\n", verb, m->text[i]);
        off += (size_t)snprintf(all + off, off < sizeof(all) ? sizeof(all) - off : 0, "%s%s",
                                i ? "\n" : "", m->text[i]);
    }
    if (o->json) {
        json_t *e = json_pack("{s:s, s:i}", "error", all, "exit", DEPLOY_EXIT_USAGE);
        char *t = json_dumps(e, JSON_INDENT(2));
        printf("%s\n", t);
        free(t);
        json_decref(e);
        for (unsigned i = 0; i < m->n; i++)
            fprintf(stderr, "cmgctl: %s: %s\n", verb, m->text[i]);
    }
    if (m->n)
        fputs("Try 'cmgctl --help'; settings: docs/deploy.md.\n", stderr);
    deploy_msgs_clear(m);
    return DEPLOY_EXIT_USAGE;
}

/* Parses argv (after the verb) into o and the settings. Returns 0, or an exit status. */
static int cmd_parse(const char *verb, int argc, char **argv, struct cmd_opts *o,
                     struct deploy_settings *ds, struct deploy_msgs *m)
{
    /* the settings file first: flags override it whatever their order */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o->json = true;
        if (strcmp(argv[i], "--settings") == 0 && i + 1 < argc)
            o->settings = argv[i + 1];
        else if (strncmp(argv[i], "--settings=", 11) == 0)
            o->settings = argv[i] + 11;
    }
    if (deploy_settings_load(ds, o->settings, m) != 0)
        return cmd_msgs(o, verb, m);
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            o->help = true;
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
            if (strcmp(verb, "scale") == 0 && !o->count) {
                o->count = arg;
                continue;
            }
            deploy_msgs_add(m, "unexpected argument \"%s\"", arg);
            continue;
        }
        char name[64];
        const char *eq = strchr(arg, '='), *value = NULL;
        snprintf(name, sizeof(name), "%.*s", (int)(eq ? eq - arg - 2 : (long)strlen(arg + 2)),
                 arg + 2);
        if (strcmp(name, "json") == 0 || strcmp(name, "dry-run") == 0 ||
            strcmp(name, "quiet") == 0) {
            *(strcmp(name, "json") == 0      ? &o->json
              : strcmp(name, "dry-run") == 0 ? &o->dry_run
                                             : &o->quiet) = true;
            continue;
        }
        if (eq)
            value = eq + 1;
        else if (deploy_settings_flag_is_switch(name))
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            deploy_msgs_add(m, "--%s needs a value", name);
            continue;
        }
        if (strcmp(name, "settings") == 0)
            continue;
        if (strcmp(name, "gateway-setting") == 0) {
            deploy_settings_add_gateway(ds, value, "--gateway-setting", m);
            continue;
        }
        int rc = deploy_settings_set_flag(ds, name, value, m);
        if (rc == 0)
            deploy_msgs_add(m, "unknown option --%s", name);
    }
    if (m->n)
        return cmd_msgs(o, verb, m);
    /* paths given on the command line are relative to where cmgctl runs */
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd))) {
        char **paths[] = {&ds->state,
                          &ds->service_cert_path,
                          &ds->service_cert_password_file,
                          &ds->server_app_secret_file,
                          &ds->server_app_cert_file,
                          &ds->server_app_key_file,
                          &ds->gateway_bin};
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
            core_path_resolve(paths[i], cwd);
        core_path_resolve_list(&ds->ca_root_certs, cwd);
        core_path_resolve_list(&ds->ca_intermediate_certs, cwd);
    }
    return 0;
}

static void cmd_print_status(json_t *res)
{
    printf("%s: %s (%s, %lld instance(s))\n",
           json_string_value(json_object_get(res, "service_name")),
           json_string_value(json_object_get(res, "state")),
           json_string_value(json_object_get(res, "provider")),
           (long long)json_integer_value(json_object_get(res, "instances")));
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(res, "instance_states"), i, o)
    {
        json_t *pid = json_object_get(o, "pid"), *vm = json_object_get(o, "vm");
        json_t *tun = json_object_get(o, "tunnels");
        printf("  instance %-2zu %-13s", i, json_string_value(json_object_get(o, "state")));
        if (json_integer_value(pid))
            printf(" pid %lld", (long long)json_integer_value(pid));
        if (vm)
            printf(" VM %s", json_string_value(vm));
        if (json_object_get(o, "tunnel"))
            printf(" tunnel %s", json_string_value(json_object_get(o, "tunnel")));
        if (tun)
            printf(" (%lld tunnel(s) from connection points)", (long long)json_integer_value(tun));
        if (json_object_get(o, "detail"))
            printf("\n      %s", json_string_value(json_object_get(o, "detail")));
        putchar('\n');
    }
    if (json_object_get(res, "alerts")) {
        printf("alerts:\n");
        deploy_alerts_print(json_object_get(res, "alerts"), stdout);
    }
}

int deploy_cmd_run(const char *verb, int argc, char **argv)
{
    struct cmd_opts o = {0};
    struct deploy_settings ds;
    struct deploy_msgs m = {0};
    struct deploy_progress prog;
    struct deploy_ctx c = {0};
    json_t *state = NULL;
    bool create = strcmp(verb, "create") == 0;
    int rc = cmd_parse(verb, argc, argv, &o, &ds, &m);
    if (rc != 0 || o.help) {
        if (o.help) {
            deploy_cmd_usage(stdout);
            rc = 0;
        }
        deploy_settings_free(&ds);
        return rc;
    }
    unsigned count = 0;
    if (strcmp(verb, "scale") == 0) {
        bool by_flag = false;
        for (int i = 0; i < argc; i++)
            by_flag |= strncmp(argv[i], "--vm-instance-count", 19) == 0;
        const char *v = o.count;
        char *end = NULL;
        unsigned long n = v ? strtoul(v, &end, 10) : ds.vm_instance_count;
        if ((!v && !by_flag) || (v && (*v < '0' || *v > '9' || *end)) || n < 1 ||
            n > DEPLOY_MAX_INSTANCES) {
            deploy_msgs_add(&m, "scale \"%s\": give the instance count, 1 to %d", v ? v : "",
                            DEPLOY_MAX_INSTANCES);
            rc = cmd_msgs(&o, verb, &m);
            goto out;
        }
        count = (unsigned)n;
    }

    /* What is deployed decides the provider of every verb but create. */
    char err[DEPLOY_MSG_MAX];
    if (!create) {
        state = deploy_state_read(ds.state, err, sizeof(err));
        if (!state) {
            rc = cmd_fail(&o, errno == ENOENT ? DEPLOY_EXIT_NO_STATE : DEPLOY_EXIT_FAILED, err);
            goto out;
        }
        ds.provider = strcmp(json_string_value(json_object_get(state, "provider"))
                                 ? json_string_value(json_object_get(state, "provider"))
                                 : "",
                             "azure") == 0
                          ? DEPLOY_PROVIDER_AZURE
                          : DEPLOY_PROVIDER_LOCAL;
    }
    if ((create || ds.provider == DEPLOY_PROVIDER_AZURE) && deploy_settings_check(&ds, &m) != 0) {
        rc = cmd_msgs(&o, verb, &m);
        goto out;
    }
    if (create) {
        state = deploy_state_read(ds.state, err, sizeof(err));
        if (state && ds.provider == DEPLOY_PROVIDER_LOCAL) {
            rc = cmd_fail(&o, DEPLOY_EXIT_USAGE,
                          "a local deployment already lives in this state folder: scale it, or "
                          "delete it first");
            goto out;
        }
        if (!state) /* a failed Azure create is run again to converge */
            state = json_object();
        if (!o.dry_run && mkdir(ds.state, 0755) != 0 && errno != EEXIST) {
            snprintf(err, sizeof(err), "%s: cannot create the state folder: %s", ds.state,
                     strerror(errno));
            rc = cmd_fail(&o, DEPLOY_EXIT_FAILED, err);
            goto out;
        }
    }
    if (!o.dry_run && access(ds.state, W_OK) == 0 && deploy_log_open(ds.state, err, sizeof(err)))
        fprintf(stderr, "cmgctl: %s (no deploy log)\n", err);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    deploy_progress_init(&prog, o.json, o.quiet || strcmp(verb, "status") == 0);
    c.ds = &ds;
    c.prog = &prog;
    c.dry_run = o.dry_run;
    c.state = state;
    LOG_INFO("cmgctl %s (%s provider), state %s", verb,
             ds.provider == DEPLOY_PROVIDER_AZURE ? "azure" : "local", ds.state);
    bool az = ds.provider == DEPLOY_PROVIDER_AZURE;
    if (create)
        rc = az ? deploy_azure_create(&c) : deploy_local_create(&c);
    else if (strcmp(verb, "scale") == 0)
        rc = az ? deploy_azure_scale(&c, count) : deploy_local_scale(&c, count);
    else if (strcmp(verb, "status") == 0)
        rc = az ? deploy_azure_status(&c) : deploy_local_status(&c);
    else if (strcmp(verb, "stop") == 0)
        rc = az ? deploy_azure_stop(&c) : deploy_local_stop(&c);
    else if (strcmp(verb, "start") == 0)
        rc = az ? deploy_azure_start(&c) : deploy_local_start(&c);
    else
        rc = az ? deploy_azure_delete(&c) : deploy_local_delete(&c);
    if (rc != 0) {
        LOG_ERROR("%s failed: %s", verb, c.err);
        rc = cmd_fail(&o, DEPLOY_EXIT_FAILED, c.err[0] ? c.err : "the operation failed");
    } else {
        if (!c.result)
            c.result = json_pack("{s:s, s:b}", "done", verb, "dry_run", o.dry_run);
        if (o.json) {
            char *t = json_dumps(c.result, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            printf("%s\n", t);
            free(t);
        } else if (strcmp(verb, "status") == 0) {
            cmd_print_status(c.result);
        } else if (!o.dry_run) {
            printf("%s: done\n", verb);
        }
        LOG_INFO("%s done", verb);
    }
    json_decref(c.result);
    curl_global_cleanup();
    deploy_log_close();
out:
    json_decref(state);
    deploy_msgs_clear(&m);
    deploy_settings_free(&ds);
    return rc;
}
