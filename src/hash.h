/*
 * Seeded hashing: XXH3 with a 192-byte secret derived from the memo's seed, so that keys made to
 * collide under one memo's hash do not collide under another's (a random seed per memo unless the
 * config fixes one).
 */
#ifndef MEMO_HASH_H
#define MEMO_HASH_H

#include <stdint.h>
#include <stddef.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "internal.h"

static inline unsigned long memo__hash_bytes(const struct memo *m, const void *key, size_t len)
{
    return (unsigned long)XXH3_64bits_withSecret(key, len, m->secret, sizeof m->secret);
}

static inline unsigned long memo__hash_u64(const struct memo *m, uint64_t key)
{
    /* 8 bytes through XXH3's 4-to-8 path. The u64 and byte key spaces have tables of their own,
     * so an 8-byte key may hash like a u64 key. */
    return (unsigned long)XXH3_64bits_withSecret(&key, sizeof key, m->secret, sizeof m->secret);
}

MEMO__HIDDEN uint64_t memo__random_seed(void);
MEMO__HIDDEN void memo__hash_init(struct memo *m, uint64_t seed);

#endif /* MEMO_HASH_H */
