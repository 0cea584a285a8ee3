/*
 * test_basic: the single-threaded contract of memo: create/destroy and configs, get / lookup /
 * forget / clear, counters, values (0 bytes, alignment, set twice, alloc in place), the empty key,
 * u64 and byte key spaces, strerror / err_name / version, memo_release, bad arguments.
 */
#include "tap.h"
#include "helpers.h"

#include <limits.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

static memo_stats_t stats_of(memo_t *m)
{
    memo_stats_t s;
    memset(&s, 0xab, sizeof s);
    memo_stats(m, &s);
    return s;
}

/* ---- compute functions ---- */

/* A compute function whose behaviour the test sets through ctx. */
typedef struct spec {
    atomic_int  calls;
    int         rc;            /* returned */
    const void *value;         /* stored with memo_result_set when set_value */
    size_t      value_len;
    bool        set_value;
    const void *expect_key;    /* checked against the key handed to fn */
    size_t      expect_len;
    bool        key_mismatch;  /* fn saw another key than expected */
} spec_t;

static int fn_spec(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    spec_t *s = (spec_t *)ctx;
    atomic_fetch_add(&s->calls, 1);
    if (key_len != s->expect_len || (key_len && memcmp(key, s->expect_key, key_len) != 0))
        s->key_mismatch = true;
    if (s->set_value && memo_result_set(out, s->value, s->value_len) != 0)
        return MEMO_ENOMEM;
    return s->rc;
}

static atomic_int echo_calls;

/* value = "v:" followed by the key bytes */
static int fn_echo(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    atomic_fetch_add(&echo_calls, 1);
    char *p = (char *)memo_result_alloc(out, key_len + 2);
    if (!p)
        return MEMO_ENOMEM;
    p[0] = 'v';
    p[1] = ':';
    if (key_len)
        memcpy(p + 2, key, key_len);
    return 0;
}

static bool ref_is_echo(const memo_ref_t *r, const void *key, size_t key_len)
{
    const char *d = (const char *)r->data;
    return r->len == key_len + 2 && d && d[0] == 'v' && d[1] == ':' &&
           (key_len == 0 || memcmp(d + 2, key, key_len) == 0);
}

static atomic_int u64_calls;

static int fn_u64_times3(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    atomic_fetch_add(&u64_calls, 1);
    *value = key * 3 + 1;
    return 0;
}

static int fn_nothing(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len, (void)out;
    return 0;
}

static int fn_set_null_zero(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    *(int *)ctx = memo_result_set(out, NULL, 0);
    return 0;
}

/* memo_result_set twice, then alloc, then set: the last call wins each time. */
static int fn_set_twice(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    if (memo_result_set(out, "first value, long enough to need its own room", 46) != 0)
        return 100;
    if (memo_result_set(out, "second", 6) != 0)
        return 101;
    return 0;
}

static int fn_set_then_alloc(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    if (memo_result_set(out, "set first", 9) != 0)
        return 100;
    uint32_t *p = (uint32_t *)memo_result_alloc(out, 4 * sizeof(uint32_t));
    if (!p)
        return 101;
    for (uint32_t i = 0; i < 4; i++)
        p[i] = 0xC0DE0000u + i;
    return 0;
}

static int fn_alloc_then_set(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    char *p = (char *)memo_result_alloc(out, 1000);
    if (!p)
        return 100;
    memset(p, 'x', 1000);
    return memo_result_set(out, "final", 5) != 0 ? 101 : 0;
}

/* Builds a value in memo_result_alloc's room, then stores part of that same room with
 * memo_result_set: the source must be read before the old room is freed. 40 MiB: past glibc's
 * largest mmap threshold, so the room is mapped on its own and reading it after the free faults
 * even without ASan. Only the first 8 KiB are written (the rest is never touched). */
enum { OWN_ROOM = 40 << 20, OWN_FILLED = 8192 };
static int fn_set_from_own_room(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key_len;
    unsigned char *p = (unsigned char *)memo_result_alloc(out, OWN_ROOM);
    if (!p)
        return 100;
    for (size_t i = 0; i < OWN_FILLED; i++)
        p[i] = (unsigned char)(i * 7 + 1);
    size_t from = *(const char *)key == 'i' ? 4096 : 0; /* "interior" or "start" */
    int rc = memo_result_set(out, p + from, 3000);
    return rc != 0 ? 101 : 0; /* p is gone now */
}

static bool is_own_room_value(const memo_ref_t *r, size_t from)
{
    if (r->len != 3000)
        return false;
    for (size_t i = 0; i < 3000; i++)
        if (((const unsigned char *)r->data)[i] != (unsigned char)((from + i) * 7 + 1))
            return false;
    return true;
}

/* Allocates ctx-given length, checks the alignment of the room, fills it with a pattern. */
typedef struct align_ctx {
    size_t len;
    bool   room_aligned;
} align_ctx_t;

static int fn_alloc_pattern(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    align_ctx_t   *a = (align_ctx_t *)ctx;
    unsigned char *p = (unsigned char *)memo_result_alloc(out, a->len);
    if (!p)
        return MEMO_ENOMEM;
    a->room_aligned = ((uintptr_t)p % alignof(max_align_t)) == 0;
    for (size_t i = 0; i < a->len; i++)
        p[i] = (unsigned char)(i * 7 + a->len);
    return 0;
}

static bool has_pattern(const memo_ref_t *r, size_t len)
{
    const unsigned char *p = (const unsigned char *)r->data;
    if (r->len != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)(i * 7 + len))
            return false;
    return true;
}

/* Records what the bad calls inside a compute function return. */
typedef struct result_args_ctx {
    int   set_null_out;
    int   set_null_value;
    void *alloc_null_out;
} result_args_ctx_t;

