/*
 * The database: a shop's items and their reviews, generated on first start, and the item query.
 *
 * The query is deliberately expensive, the way a product page's query is when nobody has built
 * the summary table that would make it cheap: besides the item and its own reviews, the page
 * shows the item's rank in its category by average rating, and the five items of the category
 * whose averages are closest to its own. That aggregates every review of every item in the
 * category (about 250 items, 7,500 reviews) on each call. The reviews were written over time, so
 * they are stored in the order they arrived, not grouped by item: the index on item_id finds an
 * item's 30 reviews in 30 different pages. One query takes a few milliseconds (README).
 *
 * Generation is deterministic: a fixed-seed splitmix64 stream draws everything, so every machine
 * builds the same file for the same --items.
 */
#include "httpd.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_FORMAT 1                      /* meta 'format': bump when the schema or data change */
#define DB_SEED   0x6d656d6f2d687474ull  /* "memo-htt" */

static char *db_path;

/* Every thread's connection, to close them all at shutdown. */
struct db_conn {
    sqlite3        *db;
    sqlite3_stmt   *item;
    struct db_conn *next;
};
static pthread_mutex_t  db_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct db_conn  *db_conns;
static _Thread_local struct db_conn *db_thread_conn;

/* Relaxed: counters for /stats, read while queries run; no other memory depends on them. */
static _Atomic uint64_t db_query_count, db_query_ns, db_conn_count;

/* ---------------------------------------------------------------------------------------------
 * The query.
 */
static const char db_item_sql[] =
    "WITH item AS (SELECT id, name, category, price_cents, description FROM items WHERE id = ?1),\n"
    /* every item of the category with its reviews' count and average: the expensive part */
    "category_items AS MATERIALIZED (\n"
    "  SELECT r.item_id AS id, count(*) AS n, avg(r.rating) AS average\n"
    "  FROM items AS i JOIN reviews AS r ON r.item_id = i.id\n"
    "  WHERE i.category = (SELECT category FROM item)\n"
    "  GROUP BY r.item_id),\n"
    "ranked AS MATERIALIZED (\n"
    "  SELECT id, n, average, rank() OVER (ORDER BY average DESC, n DESC) AS rank FROM category_items),\n"
    "me AS (SELECT n, average, rank FROM ranked WHERE id = ?1),\n"
    "similar AS (SELECT ranked.id FROM ranked, me WHERE ranked.id != ?1\n"
    "            ORDER BY abs(ranked.average - me.average), ranked.id LIMIT 5)\n"
    "SELECT json_object(\n"
    "  'id', item.id, 'name', item.name, 'category', item.category,\n"
    "  'price_cents', item.price_cents, 'description', item.description,\n"
    "  'reviews', json_object(\n"
    "    'count', coalesce(me.n, 0), 'average', round(coalesce(me.average, 0), 3),\n"
    "    'histogram', (SELECT json_array(sum(rating = 1), sum(rating = 2), sum(rating = 3),\n"
    "                                     sum(rating = 4), sum(rating = 5))\n"
    "                  FROM reviews WHERE item_id = ?1)),\n"
    "  'top_reviews', (SELECT json_group_array(json_object('user', user_id, 'rating', rating,\n"
    "                          'helpful', helpful, 'date', date(created, 'unixepoch'), 'title', title))\n"
    "                  FROM (SELECT user_id, rating, helpful, created, title FROM reviews\n"
    "                        WHERE item_id = ?1 ORDER BY helpful DESC, id LIMIT 3)),\n"
    "  'category_rank', json_object('rank', me.rank, 'of', (SELECT count(*) FROM ranked)),\n"
    "  'similar', (SELECT json_group_array(id) FROM similar))\n"
    "FROM item LEFT JOIN me";

static void db_conn_free(struct db_conn *c)
{
    sqlite3_finalize(c->item);
    sqlite3_close(c->db);
    free(c);
}

