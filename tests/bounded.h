/*
 * What test_bounded and test_bounded_removal share: LOG, where the callbacks of the memo under
 * test are logged (tests/helpers.h), a config with bounds that logs into it, every key's value
 * (u64, and byte values of a length chosen by the key) and the calls that check it, and the
 * checks of the log after memo_destroy. Include it after tap.h and helpers.h.
 */
#ifndef MEMO_TESTS_BOUNDED_H
#define MEMO_TESTS_BOUNDED_H

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

static test_removals_t LOG; /* the callbacks of the memo under test */

/* A config with these bounds that logs its callbacks into LOG. */
static inline memo_config_t bounds(uint64_t max_entries, uint64_t max_bytes)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_entries = max_entries;
    cfg.max_bytes = max_bytes;
    cfg.on_removal = test_removals_cb;
    cfg.removal_ctx = &LOG;
    return cfg;
}

/* memo_create with LOG emptied; a refusal is a failed assertion (the test returns). */
static inline memo_t *new_memo(const memo_config_t *cfg, const char *what)
{
    test_removals_free(&LOG);
    test_removals_init(&LOG, false);
    memo_t *m = NULL;
    int     rc = memo_create(&m, cfg);
    return is_code(rc, 0, "%s: memo_create accepts the config (%s)", what, memo_err_name(rc)) ? m : NULL;
}

/* ---- keys and values ---- */

static inline uint64_t u64_value(uint64_t key)
{
    return key * 0x9E3779B97F4A7C15ull ^ 0x5DEECE66Dull;
}

/* A byte key: the u64 key's 8 bytes, padded to 8 .. 48 bytes by a length that depends on it. */
static inline size_t byte_key(uint64_t key, unsigned char buf[48])
{
    size_t len = 8 + (size_t)(key * 7 % 41);
    memcpy(buf, &key, 8);
    for (size_t i = 8; i < len; i++)
        buf[i] = (unsigned char)(key + i);
    return len;
}

static inline unsigned char pattern_byte(uint64_t key, size_t i)
{
    return (unsigned char)(key * 131 + i * 7 + (i >> 8));
}

/* Byte values' lengths: short (1 .. 100), or mixed 1 B .. 32 KiB (70% <= 64 B, 1% > 8 KiB). */
static inline size_t len_short(uint64_t key)
{
    return 1 + (size_t)(key % 100);
}

static inline size_t len_mixed(uint64_t key)
{
    uint64_t h = (key * 0x9E3779B97F4A7C15ull) >> 32, r = h % 100;
    return r < 70 ? 1 + h % 64 : r < 90 ? 65 + h % 960 : r < 99 ? 1024 + h % 7168 : 8192 + h % 24576;
}

/* True if data holds the first min(len, cap) bytes of key's value of length want. */
static inline bool bytes_right(uint64_t key, const void *data, size_t len, size_t want, size_t cap)
{
    if (len != want || (len && data == NULL))
        return false;
    for (size_t i = 0; i < len && i < cap; i++)
        if (((const unsigned char *)data)[i] != pattern_byte(key, i))
            return false;
    return true;
}

static test_herd_t HOLD; /* herds: tests/helpers.h */

typedef struct vctx {
    atomic_uint_fast64_t calls; /* computations */
    size_t             (*len_of)(uint64_t key);
} vctx_t;

static inline int fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    test_herd_hold(&HOLD, key);
    atomic_fetch_add(&((vctx_t *)ctx)->calls, 1);
    *value = u64_value(key);
    return 0;
}

static inline int fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    vctx_t  *c = (vctx_t *)ctx;
    uint64_t k;
    if (key_len < 8)
        return 1000;
    memcpy(&k, key, 8);
    test_herd_hold(&HOLD, k);
    atomic_fetch_add(&c->calls, 1);
    size_t         len = c->len_of(k);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, len);
    if (p == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(k, i);
    return 0;
}

/* memo_get_u64, or memo_get of the key's byte key: 0 with *right, or the call's code. */
static inline int get_key(memo_t *m, bool bytes, uint64_t key, vctx_t *c, bool *right)
{
    unsigned char kb[48];
    memo_ref_t    r = MEMO_REF_INIT;
    uint64_t      v = 0;
    int rc = bytes ? memo_get(m, kb, byte_key(key, kb), fn_bytes, c, &r) : memo_get_u64(m, key, fn_u64, c, &v);
    *right = rc == 0 && (bytes ? bytes_right(key, r.data, r.len, c->len_of(key), SIZE_MAX) : v == u64_value(key));
    memo_release(&r);
    return rc;
}

/* memo_lookup(_u64): 0 when the key's right value is stored, MEMO_ENOENT, or 999 (wrong). */
static inline int lookup_key(memo_t *m, bool bytes, uint64_t key, vctx_t *c)
{
    unsigned char kb[48];
    memo_ref_t    r = MEMO_REF_INIT;
    uint64_t      v = 0;
    int rc = bytes ? memo_lookup(m, kb, byte_key(key, kb), &r) : memo_lookup_u64(m, key, &v);
    if (rc == 0 && !(bytes ? bytes_right(key, r.data, r.len, c->len_of(key), SIZE_MAX) : v == u64_value(key)))
        rc = 999;
    memo_release(&r);
    return rc;
}

/* LOG's records whose value is not their key's (after memo_destroy). */
static inline size_t wrong_records(size_t (*len_of)(uint64_t))
{
    size_t wrong = 0;
    for (size_t i = 0; i < LOG.n; i++) {
        const test_removal_t *r = &LOG.log[i];
        uint64_t              k;
        memcpy(&k, r->key, 8);
        wrong += r->key_space == MEMO_KEYS_U64 ? test_removal_u64(r) != u64_value(k)
                                               : !bytes_right(k, r->value, r->value_len, len_of(k), TEST_REMOVAL_BYTES);
    }
    return wrong;
}

/* One callback for (key space, key), with this reason and the key's value. */
static inline bool one_record(bool bytes, uint64_t key, int reason)
{
    unsigned char         kb[48];
    size_t                klen = bytes ? byte_key(key, kb) : (memcpy(kb, &key, 8), (size_t)8);
    const test_removal_t *r;
    if (test_removals_find(&LOG, bytes ? MEMO_KEYS_BYTES : MEMO_KEYS_U64, kb, klen, &r) != 1 || r->reason != reason)
        return false;
    return bytes ? bytes_right(key, r->value, r->value_len, len_short(key), TEST_REMOVAL_BYTES)
                 : r->key_len == 8 && r->value_len == 8 && test_removal_u64(r) == u64_value(key);
}

/* After memo_destroy: one well-formed callback per value stored, evicted ones as such. */
static inline void check_callbacks(const char *what, const memo_stats_t *s, uint64_t stored,
                                   size_t (*len_of)(uint64_t))
{
    ok(atomic_load(&LOG.total) == stored && atomic_load(&LOG.malformed) == 0,
       "%s: one callback per value stored (%" PRIu64 " for %" PRIu64 ")", what, (uint64_t)LOG.total, stored);
    ok(test_removals_count(&LOG, MEMO_REMOVED_EVICTED) == s->evictions &&
           test_removals_count(&LOG, MEMO_REMOVED_DESTROYED) == s->entries,
       "%s: MEMO_REMOVED_EVICTED for the %" PRIu64 " evicted, DESTROYED for the %" PRIu64 " left", what, s->evictions,
       s->entries);
    is_u64(wrong_records(len_of), 0, "%s: each callback with its key's value", what);
}

#endif /* MEMO_TESTS_BOUNDED_H */