static int fn_bad_result_args(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    result_args_ctx_t *c = (result_args_ctx_t *)ctx;
    c->set_null_out = memo_result_set(NULL, "abc", 3);
    c->set_null_value = memo_result_set(out, NULL, 3);
    c->alloc_null_out = memo_result_alloc(NULL, 8);
    return memo_result_set(out, "good", 4);
}

/* ---- strerror from several threads ---- */

static atomic_int strerror_mismatches;

static void *strerror_thread(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        int  code = base + i;
        char want[32];
        snprintf(want, sizeof want, "%d", code);
        const char *s = memo_strerror(code);
        if (!s || !strstr(s, want))
            atomic_fetch_add(&strerror_mismatches, 1);
    }
    return NULL;
}

static void test_errors_and_version(void)
{
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", MEMO_VERSION_MAJOR, MEMO_VERSION_MINOR,
             MEMO_VERSION_PATCH);
    is_str(memo_version(), want, "memo_version matches the MEMO_VERSION_* macros");

    static const int   codes[] = { MEMO_OK,        MEMO_ENOMEM, MEMO_EINVAL, MEMO_EDEADLK,
                                   MEMO_ETIMEDOUT, MEMO_ENOENT };
    static const char *names[] = { "MEMO_OK",        "MEMO_ENOMEM", "MEMO_EINVAL", "MEMO_EDEADLK",
                                   "MEMO_ETIMEDOUT", "MEMO_ENOENT" };
    const size_t       ncodes = sizeof codes / sizeof codes[0];
    is_int(MEMO_OK, 0, "MEMO_OK is 0");
    ok(MEMO_ENOMEM < 0 && MEMO_EINVAL < 0 && MEMO_EDEADLK < 0 && MEMO_ETIMEDOUT < 0 &&
           MEMO_ENOENT < 0,
       "memo's own codes are negative");
    for (size_t i = 0; i < ncodes; i++) {
        const char *s = memo_strerror(codes[i]);
        ok(s != NULL && s[0] != '\0', "memo_strerror(%s) is a non-empty string: '%s'", names[i],
           s ? s : "(null)");
        is_str(memo_err_name(codes[i]), names[i], "memo_err_name(%d)", codes[i]);
    }
    bool distinct = true;
    for (size_t i = 0; i < ncodes; i++)
        for (size_t j = i + 1; j < ncodes; j++)
            if (memo_strerror(codes[i]) && memo_strerror(codes[j]) &&
                strcmp(memo_strerror(codes[i]), memo_strerror(codes[j])) == 0)
                distinct = false;
    ok(distinct, "memo_strerror gives each code its own message");
#define CHECK_MAP(code, text)                                                                      \
    is_str(memo_strerror(code), text, "MEMO_ERRNO_MAP: memo_strerror(%s)", #code);                 \
    is_str(memo_err_name(code), #code, "MEMO_ERRNO_MAP: memo_err_name(%s)", #code);
    MEMO_ERRNO_MAP(CHECK_MAP)
#undef CHECK_MAP
    ok(MEMO_VERSION_HEX == (MEMO_VERSION_MAJOR << 16 | MEMO_VERSION_MINOR << 8 | MEMO_VERSION_PATCH) &&
           MEMO_VERSION_HEX >= 0x000200,
       "MEMO_VERSION_HEX is 0x%06x (0.2 or later)", MEMO_VERSION_HEX);

    const char *unknown = memo_strerror(-999);
    ok(unknown != NULL && unknown[0] != '\0', "memo_strerror(-999) (unknown) is a non-empty string");
    is_str(memo_err_name(-999), "MEMO_E?", "memo_err_name(-999) is MEMO_E?");

    const int positive[] = { 1, 42, 123456789, INT_MAX };
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        char        num[32];
        const char *s = memo_strerror(positive[i]);
        snprintf(num, sizeof num, "%d", positive[i]);
        ok(s != NULL && strstr(s, num) != NULL && strstr(s, "compute function failed") != NULL,
           "memo_strerror(%d) = '%s' says the compute function failed and names the code",
           positive[i], s ? s : "(null)");
    }

    /* A positive code's message must not be a buffer shared between threads. */
    pthread_t tids[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&tids[i], NULL, strerror_thread, (void *)(intptr_t)(1000000 * (i + 1))) != 0)
            bail_out("pthread_create");
    tap_join_threads(tids, 4);
    is_int(atomic_load(&strerror_mismatches), 0,
           "memo_strerror(positive) from 4 threads at once: each message names its own code");
}