/* The calling thread's connection, opened on its first query. NULL after logging a failure. */
static struct db_conn *db_thread(void)
{
    if (db_thread_conn != NULL)
        return db_thread_conn;
    struct db_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    /* NOMUTEX: the connection is this thread's alone. */
    int rc = sqlite3_open_v2(db_path, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, db_item_sql, -1, SQLITE_PREPARE_PERSISTENT, &c->item, NULL);
    if (rc != SQLITE_OK) {
        httpd_log("db: %s: %s", db_path, c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        db_conn_free(c);
        return NULL;
    }
    pthread_mutex_lock(&db_conns_lock);
    c->next = db_conns;
    db_conns = c;
    pthread_mutex_unlock(&db_conns_lock);
    atomic_fetch_add_explicit(&db_conn_count, 1, memory_order_relaxed);
    db_thread_conn = c;
    return c;
}

int db_item(uint64_t id, db_sink_fn *sink, void *ctx)
{
    struct db_conn *c = db_thread();
    if (c == NULL)
        return DB_ERROR;
    uint64_t start = httpd_now_ns();
    int result;
    sqlite3_bind_int64(c->item, 1, (sqlite3_int64)id);
    int rc = sqlite3_step(c->item);
    if (rc == SQLITE_ROW) {
        const char *json = (const char *)sqlite3_column_text(c->item, 0);
        size_t len = (size_t)sqlite3_column_bytes(c->item, 0);
        result = json != NULL ? sink(ctx, json, len) : DB_ERROR;
    } else if (rc == SQLITE_DONE) {
        result = DB_NOT_FOUND;
    } else {
        httpd_log("db: item %" PRIu64 ": %s", id, sqlite3_errmsg(c->db));
        result = DB_ERROR;
    }
    sqlite3_reset(c->item);
    atomic_fetch_add_explicit(&db_query_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&db_query_ns, httpd_now_ns() - start, memory_order_relaxed);
    return result;
}

void db_counters(struct db_counters *out)
{
    out->queries = atomic_load_explicit(&db_query_count, memory_order_relaxed);
    out->query_ns = atomic_load_explicit(&db_query_ns, memory_order_relaxed);
    out->connections = atomic_load_explicit(&db_conn_count, memory_order_relaxed);
}

void db_close(void)
{
    pthread_mutex_lock(&db_conns_lock);
    struct db_conn *c = db_conns;
    db_conns = NULL;
    pthread_mutex_unlock(&db_conns_lock);
    while (c != NULL) {
        struct db_conn *next = c->next;
        db_conn_free(c);
        c = next;
    }
    db_thread_conn = NULL;
    free(db_path);
    db_path = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Generation.
 */
static uint64_t db_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n small: the modulo bias is far below anything the data shows). */
static uint64_t db_below(uint64_t *state, uint64_t n)
{
    return db_random(state) % n;
}

static const char *const db_adjectives[] = {
    "Sturdy", "Compact", "Classic", "Deluxe", "Rugged", "Elegant", "Portable", "Quiet",
    "Smart", "Vintage", "Modern", "Heavy-Duty", "Lightweight", "Foldable", "Premium", "Basic",
    "Ergonomic", "Wireless", "Handmade", "Stackable", "Adjustable", "Waterproof", "Slim", "Giant",
};
static const char *const db_materials[] = {
    "Copper", "Oak", "Steel", "Bamboo", "Ceramic", "Glass", "Walnut", "Aluminium",
    "Leather", "Cotton", "Linen", "Marble", "Brass", "Wool", "Titanium", "Cork",
};
static const char *const db_nouns[] = {
    "Lamp", "Kettle", "Chair", "Backpack", "Desk", "Mug", "Blender", "Headphones", "Notebook",
    "Frying Pan", "Tent", "Bookshelf", "Clock", "Speaker", "Umbrella", "Toaster", "Jacket",
    "Cutting Board", "Water Bottle", "Keyboard", "Bicycle Bell", "Planter", "Teapot", "Rug",
};
static const char *const db_phrases[] = {
    "built to last", "easy to clean", "ships flat", "two-year warranty", "made in small batches",
    "fits most spaces", "gift boxed", "assembled in minutes", "low power", "dishwasher safe",
    "sustainably sourced", "award winning", "limited edition", "tested by our team",
};
static const char *const db_titles[] = {
    "Works as described", "Great value", "Not what I expected", "Would buy again",
    "Broke after a month", "Exceeded expectations", "Decent for the price", "Five stars",
    "Arrived damaged", "My new favourite", "Does the job", "Too small", "Perfect gift",
    "Solid build quality", "Returned it", "Better than the old one", "Meh", "Love it",
    "Instructions unclear", "Highly recommended",
};
#define DB_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int db_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) != SQLITE_OK) {
        httpd_log("db: %s: %s", sql, message != NULL ? message : "?");
        sqlite3_free(message);
        return -1;
    }
    return 0;
}

