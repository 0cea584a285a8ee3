/*
 * The cache people write by hand, for comparison: one pthread mutex around a hash map (chained,
 * doubled when it holds more entries than buckets) and an LRU list, bounded by the same byte
 * count as the memo, with the same time to live for documents and for 404s.
 *
 * What it does not have is single flight: a miss unlocks, queries, and locks again to insert, so
 * every request that misses an id queries the database, even while another thread's query for
 * that id is running. (Holding the lock across the query would make every request wait for every
 * miss; a lock per key is the single flight that memo provides.) Nor does it refresh documents
 * before they expire: an expired document is a miss.
 *
 * Bytes are counted as memo counts its own: every block malloc'd for the cache (entry headers
 * with their documents, the bucket array).
 */
#include "httpd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct lru_links {
    struct lru_entry *newer, *older; /* the LRU list */
};

struct lru_entry {
    struct lru_links  links;        /* first: the list's sentinel is a bare struct lru_links */
    struct lru_entry *chain;        /* next in the bucket */
    uint64_t          id;
    uint64_t          expires;      /* httpd_now_ns deadline; UINT64_MAX: never */
    int               status;       /* 200 or 404 */
    size_t            len;
    char              document[];
};

/* The list's sentinel, seen as an entry: only its links (the first member) are ever touched. */
#define SENTINEL(c) ((struct lru_entry *)(void *)&(c)->list)

struct lru_cache {
    pthread_mutex_t    lock;
    struct lru_entry **buckets;
    size_t             bucket_count;  /* a power of two */
    struct lru_links   list;          /* sentinel: list.older is the most recent entry, list.newer
                                         the least recent (the next victim) */
    uint64_t           max_bytes, ttl_ns, negative_ttl_ns;
    /* under lock */
    uint64_t entries, bytes, hits, misses, errors, evictions;
};

static size_t lru_bucket(const struct lru_cache *c, uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (c->bucket_count - 1);
}

static uint64_t lru_entry_bytes(const struct lru_entry *e)
{
    return sizeof *e + e->len;
}

/* The list: insert at the most recent end, unlink anywhere. */
static void lru_link_recent(struct lru_cache *c, struct lru_entry *e)
{
    e->links.older = c->list.older;
    e->links.newer = SENTINEL(c);
    c->list.older->links.newer = e;
    c->list.older = e;
}

static void lru_unlink(struct lru_entry *e)
{
    e->links.older->links.newer = e->links.newer;
    e->links.newer->links.older = e->links.older;
}

static struct lru_entry **lru_find_slot(struct lru_cache *c, uint64_t id)
{
    struct lru_entry **slot = &c->buckets[lru_bucket(c, id)];
    while (*slot != NULL && (*slot)->id != id)
        slot = &(*slot)->chain;
    return slot;
}

/* Removes e (found at *slot) from the map and the list and frees it. */
static void lru_remove(struct lru_cache *c, struct lru_entry **slot, struct lru_entry *e)
{
    *slot = e->chain;
    lru_unlink(e);
    c->entries--;
    c->bytes -= lru_entry_bytes(e);
    free(e);
}

