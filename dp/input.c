/*
 * Reading the inputs: files, sequences, numbers; and the error messages that go with them.
 * Every reader reports its own failure on stderr and returns DP_EXIT_INPUT, so a caller only
 * passes the code on.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dp.h"

void dp_error(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "memo-dp: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int dp_read_file(const char *problem, const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        dp_error(problem, "cannot open '%s': %s", path, strerror(errno));
        return DP_EXIT_INPUT;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        dp_error(problem, "cannot read '%s': %s", path, strerror(EISDIR));
        fclose(f);
        return DP_EXIT_INPUT;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            dp_error(problem, "'%s': out of memory", path);
            fclose(f);
            return DP_EXIT_INPUT;
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        unsigned char *bigger = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (bigger == NULL)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (ferror(f)) {
        dp_error(problem, "cannot read '%s': %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return DP_EXIT_INPUT;
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int dp_read_sequence(const char *problem, const char *option, const char *path, unsigned char **data,
                     size_t *len)
{
    int rc = dp_read_file(problem, path, data, len);
    if (rc != 0)
        return rc;
    if (*len > 0 && (*data)[*len - 1] == '\n')
        (*data)[--*len] = '\0';
    if (*len == 0) {
        dp_error(problem, "%s '%s': the sequence is empty", option, path);
        free(*data);
        *data = NULL;
        return DP_EXIT_INPUT;
    }
    return 0;
}

/* Parses the decimal digits at *p (no sign); advances *p past them. 0, ERANGE, or EINVAL if
 * there is no digit. */
static int dp_scan_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return EINVAL;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - digit) / 10) {
            while (isdigit((unsigned char)*s))
                s++;
            *p = s;
            return ERANGE;
        }
        v = v * 10 + digit;
    }
    *p = s;
    *out = v;
    return 0;
}

int dp_parse_u64(const char *problem, const char *option, const char *text, uint64_t min, uint64_t max,
                 uint64_t *out)
{
    const char *p = text;
    uint64_t v = 0;
    int e = text == NULL ? EINVAL : dp_scan_u64(&p, &v);
    if (e == EINVAL || (e == 0 && *p != '\0')) {
        dp_error(problem, "%s: '%s' is not a number (a decimal integer from %" PRIu64 " to %" PRIu64 ")",
                 option, text == NULL ? "" : text, min, max);
        return DP_EXIT_INPUT;
    }
    if (e == ERANGE || v < min || v > max) {
        dp_error(problem, "%s: %s is out of range (%" PRIu64 " to %" PRIu64 ")", option, text, min, max);
        return DP_EXIT_INPUT;
    }
    *out = v;
    return 0;
}

int dp_read_numbers(const char *problem, const char *option, const char *path, uint64_t max,
                    uint64_t **numbers, size_t *count, size_t **lines)
{
    unsigned char *data;
    size_t len;
    int rc = dp_read_file(problem, path, &data, &len);
    if (rc != 0)
        return rc;
    if (memchr(data, '\0', len) != NULL) {
        dp_error(problem, "%s '%s': not a text file (it holds a NUL byte)", option, path);
        free(data);
        return DP_EXIT_INPUT;
    }
    size_t cap = 64, n = 0, line = 1;
    uint64_t *v = malloc(cap * sizeof *v);
    size_t *at = malloc(cap * sizeof *at);
    const char *p = (const char *)data;
    rc = 0;
    for (;;) {
        while (*p != '\0' && isspace((unsigned char)*p))
            if (*p++ == '\n')
                line++;
        if (*p == '\0')
            break;
        const char *start = p;
        uint64_t x = 0;
        int e = dp_scan_u64(&p, &x);
        if (e == 0 && *p != '\0' && !isspace((unsigned char)*p))
            e = EINVAL;
        if (e != 0 || x > max) {
            int shown = 0;
            while (start[shown] != '\0' && !isspace((unsigned char)start[shown]) && shown < 40)
                shown++;
            if (e == EINVAL)
                dp_error(problem, "%s '%s', line %zu: '%.*s' is not a number (unsigned decimal integers only)",
                         option, path, line, shown, start);
            else
                dp_error(problem, "%s '%s', line %zu: %.*s is too large (at most %" PRIu64 ")", option, path,
                         line, shown, start, max);
            rc = DP_EXIT_INPUT;
            break;
        }
        if (n == cap) {
            cap *= 2;
            uint64_t *v2 = realloc(v, cap * sizeof *v);
            if (v2 != NULL)
                v = v2;
            size_t *at2 = realloc(at, cap * sizeof *at);
            if (at2 != NULL)
                at = at2;
            if (v2 == NULL || at2 == NULL) {
                free(v);
                free(at);
                v = NULL;
                at = NULL;
            }
        }
        if (v == NULL || at == NULL) {
            dp_error(problem, "%s '%s': out of memory", option, path);
            rc = DP_EXIT_INPUT;
            break;
        }
        v[n] = x;
        at[n++] = line;
    }
    free(data);
    if (rc != 0) {
        free(v);
        free(at);
        return rc;
    }
    *numbers = v;
    *count = n;
    if (lines != NULL)
        *lines = at;
    else
        free(at);
    return 0;
}

void dp_format_bytes(char *buf, size_t size, double bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    unsigned u = 0;
    while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, size, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

char *dp_u64_string(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return strdup(buf);
}

uint64_t dp_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
