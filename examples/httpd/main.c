/*
 * memo-httpd: the command line, the signals, and the order of start and stop.
 *
 *   memo-httpd [--port N] [--db FILE] [--cache memo|mutex|none] [--threads N] [--max-bytes N]
 *              [--ttl SECONDS] [--refresh SECONDS] [more: --help]
 *
 * Start: the database (generated if the file is missing), the cache, the daemon; then the main
 * thread waits for SIGINT or SIGTERM, which every other thread blocks. Stop: the daemon drains and
 * stops (server_stop: no thread of it is left), then the cache is destroyed (memo_destroy: nothing
 * uses the memo any more, no ref is held), then the database's connections are closed.
 *
 * Exit status: 0 after a clean stop; 1 if requests were cut off by the shutdown (the drain's
 * deadline passed) or a start failed; 2 bad usage.
 */
#include "httpd.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HTTPD_EXIT_OK     0
#define HTTPD_EXIT_FAILED 1
#define HTTPD_EXIT_USAGE  2

struct httpd_options {
    const char     *address, *db;
    unsigned        port, threads, timeout_s, drain_s;
    uint64_t        items, max_bytes;
    double          ttl_s, refresh_s, negative_ttl_s;
    enum cache_mode mode;
};

uint64_t httpd_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

void httpd_log(const char *fmt, ...)
{
    char line[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    fprintf(stderr, "memo-httpd: %s\n", line); /* one call: lines from threads do not interleave */
}

static unsigned httpd_default_threads(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 && cpus < 64 ? (unsigned)cpus * 4 : 8;
}

static void httpd_usage(FILE *out)
{
    fprintf(out,
            "usage: memo-httpd [OPTIONS]\n"
            "\n"
            "Answers GET /item/<id> with a JSON document that an expensive SQLite query computes,\n"
            "cached in a memo bounded by --max-bytes; GET /stats (Prometheus), GET /healthz.\n"
            "The database is generated on first start if FILE does not exist (deterministic).\n"
            "\n"
            "options:\n"
            "  --port N              TCP port (default 8080; 0: any free port, printed)\n"
            "  --address A           IPv4 address to listen on (default 127.0.0.1)\n"
            "  --db FILE             the database (default ./memo-httpd.db)\n"
            "  --items N             items to generate when FILE does not exist (default %d)\n"
            "  --cache MODE          memo: memo_get, single flight, bounded, expiring (default)\n"
            "                        mutex: one mutex around a hash map with an LRU list, the same\n"
            "                        byte bound and ttls, no single flight\n"
            "                        none: the database for every request\n"
            "  --threads N           libmicrohttpd's thread pool (default 4 per CPU: %u here)\n"
            "  --max-bytes N         the cache's byte bound; K, M, G suffixes (default 2M)\n"
            "  --ttl SECONDS         a document's time to live (default 300; 0: forever)\n"
            "  --refresh SECONDS     memo: a document this old is recomputed by the next request\n"
            "                        while the others keep getting it (default 240; 0: never)\n"
            "  --negative-ttl SECONDS  how long a 404 is remembered (default 10; 0: not at all)\n"
            "  --timeout SECONDS     close a connection idle or stalled this long (default 10)\n"
            "  --drain SECONDS       at SIGINT/SIGTERM, wait this long at most for requests in\n"
            "                        flight (default 10)\n"
            "  --help, --version\n"
            "\n"
            "exit status: 0 clean stop; 1 a start failed or requests were cut off; 2 bad usage\n",
            DB_DEFAULT_ITEMS, httpd_default_threads());
}

/* An unsigned decimal with an optional K, M or G (powers of 1024). */
static int httpd_parse_size(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*text < '0' || *text > '9')
        return -1;
    unsigned long long value = strtoull(text, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift != 0)
        end++;
    if (errno != 0 || *end != '\0' || value > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)value << shift;
    return 0;
}

static int httpd_parse_seconds(const char *text, double *out)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0) || value > 1e9)
        return -1;
    *out = value;
    return 0;
}

static uint64_t httpd_ns(double seconds)
{
    return (uint64_t)llround(seconds * 1e9);
}