static void lru_grow(struct lru_cache *c)
{
    size_t count = c->bucket_count * 2;
    struct lru_entry **buckets = calloc(count, sizeof *buckets);
    if (buckets == NULL)
        return; /* longer chains; still correct */
    for (size_t i = 0; i < c->bucket_count; i++) {
        struct lru_entry *e = c->buckets[i];
        while (e != NULL) {
            struct lru_entry *next = e->chain;
            size_t b = (size_t)((e->id * 0x9e3779b97f4a7c15ull) >> 32) & (count - 1);
            e->chain = buckets[b];
            buckets[b] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->bytes += (count - c->bucket_count) * sizeof *buckets;
    c->buckets = buckets;
    c->bucket_count = count;
}

struct lru_cache *lru_cache_create(uint64_t max_bytes, uint64_t ttl_ns, uint64_t negative_ttl_ns)
{
    struct lru_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->bucket_count = 1024;
    c->buckets = calloc(c->bucket_count, sizeof *c->buckets);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->list.older = c->list.newer = SENTINEL(c);
    c->max_bytes = max_bytes;
    c->ttl_ns = ttl_ns;
    c->negative_ttl_ns = negative_ttl_ns;
    c->bytes = c->bucket_count * sizeof *c->buckets;
    return c;
}

/* Copies e's answer for the caller (under the lock: e may be evicted once it is released). */
static void lru_answer(const struct lru_entry *e, struct cache_answer *answer)
{
    answer->status = e->status;
    if (e->status != 200)
        return;
    answer->owned = malloc(e->len > 0 ? e->len : 1);
    if (answer->owned == NULL) {
        answer->status = 503;
        return;
    }
    memcpy(answer->owned, e->document, e->len);
    answer->data = answer->owned;
    answer->len = e->len;
}

void lru_cache_get(struct lru_cache *c, uint64_t id, struct cache_answer *answer)
{
    uint64_t now = c->ttl_ns != 0 || c->negative_ttl_ns != 0 ? httpd_now_ns() : 0;

    pthread_mutex_lock(&c->lock);
    struct lru_entry **slot = lru_find_slot(c, id), *e = *slot;
    if (e != NULL && e->expires > now) {
        lru_unlink(e);
        lru_link_recent(c, e);
        c->hits++;
        lru_answer(e, answer);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (e != NULL) { /* expired */
        lru_remove(c, slot, e);
        c->evictions++;
    }
    c->misses++;
    pthread_mutex_unlock(&c->lock);

    /* The query, outside the lock; any number of threads may be here for the same id. */
    cache_query(id, answer);
    if (answer->status != 200 && answer->status != 404) {
        pthread_mutex_lock(&c->lock);
        c->errors++;
        pthread_mutex_unlock(&c->lock);
        return; /* a failed query is not remembered */
    }
    if (answer->status == 404)
        answer->len = 0;
    uint64_t ttl = answer->status == 200 ? c->ttl_ns : c->negative_ttl_ns;
    if (answer->status == 404 && ttl == 0)
        return;
    size_t len = answer->status == 200 ? answer->len : 0;
    struct lru_entry *fresh = malloc(sizeof *fresh + len);
    if (fresh == NULL)
        return;
    fresh->id = id;
    fresh->status = answer->status;
    fresh->len = len;
    fresh->expires = ttl == 0 ? UINT64_MAX : httpd_now_ns() + ttl;
    if (len > 0)
        memcpy(fresh->document, answer->data, len);
    if (lru_entry_bytes(fresh) + c->bucket_count * sizeof *c->buckets > c->max_bytes) {
        free(fresh); /* alone it would not fit */
        return;
    }

    pthread_mutex_lock(&c->lock);
    slot = lru_find_slot(c, id);
    if (*slot != NULL) /* another thread's query for the same id got here first: keep the newer */
        lru_remove(c, slot, *slot);
    if (c->entries >= c->bucket_count)
        lru_grow(c);
    size_t b = lru_bucket(c, id);
    fresh->chain = c->buckets[b];
    c->buckets[b] = fresh;
    lru_link_recent(c, fresh);
    c->entries++;
    c->bytes += lru_entry_bytes(fresh);
    while (c->bytes > c->max_bytes && c->list.newer != fresh) {
        struct lru_entry *victim = c->list.newer;
        lru_remove(c, lru_find_slot(c, victim->id), victim);
        c->evictions++;
    }
    pthread_mutex_unlock(&c->lock);
}

void lru_cache_stats(struct lru_cache *c, struct cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    out->hits = c->hits;
    out->misses = c->misses;
    out->waits = 0; /* nobody waits: every miss queries */
    out->errors = c->errors;
    out->evictions = c->evictions;
    out->entries = c->entries;
    out->bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
}

void lru_cache_destroy(struct lru_cache *c)
{
    if (c == NULL)
        return;
    struct lru_entry *e = c->list.older;
    while (e != SENTINEL(c)) {
        struct lru_entry *next = e->links.older;
        free(e);
        e = next;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
