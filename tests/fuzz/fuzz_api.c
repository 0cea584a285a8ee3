/*
 * fuzz_api: a libFuzzer target that runs a program of memo API calls, decoded from the input
 * bytes, against a reference model that predicts every return code, every value and every
 * counter. Any disagreement prints what differed and abort()s, which libFuzzer reports as a
 * crash and saves the input (build-fuzz/artifacts/ under scripts/fuzz).
 *
 * Build and run: scripts/fuzz (clang, -DMEMO_FUZZ=ON, -fsanitize=fuzzer,address,undefined).
 * Replay one input with a trace of every call: FUZZ_API_TRACE=1 build-fuzz/tests/fuzz/fuzz_api FILE
 * Remake the seed corpus:  build-fuzz/tests/fuzz/fuzz_api --write-seeds tests/fuzz/corpus
 * (or fuzz_replay --write-seeds; each seed is a commented program in seeds[] at the end of this
 * file; seeds 00-14 predate 0.2 and are unchanged by it).
 * Other knobs: FUZZ_API_SPINS (turnstile spins before sleeping, 300), FUZZ_API_ARENAS (arena
 * memos per process, 100000; 0 = none), FUZZ_API_CLOCK_MAX=1 (let the fake clock reach
 * UINT64_MAX, where memo hangs: see fake_clock).
 *
 * ---- Input format. Every byte string is a valid program; reading past the end gives 0. ----
 *
 *   byte 0  mode: bit 0 two threads (else one), bit 1 make memo 1 at the start, bits 2 and 3
 *           a policy byte follows memo 0's and memo 1's config byte, bit 4 the fake clock
 *           starts at UINT64_MAX - 5000 (else 1000)
 *   byte 1  memo 0's config, then its policy byte if bit 2; then memo 1's config byte (and its
 *           policy byte if bit 3) if bit 1. A config byte:
 *           bits 0-3 == 15: a jemalloc arena (else MEMO_F_SYSTEM_ALLOC; at most one arena per
 *           input), bits 4-6 shards (1 2 4 1 16 2 64 8), bits 7 and 2 expected_entries (0 5 0
 *           100); the hash seed is a function of the byte, never 0 (a random seed would make a
 *           failing input unreproducible; scratch memos, op 13, use seed 0 when bits 0-1 are 2).
 *           A policy byte (0.2; pol_entries below): bits 0-2 bounds (none, max_entries 1 2 5
 *           1000, max_bytes 6 KiB or 32 KiB, max_entries 3 with 16 KiB), bits 3-4 ttl_ns
 *           (0 3 12 900), bit 5 refresh_ns 5, bit 6 failure_ttl_ns 7, bit 7 on_removal; the memo
 *           gets the fake clock and no dense keys; policy byte 0: a lean memo with a clock
 *   then ops, at most MAX_STEPS ops and compute-function actions in all. An op is a byte
 *   OP | FLAGS << 4 (F_MEMO1 = 0x10 picks memo 1 when it exists, F_HOLD = 0x20 keeps the ref in
 *   one of the thread's HELD_REFS slots) and its operand bytes:
 *     0 get  1 get_u64  2 get_timed(0)  3 get_u64_timed(0)   key byte: a byte key encoding
 *     4 lookup  5 lookup_u64  6 forget  7 forget_u64        (of 12, over 11 distinct keys:
 *                                                            NULL/0 and ""/0 are one key) or
 *                                                            a u64 key (of 8)
 *     8 clear  9 stats (exact counters when no call runs on that memo)
 *     10 release held slot (FLAGS >> 1)   11 yield to the other thread (two-thread mode);
 *        with FLAGS bit 3 (0x8b..0xfb) instead: FLAGS & 7 = 0..5 moves the fake clock by
 *        1 2 5 5 13 400 ns, 6 and 7 memo_set_limits (operand byte: max_entries index bits 0-2,
 *        max_bytes index bits 3-4; limit_entries)
 *     12 bad arguments, variant byte: NULL memo / fn / ref / value / key with len > 0, bad
 *        configs, stats and release of NULL, strerror: each must be MEMO_EINVAL (or a no-op)
 *     13 create, use and destroy a scratch memo (config byte)
 *     14 destroy memo 1 (if nothing runs or is held on it) and make it afresh (config byte;
 *        with FLAGS bit 3, 0x8e..0xfe, then a policy byte)
 *     15 get with a short timeout (2 or 20 us): bytes or u64 (0x20), hold (0x40), 20 us (0x80)
 *   A get that misses runs the compute function, which reads its behaviour from the same
 *   stream: a byte ACTION | ARG << 4, repeated until a terminal action (at most MAX_ACTIONS):
 *     0 return 0 (if nothing was set: 0 bytes, or the u64 value 0, which memo passes in *value
 *     and which memo.h promises is stored)   1 return a positive code (operand
 *     byte; ARG bit 0: set a value first)  2 set a value, return 0  3 set twice, return 0
 *     4 return one of memo's negative codes  5 set a value (operand: length index, bit 4 via
 *     memo_result_alloc, bits 5-7 == 7: NULL value with length 0)  6 nested get (ARG: u64,
 *     the other memo, kind; key byte, 0x80 = hold)  7 get its own key (ARG bits 0-1 kind;
 *     bit 3 return the code if non-zero): MEMO_EDEADLK unless forgotten meanwhile  8 forget
 *     its own key  9 clear its memo  10 yield (ARG bit 3: memo_result_ttl instead, ttl index
 *     ARG & 7: 0 1 4 12 100 2000 UINT64_MAX UINT64_MAX-1)  11 lookup its own key  12 bad
 *     memo_result arguments (MEMO_EINVAL, value unchanged)  13 any top-level op  14
 *     memo_result_set(out, NULL, 0) (u64: *value = 0)  15 set the value of the other thread's
 *     innermost computation, suspended in its fn (memo_result_* may be called from any thread,
 *     one at a time)
 *   In a memo with a policy, a key byte with bit 6 clear picks one of three hot keys (key_of).
 *   Per input at most 2 remakes of memo 1, 2 timed gets that really sleep, 4 stats, 6 clears
 *   and 3 scratch memos (past a cap the op does nothing): they keep the slowest inputs near
 *   0.5 ms.
 *
 * ---- Modes ----
 *
 * One thread: the fuzzer's thread runs the whole program.
 * Two threads: the fuzzer's thread (A) and one worker (B, made once per process) run one
 * program between them, strictly taking turns: a token passes at each yield (op 11, action 10),
 * so exactly one of them runs at any time and the schedule is a function of the input alone.
 * A yield inside a compute function leaves that thread's computation in flight while the other
 * runs: it may look the key up (MEMO_ENOENT), forget or clear it (the computation's caller still
 * gets its value, but it is not stored; a new get computes afresh), set its value from outside,
 * hold refs across it, compute other keys and nest. A get of a key in flight on the other thread
 * would block forever under a strict turnstile: the model turns it into a timed get (timeout 0,
 * or 2/20 us for op 15), which must return MEMO_ETIMEDOUT. No call ever waits for a result, so
 * stats.waits must stay 0.
 *
 * ---- What it catches ----
 *
 * Wrong codes or values (a lost or stale value, a value stored after forget or clear, a value
 * not stored, fn run on a hit or twice, a missing MEMO_EDEADLK, a timed get that waits or
 * computes, aliasing between the two key spaces or between keys that share a prefix), counters
 * that drift from the model (hits, misses, errors, entries), bad arguments that are not
 * MEMO_EINVAL, refs whose bytes change or are freed while held (ASan with MEMO_F_SYSTEM_ALLOC;
 * the byte check with an arena), reads past a key or value, leaks at memo_destroy (LSan),
 * undefined behaviour (UBSan), hangs (libFuzzer's -timeout), and memo state left behind by
 * one thread that breaks the other.
 *
 * ---- Bounds, expiry and the fake clock (0.2) ----
 *
 * A memo made with a policy byte reads the fake clock S.now, which only ops move, so expiry is
 * exact: a value stored at s with ttl t (the memo's, or memo_result_ttl's; 0: not stored,
 * UINT64_MAX: never expires) is returned by calls before s + t and never at or after it (fn
 * runs; lookups find nothing); a stored failure (failure_ttl_ns) is returned as a hit, without
 * fn, until it expires, and lookups never see it; the first call that finds a value at least
 * refresh_ns old runs fn as a refresh: the old value stays visible meanwhile (to the other
 * thread, to fn's own lookups and gets: hits), a failed refresh or memo_result_ttl(0) keeps it,
 * a forget, clear or expiry meanwhile makes the refresh store nothing.
 *
 * Evictions: which key a bound evicts is memo's policy and is not modelled. After a store or
 * memo_set_limits that may have evicted (max_bytes; or more STORED keys than max_entries: memo
 * holds no key the model does not), every stored key is "maybe" present: a get then hits (the
 * model's value, fn not called) or runs fn once (the new value is taken), a lookup finds the
 * value or nothing, a forget returns 0 or MEMO_ENOENT, and what happened settles the key. A
 * refresh-due get of a maybe-present key runs fn either way; a lookup from fn tells a refresh
 * (the old value is there) from a computation (a marker). max_entries = 1 keeps exactly the
 * last value stored (API.md). Counters stay exact (the model sees every hit and every fn);
 * entries lies between the keys that surely hold a value and those that may, and within
 * max_entries once no call runs; bytes within max_bytes (or entries 0), less what memo adds
 * without keeping the bound (a library bug: see do_stats); evictions never goes down, is at
 * least what on_removal reported evicted or expired and at most the records that a bound could
 * have evicted or that expired. The clock of a memo with no expiry setting is never read.
 *
 * on_removal: each call is matched to a value the model knows memo stored (same key and value,
 * a reason the model allows: evicted after a possible eviction, expired once past its deadline,
 * replaced by a refresh, forgotten by forget or clear, destroyed by memo_destroy), each value
 * at most once; none may report a value a held ref still views; after memo_destroy every value
 * surely stored was reported (values stored perhaps, under max_bytes, may be), and the values
 * reported evicted or expired account for stats.evictions (less evicted stored failures).
 *
 * Allocation failure is not fuzzed (tests/test_alloc_fail.c sweeps it); nor are real races
 * (tests/test_*.c and tests/stress under TSan): here every interleaving is a turnstile's, so a
 * bug that needs two threads inside memo at once (mutant M1, double-compute) is out of reach.
 *
 * ---- Allocators: the decision ----
 *
 * The config byte picks, per memo, MEMO_F_SYSTEM_ALLOC (15 configs in 16) or the default
 * allocator (1 in 16, only for inputs whose hash is 0 mod 8, one per input; called "arena" below,
 * after the jemalloc arena it once was). Since memo allocates every memo with malloc, the two
 * are the same code, and ASan sees every entry and table either way; the gate and the budget
 * stay for when the default allocator packs entries where ASan cannot see them, and cost
 * nothing now.
 *
 * ---- Speed ----
 *
 * scripts/fuzz's 60 s run must reach 500000 executions on a loaded 2-core machine. Measured
 * (ASan + UBSan, 2 cores shared with other jobs, load 2-5): 9000-14000 executions/s per worker,
 * 560000-850000 in 60 s per worker; scripts/fuzz runs one worker per CPU (in CI: 1.0 to 1.6
 * million in all). What it took: MAX_STEPS 64; one memo_create/destroy per input with small
 * shard counts (1 shard: 5 us; 64: 60 us); arenas gated as above; values made with memcpy and
 * checked with memcmp (a byte loop in this instrumented file cost more than memo's calls); call
 * descriptions formatted only on failure; no comparison tracing (tests/fuzz/CMakeLists.txt); a
 * 16 MB ASan quarantine (scripts/fuzz: half the page-fault time); the per-input caps above.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#include <memo.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

enum {
    MAX_STEPS = 64,     /* top-level ops and compute actions per input: keeps each run cheap */
    MAX_ACTIONS = 8,    /* actions of one compute function */
    MAX_DEPTH = 6,      /* compute functions nested on one thread */
    HELD_REFS = 4,      /* refs a thread may keep between ops */
    NBYTE_KEYS = 12,    /* byte key encodings ... */
    NBYTE_SLOTS = 11,   /* ... over this many distinct keys */
    NU64_KEYS = 8,
    MAX_VALUE = 20000,
};

enum { ABSENT, STORED, COMPUTING };
enum get_kind { GET_PLAIN, GET_TIMED0, GET_TIMED_SHORT };

enum {
    OP_GET, OP_GET_U64, OP_TIMED, OP_TIMED_U64, OP_LOOKUP, OP_LOOKUP_U64, OP_FORGET, OP_FORGET_U64,
    OP_CLEAR, OP_STATS, OP_RELEASE, OP_YIELD, OP_BAD, OP_SCRATCH, OP_MEMO1, OP_TIMED_SHORT,
};
#define F_MEMO1 0x10
#define F_HOLD 0x20
enum {
    FN_OK, FN_FAIL, FN_SET_OK, FN_SET_TWICE_OK, FN_FAIL_NEG, FN_SET, FN_NESTED, FN_SELF_GET,
    FN_FORGET_SELF, FN_CLEAR, FN_YIELD, FN_LOOKUP_SELF, FN_BAD_RESULT, FN_TOP_OP, FN_SET_EMPTY,
    FN_SET_OTHER,
};

/* ---- keys and values ----------------------------------------------------------------------- */

struct byte_key {
    const unsigned char *bytes; /* NULL for encoding 0 */
    size_t               len;
    int                  slot;  /* the model's key: encodings 0 and 1 are the same key */
};
static unsigned char long_key[200], long_key_other[40];
static const unsigned char le_42[8] = { 42, 0, 0, 0, 0, 0, 0, 0 }; /* u64 key 42's bytes */
static struct byte_key byte_keys[NBYTE_KEYS];
static const uint64_t u64_keys[NU64_KEYS] = {
    0, 1, 2, 42, UINT64_C(1) << 32, UINT64_C(1) << 63, UINT64_MAX, UINT64_C(0x9E3779B97F4A7C15),
};

static void keys_init(void)
{
    for (size_t i = 0; i < sizeof long_key; i++)
        long_key[i] = (unsigned char)(i * 7 + 1);
    memcpy(long_key_other, long_key, sizeof long_key_other);
    long_key_other[39] ^= 0x80; /* differs from long_key's 40-byte prefix in its last byte */
    static const struct byte_key k[NBYTE_KEYS] = {
        { NULL, 0, 0 },
        { (const unsigned char *)"", 0, 0 },
        { (const unsigned char *)"a", 1, 1 },
        { (const unsigned char *)"a\0", 2, 2 },
        { (const unsigned char *)"\0", 1, 3 },
        { (const unsigned char *)"b", 1, 4 },
        { le_42, 8, 5 },
        { long_key, 40, 6 },
        { long_key, 41, 7 },
        { long_key_other, 40, 8 },
        { long_key, 200, 9 },
        { (const unsigned char *)"ab", 2, 10 },
    };
    memcpy(byte_keys, k, sizeof k);
}

static const size_t value_lens[16] = { 0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 100, 255, 1000, 4096, MAX_VALUE };
static unsigned char value_buf[MAX_VALUE];