static void test_create_configs(void)
{
    memo_t *m = NULL;
    is_code(memo_create(&m, NULL), 0, "memo_create(&m, NULL) succeeds");
    ok(m != NULL, "... and sets m");
    memo_destroy(m);

    is_code(memo_create(NULL, NULL), MEMO_EINVAL, "memo_create(NULL out) is MEMO_EINVAL");

    memo_config_t cfg = MEMO_CONFIG_INIT;
    is_size(cfg.struct_size, sizeof(memo_config_t), "MEMO_CONFIG_INIT sets struct_size");
    m = NULL;
    is_code(memo_create(&m, &cfg), 0, "memo_create with MEMO_CONFIG_INIT succeeds");
    memo_destroy(m);

    static int    sentinel_storage;
    memo_t *const sentinel = (memo_t *)(void *)&sentinel_storage;
    struct {
        const char *what;
        size_t      struct_size;
        unsigned    shards;
        unsigned    flags;
    } bad[] = {
        { "struct_size 0", 0, 0, 0 },
        { "struct_size 1", 1, 0, 0 },
        /* the header: a larger struct_size is refused unless the unknown tail is all zero (the
         * config sits in a larger buffer, so that a library that reads the claimed size reads our
         * bytes), and past 1024 bytes whatever the tail */
        { "struct_size larger than this version's (non-zero tail)", sizeof(memo_config_t) + 8, 0, 0 },
        { "struct_size SIZE_MAX (non-zero tail)", SIZE_MAX, 0, 0 },
        { "struct_size SIZE_MAX (zero tail)", SIZE_MAX, 0, 0 },
        { "struct_size 1025 (zero tail)", 1025, 0, 0 },
        { "shards 3 (not a power of two)", sizeof(memo_config_t), 3, 0 },
        { "shards 12 (not a power of two)", sizeof(memo_config_t), 12, 0 },
        { "shards 8192 (more than 4096)", sizeof(memo_config_t), 8192, 0 },
        { "shards 1u << 31", sizeof(memo_config_t), 1u << 31, 0 },
        { "unknown flag 1u << 1", sizeof(memo_config_t), 0, 1u << 1 },
        { "unknown flag 1u << 31", sizeof(memo_config_t), 0, 1u << 31 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct {
            memo_config_t c;
            unsigned char tail[64];
        } big;
        memset(&big, 0, sizeof big);
        big.c = (memo_config_t)MEMO_CONFIG_INIT;
        big.c.struct_size = bad[i].struct_size;
        big.c.shards = bad[i].shards;
        big.c.flags = bad[i].flags;
        if (strstr(bad[i].what, "non-zero tail"))
            memset(big.tail, 0x5a, sizeof big.tail);
        m = sentinel;
        int rc = memo_create(&m, &big.c);
        is_code(rc, MEMO_EINVAL, "memo_create with %s is MEMO_EINVAL", bad[i].what);
        ok(m == sentinel, "... and leaves *out untouched");
        if (rc == 0 && m != sentinel)
            memo_destroy(m);
    }

    {
        /* a later header's longer config whose new fields are zero: accepted */
        struct {
            memo_config_t c;
            unsigned char tail[64];
        } longer;
        memset(&longer, 0, sizeof longer);
        longer.c = (memo_config_t)MEMO_CONFIG_INIT;
        longer.c.struct_size = sizeof(memo_config_t) + 8;
        m = NULL;
        is_code(memo_create(&m, &longer.c), 0, "memo_create with a longer config whose tail is zero succeeds");
        ok(m != NULL, "... and sets *out");
        memo_destroy(m);
    }

    struct {
        const char *what;
        size_t      expected_entries;
        unsigned    shards;
        unsigned    flags;
        uint64_t    seed;
    } good[] = {
        { "shards 1", 0, 1, 0, 0 },
        { "shards 2", 0, 2, 0, 0 },
        { "shards 4096", 0, 4096, 0, 0 },
        { "expected_entries 100000", 100000, 0, 0, 0 },
        { "seed 12345", 0, 0, 0, 12345 },
        { "MEMO_F_SYSTEM_ALLOC", 0, 0, MEMO_F_SYSTEM_ALLOC, 0 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        memo_config_t c = MEMO_CONFIG_INIT;
        c.expected_entries = good[i].expected_entries;
        c.shards = good[i].shards;
        c.flags = good[i].flags;
        c.seed = good[i].seed;
        m = NULL;
        is_code(memo_create(&m, &c), 0, "memo_create with %s succeeds", good[i].what);
        if (!m)
            continue;
        /* and the memo works: 300 keys, values right, counts exact */
        int  bad_values = 0;
        atomic_store(&u64_calls, 0);
        for (int round = 0; round < 2; round++)
            for (uint64_t k = 0; k < 300; k++) {
                uint64_t v = 0;
                if (memo_get_u64(m, k, fn_u64_times3, NULL, &v) != 0 || v != k * 3 + 1)
                    bad_values++;
            }
        is_int(bad_values, 0, "... 600 memo_get_u64 calls over 300 keys return the right values");
        is_int(atomic_load(&u64_calls), 300, "... fn ran once per key");
        memo_stats_t s = stats_of(m);
        ok(s.misses == 300 && s.hits == 300 && s.entries == 300,
           "... stats misses 300, hits 300, entries 300 (got %" PRIu64 ", %" PRIu64 ", %" PRIu64 ")",
           s.misses, s.hits, s.entries);
        memo_destroy(m);
    }

    /*
     * An older, shorter memo_config_t (one without the seed field). The header says older,
     * shorter versions are accepted with their missing fields defaulted, but also that sizes
     * below "the first version's" are MEMO_EINVAL; this is the first version, so whether
     * offsetof(seed) is accepted is the library's call. Either answer must be clean.
     */
    memo_config_t shorter = MEMO_CONFIG_INIT;
    shorter.struct_size = offsetof(memo_config_t, seed);
    m = sentinel;
    int rc = memo_create(&m, &shorter);
    ok(rc == 0 || rc == MEMO_EINVAL,
       "memo_create with struct_size offsetof(seed) (a shorter config) is 0 or MEMO_EINVAL: %s",
       memo_err_name(rc));
    diag("struct_size = offsetof(memo_config_t, seed) gives %s", memo_err_name(rc));
    if (rc == 0) {
        ok(m != sentinel && m != NULL, "... and sets *out");
        uint64_t v = 0;
        ok(memo_get_u64(m, 5, fn_u64_times3, NULL, &v) == 0 && v == 16, "... and the memo works");
        memo_destroy(m);
    } else {
        ok(m == sentinel, "... and leaves *out untouched");
        skip(1, "shorter config refused");
    }

    memo_destroy(NULL);
    ok(1, "memo_destroy(NULL) is a no-op");
}

static void test_get_lookup_forget(memo_t *m)
{
    memo_stats_t s0 = stats_of(m);
    is_u64(s0.hits, 0, "fresh memo: hits 0");
    is_u64(s0.misses, 0, "fresh memo: misses 0");
    is_u64(s0.waits, 0, "fresh memo: waits 0");
    is_u64(s0.errors, 0, "fresh memo: errors 0");
    is_u64(s0.evictions, 0, "fresh memo: evictions 0");
    is_u64(s0.entries, 0, "fresh memo: entries 0");

    const char key[] = "the answer";
    spec_t     sp = { 0 };
    sp.rc = 0;
    sp.value = "forty-two";
    sp.value_len = 9;
    sp.set_value = true;
    sp.expect_key = key;
    sp.expect_len = sizeof key - 1;

    memo_ref_t r = MEMO_REF_INIT;
    is_code(memo_lookup(m, key, sizeof key - 1, &r), MEMO_ENOENT, "lookup before any get: ENOENT");
    ok(r.data == NULL && r.len == 0, "... and the ref stays empty");
    is_code(memo_forget(m, key, sizeof key - 1), MEMO_ENOENT, "forget of an absent key: ENOENT");

    is_code(memo_get(m, key, sizeof key - 1, fn_spec, &sp, &r), 0, "first memo_get: 0");
    is_int(atomic_load(&sp.calls), 1, "... ran fn once");
    ok(!sp.key_mismatch, "... fn was handed the caller's key bytes and length");
    ok(r.len == 9 && r.data && memcmp(r.data, "forty-two", 9) == 0, "... ref holds the value");
    memo_release(&r);
    ok(r.data == NULL && r.len == 0, "memo_release empties the ref");

    for (int i = 0; i < 3; i++) {
        memo_ref_t r2 = MEMO_REF_INIT;
        int        rc = memo_get(m, key, sizeof key - 1, fn_spec, &sp, &r2);
        ok(rc == 0 && r2.len == 9 && memcmp(r2.data, "forty-two", 9) == 0,
           "memo_get again (%d): stored value, rc %d", i, rc);
        memo_release(&r2);
    }
    is_int(atomic_load(&sp.calls), 1, "... fn not called again");

    memo_ref_t r3 = MEMO_REF_INIT;
    is_code(memo_lookup(m, key, sizeof key - 1, &r3), 0, "memo_lookup finds the value");
    ok(r3.len == 9 && memcmp(r3.data, "forty-two", 9) == 0, "... with the right bytes");
    memo_release(&r3);
    is_code(memo_lookup(m, "the answe", 9, &r3), MEMO_ENOENT, "a key's prefix is another key: ENOENT");
    is_code(memo_lookup(m, "the answer!", 11, &r3), MEMO_ENOENT, "a longer key is another key: ENOENT");

    memo_stats_t s = stats_of(m);
    is_u64(s.misses, 1, "stats: 1 miss");
    is_u64(s.hits, 4, "stats: 4 hits (3 gets + 1 found lookup; misses of lookup count nothing)");
    is_u64(s.waits, 0, "stats: 0 waits");
    is_u64(s.errors, 0, "stats: 0 errors");
    is_u64(s.entries, 1, "stats: 1 entry");
    ok(s.bytes > 0, "stats: bytes > 0 (%" PRIu64 ")", s.bytes);

    is_code(memo_forget(m, key, sizeof key - 1), 0, "forget of a stored key: 0");
    is_code(memo_lookup(m, key, sizeof key - 1, &r3), MEMO_ENOENT, "... lookup then: ENOENT");
    is_code(memo_forget(m, key, sizeof key - 1), MEMO_ENOENT, "... forget again: ENOENT");
    is_u64(stats_of(m).entries, 0, "... entries back to 0");
    is_code(memo_get(m, key, sizeof key - 1, fn_spec, &sp, &r3), 0, "get after forget: 0");
    is_int(atomic_load(&sp.calls), 2, "... ran fn again");
    memo_release(&r3);

    /* ctx reaches fn unchanged; a failing fn stores nothing even if it set a value first */
    spec_t fail = sp;
    atomic_store(&fail.calls, 0);
    fail.rc = 77;
    fail.expect_key = "fails";
    fail.expect_len = 5;
    is_code(memo_get(m, "fails", 5, fn_spec, &fail, &r3), 77, "fn that set a value and returned 77: 77");
    ok(r3.data == NULL, "... the ref stays empty");
    is_code(memo_lookup(m, "fails", 5, &r3), MEMO_ENOENT, "... nothing stored");
    is_code(memo_get(m, "fails", 5, fn_spec, &fail, &r3), 77, "... the next call runs fn again");
    is_int(atomic_load(&fail.calls), 2, "... fn ran twice");
    s = stats_of(m);
    is_u64(s.errors, 2, "stats: 2 errors");
    is_u64(s.misses, 4, "stats: 4 misses (failed computations count)");
}

static void test_values(memo_t *m)
{
    memo_ref_t r = MEMO_REF_INIT;

    /* 0-byte values */
    is_code(memo_get(m, "nothing", 7, fn_nothing, NULL, &r), 0, "fn storing nothing and returning 0: 0");
    is_size(r.len, 0, "... 0-byte value");
    memo_release(&r);
    is_code(memo_lookup(m, "nothing", 7, &r), 0, "... it is stored (lookup finds it)");
    is_size(r.len, 0, "... with length 0");
    memo_release(&r);
    int setrc = -100;
    is_code(memo_get(m, "null-zero", 9, fn_set_null_zero, &setrc, &r), 0,
            "fn calling memo_result_set(out, NULL, 0): 0");
    is_code(setrc, 0, "... memo_result_set(out, NULL, 0) returned 0");
    is_size(r.len, 0, "... 0-byte value");
    memo_release(&r);

    /* set twice: the last wins, whatever the sizes */
    is_code(memo_get(m, "twice", 5, fn_set_twice, NULL, &r), 0, "memo_result_set twice: 0");
    ok(r.len == 6 && memcmp(r.data, "second", 6) == 0, "... the second value is stored");
    memo_release(&r);
    is_code(memo_get(m, "set-alloc", 9, fn_set_then_alloc, NULL, &r), 0, "set then alloc: 0");
    ok(r.len == 16 && ((const uint32_t *)r.data)[0] == 0xC0DE0000u &&
           ((const uint32_t *)r.data)[3] == 0xC0DE0003u,
       "... the allocated value is stored");
    memo_release(&r);
    is_code(memo_get(m, "alloc-set", 9, fn_alloc_then_set, NULL, &r), 0, "alloc then set: 0");
    ok(r.len == 5 && memcmp(r.data, "final", 5) == 0, "... the set value is stored");
    memo_release(&r);

    /* alignment of values for many key and value lengths, and alloc filled in place */
    static const size_t lens[] = { 1, 3, 8, 15, 16, 17, 33, 100, 255, 4097, 70000 };
    int                 misaligned = 0, room_misaligned = 0, wrong = 0, failed = 0;
    char                key[64];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t kl = 1; kl <= 40; kl++) {
            memset(key, 'a' + (int)li, sizeof key);
            align_ctx_t a = { lens[li], false };
            if (memo_get(m, key, kl, fn_alloc_pattern, &a, &r) != 0) {
                failed++;
                continue;
            }
            if ((uintptr_t)r.data % alignof(max_align_t) != 0)
                misaligned++;
            if (!a.room_aligned)
                room_misaligned++;
            if (!has_pattern(&r, lens[li]))
                wrong++;
            memo_release(&r);
            if (memo_lookup(m, key, kl, &r) != 0 || (uintptr_t)r.data % alignof(max_align_t) != 0 ||
                !has_pattern(&r, lens[li]))
                wrong++;
            memo_release(&r);
        }
    is_int(failed, 0, "memo_result_alloc values, 11 value lengths x 40 key lengths: all gets succeed");
    is_int(room_misaligned, 0, "... memo_result_alloc's room is aligned to alignof(max_align_t)");
    is_int(misaligned, 0, "... ref.data is aligned to alignof(max_align_t) (%zu)",
           (size_t)alignof(max_align_t));
    is_int(wrong, 0, "... the bytes filled in place are the stored value (get and lookup)");

    /* bad arguments to the result calls */
    result_args_ctx_t c = { 0, 0, (void *)&c };
    is_code(memo_get(m, "result-args", 11, fn_bad_result_args, &c, &r), 0, "fn making bad result calls: 0");
    is_code(c.set_null_out, MEMO_EINVAL, "memo_result_set(NULL, ...) is MEMO_EINVAL");
    is_code(c.set_null_value, MEMO_EINVAL, "memo_result_set(out, NULL, 3) is MEMO_EINVAL");
    ok(c.alloc_null_out == NULL, "memo_result_alloc(NULL, 8) is NULL");
    ok(r.len == 4 && memcmp(r.data, "good", 4) == 0, "... and the good value after them is stored");
    memo_release(&r);
}

/* memo_result_set from memo_result_alloc's own room, at its start and inside it. */
static void test_set_from_own_room(unsigned flags, const char *label)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    memo_t *m = NULL;
    if (test_memo_create(&m, &cfg) != 0)
        bail_out("memo_create");
    memo_ref_t r = MEMO_REF_INIT;
    is_code(memo_get(m, "start", 5, fn_set_from_own_room, NULL, &r), 0,
            "%s: memo_result_set from the start of memo_result_alloc's room: 0", label);
    ok(is_own_room_value(&r, 0), "... the bytes stored are the room's first 3000");
    memo_release(&r);
    is_code(memo_get(m, "interior", 8, fn_set_from_own_room, NULL, &r), 0,
            "%s: memo_result_set from inside memo_result_alloc's room: 0", label);
    ok(is_own_room_value(&r, 4096), "... the bytes stored are the room's, from offset 4096");
    memo_release(&r);
    memo_destroy(m);
}

