/* The local provider: instances 0..N-1 as cmg-gateway processes on this host, sharing the
 * client port (SO_REUSEPORT), each with its tunnel port (base + i) and admin port, its folder
 * under the state folder, and its PID in state.json. Only processes whose command line names
 * their own instance's configuration are ever signalled. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "deploy.h"

#define LOCAL_READY_MS 60000 /* an instance that does not answer /healthz by then failed */
#define LOCAL_STOP_MS 60000  /* drain_timeout (30 s) and then some, before SIGKILL */

static void local_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static unsigned jnum(json_t *o, const char *k)
{
    return (unsigned)json_integer_value(json_object_get(o, k));
}

static void local_paths(const char *state, unsigned i, char *dir, char *ini, char *out, size_t len)
{
    snprintf(dir, len, "%s/instance-%u", state, i);
    snprintf(ini, len, "%s/gateway.ini", dir);
    snprintf(out, len, "%s/stderr.txt", dir);
}

/* host part of "host:port" */
static void local_host(const char *listen, char *host, size_t len)
{
    const char *colon = strrchr(listen, ':');
    snprintf(host, len, "%.*s", colon ? (int)(colon - listen) : 0, listen);
    if (!*host || strcmp(host, "0.0.0.0") == 0)
        snprintf(host, len, "127.0.0.1");
}

/* cmg-gateway: the setting, $CMG_GATEWAY, beside cmgctl (installed), the build tree, PATH. */
static void local_gateway_bin(const struct deploy_settings *ds, char *out, size_t len)
{
    const char *env = getenv("CMG_GATEWAY");
    char self[PATH_MAX], cand[PATH_MAX + 64];
    if (ds && ds->gateway_bin && *ds->gateway_bin) {
        snprintf(out, len, "%s", ds->gateway_bin);
        return;
    }
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *dir = dirname(self);
        snprintf(cand, sizeof(cand), "%s/cmg-gateway", dir);
        if (access(cand, X_OK) == 0) {
            snprintf(out, len, "%s", cand);
            return;
        }
        snprintf(cand, sizeof(cand), "%s/../gateway/cmg-gateway", dir);
        if (access(cand, X_OK) == 0 && realpath(cand, self)) {
            snprintf(out, len, "%s", self);
            return;
        }
    }
    snprintf(out, len, "cmg-gateway");
}

/* Whether pid is the gateway of the instance configured by ini (and not a zombie). Between
 * fork and exec (starting) the command line is still cmgctl's. */
static bool local_is_ours_or_starting(pid_t pid, const char *ini, bool starting)
{
    char path[64], buf[8192];
    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    if (!rp || rp[1] != ' ' || rp[2] == 'Z' || rp[2] == 'X')
        return false;
    if (starting)
        return true; /* our own child, forked a moment ago: alive is enough */
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, ini) != NULL || (starting && strstr(buf, "cmgctl") != NULL);
}

static bool local_is_ours(pid_t pid, const char *ini)
{
    return local_is_ours_or_starting(pid, ini, false);
}

/* Starts the gateway detached (its own session, reparented away from cmgctl, output to out).
 * Returns its pid, or -1. */
static pid_t local_spawn(const char *bin, const char *ini, const char *out)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    pid_t child = fork();
    if (child < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (child == 0) {
        setsid();
        pid_t g = fork();
        if (g == 0) {
            int nul = open("/dev/null", O_RDONLY);
            int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (nul < 0 || fd < 0)
                _exit(126);
            dup2(nul, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            execl(bin, bin, "-c", ini, (char *)NULL);
            dprintf(2, "cmgctl: cannot run %s: %s\n", bin, strerror(errno));
            _exit(127);
        }
        ssize_t w = write(pfd[1], &g, sizeof(g));
        _exit(w == sizeof(g) ? 0 : 1);
    }
    close(pfd[1]);
    pid_t g = -1;
    waitpid(child, NULL, 0);
    if (read(pfd[0], &g, sizeof(g)) != sizeof(g))
        g = -1;
    close(pfd[0]);
    return g;
}

static size_t local_discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

/* GET http://addr/path; returns the status, 0 when nothing answered. */
static long local_http(const char *addr, const char *path, char **body)
{
    char url[256];
    long status = 0;
    snprintf(url, sizeof(url), "http://%s%s", addr, path);
    CURL *h = curl_easy_init();
    if (!h)
        return 0;
    FILE *mem = NULL;
    size_t len = 0;
    if (body)
        mem = open_memstream(body, &len);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (mem)
        curl_easy_setopt(h, CURLOPT_WRITEDATA, mem);
    else
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, local_discard);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (mem)
        fclose(mem);
    return status;
}