/* Value #id's bytes: its id (4 bytes, little-endian), then a window of a fixed random pattern
 * that starts at an offset depending on id. Made with memcpy and checked with memcmp: byte
 * loops in the target would cost more than memo's calls (they are instrumented too). */
enum { PATTERN_OFFSETS = 251 };
static unsigned char pattern[MAX_VALUE + PATTERN_OFFSETS];

static void pattern_init(void)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof pattern; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
        pattern[i] = (unsigned char)x;
    }
}

static const unsigned char *value_tail(uint32_t id)
{
    return pattern + (size_t)id * 157 % PATTERN_OFFSETS;
}

/* Value #id of the u64 key space; id 0 is the value of a fn that wrote nothing: memo calls a
 * memo_fn_u64 with *value 0 (memo.h). */
static uint64_t value_u64(uint32_t id)
{
    if (id == 0)
        return 0;
    uint64_t z = id + UINT64_C(0x9E3779B97F4A7C15); /* splitmix64 */
    z = (z ^ z >> 30) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ z >> 27) * UINT64_C(0x94D049BB133111EB);
    return z ^ z >> 31;
}

static void value_fill(unsigned char *p, uint32_t id, size_t len)
{
    unsigned char head[4] = { (unsigned char)id, (unsigned char)(id >> 8), (unsigned char)(id >> 16),
                              (unsigned char)(id >> 24) };
    memcpy(p, head, len < 4 ? len : 4);
    if (len > 4)
        memcpy(p + 4, value_tail(id) + 4, len - 4);
}

static bool value_equal(const unsigned char *p, uint32_t id, size_t len)
{
    unsigned char want[4];
    value_fill(want, id, len < 4 ? len : 4);
    return memcmp(p, want, len < 4 ? len : 4) == 0 && (len <= 4 || memcmp(p + 4, value_tail(id) + 4, len - 4) == 0);
}

/* ---- memo configs -------------------------------------------------------------------------- */

/* A config byte (see the top of this file). Costs, measured under ASan: a memo with malloc and
 * 1 shard is made and destroyed in ~5 us, with 64 shards ~60 us, in an arena ~130-160 us
 * (jemalloc maps and unmaps the arena's memory; ~100 us without ASan): arenas (1 config in 16)
 * and many shards are kept rare, and an input gets at most one arena (later arena configs of
 * the input take malloc). */
static const unsigned shard_table[8] = { 1, 2, 4, 1, 16, 2, 64, 8 };
static const size_t expected_table[4] = { 0, 5, 0, 100 };

static bool config_arena(unsigned c)
{
    return (c & 15) == 15;
}

static memo_config_t config_from(unsigned c, bool arena)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = arena ? 0 : MEMO_F_SYSTEM_ALLOC;
    cfg.shards = shard_table[c >> 4 & 7];
    cfg.expected_entries = expected_table[(c >> 7 & 1) | (c >> 1 & 2)];
    cfg.seed = (c + 1) * UINT64_C(0x9E3779B97F4A7C15); /* never 0 */
    /* Dense keys below 43: u64 keys 0, 1, 2 and 42 take the flat table, the rest the hash table;
     * the model is the same (every rule holds alike for dense keys). */
    cfg.dense_keys = c & 8 ? 43 : 0;
    return cfg;
}

/* A policy byte (0.2: bounds, expiry, on_removal), after a config byte when the mode or op 14
 * asks for it: bits 0-2 the bounds (max_entries 1 2 5 1000, max_bytes 6 or 32 KiB, max_entries
 * 3 with 16 KiB; 1000 is never reached: a policy that never evicts. memo_set_limits reaches
 * UINT64_MAX, memo.h's bound for "a memo that may be bounded later": memo sizes its policy's
 * tables for it, ~8 MiB and ~0.5 ms per memo, too slow for every input), bits 3-4 ttl_ns (0 3
 * 12 900), bit 5 refresh_ns 5 (with it, a max_bytes bound is max_entries 2 instead), bit 6
 * failure_ttl_ns 7, bit 7 on_removal. Every
 * such memo has the fake clock (S.now; a policy byte of 0 makes a lean memo with a clock, which
 * must never read it) and no dense keys (dense keys take none of these: MEMO_EINVAL); its shards
 * are 1, 2, 4 or 0 (0: memo's default, one shard for a memo with a policy). */
static const uint64_t pol_entries[8] = { 0, 1, 2, 5, 1000, 0, 0, 3 };
static const uint64_t pol_bytes[8] = { 0, 0, 0, 0, 0, 6144, 32768, 16384 };
static const uint64_t pol_ttl[4] = { 0, 3, 12, 900 };
static const unsigned pol_shards[8] = { 1, 2, 4, 1, 0, 2, 0, 4 };
enum { POL_REFRESH_NS = 5, POL_FAILURE_TTL_NS = 7 };

/* ---- the model ----------------------------------------------------------------------------- */

typedef struct frame frame_t;

/* A key of the model. In a memo with a bound, a STORED key is "maybe" present once a store or
 * memo_set_limits could have evicted it (which key goes is memo's policy, not modelled): a get
 * then either hits (the model's value) or runs fn once, and what the call shows settles it. */
typedef struct {
    uint8_t  state;     /* ABSENT, STORED, COMPUTING */
    bool     maybe;     /* STORED: may have been evicted */
    int32_t  code;      /* STORED: a stored failure's code (failure_ttl_ns); 0 a value */
    uint32_t id, len;   /* STORED: the value (id 0 with len 0: the empty value) */
    uint64_t stored_at; /* STORED: the clock when it was stored */
    uint64_t expires;   /* STORED: a call at or after it finds it absent; UINT64_MAX never */
    int      rec;       /* STORED in a policy memo: its record (mmemo_t.recs), else -1 */
    frame_t *frame;     /* COMPUTING: the computation whose marker is in the table */
    frame_t *refresh;   /* STORED: a refresh of this value running (its claim), or NULL */
    frame_t *reg;       /* a refresh of this key running, whatever happened to the value since:
                           a call that would compute the key waits for it instead */
} mkey_t;

/* A record that a policy memo stored (or may have stored): what on_removal must report once,
 * and which reasons it may give. */
enum { REC_NONE, REC_DEFINITE, REC_MAYBE };
typedef struct {
    bool     u64, failure;
    int16_t  match;     /* the on_removal call matched to it (mmemo_t.removals), or -1 */
    uint8_t  slot;      /* the model's key: byte slot or u64 index */
    uint8_t  status;    /* REC_DEFINITE: stored; REC_MAYBE: perhaps (max_bytes, a refresh) */
    uint8_t  allowed;   /* 1 << MEMO_REMOVED_*: the reasons it may leave for (EXPIRED: clock) */
    uint32_t id, len;
    uint64_t expires;
} mrec_t;

/* An on_removal call, logged when it happens and matched to a record at the next op (after the
 * model has seen the call that removed it). */
typedef struct {
    int16_t  rec;       /* the record it is matched to */
    uint8_t  reason, slot;
    bool     u64;
    uint32_t len;
    uint64_t value;     /* u64: the value; bytes: its first (up to) 4 bytes, little-endian */
} removal_t;

enum { MAX_RECS = 80 };

typedef struct {
    memo_t  *m;
    bool     arena;
    mkey_t   bytes[NBYTE_SLOTS];
    mkey_t   u64[NU64_KEYS];
    uint64_t hits, misses, errors;
    /* 0.2: a policy byte's settings (policy: the memo has bounds, expiry or on_removal) */
    bool     policy, on_removal, clock_ok;
    uint64_t max_entries, max_bytes, ttl_ns, refresh_ns, failure_ttl_ns;
    uint64_t clock_reads;           /* calls of the fake clock for this memo */
    uint64_t base_bytes, garbage;   /* max_bytes: bytes at create; an upper bound of retired */
    uint64_t table_margin;          /*   memory not yet freed; tables' growth */
    uint64_t excess;                /* max_bytes: bytes memo may have added since it last kept
                                       the bound (a library bug: see do_stats) */
    uint64_t table_growth;          /*   what a table may grow by on one insert (measured: 1359
                                       bytes; 2615 when presized for expected_entries) */
    uint64_t evictions;             /* at the last stats */
    int      nrecs, nremovals, nmatched;
    mrec_t   recs[MAX_RECS];
    removal_t removals[MAX_RECS];
    uint64_t by_reason[6];          /* on_removal calls matched, per MEMO_REMOVED_* */
} mmemo_t;

/* One computation: lives on the stack of the get that runs it. */
struct frame {
    int            memo, thread, key; /* key: byte key encoding, or u64 key index */
    bool           u64;
    bool           expect_call, called;
    bool           may_hit;           /* a maybe-present key: a hit or fn */
    bool           refresh_due;       /* a value at least refresh_ns old: fn refreshes it ... */
    bool           refresh;           /* ... and this is that refresh (the old value stays) */
    bool           detached;          /* forgotten or cleared while in flight: not stored */
    bool           forgotten;         /* a refresh, and a forget or clear came since (calls for
                                         its key must not wait for it: memo.h, memo_forget) */
    bool           has_value;
    bool           ttl_set;           /* memo_result_ttl */
    uint64_t       ttl;
    uint32_t       id, len;           /* the value set so far */
    int            rc;                /* what fn returned */
    memo_result_t *out;               /* bytes */
    uint64_t      *value_out;         /* u64 */
    frame_t       *outer;             /* the thread's enclosing computation */
};

typedef struct {
    bool       held;
    int        memo;
    uint32_t   id, len;
    memo_ref_t ref;
} held_t;

static struct {
    const uint8_t *data;
    size_t         size, pos;
    unsigned       steps;
    bool           two_threads;
    bool           started[2], done[2];
    mmemo_t        memo[2];
    held_t         held[2][HELD_REFS];
    int            frames[2][2]; /* [thread][memo]: computations in progress */
    int            depth[2];
    frame_t       *innermost[2];
    uint32_t       value_seq;
    uint64_t       calls;
    int            arenas, remakes, short_waits, stats, clears, scratches; /* per-input caps */
    bool           static_keys; /* pass keys' static bytes, not heap copies */
    bool           arena_ok;    /* this input may make an arena memo */
    uint64_t       now;         /* the fake clock of every memo with a policy byte */
} S;

/* Arena memos made by this process. jemalloc 5.3 keeps ~4 KB of metadata for every arena ever
 * destroyed (its address map grows; measured: +160 MB per 40000 arenas), so past this many the
 * process makes no more: a long run would otherwise end in libFuzzer's RSS limit. A replay (a
 * fresh process) makes the input's arena again. */
/* Per input, at most: 2 remakes of memo 1, 2 timed gets that really sleep, 4 stats (an arena
 * memo's refresh all of jemalloc's statistics), 6 clears (64 shards: 64 fresh tables), 3
 * scratch memos; past a cap the op does nothing. They keep the slowest inputs near 0.5 ms. */
enum { MAX_REMAKES = 2, MAX_SHORT_WAITS = 2, MAX_STATS = 4, MAX_CLEARS = 6, MAX_SCRATCHES = 3 };
static unsigned long process_arenas, arena_budget = 100000; /* FUZZ_API_ARENAS */

/* An arena memo costs ~150 us, a typical input ~50: inputs whose config asks for an arena get
 * one only if their hash is 0 mod 8. The corpus keeps inputs that reached arena code, and their
 * mutants keep the config byte; without this gate a third of all executions made arenas
 * (measured: 9000 executions/s instead of 13900). Still a function of the input alone. */
static bool input_may_have_arena(const uint8_t *data, size_t size)
{
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ data[i]) * 16777619u; /* FNV-1a, then murmur3's finalizer */
    hash ^= hash >> 16, hash *= 0x85ebca6bu, hash ^= hash >> 13, hash *= 0xc2b2ae35u, hash ^= hash >> 16;
    return hash % 8 == 0;
}

/* Whether config byte c gets an arena here: if the input may have one (S.arena_ok), at most one
 * per input, arena_budget per process. */
static bool take_arena(unsigned c)
{
    if (!config_arena(c) || !S.arena_ok || S.arenas > 0 || process_arenas >= arena_budget)
        return false;
    S.arenas++;
    process_arenas++;
    return true;
}