/* Returns -1 to go on, or an exit status. */
static int httpd_parse(int argc, char **argv, struct httpd_options *o)
{
    *o = (struct httpd_options){
        .address = "127.0.0.1", .db = "memo-httpd.db", .port = 8080, .threads = httpd_default_threads(),
        .timeout_s = 10, .drain_s = 10, .items = 0, .max_bytes = 2u << 20, .ttl_s = 300, .refresh_s = 240,
        .negative_ttl_s = 10, .mode = CACHE_MEMO,
    };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            httpd_usage(stdout);
            return HTTPD_EXIT_OK;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("memo-httpd, with memo %s\n", memo_version());
            return HTTPD_EXIT_OK;
        }
        /* Every other option takes a value: --name VALUE or --name=VALUE. */
        const char *eq = strchr(arg, '='), *value;
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        char name[32];
        if (strncmp(arg, "--", 2) != 0 || name_len >= sizeof name) {
            fprintf(stderr, "memo-httpd: unknown argument '%s' (try --help)\n", arg);
            return HTTPD_EXIT_USAGE;
        }
        memcpy(name, arg, name_len);
        name[name_len] = '\0';
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "memo-httpd: %s needs a value\n", name);
            return HTTPD_EXIT_USAGE;
        }
        uint64_t number = 0;
        bool ok = true;
        if (strcmp(name, "--port") == 0) {
            ok = httpd_parse_size(value, &number) == 0 && strspn(value, "0123456789") == strlen(value) &&
                 number <= 65535;
            o->port = (unsigned)number;
        } else if (strcmp(name, "--address") == 0) {
            o->address = value;
        } else if (strcmp(name, "--db") == 0) {
            ok = *value != '\0';
            o->db = value;
        } else if (strcmp(name, "--items") == 0) {
            ok = httpd_parse_size(value, &number) == 0 && number >= 1 && number <= DB_MAX_ITEMS;
            o->items = number;
        } else if (strcmp(name, "--cache") == 0) {
            if (strcmp(value, "memo") == 0)
                o->mode = CACHE_MEMO;
            else if (strcmp(value, "mutex") == 0)
                o->mode = CACHE_MUTEX;
            else if (strcmp(value, "none") == 0)
                o->mode = CACHE_NONE;
            else
                ok = false;
        } else if (strcmp(name, "--threads") == 0) {
            ok = httpd_parse_size(value, &number) == 0 && number >= 1 && number <= 1024;
            o->threads = (unsigned)number;
        } else if (strcmp(name, "--max-bytes") == 0) {
            ok = httpd_parse_size(value, &o->max_bytes) == 0 && o->max_bytes > 0;
        } else if (strcmp(name, "--ttl") == 0) {
            ok = httpd_parse_seconds(value, &o->ttl_s) == 0;
        } else if (strcmp(name, "--refresh") == 0) {
            ok = httpd_parse_seconds(value, &o->refresh_s) == 0;
        } else if (strcmp(name, "--negative-ttl") == 0) {
            ok = httpd_parse_seconds(value, &o->negative_ttl_s) == 0;
        } else if (strcmp(name, "--timeout") == 0) {
            ok = httpd_parse_size(value, &number) == 0 && number >= 1 && number <= 3600;
            o->timeout_s = (unsigned)number;
        } else if (strcmp(name, "--drain") == 0) {
            ok = httpd_parse_size(value, &number) == 0 && number <= 3600;
            o->drain_s = (unsigned)number;
        } else {
            fprintf(stderr, "memo-httpd: unknown option '%s' (try --help)\n", name);
            return HTTPD_EXIT_USAGE;
        }
        if (!ok) {
            fprintf(stderr, "memo-httpd: bad value for %s: '%s' (try --help)\n", name, value);
            return HTTPD_EXIT_USAGE;
        }
    }
    if (o->ttl_s > 0 && o->refresh_s >= o->ttl_s) {
        fprintf(stderr, "memo-httpd: --refresh (%g s) must be shorter than --ttl (%g s), or 0\n", o->refresh_s,
                o->ttl_s);
        return HTTPD_EXIT_USAGE;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct httpd_options o;
    int status = httpd_parse(argc, argv, &o);
    if (status >= 0)
        return status;

    /* SIGINT and SIGTERM are taken by sigwait below: blocked here, before any thread starts, so
     * every thread (libmicrohttpd's pool inherits this mask) leaves them to the main thread. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up is an error code, not a signal */

    uint64_t items;
    if (db_open(o.db, o.items, &items) != 0)
        return HTTPD_EXIT_FAILED;

    struct cache_config cc = {
        .mode = o.mode, .max_bytes = o.max_bytes, .ttl_ns = httpd_ns(o.ttl_s),
        .refresh_ns = httpd_ns(o.refresh_s), .negative_ttl_ns = httpd_ns(o.negative_ttl_s),
    };
    struct cache *cache;
    if (cache_create(&cache, &cc) != 0) {
        db_close();
        return HTTPD_EXIT_FAILED;
    }

    struct server_config sc = {
        .address = o.address, .port = o.port, .threads = o.threads, .timeout_s = o.timeout_s,
        .drain_s = o.drain_s, .cache = cache, .mode = o.mode,
    };
    struct server *server;
    unsigned port;
    if (server_start(&server, &sc, &port) != 0) {
        cache_destroy(cache);
        db_close();
        return HTTPD_EXIT_FAILED;
    }
    printf("memo-httpd: listening on http://%s:%u/ (cache %s, %u threads, max-bytes %" PRIu64
           ", ttl %g s, refresh %g s, negative-ttl %g s, %" PRIu64 " items, memo %s)\n",
           o.address, port, cache_mode_name(o.mode), o.threads, o.max_bytes, o.ttl_s,
           o.mode == CACHE_MEMO ? o.refresh_s : 0.0, o.negative_ttl_s, items, memo_version());
    fflush(stdout);

    int signal_number = 0;
    while (sigwait(&stop_signals, &signal_number) != 0)
        ;
    httpd_log("%s: stopping", signal_number == SIGINT ? "SIGINT" : "SIGTERM");

    uint64_t cut = server_stop(server);
    struct cache_stats s;
    cache_stats(cache, &s);
    struct db_counters d;
    db_counters(&d);
    cache_destroy(cache);
    db_close();
    httpd_log("cache %s: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " waits, %" PRIu64
              " evictions, %" PRIu64 " entries in %" PRIu64 " bytes at the end; %" PRIu64
              " database queries; destroyed",
              cache_mode_name(o.mode), s.hits, s.misses, s.waits, s.evictions, s.entries, s.bytes, d.queries);
    return cut == 0 ? HTTPD_EXIT_OK : HTTPD_EXIT_FAILED;
}
