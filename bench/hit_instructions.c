/*
 * hit_instructions: the instructions one hit costs, counted by callgrind (bench/callgrind-hits
 * runs it): memo's u64 and str32 hits through libmemo.so beside raw ck_hs hits (ck_peer.c) on the
 * same keys. Each run does a warm-up of K inserts, then N hits over the K keys in a fixed
 * pseudo-random order; the script runs N and 2N and divides the difference by N, so set-up and
 * the warm-up cancel out.
 *
 *   hit_instructions memo-u64|ck-u64|memo-str32|ck-str32|memo-u64-bounded|memo-u64-ttl N [K]
 *
 * memo-u64-bounded: a memo with max_entries twice the keys (nothing is evicted); memo-u64-ttl: one
 * with a ttl of an hour (every hit reads CLOCK_MONOTONIC).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memo.h>

#include "ck_peer.h"

static int ident(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key ^ 0x5555;
    return 0;
}

static int ident32(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key_len;
    uint64_t v;
    memcpy(&v, key, sizeof v);
    return memo_result_set(out, &v, sizeof v);
}

static void key32_of(uint64_t k, unsigned char key[32])
{
    for (int i = 0; i < 4; i++) {
        uint64_t w = k * 0x9e3779b97f4a7c15ull + (uint64_t)i;
        memcpy(key + 8 * i, &w, 8);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *what = argv[1];
    long n = atol(argv[2]);
    uint64_t keys = argc > 3 ? strtoull(argv[3], NULL, 10) : 65536;
    unsigned char secret[192];
    for (int i = 0; i < 192; i++)
        secret[i] = (unsigned char)(i * 131 + 7);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.seed = 42; /* the same probe sequences in every run */
    if (strcmp(what, "memo-u64-bounded") == 0)
        cfg.max_entries = 2 * keys;
    if (strcmp(what, "memo-u64-ttl") == 0)
        cfg.ttl_ns = 3600ull * 1000000000ull;
    memo_t *m = NULL;
    ckpeer_t *p = ckpeer_create(secret, 0);
    if (memo_create(&m, &cfg) != 0 || p == NULL)
        return 1;
    int is_memo = strncmp(what, "memo", 4) == 0, is_u64 = strstr(what, "u64") != NULL;
    unsigned char key[32];
    /* v static: under valgrind the stack and the program's text have no address bit in common,
     * and memo's hit path filters fn and value by their common bits (memo.c), so a stack v would
     * send every hit down the full argument check. In a process run natively they share bits. */
    static uint64_t v;
    uint64_t sum = 0;
    for (uint64_t k = 0; k < keys; k++) {
        key32_of(k, key);
        if (is_memo && is_u64)
            memo_get_u64(m, k, ident, NULL, &v);
        else if (is_memo) {
            memo_ref_t r = MEMO_REF_INIT;
            memo_get(m, key, 32, ident32, NULL, &r);
            memo_release(&r);
        } else if (is_u64)
            ckpeer_put_u64(p, k, k ^ 0x5555);
        else
            ckpeer_put_key32(p, key, k);
    }
    uint64_t x = 88172645463325252ull;
    for (long i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t k = x % keys;
        if (is_u64) {
            if (is_memo)
                memo_get_u64(m, k, ident, NULL, &v);
            else
                ckpeer_get_u64(p, k, &v);
        } else {
            key32_of(k, key);
            if (is_memo) {
                memo_ref_t r = MEMO_REF_INIT;
                memo_get(m, key, 32, ident32, NULL, &r);
                memcpy(&v, r.data, sizeof v);
                memo_release(&r);
            } else {
                ckpeer_get_key32(p, key, &v);
            }
        }
        sum += v;
    }
    printf("%llu\n", (unsigned long long)sum);
    memo_destroy(m);
    ckpeer_destroy(p);
    return 0;
}
