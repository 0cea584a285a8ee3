/*
 * Helpers that memo's tests share.
 *
 * test_memo_create: the suites run twice under CTest, the second time (as <test>_dense) with
 * MEMO_TEST_DENSE_KEYS=N in the environment: every memo a test makes then has dense_keys = N, so
 * that its u64 keys below N take the dense path and larger ones the hash table, under the same
 * assertions. Tests of memo_create's own arguments call memo_create directly.
 */
#ifndef MEMO_TESTS_HELPERS_H
#define MEMO_TESTS_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <memo.h>

/* N from MEMO_TEST_DENSE_KEYS, or 0 when the suite runs on the hash table alone. */
static inline uint64_t test_dense_keys(void)
{
    const char *env = getenv("MEMO_TEST_DENSE_KEYS");
    return env != NULL && *env != '\0' ? strtoull(env, NULL, 0) : 0;
}

/* memo_create, with dense_keys added when the suite runs dense (a cfg of an older size, or one
 * that chose its own dense_keys, is passed as it is). */
static inline int test_memo_create(memo_t **m, const memo_config_t *cfg)
{
    uint64_t dense = test_dense_keys();
    if (dense == 0 || (cfg != NULL && (cfg->struct_size != sizeof(memo_config_t) || cfg->dense_keys != 0)))
        return memo_create(m, cfg);
    memo_config_t c = MEMO_CONFIG_INIT;
    if (cfg != NULL)
        c = *cfg;
    c.dense_keys = dense;
    return memo_create(m, &c);
}

/* The process's resident set in KiB, from /proc/self/statm; -1 if it cannot be read. */
static inline long test_resident_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif /* MEMO_TESTS_HELPERS_H */
