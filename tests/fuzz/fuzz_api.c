/*
 * fuzz_api: a libFuzzer target that runs a program of memo API calls, decoded from the input
 * bytes, against a reference model that predicts every return code, every value and every
 * counter. Any disagreement prints what differed and abort()s, which libFuzzer reports as a
 * crash and saves the input (build-fuzz/artifacts/ under scripts/fuzz).
 *
 * Build and run: scripts/fuzz (clang, -DMEMO_FUZZ=ON, -fsanitize=fuzzer,address,undefined).
 * Replay one input with a trace of every call: FUZZ_API_TRACE=1 build-fuzz/tests/fuzz/fuzz_api FILE
 * Remake the seed corpus:  build-fuzz/tests/fuzz/fuzz_api --write-seeds tests/fuzz/corpus
 * (each seed is a commented program in seeds[] at the end of this file).
 * Other knobs: FUZZ_API_SPINS (turnstile spins before sleeping, 300), FUZZ_API_ARENAS (arena
 * memos per process, 100000; 0 = none).
 *
 * ---- Input format. Every byte string is a valid program; reading past the end gives 0. ----
 *
 *   byte 0  mode: bit 0 two threads (else one), bit 1 make memo 1 at the start (config: byte 2)
 *   byte 1  memo 0's config; byte 2 memo 1's config if bit 1 of byte 0. A config byte:
 *           bits 0-3 == 15: a jemalloc arena (else MEMO_F_SYSTEM_ALLOC; at most one arena per
 *           input), bits 4-6 shards (1 2 4 1 16 2 64 8), bits 7 and 2 expected_entries (0 5 0
 *           100); the hash seed is a function of the byte, never 0 (a random seed would make a
 *           failing input unreproducible; scratch memos, op 13, use seed 0 when bits 0-1 are 2)
 *   then ops, at most MAX_STEPS ops and compute-function actions in all. An op is a byte
 *   OP | FLAGS << 4 (F_MEMO1 = 0x10 picks memo 1 when it exists, F_HOLD = 0x20 keeps the ref in
 *   one of the thread's HELD_REFS slots) and its operand bytes:
 *     0 get  1 get_u64  2 get_timed(0)  3 get_u64_timed(0)   key byte: a byte key encoding
 *     4 lookup  5 lookup_u64  6 forget  7 forget_u64        (of 12, over 11 distinct keys:
 *                                                            NULL/0 and ""/0 are one key) or
 *                                                            a u64 key (of 8)
 *     8 clear  9 stats (exact counters when no call runs on that memo)
 *     10 release held slot (FLAGS >> 1)   11 yield to the other thread (two-thread mode)
 *     12 bad arguments, variant byte: NULL memo / fn / ref / value / key with len > 0, bad
 *        configs, stats and release of NULL, strerror: each must be MEMO_EINVAL (or a no-op)
 *     13 create, use and destroy a scratch memo (config byte)
 *     14 destroy memo 1 (if nothing runs or is held on it) and make it afresh (config byte)
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
 *     its own key  9 clear its memo  10 yield  11 lookup its own key  12 bad memo_result
 *     arguments (MEMO_EINVAL, value unchanged)  13 any top-level op  14 memo_result_set(out,
 *     NULL, 0) (u64: *value = 0)  15 set the value of the other thread's innermost
 *     computation, suspended in its fn (memo_result_* may be called from any thread, one at a
 *     time)
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

/* ---- the model ----------------------------------------------------------------------------- */

typedef struct frame frame_t;

typedef struct {
    uint8_t  state;   /* ABSENT, STORED, COMPUTING */
    uint32_t id, len; /* STORED: the value (id 0 with len 0: the empty value) */
    frame_t *frame;   /* COMPUTING: the computation whose marker is in the table */
} mkey_t;

typedef struct {
    memo_t  *m;
    bool     arena;
    mkey_t   bytes[NBYTE_SLOTS];
    mkey_t   u64[NU64_KEYS];
    uint64_t hits, misses, errors;
} mmemo_t;

