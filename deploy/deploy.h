/* The deploy module: one settings model (the wizard's and New-CMCloudManagementGateway's
 * settings), the Azure environments, the sans-I/O ARM request builders and long-running
 * operation poller, the Azure and local providers, and the cmgctl verbs that drive them. */
#ifndef CMG_DEPLOY_H
#define CMG_DEPLOY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "core.h"

struct content_settings; /* content/content-t.h */

#define DEPLOY_MAX_INSTANCES 16
#define DEPLOY_TUNNEL_PORT_BASE 10124
#define DEPLOY_CONTENT_CONTAINER "content" /* the blob container create makes */
#define DEPLOY_STORAGE_KEY_MAX 128         /* characters of a storage account key (88 today) */
#define DEPLOY_MSG_MAX 1024

/* Exit status of the deploy verbs (docs/deploy.md). */
enum deploy_exit {
    DEPLOY_EXIT_OK = 0,
    DEPLOY_EXIT_FAILED = 1,   /* the operation failed: ARM error, process did not start */
    DEPLOY_EXIT_USAGE = 2,    /* bad usage or settings; nothing was changed */
    DEPLOY_EXIT_NO_STATE = 3, /* nothing deployed in the state folder */
};

enum deploy_provider { DEPLOY_PROVIDER_LOCAL = 0, DEPLOY_PROVIDER_AZURE = 1 };

/* ---- Azure environments (env.c) ---- */

struct deploy_env {
    const char *name;           /* AzurePublicCloud */
    const char *arm;            /* https://management.azure.com (no trailing slash) */
    const char *login;          /* https://login.microsoftonline.com */
    const char *scope;          /* the v2 scope for ARM tokens */
    const char *storage_suffix; /* core.windows.net */
    const char *dns_suffix;     /* public IP names: <label>.<region>.<dns_suffix> */
};

extern const struct deploy_env deploy_envs[];
extern const size_t deploy_nenvs;

struct deploy_vm_size {
    const char *label; /* the wizard's word, also accepted as the value */
    const char *sku;   /* Standard_A2_v2 */
    unsigned vcpu, ram_gib;
    bool gen1_only; /* Av2: Generation 1 images only */
    const char *note;
};

extern const struct deploy_vm_size deploy_vm_sizes[];
extern const size_t deploy_nvm_sizes;
#define DEPLOY_VM_SIZE_CHOICES "Lab|Standard|Large|Small_v6|Medium_v6|Large_v6"

/* ---- settings (settings.c) ---- */

/* One gateway setting to write into every instance's gateway.ini ("section.key=value"). */
struct deploy_kv {
    char *section, *key, *value;
};

/* The whole model. Strings are heap copies (deploy_settings_free). */
struct deploy_settings {
    /* [deployment] */
    unsigned provider; /* enum deploy_provider */
    char *state;       /* the state folder */
    uint64_t await_tunnel; /* ms an instance joining a deployment waits for a tunnel */
    /* [azure] */
    unsigned environment; /* index into deploy_envs */
    char *tenant_id;
    char *subscription_id;
    char *server_app_client_id;
    char *server_app_secret;
    char *server_app_secret_file;
    char *server_app_cert_file; /* PEM certificate for the assertion */
    char *server_app_key_file;  /* its PEM private key */
    char *region;
    char *group_name;
    bool is_using_existing_group;
    char *arm_endpoint;   /* override of the environment's ARM host (tests, sovereign clouds) */
    char *login_endpoint; /* override of the login host */
    char *blob_endpoint;  /* override of the storage account's blob endpoint (tests) */
    char *admin_ssh_public_key;
    char *gateway_package_url; /* the cmg-gateway package the instances install */
    uint64_t poll_interval;    /* ms between polls when ARM gives no Retry-After */
    uint64_t max_retries;      /* 429 and 5xx retries per request */
    /* [service] */
    char *service_cert_path;
    char *service_cert_password;
    char *service_cert_password_file;
    char *service_name;
    char *service_name_prefix; /* replaces the * of a wildcard certificate */
    char *description;
    unsigned vm_size; /* index into deploy_vm_sizes */
    uint64_t vm_instance_count;
    char *ca_root_certs;         /* comma-separated PEM files */
    char *ca_intermediate_certs; /* comma-separated PEM files */
    bool check_client_cert_revocation;
    bool enforce_protocol;
    bool enable_cloud_dp_function;
    /* [alerts] */
    bool enable_traffic_out;
    uint64_t traffic_out_gb, traffic_warning_pct, traffic_critical_pct;
    bool traffic_out_stop_service;
    bool enable_storage_quota;
    uint64_t storage_quota_gb, storage_warning_pct, storage_critical_pct;
    /* [local] */
    char *listen;
    uint64_t tunnel_port_base, admin_port_base, workers;
    char *gateway_bin;

