/*
 * One call for both key spaces, for tests that run the same scenario over u64 keys and over byte
 * keys (the u64 key's 8 bytes, with an 8-byte value).
 */
#ifndef MEMO_TESTS_KEYSPACE_H
#define MEMO_TESTS_KEYSPACE_H

#include <stdbool.h>
#include <string.h>

#include <memo.h>

/* memo_get_u64, or memo_get over the key's bytes with the value copied out; a byte value that is
 * not 8 bytes long gives 555. */
static inline int keyspace_get(memo_t *m, bool bytes, uint64_t key, memo_fn *fn_bytes,
                               memo_fn_u64 *fn_u64, void *ctx, uint64_t *value)
{
    if (!bytes)
        return memo_get_u64(m, key, fn_u64, ctx, value);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_get(m, &key, sizeof key, fn_bytes, ctx, &r);
    if (rc == 0) {
        if (r.len == sizeof *value)
            memcpy(value, r.data, sizeof *value);
        else
            rc = 555;
        memo_release(&r);
    }
    return rc;
}

#endif /* MEMO_TESTS_KEYSPACE_H */