static bool trace;
static _Thread_local int self; /* 0: the fuzzer's thread (A); 1: the worker (B) */

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\nfuzz_api: MODEL MISMATCH (thread %c, input byte %zu of %zu, call %llu): ",
            "AB"[self], S.pos, S.size, (unsigned long long)S.calls);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (trace) {                                                                               \
            fprintf(stderr, "%c%*s", "AB"[self], 2 * S.depth[self] + 1, "");                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static void expect_rc(int got, int want, const char *what)
{
    if (got != want)
        fail("%s returned %d (%s), the model expects %d (%s)", what, got, memo_err_name(got), want,
             memo_err_name(want));
}

/* A call on a key, described only when a check fails. */
typedef struct {
    const char *op;
    int         memo, key;
    bool        u64;
} call_t;

static const char *key_name(bool u64, int key);

static const char *call_name(const call_t *c)
{
    static _Thread_local char buf[128];
    snprintf(buf, sizeof buf, "%s%s of %s (memo %d)", c->op, c->u64 ? "_u64" : "", key_name(c->u64, c->key), c->memo);
    return buf;
}

static void expect_call_rc(int got, int want, const call_t *c)
{
    if (got != want)
        expect_rc(got, want, call_name(c));
}

/* ---- reading the program ------------------------------------------------------------------- */

static bool at_end(void)
{
    return S.steps == 0 || S.pos >= S.size;
}

/* An op or an action: counts against MAX_STEPS. 0 at the end. */
static unsigned step(void)
{
    if (at_end())
        return 0;
    S.steps--;
    return S.data[S.pos++];
}

/* An operand. 0 at the end. */
static unsigned take(void)
{
    return at_end() ? 0 : S.data[S.pos++];
}

/* ---- the turnstile ------------------------------------------------------------------------- */

/* Whose turn it is (0: A, 1: B). Only the thread whose turn it is runs; it passes the turn with a
 * seq_cst store, so everything it did happens before what the other does next. The waiting
 * thread spins a little, then sleeps on the futex; sleeping[] says a wake is needed (Dekker:
 * the waiter stores sleeping then loads turn, the passer stores turn then loads sleeping). */
static _Atomic int turn;
static _Atomic int sleeping[2];
static int handoff_spins = 300; /* FUZZ_API_SPINS */

static void wait_turn(int me)
{
    for (int i = 0; i < handoff_spins; i++) {
        if (atomic_load(&turn) == me)
            return;
        cpu_relax();
    }
    atomic_store(&sleeping[me], 1);
    while (atomic_load(&turn) != me)
        (void)syscall(SYS_futex, (int *)&turn, FUTEX_WAIT_PRIVATE, 1 - me, NULL, NULL, 0);
    atomic_store(&sleeping[me], 0);
}

static void pass_turn(int to)
{
    atomic_store(&turn, to);
    if (atomic_load(&sleeping[to]))
        (void)syscall(SYS_futex, (int *)&turn, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Lets the other thread run until it yields back (or finishes its part of the program). */
static void yield(void)
{
    int other = 1 - self;
    if (!S.two_threads || S.done[other])
        return;
    TRACE("yield");
    S.started[other] = true;
    pass_turn(other);
    wait_turn(self);
}

/* ---- checks on values and refs ------------------------------------------------------------- */

static void check_bytes(const void *data, size_t got_len, uint32_t id, size_t len, const call_t *c)
{
    if (got_len != len)
        fail("%s: value of %zu bytes, the model expects %zu (value #%u)", call_name(c), got_len, len, id);
    if (len == 0)
        return;
    if (data == NULL || (uintptr_t)data % alignof(max_align_t) != 0)
        fail("%s: value at %p, not aligned for max_align_t", call_name(c), data);
    if (!value_equal(data, id, len)) {
        const unsigned char *p = data;
        unsigned char want[MAX_VALUE];
        value_fill(want, id, len);
        size_t i = 0;
        while (p[i] == want[i])
            i++;
        fail("%s: byte %zu of value #%u (%zu bytes) is %u, expected %u", call_name(c), i, id, len, p[i], want[i]);
    }
}

static mkey_t *model_key(int mi, bool u64, int key)
{
    return u64 ? &S.memo[mi].u64[key] : &S.memo[mi].bytes[byte_keys[key].slot];
}

/* The caller's key: a copy of exactly its length on the heap, so ASan sees any read past it
 * and any use after the call. Encoding 0 is (NULL, 0); encoding 1 a non-NULL empty key. */
static void *key_copy(int key)
{
    const struct byte_key *k = &byte_keys[key];
    if (k->bytes == NULL || k->len == 0 || S.static_keys)
        return (void *)k->bytes;
    void *p = malloc(k->len);
    if (p == NULL)
        abort();
    memcpy(p, k->bytes, k->len);
    return p;
}

static void key_free(int key, void *p)
{
    if (byte_keys[key].len != 0 && !S.static_keys)
        free(p);
}

static const char *key_name(bool u64, int key)
{
    static _Thread_local char buf[48];
    if (u64)
        snprintf(buf, sizeof buf, "u64 %llu", (unsigned long long)u64_keys[key]);
    else
        snprintf(buf, sizeof buf, "bytes #%d (len %zu%s)", key, byte_keys[key].len,
                 byte_keys[key].bytes == NULL ? ", NULL" : "");
    return buf;
}

/* Keeps ref in a free slot of this thread, or releases it. */
static void hold_or_release(memo_ref_t *ref, int mi, uint32_t id, uint32_t len, bool hold)
{
    if (hold) {
        for (int i = 0; i < HELD_REFS; i++) {
            held_t *h = &S.held[self][i];
            if (!h->held) {
                *h = (held_t){ true, mi, id, len, *ref };
                TRACE("  held in slot %d", i);
                return;
            }
        }
    }
    memo_release(ref);
    if (ref->data != NULL || ref->len != 0)
        fail("memo_release left the ref non-empty");
}

static void release_slot(int i)
{
    held_t *h = &S.held[self][i];
    if (!h->held)
        return;
    TRACE("release slot %d", i);
    call_t c = { "release of a held ref from a get or lookup", h->memo, 0, false };
    check_bytes(h->ref.data, h->ref.len, h->id, h->len, &c);
    memo_release(&h->ref);
    h->held = false;
}

static void release_all(void)
{
    for (int i = 0; i < HELD_REFS; i++)
        release_slot(i);
}

/* ---- calls, each with the model's prediction ----------------------------------------------- */

static int fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out);
static int fn_u64(void *ctx, uint64_t key, uint64_t *value);
static void top_op(void);

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Whether a deadline has passed: UINT64_MAX is never (even if the clock reads UINT64_MAX). */
static bool past(uint64_t deadline)
{
    return deadline != UINT64_MAX && S.now >= deadline;
}

/* A STORED key whose time is up: every call finds it absent (memo may keep it in its table, and
 * count it in entries, until a call removes it). */
static bool expired(const mkey_t *k)
{
    return past(k->expires);
}

enum { NKEYS = NBYTE_SLOTS + NU64_KEYS };

static mkey_t *key_at(int mi, int i)
{
    return i < NBYTE_SLOTS ? &S.memo[mi].bytes[i] : &S.memo[mi].u64[i - NBYTE_SLOTS];
}

static mrec_t *key_rec(int mi, const mkey_t *k)
{
    return k->rec >= 0 ? &S.memo[mi].recs[k->rec] : NULL;
}

/* A reason the key's stored record may now leave for (on_removal). */
static void allow(int mi, const mkey_t *k, int reason)
{
    mrec_t *r = key_rec(mi, k);
    if (r != NULL)
        r->allowed |= (uint8_t)(1u << reason);
}

/* A call found the key's value: it is there (not evicted; and it was stored, if that was in
 * doubt). */
static void seen_present(int mi, mkey_t *k)
{
    k->maybe = false;
    mrec_t *r = key_rec(mi, k);
    if (r != NULL)
        r->status = REC_DEFINITE;
}

/* The key's stored record or computation leaves the model: the key is absent, and a computation
 * or a refresh of it in flight can no longer store. */
static void detach(mkey_t *k)
{
    if (k->state == COMPUTING)
        k->frame->detached = true;
    if (k->state == STORED && k->refresh != NULL)
        k->refresh->detached = true;
    k->state = ABSENT;
    k->maybe = false;
    k->frame = NULL;
    k->refresh = NULL;
    k->rec = -1;
}

static uint64_t stored_keys(int mi)
{
    uint64_t n = 0;
    for (int i = 0; i < NKEYS; i++)
        n += key_at(mi, i)->state == STORED;
    return n;
}

/* After a store or memo_set_limits, if memo may have evicted: with max_bytes (what else it holds
 * is not modelled), or when the keys that may be stored (the model's STORED keys: memo holds no
 * other) are more than max_entries. Which ones went is memo's policy: every stored key is maybe
 * present from now on, until a call shows it. kept: memo surely stored (or set limits), and so
 * kept its bounds. */
static void may_evict(int mi, bool kept)
{
    mmemo_t *mm = &S.memo[mi];
    if (kept)
        mm->excess = 0; /* memo surely kept its bounds: everything it held then was counted */
    if (mm->max_bytes == 0 &&
        (mm->max_entries == 0 || mm->max_entries == UINT64_MAX || stored_keys(mi) <= mm->max_entries))
        return;
    for (int i = 0; i < NKEYS; i++) {
        mkey_t *k = key_at(mi, i);
        if (k->state == STORED) {
            k->maybe = true;
            allow(mi, k, MEMO_REMOVED_EVICTED);
        }
    }
}

/* max_bytes: upper bounds of what memo holds besides its stored records, so that the model can
 * tell a value that surely fits from one that may not (REC_MAYBE). Measured: a policy record is
 * its key and value plus 216 bytes; a marker under 200 plus its key. */
enum { REC_OVERHEAD = 256, MARKER_OVERHEAD = 512 };

static size_t frame_key_len(const frame_t *f)
{
    return f->u64 ? 8 : byte_keys[f->key].len;
}

static uint64_t pending_bytes(int mi)
{
    uint64_t n = 0;
    for (int t = 0; t < 2; t++)
        for (const frame_t *f = S.innermost[t]; f != NULL; f = f->outer)
            if (f->memo == mi)
                n += MARKER_OVERHEAD + REC_OVERHEAD + frame_key_len(f) + f->len;
    return n;
}

/* Whether memo stores the value f computed: never with memo_result_ttl 0 or when key and value
 * alone pass max_bytes; surely when they fit with room for everything else memo may hold; else
 * perhaps (retired memory that memo has not freed yet counts in its bytes). */
static uint8_t admit(int mi, const frame_t *f)
{
    const mmemo_t *mm = &S.memo[mi];
    if (f->ttl_set && f->ttl == 0)
        return REC_NONE;
    if (mm->max_bytes == 0)
        return REC_DEFINITE;
    uint64_t size = frame_key_len(f) + (f->u64 ? 8 : f->len);
    if (size > mm->max_bytes)
        return REC_NONE;
    uint64_t need = mm->base_bytes + mm->table_margin + mm->garbage + pending_bytes(mi) + MARKER_OVERHEAD +
                    REC_OVERHEAD + size;
    return need <= mm->max_bytes ? REC_DEFINITE : REC_MAYBE;
}

/* A byte value that memo made and did not store: retired (memo counts it out at once; the model
 * does not rely on that when it tells values that surely fit). */
static void garbage_value(int mi, const frame_t *f)
{
    if (!f->u64)
        S.memo[mi].garbage += REC_OVERHEAD + frame_key_len(f) + f->len;
}

/* The key now holds f's value (code 0) or a stored failure (code > 0), stored now. */
static void model_store(int mi, const frame_t *f, int code, uint8_t status)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, f->u64, f->key);
    uint64_t ttl = code != 0 ? mm->failure_ttl_ns : f->ttl_set ? f->ttl : mm->ttl_ns;
    k->state = STORED;
    k->maybe = status == REC_MAYBE;
    k->code = code;
    k->id = code != 0 ? 0 : f->id;
    k->len = code != 0 ? 0 : f->len;
    k->stored_at = S.now;
    k->expires = ttl == 0 || ttl == UINT64_MAX ? UINT64_MAX : add_sat(S.now, ttl);
    k->frame = NULL;
    k->refresh = NULL;
    k->rec = -1;
    if (!mm->policy)
        return;
    if (mm->nrecs >= MAX_RECS)
        fail("model: more than %d records in memo %d", MAX_RECS, mi);
    k->rec = mm->nrecs++;
    mm->recs[k->rec] = (mrec_t){ .u64 = f->u64, .failure = code != 0, .match = -1,
                                 .slot = (uint8_t)(f->u64 ? f->key : byte_keys[f->key].slot),
                                 .status = status, .id = k->id, .len = k->len, .expires = k->expires };
    if (code != 0)
        TRACE("  stored failure %d, expires at %llu", code, (unsigned long long)k->expires);
    else
        TRACE("  stored%s, expires at %llu", status == REC_MAYBE ? " (perhaps)" : "", (unsigned long long)k->expires);
    may_evict(mi, status == REC_DEFINITE);
    if (mm->max_entries == 1 && mm->max_bytes == 0 && status == REC_DEFINITE) {
        /* API.md: "max_entries = 1 keeps exactly the last value stored". */
        for (int i = 0; i < NKEYS; i++) {
            mkey_t *o = key_at(mi, i);
            if (o != k && o->state == STORED) {
                allow(mi, o, MEMO_REMOVED_EVICTED);
                detach(o);
            }
        }
        k->maybe = false;
    }
}

/* After a get whose fn ran (f): what memo stored. */
static void computed(frame_t *f)
{
    int mi = f->memo;
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, f->u64, f->key);
    if (f->refresh && k->reg == f)
        k->reg = NULL; /* over, stored or not */
    if (f->detached) {
        if (f->rc == 0)
            garbage_value(mi, f);
        return;
    }
    if (f->refresh) {
        /* A refresh: on success its value replaces the old one, if that is still there (memo
         * stores nothing if it left meanwhile); a failure leaves the old value. */
        if (k->state != STORED || k->refresh != f)
            fail("model: %s is not this refresh's", key_name(f->u64, f->key));
        k->refresh = NULL;
        if (f->rc != 0)
            return;
        uint8_t st = admit(mi, f);
        if (st != REC_DEFINITE) { /* refresh memos have no max_bytes: memo_result_ttl 0 */
            garbage_value(mi, f);
            return;
        }
        /* The old value may have left: evicted (maybe), or expired meanwhile and removed by
         * another store's look at expired values (which ones it looks at is not modelled). */
        allow(mi, k, MEMO_REMOVED_REPLACED);
        model_store(mi, f, 0, k->maybe || expired(k) ? REC_MAYBE : REC_DEFINITE);
        return;
    }
    if (k->state != COMPUTING || k->frame != f)
        fail("model: %s is not this computation's", key_name(f->u64, f->key));
    k->frame = NULL;
    k->state = ABSENT;
    if (f->rc == 0) {
        uint8_t st = admit(mi, f);
        if (st != REC_DEFINITE)
            garbage_value(mi, f);
        if (st != REC_NONE)
            model_store(mi, f, 0, st);
    } else if (f->rc > 0 && mm->failure_ttl_ns != 0) {
        model_store(mi, f, f->rc, REC_DEFINITE);
    }
}

static void drain_removals(int mi);

static void drain_all(void)
{
    drain_removals(0);
    drain_removals(1);
}

static int do_get(int mi, bool u64, int key, enum get_kind kind, uint64_t short_ns, bool hold)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, u64, key);
    int before = k->state, want_err = 0;
    bool ok_hit = false, ok_fn = false, refresh_due = false;
    const char *expect = "hit";
    switch (k->state) {
    case STORED:
        if (expired(k)) {
            ok_fn = true;
            expect = "compute (expired)";
        } else if (k->code == 0 && k->refresh == NULL && mm->refresh_ns != 0 &&
                   S.now - k->stored_at >= mm->refresh_ns) {
            ok_fn = refresh_due = true;
            expect = k->maybe ? "refresh, or compute if evicted" : "refresh";
        } else if (k->maybe) {
            ok_hit = ok_fn = true;
            expect = "hit, or compute if evicted";
        } else {
            ok_hit = true;
            expect = k->code != 0 ? "hit (a stored failure)" : "hit";
        }
        break;
    case COMPUTING:
        want_err = k->frame->thread == self ? MEMO_EDEADLK : MEMO_ETIMEDOUT;
        expect = memo_err_name(want_err);
        break;
    default:
        ok_fn = true;
        expect = "compute";
        break;
    }
    if (ok_fn && !refresh_due && k->reg != NULL) {
        /* A refresh of the key runs and its value expired or left: the call waits for that
         * refresh instead of computing the key again (MEMO_EDEADLK on the refresh's thread).
         * After a forget or clear, memo.h says it must compute; memo waits all the same (a
         * library bug, reported): either is taken. */
        want_err = k->reg->thread == self ? MEMO_EDEADLK : MEMO_ETIMEDOUT;
        ok_fn = k->reg->forgotten;
        expect = ok_fn ? "compute (or, wrongly, wait for a refresh forgotten)"
                       : ok_hit ? "hit, or wait for the refresh if evicted" : "wait for the refresh";
    }
    if (want_err == MEMO_ETIMEDOUT &&
        (kind == GET_PLAIN || (kind == GET_TIMED_SHORT && S.short_waits++ >= MAX_SHORT_WAITS)))
        kind = GET_TIMED0; /* a plain get would wait for the other thread, which cannot run until we
                            * yield; a short timeout really sleeps: a few per input */
    frame_t f = { .memo = mi, .thread = self, .key = key, .u64 = u64, .expect_call = ok_fn,
                  .may_hit = ok_hit && ok_fn, .refresh_due = refresh_due };
    uint64_t timeout = kind == GET_TIMED_SHORT ? short_ns : 0;
    static const char *const kinds[] = { "get", "get_timed(0)", "get_timed(short)" };
    TRACE("%s%s memo %d %s: expect %s", kinds[kind], u64 ? "_u64" : "", mi, key_name(u64, key), expect);
    S.calls++;

    int rc;
    uint64_t v = 0;
    memo_ref_t ref = MEMO_REF_INIT;
    if (u64) {
        rc = kind == GET_PLAIN ? memo_get_u64(mm->m, u64_keys[key], fn_u64, &f, &v)
                               : memo_get_u64_timed(mm->m, u64_keys[key], fn_u64, &f, timeout, &v);
    } else {
        void *kb = key_copy(key);
        rc = kind == GET_PLAIN ? memo_get(mm->m, kb, byte_keys[key].len, fn_bytes, &f, &ref)
                               : memo_get_timed(mm->m, kb, byte_keys[key].len, fn_bytes, &f, timeout, &ref);
        key_free(key, kb);
    }

    int want = want_err;
    uint32_t id = 0, len = 0;
    if (f.called) {
        want = f.rc;
        id = f.id;
        len = f.len;
        computed(&f);
    } else if (want_err != 0 && rc == want_err) {
        /* waited and gave up, or MEMO_EDEADLK: nothing counted */
    } else if (ok_hit && before == STORED) {
        /* A hit: nothing ran, so the key is as it was. */
        mm->hits++;
        seen_present(mi, k);
        want = k->code;
        id = k->id;
        len = k->len;
    } else if (ok_fn) {
        fail("get of %s (memo %d): the model expects fn to run, it did not (rc %d)", key_name(u64, key), mi, rc);
    }
    call_t c = { kinds[kind], mi, key, u64 };
    expect_call_rc(rc, want, &c);
    if (u64) {
        if (rc == 0 && v != value_u64(id))
            fail("%s: value %llu, the model expects %llu (value #%u)", call_name(&c), (unsigned long long)v,
                 (unsigned long long)value_u64(id), id);
    } else {
        if (rc == 0)
            check_bytes(ref.data, ref.len, id, len, &c);
        else if (ref.data != NULL || ref.len != 0)
            fail("%s failed but set the ref", call_name(&c));
        hold_or_release(&ref, mi, id, len, hold && rc == 0);
    }
    return rc;
}