    /* derived by deploy_settings_check */
    char *settings_path;   /* the settings file, or NULL */
    char *password;        /* the PFX password, from either source */
    char *app_secret;      /* the client secret, from either source */
    char *cert_subject;    /* the service certificate's CN */
    char *prefix;          /* first label of the service name */
    char *resource_prefix; /* lowercase prefix: names of the Azure resources */
    char *storage_account; /* prefix, lowercase, no hyphens */
    char *deployment_name; /* <prefix>.<region>.<dns suffix> */
    struct deploy_kv *gateway_extra;
    size_t ngateway_extra;
    const char *flag_of[128]; /* per schema key: the flag that set it, or NULL */
};

/* Messages collected while loading and checking, each a complete sentence for the operator. */
struct deploy_msgs {
    unsigned n;
    char *text[32];
};
void deploy_msgs_add(struct deploy_msgs *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void deploy_msgs_clear(struct deploy_msgs *m);

/* Defaults, then the settings file (path may be NULL), collecting errors "file:line: key: why".
 * Returns 0 when no error. */
int deploy_settings_load(struct deploy_settings *ds, const char *path, struct deploy_msgs *m);
/* Sets one setting from the command line: flag is the cmdlet-style name without "--"
 * ("vm-instance-count"). Returns 1 when set, 0 when flag is not a settings flag, -1 on a bad
 * value (message in m). */
int deploy_settings_set_flag(struct deploy_settings *ds, const char *flag, const char *value,
                             struct deploy_msgs *m);
/* Whether the setting named key (settings-file name) was given by a flag or the file. */
bool deploy_settings_given(const struct deploy_settings *ds, const char *key);
/* Whether flag is a settings flag that takes no value (a switch such as --force). */
bool deploy_settings_flag_is_switch(const char *flag);
/* Adds "section.key=value" for every instance's gateway.ini. Returns 0 or -1 (message). */
int deploy_settings_add_gateway(struct deploy_settings *ds, const char *spec, const char *origin,
                                struct deploy_msgs *m);
/* Cross-checks for the provider, reads the certificate, derives the names. Every problem is
 * one message naming where the value came from. Returns 0 when the settings can be used. */
int deploy_settings_check(struct deploy_settings *ds, struct deploy_msgs *m);
void deploy_settings_free(struct deploy_settings *ds);
/* The usage lines of the settings flags. */
void deploy_settings_usage(FILE *f);
const struct deploy_env *deploy_settings_env(const struct deploy_settings *ds);
const char *deploy_settings_arm(const struct deploy_settings *ds);
const char *deploy_settings_login(const struct deploy_settings *ds);

/* Name rules (cmg.md 5.8); each returns NULL when the name is fine, else why not. */
const char *deploy_check_prefix(const char *prefix);
const char *deploy_check_storage_account(const char *name);
const char *deploy_check_group_name(const char *name);
const char *deploy_check_region(const char *name);
const char *deploy_check_guid(const char *s);
/* Whether host matches a certificate name (a leading "*." matches one label). */
bool deploy_name_matches(const char *pattern, const char *host);

/* Where an instance listens and logs; the rest of gateway.ini comes from the settings. */
struct deploy_gw_place {
    unsigned instance_id, instances;
    uint64_t await_tunnel; /* gateway.await_tunnel, ms (0: take clients at once) */
    const char *content_folder; /* content.folder: the store the instances share, or NULL */
    const char *content_account;  /* content.store = blob in this storage account, or NULL */
    const char *content_key_file; /* with content_account: the file holding its key */
    const char *listen, *tunnel_listen, *admin_listen;
    const char *pfx_file, *pfx_password_file, *log_file;
};
/* Writes one instance's gateway.ini. Returns 0, or -1 on a write error. */
int deploy_gateway_ini(const struct deploy_settings *ds, const struct deploy_gw_place *pl, FILE *f);
/* The settings worth showing (no secret), for --json and the state file. Caller decrefs. */
json_t *deploy_settings_json(const struct deploy_settings *ds);

/* ---- ARM: requests and the operation poller, sans I/O (arm.c) ---- */

#define DEPLOY_API_RESOURCES "2021-04-01"
#define DEPLOY_API_STORAGE "2023-05-01"
#define DEPLOY_API_NETWORK "2024-05-01"
#define DEPLOY_API_COMPUTE "2024-11-01"
#define DEPLOY_TAG_OWNER "cmgctl"

struct deploy_req {
    const char *what; /* "public IP address cmg-pip", for progress and the log */
    const char *verb; /* PUT, PATCH, POST, GET, DELETE */
    char *url;        /* full URL, owned */
    char *body;       /* JSON text or NULL, owned */
    bool has_secret;  /* body carries protected settings: never printed or logged */
    bool secret_answer; /* the answer carries a secret (storage keys): never printed or logged */
    bool missing_ok;  /* DELETE/GET: 404 counts as done */
};
void deploy_req_clear(struct deploy_req *r);

/* Names of the resources of a deployment, all derived from the settings. */
struct deploy_names {
    char rg_id[512]; /* /subscriptions/<sub>/resourceGroups/<rg> */
    char nsg[64], vnet[64], pip[64], lb[64], vmss[64], storage[32];
};
void deploy_names_init(struct deploy_names *n, const struct deploy_settings *ds);

/* The create sequence, in order: resource group (unless an existing one is used), storage
 * account, its keys (listKeys: secret_answer), blob container (content), table (counters),
 * network security group, virtual network, public IP with the DNS label, load balancer, scale
 * set. Fills reqs (at most max); returns the count. install_script is the instances' setup
 * script (secrets included); NULL leaves the scale set out (deploy_arm_vmss_put makes it once
 * the storage key is known). */
size_t deploy_arm_create_plan(const struct deploy_settings *ds, const char *install_script,
                              struct deploy_req *reqs, size_t max);
/* The scale set with the instances' setup script in the extension's protected settings. */
void deploy_arm_vmss_put(const struct deploy_settings *ds, const char *install_script,
                         struct deploy_req *r);
/* POST .../storageAccounts/<name>/listKeys: the answer holds the account's keys. */
void deploy_arm_storage_keys(const struct deploy_settings *ds, struct deploy_req *r);
/* The reverse of create: scale set, load balancer, public IP, virtual network, security group,
 * storage account (each 404-tolerant), and the resource group when rg_created. */
size_t deploy_arm_delete_plan(const struct deploy_settings *ds, bool rg_created,
                              struct deploy_req *reqs, size_t max);
void deploy_arm_rg_get(const struct deploy_settings *ds, struct deploy_req *r);
void deploy_arm_rg_resources(const struct deploy_settings *ds, struct deploy_req *r);
void deploy_arm_scale(const struct deploy_settings *ds, unsigned count, struct deploy_req *r);
void deploy_arm_vmss_action(const struct deploy_settings *ds, const char *action,
                            struct deploy_req *r); /* start, deallocate */
void deploy_arm_vmss_get(const struct deploy_settings *ds, struct deploy_req *r);
void deploy_arm_vms_list(const struct deploy_settings *ds, struct deploy_req *r);
void deploy_arm_lb_get(const struct deploy_settings *ds, struct deploy_req *r);
/* Run Command on one scale-set VM that sets its instance id and the instance count in its
 * gateway.ini and restarts (id changed) or reloads the gateway. */
void deploy_arm_push(const struct deploy_settings *ds, const char *vm_id, unsigned instance_id,
                     unsigned instances, struct deploy_req *r);
/* The scale-set VMs' instance setup script (cloud side of the settings). storage_key (may be
 * NULL when content is off) is written to a file only root reads, which gateway.ini names.
 * Caller frees (and wipes: it holds the secrets). */
char *deploy_install_script(const struct deploy_settings *ds, const unsigned char *pfx,
                            size_t pfx_len, const char *storage_key);

/* An ARM error, from either body shape (or the login host's). */
struct deploy_arm_error {
    char code[128];
    char message[768];
};
/* Parses an error body; returns 0 when one was found. */
int deploy_arm_error_parse(const char *body, size_t len, struct deploy_arm_error *e);
/* What the operator can do about an ARM error code, or NULL. */
const char *deploy_arm_hint(const char *code);

/* The sign-in answer (OAuth2 token endpoint): the access token, which the caller frees, and
 * its lifetime in seconds; or NULL with e filled (the login host's error, or "HTTP <status>"). */
char *deploy_login_parse(long status, const char *body, size_t len, uint64_t *expires_s,
                         struct deploy_arm_error *e);

/* Which scale-set VM each tunnel NAT port reaches, from the load balancer's body: instance id
 * = frontend port - 10124. Fills at most max; returns the count. */
struct deploy_nat {
    char vm_id[32];
    unsigned instance;
};
size_t deploy_arm_nat_parse(const char *body, size_t len, struct deploy_nat *out, size_t max);

/* A storage account key from the listKeys answer ({"keys":[{"keyName","value","permissions"}]}):
 * key1 when it has full permissions, else the first key that has. Copies it into key (at least
 * DEPLOY_STORAGE_KEY_MAX + 1 bytes). Returns 0, or -1 with why (which never holds a key). */
int deploy_storage_key_parse(const char *body, size_t len, char *key, size_t keylen, char *why,
                             size_t whylen);

/* The product's state of one VM (Provisioning, Ready, Error, Stopping, Stopped, Starting,
 * Deleting) from its instance view statuses; detail points into statuses (the provisioning
 * message) or is NULL. */
const char *deploy_arm_vm_state(json_t *statuses, const char **detail);

/* A long-running operation: fed each response, it says what to do next. */
enum deploy_op_phase {
    DEPLOY_OP_START = 0, /* the request itself */
    DEPLOY_OP_ASYNC,     /* polling Azure-AsyncOperation */
    DEPLOY_OP_LOCATION,  /* polling Location */
    DEPLOY_OP_RESOURCE,  /* polling the resource's provisioningState */
};
enum deploy_op_next {
    DEPLOY_NEXT_DONE = 0, /* finished; body of the last answer is the result */
    DEPLOY_NEXT_FAILED,   /* finished badly: error filled */
    DEPLOY_NEXT_POLL,     /* GET poll_url after delay_ms */
    DEPLOY_NEXT_RETRY,    /* send the request again after delay_ms (429, 5xx) */
};
struct deploy_http_resp {
    long status;
    const char *async_op;    /* Azure-AsyncOperation header or NULL */
    const char *location;    /* Location header or NULL */
    const char *retry_after; /* Retry-After header or NULL */
    const char *body;
    size_t len;
};
struct deploy_op {
    enum deploy_op_phase phase;
    char poll_url[4096];
    unsigned retries, polls;
    uint64_t delay_ms;         /* next wait */
    uint64_t default_delay_ms; /* when no Retry-After: polls */
    unsigned max_retries;      /* 429/5xx before giving up */
    bool missing_ok;           /* 404 on the request counts as done */
    struct deploy_arm_error error;
    char status[64]; /* last operation status or provisioningState seen */
};
void deploy_op_init(struct deploy_op *op, const struct deploy_req *req, uint64_t default_delay_ms,
                    unsigned max_retries);
enum deploy_op_next deploy_op_feed(struct deploy_op *op, const struct deploy_req *req,
                                   const struct deploy_http_resp *r);

/* ---- alerts (alerts.c) ---- */

/* "ok", "warning" or "critical": used against the threshold (bytes) and its percentages. */
const char *deploy_alert_state(uint64_t used, uint64_t threshold, uint64_t warning_pct,
                               uint64_t critical_pct);
/* Bytes the content store of gateway_ini (its [content] section) holds, every blob counted;
 * enabled says whether content is on (used stays 0 when not). 0, or -1 with err. Blocks. */
int deploy_storage_used(const char *gateway_ini, bool *enabled, uint64_t *used, char *err,
                        size_t errlen);
/* The same from settings already loaded (s->enabled says whether content is on). s is
 * borrowed. */
int deploy_storage_used_of(const struct content_settings *s, bool *enabled, uint64_t *used,
                           char *err, size_t errlen);
/* {"storage": {...}, "traffic": {...}} for status: the thresholds from settings (the state's
 * copy of deploy_settings_json), the storage used when gateway_ini (may be NULL) names the
 * store. Caller decrefs. */
json_t *deploy_alerts_json(json_t *settings, const char *gateway_ini);
/* The same with the store's settings in memory: cs (borrowed; NULL: the state is unknown, said
 * with why). Caller decrefs. */
json_t *deploy_alerts_json_of(json_t *settings, const struct content_settings *cs, const char *why);
void deploy_alerts_print(json_t *alerts, FILE *f);

/* ---- progress and the deploy log (progress.c) ---- */

struct deploy_progress {
    bool json;   /* --json: progress on stderr only, result on stdout */
    bool tty;    /* live line on stderr */
    bool quiet;  /* no progress at all */
    uint64_t t0; /* ms */
    uint64_t step_t0;
    char step[256];
    bool line_open;
};
void deploy_progress_init(struct deploy_progress *p, bool json, bool quiet);
void deploy_progress_step(struct deploy_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void deploy_progress_wait(struct deploy_progress *p, const char *status); /* still going */
void deploy_progress_done(struct deploy_progress *p, const char *result);
void deploy_progress_note(struct deploy_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Opens <state>/CloudMgr.log (CMTrace, component CloudMgr). */
int deploy_log_open(const char *state_dir, char *err, size_t errlen);
void deploy_log_close(void);

/* ---- state folder (state.c in deploy-cmd.c) ---- */

/* Reads <dir>/state.json; NULL when there is none (errno ENOENT) or it is unreadable. */
json_t *deploy_state_read(const char *dir, char *err, size_t errlen);
int deploy_state_write(const char *dir, json_t *state, char *err, size_t errlen);

/* ---- providers ---- */

struct deploy_ctx {
    struct deploy_settings *ds;
    struct deploy_progress *prog;
    bool dry_run;
    json_t *state;  /* the state document, updated by the provider (borrowed) */
    json_t *result; /* the verb's result for --json, set by the provider (owned by ctx) */
    char err[DEPLOY_MSG_MAX];
};

int deploy_local_create(struct deploy_ctx *c);
int deploy_local_scale(struct deploy_ctx *c, unsigned count);
int deploy_local_status(struct deploy_ctx *c);
int deploy_local_stop(struct deploy_ctx *c);
int deploy_local_start(struct deploy_ctx *c);
int deploy_local_delete(struct deploy_ctx *c);

int deploy_azure_create(struct deploy_ctx *c);
int deploy_azure_scale(struct deploy_ctx *c, unsigned count);
int deploy_azure_status(struct deploy_ctx *c);
int deploy_azure_stop(struct deploy_ctx *c);
int deploy_azure_start(struct deploy_ctx *c);
int deploy_azure_delete(struct deploy_ctx *c);
/* The [content] settings of the deployment's storage account, its key fetched with listKeys
 * (kept in memory only). s is filled for content_store_new; content_settings_free it. Returns
 * 0, or -1 with c->err. */
int deploy_azure_content_settings(struct deploy_ctx *c, struct content_settings *s);

/* ---- the deployment's content store (store.c) ---- */

/* Fills s (any previous content ignored) with the [content] settings of an Azure deployment's
 * store: a blob store in the storage account create made, container "content", the
 * deployment's environment and storage alert, key (borrowed; copied) as the account key, the
 * blob_endpoint override if set. Returns 0, or -1 with err. */
int deploy_content_settings_blob(const struct deploy_settings *ds, const char *key,
                                 struct content_settings *s, char *err, size_t errlen);
/* The [content] settings of the deployment in state_dir, for cmgctl content --deployment: a
 * local deployment's shared folder store (its instances' gateway.ini), an Azure one's storage
 * account (settings_file: the deployment's settings, for the server app's credentials). Fills
 * s; content_settings_free it. Returns 0, or an exit status (deploy_exit) with err. Blocks. */
int deploy_content_settings(const char *state_dir, const char *settings_file,
                            struct content_settings *s, char *err, size_t errlen);

/* ---- verbs (deploy-cmd.c), called from cmgctl's table ---- */

/* Whether verb is one of create, scale, status, stop, start, delete. */
bool deploy_cmd_is_verb(const char *verb);
/* Runs verb with the arguments after it; returns the exit status. */
int deploy_cmd_run(const char *verb, int argc, char **argv);
/* The verbs' part of cmgctl --help. */
void deploy_cmd_usage(FILE *f);

#endif
