/*
 * The daemon: libmicrohttpd in thread-pool mode (each pool thread runs its own poll loop over its
 * share of the connections and calls the handler itself, so a query runs on that thread and on
 * that thread's SQLite connection).
 *
 *   GET /item/<id>  the item's JSON document (200), 404 for an id that is not in the database,
 *                   400 for an id that is not a decimal number of at most 63 bits
 *   GET /stats      the Prometheus text exposition format (version 0.0.4)
 *   GET /healthz    "ok"
 *   anything else   404; a method other than GET and HEAD, 405
 *
 * Requests in flight are counted from the handler's first call to libmicrohttpd's completion
 * notice, so that the shutdown can wait for them (server_stop) and say how many were cut off.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The answers /stats counts by status code; the last slot counts any other. */
static const unsigned server_codes[] = { 200, 400, 404, 405, 500, 503 };
#define SERVER_CODES (sizeof server_codes / sizeof server_codes[0])

/* How long the drain waits with no request in flight before it stops the daemon (idle keep-alive
 * connections have nothing to lose). */
#define SERVER_IDLE_NS (100 * 1000000ull)

#define SERVER_MAX_CONNECTIONS 4096
#define SERVER_SPARE_FILES     (64 + 2 * 1024) /* stdio, a database file and a pipe per pool thread */

/* Every counter below is a relaxed atomic: statistics and the drain's condition, each read on its
 * own; no other memory is published through them. */
struct server {
    struct MHD_Daemon   *daemon;
    struct server_config cfg;
    _Atomic bool         closing;      /* set by server_stop: every answer says Connection: close */
    _Atomic uint64_t     in_flight;    /* requests between the handler's first call and completion */
    _Atomic uint64_t     connections;  /* open client connections */
    _Atomic uint64_t     answered[SERVER_CODES + 1];
    _Atomic uint64_t     ended[6];     /* by enum MHD_RequestTerminationCode (0 to 5) */
};