/* One computation: lives on the stack of the get that runs it. */
struct frame {
    int            memo, thread, key; /* key: byte key encoding, or u64 key index */
    bool           u64;
    bool           expect_call, called;
    bool           detached;          /* forgotten or cleared while in flight: not stored */
    bool           has_value;
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

static void detach(mkey_t *k)
{
    if (k->state == COMPUTING)
        k->frame->detached = true;
    k->state = ABSENT;
    k->frame = NULL;
}

static int do_get(int mi, bool u64, int key, enum get_kind kind, uint64_t short_ns, bool hold)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, u64, key);
    int want = 0;
    uint32_t id = 0, len = 0;
    bool compute = false;
    switch (k->state) {
    case STORED:
        id = k->id;
        len = k->len;
        mm->hits++;
        break;
    case COMPUTING:
        if (k->frame->thread == self) {
            want = MEMO_EDEADLK;
        } else {
            /* A plain get would wait for the other thread, which cannot run until we yield.
             * A short timeout really sleeps: a few per input. */
            if (kind == GET_PLAIN || (kind == GET_TIMED_SHORT && S.short_waits++ >= MAX_SHORT_WAITS))
                kind = GET_TIMED0;
            want = MEMO_ETIMEDOUT;
        }
        break;
    default:
        compute = true;
        break;
    }
    frame_t f = { .memo = mi, .thread = self, .key = key, .u64 = u64, .expect_call = compute };
    uint64_t timeout = kind == GET_TIMED_SHORT ? short_ns : 0;
    static const char *const kinds[] = { "get", "get_timed(0)", "get_timed(short)" };
    TRACE("%s%s memo %d %s: expect %s", kinds[kind], u64 ? "_u64" : "", mi, key_name(u64, key),
          compute ? "compute" : k->state == STORED ? "hit" : memo_err_name(want));
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

    if (compute) {
        if (!f.called)
            fail("get of %s (memo %d): the model expects fn to run, it did not (rc %d)", key_name(u64, key), mi, rc);
        want = f.rc;
        id = f.id;
        len = f.len;
        if (!f.detached) {
            if (k->state != COMPUTING || k->frame != &f)
                fail("model: %s is not this computation's", key_name(u64, key));
            k->frame = NULL;
            k->state = f.rc == 0 ? STORED : ABSENT;
            k->id = id;
            k->len = len;
        }
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
    int want = k->state == STORED ? 0 : MEMO_ENOENT;
    if (want == 0)
        mm->hits++;
    TRACE("lookup%s memo %d %s: expect %s", u64 ? "_u64" : "", mi, key_name(u64, key), memo_err_name(want));
    S.calls++;
    call_t c = { "lookup", mi, key, u64 };
    if (u64) {
        uint64_t v = 0;
        int rc = memo_lookup_u64(mm->m, u64_keys[key], &v);
        expect_call_rc(rc, want, &c);
        if (rc == 0 && v != value_u64(k->id))
            fail("%s: value %llu, the model expects value #%u", call_name(&c), (unsigned long long)v, k->id);
    } else {
        memo_ref_t ref = MEMO_REF_INIT;
        void *kb = key_copy(key);
        int rc = memo_lookup(mm->m, kb, byte_keys[key].len, &ref);
        key_free(key, kb);
        expect_call_rc(rc, want, &c);
        if (rc == 0)
            check_bytes(ref.data, ref.len, k->id, k->len, &c);
        hold_or_release(&ref, mi, k->id, k->len, hold && rc == 0);
    }
}

static void do_forget(int mi, bool u64, int key)
{
    mmemo_t *mm = &S.memo[mi];
    mkey_t *k = model_key(mi, u64, key);
    int want = k->state == STORED ? 0 : MEMO_ENOENT;
    TRACE("forget%s memo %d %s: expect %s%s", u64 ? "_u64" : "", mi, key_name(u64, key), memo_err_name(want),
          k->state == COMPUTING ? " (detaches a computation)" : "");
    S.calls++;
    int rc;
    if (u64) {
        rc = memo_forget_u64(mm->m, u64_keys[key]);
    } else {
        void *kb = key_copy(key);
        rc = memo_forget(mm->m, kb, byte_keys[key].len);
        key_free(key, kb);
    }
    call_t c = { "forget", mi, key, u64 };
    expect_call_rc(rc, want, &c);
    detach(k);
}

static void do_clear(int mi)
{
    if (S.clears++ >= MAX_CLEARS)
        return;
    TRACE("clear memo %d", mi);
    S.calls++;
    memo_clear(S.memo[mi].m);
    for (int i = 0; i < NBYTE_SLOTS; i++)
        detach(&S.memo[mi].bytes[i]);
    for (int i = 0; i < NU64_KEYS; i++)
        detach(&S.memo[mi].u64[i]);
}

static uint64_t model_entries(int mi)
{
    uint64_t n = 0;
    for (int i = 0; i < NBYTE_SLOTS; i++)
        n += S.memo[mi].bytes[i].state == STORED;
    for (int i = 0; i < NU64_KEYS; i++)
        n += S.memo[mi].u64[i].state == STORED;
    return n;
}

/* Counters are exact once no call runs on the memo; under the turnstile the other thread may be
 * suspended inside a call, and then only entries (values stored now) is held to the model. */
