/* [MS-PCCRTP]: whether a request gets the Content Information (Content-Encoding: peerdist), the
 * ordinary response, or the ordinary response with the "make hash" hint. The steps are those of
 * docs/peerdist.md, which follow the spec and what Microsoft's conformance suite asserts of a
 * Windows content server; anything malformed or unsupported gets the ordinary response, which
 * is always correct. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "content.h"

/* A version as the headers write it, "1*DIGIT . 1*DIGIT", compared as two integers. */
struct pd_ver {
    uint32_t major, minor;
};

static const struct pd_ver pd_ci_v1 = {1, 0}, pd_ci_v2 = {2, 0};

/* One "name=value" of X-P2P-PeerDist or X-P2P-PeerDistEx. */
struct pd_param {
    const char *name, *value;
    size_t nlen, vlen;
};

static bool pd_is_tchar(unsigned char c)
{
    /* RFC 9110 5.6.2 */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool pd_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void pd_skip_ows(const char **p, const char *end)
{
    while (*p < end && pd_is_ows(**p))
        (*p)++;
}

static size_t pd_token(const char **p, const char *end)
{
    const char *s = *p;

    while (*p < end && pd_is_tchar((unsigned char)**p))
        (*p)++;
    return (size_t)(*p - s);
}

static bool pd_eq(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

static int pd_cmp(struct pd_ver a, struct pd_ver b)
{
    if (a.major != b.major)
        return a.major < b.major ? -1 : 1;
    return a.minor == b.minor ? 0 : a.minor < b.minor ? -1 : 1;
}

/* 1*DIGIT, saturating: "99999999999" is simply a very large number, larger than anything we
 * support. */
static bool pd_number(const char **p, const char *end, uint32_t *out)
{
    const char *s = *p;
    uint32_t v = 0;

    while (*p < end && **p >= '0' && **p <= '9') {
        v = v > 100000000 ? 1000000000 : v * 10 + (uint32_t)(**p - '0');
        (*p)++;
    }
    *out = v;
    return *p > s;
}

static bool pd_version(const char *s, size_t len, struct pd_ver *v)
{
    const char *p = s, *end = s + len;

    return pd_number(&p, end, &v->major) && p < end && *p++ == '.' &&
           pd_number(&p, end, &v->minor) && p == end;
}

/* Accept-Encoding (RFC 9110 12.5.3): whether "peerdist" is listed with a weight above zero.
 * -1 for a value that does not parse, or that lists peerdist twice. */
static int pd_accepts_peerdist(const char *v, size_t len)
{
    const char *p = v, *end = v + len;
    bool seen = false, accepted = false;

    for (;;) {
        const char *coding;
        size_t clen;
        unsigned q = 1000; /* thousandths */

        pd_skip_ows(&p, end);
        if (p == end)
            break;
        if (*p == ',') { /* empty list elements are allowed */
            p++;
            continue;
        }
        coding = p;
        if ((clen = pd_token(&p, end)) == 0)
            return -1;
        pd_skip_ows(&p, end);
        if (p < end && *p == ';') {
            /* weight = OWS ";" OWS "q=" qvalue; qvalue = 0[.ddd] / 1[.000] */
            p++;
            pd_skip_ows(&p, end);
            if (end - p < 3 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=')
                return -1;
            p += 2;
            if (*p != '0' && *p != '1')
                return -1;
            q = (unsigned)(*p++ - '0') * 1000;
            if (p < end && *p == '.') {
                unsigned scale = 100;
                for (p++; p < end && *p >= '0' && *p <= '9' && scale; p++, scale /= 10)
                    q += (unsigned)(*p - '0') * scale;
                if (q > 1000)
                    return -1;
            }
            pd_skip_ows(&p, end);
        }
        if (p < end && *p != ',')
            return -1;
        if (pd_eq(coding, clen, CONTENT_PD_CODING)) {
            if (seen)
                return -1;
            seen = true;
            accepted = q > 0;
        }
    }
    return accepted;
}

/* The next "name=value" of `param *( "," OWS param )`, the whole value trimmed of OWS first.
 * Returns 1 with *out, 0 at the end, -1 when malformed (no OWS around "=" or before ","). */
static int pd_next_param(const char **p, const char *end, bool is_first, struct pd_param *out)
{
    if (!is_first) {
        if (*p == end)
            return 0;
        if (**p != ',')
            return -1;
        (*p)++;
        pd_skip_ows(p, end);
    }
    out->name = *p;
    if ((out->nlen = pd_token(p, end)) == 0 || *p == end || **p != '=')
        return -1;
    (*p)++;
    out->value = *p;
    if ((out->vlen = pd_token(p, end)) == 0)
        return -1;
    return 1;
}

static void pd_trim(const char **v, const char **end)
{
    pd_skip_ows(v, *end);
    while (*end > *v && pd_is_ows((*end)[-1]))
        (*end)--;
}

/* What X-P2P-PeerDist says. */
struct pd_peerdist {
    struct pd_ver version;
    bool has_version;
    enum { PD_MDR_ABSENT, PD_MDR_FALSE, PD_MDR_TRUE, PD_MDR_INVALID } missing_data;
};

static bool pd_parse_peerdist(const char *v, size_t len, struct pd_peerdist *pd)
{
    const char *p = v, *end = v + len;
    struct pd_param prm;
    bool has_length = false;
    int rc;

    memset(pd, 0, sizeof(*pd));
    pd_trim(&p, &end);
    for (bool first = true; (rc = pd_next_param(&p, end, first, &prm)) == 1; first = false) {
        if (pd_eq(prm.name, prm.nlen, "Version")) {
            if (pd->has_version || !pd_version(prm.value, prm.vlen, &pd->version))
                return false;
            pd->has_version = true;
        } else if (pd_eq(prm.name, prm.nlen, "MissingDataRequest")) {
            if (pd->missing_data != PD_MDR_ABSENT)
                return false;
            pd->missing_data = pd_eq(prm.value, prm.vlen, "true")    ? PD_MDR_TRUE
                               : pd_eq(prm.value, prm.vlen, "false") ? PD_MDR_FALSE
                                                                     : PD_MDR_INVALID;
        } else if (pd_eq(prm.name, prm.nlen, "ContentLength")) {
            /* a response parameter; checked, then ignored */
            const char *q = prm.value;
            uint32_t ignored;
            if (has_length || !pd_number(&q, prm.value + prm.vlen, &ignored) ||
                q != prm.value + prm.vlen)
                return false;
            has_length = true;
        }
        /* other well-formed parameters: extensions we do not know, ignored */
    }
    return rc == 0;
}

/* What X-P2P-PeerDistEx says: the CI versions the client takes. */
struct pd_peerdist_ex {
    struct pd_ver min, max;
    bool has_min, has_max;
};

static bool pd_parse_peerdist_ex(const char *v, size_t len, struct pd_peerdist_ex *ex)
{
    const char *p = v, *end = v + len;
    struct pd_param prm;
    int rc;

    memset(ex, 0, sizeof(*ex));
    pd_trim(&p, &end);
    for (bool first = true; (rc = pd_next_param(&p, end, first, &prm)) == 1; first = false) {
        if (pd_eq(prm.name, prm.nlen, "MinContentInformation")) {
            if (ex->has_min || !pd_version(prm.value, prm.vlen, &ex->min))
                return false;
            ex->has_min = true;
        } else if (pd_eq(prm.name, prm.nlen, "MaxContentInformation")) {
            if (ex->has_max || !pd_version(prm.value, prm.vlen, &ex->max))
                return false;
            ex->has_max = true;
        }
        /* HashRequest only says the client was told to come back; it changes nothing here. */
    }
    if (rc != 0)
        return false;
    /* The spec says clients always send Min=1.0; without Max a client has named one version. */
    if (!ex->has_min)
        ex->min = pd_ci_v1;
    if (!ex->has_max)
        ex->max = ex->min;
    return true;
}

static enum content_pd_action pd_identity(struct content_pd_decision *d, const char *why)
{
    d->action = CONTENT_PD_IDENTITY;
    d->reason = why;
    return d->action;
}

enum content_pd_action content_pd_decide(const struct content_pd_request *rq,
                                         const struct content_pd_policy *p,
                                         struct content_pd_decision *d)
{
    struct pd_peerdist pd;
    struct pd_peerdist_ex ex;
    enum content_pd_version ci;
    int ae;

    memset(d, 0, sizeof(*d));
    /* 1. a GET of a whole, non-empty entity (empty content has no segments) */
    if (!(p->versions & (CONTENT_PD_V1 | CONTENT_PD_V2)))
        return pd_identity(d, "peerdist off");
    if (!rq->is_get)
        return pd_identity(d, "not GET");
    if (!rq->is_full_entity)
        return pd_identity(d, "not a full 200 entity");
    if (rq->entity_length == 0)
        return pd_identity(d, "empty entity");
    /* From here the choice depends on Accept-Encoding, whatever it is. */
    d->vary = true;
    /* 2. peerdist in Accept-Encoding with q > 0 */
    if (!rq->accept_encoding)
        return pd_identity(d, "no Accept-Encoding");
    ae = pd_accepts_peerdist(rq->accept_encoding, rq->accept_encoding_len);
    if (ae < 0)
        return pd_identity(d, "malformed Accept-Encoding");
    if (ae == 0)
        return pd_identity(d, "peerdist not accepted");
    /* 3. X-P2P-PeerDist with Version exactly 1.0 or 1.1 */
    if (!rq->peerdist)
        return pd_identity(d, "no X-P2P-PeerDist");
    if (!pd_parse_peerdist(rq->peerdist, rq->peerdist_len, &pd))
        return pd_identity(d, "malformed X-P2P-PeerDist");
    if (!pd.has_version)
        return pd_identity(d, "X-P2P-PeerDist without Version");
    if (pd.version.major != 1 || pd.version.minor > 1)
        return pd_identity(d, "unsupported PeerDist version");
    /* 4. a missing-data request is the fallback fetch of raw data */
    if (pd.missing_data == PD_MDR_TRUE)
        return pd_identity(d, "missing-data request");
    if (pd.missing_data == PD_MDR_INVALID)
        return pd_identity(d, "invalid MissingDataRequest");
    /* 5. the CI version: the highest both sides take; 1.0 when the client does not say */
    if (rq->peerdist_ex) {
        if (!pd_parse_peerdist_ex(rq->peerdist_ex, rq->peerdist_ex_len, &ex))
            return pd_identity(d, "malformed X-P2P-PeerDistEx");
    } else {
        ex.min = ex.max = pd_ci_v1;
    }
    if ((p->versions & CONTENT_PD_V2) && pd_cmp(ex.min, pd_ci_v2) <= 0 &&
        pd_cmp(pd_ci_v2, ex.max) <= 0)
        ci = CONTENT_PD_V2;
    else if ((p->versions & CONTENT_PD_V1) && pd_cmp(ex.min, pd_ci_v1) <= 0 &&
             pd_cmp(pd_ci_v1, ex.max) <= 0)
        ci = CONTENT_PD_V1;
    else
        return pd_identity(d, "no common Content Information version");
    /* 6. peerdist needs a validator */
    if (!rq->has_validator)
        return pd_identity(d, "no ETag or Last-Modified");
    /* 7. no hashes yet: a 1.1 client is told to come back */
    if (!rq->has_hashes) {
        if (pd.version.minor == 1) {
            d->action = CONTENT_PD_IDENTITY_MAKE_HASH;
            d->reason = "hashes not ready";
            d->peerdist_ex = "MakeHashRequest=true";
            return d->action;
        }
        return pd_identity(d, "hashes not ready");
    }
    /* 8. how IIS answers Range + peerdist is not documented: identity 206 unless configured */
    if (rq->has_range && !p->range_ci)
        return pd_identity(d, "Range request");
    /* 9. the CI; the Version header echoes the encoding version the client sent */
    d->action = CONTENT_PD_SERVE;
    d->ci_version = ci;
    d->is_range = rq->has_range;
    d->reason = ci == CONTENT_PD_V2 ? "peerdist, CI 2.0" : "peerdist, CI 1.0";
    snprintf(d->peerdist, sizeof(d->peerdist), "Version=1.%u, ContentLength=%llu",
             (unsigned)pd.version.minor, (unsigned long long)rq->entity_length);
    return d->action;
}
