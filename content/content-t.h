/* Types of the content module shared with other modules. */
#ifndef CMG_CONTENT_T_H
#define CMG_CONTENT_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a Range header asks of a representation of known size. */
enum content_range_result {
    CONTENT_RANGE_NONE = 0,      /* no usable single range: send the whole (200) */
    CONTENT_RANGE_PARTIAL,       /* send bytes first..last (206) */
    CONTENT_RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * / size */
};

struct content_range {
    uint64_t first, last; /* inclusive, valid for CONTENT_RANGE_PARTIAL */
};

/* ---- BranchCache / PeerDist ([MS-PCCRC] Content Information, [MS-PCCRTP] HTTP) ---- */

/* Content Information versions; also bits of a set ("versions"). */
enum content_pd_version {
    CONTENT_PD_V1 = 1 << 0, /* CI 1.0: SHA-256, 64 KiB blocks in 32 MiB segments */
    CONTENT_PD_V2 = 1 << 1, /* CI 2.0: truncated SHA-512, segments of at most 128 KiB */
};

#define CONTENT_PD_HASH_LEN 32              /* every hash in the CIs we emit */
#define CONTENT_PD_V1_BLOCK 65536u          /* [MS-PCCRC] 2.1 */
#define CONTENT_PD_V1_SEGMENT 33554432u     /* 32 MiB, [MS-PCCRC] 2.1 */
#define CONTENT_PD_V2_SEGMENT 65536u        /* our v2 segmentation (Windows' chunker is secret) */
#define CONTENT_PD_V2_SEGMENT_MAX 131072u   /* cbSegment bound, [MS-PCCRC] 2.4.1.2 */
#define CONTENT_PD_MAX_CONTENT (1ull << 40) /* 1 TiB: a v1 CI is then 512 MiB */
#define CONTENT_PD_KEY_MAX 1024             /* bytes of a server secret key we accept */
#define CONTENT_PD_EXPORT_MAX 4096          /* bytes of a netsh exportkey file we read */
#define CONTENT_PD_CODING "peerdist"        /* the Content-Encoding value */

/* Errors of the content_pd_ functions: 0 or one of these. */
enum content_pd_error {
    CONTENT_PD_OK = 0,
    CONTENT_PD_EINVAL = -1,  /* bad argument, or a call out of order */
    CONTENT_PD_ENOMEM = -2,  /* allocation failed */
    CONTENT_PD_ECRYPTO = -3, /* an OpenSSL call failed */
    CONTENT_PD_ETOOBIG = -4, /* content beyond CONTENT_PD_MAX_CONTENT */
    CONTENT_PD_ERANGE = -5,  /* the range is not inside the content */
    CONTENT_PD_ENOSPC = -6,  /* the output buffer is too small */
    CONTENT_PD_ENOVER = -7,  /* the hashes were not computed for that CI version */
};

/* The server secret Ks of both CI versions, derived from the server secret key ([MS-PCCRC]
 * 2.5, the "passphrase" of netsh). A plain value: copy it freely, wipe it with
 * content_pd_secret_clear(). Only `id` may be read outside peerdist-key.c. */
struct content_pd_secret {
    uint8_t id[8];      /* public fingerprint of the key: logs, and tags data derived from it */
    uint8_t _ks_v1[32]; /* SHA-256(key) */
    uint8_t _ks_v2[32]; /* SHA-512(key), first 32 bytes */
};

/* What a content_pd_hasher computes; see content_pd_hasher_new(). */
struct content_pd_hasher_opts {
    unsigned versions;   /* CONTENT_PD_V1 and/or CONTENT_PD_V2 */
    uint64_t size_hint;  /* expected content length (0: unknown); sizes the tables once */
    uint32_t v2_segment; /* v2 segment length, 1..CONTENT_PD_V2_SEGMENT_MAX; 0: the default */
};

/* The request as the PeerDist decision sees it. Header values are the field values with
 * repeated lines joined by ", "; NULL means the header is absent. All pointers are borrowed
 * for the duration of content_pd_decide(). */
