/*
 * ThreadSanitizer annotations for the hand-offs that go through ConcurrencyKit. Debian's libck is
 * not instrumented and ck's atomics are volatile accesses behind compiler barriers, so TSan cannot
 * see that ck_hs_put publishes an entry to ck_hs_get, nor that ck_epoch's grace period orders a
 * reader's last access before the reclaimer's free. These macros tell it, in the places where ck
 * gives that ordering; everything memo orders itself uses C11 atomics, which TSan checks for real.
 * (liburcu does the same in include/urcu/annotate.h.)
 */
#ifndef MEMO_ANNOTATE_H
#define MEMO_ANNOTATE_H

#ifdef MEMO_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
/* Before ck_hs_put / ck_hs_set makes an entry visible: pairs with MEMO_ANN_GOT. */
#define MEMO_ANN_PUBLISH(entry) __tsan_release((void *)(entry))
/* After ck_hs_get (or the compare callback) hands out an entry. */
#define MEMO_ANN_GOT(entry) __tsan_acquire((void *)(entry))
/* A reader leaving its epoch section: pairs with MEMO_ANN_RECLAIM. */
#define MEMO_ANN_SECTION_END(m) __tsan_release(&(m)->tsan_epoch_sync)
/* A deferred free after its grace period: everything readers did before ending is ordered. */
#define MEMO_ANN_RECLAIM(m) __tsan_acquire(&(m)->tsan_epoch_sync)
#else
#define MEMO_ANN_PUBLISH(entry) ((void)0)
#define MEMO_ANN_GOT(entry) ((void)0)
#define MEMO_ANN_SECTION_END(m) ((void)0)
#define MEMO_ANN_RECLAIM(m) ((void)0)
#endif

#endif /* MEMO_ANNOTATE_H */
