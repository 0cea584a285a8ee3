/*
 * memo's floor: a raw ck_hs read inside a ck_epoch section, with memo's hash, written the way a
 * user who knows ck would write it: packed records (16 bytes for a u64 key and value, 40 for a
 * 32-byte key and value) carved from 1 MiB chunks, no header. In C because ck's headers do not
 * compile as C++; this header is the extern "C" interface the C++ harness uses.
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
/* Removes every u64 entry one by one (the records stay in the peer's chunks until destroy). */
size_t ckpeer_remove_all_u64(ckpeer_t *p, uint64_t nkeys);

#ifdef __cplusplus
}
#endif

#endif