static void test_empty_key(memo_t *m)
{
    memo_ref_t r = MEMO_REF_INIT;
    atomic_store(&echo_calls, 0);
    is_code(memo_get(m, NULL, 0, fn_echo, NULL, &r), 0, "memo_get with key NULL, len 0: 0");
    ok(ref_is_echo(&r, NULL, 0), "... value of the empty key");
    memo_release(&r);
    is_code(memo_get(m, "", 0, fn_echo, NULL, &r), 0, "memo_get with key \"\", len 0: 0");
    memo_release(&r);
    is_code(memo_get(m, "xyz", 0, fn_echo, NULL, &r), 0, "memo_get with key \"xyz\", len 0: 0");
    memo_release(&r);
    is_int(atomic_load(&echo_calls), 1, "... all three are the same empty key: fn ran once");
    is_code(memo_lookup(m, NULL, 0, &r), 0, "memo_lookup(NULL, 0) finds it");
    memo_release(&r);
    is_code(memo_get(m, "\0", 1, fn_echo, NULL, &r), 0, "key of one NUL byte: 0");
    ok(ref_is_echo(&r, "\0", 1), "... is its own key");
    memo_release(&r);
    is_int(atomic_load(&echo_calls), 2, "... fn ran for it");
    is_code(memo_forget(m, NULL, 0), 0, "memo_forget(NULL, 0): 0");
    is_code(memo_lookup(m, NULL, 0, &r), MEMO_ENOENT, "... then the empty key is gone");
    is_code(memo_lookup(m, "\0", 1, &r), 0, "... and the NUL key is still there");
    memo_release(&r);
}

