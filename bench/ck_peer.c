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

/* Shaped like memo's u64 entry: 64 bytes, hash and key and value inside. */
struct ckpeer_entry {
    ck_epoch_entry_t retire;
    uint64_t         hash;
    uint32_t         kind;   /* 1: u64 key, 2: 32-byte key */
    uint32_t         pad;
    uint64_t         key;
    uint64_t         value;
    uint64_t         pad2[2];
    unsigned char    key32[]; /* kind 2 only */
};
_Static_assert(sizeof(struct ckpeer_entry) == 64, "a u64 entry is one cache line, as memo's");

struct ckpeer_probe {
    uint64_t    hash;
    uint32_t    kind;
    uint64_t    key;
    const void *key32;
};

struct ckpeer {
    pthread_mutex_t lock;
    ck_hs_t         table;
    unsigned char   secret[XXH3_SECRET_DEFAULT_SIZE];
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

static void *ckpeer_malloc(size_t n) { return malloc(n); }

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

static unsigned long ckpeer_hash(const void *object, unsigned long seed)
{
    (void)seed;
    return ((const struct ckpeer_entry *)object)->hash;
}

static bool ckpeer_compare(const void *stored, const void *probe)
{
    const struct ckpeer_entry *a = stored;
    const struct ckpeer_probe *p = probe;
    if (a->hash != p->hash || a->kind != p->kind)
        return false;
    if (a->kind == 1)
        return a->key == p->key;
    return memcmp(a->key32, p->key32, 32) == 0;
}

ckpeer_t *ckpeer_create(const unsigned char *secret, size_t expected_entries)
{
    ckpeer_self();
    ckpeer_t *p = malloc(sizeof *p);
    if (p == NULL)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    memcpy(p->secret, secret, sizeof p->secret);
    if (!ck_hs_init(&p->table, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC | CK_HS_MODE_DELETE, ckpeer_hash,
                    ckpeer_compare, &ckpeer_allocator, expected_entries < 16 ? 16 : expected_entries, 0)) {
        free(p);
        return NULL;
    }
    return p;
}

void ckpeer_destroy(ckpeer_t *p)
{
    if (p == NULL)
        return;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(&p->table, &it, &obj))
        free(obj);
    ck_hs_destroy(&p->table);
    ck_epoch_barrier(ckpeer_self()); /* deferred slot arrays and entries */
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static int ckpeer_put(ckpeer_t *p, struct ckpeer_entry *e, struct ckpeer_probe *probe)
{
    pthread_mutex_lock(&p->lock);
    int rc = 1;
    if (ck_hs_get(&p->table, probe->hash, probe) == NULL) {
        /* Like memo: a single put after the check; grows under the lock. */
        rc = ck_hs_put_unique(&p->table, probe->hash, e) ? 0 : -1;
    }
    pthread_mutex_unlock(&p->lock);
    if (rc != 0)
        free(e);
    return rc;
}

int ckpeer_put_u64(ckpeer_t *p, uint64_t key, uint64_t value)
{
    struct ckpeer_entry *e = ckpeer_malloc(sizeof *e);
    e->hash = XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret);
    e->kind = 1;
    e->key = key;
    e->value = value;
    struct ckpeer_probe probe = { e->hash, 1, key, NULL };
    return ckpeer_put(p, e, &probe);
}

int ckpeer_put_key32(ckpeer_t *p, const void *key32, uint64_t value)
{
    /* Same size class as memo's byte entries: a 64-byte head, the key, the value (16-aligned). */
    struct ckpeer_entry *e = ckpeer_malloc(sizeof *e + 32 + 16);
    e->hash = XXH3_64bits_withSecret(key32, 32, p->secret, sizeof p->secret);
    e->kind = 2;
    e->key = 0;
    e->value = value;
    memcpy(e->key32, key32, 32);
    struct ckpeer_probe probe = { e->hash, 2, 0, e->key32 };
    return ckpeer_put(p, e, &probe);
}

int ckpeer_get_u64(ckpeer_t *p, uint64_t key, uint64_t *value)
{
    ck_epoch_record_t *r = ckpeer_self();
    struct ckpeer_probe probe = { XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret), 1, key, NULL };
    ck_epoch_begin(r, NULL);
    const struct ckpeer_entry *e = ck_hs_get(&p->table, probe.hash, &probe);
    int found = e != NULL;
    if (found)
        *value = e->value;
    ck_epoch_end(r, NULL);
    return found;
}

int ckpeer_get_key32(ckpeer_t *p, const void *key32, uint64_t *value)
{
    ck_epoch_record_t *r = ckpeer_self();
    struct ckpeer_probe probe = { XXH3_64bits_withSecret(key32, 32, p->secret, sizeof p->secret), 2, 0, key32 };
    ck_epoch_begin(r, NULL);
    const struct ckpeer_entry *e = ck_hs_get(&p->table, probe.hash, &probe);
    int found = e != NULL;
    if (found)
        *value = e->value;
    ck_epoch_end(r, NULL);
    return found;
}

size_t ckpeer_remove_all_u64(ckpeer_t *p, uint64_t nkeys)
{
    ck_epoch_record_t *r = ckpeer_self();
    size_t removed = 0;
    for (uint64_t key = 0; key < nkeys; key++) {
        struct ckpeer_probe probe = { XXH3_64bits_withSecret(&key, sizeof key, p->secret, sizeof p->secret), 1, key, NULL };
        pthread_mutex_lock(&p->lock);
        struct ckpeer_entry *e = ck_hs_remove(&p->table, probe.hash, &probe);
        pthread_mutex_unlock(&p->lock);
        if (e != NULL) {
            ck_epoch_call(r, &e->retire, ckpeer_free_now);
            removed++;
        }
        if ((key & 63) == 63)
            ck_epoch_poll(r);
    }
    ck_epoch_barrier(r);
    return removed;
}