static void do_lookup(int mi, bool u64, int key, bool hold)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, u64, key);
    /* Stored failures and expired values are absent for lookups. */
    bool value = k->state == STORED && k->code == 0 && !expired(k);
    bool maybe = value && k->maybe;
    int want = value ? 0 : MEMO_ENOENT;
    uint32_t id = k->id, len = k->len;
    TRACE("lookup%s memo %d %s: expect %s", u64 ? "_u64" : "", mi, key_name(u64, key),
          maybe ? "MEMO_OK, or MEMO_ENOENT if evicted" : memo_err_name(want));
    S.calls++;
    call_t c = { "lookup", mi, key, u64 };
    int rc;
    memo_ref_t ref = MEMO_REF_INIT;
    uint64_t v = 0;
    if (u64) {
        rc = memo_lookup_u64(mm->m, u64_keys[key], &v);
    } else {
        void *kb = key_copy(key);
        rc = memo_lookup(mm->m, kb, byte_keys[key].len, &ref);
        key_free(key, kb);
    }
    if (maybe && rc == MEMO_ENOENT) {
        want = MEMO_ENOENT;
        detach(k); /* evicted */
    }
    expect_call_rc(rc, want, &c);
    if (rc == 0) {
        mm->hits++;
        seen_present(mi, k);
    }
    if (u64) {
        if (rc == 0 && v != value_u64(id))
            fail("%s: value %llu, the model expects value #%u", call_name(&c), (unsigned long long)v, id);
    } else {
        if (rc == 0)
            check_bytes(ref.data, ref.len, id, len, &c);
        hold_or_release(&ref, mi, id, len, hold && rc == 0);
    }
}

static void do_forget(int mi, bool u64, int key)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, u64, key);
    /* A value or a stored failure is removed (0). An expired one memo may have removed already,
     * a maybe-present one evicted (MEMO_ENOENT). */
    bool stored = k->state == STORED, sure = stored && !k->maybe && !expired(k);
    int want = sure ? 0 : MEMO_ENOENT;
    TRACE("forget%s memo %d %s: expect %s%s", u64 ? "_u64" : "", mi, key_name(u64, key),
          stored && !sure ? "MEMO_OK or MEMO_ENOENT" : memo_err_name(want),
          k->state == COMPUTING ? " (detaches a computation)" : k->refresh != NULL ? " (detaches a refresh)" : "");
    S.calls++;
    int rc;
    if (u64) {
        rc = memo_forget_u64(mm->m, u64_keys[key]);
    } else {
        void *kb = key_copy(key);
        rc = memo_forget(mm->m, kb, byte_keys[key].len);
        key_free(key, kb);
    }
    if (stored && !sure && rc == 0)
        want = 0;
    call_t c = { "forget", mi, key, u64 };
    expect_call_rc(rc, want, &c);
    if (stored && rc == 0) {
        seen_present(mi, k);
        allow(mi, k, MEMO_REMOVED_FORGOTTEN);
    }
    if (k->reg != NULL)
        k->reg->forgotten = true;
    detach(k);
}

static void do_clear(int mi)
{
    if (S.clears++ >= MAX_CLEARS)
        return;
    TRACE("clear memo %d", mi);
    S.calls++;
    memo_clear(S.memo[mi].m);
    S.memo[mi].garbage += S.memo[mi].table_margin; /* the tables it let go, until freed */
    S.memo[mi].excess += S.memo[mi].table_margin;
    for (int i = 0; i < NKEYS; i++) {
        mkey_t *k = key_at(mi, i);
        if (k->state == STORED)
            allow(mi, k, MEMO_REMOVED_FORGOTTEN);
        if (k->reg != NULL)
            k->reg->forgotten = true;
        detach(k);
    }
}

/* memo_set_limits: a memo without a policy refuses it. A memo with refresh_ns is given no
 * max_bytes (the model could not always tell whether a refresh stored its value). */
static const uint64_t limit_entries[8] = { 0, 1, 2, 3, 5, 8, UINT64_MAX, 4 };
static const uint64_t limit_bytes[4] = { 0, 6144, 32768, 0 };

static void do_set_limits(int mi, unsigned v)
{
    mmemo_t *mm = &S.memo[mi];
    uint64_t e = limit_entries[v & 7], b = mm->refresh_ns != 0 ? 0 : limit_bytes[v >> 3 & 3];
    int want = mm->policy ? 0 : MEMO_EINVAL;
    TRACE("set_limits memo %d: max_entries %llu, max_bytes %llu: expect %s", mi, (unsigned long long)e,
          (unsigned long long)b, memo_err_name(want));
    S.calls++;
    expect_rc(memo_set_limits(mm->m, e, b), want, "memo_set_limits");
    if (want != 0)
        return;
    mm->max_entries = e;
    mm->max_bytes = b;
    may_evict(mi, true);
}

/* The fake clock of memos made with a policy byte: S.now, moved by op 11 (0x8b..0xbb). It stops
 * short of UINT64_MAX: memo hangs when its clock reads UINT64_MAX (memo__policy_hit treats the
 * "never expires" deadline UINT64_MAX as reached; memo__compute does not, and the get loops). */
static uint64_t fake_clock(void *ctx)
{
    ((mmemo_t *)ctx)->clock_reads++; /* one thread at a time: the turnstile */
    return S.now;
}

static uint64_t clock_max = UINT64_MAX - 1; /* FUZZ_API_CLOCK_MAX=1: UINT64_MAX */

static void advance_clock(unsigned i)
{
    static const uint64_t steps[6] = { 1, 2, 5, 5, 13, 400 };
    uint64_t step = steps[i % 6];
    S.now = S.now > clock_max - step ? clock_max : S.now + step;
    TRACE("clock +%llu: %llu", (unsigned long long)step, (unsigned long long)S.now);
}

/* Counters are exact once no call runs on the memo (the model sees whether each call hit or ran
 * fn); under the turnstile the other thread may be suspended inside a call, and then only
 * entries is held to the model. entries is exact without a policy, else between the keys that
 * surely hold a value and those that may; evictions between what on_removal reported and what
 * may have been evicted or expired. */
static void do_stats(int mi)
{
    mmemo_t *mm = &S.memo[mi];
    drain_removals(mi);
    memo_stats_t st;
    memset(&st, 0xa5, sizeof st);
    memo_stats(mm->m, &st);
    bool quiescent = S.frames[0][mi] + S.frames[1][mi] == 0;
    if (mm->policy)
        TRACE("stats memo %d%s: hits %llu misses %llu errors %llu entries %llu evictions %llu bytes %llu", mi,
              quiescent ? "" : " (calls in flight)", (unsigned long long)st.hits, (unsigned long long)st.misses,
              (unsigned long long)st.errors, (unsigned long long)st.entries, (unsigned long long)st.evictions,
              (unsigned long long)st.bytes);
    else
        TRACE("stats memo %d%s: hits %llu misses %llu errors %llu entries %llu", mi,
              quiescent ? "" : " (calls in flight)", (unsigned long long)st.hits, (unsigned long long)st.misses,
              (unsigned long long)st.errors, (unsigned long long)st.entries);
    uint64_t lo = 0, hi = 0;
    for (int i = 0; i < NKEYS; i++) {
        const mkey_t *k = key_at(mi, i);
        const mrec_t *r = key_rec(mi, k);
        if (k->state != STORED)
            continue;
        hi++;
        lo += !k->maybe && !expired(k) && (r == NULL || r->status == REC_DEFINITE);
    }
    if (st.entries < lo || st.entries > hi) {
        if (lo == hi)
            fail("stats of memo %d: entries %llu, the model has %llu", mi, (unsigned long long)st.entries,
                 (unsigned long long)lo);
        fail("stats of memo %d: entries %llu, the model has %llu to %llu", mi, (unsigned long long)st.entries,
             (unsigned long long)lo, (unsigned long long)hi);
    }
    if (st.waits != 0)
        fail("stats of memo %d: waits %llu: nothing ever waits here", mi, (unsigned long long)st.waits);
    if (!mm->policy) {
        if (st.evictions != 0)
            fail("stats of memo %d: evictions %llu without a bound or expiry", mi, (unsigned long long)st.evictions);
    } else {
        uint64_t ev_lo = mm->by_reason[MEMO_REMOVED_EVICTED] + mm->by_reason[MEMO_REMOVED_EXPIRED], ev_hi = 0;
        for (int i = 0; i < mm->nrecs; i++)
            ev_hi += (mm->recs[i].allowed >> MEMO_REMOVED_EVICTED & 1) || past(mm->recs[i].expires);
        if (st.evictions < mm->evictions || st.evictions < ev_lo || st.evictions > ev_hi)
            fail("stats of memo %d: evictions %llu; before %llu, reported %llu, at most %llu evicted or expired",
                 mi, (unsigned long long)st.evictions, (unsigned long long)mm->evictions,
                 (unsigned long long)ev_lo, (unsigned long long)ev_hi);
        mm->evictions = st.evictions;
        if (quiescent && mm->max_entries != 0 && st.entries > mm->max_entries)
            fail("stats of memo %d: entries %llu past max_entries %llu", mi, (unsigned long long)st.entries,
                 (unsigned long long)mm->max_entries);
        /* memo keeps max_bytes when it stores (and in memo_set_limits); what it allocates or
         * retires in between without storing (the marker of a computation that stores nothing,
         * counted until an epoch poll frees it; a table's growth; a clear's tables) can leave
         * bytes past max_bytes with entries != 0 once no call runs, against memo.h ("Bounds and
         * expiry"). A library bug, reported; until fixed, the model allows that much
         * (mm->excess), and holds bytes to max_bytes exactly after every store. */
        if (quiescent && mm->max_bytes != 0 && st.bytes > mm->max_bytes + mm->excess && st.entries != 0)
            fail("stats of memo %d: bytes %llu past max_bytes %llu with %llu entries (%llu allowed past it)", mi,
                 (unsigned long long)st.bytes, (unsigned long long)mm->max_bytes, (unsigned long long)st.entries,
                 (unsigned long long)mm->excess);
    }
    if (!mm->clock_ok && mm->clock_reads != 0)
        fail("memo %d read its clock %llu times, with no expiry setting", mi, (unsigned long long)mm->clock_reads);
    if (!mm->arena && st.bytes == 0)
        fail("stats of memo %d: bytes 0 with MEMO_F_SYSTEM_ALLOC", mi);
    if (quiescent && (st.hits != mm->hits || st.misses != mm->misses || st.errors != mm->errors))
        fail("stats of memo %d: hits %llu misses %llu errors %llu, the model has %llu %llu %llu", mi,
             (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.errors,
             (unsigned long long)mm->hits, (unsigned long long)mm->misses, (unsigned long long)mm->errors);
}

/* ---- on_removal ---------------------------------------------------------------------------- */

/* The key a key byte picks: any of them (byte modulo their number), or, in a memo with a policy
 * and with bit 6 clear, one of three hot keys per key space, so that gets come back to a key
 * after the clock moved (expiry, refresh) and after other keys were stored (evictions). */
static int key_of(int mi, bool u64, unsigned kb)
{
    static const int hot_bytes[3] = { 2, 0, 7 }, hot_u64[3] = { 0, 1, 3 };
    if (S.memo[mi].policy && !(kb & 0x40))
        return u64 ? hot_u64[kb % 3] : hot_bytes[kb % 3];
    return (int)(kb % (u64 ? NU64_KEYS : NBYTE_KEYS));
}

static const char *reason_name(int reason)
{
    static const char *const names[] = { "?", "evicted", "expired", "replaced", "forgotten", "destroyed" };
    return reason >= 1 && reason <= 5 ? names[reason] : "?";
}

/* memo's removal callback (removal_ctx: the mmemo_t): checks what it can at once (well-formed,
 * a value of the model's, no held ref still views it), logs it for drain_removals. */
static void on_removal(void *ctx, const memo_removal_t *r)
{
    mmemo_t *mm = ctx;
    int mi = (int)(mm - S.memo);
    if (r == NULL || r->reason < MEMO_REMOVED_EVICTED || r->reason > MEMO_REMOVED_DESTROYED)
        fail("on_removal of memo %d: removal %p, reason %d", mi, (const void *)r, r != NULL ? r->reason : 0);
    removal_t x = { .reason = (uint8_t)r->reason };
    if (r->key_space == MEMO_KEYS_U64) {
        uint64_t key;
        if (r->key == NULL || r->value == NULL || r->key_len != 8 || r->value_len != 8)
            fail("on_removal of memo %d: a u64 removal with key %p/%zu, value %p/%zu", mi, r->key, r->key_len,
                 r->value, r->value_len);
        memcpy(&key, r->key, 8);
        memcpy(&x.value, r->value, 8);
        x.u64 = true;
        int i = 0;
        while (i < NU64_KEYS && u64_keys[i] != key)
            i++;
        if (i == NU64_KEYS)
            fail("on_removal of memo %d: u64 key %llu is none of the program's", mi, (unsigned long long)key);
        x.slot = (uint8_t)i;
    } else if (r->key_space == MEMO_KEYS_BYTES) {
        if ((r->key == NULL && r->key_len != 0) || (r->value == NULL && r->value_len != 0) ||
            r->value_len > MAX_VALUE)
            fail("on_removal of memo %d: key %p/%zu, value %p/%zu", mi, r->key, r->key_len, r->value, r->value_len);
        int i = 0;
        while (i < NBYTE_KEYS && (byte_keys[i].len != r->key_len ||
                                  (r->key_len != 0 && memcmp(byte_keys[i].bytes, r->key, r->key_len) != 0)))
            i++;
        if (i == NBYTE_KEYS)
            fail("on_removal of memo %d: a byte key of %zu bytes that is none of the program's", mi, r->key_len);
        x.slot = (uint8_t)byte_keys[i].slot;
        x.len = (uint32_t)r->value_len;
        const unsigned char *p = r->value;
        for (size_t j = 0; j < 4 && j < r->value_len; j++)
            x.value |= (uint64_t)p[j] << (8 * j);
        if (r->value_len >= 4 && !value_equal(p, (uint32_t)x.value, r->value_len))
            fail("on_removal of memo %d: %zu value bytes that are not value #%u's", mi, r->value_len,
                 (uint32_t)x.value);
        for (int t = 0; t < 2; t++)
            for (int h = 0; h < HELD_REFS; h++)
                if (S.held[t][h].held && S.held[t][h].memo == mi && r->value != NULL &&
                    S.held[t][h].ref.data == r->value)
                    fail("on_removal of memo %d (%s) for a value that thread %c's held ref still views", mi,
                         reason_name(r->reason), "AB"[t]);
    } else {
        fail("on_removal of memo %d: key space %d", mi, r->key_space);
    }
    if (mm->nremovals >= MAX_RECS)
        fail("on_removal of memo %d: more calls than values stored", mi);
    mm->removals[mm->nremovals++] = x;
}

/* A byte key encoding of the model's slot (encodings 0 and 1 are slot 0; encoding i > 1 is slot
 * i - 1). */
static int enc_of_slot(int slot)
{
    return slot == 0 ? 0 : slot + 1;
}

static bool rec_matches(const mrec_t *r, const removal_t *x)
{
    if (r->failure || r->u64 != x->u64 || r->slot != x->slot)
        return false;
    if (x->u64)
        return value_u64(r->id) == x->value;
    if (r->len != x->len)
        return false;
    uint64_t mask = x->len >= 4 ? UINT32_MAX : (UINT64_C(1) << (8 * x->len)) - 1;
    return ((uint64_t)r->id & mask) == x->value;
}

/* Whether on_removal call x may report record r: the same key and value, left for a reason the
 * model allows (expired: the clock passed its deadline). Reasons are only ever added and the
 * clock only moves on, so a match stays valid. */
static bool may_report(const mrec_t *r, const removal_t *x)
{
    return rec_matches(r, x) &&
           ((r->allowed >> x->reason & 1) || (x->reason == MEMO_REMOVED_EXPIRED && past(r->expires)));
}

/* The calls are matched to records one to one (bipartite matching, Kuhn's augmenting paths):
 * two records may hold the same key and value (the empty value, say), and which of them a call
 * reports is only known by the reasons. Call j takes a record, moving earlier calls to others
 * if need be; records that were surely stored are tried first. */
static bool match_removal(mmemo_t *mm, int j, bool *seen)
{
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < mm->nrecs; i++) {
            mrec_t *r = &mm->recs[i];
            if (seen[i] || (r->status == REC_DEFINITE) != (pass == 0) || !may_report(r, &mm->removals[j]))
                continue;
            seen[i] = true;
            if (r->match < 0 || match_removal(mm, r->match, seen)) {
                r->match = (int16_t)j;
                mm->removals[j].rec = (int16_t)i;
                return true;
            }
        }
    return false;
}

