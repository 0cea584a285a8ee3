/* Hash seeds and secrets. The hashing itself is inline, in hash.h. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "hash.h"

/* What a random source that gave 0 (memo_config_t's "a fresh random seed") is replaced with:
 * pi's first hexadecimal digits, a constant with nothing up its sleeve. */
#define MEMO__SEED_IF_ZERO 0x243f6a8885a308d3ull

uint64_t memo__random_seed(void)
{
    uint64_t seed = 0;
    ssize_t n;
    do
        n = getrandom(&seed, sizeof seed, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof seed) {
        /* No entropy source (a very old kernel or a seccomp filter): fall back to the clock and
         * an address, which still differ per process and per memo. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = XXH3_64bits_withSeed(&ts, sizeof ts, (uint64_t)(uintptr_t)&seed);
    }
    return seed != 0 ? seed : MEMO__SEED_IF_ZERO;
}

void memo__hash_init(struct memo *m, uint64_t seed)
{
    m->seed = seed != 0 ? seed : memo__random_seed();
    _Static_assert(sizeof m->secret == XXH3_SECRET_DEFAULT_SIZE, "secret size");
    XXH3_generateSecret_fromSeed(m->secret, m->seed);
}