static uint64_t server_load(_Atomic uint64_t *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

static void server_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------
 * Answers.
 */
static enum MHD_Result server_reply(struct server *s, struct MHD_Connection *connection, unsigned code,
                                    const char *type, const void *body, size_t len)
{
    /* MUST_COPY: body is the caller's (a memo ref it releases next, or a stack buffer). */
    struct MHD_Response *response = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (response == NULL)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    /* Draining: the client closes this connection after the answer instead of sending more. */
    if (atomic_load_explicit(&s->closing, memory_order_relaxed))
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result result = MHD_queue_response(connection, code, response);
    MHD_destroy_response(response);
    size_t slot = 0;
    while (slot < SERVER_CODES && server_codes[slot] != code)
        slot++;
    server_add(&s->answered[slot], 1);
    return result;
}

static enum MHD_Result server_error(struct server *s, struct MHD_Connection *connection, unsigned code,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result server_error(struct server *s, struct MHD_Connection *connection, unsigned code,
                                    const char *fmt, ...)
{
    char message[160], body[200];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    int len = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", message);
    return server_reply(s, connection, code, "application/json", body, (size_t)len);
}

/* The id: decimal digits only, at most 2^63 - 1 (SQLite's integers). 0, or -1 for something that
 * is not a number, -2 for a number out of range. */
static int server_parse_id(const char *text, uint64_t *id)
{
    uint64_t value = 0;
    if (*text == '\0')
        return -1;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
    }
    for (const char *p = text; *p != '\0'; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (value > ((uint64_t)INT64_MAX - digit) / 10)
            return -2;
        value = value * 10 + digit;
    }
    *id = value;
    return 0;
}

static enum MHD_Result server_item(struct server *s, struct MHD_Connection *connection, const char *text)
{
    uint64_t id;
    int parsed = server_parse_id(text, &id);
    if (parsed == -1)
        return server_error(s, connection, MHD_HTTP_BAD_REQUEST, "the id must be a decimal number");
    if (parsed == -2)
        return server_error(s, connection, MHD_HTTP_BAD_REQUEST, "the id is out of range");

    struct cache_answer answer;
    cache_get(s->cfg.cache, id, &answer);
    enum MHD_Result result;
    if (answer.status == 200)
        result = server_reply(s, connection, 200, "application/json", answer.data, answer.len);
    else if (answer.status == 404)
        result = server_error(s, connection, MHD_HTTP_NOT_FOUND, "no item %" PRIu64, id);
    else if (answer.status == 503)
        result = server_error(s, connection, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
    else
        result = server_error(s, connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "the database failed");
    cache_answer_release(&answer);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * /stats: the Prometheus text format, written here (Debian has no C client library).
 */
struct server_text {
    char  *data;
    size_t len, room;
    bool   failed;
};

static void server_text(struct server_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void server_text(struct server_text *t, const char *fmt, ...)
{
    for (;;) {
        va_list args;
        va_start(args, fmt);
        int n = t->failed ? 0 : vsnprintf(t->data + t->len, t->room - t->len, fmt, args);
        va_end(args);
        if (t->failed || n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->room - t->len) {
            t->len += (size_t)n;
            return;
        }
        char *bigger = realloc(t->data, t->room * 2 + (size_t)n);
        if (bigger == NULL) {
            t->failed = true;
            return;
        }
        t->data = bigger;
        t->room = t->room * 2 + (size_t)n;
    }
}

/* One metric with one sample. labels: the text inside the braces, or "" for none. */
static void server_metric(struct server_text *t, const char *name, const char *type, const char *help,
                          const char *labels, uint64_t value)
{
    server_text(t, "# HELP %s %s\n# TYPE %s %s\n%s%s%s%s %" PRIu64 "\n", name, help, name, type, name,
                *labels ? "{" : "", labels, *labels ? "}" : "", value);
}

static uint64_t server_resident_bytes(void)
{
    unsigned long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static enum MHD_Result server_stats(struct server *s, struct MHD_Connection *connection)
{
    struct cache_stats c;
    struct db_counters d;
    cache_stats(s->cfg.cache, &c);
    db_counters(&d);
    struct server_text t = { malloc(4096), 0, 4096, false };
    t.failed = t.data == NULL;
    const char *items = "cache=\"items\"";

    server_metric(&t, "memo_hits_total", "counter", "Item lookups answered from a stored document or stored 404.",
                  items, c.hits);
    server_metric(&t, "memo_misses_total", "counter",
                  "Item lookups that ran the database query (none: every lookup).", items, c.misses);
    server_metric(&t, "memo_waits_total", "counter",
                  "Item lookups that waited for another request's query of the same id and took its result.",
                  items, c.waits);
    server_metric(&t, "memo_errors_total", "counter",
                  "Queries that found no item or failed (memo: compute functions that returned a code).",
                  items, c.errors);
    server_metric(&t, "memo_evictions_total", "counter", "Documents dropped for the byte bound or for expiry.",
                  items, c.evictions);
    server_metric(&t, "memo_entries", "gauge", "Documents and 404s stored now.", items, c.entries);
    server_metric(&t, "memo_bytes", "gauge", "Memory the cache holds now, by its own count.", items,
                  c.bytes);
    server_metric(&t, "memo_max_bytes", "gauge", "The cache's byte bound (0: none).", items,
                  c.max_bytes);
    server_metric(&t, "memo_httpd_db_queries_total", "counter", "Item queries run on the database.", "",
                  d.queries);
    server_text(&t, "# HELP memo_httpd_db_query_seconds_total Wall time spent in item queries.\n"
                    "# TYPE memo_httpd_db_query_seconds_total counter\n"
                    "memo_httpd_db_query_seconds_total %.6f\n", (double)d.query_ns / 1e9);
    server_metric(&t, "memo_httpd_db_connections", "gauge", "SQLite connections open (one per thread that queried).",
                  "", d.connections);
    server_text(&t, "# HELP memo_httpd_requests_total Answers sent by the handler, by status code.\n"
                    "# TYPE memo_httpd_requests_total counter\n");
    for (size_t i = 0; i <= SERVER_CODES; i++) {
        if (i < SERVER_CODES)
            server_text(&t, "memo_httpd_requests_total{code=\"%u\"} %" PRIu64 "\n", server_codes[i],
                        server_load(&s->answered[i]));
        else
            server_text(&t, "memo_httpd_requests_total{code=\"other\"} %" PRIu64 "\n", server_load(&s->answered[i]));
    }
    server_metric(&t, "memo_httpd_requests_in_flight", "gauge", "Requests being answered now (this one included).",
                  "", server_load(&s->in_flight));
    server_metric(&t, "memo_httpd_connections", "gauge", "Client connections open now.", "",
                  server_load(&s->connections));
    char info[160];
    snprintf(info, sizeof info, "mode=\"%s\",memo_version=\"%s\",threads=\"%u\"",
             cache_mode_name(s->cfg.mode), memo_version(), s->cfg.threads);
    server_metric(&t, "memo_httpd_info", "gauge", "The server's configuration.", info, 1);
    server_metric(&t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "",
                  server_resident_bytes());

    enum MHD_Result result;
    if (t.failed)
        result = server_error(s, connection, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
    else
        result = server_reply(s, connection, 200, "text/plain; version=0.0.4; charset=utf-8", t.data, t.len);
    free(t.data);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * libmicrohttpd's callbacks.
 */
static enum MHD_Result server_handle(void *cls, struct MHD_Connection *connection, const char *url,
                                     const char *method, const char *version, const char *upload_data,
                                     size_t *upload_data_size, void **request)
{
    struct server *s = cls;
    bool readable = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    (void)version;
    (void)upload_data;
    if (*request == NULL) {
        *request = s; /* counted: server_completed uncounts it */
        server_add(&s->in_flight, 1);
        /* An answer queued on this first call (headers only) makes libmicrohttpd skip the body and
         * close the connection after it: right for a method refused, wrong for a GET on a
         * keep-alive connection. So a GET is answered on the call after the request is read. */
        if (!readable)
            return server_error(s, connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD");
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a GET with a body: read and ignored */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strncmp(url, "/item/", 6) == 0)
        return server_item(s, connection, url + 6);
    if (strcmp(url, "/stats") == 0 || strcmp(url, "/metrics") == 0)
        return server_stats(s, connection);
    if (strcmp(url, "/healthz") == 0)
        return server_reply(s, connection, 200, "text/plain; charset=utf-8", "ok\n", 3);
    return server_error(s, connection, MHD_HTTP_NOT_FOUND, "no such path (try /item/<id>, /stats, /healthz)");
}

static void server_completed(void *cls, struct MHD_Connection *connection, void **request,
                             enum MHD_RequestTerminationCode how)
{
    struct server *s = cls;
    (void)connection;
    if (*request == NULL)
        return; /* the handler never saw it (libmicrohttpd answered a malformed request itself) */
    *request = NULL;
    if ((unsigned)how < sizeof s->ended / sizeof s->ended[0])
        server_add(&s->ended[how], 1);
    atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
}

static void server_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                              enum MHD_ConnectionNotificationCode what)
{
    struct server *s = cls;
    (void)connection;
    (void)socket_context;
    if (what == MHD_CONNECTION_NOTIFY_STARTED)
        server_add(&s->connections, 1);
    else if (what == MHD_CONNECTION_NOTIFY_CLOSED)
        atomic_fetch_sub_explicit(&s->connections, 1, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------
 * Start and stop.
 */
/* Client connections at most: what the descriptor limit leaves (raised to its hard limit first)
 * less some for the database, the pool's wake-up pipes and stdio, and at most SERVER_MAX_CONNECTIONS
 * (each may take libmicrohttpd's 32 KiB buffer). libmicrohttpd splits it among the pool threads;
 * past it, new connections wait in the kernel's backlog until one closes. */
static unsigned server_connection_limit(void)
{
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) != 0)
        return 256;
    if (files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &files) != 0)
            getrlimit(RLIMIT_NOFILE, &files);
    }
    if (files.rlim_cur <= SERVER_SPARE_FILES + 64)
        return 64;
    rlim_t limit = files.rlim_cur - SERVER_SPARE_FILES;
    return limit > SERVER_MAX_CONNECTIONS ? SERVER_MAX_CONNECTIONS : (unsigned)limit;
}

int server_start(struct server **out, const struct server_config *cfg, unsigned *port_out)
{
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->address, &address.sin_addr) != 1) {
        httpd_log("--address %s: not an IPv4 address", cfg->address);
        return -1;
    }
    struct server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->cfg = *cfg;
    /* poll, not epoll: with libmicrohttpd 0.9.75's epoll thread pool, a pool thread that reaches
     * its share of the connection limit with a burst of ready connections (200 connections
     * asking at once, 128 of them on one thread) stops serving them: they hang until the
     * connection timeout closes them unanswered (README). poll serves the same burst, and at
     * this scale (a few hundred connections per thread) costs the same.
     * ITC: MHD_quiesce_daemon needs it in this mode. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    unsigned pool = cfg->threads > 1 ? cfg->threads : 0; /* 1: one internal thread, no pool */
    s->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, server_handle, s,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
                                 MHD_OPTION_THREAD_POOL_SIZE, pool,
                                 MHD_OPTION_CONNECTION_LIMIT, server_connection_limit(),
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
                                 MHD_OPTION_NOTIFY_COMPLETED, server_completed, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, server_connection, s,
                                 MHD_OPTION_END);
    if (s->daemon == NULL) {
        httpd_log("cannot listen on %s:%u (in use? see libmicrohttpd's message above)", cfg->address, cfg->port);
        free(s);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = info != NULL ? info->port : cfg->port;
    *out = s;
    return 0;
}

uint64_t server_stop(struct server *s)
{
    uint64_t start = httpd_now_ns();
    atomic_store_explicit(&s->closing, true, memory_order_relaxed);
    /* No new connections: the listening socket leaves the pool's epoll sets, and shutdown makes the
     * kernel refuse connection attempts at once instead of queueing them unanswered. The socket
     * itself stays open until MHD_stop_daemon has returned (MHD_quiesce_daemon's rule). */
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET)
        shutdown(listener, SHUT_RDWR);

    /* The drain: requests in flight are answered, each with Connection: close, so clients hang up
     * after it. Done when no connection is left, or when none has had a request in flight for
     * SERVER_IDLE_NS, or at the deadline. */
    uint64_t deadline = start + (uint64_t)s->cfg.drain_s * 1000000000ull, idle_since = 0;
    for (;;) {
        uint64_t now = httpd_now_ns();
        if (server_load(&s->connections) == 0 || now >= deadline)
            break;
        if (server_load(&s->in_flight) != 0)
            idle_since = 0;
        else if (idle_since == 0)
            idle_since = now;
        else if (now - idle_since >= SERVER_IDLE_NS)
            break;
        struct timespec pause = { 0, 2 * 1000000 };
        nanosleep(&pause, NULL);
    }
    uint64_t left = server_load(&s->in_flight), open = server_load(&s->connections);
    MHD_stop_daemon(s->daemon); /* joins the pool; requests still in flight end as DAEMON_SHUTDOWN */
    if (listener != MHD_INVALID_SOCKET)
        close(listener);

    uint64_t answered = 0;
    for (size_t i = 0; i <= SERVER_CODES; i++)
        answered += server_load(&s->answered[i]);
    uint64_t cut = server_load(&s->ended[MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN]);
    httpd_log("stopped in %.0f ms: %" PRIu64 " answers sent, %" PRIu64 " requests completed, %" PRIu64
              " ended by the client or a timeout, %" PRIu64 " cut off by the shutdown (%" PRIu64
              " in flight and %" PRIu64 " connections open at the stop)",
              (double)(httpd_now_ns() - start) / 1e6, answered,
              server_load(&s->ended[MHD_REQUEST_TERMINATED_COMPLETED_OK]),
              server_load(&s->ended[MHD_REQUEST_TERMINATED_WITH_ERROR]) +
                  server_load(&s->ended[MHD_REQUEST_TERMINATED_TIMEOUT_REACHED]) +
                  server_load(&s->ended[MHD_REQUEST_TERMINATED_READ_ERROR]) +
                  server_load(&s->ended[MHD_REQUEST_TERMINATED_CLIENT_ABORT]),
              cut, left, open);
    free(s);
    return cut;
}