/* At memo_destroy: gives record i (surely stored, not matched) a call, taking it from a record
 * that was only perhaps stored, along an alternating path. */
static bool cover_record(mmemo_t *mm, int i, bool *seen)
{
    for (int j = 0; j < mm->nremovals; j++) {
        if (seen[j] || !may_report(&mm->recs[i], &mm->removals[j]))
            continue;
        seen[j] = true;
        int r = mm->removals[j].rec;
        if (mm->recs[r].status != REC_DEFINITE)
            mm->recs[r].match = -1;
        else if (!cover_record(mm, r, seen))
            continue;
        mm->removals[j].rec = (int16_t)i;
        mm->recs[i].match = (int16_t)j;
        return true;
    }
    return false;
}

/* Matches the on_removal calls logged since the last drain (see match_removal). */
static void drain_removals(int mi)
{
    mmemo_t *mm = &S.memo[mi];
    for (; mm->nmatched < mm->nremovals; mm->nmatched++) {
        int j = mm->nmatched;
        const removal_t *x = &mm->removals[j];
        bool seen[MAX_RECS] = { false }, same = false;
        if (!match_removal(mm, j, seen)) {
            for (int i = 0; i < mm->nrecs; i++)
                same |= rec_matches(&mm->recs[i], x);
            fail("on_removal of memo %d: %s, %s, value %s%#llx (%u bytes): %s", mi, reason_name(x->reason),
                 key_name(x->u64, x->u64 ? x->slot : enc_of_slot(x->slot)), x->u64 ? "" : "starting ",
                 (unsigned long long)x->value, x->u64 ? 8 : x->len,
                 same ? "the model allows no such reason (or the values it may be were reported)"
                      : "no value of the model's");
        }
        mm->by_reason[x->reason]++;
        TRACE("  on_removal memo %d: value #%u of %s, %s", mi, mm->recs[x->rec].id,
              key_name(x->u64, x->u64 ? x->slot : enc_of_slot(x->slot)), reason_name(x->reason));
    }
}

/* ---- compute functions --------------------------------------------------------------------- */

/* A refresh-due call of a maybe-present key runs fn either way: as the refresh (the old value is
 * there) or as a computation (it was evicted: a marker instead). A lookup from fn tells, and
 * changes nothing that memo's policy sees (the call has marked the value visited already). */
static bool probe_present(const frame_t *f, const mkey_t *k)
{
    mmemo_t *mm = &S.memo[f->memo];
    call_t c = { "lookup (is it a refresh?)", f->memo, f->key, f->u64 };
    S.calls++;
    int rc;
    if (f->u64) {
        uint64_t v = 0;
        rc = memo_lookup_u64(mm->m, u64_keys[f->key], &v);
        if (rc == 0 && v != value_u64(k->id))
            fail("%s: value %llu, the model expects value #%u", call_name(&c), (unsigned long long)v, k->id);
    } else {
        memo_ref_t ref = MEMO_REF_INIT;
        void *kb = key_copy(f->key);
        rc = memo_lookup(mm->m, kb, byte_keys[f->key].len, &ref);
        key_free(f->key, kb);
        if (rc == 0)
            check_bytes(ref.data, ref.len, k->id, k->len, &c);
        memo_release(&ref);
    }
    if (rc != 0)
        expect_call_rc(rc, MEMO_ENOENT, &c);
    else
        mm->hits++;
    TRACE("  %s: %s", c.op, rc == 0 ? "the old value: a refresh" : "MEMO_ENOENT: a computation");
    return rc == 0;
}

static void fn_enter(frame_t *f)
{
    if (!f->expect_call)
        fail("fn ran for %s (memo %d), the model expects %s", key_name(f->u64, f->key), f->memo,
             model_key(f->memo, f->u64, f->key)->state == STORED ? "a hit" : "an error, no call");
    if (f->called)
        fail("fn ran twice for one get of %s", key_name(f->u64, f->key));
    if (self != f->thread)
        fail("fn ran on thread %c, not on its caller's", "AB"[self]);
    f->called = true;
    mmemo_t *mm = &S.memo[f->memo];
    mkey_t *k = model_key(f->memo, f->u64, f->key);
    mm->misses++;
    S.frames[self][f->memo]++;
    S.depth[self]++;
    f->outer = S.innermost[self];
    S.innermost[self] = f;
    if (f->refresh_due)
        f->refresh = !k->maybe || probe_present(f, k);
    if (f->refresh) {
        seen_present(f->memo, k);
        k->refresh = f;
        k->reg = f;
        return;
    }
    if (k->state == STORED) {
        if (!expired(k) && !k->maybe)
            fail("model: fn computes %s, which holds a value", key_name(f->u64, f->key));
        detach(k); /* evicted or expired: memo removed it (if it had not already) */
    } else if (k->state != ABSENT) {
        fail("model: fn runs for a key in state %d", k->state);
    }
    k->state = COMPUTING;
    k->frame = f;
    mm->garbage += MARKER_OVERHEAD + frame_key_len(f); /* retired after the store */
    mm->excess += MARKER_OVERHEAD + frame_key_len(f) + mm->table_growth; /* and its table may grow */
}

static int fn_leave(frame_t *f, int rc)
{
    S.frames[self][f->memo]--;
    S.depth[self]--;
    S.innermost[self] = f->outer;
    f->rc = rc;
    if (rc != 0)
        S.memo[f->memo].errors++;
    else if (!f->has_value)
        f->id = f->len = 0; /* nothing set: 0 bytes, or the u64 value 0 */
    TRACE("fn returns %d%s", rc, f->detached ? " (detached: not stored)" : "");
    return rc;
}

/* Sets f's value (f may be the other thread's suspended computation). */
static void fn_set(frame_t *f, unsigned arg)
{
    uint32_t id = ++S.value_seq;
    size_t len = value_lens[arg & 15];
    if (f->u64) {
        *f->value_out = value_u64(id);
    } else if (arg & 0x10) {
        unsigned char *p = memo_result_alloc(f->out, len);
        if (p == NULL || (uintptr_t)p % alignof(max_align_t) != 0)
            fail("memo_result_alloc(%zu) returned %p", len, (void *)p);
        value_fill(p, id, len);
    } else {
        value_fill(value_buf, id, len);
        const void *v = len == 0 && (arg >> 5) == 7 ? NULL : value_buf;
        expect_rc(memo_result_set(f->out, v, len), 0, "memo_result_set");
    }
    TRACE("  set value #%u, %zu bytes%s", id, f->u64 ? (size_t)8 : len, f->thread != self ? " (other thread's)" : "");
    f->has_value = true;
    f->id = id;
    f->len = f->u64 ? 0 : (uint32_t)len;
}

/* memo_result_ttl: the value's own time to live (0: not stored; UINT64_MAX: never expires).
 * MEMO_EINVAL for a memo without a policy; there is no memo_result_t for a u64 key. */
static void fn_result_ttl(frame_t *f, unsigned i)
{
    static const uint64_t ttls[8] = { 0, 1, 4, 12, 100, 2000, UINT64_MAX, UINT64_MAX - 1 };
    uint64_t ttl = ttls[i & 7];
    if (f->u64) {
        expect_rc(memo_result_ttl(NULL, ttl), MEMO_EINVAL, "memo_result_ttl(NULL, ...)");
        return;
    }
    mmemo_t *mm = &S.memo[f->memo];
    int want = mm->policy ? 0 : MEMO_EINVAL;
    TRACE("  result ttl %llu: expect %s", (unsigned long long)ttl, memo_err_name(want));
    expect_rc(memo_result_ttl(f->out, ttl), want, "memo_result_ttl");
    if (want != 0)
        return;
    f->ttl_set = true;
    f->ttl = ttl;
    if (ttl != 0 && ttl != UINT64_MAX)
        mm->clock_ok = true; /* a value with a deadline: memo reads the clock for it */
}

static void bad_args(unsigned v);

static void fn_bad_result(frame_t *f, unsigned v)
{
    if (f->u64) {
        bad_args(v);
        return;
    }
    TRACE("  bad memo_result args %u", v % 3);
    switch (v % 3) {
    case 0:
        expect_rc(memo_result_set(f->out, NULL, 1 + v % 7), MEMO_EINVAL, "memo_result_set(out, NULL, len > 0)");
        break;
    case 1:
        expect_rc(memo_result_set(NULL, value_buf, 3), MEMO_EINVAL, "memo_result_set(NULL, ...)");
        break;
    default:
        if (memo_result_alloc(NULL, 4) != NULL)
            fail("memo_result_alloc(NULL, 4) is not NULL");
        break;
    }
}

static enum get_kind kind_of(unsigned bits)
{
    return bits == 2 ? GET_TIMED0 : bits == 3 ? GET_TIMED_SHORT : GET_PLAIN;
}

static int other_memo(int mi, bool toggle)
{
    return toggle && S.memo[1 - mi].m != NULL ? 1 - mi : mi;
}

static int run_plan(frame_t *f)
{
    static const int negative[] = { MEMO_ENOMEM, MEMO_EINVAL, MEMO_EDEADLK, MEMO_ETIMEDOUT, MEMO_ENOENT, -1000 };
    for (unsigned n = 0;; n++) {
        unsigned a = n < MAX_ACTIONS ? step() : FN_OK;
        unsigned arg = a >> 4;
        drain_all();
        switch (a & 15) {
        case FN_OK:
            return 0;
        case FN_FAIL:
            if (arg & 1)
                fn_set(f, take());
            return 1 + (int)(take() % 120);
        case FN_SET_OK:
            fn_set(f, take());
            return 0;
        case FN_SET_TWICE_OK:
            fn_set(f, take());
            fn_set(f, take());
            return 0;
        case FN_FAIL_NEG:
            return negative[take() % 6];
        case FN_SET:
            fn_set(f, take());
            break;
        case FN_NESTED: {
            unsigned kb = take();
            if (S.depth[self] < MAX_DEPTH) {
                bool u64 = arg & 1;
                int mi = other_memo(f->memo, arg & 2);
                (void)do_get(mi, u64, key_of(mi, u64, kb & 0x7f),
                             kind_of(arg >> 2), 2000, kb & 0x80);
            }
            break;
        }
        case FN_SELF_GET: {
            int rc = do_get(f->memo, f->u64, f->key, kind_of(arg & 3), 2000, false);
            if (rc != 0 && (arg & 8))
                return rc; /* memo's own code, returned by fn: travels unchanged */
            break;
        }
        case FN_FORGET_SELF:
            do_forget(f->memo, f->u64, f->key);
            break;
        case FN_CLEAR:
            do_clear(f->memo);
            break;
        case FN_YIELD:
            if (arg & 8)
                fn_result_ttl(f, arg);
            else
                yield();
            break;
        case FN_LOOKUP_SELF:
            do_lookup(f->memo, f->u64, f->key, false);
            break;
        case FN_BAD_RESULT:
            fn_bad_result(f, take());
            break;
        case FN_TOP_OP:
            if (S.depth[self] < MAX_DEPTH)
                top_op();
            break;
        case FN_SET_EMPTY:
            if (f->u64) {
                *f->value_out = 0; /* the same as writing nothing */
                TRACE("  set the u64 value 0");
                f->has_value = true;
                f->id = f->len = 0;
            } else {
                expect_rc(memo_result_set(f->out, NULL, 0), 0, "memo_result_set(out, NULL, 0)");
                TRACE("  set the empty value");
                f->has_value = true;
                f->id = f->len = 0;
            }
            break;
        case FN_SET_OTHER: {
            frame_t *o = S.innermost[1 - self];
            fn_set(o != NULL ? o : f, take());
            break;
        }
        }
    }
}