struct content_pd_request {
    const char *accept_encoding; /* Accept-Encoding */
    size_t accept_encoding_len;
    const char *peerdist; /* X-P2P-PeerDist */
    size_t peerdist_len;
    const char *peerdist_ex; /* X-P2P-PeerDistEx */
    size_t peerdist_ex_len;
    uint64_t entity_length; /* the identity entity's length (ContentLength= of the reply) */
    bool is_get;            /* the method is GET */
    bool is_full_entity;    /* the stored or origin response is a 200 with the whole entity */
    bool has_validator;     /* that response has an ETag or a Last-Modified */
    bool has_range;         /* the request has a Range header that would be honoured */
    bool has_hashes;        /* the entity's hashes are computed */
};

/* The gateway's PeerDist settings. */
struct content_pd_policy {
    unsigned versions; /* CI versions offered; 0 turns PeerDist off */
    bool range_ci;     /* answer Range + peerdist with a CI of the range, not identity 206 */
};

enum content_pd_action {
    CONTENT_PD_IDENTITY = 0,       /* the ordinary response, nothing added */
    CONTENT_PD_IDENTITY_MAKE_HASH, /* the ordinary response + X-P2P-PeerDistEx: d.peerdist_ex */
    CONTENT_PD_SERVE,              /* 200, Content-Encoding: peerdist, the CI as the body */
};

struct content_pd_decision {
    enum content_pd_action action;
    enum content_pd_version ci_version; /* SERVE: the CI version to send */
    bool is_range;                      /* SERVE: the CI covers the request's range only */
    bool vary;                          /* add Vary: Accept-Encoding to the response */
    const char *reason;                 /* static text for the log line */
    const char *peerdist_ex;            /* IDENTITY_MAKE_HASH: the X-P2P-PeerDistEx value */
    char peerdist[64]; /* SERVE: the X-P2P-PeerDist value, "Version=1.1, ContentLength=N" */
};

/* ---- storage (store.c, blob.c) ---- */

enum content_store_kind {
    CONTENT_STORE_FOLDER = 0, /* a local folder: the embedded default */
    CONTENT_STORE_BLOB,       /* an Azure Blob storage container */
};

/* Azure environments, as the settings name them (index = [content] environment). */
enum content_azure_env {
    CONTENT_AZURE_PUBLIC = 0, /* AzurePublicCloud: core.windows.net */
    CONTENT_AZURE_USGOV,      /* AzureUSGovernmentCloud: core.usgovcloudapi.net */
};

/* Where the content-location service points clients. */
enum content_locations {
    CONTENT_LOCATIONS_GATEWAY = 0, /* URLs on the gateway itself, served through its cache */
    CONTENT_LOCATIONS_SAS,         /* short-lived read-only SAS URLs straight to Blob storage */
};

/* Results of store operations: 0 or one of these. */
enum content_store_error {
    CONTENT_STORE_OK = 0,
    CONTENT_STORE_ENOTFOUND = -1, /* no such blob / file / container */
    CONTENT_STORE_ECHANGED = -2,  /* the blob is not the one asked for (If-Match failed) */
    CONTENT_STORE_EAUTH = -3,     /* refused: credentials, signature, SAS scope */
    CONTENT_STORE_EIO = -4,       /* transport, timeout, local I/O, 5xx */
    CONTENT_STORE_EPROTO = -5,    /* an answer that makes no sense (missing headers, bad XML) */
    CONTENT_STORE_EABORT = -6,    /* the caller's sink or progress callback asked to stop */
    CONTENT_STORE_EINVAL = -7,    /* a bad name or argument */
};

/* The [content] settings (settings.c): one schema for the gateway and cmgctl. Strings are
 * owned (content_settings_free). Paths are resolved against the configuration's folder. */
