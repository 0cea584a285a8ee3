#!/usr/bin/env python3
"""test_ctypes: libmemo.so loads into Python with ctypes, with no environment settings, and a
Python callback memoized through memo_get_u64 runs once per key. TAP on stdout.

    test_ctypes.py PATH-TO-libmemo.so
"""
import ctypes
import sys

FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64))


def main():
    print("1..4")
    try:
        lib = ctypes.CDLL(sys.argv[1])
    except OSError as e:
        print(f"not ok 1 - ctypes.CDLL loads libmemo.so: {e}")
        return 1
    print("ok 1 - ctypes.CDLL loads libmemo.so")
    lib.memo_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    lib.memo_get_u64.argtypes = [ctypes.c_void_p, ctypes.c_uint64, FN, ctypes.c_void_p,
                                 ctypes.POINTER(ctypes.c_uint64)]
    lib.memo_destroy.argtypes = [ctypes.c_void_p]
    lib.memo_version.restype = ctypes.c_char_p
    memo = ctypes.c_void_p()
    rc = lib.memo_create(ctypes.byref(memo), None)
    print(f"{'' if rc == 0 else 'not '}ok 2 - memo_create returns 0 (got {rc})")
    calls = []

    def square(ctx, key, value):
        calls.append(key)
        value[0] = key * key
        return 0

    fn = FN(square)
    out = ctypes.c_uint64()
    good = True
    for _ in range(3):
        for k in range(100):
            good &= lib.memo_get_u64(memo, k, fn, None, ctypes.byref(out)) == 0 and out.value == k * k
    print(f"{'' if good else 'not '}ok 3 - 300 calls over 100 keys return the squares")
    print(f"{'' if sorted(calls) == list(range(100)) else 'not '}ok 4 - the callback ran once per key "
          f"({len(calls)} calls), memo {lib.memo_version().decode()}")
    lib.memo_destroy(memo)
    return 0


sys.exit(main())
