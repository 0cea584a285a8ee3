/* The raw ck_hs + ck_epoch peer: see ck_peer.h. */
#include "ck_peer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <ck_epoch.h>
#include <ck_hs.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* The best use of ck_hs a user could write for this job: packed records carved from chunks (no
 * per-record header, no per-record malloc), the hash computed again when the table grows (the
 * seed ck_hs hands back is the peer), a compare that reads the key and nothing else. */
struct ckpeer_u64 {
    uint64_t key;
    uint64_t value;
};
struct ckpeer_key32 {
    unsigned char key[32];
    uint64_t      value;
};
_Static_assert(sizeof(struct ckpeer_u64) == 16, "a u64 record is its key and value");

#define CKPEER_CHUNK (1u << 20)
struct ckpeer_chunk {
    struct ckpeer_chunk *next;
    size_t               used;
    max_align_t          data[];
};

struct ckpeer {
    pthread_mutex_t      lock;
    ck_hs_t              u64;
    ck_hs_t              key32;
    struct ckpeer_chunk *chunks; /* under lock */
    unsigned char        secret[XXH3_SECRET_DEFAULT_SIZE];
};

/* One epoch domain for every ckpeer; one record per thread, recycled when the thread exits. */
static ck_epoch_t ckpeer_epoch;
static pthread_once_t ckpeer_once = PTHREAD_ONCE_INIT;
static pthread_key_t ckpeer_key;
static __thread ck_epoch_record_t *ckpeer_record;

static void ckpeer_thread_exit(void *record)
{
    ck_epoch_unregister(record);
}

static void ckpeer_init_once(void)
{
    ck_epoch_init(&ckpeer_epoch);
    pthread_key_create(&ckpeer_key, ckpeer_thread_exit);
}

static ck_epoch_record_t *ckpeer_self(void)
{
    ck_epoch_record_t *r = ckpeer_record;
    if (__builtin_expect(r != NULL, 1))
        return r;
    pthread_once(&ckpeer_once, ckpeer_init_once);
    r = ck_epoch_recycle(&ckpeer_epoch, NULL);
    if (r == NULL) {
        r = aligned_alloc(64, (sizeof *r + 63) & ~(size_t)63);
        ck_epoch_register(&ckpeer_epoch, r, NULL);
    }
    pthread_setspecific(ckpeer_key, r);
    ckpeer_record = r;
    return r;
}


static void ckpeer_free_now(ck_epoch_entry_t *e) { free(e); }

struct ckpeer_block {
    ck_epoch_entry_t retire;
    max_align_t      data[];
};

static void *ckpeer_table_malloc(size_t n)
{
    struct ckpeer_block *b = malloc(sizeof *b + n);
    return b ? b->data : NULL;
}

static void ckpeer_table_free(void *p, size_t n, bool defer)
{
    (void)n;
    struct ckpeer_block *b = (struct ckpeer_block *)((char *)p - offsetof(struct ckpeer_block, data));
    if (defer)
        ck_epoch_call(ckpeer_self(), &b->retire, ckpeer_free_now);
    else
        free(b);
}

static struct ck_malloc ckpeer_allocator = { .malloc = ckpeer_table_malloc, .free = ckpeer_table_free };

static unsigned long ckpeer_hash_u64(const void *object, unsigned long seed)
{
    const struct ckpeer *p = (const struct ckpeer *)seed;
    return XXH3_64bits_withSecret(object, sizeof(uint64_t), p->secret, sizeof p->secret);
}

static unsigned long ckpeer_hash_key32(const void *object, unsigned long seed)
{
    const struct ckpeer *p = (const struct ckpeer *)seed;
    return XXH3_64bits_withSecret(object, 32, p->secret, sizeof p->secret);
}

/* Both records begin with their key; a probe is the key itself. */
static bool ckpeer_compare_u64(const void *stored, const void *probe)
{
    return *(const uint64_t *)stored == *(const uint64_t *)probe;
}

static bool ckpeer_compare_key32(const void *stored, const void *probe)
{
    return memcmp(stored, probe, 32) == 0;
}

#define CKPEER_MODE (CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC | CK_HS_MODE_DELETE)

