/*
 * The caches behind one call, cache_get: the server's handler is the same code in every mode.
 *
 *   memo   memo_get on a memo bounded by max_bytes, with ttl_ns, refresh_ns and failure_ttl_ns:
 *          one query per id however many requests ask for it at once (single flight), a 404 kept
 *          for negative_ttl_ns, documents refreshed in the background of the requests that keep
 *          coming (stale-while-revalidate)
 *   mutex  the cache people write by hand (lru_cache.c)
 *   none   the database every time
 */
#include "httpd.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The compute function's positive code for an id that is not in the database: memo keeps it for
 * failure_ttl_ns and answers it without running the query again (a 404 through negative
 * caching). */
#define CACHE_NOT_FOUND 1
/* Only when the memo cannot take a not-stored value (a memo with none of the bound and expiry
 * settings, where failure_ttl_ns is 0 too, so this code is never stored either). */
#define CACHE_DB_ERROR  2

struct cache {
    enum cache_mode   mode;
    uint64_t          max_bytes;
    memo_t           *memo;   /* memo mode */
    struct lru_cache *lru;    /* mutex mode */
};

const char *cache_mode_name(enum cache_mode mode)
{
    switch (mode) {
    case CACHE_MEMO: return "memo";
    case CACHE_MUTEX: return "mutex";
    case CACHE_NONE: return "none";
    }
    return "?";
}

/* memo mode: the query's document goes straight into memo's copy. */
static int cache_memo_sink(void *ctx, const char *json, size_t len)
{
    return memo_result_set(ctx, json, len) == MEMO_OK ? DB_FOUND : DB_ERROR;
}

/* The compute function: runs on the thread that missed (a libmicrohttpd worker), so db_item uses
 * that thread's own connection. */
static int cache_memo_compute(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t id;
    (void)ctx;
    if (key_len != sizeof id)
        return CACHE_DB_ERROR;
    memcpy(&id, key, sizeof id);
    switch (db_item(id, cache_memo_sink, out)) {
    case DB_FOUND:
        return 0;
    case DB_NOT_FOUND:
        return CACHE_NOT_FOUND;
    default:
        /* A failed query is not an answer to remember: an empty value with a time to live of 0
         * goes to this caller and its waiters (each answers 500) and is not stored, so the next
         * request queries again. A positive code would be stored for failure_ttl_ns. */
        if (memo_result_set(out, NULL, 0) == MEMO_OK && memo_result_ttl(out, 0) == MEMO_OK)
            return 0;
        return CACHE_DB_ERROR;
    }
}

/* none mode (and lru_cache.c's misses): a malloc'd copy of the document. */
struct cache_copy {
    char  *data;
    size_t len;
};

static int cache_copy_sink(void *ctx, const char *json, size_t len)
{
    struct cache_copy *copy = ctx;
    copy->data = malloc(len > 0 ? len : 1);
    if (copy->data == NULL)
        return DB_ERROR;
    memcpy(copy->data, json, len);
    copy->len = len;
    return DB_FOUND;
}

int cache_create(struct cache **out, const struct cache_config *cfg)
{
    struct cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->mode = cfg->mode;
    c->max_bytes = cfg->max_bytes;
    if (cfg->mode == CACHE_MEMO) {
        memo_config_t mc = MEMO_CONFIG_INIT;
        mc.max_bytes = cfg->max_bytes;
        mc.ttl_ns = cfg->ttl_ns;
        mc.refresh_ns = cfg->refresh_ns;
        mc.failure_ttl_ns = cfg->negative_ttl_ns;
        int rc = memo_create(&c->memo, &mc);
        if (rc != MEMO_OK) {
            httpd_log("memo_create: %s", memo_strerror(rc));
            free(c);
            return -1;
        }
    } else if (cfg->mode == CACHE_MUTEX) {
        c->lru = lru_cache_create(cfg->max_bytes, cfg->ttl_ns, cfg->negative_ttl_ns);
        if (c->lru == NULL) {
            httpd_log("out of memory");
            free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

/* Fills answer from a query's outcome (none mode, and lru_cache.c through cache_query). */
void cache_query(uint64_t id, struct cache_answer *answer)
{
    struct cache_copy copy = { NULL, 0 };
    int status = db_item(id, cache_copy_sink, &copy);
    answer->status = status == DB_FOUND ? 200 : status == DB_NOT_FOUND ? 404 : 500;
    answer->owned = copy.data;
    answer->data = copy.data;
    answer->len = copy.len;
}

void cache_get(struct cache *c, uint64_t id, struct cache_answer *answer)
{
    memset(answer, 0, sizeof *answer);
    answer->ref = (memo_ref_t)MEMO_REF_INIT;
    switch (c->mode) {
    case CACHE_MEMO: {
        /* The key is the id's 8 bytes: "7" and "007" are one key (the server parses first). */
        int rc = memo_get(c->memo, &id, sizeof id, cache_memo_compute, NULL, &answer->ref);
        if (rc == MEMO_OK && answer->ref.len > 0) {
            answer->status = 200;
            answer->data = answer->ref.data;
            answer->len = answer->ref.len;
        } else if (rc == MEMO_OK) {
            answer->status = 500; /* the query failed (logged by db_item); not stored */
            memo_release(&answer->ref);
        } else if (rc == CACHE_NOT_FOUND) {
            answer->status = 404;
        } else if (rc == CACHE_DB_ERROR) {
            answer->status = 500;
        } else {
            httpd_log("memo_get: item %" PRIu64 ": %s", id, memo_strerror(rc));
            answer->status = 503; /* memo's own failure: out of memory */
        }
        return;
    }
    case CACHE_MUTEX:
        lru_cache_get(c->lru, id, answer);
        return;
    case CACHE_NONE:
        cache_query(id, answer);
        return;
    }
}

void cache_answer_release(struct cache_answer *answer)
{
    memo_release(&answer->ref);
    free(answer->owned);
    answer->owned = NULL;
    answer->data = NULL;
    answer->len = 0;
}

void cache_stats(struct cache *c, struct cache_stats *out)
{
    memset(out, 0, sizeof *out);
    out->max_bytes = c->max_bytes;
    if (c->mode == CACHE_MEMO) {
        memo_stats_t s;
        memo_stats(c->memo, &s);
        out->hits = s.hits;
        out->misses = s.misses;
        out->waits = s.waits;
        out->errors = s.errors;
        out->evictions = s.evictions;
        out->entries = s.entries;
        out->bytes = s.bytes;
    } else if (c->mode == CACHE_MUTEX) {
        lru_cache_stats(c->lru, out);
    } else {
        /* No cache: every lookup is a miss that queries. */
        struct db_counters d;
        db_counters(&d);
        out->misses = d.queries;
    }
}

void cache_destroy(struct cache *c)
{
    if (c == NULL)
        return;
    memo_destroy(c->memo); /* no refs are held: every answer was released */
    lru_cache_destroy(c->lru);
    free(c);
}