/* The last lines of a file, for an error message. */
static void local_tail(const char *path, char *out, size_t len)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    *out = '\0';
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    const char *p = buf + n;
    for (int lines = 0; p > buf && lines < 3; p--)
        if (p[-1] == '\n')
            lines++;
    snprintf(out, len, "%s", p);
}

/* Rewrites the per-instance keys of a gateway.ini (written by cmgctl: one key a line);
 * await_ms < 0 keeps the instance's gateway.await_tunnel. */
static int local_ini_rewrite(const char *in, const char *out, unsigned id, unsigned count,
                             long long await_ms, const char *tunnel, const char *admin,
                             const char *log)
{
    FILE *f = fopen(in, "r");
    char *text = NULL, line[4096], section[64] = "", tmp[PATH_MAX];
    size_t len = 0;
    if (!f)
        return -1;
    FILE *o = open_memstream(&text, &len);
    while (fgets(line, sizeof(line), f)) {
        char key[64];
        if (line[0] == '[') {
            sscanf(line, "[%63[^]]", section);
        } else if (sscanf(line, "%63s =", key) == 1) {
            if (strcmp(section, "gateway") == 0 && strcmp(key, "instance_id") == 0)
                snprintf(line, sizeof(line), "instance_id = %u\n", id);
            else if (strcmp(section, "gateway") == 0 && strcmp(key, "instances") == 0 &&
                     await_ms >= 0)
                snprintf(line, sizeof(line), "instances = %u\nawait_tunnel = %lldms\n", count,
                         await_ms);
            else if (strcmp(section, "gateway") == 0 && strcmp(key, "instances") == 0)
                snprintf(line, sizeof(line), "instances = %u\n", count);
            else if (strcmp(section, "gateway") == 0 && strcmp(key, "await_tunnel") == 0 &&
                     await_ms >= 0)
                continue; /* written after instances */
            else if (strcmp(section, "tunnel") == 0 && strcmp(key, "listen") == 0)
                snprintf(line, sizeof(line), "listen = %s\n", tunnel);
            else if (strcmp(section, "admin") == 0 && strcmp(key, "listen") == 0)
                snprintf(line, sizeof(line), "listen = %s\n", admin);
            else if (strcmp(section, "log") == 0 && strcmp(key, "file") == 0)
                snprintf(line, sizeof(line), "file = %s\n", log);
        } else if (line[0] == ';' && strstr(line, " instance ")) {
            snprintf(line, sizeof(line),
                     "; instance %u of %u, written by cmgctl from the deployment's settings.\n", id,
                     count);
        }
        fputs(line, o);
    }
    fclose(f);
    fclose(o);
    snprintf(tmp, sizeof(tmp), "%s.tmp", out);
    FILE *w = fopen(tmp, "w");
    int rc = w && fwrite(text, 1, len, w) == len ? 0 : -1;
    if (w && fclose(w) != 0)
        rc = -1;
    if (rc == 0 && rename(tmp, out) != 0)
        rc = -1;
    free(text);
    return rc;
}

struct local_place {
    char tunnel[300], admin[300], log[PATH_MAX], dir[PATH_MAX], ini[PATH_MAX], out[PATH_MAX];
};

static void local_place(json_t *st, unsigned i, struct local_place *p)
{
    char host[256];
    local_host(jstr(st, "listen"), host, sizeof(host));
    local_paths(jstr(st, "state"), i, p->dir, p->ini, p->out, sizeof(p->dir));
    snprintf(p->tunnel, sizeof(p->tunnel), "%s:%u", host, jnum(st, "tunnel_port_base") + i);
    snprintf(p->admin, sizeof(p->admin), "%s:%u", host, jnum(st, "admin_port_base") + i);
    snprintf(p->log, sizeof(p->log), "%s/CMGService.log", p->dir);
}

static pid_t local_pid(json_t *st, unsigned i)
{
    return (pid_t)json_integer_value(json_array_get(json_object_get(st, "pids"), i));
}

