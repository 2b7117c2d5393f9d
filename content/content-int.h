/* Internals shared by cache.c (entries, fill threads) and catalog.c (package manifests). */
#ifndef CMG_CONTENT_INT_H
#define CMG_CONTENT_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "content.h"

/* A job for the fill threads. */
struct content_job {
    struct content_job *next;
    void (*run)(struct content_cache *c, void *arg);
    void *arg;
};

struct content_catalog_slot;

struct content_cache {
    struct content_store *store; /* borrowed */
    char *dir;
    uint64_t max_bytes;
    uint64_t manifest_ttl_ms;
    unsigned pd_versions;
    struct content_pd_secret pd_secret;
    bool has_secret;
    content_notify_cb notify;
    void *notify_arg;

    pthread_mutex_t lock; /* everything below, and the entries' index/LRU links */
    pthread_cond_t cond;
    bool stopping;
    struct content_job *jobs, **jobs_tail;
    pthread_t *threads;
    unsigned nthreads;
    struct content_entry **table; /* hash chains by key */
    size_t table_size;
    struct content_entry *lru_head, *lru_tail; /* complete entries, most recent first */
    uint64_t used;                             /* bytes of indexed entries */
    uint64_t entries;
    struct content_catalog_slot *catalog; /* list of known packages */
    size_t ncatalog;
    struct content_cache_stats stats; /* counters (entries/bytes filled in on read) */
    char **trash;                     /* evicted content files to remove (on a fill thread) */
    size_t ntrash;
    uint64_t trash_seq;
    bool trash_queued;
};

/* Queues a job for a fill thread; takes ownership of arg only on success (0). */
int content_cache_submit(struct content_cache *c, void (*run)(struct content_cache *, void *),
                         void *arg);
/* The same, ahead of every queued job (small, urgent work: manifests before fills). */
int content_cache_submit_at(struct content_cache *c, void (*run)(struct content_cache *, void *),
                            void *arg, bool first);
/* Announces progress to subscribers (no lock held). */
void content_cache_announce(struct content_cache *c, uint64_t bits);
/* Frees the catalog (at cache free). */
void content_catalog_clear(struct content_cache *c);

#endif
