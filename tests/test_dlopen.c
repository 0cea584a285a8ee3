/*
 * test_dlopen: libmemo.so loads with dlopen into a program that was not linked with it, as a
 * plugin host (Python's ctypes, nginx, PostgreSQL) loads it, with no environment settings, and
 * works there from several threads. Catches a dependency, or memo itself, whose initial-exec TLS
 * needs more static TLS than glibc keeps for dlopen ("cannot allocate memory in static TLS
 * block": Debian's libjemalloc.so.2 needs 2.6 KB).
 *
 *   test_dlopen [PATH-TO-libmemo.so]     (default: the build's, compiled in)
 */
#include "tap.h"

#include <dlfcn.h>

#include <memo.h>

static int (*p_create)(memo_t **, const memo_config_t *);
static int (*p_get_u64)(memo_t *, uint64_t, memo_fn_u64 *, void *, uint64_t *);
static void (*p_stats)(memo_t *, memo_stats_t *);
static void (*p_destroy)(memo_t *);
static memo_t *M;

static int cube(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * key * key;
    return 0;
}

static void *worker(void *arg)
{
    (void)arg;
    intptr_t bad = 0;
    for (uint64_t k = 0; k < 10000; k++) {
        uint64_t v = 0;
        if (p_get_u64(M, k, cube, NULL, &v) != 0 || v != k * k * k)
            bad++;
    }
    return (void *)bad;
}

int main(int argc, char **argv)
{
    tap_watchdog(60);
    if (argc > 2)
        bail_out("usage: test_dlopen [PATH-TO-libmemo.so]");
    const char *path = argc == 2 ? argv[1] : MEMO_LIBRARY_PATH;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        diag("dlopen: %s", dlerror());
    ok(lib != NULL, "dlopen(\"%s\") with no environment settings", path);
    if (lib == NULL)
        return done_testing();
    *(void **)&p_create = dlsym(lib, "memo_create");
    *(void **)&p_get_u64 = dlsym(lib, "memo_get_u64");
    *(void **)&p_stats = dlsym(lib, "memo_stats");
    *(void **)&p_destroy = dlsym(lib, "memo_destroy");
    ok(p_create && p_get_u64 && p_stats && p_destroy, "the public functions are found with dlsym");
    is_int(p_create(&M, NULL), 0, "memo_create through dlopen");
    pthread_t t[4];
    tap_start_threads(t, 4, worker, NULL, 0);
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        void *b = NULL;
        pthread_join(t[i], &b);
        bad += (int)(intptr_t)b;
    }
    is_int(bad, 0, "4 threads compute and read 10000 keys each");
    memo_stats_t s;
    p_stats(M, &s);
    is_u64(s.misses, 10000, "each key computed once");
    p_destroy(M);
    ok(dlclose(lib) == 0, "dlclose (libmemo.so stays loaded: -z nodelete)");
    return done_testing();
}
