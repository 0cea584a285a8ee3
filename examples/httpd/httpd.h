/*
 * memo-httpd: an HTTP server (libmicrohttpd, thread-pool mode) that answers GET /item/<id> with a
 * JSON document computed by an expensive SQLite query, and caches the documents in a memo.
 *
 *   db.c         the database: generated on first start, one read-only connection per thread,
 *                the item query
 *   cache.c      the three caches behind one call: memo (memo_get, bounded, expiring, negative
 *                caching), none (the database every time)
 *   lru_cache.c  the cache people write by hand: one mutex around a hash map with an LRU list
 *   server.c     the daemon: routes, answers, /stats, in-flight accounting, the drain at shutdown
 *   main.c       the command line, the signals, the order of start and stop
 */
#ifndef MEMO_HTTPD_H
#define MEMO_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <memo.h>

/* ---------------------------------------------------------------------------------------------
 * The database (db.c).
 */

/* What the generator builds when the file does not exist (--items changes the first). */
#define DB_DEFAULT_ITEMS      50000
#define DB_ITEMS_PER_CATEGORY 64    /* the category ranking aggregates this many items' reviews */
#define DB_MIN_REVIEWS        10    /* reviews per item: 10 to 50, 30 on average */
#define DB_MAX_REVIEWS        50
#define DB_MAX_ITEMS          10000000

/* What one item query found. */
enum db_status {
    DB_FOUND = 0,
    DB_NOT_FOUND = 1,  /* no item with that id */
    DB_ERROR = 2,      /* SQLite failed (logged) */
};

/* Opens path, generating the database first if the file does not exist (into a temporary file
 * renamed into place when complete, so an interrupted start leaves nothing half made). items is
 * the number to generate (0 = DB_DEFAULT_ITEMS); an existing file keeps its own. *items_out is what
 * the file holds. Returns 0, or -1 after printing why. Call once, before any thread queries. */
int db_open(const char *path, uint64_t items, uint64_t *items_out);

/* Runs the item query on the calling thread's own connection (opened on its first call) and hands
 * the JSON document to sink, whose return value db_item returns; on DB_NOT_FOUND or DB_ERROR sink
 * is not called and that status is returned. The document is valid during the call only. */
typedef int db_sink_fn(void *ctx, const char *json, size_t len);
int db_item(uint64_t id, db_sink_fn *sink, void *ctx);

/* Closes every thread's connection. Only once no thread can query any more. */
void db_close(void);

struct db_counters {
    uint64_t queries;        /* item queries run */
    uint64_t query_ns;       /* their total wall time */
    uint64_t connections;    /* connections opened (one per thread that queried) */
};
void db_counters(struct db_counters *out);

/* ---------------------------------------------------------------------------------------------
 * The caches (cache.c, lru_cache.c): one call that every mode answers the same way.
 */
enum cache_mode { CACHE_MEMO, CACHE_MUTEX, CACHE_NONE };

struct cache_config {
    enum cache_mode mode;
    uint64_t        max_bytes;     /* the bound, memo and mutex modes */
    uint64_t        ttl_ns;        /* 0 = documents never expire */
    uint64_t        refresh_ns;    /* memo mode only: 0 = no refresh */
    uint64_t        negative_ttl_ns;  /* how long a 404 is remembered; 0 = not at all */
};

/* The document for one id, as the cache answered it: status 200 (data, len: the JSON), 404 or
 * 500. Released with cache_answer_release on the thread that got it, soon. */
struct cache_answer {
    int         status;
    const void *data;
    size_t      len;
    /* private: */
    memo_ref_t  ref;        /* memo mode */
    char       *owned;      /* mutex and none modes: a malloc'd copy */
};

/* The figures /stats exposes, the same names in every mode (none: misses = queries). */
struct cache_stats {
    uint64_t hits, misses, waits, errors, evictions, entries, bytes, max_bytes;
};

struct cache;
int  cache_create(struct cache **out, const struct cache_config *cfg); /* 0 or -1, printed */
void cache_get(struct cache *c, uint64_t id, struct cache_answer *answer);
void cache_answer_release(struct cache_answer *answer);
void cache_stats(struct cache *c, struct cache_stats *out);
void cache_destroy(struct cache *c);
const char *cache_mode_name(enum cache_mode mode);

/* Queries the database for id and fills answer with a malloc'd copy (status 200, 404 or 500): the
 * none mode, and the mutex mode's misses. */
void cache_query(uint64_t id, struct cache_answer *answer);

/* The mutex mode (lru_cache.c), behind cache.c. */
struct lru_cache;
struct lru_cache *lru_cache_create(uint64_t max_bytes, uint64_t ttl_ns, uint64_t negative_ttl_ns);
void lru_cache_get(struct lru_cache *c, uint64_t id, struct cache_answer *answer);
void lru_cache_stats(struct lru_cache *c, struct cache_stats *out);
void lru_cache_destroy(struct lru_cache *c);

/* ---------------------------------------------------------------------------------------------
 * The server (server.c).
 */
struct server_config {
    const char *address;        /* IPv4 address to listen on */
    unsigned    port;           /* 0 = any free port (printed at start) */
    unsigned    threads;        /* libmicrohttpd's thread pool */
    unsigned    timeout_s;      /* a connection idle or stalled this long is closed */
    unsigned    drain_s;        /* at shutdown, how long to wait for requests in flight */
    struct cache *cache;
    enum cache_mode mode;       /* for /stats */
};

struct server;
/* Starts listening and answering; *port_out is the port bound. Returns 0, or -1 printed. */
int  server_start(struct server **out, const struct server_config *cfg, unsigned *port_out);
/* Stops accepting, answers what is in flight (each with Connection: close) for up to drain_s,
 * then stops every thread. Returns the number of requests cut off (0 for a clean stop). */
uint64_t server_stop(struct server *s);

/* Small shared helpers (main.c). */
uint64_t httpd_now_ns(void);   /* CLOCK_MONOTONIC */
void     httpd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* MEMO_HTTPD_H */
