/* The INI loader with the gateway's schema on arbitrary text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gwconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    struct gw_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    struct config_report r;
    gw_config_schema_init();
    config_report_init(&r, "fuzz.ini", gw_config_schema_len);
    config_apply_defaults(gw_config_schema, gw_config_schema_len, &cfg, &r);
    config_load_string("fuzz.ini", text, gw_config_schema, gw_config_schema_len, &cfg, &r);
    config_report_deinit(&r);
    config_free(gw_config_schema, gw_config_schema_len, &cfg);
    free(text);
    return 0;
}
