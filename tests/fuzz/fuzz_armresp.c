/* The ARM answer parsers (error bodies, the sign-in answer, NAT rules, instance views, storage
 * keys) on arbitrary bytes, and the long-running operation poller fed a sequence of answers
 * made from them. Whatever arrives, the poller must end in a known state with a terminated
 * poll URL, and a failure must carry an error code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deploy.h"

/* Takes n bytes (or what is left) from the input. */
static const uint8_t *take(const uint8_t **data, size_t *size, size_t n, size_t *got)
{
    const uint8_t *p = *data;
    *got = n < *size ? n : *size;
    *data += *got;
    *size -= *got;
    return p;
}

static uint8_t take_byte(const uint8_t **data, size_t *size)
{
    size_t got;
    const uint8_t *p = take(data, size, 1, &got);
    return got ? *p : 0;
}

/* A NUL-terminated copy of up to n input bytes, or NULL. */
static char *take_str(const uint8_t **data, size_t *size, size_t n)
{
    size_t got;
    const uint8_t *p = take(data, size, n, &got);
    char *s = malloc(got + 1);
    if (!s)
        return NULL;
    memcpy(s, p, got);
    s[got] = '\0';
    return s;
}

static void parsers(const uint8_t *data, size_t size)
{
    struct deploy_arm_error e;
    if (deploy_arm_error_parse((const char *)data, size, &e) == 0 &&
        (!e.code[0] || strlen(e.code) >= sizeof(e.code) || strlen(e.message) >= sizeof(e.message)))
        abort();
    uint64_t secs = 0;
    char *tok = deploy_login_parse(200, (const char *)data, size, &secs, &e);
    if (tok ? (!*tok || secs == 0 || secs > 86400) : !e.code[0])
        abort();
    free(tok);
    tok = deploy_login_parse(400, (const char *)data, size, &secs, &e);
    if (tok || !e.code[0])
        abort();

    struct deploy_nat nat[DEPLOY_MAX_INSTANCES];
    size_t n = deploy_arm_nat_parse((const char *)data, size, nat, DEPLOY_MAX_INSTANCES);
    if (n > DEPLOY_MAX_INSTANCES)
        abort();
    for (size_t i = 0; i < n; i++)
        if (nat[i].instance >= DEPLOY_MAX_INSTANCES || !nat[i].vm_id[0])
            abort();

    char key[DEPLOY_STORAGE_KEY_MAX + 1], why[256];
    memset(key, 'x', sizeof(key));
    if (deploy_storage_key_parse((const char *)data, size, key, sizeof(key), why, sizeof(why)) ==
        0) {
        size_t kl = strnlen(key, sizeof(key));
        if (kl == 0 || kl == sizeof(key) || kl % 4 != 0)
            abort();
    } else if (key[0] || !memchr(why, '\0', sizeof(why))) {
        abort(); /* a refused answer leaves no partial key */
    }

    json_t *root = json_loadb((const char *)data, size, 0, NULL);
    if (root) {
        const char *detail;
        json_t *statuses = json_is_array(root) ? root : json_object_get(root, "statuses");
        if (!deploy_arm_vm_state(statuses, &detail))
            abort();
        json_decref(root);
    }
}

static const long statuses[] = {200, 201, 202, 204, 400, 401, 404, 409, 429, 500, 502, 503, 504};

/* Answers: status, which headers, Retry-After, poll URL and body lengths, then the bytes. */
static void poller(const uint8_t *data, size_t size)
{
    bool del = take_byte(&data, &size) & 1;
    struct deploy_req q = {.what = "fuzzed", .verb = del ? "DELETE" : "PUT",
                           .url = "https://arm.test/r", .missing_ok = del};
    struct deploy_op op;
    deploy_op_init(&op, &q, 1000, 4);
    for (unsigned step = 0; step < 64 && size; step++) {
        uint8_t sb = take_byte(&data, &size), flags = take_byte(&data, &size);
        size_t body_len = take_byte(&data, &size);
        struct deploy_http_resp r = {.status = statuses[sb % (sizeof(statuses) /
                                                              sizeof(statuses[0]))]};
        char *ra = flags & 1 ? take_str(&data, &size, (flags >> 4) & 7) : NULL;
        char *async = flags & 2 ? take_str(&data, &size, 16) : NULL;
        char *loc = flags & 4 ? take_str(&data, &size, 16) : NULL;
        char *body = take_str(&data, &size, body_len);
        r.retry_after = ra;
        r.async_op = async;
        r.location = loc;
        r.body = body;
        r.len = body ? strlen(body) : 0;
        enum deploy_op_next next = deploy_op_feed(&op, &q, &r);
        free(ra);
        free(async);
        free(loc);
        free(body);
        if (memchr(op.poll_url, '\0', sizeof(op.poll_url)) == NULL ||
            memchr(op.status, '\0', sizeof(op.status)) == NULL)
            abort();
        if (op.retries > 4 || op.delay_ms > 3600000 + (1000ull << 5))
            abort();
        if (next == DEPLOY_NEXT_DONE)
            return;
        if (next == DEPLOY_NEXT_FAILED) {
            if (!op.error.code[0])
                abort();
            return;
        }
        if (next == DEPLOY_NEXT_POLL && op.phase == DEPLOY_OP_START)
            abort();
        if (next != DEPLOY_NEXT_POLL && next != DEPLOY_NEXT_RETRY)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parsers(data, size);
    poller(data, size);
    return 0;
}