static void local_set_pid(json_t *st, unsigned i, pid_t pid)
{
    json_t *pids = json_object_get(st, "pids");
    while (json_array_size(pids) <= i)
        json_array_append_new(pids, json_integer(0));
    json_array_set_new(pids, i, json_integer(pid));
}

/* Starts instance i (config already written) and waits until it answers /healthz. */
static int local_start_one(struct deploy_ctx *c, unsigned i)
{
    struct local_place p;
    local_place(c->state, i, &p);
    deploy_progress_step(c->prog, "starting instance %u (tunnel port %s)", i, p.tunnel);
    pid_t old = local_pid(c->state, i);
    if (local_is_ours(old, p.ini)) {
        deploy_progress_done(c->prog, "already running");
        return 0;
    }
    pid_t pid = local_spawn(jstr(c->state, "gateway_bin"), p.ini, p.out);
    if (pid <= 0) {
        snprintf(c->err, sizeof(c->err), "instance %u: cannot start %s: %s", i,
                 jstr(c->state, "gateway_bin"), strerror(errno));
        return -1;
    }
    local_set_pid(c->state, i, pid);
    uint64_t deadline = core_now_ms() + LOCAL_READY_MS;
    while (core_now_ms() < deadline) {
        if (!local_is_ours_or_starting(pid, p.ini, true)) {
            char tail[2048];
            local_tail(p.out, tail, sizeof(tail));
            snprintf(c->err, sizeof(c->err), "instance %u exited at start (%s):\n%s", i, p.out,
                     tail);
            local_set_pid(c->state, i, 0);
            return -1;
        }
        if (local_http(p.admin, "/healthz", NULL) == 200) {
            char r[64];
            snprintf(r, sizeof(r), "ready, pid %d", (int)pid);
            deploy_progress_done(c->prog, r);
            return 0;
        }
        deploy_progress_wait(c->prog, "Provisioning");
        local_sleep_ms(100);
    }
    snprintf(c->err, sizeof(c->err),
             "instance %u (pid %d) did not answer http://%s/healthz within %d s; see %s", i,
             (int)pid, p.admin, LOCAL_READY_MS / 1000, p.out);
    return -1;
}

static int local_stop_one(struct deploy_ctx *c, unsigned i)
{
    struct local_place p;
    local_place(c->state, i, &p);
    pid_t pid = local_pid(c->state, i);
    if (!local_is_ours(pid, p.ini)) {
        local_set_pid(c->state, i, 0);
        return 0;
    }
    deploy_progress_step(c->prog, "stopping instance %u (pid %d)", i, (int)pid);
    kill(pid, SIGTERM);
    uint64_t deadline = core_now_ms() + LOCAL_STOP_MS;
    while (local_is_ours(pid, p.ini) && core_now_ms() < deadline) {
        deploy_progress_wait(c->prog, "draining");
        local_sleep_ms(50);
    }
    if (local_is_ours(pid, p.ini)) {
        kill(pid, SIGKILL);
        while (local_is_ours(pid, p.ini))
            local_sleep_ms(20);
        deploy_progress_done(c->prog, "killed after the drain time");
    } else {
        deploy_progress_done(c->prog, "stopped");
    }
    local_set_pid(c->state, i, 0);
    return 0;
}

/* Tunnels open on the instance at admin, from its /metrics; -1 when unknown. */
static long local_tunnels_open(const char *admin)
{
    char *body = NULL;
    long tunnels = -1;
    if (local_http(admin, "/metrics", &body) == 200 && body) {
        const char *m = strstr(body, "\ncmg_tunnels_open");
        if (m && (m = strchr(m + 1, ' ')))
            tunnels = strtol(m + 1, NULL, 10);
    }
    free(body);
    return tunnels;
}

/* Waits until instance i takes clients: a connection point's tunnel reached it, or its
 * await_tunnel passed (it takes clients anyway then, and says so). */