static int fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    frame_t *f = ctx;
    const struct byte_key *k = &byte_keys[f->key];
    if (key_len != k->len || (key_len != 0 && memcmp(key, k->bytes, key_len) != 0))
        fail("fn got a key of %zu bytes that is not %s", key_len, key_name(false, f->key));
    if (out == NULL)
        fail("fn got a NULL memo_result_t");
    fn_enter(f);
    TRACE("fn %s memo %d", key_name(false, f->key), f->memo);
    f->out = out;
    return fn_leave(f, run_plan(f));
}

static int fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    frame_t *f = ctx;
    if (key != u64_keys[f->key])
        fail("fn_u64 got key %llu, not %s", (unsigned long long)key, key_name(true, f->key));
    if (value == NULL || *value != 0)
        fail("fn_u64 got a NULL value pointer or *value %llu, not 0", value ? (unsigned long long)*value : 0ULL);
    fn_enter(f);
    TRACE("fn %s memo %d", key_name(true, f->key), f->memo);
    f->value_out = value;
    return fn_leave(f, run_plan(f));
}

/* ---- bad arguments, scratch memos ---------------------------------------------------------- */

static int fn_never(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len, (void)out;
    fail("a call with bad arguments ran fn");
}

static int fn_never_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key, (void)value;
    fail("a call with bad arguments ran fn");
}

static void bad_args(unsigned v)
{
    memo_t *m = S.memo[0].m;
    memo_ref_t ref = MEMO_REF_INIT;
    uint64_t value = 0;
    memo_stats_t st;
    int key = (int)(v >> 4) % NBYTE_KEYS;
    const void *kp = byte_keys[key].bytes;
    size_t kl = byte_keys[key].len;
    TRACE("bad arguments, variant %u", v % 14);
    S.calls++;
    switch (v % 14) {
    case 0:
        expect_rc(memo_get(NULL, kp, kl, fn_never, NULL, &ref), MEMO_EINVAL, "memo_get(NULL memo)");
        break;
    case 1: /* even for a key that is stored: the arguments are checked first */
        expect_rc(memo_get(m, kp, kl, NULL, NULL, &ref), MEMO_EINVAL, "memo_get(NULL fn)");
        break;
    case 2:
        expect_rc(memo_get(m, kp, kl, fn_never, NULL, NULL), MEMO_EINVAL, "memo_get(NULL ref)");
        break;
    case 3:
        expect_rc(memo_get(m, NULL, 1 + v % 5, fn_never, NULL, &ref), MEMO_EINVAL, "memo_get(NULL key, len > 0)");
        expect_rc(memo_get_timed(m, NULL, 3, fn_never, NULL, 0, &ref), MEMO_EINVAL, "memo_get_timed(NULL key, 3)");
        break;
    case 4:
        expect_rc(memo_get_timed(NULL, kp, kl, fn_never, NULL, 0, &ref), MEMO_EINVAL, "memo_get_timed(NULL memo)");
        expect_rc(memo_get_timed(m, kp, kl, NULL, NULL, 1000, &ref), MEMO_EINVAL, "memo_get_timed(NULL fn)");
        expect_rc(memo_get_timed(m, kp, kl, fn_never, NULL, 0, NULL), MEMO_EINVAL, "memo_get_timed(NULL ref)");
        break;
    case 5:
        expect_rc(memo_get_u64(NULL, 1, fn_never_u64, NULL, &value), MEMO_EINVAL, "memo_get_u64(NULL memo)");
        expect_rc(memo_get_u64(m, 1, NULL, NULL, &value), MEMO_EINVAL, "memo_get_u64(NULL fn)");
        expect_rc(memo_get_u64(m, 1, fn_never_u64, NULL, NULL), MEMO_EINVAL, "memo_get_u64(NULL value)");
        break;
    case 6:
        expect_rc(memo_get_u64_timed(NULL, 2, fn_never_u64, NULL, 0, &value), MEMO_EINVAL,
                  "memo_get_u64_timed(NULL memo)");
        expect_rc(memo_get_u64_timed(m, 2, NULL, NULL, 0, &value), MEMO_EINVAL, "memo_get_u64_timed(NULL fn)");
        expect_rc(memo_get_u64_timed(m, 2, fn_never_u64, NULL, 5, NULL), MEMO_EINVAL,
                  "memo_get_u64_timed(NULL value)");
        break;
    case 7:
        expect_rc(memo_lookup(NULL, kp, kl, &ref), MEMO_EINVAL, "memo_lookup(NULL memo)");
        expect_rc(memo_lookup(m, NULL, 2, &ref), MEMO_EINVAL, "memo_lookup(NULL key, 2)");
        expect_rc(memo_lookup(m, kp, kl, NULL), MEMO_EINVAL, "memo_lookup(NULL ref)");
        break;
    case 8:
        expect_rc(memo_lookup_u64(NULL, 0, &value), MEMO_EINVAL, "memo_lookup_u64(NULL memo)");
        expect_rc(memo_lookup_u64(m, 0, NULL), MEMO_EINVAL, "memo_lookup_u64(NULL value)");
        break;
    case 9:
        expect_rc(memo_forget(NULL, kp, kl), MEMO_EINVAL, "memo_forget(NULL memo)");
        expect_rc(memo_forget(m, NULL, 4), MEMO_EINVAL, "memo_forget(NULL key, 4)");
        expect_rc(memo_forget_u64(NULL, 3), MEMO_EINVAL, "memo_forget_u64(NULL memo)");
        break;
    case 10:
        memo_clear(NULL);
        memset(&st, 0xa5, sizeof st);
        memo_stats(NULL, &st);
        if (st.hits || st.misses || st.waits || st.errors || st.evictions || st.entries || st.bytes)
            fail("memo_stats(NULL, &st) did not zero st");
        memo_stats(m, NULL);
        memo_release(NULL);
        memo_release(&ref);
        memo_destroy(NULL);
        expect_rc(memo_set_limits(NULL, 1, 0), MEMO_EINVAL, "memo_set_limits(NULL memo)");
        expect_rc(memo_result_ttl(NULL, 5), MEMO_EINVAL, "memo_result_ttl(NULL out)");
        if (!S.memo[0].policy) /* a lean memo has no room for a policy */
            expect_rc(memo_set_limits(m, 1, 0), MEMO_EINVAL, "memo_set_limits(memo without a policy)");
        break;
    case 11: {
        /* Configs that make no sense: MEMO_EINVAL, and *out untouched. */
        struct {
            memo_config_t c;
            unsigned char tail[64];
        } big;
        memo_t *sentinel = (memo_t *)&big, *out = sentinel;
        expect_rc(memo_create(NULL, NULL), MEMO_EINVAL, "memo_create(NULL out)");
        for (int i = 0; i < 13; i++) {
            memset(&big, 0, sizeof big);
            big.c = (memo_config_t)MEMO_CONFIG_INIT;
            big.c.shards = 1;
            switch (i) {
            case 0: big.c.shards = 3; break;
            case 1: big.c.shards = 8192; break;
            case 2: big.c.shards = 6; break;
            case 3: big.c.flags = 2; break;
            case 4: big.c.flags = 0x80000000u; break;
            case 5: big.c.struct_size = 0; break;
            case 6: big.c.struct_size = sizeof big.c - 1; break;
            case 7: big.c.struct_size = 2000; break;
            /* dense keys with any bound, expiry, on_removal or clock (API.md 0.2) */
            case 9: big.c.dense_keys = 43; big.c.max_entries = 4; break;
            case 10: big.c.dense_keys = 43; big.c.ttl_ns = 10; break;
            case 11: big.c.dense_keys = 43; big.c.clock = fake_clock; big.c.clock_ctx = &S.memo[0]; break;
            case 12: big.c.dense_keys = 43; big.c.on_removal = on_removal; big.c.removal_ctx = &S.memo[0]; break;
            default: big.c.struct_size = sizeof big; big.tail[v % 64] = 1; break;
            }
            expect_rc(memo_create(&out, &big.c), MEMO_EINVAL, "memo_create(bad config)");
            if (out != sentinel)
                fail("memo_create(bad config %d) set *out", i);
        }
        break;
    }
    case 12: {
        /* A later, longer config whose extra bytes are zero is accepted. */
        struct {
            memo_config_t c;
            unsigned char tail[64];
        } big;
        memset(&big, 0, sizeof big);
        big.c = (memo_config_t)MEMO_CONFIG_INIT;
        big.c.struct_size = sizeof big;
        big.c.shards = 1;
        big.c.flags = MEMO_F_SYSTEM_ALLOC;
        memo_t *out = NULL;
        expect_rc(memo_create(&out, &big.c), 0, "memo_create(longer config, zero tail)");
        memo_destroy(out);
        break;
    }
    default: {
        static const int codes[] = { 0, MEMO_ENOMEM, MEMO_EINVAL, MEMO_EDEADLK, MEMO_ETIMEDOUT, MEMO_ENOENT,
                                     1, 77, -77, INT_MIN, INT_MAX };
        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
            const char *s = memo_strerror(codes[i]), *n = memo_err_name(codes[i]);
            if (s == NULL || *s == '\0' || n == NULL || *n == '\0')
                fail("memo_strerror/memo_err_name(%d) is NULL or empty", codes[i]);
        }
        const char *ver = memo_version();
        char want[32];
        snprintf(want, sizeof want, "%d.%d.%d", MEMO_VERSION_MAJOR, MEMO_VERSION_MINOR, MEMO_VERSION_PATCH);
        if (ver == NULL || strcmp(ver, want) != 0)
            fail("memo_version() is %s, not %s", ver ? ver : "NULL", want);
        break;
    }
    }
}

static int fn_scratch(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    unsigned char v[3] = { 'v', ':', key_len ? *(const unsigned char *)key : 0 };
    return memo_result_set(out, v, sizeof v);
}

static int fn_scratch_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * 3 + 1;
    return 0;
}

/* A scratch memo, made, used and destroyed within one op (maybe inside a compute function, on
 * either thread). Seed 0 (random) is allowed here: its behaviour does not depend on it. */