static int db_step_done(sqlite3 *db, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) {
        httpd_log("db: insert: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static int db_generate_into(sqlite3 *db, uint64_t items)
{
    uint64_t categories = items / DB_ITEMS_PER_CATEGORY > 0 ? items / DB_ITEMS_PER_CATEGORY : 1;
    uint64_t state = DB_SEED;
    int result = -1;
    sqlite3_stmt *item = NULL, *review = NULL;
    uint32_t *review_items = NULL;
    double *quality = NULL;
    uint64_t reviews = 0;

    if (db_exec(db, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                    "PRAGMA cache_size = -65536; BEGIN;"
                    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                    "  category INTEGER NOT NULL, price_cents INTEGER NOT NULL,"
                    "  description TEXT NOT NULL);"
                    "CREATE TABLE reviews (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL,"
                    "  user_id INTEGER NOT NULL, rating INTEGER NOT NULL,"
                    "  helpful INTEGER NOT NULL, created INTEGER NOT NULL, title TEXT NOT NULL);") != 0)
        goto out;
    if (sqlite3_prepare_v2(db, "INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)", -1, &item, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO reviews VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6)", -1, &review,
                           NULL) != SQLITE_OK) {
        httpd_log("db: prepare: %s", sqlite3_errmsg(db));
        goto out;
    }

    quality = malloc(items * sizeof *quality);
    size_t review_room = items * DB_MAX_REVIEWS;
    review_items = malloc(review_room * sizeof *review_items);
    if (quality == NULL || review_items == NULL) {
        httpd_log("db: out of memory generating %" PRIu64 " items", items);
        goto out;
    }

    for (uint64_t id = 1; id <= items; id++) {
        char name[96], description[160];
        snprintf(name, sizeof name, "%s %s %s", db_adjectives[db_below(&state, DB_COUNT(db_adjectives))],
                 db_materials[db_below(&state, DB_COUNT(db_materials))],
                 db_nouns[db_below(&state, DB_COUNT(db_nouns))]);
        snprintf(description, sizeof description, "%s, %s and %s.",
                 db_phrases[db_below(&state, DB_COUNT(db_phrases))],
                 db_phrases[db_below(&state, DB_COUNT(db_phrases))],
                 db_phrases[db_below(&state, DB_COUNT(db_phrases))]);
        description[0] = (char)(description[0] - 'a' + 'A');
        sqlite3_bind_int64(item, 1, (sqlite3_int64)id);
        sqlite3_bind_text(item, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(item, 3, (sqlite3_int64)db_below(&state, categories));
        sqlite3_bind_int64(item, 4, (sqlite3_int64)(199 + 100 * db_below(&state, 500)));
        sqlite3_bind_text(item, 5, description, -1, SQLITE_TRANSIENT);
        if (db_step_done(db, item) != 0)
            goto out;
        /* Each item has a quality between 1.5 and 4.9 stars that its ratings scatter around. */
        quality[id - 1] = 1.5 + (double)db_below(&state, 3401) / 1000.0;
        uint64_t n = DB_MIN_REVIEWS + db_below(&state, DB_MAX_REVIEWS - DB_MIN_REVIEWS + 1);
        for (uint64_t k = 0; k < n; k++)
            review_items[reviews++] = (uint32_t)id;
    }
    /* The reviews in the order they were written: shuffled across items (Fisher-Yates). */
    for (uint64_t i = reviews - 1; i > 0; i--) {
        uint64_t j = db_below(&state, i + 1);
        uint32_t t = review_items[i];
        review_items[i] = review_items[j];
        review_items[j] = t;
    }
    int64_t created = 1500000000; /* 2017-07-14; one review every 90 s on average after it */
    for (uint64_t r = 0; r < reviews; r++) {
        uint32_t id = review_items[r];
        /* rating: the item's quality plus a spread of -2 to +2 (a triangular distribution) */
        double spread = (double)((int64_t)db_below(&state, 1001) + (int64_t)db_below(&state, 1001) - 1000) / 500.0;
        long rating = (long)(quality[id - 1] + spread + 0.5);
        rating = rating < 1 ? 1 : rating > 5 ? 5 : rating;
        uint64_t h = db_below(&state, 100);
        created += (int64_t)db_below(&state, 181);
        sqlite3_bind_int64(review, 1, id);
        sqlite3_bind_int64(review, 2, (sqlite3_int64)(1 + db_below(&state, 200000)));
        sqlite3_bind_int64(review, 3, rating);
        sqlite3_bind_int64(review, 4, (sqlite3_int64)(h * h / 50)); /* most reviews few votes, some many */
        sqlite3_bind_int64(review, 5, created);
        sqlite3_bind_text(review, 6, db_titles[db_below(&state, DB_COUNT(db_titles))], -1, SQLITE_STATIC);
        if (db_step_done(db, review) != 0)
            goto out;
    }
    char meta[200];
    snprintf(meta, sizeof meta,
             "INSERT INTO meta VALUES ('format', %d), ('items', %" PRIu64 "), ('reviews', %" PRIu64 ");",
             DB_FORMAT, items, reviews);
    /* The index that finds an item's reviews, and the one that finds a category's items. Not the
     * summary table of per-item averages that would make the category ranking cheap. */
    if (db_exec(db, meta) != 0 ||
        db_exec(db, "CREATE INDEX reviews_item ON reviews (item_id);"
                    "CREATE INDEX items_category ON items (category);"
                    "COMMIT; ANALYZE;") != 0)
        goto out;
    result = 0;
out:
    sqlite3_finalize(item);
    sqlite3_finalize(review);
    free(review_items);
    free(quality);
    return result;
}

static int db_generate(const char *path, uint64_t items)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    httpd_log("db: generating %s: %" PRIu64 " items in %" PRIu64 " categories, ~%" PRIu64
              " reviews (once; later starts reuse the file)",
              path, items, items / DB_ITEMS_PER_CATEGORY > 0 ? items / DB_ITEMS_PER_CATEGORY : 1,
              items * (DB_MIN_REVIEWS + DB_MAX_REVIEWS) / 2);
    uint64_t start = httpd_now_ns();
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        httpd_log("db: cannot create %s: %s", tmp, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    int result = db_generate_into(db, items);
    if (sqlite3_close(db) != SQLITE_OK && result == 0) {
        httpd_log("db: closing %s failed", tmp);
        result = -1;
    }
    if (result == 0 && rename(tmp, path) != 0) {
        httpd_log("db: rename %s to %s: %s", tmp, path, strerror(errno));
        result = -1;
    }
    if (result != 0) {
        unlink(tmp);
        return -1;
    }
    httpd_log("db: generated %s in %.1f s", path, (double)(httpd_now_ns() - start) / 1e9);
    return 0;
}

/* meta's value for key, or -1. */
static int64_t db_meta(sqlite3 *db, const char *key)
{
    sqlite3_stmt *stmt = NULL;
    int64_t value = -1;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &stmt, NULL) == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(stmt) == SQLITE_ROW)
            value = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return value;
}

int db_open(const char *path, uint64_t items, uint64_t *items_out)
{
    bool generated = false;
    if (access(path, F_OK) != 0) {
        if (db_generate(path, items != 0 ? items : DB_DEFAULT_ITEMS) != 0)
            return -1;
        generated = true;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        httpd_log("db: cannot open %s: %s", path, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    int64_t format = db_meta(db, "format"), have = db_meta(db, "items"), reviews = db_meta(db, "reviews");
    sqlite3_close(db);
    if (format != DB_FORMAT || have <= 0) {
        httpd_log("db: %s is not a memo-httpd database of format %d (remove it to generate a new one)",
                  path, DB_FORMAT);
        return -1;
    }
    httpd_log("db: %s: %" PRId64 " items, %" PRId64 " reviews", path, have, reviews);
    if (!generated && items != 0 && (uint64_t)have != items)
        httpd_log("db: --items %" PRIu64 " is for generating; %s exists (remove it to generate another)", items, path);
    db_path = strdup(path);
    if (db_path == NULL)
        return -1;
    *items_out = (uint64_t)have;
    return 0;
}