static void do_stats(int mi)
{
    mmemo_t *mm = &S.memo[mi];
    memo_stats_t st;
    memset(&st, 0xa5, sizeof st);
    memo_stats(mm->m, &st);
    bool quiescent = S.frames[0][mi] + S.frames[1][mi] == 0;
    TRACE("stats memo %d%s: hits %llu misses %llu errors %llu entries %llu", mi, quiescent ? "" : " (calls in flight)",
          (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.errors,
          (unsigned long long)st.entries);
    uint64_t entries = model_entries(mi);
    if (st.entries != entries)
        fail("stats of memo %d: entries %llu, the model has %llu", mi, (unsigned long long)st.entries,
             (unsigned long long)entries);
    if (st.waits != 0 || st.evictions != 0)
        fail("stats of memo %d: waits %llu, evictions %llu: nothing ever waits or is evicted here", mi,
             (unsigned long long)st.waits, (unsigned long long)st.evictions);
    if (!mm->arena && st.bytes == 0)
        fail("stats of memo %d: bytes 0 with MEMO_F_SYSTEM_ALLOC", mi);
    if (quiescent && (st.hits != mm->hits || st.misses != mm->misses || st.errors != mm->errors))
        fail("stats of memo %d: hits %llu misses %llu errors %llu, the model has %llu %llu %llu", mi,
             (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.errors,
             (unsigned long long)mm->hits, (unsigned long long)mm->misses, (unsigned long long)mm->errors);
}

/* ---- compute functions --------------------------------------------------------------------- */

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
    mkey_t *k = model_key(f->memo, f->u64, f->key);
    if (k->state != ABSENT)
        fail("model: fn runs for a key in state %d", k->state);
    k->state = COMPUTING;
    k->frame = f;
    S.memo[f->memo].misses++;
    S.frames[self][f->memo]++;
    S.depth[self]++;
    f->outer = S.innermost[self];
    S.innermost[self] = f;
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
                (void)do_get(other_memo(f->memo, arg & 2), u64, (int)((kb & 0x7f) % (u64 ? NU64_KEYS : NBYTE_KEYS)),
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
        break;
    case 11: {
        /* Configs that make no sense: MEMO_EINVAL, and *out untouched. */
        struct {
            memo_config_t c;
            unsigned char tail[64];
        } big;
        memo_t *sentinel = (memo_t *)&big, *out = sentinel;
        expect_rc(memo_create(NULL, NULL), MEMO_EINVAL, "memo_create(NULL out)");
        for (int i = 0; i < 9; i++) {
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

static void memo_make(int mi, unsigned c)
{
    mmemo_t *mm = &S.memo[mi];
    memset(mm, 0, sizeof *mm);
    mm->arena = take_arena(c);
    memo_config_t cfg = config_from(c, mm->arena);
    TRACE("create memo %d: %s, %u shards, expected %zu, dense keys %llu", mi, mm->arena ? "arena" : "system alloc",
          cfg.shards, cfg.expected_entries, (unsigned long long)cfg.dense_keys);
    expect_rc(memo_create(&mm->m, &cfg), 0, "memo_create");
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
    TRACE("destroy memo %d", mi);
    memo_destroy(S.memo[mi].m);
    S.memo[mi].m = NULL;
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

static void remake_memo1(unsigned c)
{
    if (S.memo[1].m != NULL) {
        if (memo_in_use(1) || S.remakes >= MAX_REMAKES) {
            TRACE("remake memo 1: in use or made %d times already, skipped", S.remakes);
            return;
        }
        S.remakes++;
        memo_check_and_destroy(1);
    }
    memo_make(1, c);
}

/* ---- the program --------------------------------------------------------------------------- */

static void top_op(void)
{
    if (at_end())
        return;
    unsigned b = step();
    unsigned fl = b >> 4;
    int mi = (b & F_MEMO1) && S.memo[1].m != NULL ? 1 : 0;
    bool hold = b & F_HOLD;
    switch (b & 15) {
    case OP_GET:
        (void)do_get(mi, false, (int)(take() % NBYTE_KEYS), GET_PLAIN, 0, hold);
        break;
    case OP_GET_U64:
        (void)do_get(mi, true, (int)(take() % NU64_KEYS), GET_PLAIN, 0, false);
        break;
    case OP_TIMED:
        (void)do_get(mi, false, (int)(take() % NBYTE_KEYS), GET_TIMED0, 0, hold);
        break;
    case OP_TIMED_U64:
        (void)do_get(mi, true, (int)(take() % NU64_KEYS), GET_TIMED0, 0, false);
        break;
    case OP_LOOKUP:
        do_lookup(mi, false, (int)(take() % NBYTE_KEYS), hold);
        break;
    case OP_LOOKUP_U64:
        do_lookup(mi, true, (int)(take() % NU64_KEYS), false);
        break;
    case OP_FORGET:
        do_forget(mi, false, (int)(take() % NBYTE_KEYS));
        break;
    case OP_FORGET_U64:
        do_forget(mi, true, (int)(take() % NU64_KEYS));
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
        yield();
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
    case OP_MEMO1:
        remake_memo1(take());
        break;
    case OP_TIMED_SHORT: {
        bool u64 = fl & 2;
        unsigned kb = take();
        mi = (fl & 1) && S.memo[1].m != NULL ? 1 : 0;
        (void)do_get(mi, u64, (int)(kb % (u64 ? NU64_KEYS : NBYTE_KEYS)), GET_TIMED_SHORT,
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
    memo_make(0, take());
    if (mode & 2)
        memo_make(1, take());

    run_program();
    if (S.started[1] && !S.done[1]) {
        /* B is suspended inside its program: let it unwind to its end. */
        pass_turn(1);
        wait_turn(0);
    }

    for (int t = 0; t < 2; t++)
        if (S.depth[t] != 0 || S.frames[t][0] != 0 || S.frames[t][1] != 0)
            fail("model: thread %c still has computations at the end", "AB"[t]);
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