static void scratch_memo(unsigned c)
{
    memo_config_t cfg = config_from(c, take_arena(c));
    if ((c & 3) == 2)
        cfg.seed = 0; /* a random seed */
    TRACE("scratch memo, config %#x", c);
    S.calls++;
    memo_t *t = NULL;
    expect_rc(memo_create(&t, &cfg), 0, "memo_create(scratch)");
    uint64_t v = 0;
    expect_rc(memo_get_u64(t, 5, fn_scratch_u64, NULL, &v), 0, "scratch get_u64");
    expect_rc(memo_get_u64(t, 5, fn_never_u64, NULL, &v), 0, "scratch get_u64 (hit)");
    if (v != 16)
        fail("scratch get_u64: %llu, not 16", (unsigned long long)v);
    memo_ref_t r = MEMO_REF_INIT, r2 = MEMO_REF_INIT;
    expect_rc(memo_get(t, "k", 1, fn_scratch, NULL, &r), 0, "scratch get");
    if (r.len != 3 || memcmp(r.data, "v:k", 3) != 0)
        fail("scratch get: wrong value");
    expect_rc(memo_lookup(t, "k", 1, &r2), 0, "scratch lookup");
    if (r2.data != r.data)
        fail("scratch lookup: another copy of the value");
    memo_release(&r2);
    expect_rc(memo_forget_u64(t, 5), 0, "scratch forget_u64");
    expect_rc(memo_forget_u64(t, 5), MEMO_ENOENT, "scratch forget_u64 again");
    memo_stats_t st;
    memo_stats(t, &st);
    if (st.hits != 2 || st.misses != 2 || st.errors != 0 || st.waits != 0 || st.entries != 1)
        fail("scratch stats: hits %llu misses %llu errors %llu waits %llu entries %llu, expected 2 2 0 0 1",
             (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.errors,
             (unsigned long long)st.waits, (unsigned long long)st.entries);
    if (c & 8)
        memo_clear(t); /* the ref outlives the clear */
    if (r.len != 3 || memcmp(r.data, "v:k", 3) != 0)
        fail("scratch ref changed");
    memo_release(&r);
    memo_destroy(t);
}

/* ---- memos: making, checking against the model, destroying --------------------------------- */

/* Memo mi from config byte c and, if has_policy, policy byte p. */
static void memo_make(int mi, unsigned c, bool has_policy, unsigned p)
{
    mmemo_t *mm = &S.memo[mi];
    memset(mm, 0, sizeof *mm);
    for (int i = 0; i < NBYTE_SLOTS; i++)
        mm->bytes[i].rec = -1;
    for (int i = 0; i < NU64_KEYS; i++)
        mm->u64[i].rec = -1;
    mm->arena = take_arena(c);
    memo_config_t cfg = config_from(c, mm->arena);
    if (has_policy) {
        cfg.dense_keys = 0;
        cfg.clock = fake_clock;
        cfg.clock_ctx = mm;
        mm->max_entries = pol_entries[p & 7];
        mm->max_bytes = pol_bytes[p & 7];
        mm->ttl_ns = pol_ttl[p >> 3 & 3];
        mm->refresh_ns = p & 0x20 ? POL_REFRESH_NS : 0;
        if (mm->refresh_ns != 0 && mm->max_bytes != 0)
            mm->max_bytes = 0, mm->max_entries = 2;
        mm->failure_ttl_ns = p & 0x40 ? POL_FAILURE_TTL_NS : 0;
        mm->on_removal = p & 0x80;
        mm->policy = p != 0;
        mm->clock_ok = mm->ttl_ns != 0 || mm->refresh_ns != 0 || mm->failure_ttl_ns != 0;
        cfg.max_entries = mm->max_entries;
        cfg.max_bytes = mm->max_bytes;
        cfg.ttl_ns = mm->ttl_ns;
        cfg.refresh_ns = mm->refresh_ns;
        cfg.failure_ttl_ns = mm->failure_ttl_ns;
        cfg.on_removal = mm->on_removal ? on_removal : NULL;
        cfg.removal_ctx = mm;
        if (mm->policy)
            cfg.shards = pol_shards[c >> 4 & 7];
    }
    TRACE("create memo %d: %s, %u shards, expected %zu, dense keys %llu", mi, mm->arena ? "arena" : "system alloc",
          cfg.shards, cfg.expected_entries, (unsigned long long)cfg.dense_keys);
    if (has_policy)
        TRACE("  policy %#x: max_entries %llu max_bytes %llu ttl %llu refresh %llu failure_ttl %llu%s; clock %llu", p,
              (unsigned long long)mm->max_entries, (unsigned long long)mm->max_bytes, (unsigned long long)mm->ttl_ns,
              (unsigned long long)mm->refresh_ns, (unsigned long long)mm->failure_ttl_ns,
              mm->on_removal ? ", on_removal" : "", (unsigned long long)S.now);
    expect_rc(memo_create(&mm->m, &cfg), 0, "memo_create");
    if (mm->policy) {
        memo_stats_t st;
        memo_stats(mm->m, &st);
        unsigned shards = cfg.shards != 0 ? cfg.shards : 1;
        mm->base_bytes = st.bytes;
        mm->table_margin = 4096 * (uint64_t)shards * (cfg.expected_entries != 0 ? 2 : 1);
        mm->table_growth = cfg.expected_entries != 0 ? 3072 : 1536;
    }
}

/* Counters, then every key, then destroy. Nothing may run or be held on it. The lookups pass
 * the keys' static bytes (no heap copy: this runs for every input) and skip encoding 1, which is
 * encoding 0's key. */
static void memo_check_and_destroy(int mi)
{
    do_stats(mi);
    S.static_keys = true;
    for (int key = 0; key < NBYTE_KEYS; key++)
        if (key != 1)
            do_lookup(mi, false, key, false);
    S.static_keys = false;
    for (int key = 0; key < NU64_KEYS; key++)
        do_lookup(mi, true, key, false);
    do_stats(mi); /* lookups that found a value count as hits */
    mmemo_t *mm = &S.memo[mi];
    for (int i = 0; i < NKEYS; i++)
        if (key_at(mi, i)->state == STORED)
            allow(mi, key_at(mi, i), MEMO_REMOVED_DESTROYED);
    TRACE("destroy memo %d", mi);
    memo_destroy(mm->m);
    drain_removals(mi);
    if (mm->on_removal) {
        /* Every value memo stored was reported once (drain_removals saw no other call), and
         * every eviction of a value (not of a stored failure) with its reason. */
        uint64_t failures = 0, evicted = mm->by_reason[MEMO_REMOVED_EVICTED] + mm->by_reason[MEMO_REMOVED_EXPIRED];
        for (int i = 0; i < mm->nrecs; i++) {
            const mrec_t *r = &mm->recs[i];
            failures += r->failure;
            bool seen[MAX_RECS] = { false };
            if (!r->failure && r->status == REC_DEFINITE && r->match < 0 && !cover_record(mm, i, seen))
                fail("memo %d destroyed: value #%u of %s (record %d) was stored, on_removal never reported it", mi,
                     r->id, key_name(r->u64, r->u64 ? r->slot : enc_of_slot(r->slot)), i);
        }
        if (evicted > mm->evictions || mm->evictions > evicted + failures)
            fail("memo %d destroyed: on_removal reported %llu values evicted or expired, stats.evictions is %llu "
                 "(%llu stored failures)", mi, (unsigned long long)evicted, (unsigned long long)mm->evictions,
                 (unsigned long long)failures);
        TRACE("memo %d: on_removal evicted %llu expired %llu replaced %llu forgotten %llu destroyed %llu", mi,
              (unsigned long long)mm->by_reason[1], (unsigned long long)mm->by_reason[2],
              (unsigned long long)mm->by_reason[3], (unsigned long long)mm->by_reason[4],
              (unsigned long long)mm->by_reason[5]);
    }
    if (!mm->clock_ok && mm->clock_reads != 0)
        fail("memo %d read its clock %llu times, with no expiry setting", mi, (unsigned long long)mm->clock_reads);
    mm->m = NULL;
}

static bool memo_in_use(int mi)
{
    for (int t = 0; t < 2; t++) {
        if (S.frames[t][mi] != 0)
            return true;
        for (int i = 0; i < HELD_REFS; i++)
            if (S.held[t][i].held && S.held[t][i].memo == mi)
                return true;
    }
    return false;
}

static void remake_memo1(unsigned c, bool has_policy, unsigned p)
{
    if (S.memo[1].m != NULL) {
        if (memo_in_use(1) || S.remakes >= MAX_REMAKES) {
            TRACE("remake memo 1: in use or made %d times already, skipped", S.remakes);
            return;
        }
        S.remakes++;
        memo_check_and_destroy(1);
    }
    memo_make(1, c, has_policy, p);
}

/* ---- the program --------------------------------------------------------------------------- */

static void top_op(void)
{
    if (at_end())
        return;
    drain_all();
    unsigned b = step();
    unsigned fl = b >> 4;
    int mi = (b & F_MEMO1) && S.memo[1].m != NULL ? 1 : 0;
    bool hold = b & F_HOLD;
    switch (b & 15) {
    case OP_GET:
        (void)do_get(mi, false, key_of(mi, false, take()), GET_PLAIN, 0, hold);
        break;
    case OP_GET_U64:
        (void)do_get(mi, true, key_of(mi, true, take()), GET_PLAIN, 0, false);
        break;
    case OP_TIMED:
        (void)do_get(mi, false, key_of(mi, false, take()), GET_TIMED0, 0, hold);
        break;
    case OP_TIMED_U64:
        (void)do_get(mi, true, key_of(mi, true, take()), GET_TIMED0, 0, false);
        break;
    case OP_LOOKUP:
        do_lookup(mi, false, key_of(mi, false, take()), hold);
        break;
    case OP_LOOKUP_U64:
        do_lookup(mi, true, key_of(mi, true, take()), false);
        break;
    case OP_FORGET:
        do_forget(mi, false, key_of(mi, false, take()));
        break;
    case OP_FORGET_U64:
        do_forget(mi, true, key_of(mi, true, take()));
        break;
    case OP_CLEAR:
        do_clear(mi);
        break;
    case OP_STATS:
        if (S.stats++ < MAX_STATS)
            do_stats(mi);
        break;
    case OP_RELEASE:
        release_slot((int)(fl >> 1) % HELD_REFS);
        break;
    case OP_YIELD:
        if (!(fl & 8))
            yield();
        else if ((fl & 6) == 6)
            do_set_limits(mi, take());
        else
            advance_clock(fl & 7);
        break;
    case OP_BAD:
        bad_args(take());
        break;
    case OP_SCRATCH: {
        unsigned c = take();
        if (S.scratches++ < MAX_SCRATCHES)
            scratch_memo(c);
        break;
    }
    case OP_MEMO1: {
        unsigned c = take(), p = fl & 8 ? take() : 0;
        remake_memo1(c, fl & 8, p);
        break;
    }
    case OP_TIMED_SHORT: {
        bool u64 = fl & 2;
        unsigned kb = take();
        mi = (fl & 1) && S.memo[1].m != NULL ? 1 : 0;
        (void)do_get(mi, u64, key_of(mi, u64, kb), GET_TIMED_SHORT,
                     fl & 8 ? 20000 : 2000, fl & 4);
        break;
    }
    }
}

/* One thread's part: ops until the program ends (on either thread), then its refs go. */
static void run_program(void)
{
    while (!at_end())
        top_op();
    release_all();
    S.done[self] = true;
}

static void *worker(void *arg)
{
    (void)arg;
    self = 1;
    (void)prctl(PR_SET_TIMERSLACK, 1UL); /* short timed waits sleep microseconds, not 50 */
    for (;;) {
        wait_turn(1);
        run_program();
        pass_turn(0);
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&S, 0, sizeof S);
    S.data = data;
    S.size = size;
    S.arena_ok = input_may_have_arena(data, size);
    S.steps = MAX_STEPS;
    unsigned mode = take();
    S.two_threads = mode & 1;
    S.done[1] = !S.two_threads;
    S.now = mode & 0x10 ? UINT64_MAX - 5000 : 1000;
    unsigned c = take(), p = mode & 4 ? take() : 0;
    memo_make(0, c, mode & 4, p);
    if (mode & 2) {
        c = take();
        p = mode & 8 ? take() : 0;
        memo_make(1, c, mode & 8, p);
    }

    run_program();
    if (S.started[1] && !S.done[1]) {
        /* B is suspended inside its program: let it unwind to its end. */
        pass_turn(1);
        wait_turn(0);
    }

    for (int t = 0; t < 2; t++)
        if (S.depth[t] != 0 || S.frames[t][0] != 0 || S.frames[t][1] != 0)
            fail("model: thread %c still has computations at the end", "AB"[t]);
    drain_all();
    memo_check_and_destroy(0);
    if (S.memo[1].m != NULL)
        memo_check_and_destroy(1);
    return 0;
}

/* ---- the seed corpus ----------------------------------------------------------------------- */

#define SEQ(...) __VA_ARGS__
/* Config bytes: C_SYS1 MEMO_F_SYSTEM_ALLOC and 1 shard; C_ARENA16 an arena, 16 shards, 100
 * expected entries; C_EXPECT100: 100 expected entries. */
#define C_SYS1 0x00
#define C_SYS4 0x20
#define C_ARENA16 0xcf
#define C_ARENA2 0x1f
#define C_EXPECT100 0x84

/* 0.2. Mode bits: M_POL0 / M_POL1 a policy byte follows memo 0's / memo 1's config byte, M_HIGH
 * the clock starts at UINT64_MAX - 5000. Policy bytes: P_E1 P_E2 P_E5 P_E1000 P_B6K P_B32K P_E3B16K
 * (bounds), P_TTL3 P_TTL12 P_TTL900, P_REFRESH (5 ns), P_FAIL (failure_ttl 7 ns), P_CB
 * (on_removal). CLOCK(i) moves the clock (+1 +2 +5 +5 +13 +400), LIMITS(memo) sets the limits
 * (operand: max_entries index | max_bytes index << 3), RTTL(i) is memo_result_ttl (0 1 4 12 100
 * 2000 UINT64_MAX UINT64_MAX-1). A policy memo's key bytes 0 1 2 are its hot keys: "a", NULL/0
 * and the 40-byte key; u64 0, 1 and 42. */
#define M_POL0 0x04
#define M_POL1 0x08
#define M_HIGH 0x10
#define P_E1 1
#define P_E2 2
#define P_E5 3
#define P_E1000 4
#define P_B6K 5
#define P_B32K 6
#define P_E3B16K 7
#define P_TTL3 0x08
#define P_TTL12 0x10
#define P_TTL900 0x18
#define P_REFRESH 0x20
#define P_FAIL 0x40
#define P_CB 0x80
#define CLOCK(i) (OP_YIELD | (8 + (i)) << 4)
#define LIMITS(memo) (OP_YIELD | 0xe0 | (memo) << 4)
#define RTTL(i) (FN_YIELD | (8 + (i)) << 4)

struct seed {
    const char   *name;
    size_t        len;
    unsigned char bytes[64];
};
#define SEED(name, ...) { name, sizeof((unsigned char[]){ __VA_ARGS__ }), { __VA_ARGS__ } }

static const struct seed seeds[] = {
    /* Byte and u64 gets, hits, lookups, a forget, stats. */
    SEED("basic", 0, C_SYS1,
         OP_GET, 2, FN_SET_OK, 5, OP_GET, 2, OP_LOOKUP, 2, OP_GET_U64, 3, FN_OK, OP_GET_U64, 3,
         OP_FORGET, 2, OP_LOOKUP, 2, OP_STATS),
    /* NULL/0 and ""/0 are one key; the 8-byte key equal to u64 42's bytes is not u64 42. */
    SEED("empty-key-alias", 0, C_SYS4,
         OP_GET, 0, FN_SET_OK, 3, OP_GET, 1, OP_LOOKUP, 0, OP_FORGET, 1, OP_LOOKUP, 0,
         OP_GET, 6, FN_SET_OK, 8, OP_LOOKUP_U64, 3, OP_GET_U64, 3, FN_OK, OP_STATS),
    /* fn fails (positive, after setting a value; negative), then succeeds storing twice. */
    SEED("fail-then-store", 0, C_SYS1,
         OP_GET, 7, FN_FAIL | 0x10, 4, 9, OP_GET, 7, FN_FAIL_NEG, 2, OP_LOOKUP, 7,
         OP_GET, 7, FN_SET_TWICE_OK, 0x13, 14, OP_GET, 7, OP_GET_U64, 5, FN_FAIL, 3, OP_STATS),
    /* Recursion on its own key: MEMO_EDEADLK, returned by fn, then ignored (plain, timed). */
    SEED("self-deadlock", 0, C_SYS1,
         OP_GET, 3, FN_SELF_GET | 0x80, OP_LOOKUP, 3, OP_GET, 3, FN_SELF_GET, FN_SELF_GET | 0x20,
         FN_SET_OK, 2, OP_GET_U64, 1, FN_SELF_GET | 0x10, FN_OK, OP_STATS),
    /* Nested computations across key spaces, with a cycle back to the first key. */
    SEED("nested", 0, C_SYS4,
         OP_GET, 2, FN_NESTED | 0x10, 4, FN_NESTED, 5, FN_NESTED, 2, FN_SET_OK, 1, FN_SET_OK, 6,
         FN_SET_OK, 2, OP_LOOKUP, 5, OP_LOOKUP_U64, 4, OP_STATS),
    /* fn forgets its own key: its caller gets the value, nothing is stored; fn forgets, then
     * gets its own key afresh (no deadlock: the marker is gone). */
    SEED("forget-self", 0, C_SYS1,
         OP_GET, 4, FN_FORGET_SELF, FN_SET_OK, 5, OP_LOOKUP, 4, OP_GET_U64, 2, FN_FORGET_SELF,
         FN_SELF_GET, FN_OK, FN_OK, OP_LOOKUP_U64, 2, OP_STATS),
    /* Refs held across a clear inside fn, then released. */
    SEED("clear-in-fn", 0, C_SYS1,
         OP_GET | F_HOLD, 2, FN_SET_OK, 13, OP_GET | F_HOLD, 7, FN_SET_OK, 9, OP_GET, 9, FN_CLEAR,
         FN_SET_OK, 4, OP_LOOKUP, 2, OP_RELEASE, OP_RELEASE | 0x20, OP_STATS),
    /* Bad arguments, a scratch memo, memo 1 made and used from inside memo 0's fn. */
    SEED("bad-args-memo1", 0, C_SYS1,
         OP_BAD, 0, OP_BAD, 1, OP_BAD, 11, OP_BAD, 10, OP_SCRATCH, 0x8a, OP_MEMO1, C_SYS4,
         OP_GET, 2, FN_NESTED | 0x20, 3, FN_OK, FN_OK, OP_GET | F_MEMO1, 3, OP_STATS | F_MEMO1),
    /* Two threads (bytes in the order they run): A computes "a" and yields; B finds it in
     * flight (lookup, timed gets), forgets it and computes it afresh, yields; A's fn returns:
     * its value goes to its caller only, B's stays. */
    SEED("2t-forget-inflight", 1, C_SYS1,
         OP_GET, 2, FN_YIELD,
         OP_LOOKUP, 2, OP_TIMED, 2, OP_TIMED_SHORT, 2, OP_FORGET, 2, OP_GET, 2, FN_SET_OK, 7, OP_YIELD,
         FN_SET_OK, 3, OP_LOOKUP, 2, OP_STATS),
    /* Two threads: B holds refs while A clears; B's gets of A's in-flight key time out; B
     * releases its refs after the clear. */
    SEED("2t-refs-clear", 1, C_SYS4,
         OP_YIELD,
         OP_GET | F_HOLD, 2, FN_SET_OK, 11, OP_GET_U64, 1, FN_OK, OP_GET | F_HOLD, 7, FN_SET_OK, 4, OP_YIELD,
         OP_CLEAR, OP_GET_U64, 1, FN_YIELD,
         OP_TIMED_U64, 1, OP_TIMED_SHORT | 0x20, 1, OP_LOOKUP_U64, 1, OP_RELEASE, OP_YIELD,
         FN_OK, OP_LOOKUP_U64, 1, OP_STATS, OP_YIELD,
         OP_RELEASE | 0x20, OP_STATS),
    /* Two threads: B sets the value of A's suspended computation, then A stores it. */
    SEED("2t-set-other", 1, C_SYS1,
         OP_GET, 10, FN_YIELD,
         OP_GET, 5, FN_SET_OTHER, 0x1d, FN_OK, OP_YIELD,
         FN_OK, OP_LOOKUP, 10, OP_STATS),
    /* An arena: memo 0 in a jemalloc arena, memo 1 with malloc (an input gets one arena),
     * nested across them; B forgets A's in-flight key of memo 1 and reaches its key of memo 0
     * (timeout) from a nested get. */
    SEED("2t-arenas", 3, C_ARENA16, C_ARENA2,
         OP_GET | F_MEMO1, 7, FN_NESTED | 0x20, 2, FN_YIELD,
         OP_GET, 7, FN_SET_OK, 3, OP_FORGET | F_MEMO1, 7, OP_GET | F_MEMO1, 2, FN_NESTED | 0x20, 2, FN_OK,
         OP_YIELD,
         FN_SET_OK, 14, FN_SET_OK, 15, OP_STATS, OP_STATS | F_MEMO1),
    /* Two threads, A nested two deep and suspended; B's nested gets reach both of A's keys
     * (timeouts), then B clears: nothing of A's is stored, nor B's own. */
    SEED("2t-nested-clear", 1, C_SYS1,
         OP_GET_U64, 4, FN_NESTED, 11, FN_YIELD,
         OP_GET, 5, FN_NESTED | 0x10, 4, FN_NESTED, 11, FN_CLEAR, FN_OK, OP_YIELD,
         FN_SET_OK, 2, FN_OK, OP_LOOKUP, 11, OP_STATS),
    /* One thread, a memo in an arena: values of all sizes, refs held across a forget and a
     * clear, a failure after setting a value. */
    SEED("arena-refs", 0, C_ARENA2,
         OP_GET | F_HOLD, 2, FN_SET_OK, 0x1f, OP_GET | F_HOLD, 7, FN_SET_OK, 0x0c, OP_GET_U64, 3,
         FN_SET_TWICE_OK, 0, 0, OP_FORGET, 2, OP_GET, 2, FN_FAIL | 0x10, 0x0e, 5, OP_CLEAR,
         OP_RELEASE, OP_STATS),
    /* Long keys that share prefixes, large values, memo_result_alloc. */
    SEED("long-keys", 0, C_SYS1 | C_EXPECT100,
         OP_GET, 7, FN_SET_OK, 0x1e, OP_GET, 8, FN_SET_OK, 0x0f, OP_GET, 9, FN_SET_EMPTY, FN_OK,
         OP_GET, 10, FN_SET_OK, 0xec, OP_LOOKUP, 7, OP_LOOKUP, 8, OP_LOOKUP, 9, OP_LOOKUP, 10, OP_STATS),
    /* 0.2 */
    /* ttl 12: a hit before the deadline, none at it; the expired value is computed afresh. */
    SEED("ttl", M_POL0, C_SYS1, P_TTL12 | P_CB,
         OP_GET, 0, FN_SET_OK, 5, OP_GET, 0, CLOCK(2), OP_GET, 0, OP_LOOKUP, 0, OP_GET_U64, 1, FN_OK,
         CLOCK(4), OP_LOOKUP, 0, OP_LOOKUP_U64, 1, OP_STATS, OP_GET, 0, FN_SET_OK, 3, OP_GET_U64, 1, FN_OK,
         OP_FORGET_U64, 1, OP_STATS),
    /* memo_result_ttl: 4 (expires), 0 (not stored), UINT64_MAX; on a u64 fn (no out) and on a
     * memo without a policy (memo 1): MEMO_EINVAL. */
    SEED("result-ttl", M_POL0 | 2, C_SYS1, P_CB, C_SYS1,
         OP_GET, 0, RTTL(2), FN_SET_OK, 5, OP_GET, 1, RTTL(0), FN_SET_OK, 2, OP_GET, 1, FN_SET_OK, 2,
         OP_GET, 2, RTTL(6), FN_SET_OK, 3, OP_GET_U64, 0, RTTL(3), FN_OK, OP_GET | F_MEMO1, 0, RTTL(3), FN_OK,
         CLOCK(2), OP_GET, 0, FN_SET_OK, 1, OP_GET, 1, OP_GET, 2, OP_STATS),
    /* refresh_ns 5: a hit, then a refresh (fn sees the old value, a nested get hits it) that
     * replaces it; a failed refresh, a memo_result_ttl(0) one and a forgotten one leave the old
     * value, then nothing. */
    SEED("refresh", M_POL0, C_SYS1, P_REFRESH | P_TTL900 | P_CB,
         OP_GET, 0, FN_SET_OK, 5, CLOCK(1), OP_GET, 0, CLOCK(2), OP_GET, 0, FN_LOOKUP_SELF, FN_SELF_GET,
         FN_SET_OK, 7, OP_GET, 0, CLOCK(2), OP_GET, 0, FN_FAIL, 9, OP_GET, 0, RTTL(0), FN_SET_OK, 1,
         OP_GET, 0, FN_FORGET_SELF, FN_SET_OK, 2, OP_LOOKUP, 0, OP_GET, 0, FN_OK, OP_STATS),
    /* max_entries 1 keeps the last value stored; memo_set_limits raises, then lowers the bound. */
    SEED("max-entries", M_POL0, C_SYS1, P_E1 | P_CB,
         OP_GET, 0, FN_SET_OK, 1, OP_GET_U64, 0, FN_OK, OP_LOOKUP, 0, OP_GET_U64, 0, OP_GET, 1, FN_FAIL, 4,
         LIMITS(0), 4, OP_GET, 0, FN_SET_OK, 2, OP_GET, 2, FN_SET_OK, 3, OP_GET_U64, 1, FN_OK, OP_STATS,
         LIMITS(0), 2, OP_STATS, OP_GET, 0, FN_SET_OK, 4, OP_GET, 2, FN_SET_OK, 5, OP_STATS),
    /* max_bytes 6 KiB: a value too big alone is returned (held), not stored; the others evict. */
    SEED("max-bytes", M_POL0, C_SYS1, P_B6K | P_CB,
         OP_GET, 0, FN_SET_OK, 13, OP_GET | F_HOLD, 1, FN_SET_OK, 15, OP_GET, 1, FN_SET_OK, 12,
         OP_GET, 2, FN_SET_OK, 14, OP_STATS, OP_GET, 0, FN_SET_OK, 11, OP_RELEASE, OP_GET, 1, OP_STATS),
    /* failure_ttl 7: a failure is a hit until it expires, invisible to lookups; with max_entries
     * 2 stored failures count and are evicted. */
    SEED("failure-ttl", M_POL0, C_SYS1, P_FAIL | P_E2 | P_CB,
         OP_GET, 0, FN_FAIL, 5, OP_GET, 0, OP_LOOKUP, 0, OP_GET_U64, 0, FN_FAIL, 0, CLOCK(2), OP_GET, 0,
         OP_GET_U64, 0, CLOCK(2), OP_GET, 0, FN_SET_OK, 3, OP_GET_U64, 0, FN_OK, OP_GET, 1, FN_FAIL_NEG, 0,
         OP_GET, 1, FN_FAIL, 9, OP_FORGET, 1, OP_STATS),
    /* Two threads: A's refresh is suspended in fn; B gets the old value at once (a hit); then A
     * stores the new one. */
    SEED("2t-refresh", 1 | M_POL0, C_SYS1, P_REFRESH | P_CB,
         OP_GET, 0, FN_SET_OK, 5, CLOCK(2), OP_GET, 0, FN_YIELD,
         OP_GET, 0, OP_LOOKUP, 0, OP_GET_U64, 0, FN_OK, OP_YIELD,
         FN_SET_OK, 6, OP_GET, 0, OP_STATS),
    /* Two threads: A's refresh is suspended; B moves the clock past the ttl: its gets of the
     * key wait for A's refresh (they time out), its lookup finds nothing; A's fn gets its own
     * key (MEMO_EDEADLK: the refresh is that key's computation now), then stores. */
    SEED("2t-expire-refresh", 1 | M_POL0, C_SYS1, P_REFRESH | P_TTL12 | P_E2 | P_CB,
         OP_GET, 0, FN_SET_OK, 5, CLOCK(2), OP_GET, 0, FN_YIELD,
         CLOCK(4), OP_GET, 0, OP_TIMED_SHORT, 0, OP_LOOKUP, 0, OP_GET_U64, 0, FN_OK, OP_YIELD,
         FN_SELF_GET, FN_SET_OK, 8, OP_GET, 0, OP_STATS),
    /* Bounded and refreshing: three keys in a memo of two, then a refresh-due get of each: fn
     * runs either way, and a lookup from fn tells a refresh from a computation. */
    SEED("refresh-evicted", M_POL0, C_SYS1, P_REFRESH | P_E2 | P_CB,
         OP_GET, 0, FN_SET_OK, 1, OP_GET, 1, FN_SET_OK, 2, OP_GET, 2, FN_SET_OK, 3, CLOCK(2),
         OP_GET, 0, FN_SET_OK, 4, OP_GET, 1, FN_SET_OK, 5, OP_GET, 2, FN_SET_OK, 6, OP_STATS),
    /* The clock near UINT64_MAX: deadlines saturate (memo_result_ttl UINT64_MAX - 1 never
     * expires); the clock stops short of UINT64_MAX. */
    SEED("high-clock", M_POL0 | M_HIGH, C_SYS1, P_REFRESH | P_TTL900 | P_CB,
         OP_GET, 0, RTTL(7), FN_SET_OK, 1, OP_GET, 1, FN_SET_OK, 2, CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5),
         CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5), CLOCK(5),
         OP_GET, 0, FN_SET_OK, 3, OP_GET, 1, FN_SET_OK, 4, OP_GET, 0, OP_STATS),
    /* A clock but no policy (policy byte 0): memo_result_ttl and memo_set_limits are
     * MEMO_EINVAL, nothing expires, the clock is never read. */
    SEED("lean-clock", M_POL0, C_SYS1, 0,
         OP_GET, 0, RTTL(2), FN_SET_OK, 1, LIMITS(0), 1, CLOCK(5), OP_GET, 0, OP_BAD, 10, OP_STATS),
    /* A memo that may be bounded later (memo.h: max_entries UINT64_MAX, by memo_set_limits),
     * then bounded to 2 (two of four values go), then unbounded: nothing is evicted again. */
    SEED("bounded-later", M_POL0, C_SYS1, P_TTL900 | P_CB,
         LIMITS(0), 6, OP_GET, 0, FN_SET_OK, 1, OP_GET, 1, FN_SET_OK, 2, OP_GET, 2, FN_SET_OK, 3,
         OP_GET_U64, 0, FN_OK, OP_STATS, LIMITS(0), 2, OP_STATS, OP_LOOKUP, 0, OP_LOOKUP, 1, OP_LOOKUP, 2,
         OP_LOOKUP_U64, 0, LIMITS(0), 0, OP_GET_U64, 1, FN_OK, OP_GET_U64, 2, FN_OK, OP_GET_U64, 1,
         OP_STATS),
    /* A refresh whose fn forgets its key, then gets it: memo.h says a new computation (memo
     * gives MEMO_EDEADLK: a library bug; the model takes either). Last in the input, so that
     * either way the rest reads as zeros. */
    SEED("refresh-forget", M_POL0, C_SYS1, P_REFRESH | P_CB,
         OP_GET, 0, FN_SET_OK, 5, CLOCK(2), OP_GET, 0, FN_FORGET_SELF, FN_SELF_GET),
    /* The same on two threads: B forgets the key of A's suspended refresh, then gets it. */
    SEED("2t-refresh-forget", 1 | M_POL0, C_SYS1, P_REFRESH | P_CB,
         OP_GET, 0, FN_SET_OK, 5, CLOCK(2), OP_GET, 0, FN_YIELD,
         OP_FORGET, 0, OP_LOOKUP, 0, OP_GET, 0),
    /* memo 1 remade with a policy (op 14 | 0x80) and used from memo 0's fn; its fn calls back
     * into memo 0: MEMO_EDEADLK on the key being computed there, a computation of another. */
    SEED("memo1-policy", 0, C_SYS1,
         OP_MEMO1 | 0x80, C_SYS1, P_E2 | P_TTL12 | P_FAIL | P_CB, OP_GET, 0,
         FN_NESTED | 0x20, 0, FN_NESTED | 0x20, 1, FN_NESTED | 0x20, 2, FN_OK, FN_OK, FN_FAIL, 3, FN_OK,
         OP_GET | F_MEMO1, 0, OP_STATS | F_MEMO1),
};

