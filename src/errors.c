/* Error names and messages, and the version. */
#include <stdio.h>

#include "memo.h"

#define MEMO__STR2(x) #x
#define MEMO__STR(x) MEMO__STR2(x)

const char *memo_version(void)
{
    return MEMO__STR(MEMO_VERSION_MAJOR) "." MEMO__STR(MEMO_VERSION_MINOR) "." MEMO__STR(MEMO_VERSION_PATCH);
}

const char *memo_err_name(int code)
{
    switch (code) {
    case MEMO_OK: return "MEMO_OK";
    case MEMO_ENOMEM: return "MEMO_ENOMEM";
    case MEMO_EINVAL: return "MEMO_EINVAL";
    case MEMO_EDEADLK: return "MEMO_EDEADLK";
    case MEMO_ETIMEDOUT: return "MEMO_ETIMEDOUT";
    case MEMO_ENOENT: return "MEMO_ENOENT";
    default: return code > 0 ? "MEMO_EFN" : "MEMO_E?";
    }
}

/* Positive codes are formatted into a per-thread buffer: the string stays valid until this
 * thread's next memo_strerror call with another positive code. */
const char *memo_strerror(int code)
{
    static _Thread_local char buf[64];
    switch (code) {
    case MEMO_OK: return "success";
    case MEMO_ENOMEM: return "out of memory";
    case MEMO_EINVAL: return "invalid argument";
    case MEMO_EDEADLK: return "the value depends on itself (a computation cycle)";
    case MEMO_ETIMEDOUT: return "timed out waiting for another thread's computation";
    case MEMO_ENOENT: return "no value stored under that key";
    default:
        if (code > 0) {
            snprintf(buf, sizeof buf, "compute function failed with code %d", code);
            return buf;
        }
        return "unknown memo error";
    }
}
