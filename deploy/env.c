/* The Azure clouds the deployment can target, and the VM sizes it offers. */
#include "deploy.h"

/* Endpoints per cloud: ARM, the Entra ID authority, the v2 scope of an ARM token, the storage
 * suffix and the public IP name suffix. */
const struct deploy_env deploy_envs[] = {
    {"AzurePublicCloud", "https://management.azure.com", "https://login.microsoftonline.com",
     "https://management.azure.com/.default", "core.windows.net", "cloudapp.azure.com"},
    {"AzureUSGovernmentCloud", "https://management.usgovcloudapi.net",
     "https://login.microsoftonline.us", "https://management.usgovcloudapi.net/.default",
     "core.usgovcloudapi.net", "cloudapp.usgovcloudapi.net"},
};
const size_t deploy_nenvs = sizeof(deploy_envs) / sizeof(deploy_envs[0]);

/* The wizard's three sizes (Standard is its default) and the announced successors, which are
 * explicit choices: Av2 and B-series v1 stop taking new capacity before they retire. */
const struct deploy_vm_size deploy_vm_sizes[] = {
    {"Lab", "Standard_B2s", 2, 4, false, "lab and proof of concept only"},
    {"Standard", "Standard_A2_v2", 2, 4, true, "the wizard's default"},
    {"Large", "Standard_A4_v2", 4, 8, true, NULL},
    {"Small_v6", "Standard_D2ads_v6", 2, 8, false, "successor of Standard"},
    {"Medium_v6", "Standard_D4ads_v6", 4, 16, false, "successor of Large"},
    {"Large_v6", "Standard_D8ads_v6", 8, 32, false, NULL},
};
const size_t deploy_nvm_sizes = sizeof(deploy_vm_sizes) / sizeof(deploy_vm_sizes[0]);
