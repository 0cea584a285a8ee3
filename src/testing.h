/*
 * Test hooks: compiled only into memo_testing (cmake -DMEMO_TESTING=ON, the default in test
 * builds), a static copy of the library that only tests link. libmemo.so and libmemo.a never
 * contain these symbols. Nothing here is API; tests include this header by its path.
 */
#ifndef MEMO_TESTING_H
#define MEMO_TESTING_H

#include <stdint.h>

#include "memo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MEMO__TEST_FAIL_ONCE       0 /* only the nth allocation fails */
#define MEMO__TEST_FAIL_PERSISTENT 1 /* the nth and every later one fail */
#define MEMO__TEST_FAIL_TABLES     2 /* counting only ck_hs slot arrays (table growth, clear): the
                                        nth and every later one fail */

/*
 * Makes the nth allocation from now on fail (nth >= 1), once or from then on; nth 0 makes none
 * fail. Resets the count of allocations. Counted: every allocation of entries and tables
 * (memo__mem_alloc) and the malloc-family calls that make memos, shards, threads' state and
 * locals. Not counted: ck's own internals.
 */
void memo__test_fail_alloc(long nth, int mode);
long memo__test_alloc_count(void);    /* allocations counted since the last memo__test_fail_alloc */
long memo__test_alloc_failures(void); /* failures injected since the process started */

uint64_t      memo__test_seed(memo_t *m);      /* the seed that m hashes with */
unsigned long memo__test_hash_u64(memo_t *m, uint64_t key); /* key's hash in m */
unsigned long memo__test_probe_max(memo_t *m); /* ck_hs_stat's probe_maximum, over m's shards */

#ifdef __cplusplus
}
#endif

#endif /* MEMO_TESTING_H */