ckpeer_t *ckpeer_create(const unsigned char *secret, size_t expected_entries)
{
    ckpeer_self();
    ckpeer_t *p = malloc(sizeof *p);
    if (p == NULL)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    p->chunks = NULL;
    memcpy(p->secret, secret, sizeof p->secret);
    unsigned long n = expected_entries < 16 ? 16 : expected_entries;
    if (!ck_hs_init(&p->u64, CKPEER_MODE, ckpeer_hash_u64, ckpeer_compare_u64, &ckpeer_allocator, n,
                    (unsigned long)p)) {
        free(p);
        return NULL;
    }
    if (!ck_hs_init(&p->key32, CKPEER_MODE, ckpeer_hash_key32, ckpeer_compare_key32, &ckpeer_allocator, 16,
                    (unsigned long)p)) {
        ck_hs_destroy(&p->u64);
        free(p);
        return NULL;
    }
    return p;
}

void ckpeer_destroy(ckpeer_t *p)
{
    if (p == NULL)
        return;
    ck_hs_destroy(&p->u64);
    ck_hs_destroy(&p->key32);
    ck_epoch_barrier(ckpeer_self()); /* deferred slot arrays */
    for (struct ckpeer_chunk *c = p->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Room for a record, under the lock: bump-allocated from the newest chunk. */
static void *ckpeer_carve(ckpeer_t *p, size_t size)
{
    struct ckpeer_chunk *c = p->chunks;
    if (c == NULL || c->used + size > CKPEER_CHUNK - sizeof *c) {
        c = malloc(CKPEER_CHUNK);
        if (c == NULL)
            return NULL;
        c->next = p->chunks;
        c->used = 0;
        p->chunks = c;
    }
    void *r = (unsigned char *)c->data + c->used;
    c->used += size;
    return r;
}

int ckpeer_put_u64(ckpeer_t *p, uint64_t key, uint64_t value)
{
    unsigned long h = XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret);
    int rc = 1;
    pthread_mutex_lock(&p->lock);
    if (ck_hs_get(&p->u64, h, &key) == NULL) {
        struct ckpeer_u64 *r = ckpeer_carve(p, sizeof *r);
        rc = -1;
        if (r != NULL) {
            r->key = key;
            r->value = value;
            rc = ck_hs_put_unique(&p->u64, h, r) ? 0 : -1;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int ckpeer_put_key32(ckpeer_t *p, const void *key32, uint64_t value)
{
    unsigned long h = XXH3_64bits_withSecret(key32, 32, p->secret, sizeof p->secret);
    int rc = 1;
    pthread_mutex_lock(&p->lock);
    if (ck_hs_get(&p->key32, h, key32) == NULL) {
        struct ckpeer_key32 *r = ckpeer_carve(p, sizeof *r);
        rc = -1;
        if (r != NULL) {
            memcpy(r->key, key32, 32);
            r->value = value;
            rc = ck_hs_put_unique(&p->key32, h, r) ? 0 : -1;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int ckpeer_get_u64(ckpeer_t *p, uint64_t key, uint64_t *value)
{
    ck_epoch_record_t *r = ckpeer_self();
    unsigned long h = XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret);
    ck_epoch_begin(r, NULL);
    const struct ckpeer_u64 *e = ck_hs_get(&p->u64, h, &key);
    int found = e != NULL;
    if (found)
        *value = e->value;
    ck_epoch_end(r, NULL);
    return found;
}

int ckpeer_get_key32(ckpeer_t *p, const void *key32, uint64_t *value)
{
    ck_epoch_record_t *r = ckpeer_self();
    unsigned long h = XXH3_64bits_withSecret(key32, 32, p->secret, sizeof p->secret);
    ck_epoch_begin(r, NULL);
    const struct ckpeer_key32 *e = ck_hs_get(&p->key32, h, key32);
    int found = e != NULL;
    if (found)
        *value = e->value;
    ck_epoch_end(r, NULL);
    return found;
}

/* Removes every u64 key one by one under the lock. The records stay in their chunks (a bump
 * arena frees whole), so nothing waits for a grace period here. */
size_t ckpeer_remove_all_u64(ckpeer_t *p, uint64_t nkeys)
{
    size_t removed = 0;
    for (uint64_t key = 0; key < nkeys; key++) {
        unsigned long h = XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret);
        pthread_mutex_lock(&p->lock);
        removed += ck_hs_remove(&p->u64, h, &key) != NULL;
        pthread_mutex_unlock(&p->lock);
    }
    return removed;
}
