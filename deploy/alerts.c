/* The deployment's alerts as cmgctl status reports them: the storage its content store uses
 * against the storage alert threshold (ok, warning, critical), and the traffic alert's
 * settings, which nothing measures yet (said so, not shown as ok). */
#include <stdlib.h>
#include <string.h>

#include "content.h"
#include "deploy.h"

#define GIB (1024ull * 1024 * 1024)

const char *deploy_alert_state(uint64_t used, uint64_t threshold, uint64_t warning_pct,
                               uint64_t critical_pct)
{
    /* used * 100 against pct * threshold, without overflow for any 64-bit size */
    unsigned __int128 scaled = (unsigned __int128)used * 100;
    if (scaled >= (unsigned __int128)critical_pct * threshold)
        return "critical";
    if (scaled >= (unsigned __int128)warning_pct * threshold)
        return "warning";
    return "ok";
}

static int alerts_sum_cb(void *ctx, const struct content_blob_info *info)
{
    *(uint64_t *)ctx += info->size;
    return 0;
}

int deploy_storage_used(const char *gateway_ini, bool *enabled, uint64_t *used, char *err,
                        size_t errlen)
{
    struct content_settings s;
    struct config_report r;
    int rc = -1;
    *used = 0;
    *enabled = false;
    memset(&s, 0, sizeof(s));
    if (content_settings_load(gateway_ini, &s, &r) != 0) {
        snprintf(err, errlen, "%s", r.nerrors ? r.errors[0] : gateway_ini);
        goto out;
    }
    char *dir = core_dirname(gateway_ini);
    int frc = content_settings_finish(&s, dir ? dir : ".", err, errlen);
    free(dir);
    if (frc != 0)
        goto out;
    rc = deploy_storage_used_of(&s, enabled, used, err, errlen);
out:
    content_settings_free(&s);
    config_report_deinit(&r);
    return rc;
}

int deploy_storage_used_of(const struct content_settings *s, bool *enabled, uint64_t *used,
                           char *err, size_t errlen)
{
    struct content_store *st = NULL;
    int rc = -1;
    *used = 0;
    *enabled = s->enabled;
    if (!s->enabled)
        return 0;
    if (!(st = content_store_new(s, err, errlen)))
        return -1;
    /* every blob counts, manifests included: what the storage bills */
    int lrc = content_store_list(st, NULL, alerts_sum_cb, used, err, errlen);
    if (lrc == 0 || lrc == CONTENT_STORE_ENOTFOUND) /* no container yet: nothing stored */
        rc = 0;
    content_store_free(st);
    return rc;
}

static json_int_t alerts_int(json_t *o, const char *k, json_int_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* The storage alert's part of status: used is read from gateway_ini or cs (one of them), or
 * unknown with why when neither. */
static json_t *alerts_json(json_t *settings, const char *gateway_ini,
                           const struct content_settings *cs, const char *why)
{
    json_t *sa = json_object_get(settings, "storage_alert");
    json_t *ta = json_object_get(settings, "traffic_alert");
    uint64_t gb = (uint64_t)alerts_int(sa, "threshold_gb", 2000);
    uint64_t warn = (uint64_t)alerts_int(sa, "warning_pct", 50);
    uint64_t crit = (uint64_t)alerts_int(sa, "critical_pct", 90);
    json_t *storage = json_pack(
        "{s:b, s:I, s:I, s:I, s:I}", "enabled", json_is_true(json_object_get(sa, "enabled")),
        "threshold_gb", (json_int_t)gb, "threshold", (json_int_t)(gb * GIB), "warning_percent",
        (json_int_t)warn, "critical_percent", (json_int_t)crit);
    char err[DEPLOY_MSG_MAX];
    uint64_t used = 0;
    bool content = false;
    if (!gateway_ini && !cs) {
        json_object_set_new(storage, "state", json_string("unknown"));
        json_object_set_new(storage, "detail",
                            json_string(why ? why
                                            : "the instances' content store is not read from "
                                              "here: cmgctl content list reports it"));
    } else if ((gateway_ini ? deploy_storage_used(gateway_ini, &content, &used, err, sizeof(err))
                            : deploy_storage_used_of(cs, &content, &used, err, sizeof(err))) != 0) {
        json_object_set_new(storage, "state", json_string("unknown"));
        json_object_set_new(storage, "detail", json_string(err));
    } else if (!content) {
        json_object_set_new(storage, "state", json_string("off"));
        json_object_set_new(storage, "detail",
                            json_string("content is off (enable_cloud_dp_function = false)"));
    } else {
        json_object_set_new(storage, "used", json_integer((json_int_t)used));
        json_object_set_new(storage, "percent",
                            json_real((double)used * 100.0 / (double)(gb * GIB)));
        json_object_set_new(storage, "state",
                            json_string(deploy_alert_state(used, gb * GIB, warn, crit)));
    }
    json_t *traffic = json_pack(
        "{s:b, s:I, s:I, s:I, s:b, s:b, s:s}", "enabled",
        json_is_true(json_object_get(ta, "enabled")), "threshold_gb",
        alerts_int(ta, "threshold_gb", 10000), "warning_percent", alerts_int(ta, "warning_pct", 50),
        "critical_percent", alerts_int(ta, "critical_pct", 90), "stop_service",
        json_is_true(json_object_get(ta, "stop_service")), "measured", 0, "detail",
        "outbound traffic is not counted yet: this alert is neither raised nor enforced");
    return json_pack("{s:o, s:o}", "storage", storage, "traffic", traffic);
}

json_t *deploy_alerts_json(json_t *settings, const char *gateway_ini)
{
    return alerts_json(settings, gateway_ini, NULL, NULL);
}

json_t *deploy_alerts_json_of(json_t *settings, const struct content_settings *cs, const char *why)
{
    return alerts_json(settings, NULL, cs, why);
}

void deploy_alerts_print(json_t *alerts, FILE *f)
{
    json_t *s = json_object_get(alerts, "storage"), *t = json_object_get(alerts, "traffic");
    const char *state = json_string_value(json_object_get(s, "state"));
    json_int_t gb = json_integer_value(json_object_get(s, "threshold_gb"));
    if (json_object_get(s, "used")) {
        double used_gib = (double)json_integer_value(json_object_get(s, "used")) / (double)GIB;
        fprintf(f, "  storage: %.3f GB used of the %lld GB alert threshold (%.1f %%): %s%s\n",
                used_gib, (long long)gb, json_real_value(json_object_get(s, "percent")),
                state ? state : "unknown",
                json_is_true(json_object_get(s, "enabled")) ? ""
                                                            : " (storage alert off: not raised)");
        fprintf(f, "      warning at %lld %%, critical at %lld %%\n",
                (long long)json_integer_value(json_object_get(s, "warning_percent")),
                (long long)json_integer_value(json_object_get(s, "critical_percent")));
    } else {
        fprintf(f, "  storage: %s (alert threshold %lld GB): %s\n", state ? state : "unknown",
                (long long)gb, json_string_value(json_object_get(s, "detail")));
    }
    fprintf(f, "  traffic: alert threshold %lld GB in 14 days%s: %s\n",
            (long long)json_integer_value(json_object_get(t, "threshold_gb")),
            json_is_true(json_object_get(t, "enabled")) ? "" : " (off)",
            json_string_value(json_object_get(t, "detail")));
}