static void local_await_tunnel(struct deploy_ctx *c, unsigned i, uint64_t await_ms)
{
    struct local_place p;
    local_place(c->state, i, &p);
    deploy_progress_step(c->prog, "instance %u: waiting for a connection point's tunnel", i);
    uint64_t deadline = core_now_ms() + await_ms + LOCAL_READY_MS;
    const char *result = "still waiting: see cmgctl status";
    while (core_now_ms() < deadline) {
        char *body = NULL;
        long st = local_http(p.admin, "/readyz", &body);
        bool waiting = st == 503 && body && strstr(body, "awaiting tunnel");
        free(body);
        if (st == 200) {
            result = local_tunnels_open(p.admin) > 0
                         ? "tunnel up, taking clients"
                         : "no tunnel within await_tunnel: taking clients without one";
            break;
        }
        if (!waiting) {
            result = "not taking clients: see cmgctl status";
            break;
        }
        deploy_progress_wait(c->prog, "Provisioning");
        local_sleep_ms(100);
    }
    deploy_progress_done(c->prog, result);
}

static int local_save(struct deploy_ctx *c)
{
    return deploy_state_write(jstr(c->state, "state"), c->state, c->err, sizeof(c->err));
}

/* Writes instance i's gateway.ini from instance 0's (or from the settings for 0); await_ms as
 * for local_ini_rewrite. */