static void test_key_spaces(memo_t *m)
{
    uint64_t k = 7;
    memo_ref_t r = MEMO_REF_INIT;
    uint64_t   v = 0;
    atomic_store(&u64_calls, 0);
    atomic_store(&echo_calls, 0);
    is_code(memo_get_u64(m, k, fn_u64_times3, NULL, &v), 0, "memo_get_u64(7): 0");
    is_u64(v, 22, "... value 22");
    is_code(memo_lookup(m, &k, sizeof k, &r), MEMO_ENOENT,
            "the byte key holding the same 8 bytes is not stored");
    is_code(memo_get(m, &k, sizeof k, fn_echo, NULL, &r), 0, "memo_get of those 8 bytes: 0");
    ok(ref_is_echo(&r, &k, sizeof k), "... its own value");
    memo_release(&r);
    is_int(atomic_load(&u64_calls), 1, "u64 fn ran once");
    is_int(atomic_load(&echo_calls), 1, "byte fn ran once");
    v = 0;
    is_code(memo_lookup_u64(m, 7, &v), 0, "memo_lookup_u64(7): 0");
    is_u64(v, 22, "... value 22");
    is_code(memo_lookup_u64(m, 8, &v), MEMO_ENOENT, "memo_lookup_u64(8): ENOENT");
    is_code(memo_forget_u64(m, 7), 0, "memo_forget_u64(7): 0");
    is_code(memo_lookup_u64(m, 7, &v), MEMO_ENOENT, "... u64 key gone");
    is_code(memo_lookup(m, &k, sizeof k, &r), 0, "... the byte key is still there");
    memo_release(&r);
    is_code(memo_forget_u64(m, 7), MEMO_ENOENT, "memo_forget_u64 again: ENOENT");
    is_code(memo_forget(m, &k, sizeof k), 0, "memo_forget of the byte key: 0");

    /* u64 key extremes */
    const uint64_t keys[] = { 0, 1, UINT64_MAX, UINT64_MAX - 1, 1ull << 63 };
    int            bad = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (memo_get_u64(m, keys[i], fn_u64_times3, NULL, &v) != 0 || v != keys[i] * 3 + 1)
            bad++;
        if (memo_lookup_u64(m, keys[i], &v) != 0 || v != keys[i] * 3 + 1)
            bad++;
    }
    is_int(bad, 0, "u64 keys 0, 1, UINT64_MAX, UINT64_MAX-1, 1<<63 each keep their own value");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        memo_forget_u64(m, keys[i]);
}