struct content_settings {
    bool enabled;
    unsigned store;              /* enum content_store_kind */
    char *folder;                /* folder store: its root */
    unsigned environment;        /* enum content_azure_env */
    char *account;               /* storage account name */
    char *account_key;           /* base64 Shared Key (or read from account_key_file) */
    char *account_key_file;      /* a file holding the key */
    char *sas;                   /* a SAS token (without '?'), instead of the key */
    char *blob_endpoint;         /* override: "http(s)://host[:port][/account]"; default from
                                    account + environment */
    char *container;             /* the container holding packages */
    char *api_version;           /* x-ms-version */
    char *ca_file;               /* extra roots for the storage endpoint's certificate */
    uint64_t timeout;            /* ms: connect + low-speed bound per storage call */
    uint64_t upload_block;       /* bytes per block when a file is uploaded in blocks */
    uint64_t upload_single_max;  /* files up to this size go in one Put Blob */
    char *cache_dir;             /* the disk cache */
    uint64_t cache_max;          /* bytes the cache may hold */
    uint64_t fill_threads;       /* concurrent fills from storage */
    unsigned locations;          /* enum content_locations */
    uint64_t sas_lifetime;       /* ms: SAS URLs' lifetime (capped by the access token's end) */
    char *token_certs;           /* comma-separated certificates of the management points that
                                    sign content access tokens */
    uint64_t token_max_lifetime; /* ms: longest st..et window accepted */
    uint64_t token_skew;         /* ms: clock skew allowed on st and et */
    uint64_t storage_alert;      /* bytes: the storage alert threshold */
    uint64_t storage_warning;    /* percent of storage_alert */
    uint64_t storage_critical;   /* percent of storage_alert */
    bool peerdist;               /* BranchCache on */
    char *peerdist_secret_hex;   /* the server secret key in hex */
    char *peerdist_key_file;     /* or a `netsh branchcache exportkey` file ... */
    char *peerdist_key_password; /* ... and its password */
    uint64_t manifest_ttl;       /* ms: a package manifest is fetched again after this */
};

/* What a store knows of one blob or file. */
struct content_blob_info {
    char name[1024]; /* blob name inside the container / path under the folder */
    uint64_t size;
    char etag[80];         /* as the store sends it, quotes included ("0x8D...") */
    int64_t last_modified; /* Unix seconds */
    uint8_t md5[16];       /* Content-MD5 of the whole blob ... */
    bool has_md5;          /* ... when the store has one */
};

/* ---- packages in a store (manifest.c; docs/content.md "Package layout") ----
 *
 * The files of package P are the blobs "content/P/<path>"; its manifest, the blob
 * "packages/P.json", is uploaded last: a package without one is incomplete. */

#define CONTENT_PACKAGE_ID_MAX 64           /* characters of a package id ([A-Za-z0-9._-]) */
#define CONTENT_ID_MAX 128                  /* characters of a content id (same alphabet) */
#define CONTENT_PATH_MAX 900                /* bytes of a file's path inside its package */
#define CONTENT_MANIFEST_FORMAT 1           /* the "format" written and understood */
#define CONTENT_MANIFEST_MAX (16u << 20)    /* bytes of a manifest accepted */
#define CONTENT_MANIFEST_FILES_MAX 200000   /* files of one package */
#define CONTENT_SIZE_MAX ((1ull << 53) - 1) /* largest size a manifest carries (exact in JSON) */

struct content_manifest_file {
    char *path;            /* inside the package, '/'-separated; owned by the manifest */
    uint64_t size;         /* bytes */
    uint8_t md5[16];       /* MD5 of the file (base64 in the JSON) */
    char etag[80];         /* the blob's ETag when the manifest was written, quotes included */
    int64_t last_modified; /* the blob's Last-Modified, Unix seconds */
};

/* One package manifest. Every pointer in it is owned by it (content_manifest_free). */
struct content_manifest {
    char package[CONTENT_PACKAGE_ID_MAX + 1];
    char content_id[CONTENT_ID_MAX + 1];
    int64_t distributed; /* when it was distributed, Unix seconds */
    uint64_t size;       /* the sum of the files' sizes */
    size_t nfiles;
    struct content_manifest_file *files; /* in path order (strcmp), paths unique */
};

#endif
