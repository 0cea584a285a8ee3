/*
 * fuzz_replay: fuzz_api's programs without libFuzzer, in the default test suite (any compiler,
 * every sanitizer build). It runs every seed of tests/fuzz/corpus/ (the directory is argv[1]),
 * then FUZZ_REPLAY_RANDOM pseudo-random byte strings (default 20000, 10000 under sanitizers) made
 * from a fixed seed (FUZZ_REPLAY_SEED to change it): every byte string is a valid program.
 * fuzz_api.c checks every return code, value and counter against its model and abort()s on any
 * disagreement; this program then saves the input as fuzz_replay-failed-<n> in the working
 * directory (replay it with FUZZ_API_TRACE=1 under scripts/fuzz's build, or give it to this
 * program as a corpus directory of one file) and dies, which fails the test.
 *
 * `fuzz_replay --write-seeds tests/fuzz/corpus` remakes the seed corpus from fuzz_api.c's seeds[]
 * (the same as fuzz_api --write-seeds, without needing clang's libFuzzer).
 *
 * It turns the seed corpus into a regression test that every build runs, and covers the same
 * programs under ThreadSanitizer, which the fuzz run (ASan + UBSan) does not: the two-thread
 * mode's turnstile hands one program between two real threads.
 */
#include "../tap.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

enum { REPLAY_MAX_LEN = 256 }; /* scripts/fuzz's -max_len */

static const uint8_t *current;
static size_t         current_len;
static char           current_name[64];

/* On abort (a model mismatch) or a crash: save the input being run, then die of the signal. */
static void save_input(int sig)
{
    int fd = open(current_name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (current != NULL)
            (void)!write(fd, current, current_len);
        close(fd);
    }
    static const char msg[] = "\nfuzz_replay: the failing input is saved in the working directory as ";
    (void)!write(2, msg, sizeof msg - 1);
    (void)!write(2, current_name, strlen(current_name));
    (void)!write(2, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void run_one(const uint8_t *data, size_t len, unsigned long n)
{
    current = data;
    current_len = len;
    snprintf(current_name, sizeof current_name, "fuzz_replay-failed-%lu", n);
    LLVMFuzzerTestOneInput(data, len);
    current = NULL;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static unsigned replay_corpus(const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0)
        bail_out("cannot read the corpus directory %s", dir);
    unsigned ran = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        uint8_t buf[4096];
        if (names[i]->d_name[0] == '.') {
            free(names[i]);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            bail_out("cannot open %s", path);
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        run_one(buf, len, ran);
        ok(1, "seed %s (%zu bytes) agrees with the model", names[i]->d_name, len);
        ran++;
        free(names[i]);
    }
    free(names);
    return ran;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static unsigned long env_ul(const char *name, unsigned long dflt)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoul(v, NULL, 0) : dflt;
}

int main(int argc, char **argv)
{
#ifdef TAP_SANITIZED
    tap_watchdog(600);
    const unsigned long dflt = 10000;
#else
    tap_watchdog(300);
    const unsigned long dflt = 20000;
#endif
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        /* Remakes the seed corpus from fuzz_api.c's seeds[] (as fuzz_api --write-seeds does). */
        int   wargc = 3;
        char *wargv0[] = { argv[0], argv[1], argv[2], NULL };
        char **wargv = wargv0;
        LLVMFuzzerInitialize(&wargc, &wargv); /* writes and exits */
    }
    if (argc < 2)
        bail_out("usage: %s CORPUS_DIR  (or %s --write-seeds DIR)", argv[0], argv[0]);
    signal(SIGABRT, save_input);
    signal(SIGSEGV, save_input);
    signal(SIGBUS, save_input);
    int   fargc = 1;
    char *fargv0[] = { argv[0], NULL };
    char **fargv = fargv0;
    LLVMFuzzerInitialize(&fargc, &fargv);

    unsigned seeds = replay_corpus(argv[1]);
    ok(seeds >= 10, "the corpus has its seeds (%u)", seeds);

    unsigned long count = env_ul("FUZZ_REPLAY_RANDOM", dflt), seed = env_ul("FUZZ_REPLAY_SEED", 0x5eed);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull | 1, t0 = tap_now_ns(), bytes = 0;
    static uint8_t buf[REPLAY_MAX_LEN];
    for (unsigned long i = 0; i < count; i++) {
        size_t len = 1 + next(&s) % REPLAY_MAX_LEN;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)(next(&s) >> 32);
        run_one(buf, len, seeds + i);
        bytes += len;
    }
    ok(1, "%lu pseudo-random programs (seed %#lx, %llu bytes) agree with the model", count, seed,
       (unsigned long long)bytes);
    diag("%lu programs in %.2f s", count, (double)(tap_now_ns() - t0) / 1e9);
    return done_testing();
}
