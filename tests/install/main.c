/*
 * A consumer of an installed memo: built by tests/install/run.sh against the installed package
 * (CMake's find_package(memo) and pkg-config, shared and static). Exits 0 when memo works; the
 * last line names the object that the process's malloc comes from.
 */
#define _GNU_SOURCE

#include <memo.h>

#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x)  STR_(x)

static int failures;

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

MEMO_DEFINE_U64(fib, n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static int length_of(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t len = key_len;

    (void)ctx;
    (void)key;
    return memo_result_set(out, &len, sizeof len);
}

int main(void)
{
    const char *header_version =
        STR(MEMO_VERSION_MAJOR) "." STR(MEMO_VERSION_MINOR) "." STR(MEMO_VERSION_PATCH);
    memo_t *m = NULL;
    memo_ref_t ref = MEMO_REF_INIT;
    memo_stats_t s;
    uint64_t len = 0;
    Dl_info where;
    void *malloc_sym;

    check(strcmp(memo_version(), header_version) == 0, "memo_version() matches <memo.h>");
    check(fib(90) == UINT64_C(2880067194370816120), "fib(90)");

    check(memo_create(&m, NULL) == MEMO_OK, "memo_create");
    if (m != NULL) {
        for (int i = 0; i < 2; i++) {
            check(memo_get(m, "installed", 9, length_of, NULL, &ref) == MEMO_OK, "memo_get");
            if (ref.data != NULL && ref.len == sizeof len)
                memcpy(&len, ref.data, sizeof len);
            check(len == 9, "value of memo_get");
            memo_release(&ref);
        }
        memo_stats(m, &s);
        check(s.misses == 1 && s.hits == 1 && s.entries == 1, "memo_stats");
        memo_destroy(m);
    }
    check(strcmp(memo_strerror(MEMO_EDEADLK), "") != 0, "memo_strerror");

    /* The first definition of malloc in the global lookup scope is the one every call binds to. */
    malloc_sym = dlsym(RTLD_DEFAULT, "malloc");
    if (malloc_sym != NULL && dladdr(malloc_sym, &where) != 0 && where.dli_fname != NULL)
        printf("malloc from %s\n", where.dli_fname);
    else
        printf("malloc from (unknown)\n");

    printf("memo %s: %s\n", memo_version(), failures == 0 ? "ok" : "FAILED");
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