static void write_seeds(const char *dir)
{
    (void)mkdir(dir, 0777);
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02zu-%s", dir, i, seeds[i].name);
        unsigned char bytes[sizeof seeds[i].bytes + 2];
        size_t len = seeds[i].len;
        memcpy(bytes, seeds[i].bytes, len);
        if (strstr(seeds[i].name, "arena") != NULL) {
            /* Pass the arena gate: end with two releases of an empty slot (no-ops) whose flags
             * make the input's hash 0 mod 8. */
            len += 2;
            for (unsigned fl = 0; fl < 256 && !input_may_have_arena(bytes, len); fl++) {
                bytes[len - 2] = (unsigned char)(OP_RELEASE | (fl & 15) << 4);
                bytes[len - 1] = (unsigned char)(OP_RELEASE | (fl >> 4) << 4);
            }
            if (!input_may_have_arena(bytes, len))
                fprintf(stderr, "%s: no arena for this seed; change it\n", path);
        }
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) {
            perror(path);
            exit(1);
        }
        printf("%s (%zu bytes)\n", path, len);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    keys_init();
    pattern_init();
    for (int i = 1; i < *argc; i++) {
        if (strcmp((*argv)[i], "--write-seeds") == 0) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "usage: %s --write-seeds DIR\n", (*argv)[0]);
                exit(2);
            }
            write_seeds((*argv)[i + 1]);
            exit(0);
        }
    }
    const char *t = getenv("FUZZ_API_TRACE");
    trace = t != NULL && *t != '\0' && *t != '0';
    const char *arenas = getenv("FUZZ_API_ARENAS");
    if (arenas != NULL)
        arena_budget = strtoul(arenas, NULL, 10);
    const char *cmax = getenv("FUZZ_API_CLOCK_MAX");
    if (cmax != NULL && *cmax != '\0' && *cmax != '0')
        clock_max = UINT64_MAX;
    const char *spins = getenv("FUZZ_API_SPINS");
    if (spins != NULL)
        handoff_spins = atoi(spins);
    (void)prctl(PR_SET_TIMERSLACK, 1UL);
    pthread_t b;
    if (pthread_create(&b, NULL, worker, NULL) != 0 || pthread_detach(b) != 0) {
        perror("fuzz_api: pthread_create");
        exit(1);
    }
    return 0;
}
