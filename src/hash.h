/*
 * Seeded hashing: XXH3 with a 192-byte secret derived from the memo's seed, so that keys made to
 * collide under one memo's hash do not collide under another's (a random seed per memo unless the
 * config fixes one). u64 keys and byte keys hash differently (the u64 form mixes in a tag), which
 * keeps their key spaces apart in ck_hs's probe sequences too.
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
    /* 8 bytes through XXH3's 4-to-8 path; the tag keeps the u64 space apart from 8-byte keys. */
    uint64_t h = XXH3_64bits_withSecret(&key, sizeof key, m->secret, sizeof m->secret);
    return (unsigned long)(h ^ 0x9e3779b97f4a7c15ull);
}

MEMO__HIDDEN uint64_t memo__random_seed(void);
MEMO__HIDDEN void memo__hash_init(struct memo *m, uint64_t seed);

#endif /* MEMO_HASH_H */
