/* A bounded multi-producer queue drained on its owner's event loop. The owner is woken through
 * an eventfd, so event bases need no locking of their own (EVENT_BASE_FLAG_NOLOCK). */
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "core.h"

struct core_mq {
    pthread_mutex_t lock;
    struct event *wake; /* owned; fires on the owner's base */
    int efd;            /* owned eventfd */
    core_mq_handler_cb handler;
    void *ctx;
    unsigned capacity, head, count;
    struct core_mq_msg *ring; /* owned, capacity entries */
};

static void core_mq_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct core_mq *mq = arg;
    uint64_t v;
    ssize_t r = read(mq->efd, &v, sizeof(v));
    (void)r;
    for (;;) {
        struct core_mq_msg msg;
        pthread_mutex_lock(&mq->lock);
        if (mq->count == 0) {
            pthread_mutex_unlock(&mq->lock);
            return;
        }
        msg = mq->ring[mq->head];
        mq->head = (mq->head + 1) % mq->capacity;
        mq->count--;
        pthread_mutex_unlock(&mq->lock);
        mq->handler(&msg, mq->ctx);
    }
}

struct core_mq *core_mq_new(struct event_base *base, unsigned capacity, core_mq_handler_cb handler,
                            void *ctx)
{
    struct core_mq *mq = calloc(1, sizeof(*mq));
    if (!mq)
        return NULL;
    mq->ring = calloc(capacity ? capacity : 1, sizeof(*mq->ring));
    mq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mq->efd >= 0)
        mq->wake = event_new(base, mq->efd, EV_READ | EV_PERSIST, core_mq_wake_cb, mq);
    if (!mq->ring || !mq->wake || event_add(mq->wake, NULL) != 0) {
        free(mq->ring);
        if (mq->wake)
            event_free(mq->wake);
        if (mq->efd >= 0)
            close(mq->efd);
        free(mq);
        return NULL;
    }
    pthread_mutex_init(&mq->lock, NULL);
    mq->capacity = capacity ? capacity : 1;
    mq->handler = handler;
    mq->ctx = ctx;
    return mq;
}

void core_mq_free(struct core_mq *mq)
{
    if (!mq)
        return;
    event_free(mq->wake);
    close(mq->efd);
    pthread_mutex_destroy(&mq->lock);
    free(mq->ring);
    free(mq);
}

int core_mq_post(struct core_mq *mq, int type, void *arg)
{
    pthread_mutex_lock(&mq->lock);
    if (mq->count == mq->capacity) {
        pthread_mutex_unlock(&mq->lock);
        return -1;
    }
    mq->ring[(mq->head + mq->count) % mq->capacity] = (struct core_mq_msg){type, arg};
    bool was_empty = mq->count++ == 0;
    pthread_mutex_unlock(&mq->lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t r = write(mq->efd, &one, sizeof(one));
        (void)r;
    }
    return 0;
}
