/*
 * test_hash: seeded hashing, through memo_testing's hooks (src/testing.h).
 *
 *  - memos created with seed 0 get fresh, different seeds; a configured seed is used as given.
 *  - hash flooding: keys crafted to collide in one memo (an attacker who knows its hash: equal
 *    low 18 bits) pile up in that memo's table (long probe sequences), but not in another memo
 *    with its own random seed, where they probe like ordinary keys.
 *
 * Catches: a constant (or shared) default seed (mutant M10): both memos hash alike, so the seeds
 * compare equal and the crafted keys collide in the second memo too.
 */
#include "tap.h"

#include <stdbool.h>

#include <memo.h>

#include "../src/testing.h"

enum { CRAFTED = 300, CRAFT_BITS = 18 };

static int triple(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * 3 + 1;
    return 0;
}

static memo_t *make(uint64_t seed, unsigned shards)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.seed = seed;
    cfg.shards = shards;
    memo_t *m = NULL;
    if (memo_create(&m, &cfg) != 0)
        bail_out("memo_create");
    return m;
}

/* Inserts keys; returns the time taken in microseconds; counts wrong answers in *bad. */
static uint64_t insert_all(memo_t *m, const uint64_t *keys, unsigned n, int *bad)
{
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < n; i++) {
        uint64_t v = 0;
        if (memo_get_u64(m, keys[i], triple, NULL, &v) != 0 || v != keys[i] * 3 + 1)
            ++*bad;
    }
    for (unsigned i = 0; i < n; i++) {
        uint64_t v = 0;
        if (memo_lookup_u64(m, keys[i], &v) != 0 || v != keys[i] * 3 + 1)
            ++*bad;
    }
    return (tap_now_ns() - t0) / 1000;
}

static void test_seeds(void)
{
    memo_t *a = make(0, 0), *b = make(0, 0), *c = make(42, 0), *d = make(42, 0);
    uint64_t sa = memo__test_seed(a), sb = memo__test_seed(b);
    ok(sa != 0 && sb != 0, "seed 0: memos get a non-zero seed (%#llx, %#llx)", (unsigned long long)sa,
       (unsigned long long)sb);
    ok(sa != sb, "two memos created with seed 0 get different seeds");
    is_u64(memo__test_seed(c), 42, "a configured seed is used as given");
    int differ_ab = 0, differ_cd = 0;
    for (uint64_t k = 0; k < 64; k++) {
        differ_ab += memo__test_hash_u64(a, k) != memo__test_hash_u64(b, k);
        differ_cd += memo__test_hash_u64(c, k) != memo__test_hash_u64(d, k);
    }
    is_int(differ_ab, 64, "two unseeded memos hash every one of 64 keys differently");
    is_int(differ_cd, 0, "two memos with the same configured seed hash alike");
    memo_destroy(a);
    memo_destroy(b);
    memo_destroy(c);
    memo_destroy(d);
}

static void test_flooding(void)
{
    /* One shard each, so that every key lands in the same table. */
    memo_t *victim = make(0, 1), *other = make(0, 1), *plain = make(0, 1);
    static uint64_t crafted[CRAFTED], ordinary[CRAFTED];
    const unsigned long mask = (1ul << CRAFT_BITS) - 1;
    unsigned long target = memo__test_hash_u64(victim, 0) & mask;
    unsigned n = 0;
    uint64_t tries = 0;
    for (uint64_t k = 0; n < CRAFTED; k++, tries++)
        if ((memo__test_hash_u64(victim, k) & mask) == target)
            crafted[n++] = k;
    for (unsigned i = 0; i < CRAFTED; i++)
        ordinary[i] = 0x5555555500000000ull + i;
    diag("crafted %d keys with equal low %d hash bits in %llu tries", CRAFTED, CRAFT_BITS,
         (unsigned long long)tries);

    int bad = 0;
    uint64_t us_victim = insert_all(victim, crafted, CRAFTED, &bad);
    uint64_t us_other = insert_all(other, crafted, CRAFTED, &bad);
    uint64_t us_plain = insert_all(plain, ordinary, CRAFTED, &bad);
    is_int(bad, 0, "every crafted and ordinary key gets and looks up its value");
    unsigned long p_victim = memo__test_probe_max(victim), p_other = memo__test_probe_max(other),
                  p_plain = memo__test_probe_max(plain);
    memo_stats_t s_victim, s_other, s_plain;
    memo_stats(victim, &s_victim);
    memo_stats(other, &s_other);
    memo_stats(plain, &s_plain);
    diag("victim / other memo / ordinary keys: probe maximum %lu / %lu / %lu, bytes %llu / %llu / %llu, "
         "time %llu / %llu / %llu us",
         p_victim, p_other, p_plain, (unsigned long long)s_victim.bytes, (unsigned long long)s_other.bytes,
         (unsigned long long)s_plain.bytes, (unsigned long long)us_victim, (unsigned long long)us_other,
         (unsigned long long)us_plain);
    /* Equal low 18 bits give equal probe sequences (ck_hs's offset and stride both come from
     * them) in tables of up to 512 slots: every crafted key probes past the others. Measured:
     * victim 41-57, another memo 5-7, ordinary keys 5. */
    cmp_u64(p_victim, >=, 24, "the crafted keys collide in the memo they were crafted against (probes)");
    cmp_u64(p_other, <, 24, "... but not in another memo with its own random seed (probes)");
    cmp_u64(p_other, <=, 2 * p_plain + 8, "... where they probe like ordinary keys");
    memo_destroy(victim);
    memo_destroy(other);
    memo_destroy(plain);
}

int main(void)
{
    tap_watchdog(100);
    plan(9);
    test_seeds();
    test_flooding();
    return done_testing();
}
