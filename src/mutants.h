/*
 * Mutants: known bugs that a test build can plant one at a time (cmake -DMEMO_MUTANT=<id>, which
 * compiles -DMEMO_MUTANT=<id> into the library), to check that the tests catch each of them.
 * scripts/mutants builds and runs them all. Never set in a release build: with MEMO_MUTANT
 * undefined (0) every `#if MEMO_MUTANT == N` below is compiled out.
 *
 * Each mutant sits at its exact spot in src/ as `#if MEMO_MUTANT == N` with a comment naming it.
 * The table below is parsed by scripts/mutants: "M<id> <name> <test binary that must catch it>";
 * "<test>:dense" runs that binary with dense keys (MEMO_TEST_DENSE_KEYS, tests/helpers.h).
 *
 * M1  double-compute      test_once        a miss inserts its marker without re-checking under the
 *                                          shard lock, replacing any marker there: two threads
 *                                          compute one key (memo.c)
 * M2  free-now            test_forget      a retired record is freed at once, not after the epoch's
 *                                          grace period: refs read reused memory (entry.c)
 * M3  no-wake-on-fail     test_fail        fn failed: the state changes but sleepers are not woken
 *                                          (memo.c)
 * M4  no-death-cleanup    test_death       the cleanup handler of a dying computing thread does
 *                                          nothing: its waiters sleep forever (memo.c)
 * M5  ready-before-value  test_publish     a u64 record is published in the table before its value
 *                                          is written (memo.c)
 * M6  no-atfork           test_fork        no atfork handlers: the child inherits held locks and
 *                                          markers whose owners do not exist there (fork.c)
 * M7  no-cycle-check      test_deadlock    waiting skips the deadlock walk: recursion on a key in
 *                                          flight hangs (wait.c)
 * M8  timeout-removes     test_timed       a timed-out waiter removes the in-flight marker, as if
 *                                          forgotten: the value computed is not stored (memo.c)
 * M9  ignore-grow-fail    test_alloc_fail  a failed insert (the table could not grow) is taken as
 *                                          done: fn runs, its value is never stored (memo.c)
 * M10 constant-seed       test_hash        seed 0 gives every memo the same constant seed instead of
 *                                          a random one (hash.c)
 * M11 dense-clear-no-scan  test_dense      a clear of dense keys gives a chunk back (madvise) without
 *                                          first taking each slot: stored values vanish uncounted,
 *                                          computations in flight are not detached (dense.c)
 * M12 dense-publish-blind test_forget:dense a dense key's owner stores its value without checking
 *                                          that the slot still holds its computation: a value
 *                                          forgotten in flight is stored anyway (dense.c)
 * M13 bound-off-by-one    test_bounded     eviction keeps one value more than max_entries
 *                                          (policy.c)
 * M14 expiry-ignored      test_expiry      a hit returns a value past its time to live (memo.c)
 * M15 refresh-unclaimed   test_expiry      every call that finds a value due for refresh runs
 *                                          fn, instead of one while the others take the old
 *                                          value (memo.c)
 * M16 removal-early       test_bounded     on_removal runs as a value leaves the memo, before the
 *                                          refs that can still see it are released (entry.c)
 */
#ifndef MEMO_MUTANTS_H
#define MEMO_MUTANTS_H

#ifndef MEMO_MUTANT
#define MEMO_MUTANT 0
#endif

#endif /* MEMO_MUTANTS_H */
