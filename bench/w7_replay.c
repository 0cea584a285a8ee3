/*
 * w7_replay: replays a cache trace through a bounded memo and prints its hit ratio (W7).
 *
 *   w7_replay [--text] [--name NAME] [--seed S] TRACE CAP[,CAP...]
 *
 * TRACE is a binary file of little-endian uint32 keys (bench/w7_traces.py writes them), or with
 * --text one decimal key per line (lines that are not all digits are skipped, as bench/policies/
 * sim.py does). For each capacity, a fresh memo with max_entries = CAP (and the hash seed S,
 * default fixed, so that a run is repeatable) is asked for every key in order with memo_get_u64;
 * its compute function counts its calls and returns f(key), which every answer is checked against.
 * One JSON object per capacity, one per line:
 *
 *   {"trace", "capacity", "requests", "distinct_keys", "fn_calls", "hit_ratio", "entries_at_end",
 *    "evictions", "seconds"}
 *
 * hit_ratio = 1 - fn_calls / requests. Exit status 1 (after a message) if any answer is wrong, a
 * call fails, memo_stats disagrees with the counted calls, or the memo holds more than CAP values
 * once the replay is over; 2 for bad usage or an unreadable trace.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <memo.h>

static uint64_t f(uint64_t key) { return key * 0x9e3779b97f4a7c15ull + 1; }

static int compute(void *ctx, uint64_t key, uint64_t *value)
{
    ++*(uint64_t *)ctx;
    *value = f(key);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr, "usage: w7_replay [--text] [--name NAME] [--seed S] TRACE CAP[,CAP...]\n");
    return 2;
}

/* Reads the trace into *keys; returns the number of keys, or -1 (after a message). */
static long read_trace(const char *path, int text, uint32_t **keys)
{
    FILE *fh = fopen(path, "rb");
    if (fh == NULL) {
        fprintf(stderr, "w7_replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = 0, cap = 1 << 16;
    uint32_t *k = malloc(cap * sizeof *k);
    if (k == NULL)
        goto nomem;
    if (!text) {
        size_t got;
        while ((got = fread(k + n, sizeof *k, cap - n, fh)) > 0) {
            n += got;
            if (n == cap) {
                uint32_t *bigger = realloc(k, 2 * cap * sizeof *k);
                if (bigger == NULL)
                    goto nomem;
                k = bigger;
                cap *= 2;
            }
        }
        /* little-endian on disk: swap on a big-endian host */
        const uint16_t probe = 1;
        if (*(const unsigned char *)&probe == 0)
            for (size_t i = 0; i < n; i++)
                k[i] = __builtin_bswap32(k[i]);
    } else {
        char line[256];
        while (fgets(line, sizeof line, fh) != NULL) {
            char *s = line, *e = line + strlen(line);
            while (s < e && isspace((unsigned char)*s))
                s++;
            while (e > s && isspace((unsigned char)e[-1]))
                e--;
            int digits = e > s;
            for (char *p = s; p < e; p++)
                digits = digits && isdigit((unsigned char)*p);
            if (!digits)
                continue;
            *e = '\0';
            unsigned long long v = strtoull(s, NULL, 10);
            if (v > UINT32_MAX) {
                fprintf(stderr, "w7_replay: %s: key %s is past 32 bits\n", path, s);
                fclose(fh);
                free(k);
                return -1;
            }
            if (n == cap) {
                uint32_t *bigger = realloc(k, 2 * cap * sizeof *k);
                if (bigger == NULL)
                    goto nomem;
                k = bigger;
                cap *= 2;
            }
            k[n++] = (uint32_t)v;
        }
    }
    if (ferror(fh)) {
        fprintf(stderr, "w7_replay: %s: read error\n", path);
        fclose(fh);
        free(k);
        return -1;
    }
    fclose(fh);
    *keys = k;
    return (long)n;
nomem:
    fprintf(stderr, "w7_replay: out of memory reading %s\n", path);
    fclose(fh);
    free(k);
    return -1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static size_t count_distinct(const uint32_t *keys, size_t n)
{
    uint32_t *s = malloc((n ? n : 1) * sizeof *s);
    if (s == NULL)
        return 0;
    memcpy(s, keys, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_u32);
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += i == 0 || s[i] != s[i - 1];
    free(s);
    return d;
}

/* Replays keys through a memo of max_entries cap; prints its JSON line. 0, or 1 on a failure. */
static int replay(const char *name, const uint32_t *keys, size_t n, size_t distinct, uint64_t cap, uint64_t seed)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_entries = cap;
    cfg.seed = seed;
    memo_t *m = NULL;
    int rc = memo_create(&m, &cfg);
    if (rc != 0) {
        fprintf(stderr, "w7_replay: memo_create(max_entries = %" PRIu64 "): %s\n", cap, memo_strerror(rc));
        return 1;
    }
    uint64_t calls = 0, wrong = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        rc = memo_get_u64(m, keys[i], compute, &calls, &v);
        if (rc != 0) {
            fprintf(stderr, "w7_replay: %s at %" PRIu64 ": request %zu (key %" PRIu32 "): %s\n", name, cap, i,
                    keys[i], memo_strerror(rc));
            memo_destroy(m);
            return 1;
        }
        wrong += v != f(keys[i]);
    }
    double secs = now_s() - t0;
    memo_stats_t st;
    memo_stats(m, &st);
    memo_destroy(m);
    int bad = 0;
    if (wrong) {
        fprintf(stderr, "w7_replay: %s at %" PRIu64 ": %" PRIu64 " wrong values\n", name, cap, wrong);
        bad = 1;
    }
    if (st.entries > cap) {
        fprintf(stderr, "w7_replay: %s at %" PRIu64 ": %" PRIu64 " entries at the end, more than max_entries\n", name,
                cap, st.entries);
        bad = 1;
    }
    if (st.misses != calls || st.hits + st.misses != n) {
        fprintf(stderr,
                "w7_replay: %s at %" PRIu64 ": memo_stats says %" PRIu64 " hits and %" PRIu64
                " misses; counted %" PRIu64 " calls of fn over %zu requests\n",
                name, cap, st.hits, st.misses, calls, n);
        bad = 1;
    }
    if (calls < distinct || (distinct <= cap && calls != distinct)) {
        fprintf(stderr, "w7_replay: %s at %" PRIu64 ": %" PRIu64 " calls of fn for %zu distinct keys\n", name, cap,
                calls, distinct);
        bad = 1;
    }
    printf("{\"trace\": \"%s\", \"capacity\": %" PRIu64 ", \"requests\": %zu, \"distinct_keys\": %zu, "
           "\"fn_calls\": %" PRIu64 ", \"hit_ratio\": %.6f, \"entries_at_end\": %" PRIu64 ", \"evictions\": %" PRIu64
           ", \"seconds\": %.4f}\n",
           name, cap, n, distinct, calls, n ? 1.0 - (double)calls / (double)n : 0.0, st.entries, st.evictions, secs);
    fflush(stdout);
    return bad;
}

int main(int argc, char **argv)
{
    int text = 0;
    const char *name = NULL;
    uint64_t seed = 0x6d656d6f62656e63ull; /* bench::kSeed: the same hash, so the same run */
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--text") == 0)
            text = 1;
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else
            return usage();
    }
    if (argc - i != 2)
        return usage();
    const char *path = argv[i], *caps = argv[i + 1];
    if (name == NULL) {
        const char *slash = strrchr(path, '/');
        name = slash ? slash + 1 : path;
    }
    for (const char *p = name; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            return usage(); /* keeps the JSON plain */
    uint32_t *keys = NULL;
    long n = read_trace(path, text, &keys);
    if (n < 0)
        return 2;
    size_t distinct = count_distinct(keys, (size_t)n);
    int bad = 0;
    for (const char *p = caps; *p;) {
        char *end;
        errno = 0;
        unsigned long long cap = strtoull(p, &end, 10);
        if (end == p || errno || cap == 0 || (*end != ',' && *end != '\0')) {
            free(keys);
            return usage();
        }
        bad |= replay(name, keys, (size_t)n, distinct, cap, seed);
        p = *end == ',' ? end + 1 : end;
    }
    free(keys);
    return bad;
}
