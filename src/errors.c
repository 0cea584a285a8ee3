/* Error names and messages, and the version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MEMO__STR2(x) #x
#define MEMO__STR(x) MEMO__STR2(x)

const char *memo_version(void)
{
    return MEMO__STR(MEMO_VERSION_MAJOR) "." MEMO__STR(MEMO_VERSION_MINOR) "." MEMO__STR(MEMO_VERSION_PATCH);
}

#define MEMO__NAME_CASE(code, text) \
    case code: return #code;
#define MEMO__TEXT_CASE(code, text) \
    case code: return text;

const char *memo_err_name(int code)
{
    switch (code) {
    MEMO_ERRNO_MAP(MEMO__NAME_CASE)
    default: return code > 0 ? "MEMO_EFN" : "MEMO_E?";
    }
}

/* Positive codes are formatted into a per-thread buffer: the string stays valid until this
 * thread's next memo_strerror call with another positive code. */
const char *memo_strerror(int code)
{
    static _Thread_local char buf[64];
    switch (code) {
    MEMO_ERRNO_MAP(MEMO__TEXT_CASE)
    default:
        if (code > 0) {
            snprintf(buf, sizeof buf, "compute function failed with code %d", code);
            return buf;
        }
        return "unknown memo error";
    }
}

/* ---- dying on a broken invariant --------------------------------------------------------------- */

void memo__die(const char *file, int line, const char *what, const char *why)
{
    fprintf(stderr, "memo: %s:%d: %s (%s)\n", file, line, what, why);
    abort();
}

void memo__mutex_failed(const char *file, int line, const char *what, int rc)
{
    memo__die(file, line, what, strerror(rc));
}