static int local_write_config(struct deploy_ctx *c, unsigned i, unsigned count, long long await_ms)
{
    struct local_place p, p0;
    local_place(c->state, i, &p);
    local_place(c->state, 0, &p0);
    if (mkdir(p.dir, 0755) != 0 && errno != EEXIST) {
        snprintf(c->err, sizeof(c->err), "%s: %s", p.dir, strerror(errno));
        return -1;
    }
    if (local_ini_rewrite(p0.ini, p.ini, i, count, await_ms, p.tunnel, p.admin, p.log) != 0) {
        snprintf(c->err, sizeof(c->err), "%s: cannot write the configuration: %s", p.ini,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static json_t *local_instances_json(json_t *st, unsigned count, bool probe)
{
    json_t *arr = json_array();
    bool stopped = json_is_true(json_object_get(st, "stopped"));
    for (unsigned i = 0; i < count; i++) {
        struct local_place p;
        local_place(st, i, &p);
        pid_t pid = local_pid(st, i);
        const char *state = "Ready", *detail = NULL;
        char tail[1024] = "";
        long tunnels = -1;
        if (!local_is_ours(pid, p.ini)) {
            state = stopped ? "Stopped" : "Error";
            if (!stopped) {
                local_tail(p.out, tail, sizeof(tail));
                detail = *tail ? tail : "the process is not running";
            }
            pid = 0;
        } else if (probe) {
            char *body = NULL;
            if (local_http(p.admin, "/healthz", NULL) != 200) {
                state = "Provisioning";
            } else if (local_http(p.admin, "/readyz", &body) == 503 && body &&
                       strstr(body, "awaiting tunnel")) {
                state = "Provisioning";
                detail = "waiting for a connection point's tunnel before taking clients "
                         "(gateway.await_tunnel)";
            } else {
                tunnels = local_tunnels_open(p.admin);
            }
            free(body);
        }
        json_t *o = json_pack("{s:i, s:s, s:i, s:s, s:s}", "instance", (int)i, "state", state,
                              "pid", (int)pid, "tunnel", p.tunnel, "admin", p.admin);
        if (detail)
            json_object_set_new(o, "detail", json_string(detail));
        if (tunnels >= 0)
            json_object_set_new(o, "tunnels", json_integer(tunnels));
        json_array_append_new(arr, o);
    }
    return arr;
}

static int local_signal_all(struct deploy_ctx *c, unsigned count, int sig)
{
    for (unsigned i = 0; i < count; i++) {
        struct local_place p;
        local_place(c->state, i, &p);
        pid_t pid = local_pid(c->state, i);
        if (local_is_ours(pid, p.ini))
            kill(pid, sig);
    }
    return 0;
}

int deploy_local_create(struct deploy_ctx *c)
{
    struct deploy_settings *ds = c->ds;
    unsigned n = (unsigned)ds->vm_instance_count;
    char bin[PATH_MAX], pw[PATH_MAX];
    local_gateway_bin(ds, bin, sizeof(bin));
    json_t *pids = json_array();
    json_object_set_new(c->state, "provider", json_string("local"));
    json_object_set_new(c->state, "state", json_string(ds->state));
    json_object_set_new(c->state, "service_name", json_string(ds->service_name));
    json_object_set_new(c->state, "listen", json_string(ds->listen));
    json_object_set_new(c->state, "tunnel_port_base",
                        json_integer((json_int_t)ds->tunnel_port_base));
    json_object_set_new(c->state, "admin_port_base", json_integer((json_int_t)ds->admin_port_base));
    json_object_set_new(c->state, "gateway_bin", json_string(bin));
    json_object_set_new(c->state, "await_tunnel_ms", json_integer((json_int_t)ds->await_tunnel));
    json_object_set_new(c->state, "instances", json_integer(n));
    json_object_set_new(c->state, "stopped", json_false());
    json_object_set_new(c->state, "pids", pids);
    json_object_set_new(c->state, "settings", deploy_settings_json(ds));
    if (c->dry_run) {
        deploy_progress_note(c->prog,
                             "would start %u cmg-gateway process(es) (%s) on %s, tunnel "
                             "ports %llu..%llu, state in %s",
                             n, bin, ds->listen, (unsigned long long)ds->tunnel_port_base,
                             (unsigned long long)ds->tunnel_port_base + n - 1, ds->state);
        c->result = json_deep_copy(c->state);
        return 0;
    }

    /* the PFX password, for every instance, readable by this user only */
    snprintf(pw, sizeof(pw), "%s/pfx-password.txt", ds->state);
    int fd = open(pw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || core_write_all(fd, ds->password ? ds->password : "",
                                 ds->password ? strlen(ds->password) : 0) != 0) {
        snprintf(c->err, sizeof(c->err), "%s: %s", pw, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    struct local_place p0;
    local_place(c->state, 0, &p0);
    if (mkdir(p0.dir, 0755) != 0 && errno != EEXIST) {
        snprintf(c->err, sizeof(c->err), "%s: %s", p0.dir, strerror(errno));
        return -1;
    }
    char store[PATH_MAX];
    snprintf(store, sizeof(store), "%s/content-store", ds->state);
    struct deploy_gw_place gp = {.instance_id = 0,
                                 .instances = n,
                                 .content_folder = store,
                                 .listen = ds->listen,
                                 .tunnel_listen = p0.tunnel,
                                 .admin_listen = p0.admin,
                                 .pfx_file = ds->service_cert_path,
                                 .pfx_password_file = pw,
                                 .log_file = p0.log};
    FILE *f = fopen(p0.ini, "w");
    if (!f || deploy_gateway_ini(ds, &gp, f) != 0 || fclose(f) != 0) {
        snprintf(c->err, sizeof(c->err), "%s: cannot write: %s", p0.ini, strerror(errno));
        return -1;
    }
    int rc = local_save(c);
    for (unsigned i = 1; rc == 0 && i < n; i++)
        rc = local_write_config(c, i, n, 0);
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        rc = local_start_one(c, i);
        if (local_save(c) != 0)
            rc = -1;
    }
    if (rc == 0) {
        c->result = json_pack("{s:s, s:s, s:s, s:i, s:o}", "provider", "local", "service_name",
                              ds->service_name, "listen", ds->listen, "instances", (int)n,
                              "instance_states", local_instances_json(c->state, n, false));
        deploy_progress_note(c->prog,
                             "%s: %u instance(s) on %s; connection points: gateway_host = %.*s, "
                             "instances = %u, port_base = %llu",
                             ds->service_name, n, ds->listen, (int)strcspn(p0.tunnel, ":"),
                             p0.tunnel, n, (unsigned long long)ds->tunnel_port_base);
    }
    return rc;
}

int deploy_local_scale(struct deploy_ctx *c, unsigned count)
{
    unsigned old = jnum(c->state, "instances");
    int rc = 0;
    if (c->dry_run) {
        deploy_progress_note(c->prog, "would scale from %u to %u instance(s)", old, count);
        return 0;
    }
    /* Instances that join take clients only once a connection point's tunnel is up (or
     * await_tunnel passed), so that no client meets an instance that cannot route yet. */
    json_t *saved = json_object_get(c->state, "await_tunnel_ms");
    long long await_ms = json_is_integer(saved) && !deploy_settings_given(c->ds, "await_tunnel")
                             ? (long long)json_integer_value(saved)
                             : (long long)c->ds->await_tunnel;
    if (count > old) {
        /* the new ones first, then tell the running ones (their hello tells the connectors) */
        for (unsigned i = old; rc == 0 && i < count; i++)
            rc = local_write_config(c, i, count, await_ms);
        for (unsigned i = old; rc == 0 && i < count; i++) {
            rc = local_start_one(c, i);
            if (local_save(c) != 0)
                rc = -1;
        }
        if (rc != 0)
            return rc;
    }
    deploy_progress_step(c->prog, "telling instances 0..%u the count (%u)",
                         (count < old ? count : old) - 1, count);
    for (unsigned i = 0; rc == 0 && i < (count < old ? count : old); i++)
        rc = local_write_config(c, i, count, -1);
    if (rc == 0)
        local_signal_all(c, count < old ? count : old, SIGHUP);
    deploy_progress_done(c->prog, rc == 0 ? "reloaded" : "failed");
    for (unsigned i = old; rc == 0 && i < count && await_ms > 0; i++)
        local_await_tunnel(c, i, (uint64_t)await_ms);
    json_object_set_new(c->state, "instances", json_integer(count));
    for (unsigned i = count; rc == 0 && i < old; i++)
        rc = local_stop_one(c, i);
    if (local_save(c) != 0)
        rc = -1;
    if (rc == 0) {
        json_t *pids = json_object_get(c->state, "pids");
        while (json_array_size(pids) > count)
            json_array_remove(pids, json_array_size(pids) - 1);
        local_save(c);
        c->result = json_pack("{s:i, s:i, s:o}", "previous", (int)old, "instances", (int)count,
                              "instance_states", local_instances_json(c->state, count, false));
    }
    return rc;
}

int deploy_local_status(struct deploy_ctx *c)
{
    unsigned n = jnum(c->state, "instances");
    json_t *inst = local_instances_json(c->state, n, true);
    const char *overall = "Ready";
    size_t i;
    json_t *o;
    json_array_foreach(inst, i, o)
    {
        const char *s = jstr(o, "state");
        if (strcmp(s, "Error") == 0)
            overall = "Error";
        else if (strcmp(overall, "Error") != 0 && strcmp(s, "Ready") != 0)
            overall = s;
    }
    struct local_place p0;
    local_place(c->state, 0, &p0);
    c->result = json_pack("{s:s, s:s, s:s, s:s, s:i, s:O, s:o, s:o}", "provider", "local",
                          "service_name", jstr(c->state, "service_name"), "state", overall,
                          "listen", jstr(c->state, "listen"), "instances", (int)n, "settings",
                          json_object_get(c->state, "settings"), "instance_states", inst, "alerts",
                          deploy_alerts_json(json_object_get(c->state, "settings"), p0.ini));
    return 0;
}

int deploy_local_stop(struct deploy_ctx *c)
{
    unsigned n = jnum(c->state, "instances");
    json_object_set_new(c->state, "stopped", json_true());
    for (unsigned i = 0; i < n; i++)
        local_stop_one(c, i);
    return local_save(c);
}

int deploy_local_start(struct deploy_ctx *c)
{
    unsigned n = jnum(c->state, "instances");
    int rc = 0;
    json_object_set_new(c->state, "stopped", json_false());
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = local_start_one(c, i);
    if (local_save(c) != 0)
        rc = -1;
    return rc;
}

int deploy_local_delete(struct deploy_ctx *c)
{
    unsigned n = jnum(c->state, "instances");
    const char *state = jstr(c->state, "state");
    char path[PATH_MAX];
    json_object_set_new(c->state, "stopped", json_true());
    for (unsigned i = 0; i < DEPLOY_MAX_INSTANCES && (i < n || local_pid(c->state, i)); i++)
        local_stop_one(c, i);
    deploy_progress_step(c->prog, "removing the instances' files from %s", state);
    /* what create wrote, and nothing else */
    for (unsigned i = 0; i < DEPLOY_MAX_INSTANCES; i++) {
        static const char *const files[] = {"gateway.ini", "stderr.txt", "CMGService.log",
                                            "CMGService.lo_"};
        snprintf(path, sizeof(path), "%s/instance-%u", state, i);
        for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
            char f[PATH_MAX + 32];
            snprintf(f, sizeof(f), "%s/%s", path, files[k]);
            unlink(f);
        }
        rmdir(path);
    }
    snprintf(path, sizeof(path), "%s/pfx-password.txt", state);
    unlink(path);
    snprintf(path, sizeof(path), "%s/state.json", state);
    unlink(path);
    deploy_progress_done(c->prog, "done");
    c->result =
        json_pack("{s:s, s:i}", "deleted", jstr(c->state, "service_name"), "instances", (int)n);
    return 0;
}
