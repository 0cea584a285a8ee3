/*
 * What the stress tests share: a small seeded random generator and the reading of their
 * environment variables (MEMO_STRESS_SCALE and the like).
 */
#ifndef MEMO_STRESS_H
#define MEMO_STRESS_H

#include <stdint.h>
#include <stdlib.h>

#include "tap.h"

/* splitmix64's finalizer: a bijection that scatters the bits of x. */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30, x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27, x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* splitmix64: one 64-bit state, seeded with any value. */
typedef struct prng {
    uint64_t s;
} prng_t;

static inline uint64_t prng_next(prng_t *p)
{
    p->s += 0x9E3779B97F4A7C15ull;
    return mix64(p->s);
}

/* A positive integer from the environment, at most max; dflt when unset or empty. Anything else
 * bails out: a typo must not silently run the default. */
static inline unsigned env_unsigned(const char *name, unsigned dflt, unsigned long max)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return dflt;
    char         *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v == 0 || v > max)
        bail_out("%s must be a positive integer up to %lu, not '%s'", name, max, s);
    return (unsigned)v;
}

#endif /* MEMO_STRESS_H */