static void test_release(void)
{
    memo_ref_t zero;
    memset(&zero, 0, sizeof zero);
    memo_release(&zero);
    memo_ref_t init = MEMO_REF_INIT;
    memo_release(&init);
    memo_release(NULL);
    ok(1, "memo_release of a zeroed ref, MEMO_REF_INIT and NULL are no-ops");

    memo_t *m = NULL;
    test_memo_create(&m, NULL);
    memo_ref_t r = MEMO_REF_INIT;
    memo_get(m, "k", 1, fn_echo, NULL, &r);
    memo_release(&r);
    memo_release(&r);
    ok(r.data == NULL && r.len == 0, "memo_release twice is a no-op the second time");
    memo_destroy(m);
}

static void test_stats_and_refs(unsigned flags, const char *label)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    memo_t *m = NULL;
    if (test_memo_create(&m, &cfg) != 0) {
        ok(0, "%s: memo_create", label);
        return;
    }
    uint64_t empty_bytes = stats_of(m).bytes;

    /* hold refs of the first 16 keys through forget, clear and growth */
    enum { KEYS = 2000, HELD = 16, VLEN = 100 };
    memo_ref_t held[HELD];
    char       key[32];
    int        failures = 0;
    uint64_t   bytes_at_500 = 0;
    for (int i = 0; i < KEYS; i++) {
        int         n = snprintf(key, sizeof key, "key-%d", i);
        align_ctx_t a = { VLEN + (size_t)(i % 7), false };
        memo_ref_t  r = MEMO_REF_INIT;
        if (memo_get(m, key, (size_t)n, fn_alloc_pattern, &a, &r) != 0)
            failures++;
        if (i < HELD)
            held[i] = r;
        else
            memo_release(&r);
        if (i == 499)
            bytes_at_500 = stats_of(m).bytes;
    }
    memo_stats_t s = stats_of(m);
    is_int(failures, 0, "%s: 2000 gets succeed", label);
    is_u64(s.entries, KEYS, "%s: entries is exactly 2000", label);
    is_u64(s.misses, KEYS, "%s: misses is exactly 2000", label);
    ok(bytes_at_500 > empty_bytes && s.bytes > bytes_at_500,
       "%s: bytes grows with entries (%" PRIu64 " empty, %" PRIu64 " at 500, %" PRIu64 " at 2000)",
       label, empty_bytes, bytes_at_500, s.bytes);
    cmp_u64(s.bytes, >=, (uint64_t)KEYS * VLEN, "%s: bytes covers at least the values' bytes", label);

    for (int i = 0; i < HELD; i += 2) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        if (memo_forget(m, key, (size_t)n) != 0)
            failures++;
    }
    is_int(failures, 0, "%s: forget of 8 held keys: 0", label);
    is_u64(stats_of(m).entries, KEYS - HELD / 2, "%s: entries drops by 8", label);
    int intact = 0;
    for (int i = 0; i < HELD; i++)
        intact += has_pattern(&held[i], VLEN + (size_t)(i % 7));
    is_int(intact, HELD, "%s: the 16 held refs read their bytes after forget", label);

    memo_clear(m);
    is_u64(stats_of(m).entries, 0, "%s: memo_clear: entries 0", label);
    memo_ref_t r = MEMO_REF_INIT;
    is_code(memo_lookup(m, "key-20", 6, &r), MEMO_ENOENT, "%s: memo_clear: key-20 gone", label);
    is_code(memo_lookup(m, "key-1", 5, &r), MEMO_ENOENT, "%s: memo_clear: held key-1 gone", label);

    /* grow the tables well past their old size while the refs are held */
    for (int i = 0; i < 20000; i++) {
        int         n = snprintf(key, sizeof key, "new-%d", i);
        align_ctx_t a = { 24, false };
        if (memo_get(m, key, (size_t)n, fn_alloc_pattern, &a, &r) != 0)
            failures++;
        memo_release(&r);
    }
    is_int(failures, 0, "%s: 20000 new keys after clear", label);
    intact = 0;
    for (int i = 0; i < HELD; i++)
        intact += has_pattern(&held[i], VLEN + (size_t)(i % 7));
    is_int(intact, HELD, "%s: the held refs still read their bytes after clear and growth", label);
    for (int i = 0; i < HELD; i++)
        memo_release(&held[i]);
    is_u64(stats_of(m).entries, 20000, "%s: entries 20000", label);
    memo_destroy(m);
}

