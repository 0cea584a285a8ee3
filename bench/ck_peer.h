/*
 * memo's floor: a raw ck_hs read inside a ck_epoch section, with memo's hash and memo-shaped
 * entries (a pointer to a 64-byte object holding key and value). In C because ck's headers do
 * not compile as C++; this header is the extern "C" interface the C++ harness uses.
 */
#ifndef MEMO_BENCH_CK_PEER_H
#define MEMO_BENCH_CK_PEER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ckpeer ckpeer_t;

/* secret: the XXH3 secret every peer hashes with (192 bytes, copied). */
ckpeer_t *ckpeer_create(const unsigned char *secret, size_t expected_entries);
void      ckpeer_destroy(ckpeer_t *p); /* no other thread may use p */

/* Writers serialize on one mutex (ck_hs is single-writer); 0 if the key was new, 1 if present. */
int ckpeer_put_u64(ckpeer_t *p, uint64_t key, uint64_t value);
int ckpeer_put_key32(ckpeer_t *p, const void *key32, uint64_t value);
/* Lock-free reads, each in its own epoch section: 1 and *value if found, else 0. */
int ckpeer_get_u64(ckpeer_t *p, uint64_t key, uint64_t *value);
int ckpeer_get_key32(ckpeer_t *p, const void *key32, uint64_t *value);
/* Removes every entry one by one (deferred frees through the epoch). */
size_t ckpeer_remove_all_u64(ckpeer_t *p, uint64_t nkeys);

#ifdef __cplusplus
}
#endif

#endif