static int fn_never(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len, (void)out;
    atomic_fetch_add((atomic_int *)ctx, 1);
    return 0;
}

static int fn_u64_never(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key, (void)value;
    atomic_fetch_add((atomic_int *)ctx, 1);
    return 0;
}

static void test_bad_arguments(void)
{
    memo_t *m = NULL;
    test_memo_create(&m, NULL);
    memo_ref_t r = MEMO_REF_INIT;
    uint64_t   v = 0;
    atomic_int never = 0;
    /* some data that must survive the bad calls */
    memo_get(m, "keep", 4, fn_echo, NULL, &r);
    memo_release(&r);
    memo_get_u64(m, 99, fn_u64_times3, NULL, &v);
    memo_stats_t before = stats_of(m);

    is_code(memo_get(NULL, "k", 1, fn_never, &never, &r), MEMO_EINVAL, "memo_get(NULL m)");
    is_code(memo_get(m, "k", 1, NULL, NULL, &r), MEMO_EINVAL, "memo_get(NULL fn)");
    is_code(memo_get(m, "keep", 4, NULL, NULL, &r), MEMO_EINVAL, "memo_get(NULL fn) of a stored key");
    is_code(memo_get(m, "k", 1, fn_never, &never, NULL), MEMO_EINVAL, "memo_get(NULL ref)");
    is_code(memo_get(m, "keep", 4, fn_never, &never, NULL), MEMO_EINVAL, "memo_get(NULL ref) of a stored key");
    is_code(memo_get(m, NULL, 5, fn_never, &never, &r), MEMO_EINVAL, "memo_get(NULL key, len 5)");
    is_code(memo_get_timed(NULL, "k", 1, fn_never, &never, 1000, &r), MEMO_EINVAL, "memo_get_timed(NULL m)");
    is_code(memo_get_timed(m, "k", 1, NULL, NULL, 1000, &r), MEMO_EINVAL, "memo_get_timed(NULL fn)");
    is_code(memo_get_timed(m, "k", 1, fn_never, &never, 1000, NULL), MEMO_EINVAL, "memo_get_timed(NULL ref)");
    is_code(memo_get_timed(m, NULL, 2, fn_never, &never, 1000, &r), MEMO_EINVAL, "memo_get_timed(NULL key, len 2)");
    is_code(memo_lookup(NULL, "keep", 4, &r), MEMO_EINVAL, "memo_lookup(NULL m)");
    is_code(memo_lookup(m, "keep", 4, NULL), MEMO_EINVAL, "memo_lookup(NULL ref)");
    is_code(memo_lookup(m, NULL, 4, &r), MEMO_EINVAL, "memo_lookup(NULL key, len 4)");
    is_code(memo_forget(NULL, "keep", 4), MEMO_EINVAL, "memo_forget(NULL m)");
    is_code(memo_forget(m, NULL, 4), MEMO_EINVAL, "memo_forget(NULL key, len 4)");
    is_code(memo_get_u64(NULL, 1, fn_u64_never, &never, &v), MEMO_EINVAL, "memo_get_u64(NULL m)");
    is_code(memo_get_u64(m, 1, NULL, NULL, &v), MEMO_EINVAL, "memo_get_u64(NULL fn)");
    is_code(memo_get_u64(m, 99, NULL, NULL, &v), MEMO_EINVAL, "memo_get_u64(NULL fn) of a stored key");
    is_code(memo_get_u64(m, 1, fn_u64_never, &never, NULL), MEMO_EINVAL, "memo_get_u64(NULL value)");
    is_code(memo_get_u64_timed(NULL, 1, fn_u64_never, &never, 1000, &v), MEMO_EINVAL, "memo_get_u64_timed(NULL m)");
    is_code(memo_get_u64_timed(m, 1, NULL, NULL, 1000, &v), MEMO_EINVAL, "memo_get_u64_timed(NULL fn)");
    is_code(memo_get_u64_timed(m, 1, fn_u64_never, &never, 1000, NULL), MEMO_EINVAL, "memo_get_u64_timed(NULL value)");
    is_code(memo_lookup_u64(NULL, 99, &v), MEMO_EINVAL, "memo_lookup_u64(NULL m)");
    is_code(memo_lookup_u64(m, 99, NULL), MEMO_EINVAL, "memo_lookup_u64(NULL value)");
    is_code(memo_forget_u64(NULL, 99), MEMO_EINVAL, "memo_forget_u64(NULL m)");
    is_int(atomic_load(&never), 0, "no bad call ran a compute function");

    memo_stats_t after = stats_of(m);
    ok(after.entries == before.entries && after.misses == before.misses &&
           after.errors == before.errors,
       "no bad call changed entries, misses or errors");
    ok(memo_lookup(m, "keep", 4, &r) == 0 && ref_is_echo(&r, "keep", 4), "the byte value survived");
    memo_release(&r);
    ok(memo_lookup_u64(m, 99, &v) == 0 && v == 298, "the u64 value survived");
    is_code(memo_lookup(m, "k", 1, &r), MEMO_ENOENT, "no bad call stored key k");
    is_code(memo_lookup_u64(m, 1, &v), MEMO_ENOENT, "no bad call stored u64 key 1");
    memo_destroy(m);
}

/* memo calls from inside fn while the caller holds a ref */
typedef struct nested_ctx {
    memo_t *other;
    int     lookup_rc, get_rc, forget_rc, create_rc;
    bool    value_ok;
} nested_ctx_t;

static int fn_nested(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    nested_ctx_t *c = (nested_ctx_t *)ctx;
    memo_ref_t    r = MEMO_REF_INIT;
    c->lookup_rc = memo_lookup(c->other, "held", 4, &r);
    memo_release(&r);
    c->get_rc = memo_get(c->other, "inner", 5, fn_echo, NULL, &r);
    c->value_ok = ref_is_echo(&r, "inner", 5);
    memo_release(&r);
    c->forget_rc = memo_forget(c->other, "gone", 4);
    memo_t *fresh = NULL;
    c->create_rc = test_memo_create(&fresh, NULL);
    memo_destroy(fresh);
    return memo_result_set(out, "outer", 5);
}

static void test_nested_calls(void)
{
    memo_t *a = NULL, *b = NULL;
    test_memo_create(&a, NULL);
    test_memo_create(&b, NULL);
    memo_ref_t held = MEMO_REF_INIT, r = MEMO_REF_INIT;
    memo_get(b, "held", 4, fn_echo, NULL, &held);
    memo_get(b, "gone", 4, fn_echo, NULL, &r);
    memo_release(&r);
    nested_ctx_t c = { b, -100, -100, -100, -100, false };
    is_code(memo_get(a, "outer", 5, fn_nested, &c, &r), 0, "fn calling memo on another memo while a ref is held: 0");
    ok(r.len == 5 && memcmp(r.data, "outer", 5) == 0, "... outer value");
    memo_release(&r);
    is_code(c.lookup_rc, 0, "... memo_lookup inside fn: 0");
    is_code(c.get_rc, 0, "... memo_get inside fn: 0");
    ok(c.value_ok, "... with the right value");
    is_code(c.forget_rc, 0, "... memo_forget inside fn: 0");
    is_code(c.create_rc, 0, "... memo_create inside fn: 0");
    ok(ref_is_echo(&held, "held", 4), "the ref held across it all is intact");
    memo_release(&held);
    memo_destroy(a);
    memo_destroy(b);
}

/* Making and dropping memos over and over must not grow the process: each memo's memory goes
 * back whole. Catches: jemalloc's arena.<i>.destroy, which leaves about 4 KiB of metadata per
 * arena behind (3000 memos: ~12 MiB); anything else a memo leaves behind after memo_destroy.
 * Resident size is read from /proc; under sanitizers (system allocator, shadow memory) the
 * bound is left to LSan. */
static int churn_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * 3;
    return 0;
}

static void test_create_destroy_churn(void)
{
    enum { MEMOS = 3000, KEYS = 100, WARMUP = 200 };
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 16;
    long before = 0;
    int failures = 0;
    for (int i = 0; i < WARMUP + MEMOS; i++) {
        if (i == WARMUP)
            before = test_resident_kib();
        memo_t *m = NULL;
        if (test_memo_create(&m, &cfg) != 0) {
            failures++;
            continue;
        }
        for (uint64_t k = 0; k < KEYS; k++) {
            uint64_t v = 0;
            if (memo_get_u64(m, k, churn_fn, NULL, &v) != 0 || v != k * 3)
                failures++;
        }
        memo_destroy(m);
    }
    long after = test_resident_kib();
    is_int(failures, 0, "%d memos made, used and destroyed in turn", MEMOS);
#ifdef TAP_SANITIZED
    skip(1, "resident size under a sanitizer's shadow memory and system allocator says nothing");
    (void)after;
    (void)before;
#else
    diag("resident size %ld KiB before, %ld KiB after %d memos", before, after, MEMOS);
    ok(before > 0 && after > 0 && after - before < 3 * 1024,
       "resident size grew by %ld KiB over %d memos (< 3 MiB)", after - before, MEMOS);
#endif
}

int main(void)
{
    tap_watchdog(90);
    test_errors_and_version();
    test_create_configs();

    memo_t *m = NULL;
    if (test_memo_create(&m, NULL) != 0 || !m)
        bail_out("memo_create failed");
    test_get_lookup_forget(m);
    test_values(m);
    test_empty_key(m);
    test_key_spaces(m);
    memo_destroy(m);

    test_release();
    test_set_from_own_room(0, "default allocator");
    test_set_from_own_room(MEMO_F_SYSTEM_ALLOC, "MEMO_F_SYSTEM_ALLOC");
    test_stats_and_refs(0, "default allocator");
    test_stats_and_refs(MEMO_F_SYSTEM_ALLOC, "MEMO_F_SYSTEM_ALLOC");
    test_bad_arguments();
    test_nested_calls();
    test_create_destroy_churn();
    return done_testing();
}
